package enforcer

import (
	"fmt"
	"time"

	"github.com/tallyledger/tally/events"
)

// Apply folds one event, stored at stream sequence seq, into the state. It
// is the only way state changes, live and in replay. It panics when the
// event contradicts the state (a corrupted ledger must not keep deciding):
// sequences must increase, time must not go backwards, and the balances an
// event records must be the ones the fold produces.
func (s *State) Apply(seq uint64, ev events.Event) {
	if seq <= s.lastSeq {
		panic(fmt.Sprintf("enforcer: apply of seq %d after %d", seq, s.lastSeq))
	}
	if ev.At.Before(s.lastAt) {
		panic(fmt.Sprintf("enforcer: event %d at %s before %s", seq, ev.At, s.lastAt))
	}
	at := ev.At.UTC()
	switch d := ev.Data.(type) {
	case *events.BudgetSet:
		s.putBudget(d.Budget)
	case *events.BudgetDeleted:
		s.deleteBudget(d.Scope, d.Name)
	case *events.BudgetAdjusted:
		b := s.budgets[budgetRef{d.Pattern, d.Budget}]
		if b == nil {
			panic(fmt.Sprintf("enforcer: seq %d adjusts unknown budget %s %s", seq, d.Pattern, d.Budget))
		}
		w := b.windowOf(at)
		s.mustEqual(seq, "period", w.Key, d.Period)
		in := s.getInstance(b, d.Scope, w.Key, w)
		for _, u := range events.SortedUnits(d.Delta) {
			us := in.unit(u)
			us.adjust = us.adjust.Add(d.Delta[u].Amount)
		}
		s.verify(seq, []events.InstanceView{d.Instance}, nil)
	case *events.ReservationGranted:
		s.applyGranted(seq, at, ev.Root, d)
	case *events.ReservationDenied:
		// A denial changes no balance; only its idempotency key is kept.
	case *events.ReservationCommitted:
		r := s.mustReservation(seq, d.ReservationID)
		s.mustBeExpired(seq, r, d.Late)
		ts := s.commitTargets(r, d.Charged, d.Late)
		s.applyTargets(ts)
		if !d.Late {
			s.closeOpen(r)
		}
		s.retire(r, events.StatusCommitted, seq, at)
		s.verify(seq, d.Instances, ts)
	case *events.ReservationReleased:
		r := s.mustReservation(seq, d.ReservationID)
		s.mustBeExpired(seq, r, d.AlreadyExpired)
		var ts []target
		if !d.AlreadyExpired {
			ts = s.releaseTargets(r)
			s.applyTargets(ts)
			s.closeOpen(r)
		}
		s.retire(r, events.StatusReleased, seq, at)
		s.verify(seq, d.Instances, ts)
	case *events.ReservationExtended:
		r := s.mustReservation(seq, d.ReservationID)
		if r.status != events.StatusOpen {
			panic(fmt.Sprintf("enforcer: seq %d extends reservation %s which is %s", seq, r.id, r.status))
		}
		r.expiresAt = d.ExpiresAt.UTC()
		s.expiries.fix(int(r.heapIdx))
	case *events.ReservationExpired:
		r := s.mustReservation(seq, d.ReservationID)
		if r.status != events.StatusOpen {
			panic(fmt.Sprintf("enforcer: seq %d expires reservation %s which is %s", seq, r.id, r.status))
		}
		ts := s.releaseTargets(r)
		s.applyTargets(ts)
		s.closeOpen(r)
		s.retire(r, events.StatusExpired, seq, at)
		s.verify(seq, d.Instances, ts)
	case *events.UsageCharged:
		ts := s.chargeTargets(s.applicableAt(d.Scope, at), d.Amounts)
		s.applyTargets(ts)
		s.verify(seq, d.Instances, ts)
	case *events.ThresholdCrossed:
		b := s.budgets[budgetRef{d.Pattern, d.Budget}]
		if b == nil {
			panic(fmt.Sprintf("enforcer: seq %d alerts on unknown budget %s %s", seq, d.Pattern, d.Budget))
		}
		in, ok := b.instances[instRef{d.Scope, d.Period}]
		if !ok {
			in = s.getInstance(b, d.Scope, d.Period, b.windowOf(at))
		}
		in.fire(d.Unit, d.Threshold)
	case *events.PartitionClaimed:
		s.claimedBy = d.Owner
	default:
		panic(fmt.Sprintf("enforcer: seq %d: unexpected event data %T", seq, ev.Data))
	}
	if m, ok := events.MutationOf(ev.Data); ok {
		s.remember(ev.Root, opOf(ev.Type), m.IdempotencyKey, m.RequestHash, seq, at)
	}
	s.lastSeq = seq
	s.lastAt = at
	s.forget(at)
}

func opOf(t events.Type) events.Op {
	switch t {
	case events.TypeReservationGranted, events.TypeReservationDenied:
		return events.OpReserve
	case events.TypeReservationCommit:
		return events.OpCommit
	case events.TypeReservationReleased:
		return events.OpRelease
	case events.TypeReservationExtended:
		return events.OpExtend
	case events.TypeUsageCharged:
		return events.OpCharge
	case events.TypeBudgetSet:
		return events.OpBudgetSet
	case events.TypeBudgetDeleted:
		return events.OpBudgetDelete
	case events.TypeBudgetAdjusted:
		return events.OpBudgetAdjust
	}
	panic(fmt.Sprintf("enforcer: no operation for event type %s", t))
}

