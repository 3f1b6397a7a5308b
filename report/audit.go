package report

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/projector"
	"github.com/tallyledger/tally/streams"
)

// Audit checks (Finding.Check).
const (
	CheckSequence    = "sequence"    // stream sequences strictly increase, without gaps
	CheckSchema      = "schema"      // the event decodes strictly
	CheckEnvelope    = "envelope"    // partition, root and subject agree
	CheckChain       = "chain"       // prev is the SHA-256 of the previous message
	CheckTime        = "time"        // event time never goes backwards
	CheckArithmetic  = "arithmetic"  // remaining = limit − spent − reserved
	CheckOverspend   = "overspend"   // no enforce-mode grant above its limit
	CheckReservation = "reservation" // commit/release/extend/expiry refer to an open reservation
	CheckReplay      = "replay"      // the enforcer's Apply accepts the event
	CheckProjection  = "projection"  // the projection equals the rebuilt balances
)

// Finding is one thing the audit found wrong, and where.
type Finding struct {
	Partition int    `json:"partition"`
	Seq       uint64 `json:"seq"`
	Check     string `json:"check"`
	Message   string `json:"message"`
}

func (f Finding) String() string {
	return fmt.Sprintf("partition %d seq %d: %s: %s", f.Partition, f.Seq, f.Check, f.Message)
}

// Checker verifies one partition's stream, message by message, in order:
// the hash chain, the schema, the envelope and the ledger's invariants.
type Checker struct {
	n, p      int
	window    time.Duration
	started   bool
	firstSeq  uint64
	lastSeq   uint64
	lastAt    time.Time
	prev      string // hash of the previous message
	resv      map[string]*resvState
	expiredQ  []expiredID
	Events    int
	FirstTime time.Time
	dec       events.Decoder
}

type resvState struct {
	status    events.ReservationStatus
	expiredAt time.Time
}

type expiredID struct {
	id string
	at time.Time
}

// NewChecker returns the checker of partition n of a ledger of p
// partitions. window is how long after its expiry a reservation may still
// be committed late (the enforcer's idempotency window); ≤ 0 means 25 h.
func NewChecker(n, p int, window time.Duration) *Checker {
	if window <= 0 {
		window = 25 * time.Hour
	}
	return &Checker{n: n, p: p, window: window, resv: map[string]*resvState{}}
}

