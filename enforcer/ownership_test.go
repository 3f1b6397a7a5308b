package enforcer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// randomLoad drives a random workload of reserves, commits, releases and
// charges on roots until n answers were received.
func randomLoad(t testing.TB, nc *nats.Conn, roots []string, n int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	var open []struct{ root, id string }
	for i := 0; i < n; i++ {
		root := roots[rng.IntN(len(roots))]
		switch k := rng.IntN(10); {
		case k < 5 || len(open) == 0:
			body := fmt.Sprintf(`{"idempotency_key":"r%d","scope":"%s/run:r%d","amounts":{"USD":"%d.%02d","tokens":"%d"},"ttl_ms":%d}`,
				i, root, rng.IntN(5), rng.IntN(3), rng.IntN(100), rng.IntN(500), 1000+rng.IntN(3000))
			var r events.ReserveResult
			mustOK(t, call(t, nc, root, "reserve", body), &r)
			if r.Decision == events.DecisionGranted {
				open = append(open, struct{ root, id string }{root, r.ReservationID})
			}
		case k < 8:
			j := rng.IntN(len(open))
			o := open[j]
			open = append(open[:j], open[j+1:]...)
			a := call(t, nc, o.root, "commit", fmt.Sprintf(`{"idempotency_key":"c%d","reservation_id":%q,"actual":{"USD":"%d.%d"}}`, i, o.id, rng.IntN(3), rng.IntN(10)))
			if a.Error != nil && a.Error.Code != events.CodeReservationClosed {
				t.Fatalf("commit: %v", a.Error)
			}
		case k < 9:
			j := rng.IntN(len(open))
			o := open[j]
			open = append(open[:j], open[j+1:]...)
			a := call(t, nc, o.root, "release", fmt.Sprintf(`{"idempotency_key":"x%d","reservation_id":%q}`, i, o.id))
			if a.Error != nil && a.Error.Code != events.CodeReservationClosed {
				t.Fatalf("release: %v", a.Error)
			}
		default:
			mustOK(t, call(t, nc, root, "charge", fmt.Sprintf(`{"idempotency_key":"g%d","scope":"%s/run:r%d","amounts":{"USD":"0.%d"}}`, i, root, rng.IntN(5), rng.IntN(10))), nil)
		}
	}
}

func setBudgets(t testing.TB, nc *nats.Conn, roots []string) {
	t.Helper()
	for _, r := range roots {
		mustOK(t, call(t, nc, r, "budget-set", fmt.Sprintf(`{"idempotency_key":"b1","scope":%q,"name":"m","limits":{"USD":"200"},"period":"daily"}`, r)), nil)
		mustOK(t, call(t, nc, r, "budget-set", fmt.Sprintf(`{"idempotency_key":"b2","scope":"%s/run:*","name":"run","limits":{"USD":"20","tokens":"5000"},"mode":"shadow"}`, r)), nil)
		mustOK(t, call(t, nc, r, "budget-set", fmt.Sprintf(`{"idempotency_key":"b3","scope":"%s/run:r1","name":"r1","limits":{"USD":"5"}}`, r)), nil)
	}
}

// Snapshot + tail recovery equals full replay, on a random history; a
// snapshot whose claimed position does not match the stream is refused.
func TestSnapshotTailEqualsFullReplay(t *testing.T) {
	t.Run("default retention", func(t *testing.T) { testSnapshotTailEqualsFullReplay(t, 0) })
	// Snapshots are spaced by at least the retained keys: with few kept,
	// they recur, each copied into the last one's memory.
	t.Run("snapshots recurring", func(t *testing.T) { testSnapshotTailEqualsFullReplay(t, 30) })
}

