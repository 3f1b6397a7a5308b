package enforcer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/streams"
)

// JetStream error codes the shell branches on (JETSTREAM.md).
const (
	errCodeWrongLastSeq = 10071
	errCodeInFlight     = 10164
)

// ErrLostOwnership is returned when another owner claimed the partition.
var ErrLostOwnership = errors.New("enforcer: another owner claimed the partition")

// AppendError is a failed append.
type AppendError struct {
	Code        int // JetStream err_code, 0 for a timeout or transport error
	Description string
}

func (e *AppendError) Error() string {
	if e.Code == 0 {
		return "append: " + e.Description
	}
	return fmt.Sprintf("append: %s (err_code %d)", e.Description, e.Code)
}

// decideLoop is the partition's single writer: it decides requests in
// arrival order, applies and stages their events, publishes them fenced
// and hands the entries to the acker in order.
func (p *partition) decideLoop(ctx context.Context, sub *nats.Subscription) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	batch := make([]*request, 0, p.svc.cfg.MaxBatch)
	for {
		p.resetTimer(timer)
		batch = batch[:0]
		select {
		case <-ctx.Done():
			// Shutdown: stop taking requests, decide what was accepted, and
			// let the acker wait for the acks (run closes the pipeline).
			// A partition is also stopped when its lease was lost, and then
			// another owner may have claimed it already: what was accepted
			// is decided only if the stream still ends where this state
			// does, else refused (a commit of a reservation the new owner
			// granted would be NOT_FOUND here).
			p.stopServing(sub)
			current := p.stillCurrent()
			for {
				batch = batch[:0]
				p.fill(&batch)
				if len(batch) == 0 {
					return ctx.Err()
				}
				if !current || p.broken.Load() {
					p.refuse(batch)
					continue
				}
				p.decideBatch(batch)
			}
		case <-p.brokenCh:
			if err := p.recover(ctx); err != nil {
				return err
			}
			continue
		case r := <-p.in:
			batch = append(batch, r)
			p.fill(&batch)
		case <-timer.C:
		case <-p.claimCh: // another enforcer is claiming: yield below
		}
		if p.broken.Load() {
			// Keep the requests: they are decided after the reload.
			if err := p.recover(ctx); err != nil {
				p.refuse(batch)
				return err
			}
		}
		if p.yield(ctx) {
			if err := p.recover(ctx); err != nil {
				p.refuse(batch)
				return err
			}
		}
		p.decideBatch(batch)
		// A snapshot is built here, in the decision loop, and costs in
		// proportion to the retained keys and reservations: spacing
		// snapshots at least that many events apart keeps the amortised
		// cost per decision bounded however large the state grows.
		if every := p.svc.cfg.SnapshotEvery; every > 0 &&
			p.state.LastSeq()-p.snapSeq >= uint64(max(every, p.state.IdempotencyKeys())) {
			p.snapshot(ctx)
		}
	}
}

func (p *partition) fill(batch *[]*request) {
	for len(*batch) < cap(*batch) {
		select {
		case r := <-p.in:
			*batch = append(*batch, r)
		default:
			return
		}
	}
}

func (p *partition) refuse(batch []*request) {
	for _, r := range batch {
		p.reply(r.msg, r.cmd.Op, r.received, errAnswer(events.Errorf(events.CodeUnavailable, "partition %d is not serving; retry", p.n)))
	}
}

func (p *partition) resetTimer(t *time.Timer) {
	d := time.Hour
	if at, ok := p.state.NextExpiry(); ok {
		d = max(time.Until(at), time.Millisecond)
	}
	t.Reset(d)
}

