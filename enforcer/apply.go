package enforcer

import (
	"container/heap"
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
	case events.BudgetSet:
		s.putBudget(d.Budget)
	case events.BudgetDeleted:
		s.deleteBudget(d.Scope, d.Name)
	case events.BudgetAdjusted:
		b := s.budgets[budgetKey(d.Pattern, d.Budget)]
		if b == nil {
			panic(fmt.Sprintf("enforcer: seq %d adjusts unknown budget %s %s", seq, d.Pattern, d.Budget))
		}
		w := b.windowOf(at)
		s.mustEqual(seq, "period", w.Key, d.Period)
		in := s.getInstance(b, instKey{budget: b.key, scope: d.Scope, period: w.Key}, w)
		for u, delta := range d.Delta {
			us := in.unit(u)
			us.adjust = us.adjust.Add(delta.Amount)
		}
		s.verify(seq, []events.InstanceView{d.Instance})
	case events.ReservationGranted:
		s.applyGranted(seq, at, ev.Root, d)
	case events.ReservationDenied:
		// A denial changes no balance; only its idempotency key is kept.
	case events.ReservationCommitted:
		r := s.mustReservation(seq, d.ReservationID)
		s.applyTargets(s.commitTargets(r, d.Charged, d.Late))
		if !d.Late {
			s.closeOpen(r)
		}
		s.retire(r, events.StatusCommitted, seq, at)
		s.verify(seq, d.Instances)
	case events.ReservationReleased:
		r := s.mustReservation(seq, d.ReservationID)
		if !d.AlreadyExpired {
			s.applyTargets(s.releaseTargets(r))
			s.closeOpen(r)
		}
		s.retire(r, events.StatusReleased, seq, at)
		s.verify(seq, d.Instances)
	case events.ReservationExtended:
		r := s.mustReservation(seq, d.ReservationID)
		r.expiresAt = d.ExpiresAt.UTC()
		heap.Push(&s.expiries, expiryEntry{at: r.expiresAt, id: r.id})
	case events.ReservationExpired:
		r := s.mustReservation(seq, d.ReservationID)
		if r.status != events.StatusOpen {
			panic(fmt.Sprintf("enforcer: seq %d expires reservation %s which is %s", seq, r.id, r.status))
		}
		s.applyTargets(s.releaseTargets(r))
		s.closeOpen(r)
		s.retire(r, events.StatusExpired, seq, at)
		s.verify(seq, d.Instances)
	case events.UsageCharged:
		ts := s.chargeTargets(s.applicableAt(d.Scope, at, nil), d.Amounts)
		s.applyTargets(ts)
		s.verify(seq, d.Instances)
	case events.ThresholdCrossed:
		b := s.budgets[budgetKey(d.Pattern, d.Budget)]
		if b == nil {
			panic(fmt.Sprintf("enforcer: seq %d alerts on unknown budget %s %s", seq, d.Pattern, d.Budget))
		}
		k := instKey{budget: b.key, scope: d.Scope, period: d.Period}
		in, ok := s.instances[k]
		if !ok {
			in = s.getInstance(b, k, b.windowOf(at))
		}
		in.fired[firedKey{d.Unit, d.Threshold}] = struct{}{}
	case events.PartitionClaimed:
		s.claimedBy = d.Owner
	default:
		panic(fmt.Sprintf("enforcer: seq %d: unexpected event data %T", seq, ev.Data))
	}
	if m, ok := events.MutationOf(ev.Data); ok {
		s.remember(idemKey{root: ev.Root, op: opOf(ev.Type), key: m.IdempotencyKey}, idemEntry{hash: m.RequestHash, seq: seq, at: at})
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

func (s *State) applyGranted(seq uint64, at time.Time, root string, d events.ReservationGranted) {
	if _, dup := s.reservations[d.ReservationID]; dup {
		panic(fmt.Sprintf("enforcer: seq %d grants reservation %s twice", seq, d.ReservationID))
	}
	apps := s.applicableAt(d.Scope, at, nil)
	if len(apps) != len(d.Instances) {
		panic(fmt.Sprintf("enforcer: seq %d: %d applicable instances, event has %d", seq, len(apps), len(d.Instances)))
	}
	r := &reservation{id: d.ReservationID, root: root, scope: d.Scope, amounts: d.Amounts, priority: d.Priority,
		option: d.Option, label: d.Label, labels: d.Labels, expiresAt: d.ExpiresAt.UTC(), status: events.StatusOpen}
	units := events.SortedUnits(d.Amounts)
	r.holds = make([]hold, len(apps))
	ts := make([]target, len(apps))
	for i, a := range apps {
		held := units
		if !a.b.limitsAll(units) {
			held = make([]string, 0, len(units))
			for _, u := range units {
				if _, ok := a.b.def.Limits[u]; ok {
					held = append(held, u)
				}
			}
		}
		r.holds[i] = hold{key: a.key, units: held}
		ts[i].app = a
		ts[i].changes = make([]change, len(held))
		for j, u := range held {
			ts[i].changes[j] = change{unit: u, reserved: d.Amounts[u]}
		}
	}
	s.applyTargets(ts)
	s.verify(seq, d.Instances)
	s.reservations[r.id] = r
	s.open++
	heap.Push(&s.expiries, expiryEntry{at: r.expiresAt, id: r.id})
}

// applyTargets makes the targets' changes, creating instances as needed.
func (s *State) applyTargets(ts []target) {
	for i := range ts {
		t := &ts[i]
		in := s.getInstance(t.app.b, t.app.key, t.app.win)
		for _, c := range t.changes {
			us := in.unit(c.unit)
			if !c.reserved.IsZero() {
				us.reserved = us.reserved.Add(c.reserved)
			}
			if !c.spent.IsZero() {
				us.spent = us.spent.Add(c.spent)
			}
			if us.reserved.Sign() < 0 || us.spent.Sign() < 0 {
				panic(fmt.Sprintf("enforcer: %s %s %s: negative balance (spent %s, reserved %s)",
					t.app.b.def.Name, t.app.key.scope, c.unit, us.spent, us.reserved))
			}
		}
	}
}

// verify checks that the balances an event recorded are the fold's.
func (s *State) verify(seq uint64, views []events.InstanceView) {
	for _, v := range views {
		k := instKey{budget: budgetKey(v.Pattern, v.Budget), scope: v.Scope, period: v.Period}
		for _, e := range v.Units {
			u, ub := e.Unit, e.UnitBalance
			us := s.unitOf(k, u)
			if us.spent.Cmp(ub.Spent) != 0 || us.reserved.Cmp(ub.Reserved) != 0 {
				panic(fmt.Sprintf("enforcer: seq %d: %s %s %s: fold has spent %s reserved %s, event says spent %s reserved %s",
					seq, v.Budget, v.Scope, u, us.spent, us.reserved, ub.Spent, ub.Reserved))
			}
		}
	}
}

func (s *State) mustEqual(seq uint64, what, got, want string) {
	if got != want {
		panic(fmt.Sprintf("enforcer: seq %d: %s is %q, event says %q", seq, what, got, want))
	}
}

func (s *State) mustReservation(seq uint64, id string) *reservation {
	r, ok := s.reservations[id]
	if !ok {
		panic(fmt.Sprintf("enforcer: seq %d refers to unknown reservation %s", seq, id))
	}
	return r
}

func (s *State) closeOpen(r *reservation) {
	if r.status != events.StatusOpen {
		panic(fmt.Sprintf("enforcer: reservation %s closed twice", r.id))
	}
	s.open--
}

// retire marks a reservation closed and keeps it for the retention window
// so late and retried commits still find it.
func (s *State) retire(r *reservation, st events.ReservationStatus, seq uint64, at time.Time) {
	r.status = st
	r.closedAt = at
	s.closed.push(queueItem{id: r.id, seq: seq, at: at})
}

func (s *State) remember(k idemKey, e idemEntry) {
	s.idem[k] = e
	s.idemOrder.push(queueItem{k: k, seq: e.seq, at: e.at})
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
	horizon := now.Add(-s.cfg.IdempotencyWindow)
	for s.idemOrder.len() > 0 {
		it := s.idemOrder.front()
		if !it.at.Before(horizon) && len(s.idem) <= s.cfg.MaxIdempotencyKeys {
			break
		}
		s.idemOrder.pop()
		if e, ok := s.idem[it.k]; ok && e.seq == it.seq {
			delete(s.idem, it.k)
		}
	}
	for s.closed.len() > 0 {
		it := s.closed.front()
		if !it.at.Before(horizon) && len(s.reservations)-s.open <= s.cfg.MaxClosedReservations {
			break
		}
		s.closed.pop()
		if r, ok := s.reservations[it.id]; ok && r.status != events.StatusOpen && r.closedAt.Equal(it.at) {
			delete(s.reservations, it.id)
		}
	}
}
