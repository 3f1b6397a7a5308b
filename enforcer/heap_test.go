package enforcer

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestExpiryHeapOrder checks the expiry heap against a sorted list:
// random pushes (expiries with ties, so the id decides), removals,
// changed expiries and pops; after each step every reservation knows its
// index and the soonest is first.
func TestExpiryHeapOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var h expiryHeap
		var in []*reservation // what the heap holds, in no order
		base := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
		at := rapid.Custom(func(t *rapid.T) time.Time {
			return base.Add(time.Duration(rapid.IntRange(0, 5).Draw(t, "at")) * time.Second)
		})
		n := 0
		for step := range rapid.IntRange(1, 60).Draw(t, "steps") {
			switch op := rapid.IntRange(0, 3).Draw(t, fmt.Sprint("op", step)); {
			case op == 0 || len(in) == 0:
				n++
				r := &reservation{id: fmt.Sprintf("r%03d", rapid.IntRange(0, 999).Draw(t, "id")) + fmt.Sprint(n), expiresAt: at.Draw(t, "expires")}
				h.push(r)
				in = append(in, r)
			case op == 1:
				i := rapid.IntRange(0, len(in)-1).Draw(t, "remove")
				h.remove(int(in[i].heapIdx))
				if in[i].heapIdx != -1 {
					t.Fatalf("removed reservation keeps index %d", in[i].heapIdx)
				}
				in = slices.Delete(in, i, i+1)
			case op == 2:
				i := rapid.IntRange(0, len(in)-1).Draw(t, "extend")
				in[i].expiresAt = at.Draw(t, "new expiry")
				h.fix(int(in[i].heapIdx))
			default:
				soonest := slices.MinFunc(in, func(a, b *reservation) int {
					if expiresBefore(a, b) {
						return -1
					}
					return 1
				})
				if got := h.pop(); got != soonest {
					t.Fatalf("pop = %s at %s, want %s at %s", got.id, got.expiresAt, soonest.id, soonest.expiresAt)
				}
				in = slices.DeleteFunc(in, func(r *reservation) bool { return r == soonest })
			}
			if len(h) != len(in) {
				t.Fatalf("heap holds %d, want %d", len(h), len(in))
			}
			for i, r := range h {
				if int(r.heapIdx) != i {
					t.Fatalf("%s at %d thinks it is at %d", r.id, i, r.heapIdx)
				}
				if i > 0 && expiresBefore(r, h[(i-1)/2]) {
					t.Fatalf("%s at %d is before its parent", r.id, i)
				}
			}
		}
	})
}
