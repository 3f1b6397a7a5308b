package enforcer

import (
	"bytes"
	"hash/maphash"
	"time"
)

// What a partition retains per request for a window — idempotency keys and
// closed reservations, up to millions of each — lives in fifos: memory the
// garbage collector does not scan. A fifo's records sit in a ring of plain
// structs, their keys and values as bytes in a chunked arena, and the index
// by key is an open-addressing table of ring positions. A map of strings,
// time.Time values (which hold a *Location) and per-entry objects would be
// a pointer graph every collection walks in full.

// stamp is a UTC wall-clock time without pointers, exact for any time.Time
// (the state only holds UTC times, which carry no monotonic reading).
type stamp struct {
	sec  int64
	nsec int32
}

func stampOf(t time.Time) stamp { return stamp{sec: t.Unix(), nsec: int32(t.Nanosecond())} }

func (a stamp) time() time.Time { return time.Unix(a.sec, int64(a.nsec)).UTC() }

func (a stamp) before(b stamp) bool { return a.sec < b.sec || a.sec == b.sec && a.nsec < b.nsec }

// fifo is a FIFO of records, each a key, a value (both bytes), a sequence
// and a time, with an index from key to the newest record of that key.
// Older records of a key stay in the FIFO, unindexed, until they reach the
// front. Record pointers it returns are valid until the next put or pop.
type fifo struct {
	seed  maphash.Seed
	recs  []fifoRec // ring; its length is 0 or a power of two
	head  uint64    // logical position of the oldest record
	tail  uint64    // logical position after the newest
	table []uint32  // index slot → ring slot + 1; 0 is empty
	n     int       // keys indexed
	arena arena
}

type fifoRec struct {
	hash  uint64
	seq   uint64
	at    stamp
	chunk uint32 // arena chunk number
	off   uint32 // of the key in the chunk; the value follows it
	klen  uint32
	vlen  uint32
}

func newFifo() fifo { return fifo{seed: maphash.MakeSeed()} }

// len is the number of keys indexed.
func (f *fifo) len() int { return f.n }

// records is the number of records, indexed or not.
func (f *fifo) records() int { return int(f.tail - f.head) }

func (f *fifo) mask() uint64 { return uint64(len(f.recs) - 1) }

// at returns the record at logical position pos, in [head, tail).
func (f *fifo) at(pos uint64) *fifoRec { return &f.recs[pos&f.mask()] }

func (f *fifo) key(r *fifoRec) []byte {
	c := f.arena.chunkOf(r.chunk)
	return c[r.off : r.off+r.klen : r.off+r.klen]
}

func (f *fifo) value(r *fifoRec) []byte {
	c := f.arena.chunkOf(r.chunk)
	v := r.off + r.klen
	return c[v : v+r.vlen : v+r.vlen]
}

// front returns the oldest record, or nil.
func (f *fifo) front() *fifoRec {
	if f.head == f.tail {
		return nil
	}
	return f.at(f.head)
}

// get returns the indexed record of key, or nil.
func (f *fifo) get(key []byte) *fifoRec {
	if f.n == 0 {
		return nil
	}
	if slot, ok := f.find(maphash.Bytes(f.seed, key), key); ok {
		return &f.recs[f.table[slot]-1]
	}
	return nil
}

// current returns the indexed record of r's key, or nil.
func (f *fifo) current(r *fifoRec) *fifoRec {
	if slot, ok := f.find(r.hash, f.key(r)); ok {
		return &f.recs[f.table[slot]-1]
	}
	return nil
}

// find returns the index slot holding key, or the empty slot where it goes.
func (f *fifo) find(h uint64, key []byte) (int, bool) {
	if len(f.table) == 0 {
		return 0, false
	}
	m := uint64(len(f.table) - 1)
	for i := h & m; ; i = (i + 1) & m {
		e := f.table[i]
		if e == 0 {
			return int(i), false
		}
		if r := &f.recs[e-1]; r.hash == h && bytes.Equal(f.key(r), key) {
			return int(i), true
		}
	}
}

// put appends a record of key and value and indexes it, in place of the
// key's previous record, if any.
func (f *fifo) put(key, value []byte, seq uint64, at stamp) {
	if f.records() == len(f.recs) {
		f.relayout(max(16, 2*len(f.recs)))
	}
	if (f.n+1)*8 > len(f.table)*5 {
		f.rehash(max(16, 2*len(f.table)))
	}
	h := maphash.Bytes(f.seed, key)
	chunk, off, buf := f.arena.alloc(len(key) + len(value))
	copy(buf, key)
	copy(buf[len(key):], value)
	slot := f.tail & f.mask()
	f.recs[slot] = fifoRec{hash: h, seq: seq, at: at, chunk: chunk, off: off, klen: uint32(len(key)), vlen: uint32(len(value))}
	f.tail++
	i, found := f.find(h, key)
	if !found {
		f.n++
	}
	f.table[i] = uint32(slot) + 1
}