func testSnapshotTailEqualsFullReplay(t *testing.T, retain int) {
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	l := startLedger(t, srv, func(c *enforcer.ServiceConfig) {
		c.SnapshotEvery = 37
		c.Core.MaxIdempotencyKeys, c.Core.MaxClosedReservations = retain, retain
	})
	roots := []string{rootOf(0), rootOf(1), rootOf(2), rootOf(3)}
	setBudgets(t, l.nc, roots)
	randomLoad(t, l.nc, roots, 600, 7)
	l.stop()
	ctx := context.Background()
	tails := 0
	// Rebuilt with the enforcer's retention: a fold keeps what its
	// configuration keeps.
	core := enforcer.Config{MaxIdempotencyKeys: retain, MaxClosedReservations: retain}
	for n := 0; n < testPartitions; n++ {
		snap, _, err := enforcer.LoadSnapshot(ctx, l.js, n, core)
		if err != nil {
			t.Fatalf("partition %d: %v", n, err)
		}
		tail := snap.LastSeq()
		if _, err := enforcer.Replay(ctx, l.js, n, snap, nil); err != nil {
			t.Fatal(err)
		}
		fullCfg := core
		fullCfg.Partition = n
		full := enforcer.New(fullCfg)
		if _, err := enforcer.Replay(ctx, l.js, n, full, nil); err != nil {
			t.Fatal(err)
		}
		tails += int(full.LastSeq() - tail)
		if string(snap.Snapshot()) != string(full.Snapshot()) {
			t.Fatalf("partition %d: snapshot (seq %d) + tail differs from full replay", n, tail)
		}
	}
	if tails == 0 {
		t.Fatal("every snapshot is at its stream's head: no tail was replayed")
	}
	// A snapshot claiming a position the stream does not have is refused.
	st := enforcer.New(enforcer.Config{Partition: 0})
	if _, err := enforcer.Replay(ctx, l.js, 0, st, nil); err != nil {
		t.Fatal(err)
	}
	if err := enforcer.SaveSnapshot(ctx, l.js, 0, st.Snapshot(), st.LastSeq(), events.Hash([]byte("forged"))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := enforcer.LoadSnapshot(ctx, l.js, 0, enforcer.Config{}); err == nil {
		t.Fatal("a snapshot with a wrong chain hash was accepted")
	}
	rec, _, err := enforcer.Recover(ctx, l.js, 0, enforcer.Config{}, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	if string(rec.Snapshot()) != string(st.Snapshot()) {
		t.Fatal("recovery after a refused snapshot differs from full replay")
	}
}

// Split brain: two enforcers both pinned to the same partition. Only one
// appends at a time — the fence stops the stale one at its first append,
// it sees the other's claim and stops serving — and no request gets two
// different answers: every answer a client got is the stream's.
//
// A second owner far from the server (its writes 3 ms late) loses nearly
// every race for a gap between the first one's appends: before the first
// held its decisions when asked (streams.ClaimSubject) the claim took 186
// to over 3 000 tries and sometimes did not land within the claim timeout;
// now it takes a few.
func TestSplitBrain(t *testing.T) {
	for _, gc := range []bool{false, true} {
		for _, far := range []bool{false, true} {
			t.Run(fmt.Sprintf("group-commit=%v/far=%v", gc, far), func(t *testing.T) { testSplitBrain(t, gc, far) })
		}
	}
}

func testSplitBrain(t *testing.T, groupCommit, far bool) {
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	root := "tenant:split"
	n := streams.Partition(root, testPartitions)
	a := startLedgerOwn(t, srv, "A", n, groupCommit)
	mustOK(t, call(t, a.nc, root, "budget-set", `{"idempotency_key":"b","scope":"tenant:split","name":"m","limits":{"USD":"30"}}`), nil)

	var (
		mu      sync.Mutex
		answers = map[string]string{} // key → answer result
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	for c := range 8 {
		wg.Go(func() {
			nc := natstest.Connect(t, srv)
			for i := 0; !stop.Load(); i++ {
				key := fmt.Sprintf("c%d-%d", c, i)
				body := fmt.Sprintf(`{"idempotency_key":%q,"scope":"tenant:split/agent:a%d","amounts":{"USD":"0.1"}}`, key, c)
				// Retry with the same key until answered, as the SDK does.
				for !stop.Load() {
					msg, err := nc.Request(streams.RequestSubject(root, "reserve"), []byte(body), 300*time.Millisecond)
					if err != nil {
						continue
					}
					var ans events.Answer
					if json.Unmarshal(msg.Data, &ans) != nil {
						t.Errorf("undecodable %s", msg.Data)
						return
					}
					if ans.Error != nil {
						continue // UNAVAILABLE during the reload
					}
					mu.Lock()
					if prev, ok := answers[key]; ok && prev != string(ans.Result) {
						t.Errorf("key %s answered twice differently:\n%s\n%s", key, prev, ans.Result)
					}
					answers[key] = string(ans.Result)
					mu.Unlock()
					break
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond) // load before the second owner appears
	bc := natstest.Connect(t, srv)
	if far {
		bc = natstest.ConnectFar(t, srv, 3*time.Millisecond)
	}
	b := startLedgerOn(t, srv, bc, ownPartition("B", n, groupCommit))
	// A loses at its next append and stops.
	select {
	case err := <-a.done:
		if !errors.Is(err, enforcer.ErrLostOwnership) {
			t.Fatalf("A stopped with %v, want ErrLostOwnership", err)
		}
		a.cancel = nil
	case err := <-b.done:
		b.cancel()
		b.cancel = nil
		t.Fatalf("B stopped with %v while A kept serving", err)
	case <-time.After(45 * time.Second):
		t.Fatal("A kept serving after B claimed the partition")
	}
	time.Sleep(300 * time.Millisecond)
	stop.Store(true)
	wg.Wait()

	// Every answer is the stream's, every key has one event, grants ≤ 300.
	byKey := map[string]int{}
	claims, grants := 0, 0
	st := enforcer.New(enforcer.Config{Partition: n})
	if _, err := enforcer.Replay(context.Background(), b.js, n, st, func(seq uint64, ev events.Event, _ []byte) {
		if _, ok := ev.Data.(*events.PartitionClaimed); ok {
			claims++
		}
		if g, ok := ev.Data.(*events.ReservationGranted); ok {
			byKey[g.IdempotencyKey]++
			grants++
			if res, _ := events.ResultOf(ev, events.EventRef{Partition: n, Seq: seq}); answers[g.IdempotencyKey] != "" {
				if got := mustJSON(t, res); got != answers[g.IdempotencyKey] {
					t.Errorf("key %s: client got %s, stream has %s", g.IdempotencyKey, answers[g.IdempotencyKey], got)
				}
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	for k, c := range byKey {
		if c > 1 {
			t.Errorf("key %s granted %d times", k, c)
		}
	}
	if grants > 300 {
		t.Errorf("%d grants of 0.1 against a 30 budget", grants)
	}
	for k, ans := range answers {
		var r events.ReserveResult
		_ = json.Unmarshal([]byte(ans), &r)
		if r.Decision == events.DecisionGranted && byKey[k] != 1 {
			t.Errorf("key %s: client told granted, stream has %d grants", k, byKey[k])
		}
	}
	t.Logf("%d answers, %d grants, %d claims", len(answers), grants, claims)
	if claims != 2 {
		t.Errorf("%d claims, want 2 (A, then B)", claims)
	}
}

// An owner that appends nothing after another's claim landed must not go
// on answering from its stale state: a commit of a reservation the new
// owner granted would be NOT_FOUND there. Asked to hold (the new owner
// asks from its first try), it reads the stream's head, finds the claim
// and stops, though it never appends again.
func TestIdleStaleOwnerStops(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	root := "tenant:idle"
	n := streams.Partition(root, testPartitions)
	a := startLedgerOwn(t, srv, "A", n, false)
	mustOK(t, call(t, a.nc, root, "budget-set", `{"idempotency_key":"b","scope":"tenant:idle","name":"m","limits":{"USD":"30"}}`), nil)
	b := startLedgerOwn(t, srv, "B", n, false)
	select {
	case err := <-a.done:
		if !errors.Is(err, enforcer.ErrLostOwnership) {
			t.Fatalf("A stopped with %v, want ErrLostOwnership", err)
		}
		a.cancel = nil
	case <-time.After(10 * time.Second):
		t.Fatal("A, idle, kept serving after B's claim")
	}
	// A may stop before B has replayed up to its claim and subscribed.
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		_, err := b.nc.Request(streams.RequestSubject(root, "budget-list"), []byte(`{}`), time.Second)
		return err
	})
	for i := range 20 {
		var r events.ReserveResult
		mustOK(t, call(t, b.nc, root, "reserve", fmt.Sprintf(`{"idempotency_key":"r%d","scope":"tenant:idle/run:x","amounts":{"USD":"0.1"}}`, i)), &r)
		mustOK(t, call(t, b.nc, root, "commit", fmt.Sprintf(`{"idempotency_key":"c%d","reservation_id":%q,"actual":{"USD":"0.1"}}`, i, r.ReservationID)), nil)
	}
}

// A claim whose answer comes too late (its writes reach the server 30 ms
// late, its appends time out after 10 ms) lands all the same: the claim
// finds its own message on the stream instead of claiming twice, and the
// enforcer serves.
func TestClaimAnswerLost(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	n := 1
	var logs natstest.Buffer
	far := natstest.ConnectFar(t, srv, 30*time.Millisecond)
	b := startLedgerOn(t, srv, far, ownPartition("B", n, false), func(c *enforcer.ServiceConfig) {
		c.AppendTimeout = 10 * time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "our claim landed although its answer was lost") {
			return errors.New("the claim was not found by its id")
		}
		return nil
	})
	claims := 0
	st := enforcer.New(enforcer.Config{Partition: n})
	if _, err := enforcer.Replay(context.Background(), b.js, n, st, func(_ uint64, ev events.Event, _ []byte) {
		if _, ok := ev.Data.(*events.PartitionClaimed); ok {
			claims++
		}
	}); err != nil {
		t.Fatal(err)
	}
	if claims != 1 || st.ClaimedBy() != "B" {
		t.Errorf("%d claims, claimed by %q; want one, by B", claims, st.ClaimedBy())
	}
}

func startLedgerOwn(t testing.TB, srv *server.Server, owner string, n int, groupCommit bool) *ledger {
	t.Helper()
	return startLedger(t, srv, ownPartition(owner, n, groupCommit))
}

// ownPartition pins partition n to owner.
func ownPartition(owner string, n int, groupCommit bool) ledgerOpt {
	return func(c *enforcer.ServiceConfig) {
		c.GroupCommit = groupCommit
		c.BatchMin = 2 // with group commit, batches from a queue of two
		c.Owner = owner
		c.Own = []int{n}
	}
}
