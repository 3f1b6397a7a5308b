package enforcer

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/streams"
)

// Replay is a pipeline over the machine's CPUs: a reader goroutine fetches
// the stream with an ordered consumer and cuts it into batches, decoder
// goroutines (one per CPU, up to maxReplayDecoders) decode and hash each
// batch's events, and the caller's goroutine checks the hash chain and
// applies them to the State — the core stays single-threaded. Batches go
// to the decoders round robin and are taken back in the same round, so the
// stream's order holds without any reordering. The queues are bounded: the
// reader runs at most about decoders×(2×replayQueue+1)+1 batches ahead of
// Apply. The consumer's buffer (replayPull) is not what limits replay: the
// raw ordered consumer spent the same 6–8 µs of CPU per message with 256,
// 1024, 4096 or 8192 messages buffered (make bench-recovery's history),
// and decoding and applying cost several times that.
const (
	replayBatchLen    = 128  // messages per batch
	maxReplayDecoders = 4    // decoding goroutines at most
	replayQueue       = 2    // batches waiting per decoder, on each side
	replayPull        = 1024 // messages the ordered consumer buffers
)

// Replay's patience with a stalled consumer (a variable for tests).
var replayStall = 10 * time.Second

const replayStalls = 5

// replayMsg is one message of the stream on its way to Apply.
type replayMsg struct {
	seq  uint64
	raw  []byte
	ev   events.Event // set by a decoder
	hash string       // events.Hash(raw), set by a decoder
}

// replayBatch is a run of consecutive messages. A batch with err is the
// last one: the replay fails with err once msgs are applied.
type replayBatch struct {
	msgs []replayMsg
	err  error
}

// Replay folds partition n's stream into st from st.LastSeq()+1 to the
// head, verifying the hash chain, and returns the last message's hash.
// visit, if not nil, sees every event after it is applied, on the
// caller's goroutine. On an error st holds every event before the failing
// one. Replay owns the goroutines it starts: none is left when it returns.
func Replay(ctx context.Context, js jetstream.JetStream, n int, st *State, visit func(seq uint64, ev events.Event, raw []byte)) (string, error) {
	return replay(ctx, js, n, st, visit, min(runtime.GOMAXPROCS(0), maxReplayDecoders))
}

// replay is Replay with the given number of decoders.
func replay(ctx context.Context, js jetstream.JetStream, n int, st *State, visit func(seq uint64, ev events.Event, raw []byte), decoders int) (string, error) {
	stream, err := js.Stream(ctx, streams.StreamName(n))
	if err != nil {
		return "", err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return "", err
	}
	last := info.State.LastSeq
	hash := ""
	start := st.LastSeq() + 1
	if st.LastSeq() > 0 {
		m, err := stream.GetMsg(ctx, st.LastSeq())
		if err != nil {
			return "", fmt.Errorf("read seq %d: %w", st.LastSeq(), err)
		}
		hash = events.Hash(m.Data)
	}
	if last < start {
		return hash, nil
	}

	// The pipeline's goroutines end when pctx does: on return, whatever
	// the reason (an error, a panic in Apply or visit, the head reached).
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	ins := make([]chan *replayBatch, decoders)
	outs := make([]chan *replayBatch, decoders)
	for i := range ins {
		ins[i] = make(chan *replayBatch, replayQueue)
		outs[i] = make(chan *replayBatch, replayQueue)
		wg.Go(func() { decodeReplay(pctx, ins[i], outs[i]) })
	}
	wg.Go(func() { readReplay(pctx, stream, start, last, ins) })

	for k := 0; ; k++ {
		b, ok := <-outs[k%decoders]
		if !ok {
			// The reader stops without a last batch only when pctx ends,
			// and pctx ends before Replay returns only when ctx does.
			if err := ctx.Err(); err != nil {
				return "", err
			}
			panic("enforcer: replay pipeline ended without a last batch")
		}
		for i := range b.msgs {
			m := &b.msgs[i]
			if m.ev.Prev != hash {
				return "", fmt.Errorf("replay seq %d: hash chain broken: prev %q, previous message hashes to %q", m.seq, m.ev.Prev, hash)
			}
			st.Apply(m.seq, m.ev)
			hash = m.hash
			if visit != nil {
				visit(m.seq, m.ev, m.raw)
			}
			if m.seq >= last {
				return hash, nil
			}
			if err := ctx.Err(); err != nil {
				return "", err
			}
		}
		if b.err != nil {
			return "", b.err
		}
	}
}

