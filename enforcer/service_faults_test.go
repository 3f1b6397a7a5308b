package enforcer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// A battery of malformed requests: each gets the right code and a message
// naming what is wrong; the streams gain nothing; the server keeps serving.
func TestServiceBadInput(t *testing.T) {
	l := startLedger(t, natstest.RunServer(t, natstest.WithPartitions(testPartitions)))
	root := "tenant:acme"
	mustOK(t, call(t, l.nc, root, "budget-set", `{"idempotency_key":"b1","scope":"tenant:acme","name":"m","limits":{"USD":"10"}}`), nil)
	before := l.streamMsgs()
	huge := `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"1"},"labels":{"x":"` + strings.Repeat("a", 1<<20) + `"}}`
	cases := []struct {
		name, op, body string
		code           events.Code
		msg            string
	}{
		{"broken JSON", "reserve", `{"idempotency_key":"k","scope":`, events.CodeInvalidRequest, "malformed JSON"},
		{"not an object", "reserve", `[1,2]`, events.CodeInvalidRequest, "expected a JSON object"},
		{"empty body", "reserve", ``, events.CodeInvalidRequest, "empty"},
		{"wrong type", "reserve", `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"1"},"ttl_ms":"60"}`, events.CodeInvalidRequest, "ttl_ms"},
		{"float amount", "reserve", `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":0.4}}`, events.CodeInvalidRequest, "amounts.USD"},
		{"negative", "reserve", `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"-1"}}`, events.CodeInvalidRequest, `amounts.USD: negative amount "-1"`},
		{"exponent", "reserve", `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"1e3"}}`, events.CodeInvalidRequest, "amounts.USD: exponent"},
		{"10000 digits", "reserve", `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"` + strings.Repeat("9", 10000) + `"}}`, events.CodeInvalidRequest, "amounts.USD"},
		{"NaN", "reserve", `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"NaN"}}`, events.CodeInvalidRequest, "amounts.USD"},
		{"unknown field", "reserve", `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"1"},"colour":"red"}`, events.CodeInvalidRequest, "colour: unknown field"},
		{"bad scope", "reserve", `{"idempotency_key":"k","scope":"tenant:acme/run:a.b","amounts":{"USD":"1"}}`, events.CodeInvalidRequest, "scope"},
		{"pattern in reserve", "reserve", `{"idempotency_key":"k","scope":"tenant:acme/run:*","amounts":{"USD":"1"}}`, events.CodeInvalidRequest, "scope"},
		{"wrong root", "reserve", `{"idempotency_key":"k","scope":"tenant:globex","amounts":{"USD":"1"}}`, events.CodeForbidden, "tenant:globex"},
		{"missing key", "reserve", `{"scope":"tenant:acme","amounts":{"USD":"1"}}`, events.CodeInvalidRequest, "idempotency_key"},
		{"bad unit", "reserve", `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"U S D":"1"}}`, events.CodeInvalidRequest, "amounts"},
		{"1 MiB", "reserve", huge, events.CodeTooLarge, "limit is 65536"},
		{"unknown op", "transfer", `{}`, events.CodeInvalidRequest, `unknown operation "transfer"`},
		{"commit unknown id", "commit", `{"idempotency_key":"k","reservation_id":"nope","actual":{"USD":"1"}}`, events.CodeNotFound, "nope"},
		{"budget negative limit", "budget-set", `{"idempotency_key":"k","scope":"tenant:acme","name":"x","limits":{"USD":"-5"}}`, events.CodeInvalidRequest, "limits.USD"},
		{"budget bad period", "budget-set", `{"idempotency_key":"k","scope":"tenant:acme","name":"x","limits":{"USD":"5"},"period":"fortnightly"}`, events.CodeInvalidRequest, "period"},
		{"budget bad zone", "budget-set", `{"idempotency_key":"k","scope":"tenant:acme","name":"x","limits":{"USD":"5"},"timezone":"Mars/Olympus"}`, events.CodeInvalidRequest, "timezone"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := call(t, l.nc, root, c.op, c.body)
			if a.Error == nil || a.Error.Code != c.code || !strings.Contains(a.Error.Message, c.msg) {
				t.Fatalf("want %s containing %q, got %+v", c.code, c.msg, a.Error)
			}
		})
	}
	if after := l.streamMsgs(); after != before {
		t.Fatalf("streams gained %d messages from bad input", after-before)
	}
	// Still serving, and the key "k" was never consumed.
	var r events.ReserveResult
	mustOK(t, call(t, l.nc, root, "reserve", `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"1"}}`), &r)
	if r.Decision != events.DecisionGranted {
		t.Fatalf("after bad input: %+v", r)
	}
	// A request published to the mapped subject of the wrong partition is refused.
	wrong := (streams.Partition(root, testPartitions) + 1) % testPartitions
	msg, err := l.nc.Request(streams.PartitionSubject(wrong, root, "balance"), []byte(`{"scope":"tenant:acme"}`), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(msg.Data), "belongs to partition") {
		t.Fatalf("wrong partition: %s", msg.Data)
	}
}

