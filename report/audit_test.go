package report_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/projector"
	"github.com/tallyledger/tally/report"
	"github.com/tallyledger/tally/streams"
)

func check(t *testing.T, recs []rec) []report.Finding {
	t.Helper()
	c := report.NewChecker(0, 1, 0)
	var out []report.Finding
	for _, r := range recs {
		_, _, f := c.Check(r.seq, r.subject, r.data)
		out = append(out, f...)
	}
	return out
}

// history is a clean history with every kind of event: the seed scenario,
// then an expiry, a late commit, an already-expired release, an extension,
// a charge and an adjustment.
func history(t *testing.T) *ledger {
	l := newLedger(t, 0)
	seedShadowScenario(l)
	root := "tenant:acme"
	ids := []string{}
	for i := range 3 {
		d := l.do(events.OpReserve, root, fmt.Sprintf(`{"idempotency_key":"e%d","scope":"tenant:acme/team:t","amounts":{"USD":"1"},"ttl_ms":3000}`, i))
		ids = append(ids, d.Events[0].Data.(*events.ReservationGranted).ReservationID)
	}
	l.do(events.OpExtend, root, fmt.Sprintf(`{"idempotency_key":"x1","reservation_id":%q,"ttl_ms":60000}`, ids[2]))
	l.now = l.now.Add(5 * time.Second)
	d := l.st.Decide(enforcerExpire(), l.now) // two expiries in one tick
	if len(d.Events) != 2 {
		t.Fatalf("%d expiries", len(d.Events))
	}
	for _, ev := range d.Events {
		l.append(ev)
	}
	l.do(events.OpCommit, root, fmt.Sprintf(`{"idempotency_key":"late","reservation_id":%q,"actual":{"USD":"0.5"}}`, ids[0]))
	l.do(events.OpRelease, root, fmt.Sprintf(`{"idempotency_key":"rel","reservation_id":%q}`, ids[1]))
	l.do(events.OpCommit, root, fmt.Sprintf(`{"idempotency_key":"final","reservation_id":%q,"actual":{"USD":"1.5"}}`, ids[2]))
	l.do(events.OpCharge, root, `{"idempotency_key":"ch","scope":"tenant:acme","amounts":{"USD":"400"}}`)
	l.do(events.OpBudgetAdjust, root, `{"idempotency_key":"adj","scope":"tenant:acme","name":"monthly","delta":{"USD":"-10"},"reason":"correction"}`)
	return l
}

func TestAuditCleanHistory(t *testing.T) {
	l := history(t)
	if f := check(t, l.recs); len(f) != 0 {
		t.Fatalf("findings on a clean history: %v", f)
	}
	types := map[events.Type]bool{}
	for _, r := range l.recs {
		types[r.ev.Type] = true
	}
	for _, ty := range []events.Type{events.TypeReservationExpired, events.TypeReservationExtended, events.TypeBudgetAdjusted, events.TypeThresholdCrossed, events.TypeReservationDenied} {
		if !types[ty] {
			t.Errorf("history lacks %s", ty)
		}
	}
}

func TestAuditAlteredEvent(t *testing.T) {
	l := history(t)
	// Change one byte of a commit in the middle: "44" spent becomes "45"…
	// any byte will do; this one also breaks the balances' arithmetic.
	k := -1
	for i, r := range l.recs {
		if r.ev.Type == events.TypeReservationCommit && i > 20 {
			k = i
			break
		}
	}
	recs := append([]rec(nil), l.recs...)
	data := bytes.Clone(recs[k].data)
	i := bytes.Index(data, []byte(`"remaining":"`))
	data[i+len(`"remaining":"`)]++
	recs[k].data = data
	f := check(t, recs)
	seq := recs[k].seq
	var chain, arith bool
	for _, x := range f {
		chain = chain || x.Check == report.CheckChain && x.Seq == seq+1 && strings.Contains(x.Message, fmt.Sprintf("seq %d", seq))
		arith = arith || x.Check == report.CheckArithmetic && x.Seq == seq
	}
	if !chain || !arith {
		t.Fatalf("altering seq %d: findings %v", seq, f)
	}
	if !strings.Contains(f[0].String(), fmt.Sprintf("partition 0 seq %d", seq)) {
		t.Fatalf("finding text %q", f[0])
	}
}

