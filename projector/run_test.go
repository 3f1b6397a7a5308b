package projector_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/client"
	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/projector"
	"github.com/tallyledger/tally/streams"
)

const testPartitions = 3

func allPartitions() []int {
	out := make([]int, testPartitions)
	for i := range out {
		out[i] = i
	}
	return out
}

// startLedger runs a real server, the ledger's streams and an enforcer
// for every partition.
func startLedger(t *testing.T) (*server.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	nc, js := natstest.Ledger(t, srv, testPartitions)
	svc, err := enforcer.NewService(nc, enforcer.ServiceConfig{Partitions: testPartitions})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("enforcer: %v", err)
		}
	})
	c := client.New(nc)
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for n := range testPartitions {
			if _, err := c.Budgets(context.Background(), rootOn(n, 0)); err != nil {
				return err
			}
		}
		return nil
	})
	return srv, nc, js
}

// rootOn returns the i-th root that lands on partition n.
func rootOn(n, i int) string {
	for j := 0; ; j++ {
		r := fmt.Sprintf("tenant:p%d-%d", n, j)
		if streams.Partition(r, testPartitions) == n {
			if i == 0 {
				return r
			}
			i--
		}
	}
}

// runningProjector is a projector on its own connection, so a test can
// kill it like a crashed process: the connection goes, mid-flush or not.
type runningProjector struct {
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

func startProjector(t *testing.T, srv *server.Server, cfg projector.Config) *runningProjector {
	t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Partitions = testPartitions
	p, err := projector.New(js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rp := &runningProjector{nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { rp.done <- p.Run(ctx) }()
	t.Cleanup(func() { rp.kill(t) })
	return rp
}

// kill drops the connection and the context at once.
func (rp *runningProjector) kill(t *testing.T) {
	if rp.cancel == nil {
		return
	}
	rp.nc.Close()
	rp.cancel()
	select {
	case err := <-rp.done:
		if err != nil {
			t.Errorf("projector: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("projector did not stop")
	}
	rp.cancel = nil
}

func waitCaughtUp(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		lag, err := projector.Lag(context.Background(), js, allPartitions())
		if err != nil {
			return err
		}
		for n, l := range lag {
			if l > 0 {
				return fmt.Errorf("partition %d lags %d events", n, l)
			}
		}
		return nil
	})
}

func dumpAll(t *testing.T, js jetstream.JetStream) map[string]string {
	t.Helper()
	out := map[string]string{}
	for n := range testPartitions {
		d, err := projector.Dump(context.Background(), js, n)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range d {
			out[k] = string(v)
		}
	}
	return out
}

// workload sends random traffic to a few roots on every partition.
func workload(t *testing.T, c *client.Client, rng *rand.Rand, ops int, between func(i int)) {
	t.Helper()
	ctx := context.Background()
	var roots []string
	for n := range testPartitions {
		roots = append(roots, rootOn(n, 0), rootOn(n, 1))
	}
	monthly, daily, shadow := events.PeriodMonthly, events.PeriodDaily, events.ModeShadow
	for _, r := range roots {
		for _, b := range []events.BudgetSetRequest{
			{Scope: r, Name: "monthly", Limits: events.Amounts{"USD": events.MustAmount("60")}, Period: &monthly},
			{Scope: r, Name: "shadow", Limits: events.Amounts{"USD": events.MustAmount("8"), "tokens": events.MustAmount("30000")}, Period: &daily, Mode: &shadow},
			{Scope: r + "/workflow:*/run:*", Name: "per-run", Limits: events.Amounts{"USD": events.MustAmount("2")}},
		} {
			if _, err := c.SetBudget(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	models := []string{"", "opus", "sonnet"}
	type open struct{ root, id string }
	var held []open
	amt := func(max int) events.Amount {
		return events.MustAmount(fmt.Sprintf("%d.%02d", rng.IntN(max), rng.IntN(100)))
	}
	for i := range ops {
		if between != nil {
			between(i)
		}
		root := roots[rng.IntN(len(roots))]
		scope := root + []string{"", "/workflow:review/run:r" + fmt.Sprint(rng.IntN(9)), "/team:ml"}[rng.IntN(3)]
		var labels events.Labels
		if m := models[rng.IntN(len(models))]; m != "" {
			labels = events.Labels{"model": m}
		}
		switch x := rng.IntN(10); {
		case x < 5:
			res, err := c.Reserve(ctx, events.ReserveRequest{Scope: scope, Labels: labels,
				Amounts: events.Amounts{"USD": amt(2), "tokens": events.MustAmount(fmt.Sprint(rng.IntN(4000)))}})
			if err != nil {
				t.Fatal(err)
			}
			if res.Decision == events.DecisionGranted {
				held = append(held, open{root, res.ReservationID})
			}
		case x < 8 && len(held) > 0:
			j := rng.IntN(len(held))
			o := held[j]
			held = append(held[:j], held[j+1:]...)
			req := events.CommitRequest{ReservationID: o.id, Actual: events.Amounts{"USD": amt(2)}}
			if rng.IntN(3) == 0 {
				req.Labels = labels
			}
			if _, err := c.Commit(ctx, o.root, req); err != nil {
				t.Fatal(err)
			}
		case x < 9 && len(held) > 0:
			o := held[0]
			held = held[1:]
			if _, err := c.Release(ctx, o.root, events.ReleaseRequest{ReservationID: o.id}); err != nil {
				t.Fatal(err)
			}
		default:
			if _, err := c.Charge(ctx, events.ChargeRequest{Scope: scope, Amounts: events.Amounts{"USD": amt(1)}, Labels: labels}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestKillRestartAndRebuild runs the projector against a live ledger,
// killing it (connection and context gone at once, mid-flush or not) and
// restarting it several times during a random workload. Once it has
// caught up, its views must equal a rebuild from sequence 1, and the
// balances must equal the enforcer's strongly consistent answers.
func TestKillRestartAndRebuild(t *testing.T) {
	srv, nc, js := startLedger(t)
	c := client.New(nc)
	cfg := projector.Config{FlushInterval: 5 * time.Millisecond, MaxPending: 7}
	rp := startProjector(t, srv, cfg)
	rng := rand.New(rand.NewPCG(1, 2))
	kills := 0
	workload(t, c, rng, 600, func(i int) {
		if i > 0 && i%90 == 0 {
			rp.kill(t)
			kills++
			rp = startProjector(t, srv, cfg)
		}
	})
	waitCaughtUp(t, js)
	rp.kill(t)
	live := dumpAll(t, js)
	if len(live) < 50 {
		t.Fatalf("only %d entries projected", len(live))
	}

	// The balances are the enforcer's.
	bals, err := projector.ReadBalances(context.Background(), js, allPartitions())
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, b := range bals {
		if b.Budget != "monthly" {
			continue
		}
		res, err := c.Balance(context.Background(), b.Scope)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range res.Instances {
			if in.Budget == b.Budget && in.Period == b.Period {
				if diff := cmp.Diff(in.Units, b.Units, cmp.Comparer(func(a, b events.Amount) bool { return a.Cmp(b) == 0 })); diff != "" {
					t.Fatalf("%s %s: projection differs from the enforcer (-enforcer +projection):\n%s", b.Budget, b.Scope, diff)
				}
				checked++
			}
		}
	}
	if checked == 0 {
		t.Fatal("no balance compared")
	}

	// A rebuild from sequence 1 ends equal to the live views.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := projector.New(js, projector.Config{Partitions: testPartitions, Rebuild: true, Once: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
	rebuilt := dumpAll(t, js)
	if diff := cmp.Diff(live, rebuilt); diff != "" {
		t.Fatalf("after %d kills, live views differ from a rebuild (-live +rebuilt):\n%s", kills, diff)
	}
	for k := range live {
		if strings.Contains(k, "/"+projector.PrefixResv+".") && strings.Contains(live[k], `"closed":true`) {
			t.Fatalf("closed reservation %s left after the purge", k)
		}
	}
}

// TestRebuildRemovesStrayEntries: a rebuild wipes what the events do not
// justify, and an interrupted wipe is resumed.
func TestRebuildRemovesStrayEntries(t *testing.T) {
	srv, nc, js := startLedger(t)
	c := client.New(nc)
	workload(t, c, rand.New(rand.NewPCG(3, 4)), 60, nil)
	rp := startProjector(t, srv, projector.Config{})
	waitCaughtUp(t, js)
	rp.kill(t)
	want := dumpAll(t, js)

	ctx := context.Background()
	kv, err := js.KeyValue(ctx, streams.BalancesBucket)
	if err != nil {
		t.Fatal(err)
	}
	stray0 := projector.InstanceKey(0, "tenant:x", "ghost", "tenant:x", "none")
	stray1 := projector.InstanceKey(1, "tenant:y", "ghost", "tenant:y", "none")
	for _, k := range []string{stray0, stray1} {
		if _, err := kv.Put(ctx, k, []byte(`{"partition":0}`)); err != nil {
			t.Fatal(err)
		}
	}
	// Partition 1's wipe was interrupted: its marker is there.
	if _, err := kv.Put(ctx, projector.CheckpointKey(1), []byte(`{"partition":1,"rebuilding":true}`)); err != nil {
		t.Fatal(err)
	}
	run := func(rebuild bool) map[string]string {
		p, err := projector.New(js, projector.Config{Partitions: testPartitions, Rebuild: rebuild, Once: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Run(ctx); err != nil {
			t.Fatal(err)
		}
		return dumpAll(t, js)
	}
	got := run(false)
	if _, ok := got[streams.BalancesBucket+"/"+stray1]; ok {
		t.Fatal("the interrupted wipe was not resumed")
	}
	if _, ok := got[streams.BalancesBucket+"/"+stray0]; !ok {
		t.Fatal("a start without --rebuild wiped partition 0")
	}
	if diff := cmp.Diff(want, run(true)); diff != "" {
		t.Fatalf("rebuild (-before +after):\n%s", diff)
	}
}
