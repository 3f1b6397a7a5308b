package enforcer

import (
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// TestOpenSetModel checks the open set against a map: every id put is
// found until it is deleted, and no other; len and all agree; slots are
// reused. Ids are drawn from a small pool so that puts and deletes mix,
// and the set grows past several table sizes.
func TestOpenSetModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		o := newOpenSet()
		model := map[string]*reservation{}
		pool := rapid.IntRange(1, 3000).Draw(t, "pool")
		for step := range rapid.IntRange(1, 4000).Draw(t, "steps") {
			id := fmt.Sprintf("01J%06d", rapid.IntRange(0, pool-1).Draw(t, fmt.Sprint("id", step)))
			if r := model[id]; r != nil && rapid.IntRange(0, 2).Draw(t, fmt.Sprint("op", step)) > 0 {
				o.del(r)
				delete(model, id)
			} else if r == nil {
				r = &reservation{id: id}
				o.put(r)
				model[id] = r
			}
			if o.len() != len(model) {
				t.Fatalf("step %d: len %d, model %d", step, o.len(), len(model))
			}
		}
		for i := range pool {
			id := fmt.Sprintf("01J%06d", i)
			if got, want := o.get(id), model[id]; got != want {
				t.Fatalf("get(%s) = %v, want %v", id, got, want)
			}
		}
		var ids []string
		for r := range o.all() {
			ids = append(ids, r.id)
		}
		slices.Sort(ids)
		want := make([]string, 0, len(model))
		for id := range model {
			want = append(want, id)
		}
		slices.Sort(want)
		if !slices.Equal(ids, want) {
			t.Fatalf("all yields %d ids, model has %d", len(ids), len(want))
		}
		if len(o.slots) != len(model)+len(o.free) {
			t.Fatalf("%d slots for %d reservations and %d free", len(o.slots), len(model), len(o.free))
		}
	})
}

// TestOpenSetPanics checks that putting an id twice and deleting a
// reservation that is not in the set panic, as the state's invariants
// require, and that a reservation of the same id as one in the set is
// not taken for it.
func TestOpenSetPanics(t *testing.T) {
	o := newOpenSet()
	r := &reservation{id: "R1"}
	o.put(r)
	for name, f := range map[string]func(){
		"put twice":     func() { o.put(&reservation{id: "R1"}) },
		"del other":     func() { o.del(&reservation{id: "R1"}) },
		"del never put": func() { o.del(&reservation{id: "R2"}) },
		"del empty set": func() { e := newOpenSet(); e.del(r) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
	if o.len() != 1 || o.get("R1") != r {
		t.Fatalf("the set changed: len %d, get %v", o.len(), o.get("R1"))
	}
}

// TestIndexCollidingTags fills a table of 64 slots with entries whose tags
// share a few home slots at the table's end, so that their probes wrap
// around to its start, and removes them in a random order: backward-shift
// deletion must leave every remaining entry reachable from its home.
func TestIndexCollidingTags(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var x index
		x.rehash(64)
		n := rapid.IntRange(1, 39).Draw(t, "n") // 40 would grow the table
		homes := rapid.IntRange(1, 4).Draw(t, "homes")
		tags := make([]uint64, n)
		for i := range tags {
			// The top bits choose the home slot; the low bits tell tags apart.
			tags[i] = uint64(63-i%homes)<<26 | uint64(i)<<1 | 1
			x.grow()
			j := x.home(tags[i])
			for x.table[j] != 0 {
				j = (j + 1) & (len(x.table) - 1)
			}
			x.table[j] = tags[i]<<32 | uint64(i)
			x.n++
		}
		find := func(tag uint64) int {
			for j := x.home(tag); x.table[j] != 0; j = (j + 1) & (len(x.table) - 1) {
				if x.table[j]>>32 == tag {
					return j
				}
			}
			return -1
		}
		order := rapid.Permutation(tags).Draw(t, "order")
		for k, tag := range order {
			x.remove(find(tag))
			for _, rest := range order[k+1:] {
				if find(rest) < 0 {
					t.Fatalf("after removing %d entries, tag %#x is lost", k+1, rest)
				}
			}
		}
		if x.n != 0 || slices.ContainsFunc(x.table, func(e uint64) bool { return e != 0 }) {
			t.Fatalf("table not empty: n %d", x.n)
		}
	})
}
