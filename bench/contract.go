package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/streams"
)

// The contract floor ("B1-contract"): B1 carrying, per request, everything
// DESIGN makes a decision carry through the server — and deciding nothing.
// Its requests are the tally phase's own (the same steps and bodies), sent
// to subjects of contractFamily that the server maps to partitions as it
// maps tally's; a responder per partition, in a queue group, appends per
// request the event tally writes for it (rendered once, by the core, for
// the bench's hierarchy) to a stream configured as the partition streams,
// on the event's subject, with Nats-Msg-Id, the expected last sequence and
// the previous message's id, pipelined, and answers after the ack with
// tally's answer to it (a decide appends nothing and is answered at once).
// What tally takes beyond it is its own work: parsing and hashing the
// request, deciding, applying, encoding, the hash chain, ordering the
// answers.
const (
	contractFamily       streams.Family = "tally.bench.c"
	contractStreamPrefix                = "TALLY_BENCH_C"
)

// contractEvent is what the floor appends and answers for one operation.
type contractEvent struct {
	typ    string // event type, the last token of its subject
	event  []byte // the event as tally encodes it
	answer []byte // tally's answer to the request
}

// contractEvents renders, with the core, what tally writes and answers for
// the tally phase's steps against the bench's hierarchy, by op: a granted
// reserve, its commit, a release, and a decide (which appends nothing).
func contractEvents(load *tallyLoad) (map[events.Op]contractEvent, error) {
	root := load.roots[0]
	s := enforcer.New(enforcer.Config{Partition: streams.Partition(root, streams.DefaultPartitions)})
	now := time.Now().UTC()
	decide := func(op events.Op, body []byte) (enforcer.Decision, error) {
		req, err := events.ParseRequest(op, body)
		if err != nil {
			return enforcer.Decision{}, fmt.Errorf("bench: contract floor: %s request: %w", op, err)
		}
		d := s.Step(enforcer.Command{Op: op, Root: root, Request: req, NewID: ulid.Make().String()}, now)
		if d.Err != nil || (op != events.OpDecide && len(d.Events) == 0) {
			return d, fmt.Errorf("bench: contract floor: %s decided no event: %v", op, d.Err)
		}
		return d, nil
	}
	for i, b := range budgetsOf(root) {
		b.IdempotencyKey = "contract-budget-" + strconv.Itoa(i)
		body, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("bench: contract floor: %w", err)
		}
		if _, err := decide(events.OpBudgetSet, body); err != nil {
			return nil, err
		}
	}
	out := map[events.Op]contractEvent{}
	add := func(op events.Op, ev events.Event) error {
		// As the enforcer seals it: an id and the previous event's hash.
		ev.ID, ev.Prev = ulid.Make().String(), strings.Repeat("0", 64)
		raw, err := events.Encode(&ev)
		if err != nil {
			return fmt.Errorf("bench: contract floor: encode %s: %w", ev.Type, err)
		}
		r, _ := events.ResultOf(ev, events.EventRef{Partition: ev.Partition, Seq: 1 << 20})
		out[op] = contractEvent{typ: string(ev.Type), event: raw, answer: events.AppendResultAnswer(nil, r)}
		return nil
	}
	// Two steps of one agent, as the tally phase's: the first reserve is
	// committed, the second released.
	for cycle, closeOp := range []events.Op{events.OpCommit, events.OpRelease} {
		c := &agent{cycle: uint64(cycle + 1)}
		d, err := decide(events.OpReserve, load.reserveBody(c, root, true))
		if err != nil {
			return nil, err
		}
		granted := d.Events[0]
		id := granted.Data.(*events.ReservationGranted).ReservationID
		body := load.commitBody(c, id)
		if closeOp == events.OpRelease {
			body = load.releaseBody(c, id)
		}
		closed, err := decide(closeOp, body)
		if err != nil {
			return nil, err
		}
		if err := add(events.OpReserve, granted); err != nil {
			return nil, err
		}
		if err := add(closeOp, closed.Events[0]); err != nil {
			return nil, err
		}
	}
	d, err := decide(events.OpDecide, load.reserveBody(&agent{cycle: 3}, root, false))
	if err != nil {
		return nil, err
	}
	out[events.OpDecide] = contractEvent{answer: events.ResultAnswer(d.Result)}
	return out, nil
}

// contractResponder is partition n's floor: a single writer, as the
// subscription's callbacks run one at a time.
type contractResponder struct {
	nc        *nats.Conn
	n         int
	reqPrefix string // of its requests' subjects, up to the root
	events    map[events.Op]contractEvent
	acks      *ackWaits[contractPending]

	// On the request subscription's goroutine only.
	lastSeq uint64 // the stream's last sequence, as far as the appends sent expect
	prevID  string
}

type contractPending struct {
	reply  string
	answer []byte
}

// errAnswerPrefix starts the floor's error answers, which classifyTally
// counts as failures.
const errAnswerPrefix = `{"error":{"code":"`

