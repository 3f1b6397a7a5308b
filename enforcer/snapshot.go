package enforcer

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tallyledger/tally/events"
)

// SnapshotVersion is the format of Snapshot's output.
const SnapshotVersion = 1

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

// Snapshot renders the state canonically. Budget keys are "pattern\x00name".
func (s *State) Snapshot() []byte {
	sn := snapshot{V: SnapshotVersion, Partition: s.cfg.Partition, LastSeq: s.lastSeq, LastAt: s.lastAt, ClaimedBy: s.claimedBy,
		Budgets: []events.Budget{}, Instances: []snapInstance{}, Reservations: []snapReservation{},
		Closed: []snapQueued{}, Idempotency: []snapIdem{}}
	for _, k := range sortedKeysOf(s.budgets) {
		sn.Budgets = append(sn.Budgets, s.budgets[k].def)
	}
	keys := make([]instKey, 0, len(s.instances))
	for k := range s.instances {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmpInstKey)
	for _, k := range keys {
		in := s.instances[k]
		si := snapInstance{Budget: k.budget, Scope: k.scope, Period: k.period, Start: in.win.Start, End: in.win.End,
			Units: []snapUnit{}, Fired: []string{}}
		for _, u := range sortedKeysOf(in.units) {
			us := in.units[u]
			si.Units = append(si.Units, snapUnit{Unit: u, Spent: us.spent, Reserved: us.reserved, Adjust: events.Signed{Amount: us.adjust}})
		}
		for f := range in.fired {
			si.Fired = append(si.Fired, f.unit+"\x00"+f.threshold)
		}
		slices.Sort(si.Fired)
		sn.Instances = append(sn.Instances, si)
	}
	for _, id := range sortedKeysOf(s.reservations) {
		r := s.reservations[id]
		sr := snapReservation{ID: r.id, Root: r.root, Scope: r.scope, Amounts: r.amounts, Priority: r.priority,
			Option: r.option, Label: r.label, Labels: r.labels, ExpiresAt: r.expiresAt, Status: r.status,
			ClosedAt: r.closedAt, Holds: []snapHold{}}
		for _, h := range r.holds {
			units := events.Amounts{}
			for _, u := range h.units {
				units[u] = r.amounts[u]
			}
			sr.Holds = append(sr.Holds, snapHold{Budget: h.key.budget, Scope: h.key.scope, Period: h.key.period, Units: units})
		}
		sn.Reservations = append(sn.Reservations, sr)
	}
	for i := s.closed.head; i < len(s.closed.items); i++ {
		it := s.closed.items[i]
		if r, ok := s.reservations[it.id]; ok && r.status != events.StatusOpen && r.closedAt.Equal(it.at) {
			sn.Closed = append(sn.Closed, snapQueued{ID: it.id, Seq: it.seq, At: it.at})
		}
	}
	for i := s.idemOrder.head; i < len(s.idemOrder.items); i++ {
		it := s.idemOrder.items[i]
		if e, ok := s.idem[it.k]; ok && e.seq == it.seq {
			sn.Idempotency = append(sn.Idempotency, snapIdem{Root: it.k.root, Op: it.k.op, Key: it.k.key, Hash: e.hash, Seq: e.seq, At: e.at})
		}
	}
	b, err := json.Marshal(sn)
	if err != nil {
		panic(fmt.Sprintf("enforcer: snapshot encoding: %v", err))
	}
	return b
}

// Restore rebuilds a state from a Snapshot.
func Restore(cfg Config, b []byte) (*State, error) {
	var sn snapshot
	if err := json.Unmarshal(b, &sn); err != nil {
		return nil, fmt.Errorf("enforcer: snapshot: %w", err)
	}
	if sn.V != SnapshotVersion {
		return nil, fmt.Errorf("enforcer: snapshot version %d, this build reads %d", sn.V, SnapshotVersion)
	}
	if sn.Partition != cfg.Partition {
		return nil, fmt.Errorf("enforcer: snapshot of partition %d restored into partition %d", sn.Partition, cfg.Partition)
	}
	s := New(cfg)
	s.lastSeq, s.lastAt, s.claimedBy = sn.LastSeq, sn.LastAt.UTC(), sn.ClaimedBy
	for _, def := range sn.Budgets {
		if err := def.Validate(); err != nil {
			return nil, fmt.Errorf("enforcer: snapshot budget %s: %w", def.Name, err)
		}
		s.putBudget(def)
	}
	for _, si := range sn.Instances {
		b, ok := s.budgets[si.Budget]
		if !ok {
			return nil, fmt.Errorf("enforcer: snapshot instance of unknown budget %q", si.Budget)
		}
		in := s.getInstance(b, instKey{budget: si.Budget, scope: si.Scope, period: si.Period},
			events.Window{Key: si.Period, Start: si.Start.UTC(), End: si.End.UTC()})
		for _, su := range si.Units {
			in.units[su.Unit] = &unitState{spent: su.Spent, reserved: su.Reserved, adjust: su.Adjust.Amount}
		}
		for _, f := range si.Fired {
			u, th, _ := strings.Cut(f, "\x00")
			in.fired[firedKey{u, th}] = struct{}{}
		}
	}
	for _, sr := range sn.Reservations {
		r := &reservation{id: sr.ID, root: sr.Root, scope: sr.Scope, amounts: sr.Amounts, priority: sr.Priority,
			option: sr.Option, label: sr.Label, labels: sr.Labels, expiresAt: sr.ExpiresAt.UTC(), status: sr.Status,
			closedAt: sr.ClosedAt.UTC()}
		for _, h := range sr.Holds {
			r.holds = append(r.holds, hold{key: instKey{budget: h.Budget, scope: h.Scope, period: h.Period}, units: events.SortedUnits(h.Units)})
		}
		s.reservations[r.id] = r
		if r.status == events.StatusOpen {
			s.open++
			heap.Push(&s.expiries, expiryEntry{at: r.expiresAt, id: r.id})
		}
	}
	for _, q := range sn.Closed {
		s.closed.push(queueItem{id: q.ID, seq: q.Seq, at: q.At.UTC()})
	}
	for _, e := range sn.Idempotency {
		k := idemKey{root: e.Root, op: e.Op, key: e.Key}
		s.idem[k] = idemEntry{hash: e.Hash, seq: e.Seq, at: e.At.UTC()}
		s.idemOrder.push(queueItem{k: k, seq: e.Seq, at: e.At.UTC()})
	}
	return s, nil
}

func sortedKeysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func cmpInstKey(a, b instKey) int {
	if c := strings.Compare(a.budget, b.budget); c != 0 {
		return c
	}
	if c := strings.Compare(a.scope, b.scope); c != 0 {
		return c
	}
	return strings.Compare(a.period, b.period)
}
