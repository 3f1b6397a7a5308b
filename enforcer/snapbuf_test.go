package enforcer

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// readSnapshot returns the reader's bytes whatever the announced size says
// — exact, too small, too large, unknown — and passes a read error on.
func TestReadSnapshot(t *testing.T) {
	data := make([]byte, 3<<20+17)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for _, tc := range []struct {
		name string
		size int
	}{
		{"exact", len(data)},
		{"announced too small", len(data) / 3},
		{"announced too large", 2 * len(data)},
		{"one byte short", len(data) - 1},
		{"one byte over", len(data) + 1},
		{"unknown (read into the heap)", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A reader that returns little at a time, as a decompressor does.
			b, release, err := readSnapshot(io.LimitReader(&slowReader{r: bytes.NewReader(data)}, int64(len(data))), tc.size)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, data) {
				t.Errorf("read %d bytes, differing from the %d written", len(b), len(data))
			}
			release()
		})
	}
	t.Run("empty", func(t *testing.T) {
		b, release, err := readSnapshot(bytes.NewReader(nil), 100)
		if err != nil || len(b) != 0 {
			t.Fatalf("%d bytes, %v", len(b), err)
		}
		release()
	})
	t.Run("read error", func(t *testing.T) {
		broken := errors.New("broken stream")
		for _, size := range []int{0, len(data), 10} {
			_, _, err := readSnapshot(io.MultiReader(bytes.NewReader(data[:1000]), errReader{broken}), size)
			if !errors.Is(err, broken) {
				t.Errorf("size %d: %v, want the reader's error", size, err)
			}
		}
	})
}

type slowReader struct{ r io.Reader }

func (s *slowReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 4093)]) }

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
