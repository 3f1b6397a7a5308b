package enforcer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/tallyledger/tally/events"
)

// The binary snapshot format, version 2: the snapshot struct's fields in a
// fixed order, with no names. A large partition's snapshot is mostly
// retained reservations and idempotency keys, whose JSON repeated every
// field name and quoted every figure.
//
//	snapshot    = magic version partition last_seq last_at claimed_by
//	              count×budget count×instance count×reservation
//	              count×queued count×idem
//	magic       = "\x00TSNP"              (a zero byte never starts JSON)
//	version     = uvarint                 (2)
//	partition   = varint
//	last_seq    = uvarint
//	budget      = string                  (events.Budget as JSON, validated on restore)
//	instance    = budget_ref scope period start end count×unit count×fired
//	unit        = string(unit) amount(spent) amount(reserved) signed(adjust)
//	fired       = string                  (unit "\x00" threshold)
//	reservation = id root scope amounts priority varint(option) label labels
//	              expires_at status closed_at count×hold
//	hold        = budget_ref hold_scope period count×hold_unit
//	hold_unit   = uvarint i: 1 ≤ i ≤ len(amounts), the reservation's i-th
//	              unit (byte order) with its amount; or 0, string(unit) amount
//	hold_scope  = uvarint n: n ≥ 1, the first n−1 bytes of the reservation's
//	              scope; or 0, string
//	budget_ref  = uvarint k: k ≥ 1, the key (pattern "\x00" name) of the
//	              k-th budget; or 0, string
//	queued      = string(id) uvarint(seq) time(at)
//	idem        = string(root) string(op) string(key) hash uvarint(seq) time(at)
//	hash        = 0x01 and 16 bytes (32 lowercase hex digits), or 0x00 string
//	amounts     = count×(string(unit) amount), units in increasing byte order
//	labels      = count×(string(key) string(value)), keys in increasing byte order
//	amount      = string: the canonical decimal (Amount.String), '-' if negative
//	time        = varint(Unix seconds) uvarint(nanoseconds < 10⁹), UTC
//	string      = uvarint(length) bytes
//	count       = uvarint, at most the bytes left
//
// The struct is canonical (sorted), so the encoding is deterministic: equal
// states give equal bytes. The decoder checks every length and count
// against the bytes left and names the field and offset of what is wrong;
// nothing in the input can make it panic, and a corrupted count cannot make
// it allocate ahead of the items it has read (room).

// snapshotMagic starts every binary snapshot.
const snapshotMagic = "\x00TSNP"

// appendSnapshot appends sn in the binary format (version SnapshotVersion).
func appendSnapshot(b []byte, sn snapshot) []byte {
	b, refs := appendSnapshotTop(b, sn, len(sn.Reservations), len(sn.Closed), len(sn.Idempotency))
	b = binary.AppendUvarint(b, uint64(len(sn.Reservations)))
	w := reservationWriter{refs: refs}
	for i := range sn.Reservations {
		b = w.append(b, &sn.Reservations[i])
	}
	return appendSnapshotRetained(b, sn)
}

// budgetRefs numbers a snapshot's budgets by key, as written.
type budgetRefs map[string]int

// append writes a reference to the budget of key: its number, or the key
// itself for a budget the snapshot does not hold.
func (refs budgetRefs) append(b []byte, key string) []byte {
	if i, ok := refs[key]; ok {
		return binary.AppendUvarint(b, uint64(i)+1)
	}
	return appendString(append(b, 0), key)
}