// decideBatch decides a batch (and any due expiry) and publishes its events.
func (p *partition) decideBatch(batch []*request) {
	now := p.now()
	var (
		msgs    []*nats.Msg
		entries []*entry
	)
	if at, ok := p.state.NextExpiry(); ok && !at.After(now) {
		d := p.state.Decide(Command{Op: OpExpire}, now)
		for i := range d.Events {
			seq, msg, _ := p.stage(&d.Events[i])
			msgs = append(msgs, msg)
			entries = append(entries, &entry{id: d.Events[i].ID, seq: seq, waitSeq: seq})
		}
	}
	for _, r := range batch {
		if r.cmd.Op == events.OpReserve {
			r.cmd.NewID = ulid.Make().String()
		}
		d := p.state.Decide(r.cmd, now)
		e := &entry{msg: r.msg, op: r.cmd.Op, received: r.received}
		switch {
		case d.Err != nil:
			e.answer = errAnswer(d.Err)
		case d.Duplicate > 0:
			e.dup = d.Duplicate
		case len(d.Events) > 0:
			for i := range d.Events {
				seq, msg, views := p.stage(&d.Events[i])
				msgs = append(msgs, msg)
				if i == 0 {
					e.id, e.seq = d.Events[0].ID, seq
					// The answer is rendered now: the decision's views live
					// in the state's buffer, which the next Decide reuses.
					// Its views are the event's: their bytes are copied.
					r, _ := events.ResultOf(d.Events[0], events.EventRef{Partition: p.n, Seq: seq})
					e.answer = events.AppendResultAnswerViews(make([]byte, 0, len(msg.Data)+256), r, views)
				}
			}
		default:
			e.answer = events.ResultAnswer(d.Result)
		}
		if len(msgs) > 0 {
			e.waitSeq = p.state.LastSeq()
		}
		entries = append(entries, e)
	}
	p.svc.cfg.Metrics.setOpen(p.n, p.state.OpenReservations())
	p.svc.cfg.Metrics.setWindow(p.n, p.state.IdempotencyHorizon())
	if len(msgs) > 0 {
		// An entry waits for the unit holding the last event staged up to
		// and including its own: its answer may read those effects. A unit
		// is acked only if every unit before it landed (the fences chain).
		spans := p.publish(msgs)
		for _, e := range entries {
			if e.waitSeq > 0 {
				e.unit = unitFor(spans, e.waitSeq)
			}
		}
	}
	for _, e := range entries {
		p.pipe <- e
	}
}

type unitSpan struct {
	u        *appendUnit
	from, to uint64 // sequences [from, to]
}

func unitFor(units []unitSpan, seq uint64) *appendUnit {
	for _, s := range units {
		if seq >= s.from && seq <= s.to {
			return s.u
		}
	}
	panic(fmt.Sprintf("enforcer: no append unit holds seq %d", seq))
}

// stage seals an event (setting its id), applies it to the state at the
// next sequence and returns its message, and its encoded views (seal).
func (p *partition) stage(ev *events.Event) (uint64, *nats.Msg, []byte) {
	msg, views := p.seal(ev)
	seq := p.state.LastSeq() + 1
	p.state.Apply(seq, *ev)
	p.hash = events.Hash(msg.Data)
	p.recent.put(seq, msg.Data)
	return seq, msg, views
}

// publish sends msgs (sequences LastSeq−len+1 … LastSeq) as fenced appends.
//
// The fence is Nats-Expected-Last-Sequence on every unit plus, on single
// messages that follow one of ours, Nats-Expected-Last-Msg-Id of the event
// before it. The sequence alone is not enough once appends are pipelined:
// if a stale writer's message N+1 fails because another writer's N+1
// landed, its N+2 (expecting N+1) would otherwise land on top of the other
// writer's message and fork the hash chain. The first append after a load
// carries only the sequence: it follows a message read from the stream.
//
// With group commit, MaxBatch messages at a time go as one atomic batch.
// A batch may only carry the sequence fence on its first message, so a
// batch is sent only once everything before it is acknowledged; requests
// queue up meanwhile and the next batch is larger — one fsync for many
// decisions.
func (p *partition) publish(msgs []*nats.Msg) []unitSpan {
	cfg := p.svc.cfg
	first := p.state.LastSeq() - uint64(len(msgs)) + 1
	var spans []unitSpan
	if cfg.GroupCommit && len(msgs) >= cfg.BatchMin {
		for i := 0; i < len(msgs); i += cfg.MaxBatch {
			j := min(i+cfg.MaxBatch, len(msgs))
			u := p.publishBatch(msgs[i:j], first+uint64(i))
			spans = append(spans, unitSpan{u: u, from: first + uint64(i), to: first + uint64(j-1)})
		}
		return spans
	}
	for i, m := range msgs {
		seq := first + uint64(i)
		u := p.newUnit()
		m.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(seq-1, 10))
		if p.prevOurs {
			m.Header.Set(jetstream.ExpectedLastMsgIDHeader, p.prevID)
		}
		m.Reply = u.reply
		cfg.Metrics.observeSent(1)
		if err := p.svc.nc.PublishMsg(m); err != nil {
			p.resolve(u.token, 0, &AppendError{Description: err.Error()})
		}
		p.prevID, p.prevOurs, p.lastUnit = m.Header.Get(jetstream.MsgIDHeader), true, u.appendUnit
		spans = append(spans, unitSpan{u: u.appendUnit, from: seq, to: seq})
	}
	return spans
}