func (s *State) applyGranted(seq uint64, at time.Time, root string, d *events.ReservationGranted) {
	if d.ReservationID <= s.maxID && s.exists(d.ReservationID) {
		panic(fmt.Sprintf("enforcer: seq %d grants reservation %s twice", seq, d.ReservationID))
	}
	apps := s.applicableAt(d.Scope, at)
	if len(apps) != len(d.Instances) {
		panic(fmt.Sprintf("enforcer: seq %d: %d applicable instances, event has %d", seq, len(apps), len(d.Instances)))
	}
	amts := s.sortedAmounts(d.Amounts)
	r := s.newReservation(d, root, amts, len(apps))
	// The grant's changes are folded as they are found, without building
	// them first. A view of the same instance whose units are the
	// grant's, in the same (byte) order, is checked unit by unit as the
	// fold goes; verify checks any other (the targets name the instances).
	ts, _ := s.targets(0, len(apps), 0)
	rest := false
	for i := range apps {
		a := &apps[i]
		held := heldUnits(r, a)
		all := len(held) == len(r.units)
		in := s.ensureInstance(a)
		v := &d.Instances[i]
		inline := all && len(v.Units) == len(amts) && len(a.b.units) == len(amts) && a.names(v)
		h := 0 // held is amts' units that a's budget limits, in order
		for k := range amts {
			ua := &amts[k]
			if !all {
				if h == len(held) || held[h] != ua.unit {
					continue
				}
				h++
			}
			us := foldReserved(a, in, ua)
			if inline {
				e := &v.Units[k]
				inline = e.Unit == ua.unit && us.spent.Equal(e.Spent) && us.reserved.Equal(e.Reserved)
			}
		}
		ts[i].app, ts[i].checked = a, inline
		rest = rest || !inline
		r.holds[i] = hold{in: in, units: held}
	}
	for i := 0; rest && i < len(ts); i++ {
		if !ts[i].checked { // verify says what differs
			s.verify(seq, d.Instances[i:i+1], ts[i:i+1])
		}
	}
	s.open.put(r)
	s.expiries.push(r)
	s.maxID = max(s.maxID, r.id)
}

// applyTargets makes the targets' changes, creating instances as needed.
func (s *State) applyTargets(ts []target) {
	for i := range ts {
		t := &ts[i]
		in := s.ensureInstance(t.app)
		for j := range t.changes {
			c := &t.changes[j]
			foldUnit(t.app, in, c.unit, c.reserved, c.spent)
		}
	}
}

// ensureInstance returns a's instance, creating it (and noting it in a) if it
// does not exist yet.
func (s *State) ensureInstance(a *applicable) *instance {
	if a.in == nil {
		a.in = s.getInstance(a.b, a.scope, a.period, a.win)
	}
	return a.in
}

// foldReserved adds ua's amount to the reserved balance of its unit of
// in, a's instance: a grant's fold, which only reserves.
func foldReserved(a *applicable, in *instance, ua *unitAmount) *unitState {
	us := in.unit(ua.unit)
	if r, ok := us.reserved.AddInline(ua.amt); ok { // two non-negative amounts
		us.reserved = r
		return us
	}
	us.reserved = us.reserved.Add(ua.amt)
	if us.reserved.Negative() {
		mustNotBeNegative(a, ua.unit, us)
	}
	return us
}

// mustNotBeNegative panics: a fold has taken a balance of unit u of a's
// instance below zero.
func mustNotBeNegative(a *applicable, u string, us *unitState) {
	panic(fmt.Sprintf("enforcer: %s %s %s: negative balance (spent %s, reserved %s)",
		a.b.def.Name, a.scope, u, us.spent, us.reserved))
}

// foldUnit adds reserved and spent to unit u of in, a's instance, and
// panics if either balance would go negative.
func foldUnit(a *applicable, in *instance, u string, reserved, spent events.Amount) {
	us := in.unit(u)
	if !reserved.IsZero() {
		us.reserved = us.reserved.Add(reserved)
	}
	if !spent.IsZero() {
		sum, ok := us.spent.AddInline(spent)
		if !ok {
			sum = us.spent.Add(spent)
		}
		us.spent = sum
	}
	if us.reserved.Negative() || us.spent.Negative() {
		mustNotBeNegative(a, u, us)
	}
}

