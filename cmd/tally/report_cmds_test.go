package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
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
	"github.com/tallyledger/tally/projector"
)

// The tests of report, audit, events dump, projector and serve's metrics
// run the real commands through run() against a real in-process server.

const rptPartitions = 3

// rptLedger is a running ledger: server, streams, an enforcer for every
// partition, and optionally a projector.
type rptLedger struct {
	t    *testing.T
	srv  *server.Server
	url  string
	nc   *nats.Conn
	js   jetstream.JetStream
	c    *client.Client
	stop []func()
}

func startRptLedger(t *testing.T) *rptLedger {
	t.Helper()
	srv := natstest.RunServer(t, natstest.WithPartitions(rptPartitions))
	l := &rptLedger{t: t, srv: srv, url: srv.ClientURL()}
	l.nc, l.js = natstest.Ledger(t, srv, rptPartitions)
	l.c = client.New(l.nc)
	l.startEnforcer()
	t.Cleanup(l.stopAll)
	return l
}

func (l *rptLedger) startEnforcer() {
	svc, err := enforcer.NewService(l.nc, enforcer.ServiceConfig{Partitions: rptPartitions})
	if err != nil {
		l.t.Fatal(err)
	}
	l.goRun(func(ctx context.Context) error { return svc.Run(ctx) })
	natstest.CheckFor(l.t, 10*time.Second, 20*time.Millisecond, func() error {
		for i := range rptPartitions * 4 {
			if _, err := l.c.Budgets(context.Background(), fmt.Sprintf("tenant:warm%d", i)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (l *rptLedger) startProjector() {
	p, err := projector.New(l.js, projector.Config{Partitions: rptPartitions, FlushInterval: 10 * time.Millisecond})
	if err != nil {
		l.t.Fatal(err)
	}
	l.goRun(p.Run)
}

func (l *rptLedger) goRun(f func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	l.stop = append(l.stop, func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				l.t.Errorf("stopped with %v", err)
			}
		case <-time.After(15 * time.Second):
			l.t.Errorf("did not stop")
		}
	})
}

func (l *rptLedger) stopAll() {
	for i := len(l.stop) - 1; i >= 0; i-- {
		l.stop[i]()
	}
	l.stop = nil
}

func (l *rptLedger) waitProjected() {
	natstest.CheckFor(l.t, 20*time.Second, 20*time.Millisecond, func() error {
		lag, err := projector.Lag(context.Background(), l.js, []int{0, 1, 2})
		if err != nil {
			return err
		}
		for n, x := range lag {
			if x > 0 {
				return fmt.Errorf("partition %d lags %d", n, x)
			}
		}
		return nil
	})
}

// tally runs the command with --nats-url and returns its exit code and output.
func (l *rptLedger) tally(args ...string) (int, string, string) {
	l.t.Helper()
	return tallyAt(l.t, l.url, args...)
}

func tallyAt(t *testing.T, url string, args ...string) (int, string, string) {
	t.Helper()
	return tallyCmd(append(args, "--nats-url", url)...)
}

func (l *rptLedger) reserveCommit(scope, usd string, labels events.Labels) string {
	l.t.Helper()
	ctx := context.Background()
	res, err := l.c.Reserve(ctx, events.ReserveRequest{Scope: scope, Amounts: events.Amounts{"USD": events.MustAmount(usd)}, Labels: labels})
	if err != nil {
		l.t.Fatal(err)
	}
	if res.Decision != events.DecisionGranted {
		return ""
	}
	if _, err := l.c.Commit(ctx, events.Root(scope), events.CommitRequest{ReservationID: res.ReservationID,
		Actual: events.Amounts{"USD": events.MustAmount(usd)}}); err != nil {
		l.t.Fatal(err)
	}
	return res.ReservationID
}

// awayFromMidnight waits, if needed, so that a test's traffic does not
// straddle a UTC day (or month): daily budgets would split it.
func awayFromMidnight() {
	now := time.Now().UTC()
	next := now.Truncate(24 * time.Hour).Add(24 * time.Hour)
	if next.Sub(now) < 30*time.Second {
		time.Sleep(next.Sub(now) + time.Second)
	}
}

// seedShadowTraffic is report's seedShadowScenario against a live ledger:
// the seed's combined structure with a $100/day tenant shadow budget and a
// $20/day code-review shadow budget, and traffic that makes exactly 23
// granted calls carry a shadow denial with a peak overage of $47.30.
func (l *rptLedger) seedShadowTraffic(root string) {
	l.t.Helper()
	ctx := context.Background()
	monthly, daily, shadow := events.PeriodMonthly, events.PeriodDaily, events.ModeShadow
	usd := func(s string) events.Amounts { return events.Amounts{"USD": events.MustAmount(s)} }
	for _, b := range []events.BudgetSetRequest{
		{Scope: root, Name: "monthly", Limits: usd("500"), Period: &monthly},
		{Scope: root + "/workflow:code-review/run:*", Name: "per-run", Limits: usd("2")},
		{Scope: root + "/workflow:deep-research/run:*", Name: "per-run", Limits: usd("25")},
		{Scope: root + "/workflow:chat/session:*", Name: "per-session", Limits: usd("1")},
		{Scope: root, Name: "daily-shadow", Limits: usd("100"), Period: &daily, Mode: &shadow},
		{Scope: root + "/workflow:code-review", Name: "review-shadow", Limits: usd("20"), Period: &daily, Mode: &shadow},
	} {
		if _, err := l.c.SetBudget(ctx, b); err != nil {
			l.t.Fatal(err)
		}
	}
	haiku, opus, sonnet := events.Labels{"model": "haiku"}, events.Labels{"model": "opus"}, events.Labels{"model": "sonnet"}
	l.reserveCommit(root+"/workflow:chat/session:s1", "0.40", haiku)
	l.reserveCommit(root+"/workflow:chat/session:s1", "0.40", haiku)
	if id := l.reserveCommit(root+"/workflow:chat/session:s1", "0.40", nil); id != "" {
		l.t.Fatal("the third chat call was granted")
	}
	for i := 1; i <= 10; i++ {
		amt := "10"
		if i == 10 {
			amt = "9.20"
		}
		l.reserveCommit(fmt.Sprintf("%s/workflow:deep-research/run:r%d", root, i), amt, opus)
	}
	for i := 1; i <= 22; i++ {
		l.reserveCommit(fmt.Sprintf("%s/workflow:code-review/run:c%d", root, i), "2", sonnet)
	}
	l.reserveCommit(root+"/workflow:deep-research/run:r11", "3.30", opus)
}

func TestReportShadowSeedScenario(t *testing.T) {
	awayFromMidnight()
	l := startRptLedger(t)
	l.seedShadowTraffic("tenant:acme")
	day := time.Now().UTC().Format("2006-01-02")
	code, out, errOut := l.tally("report", "shadow", "--scope", "tenant:acme", "--since", "7d")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := `23 calls would have been denied. Peak overage: $47.30.

shadow budget "daily-shadow" on tenant:acme
SCOPE        PERIOD      UNIT  LIMIT  WOULD-DENY  PEAK OVERAGE  COVERING LIMIT
tenant:acme  ` + day + `  USD   100    23          47.3          147.3

shadow budget "review-shadow" on tenant:acme/workflow:code-review
SCOPE                             PERIOD      UNIT  LIMIT  WOULD-DENY  PEAK OVERAGE  COVERING LIMIT
tenant:acme/workflow:code-review  ` + day + `  USD   20     12          24            44
`
	if out != want {
		t.Fatalf("report:\n%s\nwant:\n%s", out, want)
	}
	code, out, _ = l.tally("report", "shadow", "--scope", "tenant:acme/workflow:code-review", "--json")
	var doc struct {
		Headline  string `json:"headline"`
		WouldDeny int    `json:"would_deny"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &doc) != nil || doc.WouldDeny != 12 ||
		doc.Headline != "12 calls would have been denied. Peak overage: $24.00." {
		t.Fatalf("json report (exit %d):\n%s", code, out)
	}
	// A window before the traffic sees nothing.
	code, out, _ = l.tally("report", "shadow", "--scope", "tenant:acme", "--from", "2020-01-01", "--to", "2020-02-01")
	if code != exitOK || !strings.HasPrefix(out, "0 calls would have been denied. Peak overage: $0.00.\n") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, bad := range [][]string{{"report", "shadow"}, {"report", "shadow", "--scope", "tenant:acme", "--since", "7x"},
		{"report", "shadow", "--scope", "tenant:acme", "--since", "1d", "--from", "2026-01-01"}, {"report", "nope"}} {
		if code, _, errOut := l.tally(bad...); code != exitUsage || !strings.HasPrefix(errOut, "error: ") {
			t.Errorf("%v: exit %d, stderr %q", bad, code, errOut)
		}
	}
}

// dumpedEvent is an events dump line, decoded independently of the events
// package: the test recomputes the spend from the raw JSON.
type dumpedEvent struct {
	Type string    `json:"type"`
	At   time.Time `json:"at"`
	Data struct {
		ReservationID string            `json:"reservation_id"`
		Scope         string            `json:"scope"`
		Charged       map[string]string `json:"charged"`
		Amounts       map[string]string `json:"amounts"`
		Labels        map[string]string `json:"labels"`
	} `json:"data"`
}

// TestSpendMatchesEventsDump runs a random workload, then checks the spend
// report against sums computed from `events dump` in the test itself.
func TestSpendMatchesEventsDump(t *testing.T) {
	awayFromMidnight()
	l := startRptLedger(t)
	root := "tenant:billing"
	ctx := context.Background()
	monthly := events.PeriodMonthly
	if _, err := l.c.SetBudget(ctx, events.BudgetSetRequest{Scope: root, Name: "m", Limits: events.Amounts{"USD": events.MustAmount("100000")}, Period: &monthly}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	models := []string{"", "opus", "sonnet", "haiku"}
	workflows := []string{"", "/workflow:review", "/workflow:research/run:r1", "/team:ml"}
	amt := func() events.Amount {
		return events.MustAmount(fmt.Sprintf("%d.%06d", rng.IntN(3), rng.IntN(1000000)))
	}
	label := func() events.Labels {
		if m := models[rng.IntN(len(models))]; m != "" {
			return events.Labels{"model": m}
		}
		return nil
	}
	for range 150 {
		scope := root + workflows[rng.IntN(len(workflows))]
		if rng.IntN(3) == 0 {
			if _, err := l.c.Charge(ctx, events.ChargeRequest{Scope: scope, Amounts: events.Amounts{"USD": amt(), "tokens": events.MustAmount(fmt.Sprint(rng.IntN(5000)))}, Labels: label()}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		res, err := l.c.Reserve(ctx, events.ReserveRequest{Scope: scope, Amounts: events.Amounts{"USD": events.MustAmount("3")}, Labels: label()})
		if err != nil || res.Decision != events.DecisionGranted {
			t.Fatalf("%v %+v", err, res)
		}
		if rng.IntN(5) == 0 {
			if _, err := l.c.Release(ctx, root, events.ReleaseRequest{ReservationID: res.ReservationID}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		req := events.CommitRequest{ReservationID: res.ReservationID, Actual: events.Amounts{"USD": amt()}}
		if rng.IntN(3) == 0 {
			req.Labels = label()
		}
		if _, err := l.c.Commit(ctx, root, req); err != nil {
			t.Fatal(err)
		}
	}
	period := time.Now().UTC().Format("2006-01")

	code, dump, errOut := l.tally("events", "dump", "--root", root)
	if code != exitOK {
		t.Fatalf("dump: exit %d: %s", code, errOut)
	}
	want := map[string]events.Amount{} // "model|workflow|unit" → sum
	totals := map[string]events.Amount{}
	reserveLabels := map[string]map[string]string{}
	lines := strings.Split(strings.TrimSuffix(dump, "\n"), "\n")
	for _, line := range lines {
		var ev dumpedEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("dump line %q: %v", line, err)
		}
		var amounts map[string]string
		model := ev.Data.Labels["model"]
		switch ev.Type {
		case "reservation.granted":
			reserveLabels[ev.Data.ReservationID] = ev.Data.Labels
			continue
		case "reservation.committed":
			amounts = ev.Data.Charged
			if _, ok := ev.Data.Labels["model"]; !ok {
				model = reserveLabels[ev.Data.ReservationID]["model"]
			}
		case "usage.charged":
			amounts = ev.Data.Amounts
		default:
			continue
		}
		if ev.At.UTC().Format("2006-01") != period {
			continue
		}
		wf := ""
		for seg := range strings.SplitSeq(ev.Data.Scope, "/") {
			if id, ok := strings.CutPrefix(seg, "workflow:"); ok {
				wf = id
			}
		}
		for u, s := range amounts {
			a := events.MustAmount(s)
			if a.IsZero() {
				continue
			}
			k := model + "|" + wf + "|" + u
			want[k] = want[k].Add(a)
			totals[u] = totals[u].Add(a)
		}
	}
	code, out, errOut := l.tally("report", "spend", "--root", root, "--period", period, "--by", "model,workflow", "--format", "json")
	if code != exitOK {
		t.Fatalf("spend: exit %d: %s", code, errOut)
	}
	var doc struct {
		Columns []string            `json:"columns"`
		Rows    []map[string]string `json:"rows"`
		Totals  map[string]string   `json:"totals"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if strings.Join(doc.Columns, ",") != "model,workflow,unit" || len(doc.Rows) != len(want) {
		t.Fatalf("columns %v, %d rows, want %d:\n%s", doc.Columns, len(doc.Rows), len(want), out)
	}
	for _, r := range doc.Rows {
		k := r["model"] + "|" + r["workflow"] + "|" + r["unit"]
		if w, ok := want[k]; !ok || w.String() != r["amount"] {
			t.Errorf("row %s: report %s, events dump %s", k, r["amount"], w)
		}
	}
	for u, w := range totals {
		if doc.Totals[u] != w.String() {
			t.Errorf("total %s: report %s, events dump %s", u, doc.Totals[u], w)
		}
	}
	if len(totals) != 2 || len(lines) < 250 {
		t.Fatalf("thin workload: totals %v, %d events", totals, len(lines))
	}
	// CSV: the --by columns in order, unit, amount.
	code, out, _ = l.tally("report", "spend", "--root", root, "--period", period, "--by", "workflow", "--format", "csv")
	if code != exitOK || !strings.HasPrefix(out, "workflow,unit,amount\n,USD,") {
		t.Fatalf("csv (exit %d):\n%s", code, out)
	}
	// events dump filters by type and time.
	code, out, _ = l.tally("events", "dump", "--root", root, "--type", "usage.charged", "--from", time.Now().UTC().Add(-time.Hour).Format(time.RFC3339))
	if n := strings.Count(out, "\n"); code != exitOK || n == 0 || n != strings.Count(out, `"type":"usage.charged"`) {
		t.Fatalf("dump --type (exit %d): %d lines", code, n)
	}
	code, out, _ = l.tally("events", "dump", "--root", root, "--to", "2020-01-01")
	if code != exitOK || out != "" {
		t.Fatalf("dump --to in the past (exit %d):\n%s", code, out)
	}
}
