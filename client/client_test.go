package client_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/client"
	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

const testPartitions = 2

// ledger creates the streams on a real in-process server; start runs an
// enforcer on it until the test ends.
func ledger(t *testing.T) (*server.Server, *nats.Conn) {
	t.Helper()
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	nc, _ := natstest.Ledger(t, srv, testPartitions)
	return srv, nc
}

func start(t *testing.T, srv *server.Server, opts ...nats.Option) {
	t.Helper()
	svc, err := enforcer.NewService(natstest.Connect(t, srv, opts...), enforcer.ServiceConfig{Partitions: testPartitions})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("enforcer: %v", err)
		}
	})
}

func usd(s string) events.Amounts { return events.Amounts{"USD": events.MustAmount(s)} }

// setup starts a ledger with a 10 USD budget on tenant:t and returns a
// client once the enforcer answers.
func setup(t *testing.T) (*client.Client, context.Context) {
	t.Helper()
	srv, nc := ledger(t)
	start(t, srv)
	c := client.New(nc, client.WithTimeout(2*time.Second), client.WithBackoff(20*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		_, err := c.SetBudget(ctx, events.BudgetSetRequest{IdempotencyKey: "b", Scope: "tenant:t", Name: "m", Limits: usd("10")})
		return err
	})
	return c, ctx
}

// balance returns spent and reserved USD of tenant:t's budget.
func balance(t *testing.T, c *client.Client, ctx context.Context) (spent, reserved string) {
	t.Helper()
	b, err := c.Balance(ctx, "tenant:t/run:1")
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Instances) != 1 {
		t.Fatalf("balance: %d instances, want 1", len(b.Instances))
	}
	u, ok := b.Instances[0].Units.Get("USD")
	if !ok {
		t.Fatalf("balance has no USD: %+v", b.Instances[0])
	}
	return u.Spent.String(), u.Reserved.String()
}

func TestExecuteCommitsWhatTheWorkCost(t *testing.T) {
	c, ctx := setup(t)
	ran := false
	res, err := c.Execute(ctx, "tenant:t/run:1", usd("2"), func(_ context.Context, g events.ReserveResult) (events.Amounts, error) {
		ran = true
		if g.Decision != events.DecisionGranted || g.ReservationID == "" {
			t.Errorf("work ran on %+v", g)
		}
		return usd("1.5"), nil
	})
	if err != nil || !ran {
		t.Fatalf("Execute: ran %v, %v", ran, err)
	}
	if got := res.Charged["USD"].String(); got != "1.5" {
		t.Errorf("charged %s, want 1.5", got)
	}
	if spent, reserved := balance(t, c, ctx); spent != "1.5" || reserved != "0" {
		t.Errorf("after Execute: spent %s reserved %s, want 1.5 and 0", spent, reserved)
	}
}

