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
