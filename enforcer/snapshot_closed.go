package enforcer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"sync"

	"github.com/tallyledger/tally/events"
)

// Restoring a binary snapshot straight into the state. Most of a large
// partition's snapshot is closed reservations (one per reserve in the
// retention window), and the general path built each one three times: as
// a decoded struct with maps of its amounts, labels and holds, as a
// reservation, and as the closed fifo's bytes (appendClosed). The
// takeover of a partition waits for all of it. Here a closed reservation
// goes from the snapshot's bytes to the fifo's in one pass, with the same
// checks the general path makes (it is the inverse of
// appendClosedReservation); open reservations, which are few, take the
// general path. TestRestoreBinaryMatchesGeneral and FuzzRestoreSnapshot
// check that both paths restore the same states and refuse the same
// snapshots.

// restoreBinary is restore(cfg, decodeSnapshotBinary(b)), faster. What
// the state refuses (a reservation on an unknown budget, twice, …) it
// leaves to that general path, so that the errors are the same: the
// general path reports any error of the encoding before them.
func restoreBinary(cfg Config, b []byte) (*State, error) {
	s, err := restoreBinaryFast(cfg, b)
	if err == errGeneral {
		sn, err := decodeSnapshotBinary(b)
		if err != nil {
			return nil, err
		}
		return restore(cfg, sn)
	}
	return s, err
}

// errGeneral asks restoreBinary to take the general path.
var errGeneral = errors.New("enforcer: restore this snapshot the general way")

// restoreBinaryFast restores b, or returns the first error of its
// encoding, or errGeneral.
func restoreBinaryFast(cfg Config, b []byte) (*State, error) {
	r, err := newSnapReader(b)
	if err != nil {
		return nil, err
	}
	sn, keys := r.top()
	if r.err != nil {
		return nil, r.err
	}
	s, budgetOf, err := restoreTop(cfg, sn)
	if err != nil {
		return nil, errGeneral
	}
	t := closedReader{r: r, refs: make([]*budget, len(keys)), byKey: budgetOf}
	for i, k := range keys {
		t.refs[i] = budgetOf(k)
	}
	n := r.count("reservations")
	closed := make(map[string]closedRec, min(n, r.left()/16))
	var units []string
	for i := 0; i < n && r.err == nil; i++ {
		r.enter("reservations", i)
		start := r.off
		rec, open, ok := t.read()
		switch {
		case !ok:
			return nil, errGeneral
		case r.err != nil:
		case open:
			// An open reservation: read again, as the general path reads it.
			r.off = start
			var sr snapReservation
			sr, units = r.reservation(keys, units[:0])
			if r.err != nil {
				break
			}
			res, err := s.restoredReservation(&sr, budgetOf)
			if err != nil {
				return nil, errGeneral
			}
			if _, dup := closed[res.id]; dup || s.open.get(res.id) != nil {
				return nil, errGeneral
			}
			s.open.put(res)
			s.expiries.push(res)
		default:
			id := string(rec.id)
			if _, dup := closed[id]; dup || s.open.get(id) != nil {
				return nil, errGeneral
			}
			closed[id] = rec
		}
		r.leave()
	}
	queue := r.closedQueue()
	if r.err != nil {
		return nil, r.err
	}
	// The idempotency keys are decoded and put into their fifo on another
	// goroutine, beside the closed queue's.
	var (
		idem    sync.WaitGroup
		idemErr error
	)
	ir := *r // reads on from here, with scratch of its own
	ir.path, ir.strs, ir.buf = nil, map[string]string{}, nil
	idem.Go(func() {
		ir.restoreIdempotency(s)
		idemErr = ir.end()
	})
	ok := fillClosed(s, closed, queue)
	idem.Wait()
	switch {
	case idemErr != nil:
		return nil, idemErr
	case !ok:
		return nil, errGeneral
	}
	return s, nil
}

// fillClosed puts the closed reservations into the closed fifo in the
// queue's order, as restore does, and reports whether the queue holds
// each of them at the time it closed.
func fillClosed(s *State, closed map[string]closedRec, queue []snapQueued) bool {
	s.closed.reserve(len(closed))
	for _, q := range queue {
		rec, ok := closed[q.ID]
		if !ok || rec.closedAt != stampOf(q.At) {
			return false
		}
		s.closed.put(s.idKey(q.ID), rec.val, q.Seq, rec.closedAt)
	}
	return s.closed.len() == len(closed)
}

// closedChunk is the size of the chunks closed reservations are read into.
const closedChunk = 1 << 20

