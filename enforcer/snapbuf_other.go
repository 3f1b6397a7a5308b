//go:build !linux

package enforcer

import "io"

// readSnapshot reads a decompressed snapshot of about size bytes into the
// heap; release does nothing.
func readSnapshot(r io.Reader, size int) (b []byte, release func(), err error) {
	return readSnapshotHeap(r, size)
}
