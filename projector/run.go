package projector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/streams"
)

// Shell defaults and limits.
const (
	// DefaultFlushInterval: the views trail the ledger by up to about a
	// second. Each flush rewrites every entry its events changed, so a
	// longer interval writes the busy ones (a tenant's, a workflow's) fewer
	// times: with the projector in its own process beside tally serve, the
	// ledger kept 4 958–5 602 decisions/s with 250 ms, 6 819 with 1 s and
	// 7 189 with 2 s (BENCHMARKS.md). The enforcer's balance answers are
	// never stale; only the views are.
	DefaultFlushInterval = time.Second
	DefaultMaxPending    = 4096
	DefaultWriters       = 16
	// maxHoursListed bounds the per-hour listings of roll-ups on load;
	// beyond it the partition's roll-ups are scanned once instead.
	maxHoursListed = 48
	retryFirst     = 200 * time.Millisecond
	retryMax       = 10 * time.Second
)

// Config configures the projector. Zero fields take the defaults above.
type Config struct {
	// Partitions is P, the ledger's partition count (streams.Open).
	Partitions int
	// Own lists the partitions to project; nil means all.
	Own []int
	// FlushInterval is the longest time applied events wait before their
	// changes are written to KV.
	FlushInterval time.Duration
	// MaxPending flushes after this many applied events.
	MaxPending int
	// Writers bounds the KV writes of one flush in flight.
	Writers int
	// Retention is how long the model label of an expired reservation is
	// kept for a late commit (DefaultRetention).
	Retention time.Duration
	// Rebuild wipes every view of the owned partitions at start and folds
	// them again from sequence 1.
	Rebuild bool
	// Once stops each partition when it has caught up with the stream's
	// head as it was when the partition started; Run then returns.
	Once bool
	// Barrier is called before each KV write phase that must follow the
	// earlier writes and the events it folds to disk: before every
	// checkpoint, before a flush's entries and before a purge, never
	// when there is nothing to write. On a server that does not fsync
	// each write (the group fsync of --sync always, streams.Barrier) a
	// power cut could otherwise keep a checkpoint and lose the entries
	// it vouches for, or keep entries folded from events that were never
	// on disk. Its error fails the flush like a failed write. nil means
	// the server's own sync mode is all there is.
	Barrier func(context.Context) error
	Logger  *slog.Logger
	Metrics *Metrics
}

func (c Config) withDefaults() Config {
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.Writers == 0 {
		c.Writers = DefaultWriters
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Own == nil {
		for n := range c.Partitions {
			c.Own = append(c.Own, n)
		}
	}
	return c
}

// Validate rejects nonsense.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Partitions < 1 || c.Partitions > streams.MaxPartitions:
		return fmt.Errorf("projector: %d partitions", c.Partitions)
	case c.FlushInterval < time.Millisecond || c.FlushInterval > time.Minute:
		return fmt.Errorf("projector: flush interval %s out of [1ms, 1m]", c.FlushInterval)
	case c.MaxPending < 1 || c.Writers < 1 || c.Writers > 1024:
		return errors.New("projector: max pending and writers must be positive (writers ≤ 1024)")
	case c.Retention < time.Minute:
		return fmt.Errorf("projector: retention %s below 1m", c.Retention)
	}
	for _, n := range c.Own {
		if n < 0 || n >= c.Partitions {
			return fmt.Errorf("projector: partition %d out of range [0, %d)", n, c.Partitions)
		}
	}
	return nil
}

// ErrCorrupt is wrapped when a partition holds an event the projector
// cannot read: it stops rather than guess (tally audit verify tells more).
var ErrCorrupt = errors.New("unreadable event")

// Log attribute keys.
const (
	logPartition = "partition"
	logSeq       = "seq"
	logErr       = "err"
)

// Projector folds every owned partition into the KV views.
type Projector struct {
	js  jetstream.JetStream
	cfg Config
}

// New returns a projector. The ledger's streams and buckets must exist
// (streams.Ensure).
func New(js jetstream.JetStream, cfg Config) (*Projector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Projector{js: js, cfg: cfg.withDefaults()}, nil
}

// Run projects every owned partition until ctx ends (nil), a partition
// holds an unreadable event (ErrCorrupt), or, with Once, all caught up.
// Other failures (a KV write timing out, the server restarting) restart
// the partition from its stored views after a pause.
func (p *Projector) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, n := range p.cfg.Own {
		g.Go(func() error { return p.partition(gctx, n) })
	}
	err := g.Wait()
	if ctx.Err() != nil && !errors.Is(err, ErrCorrupt) {
		return nil
	}
	return err
}