// appendSnapshotTop appends sn's sections up to the reservations: the
// header, the budgets and the instances; it returns how the budgets are
// referred to. The counts size the buffer for the sections to follow.
func appendSnapshotTop(b []byte, sn snapshot, reservations, closed, idem int) ([]byte, budgetRefs) {
	b = slices.Grow(b, 64+512*len(sn.Budgets)+128*len(sn.Instances)+160*reservations+
		32*closed+80*idem)
	b = append(b, snapshotMagic...)
	b = binary.AppendUvarint(b, SnapshotVersion)
	b = binary.AppendVarint(b, int64(sn.Partition))
	b = binary.AppendUvarint(b, sn.LastSeq)
	b = appendTime(b, sn.LastAt)
	b = appendString(b, sn.ClaimedBy)
	b = binary.AppendUvarint(b, uint64(len(sn.Budgets)))
	refs := make(budgetRefs, len(sn.Budgets))
	for i := range sn.Budgets {
		def := &sn.Budgets[i]
		raw, err := json.Marshal(def)
		if err != nil {
			panic(fmt.Sprintf("enforcer: snapshot of budget %s: %v", def.Name, err))
		}
		b = binary.AppendUvarint(b, uint64(len(raw)))
		b = append(b, raw...)
		refs[budgetKey(def.Scope, def.Name)] = i
	}
	b = binary.AppendUvarint(b, uint64(len(sn.Instances)))
	for i := range sn.Instances {
		in := &sn.Instances[i]
		b = refs.append(b, in.Budget)
		b = appendString(b, in.Scope)
		b = appendString(b, in.Period)
		b = appendTime(b, in.Start)
		b = appendTime(b, in.End)
		b = binary.AppendUvarint(b, uint64(len(in.Units)))
		for _, u := range in.Units {
			b = appendString(b, u.Unit)
			b = appendAmount(b, u.Spent)
			b = appendAmount(b, u.Reserved)
			b = appendAmount(b, u.Adjust.Amount)
		}
		b = binary.AppendUvarint(b, uint64(len(in.Fired)))
		for _, f := range in.Fired {
			b = appendString(b, f)
		}
	}
	return b, refs
}

// reservationWriter writes reservations, with scratch room for their keys.
type reservationWriter struct {
	refs        budgetRefs
	units, keys []string
}

// append writes one reservation of the reservations section.
func (w *reservationWriter) append(b []byte, r *snapReservation) []byte {
	b = appendString(b, r.ID)
	b = appendString(b, r.Root)
	b = appendString(b, r.Scope)
	w.units = appendSortedKeys(w.units[:0], r.Amounts)
	b = binary.AppendUvarint(b, uint64(len(w.units)))
	for _, u := range w.units {
		b = appendString(b, u)
		b = appendAmount(b, r.Amounts[u])
	}
	b = appendString(b, string(r.Priority))
	b = binary.AppendVarint(b, int64(r.Option))
	b = appendString(b, r.Label)
	b = binary.AppendUvarint(b, uint64(len(r.Labels)))
	w.keys = appendSortedKeys(w.keys[:0], r.Labels)
	for _, k := range w.keys {
		b = appendString(b, k)
		b = appendString(b, r.Labels[k])
	}
	b = appendTime(b, r.ExpiresAt)
	b = appendString(b, string(r.Status))
	b = appendTime(b, r.ClosedAt)
	b = binary.AppendUvarint(b, uint64(len(r.Holds)))
	for _, h := range r.Holds {
		b = w.refs.append(b, h.Budget)
		b = appendHoldScope(b, r.Scope, h.Scope)
		b = appendString(b, h.Period)
		b = binary.AppendUvarint(b, uint64(len(h.Units)))
		w.keys = appendSortedKeys(w.keys[:0], h.Units)
		for _, u := range w.keys {
			a := h.Units[u]
			if j, ok := slices.BinarySearch(w.units, u); ok && r.Amounts[u].Cmp(a) == 0 {
				b = binary.AppendUvarint(b, uint64(j)+1)
			} else {
				b = appendAmount(appendString(append(b, 0), u), a)
			}
		}
	}
	return b
}

// appendSnapshotRetained appends sn's last two sections, the closed queue
// and the idempotency keys (State.appendRetained writes the same bytes
// straight from a state's fifos).
func appendSnapshotRetained(b []byte, sn snapshot) []byte {
	b = binary.AppendUvarint(b, uint64(len(sn.Closed)))
	for _, q := range sn.Closed {
		b = appendString(b, q.ID)
		b = binary.AppendUvarint(b, q.Seq)
		b = appendTime(b, q.At)
	}
	b = binary.AppendUvarint(b, uint64(len(sn.Idempotency)))
	for _, e := range sn.Idempotency {
		b = appendString(b, e.Root)
		b = appendString(b, string(e.Op))
		b = appendString(b, e.Key)
		start := len(b)
		if b = appendHash(b, e.Hash); b[start] != hashHex {
			b = appendString(append(b[:start], hashRaw), e.Hash)
		}
		b = binary.AppendUvarint(b, e.Seq)
		b = appendTime(b, e.At)
	}
	return b
}