// Check verifies the message stored at seq under subject. It returns the
// decoded event (ok false if it does not decode) and what is wrong.
func (c *Checker) Check(seq uint64, subject string, data []byte) (ev events.Event, ok bool, out []Finding) {
	find := func(check, format string, args ...any) {
		out = append(out, Finding{Partition: c.n, Seq: seq, Check: check, Message: fmt.Sprintf(format, args...)})
	}
	c.Events++
	first := !c.started
	switch {
	case first:
		c.started, c.firstSeq = true, seq
	case seq <= c.lastSeq:
		find(CheckSequence, "sequence %d after %d", seq, c.lastSeq)
	case seq != c.lastSeq+1:
		find(CheckSequence, "sequences %d to %d are missing (the stream denies deletes)", c.lastSeq+1, seq-1)
	}
	prevHash := c.prev
	c.prev, c.lastSeq = events.Hash(data), seq

	ev, err := c.dec.Decode(data)
	if err != nil {
		find(CheckSchema, "%v", err)
		return ev, false, out
	}
	// The chain: the first message of a stream starts it; a stream whose
	// history starts later (archived prefix) cannot check its first link.
	switch {
	case first && seq == 1 && ev.Prev != "":
		find(CheckChain, "the first event has prev %q, want \"\"", ev.Prev)
	case !first && ev.Prev != prevHash:
		find(CheckChain, "prev %s is not the SHA-256 of seq %d (%s): seq %d or this event was altered", short(ev.Prev), seq-1, short(prevHash), seq-1)
	}
	if ev.Partition != c.n {
		find(CheckEnvelope, "event of partition %d in partition %d's stream", ev.Partition, c.n)
	}
	if want := streams.EventSubject(c.n, ev.Root, string(ev.Type)); subject != "" && subject != want {
		find(CheckEnvelope, "stored under subject %q, the event says %q", subject, want)
	}
	if s := scopeOf(ev.Data); s != "" && events.Root(s) != ev.Root {
		find(CheckEnvelope, "scope %q is not under the event's root %q", s, ev.Root)
	}
	if ev.Root != "" && c.p > 0 && streams.Partition(ev.Root, c.p) != c.n {
		find(CheckEnvelope, "root %q belongs to partition %d", ev.Root, streams.Partition(ev.Root, c.p))
	}
	if !first && ev.At.Before(c.lastAt) {
		find(CheckTime, "at %s is before the previous event's %s", ev.At.Format(time.RFC3339Nano), c.lastAt.Format(time.RFC3339Nano))
	}
	if first {
		c.FirstTime = ev.At
	}
	if ev.At.After(c.lastAt) {
		c.lastAt = ev.At
	}
	for _, v := range viewsOf(ev.Data) {
		for _, u := range v.Units {
			if want := u.Limit.Sub(u.Spent).Sub(u.Reserved); want.Cmp(u.Remaining.Amount) != 0 {
				find(CheckArithmetic, "%s on %s %s: remaining %s, limit − spent − reserved is %s",
					v.Budget, v.Scope, u.Unit, u.Remaining.String(), want)
			}
		}
	}
	c.invariants(ev, find)
	c.forget(ev.At)
	return ev, true, out
}

func (c *Checker) invariants(ev events.Event, find func(check, format string, args ...any)) {
	// Without the beginning of the history, a reservation may have been
	// granted before it: unknown ids are not findings then.
	known := c.firstSeq == 1
	lookup := func(id string) *resvState {
		r := c.resv[id]
		if r == nil && known {
			find(CheckReservation, "reservation %s was never granted (or was forgotten more than %s ago)", id, c.window)
		}
		return r
	}
	switch d := ev.Data.(type) {
	case *events.ReservationGranted:
		for _, v := range d.Instances {
			if v.Mode != events.ModeEnforce {
				continue
			}
			for _, u := range v.Units {
				if _, reserved := d.Amounts[u.Unit]; !reserved {
					continue
				}
				if used := u.Spent.Add(u.Reserved); used.Cmp(u.Limit) > 0 {
					find(CheckOverspend, "grant of %s leaves enforce budget %s on %s at %s %s, above its limit %s",
						d.ReservationID, v.Budget, v.Scope, used, u.Unit, u.Limit)
				}
			}
		}
		if _, dup := c.resv[d.ReservationID]; dup {
			find(CheckReservation, "reservation %s granted twice", d.ReservationID)
		}
		c.resv[d.ReservationID] = &resvState{status: events.StatusOpen}
	case *events.ReservationCommitted:
		if r := lookup(d.ReservationID); r != nil {
			switch {
			case r.status == events.StatusOpen && !d.Late, r.status == events.StatusExpired && d.Late:
			default:
				find(CheckReservation, "commit (late %v) of reservation %s which is %s", d.Late, d.ReservationID, r.status)
			}
		}
		delete(c.resv, d.ReservationID)
	case *events.ReservationReleased:
		if r := lookup(d.ReservationID); r != nil {
			switch {
			case r.status == events.StatusOpen && !d.AlreadyExpired, r.status == events.StatusExpired && d.AlreadyExpired:
			default:
				find(CheckReservation, "release (already expired %v) of reservation %s which is %s", d.AlreadyExpired, d.ReservationID, r.status)
			}
		}
		delete(c.resv, d.ReservationID)
	case *events.ReservationExtended:
		if r := lookup(d.ReservationID); r != nil && r.status != events.StatusOpen {
			find(CheckReservation, "extension of reservation %s which is %s", d.ReservationID, r.status)
		}
	case *events.ReservationExpired:
		if r := lookup(d.ReservationID); r != nil {
			if r.status != events.StatusOpen {
				find(CheckReservation, "expiry of reservation %s which is %s", d.ReservationID, r.status)
			}
			r.status, r.expiredAt = events.StatusExpired, ev.At
			c.expiredQ = append(c.expiredQ, expiredID{d.ReservationID, ev.At})
		}
	}
}

