package enforcer_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// appendEvents reads the tally_append_events histogram: appends sent and
// the events they carried.
func appendEvents(t *testing.T, reg *prometheus.Registry) (appends uint64, evs float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tally_append_events" {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatal("no tally_append_events series")
	return 0, 0
}

// The events-per-append histogram counts every event the stream gains, and
// a burst of requests on one partition with group commit goes out in
// atomic batches, not one message at a time.
func TestAppendEventsMetric(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	reg := prometheus.NewRegistry()
	l := startLedger(t, srv, func(c *enforcer.ServiceConfig) {
		// Pinned, not leased: a lease lost under a loaded machine would
		// append a partition.claimed event the count below does not expect.
		c.Own = []int{0}
		c.GroupCommit, c.BatchMin, c.Metrics = true, 2, enforcer.NewMetrics(reg)
	})
	root := rootOf(0)
	mustOK(t, call(t, l.nc, root, "budget-set", fmt.Sprintf(`{"idempotency_key":"b","scope":%q,"name":"m","limits":{"USD":"1000"}}`, root)), nil)
	msgs0 := l.streamMsgs()
	appends0, evs0 := appendEvents(t, reg)

	// 64 reserves sent at once: the decision loop finds several waiting.
	const n = 64
	answers := make(chan *nats.Msg, n)
	inbox := nats.NewInbox()
	sub, err := l.nc.ChanSubscribe(inbox, answers)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for i := range n {
		body := fmt.Sprintf(`{"idempotency_key":"r%d","scope":%q,"amounts":{"USD":"1"}}`, i, root)
		if err := l.nc.PublishRequest(streams.RequestSubject(root, "reserve"), inbox, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for range n {
		select {
		case m := <-answers:
			var a events.Answer
			if err := json.Unmarshal(m.Data, &a); err != nil {
				t.Fatalf("undecodable answer %q: %v", m.Data, err)
			}
			var r events.ReserveResult
			mustOK(t, a, &r)
			if r.Decision != events.DecisionGranted {
				t.Fatalf("reserve %s", r.Decision)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("not every reserve was answered")
		}
	}

	appends, evs := appendEvents(t, reg)
	gained := l.streamMsgs() - msgs0
	if gained != n {
		t.Fatalf("the streams gained %d messages for %d reserves", gained, n)
	}
	if got := evs - evs0; got != float64(gained) {
		t.Errorf("tally_append_events sums %v events, the streams gained %d", got, gained)
	}
	if got := appends - appends0; got >= gained {
		t.Errorf("%d appends for %d events: no atomic batch", got, gained)
	} else {
		t.Logf("%d events in %d appends", gained, got)
	}
}
