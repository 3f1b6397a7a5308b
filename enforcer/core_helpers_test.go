package enforcer

import (
	"fmt"
	"testing"
	"time"

	"github.com/tallyledger/tally/events"
)

// harness drives a State through Step with a controllable clock.
type harness struct {
	t   testing.TB
	s   *State
	now time.Time
	n   int
	log []events.Event
}

func newHarness(t testing.TB) *harness {
	return &harness{t: t, s: New(Config{Partition: 3}), now: time.Date(2026, 11, 28, 21, 0, 0, 0, time.UTC)}
}

func (h *harness) step(op events.Op, root, body string) Decision {
	h.t.Helper()
	req, err := events.ParseRequest(op, []byte(body))
	if err != nil {
		h.t.Fatalf("%s %s: %v", op, body, err)
	}
	h.n++
	d := h.s.Step(Command{Op: op, Root: root, Request: req, NewID: fmt.Sprintf("R%04d", h.n)}, h.now)
	h.log = append(h.log, d.Events...)
	return d
}

func (h *harness) tick() Decision {
	d := h.s.Step(Command{Op: OpExpire}, h.now)
	h.log = append(h.log, d.Events...)
	return d
}

func mustResult(t testing.TB, d Decision) any {
	t.Helper()
	if d.Err != nil {
		t.Fatalf("unexpected error %v", d.Err)
	}
	if d.Result != nil {
		return d.Result
	}
	if len(d.Events) == 0 {
		t.Fatalf("decision has neither result nor events")
	}
	r, ok := events.ResultOf(d.Events[0], events.EventRef{})
	if !ok {
		t.Fatalf("no result for %s", d.Events[0].Type)
	}
	return r
}
