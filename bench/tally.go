package bench

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/tallyledger/tally/client"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/streams"
)

// The simulated agents: each root is a tenant with one workflow, and each
// client is one run of that workflow in every root it visits — a 3-level
// hierarchy (tenant > workflow > run:*) with two units. The limits are far
// above what any bench spends, so load is granted.
const (
	rootPrefix     = "tenant:bench-"
	workflowSuffix = "/workflow:agents"
	runSegment     = "/run:a"
	// Reserved and committed amounts per call.
	reserveUSD, reserveTokens = "0.42", "12000"
	actualUSD, actualTokens   = "0.37", "10500"
	// benchLimitUSD and benchLimitTokens are each budget's limits.
	benchLimitUSD    = "1000000000000"
	benchLimitTokens = "1000000000000000"
	// setupConcurrency bounds the budget-set requests in flight at setup.
	setupConcurrency = 16
)

// benchRoot is the name of root r.
func benchRoot(r int) string { return rootPrefix + strconv.Itoa(r) }

// setupBudgets creates (or replaces: spent and reserved of the current
// period are kept) the three budgets of every root, over the client
// connections in parallel.
func setupBudgets(ctx context.Context, conns []*nats.Conn, roots int, timeout time.Duration) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(setupConcurrency)
	for r := range roots {
		sdk := client.New(conns[r%len(conns)], client.WithTimeout(timeout))
		g.Go(func() error {
			for _, b := range budgetsOf(benchRoot(r)) {
				if _, err := sdk.SetBudget(gctx, b); err != nil {
					return fmt.Errorf("bench: set budget %s on %s: %w", b.Name, b.Scope, err)
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// budgetsOf is the hierarchy of one root: tenant (monthly), workflow
// (daily) and one budget per run, each limiting USD and tokens.
func budgetsOf(root string) []events.BudgetSetRequest {
	limits := events.Amounts{"USD": events.MustAmount(benchLimitUSD), "tokens": events.MustAmount(benchLimitTokens)}
	period := func(p events.Period) *events.Period { return &p }
	return []events.BudgetSetRequest{
		{Scope: root, Name: "tenant", Limits: limits, Period: period(events.PeriodMonthly)},
		{Scope: root + workflowSuffix, Name: "workflow", Limits: limits, Period: period(events.PeriodDaily)},
		{Scope: root + workflowSuffix + "/run:*", Name: "per-run", Limits: limits, Period: period(events.PeriodNone)},
	}
}

// tallyLoad is the tally phase's step: the mix against the roots.
type tallyLoad struct {
	mix       Mix
	tag       string // makes idempotency keys unique to this run
	clients   int
	attempts  int
	roots     []string
	subjects  []opSubjects // by root index
	onGranted func(root, reservationID string)
}

type opSubjects struct{ reserve, commit, release, decide string }

func newTallyLoad(cfg Config, tag string) *tallyLoad {
	t := &tallyLoad{mix: cfg.Mix, tag: tag, clients: cfg.Clients, attempts: cfg.Attempts, onGranted: cfg.OnGranted}
	for r := range cfg.Roots {
		t.roots = append(t.roots, benchRoot(r))
	}
	t.subjects = subjectsOf(streams.Ledger, t.roots)
	return t
}

// subjectsOf is the request subjects of each root in family f.
func subjectsOf(f streams.Family, roots []string) []opSubjects {
	subjects := make([]opSubjects, len(roots))
	for r, root := range roots {
		subjects[r] = opSubjects{
			reserve: f.Request(root, string(events.OpReserve)),
			commit:  f.Request(root, string(events.OpCommit)),
			release: f.Request(root, string(events.OpRelease)),
			decide:  f.Request(root, string(events.OpDecide)),
		}
	}
	return subjects
}

// under is a copy of t whose requests go to family f's subjects instead of
// tally's (and report no grants).
func (t *tallyLoad) under(f streams.Family) *tallyLoad {
	u := *t
	u.onGranted = nil
	u.subjects = subjectsOf(f, t.roots)
	return &u
}

// step runs one agent call: reserve then commit or release, or one decide.
// Client i's k-th step goes to root (i + k·clients) mod roots, so every
// client visits every root and every root sees every client.
func (t *tallyLoad) step(c *agent, done <-chan struct{}) {
	r := int((uint64(c.id) + c.cycle*uint64(t.clients)) % uint64(len(t.roots)))
	root, subj := t.roots[r], t.subjects[r]
	if t.mix == MixDecide {
		if _, ok := c.request(done, false, subj.decide, t.reserveBody(c, root, false), t.attempts, classifyTally); ok {
			c.decides.Add(1)
		}
		return
	}
	answer, ok := c.request(done, false, subj.reserve, t.reserveBody(c, root, true), t.attempts, classifyTally)
	if !ok {
		return
	}
	c.reserves.Add(1)
	decision, id := reserveOutcome(answer)
	if decision != events.DecisionGranted || id == "" {
		c.denied.Add(1)
		return
	}
	c.granted.Add(1)
	if t.onGranted != nil {
		t.onGranted(root, id)
	}
	// Close the reservation even when the phase has just ended: the bench
	// leaves no reservation open.
	if t.mix == MixReserveCommit {
		if _, ok := c.request(done, true, subj.commit, t.commitBody(c, id), t.attempts, classifyTally); ok {
			c.commits.Add(1)
		}
		return
	}
	if _, ok := c.request(done, true, subj.release, t.releaseBody(c, id), t.attempts, classifyTally); ok {
		c.releases.Add(1)
	}
}

// key appends the idempotency key of client c's current step and op.
func (t *tallyLoad) key(b []byte, c *agent, op byte) []byte {
	b = append(b, t.tag...)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(c.id), 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, c.cycle, 10)
	return append(b, '-', op)
}

// reserveBody is the reserve (or, without key, decide) request of client c
// on root: what an agent sends before an LLM call.
func (t *tallyLoad) reserveBody(c *agent, root string, keyed bool) []byte {
	b := make([]byte, 0, 192)
	b = append(b, '{')
	if keyed {
		b = append(b, `"idempotency_key":"`...)
		b = t.key(b, c, 'r')
		b = append(b, `",`...)
	}
	b = append(b, `"scope":"`...)
	b = append(b, root...)
	b = append(b, workflowSuffix+runSegment...)
	b = strconv.AppendInt(b, int64(c.id), 10)
	b = append(b, `","amounts":{"USD":"`+reserveUSD+`","tokens":"`+reserveTokens+`"},"labels":{"model":"bench"}}`...)
	return b
}

func (t *tallyLoad) commitBody(c *agent, id string) []byte {
	b := make([]byte, 0, 160)
	b = append(b, `{"idempotency_key":"`...)
	b = t.key(b, c, 'c')
	b = append(b, `","reservation_id":"`...)
	b = append(b, id...)
	return append(b, `","actual":{"USD":"`+actualUSD+`","tokens":"`+actualTokens+`"}}`...)
}

func (t *tallyLoad) releaseBody(c *agent, id string) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"idempotency_key":"`...)
	b = t.key(b, c, 'x')
	b = append(b, `","reservation_id":"`...)
	b = append(b, id...)
	return append(b, `"}`...)
}

// Answer prefixes (events.Answer is encoded with result or error first).
var (
	resultPrefix = []byte(`{"result":`)
	errorPrefix  = []byte(`{"error":{"code":"`)
)

// classifyTally accepts result answers; an error answer is a failure,
// retried when it is UNAVAILABLE.
func classifyTally(answer []byte) (string, bool) {
	if bytes.HasPrefix(answer, resultPrefix) {
		return "", false
	}
	if rest, ok := bytes.CutPrefix(answer, errorPrefix); ok {
		if i := bytes.IndexByte(rest, '"'); i > 0 {
			code := string(rest[:i])
			return code, code == string(events.CodeUnavailable)
		}
	}
	return codeBadAnswer, false
}

// reserveOutcome reads the decision and reservation id of a reserve
// answer. The load generator decodes only what it needs (as a lean agent
// would), so the bench process spends its CPU on sending load.
func reserveOutcome(answer []byte) (decision, id string) {
	return stringField(answer, `"decision":"`), stringField(answer, `"reservation_id":"`)
}

// stringField returns the first string value after key (a quoted key, colon
// and opening quote); the fields read here are simple tokens, never
// escaped.
func stringField(b []byte, key string) string {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return ""
	}
	rest := b[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}
