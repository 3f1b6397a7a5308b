package projector

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
)

// The fold tests drive the enforcer's pure core (State.Step) with a random
// workload to get realistic event histories: every kind of event, shadow
// denials, overage, late commits, budget replacement, deletion and
// adjustment, and time moving over hours and days.

// stored is one event as the stream holds it.
type stored struct {
	seq uint64
	ev  events.Event
}

type workload struct {
	t    testing.TB
	rng  *rand.Rand
	st   *enforcer.State
	now  time.Time
	n    int
	log  []stored
	open []resRef // granted, maybe still open
}

type resRef struct{ root, id string }

var (
	wlRoots  = []string{"tenant:acme", "tenant:beta"}
	wlScopes = []string{"", "/workflow:code-review/run:r1", "/workflow:code-review/run:r2", "/workflow:research/run:r9",
		"/workflow:chat/session:s1", "/team:ml"}
	wlModels = []string{"", "opus", "sonnet", "haiku"}
)

func newWorkload(t testing.TB, seed uint64) *workload {
	return &workload{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), st: enforcer.New(enforcer.Config{Partition: 0}),
		now: time.Date(2026, 11, 28, 22, 10, 0, 0, time.UTC)}
}

func (w *workload) amount(maxCents int) events.Amount {
	return events.MustAmount(fmt.Sprintf("%d.%02d", w.rng.IntN(maxCents)/100, w.rng.IntN(100)))
}

func (w *workload) step(op events.Op, root string, req any) enforcer.Decision {
	w.n++
	d := w.st.Decide(enforcer.Command{Op: op, Root: root, Request: req, NewID: fmt.Sprintf("R%05d", w.n)}, w.now)
	w.record(d)
	return d
}

func (w *workload) record(d enforcer.Decision) {
	for _, ev := range d.Events {
		ev.ID = fmt.Sprintf("E%06d", len(w.log)+1)
		b, err := events.Encode(&ev)
		if err != nil {
			w.t.Fatal(err)
		}
		dec, err := events.Decode(b)
		if err != nil {
			w.t.Fatalf("decode %s: %v", b, err)
		}
		seq := uint64(len(w.log) + 1)
		w.st.Apply(seq, dec)
		w.log = append(w.log, stored{seq: seq, ev: dec})
	}
}

// expire appends the due expiries.
func (w *workload) expire() {
	w.record(w.st.Decide(enforcer.Command{Op: enforcer.OpExpire}, w.now))
}

func (w *workload) key() string { return fmt.Sprintf("k%06d", w.n+1) }

func (w *workload) setBudgets(root string) {
	mode := events.ModeShadow
	daily, monthly, none := events.PeriodDaily, events.PeriodMonthly, events.PeriodNone
	for _, b := range []events.BudgetSetRequest{
		{Scope: root, Name: "monthly", Limits: events.Amounts{"USD": events.MustAmount("40")}, Period: &monthly},
		{Scope: root, Name: "shadow", Limits: events.Amounts{"USD": events.MustAmount("6"), "tokens": events.MustAmount("20000")}, Period: &daily, Mode: &mode},
		{Scope: root + "/workflow:*/run:*", Name: "per-run", Limits: events.Amounts{"USD": events.MustAmount("2")}, Period: &none},
		{Scope: root + "/workflow:chat/session:*", Name: "per-session", Limits: events.Amounts{"USD": events.MustAmount("1")}},
	} {
		b.IdempotencyKey = w.key()
		w.step(events.OpBudgetSet, root, &b)
	}
}

