package main

// tally demo: the first thing a newcomer runs after `make run`. It sets up
// the seed's combined structure on a fresh tenant, runs a burst of
// simulated agents through the Go SDK, and prints the balances and the
// shadow report.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tallyledger/tally/client"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/report"
)

// demoWorkflow is one kind of simulated agent.
type demoWorkflow struct {
	name    string // workflow id
	segment string // kind of the per-run segment: run or session
	steps   int
	// options are the models tried in order of preference (degradation);
	// a single option is a hard cap: the agent stops at the first denial.
	options []demoModel
}

type demoModel struct {
	model string
	usd   string
}

var demoWorkflows = []demoWorkflow{
	{name: "code-review", segment: "run", steps: 6, options: []demoModel{{"opus", "0.60"}, {"sonnet", "0.15"}, {"haiku", "0.03"}}},
	{name: "deep-research", segment: "run", steps: 10, options: []demoModel{{"opus", "4.00"}, {"sonnet", "1.00"}, {"haiku", "0.20"}}},
	{name: "chat", segment: "session", steps: 12, options: []demoModel{{"sonnet", "0.12"}}},
}

// demoStats counts the burst's calls.
type demoStats struct {
	calls, granted, degraded, denied, failed atomic.Int64
}

func (s *demoStats) line(agents, done int) string {
	return fmt.Sprintf("agents %d/%d done, %d calls: %d granted (%d degraded), %d denied, %d failed",
		done, agents, s.calls.Load(), s.granted.Load(), s.degraded.Load(), s.denied.Load(), s.failed.Load())
}

func runDemo(ctx context.Context, e *env, args []string) int {
	var (
		lf                  ledgerFlags
		tenant              string
		agents, concurrency int
		seed                uint64
	)
	fs := e.flagSet("demo", "demo [--nats-url URLS] [--tenant tenant:NAME] [--agents N]\n\n"+
		"Against a running tally (make run): set up the seed's budget structure on a tenant —\n"+
		"$500/month for the tenant, $2 per code-review run, $25 per research run, $1 per chat\n"+
		"session, and a $100/day shadow budget being rolled out — then run a burst of simulated\n"+
		"agents (the Go SDK's Execute, with degradation options: opus, then sonnet, then haiku)\n"+
		"and print the balances and the shadow report.")
	lf.register(fs)
	fs.StringVar(&tenant, "tenant", "", "the tenant to use (default: a fresh tenant:demo-XXXXXX)")
	fs.IntVar(&agents, "agents", 24, "simulated agents (runs and sessions)")
	fs.IntVar(&concurrency, "concurrency", 8, "agents running at once")
	fs.Uint64Var(&seed, "seed", 0, "random seed of the simulated costs (default: random)")
	if code := e.parseCommand(fs, args); code >= 0 {
		return code
	}
	if agents < 1 || agents > 10000 || concurrency < 1 || concurrency > 1000 {
		return e.usageErr("--agents must be 1..10000 and --concurrency 1..1000")
	}
	if seed == 0 {
		seed = rand.Uint64()
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	if tenant == "" {
		const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
		var b strings.Builder
		for range 6 {
			b.WriteByte(letters[rand.IntN(len(letters))])
		}
		tenant = "tenant:demo-" + b.String()
	}
	if err := events.ValidateScope(tenant); err != nil || strings.Contains(tenant, "/") {
		return e.usageErr("--tenant %q: want a root such as tenant:demo", tenant)
	}
	l, code := e.openLedger(ctx, lf)
	if code >= 0 {
		return code
	}
	defer l.close()
	c := client.New(l.nc, client.WithPartitions(l.layout.Partitions))
	start := time.Now().UTC()

	if err := demoBudgets(ctx, c, tenant); err != nil {
		return e.demoErr(err)
	}
	fmt.Fprintf(e.stdout, "%s: the seed's budgets are set:\n", tenant)
	if lr, err := c.Budgets(ctx, tenant); err == nil {
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		for _, b := range lr.Budgets {
			fmt.Fprintf(tw, "  %s\t%s\tUSD %s\t%s\t%s\n", b.Scope, b.Name, b.Limits["USD"], b.Period, b.Mode)
		}
		tw.Flush()
	}

	// The burst: each agent is a run or session of one workflow.
	var stats demoStats
	var done atomic.Int64
	costs := make([]uint64, agents)
	for i := range costs {
		costs[i] = rng.Uint64()
	}
	prog := newProgress(e.stderr)
	stopProgress := make(chan struct{})
	var pwg sync.WaitGroup
	if prog.on {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case <-t.C:
					fmt.Fprintf(e.stderr, "\r\033[Kdemo: %s", stats.line(agents, int(done.Load())))
				}
			}
		}()
	}
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for i := range agents {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; done.Add(1); wg.Done() }()
			demoAgent(ctx, c, tenant, i, rand.New(rand.NewPCG(costs[i], uint64(i))), &stats)
		}()
	}
	wg.Wait()
	close(stopProgress)
	pwg.Wait()
	prog.clear()
	if ctx.Err() != nil {
		return e.fail(errors.New("interrupted"), "")
	}
	fmt.Fprintf(e.stderr, "demo: %s\n", stats.line(agents, agents))
	fmt.Fprintf(e.stdout, "\n%d agents made %d calls: %d granted (%d degraded to a cheaper model), %d denied by a budget\n",
		agents, stats.calls.Load(), stats.granted.Load(), stats.degraded.Load(), stats.denied.Load())

	bal, err := c.Balance(ctx, tenant)
	if err != nil {
		return e.demoErr(err)
	}
	fmt.Fprintf(e.stdout, "\nbalances (tally balance --scope %s):\n", tenant)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BUDGET\tSCOPE\tPERIOD\tUNIT\tLIMIT\tSPENT\tRESERVED\tREMAINING\tMODE")
	for _, in := range bal.Instances {
		for _, u := range in.Units {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", in.Budget, in.Scope, in.Period, u.Unit, u.Limit, u.Spent,
				u.Reserved, u.Remaining.String(), in.Mode)
		}
	}
	tw.Flush()

	sr, err := shadowReport(ctx, l.js, l.layout.Partitions, tenant, start.Add(-time.Minute), time.Now().UTC().Add(time.Second))
	if err != nil {
		return e.fail(err, "")
	}
	fmt.Fprintf(e.stdout, "\nshadow report (tally report shadow --scope %s --since 1h):\n", tenant)
	if err := report.WriteShadowText(e.stdout, sr); err != nil {
		return e.fail(err, "")
	}
	fmt.Fprintf(e.stdout, "\nnext: tally report spend --root %s --period %s --by workflow\n", tenant, start.Format("2006-01"))
	fmt.Fprintf(e.stdout, "      tally events dump --root %s | head\n", tenant)
	return exitOK
}