// readReplay reads the stream from seq from up to last and hands it out in
// batches, round robin over ins, which it closes when it returns. Its last
// batch either holds last or carries the error that stopped it. An
// ordered consumer can stall while a cluster moves a stream's leader: when
// no message comes for a replayStall (watchReplay), it starts a new
// consumer at the next sequence needed (a few times, then fails).
func readReplay(ctx context.Context, stream jetstream.Stream, from, last uint64, ins []chan *replayBatch) {
	defer func() {
		for _, in := range ins {
			close(in)
		}
	}()
	k := 0
	b := &replayBatch{msgs: make([]replayMsg, 0, replayBatchLen)}
	// send hands b to the next decoder; false means ctx ended.
	send := func() bool {
		select {
		case ins[k%len(ins)] <- b:
			k++
			b = &replayBatch{msgs: make([]replayMsg, 0, replayBatchLen)}
			return true
		case <-ctx.Done():
			return false
		}
	}
	fail := func(err error) {
		b.err = err
		send()
	}
	open := func(from uint64) (jetstream.MessagesContext, error) {
		cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from})
		if err != nil {
			return nil, err
		}
		return cons.Messages(jetstream.PullMaxMessages(replayPull))
	}
	it, err := open(from)
	if err != nil {
		fail(err)
		return
	}
	// A watchdog, not a deadline on each Next (a timer per message was a
	// few per cent of replay's CPU): when a whole replayStall passes
	// without a message it stops the iterator, and the stopped Next is
	// handled as a stall; it stops it at once when ctx ends.
	var (
		cur      atomic.Pointer[jetstream.MessagesContext]
		progress atomic.Uint64
		watched  sync.WaitGroup
	)
	first := it // the watchdog reads its own copy, never the reader's variable
	cur.Store(&first)
	done := make(chan struct{})
	watched.Go(func() { watchReplay(ctx, done, &cur, &progress) })
	defer func() {
		close(done)
		watched.Wait()
		(*cur.Load()).Stop()
	}()
	read := from - 1 // the last sequence read
	stalls := 0
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				fail(ctx.Err())
				return
			}
			if stalls++; stalls > replayStalls {
				fail(fmt.Errorf("replay: no message after seq %d for %d×%s: %w", read, replayStalls, replayStall, err))
				return
			}
			next, err := open(read + 1)
			if err != nil {
				fail(err)
				return
			}
			it.Stop()
			it = next
			cur.Store(&next)
			continue
		}
		progress.Add(1)
		stalls = 0
		md, err := msg.Metadata()
		if err != nil {
			fail(err)
			return
		}
		read = md.Sequence.Stream
		b.msgs = append(b.msgs, replayMsg{seq: read, raw: msg.Data()})
		if read >= last {
			send()
			return
		}
		if len(b.msgs) == cap(b.msgs) && !send() {
			return
		}
	}
}

// watchReplay stops the reader's current iterator when a replayStall
// passes without progress, or when ctx ends; it returns when done closes.
func watchReplay(ctx context.Context, done <-chan struct{}, cur *atomic.Pointer[jetstream.MessagesContext], progress *atomic.Uint64) {
	tick := time.NewTicker(replayStall)
	defer tick.Stop()
	seen := progress.Load()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			(*cur.Load()).Stop()
			return
		case <-tick.C:
			if p := progress.Load(); p != seen {
				seen = p
				continue
			}
			(*cur.Load()).Stop()
		}
	}
}

// decodeReplay decodes and hashes the messages of each batch from in and
// passes the batch on to out, which it closes when it returns. A message
// that does not decode ends its batch, with the error.
func decodeReplay(ctx context.Context, in <-chan *replayBatch, out chan<- *replayBatch) {
	defer close(out)
	var dec events.Decoder // shares the partition's repeating strings
	for b := range in {
		if ctx.Err() != nil {
			return // Replay has returned: what is queued is not needed
		}
		for i := range b.msgs {
			m := &b.msgs[i]
			ev, err := dec.Decode(m.raw)
			if err != nil {
				b.msgs, b.err = b.msgs[:i], fmt.Errorf("replay seq %d: %w", m.seq, err)
				break
			}
			m.ev, m.hash = ev, events.Hash(m.raw)
		}
		select {
		case out <- b:
		case <-ctx.Done():
			return
		}
	}
}
