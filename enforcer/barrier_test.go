package enforcer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// gatedSync is a sync for streams.NewBarrier that the test can hold back
// or make fail: the stand-in for a slow or failing disk. (The server and
// the enforcer are real; only the fsync is the test's.)
type gatedSync struct {
	mu    sync.Mutex
	cond  *sync.Cond
	held  bool
	fail  error
	calls int
}

func newGatedSync() *gatedSync {
	g := &gatedSync{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *gatedSync) sync(context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls++
	for g.held {
		g.cond.Wait()
	}
	return g.fail
}

func (g *gatedSync) set(held bool, fail error) {
	g.mu.Lock()
	g.held, g.fail = held, fail
	g.cond.Broadcast()
	g.mu.Unlock()
}

func (g *gatedSync) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls
}

// asyncCall sends a request and delivers its raw answer (or the error).
func asyncCall(nc *nats.Conn, root, op, body string) <-chan string {
	ch := make(chan string, 1)
	go func() {
		m, err := nc.Request(streams.RequestSubject(root, op), []byte(body), 10*time.Second)
		if err != nil {
			ch <- "error: " + err.Error()
			return
		}
		ch <- string(m.Data)
	}()
	return ch
}

// With group fsync, an event is appended and acknowledged but its answer
// waits for a sync that began after the ack: while the sync is held back,
// neither the decision, nor a retry of it, nor a later read is answered;
// the event is in the stream all along. Released, all are answered, the
// retry with the original answer.
func TestAnswersWaitForTheSync(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions)) // no per-message fsync
	disk := newGatedSync()
	l := startLedger(t, srv, func(c *enforcer.ServiceConfig) {
		c.Own, c.Barrier = []int{0, 1, 2, 3}, streams.NewBarrier(disk.sync)
	})
	root := rootOf(1)
	mustOK(t, call(t, l.nc, root, "budget-set", fmt.Sprintf(`{"idempotency_key":"b","scope":%q,"name":"cap","limits":{"USD":"10"}}`, root)), nil)
	before := l.streamMsgs()

	disk.set(true, nil)
	reserve := fmt.Sprintf(`{"idempotency_key":"r1","scope":%q,"amounts":{"USD":"4"}}`, root)
	first := asyncCall(l.nc, root, "reserve", reserve)
	natstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := l.streamMsgs(); got != before+1 {
			return fmt.Errorf("stream has %d messages, want %d: the grant not yet appended", got, before+1)
		}
		return nil
	})
	retry := asyncCall(l.nc, root, "reserve", reserve)
	balance := asyncCall(l.nc, root, "balance", fmt.Sprintf(`{"scope":%q}`, root))
	select {
	case a := <-first:
		t.Fatalf("answered before the sync: %s", a)
	case a := <-retry:
		t.Fatalf("retry answered before the sync: %s", a)
	case a := <-balance:
		t.Fatalf("balance answered before the sync: %s", a)
	case <-time.After(300 * time.Millisecond):
	}
	if got := l.streamMsgs(); got != before+1 {
		t.Fatalf("the retry appended: %d messages, want %d", got, before+1)
	}
	disk.set(false, nil)
	a, r, b := <-first, <-retry, <-balance
	if a != r {
		t.Fatalf("retry answered %s, the original %s", r, a)
	}
	var ans struct {
		Result struct {
			Decision string `json:"decision"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(a), &ans); err != nil || ans.Result.Decision != "granted" {
		t.Fatalf("reserve: %s (%v)", a, err)
	}
	var bal struct {
		Result struct {
			Instances []struct {
				Units map[string]struct {
					Reserved string `json:"reserved"`
				} `json:"units"`
			} `json:"instances"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(b), &bal); err != nil || len(bal.Result.Instances) != 1 ||
		bal.Result.Instances[0].Units["USD"].Reserved != "4" {
		t.Fatalf("balance after the grant: %s (%v)", b, err)
	}
	if disk.count() < 2 {
		t.Fatalf("%d syncs, want at least the start's and the grant's", disk.count())
	}
}

// A failed sync: nothing acknowledged since the last good one is known to
// be on disk. The request waiting for it is answered UNAVAILABLE (a retry
// with its key is safe), no partition serves again, and the service stops
// with the failure, through leases as under tally serve.
func TestFailedSyncStopsTheService(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	disk := newGatedSync()
	barrier := streams.NewBarrier(disk.sync)
	l := startLedger(t, srv, func(c *enforcer.ServiceConfig) { c.Barrier = barrier })
	root := rootOf(2)
	mustOK(t, call(t, l.nc, root, "budget-set", fmt.Sprintf(`{"idempotency_key":"b","scope":%q,"name":"cap","limits":{"USD":"10"}}`, root)), nil)

	disk.set(false, errors.New("EIO"))
	a := call(t, l.nc, root, "reserve", fmt.Sprintf(`{"idempotency_key":"r1","scope":%q,"amounts":{"USD":"4"}}`, root))
	if a.Error == nil || a.Error.Code != "UNAVAILABLE" {
		t.Fatalf("reserve after a failed sync: %+v %s", a.Error, a.Result)
	}
	disk.set(false, nil) // the disk "recovers": the barrier stays failed
	select {
	case err := <-l.done:
		l.cancel()
		l.cancel = nil
		if !errors.Is(err, streams.ErrSyncFailed) {
			t.Fatalf("service stopped with %v, want the sync failure", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the service kept running after a failed sync")
	}
	// Nobody serves the partitions any more.
	if _, err := l.nc.Request(streams.RequestSubject(root, "balance"), []byte(`{}`), 300*time.Millisecond); !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("a partition still answers after the failure: %v", err)
	}
}

// A partition serves what it loaded (the last owner's events, answered
// again to retries) only once that is on disk: the last owner may have
// crashed between an append and its sync.
func TestLoadedEventsAreSyncedBeforeServing(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	l := startLedger(t, srv, func(c *enforcer.ServiceConfig) { c.Own = []int{0, 1, 2, 3} })
	root := rootOf(3)
	mustOK(t, call(t, l.nc, root, "budget-set", fmt.Sprintf(`{"idempotency_key":"b","scope":%q,"name":"cap","limits":{"USD":"10"}}`, root)), nil)
	reserve := fmt.Sprintf(`{"idempotency_key":"r1","scope":%q,"amounts":{"USD":"4"}}`, root)
	orig := call(t, l.nc, root, "reserve", reserve)
	mustOK(t, orig, nil)
	l.stop()

	disk := newGatedSync()
	disk.set(true, nil)
	const hold = 1500 * time.Millisecond
	released := make(chan struct{})
	time.AfterFunc(hold, func() { close(released); disk.set(false, nil) })
	start := time.Now()
	l2 := startLedger(t, srv, func(c *enforcer.ServiceConfig) {
		c.Own, c.Barrier = []int{0, 1, 2, 3}, streams.NewBarrier(disk.sync)
	})
	select {
	case <-released:
	default:
		t.Fatalf("served %v after start, before the loaded events were synced", time.Since(start))
	}
	if again := call(t, l2.nc, root, "reserve", reserve); string(again.Result) != string(orig.Result) {
		t.Fatalf("retry after the restart: %s, want %s", again.Result, orig.Result)
	}
}