// A reservation with ttl_ms 1000 is expired by the enforcer within about a
// second after its deadline, never before, and its hold is freed.
func TestServiceTTLExpiry(t *testing.T) {
	l := startLedger(t, natstest.RunServer(t, natstest.WithPartitions(testPartitions)))
	root := "tenant:ttl"
	mustOK(t, call(t, l.nc, root, "budget-set", `{"idempotency_key":"b","scope":"tenant:ttl","name":"m","limits":{"USD":"10"}}`), nil)
	var r events.ReserveResult
	mustOK(t, call(t, l.nc, root, "reserve", `{"idempotency_key":"k","scope":"tenant:ttl","amounts":{"USD":"4"},"ttl_ms":1000}`), &r)
	deadline := *r.ExpiresAt
	natstest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		var b events.BalanceResult
		mustOK(t, call(t, l.nc, root, "balance", `{"scope":"tenant:ttl"}`), &b)
		if u, _ := b.Instances[0].Units.Get("USD"); !u.Reserved.IsZero() {
			return fmt.Errorf("still reserved %s", u.Reserved)
		}
		return nil
	})
	freed := time.Now()
	ev := findEvent(t, l.js, root, events.TypeReservationExpired)
	if ev.At.Before(deadline) {
		t.Fatalf("expired at %s, before its deadline %s", ev.At, deadline)
	}
	if late := ev.At.Sub(deadline); late > 1200*time.Millisecond {
		t.Fatalf("expired %s after its deadline", late)
	}
	t.Logf("expired %s after the deadline; hold seen free %s after it", ev.At.Sub(deadline), freed.Sub(deadline))
	var c events.CommitResult
	mustOK(t, call(t, l.nc, root, "commit", fmt.Sprintf(`{"idempotency_key":"c","reservation_id":%q,"actual":{"USD":"1"}}`, r.ReservationID)), &c)
	if !c.Late || len(c.Released) != 0 {
		t.Fatalf("late commit: %+v", c)
	}
}

func findEvent(t testing.TB, js jetstream.JetStream, root string, typ events.Type) events.Event {
	t.Helper()
	n := streams.Partition(root, testPartitions)
	s, err := js.Stream(context.Background(), streams.StreamName(n))
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), streams.EventSubject(n, root, string(typ)))
	if err != nil {
		t.Fatalf("no %s event for %s: %v", typ, root, err)
	}
	ev, err := events.Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// answered is a request a client got an answer for.
type answered struct {
	root, op, body string
	result         json.RawMessage
}

// Crash mid-load: the server and the enforcer stop abruptly while 16
// clients reserve, commit and release. Restarted on the same store:
// every answered decision is in the stream at the sequence its answer
// names, balances equal the fold of the stream, and every answered
// request retried with its key returns the original answer.
//
// With group fsync (tally serve's --sync always on Linux) the server does
// not fsync each write and the answers wait for syncs of its store.
func TestServiceCrashRestart(t *testing.T) {
	t.Run("server sync", func(t *testing.T) { testCrashRestart(t, false) })
	if streams.GroupFsyncSupported {
		t.Run("group fsync", func(t *testing.T) { testCrashRestart(t, true) })
	}
}

