package enforcer

import (
	"bytes"
	"hash/maphash"
	"time"
	"unsafe"
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
//
// Records sit in segments of segLen, allocated at the back and released
// from the front, so the FIFO never copies them. The index is a linear-
// probing table whose entries hold a record's position (modulo 2^32: the
// FIFO holds fewer records than that) and a tag of its key's hash, from
// whose top bits the entry's home slot is computed: probes and resizes
// read the table alone.
type fifo struct {
	seed    maphash.Seed
	segs    [][]fifoRec // segs[i] holds positions from (segBase+i)·segLen
	segBase uint64
	spare   []fifoRec // a released segment, for reuse
	head    uint64    // position of the oldest record
	tail    uint64    // position after the newest
	index             // entries: tag<<32 | uint32(position)
	arena   arena
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

const (
	segBits = 12
	segLen  = 1 << segBits
	// maxTableBits keeps home slots within the tag's bits.
	maxTableBits = 31
)

func newFifo() fifo { return fifo{seed: maphash.MakeSeed()} }

// len is the number of keys indexed.
func (f *fifo) len() int { return f.n }

// records is the number of records, indexed or not.
func (f *fifo) records() int { return int(f.tail - f.head) }

// at returns the record at position pos, in [head, tail).
func (f *fifo) at(pos uint64) *fifoRec {
	return &f.segs[pos>>segBits-f.segBase][pos&(segLen-1)]
}

// entryAt returns the record an index entry names.
func (f *fifo) entryAt(e uint64) *fifoRec {
	return f.at(f.head + uint64(uint32(e)-uint32(f.head)))
}

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
func (f *fifo) get(key []byte) *fifoRec { return f.getHashed(key, f.hash(key)) }

// getHashed is get of key, whose hash is h.
func (f *fifo) getHashed(key []byte, h uint64) *fifoRec {
	if f.n == 0 {
		return nil
	}
	if slot, ok := f.find(h, key); ok {
		return f.entryAt(f.table[slot])
	}
	return nil
}

// hash is key's hash in the index.
func (f *fifo) hash(key []byte) uint64 { return maphash.Bytes(f.seed, key) }

// prefetch asks for the index slot where a look-up of a key of hash h
// starts.
func (f *fifo) prefetch(h uint64) {
	if len(f.table) > 0 {
		prefetch(uintptr(unsafe.Pointer(&f.table[f.home(tagOf(h))])))
	}
}

// current returns the indexed record of r's key, or nil.
func (f *fifo) current(r *fifoRec) *fifoRec {
	if slot, ok := f.find(r.hash, f.key(r)); ok {
		return f.entryAt(f.table[slot])
	}
	return nil
}

// find returns the index slot holding key, or the empty slot where it goes.
func (f *fifo) find(h uint64, key []byte) (int, bool) {
	if len(f.table) == 0 {
		return 0, false
	}
	m := len(f.table) - 1
	tag := tagOf(h)
	for i := f.home(tag); ; i = (i + 1) & m {
		e := f.table[i]
		if e == 0 {
			return i, false
		}
		if e>>32 == tag {
			if r := f.entryAt(e); r.hash == h && bytes.Equal(f.key(r), key) {
				return i, true
			}
		}
	}
}

// put appends a record of key and value and indexes it, in place of the
// key's previous record, if any.
func (f *fifo) put(key, value []byte, seq uint64, at stamp) {
	if f.tail-f.head >= 1<<32-1 {
		panic("enforcer: a fifo of 2^32 records")
	}
	f.grow()
	if f.tail&(segLen-1) == 0 {
		seg := f.spare
		f.spare = nil
		if seg == nil {
			seg = make([]fifoRec, segLen)
		}
		if len(f.segs) == 0 {
			f.segBase = f.tail >> segBits
		}
		f.segs = append(f.segs, seg)
	}
	h := maphash.Bytes(f.seed, key)
	chunk, off, buf := f.arena.alloc(len(key) + len(value))
	copy(buf, key)
	copy(buf[len(key):], value)
	pos := f.tail
	*f.at(pos) = fifoRec{hash: h, seq: seq, at: at, chunk: chunk, off: off, klen: uint32(len(key)), vlen: uint32(len(value))}
	f.tail++
	i, found := f.find(h, key)
	if !found {
		f.n++
	}
	f.table[i] = tagOf(h)<<32 | uint64(uint32(pos))
}

// unindex removes r, the indexed record of its key, from the index.
func (f *fifo) unindex(r *fifoRec) {
	i, ok := f.find(r.hash, f.key(r))
	if !ok || f.entryAt(f.table[i]) != r {
		panic("enforcer: fifo unindex of a record that is not indexed")
	}
	f.remove(i)
}

// pop drops the oldest record, which must not be indexed.
func (f *fifo) pop() {
	*f.at(f.head) = fifoRec{}
	f.head++
	if f.head>>segBits > f.segBase {
		// The first segment is done with.
		f.spare = f.segs[0]
		f.segs[0] = nil
		f.segs = f.segs[1:]
		f.segBase++
	}
	if f.head == f.tail {
		f.arena.releaseAll()
	} else {
		f.arena.releaseBefore(f.at(f.head).chunk)
	}
	if len(f.table) > 1024 && f.n*16 < len(f.table) {
		f.rehash(len(f.table) / 2)
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
