package streams_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/client"
	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// The tenants of the shipped example agents, agent-acme and agent-globex.
const (
	acmeRoot   = "tenant:acme"
	globexRoot = "tenant:globex"
)

// refusedTimeout is how long a refused request is waited for. The server
// drops a publish its sender may not make, so such a request can only time
// out; the proof of the refusal is the permission violation the server
// sends back.
const refusedTimeout = 750 * time.Millisecond

func usd(s string) events.Amounts { return events.Amounts{"USD": events.MustAmount(s)} }

// startDeployEnforcer creates the ledger as the shipped tally user on node
// i and runs a real enforcer there, taking its partitions through leases,
// until the test ends. It returns the tally user's JetStream context.
func startDeployEnforcer(ctx context.Context, t *testing.T, dc *deployCluster, i int) jetstream.JetStream {
	t.Helper()
	nc, _ := dc.connect(t, i, "tally", "")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := streams.Ensure(ctx, js, streams.Config{Partitions: deployP, RequirePartitions: true, Replicas: deployReplicas}); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	cfg := enforcer.ServiceConfig{Partitions: deployP}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	svc, err := enforcer.NewService(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	// Registered after the connection's Close: runs before it.
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("enforcer stopped with %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("enforcer did not stop")
		}
	})
	return js
}

// list returns the errors collected so far.
func (a *asyncErrors) list() []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]error(nil), a.errs...)
}

// publishViolation and subscribeViolation are what the server's
// permission violations say, for asyncErrors.waitViolation.
func publishViolation(subject string) string   { return "Publish to " + strconv.Quote(subject) }
func subscribeViolation(subject string) string { return "Subscription to " + strconv.Quote(subject) }

// refusal is something the server must refuse: send does it and returns
// its error, subject is what the permission violation names.
type refusal struct {
	name    string
	subject string
	wantErr []error // send's error must be one of these (none: any error)
	send    func(ctx context.Context) error
}

// expectRefused does every refusal at once (each can only time out),
// checks that none got an answer, and waits for the server to report a
// publish permission violation for each subject on errs.
func expectRefused(ctx context.Context, t *testing.T, errs *asyncErrors, refusals []refusal) {
	t.Helper()
	got := make([]error, len(refusals))
	var wg sync.WaitGroup
	for i, r := range refusals {
		wg.Go(func() { got[i] = r.send(ctx) })
	}
	wg.Wait()
	for i, r := range refusals {
		switch {
		case got[i] == nil:
			t.Errorf("%s: answered, want refused", r.name)
		case len(r.wantErr) > 0 && !slices.ContainsFunc(r.wantErr, func(e error) bool { return errors.Is(got[i], e) }):
			t.Errorf("%s: %v, want one of %v", r.name, got[i], r.wantErr)
		}
		errs.waitViolation(t, publishViolation(r.subject))
	}
}

// tenantCalls are the requests an agent may make, through the SDK, on
// root's subject; id is the reservation id they name.
func tenantCalls(c *client.Client, root, id string) map[events.Op]func(context.Context) error {
	ttl := int64(60_000)
	return map[events.Op]func(context.Context) error{
		events.OpReserve: func(ctx context.Context) error {
			_, err := c.Reserve(ctx, events.ReserveRequest{Scope: root + "/run:x", Amounts: usd("1")})
			return err
		},
		events.OpDecide: func(ctx context.Context) error {
			_, err := c.Decide(ctx, events.ReserveRequest{Scope: root + "/run:x", Amounts: usd("1")})
			return err
		},
		events.OpCommit: func(ctx context.Context) error {
			_, err := c.Commit(ctx, root, events.CommitRequest{ReservationID: id, Actual: usd("2")})
			return err
		},
		events.OpRelease: func(ctx context.Context) error {
			_, err := c.Release(ctx, root, events.ReleaseRequest{ReservationID: id})
			return err
		},
		events.OpExtend: func(ctx context.Context) error {
			_, err := c.Extend(ctx, root, events.ExtendRequest{ReservationID: id, TTLMS: &ttl})
			return err
		},
		events.OpCharge: func(ctx context.Context) error {
			_, err := c.Charge(ctx, events.ChargeRequest{Scope: root, Amounts: usd("1")})
			return err
		},
		events.OpBalance: func(ctx context.Context) error {
			_, err := c.Balance(ctx, root)
			return err
		},
		events.OpReservationGet: func(ctx context.Context) error {
			_, err := c.Reservation(ctx, root, id)
			return err
		},
	}
}

