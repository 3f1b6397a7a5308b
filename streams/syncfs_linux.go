package streams

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// FileSystemSync returns a sync for NewBarrier that flushes the file
// system holding dir to disk (syncfs(2)): every file JetStream wrote there,
// in one call. close releases the directory.
func FileSystemSync(dir string) (sync func(context.Context) error, close func() error, err error) {
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

// GroupFsyncSupported says FileSystemSync works on this system.
const GroupFsyncSupported = true
