package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/streams"
)

// The baselines' scratch assets. They live outside the ledger's subject
// space (tally.v1.>) and are created and deleted by the bench; unlike the
// partition streams they allow deletion.
const (
	// b0Subject is where B0's responders listen.
	b0Subject = "tally.bench.b0"
	// b1Subject is where B1's responders listen.
	b1Subject = "tally.bench.b1"
	// b1Stream is B1's scratch stream, on b1AppendSubject.
	b1Stream        = "TALLY_BENCH_B1"
	b1AppendSubject = "tally.bench.b1-append"
	// rawStream is the raw publish phase's scratch stream.
	rawStream  = "TALLY_BENCH_RAW"
	rawSubject = "tally.bench.raw"
	// responderQueue is the queue group of the baseline responders.
	responderQueue = "tally-bench"

	// maxRawDuration bounds the raw publish phase: at ~100k msg/s longer
	// runs only fill the disk.
	maxRawDuration = 5 * time.Second
	// rawMaxPending bounds the raw publisher's unacknowledged messages.
	rawMaxPending = 4096
	// rawStallWait is how long a raw publish waits for a free slot before
	// trying again.
	rawStallWait = time.Second
	// rawDrainTimeout bounds the wait for the last window's acks (4096
	// fsyncs on a slow disk take seconds).
	rawDrainTimeout = time.Minute
	// maxReplayDuration and maxReplayMessages bound the replay phase on a
	// long-lived ledger.
	maxReplayDuration = 10 * time.Second
	maxReplayMessages = 2_000_000
	// replayBatch is the ordered consumer's pull size (as the enforcer's
	// replay).
	replayBatch = 1024
	// assetTimeout bounds creating or deleting a scratch stream.
	assetTimeout = 30 * time.Second
)

// b0Answer is B0's answer: a result that says nothing.
var b0Answer = []byte(`{"result":{}}`)

// classifyBaseline accepts any answer without an error.
func classifyBaseline(answer []byte) (string, bool) {
	if bytes.Contains(answer, []byte(`"error"`)) {
		return codeBadAnswer, false
	}
	return "", false
}

// baselineStep sends the payload to subject: one request per step.
func baselineStep(subject string, payload []byte) step {
	return func(c *agent, done <-chan struct{}) {
		c.request(done, false, subject, payload, 1, classifyBaseline)
	}
}

// subscribeB0 starts n B0 responders on nc: each answers every request at
// once, doing nothing. The caller unsubscribes them.
func subscribeB0(nc *nats.Conn, n int) ([]*nats.Subscription, error) {
	var subs []*nats.Subscription
	for range n {
		sub, err := nc.QueueSubscribe(b0Subject, responderQueue, func(m *nats.Msg) { _ = m.Respond(b0Answer) })
		if err != nil {
			unsubscribeAll(subs)
			return nil, fmt.Errorf("bench: B0 responder: %w", err)
		}
		subs = append(subs, sub)
	}
	return subs, nc.Flush()
}

// b1Responder appends each request's payload to the B1 stream and answers
// with JetStream's ack once it arrives: one pipelined append per request,
// no decision logic, no fence — the minimal durable ledger.
type b1Responder struct {
	nc        *nats.Conn
	acks      *ackWaits[string] // the request's reply subject
	pad       int               // append at least this many bytes (padding with spaces)
	answerPad int               // answer with at least this many bytes (the ack, then spaces)
}

func (r *b1Responder) onRequest(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	reply, tok := r.acks.add(m.Reply)
	data := m.Data
	if r.pad > len(data) {
		data = append(append(make([]byte, 0, r.pad), data...), bytes.Repeat([]byte{' '}, r.pad-len(data))...)
	}
	err := r.nc.PublishMsg(&nats.Msg{Subject: b1AppendSubject, Reply: reply, Data: data})
	if err != nil {
		r.acks.take(tok)
		_ = m.Respond(fmt.Appendf(nil, `{"error":{"code":%q,"message":%q}}`, codeTransport, err.Error()))
	}
}

