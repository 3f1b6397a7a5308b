package enforcer

import (
	"strings"
	"testing"

	"github.com/tallyledger/tally/events"
)

// TestGrantTwiceAfterRestoreOrClone checks the duplicate-grant invariant
// where Apply skips the look-ups for an id greater than every id the state
// holds (State.maxID): in a state restored from either snapshot format and
// in a clone, a second grant of the greatest id panics, whether that
// reservation is closed or open, as does one of a smaller id; a grant of a
// greater id does not.
func TestGrantTwiceAfterRestoreOrClone(t *testing.T) {
	h := newHarness(t)
	h.set(acme, "b", `"limits":{"USD":"10"}`)
	first := h.res(acme, `{"USD":"1"}`, "").ReservationID
	closed := h.res(acme, `{"USD":"1"}`, "").ReservationID
	h.commit(acme, closed, `{"USD":"1"}`)

	// grant applies the grant the state would decide next, under id.
	grant := func(s *State, id string) func() {
		req, err := events.ParseRequest(events.OpReserve, []byte(`{"idempotency_key":"next","scope":"tenant:acme","amounts":{"USD":"1"}}`))
		if err != nil {
			t.Fatal(err)
		}
		d := s.Decide(Command{Op: events.OpReserve, Root: acme, Request: req, NewID: id}, h.now)
		if len(d.Events) == 0 {
			t.Fatalf("no grant: %+v", d.Err)
		}
		ev := d.Events[0]
		return func() { s.Apply(s.LastSeq()+1, ev) }
	}
	copies := map[string]func(t *testing.T) *State{
		"binary snapshot": func(t *testing.T) *State {
			s, err := Restore(h.s.cfg, h.s.Snapshot())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"JSON snapshot": func(t *testing.T) *State {
			b, err := SnapshotJSON(h.s.Snapshot())
			if err != nil {
				t.Fatal(err)
			}
			s, err := Restore(h.s.cfg, b)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"clone": func(*testing.T) *State { return h.s.Clone() },
	}
	check := func(t *testing.T, copyOf func(*testing.T) *State, ids ...string) {
		for _, id := range ids {
			if msg := mustPanic(t, grant(copyOf(t), id)); !strings.Contains(msg, "twice") {
				t.Errorf("second grant of %s: panic %q", id, msg)
			}
		}
		s := copyOf(t)
		grant(s, "R9999")()
		if got := s.OpenReservations(); got != h.s.OpenReservations()+1 {
			t.Errorf("after a new grant: %d open reservations, want %d", got, h.s.OpenReservations()+1)
		}
	}
	for name, copyOf := range copies {
		t.Run(name+", the greatest id closed", func(t *testing.T) { check(t, copyOf, closed, first) })
	}
	last := h.res(acme, `{"USD":"1"}`, "").ReservationID
	for name, copyOf := range copies {
		t.Run(name+", the greatest id open", func(t *testing.T) { check(t, copyOf, last, closed, first) })
	}
}
