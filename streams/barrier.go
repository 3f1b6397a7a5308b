package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// A Barrier makes acknowledged writes durable in groups: the group fsync
// of `--sync always` on the embedded server (DESIGN §6; BENCHMARKS.md,
// "Tenth series").
//
// JetStream acknowledges an R1 write once its bytes are in the store's
// files, i.e. in the operating system (JETSTREAM.md, and
// TestAckedAppendIsInTheFiles). With the server's per-message fsync off,
// one sync of the store's file system made after an ack makes that write
// durable, and with it every other write acknowledged before the sync
// began: one fsync for all the events acknowledged meanwhile, across
// partitions, instead of one each. A writer that needs a write on disk
// before it acts (an enforcer before it answers, a projector before its
// checkpoint) takes a Ticket once the write is acknowledged and waits for
// it.
//
// Syncs run one at a time, back to back while tickets wait, on one
// goroutine that ends when no ticket waits. A failed sync
// fails its tickets and every later one: after a failed fsync the kernel
// may have dropped the dirty pages, and a later fsync that succeeds says
// nothing about them.
type Barrier struct {
	sync   func(context.Context) error
	sticky bool // a failed sync fails every later ticket

	mu      sync.Mutex
	running bool
	next    *Ticket // the tickets of the sync that starts next
	failed  error   // sticky
}

// A Ticket is done once a sync that began after it was taken has ended.
type Ticket struct {
	done chan struct{}
	err  error
}

// NewBarrier returns a barrier that makes writes durable with sync, an
// fsync of the store: its first failure fails every later ticket.
func NewBarrier(sync func(context.Context) error) *Barrier {
	return &Barrier{sync: sync, sticky: true}
}

// Ticket returns the ticket of the next sync to begin: it covers every
// write acknowledged before the call.
func (b *Barrier) Ticket() *Ticket {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failed != nil {
		t := &Ticket{done: make(chan struct{}), err: b.failed}
		close(t.done)
		return t
	}
	if b.next == nil {
		b.next = &Ticket{done: make(chan struct{})}
	}
	t := b.next
	if !b.running {
		b.running = true
		go b.loop()
	}
	return t
}

// Sync waits until every write acknowledged before the call is durable.
func (b *Barrier) Sync(ctx context.Context) error {
	return b.Ticket().Wait(ctx)
}

// Err is the failure that stopped the barrier, or nil.
func (b *Barrier) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failed
}

func (b *Barrier) loop() {
	for {
		b.mu.Lock()
		t := b.next
		b.next = nil
		if t == nil || b.failed != nil {
			b.running = false
			if t != nil {
				t.err = b.failed
				close(t.done)
			}
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		// A sync is not cancelled: its tickets may belong to writers
		// with different lifetimes. The sync function bounds itself.
		err := b.sync(context.Background())
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrSyncFailed, err)
			if b.sticky {
				b.mu.Lock()
				b.failed = err
				b.mu.Unlock()
			}
		}
		t.err = err
		close(t.done)
	}
}

// ErrSyncFailed wraps a failed sync: what was acknowledged since the last
// good one may not be on disk.
var ErrSyncFailed = errors.New("sync of the ledger's store failed")

// Done is closed when the ticket's sync has ended.
func (t *Ticket) Done() <-chan struct{} { return t.done }

// Err is the ticket's sync's error, once Done.
func (t *Ticket) Err() error { return t.err }

// Wait waits for the ticket's sync, or for ctx.
func (t *Ticket) Wait(ctx context.Context) error {
	select {
	case <-t.done:
		return t.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SyncSubject is where `tally serve` answers barrier requests when it
// syncs its embedded server's store itself (group fsync): a process
// writing to that server over NATS (an enforcer or a projector of its
// own) sends an empty request once its writes are acknowledged, and the
// answer comes after a sync that began after the request arrived. No
// responder means the servers sync on their own terms (per message, or
// on their interval) and there is nothing to wait for.
const SyncSubject = Prefix + ".sync"

// syncReply is the answer on SyncSubject.
type syncReply struct {
	Error string `json:"error,omitempty"`
}

// maxBarrierWaiters bounds the barrier requests ServeBarrier holds at
// once; beyond it they are refused (the requester's sync fails, and it
// tries again with its next one). Each requesting process has one in
// flight (its Barrier runs one sync at a time).
const maxBarrierWaiters = 1024

// ServeBarrier answers requests on SyncSubject through b until the
// subscription is closed.
func ServeBarrier(nc *nats.Conn, b *Barrier) (*nats.Subscription, error) {
	waiting := make(chan struct{}, maxBarrierWaiters)
	respond := func(m *nats.Msg, err error) {
		var r syncReply
		if err != nil {
			// The requester wraps it in ErrSyncFailed again.
			r.Error = strings.TrimPrefix(err.Error(), ErrSyncFailed.Error()+": ")
		}
		data, _ := json.Marshal(r)
		_ = m.Respond(data) // a requester that gave up has failed its sync already
	}
	sub, err := nc.Subscribe(SyncSubject, func(m *nats.Msg) {
		select {
		case waiting <- struct{}{}:
		default:
			respond(m, fmt.Errorf("%d barrier requests are waiting already", maxBarrierWaiters))
			return
		}
		t := b.Ticket()
		go func() {
			defer func() { <-waiting }()
			<-t.Done()
			respond(m, t.Err())
		}()
	})
	if err != nil {
		return nil, err
	}
	// Subscribed at the server before anyone is told to dial it.
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return sub, nil
}

// DialBarrier returns the barrier of the process that syncs the server nc
// is connected to (ServeBarrier), or nil when no process does: then the
// servers' own sync mode is all there is. A serving side whose fsync has
// failed already answers with that failure, which DialBarrier returns: a
// process must not start writing to a store whose durability is lost.
// A failed remote sync fails its tickets only: the next one that succeeds
// began later and covers every write acknowledged before it (the serving
// side's failures are sticky).
func DialBarrier(ctx context.Context, nc *nats.Conn) (*Barrier, error) {
	b := &Barrier{sync: func(ctx context.Context) error { return remoteSync(ctx, nc) }}
	err := remoteSync(ctx, nc)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

// remoteSyncTimeout bounds one remote sync.
const remoteSyncTimeout = 10 * time.Second

func remoteSync(ctx context.Context, nc *nats.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, remoteSyncTimeout)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, SyncSubject, nil)
	if err != nil {
		return fmt.Errorf("barrier request on %s: %w", SyncSubject, err)
	}
	var r syncReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return fmt.Errorf("barrier answer %q: %w", m.Data, err)
	}
	if r.Error != "" {
		return errors.New(r.Error)
	}
	return nil
}
