package enforcer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"golang.org/x/sync/errgroup"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/streams"
)

// Shell defaults.
const (
	DefaultQueueDepth = 8192
	DefaultMaxBatch   = 256
	// DefaultBatchMin: on an R1 file stream an atomic batch costs as
	// much as ~15 fsynced single appends (the server stages it in a
	// temporary file store; JETSTREAM.md, BENCHMARKS.md), so a batch pays
	// only from about that queue depth; below it singles are pipelined.
	DefaultBatchMin      = 16
	DefaultAppendTimeout = 5 * time.Second
	// maxPipeline bounds the decided entries waiting for their acks.
	maxPipeline = 16384
)

// ServiceConfig configures the enforcer shell.
type ServiceConfig struct {
	// Partitions is P, the ledger's partition count.
	Partitions int
	// Own, if not nil, pins the partitions this process serves, without
	// leases (tests, and deployments that assign partitions by hand). nil
	// means: take partitions through leases in tally_leases, spread over
	// the live enforcers.
	Own []int
	// Owner names this process in partition.claimed events.
	Owner string
	// Core bounds each partition's state.
	Core Config
	// QueueDepth bounds the requests waiting for a decision per
	// partition; beyond it requests are answered UNAVAILABLE.
	QueueDepth int
	// GroupCommit sends the events of several decisions as one atomic
	// batch (one fsync with --sync always) when at least BatchMin are
	// waiting, up to MaxBatch.
	GroupCommit bool
	BatchMin    int
	MaxBatch    int
	// AppendTimeout is how long an append may wait for its ack before the
	// partition reloads from the stream.
	AppendTimeout time.Duration
	// SnapshotEvery is the number of events between snapshots; negative
	// turns snapshots off.
	SnapshotEvery int
	// ReplayConn, if not nil, is the connection partitions are replayed
	// through (takeover, claim, reload), instead of the service's own. An
	// in-process connection to an embedded server is an unbuffered pipe:
	// bulk reads over it keep the server's writer and the client's reader
	// waiting on each other, and a replay through it ran at 0.44–0.48 of
	// the raw ordered-consumer rate against 0.51 through TCP loopback
	// (BENCHMARKS.md). tally serve passes a loopback TCP connection to its
	// embedded server.
	ReplayConn *nats.Conn
	// Barrier, if not nil, makes the acknowledged events durable before
	// they are answered, stored in a snapshot or answered again: the
	// group fsync of --sync always on an embedded server that does not
	// fsync each write itself (streams.Barrier). nil: the server's sync
	// mode is all there is.
	Barrier *streams.Barrier
	Logger  *slog.Logger
	Metrics *Metrics
}

func (c ServiceConfig) withDefaults() ServiceConfig {
	if c.QueueDepth == 0 {
		c.QueueDepth = DefaultQueueDepth
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.BatchMin == 0 {
		c.BatchMin = DefaultBatchMin
	}
	if c.AppendTimeout == 0 {
		c.AppendTimeout = DefaultAppendTimeout
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = DefaultSnapshotEvery
	}
	if c.Owner == "" {
		c.Owner = "tally-" + ulid.Make().String()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate rejects nonsense.
func (c ServiceConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Partitions < 1:
		return fmt.Errorf("enforcer: %d partitions", c.Partitions)
	case c.QueueDepth < 1 || c.MaxBatch < 1 || c.MaxBatch > 1000 || c.BatchMin < 2:
		return fmt.Errorf("enforcer: queue depth, batch sizes out of range (max batch ≤ 1000, batch min ≥ 2)")
	case c.AppendTimeout < 10*time.Millisecond:
		return fmt.Errorf("enforcer: append timeout %s too short", c.AppendTimeout)
	}
	for _, n := range c.Own {
		if n < 0 || n >= c.Partitions {
			return fmt.Errorf("enforcer: partition %d out of range [0, %d)", n, c.Partitions)
		}
	}
	return c.Core.Validate()
}

// queueGroup is the queue group of every enforcer's partition subscriptions.
const queueGroup = "tally-enforcers"

// Log attribute keys.
const (
	logPartition = "partition"
	logSeq       = "seq"
	logErr       = "err"
	logEvents    = "events"
)

// Service runs the enforcer for the partitions it owns.
type Service struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	rjs jetstream.JetStream // replays read through it (ServiceConfig.ReplayConn)
	cfg ServiceConfig
	// snapTurn lets one partition at a time encode and store a snapshot.
	snapTurn chan struct{}
}

// NewService returns a service on an established connection. The ledger's
// streams must exist (streams.Ensure).
func NewService(nc *nats.Conn, cfg ServiceConfig) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	rjs := js
	if cfg.ReplayConn != nil {
		if rjs, err = jetstream.New(cfg.ReplayConn); err != nil {
			return nil, err
		}
	}
	return &Service{nc: nc, js: js, rjs: rjs, cfg: cfg.withDefaults(), snapTurn: make(chan struct{}, 1)}, nil
}

