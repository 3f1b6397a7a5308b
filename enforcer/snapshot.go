package enforcer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tallyledger/tally/events"
)

// Snapshot formats. Restore reads both; Snapshot writes SnapshotVersion.
const (
	// SnapshotVersionJSON is the first format: the snapshot struct below as
	// a JSON document ({"v":1,…}). Snapshots stored by earlier builds are in
	// it, and SnapshotJSON renders any snapshot in it for tools to read.
	SnapshotVersionJSON = 1
	// SnapshotVersion is the format of Snapshot's output: the same struct in
	// the binary encoding of snapshot_bin.go, several times smaller and
	// faster to write and read than the JSON.
	SnapshotVersion = 2
)

// snapshot is the canonical, deterministic form of a State: two states
// that would decide identically produce byte-identical snapshots.
type snapshot struct {
	V            int               `json:"v"`
	Partition    int               `json:"partition"`
	LastSeq      uint64            `json:"last_seq"`
	LastAt       time.Time         `json:"last_at"`
	ClaimedBy    string            `json:"claimed_by"`
	Budgets      []events.Budget   `json:"budgets"`
	Instances    []snapInstance    `json:"instances"`
	Reservations []snapReservation `json:"reservations"`
	Closed       []snapQueued      `json:"closed"`
	Idempotency  []snapIdem        `json:"idempotency"`
}

type snapInstance struct {
	Budget string     `json:"budget"`
	Scope  string     `json:"scope"`
	Period string     `json:"period"`
	Start  time.Time  `json:"start"`
	End    time.Time  `json:"end"`
	Units  []snapUnit `json:"units"`
	Fired  []string   `json:"fired"`
}

type snapUnit struct {
	Unit     string        `json:"unit"`
	Spent    events.Amount `json:"spent"`
	Reserved events.Amount `json:"reserved"`
	Adjust   events.Signed `json:"adjust"`
}

type snapReservation struct {
	ID        string                   `json:"id"`
	Root      string                   `json:"root"`
	Scope     string                   `json:"scope"`
	Amounts   events.Amounts           `json:"amounts"`
	Priority  events.Priority          `json:"priority"`
	Option    int                      `json:"option"`
	Label     string                   `json:"label"`
	Labels    events.Labels            `json:"labels,omitempty"`
	ExpiresAt time.Time                `json:"expires_at"`
	Status    events.ReservationStatus `json:"status"`
	ClosedAt  time.Time                `json:"closed_at"`
	Holds     []snapHold               `json:"holds"`
}

type snapHold struct {
	Budget string         `json:"budget"`
	Scope  string         `json:"scope"`
	Period string         `json:"period"`
	Units  events.Amounts `json:"units"`
}

type snapQueued struct {
	ID  string    `json:"id"`
	Seq uint64    `json:"seq"`
	At  time.Time `json:"at"`
}

type snapIdem struct {
	Root string    `json:"root"`
	Op   events.Op `json:"op"`
	Key  string    `json:"key"`
	Hash string    `json:"hash"`
	Seq  uint64    `json:"seq"`
	At   time.Time `json:"at"`
}

// Snapshot renders the state canonically, in format SnapshotVersion: the
// bytes of appendSnapshot(nil, s.canonical()). The retained reservations
// and keys, most of a large state, are written straight from the bytes
// their fifos hold (appendClosedReservation, appendRetained): decoding
// them into objects first made a snapshot of 50 000 pairs allocate 115 MiB
// in 1.6 M objects while the partition kept deciding.
func (s *State) Snapshot() []byte { return s.AppendSnapshot(nil) }

// AppendSnapshot appends Snapshot() to b.
func (s *State) AppendSnapshot(b []byte) []byte {
	sn := s.canonicalTop()
	rs := s.reservationsByID()
	b, refs := appendSnapshotTop(b, sn, len(rs), s.closed.len(), s.idem.len())
	b = binary.AppendUvarint(b, uint64(len(rs)))
	w := closedWriter{reservationWriter: reservationWriter{refs: refs}}
	amounts := events.Amounts{} // each open reservation's in turn
	for _, h := range rs {
		if h.open != nil {
			clear(amounts)
			sr := snapReservationOf(h.open, amounts)
			b = w.append(b, &sr)
		} else {
			b = s.appendClosedReservation(b, h.closed, &w)
		}
	}
	return s.appendRetained(b)
}

// reservationRef is an open reservation or the fifo record of a retained
// one, with its id.
type reservationRef struct {
	id     []byte
	open   *reservation
	closed *fifoRec
}

