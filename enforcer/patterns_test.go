package enforcer

// One scenario per pattern of seed/budget-patterns.txt, told the way a user
// of that pattern thinks about it, and their combination.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tallyledger/tally/events"
)

// Pattern 1: each tenant has an independent $500/month budget; one tenant
// exhausting its budget does not affect another.
func TestPatternTenantIsolation(t *testing.T) {
	h := checked(t)
	for _, tenant := range []string{"tenant:a", "tenant:b"} {
		h.set(tenant, "monthly", `"limits":{"USD":"500.00"},"period":"monthly"`)
	}
	// Tenant a's runaway agent burns through its budget.
	spent := 0
	for {
		r := h.res("tenant:a/agent:runaway", `{"USD":"120"}`, "")
		if r.Decision == "denied" {
			want := &events.Denial{Code: events.DenialBudgetExhausted, Budget: "monthly", Pattern: "tenant:a", Scope: "tenant:a",
				Period: "2026-11", Unit: "USD", Requested: amt("120"), Available: amt("20")}
			if diff := cmp.Diff(want, r.Denial, amountCmp); diff != "" {
				t.Fatalf("denial (-want +got):\n%s", diff)
			}
			break
		}
		h.commit("tenant:a", r.ReservationID, `{"USD":"120"}`)
		spent += 120
	}
	if spent != 480 {
		t.Fatalf("tenant a spent %d before the denial, want 480", spent)
	}
	h.charge("tenant:a/agent:runaway", `{"USD":"25"}`) // post-hoc bill: over the limit
	if r := h.res("tenant:a", `{"USD":"0.01"}`, `"priority":"critical"`); r.Decision != "denied" {
		t.Fatalf("tenant a over its limit: %s", jsonOf(r))
	}
	// Tenant b is untouched and can use its whole budget.
	if diff := cmp.Diff([]string{"monthly tenant:b tenant:b 2026-11 enforce | USD 500/0/0/500"}, h.balance("tenant:b", "tenant:b")); diff != "" {
		t.Errorf("tenant b (-want +got):\n%s", diff)
	}
	r := h.res("tenant:b/agent:x", `{"USD":"500"}`, `"priority":"critical"`)
	if r.Decision != "granted" {
		t.Fatalf("tenant b: %s", jsonOf(r))
	}
	if diff := cmp.Diff([]string{"monthly tenant:a tenant:a 2026-11 enforce | USD 500/505/0/-5"}, h.balance("tenant:a", "tenant:a")); diff != "" {
		t.Errorf("tenant a (-want +got):\n%s", diff)
	}
	// The blast radius is closed both ways: another tenant's scope is
	// FORBIDDEN, another tenant's reservation NOT_FOUND, and listing shows
	// only the tenant's own budgets.
	if code := h.fail(events.OpReserve, "tenant:a", `{"idempotency_key":"x","scope":"tenant:b","amounts":{"USD":"1"}}`); code != events.CodeForbidden {
		t.Errorf("tenant a reserving on b: %s", code)
	}
	if code := h.fail(events.OpRelease, "tenant:a", `{"idempotency_key":"x","reservation_id":"`+r.ReservationID+`"}`); code != events.CodeNotFound {
		t.Errorf("tenant a releasing b's reservation: %s", code)
	}
	if l := h.ok(events.OpBudgetList, "tenant:a", `{}`).(events.BudgetListResult); len(l.Budgets) != 1 || l.Budgets[0].Scope != "tenant:a" {
		t.Errorf("tenant a lists %s", jsonOf(l))
	}
	// Next month tenant a starts again.
	h.now = mustTime(t, "2026-12-01T00:00:00Z")
	if r := h.res("tenant:a", `{"USD":"500"}`, `"priority":"critical"`); r.Decision != "granted" || r.Instances[0].Period != "2026-12" {
		t.Errorf("tenant a next month: %s", jsonOf(r))
	}
}