func (p *Projector) partition(ctx context.Context, n int) error {
	log := p.cfg.Logger.With(logPartition, n)
	rebuild := p.cfg.Rebuild // cleared once the wipe is done: an interrupted one is resumed by its marker
	pause := retryFirst
	for {
		done, err := p.project(ctx, n, &rebuild, log)
		switch {
		case done:
			return nil
		case ctx.Err() != nil:
			if err != nil && !errors.Is(err, ctx.Err()) {
				log.Info("the last flush failed; the next start resumes from the stored views", logErr, err)
			}
			return nil
		case errors.Is(err, ErrCorrupt):
			return fmt.Errorf("projector: partition %d: %w", n, err)
		}
		log.Warn("projection interrupted; reloading", logErr, err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, retryMax)
	}
}

// part is one partition's projection in progress.
type part struct {
	p        *Projector
	n        int
	log      *slog.Logger
	balances jetstream.KeyValue
	budgets  jetstream.KeyValue
	view     *View
	flushed  Checkpoint
	head     uint64
	dec      events.Decoder
}

// project loads partition n's views and folds its stream into them until
// ctx ends or something fails. done reports that Once is satisfied.
func (p *Projector) project(ctx context.Context, n int, rebuild *bool, log *slog.Logger) (done bool, err error) {
	pt := &part{p: p, n: n, log: log}
	if pt.balances, err = p.js.KeyValue(ctx, streams.BalancesBucket); err != nil {
		return false, err
	}
	if pt.budgets, err = p.js.KeyValue(ctx, streams.BudgetsBucket); err != nil {
		return false, err
	}
	if err := pt.load(ctx, *rebuild); err != nil {
		return false, err
	}
	*rebuild = false
	stream, err := p.js.Stream(ctx, streams.StreamName(n))
	if err != nil {
		return false, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return false, err
	}
	target := info.State.LastSeq
	pt.head = max(target, pt.view.Seq())
	p.cfg.Metrics.setLag(n, pt.head-pt.flushed.Seq)
	p.cfg.Metrics.setCheckpoint(n, pt.flushed.Seq)
	log.Debug("projecting", logSeq, pt.view.Seq(), "head", target)
	if p.cfg.Once && pt.view.Seq() >= target {
		return true, nil
	}
	occ := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if s := pt.view.Seq(); s > 0 {
		occ = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: s + 1}
	}
	cons, err := stream.OrderedConsumer(ctx, occ)
	if err != nil {
		return false, err
	}
	msgs := make(chan jetstream.Msg, 256)
	stop := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-stop:
		}
	}, jetstream.PullMaxMessages(512), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		log.Debug("consumer", logErr, err)
	}))
	if err != nil {
		close(stop)
		return false, err
	}
	defer func() {
		close(stop) // unblocks the handler before the consumer stops
		cc.Stop()
	}()

	tick := time.NewTicker(p.cfg.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// A last flush on a clean stop keeps the restart short; if it
			// is cut, the next start resumes from the stored views.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return false, pt.flush(fctx)
		case m := <-msgs:
			md, err := m.Metadata()
			if err != nil {
				return false, err
			}
			seq := md.Sequence.Stream
			pt.head = max(pt.head, seq+md.NumPending)
			ev, err := pt.dec.Decode(m.Data())
			if err != nil {
				return false, fmt.Errorf("%w: seq %d: %v", ErrCorrupt, seq, err)
			}
			if pt.view.Apply(seq, ev) {
				p.cfg.Metrics.applied(n)
			}
			if pt.view.Pending() >= p.cfg.MaxPending {
				if err := pt.flush(ctx); err != nil {
					return false, err
				}
			}
			if p.cfg.Once && pt.view.Seq() >= target {
				// Caught up only once the flush is stored: a failed one
				// is retried like any other.
				if err := pt.flush(ctx); err != nil {
					return false, err
				}
				return true, nil
			}
		case <-tick.C:
			if err := pt.flush(ctx); err != nil {
				return false, err
			}
		}
	}
}