// Atomic batch headers (JETSTREAM.md).
const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
)

func (p *partition) publishBatch(msgs []*nats.Msg, firstSeq uint64) *appendUnit {
	u := p.newUnit()
	p.prevID, p.prevOurs = msgs[len(msgs)-1].Header.Get(jetstream.MsgIDHeader), true
	prev := p.lastUnit
	p.lastUnit = u.appendUnit
	if prev != nil {
		if err := p.wait(prev); err != nil {
			// Not sent: the acker sees this unit fail after prev and the
			// partition reloads.
			p.resolve(u.token, 0, &AppendError{Description: "not sent: an earlier append failed: " + err.Error()})
			return u.appendUnit
		}
	}
	id := fmt.Sprintf("p%d-%s", p.n, u.token)
	p.svc.cfg.Metrics.observeSent(len(msgs))
	for i, m := range msgs {
		m.Header.Set(hdrBatchID, id)
		m.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		if i == 0 {
			m.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(firstSeq-1, 10))
		}
		if i == len(msgs)-1 {
			m.Header.Set(hdrBatchCommit, "1")
			m.Reply = u.reply
		}
		if err := p.svc.nc.PublishMsg(m); err != nil {
			p.resolve(u.token, 0, &AppendError{Description: err.Error()})
			break
		}
	}
	return u.appendUnit
}

type pendingUnit struct {
	*appendUnit
	token string
	reply string
}

func (p *partition) newUnit() pendingUnit {
	tok := strconv.FormatUint(p.token.Add(1), 36)
	u := &appendUnit{done: make(chan struct{}), started: time.Now()}
	p.mu.Lock()
	p.units[tok] = u
	p.mu.Unlock()
	return pendingUnit{appendUnit: u, token: tok, reply: p.ackPrefix + "." + tok}
}