// reservationsByID lists the open and the retained reservations by id.
// The ids of retained ones point into the fifo: valid until it changes.
func (s *State) reservationsByID() []reservationRef {
	rs := make([]reservationRef, 0, s.open.len()+s.closed.len())
	for r := range s.open.all() {
		rs = append(rs, reservationRef{id: []byte(r.id), open: r})
	}
	for pos := s.closed.head; pos < s.closed.tail; pos++ {
		if rec := s.closed.at(pos); s.closed.current(rec) == rec {
			rs = append(rs, reservationRef{id: s.closed.key(rec), closed: rec})
		}
	}
	slices.SortFunc(rs, func(x, y reservationRef) int { return bytes.Compare(x.id, y.id) })
	return rs
}

// canonical builds the state's snapshot. Budget keys are "pattern\x00name".
func (s *State) canonical() snapshot {
	sn := s.canonicalTop()
	rs := s.reservationsByID()
	sn.Reservations = make([]snapReservation, 0, len(rs))
	for _, h := range rs {
		r := h.open
		if r == nil {
			r = s.readClosed(h.closed)
		}
		sn.Reservations = append(sn.Reservations, snapReservationOf(r, nil))
	}
	sn.Closed = make([]snapQueued, 0, s.closed.len())
	sn.Idempotency = make([]snapIdem, 0, s.idem.len())
	for pos := s.closed.head; pos < s.closed.tail; pos++ {
		rec := s.closed.at(pos)
		if cur := s.closed.current(rec); cur != nil && cur.at == rec.at {
			sn.Closed = append(sn.Closed, snapQueued{ID: string(s.closed.key(rec)), Seq: rec.seq, At: rec.at.time()})
		}
	}
	for pos := s.idem.head; pos < s.idem.tail; pos++ {
		if rec := s.idem.at(pos); s.idem.current(rec) == rec {
			root, op, key := parseIdemKey(s.idem.key(rec))
			sn.Idempotency = append(sn.Idempotency, snapIdem{Root: root, Op: op, Key: key, Hash: decodeHash(s.idem.value(rec)),
				Seq: rec.seq, At: rec.at.time()})
		}
	}
	return sn
}

// canonicalTop is canonical without the reservations, the closed queue
// and the idempotency keys (nil).
func (s *State) canonicalTop() snapshot {
	sn := snapshot{V: SnapshotVersion, Partition: s.cfg.Partition, LastSeq: s.lastSeq, LastAt: s.lastAt, ClaimedBy: s.claimedBy,
		Budgets: []events.Budget{}, Instances: []snapInstance{}}
	budgets := make([]*budget, 0, len(s.budgets))
	for _, b := range s.budgets {
		budgets = append(budgets, b)
	}
	slices.SortFunc(budgets, func(x, y *budget) int { return strings.Compare(x.key, y.key) })
	for _, b := range budgets {
		sn.Budgets = append(sn.Budgets, b.def)
	}
	// Instances in (budget key, scope, period) order.
	for _, b := range budgets {
		ins := make([]*instance, 0, len(b.instances))
		for _, in := range b.instances {
			ins = append(ins, in)
		}
		slices.SortFunc(ins, func(x, y *instance) int {
			if c := strings.Compare(x.scope, y.scope); c != 0 {
				return c
			}
			return strings.Compare(x.period, y.period)
		})
		for _, in := range ins {
			si := snapInstance{Budget: b.key, Scope: in.scope, Period: in.period, Start: in.win.Start, End: in.win.End,
				Units: make([]snapUnit, 0, len(in.units)), Fired: make([]string, 0, len(in.fired))}
			for _, us := range in.units {
				si.Units = append(si.Units, snapUnit{Unit: us.unit, Spent: us.spent, Reserved: us.reserved, Adjust: events.Signed{Amount: us.adjust}})
			}
			slices.SortFunc(si.Units, func(x, y snapUnit) int { return strings.Compare(x.Unit, y.Unit) })
			for _, f := range in.fired {
				si.Fired = append(si.Fired, f.unit+"\x00"+f.threshold)
			}
			slices.Sort(si.Fired)
			sn.Instances = append(sn.Instances, si)
		}
	}
	return sn
}