func TestAuditInvariants(t *testing.T) {
	base := func() *ledger {
		l := newLedger(t, 0)
		l.do(events.OpBudgetSet, "tenant:acme", `{"idempotency_key":"b1","scope":"tenant:acme","name":"m","limits":{"USD":"10"}}`)
		return l
	}
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	view := func(spent, reserved string) events.InstanceView {
		l, s, r := events.MustAmount("10"), events.MustAmount(spent), events.MustAmount(reserved)
		return events.InstanceView{Budget: "m", Pattern: "tenant:acme", Scope: "tenant:acme", Period: "none", Mode: events.ModeEnforce,
			Units: events.UnitBalances{{Unit: "USD", UnitBalance: events.UnitBalance{Limit: l, Spent: s, Reserved: r, Remaining: events.Signed{Amount: l.Sub(s).Sub(r)}}}}}
	}
	ev := func(d events.Data) events.Event {
		return events.Event{V: events.Version, Type: d.EventType(), Root: "tenant:acme", At: at, Data: d}
	}
	for _, tc := range []struct {
		name  string
		forge []events.Event
		check string
	}{
		{"grant above an enforce limit", []events.Event{ev(&events.ReservationGranted{ReservationID: "x", Scope: "tenant:acme",
			Amounts: events.Amounts{"USD": events.MustAmount("11")}, Instances: []events.InstanceView{view("0", "11")}})}, report.CheckOverspend},
		{"commit of an unknown reservation", []events.Event{ev(&events.ReservationCommitted{ReservationID: "nope", Scope: "tenant:acme"})}, report.CheckReservation},
		{"commit twice", []events.Event{
			ev(&events.ReservationGranted{ReservationID: "x", Scope: "tenant:acme", Amounts: events.Amounts{"USD": events.MustAmount("1")}, Instances: []events.InstanceView{view("0", "1")}}),
			ev(&events.ReservationCommitted{ReservationID: "x", Scope: "tenant:acme", Instances: []events.InstanceView{view("1", "0")}}),
			ev(&events.ReservationReleased{ReservationID: "x", Scope: "tenant:acme"})}, report.CheckReservation},
		{"late commit of an open reservation", []events.Event{
			ev(&events.ReservationGranted{ReservationID: "x", Scope: "tenant:acme", Amounts: events.Amounts{"USD": events.MustAmount("1")}, Instances: []events.InstanceView{view("0", "1")}}),
			ev(&events.ReservationCommitted{ReservationID: "x", Scope: "tenant:acme", Late: true})}, report.CheckReservation},
		{"expiry of an expired reservation", []events.Event{
			ev(&events.ReservationGranted{ReservationID: "x", Scope: "tenant:acme", Amounts: events.Amounts{"USD": events.MustAmount("1")}, Instances: []events.InstanceView{view("0", "1")}}),
			ev(&events.ReservationExpired{ReservationID: "x", Scope: "tenant:acme"}),
			ev(&events.ReservationExpired{ReservationID: "x", Scope: "tenant:acme"})}, report.CheckReservation},
		{"time backwards", []events.Event{func() events.Event {
			e := ev(&events.UsageCharged{Scope: "tenant:acme", Amounts: events.Amounts{"USD": events.One}})
			e.At = at.Add(-72 * time.Hour)
			return e
		}()}, report.CheckTime},
		{"scope of another root", []events.Event{ev(&events.UsageCharged{Scope: "tenant:other", Amounts: events.Amounts{"USD": events.One}})}, report.CheckEnvelope},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := base()
			for _, e := range tc.forge {
				l.recs = append(l.recs, forged(t, l, e))
			}
			f := check(t, l.recs)
			last := l.recs[len(l.recs)-1].seq
			for _, x := range f {
				if x.Check == tc.check && x.Seq == last {
					return
				}
			}
			t.Fatalf("want a %s finding at seq %d, got %v", tc.check, last, f)
		})
	}
	t.Run("gap and wrong subject", func(t *testing.T) {
		l := base()
		l.do(events.OpCharge, "tenant:acme", `{"idempotency_key":"c","scope":"tenant:acme","amounts":{"USD":"1"}}`)
		recs := append([]rec(nil), l.recs...)
		recs[1].seq = 5
		recs[1].subject = streams.EventSubject(0, "tenant:other", "usage.charged")
		f := check(t, recs)
		var gap, subj bool
		for _, x := range f {
			gap = gap || x.Check == report.CheckSequence && x.Seq == 5
			subj = subj || x.Check == report.CheckEnvelope && x.Seq == 5
		}
		if !gap || !subj {
			t.Fatalf("findings %v", f)
		}
	})
}

// forged appends an event with a valid chain link but no enforcer behind it.
func forged(t *testing.T, l *ledger, ev events.Event) rec {
	ev.ID = fmt.Sprintf("F%d", len(l.recs))
	ev.Prev = l.prev
	b, err := events.Encode(&ev)
	if err != nil {
		t.Fatal(err)
	}
	l.prev = events.Hash(b)
	return rec{seq: uint64(len(l.recs) + 1), subject: streams.EventSubject(0, ev.Root, string(ev.Type)), data: b, ev: ev}
}

func TestCompareBalances(t *testing.T) {
	a := func(s string) events.Amount { return events.MustAmount(s) }
	rebuilt := []report.InstanceBalance{
		{Pattern: "t:a", Budget: "m", Scope: "t:a", Period: "none", Units: map[string]report.UnitBalance{"USD": {Limit: a("10"), Spent: a("2"), Reserved: a("1")}}},
		{Pattern: "t:a", Budget: "z", Scope: "t:a", Period: "none", Units: map[string]report.UnitBalance{"USD": {Limit: a("10")}}},
		{Pattern: "t:a", Budget: "gone", Scope: "t:a", Period: "none", Units: map[string]report.UnitBalance{"USD": {Limit: a("10"), Spent: a("1")}}},
	}
	bal := func(budget, spent string) projector.Balance {
		l, s := a("10"), a(spent)
		return projector.Balance{InstanceView: events.InstanceView{Budget: budget, Pattern: "t:a", Scope: "t:a", Period: "none",
			Units: events.UnitBalances{{Unit: "USD", UnitBalance: events.UnitBalance{Limit: l, Spent: s, Reserved: a("1"), Remaining: events.Signed{Amount: l.Sub(s).Sub(a("1"))}}}}}}
	}
	f := report.CompareBalances(2, 40, rebuilt, []projector.Balance{bal("m", "2"), bal("extra", "3")})
	if len(f) != 2 || !strings.Contains(f[0].Message, "gone") || !strings.Contains(f[1].Message, "extra") || f[0].Partition != 2 || f[0].Seq != 40 {
		t.Fatalf("findings %v", f)
	}
	f = report.CompareBalances(2, 40, rebuilt[:1], []projector.Balance{bal("m", "2.5")})
	if len(f) != 1 || !strings.Contains(f[0].Message, "spent 2.5") {
		t.Fatalf("findings %v", f)
	}
}