// appendRetained appends the closed queue and the idempotency keys, the
// sections appendSnapshotRetained writes from a canonical snapshot, byte
// for byte, straight from the fifos: building them as strings and structs
// first was a third of a snapshot's allocations, made on a machine that is
// deciding meanwhile.
func (s *State) appendRetained(b []byte) []byte {
	queued := func(rec *fifoRec) bool {
		cur := s.closed.current(rec)
		return cur != nil && cur.at == rec.at
	}
	n := 0
	for pos := s.closed.head; pos < s.closed.tail; pos++ {
		if queued(s.closed.at(pos)) {
			n++
		}
	}
	b = binary.AppendUvarint(b, uint64(n))
	for pos := s.closed.head; pos < s.closed.tail; pos++ {
		if rec := s.closed.at(pos); queued(rec) {
			b = appendBytes(b, s.closed.key(rec)) // the reservation id
			b = binary.AppendUvarint(b, rec.seq)
			b = appendStamp(b, rec.at)
		}
	}
	n = 0
	for pos := s.idem.head; pos < s.idem.tail; pos++ {
		if rec := s.idem.at(pos); s.idem.current(rec) == rec {
			n++
		}
	}
	b = binary.AppendUvarint(b, uint64(n))
	for pos := s.idem.head; pos < s.idem.tail; pos++ {
		rec := s.idem.at(pos)
		if s.idem.current(rec) != rec {
			continue
		}
		// The fifo key is root and operation as the snapshot writes them,
		// then the key itself without its length.
		k := s.idem.key(rec)
		d := decoder{b: k}
		d.bytes()
		d.bytes()
		b = append(b, k[:len(k)-len(d.b)]...)
		b = appendBytes(b, d.b)
		// A hex hash is kept as the snapshot writes it; any other with
		// its length added.
		if v := s.idem.value(rec); v[0] == hashHex {
			b = append(b, v...)
		} else {
			b = appendBytes(append(b, hashRaw), v[1:])
		}
		b = binary.AppendUvarint(b, rec.seq)
		b = appendStamp(b, rec.at)
	}
	return b
}

// closedWriter is a reservationWriter with scratch room for transcoding
// retained reservations.
type closedWriter struct {
	reservationWriter
	resUnits [][]byte     // the reservation's units, in byte order
	holds    []closedHold // its holds whose budgets still exist
	hunit    [][]byte     // a hold's units
}

type closedHold struct {
	budget        *budget
	scope, period []byte // the hold's scope and period as encoded (verbatim)
	units         [][]byte
}