// flush writes the view's changes and then the checkpoint (see the
// package documentation for why in this order).
func (pt *part) flush(ctx context.Context) error {
	m := pt.p.cfg.Metrics
	if pt.view.Pending() == 0 {
		m.setLag(pt.n, pt.head-pt.flushed.Seq)
		return pt.purge(ctx)
	}
	start := time.Now()
	changes, fl := pt.view.Changes()
	if len(changes) > 0 {
		// First say that entries may get ahead of the checkpoint, and
		// which hours of roll-ups they may touch (see load).
		marker := aheadMarker(pt.flushed, fl)
		if err := pt.putCheckpoint(ctx, marker); err != nil {
			return err
		}
		pt.flushed = marker
		if err := pt.write(ctx, changes); err != nil {
			return err
		}
	}
	cp := flushed(pt.flushed, fl)
	if err := pt.putCheckpoint(ctx, cp); err != nil {
		return err
	}
	pt.flushed = cp
	if err := pt.purge(ctx); err != nil {
		return err
	}
	m.observeFlush(time.Since(start), len(changes))
	m.setCheckpoint(pt.n, cp.Seq)
	m.setLag(pt.n, pt.head-cp.Seq)
	pt.log.Debug("flushed", logSeq, cp.Seq, "events", fl.Events, "writes", len(changes))
	return nil
}

// purge deletes the reservations closed at or before the checkpoint.
func (pt *part) purge(ctx context.Context) error {
	return pt.write(ctx, pt.view.Purge(pt.flushed.Seq))
}

// aheadMarker is the checkpoint written before a flush's entries: the
// stored checkpoint, extended by how far the entries may get ahead of it.
func aheadMarker(cp Checkpoint, fl Flush) Checkpoint {
	if cp.Seq == 0 && cp.AheadFromAt.IsZero() {
		cp.AheadFromAt = fl.FromAt
	}
	if fl.Seq > cp.AheadSeq {
		cp.AheadSeq, cp.AheadAt = fl.Seq, fl.At
	}
	return cp
}

// flushed is the checkpoint written after a flush's entries; marker is
// the one written before. What an earlier cut flush wrote beyond this one
// stays marked.
func flushed(marker Checkpoint, fl Flush) Checkpoint {
	cp := Checkpoint{Partition: marker.Partition, Seq: fl.Seq, At: fl.At}
	if marker.AheadSeq > fl.Seq {
		cp.AheadSeq, cp.AheadAt = marker.AheadSeq, marker.AheadAt
	}
	return cp
}

// sync waits for Barrier, if any: every KV write acknowledged before it,
// and every event folded so far, is on disk when it returns.
func (pt *part) sync(ctx context.Context) error {
	if pt.p.cfg.Barrier == nil {
		return nil
	}
	if err := pt.p.cfg.Barrier(ctx); err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	return nil
}

