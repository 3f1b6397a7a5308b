//go:build !linux

package streams

import (
	"context"
	"errors"
)

// FileSystemSync needs syncfs(2), which only Linux has: elsewhere the
// server fsyncs every write itself with --sync always.
func FileSystemSync(dir string) (sync func(context.Context) error, close func() error, err error) {
	return nil, nil, errors.New("group fsync needs Linux (syncfs)")
}

// GroupFsyncSupported says FileSystemSync works on this system.
const GroupFsyncSupported = false
