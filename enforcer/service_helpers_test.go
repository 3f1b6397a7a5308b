package enforcer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

const (
	testPartitions = 4
	testLeaseTTL   = 3 * time.Second
)

// ledger is a running enforcer against a real in-process server.
type ledger struct {
	t      testing.TB
	srv    *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	cancel context.CancelFunc
	done   chan error
	own    []int // pinned partitions; nil: all, through leases
}

type ledgerOpt func(*enforcer.ServiceConfig)

func startLedger(t testing.TB, srv *server.Server, opts ...ledgerOpt) *ledger {
	t.Helper()
	return startLedgerOn(t, srv, natstest.Connect(t, srv), opts...)
}

// startLedgerOn is startLedger on the given connection.
func startLedgerOn(t testing.TB, srv *server.Server, nc *nats.Conn, opts ...ledgerOpt) *ledger {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A short lease TTL: after an abrupt crash the restarted enforcer (a
	// new owner) waits for the dead one's leases to expire.
	if _, err := streams.Ensure(ctx, js, streams.Config{Partitions: testPartitions, LeaseTTL: testLeaseTTL}); err != nil {
		t.Fatal(err)
	}
	cfg := enforcer.ServiceConfig{Partitions: testPartitions}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	for _, o := range opts {
		o(&cfg)
	}
	svc, err := enforcer.NewService(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := &ledger{t: t, srv: srv, nc: nc, js: js, done: make(chan error, 1), own: cfg.Own}
	rctx, rcancel := context.WithCancel(context.Background())
	l.cancel = rcancel
	go func() { l.done <- svc.Run(rctx) }()
	t.Cleanup(l.stop)
	l.waitServing()
	return l
}

func (l *ledger) stop() {
	if l.cancel == nil {
		return
	}
	l.cancel()
	select {
	case err := <-l.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			l.t.Errorf("enforcer stopped with %v", err)
		}
	case <-time.After(15 * time.Second):
		l.t.Errorf("enforcer did not stop")
	}
	l.cancel = nil
}

// waitServing polls until every partition answers.
func (l *ledger) waitServing() {
	natstest.CheckFor(l.t, 10*time.Second, 20*time.Millisecond, func() error {
		for n := 0; n < testPartitions; n++ {
			if l.own != nil && !slices.Contains(l.own, n) {
				continue
			}
			root := rootOf(n)
			if _, err := l.nc.Request(streams.RequestSubject(root, "budget-list"), []byte(`{}`), 200*time.Millisecond); err != nil {
				return fmt.Errorf("partition %d: %w", n, err)
			}
		}
		return nil
	})
}

// rootOf finds a root that lands on partition n.
func rootOf(n int) string {
	for i := 0; ; i++ {
		r := fmt.Sprintf("tenant:p%d-%d", n, i)
		if streams.Partition(r, testPartitions) == n {
			return r
		}
	}
}

// call sends a request and decodes the answer.
func call(t testing.TB, nc *nats.Conn, root, op, body string) events.Answer {
	t.Helper()
	msg, err := nc.Request(streams.RequestSubject(root, op), []byte(body), 5*time.Second)
	if err != nil {
		t.Fatalf("%s %s: %v", op, body, err)
	}
	var a events.Answer
	if err := json.Unmarshal(msg.Data, &a); err != nil {
		t.Fatalf("%s: undecodable answer %q: %v", op, msg.Data, err)
	}
	return a
}

func mustOK(t testing.TB, a events.Answer, into any) {
	t.Helper()
	if a.Error != nil {
		t.Fatalf("unexpected error answer %s: %s", a.Error.Code, a.Error.Message)
	}
	if into != nil {
		if err := json.Unmarshal(a.Result, into); err != nil {
			t.Fatalf("decode %s: %v", a.Result, err)
		}
	}
}

func mustCode(t testing.TB, a events.Answer, code events.Code) {
	t.Helper()
	if a.Error == nil || a.Error.Code != code {
		t.Fatalf("want %s, got %+v (result %s)", code, a.Error, a.Result)
	}
}

// streamMsgs counts the messages of every partition stream.
func (l *ledger) streamMsgs() uint64 {
	l.t.Helper()
	var total uint64
	for n := 0; n < testPartitions; n++ {
		s, err := l.js.Stream(context.Background(), streams.StreamName(n))
		if err != nil {
			l.t.Fatal(err)
		}
		info, err := s.Info(context.Background())
		if err != nil {
			l.t.Fatal(err)
		}
		total += info.State.Msgs
	}
	return total
}