// closedRec is a closed reservation read from a snapshot: its id (in the
// snapshot's bytes), its closed fifo value (in closedReader's chunks) and
// when it closed.
type closedRec struct {
	id, val  []byte
	closedAt stamp
}

type span struct{ start, end int }

// closedReader reads reservations from a snapshot into the closed fifo's
// encoding (appendClosed).
type closedReader struct {
	r     *snapReader
	refs  []*budget                // the state's budget of each budget key of the snapshot
	byKey func(key string) *budget // for budget keys written out
	chunk []byte                   // the values read, in chunks of closedChunk bytes
	val   []byte                   // scratch for a value
	units [][]byte                 // the reservation's units
	amts  []events.Amount          // and amounts
	label [][]byte                 // its labels, key and value
	holds []closedHoldRead         // its holds
	hunit [][]byte                 // their units
}

type closedHoldRead struct {
	b             *budget
	scope, period []byte
	units         span // in hunit
}

// read reads one reservation. A closed one is copied into a chunk and
// returned; an open one only reports open (the caller reads it again, and
// nothing of it was kept). The reader's errors stay in r.err; ok is false
// for what restore refuses (an unknown status, a hold on no budget).
func (t *closedReader) read() (rec closedRec, open, ok bool) {
	r := t.r
	id := r.bytes("id")
	root := r.bytes("root")
	scope := r.bytes("scope")
	// The amounts, as snapReader.amounts reads them.
	t.units, t.amts = t.units[:0], t.amts[:0]
	n := r.count("amounts")
	for i := 0; i < n && r.err == nil; i++ {
		at := r.off
		u := r.bytes("amounts")
		if err := events.ValidateUnit(string(u)); err != nil {
			r.failAt(at, "amounts", "%v", err)
		} else if i > 0 && bytes.Compare(u, t.units[len(t.units)-1]) <= 0 {
			r.failAt(at, "amounts", "unit %q after %q: units are in increasing byte order", u, t.units[len(t.units)-1])
		}
		t.amts = append(t.amts, r.requestAmount("amounts", string(u)))
		t.units = append(t.units, u)
	}
	priority := r.bytes("priority")
	option := r.int("option")
	label := r.bytes("label")
	// The labels, as snapReader.labels reads them.
	t.label = t.label[:0]
	n = r.count("labels")
	for i := 0; i < n && r.err == nil; i++ {
		at := r.off
		k := r.bytes("labels")
		if i > 0 && bytes.Compare(k, t.label[len(t.label)-2]) <= 0 {
			r.failAt(at, "labels", "label %q after %q: labels are in increasing byte order", k, t.label[len(t.label)-2])
		}
		t.label = append(t.label, k, r.bytes("labels"))
	}
	expires := stampOf(r.time("expires_at"))
	status := r.bytes("status")
	closedAt := stampOf(r.time("closed_at"))
	if r.err != nil {
		return closedRec{}, false, true
	}
	if string(status) == string(events.StatusOpen) {
		return closedRec{}, true, true
	}
	code := -1
	for i, st := range statusCodes {
		if string(status) == string(st) {
			code = i
		}
	}
	// The holds, as snapReader.reservation reads them.
	t.holds, t.hunit = t.holds[:0], t.hunit[:0]
	known := true // every hold's budget is one of the state's
	n = r.count("holds")
	for j := 0; j < n && r.err == nil; j++ {
		r.enter("holds", j)
		var h closedHoldRead
		at := r.off
		switch k := r.uvarint("budget"); {
		case k > uint64(len(t.refs)):
			r.failAt(at, "budget", "budget %d of %d", k, len(t.refs))
		case k > 0:
			h.b = t.refs[k-1]
		default:
			h.b = t.byKey(string(r.bytes("budget")))
			known = known && h.b != nil
		}
		h.scope = t.holdScope(scope)
		h.period = r.bytes("period")
		start := len(t.hunit)
		t.holdUnits()
		h.units = span{start, len(t.hunit)}
		t.holds = append(t.holds, h)
		r.leave()
	}
	if r.err != nil {
		return closedRec{}, false, true
	}
	if code < 0 || !known {
		return closedRec{}, false, false
	}

	// The value, as appendClosed writes it.
	b := binary.AppendVarint(t.val[:0], expires.sec)
	b = binary.AppendUvarint(b, uint64(expires.nsec))
	b = append(b, byte(code))
	b = appendBytes(b, root)
	b = appendBytes(b, scope)
	b = appendBytes(b, priority)
	b = appendBytes(b, label)
	b = binary.AppendVarint(b, int64(option))
	b = binary.AppendUvarint(b, uint64(len(t.units))+1) // never nil once restored
	for i, u := range t.units {
		b = appendAmount(appendBytes(b, u), t.amts[i])
	}
	if len(t.label) == 0 {
		b = append(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(t.label)/2)+1)
		for _, kv := range t.label {
			b = appendBytes(b, kv)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(t.holds)))
	for _, h := range t.holds {
		b = binary.AppendUvarint(b, h.b.id)
		if bytes.HasPrefix(scope, h.scope) {
			b = binary.AppendUvarint(b, uint64(len(h.scope))+1)
		} else {
			b = appendBytes(append(b, 0), h.scope)
		}
		b = appendBytes(b, h.period)
		units := t.hunit[h.units.start:h.units.end]
		b = binary.AppendUvarint(b, uint64(len(units)))
		for _, u := range units {
			if i, ok := slices.BinarySearchFunc(t.units, u, bytes.Compare); ok {
				b = binary.AppendUvarint(b, uint64(i))
			} else {
				b = appendBytes(binary.AppendUvarint(b, uint64(len(t.units))), u)
			}
		}
	}
	t.val = b
	// Copied into a chunk: one slice grown to hold them all cost more than
	// the rest of the restore (copies into fresh memory, and the collector
	// waiting to stop a goroutine in a copy of a hundred megabytes).
	if len(t.chunk)+len(b) > cap(t.chunk) {
		t.chunk = make([]byte, 0, max(closedChunk, len(b)))
	}
	start := len(t.chunk)
	t.chunk = append(t.chunk, b...)
	return closedRec{id: id, val: t.chunk[start:len(t.chunk):len(t.chunk)], closedAt: closedAt}, false, true
}

