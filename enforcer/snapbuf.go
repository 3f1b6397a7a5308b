package enforcer

import (
	"bytes"
	"io"
)

// readSnapshotHeap reads a decompressed snapshot into the Go heap,
// reserving size bytes up front when the size is known: the buffer's
// doublings were most of a load, each one fresh memory to fault in and zero
// (a 36 MB snapshot: 0.85 s of 1.9 s).
func readSnapshotHeap(r io.Reader, size int) ([]byte, func(), error) {
	var buf bytes.Buffer
	if size > 0 {
		buf.Grow(min(size, maxSizeHint) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), func() {}, nil
}