// appendClosedReservation writes the retained reservation of rec as
// reservationWriter.append writes readClosed(rec) — the same bytes —
// reading its fifo encoding (appendClosed) without building it: most
// fields have the same encoding in both and are copied.
func (s *State) appendClosedReservation(b []byte, rec *fifoRec, w *closedWriter) []byte {
	d := decoder{b: s.closed.value(rec)}
	expires := d.b
	d.varint()
	d.uvarint()
	expires = d.since(expires)
	status := statusCodes[d.byte()]
	root, scope, priority, label := d.bytes(), d.bytes(), d.bytes(), d.bytes()
	option := d.varint()
	// The amounts: units in byte order, each with its amount, in the
	// snapshot's encoding already.
	w.resUnits = w.resUnits[:0]
	n := d.uvarint()
	amounts := d.b
	for range max(n, 1) - 1 {
		w.resUnits = append(w.resUnits, d.bytes())
		d.bytes()
	}
	amounts = d.since(amounts)
	// The labels: keys in byte order, each with its value.
	m := d.uvarint()
	labels := d.b
	for range max(m, 1) - 1 {
		d.bytes()
		d.bytes()
	}
	labels = d.since(labels)
	// The holds, less those on budgets deleted since (as readClosed).
	w.holds = w.holds[:0]
	for range d.uvarint() {
		h := closedHold{budget: s.byID[d.uvarint()]}
		sc := d.b
		if d.uvarint() == 0 {
			d.bytes()
		}
		h.scope = d.since(sc)
		pe := d.b
		d.bytes()
		h.period = d.since(pe)
		start := len(w.hunit)
		for range d.uvarint() {
			if i := int(d.uvarint()); i < len(w.resUnits) {
				w.hunit = append(w.hunit, w.resUnits[i])
			} else {
				w.hunit = append(w.hunit, d.bytes())
			}
		}
		h.units = w.hunit[start:len(w.hunit):len(w.hunit)]
		if h.budget != nil {
			w.holds = append(w.holds, h)
		}
	}
	if len(d.b) != 0 {
		panic(fmt.Sprintf("enforcer: closed reservation %s: %d bytes left after decoding", s.closed.key(rec), len(d.b)))
	}

	b = appendBytes(b, s.closed.key(rec))
	b = appendBytes(b, root)
	b = appendBytes(b, scope)
	b = binary.AppendUvarint(b, uint64(len(w.resUnits)))
	b = append(b, amounts...)
	b = appendBytes(b, priority)
	b = binary.AppendVarint(b, option)
	b = appendBytes(b, label)
	b = binary.AppendUvarint(b, max(m, 1)-1)
	b = append(b, labels...)
	b = append(b, expires...)
	b = appendString(b, string(status))
	b = appendStamp(b, rec.at)
	b = binary.AppendUvarint(b, uint64(len(w.holds)))
	for _, h := range w.holds {
		b = w.refs.append(b, h.budget.key)
		b = append(b, h.scope...)
		b = append(b, h.period...)
		// snapReservationOf gives a hold of as many units as the
		// reservation all of the reservation's units; any other hold its
		// own units, each with the reservation's amount of it (zero for a
		// unit it does not have).
		if len(h.units) > 0 && len(h.units) == len(w.resUnits) {
			b = binary.AppendUvarint(b, uint64(len(w.resUnits)))
			for j := range w.resUnits {
				b = binary.AppendUvarint(b, uint64(j)+1)
			}
			continue
		}
		units := slices.SortedFunc(slices.Values(h.units), bytes.Compare)
		units = slices.CompactFunc(units, bytes.Equal)
		b = binary.AppendUvarint(b, uint64(len(units)))
		for _, u := range units {
			if j, ok := slices.BinarySearchFunc(w.resUnits, u, bytes.Compare); ok {
				b = binary.AppendUvarint(b, uint64(j)+1)
			} else {
				b = appendAmount(appendBytes(append(b, 0), u), events.Amount{})
			}
		}
	}
	w.hunit = w.hunit[:0]
	return b
}

// appendBytes is appendString of bytes.
func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

// appendStamp is appendTime of a stamp.
func appendStamp(b []byte, at stamp) []byte {
	return binary.AppendUvarint(binary.AppendVarint(b, at.sec), uint64(at.nsec))
}

func appendTime(b []byte, t time.Time) []byte { return appendStamp(b, stampOf(t)) }