// forget drops expired reservations beyond the window: the enforcer no
// longer accepts anything for them.
func (c *Checker) forget(now time.Time) {
	i := 0
	for ; i < len(c.expiredQ) && now.Sub(c.expiredQ[i].at) > c.window; i++ {
		e := c.expiredQ[i]
		if r := c.resv[e.id]; r != nil && r.status == events.StatusExpired && r.expiredAt.Equal(e.at) {
			delete(c.resv, e.id)
		}
	}
	c.expiredQ = slices.Delete(c.expiredQ, 0, i)
}

// LastSeq is the sequence of the last message checked.
func (c *Checker) LastSeq() uint64 { return c.lastSeq }

func short(h string) string {
	if len(h) > 12 {
		return h[:12] + "…"
	}
	if h == "" {
		return `""`
	}
	return h
}

func scopeOf(d events.Data) string {
	switch v := d.(type) {
	case *events.ReservationGranted:
		return v.Scope
	case *events.ReservationDenied:
		return v.Scope
	case *events.ReservationCommitted:
		return v.Scope
	case *events.ReservationReleased:
		return v.Scope
	case *events.ReservationExtended:
		return v.Scope
	case *events.ReservationExpired:
		return v.Scope
	case *events.UsageCharged:
		return v.Scope
	case *events.BudgetSet:
		return v.Budget.Scope
	case *events.BudgetDeleted:
		return v.Scope
	case *events.BudgetAdjusted:
		return v.Scope
	case *events.ThresholdCrossed:
		return v.Scope
	}
	return ""
}

func viewsOf(d events.Data) []events.InstanceView {
	switch v := d.(type) {
	case *events.ReservationGranted:
		return v.Instances
	case *events.ReservationDenied:
		return v.Instances
	case *events.ReservationCommitted:
		return v.Instances
	case *events.ReservationReleased:
		return v.Instances
	case *events.ReservationExpired:
		return v.Instances
	case *events.UsageCharged:
		return v.Instances
	case *events.BudgetAdjusted:
		return []events.InstanceView{v.Instance}
	}
	return nil
}

// UnitBalance is a unit of a rebuilt instance.
type UnitBalance struct {
	Limit, Spent, Reserved events.Amount
}

// InstanceBalance is an instance's balances as a replay rebuilt them, for
// every unit its budget limits.
type InstanceBalance struct {
	Pattern, Budget, Scope, Period string
	Units                          map[string]UnitBalance
}

func (b InstanceBalance) zero() bool {
	for _, u := range b.Units {
		if !u.Spent.IsZero() || !u.Reserved.IsZero() {
			return false
		}
	}
	return true
}

