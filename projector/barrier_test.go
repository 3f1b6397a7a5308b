package projector_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tallyledger/tally/client"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/projector"
	"github.com/tallyledger/tally/streams"
)

// TestBarrierHoldsEachWritePhase stops a flush at each of its barrier
// calls and looks at KV meanwhile: nothing of a phase is written before
// its barrier returns. The flush commits a reservation projected by an
// earlier run, so it has all four phases: marker, entries, checkpoint,
// purge of the closed reservation.
func TestBarrierHoldsEachWritePhase(t *testing.T) {
	_, nc, js := startLedger(t)
	ctx := context.Background()
	c := client.New(nc)
	root := rootOn(0, 0)
	if _, err := c.SetBudget(ctx, events.BudgetSetRequest{Scope: root, Name: "monthly",
		Limits: events.Amounts{"USD": events.MustAmount("10")}}); err != nil {
		t.Fatal(err)
	}
	res, err := c.Reserve(ctx, events.ReserveRequest{Scope: root, Labels: events.Labels{"model": "opus"},
		Amounts: events.Amounts{"USD": events.MustAmount("2")}})
	if err != nil || res.Decision != events.DecisionGranted {
		t.Fatalf("reserve: %+v, %v", res, err)
	}
	once := projector.Config{Partitions: testPartitions, Own: []int{0}, Once: true, FlushInterval: time.Minute}
	if err := <-runProjector(t, js, once); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Commit(ctx, root, events.CommitRequest{ReservationID: res.ReservationID,
		Actual: events.Amounts{"USD": events.MustAmount("1.5")}}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, streams.BalancesBucket)
	if err != nil {
		t.Fatal(err)
	}
	before := readCheckpoint(t, kv)
	beforeEntries := entries(t, js)
	resvKey := streams.BalancesBucket + "/" + projector.ResvKey(0, res.ReservationID)
	if _, ok := beforeEntries[resvKey]; !ok {
		t.Fatalf("the first run did not store %s", resvKey)
	}
	target := lastSeq(t, js, 0)
	if before.Seq >= target {
		t.Fatalf("checkpoint %d already at the commit (%d)", before.Seq, target)
	}

	type call struct{ release chan error }
	calls := make(chan call)
	once.Barrier = func(ctx context.Context) error {
		cl := call{make(chan error)}
		select {
		case calls <- cl:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case err := <-cl.release:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	done := runProjector(t, js, once)
	marker := before
	marker.AheadSeq = target
	for _, step := range []struct {
		name        string
		checkpoint  projector.Checkpoint
		entriesSame bool // the entries are still the first run's
		resvClosed  bool // the reservation is stored as closed
	}{
		{name: "before the marker", checkpoint: before, entriesSame: true},
		{name: "before the entries", checkpoint: marker, entriesSame: true},
		{name: "before the checkpoint", checkpoint: marker, resvClosed: true},
		{name: "before the purge", checkpoint: projector.Checkpoint{Seq: target}, resvClosed: true},
	} {
		var cl call
		select {
		case cl = <-calls:
		case err := <-done:
			t.Fatalf("%s: the projector returned (%v) without calling the barrier", step.name, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no barrier call", step.name)
		}
		cp := readCheckpoint(t, kv)
		// The commit's time is the enforcer's.
		if step.checkpoint.Seq == target {
			step.checkpoint.At = cp.At
		}
		if step.checkpoint.AheadSeq == target {
			step.checkpoint.AheadAt = cp.AheadAt
		}
		if diff := cmp.Diff(step.checkpoint, cp); diff != "" {
			t.Fatalf("%s: checkpoint (-want +got):\n%s", step.name, diff)
		}
		got := entries(t, js)
		if same := cmp.Equal(beforeEntries, got); same != step.entriesSame {
			t.Fatalf("%s: entries unchanged = %t, want %t:\n%s", step.name, same, step.entriesSame, cmp.Diff(beforeEntries, got))
		}
		var r projector.Resv
		if err := json.Unmarshal([]byte(got[resvKey]), &r); err != nil || r.Closed != step.resvClosed {
			t.Fatalf("%s: %s = %q (%v), want closed %t", step.name, resvKey, got[resvKey], err, step.resvClosed)
		}
		cl.release <- nil
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-calls:
		t.Fatal("a fifth barrier call")
	case <-time.After(10 * time.Second):
		t.Fatal("the projector did not stop")
	}
	if cp := readCheckpoint(t, kv); cp.Seq != target {
		t.Fatalf("checkpoint %d after the release, want %d", cp.Seq, target)
	}
	if v, ok := entries(t, js)[resvKey]; ok {
		t.Fatalf("closed reservation not purged: %s", v)
	}
}

// TestBarrierOnlyWhenWriting: every flush that writes calls the barrier,
// and an idle projector, flushing nothing every interval, never does.
func TestBarrierOnlyWhenWriting(t *testing.T) {
	srv, nc, js := startLedger(t)
	reg := prometheus.NewRegistry()
	var calls atomic.Int64
	const interval = 10 * time.Millisecond
	startProjector(t, srv, projector.Config{FlushInterval: interval, MaxPending: 7, Metrics: projector.NewMetrics(reg),
		Barrier: func(context.Context) error { calls.Add(1); return nil }})
	workload(t, client.New(nc), rand.New(rand.NewPCG(5, 6)), 120, nil)
	// The checkpoint gauge is set at the end of a flush, after its purge.
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		seqs, _ := gather(t, reg)
		for n := range testPartitions {
			if want := lastSeq(t, js, n); seqs[n] != want {
				return fmt.Errorf("partition %d: checkpoint %d, stream at %d", n, seqs[n], want)
			}
		}
		return nil
	})
	_, flushes := gather(t, reg)
	busy := calls.Load()
	if flushes == 0 || busy < int64(flushes) {
		t.Fatalf("%d barrier calls for %d flushes", busy, flushes)
	}
	t.Logf("%d barrier calls for %d flushes", busy, flushes)

	// Nothing to wait for but time: the idle ticks change nothing else.
	time.Sleep(20 * interval)
	if idle := calls.Load() - busy; idle != 0 {
		t.Fatalf("%d barrier calls while idle for %s", idle, 20*interval)
	}
	if _, f := gather(t, reg); f != flushes {
		t.Fatalf("%d flushes while idle", f-flushes)
	}
}

var errSync = errors.New("test: sync failed")

// TestBarrierFailureStopsTheCheckpoint: while the barrier fails, nothing
// is written, each failure is logged as an interrupted projection and
// retried; once it succeeds the views catch up.
func TestBarrierFailureStopsTheCheckpoint(t *testing.T) {
	srv, nc, js := startLedger(t)
	ctx := context.Background()
	c := client.New(nc)
	if _, err := c.Charge(ctx, events.ChargeRequest{Scope: rootOn(0, 0), Amounts: events.Amounts{"USD": events.MustAmount("1")}}); err != nil {
		t.Fatal(err)
	}
	logs := &warnings{}
	var failing atomic.Bool
	failing.Store(true)
	rp := startProjector(t, srv, projector.Config{Own: []int{0}, FlushInterval: 10 * time.Millisecond, Logger: slog.New(logs),
		Barrier: func(context.Context) error {
			if failing.Load() {
				return errSync
			}
			return nil
		}})
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if logs.count(errSync) < 2 {
			return errors.New("the barrier's failure was not logged twice")
		}
		return nil
	})
	kv, err := js.KeyValue(ctx, streams.BalancesBucket)
	if err != nil {
		t.Fatal(err)
	}
	if cp := readCheckpoint(t, kv); cp != (projector.Checkpoint{}) {
		t.Fatalf("checkpoint written past a failed barrier: %+v", cp)
	}
	if got := entries(t, js); len(got) != 0 {
		t.Fatalf("entries written past a failed barrier: %v", got)
	}
	select {
	case err := <-rp.done:
		t.Fatalf("the projector returned (%v): it retries", err)
	default:
	}
	failing.Store(false)
	target := lastSeq(t, js, 0)
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if cp := readCheckpoint(t, kv); cp.Seq != target {
			return fmt.Errorf("checkpoint %d, stream at %d", cp.Seq, target)
		}
		return nil
	})
}