// Run serves partitions until ctx ends: the pinned ones (Own), or those
// the leases give this process.
func (s *Service) Run(ctx context.Context) error {
	if s.cfg.Own == nil {
		return s.manage(ctx)
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, n := range s.cfg.Own {
		p := s.newPartition(n)
		g.Go(func() error { return p.run(ctx) })
	}
	return g.Wait()
}

// request is one request waiting for a decision.
type request struct {
	msg      *nats.Msg
	cmd      Command
	received time.Time
}

// entry is a decided request waiting for its answer, in decision order.
type entry struct {
	msg      *nats.Msg
	op       events.Op
	received time.Time
	// at most one of (an expiry has none: nobody asked):
	answer []byte        // ready answer, sent in order (after the ack of its events)
	dup    uint64        // retry: answer with the result of the event at dup
	marker chan []*entry // reload marker: the acker hands back what it holds
	// id and seq are the first event's of a decision that appends (its
	// answer is ready too, or it has no request: an expiry).
	id  string
	seq uint64
	// waitSeq is the last sequence staged up to this entry; its unit must
	// be acked before the entry is answered.
	waitSeq uint64
	unit    *appendUnit
}

// appendUnit is one publish to the stream: a single message or an atomic
// batch, fenced on its first message.
type appendUnit struct {
	done    chan struct{}
	err     error
	lastSeq uint64
	started time.Time
	// durable, with a Barrier, is the sync that makes the unit durable:
	// taken when the ack arrives, it covers the unit.
	durable *streams.Ticket
}

type partition struct {
	svc   *Service
	n     int
	log   *slog.Logger
	state *State
	hash  string // hash of the last message: the next event's prev

	in   chan *request
	pipe chan *entry

	ackPrefix string
	mu        sync.Mutex // guards units
	units     map[string]*appendUnit
	token     atomic.Uint64
	broken    atomic.Bool
	// stopped is set when the partition stops serving: a request still
	// delivered to it is refused, not queued (stopServing).
	stopped  atomic.Bool
	brokenCh chan struct{}

	recent recentEvents

	// prevID is the id of the last event published; prevOurs says it was
	// published by this incarnation since the last load (decision loop only).
	prevID   string
	prevOurs bool
	lastUnit *appendUnit // the last append published (decision loop only)

	// yieldUntil (Unix nanoseconds) is set when another enforcer asks to
	// claim this partition: until then nothing is decided (yield).
	// claimCh wakes an idle decision loop to yield.
	yieldUntil atomic.Int64
	claimCh    chan struct{}

	acked   atomic.Uint64 // highest sequence acknowledged by JetStream
	snapSeq uint64        // sequence of the last snapshot taken
	snaps   sync.WaitGroup
	// snapBusy is set while a snapshot is encoded and stored.
	snapBusy atomic.Bool
	// snapCopy and snapBuf are the last snapshot's state copy and encoding,
	// handed back for the next one to reuse; only the holder of snapBusy
	// touches them.
	snapCopy *State
	snapBuf  []byte
}

func (s *Service) newPartition(n int) *partition {
	return &partition{svc: s, n: n, log: s.cfg.Logger.With(logPartition, n),
		in: make(chan *request, s.cfg.QueueDepth), pipe: make(chan *entry, maxPipeline),
		ackPrefix: s.nc.NewInbox() + ".ack", units: map[string]*appendUnit{}, brokenCh: make(chan struct{}, 1),
		claimCh: make(chan struct{}, 1),
		recent:  newRecentEvents(4096)}
}

func (p *partition) run(ctx context.Context) error {
	if err := p.load(ctx); err != nil {
		return fmt.Errorf("partition %d: %w", p.n, err)
	}
	acks, err := p.svc.nc.Subscribe(p.ackPrefix+".*", p.onAck)
	if err != nil {
		return err
	}
	defer acks.Unsubscribe()
	if err := p.claim(ctx); err != nil {
		return fmt.Errorf("partition %d: claim: %w", p.n, err)
	}
	// What was loaded may have been appended but not yet made durable
	// (an earlier owner's last events, before a crash of its process):
	// it is answered again to retries, so it goes to disk first.
	if err := p.sync(ctx); err != nil {
		return fmt.Errorf("partition %d: %w", p.n, err)
	}
	// A queue group: while ownership moves (or in a split brain) each
	// request reaches one enforcer only, never two deciding it twice.
	sub, err := p.svc.nc.QueueSubscribe(streams.PartitionWildcard(p.n), queueGroup, p.onRequest)
	if err != nil {
		return err
	}
	claims, err := p.svc.nc.Subscribe(streams.ClaimSubject(p.n), p.onClaim)
	if err != nil {
		return err
	}
	defer claims.Unsubscribe()
	p.svc.cfg.Metrics.partitionOwned(p.n, true)
	defer p.svc.cfg.Metrics.partitionOwned(p.n, false)
	p.log.Info("serving", logSeq, p.state.LastSeq(), "open", p.state.OpenReservations())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.acker(gctx) })
	g.Go(func() error {
		err := p.decideLoop(gctx, sub)
		close(p.pipe)
		return err
	})
	err = g.Wait()
	// Whatever ended the loop (a lost ownership, an error), the undecided
	// requests are refused at once instead of letting their clients wait
	// for a timeout.
	p.stopServing(sub)
	for len(p.in) > 0 { // the decision loop, the only receiver, has ended
		p.refuse([]*request{<-p.in})
	}
	p.snaps.Wait()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// load rebuilds the state from the newest valid snapshot and the tail.
