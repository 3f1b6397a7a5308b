package enforcer_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// BenchmarkJetStreamAppend is the yardstick issue 2 holds the core
// against: how fast this machine's JetStream appends events, so that the
// core benchmarks (BenchmarkReserveDecideApply) can be read as a ratio to
// it in the same sitting. One in-process connection publishes b.N messages
// of a grant event's size asynchronously (at most 4096 unacknowledged) to
// partition 0's stream as created by streams.Ensure (file storage, the
// dedupe window, `--sync interval`), each with its own Nats-Msg-Id as the
// decision loop sends, and waits for every ack. It reports appends/s.
func BenchmarkJetStreamAppend(b *testing.B) {
	srv := natstest.RunServer(b, natstest.WithPartitions(1))
	_, js := natstest.Ledger(b, srv, 1, nats.Name("append-bench"))
	payload := grantEvent(b)
	subject := streams.EventSubject(0, "tenant:acme", string(events.TypeReservationGranted))
	msg := func(i int) *nats.Msg {
		m := nats.NewMsg(subject)
		m.Data = payload
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("bench-%d", i))
		return m
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	start := time.Now()
	i := 0
	for b.Loop() {
		if _, err := js.PublishMsgAsync(msg(i)); err != nil {
			b.Fatalf("append %d: %v", i, err)
		}
		i++
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatalf("acks of %d appends: %v", i, ctx.Err())
	}
	b.ReportMetric(float64(i)/time.Since(start).Seconds(), "appends/s")
	st := natstest.PartitionState(b, js, 0)
	if st.Msgs < uint64(i) {
		b.Fatalf("stream holds %d messages after %d appends", st.Msgs, i)
	}
}

// grantEvent is the encoded grant of a reserve against the core
// benchmarks' hierarchy (tenant > workflow > run:*, USD and tokens), as
// the decision loop appends it.
func grantEvent(b *testing.B) []byte {
	s := enforcer.New(enforcer.Config{Partition: 0})
	now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	step := func(op events.Op, body string) enforcer.Decision {
		req, err := events.ParseRequest(op, []byte(body))
		if err != nil {
			b.Fatalf("%s %s: %v", op, body, err)
		}
		d := s.Step(enforcer.Command{Op: op, Root: "tenant:acme", Request: req, NewID: "01JDQ7Z5N3W8K2V6X9Y4T0R1PQ"}, now)
		if d.Err != nil || len(d.Events) == 0 {
			b.Fatalf("%s %s: %+v", op, body, d.Err)
		}
		return d
	}
	for i, scope := range []string{"tenant:acme", "tenant:acme/workflow:code-review", "tenant:acme/workflow:code-review/run:*"} {
		step(events.OpBudgetSet, fmt.Sprintf(`{"idempotency_key":"b%d","scope":%q,"name":"b%d","limits":{"USD":"1000000000000","tokens":"1000000000000000"},"period":%q}`,
			i, scope, i, []string{"monthly", "daily", "none"}[i]))
	}
	d := step(events.OpReserve, `{"idempotency_key":"k1","scope":"tenant:acme/workflow:code-review/run:r-42","amounts":{"USD":"0.42","tokens":"12000"}}`)
	ev := d.Events[0]
	ev.ID, ev.Prev = "01JDQ7Z5N3W8K2V6X9Y4T0R1PR", strings.Repeat("ab", 32)
	raw, err := events.Encode(&ev)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}