// verify checks that the balances an event recorded are the fold's. ts are
// the targets just applied, if any: the views usually name their instances
// in the same order.
func (s *State) verify(seq uint64, views []events.InstanceView, ts []target) {
	for i := range views {
		v := &views[i]
		var in *instance
		if i < len(ts) && ts[i].app.names(v) {
			in = ts[i].app.in
		} else if b := s.budgets[budgetRef{v.Pattern, v.Budget}]; b != nil {
			in = b.instances[instRef{v.Scope, v.Period}]
		}
		for k := range v.Units {
			e := &v.Units[k]
			u, ub := e.Unit, &e.UnitBalance
			us := peekUnit(in, u)
			if !us.spent.Equal(ub.Spent) || !us.reserved.Equal(ub.Reserved) {
				panic(fmt.Sprintf("enforcer: seq %d: %s %s %s: fold has spent %s reserved %s, event says spent %s reserved %s",
					seq, v.Budget, v.Scope, u, us.spent, us.reserved, ub.Spent, ub.Reserved))
			}
		}
	}
}

// names reports whether v is a view of a's instance.
func (a *applicable) names(v *events.InstanceView) bool {
	return a.in != nil && a.scope == v.Scope && a.period == v.Period && a.b.def.Name == v.Budget && a.b.def.Scope == v.Pattern
}

func (s *State) mustEqual(seq uint64, what, got, want string) {
	if got != want {
		panic(fmt.Sprintf("enforcer: seq %d: %s is %q, event says %q", seq, what, got, want))
	}
}

// mustBeExpired checks an event's claim that a reservation had expired
// (a late commit, a release after expiry) against the state; the opposite
// claim is closeOpen's to check.
func (s *State) mustBeExpired(seq uint64, r *reservation, claimed bool) {
	if claimed && r.status != events.StatusExpired {
		panic(fmt.Sprintf("enforcer: seq %d: reservation %s is %s, event says expired %t", seq, r.id, r.status, claimed))
	}
}

// greatestID returns the greatest id of the reservations held, open or
// closed, for maxID.
func (s *State) greatestID() string {
	var m string
	for r := range s.open.all() {
		m = max(m, r.id)
	}
	for pos := s.closed.head; pos < s.closed.tail; pos++ {
		if k := s.closed.key(s.closed.at(pos)); string(k) > m {
			m = string(k)
		}
	}
	return m
}

// exists reports whether reservation id is open or still retained.
func (s *State) exists(id string) bool {
	if s.open.get(id) != nil {
		return true
	}
	return s.closed.get(s.idKey(id)) != nil
}

// reservation returns the open or retained reservation id; a closed one is
// a copy, decoded.
func (s *State) reservation(id string) (*reservation, bool) {
	if r := s.open.get(id); r != nil {
		return r, true
	}
	if rec := s.closed.get(s.idKey(id)); rec != nil {
		return s.readClosed(rec), true
	}
	return nil, false
}

func (s *State) idKey(id string) []byte {
	s.scratch.key = append(s.scratch.key[:0], id...)
	return s.scratch.key
}

func (s *State) mustReservation(seq uint64, id string) *reservation {
	r, ok := s.reservation(id)
	if !ok {
		panic(fmt.Sprintf("enforcer: seq %d refers to unknown reservation %s", seq, id))
	}
	return r
}

func (s *State) closeOpen(r *reservation) {
	if r.status != events.StatusOpen {
		panic(fmt.Sprintf("enforcer: reservation %s closed twice", r.id))
	}
	s.expiries.remove(int(r.heapIdx))
	s.open.del(r)
}

// retire marks a reservation closed and keeps it for the retention window
// so late and retried commits still find it.
func (s *State) retire(r *reservation, st events.ReservationStatus, seq uint64, at time.Time) {
	r.status = st
	r.closedAt = at.UTC() // no *Location in a flat reservation
	s.scratch.val = appendClosed(s.scratch.val[:0], r)
	s.closed.put(s.idKey(r.id), s.scratch.val, seq, stampOf(at))
}

func (s *State) remember(root string, op events.Op, key, hash string, seq uint64, at time.Time) {
	s.scratch.key = idemKey(s.scratch.key[:0], root, op, key)
	s.scratch.val = appendHash(s.scratch.val[:0], hash)
	s.idem.put(s.scratch.key, s.scratch.val, seq, stampOf(at))
}

// beyondWindow reports whether something remembered at at is forgotten at
// now: the horizon forget applies.
func (s *State) beyondWindow(at, now time.Time) bool {
	return at.Before(now.Add(-s.cfg.IdempotencyWindow))
}

// forget drops idempotency keys and closed reservations beyond the window
// or the count bounds, oldest first. Driven by event time only, so replay
// forgets exactly what the live state forgot.
func (s *State) forget(now time.Time) {
	horizon := stampOf(now.Add(-s.cfg.IdempotencyWindow))
	for r := s.idem.front(); r != nil; r = s.idem.front() {
		if !r.at.before(horizon) && s.idem.len() <= s.cfg.MaxIdempotencyKeys {
			break
		}
		if s.idem.current(r) == r {
			s.idem.unindex(r)
		}
		s.idem.pop()
	}
	for r := s.closed.front(); r != nil; r = s.closed.front() {
		if !r.at.before(horizon) && s.closed.len() <= s.cfg.MaxClosedReservations {
			break
		}
		// A record is the reservation's if it closed it last, or at the
		// same time (an expiry and a late commit at one instant).
		if cur := s.closed.current(r); cur != nil && cur.at == r.at {
			s.closed.unindex(cur)
		}
		s.closed.pop()
	}
}
