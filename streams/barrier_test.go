package streams_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// gatedSync is a sync function the test drives: each call counts itself,
// reports its number on started as it begins, and ends with the next value
// the test sends on release. Nothing sleeps: the test knows a sync has
// begun because started says so, and it decides when the sync ends.
type gatedSync struct {
	calls   atomic.Int64
	ended   atomic.Int64 // syncs released by the test
	started chan int64   // the number of each sync, as it begins
	release chan error   // what each sync returns, in order
	quit    chan struct{}
}

// maxGatedSyncs bounds the syncs a test may start or release ahead of
// reading or running them.
const maxGatedSyncs = 16

// newGatedSync returns a gatedSync whose syncs still blocked end (with
// errTestOver) when the test does, so no goroutine outlives it.
func newGatedSync(t *testing.T) *gatedSync {
	g := &gatedSync{
		started: make(chan int64, maxGatedSyncs),
		release: make(chan error, maxGatedSyncs),
		quit:    make(chan struct{}),
	}
	t.Cleanup(func() { close(g.quit) })
	return g
}

var errTestOver = errors.New("the test is over")

func (g *gatedSync) sync(context.Context) error {
	n := g.calls.Add(1)
	select {
	case g.started <- n:
	case <-g.quit:
		return errTestOver
	}
	select {
	case err := <-g.release:
		g.ended.Add(1)
		return err
	case <-g.quit:
		return errTestOver
	}
}

// begun waits for sync number n to begin.
func (g *gatedSync) begun(t *testing.T, n int64) {
	t.Helper()
	select {
	case got := <-g.started:
		if got != n {
			t.Fatalf("sync #%d began, want #%d", got, n)
		}
	case <-time.After(testTimeout):
		t.Fatalf("sync #%d never began", n)
	}
}

// wantCalls checks how many syncs have begun.
func (g *gatedSync) wantCalls(t *testing.T, want int64) {
	t.Helper()
	if got := g.calls.Load(); got != want {
		t.Errorf("%d syncs, want %d", got, want)
	}
}

// waitTicket waits for tk's sync (bounded by testTimeout) and returns its
// error.
func waitTicket(t *testing.T, tk *streams.Ticket, what string) error {
	t.Helper()
	select {
	case <-tk.Done():
		return tk.Err()
	case <-time.After(testTimeout):
		t.Fatalf("%s: never done", what)
		return nil
	}
}

// notDone fails the test if tk is already done.
func notDone(t *testing.T, tk *streams.Ticket, what string) {
	t.Helper()
	select {
	case <-tk.Done():
		t.Fatalf("%s is done (err %v), want it still waiting", what, tk.Err())
	default:
	}
}

func TestBarrierIdleTicketStartsSync(t *testing.T) {
	g := newGatedSync(t)
	b := streams.NewBarrier(g.sync)

	for i := int64(1); i <= 3; i++ {
		tk := b.Ticket() // idle: nothing else will start a sync
		g.begun(t, i)
		notDone(t, tk, "the ticket of a running sync")
		g.release <- nil
		if err := waitTicket(t, tk, "ticket"); err != nil {
			t.Fatalf("sync #%d: %v", i, err)
		}
	}
	g.wantCalls(t, 3)
	if err := b.Err(); err != nil {
		t.Errorf("Err() = %v, want nil", err)
	}
}

// A ticket taken while a sync runs covers writes that sync may have missed:
// it is done only by the next sync, which begins once the running one ends.
func TestBarrierTicketDuringSyncWaitsForNext(t *testing.T) {
	g := newGatedSync(t)
	b := streams.NewBarrier(g.sync)

	first := b.Ticket()
	g.begun(t, 1)
	second := b.Ticket() // sync #1 is running
	g.release <- nil
	if err := waitTicket(t, first, "the first ticket"); err != nil {
		t.Fatal(err)
	}
	notDone(t, second, "a ticket taken during sync #1, when #1 has ended,")

	g.begun(t, 2) // back to back: nobody else asks for it
	notDone(t, second, "a ticket taken during sync #1, while #2 runs,")
	g.release <- nil
	if err := waitTicket(t, second, "the second ticket"); err != nil {
		t.Fatal(err)
	}
	g.wantCalls(t, 2)
}

// Every ticket taken while one sync runs is done by the single next sync:
// two syncs for N tickets, not N.
func TestBarrierCoalescesTicketsDuringSync(t *testing.T) {
	const n = 100
	g := newGatedSync(t)
	b := streams.NewBarrier(g.sync)

	first := b.Ticket()
	g.begun(t, 1)
	tickets := make([]*streams.Ticket, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { tickets[i] = b.Ticket() })
	}
	wg.Wait() // all taken while sync #1 runs
	g.release <- nil
	if err := waitTicket(t, first, "the first ticket"); err != nil {
		t.Fatal(err)
	}
	for i, tk := range tickets {
		notDone(t, tk, fmt.Sprintf("ticket %d, taken during sync #1, when #1 has ended,", i))
	}

	g.begun(t, 2)
	g.release <- nil
	for i, tk := range tickets {
		if err := waitTicket(t, tk, fmt.Sprintf("ticket %d", i)); err != nil {
			t.Fatalf("ticket %d: %v", i, err)
		}
	}
	g.wantCalls(t, 2)

	// Idle again: the next ticket's sync is #3, so none ran in between.
	third := b.Ticket()
	g.begun(t, 3)
	g.release <- nil
	if err := waitTicket(t, third, "the third ticket"); err != nil {
		t.Fatal(err)
	}
}