// budgetCalls are the budget requests on root's subject.
func budgetCalls(c *client.Client, root string) map[events.Op]func(context.Context) error {
	return map[events.Op]func(context.Context) error{
		events.OpBudgetSet: func(ctx context.Context) error {
			_, err := c.SetBudget(ctx, events.BudgetSetRequest{Scope: root, Name: "total", Limits: usd("1000000")})
			return err
		},
		events.OpBudgetAdjust: func(ctx context.Context) error {
			_, err := c.AdjustBudget(ctx, events.BudgetAdjustRequest{Scope: root, Name: "total",
				Delta: events.SignedAmounts{"USD": {Amount: events.MustAmount("1000000")}}, Reason: "top-up"})
			return err
		},
		events.OpBudgetDelete: func(ctx context.Context) error {
			_, err := c.DeleteBudget(ctx, events.BudgetRef{Scope: root, Name: "total"})
			return err
		},
		events.OpBudgetList: func(ctx context.Context) error {
			_, err := c.Budgets(ctx, root)
			return err
		},
	}
}

// sdkRefusals are calls on root that the server must refuse: each names
// the partition subject the mapping sends it to.
func sdkRefusals(root string, calls map[events.Op]func(context.Context) error) []refusal {
	var out []refusal
	for op, send := range calls {
		out = append(out, refusal{
			name:    fmt.Sprintf("%s on %s", op, root),
			subject: streams.PartitionSubject(streams.Partition(root, deployP), root, string(op)),
			// Sent at once on one connection: the refusals the
			// connection's last error no longer names are timeouts.
			wantErr: []error{client.ErrRefused, client.ErrNoAnswer},
			send:    send,
		})
	}
	return out
}

func wantCode(t *testing.T, what string, err error, code events.Code) {
	t.Helper()
	var ae *events.Error
	if !errors.As(err, &ae) || ae.Code != code {
		t.Errorf("%s: %v, want a %s answer", what, err, code)
	}
}

// usdOf returns the USD balance of the instance on scope.
func usdOf(t *testing.T, instances []events.InstanceView, scope string) events.UnitBalance {
	t.Helper()
	for _, in := range instances {
		if in.Scope == scope {
			if ub, ok := in.Units.Get("USD"); ok {
				return ub
			}
		}
	}
	t.Fatalf("no USD instance on %s among %+v", scope, instances)
	return events.UnitBalance{}
}

func wantAmount(t *testing.T, what string, got events.Amount, want string) {
	t.Helper()
	if got.Cmp(events.MustAmount(want)) != 0 {
		t.Errorf("%s = %s, want %s", what, got, want)
	}
}

// rootOn returns a tenant root other than not that lands on partition n.
func rootOn(n int, not string) string {
	for i := 0; ; i++ {
		if r := fmt.Sprintf("tenant:n%d", i); r != not && streams.Partition(r, deployP) == n {
			return r
		}
	}
}