// TestBarrierFailureOnce: with Once, a flush whose barrier fails is not
// catching up: the projector retries and returns only once it is stored.
func TestBarrierFailureOnce(t *testing.T) {
	_, nc, js := startLedger(t)
	ctx := context.Background()
	if _, err := client.New(nc).Charge(ctx, events.ChargeRequest{Scope: rootOn(0, 0),
		Amounts: events.Amounts{"USD": events.MustAmount("1")}}); err != nil {
		t.Fatal(err)
	}
	logs := &warnings{}
	var calls atomic.Int64
	done := runProjector(t, js, projector.Config{Partitions: testPartitions, Own: []int{0}, Once: true, FlushInterval: time.Minute,
		Logger: slog.New(logs), Barrier: func(context.Context) error {
			if calls.Add(1) == 1 {
				return errSync
			}
			return nil
		}})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the projector did not stop")
	}
	kv, err := js.KeyValue(ctx, streams.BalancesBucket)
	if err != nil {
		t.Fatal(err)
	}
	if cp, want := readCheckpoint(t, kv), lastSeq(t, js, 0); cp.Seq != want {
		t.Fatalf("Once returned with checkpoint %d, stream at %d", cp.Seq, want)
	}
	if n := logs.count(errSync); n != 1 {
		t.Fatalf("the barrier's failure logged %d times, want 1", n)
	}
}

