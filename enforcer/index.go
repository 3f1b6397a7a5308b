package enforcer

import (
	"hash/maphash"
	"iter"
	"unsafe"
)

// index is a linear-probing hash table of 64-bit entries: each a tag of a
// key's hash (tagOf, never 0) in the top half and a 32-bit reference whose
// meaning is its owner's in the bottom half; 0 is an empty slot. The home
// slot of an entry comes from its tag, so probes, removals and resizes read
// the table alone, and the table holds no pointers for the collector to
// scan. Owners find entries themselves (they compare keys), from home.
type index struct {
	table []uint64
	shift uint // 64 − log2(len(table)): home slot = tag bits >> shift
	n     int  // entries
}

// tagOf is the top half of a hash with its lowest bit set, so that no
// entry is 0.
func tagOf(h uint64) uint64 { return h>>32 | 1 }

// home is the slot where a probe for an entry with tag tag starts.
func (x *index) home(tag uint64) int { return int(tag << 32 >> x.shift) }

// grow makes room for one more entry, keeping the table at most 5/8 full.
func (x *index) grow() {
	if (x.n+1)*8 > len(x.table)*5 {
		x.rehash(max(16, 2*len(x.table)))
	}
}

// reserve sizes the table for n entries at once, so that adding them does
// not rehash it on the way (a restore knows its count).
func (x *index) reserve(n int) {
	want := 16
	for want*5 < n*8 {
		want *= 2
	}
	if want > len(x.table) {
		x.rehash(want)
	}
}

// rehash rebuilds the table with n slots (a power of two above x.n).
func (x *index) rehash(n int) {
	bits := uint(0)
	for 1<<bits < n {
		bits++
	}
	if bits > maxTableBits {
		panic("enforcer: an index beyond 2^31 slots")
	}
	old := x.table
	x.table = make([]uint64, n)
	x.shift = 64 - bits
	m := n - 1
	for _, e := range old {
		if e == 0 {
			continue
		}
		i := x.home(e >> 32)
		for x.table[i] != 0 {
			i = (i + 1) & m
		}
		x.table[i] = e
	}
}

// remove empties slot i. Backward-shift deletion keeps every probe
// sequence unbroken, with no tombstones.
func (x *index) remove(i int) {
	m := len(x.table) - 1
	for j := (i + 1) & m; x.table[j] != 0; j = (j + 1) & m {
		k := x.home(x.table[j] >> 32) // where the entry at j wants to be
		if (j > i && (k <= i || k > j)) || (j < i && k <= i && k > j) {
			x.table[i] = x.table[j]
			i = j
		}
	}
	x.table[i] = 0
	x.n--
}

// openSet holds the open reservations by id: an index whose entries name
// slots of a slice of reservations. A partition can hold millions of open
// reservations; a map of strings rehashes every key and passes every entry
// through the collector's write barrier each time it grows, and holds two
// pointers an entry where this holds one.
type openSet struct {
	index
	seed  maphash.Seed
	slots []*reservation // nil where free
	free  []uint32       // free slots
}

func newOpenSet() openSet { return openSet{seed: maphash.MakeSeed()} }

// len is the number of open reservations.
func (o *openSet) len() int { return o.n }

// find returns the table slot holding the entry of id, or the empty slot
// where it goes, and id's tag.
func (o *openSet) find(id string) (int, uint64, bool) {
	tag := tagOf(maphash.String(o.seed, id))
	if len(o.table) == 0 {
		return 0, tag, false
	}
	m := len(o.table) - 1
	for i := o.home(tag); ; i = (i + 1) & m {
		e := o.table[i]
		if e == 0 {
			return i, tag, false
		}
		if e>>32 == tag && o.slots[uint32(e)].id == id {
			return i, tag, true
		}
	}
}

// get returns the open reservation id, or nil.
func (o *openSet) get(id string) *reservation {
	if o.n == 0 {
		return nil
	}
	if i, _, ok := o.find(id); ok {
		return o.slots[uint32(o.table[i])]
	}
	return nil
}

// put adds r, whose id must not be in the set.
func (o *openSet) put(r *reservation) {
	o.grow()
	i, tag, found := o.find(r.id)
	if found {
		panic("enforcer: reservation " + r.id + " put in the open set twice")
	}
	var slot uint32
	if k := len(o.free); k > 0 {
		slot = o.free[k-1]
		o.free = o.free[:k-1]
		o.slots[slot] = r
	} else {
		if uint64(len(o.slots)) >= 1<<32-1 {
			panic("enforcer: 2^32 open reservations")
		}
		slot = uint32(len(o.slots))
		o.slots = append(o.slots, r)
	}
	o.table[i] = tag<<32 | uint64(slot)
	o.n++
}

// del removes r, which must be in the set.
func (o *openSet) del(r *reservation) {
	i, _, ok := o.find(r.id)
	if !ok || o.slots[uint32(o.table[i])] != r {
		panic("enforcer: reservation " + r.id + " is not in the open set")
	}
	slot := uint32(o.table[i])
	o.remove(i)
	o.slots[slot] = nil
	o.free = append(o.free, slot)
}

// all yields the open reservations, in no particular order.
func (o *openSet) all() iter.Seq[*reservation] {
	return func(yield func(*reservation) bool) {
		for _, r := range o.slots {
			if r != nil && !yield(r) {
				return
			}
		}
	}
}

// prefetch asks for the table slot where a look-up of id starts.
func (o *openSet) prefetch(id string) {
	if len(o.table) == 0 {
		return
	}
	tag := tagOf(maphash.String(o.seed, id))
	prefetch(uintptr(unsafe.Pointer(&o.table[o.home(tag)])))
}
