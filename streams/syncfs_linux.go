package streams

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// FileSystemSync returns a sync for NewBarrier that flushes the file
// system holding dir to disk (syncfs(2)): every file JetStream wrote there,
// in one call. close releases the directory.
//
// syncfs covers one file system: a directory below dir that is on another
// (a mount point, or a link to one) would not be synced, so FileSystemSync
// refuses it.
func FileSystemSync(dir string) (sync func(context.Context) error, close func() error, err error) {
	if err := oneFileSystem(dir); err != nil {
		return nil, nil, fmt.Errorf("group fsync: %w", err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("group fsync: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("group fsync: %w", err)
	}
	sync = func(context.Context) error {
		// Through the open file, not its number: a sync after close
		// fails (os.ErrClosed) instead of syncing whatever file took the
		// number since, and close waits for a sync in progress.
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.Syncfs(int(fd)) }); err != nil {
			return fmt.Errorf("syncfs %s: %w", dir, err)
		}
		if serr != nil {
			return fmt.Errorf("syncfs %s: %w", dir, serr)
		}
		return nil
	}
	return sync, f.Close, nil
}

// oneFileSystem checks that every directory below dir, links followed one
// level, is on dir's file system.
func oneFileSystem(dir string) error {
	devOf := func(path string) (uint64, bool, error) {
		fi, err := os.Stat(path) // follows links
		if err != nil {
			return 0, false, err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return 0, false, fmt.Errorf("%s: no device number", path)
		}
		return st.Dev, fi.IsDir(), nil
	}
	root, _, err := devOf(dir)
	if err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		dev, isDir, err := devOf(path)
		if err != nil {
			return err
		}
		if isDir && dev != root {
			return fmt.Errorf("%s is on another file system than %s, which one syncfs would not cover; use --group-fsync off, or keep the store on one file system", path, dir)
		}
		return nil
	})
}

// GroupFsyncSupported says FileSystemSync works on this system and reports
// what it could not write: syncfs(2) returns write-back errors from Linux
// 5.8 on; before, it returned 0 even when writing back failed, and group
// fsync would answer what never reached the disk.
var GroupFsyncSupported = kernelAtLeast(unameRelease(), 5, 8)

func unameRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// kernelAtLeast reports whether a release such as "6.18.44-fc" is at
// least major.minor; an unreadable one is not.
func kernelAtLeast(release string, major, minor int) bool {
	var maj, min int
	if _, err := fmt.Sscanf(release, "%d.%d", &maj, &min); err != nil {
		return false
	}
	return maj > major || maj == major && min >= minor
}