// TestBarrierBeforeRebuildEnds: a rebuild's wipe is on disk before its
// marker goes, so a power cut cannot leave entries without a checkpoint.
func TestBarrierBeforeRebuildEnds(t *testing.T) {
	_, nc, js := startLedger(t)
	ctx := context.Background()
	if _, err := client.New(nc).Charge(ctx, events.ChargeRequest{Scope: rootOn(0, 0),
		Amounts: events.Amounts{"USD": events.MustAmount("1")}}); err != nil {
		t.Fatal(err)
	}
	cfg := projector.Config{Partitions: testPartitions, Own: []int{0}, Once: true, FlushInterval: time.Minute}
	if err := <-runProjector(t, js, cfg); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, streams.BalancesBucket)
	if err != nil {
		t.Fatal(err)
	}
	// What each barrier call found: the marker and no entry left.
	var seen []string
	cfg.Rebuild = true
	cfg.Barrier = func(ctx context.Context) error {
		cp, err := projector.ReadCheckpoint(ctx, kv, 0)
		if err != nil {
			return err
		}
		d, err := projector.Dump(ctx, js, 0)
		if err != nil {
			return err
		}
		seen = append(seen, fmt.Sprintf("rebuilding %t, %d keys", cp.Rebuilding, len(d)))
		return nil
	}
	if err := <-runProjector(t, js, cfg); err != nil {
		t.Fatal(err)
	}
	const wiped = "rebuilding true, 1 keys" // the marker only
	for _, s := range seen {
		if s == wiped {
			return
		}
	}
	t.Fatalf("no barrier call between the wipe and the marker's deletion: %q", seen)
}

// runProjector runs a projector on js until it returns or the test ends;
// the channel gets Run's result.
func runProjector(t *testing.T, js jetstream.JetStream, cfg projector.Config) <-chan error {
	t.Helper()
	p, err := projector.New(js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, out := make(chan error, 1), make(chan error, 1)
	go func() {
		err := p.Run(ctx)
		done <- err
		out <- err
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return out
}

func readCheckpoint(t *testing.T, kv jetstream.KeyValue) projector.Checkpoint {
	t.Helper()
	cp, err := projector.ReadCheckpoint(context.Background(), kv, 0)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// entries is every stored view entry, checkpoints left out.
func entries(t *testing.T, js jetstream.JetStream) map[string]string {
	t.Helper()
	out := dumpAll(t, js)
	for n := range testPartitions {
		delete(out, streams.BalancesBucket+"/"+projector.CheckpointKey(n))
	}
	return out
}

func lastSeq(t *testing.T, js jetstream.JetStream, n int) uint64 {
	t.Helper()
	return natstest.PartitionState(t, js, n).LastSeq
}

// gather reads the checkpoint gauge of every partition and the number of
// flushes that wrote something from the projector's metrics.
func gather(t *testing.T, reg *prometheus.Registry) (checkpoints map[int]uint64, flushes uint64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	checkpoints = map[int]uint64{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "tally_projector_checkpoint_seq":
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "partition" {
						n, _ := strconv.Atoi(l.GetValue())
						checkpoints[n] = uint64(m.GetGauge().GetValue())
					}
				}
			}
		case "tally_projector_flush_seconds":
			flushes = mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return checkpoints, flushes
}

// warnings is a slog.Handler that keeps the errors logged at Warn and
// above.
type warnings struct {
	mu   sync.Mutex
	errs []error
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok {
			w.errs = append(w.errs, err)
		}
		return true
	})
	return nil
}

func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

// count is how many logged errors are target.
func (w *warnings) count(target error) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, err := range w.errs {
		if errors.Is(err, target) {
			n++
		}
	}
	return n
}
