package enforcer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// An append that landed, but whose acknowledgement the partition could
// not trust (here: the sync after it failed once, through a barrier served
// over NATS, whose failures are not sticky), is found by the reload, which
// syncs again and answers it with its real answer: the grant, at the
// sequence it landed at, not UNAVAILABLE. A retry gets the same answer and
// the grant is held once.
func TestReloadAnswersWhatLanded(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	disk := natstest.Connect(t, srv)
	var failNext, syncs atomic.Int32
	if _, err := disk.Subscribe(streams.SyncSubject, func(m *nats.Msg) {
		syncs.Add(1)
		if failNext.Add(-1) >= 0 {
			_ = m.Respond([]byte(`{"error":"EIO"}`))
			return
		}
		_ = m.Respond([]byte(`{}`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := disk.Flush(); err != nil {
		t.Fatal(err)
	}
	nc := natstest.Connect(t, srv)
	barrier, err := streams.DialBarrier(context.Background(), nc)
	if err != nil || barrier == nil {
		t.Fatalf("dial the barrier: %v %v", barrier, err)
	}
	l := startLedger(t, srv, func(c *enforcer.ServiceConfig) { c.Barrier = barrier })
	root := rootOf(3)
	mustOK(t, call(t, l.nc, root, "budget-set", fmt.Sprintf(`{"idempotency_key":"b","scope":%q,"name":"cap","limits":{"USD":"10"}}`, root)), nil)
	before, syncsBefore := l.streamMsgs(), syncs.Load()

	failNext.Store(1)
	reserve := fmt.Sprintf(`{"idempotency_key":"r1","scope":%q,"amounts":{"USD":"4"}}`, root)
	a := call(t, l.nc, root, "reserve", reserve)
	if a.Error != nil {
		t.Fatalf("reserve whose append landed: %s %s", a.Error.Code, a.Error.Message)
	}
	if got := syncs.Load() - syncsBefore; got < 2 {
		t.Fatalf("%d syncs since the budget, want the failed one and the reload's", got)
	}
	var r events.ReserveResult
	if err := json.Unmarshal(a.Result, &r); err != nil || r.Decision != events.DecisionGranted {
		t.Fatalf("reserve answered %s (%v), want the grant", a.Result, err)
	}
	if got := l.streamMsgs(); got != before+1 {
		t.Fatalf("stream has %d messages, want %d", got, before+1)
	}
	if r.Event.Seq == 0 {
		t.Fatalf("the answer names no event: %s", a.Result)
	}
	retry := call(t, l.nc, root, "reserve", reserve)
	if string(retry.Result) != string(a.Result) || retry.Error != nil {
		t.Fatalf("retry answered %s %+v, the original %s", retry.Result, retry.Error, a.Result)
	}
	var b events.BalanceResult
	mustOK(t, call(t, l.nc, root, "balance", fmt.Sprintf(`{"scope":%q}`, root)), &b)
	if u, _ := b.Instances[0].Units.Get("USD"); u.Reserved.String() != "4" {
		t.Fatalf("reserved %s, want 4 (once)", u.Reserved)
	}
}