// snapReservationOf is r as a snapshot holds it. amounts is an empty map
// for r's amounts, or nil for a new one.
func snapReservationOf(r *reservation, amounts events.Amounts) snapReservation {
	if amounts == nil {
		amounts = make(events.Amounts, len(r.units))
	}
	amounts = r.amountsInto(amounts)
	sr := snapReservation{ID: r.id, Root: r.root, Scope: r.scope, Amounts: amounts, Priority: r.priority,
		Option: r.option, Label: r.label, Labels: r.labelsMap(), ExpiresAt: r.expiresAt, Status: r.status,
		ClosedAt: r.closedAt, Holds: make([]snapHold, 0, len(r.holds))}
	for _, h := range r.holds {
		// A hold's units are some of the reservation's; when they are
		// all of them (the usual case) the snapshot, which is only
		// read, shares the reservation's map instead of copying it.
		units := amounts
		if len(h.units) == 0 || !slices.Equal(h.units, r.units) {
			units = make(events.Amounts, len(h.units))
			for _, u := range h.units {
				units[u] = r.amount(u)
			}
		}
		sr.Holds = append(sr.Holds, snapHold{Budget: h.budget().key, Scope: h.scope(), Period: h.period(), Units: units})
	}
	return sr
}

// Restore rebuilds a state from a Snapshot of either format: the binary
// one (SnapshotVersion), or a JSON document of version 1, as earlier
// builds stored.
func Restore(cfg Config, b []byte) (*State, error) {
	var (
		s   *State
		err error
	)
	if len(b) > 0 && b[0] == snapshotMagic[0] {
		s, err = restoreBinary(cfg, b)
	} else {
		var sn snapshot
		if sn, err = decodeSnapshot(b); err == nil {
			s, err = restore(cfg, sn)
		}
	}
	if err != nil {
		return nil, err
	}
	s.maxID = s.greatestID()
	return s, nil
}

// SnapshotJSON renders a snapshot of either format as a JSON document of
// version SnapshotVersionJSON, for tools that read or print snapshots.
func SnapshotJSON(b []byte) ([]byte, error) {
	sn, err := decodeSnapshot(b)
	if err != nil {
		return nil, err
	}
	return encodeSnapshotJSON(sn)
}

// decodeSnapshot tells the formats apart by their first byte: binary
// snapshots start with a zero byte (snapshotMagic), which no JSON document
// can, and JSON ones with '{'.
func decodeSnapshot(b []byte) (snapshot, error) {
	switch {
	case len(b) > 0 && b[0] == snapshotMagic[0]:
		return decodeSnapshotBinary(b)
	case len(b) > 0 && b[0] == '{':
		var sn snapshot
		if err := json.Unmarshal(b, &sn); err != nil {
			return snapshot{}, fmt.Errorf("enforcer: snapshot: %w", err)
		}
		if sn.V != SnapshotVersionJSON {
			return snapshot{}, fmt.Errorf("enforcer: JSON snapshot of version %d, this build reads JSON snapshots of version %d and binary ones of version %d",
				sn.V, SnapshotVersionJSON, SnapshotVersion)
		}
		return sn, nil
	case len(b) == 0:
		return snapshot{}, errors.New("enforcer: snapshot: empty")
	}
	return snapshot{}, fmt.Errorf("enforcer: snapshot: starts with byte %#02x, neither a binary snapshot nor a JSON one", b[0])
}

// encodeSnapshotJSON encodes sn in the JSON format, version 1.
func encodeSnapshotJSON(sn snapshot) ([]byte, error) {
	sn.V = SnapshotVersionJSON
	b, err := json.Marshal(sn)
	if err != nil {
		return nil, fmt.Errorf("enforcer: snapshot as JSON: %w", err)
	}
	return b, nil
}

// restore rebuilds a state from its snapshot.
func restore(cfg Config, sn snapshot) (*State, error) {
	s, budgetOf, err := restoreTop(cfg, sn)
	if err != nil {
		return nil, err
	}
	// The idempotency keys, as many as events in a snapshot's window, go
	// into their own fifo on another goroutine: restoring is most of what
	// a takeover waits for before the tail.
	var idem sync.WaitGroup
	idem.Go(func() { restoreIdempotency(s, sn.Idempotency) })
	defer idem.Wait()
	closed := make(map[string]*reservation, len(sn.Reservations))
	for i := range sn.Reservations {
		r, err := s.restoredReservation(&sn.Reservations[i], budgetOf)
		if err != nil {
			return nil, err
		}
		if s.open.get(r.id) != nil || closed[r.id] != nil {
			return nil, fmt.Errorf("enforcer: snapshot has reservation %s twice", r.id)
		}
		if r.status == events.StatusOpen {
			s.open.put(r)
			s.expiries.push(r)
		} else {
			closed[r.id] = r
		}
	}
	// The closed queue: each closed reservation at least once, at the time
	// it closed (twice when it closed twice at one instant).
	s.closed.reserve(len(closed))
	for _, q := range sn.Closed {
		r := closed[q.ID]
		if r == nil || !r.closedAt.Equal(q.At) {
			return nil, fmt.Errorf("enforcer: snapshot closed queue names %s at %s, not a reservation closed then", q.ID, q.At)
		}
		s.scratch.val = appendClosed(s.scratch.val[:0], r)
		s.closed.put(s.idKey(r.id), s.scratch.val, q.Seq, stampOf(q.At.UTC()))
	}
	if s.closed.len() != len(closed) {
		return nil, fmt.Errorf("enforcer: snapshot has %d closed reservations, %d in the closed queue", len(closed), s.closed.len())
	}
	return s, nil
}

