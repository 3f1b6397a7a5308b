package enforcer

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tallyledger/tally/events"
)

// benchHierarchy is a state with tenant > workflow > run:* budgets (monthly,
// daily, none) in USD and tokens, limits far above any b.N.
func benchHierarchy(b *testing.B) *harness {
	h := newHarness(b)
	h.step(events.OpBudgetSet, "tenant:acme", `{"idempotency_key":"b1","scope":"tenant:acme","name":"monthly","limits":{"USD":"1000000000000","tokens":"1000000000000000"},"period":"monthly"}`)
	h.step(events.OpBudgetSet, "tenant:acme", `{"idempotency_key":"b2","scope":"tenant:acme/workflow:code-review","name":"wf","limits":{"USD":"1000000000000","tokens":"1000000000000000"},"period":"daily"}`)
	h.step(events.OpBudgetSet, "tenant:acme", `{"idempotency_key":"b3","scope":"tenant:acme/workflow:code-review/run:*","name":"per-run","limits":{"USD":"1000000000000","tokens":"1000000000000000"}}`)
	return h
}

// decideApply decides cmd at now and applies its events, as the decision
// loop does; a decision without events (an error) fails the benchmark.
func decideApply(b *testing.B, s *State, cmd Command, now time.Time) {
	d := s.Decide(cmd, now)
	if len(d.Events) == 0 {
		b.Fatalf("%s: no events: %+v", cmd.Op, d.Err)
	}
	for _, ev := range d.Events {
		s.Apply(s.LastSeq()+1, ev)
	}
}

// BenchmarkReserveDecideApply is Decide+Apply of a granted reserve against
// a 3-level hierarchy (tenant > workflow > run) with 2 units. Nothing is
// committed: each op leaves one more open reservation in the state.
func BenchmarkReserveDecideApply(b *testing.B) {
	h := benchHierarchy(b)
	s := h.s
	prio := events.PriorityNormal
	b.ReportAllocs()
	i := 0
	now := h.now
	for b.Loop() {
		i++
		req := &events.ReserveRequest{IdempotencyKey: fmt.Sprintf("k%d", i), Scope: "tenant:acme/workflow:code-review/run:r-42",
			Amounts: events.Amounts{"USD": events.MustAmount("0.42"), "tokens": events.MustAmount("12000")}, Priority: &prio}
		decideApply(b, s, Command{Op: events.OpReserve, Root: "tenant:acme", Request: req, NewID: fmt.Sprintf("R%d", i)}, now)
		now = now.Add(time.Microsecond)
	}
}

// BenchmarkReserveCommitDecideApply is the steady state an agent produces:
// a reserve then its commit, each decided and applied, against the same
// 3-level hierarchy with 2 units. One op is two decisions; the retained
// idempotency keys and closed reservations stay within the configured
// bounds, so the state does not grow without limit as it does above.
func BenchmarkReserveCommitDecideApply(b *testing.B) {
	h := benchHierarchy(b)
	s := h.s
	prio := events.PriorityNormal
	b.ReportAllocs()
	i := 0
	now := h.now
	for b.Loop() {
		i++
		req := &events.ReserveRequest{IdempotencyKey: fmt.Sprintf("k%d", i), Scope: "tenant:acme/workflow:code-review/run:r-42",
			Amounts: events.Amounts{"USD": events.MustAmount("0.42"), "tokens": events.MustAmount("12000")}, Priority: &prio}
		id := fmt.Sprintf("R%d", i)
		decideApply(b, s, Command{Op: events.OpReserve, Root: "tenant:acme", Request: req, NewID: id}, now)
		c := &events.CommitRequest{IdempotencyKey: fmt.Sprintf("c%d", i), ReservationID: id,
			Actual: events.Amounts{"USD": events.MustAmount("0.40"), "tokens": events.MustAmount("11000")}}
		decideApply(b, s, Command{Op: events.OpCommit, Root: "tenant:acme", Request: c}, now)
		now = now.Add(time.Microsecond)
	}
}

// BenchmarkSnapshotPause compares what the decision loop pauses for when
// it snapshots a large state: encoding it in place (Snapshot), as it once
// did, against copying it (Clone) and encoding the copy elsewhere. The
// state holds TALLY_BENCH_SNAPSHOT_OPS (default 50 000) reserve+commit
// pairs: as many retained keys and closed reservations.
func BenchmarkSnapshotPause(b *testing.B) {
	ops := 50_000
	if v, err := strconv.Atoi(os.Getenv("TALLY_BENCH_SNAPSHOT_OPS")); err == nil && v > 0 {
		ops = v
	}
	h := newHarness(b)
	h.step(events.OpBudgetSet, "tenant:acme", `{"idempotency_key":"b1","scope":"tenant:acme","name":"monthly","limits":{"USD":"1000000000000","tokens":"1000000000000000"},"period":"monthly"}`)
	h.step(events.OpBudgetSet, "tenant:acme", `{"idempotency_key":"b3","scope":"tenant:acme/workflow:code-review/run:*","name":"per-run","limits":{"USD":"1000000000000","tokens":"1000000000000000"}}`)
	s, now := h.s, h.now
	for i := range ops {
		id := fmt.Sprintf("R%d", i)
		d := s.Decide(Command{Op: events.OpReserve, Root: "tenant:acme", NewID: id, Request: &events.ReserveRequest{
			IdempotencyKey: fmt.Sprintf("k%d", i), Scope: fmt.Sprintf("tenant:acme/workflow:code-review/run:r-%d", i%500),
			Amounts: events.Amounts{"USD": events.MustAmount("0.42"), "tokens": events.MustAmount("12000")}}}, now)
		for _, ev := range d.Events {
			s.Apply(s.LastSeq()+1, ev)
		}
		d = s.Decide(Command{Op: events.OpCommit, Root: "tenant:acme", Request: &events.CommitRequest{
			IdempotencyKey: fmt.Sprintf("c%d", i), ReservationID: id, Actual: events.Amounts{"USD": events.MustAmount("0.4")}}}, now)
		for _, ev := range d.Events {
			s.Apply(s.LastSeq()+1, ev)
		}
		now = now.Add(time.Millisecond)
	}
	b.Run("snapshot", func(b *testing.B) {
		for b.Loop() {
			b.ReportMetric(float64(len(s.Snapshot())), "bytes")
		}
	})
	b.Run("clone", func(b *testing.B) {
		for b.Loop() {
			if s.Clone().LastSeq() != s.LastSeq() {
				b.Fatal("clone lost the sequence")
			}
		}
	})
	// What a new owner pays before replaying the tail.
	snap := s.Snapshot()
	b.Run("restore", func(b *testing.B) {
		for b.Loop() {
			r, err := Restore(s.cfg, snap)
			if err != nil || r.LastSeq() != s.LastSeq() {
				b.Fatalf("restore: %v", err)
			}
		}
	})
}