func (p *partition) load(ctx context.Context) error {
	st, hash, err := Recover(ctx, p.svc.rjs, p.n, p.svc.cfg.Core, func(err error) {
		p.log.Warn("snapshot not used; replaying the whole stream", logErr, err)
	})
	if err != nil {
		return err
	}
	st.SetReuseViews(true) // the decision loop renders answers before deciding again
	p.state, p.hash = st, hash
	p.prevOurs, p.lastUnit = false, nil
	p.snapSeq = st.LastSeq()
	p.acked.Store(st.LastSeq())
	p.svc.cfg.Metrics.setOpen(p.n, st.OpenReservations())
	return nil
}

// coreConfig is the service's core configuration for this partition.
func (p *partition) coreConfig() Config {
	c := p.svc.cfg.Core
	c.Partition = p.n
	return c
}

// claim appends partition.claimed: the first append of a new owner, which
// also proves the fence is ours. The first try goes on top of the loaded
// state. If the stream moved since the load (a previous owner is still
// appending), the fence error names the real head: the claim then watches
// the stream from there and, each time the newest message arrives, tries
// again at once on top of it — chained to that message's hash — so it takes
// the first gap between the other writer's appends instead of chasing them
// a round trip behind. Once a claim lands, the tail up to and including it
// is replayed. The claim that lands makes every other writer's next append
// fail.
func (p *partition) claim(ctx context.Context) error {
	ids := map[string]bool{}
	try := func(head uint64, prev string, at time.Time) error {
		ev := events.Event{V: events.Version, Type: events.TypePartitionClaimed, Partition: p.n, At: at,
			Data: &events.PartitionClaimed{Owner: p.svc.cfg.Owner, Epoch: head + 1}}
		p.hash = prev
		msg, _ := p.seal(&ev)
		ids[ev.ID] = true
		msg.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(head, 10))
		tctx, cancel := context.WithTimeout(ctx, p.svc.cfg.AppendTimeout)
		defer cancel()
		_, err := p.svc.js.PublishMsg(tctx, msg)
		return err
	}
	// An owner that lost its lease without noticing, or one pinned to the
	// same partition, may still be serving: ask it to hold its decisions
	// (onClaim), again and again while claiming. Its appends would keep
	// this claim from finding a gap, and once the claim lands its answers
	// would come from a stale state until its next append failed. Safety
	// does not depend on it obeying: the fence lets one writer append.
	ictx, stopAsking := context.WithCancel(ctx)
	defer stopAsking()
	go func() {
		t := time.NewTicker(claimPause / 4)
		defer t.Stop()
		for {
			if err := p.svc.nc.Publish(streams.ClaimSubject(p.n), []byte(p.svc.cfg.Owner)); err != nil {
				p.log.Debug("claim intent not sent", logErr, err)
			}
			select {
			case <-ictx.Done():
				return
			case <-t.C:
			}
		}
	}()
	loadedHead, loadedHash := p.state.LastSeq(), p.hash
	tryErr := try(loadedHead, loadedHash, p.now()) // the last try's error
	if tryErr == nil {
		return p.claimed(ctx)
	}
	head, ok := wrongLastSeq(tryErr)
	if !ok {
		if !lostAck(tryErr) {
			return tryErr
		}
		// No answer in time (a server with a deep queue of the other
		// writer's appends): watch from our head; if our claim landed
		// after all, the consumer shows it.
		head = max(p.state.LastSeq(), 1)
	}
	ctx, cancel := context.WithTimeout(ctx, claimTimeout)
	defer cancel()
	cons, err := p.svc.rjs.OrderedConsumer(ctx, streams.StreamName(p.n), jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: head})
	if err != nil {
		return err
	}
	// The consumer keeps only the newest message: older ones are not the
	// head any more.
	var (
		mu     sync.Mutex
		newest jetstream.Msg
		fresh  = make(chan struct{}, 1)
	)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		newest = m
		mu.Unlock()
		select {
		case fresh <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return err
	}
	defer cc.Stop()
	tries := 1
	// After a try whose answer was lost, nothing new may arrive (the other
	// writer is paused and ours did not land): try again on the newest
	// message after a while.
	var again <-chan time.Time
	if lostAck(tryErr) {
		again = time.After(claimPause)
	}
	for {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return ctx.Err()
			}
			return fmt.Errorf("the stream kept moving during %d claims in %v: %w", tries, claimTimeout, tryErr)
		case <-fresh:
		case <-again:
		}
		again = nil
		mu.Lock()
		m := newest
		mu.Unlock()
		// With nothing delivered (only after a lost answer), the stream
		// holds nothing after the loaded state: claim there again.
		head, prev, at := loadedHead, loadedHash, p.now()
		if m != nil {
			meta, merr := m.Metadata()
			if merr != nil {
				return merr
			}
			if ids[m.Headers().Get(jetstream.MsgIDHeader)] {
				p.log.Info("our claim landed although its answer was lost", logSeq, meta.Sequence.Stream, "tries", tries)
				return p.claimed(ctx)
			}
			if meta.NumPending > 0 {
				continue // a newer message is on its way
			}
			last, derr := events.Decode(m.Data())
			if derr != nil {
				return fmt.Errorf("message %d: %w", meta.Sequence.Stream, derr)
			}
			head, prev, at = meta.Sequence.Stream, events.Hash(m.Data()), maxTime(time.Now().UTC().Round(0), last.At)
		}
		tries++
		if tryErr = try(head, prev, at); tryErr == nil {
			p.log.Info("claimed between another writer's appends", "tries", tries)
			return p.claimed(ctx)
		}
		switch {
		case lostAck(tryErr):
			// Landed or not: the consumer shows it, or a retry.
			again = time.After(claimPause)
		case !isWrongSequence(tryErr):
			return tryErr
		}
		// A lost race: the next message is on its way.
	}
}

