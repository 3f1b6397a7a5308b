package enforcer

import (
	"fmt"
	"maps"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/tallyledger/tally/events"
)

// flatViolations lists what in the flat open reservations of s breaks the
// rules of flat.go: a pointer the collector would have to see.
func flatViolations(s *State) (flat int, bad []string) {
	reachable := map[*instance]bool{}
	for _, b := range s.budgets {
		for _, in := range b.instances {
			reachable[in] = true
		}
	}
	constant := map[unsafe.Pointer]bool{}
	for _, p := range priorities {
		constant[unsafe.Pointer(unsafe.StringData(string(p)))] = true
	}
	for _, st := range statusCodes {
		constant[unsafe.Pointer(unsafe.StringData(string(st)))] = true
	}
	for r := range s.open.all() {
		if !r.flat {
			continue
		}
		flat++
		bad = append(bad, flatViolationsOf(s, r, reachable, constant)...)
	}
	return flat, bad
}

func flatViolationsOf(s *State, r *reservation, reachable map[*instance]bool, constant map[unsafe.Pointer]bool) []string {
	var bad []string
	fail := func(format string, args ...any) { bad = append(bad, r.id+": "+fmt.Sprintf(format, args...)) }
	base := uintptr(unsafe.Pointer(r))
	// The allocation is the struct and its strings, at most these.
	end := base + unsafe.Sizeof(*r) + uintptr(len(r.id)+len(r.root)+len(r.scope)+len(r.label)+len(r.labelsFlat))
	for _, u := range r.units {
		end += uintptr(len(u))
	}
	inside := func(p unsafe.Pointer) bool { return uintptr(p) >= base && uintptr(p) < end }
	own := func(name, v string) {
		if len(v) > 0 && !inside(unsafe.Pointer(unsafe.StringData(v))) {
			fail("%s %q is not in the reservation's memory", name, v)
		}
	}
	own("id", r.id)
	own("root", r.root)
	own("scope", r.scope)
	own("label", r.label)
	own("labels", r.labelsFlat)
	if !constant[unsafe.Pointer(unsafe.StringData(string(r.priority)))] {
		fail("priority %q is not a constant", r.priority)
	}
	if !constant[unsafe.Pointer(unsafe.StringData(string(r.status)))] {
		fail("status %q is not a constant", r.status)
	}
	if r.labels != nil {
		fail("has a labels map")
	}
	for name, t := range map[string]time.Time{"expiresAt": r.expiresAt, "closedAt": r.closedAt} {
		if !reflect.ValueOf(t).FieldByName("loc").IsNil() {
			fail("%s has a *Location", name)
		}
	}
	if !inside(unsafe.Pointer(unsafe.SliceData(r.units))) || !inside(unsafe.Pointer(unsafe.SliceData(r.amts))) ||
		!inside(unsafe.Pointer(unsafe.SliceData(r.holds))) {
		fail("units, amounts or holds outside the reservation's memory")
	}
	for i, u := range r.units {
		if c, ok := s.unitNames[u]; !ok || unsafe.StringData(c) != unsafe.StringData(u) {
			own(fmt.Sprintf("unit %d", i), u)
		}
		if r.amts[i].Boxed() {
			fail("amount of %s is boxed", u)
		}
	}
	for i := range r.holds {
		h := &r.holds[i]
		if h.missing != nil {
			fail("hold %d on a missing instance", i)
		}
		if !reachable[h.in] {
			fail("hold %d on an instance no budget holds", i)
		}
		if cap(h.units) > 0 && !inside(unsafe.Pointer(unsafe.SliceData(h.units))) {
			fail("hold %d's units outside the reservation's memory", i)
		}
	}
	return bad
}

// checkFlat fails t if a flat reservation of s breaks the rules.
func checkFlat(t interface{ Fatalf(string, ...any) }, s *State) int {
	n, bad := flatViolations(s)
	if len(bad) > 0 {
		t.Fatalf("flat reservations break the rules of flat.go (%d times; the first ones):\n%s", len(bad), strings.Join(bad[:min(len(bad), 5)], "\n"))
	}
	return n
}

