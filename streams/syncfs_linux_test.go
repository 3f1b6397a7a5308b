package streams_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tallyledger/tally/streams"
)

func TestFileSystemSync(t *testing.T) {
	if !streams.GroupFsyncSupported {
		t.Fatal("GroupFsyncSupported = false on Linux")
	}
	dir := t.TempDir()
	sync, closeDir, err := streams.FileSystemSync(dir)
	if err != nil {
		t.Fatalf("FileSystemSync(%s): %v", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "events"), []byte("acked"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := sync(t.Context()); err != nil {
		t.Errorf("sync: %v", err)
	}
	if err := streams.NewBarrier(sync).Sync(t.Context()); err != nil {
		t.Errorf("a barrier's Sync through it: %v", err)
	}
	if err := closeDir(); err != nil {
		t.Errorf("close: %v", err)
	}
}

func TestFileSystemSyncMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	sync, closeDir, err := streams.FileSystemSync(dir)
	if err == nil {
		closeDir()
		t.Fatalf("FileSystemSync(%s) = nil error, want one", dir)
	}
	if sync != nil || closeDir != nil {
		t.Errorf("FileSystemSync(%s) returned functions with its error", dir)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("FileSystemSync(%s): %v, want an error naming the directory", dir, err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("FileSystemSync(%s): %v, want fs.ErrNotExist", dir, err)
	}
}

// A sync after close fails, even once another file has taken the closed
// directory's descriptor number: it must never report a sync of
// whatever file system that file is on.
func TestFileSystemSyncAfterClose(t *testing.T) {
	dir := t.TempDir()
	sync, closeDir, err := streams.FileSystemSync(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := closeDir(); err != nil {
		t.Fatal(err)
	}
	other, err := os.Open(t.TempDir()) // likely reuses the number
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := sync(t.Context()); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("sync after close: %v, want an error saying the directory is closed", err)
	}
}

// A store directory reached through a link to another file system would
// not be covered by the sync of the data directory's: refused.
func TestFileSystemSyncRefusesAnotherFileSystem(t *testing.T) {
	dir := t.TempDir()
	other, err := os.MkdirTemp("/dev/shm", "tally-fs-")
	if err != nil {
		t.Skipf("no second file system to link to: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	var a, b syscall.Stat_t
	if syscall.Stat(dir, &a) != nil || syscall.Stat(other, &b) != nil || a.Dev == b.Dev {
		t.Skipf("%s and %s are on one file system here", dir, other)
	}
	if err := os.MkdirAll(filepath.Join(dir, "jetstream", "$G"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := streams.FileSystemSync(dir); err != nil {
		t.Fatalf("one file system: %v", err)
	}
	if err := os.Symlink(other, filepath.Join(dir, "jetstream", "$G", "streams")); err != nil {
		t.Fatal(err)
	}
	_, _, err = streams.FileSystemSync(dir)
	if err == nil || !strings.Contains(err.Error(), "another file system") || !strings.Contains(err.Error(), "streams") {
		t.Fatalf("a link to another file system below the store: %v", err)
	}
}