const (
	// claimTimeout bounds how long a new owner tries to get its claim in
	// between another writer's appends.
	claimTimeout = 30 * time.Second
	// claimPause is how long an owner holds its decisions back when
	// another enforcer asks to claim its partition (each ask renews it).
	claimPause = 200 * time.Millisecond
	// claimPoll is how often a holding owner reads the stream's head.
	claimPoll = 20 * time.Millisecond
)

// onClaim runs when another enforcer wants this partition (a split brain,
// or a takeover from an owner that lost its lease without noticing): the
// decision loop holds (yield) until the other stops asking, and stops
// serving if the other's claim landed.
func (p *partition) onClaim(msg *nats.Msg) {
	if string(msg.Data) == p.svc.cfg.Owner {
		return
	}
	now := time.Now()
	if prev := p.yieldUntil.Swap(now.Add(claimPause).UnixNano()); prev < now.UnixNano() {
		p.log.Warn("another enforcer is claiming this partition; holding decisions", "by", string(msg.Data))
	}
	select {
	case p.claimCh <- struct{}{}:
	default:
	}
}

// yield runs in the decision loop before a batch is decided. While another
// enforcer is claiming the partition (onClaim) nothing is decided: this
// owner waits until everything it sent is acknowledged, then watches the
// stream's head until the other stops asking. A head that moved is the
// other's claim, and what this owner would decide next it would decide on
// a stale state (a commit of a reservation the new owner granted would be
// NOT_FOUND): yield reports that the partition must be reloaded, and the
// reload finds the ownership lost. If the claimer gives up, deciding goes
// on — after a reload when the head could not be read.
func (p *partition) yield(ctx context.Context) (reload bool) {
	if until := p.yieldUntil.Load(); until == 0 || time.Now().UnixNano() >= until {
		return false
	}
	if p.lastUnit != nil {
		_ = p.wait(p.lastUnit)
	}
	tick := time.NewTicker(claimPoll)
	defer tick.Stop()
	for {
		head, err := p.streamHead(ctx)
		if err == nil && head != p.state.LastSeq() {
			return true
		}
		if time.Now().UnixNano() >= p.yieldUntil.Load() {
			return err != nil
		}
		select {
		case <-ctx.Done():
			// Stopping: the batch in hand is decided only on a current state.
			return !p.stillCurrent()
		case <-tick.C:
		}
	}
}