// TestFlatReservations checks which grants get a flat reservation, and
// that flat reservations outlive the requests and events they were made
// from: after those are dropped, collected and their memory reused, every
// reservation still has its id, scope, root and units, and commits.
func TestFlatReservations(t *testing.T) {
	s := New(Config{Partition: 1})
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	n := 0
	step := func(op events.Op, root, body string) Decision {
		t.Helper()
		req, err := events.ParseRequest(op, []byte(body))
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		n++
		d := s.Step(Command{Op: op, Root: root, Request: req, NewID: fmt.Sprintf("01JFLAT%019d", n)}, now)
		if d.Err != nil {
			t.Fatalf("%s: %v", body, d.Err)
		}
		return d
	}
	for _, b := range []string{
		`{"idempotency_key":"b1","scope":"tenant:acme","name":"t","limits":{"USD":"1000000"}}`,
		`{"idempotency_key":"b2","scope":"tenant:acme/workflow:wf","name":"w","limits":{"USD":"1000000","tokens":"1000000000"}}`,
		`{"idempotency_key":"b3","scope":"tenant:acme/workflow:wf/run:*","name":"r","limits":{"tokens":"1000000000"}}`,
	} {
		step(events.OpBudgetSet, "tenant:acme", b)
	}
	type want struct {
		id, scope string
		units     []string
		flat      bool
	}
	var wants []want
	// amounts is the reserve's "amounts" member, or its "options" when it
	// starts with a bracket.
	reserve := func(scope, amounts, extra string, flat bool, units ...string) {
		t.Helper()
		member := "amounts"
		if amounts[0] == '[' {
			member = "options"
		}
		body := fmt.Sprintf(`{"idempotency_key":"k%d","scope":%q,%q:%s%s}`, n, scope, member, amounts, extra)
		d := step(events.OpReserve, events.Root(scope), body)
		g, ok := d.Events[0].Data.(*events.ReservationGranted)
		if !ok {
			t.Fatalf("%s: %s", body, d.Events[0].Type)
		}
		wants = append(wants, want{strings.Clone(g.ReservationID), scope, units, flat})
	}
	for i := range 2000 {
		run := fmt.Sprintf("tenant:acme/workflow:wf/run:r%d", i%50)
		switch i % 10 {
		case 1: // labels, kept encoded
			reserve(run, `{"USD":"0.01"}`, `,"labels":{"model":"m","agent":"a-7"}`, true, "USD")
		case 2: // three units
			reserve(run, `{"USD":"0.01","tokens":"5","EUR":"1"}`, ``, false, "EUR", "USD", "tokens")
		case 3: // a boxed amount, on a scope without budgets
			reserve("tenant:other", `{"USD":"100000000000000000000000000000"}`, ``, false, "USD")
		case 4: // a unit no budget limits: its name is copied
			reserve(run, `[{"label":"cheap","amounts":{"EUR":"1","tokens":"7"}}]`, `,"priority":"high"`, true, "EUR", "tokens")
		case 5: // a workflow-level scope: two instances
			reserve("tenant:acme/workflow:wf", `{"USD":"0.02"}`, ``, true, "USD")
		default:
			reserve(run, `{"USD":"0.01","tokens":"12"}`, ``, true, "USD", "tokens")
		}
	}
	// Collect the requests and events, and reuse their memory.
	runtime.GC()
	runtime.GC()
	junk := make([]string, 0, 1<<16)
	for i := range cap(junk) {
		junk = append(junk, strings.Repeat("X", 8+i%64))
	}
	runtime.KeepAlive(junk)
	if got := checkFlat(t, s); got != 1600 { // eight in ten
		t.Errorf("%d flat reservations, want 1600", got)
	}
	for _, w := range wants {
		r := s.open.get(w.id)
		if r == nil {
			t.Fatalf("reservation %s is gone", w.id)
		}
		if r.id != w.id || r.scope != w.scope || r.root != events.Root(w.scope) || !slices.Equal(r.units, w.units) || r.flat != w.flat {
			t.Fatalf("reservation %s: id %q scope %q root %q units %v flat %t; want %+v", w.id, r.id, r.scope, r.root, r.units, r.flat, w)
		}
	}
	// The labels, from the reservation (open, then closed) and a snapshot.
	labelsOf := func(id string) events.Labels {
		t.Helper()
		d := s.Decide(Command{Op: events.OpReservationGet, Root: "tenant:acme",
			Request: &events.ReservationGetRequest{ReservationID: id}}, now)
		if d.Err != nil {
			t.Fatalf("get %s: %v", id, d.Err)
		}
		return d.Result.(events.ReservationView).Labels
	}
	labelled := wants[1].id
	wantLabels := events.Labels{"model": "m", "agent": "a-7"}
	if got := labelsOf(labelled); !maps.Equal(got, wantLabels) || !s.open.get(labelled).flat {
		t.Fatalf("labels of %s: %v, want %v", labelled, got, wantLabels)
	}
	if got := labelsOf(wants[0].id); got != nil {
		t.Fatalf("labels of %s, which has none: %v", wants[0].id, got)
	}
	restored, err := Restore(Config{Partition: 1}, s.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	if got := restored.open.get(labelled).labelsMap(); !maps.Equal(got, wantLabels) {
		t.Fatalf("labels of %s after a snapshot: %v", labelled, got)
	}
	for _, w := range wants {
		d := step(events.OpRelease, events.Root(w.scope), fmt.Sprintf(`{"idempotency_key":"l%d","reservation_id":%q}`, n, w.id))
		if rel := d.Events[0].Data.(*events.ReservationReleased); rel.ReservationID != w.id || rel.Scope != w.scope {
			t.Fatalf("release of %s: %s %s", w.id, rel.ReservationID, rel.Scope)
		}
	}
	if s.open.len() != 0 {
		t.Fatalf("%d reservations left open", s.open.len())
	}
	if got := labelsOf(labelled); !maps.Equal(got, wantLabels) {
		t.Fatalf("labels of %s once released: %v", labelled, got)
	}
}

// TestFlatReservationOwnRoot: a root that does not start the scope (only
// an event from elsewhere than Decide can have one) is copied too, and a
// scope shorter than the root is no trouble.
func TestFlatReservationOwnRoot(t *testing.T) {
	s := New(Config{Partition: 1})
	amts := []unitAmount{{unit: "USD", amt: amt("1")}}
	for _, c := range []struct{ scope, root string }{
		{"tenant:a/run:r1", "tenant:a"},
		{"tenant:a/run:r1", "tenant:other"},
		{"t:b", "tenant:longer-than-the-scope"},
	} {
		d := &events.ReservationGranted{ReservationID: "R1", Scope: c.scope, Priority: events.PriorityNormal,
			ExpiresAt: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
		r := s.newReservation(d, strings.Clone(c.root), amts, 0)
		if !r.flat || r.root != c.root || r.scope != c.scope {
			t.Fatalf("%+v: flat %t, root %q, scope %q", c, r.flat, r.root, r.scope)
		}
		constant := map[unsafe.Pointer]bool{unsafe.Pointer(unsafe.StringData(string(events.PriorityNormal))): true,
			unsafe.Pointer(unsafe.StringData(string(events.StatusOpen))): true}
		if bad := flatViolationsOf(s, r, nil, constant); len(bad) > 0 {
			t.Fatalf("%+v: %v", c, bad)
		}
	}
}
