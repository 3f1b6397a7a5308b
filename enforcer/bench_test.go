package enforcer

import (
	"fmt"
	"os"
	"runtime/debug"
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

// commands hands out the commands of a benchmark's ops, built before the
// timer in chunks, so that the core benchmarks time Decide and Apply alone
// (in the service the wire parser builds requests; it has benchmarks of
// its own in events). Chunks keep the heap the collector scans as small as
// the service's: a whole run's requests built at once would be hundreds of
// megabytes of live maps.
type commands struct {
	b     *testing.B
	build func(i int) Command
	buf   []Command
	next  int // op number of buf[0]
	pos   int
}

func newCommands(b *testing.B, build func(i int) Command) *commands {
	return &commands{b: b, build: build, buf: make([]Command, 0, 4096)}
}

// get returns the next op's command (ops are numbered from 0).
func (c *commands) get() Command {
	if c.pos == len(c.buf) {
		c.b.StopTimer()
		c.next += len(c.buf)
		c.buf, c.pos = c.buf[:cap(c.buf)], 0
		for j := range c.buf {
			c.buf[j] = c.build(c.next + j)
		}
		c.b.StartTimer()
	}
	c.pos++
	return c.buf[c.pos-1]
}

// reserveCommand is op i's reserve against the run scope of benchHierarchy.
func reserveCommand(i int) Command {
	return reserveOn(i, "tenant:acme/workflow:code-review/run:r-42")
}

// reserveAcrossRuns is op i's reserve against one of 64 runs in turn: no
// two requests in a row share a scope, so no look-up is kept from the last.
func reserveAcrossRuns(i int) Command {
	return reserveOn(i, fmt.Sprintf("tenant:acme/workflow:code-review/run:r-%d", i%64))
}

func reserveOn(i int, scope string) Command {
	prio := events.PriorityNormal
	req := &events.ReserveRequest{IdempotencyKey: fmt.Sprintf("k%d", i), Scope: scope,
		Amounts: events.Amounts{"USD": benchUSD, "tokens": benchTokens}, Priority: &prio}
	return Command{Op: events.OpReserve, Root: "tenant:acme", Request: req, NewID: benchID(i)}
}

// benchID is op i's reservation id: 26 characters that increase with i,
// as the decision loop's ULIDs do (ulid.Make is monotonic).
func benchID(i int) string { return fmt.Sprintf("01JDQ%021d", i) }

// commitCommand commits op i's reservation.
func commitCommand(i int) Command {
	req := &events.CommitRequest{IdempotencyKey: fmt.Sprintf("c%d", i), ReservationID: benchID(i),
		Actual: events.Amounts{"USD": benchUSDActual, "tokens": benchTokensActual}}
	return Command{Op: events.OpCommit, Root: "tenant:acme", Request: req}
}

var (
	benchUSD, benchTokens             = events.MustAmount("0.42"), events.MustAmount("12000")
	benchUSDActual, benchTokensActual = events.MustAmount("0.40"), events.MustAmount("11000")
)

// prehashed sets a mutating command's Hash, as the service's subscription
// goroutine does before the command reaches the decision loop.
func prehashed(build func(int) Command) func(int) Command {
	return func(i int) Command {
		c := build(i)
		c.Hash = events.RequestHash(c.Op, c.Request)
		return c
	}
}

// hashings are the ways a command reaches Decide: hashed by the service's
// subscription goroutine (prehashed), or hashed by Decide; with the views
// rendered into the state's reused buffer, as the service's decision loop
// does (SetReuseViews), or allocated for each decision, as Step does.
// The last way spreads the reserves over 64 runs.
var hashings = []struct {
	name    string
	wrap    func(func(int) Command) func(int) Command
	reuse   bool
	reserve func(int) Command
}{
	{"prehashed", prehashed, true, reserveCommand},
	{"hash-in-decide", func(build func(int) Command) func(int) Command { return build }, true, reserveCommand},
	{"prehashed-own-views", prehashed, false, reserveCommand},
	{"prehashed-64-runs", prehashed, true, reserveAcrossRuns},
}

// BenchmarkReserveDecideApply is Decide+Apply of a granted reserve against
// a 3-level hierarchy (tenant > workflow > run) with 2 units. Nothing is
// committed: each op leaves one more open reservation in the state.
func BenchmarkReserveDecideApply(b *testing.B) {
	for _, hs := range hashings {
		b.Run(hs.name, func(b *testing.B) {
			h := benchHierarchy(b)
			s := h.s
			s.SetReuseViews(hs.reuse)
			reserves := newCommands(b, hs.wrap(hs.reserve))
			b.ReportAllocs()
			now := h.now
			for b.Loop() {
				decideApply(b, s, reserves.get(), now)
				now = now.Add(time.Microsecond)
			}
		})
	}
}

// BenchmarkReserveCommitDecideApply is the steady state an agent produces:
// a reserve then its commit, each decided and applied, against the same
// 3-level hierarchy with 2 units. One op is two decisions; the retained
// idempotency keys and closed reservations stay within the configured
// bounds, so the state does not grow without limit as it does above.
func BenchmarkReserveCommitDecideApply(b *testing.B) {
	for _, hs := range hashings {
		b.Run(hs.name, func(b *testing.B) {
			h := benchHierarchy(b)
			s := h.s
			s.SetReuseViews(hs.reuse)
			reserves, commits := newCommands(b, hs.wrap(hs.reserve)), newCommands(b, hs.wrap(commitCommand))
			b.ReportAllocs()
			now := h.now
			for b.Loop() {
				decideApply(b, s, reserves.get(), now)
				decideApply(b, s, commits.get(), now)
				now = now.Add(time.Microsecond)
			}
		})
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
	// Snapshots are far apart: by the next one the collector has given the
	// last copy's pages back to the system, and a fresh copy faults them in
	// again (FreeOSMemory, outside the timer, stands for those minutes).
	// The service copies into the last copy's memory instead.
	b.Run("clone/fresh-memory", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			debug.FreeOSMemory()
			b.StartTimer()
			if s.Clone().LastSeq() != s.LastSeq() {
				b.Fatal("clone lost the sequence")
			}
		}
	})
	b.Run("clone/into-last-copy", func(b *testing.B) {
		last := s.Clone()
		for b.Loop() {
			b.StopTimer()
			debug.FreeOSMemory()
			b.StartTimer()
			if last = s.CloneInto(last); last.LastSeq() != s.LastSeq() {
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