func (r *b1Responder) onAck(m *nats.Msg) {
	if reply, ok := r.acks.takeFor(m); ok {
		data := m.Data
		if r.answerPad > len(data) {
			data = append(append(make([]byte, 0, r.answerPad), data...), bytes.Repeat([]byte{' '}, r.answerPad-len(data))...)
		}
		_ = r.nc.Publish(reply, data)
	}
}

// ackWaits holds, for a responder's appends in flight, what it answers once
// an append's ack comes to its ack inbox, prefix.<token>.
type ackWaits[T any] struct {
	prefix string
	token  atomic.Uint64

	mu sync.Mutex
	m  map[string]T
}

func newAckWaits[T any](nc *nats.Conn) *ackWaits[T] {
	return &ackWaits[T]{prefix: nc.NewInbox(), m: map[string]T{}}
}

// add holds v and returns the reply subject of its append, and its token.
func (w *ackWaits[T]) add(v T) (reply, tok string) {
	tok = strconv.FormatUint(w.token.Add(1), 36)
	w.mu.Lock()
	w.m[tok] = v
	w.mu.Unlock()
	return w.prefix + "." + tok, tok
}

// take removes and returns what is held for tok.
func (w *ackWaits[T]) take(tok string) (T, bool) {
	w.mu.Lock()
	v, ok := w.m[tok]
	delete(w.m, tok)
	w.mu.Unlock()
	return v, ok
}

// takeFor is take for the ack m.
func (w *ackWaits[T]) takeFor(m *nats.Msg) (T, bool) {
	return w.take(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:])
}

// subscribeB1 starts n B1 responders on nc, each with its own ack inbox.
func subscribeB1(nc *nats.Conn, n, pad, answerPad int) ([]*nats.Subscription, error) {
	var subs []*nats.Subscription
	for range n {
		r := &b1Responder{nc: nc, acks: newAckWaits[string](nc), pad: pad, answerPad: answerPad}
		var err error
		if subs, err = subscribeResponder(nc, subs, "B1", r.acks.prefix, b1Subject, r.onAck, r.onRequest); err != nil {
			return nil, err
		}
	}
	return subs, nc.Flush()
}

// subscribeResponder adds to subs a responder's subscriptions on nc: its
// ack inbox (ackPrefix.*) and its requests (subject, in the responders'
// queue group). On an error it unsubscribes all of subs.
func subscribeResponder(nc *nats.Conn, subs []*nats.Subscription, name, ackPrefix, subject string, onAck, onRequest nats.MsgHandler) ([]*nats.Subscription, error) {
	acks, err := nc.Subscribe(ackPrefix+".*", onAck)
	if err != nil {
		unsubscribeAll(subs)
		return nil, fmt.Errorf("bench: %s ack inbox: %w", name, err)
	}
	subs = append(subs, acks)
	sub, err := nc.QueueSubscribe(subject, responderQueue, onRequest)
	if err != nil {
		unsubscribeAll(subs)
		return nil, fmt.Errorf("bench: %s responder: %w", name, err)
	}
	return append(subs, sub), nil
}

func unsubscribeAll(subs []*nats.Subscription) {
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
}

// createScratch (re)creates a scratch stream on subject with the ledger's
// storage and replicas, deleting a leftover of an interrupted run first.
func createScratch(ctx context.Context, js jetstream.JetStream, name, subject string, replicas int) error {
	return createScratchConfig(ctx, js, jetstream.StreamConfig{
		Name:      name,
		Subjects:  []string{subject},
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.FileStorage,
		Replicas:  replicas,
		Discard:   jetstream.DiscardOld,
	})
}