// CompareBalances compares the balances rebuilt at a partition's
// checkpoint with the projection of that partition (tally_balances). An
// instance with nothing spent or reserved may be absent on either side.
func CompareBalances(n int, seq uint64, rebuilt []InstanceBalance, projected []projector.Balance) []Finding {
	var out []Finding
	find := func(format string, args ...any) {
		out = append(out, Finding{Partition: n, Seq: seq, Check: CheckProjection, Message: fmt.Sprintf(format, args...)})
	}
	key := func(p, b, s, per string) string { return strings.Join([]string{p, b, s, per}, "\x00") }
	proj := map[string]projector.Balance{}
	for _, b := range projected {
		proj[key(b.Pattern, b.Budget, b.Scope, b.Period)] = b
	}
	seen := map[string]bool{}
	for _, r := range rebuilt {
		k := key(r.Pattern, r.Budget, r.Scope, r.Period)
		seen[k] = true
		p, ok := proj[k]
		if !ok {
			if !r.zero() {
				find("budget %s on %s period %s: missing from the projection", r.Budget, r.Scope, r.Period)
			}
			continue
		}
		for _, u := range events.SortedUnits(r.Units) {
			want := r.Units[u]
			got, ok := p.Units.Get(u)
			switch {
			case !ok:
				find("budget %s on %s period %s: unit %s missing from the projection", r.Budget, r.Scope, r.Period, u)
			case got.Limit.Cmp(want.Limit) != 0 || got.Spent.Cmp(want.Spent) != 0 || got.Reserved.Cmp(want.Reserved) != 0:
				find("budget %s on %s period %s %s: projection has limit %s spent %s reserved %s, the events give limit %s spent %s reserved %s",
					r.Budget, r.Scope, r.Period, u, got.Limit, got.Spent, got.Reserved, want.Limit, want.Spent, want.Reserved)
			}
		}
		if len(p.Units) != len(r.Units) {
			find("budget %s on %s period %s: projection has units %v, the budget limits %v", r.Budget, r.Scope, r.Period, p.Units.Units(), events.SortedUnits(r.Units))
		}
	}
	keys := make([]string, 0, len(proj))
	for k := range proj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		p := proj[k]
		if seen[k] {
			continue
		}
		nonzero := false
		for _, u := range p.Units {
			nonzero = nonzero || !u.Spent.IsZero() || !u.Reserved.IsZero()
		}
		if nonzero {
			find("budget %s on %s period %s: in the projection, not in the events", p.Budget, p.Scope, p.Period)
		}
	}
	return out
}

// CompareBudgets compares the budget definitions rebuilt at a partition's
// checkpoint with the projection (tally_budgets).
func CompareBudgets(n int, seq uint64, rebuilt []events.Budget, projected []projector.BudgetEntry) []Finding {
	var out []Finding
	find := func(format string, args ...any) {
		out = append(out, Finding{Partition: n, Seq: seq, Check: CheckProjection, Message: fmt.Sprintf(format, args...)})
	}
	proj := map[string]events.Budget{}
	for _, e := range projected {
		proj[e.Budget.Scope+"\x00"+e.Budget.Name] = e.Budget
	}
	for _, b := range rebuilt {
		k := b.Scope + "\x00" + b.Name
		p, ok := proj[k]
		delete(proj, k)
		switch {
		case !ok:
			find("budget %s on %s: missing from the projection", b.Name, b.Scope)
		case !sameBudget(p, b):
			find("budget %s on %s: the projection holds another definition", b.Name, b.Scope)
		}
	}
	for _, k := range sortedKeys(proj) {
		p := proj[k]
		find("budget %s on %s: in the projection, not in the events", p.Name, p.Scope)
	}
	return out
}

func sameBudget(a, b events.Budget) bool {
	eq := func(x, y events.Amounts) bool {
		if len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if w, ok := y[k]; !ok || w.Cmp(v) != 0 {
				return false
			}
		}
		return true
	}
	if a.Scope != b.Scope || a.Name != b.Name || a.Period != b.Period || a.Timezone != b.Timezone || a.Mode != b.Mode ||
		!eq(a.Limits, b.Limits) || len(a.PriorityFloors) != len(b.PriorityFloors) || len(a.AlertThresholds) != len(b.AlertThresholds) {
		return false
	}
	for p, f := range a.PriorityFloors {
		if g, ok := b.PriorityFloors[p]; !ok || g.Cmp(f) != 0 {
			return false
		}
	}
	for i, t := range a.AlertThresholds {
		if b.AlertThresholds[i].Cmp(t) != 0 {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