// restoreTop makes a state of a snapshot's sections before the
// reservations: its sequence, budgets and instances. budgetOf finds a
// budget of the state by its key.
func restoreTop(cfg Config, sn snapshot) (s *State, budgetOf func(key string) *budget, err error) {
	if sn.Partition != cfg.Partition {
		return nil, nil, fmt.Errorf("enforcer: snapshot of partition %d restored into partition %d", sn.Partition, cfg.Partition)
	}
	s = New(cfg)
	s.lastSeq, s.lastAt, s.claimedBy = sn.LastSeq, sn.LastAt.UTC(), sn.ClaimedBy
	for _, def := range sn.Budgets {
		if err := def.Validate(); err != nil {
			return nil, nil, fmt.Errorf("enforcer: snapshot budget %s: %w", def.Name, err)
		}
		s.putBudget(def)
	}
	budgetOf = func(key string) *budget {
		pattern, name, _ := strings.Cut(key, "\x00")
		return s.budgets[budgetRef{pattern, name}]
	}
	for _, si := range sn.Instances {
		b := budgetOf(si.Budget)
		if b == nil {
			return nil, nil, fmt.Errorf("enforcer: snapshot instance of unknown budget %q", si.Budget)
		}
		in := s.getInstance(b, si.Scope, si.Period, events.Window{Key: si.Period, Start: si.Start.UTC(), End: si.End.UTC()})
		for _, su := range si.Units {
			*in.unit(su.Unit) = unitState{spent: su.Spent, reserved: su.Reserved, adjust: su.Adjust.Amount}
		}
		for _, f := range si.Fired {
			u, th, _ := strings.Cut(f, "\x00")
			in.fire(u, th)
		}
	}
	return s, budgetOf, nil
}

// restoredReservation builds the reservation of sr; s holds its budgets.
func (s *State) restoredReservation(sr *snapReservation, budgetOf func(key string) *budget) (*reservation, error) {
	r := &reservation{id: sr.ID, root: sr.Root, scope: sr.Scope,
		priority: sr.Priority, option: sr.Option, label: sr.Label, labels: sr.Labels, expiresAt: sr.ExpiresAt.UTC(),
		status: sr.Status, closedAt: sr.ClosedAt.UTC()}
	// Units and holds in the reservation's own room when they fit, as a
	// grant does.
	as := make([]unitAmount, 0, len(sr.Amounts))
	for u, a := range sr.Amounts {
		as = append(as, unitAmount{unit: u, amt: a})
	}
	slices.SortFunc(as, func(x, y unitAmount) int { return strings.Compare(x.unit, y.unit) })
	r.setAmounts(as)
	r.holds = r.holdBuf[:0]
	if !slices.Contains(statusCodes, r.status) {
		return nil, fmt.Errorf("enforcer: snapshot reservation %s has status %q", r.id, r.status)
	}
	for _, h := range sr.Holds {
		b := budgetOf(h.Budget)
		if b == nil {
			return nil, fmt.Errorf("enforcer: snapshot reservation %s holds on unknown budget %q", r.id, h.Budget)
		}
		units := r.units // shared when the hold holds every unit, as a grant shares them
		if !sameKeys(h.Units, r.units) {
			units = events.SortedUnits(h.Units)
		}
		r.holds = append(r.holds, holdOn(b, h.Scope, h.Period, b.instances[instRef{h.Scope, h.Period}], units))
	}
	return r, nil
}

// restoreIdempotency fills s.idem with the snapshot's keys. It touches
// nothing else of s, so restore runs it beside the rest.
func restoreIdempotency(s *State, keys []snapIdem) {
	s.idem.reserve(len(keys))
	var key, val []byte
	for _, e := range keys {
		key = idemKey(key[:0], e.Root, e.Op, e.Key)
		val = appendHash(val[:0], e.Hash)
		s.idem.put(key, val, e.Seq, stampOf(e.At.UTC()))
	}
}

// sameKeys reports whether m's keys are exactly keys (which has no repeats).
func sameKeys[V any](m map[string]V, keys []string) bool {
	if len(m) != len(keys) {
		return false
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return false
		}
	}
	return true
}

func sortedKeysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