// write applies changes with up to Writers in flight: puts, then deletes.
// What was written before, and the events folded, go to disk first
// (sync); nothing to write syncs nothing, so an idle projector does not.
func (pt *part) write(ctx context.Context, changes []Change) error {
	if len(changes) == 0 {
		return nil
	}
	if err := pt.sync(ctx); err != nil {
		return err
	}
	split := len(changes)
	for i, c := range changes {
		if c.Value == nil {
			split = i
			break
		}
	}
	for _, batch := range [][]Change{changes[:split], changes[split:]} {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(pt.p.cfg.Writers)
		for _, c := range batch {
			kv := pt.balances
			if c.Bucket == streams.BudgetsBucket {
				kv = pt.budgets
			}
			g.Go(func() error {
				var err error
				if c.Value == nil {
					err = kv.Delete(gctx, c.Key)
				} else {
					_, err = kv.Put(gctx, c.Key, c.Value)
				}
				if err != nil {
					return fmt.Errorf("write %s: %w", c.Key, err)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	return nil
}

// putCheckpoint writes cp once what was written before it, and the events
// it vouches for, are on disk (sync).
func (pt *part) putCheckpoint(ctx context.Context, cp Checkpoint) error {
	if err := pt.sync(ctx); err != nil {
		return err
	}
	cp.Partition = pt.n
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	if _, err := pt.balances.Put(ctx, CheckpointKey(pt.n), b); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	return nil
}

// load reads the partition's checkpoint and entries into a fresh view,
// wiping them first for a rebuild.
func (pt *part) load(ctx context.Context, rebuild bool) error {
	cp, err := ReadCheckpoint(ctx, pt.balances, pt.n)
	if err != nil {
		return err
	}
	pt.view = NewView(pt.n, pt.p.cfg.Retention)
	if rebuild || cp.Rebuilding {
		if err := pt.wipe(ctx); err != nil {
			return fmt.Errorf("rebuild: %w", err)
		}
		pt.flushed = Checkpoint{Partition: pt.n}
		return nil
	}
	for _, src := range []struct {
		kv     jetstream.KeyValue
		prefix string
	}{{pt.balances, PrefixInstance}, {pt.balances, PrefixShadow}, {pt.balances, PrefixResv}, {pt.budgets, PrefixBudget}} {
		if err := watchValues(ctx, src.kv, PartitionFilter(src.prefix, pt.n), pt.view.Load); err != nil {
			return err
		}
	}
	if from, to, ok := rollUpHours(cp); ok {
		if err := pt.loadRollUps(ctx, from, to); err != nil {
			return err
		}
	}
	pt.view.SetCheckpoint(cp.Seq, cp.At)
	pt.flushed = cp
	return nil
}

// rollUpHours is the hours of spend roll-ups a view resuming after cp must
// load: the checkpoint's hour, which the next events may extend, and the
// hours a cut flush may have written (up to AheadAt). Earlier hours are
// final (event time never goes backwards within a partition); later ones
// were never written.
func rollUpHours(cp Checkpoint) (from, to time.Time, ok bool) {
	switch {
	case cp.Seq > 0:
		from, to = cp.At, cp.At
	case cp.AheadSeq > 0:
		from, to = cp.AheadFromAt, cp.AheadAt
	default:
		return time.Time{}, time.Time{}, false
	}
	if cp.AheadAt.After(to) {
		to = cp.AheadAt
	}
	return from.UTC().Truncate(time.Hour), to.UTC().Truncate(time.Hour), true
}

// loadRollUps loads the roll-ups of the hours [from, to].
func (pt *part) loadRollUps(ctx context.Context, from, to time.Time) error {
	hours := int(to.Sub(from)/time.Hour) + 1
	for _, prefix := range []string{PrefixSpend, PrefixWorkflow} {
		if hours > maxHoursListed {
			err := watchValues(ctx, pt.balances, PartitionFilter(prefix, pt.n), func(key string, val []byte) error {
				k, err := ParseKey(key)
				if err != nil || k.Hour.Before(from) || k.Hour.After(to) {
					return err
				}
				return pt.view.Load(key, val)
			})
			if err != nil {
				return err
			}
			continue
		}
		for h := from; !h.After(to); h = h.Add(time.Hour) {
			filter := fmt.Sprintf("%s.%d.%s.>", prefix, pt.n, HourToken(h))
			if err := watchValues(ctx, pt.balances, filter, pt.view.Load); err != nil {
				return err
			}
		}
	}
	return nil
}

// wipe deletes every entry of the partition, marking the checkpoint first
// so that an interrupted wipe is resumed.
func (pt *part) wipe(ctx context.Context) error {
	if err := pt.putCheckpoint(ctx, Checkpoint{Rebuilding: true}); err != nil {
		return err
	}
	pt.log.Info("rebuilding: wiping the partition's views")
	for _, src := range []struct {
		kv     jetstream.KeyValue
		prefix string
	}{{pt.balances, PrefixInstance}, {pt.balances, PrefixShadow}, {pt.balances, PrefixResv},
		{pt.balances, PrefixSpend}, {pt.balances, PrefixWorkflow}, {pt.budgets, PrefixBudget}} {
		keys, err := listKeys(ctx, src.kv, PartitionFilter(src.prefix, pt.n))
		if err != nil {
			return err
		}
		changes := make([]Change, len(keys))
		for i, k := range keys {
			changes[i] = Change{Bucket: src.kv.Bucket(), Key: k}
		}
		if err := pt.write(ctx, changes); err != nil {
			return err
		}
	}
	// The deletions go to disk before the marker goes: a start that
	// found no checkpoint beside surviving entries would skip events.
	if err := pt.sync(ctx); err != nil {
		return err
	}
	if err := pt.balances.Delete(ctx, CheckpointKey(pt.n)); err != nil {
		return err
	}
	return nil
}

// ReadCheckpoint returns partition n's checkpoint; the zero Checkpoint if
// the partition was never projected.
func ReadCheckpoint(ctx context.Context, balances jetstream.KeyValue, n int) (Checkpoint, error) {
	e, err := balances.Get(ctx, CheckpointKey(n))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Checkpoint{Partition: n}, nil
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("read checkpoint of partition %d: %w", n, err)
	}
	var cp Checkpoint
	if err := json.Unmarshal(e.Value(), &cp); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint of partition %d: %w", n, err)
	}
	return cp, nil
}

// watchValues calls fn with the current value of every key matching
// filter (deleted keys are skipped).
func watchValues(ctx context.Context, kv jetstream.KeyValue, filter string, fn func(key string, val []byte) error) error {
	w, err := kv.WatchFiltered(ctx, []string{filter}, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watch %s %s: closed", kv.Bucket(), filter)
			}
			if e == nil {
				return nil
			}
			if err := fn(e.Key(), e.Value()); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func listKeys(ctx context.Context, kv jetstream.KeyValue, filter string) ([]string, error) {
	var keys []string
	err := watchValues(ctx, kv, filter, func(key string, _ []byte) error {
		keys = append(keys, key)
		return nil
	})
	return keys, err
}