// pubAck is JetStream's answer to a publish or a batch commit.
type pubAck struct {
	Stream    string `json:"stream"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
	Error     *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

func (p *partition) onAck(msg *nats.Msg) {
	tok := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
	if seq, ok := ackSeq(msg.Data); ok {
		p.resolve(tok, seq, nil)
		return
	}
	var a pubAck
	if err := json.Unmarshal(msg.Data, &a); err != nil {
		p.resolve(tok, 0, &AppendError{Description: fmt.Sprintf("undecodable ack %q", msg.Data)})
		return
	}
	if a.Error != nil {
		p.resolve(tok, 0, &AppendError{Code: a.Error.ErrCode, Description: a.Error.Description})
		return
	}
	p.resolve(tok, a.Seq, nil)
}

// ackSeq reads the sequence of a plain successful ack, in the shape the
// server writes from its stream's template, {"stream":"S","seq":N} or
// {"stream":"S","domain":"D","seq":N} with S and D printable ASCII,
// without encoding/json's reflection. Anything else (an error, a
// duplicate, a batch's ack, an escape) is not ok: onAck leaves it to
// encoding/json.
func ackSeq(data []byte) (uint64, bool) {
	const stream, domain, seq = `{"stream":"`, `","domain":"`, `","seq":`
	// name is the length of the printable ASCII name b begins with, up to
	// its closing quote; -1 if anything else comes first.
	name := func(b []byte) int {
		for i, c := range b {
			switch {
			case c == '"':
				return i
			case c < 0x20 || c > 0x7e || c == '\\':
				return -1
			}
		}
		return -1
	}
	rest, ok := bytes.CutPrefix(data, []byte(stream))
	if !ok {
		return 0, false
	}
	q := name(rest)
	if q < 0 {
		return 0, false
	}
	if d, ok := bytes.CutPrefix(rest[q:], []byte(domain)); ok {
		if q = name(d); q < 0 {
			return 0, false
		}
		rest = d
	}
	digits, ok := bytes.CutPrefix(rest[q:], []byte(seq))
	if !ok {
		return 0, false
	}
	if digits, ok = bytes.CutSuffix(digits, []byte("}")); !ok || len(digits) > 1 && digits[0] == '0' {
		return 0, false // JSON has no leading zeros
	}
	n, err := strconv.ParseUint(string(digits), 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

func (p *partition) resolve(tok string, seq uint64, err error) {
	p.mu.Lock()
	u, ok := p.units[tok]
	delete(p.units, tok)
	p.mu.Unlock()
	if !ok {
		return
	}
	u.lastSeq, u.err = seq, err
	if err == nil {
		p.svc.cfg.Metrics.observeAppend(time.Since(u.started))
		if b := p.svc.cfg.Barrier; b != nil {
			// Now that the ack is here: the next sync to begin covers it.
			u.durable = b.Ticket()
		}
	}
	close(u.done)
}

// sync waits until everything acknowledged so far is durable (a no-op
// without a Barrier).
func (p *partition) sync(ctx context.Context) error {
	if b := p.svc.cfg.Barrier; b != nil {
		return b.Sync(ctx)
	}
	return nil
}

// waitDurable blocks until the acked unit is durable. The sync is not
// abandoned on shutdown: the answers still in the pipeline wait for it.
func (p *partition) waitDurable(u *appendUnit) error {
	if u.durable == nil {
		return nil
	}
	<-u.durable.Done()
	return u.durable.Err()
}

// wait blocks until the unit is acked or times out.
func (p *partition) wait(u *appendUnit) error {
	select {
	case <-u.done: // the common case once pipelined: no timer needed
		return u.err
	default:
	}
	left := p.svc.cfg.AppendTimeout - time.Since(u.started)
	if left > 0 {
		t := time.NewTimer(left)
		defer t.Stop()
		select {
		case <-u.done:
		case <-t.C:
		}
	}
	select {
	case <-u.done:
		return u.err
	default:
		return &AppendError{Description: fmt.Sprintf("no ack within %s", p.svc.cfg.AppendTimeout)}
	}
}

// acker answers decided entries in order once their appends are acked. On
// the first failed append it stops answering and holds every later entry
// until the decision loop reloads the partition and takes them back.
func (p *partition) acker(ctx context.Context) error {
	var held []*entry
	failed := false
	for e := range p.pipe {
		if e.marker != nil {
			e.marker <- held
			held, failed = nil, false
			continue
		}
		if failed {
			held = append(held, e)
			continue
		}
		if e.unit != nil {
			err := p.wait(e.unit)
			if err == nil {
				// Not answered, not snapshotted (p.acked) before it is on
				// disk. A failed sync is handled like a failed append:
				// the reload syncs again before it answers anything.
				err = p.waitDurable(e.unit)
			}
			if err == nil && e.unit.lastSeq > p.acked.Load() {
				p.acked.Store(e.unit.lastSeq)
			}
			if err != nil {
				failed = true
				held = append(held, e)
				p.log.Warn("append failed; reloading the partition", logErr, err)
				p.broken.Store(true)
				select {
				case p.brokenCh <- struct{}{}:
				default:
				}
				continue
			}
		}
		p.answer(ctx, e)
	}
	// Shutdown after a failure: what was held is answered UNAVAILABLE.
	for _, e := range held {
		p.reply(e.msg, e.op, e.received, errAnswer(events.Errorf(events.CodeUnavailable, "partition %d is shutting down; retry", p.n)))
	}
	return nil
}

func (p *partition) answer(ctx context.Context, e *entry) {
	if e.msg == nil {
		return
	}
	switch {
	case e.answer != nil:
		p.reply(e.msg, e.op, e.received, e.answer)
	case e.dup > 0:
		ev, err := p.eventAt(ctx, e.dup)
		if err != nil {
			p.reply(e.msg, e.op, e.received, errAnswer(events.Errorf(events.CodeUnavailable, "reading the original answer at seq %d: %v; retry", e.dup, err)))
			return
		}
		r, ok := events.ResultOf(ev, events.EventRef{Partition: p.n, Seq: e.dup})
		if !ok {
			p.reply(e.msg, e.op, e.received, errAnswer(events.Errorf(events.CodeInternal, "event at seq %d is a %s, not an answer", e.dup, ev.Type)))
			return
		}
		p.reply(e.msg, e.op, e.received, events.ResultAnswer(r))
	}
}

// eventAt returns the event at seq, from memory when recent.
func (p *partition) eventAt(ctx context.Context, seq uint64) (events.Event, error) {
	if raw, ok := p.recent.get(seq); ok {
		return events.Decode(raw)
	}
	stream, err := p.svc.js.Stream(ctx, streams.StreamName(p.n))
	if err != nil {
		return events.Event{}, err
	}
	m, err := stream.GetMsg(ctx, seq)
	if err != nil {
		return events.Event{}, err
	}
	return events.Decode(m.Data)
}

// recover reloads the partition from the stream after a failed append and
// settles the entries the acker held: those whose event landed get their
// real answer, the others UNAVAILABLE (a retry with the same key is safe).
func (p *partition) recover(ctx context.Context) error {
	marker := make(chan []*entry, 1)
	p.pipe <- &entry{marker: marker}
	held := <-marker
	// Let every in-flight append resolve (ack, error or timeout) before
	// reading the stream.
	var minSeq uint64
	for _, e := range held {
		if e.unit != nil {
			_ = p.wait(e.unit)
		}
		if e.id != "" && (minSeq == 0 || e.seq < minSeq) {
			minSeq = e.seq
		}
	}
	p.recent.clear()
	landed := map[string]uint64{}
	// Start from the newest verified snapshot when it precedes everything
	// in doubt (snapshots are stored only once acknowledged), else from 1.
	st, _, err := LoadSnapshot(ctx, p.svc.rjs, p.n, p.svc.cfg.Core)
	if err != nil || minSeq > 0 && st.LastSeq() >= minSeq {
		st = New(p.coreConfig())
	}
	hash, err := Replay(ctx, p.svc.rjs, p.n, st, func(seq uint64, ev events.Event, _ []byte) {
		if minSeq > 0 && seq >= minSeq {
			landed[ev.ID] = seq
		}
	})
	if err == nil {
		// The events that landed are answered below: on disk first.
		err = p.sync(ctx)
	}
	if err != nil {
		for _, e := range held {
			p.reply(e.msg, e.op, e.received, errAnswer(events.Errorf(events.CodeUnavailable, "partition %d could not reload: %v; retry with the same idempotency key", p.n, err)))
		}
		return fmt.Errorf("partition %d: reload: %w", p.n, err)
	}
	st.SetReuseViews(true)
	p.state, p.hash = st, hash
	p.acked.Store(st.LastSeq())
	p.prevOurs, p.lastUnit = false, nil
	lost := st.ClaimedBy() != p.svc.cfg.Owner
	for _, e := range held {
		if e.id != "" {
			if seq, ok := landed[e.id]; ok {
				// Fenced appends land at the sequence they were staged
				// for, which the ready answer names; should one not have,
				// the answer is rendered again from what landed.
				ans := e.answer
				if seq != e.seq {
					ev, _ := p.eventAt(ctx, seq)
					r, _ := events.ResultOf(ev, events.EventRef{Partition: p.n, Seq: seq})
					ans = events.ResultAnswer(r)
				}
				p.reply(e.msg, e.op, e.received, ans)
				continue
			}
		}
		if lost {
			// Another owner serves this partition: stay silent, so the
			// client's only answer comes from the owner (after a retry).
			continue
		}
		p.reply(e.msg, e.op, e.received, errAnswer(events.Errorf(events.CodeUnavailable, "partition %d lost an append and reloaded; retry with the same idempotency key", p.n)))
	}
	p.log.Info("reloaded", logSeq, st.LastSeq(), logEvents, len(landed), "lost", lost)
	p.broken.Store(false)
	if lost {
		return fmt.Errorf("partition %d: %w", p.n, ErrLostOwnership)
	}
	return nil
}

// recentEvents keeps the last events by sequence, as appended (encoded),
// for duplicate answers: a retried request is answered without reading the
// stream. Encoded events are single pointer-free allocations, where decoded
// ones are trees of maps, strings and views — thousands of them kept alive
// per partition made every garbage collection mark them.
type recentEvents struct {
	mu   sync.Mutex
	size uint64
	seqs []uint64
	raws [][]byte
}

func newRecentEvents(n int) recentEvents {
	return recentEvents{size: uint64(n), seqs: make([]uint64, n), raws: make([][]byte, n)}
}

// put keeps raw, the event appended at seq; raw must not change afterwards.
func (r *recentEvents) put(seq uint64, raw []byte) {
	r.mu.Lock()
	i := seq % r.size
	r.seqs[i], r.raws[i] = seq, raw
	r.mu.Unlock()
}

// get returns the event at seq when it is still kept.
func (r *recentEvents) get(seq uint64) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := seq % r.size
	if r.seqs[i] != seq {
		return nil, false
	}
	return r.raws[i], true
}

func (r *recentEvents) clear() {
	r.mu.Lock()
	clear(r.seqs)
	clear(r.raws)
	r.mu.Unlock()
}
