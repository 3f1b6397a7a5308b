package enforcer

import (
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tallyledger/tally/events"
)

// TestReusedViewsOverwriteEveryField fills every field of the reused view
// buffer with garbage between two identical decisions: the second must
// render the same views as the first. viewOf writes views field by field,
// so a field added to InstanceView, UnitEntry or UnitBalance and not
// written there fails here instead of leaking the last decision's value.
func TestReusedViewsOverwriteEveryField(t *testing.T) {
	h := newHarness(t)
	h.set("tenant:acme", "monthly", `"limits":{"USD":"100","tokens":"1000"},"period":"monthly"`)
	h.set("tenant:acme/workflow:w/run:*", "per-run", `"limits":{"USD":"5"}`)
	s := h.s
	s.SetReuseViews(true)
	cmd := reserveOn(1, "tenant:acme/workflow:w/run:r1")
	cmd.Request.(*events.ReserveRequest).Amounts = events.Amounts{"USD": events.MustAmount("0.42")}
	granted := func() []events.InstanceView {
		d := s.Decide(cmd, h.now) // not applied: the next decision sees the same state
		if len(d.Events) == 0 {
			t.Fatalf("no grant: %+v", d.Err)
		}
		return d.Events[0].Data.(*events.ReservationGranted).Instances
	}
	first := granted()
	want := make([]events.InstanceView, len(first))
	for i, v := range first {
		want[i] = v
		want[i].Units = append(events.UnitBalances(nil), v.Units...)
	}
	if len(want) != 2 || len(want[0].Units) != 2 || want[0].PeriodEnd == nil || want[1].PeriodEnd != nil {
		t.Fatalf("views %+v: want two instances, the first with two units and a period end", want)
	}
	for _, buf := range []any{s.vbuf.views[:cap(s.vbuf.views)], s.vbuf.units[:cap(s.vbuf.units)]} {
		b := reflect.ValueOf(buf)
		for i := range b.Len() {
			pollute(b.Index(i))
		}
	}
	if diff := cmp.Diff(want, granted(), cmp.Comparer(func(a, b events.Amount) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("views rendered over a polluted buffer (-first +second):\n%s", diff)
	}
}

// pollute sets every exported field of struct v, recursively, to a value
// no view holds.
func pollute(v reflect.Value) {
	amount := reflect.TypeFor[events.Amount]()
	for i := range v.NumField() {
		f := v.Field(i)
		switch {
		case !f.CanSet():
		case f.Type() == amount:
			f.Set(reflect.ValueOf(events.MustAmount("777")))
		case f.Kind() == reflect.String:
			f.SetString("polluted")
		case f.Kind() == reflect.Pointer:
			f.Set(reflect.New(f.Type().Elem()))
		case f.Kind() == reflect.Slice:
			f.Set(reflect.MakeSlice(f.Type(), 1, 1))
		case f.Kind() == reflect.Struct:
			pollute(f)
		default:
			panic("pollute: no garbage for " + f.Type().String())
		}
	}
}

// TestBalancesBeyondTheInlineEdge drives every balance sum and comparison
// of a grant, a commit and a charge past 2^121 × 10^-18
// (2 658 455 991 569 831 745.8…), where Amount's inline paths
// (AddInline, SubInline, LessInline) stop answering and the methods take
// over: the balances must be exact, each view must say so, and replay
// must reproduce the state.
func TestBalancesBeyondTheInlineEdge(t *testing.T) {
	h := newHarness(t)
	const root, scope = "tenant:acme", "tenant:acme/workflow:w"
	h.set(root, "tenant", `"limits":{"tokens":"100000000000000000000000000000"},"alert_thresholds":["0.5"]`)
	h.set(scope, "wf", `"limits":{"tokens":"100000000000000000000"}`)
	want := func(step, name, spent, reserved, remaining string) {
		t.Helper()
		u := h.unit(root, scope, name, "tokens")
		if u.Spent.String() != spent || u.Reserved.String() != reserved || u.Remaining.String() != remaining {
			t.Fatalf("%s: %s spent %s reserved %s remaining %s; want %s %s %s",
				step, name, u.Spent, u.Reserved, u.Remaining, spent, reserved, remaining)
		}
	}
	// Two charges: the second sum crosses the edge.
	h.charge(scope, `{"tokens":"2000000000000000000"}`)
	h.charge(scope, `{"tokens":"2000000000000000000.25"}`)
	want("charges", "wf", "4000000000000000000.25", "0", "95999999999999999999.75")
	// A reservation above the edge by itself, then one below it on a
	// balance above it.
	big := h.res(scope, `{"tokens":"3000000000000000000"}`, "")
	small := h.res(scope, `{"tokens":"0.5"}`, "")
	if big.Decision != events.DecisionGranted || small.Decision != events.DecisionGranted {
		t.Fatalf("reserves: %+v %+v", big, small)
	}
	want("reserves", "wf", "4000000000000000000.25", "3000000000000000000.5", "92999999999999999999.25")
	want("reserves", "tenant", "4000000000000000000.25", "3000000000000000000.5", "99999999992999999999999999999.25")
	// One more than the workflow has left is denied (the comparison
	// beyond the edge), the rest is granted.
	if d := h.res(scope, `{"tokens":"92999999999999999999.26"}`, ""); d.Decision != events.DecisionDenied {
		t.Fatalf("a reserve over the limit: %+v", d)
	}
	// Commits: one under its hold, one over it.
	h.commit(root, big.ReservationID, `{"tokens":"2999999999999999999.75"}`)
	h.commit(root, small.ReservationID, `{"tokens":"1"}`)
	want("commits", "wf", "7000000000000000001", "0", "92999999999999999999")
	h.checkReplay()
}