// createScratchConfig (re)creates the scratch stream sc, deleting a
// leftover of an interrupted run first.
func createScratchConfig(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) error {
	ctx, cancel := context.WithTimeout(ctx, assetTimeout)
	defer cancel()
	if err := js.DeleteStream(ctx, sc.Name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("bench: delete leftover stream %s: %w", sc.Name, err)
	}
	sc.Description = "tally bench scratch stream; deleted when the bench ends"
	if _, err := js.CreateStream(ctx, sc); err != nil {
		return fmt.Errorf("bench: create stream %s: %w", sc.Name, err)
	}
	return nil
}

// deleteScratch deletes a scratch stream, even when ctx is cancelled.
func deleteScratch(ctx context.Context, js jetstream.JetStream, name string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), assetTimeout)
	defer cancel()
	if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("bench: delete stream %s: %w", name, err)
	}
	return nil
}

// rawPublish publishes payload to the raw scratch stream as fast as
// JetStream acknowledges it (async, up to rawMaxPending in flight) for d,
// and returns the acknowledged messages and the time until the last ack.
func rawPublish(ctx context.Context, nc *nats.Conn, payload []byte, d time.Duration) (acked uint64, failed uint64, elapsed time.Duration, err error) {
	var ok, bad atomic.Uint64
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(rawMaxPending),
		jetstream.WithPublishAsyncAckHandler(func(jetstream.JetStream, *nats.Msg, *jetstream.PubAck) { ok.Add(1) }),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { bad.Add(1) }))
	if err != nil {
		return 0, 0, 0, err
	}
	start := time.Now()
	deadline := start.Add(d)
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return 0, 0, 0, err
		}
		_, err := js.PublishAsync(rawSubject, payload, jetstream.WithStallWait(rawStallWait))
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			continue // a slow disk (sync always): keep the window full until the deadline
		}
		if err != nil {
			return 0, 0, 0, fmt.Errorf("bench: raw publish: %w", err)
		}
	}
	// The acks of the last window count: the rate is over the time to the
	// last ack.
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, 0, 0, ctx.Err()
	case <-time.After(rawDrainTimeout):
		return 0, 0, 0, fmt.Errorf("bench: raw publish: %d acks missing after %s", js.PublishAsyncPending(), rawDrainTimeout)
	}
	return ok.Load(), bad.Load(), time.Since(start), nil
}

// replay reads the partition streams from their first message with an
// ordered consumer, as the enforcer and auditors do, up to
// maxReplayMessages or maxReplayDuration, and returns what it read.
func replay(ctx context.Context, js jetstream.JetStream, partitions int) (msgs, size uint64, elapsed time.Duration, err error) {
	start := time.Now()
	deadline := start.Add(maxReplayDuration)
	for n := range partitions {
		s, err := js.Stream(ctx, streams.StreamName(n))
		if err != nil {
			return 0, 0, 0, fmt.Errorf("bench: replay: %w", err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("bench: replay: %w", err)
		}
		last := info.State.LastSeq
		if info.State.Msgs == 0 {
			continue
		}
		cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err != nil {
			return 0, 0, 0, fmt.Errorf("bench: replay: %w", err)
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(replayBatch))
		if err != nil {
			return 0, 0, 0, fmt.Errorf("bench: replay: %w", err)
		}
		for {
			m, err := it.Next()
			if err != nil {
				it.Stop()
				return 0, 0, 0, fmt.Errorf("bench: replay %s: %w", streams.StreamName(n), err)
			}
			msgs++
			size += uint64(len(m.Data()))
			md, err := m.Metadata()
			if err != nil {
				it.Stop()
				return 0, 0, 0, fmt.Errorf("bench: replay: %w", err)
			}
			if md.Sequence.Stream >= last {
				break
			}
			if msgs >= maxReplayMessages || msgs%replayBatch == 0 && time.Now().After(deadline) {
				it.Stop()
				return msgs, size, time.Since(start), nil
			}
		}
		it.Stop()
		if ctx.Err() != nil {
			return 0, 0, 0, ctx.Err()
		}
	}
	return msgs, size, time.Since(start), nil
}