func (e *env) demoErr(err error) int {
	var ae *events.Error
	if errors.As(err, &ae) || errors.Is(err, client.ErrNoAnswer) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) {
		return e.fail(err, tryRunning)
	}
	return e.fail(err, "")
}

// demoBudgets sets the seed's combined structure (budget-patterns.txt):
// tenant isolation, workflow caps per run or session, and a shadow
// rollout of a daily tenant budget.
func demoBudgets(ctx context.Context, c *client.Client, tenant string) error {
	monthly, daily := events.PeriodMonthly, events.PeriodDaily
	shadow := events.ModeShadow
	usd := func(s string) events.Amounts { return events.Amounts{"USD": events.MustAmount(s)} }
	for _, b := range []events.BudgetSetRequest{
		{Scope: tenant, Name: "monthly", Limits: usd("500"), Period: &monthly},
		{Scope: tenant + "/workflow:code-review/run:*", Name: "per-run", Limits: usd("2")},
		{Scope: tenant + "/workflow:deep-research/run:*", Name: "per-run", Limits: usd("25")},
		{Scope: tenant + "/workflow:chat/session:*", Name: "per-session", Limits: usd("1")},
		{Scope: tenant, Name: "daily-shadow", Limits: usd("100"), Period: &daily, Mode: &shadow},
	} {
		if _, err := c.SetBudget(ctx, b); err != nil {
			return fmt.Errorf("set budget %s on %s: %w", b.Name, b.Scope, err)
		}
	}
	return nil
}

// demoAgent runs one simulated run or session: each step reserves through
// Execute (with the workflow's degradation options), "calls the model" and
// commits what it cost — between 60 % and 110 % of the estimate. It stops
// at its first denial: its budget is spent.
func demoAgent(ctx context.Context, c *client.Client, tenant string, i int, rng *rand.Rand, stats *demoStats) {
	wf := demoWorkflows[i%len(demoWorkflows)]
	scope := fmt.Sprintf("%s/workflow:%s/%s:%s-%d", tenant, wf.name, wf.segment, wf.segment[:1], i)
	opts := make(events.Options, len(wf.options))
	for j, m := range wf.options {
		opts[j] = events.Option{Label: m.model, Amounts: events.Amounts{"USD": events.MustAmount(m.usd)}}
	}
	for range wf.steps {
		if ctx.Err() != nil {
			return
		}
		stats.calls.Add(1)
		_, err := c.Execute(ctx, scope, nil, func(_ context.Context, g events.ReserveResult) (events.Amounts, error) {
			if g.Degraded {
				stats.degraded.Add(1)
			}
			time.Sleep(time.Duration(1+rng.IntN(5)) * time.Millisecond) // the model call
			est := opts[g.Option].Amounts["USD"]
			p := 60 + rng.IntN(51)
			pct := events.MustAmount(fmt.Sprintf("%d.%02d", p/100, p%100))
			actual, _ := events.ParseAmount(est.Mul(pct).RoundHalfUp(4))
			return events.Amounts{"USD": actual}, nil
		}, func(r *events.ReserveRequest) {
			r.Options = opts
			r.Labels = events.Labels{"agent": fmt.Sprintf("%s-%d", wf.name, i), "workflow": wf.name}
		})
		var denied *client.DeniedError
		switch {
		case err == nil:
			stats.granted.Add(1)
		case errors.As(err, &denied):
			stats.denied.Add(1)
			return
		default:
			stats.failed.Add(1)
			return
		}
	}
}