// stillCurrent reports, once everything sent is acknowledged, whether the
// stream still ends where the state does: no other writer appended. It
// reads the stream on its own deadline, so it works after ctx ended.
func (p *partition) stillCurrent() bool {
	if p.lastUnit != nil {
		_ = p.wait(p.lastUnit)
	}
	head, err := p.streamHead(context.Background())
	return err == nil && head == p.state.LastSeq()
}

// streamHead reads the last sequence of the partition's stream.
func (p *partition) streamHead(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, claimPoll*10)
	defer cancel()
	stream, err := p.svc.js.Stream(ctx, streams.StreamName(p.n))
	if err != nil {
		return 0, err
	}
	return stream.CachedInfo().State.LastSeq, nil
}

// claimed replays the tail up to and including the claim that just landed
// and checks that the partition is ours.
func (p *partition) claimed(ctx context.Context) error {
	hash, err := Replay(ctx, p.svc.rjs, p.n, p.state, nil)
	if err != nil {
		return err
	}
	if p.state.ClaimedBy() != p.svc.cfg.Owner {
		return fmt.Errorf("%w while claiming", ErrLostOwnership)
	}
	p.hash = hash
	p.acked.Store(p.state.LastSeq())
	return nil
}

// lostAck reports a publish whose answer did not come in time: it may or
// may not have landed.
func lostAck(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse)
}