func TestExecuteReleasesWhenTheWorkFails(t *testing.T) {
	c, ctx := setup(t)
	boom := errors.New("model call failed")
	var id string
	_, err := c.Execute(ctx, "tenant:t/run:1", usd("2"), func(_ context.Context, g events.ReserveResult) (events.Amounts, error) {
		id = g.ReservationID
		return nil, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Execute: %v, want the work's error", err)
	}
	if spent, reserved := balance(t, c, ctx); spent != "0" || reserved != "0" {
		t.Errorf("after a failed Execute: spent %s reserved %s, want nothing held", spent, reserved)
	}
	v, err := c.Reservation(ctx, "tenant:t", id)
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != events.StatusReleased {
		t.Errorf("reservation %s is %s, want released", id, v.Status)
	}
}

func TestExecuteDeniedDoesNotRunTheWork(t *testing.T) {
	c, ctx := setup(t)
	_, err := c.Execute(ctx, "tenant:t/run:1", usd("11"), func(context.Context, events.ReserveResult) (events.Amounts, error) {
		t.Error("the work ran on a denial")
		return nil, nil
	})
	var denied *client.DeniedError
	if !errors.As(err, &denied) || denied.Result.Denial == nil || denied.Result.Denial.Budget != "m" {
		t.Fatalf("Execute over the limit: %v, want a DeniedError naming budget m", err)
	}
	if spent, reserved := balance(t, c, ctx); spent != "0" || reserved != "0" {
		t.Errorf("after a denial: spent %s reserved %s", spent, reserved)
	}
}

// TestRetriesKeepTheKey: a reserve sent while no enforcer serves is
// retried until one does, with the same idempotency key, so it is decided
// once; asking again with that key returns the same reservation.
func TestRetriesKeepTheKey(t *testing.T) {
	srv, nc := ledger(t)
	c := client.New(nc, client.WithTimeout(300*time.Millisecond), client.WithAttempts(60), client.WithBackoff(50*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type answer struct {
		res events.ReserveResult
		err error
	}
	got := make(chan answer, 1)
	req := events.ReserveRequest{IdempotencyKey: "agent-7", Scope: "tenant:t/run:1", Amounts: usd("1")}
	go func() {
		r, err := c.Reserve(ctx, req)
		got <- answer{r, err}
	}()
	time.Sleep(500 * time.Millisecond) // several attempts find no enforcer
	select {
	case a := <-got:
		t.Fatalf("answered with no enforcer running: %+v", a)
	default:
	}
	start(t, srv)
	a := <-got
	if a.err != nil || a.res.Decision != events.DecisionGranted {
		t.Fatalf("reserve after retries: %+v, %v", a.res, a.err)
	}
	again, err := c.Reserve(ctx, req)
	if err != nil || again.ReservationID != a.res.ReservationID {
		t.Fatalf("the same key again: %+v, %v; want reservation %s", again, err, a.res.ReservationID)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	n := streams.Partition("tenant:t", testPartitions)
	s, err := js.Stream(ctx, streams.StreamName(n))
	if err != nil {
		t.Fatal(err)
	}
	subject := streams.EventSubject(n, "tenant:t", string(events.TypeReservationGranted))
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.State.Subjects[subject]; got != 1 {
		t.Errorf("%d reservation.granted events, want 1", got)
	}
}

// TestRefusedByPermissions: a request the NATS servers refuse by the
// user's permissions (another tenant's subject, or answers on inboxes the
// user may not subscribe to) fails with ErrRefused and the servers'
// reason after one attempt, not as a timeout after every retry; a refusal
// for one root is not blamed on a request for another.
func TestRefusedByPermissions(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "users.conf")
	if err := os.WriteFile(conf, []byte(`authorization { users: [
  { user: agent, password: a, permissions: { publish: "tally.v1.p.*.tenant:acme.>", subscribe: "_INBOX_acme.>" } }
] }`), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := streams.StartServer(streams.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:-1", Partitions: testPartitions,
		ConfigFile: conf, ServiceUser: "svc", ServicePassword: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	natstest.Ledger(t, srv, testPartitions, nats.UserInfo("svc", "pw"))
	start(t, srv, nats.UserInfo("svc", "pw"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const timeout = 300 * time.Millisecond
	agent := func(opts ...nats.Option) *client.Client {
		nc, err := nats.Connect(srv.ClientURL(), append([]nats.Option{nats.UserInfo("agent", "a")}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return client.New(nc, client.WithTimeout(timeout), client.WithBackoff(10*time.Millisecond))
	}
	acme := agent(nats.CustomInboxPrefix("_INBOX_acme"))
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		_, err := acme.Balance(ctx, "tenant:acme")
		return err
	})
	start := time.Now()
	_, err = acme.Reserve(ctx, events.ReserveRequest{Scope: "tenant:globex", Amounts: usd("1")})
	if !errors.Is(err, client.ErrRefused) || !strings.Contains(err.Error(), `Permissions Violation for Publish to "tally.v1.p.`) {
		t.Fatalf("reserve on another tenant: %v, want ErrRefused with the servers' reason", err)
	}
	if took := time.Since(start); took > client.DefaultAttempts*timeout/2 {
		t.Errorf("the refusal took %s: it was retried", took)
	}
	if _, err := acme.Balance(ctx, "tenant:acme"); err != nil {
		t.Errorf("balance of its own tenant after a refusal for another: %v", err)
	}
	if _, err := acme.Reserve(ctx, events.ReserveRequest{Scope: "tenant:acme", Amounts: usd("1")}); err != nil {
		t.Errorf("reserve on its own tenant after a refusal for another: %v", err)
	}

	plainInbox := agent()
	_, err = plainInbox.Balance(ctx, "tenant:acme")
	if !errors.Is(err, client.ErrRefused) || !strings.Contains(err.Error(), `Permissions Violation for Subscription to "_INBOX.`) {
		t.Errorf("balance with inboxes the user may not subscribe to: %v, want ErrRefused with the servers' reason", err)
	}
}