func testCrashRestart(t *testing.T, groupFsync bool) {
	dir := t.TempDir()
	cfg := streams.ServerConfig{Name: "crash", DataDir: dir, Listen: "127.0.0.1:-1", Partitions: testPartitions}
	srv, err := streams.StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var barrier *streams.Barrier
	if groupFsync {
		sync, closeDir, err := streams.FileSystemSync(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = closeDir() })
		barrier = streams.NewBarrier(sync)
	}
	// BatchMin 2: batches from a queue of two, so this test's load goes
	// through atomic batches, not only pipelined singles.
	l := startLedger(t, srv, func(c *enforcer.ServiceConfig) { c.GroupCommit, c.BatchMin, c.Barrier = true, 2, barrier })
	roots := []string{"tenant:a", "tenant:b", "tenant:c", "tenant:d", "tenant:e"}
	for _, r := range roots {
		mustOK(t, call(t, l.nc, r, "budget-set", fmt.Sprintf(`{"idempotency_key":"b","scope":%q,"name":"m","limits":{"USD":"40"}}`, r)), nil)
		mustOK(t, call(t, l.nc, r, "budget-set", fmt.Sprintf(`{"idempotency_key":"b2","scope":"%s/run:*","name":"run","limits":{"USD":"3","tokens":"1000"}}`, r)), nil)
	}
	var (
		mu   sync.Mutex
		done []answered
		stop atomic.Bool
		wg   sync.WaitGroup
	)
	for c := range 16 {
		wg.Go(func() {
			nc := natstest.Connect(t, srv, nats.NoReconnect())
			for i := 0; !stop.Load(); i++ {
				root := roots[(c+i)%len(roots)]
				key := fmt.Sprintf("c%d-%d", c, i)
				body := fmt.Sprintf(`{"idempotency_key":%q,"scope":"%s/run:r%d","amounts":{"USD":"0.5","tokens":"10"}}`, key, root, i%7)
				a, ok := tryCall(nc, root, "reserve", body)
				if !ok {
					return
				}
				mu.Lock()
				done = append(done, answered{root, "reserve", body, a.Result})
				mu.Unlock()
				var r events.ReserveResult
				if json.Unmarshal(a.Result, &r) != nil || r.Decision != events.DecisionGranted {
					continue
				}
				op, body := "commit", fmt.Sprintf(`{"idempotency_key":"%s-c","reservation_id":%q,"actual":{"USD":"0.45"}}`, key, r.ReservationID)
				if i%3 == 0 {
					op, body = "release", fmt.Sprintf(`{"idempotency_key":"%s-r","reservation_id":%q}`, key, r.ReservationID)
				}
				if a, ok = tryCall(nc, root, op, body); !ok {
					return
				}
				mu.Lock()
				done = append(done, answered{root, op, body, a.Result})
				mu.Unlock()
			}
		})
	}
	natstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(done) < 400 {
			return fmt.Errorf("%d answers so far", len(done))
		}
		return nil
	})
	// Crash: the server goes away under the enforcer and the clients.
	srv.Shutdown()
	stop.Store(true)
	wg.Wait()
	l.stop()
	srv.WaitForShutdown()
	t.Logf("%d answered requests before the crash", len(done))

	srv2, err := streams.StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv2.Shutdown(); srv2.WaitForShutdown() })
	// The new owner replays through TCP loopback, as tally serve does.
	replayConn := natstest.ConnectTCP(t, srv2)
	l2 := startLedger(t, srv2, func(c *enforcer.ServiceConfig) { c.ReplayConn, c.Barrier = replayConn, barrier })
	if replayConn.Stats().InMsgs < 400 {
		t.Fatalf("the restart read %d messages through ReplayConn, not the %d+ events", replayConn.Stats().InMsgs, len(done))
	}

	// Every answered decision is in the stream where its answer says.
	for _, d := range done {
		var ref struct{ Event events.EventRef }
		if err := json.Unmarshal(d.result, &ref); err != nil {
			t.Fatal(err)
		}
		if ref.Event.Seq == 0 {
			t.Fatalf("answer without event: %s", d.result)
		}
		s, err := l2.js.Stream(context.Background(), streams.StreamName(ref.Event.Partition))
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetMsg(context.Background(), ref.Event.Seq)
		if err != nil {
			t.Fatalf("answered %s not in stream: %v", d.op, err)
		}
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := events.ResultOf(ev, ref.Event)
		if got := mustJSON(t, want); got != string(d.result) {
			t.Fatalf("stream says %s, client was told %s", got, d.result)
		}
	}
	// Retrying every answered request returns the original answer.
	for _, d := range done {
		a := call(t, l2.nc, d.root, d.op, d.body)
		mustOK(t, a, nil)
		if string(a.Result) != string(d.result) {
			t.Fatalf("retry of %s %s:\n got %s\nwant %s", d.op, d.body, a.Result, d.result)
		}
	}
	// Balances equal an independent fold of the streams.
	for _, root := range roots {
		n := streams.Partition(root, testPartitions)
		st := enforcer.New(enforcer.Config{Partition: n})
		if _, err := enforcer.Replay(context.Background(), l2.js, n, st, nil); err != nil {
			t.Fatal(err)
		}
		for i := range 7 {
			scope := fmt.Sprintf("%s/run:r%d", root, i)
			body := fmt.Sprintf(`{"scope":%q}`, scope)
			a := call(t, l2.nc, root, "balance", body)
			req, _ := events.ParseRequest(events.OpBalance, []byte(body))
			d := st.Decide(enforcer.Command{Op: events.OpBalance, Root: root, Request: req}, time.Now())
			if want := mustJSON(t, d.Result); string(a.Result) != want {
				t.Fatalf("balance of %s: enforcer %s, fold %s", scope, a.Result, want)
			}
		}
	}
}

