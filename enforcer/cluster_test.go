package enforcer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/client"
	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// clusterEnforcer is one enforcer process of the cluster test.
type clusterEnforcer struct {
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

func startClusterEnforcer(t *testing.T, urls, owner string) *clusterEnforcer {
	t.Helper()
	nc, err := nats.Connect(urls, nats.Name(owner), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	cfg := enforcer.ServiceConfig{Partitions: testPartitions, Owner: owner, GroupCommit: os.Getenv("TALLY_TEST_GC") != "off", BatchMin: 2, AppendTimeout: 2 * time.Second}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("owner", owner)
	}
	svc, err := enforcer.NewService(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &clusterEnforcer{nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { e.done <- svc.Run(ctx) }()
	return e
}

// kill stops an enforcer abruptly: its connection goes first, so nothing
// in flight is acknowledged and its leases are left to expire.
func (e *clusterEnforcer) kill() {
	e.nc.Close()
	e.cancel()
	<-e.done
}

func (e *clusterEnforcer) stop(t *testing.T) {
	e.cancel()
	select {
	case err := <-e.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("enforcer stopped with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("enforcer did not stop")
	}
	e.nc.Close()
}

// An in-process 3-node cluster with R3 streams and two enforcers under
// continuous load: the node leading a partition stream is shut down, one
// enforcer is killed abruptly and restarted. Afterwards every answered
// decision is in the stream, no idempotency key was granted twice, the
// fold of each stream equals what the enforcers report, and no enforce
// budget was over-granted.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test skipped under -short")
	}
	c := natstest.RunCluster(t, natstest.WithPartitions(testPartitions))
	admin, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := streams.Ensure(ctx, js, streams.Config{Partitions: testPartitions, Replicas: 3, LeaseTTL: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	e1 := startClusterEnforcer(t, c.URLs(), "e1")
	e2 := startClusterEnforcer(t, c.URLs(), "e2")
	defer func() { e2.stop(t) }()

	roots := []string{rootOf(0), rootOf(1), rootOf(2), rootOf(3)}
	cl := client.New(admin, client.WithTimeout(time.Second), client.WithAttempts(30), client.WithBackoff(50*time.Millisecond))
	for _, r := range roots {
		for _, b := range []events.BudgetSetRequest{
			{Scope: r, Name: "month", Limits: events.Amounts{"USD": events.MustAmount("150")}},
			{Scope: r + "/run:*", Name: "run", Limits: events.Amounts{"USD": events.MustAmount("4"), "tokens": events.MustAmount("900")}},
		} {
			b.IdempotencyKey = "b-" + b.Name
			if _, err := cl.SetBudget(ctx, b); err != nil {
				t.Fatalf("budget %s on %s: %v", b.Name, r, err)
			}
		}
	}

	type answer struct {
		root, op string
		req      any
		result   string
	}
	var (
		mu       sync.Mutex
		answers  []answer
		stop     atomic.Bool
		maxPause atomic.Int64
		wg       sync.WaitGroup
	)
	for ci := range 8 {
		wg.Go(func() {
			nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			cc := client.New(nc, client.WithTimeout(time.Second), client.WithAttempts(60), client.WithBackoff(50*time.Millisecond))
			last := time.Now()
			note := func(root, op string, req, res any) {
				now := time.Now()
				if p := now.Sub(last); p.Nanoseconds() > maxPause.Load() {
					maxPause.Store(p.Nanoseconds())
				}
				last = now
				b, _ := json.Marshal(res)
				mu.Lock()
				answers = append(answers, answer{root, op, req, string(b)})
				mu.Unlock()
			}
			for i := 0; !stop.Load(); i++ {
				root := roots[(ci+i)%len(roots)]
				req := events.ReserveRequest{IdempotencyKey: fmt.Sprintf("k%d-%d", ci, i), Scope: fmt.Sprintf("%s/run:r%d", root, i%9),
					Amounts: events.Amounts{"USD": events.MustAmount("0.25"), "tokens": events.MustAmount("40")}}
				r, err := cc.Reserve(context.Background(), req)
				if err != nil {
					t.Errorf("reserve %s: %v", req.IdempotencyKey, err)
					return
				}
				note(root, "reserve", req, r)
				if r.Decision != events.DecisionGranted {
					continue
				}
				creq := events.CommitRequest{IdempotencyKey: req.IdempotencyKey + "-c", ReservationID: r.ReservationID,
					Actual: events.Amounts{"USD": events.MustAmount("0.2")}}
				cr, err := cc.Commit(context.Background(), root, creq)
				if err != nil {
					t.Errorf("commit %s: %v", creq.IdempotencyKey, err)
					return
				}
				note(root, "commit", creq, cr)
			}
		})
	}
	progress := func(min int) {
		natstest.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(answers) < min {
				return fmt.Errorf("%d answers so far, waiting for %d", len(answers), min)
			}
			return nil
		})
	}
	progress(150)
	// The NATS node leading partition 0's stream goes away.
	leader := c.StreamLeader(streams.StreamName(0))
	if leader < 0 {
		t.Fatal("no stream leader")
	}
	t.Logf("shutting down n%d, leader of %s", leader+1, streams.StreamName(0))
	c.Shutdown(leader)
	mu.Lock()
	base := len(answers)
	mu.Unlock()
	progress(base + 150)
	t.Log("killing enforcer e1")
	e1.kill()
	mu.Lock()
	base = len(answers)
	mu.Unlock()
	progress(base + 150)
	t.Log("restarting enforcer e1 and the NATS node")
	e1 = startClusterEnforcer(t, c.URLs(), "e1")
	defer func() { e1.stop(t) }()
	c.Restart(leader)
	mu.Lock()
	base = len(answers)
	mu.Unlock()
	progress(base + 150)
	stop.Store(true)
	wg.Wait()
	t.Logf("%d answers; longest pause seen by a client: %s", len(answers), time.Duration(maxPause.Load()))
	ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Every answered decision is in the stream, as answered; and a retry
	// returns it again.
	for _, a := range answers {
		var ref struct{ Event *events.EventRef }
		if err := json.Unmarshal([]byte(a.result), &ref); err != nil || ref.Event == nil {
			t.Fatalf("answer without event: %s", a.result)
		}
		s, err := js.Stream(ctx, streams.StreamName(ref.Event.Partition))
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetMsg(ctx, ref.Event.Seq)
		if err != nil {
			t.Fatalf("answered %s not in the stream: %v", a.op, err)
		}
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := events.ResultOf(ev, *ref.Event)
		if got := mustJSON(t, want); got != a.result {
			t.Fatalf("stream has %s, client was told %s", got, a.result)
		}
	}
	// No key granted twice; no enforce instance over-granted; the fold
	// equals what the enforcers answer.
	for n := 0; n < testPartitions; n++ {
		granted := map[string]int{}
		st := enforcer.New(enforcer.Config{Partition: n})
		if _, err := enforcer.Replay(ctx, js, n, st, func(seq uint64, ev events.Event, _ []byte) {
			g, ok := ev.Data.(*events.ReservationGranted)
			if !ok {
				return
			}
			granted[ev.Root+"/"+g.IdempotencyKey]++
			for _, in := range g.Instances {
				if in.Mode != events.ModeEnforce {
					continue
				}
				for _, u := range in.Units {
					if u.Spent.Add(u.Reserved).Cmp(u.Limit) > 0 {
						if _, asked := g.Amounts[u.Unit]; asked {
							t.Errorf("seq %d: grant drove %s %s %s to %s of %s", seq, in.Budget, in.Scope, u.Unit, u.Spent.Add(u.Reserved), u.Limit)
						}
					}
				}
			}
		}); err != nil {
			t.Fatalf("partition %d: %v", n, err)
		}
		for k, c := range granted {
			if c > 1 {
				t.Errorf("key %s granted %d times", k, c)
			}
		}
		root := roots[n]
		for i := range 9 {
			scope := fmt.Sprintf("%s/run:r%d", root, i)
			got, err := cl.Balance(ctx, scope)
			if err != nil {
				t.Fatal(err)
			}
			req, _ := events.ParseRequest(events.OpBalance, []byte(fmt.Sprintf(`{"scope":%q}`, scope)))
			d := st.Decide(enforcer.Command{Op: events.OpBalance, Root: root, Request: req}, time.Now())
			if mustJSON(t, got) != mustJSON(t, d.Result) {
				t.Fatalf("%s: enforcer says %s, the fold %s", scope, mustJSON(t, got), mustJSON(t, d.Result))
			}
		}
	}
}