// holdScope is snapReader.holdScope in the snapshot's bytes.
func (t *closedReader) holdScope(scope []byte) []byte {
	r := t.r
	at := r.off
	if k := r.uvarint("scope"); k > 0 {
		if k-1 > uint64(len(scope)) {
			r.failAt(at, "scope", "prefix of %d bytes of the reservation's scope of %d", k-1, len(scope))
			return nil
		}
		return scope[:k-1]
	}
	return r.bytes("scope")
}

// holdUnits reads a hold's units as snapReader.holdUnits does, appending
// them to hunit: the units it holds, in increasing byte order (the amounts
// a hold may carry of its own are checked, and dropped as restore drops
// them).
func (t *closedReader) holdUnits() {
	r := t.r
	n := r.count("units")
	prefix := true // the units read so far are the reservation's first ones
	var prev []byte
	for i := 0; i < n && r.err == nil; i++ {
		at := r.off
		k := r.uvarint("units")
		if prefix && k == uint64(i)+1 && i < len(t.units) {
			prev = t.units[i]
			t.hunit = append(t.hunit, prev)
			continue
		}
		prefix = false
		var u []byte
		switch {
		case k > uint64(len(t.units)):
			r.failAt(at, "units", "unit %d of a reservation of %d", k, len(t.units))
			return
		case k > 0:
			u = t.units[k-1]
		default:
			at = r.off
			u = r.bytes("units")
			if err := events.ValidateUnit(string(u)); err != nil {
				r.failAt(at, "units", "%v", err)
			}
			r.requestAmount("units", string(u))
		}
		if i > 0 && bytes.Compare(u, prev) <= 0 {
			r.failAt(at, "units", "unit %q after %q: units are in increasing byte order", u, prev)
		}
		prev = u
		t.hunit = append(t.hunit, u)
	}
}

// restoreIdempotency reads the idempotency keys section into s.idem, as
// the general path's snapReader.idempotency and restoreIdempotency do
// (on an error, s is not to be used).
func (r *snapReader) restoreIdempotency(s *State) {
	n := r.count("idempotency")
	s.idem.reserve(min(n, r.left()/8)) // a record takes 8 bytes at least
	var key, val []byte
	for i := 0; i < n && r.err == nil; i++ {
		r.enter("idempotency", i)
		key = appendBytes(key[:0], r.bytes("root"))
		key = appendBytes(key, r.bytes("op"))
		key = append(key, r.bytes("key")...)
		val = r.hashValue("hash", val[:0])
		seq := r.uvarint("seq")
		at := r.time("at")
		r.leave()
		if r.err == nil {
			s.idem.put(key, val, seq, stampOf(at))
		}
	}
}