// appendSortedKeys appends m's keys to out, sorted.
func appendSortedKeys[V any](out []string, m map[string]V) []string {
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// decodeSnapshotBinary decodes a binary snapshot; any malformation is an
// error naming the field and its byte offset.
func decodeSnapshotBinary(b []byte) (snapshot, error) {
	r, err := newSnapReader(b)
	if err != nil {
		return snapshot{}, err
	}
	sn, keys := r.top()
	n := r.count("reservations")
	sn.Reservations = make([]snapReservation, 0, room[snapReservation](r, n))
	var units []string
	for i := 0; i < n && r.err == nil; i++ {
		r.enter("reservations", i)
		var sr snapReservation
		sr, units = r.reservation(keys, units[:0])
		sn.Reservations = append(sn.Reservations, sr)
		r.leave()
	}
	sn.Closed = r.closedQueue()
	sn.Idempotency = r.idempotency()
	if err := r.end(); err != nil {
		return snapshot{}, err
	}
	return sn, nil
}

// newSnapReader checks a binary snapshot's magic and version and returns
// a reader past them.
func newSnapReader(b []byte) (*snapReader, error) {
	if !bytes.HasPrefix(b, []byte(snapshotMagic)) {
		return nil, fmt.Errorf("enforcer: snapshot: starts with %q, not the binary snapshot prefix %q", b[:min(len(b), len(snapshotMagic))], snapshotMagic)
	}
	r := &snapReader{b: b, off: len(snapshotMagic), strs: map[string]string{}, room: roomPerByte * len(b)}
	if v := r.uvarint("version"); r.err != nil {
		return nil, r.err
	} else if v != SnapshotVersion {
		return nil, fmt.Errorf("enforcer: binary snapshot of version %d, this build reads version %d (and JSON snapshots of version %d)",
			v, SnapshotVersion, SnapshotVersionJSON)
	}
	return r, nil
}

// top reads the sections before the reservations; keys are the budgets'
// keys, which budget references index.
func (r *snapReader) top() (sn snapshot, keys []string) {
	sn = snapshot{V: SnapshotVersion}
	sn.Partition = r.int("partition")
	sn.LastSeq = r.uvarint("last_seq")
	sn.LastAt = r.time("last_at")
	sn.ClaimedBy = r.string("claimed_by")

	n := r.count("budgets")
	sn.Budgets = make([]events.Budget, 0, room[events.Budget](r, n))
	keys = make([]string, 0, room[string](r, n))
	for i := 0; i < n && r.err == nil; i++ {
		r.enter("budgets", i)
		at := r.off
		raw := r.bytes("")
		var def events.Budget
		if err := json.Unmarshal(raw, &def); err != nil && r.err == nil {
			r.failAt(at, "", "%v", err)
		}
		sn.Budgets = append(sn.Budgets, def)
		keys = append(keys, budgetKey(def.Scope, def.Name))
		r.leave()
	}

	n = r.count("instances")
	sn.Instances = make([]snapInstance, 0, room[snapInstance](r, n))
	for i := 0; i < n && r.err == nil; i++ {
		r.enter("instances", i)
		in := snapInstance{Budget: r.budgetRef("budget", keys), Scope: r.intern("scope"), Period: r.intern("period"),
			Start: r.time("start"), End: r.time("end")}
		m := r.count("units")
		in.Units = make([]snapUnit, 0, room[snapUnit](r, m))
		for j := 0; j < m && r.err == nil; j++ {
			r.enter("units", j)
			in.Units = append(in.Units, snapUnit{Unit: r.intern("unit"), Spent: r.amount("spent", false),
				Reserved: r.amount("reserved", false), Adjust: events.Signed{Amount: r.amount("adjust", true)}})
			r.leave()
		}
		m = r.count("fired")
		in.Fired = make([]string, 0, room[string](r, m))
		for j := 0; j < m && r.err == nil; j++ {
			r.enter("fired", j)
			in.Fired = append(in.Fired, r.intern(""))
			r.leave()
		}
		sn.Instances = append(sn.Instances, in)
		r.leave()
	}
	return sn, keys
}

// reservation reads one reservation; units is scratch room for its units.
func (r *snapReader) reservation(keys, units []string) (snapReservation, []string) {
	sr := snapReservation{ID: r.string("id"), Root: r.intern("root"), Scope: r.intern("scope")}
	sr.Amounts, units = r.amounts("amounts", units)
	sr.Priority = events.Priority(r.intern("priority"))
	sr.Option = r.int("option")
	sr.Label = r.intern("label")
	sr.Labels = r.labels("labels")
	sr.ExpiresAt = r.time("expires_at")
	sr.Status = events.ReservationStatus(r.intern("status"))
	sr.ClosedAt = r.time("closed_at")
	m := r.count("holds")
	sr.Holds = make([]snapHold, 0, room[snapHold](r, m))
	for j := 0; j < m && r.err == nil; j++ {
		r.enter("holds", j)
		h := snapHold{Budget: r.budgetRef("budget", keys)}
		h.Scope = r.holdScope(sr.Scope)
		h.Period = r.intern("period")
		h.Units = r.holdUnits("units", units, sr.Amounts)
		sr.Holds = append(sr.Holds, h)
		r.leave()
	}
	return sr, units
}

// holdScope reads a hold's scope: a prefix of the reservation's scope, or
// a scope of its own.
func (r *snapReader) holdScope(scope string) string {
	at := r.off
	if k := r.uvarint("scope"); k > 0 {
		if k-1 > uint64(len(scope)) {
			r.failAt(at, "scope", "prefix of %d bytes of the reservation's scope of %d", k-1, len(scope))
			return ""
		}
		return scope[:k-1]
	}
	return r.intern("scope")
}

// closedQueue reads the closed queue section.
func (r *snapReader) closedQueue() []snapQueued {
	n := r.count("closed")
	out := make([]snapQueued, 0, room[snapQueued](r, n))
	for i := 0; i < n && r.err == nil; i++ {
		r.enter("closed", i)
		out = append(out, snapQueued{ID: r.string("id"), Seq: r.uvarint("seq"), At: r.time("at")})
		r.leave()
	}
	return out
}

// idempotency reads the idempotency keys section.
func (r *snapReader) idempotency() []snapIdem {
	n := r.count("idempotency")
	out := make([]snapIdem, 0, room[snapIdem](r, n))
	for i := 0; i < n && r.err == nil; i++ {
		r.enter("idempotency", i)
		out = append(out, snapIdem{Root: r.intern("root"), Op: events.Op(r.intern("op")),
			Key: r.string("key"), Hash: r.hash("hash"), Seq: r.uvarint("seq"), At: r.time("at")})
		r.leave()
	}
	return out
}

// end checks that the snapshot ends where the reader is, and returns the
// first error.
func (r *snapReader) end() error {
	if r.err == nil && r.off != len(r.b) {
		r.fail("", "%d bytes left over after the snapshot", len(r.b)-r.off)
	}
	return r.err
}

// A count is at most the bytes left, but an item decodes to many times the
// bytes it takes, so a corrupted count must not size what is allocated
// ahead: all the room made ahead of reading items, over the whole
// snapshot, is at most roomPerByte bytes per byte of input (real snapshots
// need about 3); past it, lists grow as items are read.
const roomPerByte = 8

// room returns the capacity to make for a list of n items of type T, and
// takes it from what r has left to make.
func room[T any](r *snapReader, n int) int {
	size := int(unsafe.Sizeof(*new(T)))
	n = min(n, r.room/size)
	r.room -= n * size
	return n
}

// Interning: a snapshot repeats a few roots, scopes, units, periods and
// labels many times; decoding each once saves allocations and memory.
const (
	maxInterned   = 4096 // distinct strings
	maxInternedAt = 128  // bytes per string
)

// snapReader reads a binary snapshot. Its first error sticks: every read
// after it returns a zero value, so a decoder reads on unconditionally and
// checks the error where it matters (loops stop on it).
type snapReader struct {
	b    []byte
	off  int
	err  error
	path []pathElem // where the reader is, for errors
	strs map[string]string
	buf  []byte // scratch for amounts
	room int    // bytes that may still be allocated ahead (room)
}

type pathElem struct {
	name string
	i    int
}

func (r *snapReader) enter(name string, i int) { r.path = append(r.path, pathElem{name, i}) }

func (r *snapReader) leave() { r.path = r.path[:len(r.path)-1] }

// fail records an error about field at the current offset, unless one is
// recorded already.
func (r *snapReader) fail(field, format string, args ...any) {
	r.failAt(r.off, field, format, args...)
}

// failAt records an error about field, which starts at offset at.
func (r *snapReader) failAt(at int, field, format string, args ...any) {
	if r.err != nil {
		return
	}
	var where strings.Builder
	for _, e := range r.path {
		if where.Len() > 0 {
			where.WriteByte('.')
		}
		where.WriteString(e.name)
		where.WriteByte('[')
		where.WriteString(strconv.Itoa(e.i))
		where.WriteByte(']')
	}
	if field != "" {
		if where.Len() > 0 {
			where.WriteByte('.')
		}
		where.WriteString(field)
	}
	if where.Len() == 0 {
		where.WriteString("snapshot")
	}
	r.err = fmt.Errorf("enforcer: snapshot: %s: %s at offset %d", where.String(), fmt.Sprintf(format, args...), at)
}

func (r *snapReader) left() int { return len(r.b) - r.off }

func (r *snapReader) uvarint(field string) uint64 {
	return readVarint(r, field, "uvarint", binary.Uvarint)
}

func (r *snapReader) varint(field string) int64 {
	return readVarint(r, field, "varint", binary.Varint)
}

// readVarint reads one (u)varint with decode, binary.Uvarint or Varint.
func readVarint[T uint64 | int64](r *snapReader, field, kind string, decode func([]byte) (T, int)) T {
	if r.err != nil {
		return 0
	}
	v, n := decode(r.b[r.off:])
	switch {
	case n == 0:
		r.fail(field, "truncated %s", kind)
		return 0
	case n < 0:
		r.fail(field, "%s overflows 64 bits", kind)
		return 0
	}
	r.off += n
	return v
}

func (r *snapReader) int(field string) int {
	at := r.off
	v := r.varint(field)
	if int64(int(v)) != v {
		r.failAt(at, field, "%d does not fit an int", v)
		return 0
	}
	return int(v)
}

// count reads the length of a list, which cannot exceed the bytes left
// (every item takes at least one).
func (r *snapReader) count(field string) int {
	at := r.off
	v := r.uvarint(field)
	if v > uint64(r.left()) {
		r.failAt(at, field, "count %d exceeds the %d bytes left", v, r.left())
		return 0
	}
	return int(v)
}

// bytes reads a length-prefixed string as a slice of the input.
func (r *snapReader) bytes(field string) []byte {
	at := r.off
	v := r.uvarint(field)
	if v > uint64(r.left()) {
		r.failAt(at, field, "length %d exceeds the %d bytes left", v, r.left())
		return nil
	}
	if r.err != nil {
		return nil
	}
	s := r.b[r.off : r.off+int(v) : r.off+int(v)]
	r.off += int(v)
	return s
}

func (r *snapReader) string(field string) string { return string(r.bytes(field)) }

// intern reads a string that is likely to repeat.
func (r *snapReader) intern(field string) string {
	b := r.bytes(field)
	if s, ok := r.strs[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(r.strs) < maxInterned && len(s) <= maxInternedAt {
		r.strs[s] = s
	}
	return s
}

func (r *snapReader) time(field string) time.Time {
	sec := r.varint(field)
	at := r.off
	nsec := r.uvarint(field)
	if nsec >= 1e9 {
		r.failAt(at, field, "%d nanoseconds", nsec)
		return time.Time{}
	}
	if r.err != nil {
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

// amount reads a single figure as the JSON format reads it (within the wide
// bounds an event's figures may take), optionally signed.
func (r *snapReader) amount(field string, signed bool) events.Amount {
	at := r.off
	txt := r.bytes(field)
	if r.err != nil {
		return events.Amount{}
	}
	// Only digits, '.' and '-' can make an amount; so checked, the text
	// can be quoted as JSON as it is.
	for _, c := range txt {
		if (c < '0' || c > '9') && c != '.' && c != '-' {
			r.failAt(at, field, "%q is not an amount", txt)
			return events.Amount{}
		}
	}
	r.buf = append(append(append(r.buf[:0], '"'), txt...), '"')
	var err error
	var a events.Amount
	if signed {
		var s events.Signed
		err = s.UnmarshalJSON(r.buf)
		a = s.Amount
	} else {
		err = a.UnmarshalJSON(r.buf)
	}
	if err != nil {
		r.failAt(at, field, "%v", err)
		return events.Amount{}
	}
	return a
}

// amounts reads a unit → amount map as the JSON format reads one (unit
// names checked, amounts within the request bounds), appending its units,
// in order, to units.
func (r *snapReader) amounts(field string, units []string) (events.Amounts, []string) {
	n := r.count(field)
	m := make(events.Amounts, min(n, events.MaxUnits))
	for i := 0; i < n && r.err == nil; i++ {
		at := r.off
		u := r.intern(field)
		if err := events.ValidateUnit(u); err != nil {
			r.failAt(at, field, "%v", err)
		} else if i > 0 && u <= units[len(units)-1] {
			r.failAt(at, field, "unit %q after %q: units are in increasing byte order", u, units[len(units)-1])
		}
		m[u] = r.requestAmount(field, u)
		units = append(units, u)
	}
	return m, units
}

// requestAmount reads the amount of unit u of a map.
func (r *snapReader) requestAmount(field, u string) events.Amount {
	at := r.off
	txt := r.bytes(field)
	if r.err != nil {
		return events.Amount{}
	}
	a, err := events.ParseAmount(string(txt))
	if err != nil {
		r.failAt(at, field, "%s: %v", u, err)
	}
	return a
}

// holdUnits reads the units of a hold, each a reference to one of the
// reservation's units (with its amount) or a unit and amount of its own.
// A hold usually holds all the reservation's units: it then shares the
// reservation's map, which the decoded snapshot's readers only read.
func (r *snapReader) holdUnits(field string, units []string, amounts events.Amounts) events.Amounts {
	n := r.count(field)
	var m events.Amounts // nil while the units read are the reservation's first ones
	prev := ""
	for i := 0; i < n && r.err == nil; i++ {
		at := r.off
		k := r.uvarint(field)
		if m == nil && k == uint64(i)+1 && i < len(units) {
			prev = units[i]
			continue
		}
		if m == nil {
			m = make(events.Amounts, min(n, events.MaxUnits))
			for _, u := range units[:i] {
				m[u] = amounts[u]
			}
		}
		var u string
		switch {
		case k > uint64(len(units)):
			r.failAt(at, field, "unit %d of a reservation of %d", k, len(units))
			return m
		case k > 0:
			u = units[k-1]
			m[u] = amounts[u]
		default:
			at = r.off
			u = r.intern(field)
			if err := events.ValidateUnit(u); err != nil {
				r.failAt(at, field, "%v", err)
			}
			m[u] = r.requestAmount(field, u)
		}
		if i > 0 && u <= prev {
			r.failAt(at, field, "unit %q after %q: units are in increasing byte order", u, prev)
		}
		prev = u
	}
	switch {
	case m != nil || r.err != nil:
		return m
	case n == len(units):
		return amounts
	}
	m = make(events.Amounts, n)
	for _, u := range units[:n] {
		m[u] = amounts[u]
	}
	return m
}

// labels reads a labels map; none is nil, as the JSON format reads it.
func (r *snapReader) labels(field string) events.Labels {
	n := r.count(field)
	if n == 0 {
		return nil
	}
	m := make(events.Labels, min(n, events.MaxLabels))
	prev := ""
	for i := 0; i < n && r.err == nil; i++ {
		at := r.off
		k := r.intern(field)
		if i > 0 && k <= prev {
			r.failAt(at, field, "label %q after %q: labels are in increasing byte order", k, prev)
		}
		m[k] = r.intern(field)
		prev = k
	}
	return m
}

// budgetRef reads a budget key: a reference to one of the budgets, or a
// key of its own.
func (r *snapReader) budgetRef(field string, keys []string) string {
	at := r.off
	k := r.uvarint(field)
	switch {
	case k > uint64(len(keys)):
		r.failAt(at, field, "budget %d of %d", k, len(keys))
		return ""
	case k > 0:
		return keys[k-1]
	}
	return r.intern(field)
}

// hash reads a request hash: 16 bytes behind tag hashHex, or a string
// behind tag hashRaw.
func (r *snapReader) hash(field string) string {
	v := r.hashValue(field, nil)
	if r.err != nil {
		return ""
	}
	return decodeHash(v)
}

// hashValue reads a request hash (16 bytes behind tag hashHex, or a string
// behind tag hashRaw) and appends its fifo encoding (appendHash) to b.
func (r *snapReader) hashValue(field string, b []byte) []byte {
	if r.err != nil {
		return b
	}
	if r.left() == 0 {
		r.fail(field, "truncated")
		return b
	}
	at := r.off
	tag := r.b[r.off]
	r.off++
	switch tag {
	case hashHex: // the fifo's encoding already
		if r.left() < 16 {
			r.failAt(at, field, "%d bytes left of a 16-byte hash", r.left())
			return b
		}
		r.off += 16
		return append(b, r.b[at:at+17]...)
	case hashRaw:
		return appendHash(b, string(r.bytes(field)))
	}
	r.failAt(at, field, "unknown tag %d", tag)
	return b
}