// wrongLastSeq reports the stream's real head from a fence error.
func wrongLastSeq(err error) (uint64, bool) {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != errCodeWrongLastSeq {
		return 0, false
	}
	n, perr := strconv.ParseUint(strings.TrimPrefix(apiErr.Description, "wrong last sequence: "), 10, 64)
	return n, perr == nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (p *partition) now() time.Time {
	now := time.Now().UTC().Round(0)
	if now.Before(p.state.LastAt()) {
		return p.state.LastAt()
	}
	return now
}

// seal fills an event's envelope and returns its message, and the
// encoding of its instance views within the message's data (nil if it has
// none); the partition's chain hash is not advanced (the caller does once
// the event is applied).
func (p *partition) seal(ev *events.Event) (msg *nats.Msg, views []byte) {
	ev.ID = ulid.Make().String()
	ev.Partition = p.n
	ev.Prev = p.hash
	raw, views, err := events.EncodeViews(ev)
	if err != nil {
		panic(fmt.Sprintf("enforcer: encode %s: %v", ev.Type, err))
	}
	msg = nats.NewMsg(streams.EventSubject(p.n, ev.Root, string(ev.Type)))
	msg.Data = raw
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	return msg, views
}

// stopServing stops taking requests. The server stops routing them here,
// and those it had routed already are refused (UNAVAILABLE: the client
// retries, and reaches the partition's new owner), not dropped: a request
// in the queue group can reach this enforcer until the server has
// processed the unsubscription, and its client would wait for a timeout
// (TestIdleStaleOwnerStops saw one in CI). It returns once every request
// delivered has been refused or queued, or after drainWait.
func (p *partition) stopServing(sub *nats.Subscription) {
	p.stopped.Store(true)
	_ = sub.Drain() // an error: already draining, or closed
	for deadline := time.Now().Add(drainWait); sub.IsValid() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

// drainWait bounds how long stopServing waits for the server.
const drainWait = 2 * time.Second

// onRequest runs on the subscription's goroutine: it validates and queues.
func (p *partition) onRequest(msg *nats.Msg) {
	received := time.Now()
	if msg.Reply == "" {
		return // nobody to answer; nothing is decided for a fire-and-forget publish
	}
	n, root, opName, err := streams.ParsePartitionSubject(msg.Subject)
	op := events.Op(opName)
	if err != nil {
		p.reply(msg, op, received, errAnswer(events.Errorf(events.CodeInvalidRequest, "subject %q: %v", msg.Subject, err)))
		return
	}
	if want := streams.Partition(root, p.svc.cfg.Partitions); want != n {
		p.reply(msg, op, received, errAnswer(events.Errorf(events.CodeInvalidRequest,
			"subject: root %q belongs to partition %d, not %d", root, want, n)))
		return
	}
	if !op.Valid() {
		p.reply(msg, op, received, errAnswer(events.Errorf(events.CodeInvalidRequest,
			"unknown operation %q (one of reserve commit release extend charge decide balance reservation-get budget-set budget-get budget-list budget-delete budget-adjust)", opName)))
		return
	}
	req, err := events.ParseRequest(op, msg.Data)
	if err != nil {
		if errors.Is(err, events.ErrTooLarge) {
			p.reply(msg, op, received, errAnswer(events.Errorf(events.CodeTooLarge, "request of %d bytes, the limit is %d", len(msg.Data), events.MaxRequestBytes)))
			return
		}
		p.reply(msg, op, received, errAnswer(events.Invalid(err)))
		return
	}
	// Queued even while the partition reloads: the decision loop decides
	// it once the reload is done.
	cmd := Command{Op: op, Root: root, Request: req}
	if op.Mutating() {
		// Here, not in the partition's single decision loop: this
		// goroutine works beside it.
		cmd.Hash = events.RequestHash(op, req)
	}
	r := &request{msg: msg, cmd: cmd, received: received}
	if p.stopped.Load() {
		p.refuse([]*request{r})
		return
	}
	select {
	case p.in <- r:
	default:
		p.reply(msg, op, received, errAnswer(events.Errorf(events.CodeUnavailable,
			"partition %d has %d requests waiting, its limit; retry", p.n, p.svc.cfg.QueueDepth)))
	}
}

func (p *partition) reply(msg *nats.Msg, op events.Op, received time.Time, answer []byte) {
	if msg == nil || msg.Reply == "" {
		return
	}
	// Counted before it is sent: a client that has its answer never reads
	// a counter without it.
	p.svc.cfg.Metrics.observe(op, answer, received)
	if err := msg.Respond(answer); err != nil {
		p.log.Debug("answer not sent", logErr, err)
	}
}

func errAnswer(e *events.Error) []byte {
	b, err := json.Marshal(events.Answer{Error: e})
	if err != nil {
		panic(err)
	}
	return b
}