// After a failed fsync the kernel may have dropped dirty pages, so a later
// sync that succeeds proves nothing: NewBarrier fails every later ticket
// and never syncs again.
func TestBarrierFailureIsSticky(t *testing.T) {
	errDisk := errors.New("disk on fire")
	g := newGatedSync(t)
	b := streams.NewBarrier(g.sync)

	first := b.Ticket()
	g.begun(t, 1)
	during := b.Ticket() // waits for a sync #2 that must never run
	g.release <- errDisk
	for range maxGatedSyncs - 1 {
		g.release <- nil // from now on the sync function would succeed
	}

	if err := waitTicket(t, first, "the failed sync's ticket"); !errors.Is(err, streams.ErrSyncFailed) || !errors.Is(err, errDisk) {
		t.Errorf("the failed sync's ticket: %v, want ErrSyncFailed wrapping %v", err, errDisk)
	}
	if err := waitTicket(t, during, "the ticket taken during the failed sync"); !errors.Is(err, streams.ErrSyncFailed) {
		t.Errorf("the ticket taken during the failed sync: %v, want ErrSyncFailed", err)
	}
	if err := b.Err(); !errors.Is(err, streams.ErrSyncFailed) || !errors.Is(err, errDisk) {
		t.Errorf("Err() = %v, want ErrSyncFailed wrapping %v", err, errDisk)
	}
	for i := range 3 {
		if err := waitTicket(t, b.Ticket(), "a later ticket"); !errors.Is(err, streams.ErrSyncFailed) {
			t.Errorf("ticket %d after the failure: %v, want ErrSyncFailed", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if err := b.Sync(ctx); !errors.Is(err, streams.ErrSyncFailed) {
		t.Errorf("Sync after the failure: %v, want ErrSyncFailed", err)
	}
	g.wantCalls(t, 1)
}

func TestTicketWaitHonoursContext(t *testing.T) {
	g := newGatedSync(t)
	b := streams.NewBarrier(g.sync)

	tk := b.Ticket()
	g.begun(t, 1)

	// A waiter that is cancelled while it waits returns at once.
	ctx, cancel := context.WithCancel(t.Context())
	waited := make(chan error, 1)
	go func() { waited <- tk.Wait(ctx) }()
	cancel()
	select {
	case err := <-waited:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Wait(cancelled) = %v, want context.Canceled", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Wait(cancelled) never returned")
	}
	ctx, cancel = context.WithTimeout(t.Context(), time.Millisecond)
	defer cancel()
	go func() { waited <- b.Sync(ctx) }()
	select {
	case err := <-waited:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Sync(expired) = %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Sync(expired) never returned")
	}
	notDone(t, tk, "a ticket whose waiter gave up")

	// Giving up waiting cancels nothing: the sync ends and the ticket
	// with it.
	g.release <- nil
	ctx, cancel = context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if err := tk.Wait(ctx); err != nil {
		t.Errorf("Wait after the sync: %v", err)
	}
}

// barrierServer is a real server with one connection serving a barrier
// (ServeBarrier) and another asking it (DialBarrier).
type barrierServer struct {
	serving, asking *nats.Conn
}

func newBarrierServer(t *testing.T) barrierServer {
	s := natstest.RunServer(t)
	return barrierServer{serving: natstest.Connect(t, s), asking: natstest.Connect(t, s)}
}

// serve serves b and flushes, so the server knows of the subscription
// before the other connection asks.
func (bs barrierServer) serve(t *testing.T, b *streams.Barrier) *nats.Subscription {
	t.Helper()
	sub, err := streams.ServeBarrier(bs.serving, b)
	if err != nil {
		t.Fatalf("ServeBarrier: %v", err)
	}
	if err := bs.serving.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

// stop closes sub and flushes, so the server has forgotten it.
func (bs barrierServer) stop(t *testing.T, sub *nats.Subscription) {
	t.Helper()
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := bs.serving.Flush(); err != nil {
		t.Fatal(err)
	}
}

// dial is DialBarrier on the asking connection.
func (bs barrierServer) dial(t *testing.T) *streams.Barrier {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	rb, err := streams.DialBarrier(ctx, bs.asking)
	if err != nil {
		t.Fatalf("DialBarrier: %v", err)
	}
	if rb == nil {
		t.Fatal("DialBarrier = nil, want the served barrier")
	}
	return rb
}

func TestDialBarrierNobodyServes(t *testing.T) {
	bs := newBarrierServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	rb, err := streams.DialBarrier(ctx, bs.asking)
	if rb != nil || err != nil {
		t.Fatalf("DialBarrier with nobody serving = (%v, %v), want (nil, nil)", rb, err)
	}
}

// A remote Sync is answered after a sync that began after its request
// arrived: not by the sync running when it arrived.
func TestServeBarrierSyncsAfterRequest(t *testing.T) {
	bs := newBarrierServer(t)
	g := newGatedSync(t)
	b := streams.NewBarrier(g.sync)
	sub := bs.serve(t, b)

	// DialBarrier asks once, to learn someone serves: sync #1.
	dialed := make(chan *streams.Barrier, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		rb, _ := streams.DialBarrier(ctx, bs.asking)
		dialed <- rb
	}()
	g.begun(t, 1)
	g.release <- nil
	var rb *streams.Barrier
	select {
	case rb = <-dialed:
	case <-time.After(testTimeout):
		t.Fatal("DialBarrier never returned")
	}
	if rb == nil {
		t.Fatal("DialBarrier = nil, want the served barrier")
	}
	if n := g.ended.Load(); n != 1 {
		t.Fatalf("DialBarrier returned after %d syncs ended, want 1", n)
	}
	asked, err := sub.Delivered()
	if err != nil {
		t.Fatal(err)
	}

	// Sync #2 runs; a remote Sync asks meanwhile.
	local := b.Ticket()
	g.begun(t, 2)
	remote := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		remote <- rb.Sync(ctx)
	}()
	// The request has reached ServeBarrier's handler (counted before it
	// runs; should the handler take its ticket only after #2 ends, it
	// starts #3 itself, and the test holds all the same).
	natstest.CheckFor(t, testTimeout, time.Millisecond, func() error {
		n, err := sub.Delivered()
		if err != nil || n <= asked {
			return fmt.Errorf("%d requests delivered (%v), want %d", n, err, asked+1)
		}
		return nil
	})
	g.release <- nil
	if err := waitTicket(t, local, "the local ticket"); err != nil {
		t.Fatal(err)
	}
	g.begun(t, 3) // for the request
	g.release <- nil
	select {
	case err := <-remote:
		if err != nil {
			t.Fatalf("remote Sync: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("the remote Sync never returned")
	}
	// Only sync #3 began after the request arrived: an answer before it
	// ended came from sync #2, or from none.
	if n := g.ended.Load(); n != 3 {
		t.Errorf("the remote Sync returned after %d syncs ended, want 3", n)
	}
	g.wantCalls(t, 3)
}

// The serving side's failure reaches the remote Sync with its message. The
// remote barrier is not sticky: once something serves again, its Sync
// succeeds; while nothing serves, its Sync fails at once.
func TestDialBarrierIsNotSticky(t *testing.T) {
	bs := newBarrierServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	var goodSyncs atomic.Int64
	good := streams.NewBarrier(func(context.Context) error { goodSyncs.Add(1); return nil })
	sub := bs.serve(t, good)
	rb := bs.dial(t)
	before := goodSyncs.Load()
	if err := rb.Sync(ctx); err != nil {
		t.Fatalf("remote Sync: %v", err)
	}
	if got := goodSyncs.Load(); got != before+1 {
		t.Errorf("a remote Sync made %d syncs, want 1", got-before)
	}
	bs.stop(t, sub)

	// The serving side fails, and stays failed (NewBarrier is sticky).
	var badSyncs atomic.Int64
	bad := streams.NewBarrier(func(context.Context) error {
		badSyncs.Add(1)
		return errors.New("disk on fire")
	})
	sub = bs.serve(t, bad)
	for i := range 2 {
		err := rb.Sync(ctx)
		if err == nil || !strings.Contains(err.Error(), "disk on fire") {
			t.Errorf("remote Sync %d on a failed store: %v, want the serving side's error", i, err)
		}
		if !errors.Is(err, streams.ErrSyncFailed) {
			t.Errorf("remote Sync %d on a failed store: %v, want ErrSyncFailed", i, err)
		}
	}
	if n := badSyncs.Load(); n != 1 {
		t.Errorf("the failed serving side synced %d times, want 1", n)
	}
	if err := rb.Err(); err != nil {
		t.Errorf("the remote barrier's Err() = %v, want nil: it is not sticky", err)
	}
	bs.stop(t, sub)

	// Nobody serves: an error at once, not a wait for the request's
	// timeout.
	start := time.Now()
	if err := rb.Sync(ctx); err == nil {
		t.Error("remote Sync with nobody serving succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("remote Sync with nobody serving took %s", d)
	}

	sub = bs.serve(t, good)
	before = goodSyncs.Load()
	if err := rb.Sync(ctx); err != nil {
		t.Fatalf("remote Sync once served again: %v", err)
	}
	if got := goodSyncs.Load(); got != before+1 {
		t.Errorf("a remote Sync made %d syncs, want 1", got-before)
	}
	bs.stop(t, sub)
}