func (r *contractResponder) onRequest(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	rest := m.Subject[len(r.reqPrefix):] // <root>.<op>
	dot := strings.LastIndexByte(rest, '.')
	ev, ok := r.events[events.Op(rest[dot+1:])]
	switch {
	case dot < 0 || !ok:
		_ = m.Respond([]byte(errAnswerPrefix + codeBadAnswer + `","message":"the contract floor takes reserve, commit, release and decide"}}`))
		return
	case ev.event == nil: // a decide: nothing to append
		_ = m.Respond(ev.answer)
		return
	}
	msg := nats.NewMsg(contractFamily.Event(r.n, rest[:dot], ev.typ))
	msg.Data = ev.event
	id := ulid.Make().String()
	msg.Header.Set(jetstream.MsgIDHeader, id)
	msg.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(r.lastSeq, 10))
	if r.prevID != "" {
		msg.Header.Set(jetstream.ExpectedLastMsgIDHeader, r.prevID)
	}
	var tok string
	msg.Reply, tok = r.acks.add(contractPending{reply: m.Reply, answer: ev.answer})
	if err := r.nc.PublishMsg(msg); err != nil {
		r.acks.take(tok)
		_ = m.Respond(fmt.Appendf(nil, `{"error":{"code":%q,"message":%q}}`, codeTransport, err.Error()))
		return
	}
	r.lastSeq, r.prevID = r.lastSeq+1, id
}

func (r *contractResponder) onAck(m *nats.Msg) {
	p, ok := r.acks.takeFor(m)
	if !ok {
		return
	}
	if bytes.Contains(m.Data, []byte(`"error"`)) {
		// A failed append (a fence, a timeout): answered as an error, and
		// every later append of this partition fails its fence too.
		_ = r.nc.Publish(p.reply, fmt.Appendf(nil, `{"error":{"code":"APPEND_FAILED","message":%q}}`, m.Data))
		return
	}
	_ = r.nc.Publish(p.reply, p.answer)
}

// runB1Contract measures the contract floor: it creates the P streams and
// the mapping, runs the tally phase's steps against the responders, and
// removes them again.
func runB1Contract(ctx context.Context, cfg Config, conns []*nats.Conn, resp *nats.Conn, js jetstream.JetStream, dep *deployment, load *tallyLoad) (l *Load, err error) {
	if len(dep.servers) == 0 {
		return nil, errors.New("bench: the contract floor maps subjects on the servers the bench starts: use --embedded or --cluster3")
	}
	evs, err := contractEvents(load)
	if err != nil {
		return nil, err
	}
	p := dep.partitions
	defer func() {
		for n := range p { // those not created are not found: no error
			if derr := deleteScratch(ctx, js, contractStream(n)); err == nil && derr != nil {
				l, err = nil, derr
			}
		}
	}()
	if err := createContractStreams(ctx, js, p, dep.replicas); err != nil {
		return nil, err
	}
	if err := mapContract(dep.servers, p); err != nil {
		return nil, err
	}
	defer func() {
		if uerr := unmapContract(dep.servers); err == nil && uerr != nil {
			l, err = nil, uerr
		}
	}()
	subs, err := subscribeContract(resp, p, evs)
	if err != nil {
		return nil, err
	}
	defer unsubscribeAll(subs)
	res, err := phase{name: "B1-contract", unit: "requests", conns: conns, cfg: cfg, step: load.under(contractFamily).step}.run(ctx)
	if err != nil {
		return nil, err
	}
	l = loadOf(res)
	l.AppendBytes = len(evs[events.OpReserve].event)
	l.AnswerBytes = len(evs[events.OpReserve].answer)
	return l, nil
}

// contractStream is the name of the floor's stream of partition n.
func contractStream(n int) string { return contractStreamPrefix + strconv.Itoa(n) }

// createContractStreams (re)creates the floor's streams of p partitions,
// configured as the partition streams, each on its events' subjects.
func createContractStreams(ctx context.Context, js jetstream.JetStream, p, replicas int) error {
	for n := range p {
		sc := streams.StreamConfigLike(contractStream(n), contractFamily.EventWildcard(n), streams.Config{Replicas: replicas})
		if err := createScratchConfig(ctx, js, sc); err != nil {
			return err
		}
	}
	return nil
}

// subscribeContract starts the floor's responder of each of p partitions
// on nc, each with its own ack inbox, and returns the subscriptions.
func subscribeContract(nc *nats.Conn, p int, evs map[events.Op]contractEvent) ([]*nats.Subscription, error) {
	var subs []*nats.Subscription
	for n := range p {
		wildcard := contractFamily.PartitionWildcard(n)
		r := &contractResponder{nc: nc, n: n, reqPrefix: strings.TrimSuffix(wildcard, ">"), events: evs,
			acks: newAckWaits[contractPending](nc)}
		var err error
		if subs, err = subscribeResponder(nc, subs, "contract floor", r.acks.prefix, wildcard, r.onAck, r.onRequest); err != nil {
			return nil, err
		}
	}
	return subs, nc.Flush()
}

// mapContract maps the floor's request subjects to partitions on every
// server (the mapping applies where the client is connected).
func mapContract(servers []*server.Server, p int) error {
	for _, s := range servers {
		if err := streams.MapPartitions(s, "", contractFamily, p); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	return nil
}

func unmapContract(servers []*server.Server) error {
	for _, s := range servers {
		if err := streams.UnmapPartitions(s, "", contractFamily); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	return nil
}