// readEvents reads every event of partition n with an ordered consumer.
func readEvents(ctx context.Context, js jetstream.JetStream, n int) ([]events.Event, error) {
	stream, err := js.Stream(ctx, streams.StreamName(n))
	if err != nil {
		return nil, err
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	total := int(stream.CachedInfo().State.Msgs)
	var out []events.Event
	for len(out) < total {
		batch, err := cons.Fetch(total-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		got := 0
		for m := range batch.Messages() {
			ev, err := events.Decode(m.Data())
			if err != nil {
				return nil, fmt.Errorf("%s: %w", m.Subject(), err)
			}
			out = append(out, ev)
			got++
		}
		if batch.Error() != nil || got == 0 {
			return nil, fmt.Errorf("read %d of %d events of partition %d: %v", len(out), total, n, batch.Error())
		}
	}
	return out, nil
}

// lastSeq is the last sequence of partition n's stream.
func lastSeq(ctx context.Context, t *testing.T, js jetstream.JetStream, n int) uint64 {
	t.Helper()
	s, err := js.Stream(ctx, streams.StreamName(n))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// TestTenantIsolation runs the shipped NATS configuration as a real
// cluster with a real enforcer, and shows that the shipped permissions
// and the enforcer's root checks isolate tenants: agent-acme spends its
// own budget, and can neither spend, free nor read tenant:globex's, nor
// see globex's answers or events.
func TestTenantIsolation(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped in -short")
	}
	dc := startDeployCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*testTimeout)
	defer cancel()
	pa, pg := streams.Partition(acmeRoot, deployP), streams.Partition(globexRoot, deployP)

	// The enforcer on n2, operators and globex on n3, acme and the auditor
	// on n1: every answer crosses a route.
	js := startDeployEnforcer(ctx, t, dc, 1)
	admin, adminErrs := dc.connect(t, 2, "admin", "_INBOX_admin")
	probe := client.New(admin, client.WithAttempts(1), client.WithTimeout(time.Second))
	natstest.CheckFor(t, testTimeout, pollInterval, func() error {
		for _, root := range []string{acmeRoot, globexRoot} {
			if _, err := probe.Budgets(ctx, root); err != nil {
				return fmt.Errorf("%s: %w", root, err)
			}
		}
		return nil
	})
	ops := client.New(admin)
	none := events.PeriodNone
	for _, root := range []string{acmeRoot, globexRoot} {
		if _, err := ops.SetBudget(ctx, events.BudgetSetRequest{Scope: root, Name: "total", Limits: usd("10"), Period: &none}); err != nil {
			t.Fatalf("admin sets %s's budget: %v", root, err)
		}
	}

	acme, acmeErrs := dc.connect(t, 0, "agent-acme", "_INBOX_acme", nats.PermissionErrOnSubscribe(true))
	agentAcme := client.New(acme)
	globex, globexErrs := dc.connect(t, 2, "agent-globex", "_INBOX_globex")
	agentGlobex := client.New(globex)

	// globex holds a reservation that acme will try to spend and free.
	held, err := agentGlobex.Reserve(ctx, events.ReserveRequest{Scope: globexRoot + "/run:g1", Amounts: usd("2")})
	if err != nil || held.Decision != events.DecisionGranted {
		t.Fatalf("globex reserve: %+v, %v", held, err)
	}
	gid := held.ReservationID
	globexSeq := lastSeq(ctx, t, js, pg)

	t.Run("agent-acme uses its own budget through the unmapped subject", func(t *testing.T) {
		r1, err := agentAcme.Reserve(ctx, events.ReserveRequest{Scope: acmeRoot + "/run:a1", Amounts: usd("2")})
		if err != nil || r1.Decision != events.DecisionGranted {
			t.Fatalf("reserve: %+v, %v", r1, err)
		}
		c1, err := agentAcme.Commit(ctx, acmeRoot, events.CommitRequest{ReservationID: r1.ReservationID, Actual: usd("1.5")})
		if err != nil {
			t.Fatalf("commit: %v", err)
		}
		wantAmount(t, "charged", c1.Charged["USD"], "1.5")
		r2, err := agentAcme.Reserve(ctx, events.ReserveRequest{Scope: acmeRoot + "/run:a2", Amounts: usd("3")})
		if err != nil || r2.Decision != events.DecisionGranted {
			t.Fatalf("reserve: %+v, %v", r2, err)
		}
		rel, err := agentAcme.Release(ctx, acmeRoot, events.ReleaseRequest{ReservationID: r2.ReservationID})
		if err != nil {
			t.Fatalf("release: %v", err)
		}
		wantAmount(t, "released", rel.Released["USD"], "3")
		bal, err := agentAcme.Balance(ctx, acmeRoot)
		if err != nil {
			t.Fatalf("balance: %v", err)
		}
		ub := usdOf(t, bal.Instances, acmeRoot)
		wantAmount(t, "spent", ub.Spent, "1.5")
		wantAmount(t, "reserved", ub.Reserved, "0")

		// On the wire, as any NATS client sends it: the literal unmapped
		// subject, answered by the enforcer of the partition it maps to.
		msg, err := acme.Request("tally.v1.req.tenant:acme.balance", []byte(`{"scope":"tenant:acme"}`), 5*time.Second)
		if err != nil {
			t.Fatalf("raw balance request: %v", err)
		}
		var a events.Answer
		if err := json.Unmarshal(msg.Data, &a); err != nil || a.Error != nil || len(a.Result) == 0 {
			t.Errorf("raw balance answer %s (%v)", msg.Data, err)
		}
		// The mapped subject itself is allowed too.
		if _, err := client.New(acme, client.WithPartitions(deployP)).Balance(ctx, acmeRoot); err != nil {
			t.Errorf("balance on the partition subject: %v", err)
		}
		if errs := acmeErrs.list(); len(errs) > 0 {
			t.Errorf("agent-acme's own requests raised %v", errs)
		}
	})

	t.Run("agent-acme cannot send any request of tenant:globex", func(t *testing.T) {
		// Through the mapping: the violation names the mapped subject, so
		// the permission is checked after the mapping.
		unmapped := client.New(acme, client.WithAttempts(1), client.WithTimeout(refusedTimeout))
		expectRefused(ctx, t, acmeErrs, sdkRefusals(globexRoot, tenantCalls(unmapped, globexRoot, gid)))
		// Straight to globex's partition subject.
		direct, directErrs := dc.connect(t, 0, "agent-acme", "_INBOX_acme")
		mapped := client.New(direct, client.WithPartitions(deployP), client.WithAttempts(1), client.WithTimeout(refusedTimeout))
		expectRefused(ctx, t, directErrs, sdkRefusals(globexRoot, tenantCalls(mapped, globexRoot, gid)))
	})

	t.Run("a payload naming tenant:globex on acme's subject is FORBIDDEN", func(t *testing.T) {
		for _, scope := range []string{globexRoot, globexRoot + "/run:g1"} {
			req := events.ReserveRequest{IdempotencyKey: client.NewKey(), Scope: scope, Amounts: usd("1")}
			wantCode(t, "reserve "+scope, agentAcme.Do(ctx, acmeRoot, events.OpReserve, req, nil), events.CodeForbidden)
			wantCode(t, "decide "+scope, agentAcme.Do(ctx, acmeRoot, events.OpDecide, req, nil), events.CodeForbidden)
			charge := events.ChargeRequest{IdempotencyKey: client.NewKey(), Scope: scope, Amounts: usd("1")}
			wantCode(t, "charge "+scope, agentAcme.Do(ctx, acmeRoot, events.OpCharge, charge, nil), events.CodeForbidden)
			wantCode(t, "balance "+scope, agentAcme.Do(ctx, acmeRoot, events.OpBalance, events.BalanceRequest{Scope: scope}, nil), events.CodeForbidden)
		}
	})

	t.Run("another tenant's reservation id on acme's subject is NOT_FOUND", func(t *testing.T) {
		// globex's lives in another partition. A tenant without an agent
		// user of its own shares acme's partition: the tally service
		// reserves for it.
		neighbour := rootOn(pa, acmeRoot)
		service, _ := dc.connect(t, 1, "tally", "")
		nr, err := client.New(service).Reserve(ctx, events.ReserveRequest{Scope: neighbour + "/run:n1", Amounts: usd("2")})
		if err != nil || nr.Decision != events.DecisionGranted {
			t.Fatalf("reserve on %s: %+v, %v", neighbour, nr, err)
		}
		for _, id := range []string{gid, nr.ReservationID} {
			calls := tenantCalls(agentAcme, acmeRoot, id)
			for _, op := range []events.Op{events.OpCommit, events.OpRelease, events.OpExtend, events.OpReservationGet} {
				wantCode(t, string(op)+" "+id+" on "+acmeRoot, calls[op](ctx), events.CodeNotFound)
			}
		}
		if view, err := ops.Reservation(ctx, neighbour, nr.ReservationID); err != nil || view.Status != events.StatusOpen {
			t.Errorf("%s's reservation after acme's attempts: %+v, %v", neighbour, view, err)
		}
	})

	t.Run("agent-acme cannot manage budgets, not even its own", func(t *testing.T) {
		c := client.New(acme, client.WithAttempts(1), client.WithTimeout(refusedTimeout))
		expectRefused(ctx, t, acmeErrs, slices.Concat(sdkRefusals(acmeRoot, budgetCalls(c, acmeRoot)), sdkRefusals(globexRoot, budgetCalls(c, globexRoot))))
	})

	t.Run("agent-acme cannot make an enforcer pause", func(t *testing.T) {
		// An enforcer holds its appends back when another asks to claim
		// its partition: only the tally service may ask.
		subject := streams.ClaimSubject(pa)
		expectRefused(ctx, t, acmeErrs, []refusal{{name: "claim " + subject, subject: subject,
			send: func(context.Context) error {
				if err := acme.Publish(subject, []byte("acme")); err != nil {
					return err
				}
				// A refused publish only shows on the error handler.
				return errors.New("published")
			}}})
	})

	t.Run("tenant:globex is untouched", func(t *testing.T) {
		if seq := lastSeq(ctx, t, js, pg); seq != globexSeq {
			t.Errorf("partition %d (tenant:globex) moved from seq %d to %d during acme's attempts", pg, globexSeq, seq)
		}
		view, err := ops.Reservation(ctx, globexRoot, gid)
		if err != nil || view.Status != events.StatusOpen {
			t.Fatalf("admin reads globex's reservation: %+v, %v", view, err)
		}
		wantAmount(t, "reservation", view.Amounts["USD"], "2")
		bal, err := ops.Balance(ctx, globexRoot)
		if err != nil {
			t.Fatal(err)
		}
		ub := usdOf(t, bal.Instances, globexRoot)
		wantAmount(t, "globex spent", ub.Spent, "0")
		wantAmount(t, "globex reserved", ub.Reserved, "2")
		wantAmount(t, "globex limit", ub.Limit, "10")
		budgets, err := ops.Budgets(ctx, globexRoot)
		if err != nil || len(budgets.Budgets) != 1 {
			t.Fatalf("globex's budgets: %+v, %v", budgets, err)
		}
		wantAmount(t, "globex budget limit", budgets.Budgets[0].Limits["USD"], "10")
	})

	t.Run("agent-acme cannot read globex's answers or events", func(t *testing.T) {
		// The tally service sees them: there is something to read.
		service, _ := dc.connect(t, 1, "tally", "")
		seeAnswers, err := service.SubscribeSync("_INBOX_globex.>")
		if err != nil {
			t.Fatal(err)
		}
		seeEvents, err := service.SubscribeSync(streams.EventWildcard(pg))
		if err != nil {
			t.Fatal(err)
		}
		if err := service.Flush(); err != nil {
			t.Fatal(err)
		}

		var subs []*nats.Subscription
		for _, subject := range []string{
			"_INBOX_globex.>", "_INBOX.>", ">", "tally.v1.>", streams.EventWildcard(pg),
			streams.PartitionSubject(pg, globexRoot, "*"), "$JS.API.>", "$KV.tally_balances.>",
		} {
			sub, err := acme.SubscribeSync(subject)
			if err != nil {
				t.Fatal(err)
			}
			acmeErrs.waitViolation(t, subscribeViolation(subject))
			subs = append(subs, sub)
		}

		// globex commits and reads its balance: answers to its inbox,
		// events on its partition's subjects.
		if _, err := agentGlobex.Commit(ctx, globexRoot, events.CommitRequest{ReservationID: gid, Actual: usd("1.5")}); err != nil {
			t.Fatalf("globex commits its own reservation: %v", err)
		}
		bal, err := agentGlobex.Balance(ctx, globexRoot)
		if err != nil {
			t.Fatal(err)
		}
		wantAmount(t, "globex spent", usdOf(t, bal.Instances, globexRoot).Spent, "1.5")
		for _, sub := range []*nats.Subscription{seeAnswers, seeEvents} {
			if _, err := sub.NextMsg(5 * time.Second); err != nil {
				t.Fatalf("the tally service saw nothing on %s: %v", sub.Subject, err)
			}
		}
		if err := acme.Flush(); err != nil {
			t.Fatal(err)
		}
		for _, sub := range subs {
			if n, _, err := sub.Pending(); err != nil || n != 0 {
				t.Errorf("agent-acme's subscription %s holds %d messages (%v)", sub.Subject, n, err)
			}
			if _, err := sub.NextMsg(10 * time.Millisecond); !errors.Is(err, nats.ErrPermissionViolation) {
				t.Errorf("agent-acme's subscription %s: NextMsg = %v, want a permission violation", sub.Subject, err)
			}
		}

		// Nor through JetStream: no stream, consumer, message or bucket.
		ajs, err := jetstream.New(acme)
		if err != nil {
			t.Fatal(err)
		}
		short := func(ctx context.Context) (context.Context, context.CancelFunc) {
			return context.WithTimeout(ctx, refusedTimeout)
		}
		request := func(subject, body string) func(context.Context) error {
			return func(ctx context.Context) error {
				_, err := acme.Request(subject, []byte(body), refusedTimeout)
				return err
			}
		}
		stream := streams.StreamName(pg)
		expectRefused(ctx, t, acmeErrs, []refusal{
			{name: "account info", subject: "$JS.API.INFO", send: func(ctx context.Context) error {
				ctx, cancel := short(ctx)
				defer cancel()
				_, err := ajs.AccountInfo(ctx)
				return err
			}},
			{name: "stream info", subject: "$JS.API.STREAM.INFO." + stream, send: func(ctx context.Context) error {
				ctx, cancel := short(ctx)
				defer cancel()
				_, err := ajs.Stream(ctx, stream)
				return err
			}},
			{name: "bucket", subject: "$JS.API.STREAM.INFO.KV_" + streams.BalancesBucket, send: func(ctx context.Context) error {
				ctx, cancel := short(ctx)
				defer cancel()
				_, err := ajs.KeyValue(ctx, streams.BalancesBucket)
				return err
			}},
			{name: "direct get", subject: "$JS.API.DIRECT.GET." + stream, send: request("$JS.API.DIRECT.GET."+stream, `{"seq":1}`)},
			{name: "message get", subject: "$JS.API.STREAM.MSG.GET." + stream, send: request("$JS.API.STREAM.MSG.GET."+stream, `{"seq":1}`)},
			// A push consumer delivering globex's events into acme's own inbox.
			{name: "consumer into acme's inbox", subject: "$JS.API.CONSUMER.CREATE." + stream, send: request("$JS.API.CONSUMER.CREATE."+stream,
				`{"stream_name":"`+stream+`","config":{"deliver_subject":"_INBOX_acme.steal","deliver_policy":"all","ack_policy":"none"}}`)},
		})
	})

	t.Run("agent-acme without its inbox prefix gets no answer", func(t *testing.T) {
		nc, errs := dc.connect(t, 0, "agent-acme", "")
		if _, err := nc.Request(streams.RequestSubject(acmeRoot, "balance"), []byte(`{"scope":"tenant:acme"}`), refusedTimeout); err == nil {
			t.Error("answered on the default inbox")
		}
		errs.waitViolation(t, `Subscription to "_INBOX.`)
	})

	t.Run("the auditor reads every tenant's events and cannot make requests", func(t *testing.T) {
		auditor, errs := dc.connect(t, 0, "auditor", "_INBOX_auditor")
		ajs, err := jetstream.New(auditor)
		if err != nil {
			t.Fatal(err)
		}
		layout, err := streams.Open(ctx, ajs)
		if err != nil || layout.Partitions != deployP {
			t.Fatalf("auditor Open = %+v, %v", layout, err)
		}
		read := func(n int) []events.Event {
			t.Helper()
			var evs []events.Event
			// A fresh ordered consumer's interest may not have crossed the
			// routes yet (no responders): read again.
			natstest.CheckFor(t, 10*time.Second, pollInterval, func() error {
				var err error
				evs, err = readEvents(ctx, ajs, n)
				return err
			})
			return evs
		}
		// granted and committed, by root and reservation id.
		type seen struct{ granted, committed bool }
		find := func(evs []events.Event, root string) map[string]*seen {
			out := map[string]*seen{}
			for _, ev := range evs {
				if ev.Root != root {
					continue
				}
				switch d := ev.Data.(type) {
				case *events.ReservationGranted:
					if out[d.ReservationID] == nil {
						out[d.ReservationID] = &seen{}
					}
					out[d.ReservationID].granted = true
				case *events.ReservationCommitted:
					if out[d.ReservationID] == nil {
						out[d.ReservationID] = &seen{}
					}
					out[d.ReservationID].committed = true
				}
			}
			return out
		}
		if s := find(read(pg), globexRoot)[gid]; s == nil || !s.granted || !s.committed {
			t.Errorf("auditor: globex's reservation %s in partition %d: %+v, want granted and committed", gid, pg, s)
		}
		committed := 0
		for _, s := range find(read(pa), acmeRoot) {
			if s.granted && s.committed {
				committed++
			}
		}
		if committed != 1 {
			t.Errorf("auditor: %d of acme's reservations granted and committed in partition %d, want 1", committed, pa)
		}

		// The projection is the auditor's to read (tally audit verify
		// compares it with the streams), not to write.
		var balances jetstream.KeyValue
		for _, bucket := range []string{streams.BalancesBucket, streams.BudgetsBucket} {
			kv, err := ajs.KeyValue(ctx, bucket)
			if err != nil {
				t.Fatalf("auditor opens %s: %v", bucket, err)
			}
			if _, err := kv.Keys(ctx); err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
				t.Errorf("auditor lists %s: %v", bucket, err)
			}
			if bucket == streams.BalancesBucket {
				balances = kv
			}
		}
		expectRefused(ctx, t, errs, []refusal{{name: "projection write", subject: "$KV." + streams.BalancesBucket + ".x",
			send: func(ctx context.Context) error {
				ctx, cancel := context.WithTimeout(ctx, refusedTimeout)
				defer cancel()
				_, err := balances.Put(ctx, "x", []byte("1"))
				return err
			}}})

		c := client.New(auditor, client.WithAttempts(1), client.WithTimeout(refusedTimeout))
		calls := tenantCalls(c, acmeRoot, gid)
		refused := sdkRefusals(acmeRoot, map[events.Op]func(context.Context) error{
			events.OpReserve: calls[events.OpReserve],
			events.OpCharge:  calls[events.OpCharge],
			events.OpBalance: calls[events.OpBalance],
		})
		expectRefused(ctx, t, errs, refused)
	})

	if errs := adminErrs.list(); len(errs) > 0 {
		t.Errorf("admin's requests raised %v", errs)
	}
	if errs := globexErrs.list(); len(errs) > 0 {
		t.Errorf("agent-globex's requests raised %v", errs)
	}
}
