package enforcer

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestFifoModel checks the fifo against a slice and a map: records come out
// in the order they went in with their bytes intact, and the index finds
// the newest record of each key until it is unindexed, across ring and
// index growth and shrinking and arena chunks of every size.
func TestFifoModel(t *testing.T) {
	type mrec struct {
		key, value []byte
		seq        uint64
		at         stamp
	}
	rapid.Check(t, func(t *rapid.T) {
		f := newFifo()
		var recs []mrec              // the model's FIFO
		index := map[string]uint64{} // key → seq of its indexed record
		seq := uint64(0)
		nkeys := rapid.IntRange(1, 20000).Draw(t, "keys")
		check := func() {
			if f.records() != len(recs) || f.len() != len(index) {
				t.Fatalf("fifo has %d records, %d indexed; model %d, %d", f.records(), f.len(), len(recs), len(index))
			}
			for i, m := range recs {
				r := f.at(f.head + uint64(i))
				if r.seq != m.seq || r.at != m.at || !bytes.Equal(f.key(r), m.key) || !bytes.Equal(f.value(r), m.value) {
					t.Fatalf("record %d: got seq %d key %q, want seq %d key %q", i, r.seq, f.key(r), m.seq, m.key)
				}
				cur := f.current(r)
				want, indexed := index[string(m.key)]
				if indexed != (cur != nil) || indexed && cur.seq != want {
					t.Fatalf("record %d (%q): current is %v, model says %d/%t", i, m.key, cur, want, indexed)
				}
			}
		}
		t.Repeat(map[string]func(*rapid.T){
			"put": func(t *rapid.T) {
				n := rapid.IntRange(1, 50).Draw(t, "n")
				if rapid.IntRange(0, 5).Draw(t, "many") == 0 {
					n = rapid.IntRange(1000, 5000).Draw(t, "many-n") // to grow the ring and the index
				}
				big := rapid.IntRange(0, 20).Draw(t, "big") == 0
				if big {
					n = min(n, 8) // values of about a chunk each
				}
				mix := rapid.Uint64().Draw(t, "mix") | 1
				for range n {
					seq++
					// Keys and sizes from the sequence: drawing thousands is slow.
					x := (seq * mix) >> 7
					k := []byte(fmt.Sprintf("k%d", x%uint64(nkeys+1)))
					size := int(x>>20) % 41
					if big {
						size = chunkSize - 64 + int(x>>20)%(chunkSize+64)
					}
					v := bytes.Repeat([]byte{byte(seq)}, size)
					at := stamp{sec: int64(seq / 3), nsec: int32(seq % 3)}
					f.put(k, v, seq, at)
					recs = append(recs, mrec{key: k, value: v, seq: seq, at: at})
					index[string(k)] = seq
					if got := f.get(k); got == nil || got.seq != seq {
						t.Fatalf("get %q after put: %v", k, got)
					}
				}
			},
			"pop": func(t *rapid.T) {
				n := rapid.IntRange(1, 400).Draw(t, "n")
				if rapid.IntRange(0, 3).Draw(t, "most") == 0 {
					n = max(0, len(recs)-rapid.IntRange(0, 100).Draw(t, "left")) // to shrink them
				}
				for range n {
					r := f.front()
					if r == nil {
						if len(recs) != 0 {
							t.Fatalf("front is nil with %d records", len(recs))
						}
						return
					}
					m := recs[0]
					if cur := f.current(r); cur == r {
						f.unindex(r)
						delete(index, string(m.key))
					}
					f.pop()
					recs = recs[1:]
				}
			},
			"unindex": func(t *rapid.T) {
				k := []byte(fmt.Sprintf("k%d", rapid.IntRange(0, nkeys).Draw(t, "key")))
				r := f.get(k)
				if _, ok := index[string(k)]; ok != (r != nil) {
					t.Fatalf("get %q: %v, model indexed %t", k, r, ok)
				}
				if r != nil {
					f.unindex(r)
					delete(index, string(k))
					if f.get(k) != nil {
						t.Fatalf("get %q after unindex", k)
					}
				}
			},
			"": func(t *rapid.T) { check() },
		})
	})
}

func TestStampIsExact(t *testing.T) {
	for _, tm := range []time.Time{{}, time.Unix(0, 0).UTC(), time.Date(2026, 11, 28, 21, 0, 0, 123456789, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(1600, 2, 29, 1, 2, 3, 4, time.UTC)} {
		if got := stampOf(tm).time(); got != tm {
			t.Errorf("stamp of %v gives back %v", tm, got)
		}
	}
	a, b := stampOf(time.Unix(5, 1)), stampOf(time.Unix(5, 2))
	if !a.before(b) || b.before(a) || a.before(a) {
		t.Errorf("before is wrong for %v, %v", a, b)
	}
}
