package enforcer

import (
	"maps"
	"slices"
)

// Clone returns a deep copy of s that shares nothing mutable with it. The
// decision loop clones its state (a copy of memory, cheap next to encoding)
// and the snapshot is encoded from the copy on another goroutine, so a
// large snapshot does not hold up decisions.
func (s *State) Clone() *State {
	c := &State{cfg: s.cfg, lastAt: s.lastAt, lastSeq: s.lastSeq, claimedBy: s.claimedBy, lastID: s.lastID,
		budgets: make(map[budgetRef]*budget, len(s.budgets)), byRoot: make(map[string][]*budget, len(s.byRoot)),
		byID: make(map[uint64]*budget, len(s.byID)), open: make(map[string]*reservation, len(s.open)),
		closed: s.closed.clone(), idem: s.idem.clone()}
	k := cloner{budgets: map[*budget]*budget{}, instances: map[*instance]*instance{}}
	for ref, b := range s.budgets {
		c.budgets[ref] = k.budget(b)
	}
	for root, bs := range s.byRoot {
		nb := make([]*budget, len(bs))
		for i, b := range bs {
			nb[i] = k.budget(b)
		}
		c.byRoot[root] = nb
	}
	for id, b := range s.byID {
		c.byID[id] = k.budget(b)
	}
	rs := make(map[*reservation]*reservation, len(s.open))
	for id, r := range s.open {
		nr := k.reservation(r)
		rs[r] = nr
		c.open[id] = nr
	}
	c.expiries = make(expiryHeap, len(s.expiries))
	for i, r := range s.expiries {
		c.expiries[i] = rs[r]
	}
	return c
}

// cloner copies budgets and instances once each, so that the copies
// point at each other as the originals do.
type cloner struct {
	budgets   map[*budget]*budget
	instances map[*instance]*instance
}

func (k *cloner) budget(b *budget) *budget {
	if b == nil {
		return nil
	}
	if nb, ok := k.budgets[b]; ok {
		return nb
	}
	// def, units, limits, free, alert0 and loc are never changed in place
	// (a budget.set makes a new budget), so the copy shares them.
	nb := new(budget)
	*nb = *b
	k.budgets[b] = nb
	nb.instances = make(map[instRef]*instance, len(b.instances))
	for ref, in := range b.instances {
		nb.instances[ref] = k.instance(in)
	}
	nb.last = k.instance(b.last)
	return nb
}

func (k *cloner) instance(in *instance) *instance {
	if in == nil {
		return nil
	}
	if ni, ok := k.instances[in]; ok {
		return ni
	}
	ni := new(instance)
	*ni = *in
	k.instances[in] = ni
	ni.b = k.budget(in.b)
	ni.units = slices.Clone(in.units)
	ni.fired = slices.Clone(in.fired)
	return ni
}

func (k *cloner) reservation(r *reservation) *reservation {
	nr := new(reservation)
	*nr = *r
	nr.amounts = maps.Clone(r.amounts)
	nr.labels = maps.Clone(r.labels)
	nr.units = append(nr.unitBuf[:0:len(nr.unitBuf)], r.units...)
	nr.holds = append(nr.holdBuf[:0:len(nr.holdBuf)], r.holds...)
	for i := range nr.holds {
		h := &nr.holds[i]
		h.b, h.in = k.budget(h.b), k.instance(h.in)
		h.units = slices.Clone(h.units)
	}
	return nr
}

// clone copies the fifo: records, index and bytes.
func (f *fifo) clone() fifo {
	c := *f
	c.segs = make([][]fifoRec, len(f.segs))
	for i, s := range f.segs {
		if s != nil {
			c.segs[i] = append(make([]fifoRec, 0, cap(s)), s...)
		}
	}
	c.spare = nil
	c.table = slices.Clone(f.table)
	c.arena = arena{base: f.arena.base, chunks: make([][]byte, len(f.arena.chunks))}
	for i, ch := range f.arena.chunks {
		c.arena.chunks[i] = append(make([]byte, 0, cap(ch)), ch...)
	}
	return c
}