// unindex removes r, the indexed record of its key, from the index.
func (f *fifo) unindex(r *fifoRec) {
	i, ok := f.find(r.hash, f.key(r))
	if !ok || &f.recs[f.table[i]-1] != r {
		panic("enforcer: fifo unindex of a record that is not indexed")
	}
	// Backward-shift deletion keeps every probe sequence unbroken.
	m := len(f.table) - 1
	for j := (i + 1) & m; f.table[j] != 0; j = (j + 1) & m {
		k := int(f.recs[f.table[j]-1].hash) & m // where the entry at j wants to be
		if (j > i && (k <= i || k > j)) || (j < i && k <= i && k > j) {
			f.table[i] = f.table[j]
			i = j
		}
	}
	f.table[i] = 0
	f.n--
}

// pop drops the oldest record, which must not be indexed.
func (f *fifo) pop() {
	f.recs[f.head&f.mask()] = fifoRec{}
	f.head++
	if f.head == f.tail {
		f.arena.releaseAll()
	} else {
		f.arena.releaseBefore(f.at(f.head).chunk)
	}
	if len(f.recs) > 1024 && f.records()*8 < len(f.recs) {
		f.relayout(len(f.recs) / 2)
	}
	if len(f.table) > 1024 && f.n*16 < len(f.table) {
		f.rehash(len(f.table) / 2)
	}
}

// relayout moves the records to a ring of n slots (a power of two that
// holds them) and repoints the index.
func (f *fifo) relayout(n int) {
	recs := make([]fifoRec, n)
	nm := uint64(n - 1)
	for pos := f.head; pos < f.tail; pos++ {
		recs[pos&nm] = *f.at(pos)
	}
	if len(f.recs) > 0 {
		om := f.mask()
		for i, e := range f.table {
			if e != 0 {
				// The one logical position in [head, tail) on ring slot e-1.
				pos := f.head + (uint64(e-1)-f.head)&om
				f.table[i] = uint32(pos&nm) + 1
			}
		}
	}
	f.recs = recs
}

// rehash rebuilds the index with n slots (a power of two above f.n).
func (f *fifo) rehash(n int) {
	old := f.table
	f.table = make([]uint32, n)
	m := uint64(n - 1)
	for _, e := range old {
		if e == 0 {
			continue
		}
		i := f.recs[e-1].hash & m
		for f.table[i] != 0 {
			i = (i + 1) & m
		}
		f.table[i] = e
	}
}

// arena holds the fifo's bytes in chunks, allocated at the back and
// released from the front as the records that use them are dropped.
type arena struct {
	chunks [][]byte // chunk number base+i is chunks[i]
	base   uint32   // wraps; differences are taken modulo 2^32
	spare  [][]byte // released chunks of the standard size, for reuse
}

const (
	chunkSize = 64 << 10
	maxSpare  = 4
)

func (a *arena) chunkOf(n uint32) []byte { return a.chunks[n-a.base] }

// alloc returns n bytes at the back of the arena and where they are.
func (a *arena) alloc(n int) (chunk, off uint32, buf []byte) {
	if k := len(a.chunks); k > 0 {
		c := a.chunks[k-1]
		if l := len(c); cap(c)-l >= n {
			a.chunks[k-1] = c[:l+n]
			return a.base + uint32(k-1), uint32(l), c[l : l+n]
		}
	}
	var c []byte
	switch {
	case n > chunkSize:
		c = make([]byte, 0, n)
	case len(a.spare) > 0:
		c = a.spare[len(a.spare)-1][:0]
		a.spare[len(a.spare)-1] = nil
		a.spare = a.spare[:len(a.spare)-1]
	default:
		c = make([]byte, 0, chunkSize)
	}
	a.chunks = append(a.chunks, c[:n])
	return a.base + uint32(len(a.chunks)-1), 0, c[:n]
}

// releaseBefore releases the chunks numbered before chunk.
func (a *arena) releaseBefore(chunk uint32) {
	k := int(chunk - a.base)
	if k == 0 {
		return
	}
	for i := range k {
		a.recycle(a.chunks[i])
		a.chunks[i] = nil
	}
	a.chunks = a.chunks[k:]
	a.base = chunk
}

// releaseAll releases every chunk.
func (a *arena) releaseAll() {
	for i, c := range a.chunks {
		a.recycle(c)
		a.chunks[i] = nil
	}
	a.base += uint32(len(a.chunks))
	a.chunks = a.chunks[:0]
}

func (a *arena) recycle(c []byte) {
	if cap(c) == chunkSize && len(a.spare) < maxSpare {
		a.spare = append(a.spare, c[:0])
	}
}