// Pattern 2: each workflow caps each of its runs (or sessions) on its own.
func TestPatternWorkflowCaps(t *testing.T) {
	workflows := []struct {
		workflow, kind, limit, over string
	}{
		{"code-review", "run", "2.00", "2.01"},
		{"deep-research", "run", "25.00", "25.01"},
		{"summarization", "run", "5.00", "5.01"},
		{"chat", "session", "1.00", "1.01"},
	}
	h := checked(t)
	for _, w := range workflows {
		h.set(fmt.Sprintf("tenant:acme/workflow:%s/%s:*", w.workflow, w.kind), "per-"+w.kind, `"limits":{"USD":"`+w.limit+`"}`)
	}
	for _, w := range workflows {
		t.Run(w.workflow, func(t *testing.T) {
			parent := h.t
			h.t = t
			defer func() { h.t = parent }()
			first := fmt.Sprintf("tenant:acme/workflow:%s/%s:1", w.workflow, w.kind)
			second := fmt.Sprintf("tenant:acme/workflow:%s/%s:2", w.workflow, w.kind)
			if r := h.res(first, `{"USD":"`+w.over+`"}`, ""); r.Decision != "denied" || r.Denial.Budget != "per-"+w.kind || r.Denial.Scope != first {
				t.Fatalf("above the cap: %s", jsonOf(r))
			}
			r := h.res(first, `{"USD":"`+w.limit+`"}`, "")
			if r.Decision != "granted" {
				t.Fatalf("the cap itself: %s", jsonOf(r))
			}
			h.commit(acme, r.ReservationID, `{"USD":"`+w.limit+`"}`)
			if r := h.res(first, `{"USD":"0.01"}`, `"priority":"critical"`); r.Decision != "denied" {
				t.Fatalf("a spent %s: %s", w.kind, jsonOf(r))
			}
			if r := h.res(second, `{"USD":"`+w.limit+`"}`, ""); r.Decision != "granted" {
				t.Fatalf("another %s of the workflow has its own cap: %s", w.kind, jsonOf(r))
			}
			limit := strings.TrimSuffix(w.limit, ".00")
			want := []string{fmt.Sprintf("per-%s tenant:acme/workflow:%s/%s:* %s none enforce | USD %s/%s/0/0",
				w.kind, w.workflow, w.kind, first, limit, limit)}
			if diff := cmp.Diff(want, h.balance(acme, first)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	// A workflow with no cap configured is not limited by another's.
	if r := h.res("tenant:acme/workflow:new/run:1", `{"USD":"1000"}`, ""); r.Decision != "granted" || len(r.Instances) != 0 {
		t.Errorf("an uncapped workflow: %s", jsonOf(r))
	}
}

// Pattern 3: a run degrades from the best model to a cheaper one, then to
// cached results, as its budget drains — atomically, by reserve options,
// without the seed's race between "check remaining" and "reserve".
func TestPatternPerRunDegradation(t *testing.T) {
	const options = `"options":[` +
		`{"label":"claude-opus-4","amounts":{"USD":"4"}},` +
		`{"label":"claude-sonnet-4","amounts":{"USD":"1.5"}},` +
		`{"label":"cached","amounts":{"USD":"0.25"}}]`
	h := checked(t)
	h.set("tenant:acme/workflow:research/run:*", "per-run", `"limits":{"USD":"10.00"}`)
	const run = "tenant:acme/workflow:research/run:r1"
	var got []string
	for i := range 8 {
		d := h.step(events.OpReserve, acme, fmt.Sprintf(`{"idempotency_key":"q%d","scope":%q,%s}`, i, run, options))
		r := mustResult(t, d).(events.ReserveResult)
		if r.Decision == "denied" {
			got = append(got, fmt.Sprintf("denied %s requested=%s available=%s label=%s", r.Denial.Code, r.Denial.Requested, r.Denial.Available, r.Label))
			break
		}
		ub, _ := r.Instances[0].Units.Get("USD")
		got = append(got, fmt.Sprintf("option %d %s degraded=%v remaining=%s", r.Option, r.Label, r.Degraded, ub.Remaining))
		// The agent spends what it reserved.
		h.commit(acme, r.ReservationID, `{"USD":"`+d.Events[0].Data.(*events.ReservationGranted).Amounts["USD"].String()+`"}`)
	}
	want := []string{
		"option 0 claude-opus-4 degraded=false remaining=6",
		"option 0 claude-opus-4 degraded=false remaining=2",
		"option 1 claude-sonnet-4 degraded=true remaining=0.5",
		"option 2 cached degraded=true remaining=0.25",
		"option 2 cached degraded=true remaining=0",
		"denied BUDGET_EXHAUSTED requested=4 available=0 label=claude-opus-4",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("degradation (-want +got):\n%s", diff)
	}
	// Another run starts at the best model.
	r := h.reserve(acme, fmt.Sprintf(`{"idempotency_key":"other","scope":"tenant:acme/workflow:research/run:r2",%s}`, options))
	if r.Option != 0 || r.Degraded {
		t.Errorf("a fresh run: %s", jsonOf(r))
	}
}

// Pattern 4: a shared pool where lower priorities are refused first. The
// seed's thresholds are floors: the fraction of the limit a grant must
// leave free. A grant may leave exactly the floor free (DESIGN §2, where
// the seed's "remaining <= threshold" differs).
func TestPatternSharedPoolPriorityTiers(t *testing.T) {
	const pool = `"limits":{"USD":"5000.00"},"period":"monthly","priority_floors":{"high":"0.10","normal":"0.25","low":"0.50","bulk":"0.70"}`
	h := checked(t)
	h.set("org:engineering", "pool", pool)
	prios := []string{"critical", "high", "normal", "low", "bulk"}
	// probe asks, without reserving, whether a $1 call of each priority
	// would be granted at the pool's current spend.
	probe := func() string {
		var parts []string
		for _, p := range prios {
			r := h.ok(events.OpDecide, "org:engineering", `{"scope":"org:engineering/team:infra","amounts":{"USD":"1"},"priority":"`+p+`"}`).(events.ReserveResult)
			if r.Decision == "granted" {
				parts = append(parts, p+"=ok")
			} else {
				parts = append(parts, p+"="+string(r.Denial.Code))
			}
		}
		return strings.Join(parts, " ")
	}
	var got []string
	spent := amt("0")
	for _, at := range []string{"0", "1499", "1499.01", "2499", "2499.01", "3749", "3749.01", "4499", "4499.01", "4999", "4999.01", "5000"} {
		if d := amt(at).Sub(spent); d.Sign() > 0 {
			h.charge("org:engineering/team:infra", `{"USD":"`+d.String()+`"}`)
			spent = amt(at)
		}
		got = append(got, "spent "+at+": "+probe())
	}
	const pf, ex = "PRIORITY_FLOOR", "BUDGET_EXHAUSTED"
	want := []string{
		"spent 0: critical=ok high=ok normal=ok low=ok bulk=ok",
		"spent 1499: critical=ok high=ok normal=ok low=ok bulk=ok",
		"spent 1499.01: critical=ok high=ok normal=ok low=ok bulk=" + pf,
		"spent 2499: critical=ok high=ok normal=ok low=ok bulk=" + pf,
		"spent 2499.01: critical=ok high=ok normal=ok low=" + pf + " bulk=" + pf,
		"spent 3749: critical=ok high=ok normal=ok low=" + pf + " bulk=" + pf,
		"spent 3749.01: critical=ok high=ok normal=" + pf + " low=" + pf + " bulk=" + pf,
		"spent 4499: critical=ok high=ok normal=" + pf + " low=" + pf + " bulk=" + pf,
		"spent 4499.01: critical=ok high=" + pf + " normal=" + pf + " low=" + pf + " bulk=" + pf,
		"spent 4999: critical=ok high=" + pf + " normal=" + pf + " low=" + pf + " bulk=" + pf,
		"spent 4999.01: critical=" + ex + " high=" + ex + " normal=" + ex + " low=" + ex + " bulk=" + ex,
		"spent 5000: critical=" + ex + " high=" + ex + " normal=" + ex + " low=" + ex + " bulk=" + ex,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("who is refused at which spend (-want +got):\n%s", diff)
	}
	t.Run("critical is denied only at $0 remaining", func(t *testing.T) {
		h := checked(t)
		h.set("org:engineering", "pool", pool)
		h.charge("org:engineering", `{"USD":"3749"}`)
		// normal may take the pool down to exactly 25% free …
		if r := h.res("org:engineering", `{"USD":"1"}`, `"priority":"normal"`); r.Decision != "granted" {
			t.Fatalf("normal leaving exactly its floor: %s", jsonOf(r))
		}
		// … and critical all the way to $0.
		if r := h.res("org:engineering", `{"USD":"1250"}`, `"priority":"critical"`); r.Decision != "granted" {
			t.Fatalf("critical to $0: %s", jsonOf(r))
		}
		r := h.res("org:engineering", `{"USD":"0.000001"}`, `"priority":"critical"`)
		if r.Decision != "denied" || r.Denial.Code != events.DenialBudgetExhausted || r.Denial.Available.String() != "0" {
			t.Fatalf("critical at $0: %s", jsonOf(r))
		}
	})
}

// Pattern 5: a tenant's $100/day budget in shadow mode: nothing is denied,
// what would have been denied is recorded with its exact overage, and the
// budget can then be switched to enforce.
func TestPatternShadowRollout(t *testing.T) {
	h := checked(t)
	h.set("tenant:acme", "daily", `"limits":{"USD":"100.00"},"period":"daily","mode":"shadow"`)
	wouldDeny := 0
	var overages []string
	peak := amt("0")
	for i := range 30 {
		r := h.res("tenant:acme/agent:a", `{"USD":"5"}`, "")
		if r.Decision != "granted" {
			t.Fatalf("call %d denied in shadow mode: %s", i, jsonOf(r))
		}
		if len(r.ShadowDenials) > 0 {
			wouldDeny++
			sd := r.ShadowDenials[0]
			overages = append(overages, sd.Overage.String())
			peak = events.Max(peak, sd.Overage)
		}
		h.commit(acme, r.ReservationID, `{"USD":"5"}`)
	}
	if wouldDeny != 10 || peak.String() != "50" {
		t.Errorf("%d calls would have been denied, peak overage %s; want 10 and 50", wouldDeny, peak)
	}
	if diff := cmp.Diff([]string{"5", "10", "15", "20", "25", "30", "35", "40", "45", "50"}, overages); diff != "" {
		t.Errorf("overages (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"daily tenant:acme tenant:acme 2026-11-28 shadow | USD 100/150/0/-50"}, h.balance(acme, acme)); diff != "" {
		t.Errorf("shadow tracks the real balances (-want +got):\n%s", diff)
	}
	// Tuned: enforce at $160/day. The spend of the day is kept.
	h.set("tenant:acme", "daily", `"limits":{"USD":"160.00"},"period":"daily","mode":"enforce"`)
	if r := h.res("tenant:acme/agent:a", `{"USD":"5"}`, ""); r.Decision != "granted" {
		t.Errorf("within the new limit: %s", jsonOf(r))
	}
	if r := h.res("tenant:acme/agent:a", `{"USD":"5.01"}`, ""); r.Decision != "denied" || r.Denial.Available.String() != "5" {
		t.Errorf("past the new limit: %s", jsonOf(r))
	}
	// The next day starts from zero.
	h.advance(3 * time.Hour)
	if r := h.res("tenant:acme/agent:a", `{"USD":"160"}`, `"priority":"critical"`); r.Decision != "granted" || r.Instances[0].Period != "2026-11-29" {
		t.Errorf("the next day: %s", jsonOf(r))
	}
}

// Pattern 6: a run capped at 500 000 tokens and $15, both checked
// atomically: a cheap model looping hits the token cap while dollars
// remain; an expensive model hits the dollar cap while tokens remain.
func TestPatternHybridTokensAndDollars(t *testing.T) {
	h := checked(t)
	h.set("tenant:acme/run:*", "hybrid", `"limits":{"tokens":"500000","USD":"15.00"}`)
	loop := func(run, call string) (calls int, denial *events.Denial) {
		for {
			r := h.res(run, call, "")
			if r.Decision == "denied" {
				return calls, r.Denial
			}
			h.commit(acme, r.ReservationID, call) // the estimate was right
			calls++
		}
	}
	calls, d := loop("tenant:acme/run:cheap", `{"tokens":"50000","USD":"0.10"}`)
	if calls != 10 || d.Unit != "tokens" || d.Code != events.DenialBudgetExhausted {
		t.Errorf("cheap model: %d calls, denied on %s %s", calls, d.Unit, d.Code)
	}
	if diff := cmp.Diff([]string{"hybrid tenant:acme/run:* tenant:acme/run:cheap none enforce | USD 15/1/0/14 tokens 500000/500000/0/0"},
		h.balance(acme, "tenant:acme/run:cheap")); diff != "" {
		t.Errorf("cheap: dollars remain, nothing reserved by the denial (-want +got):\n%s", diff)
	}
	calls, d = loop("tenant:acme/run:expensive", `{"tokens":"20000","USD":"3"}`)
	if calls != 5 || d.Unit != "USD" || d.Code != events.DenialBudgetExhausted {
		t.Errorf("expensive model: %d calls, denied on %s %s", calls, d.Unit, d.Code)
	}
	if diff := cmp.Diff([]string{"hybrid tenant:acme/run:* tenant:acme/run:expensive none enforce | USD 15/15/0/0 tokens 500000/100000/0/400000"},
		h.balance(acme, "tenant:acme/run:expensive")); diff != "" {
		t.Errorf("expensive: tokens remain (-want +got):\n%s", diff)
	}
}

// The combination: tenant $500/month > workflow code-review $2/run > run.
func TestPatternCombinedHierarchy(t *testing.T) {
	h := checked(t)
	h.set("tenant:acme", "monthly", `"limits":{"USD":"500"},"period":"monthly"`)
	h.set("tenant:acme/workflow:code-review/run:*", "per-run", `"limits":{"USD":"2.00"}`)
	h.set("tenant:acme/workflow:chat/session:*", "per-session", `"limits":{"USD":"1.00"}`)
	run := func(id string) string { return "tenant:acme/workflow:code-review/run:" + id }

	r := h.res(run("r1"), `{"USD":"0.8"}`, `"labels":{"model":"claude-opus-4"}`)
	want := []string{
		"monthly tenant:acme tenant:acme 2026-11 enforce | USD 500/0/0.8/499.2",
		"per-run tenant:acme/workflow:code-review/run:* tenant:acme/workflow:code-review/run:r1 none enforce | USD 2/0/0.8/1.2",
	}
	if diff := cmp.Diff(want, renderViews(r.Instances)); diff != "" {
		t.Errorf("instances root to leaf (-want +got):\n%s", diff)
	}
	c := h.commit(acme, r.ReservationID, `{"USD":"0.7"}`)
	want = []string{
		"monthly tenant:acme tenant:acme 2026-11 enforce | USD 500/0.7/0/499.3",
		"per-run tenant:acme/workflow:code-review/run:* tenant:acme/workflow:code-review/run:r1 none enforce | USD 2/0.7/0/1.3",
	}
	if diff := cmp.Diff(want, renderViews(c.Instances)); diff != "" {
		t.Errorf("after commit (-want +got):\n%s", diff)
	}
	r = h.res(run("r1"), `{"USD":"0.8"}`, "")
	h.commit(acme, r.ReservationID, `{"USD":"0.9"}`)
	// The run cap denies long before the tenant's.
	r = h.res(run("r1"), `{"USD":"0.8"}`, "")
	if r.Decision != "denied" || r.Denial.Budget != "per-run" || r.Denial.Available.String() != "0.4" {
		t.Fatalf("the run cap: %s", jsonOf(r))
	}
	// Chat sessions are capped by their own budget, not code review's.
	if r := h.res("tenant:acme/workflow:chat/session:s1", `{"USD":"1.5"}`, ""); r.Decision != "denied" || r.Denial.Budget != "per-session" {
		t.Errorf("a chat session: %s", jsonOf(r))
	}
	// Many runs, each spending its full $2, drain the tenant.
	runs := 0
	for i := 2; ; i++ {
		r := h.res(run(fmt.Sprintf("r%d", i)), `{"USD":"2"}`, "")
		if r.Decision == "denied" {
			want := &events.Denial{Code: events.DenialBudgetExhausted, Budget: "monthly", Pattern: acme, Scope: acme,
				Period: "2026-11", Unit: "USD", Requested: amt("2"), Available: amt("0.4")}
			if diff := cmp.Diff(want, r.Denial, amountCmp); diff != "" {
				t.Fatalf("the tenant cap (-want +got):\n%s", diff)
			}
			break
		}
		h.commit(acme, r.ReservationID, `{"USD":"2"}`)
		runs++
		if runs > 300 {
			t.Fatal("the tenant cap never denied")
		}
	}
	if runs != 249 {
		t.Errorf("%d full runs before the tenant cap, want 249", runs)
	}
	// The next run could still spend $2 by its own cap; the tenant has $0.40.
	last := run(fmt.Sprintf("r%d", runs+2))
	want = []string{
		"monthly tenant:acme tenant:acme 2026-11 enforce | USD 500/499.6/0/0.4",
		"per-run tenant:acme/workflow:code-review/run:* " + last + " none enforce | USD 2/0/0/2",
	}
	if diff := cmp.Diff(want, h.balance(acme, last)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if r := h.res(last, `{"USD":"0.4"}`, ""); r.Decision != "granted" {
		t.Errorf("what the tenant has left: %s", jsonOf(r))
	}
	// December: the tenant's budget rolls over; runs are lifetime caps.
	h.advance(4 * 24 * time.Hour)
	if r := h.res(run("r1"), `{"USD":"0.5"}`, ""); r.Decision != "denied" || r.Denial.Budget != "per-run" {
		t.Errorf("r1 in December: %s", jsonOf(r))
	}
	if r := h.res(run("fresh"), `{"USD":"2"}`, ""); r.Decision != "granted" || r.Instances[0].Period != "2026-12" {
		t.Errorf("a fresh run in December: %s", jsonOf(r))
	}
}