// run performs ops random operations.
func (w *workload) run(ops int) {
	for _, r := range wlRoots {
		w.setBudgets(r)
	}
	for range ops {
		// Time moves: mostly minutes, sometimes hours, rarely days.
		switch x := w.rng.IntN(100); {
		case x < 70:
			w.now = w.now.Add(time.Duration(w.rng.IntN(300)) * time.Second)
		case x < 97:
			w.now = w.now.Add(time.Duration(30+w.rng.IntN(90)) * time.Minute)
		default:
			w.now = w.now.Add(time.Duration(20+w.rng.IntN(40)) * time.Hour)
		}
		w.expire()
		root := wlRoots[w.rng.IntN(len(wlRoots))]
		scope := root + wlScopes[w.rng.IntN(len(wlScopes))]
		labels := func() events.Labels {
			m := wlModels[w.rng.IntN(len(wlModels))]
			if m == "" {
				return nil
			}
			return events.Labels{"model": m}
		}
		switch x := w.rng.IntN(100); {
		case x < 40:
			ttl := int64(1000 * (60 + w.rng.IntN(3600)))
			req := &events.ReserveRequest{IdempotencyKey: w.key(), Scope: scope, TTLMS: &ttl, Labels: labels()}
			if w.rng.IntN(3) == 0 {
				req.Options = events.Options{{Label: "big", Amounts: events.Amounts{"USD": w.amount(300)}},
					{Label: "small", Amounts: events.Amounts{"USD": w.amount(40), "tokens": events.MustAmount(fmt.Sprint(w.rng.IntN(5000)))}}}
			} else {
				req.Amounts = events.Amounts{"USD": w.amount(150)}
				if w.rng.IntN(2) == 0 {
					req.Amounts["tokens"] = events.MustAmount(fmt.Sprint(w.rng.IntN(8000)))
				}
			}
			d := w.step(events.OpReserve, root, req)
			if len(d.Events) > 0 && d.Events[0].Type == events.TypeReservationGranted {
				w.open = append(w.open, resRef{root, d.Events[0].Data.(*events.ReservationGranted).ReservationID})
			}
		case x < 65 && len(w.open) > 0:
			i := w.rng.IntN(len(w.open))
			r := w.open[i]
			w.open = append(w.open[:i], w.open[i+1:]...)
			req := &events.CommitRequest{IdempotencyKey: w.key(), ReservationID: r.id, Actual: events.Amounts{"USD": w.amount(200)}}
			if w.rng.IntN(3) == 0 {
				req.Labels = labels()
			}
			if w.rng.IntN(4) == 0 {
				req.Actual["tokens"] = events.MustAmount(fmt.Sprint(w.rng.IntN(9000)))
			}
			w.step(events.OpCommit, r.root, req)
		case x < 72 && len(w.open) > 0:
			i := w.rng.IntN(len(w.open))
			r := w.open[i]
			w.open = append(w.open[:i], w.open[i+1:]...)
			w.step(events.OpRelease, r.root, &events.ReleaseRequest{IdempotencyKey: w.key(), ReservationID: r.id})
		case x < 75 && len(w.open) > 0:
			r := w.open[w.rng.IntN(len(w.open))]
			ttl := int64(1000 * (60 + w.rng.IntN(600)))
			w.step(events.OpExtend, r.root, &events.ExtendRequest{IdempotencyKey: w.key(), ReservationID: r.id, TTLMS: &ttl})
		case x < 88:
			w.step(events.OpCharge, root, &events.ChargeRequest{IdempotencyKey: w.key(), Scope: scope,
				Amounts: events.Amounts{"USD": w.amount(120), "search_calls": events.MustAmount("1")}, Labels: labels()})
		case x < 92:
			w.step(events.OpBudgetAdjust, root, &events.BudgetAdjustRequest{IdempotencyKey: w.key(), Scope: root, Name: "monthly",
				Delta: events.SignedAmounts{"USD": {Amount: w.amount(500)}}, Reason: "top-up"})
		case x < 95:
			// Replace the shadow budget: other limits, sometimes another
			// mode. (A unit dropped while reservations hold it and limited
			// again later is a documented limitation of the balance view.)
			mode, daily := events.ModeShadow, events.PeriodDaily
			limits := events.Amounts{"USD": w.amount(900), "tokens": events.MustAmount(fmt.Sprint(10000 + w.rng.IntN(10000)))}
			if w.rng.IntN(4) == 0 {
				mode = events.ModeEnforce
			}
			w.step(events.OpBudgetSet, root, &events.BudgetSetRequest{IdempotencyKey: w.key(), Scope: root, Name: "shadow",
				Limits: limits, Period: &daily, Mode: &mode})
		case x < 97:
			// Delete and re-create a budget, open reservations or not.
			d := w.step(events.OpBudgetDelete, root, &events.BudgetRef{IdempotencyKey: w.key(), Scope: root + "/workflow:*/run:*", Name: "per-run"})
			if d.Err == nil {
				none := events.PeriodNone
				w.step(events.OpBudgetSet, root, &events.BudgetSetRequest{IdempotencyKey: w.key(), Scope: root + "/workflow:*/run:*",
					Name: "per-run", Limits: events.Amounts{"USD": w.amount(400)}, Period: &none})
			}
		default:
			// A late commit of an expired reservation, when one exists.
			if len(w.open) > 0 {
				r := w.open[0]
				w.open = w.open[1:]
				w.step(events.OpCommit, r.root, &events.CommitRequest{IdempotencyKey: w.key(), ReservationID: r.id,
					Actual: events.Amounts{"USD": w.amount(90)}})
			}
		}
	}
}