func tryCall(nc *nats.Conn, root, op, body string) (events.Answer, bool) {
	msg, err := nc.Request(streams.RequestSubject(root, op), []byte(body), 2*time.Second)
	if err != nil {
		return events.Answer{}, false
	}
	var a events.Answer
	if json.Unmarshal(msg.Data, &a) != nil || a.Error != nil {
		return a, false
	}
	return a, true
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A message appended behind the enforcer's back (here: the same owner's
// claim, as after a lost ack) makes its next append fail the fence; it
// reloads, answers that request UNAVAILABLE, and serves on consistently.
func TestServiceFenceReload(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	// The reload replays through TCP loopback, as in tally serve.
	replayConn := natstest.ConnectTCP(t, srv)
	l := startLedger(t, srv, func(c *enforcer.ServiceConfig) { c.Owner, c.ReplayConn = "me", replayConn })
	root := "tenant:fence"
	mustOK(t, call(t, l.nc, root, "budget-set", `{"idempotency_key":"b","scope":"tenant:fence","name":"m","limits":{"USD":"10"}}`), nil)
	n := streams.Partition(root, testPartitions)
	s, err := l.js.Stream(context.Background(), streams.StreamName(n))
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	prev, err := s.GetMsg(context.Background(), last.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	ev := events.Event{V: events.Version, ID: "01FORGED0000000000000000000", Type: events.TypePartitionClaimed, Partition: n,
		At: time.Now().UTC(), Prev: events.Hash(prev.Data), Data: &events.PartitionClaimed{Owner: "me", Epoch: 99}}
	raw, err := events.Encode(&ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.js.Publish(context.Background(), streams.EventSubject(n, "_", string(ev.Type)), raw); err != nil {
		t.Fatal(err)
	}
	before := replayConn.Stats().InMsgs
	body := `{"idempotency_key":"k","scope":"tenant:fence","amounts":{"USD":"4"}}`
	a := call(t, l.nc, root, "reserve", body)
	mustCode(t, a, events.CodeUnavailable)
	var r events.ReserveResult
	mustOK(t, call(t, l.nc, root, "reserve", body), &r)
	if r.Decision != events.DecisionGranted {
		t.Fatalf("after reload: %+v", r)
	}
	var b events.BalanceResult
	mustOK(t, call(t, l.nc, root, "balance", `{"scope":"tenant:fence"}`), &b)
	if u, _ := b.Instances[0].Units.Get("USD"); u.Reserved.String() != "4" {
		t.Fatalf("reserved %s after reload, want 4 (once)", u.Reserved)
	}
	if replayConn.Stats().InMsgs == before {
		t.Fatal("the reload did not read through ReplayConn")
	}
}
