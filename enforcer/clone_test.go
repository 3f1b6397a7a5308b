package enforcer

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/tallyledger/tally/events"
)

// grownState is a state of n reserve+commit pairs: its fifos span several
// record segments and arena chunks.
func grownState(t *testing.T, n int) *harness {
	h := newHarness(t)
	h.set(acme, "m", `"limits":{"USD":"1000000000","tokens":"1000000000000"},"period":"monthly"`)
	h.set("tenant:acme/run:*", "r", `"limits":{"USD":"1000000"}`)
	for i := range n {
		id := fmt.Sprintf("R%06d", i)
		h.s.Step(Command{Op: events.OpReserve, Root: acme, NewID: id, Request: &events.ReserveRequest{
			IdempotencyKey: fmt.Sprintf("k%d", i), Scope: fmt.Sprintf("tenant:acme/run:r%d", i%50),
			Amounts: events.Amounts{"USD": events.MustAmount("0.42"), "tokens": events.MustAmount("12000")}}}, h.now)
		h.s.Step(Command{Op: events.OpCommit, Root: acme, Request: &events.CommitRequest{IdempotencyKey: fmt.Sprintf("c%d", i),
			ReservationID: id, Actual: events.Amounts{"USD": events.MustAmount("0.40")}}}, h.now)
		h.now = h.now.Add(time.Millisecond)
	}
	return h
}

// CloneInto reuses an earlier copy's memory, larger or smaller than what
// it copies: the copy must snapshot as the original does, and decide on as
// the original does, with nothing of the old copy showing through.
func TestCloneIntoReusesWithoutLeaking(t *testing.T) {
	big, small := grownState(t, 6000), grownState(t, 700)
	for _, c := range []struct {
		name     string
		src, old *harness
	}{
		{"into a larger copy", small, big},
		{"into a smaller copy", big, small},
		{"into a copy of itself", big, big},
	} {
		t.Run(c.name, func(t *testing.T) {
			old := c.old.s.Clone()
			want := c.src.s.Snapshot()
			cp := c.src.s.CloneInto(old)
			if got := cp.Snapshot(); !bytes.Equal(got, want) {
				t.Fatalf("the copy differs from its original:\n%s", snapshotDiff(want, got))
			}
			// A fresh copy and the reused one carry on alike; the original
			// is not touched by either.
			ref := c.src.s.Clone()
			for i := range 3000 {
				id := fmt.Sprintf("N%06d", i)
				cmd := Command{Op: events.OpReserve, Root: acme, NewID: id, Request: &events.ReserveRequest{
					IdempotencyKey: fmt.Sprintf("n%d", i), Scope: "tenant:acme/run:x",
					Amounts: events.Amounts{"USD": events.MustAmount("0.01")}}}
				at := c.src.now.Add(time.Duration(i) * time.Millisecond)
				a, b := ref.Step(cmd, at), cp.Step(cmd, at)
				if jsonOf(a.Events) != jsonOf(b.Events) {
					t.Fatalf("step %d: the copy decided\n%s\nthe original\n%s", i, jsonOf(b.Events), jsonOf(a.Events))
				}
			}
			if got, want := cp.Snapshot(), ref.Snapshot(); !bytes.Equal(got, want) {
				t.Fatalf("the reused copy and a fresh one drifted apart:\n%s", snapshotDiff(want, got))
			}
			if got := c.src.s.Snapshot(); !bytes.Equal(got, want) {
				t.Fatal("the original changed with its copies")
			}
		})
	}
}
