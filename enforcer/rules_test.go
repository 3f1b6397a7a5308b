package enforcer

// Table tests for every decision rule of DESIGN §2, one function per rule.
// Balances are compared as rendered lines
// ("budget pattern scope period mode | unit limit/spent/reserved/remaining"),
// so a failure shows the whole picture.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tallyledger/tally/events"
)

const acme = "tenant:acme"

func TestRuleHierarchyEveryPrefixApplies(t *testing.T) {
	const scope = "tenant:acme/workflow:cr/run:r1"
	budgets := []struct{ scope, name string }{
		{"tenant:acme", "monthly"},
		{"tenant:acme/workflow:*", "any-wf"},
		{"tenant:acme/workflow:cr", "wf"},
		{"tenant:acme/workflow:cr/run:*", "per-run"},
		// These do not apply to the scope.
		{"tenant:acme/workflow:other", "other-wf"},
		{"tenant:acme/run:*", "flat-run"},
		{"tenant:acme/workflow:cr/run:r2", "r2"},
		{"tenant:acme/workflow:cr/run:r1/step:*", "step"},
	}
	tests := []struct {
		name  string
		tight string // the budget limited to 1 USD; the others have 10
		want  string // the budget that denies, "" for a grant
	}{
		{name: "no budget too small", tight: "", want: ""},
		{name: "the root denies", tight: "monthly", want: "monthly"},
		{name: "a workflow pattern denies", tight: "any-wf", want: "any-wf"},
		{name: "the concrete workflow denies", tight: "wf", want: "wf"},
		{name: "the run pattern denies although every other passes", tight: "per-run", want: "per-run"},
		{name: "another workflow does not apply", tight: "other-wf", want: ""},
		{name: "another kind at the same depth does not apply", tight: "flat-run", want: ""},
		{name: "another run does not apply", tight: "r2", want: ""},
		{name: "a deeper scope does not apply", tight: "step", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := checked(t)
			for _, b := range budgets {
				limit := "10"
				if b.name == tt.tight {
					limit = "1"
				}
				h.set(b.scope, b.name, `"limits":{"USD":"`+limit+`"}`)
			}
			res := h.res(scope, `{"USD":"2"}`, "")
			if tt.want == "" {
				if res.Decision != events.DecisionGranted {
					t.Fatalf("want granted, got %s", jsonOf(res))
				}
				want := []string{
					"monthly tenant:acme tenant:acme none enforce | USD 10/0/2/8",
					"any-wf tenant:acme/workflow:* tenant:acme/workflow:cr none enforce | USD 10/0/2/8",
					"wf tenant:acme/workflow:cr tenant:acme/workflow:cr none enforce | USD 10/0/2/8",
					"per-run tenant:acme/workflow:cr/run:* tenant:acme/workflow:cr/run:r1 none enforce | USD 10/0/2/8",
				}
				if diff := cmp.Diff(want, renderViews(res.Instances)); diff != "" {
					t.Errorf("instances (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(want, h.balance(acme, scope)); diff != "" {
					t.Errorf("balance (-want +got):\n%s", diff)
				}
				return
			}
			if res.Decision != events.DecisionDenied || res.Denial.Budget != tt.want {
				t.Fatalf("want denied by %s, got %s", tt.want, jsonOf(res))
			}
			for _, line := range h.balance(acme, scope) {
				if !strings.HasSuffix(line, "/0/0/10") && !strings.HasSuffix(line, "/0/0/1") {
					t.Errorf("a denial reserved something: %s", line)
				}
			}
		})
	}
}

func TestRulePatternBudgetInstancePerRun(t *testing.T) {
	h := checked(t)
	h.set("tenant:acme/workflow:cr/run:*", "per-run", `"limits":{"USD":"2"}`)
	r1 := h.res("tenant:acme/workflow:cr/run:r1", `{"USD":"1.5"}`, "")
	r2 := h.res("tenant:acme/workflow:cr/run:r2", `{"USD":"1.5"}`, "")
	again := h.res("tenant:acme/workflow:cr/run:r1", `{"USD":"1"}`, "")
	if r1.Decision != "granted" || r2.Decision != "granted" {
		t.Fatalf("each run has its own instance: %s %s", jsonOf(r1), jsonOf(r2))
	}
	want := &events.Denial{Code: events.DenialBudgetExhausted, Budget: "per-run", Pattern: "tenant:acme/workflow:cr/run:*",
		Scope: "tenant:acme/workflow:cr/run:r1", Period: "none", Unit: "USD", Requested: amt("1"), Available: amt("0.5")}
	if diff := cmp.Diff(want, again.Denial, amountCmp); diff != "" {
		t.Errorf("denial (-want +got):\n%s", diff)
	}
	for run, want := range map[string]string{
		"r1": "per-run tenant:acme/workflow:cr/run:* tenant:acme/workflow:cr/run:r1 none enforce | USD 2/0/1.5/0.5",
		"r2": "per-run tenant:acme/workflow:cr/run:* tenant:acme/workflow:cr/run:r2 none enforce | USD 2/0/1.5/0.5",
		"r3": "per-run tenant:acme/workflow:cr/run:* tenant:acme/workflow:cr/run:r3 none enforce | USD 2/0/0/2",
	} {
		if diff := cmp.Diff([]string{want}, h.balance(acme, "tenant:acme/workflow:cr/run:"+run)); diff != "" {
			t.Errorf("run %s (-want +got):\n%s", run, diff)
		}
	}
}

func TestRuleCalendarPeriods(t *testing.T) {
	tests := []struct {
		name              string
		period, tz        string
		first, second     string // RFC 3339 decision times
		key1, key2        string
		end1              string
		wantUsageCarried  bool
		wantGrantOnSecond bool
	}{
		{name: "monthly rolls over on the first of the month", period: "monthly", tz: "UTC",
			first: "2026-11-30T23:59:59.999999999Z", second: "2026-12-01T00:00:00Z",
			key1: "2026-11", key2: "2026-12", end1: "2026-12-01T00:00:00Z"},
		{name: "monthly keeps usage within the month", period: "monthly", tz: "UTC",
			first: "2026-11-01T00:00:00Z", second: "2026-11-30T23:59:59.999999999Z",
			key1: "2026-11", key2: "2026-11", end1: "2026-12-01T00:00:00Z", wantUsageCarried: true},
		{name: "monthly in a time zone rolls at local midnight", period: "monthly", tz: "Europe/Paris",
			first: "2026-11-30T22:59:59Z", second: "2026-11-30T23:00:00Z",
			key1: "2026-11", key2: "2026-12", end1: "2026-11-30T23:00:00Z"},
		{name: "daily Asia/Tokyo rolls at local midnight, 15:00 UTC", period: "daily", tz: "Asia/Tokyo",
			first: "2026-11-28T14:59:59.999999999Z", second: "2026-11-28T15:00:00Z",
			key1: "2026-11-28", key2: "2026-11-29", end1: "2026-11-28T15:00:00Z"},
		{name: "daily America/New_York does not roll at UTC midnight", period: "daily", tz: "America/New_York",
			first: "2026-11-28T23:00:00Z", second: "2026-11-29T00:30:00Z",
			key1: "2026-11-28", key2: "2026-11-28", end1: "2026-11-29T05:00:00Z", wantUsageCarried: true},
		{name: "weekly rolls on Monday", period: "weekly", tz: "UTC",
			first: "2026-11-29T23:59:59Z", second: "2026-11-30T00:00:00Z",
			key1: "2026-W48", key2: "2026-W49", end1: "2026-11-30T00:00:00Z"},
		{name: "hourly rolls on the hour", period: "hourly", tz: "UTC",
			first: "2026-11-28T21:59:59Z", second: "2026-11-28T22:00:00Z",
			key1: "2026-11-28T21+00:00", key2: "2026-11-28T22+00:00", end1: "2026-11-28T22:00:00Z"},
		{name: "yearly rolls on January 1st", period: "yearly", tz: "UTC",
			first: "2026-12-31T23:59:59Z", second: "2027-01-01T00:00:00Z",
			key1: "2026", key2: "2027", end1: "2027-01-01T00:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := checked(t)
			h.now = mustTime(t, "2026-01-01T00:00:00Z")
			h.set(acme, "b", fmt.Sprintf(`"limits":{"USD":"10"},"period":%q,"timezone":%q`, tt.period, tt.tz))
			h.now = mustTime(t, tt.first)
			c := h.charge(acme, `{"USD":"7"}`)
			v := c.Instances[0]
			if v.Period != tt.key1 || v.PeriodEnd == nil || !v.PeriodEnd.Equal(mustTime(t, tt.end1)) {
				t.Fatalf("first period %s ending %v, want %s ending %s", v.Period, v.PeriodEnd, tt.key1, tt.end1)
			}
			h.now = mustTime(t, tt.second)
			ub := h.unit(acme, acme, "b", "USD")
			res := h.res(acme, `{"USD":"5"}`, "")
			if got := res.Instances[0].Period; got != tt.key2 {
				t.Errorf("second period %s, want %s", got, tt.key2)
			}
			wantSpent, wantDecision := "0", "granted"
			if tt.wantUsageCarried {
				wantSpent, wantDecision = "7", "denied"
			}
			if ub.Spent.String() != wantSpent || res.Decision != wantDecision {
				t.Errorf("second period: spent %s, decision %s; want %s, %s", ub.Spent, res.Decision, wantSpent, wantDecision)
			}
		})
	}
}

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

func TestRuleMultiUnitAtomic(t *testing.T) {
	const scope = "tenant:acme/run:r1"
	tests := []struct {
		name    string
		amounts string
		budget  string
		unit    string
	}{
		{name: "the leaf's second unit fails", amounts: `{"USD":"1","tokens":"200"}`, budget: "per-run", unit: "tokens"},
		{name: "the root's first unit fails", amounts: `{"USD":"11","tokens":"1"}`, budget: "tenant", unit: "USD"},
		{name: "the leaf's first unit fails", amounts: `{"USD":"5.5","tokens":"50"}`, budget: "per-run", unit: "USD"},
		{name: "a shadow instance would pass, the enforce one fails", amounts: `{"USD":"1","tokens":"101"}`, budget: "per-run", unit: "tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := checked(t)
			h.set(acme, "tenant", `"limits":{"USD":"10","tokens":"1000"}`)
			h.set(acme, "watch", `"limits":{"USD":"100","tokens":"100000"},"mode":"shadow"`)
			h.set("tenant:acme/run:*", "per-run", `"limits":{"USD":"5","tokens":"100"}`)
			before := h.balance(acme, scope)
			res := h.res(scope, tt.amounts, "")
			if res.Decision != "denied" || res.Denial.Budget != tt.budget || res.Denial.Unit != tt.unit {
				t.Fatalf("want denied by %s %s, got %s", tt.budget, tt.unit, jsonOf(res))
			}
			if diff := cmp.Diff(before, h.balance(acme, scope)); diff != "" {
				t.Errorf("a denial changed balances (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(before, renderViews(res.Instances)); diff != "" {
				t.Errorf("a denial's instances show the state as is (-want +got):\n%s", diff)
			}
			if n := h.s.OpenReservations(); n != 0 {
				t.Errorf("%d open reservations after a denial", n)
			}
		})
	}
}

func TestRuleUnitsNotLimitedAreRecordedNotChecked(t *testing.T) {
	h := checked(t)
	h.set(acme, "usd", `"limits":{"USD":"10"}`)
	d := h.step(events.OpReserve, acme, `{"idempotency_key":"k1","scope":"tenant:acme/run:r1","amounts":{"USD":"1","search_calls":"99999999"}}`)
	res := mustResult(t, d).(events.ReserveResult)
	if res.Decision != "granted" {
		t.Fatalf("an unlimited unit must not deny: %s", jsonOf(res))
	}
	g := d.Events[0].Data.(*events.ReservationGranted)
	if got := amountsString(g.Amounts); got != "USD=1 search_calls=99999999" {
		t.Errorf("event amounts %q, want both units recorded", got)
	}
	if diff := cmp.Diff([]string{"usd tenant:acme tenant:acme none enforce | USD 10/0/1/9"}, renderViews(res.Instances)); diff != "" {
		t.Errorf("instances list only limited units (-want +got):\n%s", diff)
	}
	c := h.commit(acme, res.ReservationID, `{"USD":"1","search_calls":"7"}`)
	if got := amountsString(c.Charged); got != "USD=1 search_calls=7" {
		t.Errorf("charged %q", got)
	}
	if got := amountsString(c.Released); got != "USD=0 search_calls=99999992" {
		t.Errorf("released %q", got)
	}
	ch := h.charge(acme, `{"requests":"5"}`)
	if diff := cmp.Diff([]string{"usd tenant:acme tenant:acme none enforce | USD 10/1/0/9"}, renderViews(ch.Instances)); diff != "" {
		t.Errorf("a charge of an unlimited unit changes nothing (-want +got):\n%s", diff)
	}
}

func TestRuleShadowMode(t *testing.T) {
	const scope = "tenant:acme/run:r1"
	tests := []struct {
		name      string
		charged   string // USD charged to the scope first
		held      string // USD reserved first
		amount    string
		priority  string
		want      []events.ShadowDenial
		wantWatch string // the shadow instance afterwards
	}{
		{name: "within the floor: no shadow denial", charged: "5", held: "0", amount: "2.5",
			wantWatch: "watch tenant:acme tenant:acme none shadow | USD 10/5/2.5/2.5"},
		{name: "past the floor: granted, overage exact", charged: "5", held: "1", amount: "3",
			want:      []events.ShadowDenial{{Requested: amt("3"), Available: amt("1.5"), Overage: amt("1.5")}},
			wantWatch: "watch tenant:acme tenant:acme none shadow | USD 10/5/4/1"},
		{name: "past the limit: available 0, overage from the floor", charged: "12", held: "0", amount: "1",
			want:      []events.ShadowDenial{{Requested: amt("1"), Available: amt("0"), Overage: amt("5.5")}},
			wantWatch: "watch tenant:acme tenant:acme none shadow | USD 10/12/1/-3"},
		{name: "critical has no floor", charged: "5", held: "1", amount: "3", priority: "critical",
			wantWatch: "watch tenant:acme tenant:acme none shadow | USD 10/5/4/1"},
		{name: "bulk uses its own floor", charged: "0", held: "0", amount: "3.5", priority: "bulk",
			want:      []events.ShadowDenial{{Requested: amt("3.5"), Available: amt("3"), Overage: amt("0.5")}},
			wantWatch: "watch tenant:acme tenant:acme none shadow | USD 10/0/3.5/6.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := checked(t)
			h.set(acme, "watch", `"limits":{"USD":"10"},"mode":"shadow","priority_floors":{"normal":"0.25","bulk":"0.7"}`)
			h.set("tenant:acme/run:*", "per-run", `"limits":{"USD":"100"}`)
			if tt.charged != "0" {
				h.charge(scope, `{"USD":"`+tt.charged+`"}`)
			}
			if tt.held != "0" {
				h.res(scope, `{"USD":"`+tt.held+`"}`, `"priority":"critical"`)
			}
			extra := ""
			if tt.priority != "" {
				extra = `"priority":"` + tt.priority + `"`
			}
			res := h.res(scope, `{"USD":"`+tt.amount+`"}`, extra)
			if res.Decision != "granted" {
				t.Fatalf("shadow never denies: %s", jsonOf(res))
			}
			for i := range tt.want {
				tt.want[i].Budget, tt.want[i].Pattern, tt.want[i].Scope, tt.want[i].Period, tt.want[i].Unit = "watch", acme, acme, "none", "USD"
			}
			if diff := cmp.Diff(tt.want, res.ShadowDenials, amountCmp, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("shadow_denials (-want +got):\n%s", diff)
			}
			if got := h.balance(acme, scope)[0]; got != tt.wantWatch {
				t.Errorf("shadow instance %q, want %q", got, tt.wantWatch)
			}
		})
	}
	t.Run("an enforce denial reserves nothing, shadow included", func(t *testing.T) {
		h := checked(t)
		h.set(acme, "watch", `"limits":{"USD":"10"},"mode":"shadow"`)
		h.set("tenant:acme/run:*", "per-run", `"limits":{"USD":"5"}`)
		res := h.res(scope, `{"USD":"6"}`, "")
		if res.Decision != "denied" || res.Denial.Budget != "per-run" {
			t.Fatalf("want denied by per-run, got %s", jsonOf(res))
		}
		want := []string{
			"watch tenant:acme tenant:acme none shadow | USD 10/0/0/10",
			"per-run tenant:acme/run:* tenant:acme/run:r1 none enforce | USD 5/0/0/5",
		}
		if diff := cmp.Diff(want, h.balance(acme, scope)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		if len(res.ShadowDenials) != 0 {
			t.Errorf("a denial carries no shadow denials: %s", jsonOf(res.ShadowDenials))
		}
	})
}

func TestRulePriorityFloors(t *testing.T) {
	const floors = `"priority_floors":{"high":"0.10","normal":"0.25","low":"0.50","bulk":"0.70"}`
	tests := []struct {
		name      string
		used      string // charged before
		priority  string // "" for the default
		amount    string
		code      events.DenialCode // "" for a grant
		available string
	}{
		{name: "critical may take the limit exactly", used: "20", priority: "critical", amount: "80"},
		{name: "critical is denied only past the limit", used: "20", priority: "critical", amount: "80.000001", code: events.DenialBudgetExhausted, available: "80"},
		{name: "high may leave exactly its floor free", used: "20", priority: "high", amount: "70"},
		{name: "high past its floor", used: "20", priority: "high", amount: "70.5", code: events.DenialPriorityFloor, available: "70"},
		{name: "high past the limit is exhausted, available from the floor", used: "20", priority: "high", amount: "81", code: events.DenialBudgetExhausted, available: "70"},
		{name: "the default is normal", used: "20", amount: "55"},
		{name: "the default is normal, past its floor", used: "20", amount: "55.01", code: events.DenialPriorityFloor, available: "55"},
		{name: "explicit normal", used: "20", priority: "normal", amount: "55.01", code: events.DenialPriorityFloor, available: "55"},
		{name: "low", used: "20", priority: "low", amount: "30"},
		{name: "low past its floor", used: "20", priority: "low", amount: "30.5", code: events.DenialPriorityFloor, available: "30"},
		{name: "bulk", used: "20", priority: "bulk", amount: "10"},
		{name: "bulk past its floor", used: "20", priority: "bulk", amount: "10.5", code: events.DenialPriorityFloor, available: "10"},
		{name: "bulk past the limit", used: "20", priority: "bulk", amount: "80.5", code: events.DenialBudgetExhausted, available: "10"},
		{name: "used above the floor: available is 0, not negative", used: "60", priority: "low", amount: "0.01", code: events.DenialPriorityFloor, available: "0"},
		{name: "used above the floor denies even a zero amount", used: "60", priority: "bulk", amount: "0", code: events.DenialPriorityFloor, available: "0"},
		{name: "high still passes where low is refused", used: "60", priority: "high", amount: "30"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, op := range []events.Op{events.OpDecide, events.OpReserve} {
				h := checked(t)
				h.set("org:eng", "pool", `"limits":{"USD":"100"},`+floors)
				h.charge("org:eng", `{"USD":"`+tt.used+`"}`)
				body := h.reserveBody("org:eng", `{"USD":"`+tt.amount+`"}`, "")
				if tt.priority != "" {
					body = h.reserveBody("org:eng", `{"USD":"`+tt.amount+`"}`, `"priority":"`+tt.priority+`"`)
				}
				res := h.ok(op, "org:eng", body).(events.ReserveResult)
				if tt.code == "" {
					if res.Decision != "granted" {
						t.Fatalf("%s: want granted, got %s", op, jsonOf(res.Denial))
					}
					continue
				}
				if res.Decision != "denied" || res.Denial.Code != tt.code || res.Denial.Available.String() != tt.available ||
					res.Denial.Requested.String() != amt(tt.amount).String() {
					t.Fatalf("%s: want %s available %s, got %s %s", op, tt.code, tt.available, res.Decision, jsonOf(res.Denial))
				}
			}
		})
	}
	t.Run("a grant leaves exactly the floor free, the next unit is denied", func(t *testing.T) {
		h := checked(t)
		h.set("org:eng", "pool", `"limits":{"USD":"100"},`+floors)
		if r := h.res("org:eng", `{"USD":"75"}`, ""); r.Decision != "granted" {
			t.Fatalf("%s", jsonOf(r))
		}
		r := h.res("org:eng", `{"USD":"0.000000000000000001"}`, "")
		if r.Decision != "denied" || r.Denial.Code != events.DenialPriorityFloor || r.Denial.Available.String() != "0" {
			t.Fatalf("%s", jsonOf(r))
		}
		if r := h.res("org:eng", `{"USD":"25"}`, `"priority":"critical"`); r.Decision != "granted" {
			t.Fatalf("critical takes what remains: %s", jsonOf(r))
		}
	})
	t.Run("critical's floor is always 0", func(t *testing.T) {
		_, err := events.ParseRequest(events.OpBudgetSet, []byte(`{"idempotency_key":"b","scope":"org:eng","name":"pool","limits":{"USD":"1"},"priority_floors":{"critical":"0.1"}}`))
		if err == nil {
			t.Fatal("a critical floor above 0 was accepted")
		}
	})
}

func TestRuleDenialOrder(t *testing.T) {
	const scope = "tenant:acme/run:r1"
	type budget struct{ scope, name, limits, mode string }
	tests := []struct {
		name        string
		budgets     []budget
		amounts     string
		wantBudget  string
		wantPattern string
		wantUnit    string
	}{
		{name: "root before leaf",
			budgets:    []budget{{"tenant:acme/run:*", "a", `{"USD":"1"}`, ""}, {acme, "z", `{"USD":"1"}`, ""}},
			amounts:    `{"USD":"2"}`,
			wantBudget: "z", wantPattern: acme, wantUnit: "USD"},
		{name: "within a level by pattern: '*' sorts before an id",
			budgets:    []budget{{"tenant:acme/run:r1", "a", `{"USD":"1"}`, ""}, {"tenant:acme/run:*", "z", `{"USD":"1"}`, ""}},
			amounts:    `{"USD":"2"}`,
			wantBudget: "z", wantPattern: "tenant:acme/run:*", wantUnit: "USD"},
		{name: "within a pattern by name",
			budgets:    []budget{{acme, "b", `{"USD":"1"}`, ""}, {acme, "a", `{"USD":"1"}`, ""}},
			amounts:    `{"USD":"2"}`,
			wantBudget: "a", wantPattern: acme, wantUnit: "USD"},
		{name: "units in byte order: upper case first",
			budgets:    []budget{{acme, "m", `{"tokens":"1","USD":"1","EUR":"5"}`, ""}},
			amounts:    `{"tokens":"2","USD":"2","EUR":"1"}`,
			wantBudget: "m", wantPattern: acme, wantUnit: "USD"},
		{name: "a passing instance does not hide a failing one",
			budgets:    []budget{{acme, "big", `{"USD":"100"}`, ""}, {"tenant:acme/run:*", "small", `{"USD":"1"}`, ""}},
			amounts:    `{"USD":"2"}`,
			wantBudget: "small", wantPattern: "tenant:acme/run:*", wantUnit: "USD"},
		{name: "a failing shadow instance earlier in order is not the denial",
			budgets:    []budget{{acme, "watch", `{"USD":"1"}`, "shadow"}, {"tenant:acme/run:*", "enf", `{"USD":"1"}`, ""}},
			amounts:    `{"USD":"2"}`,
			wantBudget: "enf", wantPattern: "tenant:acme/run:*", wantUnit: "USD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := checked(t)
			for _, b := range tt.budgets {
				fields := `"limits":` + b.limits
				if b.mode != "" {
					fields += `,"mode":"` + b.mode + `"`
				}
				h.set(b.scope, b.name, fields)
			}
			res := h.res(scope, tt.amounts, "")
			if res.Decision != "denied" {
				t.Fatalf("want denied, got %s", jsonOf(res))
			}
			d := res.Denial
			wantScope := acme
			if tt.wantPattern != acme {
				wantScope = scope
			}
			if d.Budget != tt.wantBudget || d.Pattern != tt.wantPattern || d.Scope != wantScope || d.Unit != tt.wantUnit {
				t.Errorf("denied by %s %s %s %s, want %s %s %s %s", d.Budget, d.Pattern, d.Scope, d.Unit,
					tt.wantBudget, tt.wantPattern, wantScope, tt.wantUnit)
			}
		})
	}
}

func TestRuleOptionsDegradation(t *testing.T) {
	const scope = "tenant:acme/run:r1"
	const options = `"options":[{"label":"opus","amounts":{"USD":"8"}},{"label":"sonnet","amounts":{"USD":"3","tokens":"10"}},{"label":"cached","amounts":{"USD":"0.5"}}]`
	tests := []struct {
		name     string
		used     string
		option   int
		label    string
		reserved string // the run's USD reserved after a grant
		denied   bool
	}{
		{name: "the first option when it passes", used: "0", option: 0, label: "opus", reserved: "8"},
		{name: "the first option even when it leaves nothing", used: "2", option: 0, label: "opus", reserved: "8"},
		{name: "degrades to the second", used: "2.01", option: 1, label: "sonnet", reserved: "3"},
		{name: "degrades to the third", used: "7.5", option: 2, label: "cached", reserved: "0.5"},
		{name: "none passes: the denial of the first option", used: "9.6", denied: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := checked(t)
			h.set("tenant:acme/run:*", "per-run", `"limits":{"USD":"10"}`)
			if tt.used != "0" {
				h.charge(scope, `{"USD":"`+tt.used+`"}`)
			}
			d := h.step(events.OpReserve, acme, `{"idempotency_key":"k","scope":"`+scope+`",`+options+`}`)
			res := mustResult(t, d).(events.ReserveResult)
			if tt.denied {
				want := &events.Denial{Code: events.DenialBudgetExhausted, Budget: "per-run", Pattern: "tenant:acme/run:*",
					Scope: scope, Period: "none", Unit: "USD", Requested: amt("8"), Available: amt("0.4")}
				if res.Decision != "denied" || res.Label != "opus" {
					t.Fatalf("want denied with the first option's label, got %s", jsonOf(res))
				}
				if diff := cmp.Diff(want, res.Denial, amountCmp); diff != "" {
					t.Errorf("denial (-want +got):\n%s", diff)
				}
				return
			}
			if res.Decision != "granted" || res.Option != tt.option || res.Label != tt.label || res.Degraded != (tt.option > 0) {
				t.Fatalf("want option %d %s degraded=%v, got %s", tt.option, tt.label, tt.option > 0, jsonOf(res))
			}
			g := d.Events[0].Data.(*events.ReservationGranted)
			if g.Option != tt.option || g.Label != tt.label || g.Degraded != (tt.option > 0) {
				t.Errorf("event: option %d %q degraded=%v", g.Option, g.Label, g.Degraded)
			}
			if ub := h.unit(acme, scope, "per-run", "USD"); ub.Reserved.String() != tt.reserved {
				t.Errorf("reserved %s, want %s (only the granted option is held)", ub.Reserved, tt.reserved)
			}
		})
	}
}

func TestRuleCommit(t *testing.T) {
	tests := []struct {
		name                       string
		reserve, actual            string
		charged, released, overage string
		balance                    string
		overLimit                  string // "unit over" of the first over_limit entry
	}{
		{name: "actual below the reservation", reserve: `{"USD":"1","tokens":"100"}`, actual: `{"USD":"0.4","tokens":"100"}`,
			charged: "USD=0.4 tokens=100", released: "USD=0.6 tokens=0", overage: "USD=0 tokens=0",
			balance: "b tenant:acme tenant:acme none enforce | USD 10/0.4/0/9.6 tokens 1000/100/0/900"},
		{name: "actual above the reservation is charged in full", reserve: `{"USD":"1"}`, actual: `{"USD":"1.5"}`,
			charged: "USD=1.5", released: "USD=0", overage: "USD=0.5",
			balance: "b tenant:acme tenant:acme none enforce | USD 10/1.5/0/8.5 tokens 1000/0/0/1000"},
		{name: "a unit not reserved counts as reserved 0", reserve: `{"USD":"1"}`, actual: `{"USD":"1","tokens":"50"}`,
			charged: "USD=1 tokens=50", released: "USD=0", overage: "USD=0 tokens=50",
			balance: "b tenant:acme tenant:acme none enforce | USD 10/1/0/9 tokens 1000/50/0/950"},
		{name: "a reserved unit missing from actual is released", reserve: `{"USD":"1","tokens":"100"}`, actual: `{"tokens":"100"}`,
			charged: "tokens=100", released: "USD=1 tokens=0", overage: "tokens=0",
			balance: "b tenant:acme tenant:acme none enforce | USD 10/0/0/10 tokens 1000/100/0/900"},
		{name: "an empty actual releases everything", reserve: `{"USD":"1"}`, actual: `{}`,
			charged: "", released: "USD=1", overage: "",
			balance: "b tenant:acme tenant:acme none enforce | USD 10/0/0/10 tokens 1000/0/0/1000"},
		{name: "driving the instance over its limit is flagged", reserve: `{"USD":"8"}`, actual: `{"USD":"12"}`,
			charged: "USD=12", released: "USD=0", overage: "USD=4", overLimit: "USD 2",
			balance: "b tenant:acme tenant:acme none enforce | USD 10/12/0/-2 tokens 1000/0/0/1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := checked(t)
			h.set(acme, "b", `"limits":{"USD":"10","tokens":"1000"}`)
			r := h.res(acme, tt.reserve, "")
			c := h.commit(acme, r.ReservationID, tt.actual)
			got := []string{amountsString(c.Charged), amountsString(c.Released), amountsString(c.Overage)}
			if diff := cmp.Diff([]string{tt.charged, tt.released, tt.overage}, got); diff != "" {
				t.Errorf("charged, released, overage (-want +got):\n%s", diff)
			}
			if c.Late {
				t.Error("late on a timely commit")
			}
			if diff := cmp.Diff([]string{tt.balance}, renderViews(c.Instances)); diff != "" {
				t.Errorf("answer instances (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{tt.balance}, h.balance(acme, acme)); diff != "" {
				t.Errorf("balance (-want +got):\n%s", diff)
			}
			gotOver := ""
			if len(c.OverLimit) > 0 {
				gotOver = c.OverLimit[0].Unit + " " + c.OverLimit[0].Over.String()
			}
			if gotOver != tt.overLimit || len(c.OverLimit) > 1 {
				t.Errorf("over_limit %s, want %q", jsonOf(c.OverLimit), tt.overLimit)
			}
		})
	}
	t.Run("an instance over its limit denies until adjusted or rolled over", func(t *testing.T) {
		h := checked(t)
		h.set(acme, "b", `"limits":{"USD":"10"},"period":"daily"`)
		r := h.res(acme, `{"USD":"8"}`, "")
		h.commit(acme, r.ReservationID, `{"USD":"12"}`)
		d := h.res(acme, `{"USD":"0.01"}`, `"priority":"critical"`)
		if d.Decision != "denied" || d.Denial.Code != events.DenialBudgetExhausted || d.Denial.Available.String() != "0" {
			t.Fatalf("over the limit must deny: %s", jsonOf(d))
		}
		h.ok(events.OpBudgetAdjust, acme, `{"idempotency_key":"a1","scope":"tenant:acme","name":"b","delta":{"USD":"3"},"reason":"top-up"}`)
		if d := h.res(acme, `{"USD":"0.5"}`, `"priority":"critical"`); d.Decision != "granted" {
			t.Fatalf("after a top-up: %s", jsonOf(d))
		}
		h.advance(3 * time.Hour) // 2026-11-29 00:00 UTC
		if d := h.res(acme, `{"USD":"10"}`, `"priority":"critical"`); d.Decision != "granted" {
			t.Fatalf("after the rollover: %s", jsonOf(d))
		}
	})
	t.Run("the instances recorded at grant time are charged", func(t *testing.T) {
		h := checked(t)
		h.set(acme, "b", `"limits":{"USD":"10"},"period":"daily"`)
		r := h.res(acme, `{"USD":"2"}`, `"ttl_ms":86400000`)
		h.advance(3 * time.Hour) // the next day
		c := h.commit(acme, r.ReservationID, `{"USD":"1"}`)
		if diff := cmp.Diff([]string{"b tenant:acme tenant:acme 2026-11-28 enforce | USD 10/1/0/9"}, renderViews(c.Instances)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"b tenant:acme tenant:acme 2026-11-29 enforce | USD 10/0/0/10"}, h.balance(acme, acme)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

func TestRuleLateCommit(t *testing.T) {
	h := checked(t)
	h.set(acme, "b", `"limits":{"USD":"10"}`)
	r := h.res(acme, `{"USD":"2"}`, `"ttl_ms":1000`)
	h.advance(time.Second)
	if d := h.tick(); len(d.Events) != 1 || d.Events[0].Type != events.TypeReservationExpired {
		t.Fatalf("tick: %v", eventTypes(d))
	}
	d := h.step(events.OpCommit, acme, `{"idempotency_key":"late","reservation_id":"`+r.ReservationID+`","actual":{"USD":"3"}}`)
	c := mustResult(t, d).(events.CommitResult)
	if !c.Late || len(c.Released) != 0 || amountsString(c.Charged) != "USD=3" || amountsString(c.Overage) != "USD=1" {
		t.Fatalf("late commit: %s", jsonOf(c))
	}
	if got := jsonOf(c.Released); got != "{}" {
		t.Errorf("released renders %s, want {}", got)
	}
	if diff := cmp.Diff([]string{"b tenant:acme tenant:acme none enforce | USD 10/3/0/7"}, h.balance(acme, acme)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if dup := h.step(events.OpCommit, acme, `{"idempotency_key":"late","reservation_id":"`+r.ReservationID+`","actual":{"USD":"3.0"}}`); dup.Duplicate != h.s.LastSeq() {
		t.Errorf("retry: %s", describe(dup))
	}
	if code := h.fail(events.OpCommit, acme, `{"idempotency_key":"late2","reservation_id":"`+r.ReservationID+`","actual":{"USD":"3"}}`); code != events.CodeReservationClosed {
		t.Errorf("second late commit: %s", code)
	}
	t.Run("past the TTL but before the expiry tick the hold is still there", func(t *testing.T) {
		h := checked(t)
		h.set(acme, "b", `"limits":{"USD":"10"}`)
		r := h.res(acme, `{"USD":"2"}`, `"ttl_ms":1000`)
		h.advance(1500 * time.Millisecond)
		c := h.commit(acme, r.ReservationID, `{"USD":"1"}`)
		if c.Late || amountsString(c.Released) != "USD=1" {
			t.Errorf("commit: %s", jsonOf(c))
		}
		if d := h.tick(); len(d.Events) != 0 {
			t.Errorf("a committed reservation expired: %v", eventTypes(d))
		}
		if diff := cmp.Diff([]string{"b tenant:acme tenant:acme none enforce | USD 10/1/0/9"}, h.balance(acme, acme)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

func TestRuleReservationErrors(t *testing.T) {
	const other = "tenant:other"
	tests := []struct {
		name    string
		prelude func(h *harness, id string)
		op      events.Op
		root    string
		body    string // %s is the reservation id
		want    events.Code
	}{
		{name: "second commit with another key", prelude: func(h *harness, id string) { h.commit(acme, id, `{"USD":"1"}`) },
			op: events.OpCommit, body: `{"idempotency_key":"x","reservation_id":"%s","actual":{"USD":"1"}}`, want: events.CodeReservationClosed},
		{name: "release after commit", prelude: func(h *harness, id string) { h.commit(acme, id, `{"USD":"1"}`) },
			op: events.OpRelease, body: `{"idempotency_key":"x","reservation_id":"%s"}`, want: events.CodeReservationClosed},
		{name: "commit after release", prelude: func(h *harness, id string) { h.release(acme, id) },
			op: events.OpCommit, body: `{"idempotency_key":"x","reservation_id":"%s","actual":{"USD":"1"}}`, want: events.CodeReservationClosed},
		{name: "second release with another key", prelude: func(h *harness, id string) { h.release(acme, id) },
			op: events.OpRelease, body: `{"idempotency_key":"x","reservation_id":"%s"}`, want: events.CodeReservationClosed},
		{name: "commit after a release of the expired reservation",
			prelude: func(h *harness, id string) { h.advance(2 * time.Second); h.tick(); h.release(acme, id) },
			op:      events.OpCommit, body: `{"idempotency_key":"x","reservation_id":"%s","actual":{"USD":"1"}}`, want: events.CodeReservationClosed},
		{name: "second commit after a late commit",
			prelude: func(h *harness, id string) { h.advance(2 * time.Second); h.tick(); h.commit(acme, id, `{"USD":"1"}`) },
			op:      events.OpCommit, body: `{"idempotency_key":"x","reservation_id":"%s","actual":{"USD":"1"}}`, want: events.CodeReservationClosed},
		{name: "extend after expiry", prelude: func(h *harness, id string) { h.advance(2 * time.Second); h.tick() },
			op: events.OpExtend, body: `{"idempotency_key":"x","reservation_id":"%s","ttl_ms":5000}`, want: events.CodeReservationClosed},
		{name: "extend past the TTL before the expiry tick", prelude: func(h *harness, id string) { h.advance(2 * time.Second) },
			op: events.OpExtend, body: `{"idempotency_key":"x","reservation_id":"%s","ttl_ms":5000}`, want: events.CodeReservationClosed},
		{name: "extend after commit", prelude: func(h *harness, id string) { h.commit(acme, id, `{"USD":"1"}`) },
			op: events.OpExtend, body: `{"idempotency_key":"x","reservation_id":"%s","ttl_ms":5000}`, want: events.CodeReservationClosed},
		{name: "extend after release", prelude: func(h *harness, id string) { h.release(acme, id) },
			op: events.OpExtend, body: `{"idempotency_key":"x","reservation_id":"%s","ttl_ms":5000}`, want: events.CodeReservationClosed},
		{name: "commit of an unknown id", op: events.OpCommit,
			body: `{"idempotency_key":"x","reservation_id":"nope%.0s","actual":{"USD":"1"}}`, want: events.CodeNotFound},
		{name: "release of an unknown id", op: events.OpRelease,
			body: `{"idempotency_key":"x","reservation_id":"nope%.0s"}`, want: events.CodeNotFound},
		{name: "extend of an unknown id", op: events.OpExtend,
			body: `{"idempotency_key":"x","reservation_id":"nope%.0s","ttl_ms":5000}`, want: events.CodeNotFound},
		{name: "commit of another root's id", op: events.OpCommit, root: other,
			body: `{"idempotency_key":"x","reservation_id":"%s","actual":{"USD":"1"}}`, want: events.CodeNotFound},
		{name: "release of another root's id", op: events.OpRelease, root: other,
			body: `{"idempotency_key":"x","reservation_id":"%s"}`, want: events.CodeNotFound},
		{name: "extend of another root's id", op: events.OpExtend, root: other,
			body: `{"idempotency_key":"x","reservation_id":"%s","ttl_ms":5000}`, want: events.CodeNotFound},
		{name: "reservation-get of another root's id", op: events.OpReservationGet, root: other,
			body: `{"reservation_id":"%s"}`, want: events.CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := checked(t)
			h.set(acme, "b", `"limits":{"USD":"10"}`)
			h.set(other, "b", `"limits":{"USD":"10"}`)
			id := h.res(acme, `{"USD":"2"}`, `"ttl_ms":1000`).ReservationID
			if tt.prelude != nil {
				tt.prelude(h, id)
			}
			root := tt.root
			if root == "" {
				root = acme
			}
			body := fmt.Sprintf(tt.body, id)
			if got := h.fail(tt.op, root, body); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			if !tt.op.Mutating() {
				return
			}
			// The refused request recorded nothing: its key is still unused
			// for a request that can succeed.
			other := h.res(root, `{"USD":"1"}`, "").ReservationID
			var fix string
			switch tt.op {
			case events.OpCommit:
				fix = `{"idempotency_key":"x","reservation_id":"` + other + `","actual":{"USD":"1"}}`
			case events.OpRelease:
				fix = `{"idempotency_key":"x","reservation_id":"` + other + `"}`
			case events.OpExtend:
				fix = `{"idempotency_key":"x","reservation_id":"` + other + `","ttl_ms":5000}`
			}
			if d := h.step(tt.op, root, fix); d.Err != nil || d.Duplicate != 0 {
				t.Fatalf("key x after a refusal: %s", describe(d))
			}
		})
	}
}

func TestRuleRelease(t *testing.T) {
	h := checked(t)
	h.set(acme, "b", `"limits":{"USD":"10","tokens":"100"}`)
	r := h.res(acme, `{"USD":"2","tokens":"10","calls":"1"}`, `"ttl_ms":1000`)
	rel := h.release(acme, r.ReservationID)
	if rel.AlreadyExpired || amountsString(rel.Released) != "USD=2 calls=1 tokens=10" {
		t.Errorf("release: %s", jsonOf(rel))
	}
	want := []string{"b tenant:acme tenant:acme none enforce | USD 10/0/0/10 tokens 100/0/0/100"}
	if diff := cmp.Diff(want, renderViews(rel.Instances)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	t.Run("after expiry", func(t *testing.T) {
		parent := h.t
		h.t = t
		defer func() { h.t = parent }()
		r := h.res(acme, `{"USD":"2"}`, `"ttl_ms":1000`)
		h.advance(time.Second)
		h.tick()
		rel := h.release(acme, r.ReservationID)
		if !rel.AlreadyExpired || len(rel.Released) != 0 || jsonOf(rel.Released) != "{}" {
			t.Errorf("release after expiry: %s", jsonOf(rel))
		}
		if diff := cmp.Diff(want, h.balance(acme, acme)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		st := h.ok(events.OpReservationGet, acme, `{"reservation_id":"`+r.ReservationID+`"}`).(events.ReservationView)
		if st.Status != events.StatusReleased {
			t.Errorf("status %s", st.Status)
		}
	})
}

func TestRuleExtend(t *testing.T) {
	t.Run("moves the expiry to now + ttl", func(t *testing.T) {
		h := checked(t)
		h.set(acme, "b", `"limits":{"USD":"10"}`)
		t0 := h.now
		r := h.res(acme, `{"USD":"2"}`, `"ttl_ms":2000`)
		h.advance(time.Second)
		e := h.ok(events.OpExtend, acme, `{"idempotency_key":"e","reservation_id":"`+r.ReservationID+`","ttl_ms":5000}`).(events.ExtendResult)
		want := t0.Add(6 * time.Second)
		if !e.ExpiresAt.Equal(want) {
			t.Fatalf("expires_at %s, want %s", e.ExpiresAt, want)
		}
		if at, ok := h.s.NextExpiry(); !ok || !at.Equal(want) {
			t.Fatalf("NextExpiry %s %v, want %s", at, ok, want)
		}
		h.now = t0.Add(2 * time.Second)
		if d := h.tick(); len(d.Events) != 0 {
			t.Fatalf("expired at the old expiry: %v", eventTypes(d))
		}
		h.now = want.Add(-time.Nanosecond)
		if d := h.tick(); len(d.Events) != 0 {
			t.Fatalf("expired early: %v", eventTypes(d))
		}
		h.now = want
		if d := h.tick(); len(d.Events) != 1 {
			t.Fatalf("not expired at its expiry: %v", eventTypes(d))
		}
	})
	t.Run("the default ttl is 60 s", func(t *testing.T) {
		h := checked(t)
		r := h.res(acme, `{"USD":"2"}`, "")
		if want := h.now.Add(time.Minute); !r.ExpiresAt.Equal(want) {
			t.Errorf("expires_at %s, want %s", r.ExpiresAt, want)
		}
	})
	t.Run("to the same expiry expires once", func(t *testing.T) {
		h := checked(t)
		h.set(acme, "b", `"limits":{"USD":"10"}`)
		r := h.res(acme, `{"USD":"2"}`, `"ttl_ms":60000`)
		h.advance(time.Second)
		e := h.ok(events.OpExtend, acme, `{"idempotency_key":"e","reservation_id":"`+r.ReservationID+`","ttl_ms":59000}`).(events.ExtendResult)
		if !e.ExpiresAt.Equal(*r.ExpiresAt) {
			t.Fatalf("expires_at %s, want %s", e.ExpiresAt, r.ExpiresAt)
		}
		h.now = e.ExpiresAt
		if d := h.tick(); len(d.Events) != 1 {
			t.Fatalf("want one expiry, got %v", eventTypes(d))
		}
		if d := h.tick(); len(d.Events) != 0 {
			t.Fatalf("expired twice: %v", eventTypes(d))
		}
	})
}

func TestRuleExpiryNeverEarly(t *testing.T) {
	h := checked(t)
	h.set(acme, "b", `"limits":{"USD":"10"}`)
	h.set("tenant:other", "b", `"limits":{"USD":"10"}`)
	t0 := h.now
	h.res(acme, `{"USD":"1"}`, `"ttl_ms":1000`)
	h.res(acme, `{"USD":"2"}`, `"ttl_ms":2000`)
	h.res("tenant:other", `{"USD":"3"}`, `"ttl_ms":2000`)
	last := h.res(acme, `{"USD":"4"}`, `"ttl_ms":3000`)
	steps := []struct {
		at        time.Duration
		expired   int
		reserved  string // tenant:acme's after the tick
		nextExpir time.Duration
	}{
		{at: time.Second - time.Nanosecond, expired: 0, reserved: "7", nextExpir: time.Second},
		{at: time.Second, expired: 1, reserved: "6", nextExpir: 2 * time.Second},
		{at: 2*time.Second - time.Nanosecond, expired: 0, reserved: "6", nextExpir: 2 * time.Second},
		{at: 2500 * time.Millisecond, expired: 2, reserved: "4", nextExpir: 3 * time.Second},
	}
	for _, st := range steps {
		h.now = t0.Add(st.at)
		d := h.tick()
		if len(d.Events) != st.expired {
			t.Fatalf("at +%s: %d expired, want %d", st.at, len(d.Events), st.expired)
		}
		for _, ev := range d.Events {
			if ev.Type != events.TypeReservationExpired || !ev.At.Equal(h.now) {
				t.Errorf("at +%s: %s at %s", st.at, ev.Type, ev.At)
			}
			x := ev.Data.(*events.ReservationExpired)
			if ev.Root != events.Root(x.Scope) {
				t.Errorf("expiry of %s appended under root %s", x.Scope, ev.Root)
			}
		}
		if got := h.unit(acme, acme, "b", "USD").Reserved.String(); got != st.reserved {
			t.Errorf("at +%s: reserved %s, want %s", st.at, got, st.reserved)
		}
		if at, ok := h.s.NextExpiry(); !ok || !at.Equal(t0.Add(st.nextExpir)) {
			t.Errorf("at +%s: NextExpiry %s %v, want +%s", st.at, at, ok, st.nextExpir)
		}
	}
	h.release(acme, last.ReservationID)
	if at, ok := h.s.NextExpiry(); ok {
		t.Errorf("NextExpiry %s with nothing open", at)
	}
	t.Run("several expiries of one instance in one tick", func(t *testing.T) {
		h := checked(t)
		h.set(acme, "b", `"limits":{"USD":"10","tokens":"100"}`)
		h.res(acme, `{"USD":"1"}`, `"ttl_ms":1000`)
		h.res(acme, `{"USD":"2","tokens":"10"}`, `"ttl_ms":1000`)
		h.res(acme, `{"USD":"3"}`, `"ttl_ms":1000`)
		h.advance(time.Second)
		d := h.tick()
		var got []string
		for _, ev := range d.Events {
			got = append(got, renderViews(ev.Data.(*events.ReservationExpired).Instances)...)
		}
		// Each event shows the balances after it, the earlier ones applied.
		want := []string{
			"b tenant:acme tenant:acme none enforce | USD 10/0/5/5 tokens 100/0/10/90",
			"b tenant:acme tenant:acme none enforce | USD 10/0/3/7 tokens 100/0/0/100",
			"b tenant:acme tenant:acme none enforce | USD 10/0/0/10 tokens 100/0/0/100",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

func TestRuleCharge(t *testing.T) {
	h := checked(t)
	h.set(acme, "b", `"limits":{"USD":"10"}`)
	h.set(acme, "watch", `"limits":{"USD":"5"},"mode":"shadow"`)
	c := h.charge("tenant:acme/run:r1", `{"USD":"4"}`)
	if len(c.OverLimit) != 0 || c.Scope != "tenant:acme/run:r1" || amountsString(c.Charged) != "USD=4" {
		t.Errorf("charge: %s", jsonOf(c))
	}
	c = h.charge("tenant:acme/run:r1", `{"USD":"8"}`)
	want := []events.OverLimit{
		{Budget: "b", Pattern: acme, Scope: acme, Period: "none", Unit: "USD", Over: amt("2")},
		{Budget: "watch", Pattern: acme, Scope: acme, Period: "none", Unit: "USD", Over: amt("7")},
	}
	if diff := cmp.Diff(want, c.OverLimit, amountCmp); diff != "" {
		t.Errorf("over_limit (-want +got):\n%s", diff)
	}
	wantBal := []string{
		"b tenant:acme tenant:acme none enforce | USD 10/12/0/-2",
		"watch tenant:acme tenant:acme none shadow | USD 5/12/0/-7",
	}
	if diff := cmp.Diff(wantBal, h.balance(acme, acme)); diff != "" {
		t.Errorf("a charge is always recorded (-want +got):\n%s", diff)
	}
	if c := h.charge("tenant:nobudget", `{"USD":"1"}`); len(c.Instances) != 0 {
		t.Errorf("charge with no budget: %s", jsonOf(c))
	}
}

func TestRuleDecideIsADryRun(t *testing.T) {
	h := checked(t)
	h.set(acme, "b", `"limits":{"USD":"10"}`)
	h.charge(acme, `{"USD":"3"}`)
	seq, snap := h.s.LastSeq(), string(h.s.Snapshot())
	d := h.step(events.OpDecide, acme, `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"2"}}`)
	if len(d.Events) != 0 || d.Result == nil {
		t.Fatalf("decide: %s", describe(d))
	}
	res := d.Result.(events.ReserveResult)
	if res.Decision != "granted" || res.ReservationID != "" || res.ExpiresAt != nil || res.Event != nil {
		t.Errorf("decide answer: %s", jsonOf(res))
	}
	if diff := cmp.Diff([]string{"b tenant:acme tenant:acme none enforce | USD 10/3/2/5"}, renderViews(res.Instances)); diff != "" {
		t.Errorf("instances as if granted (-want +got):\n%s", diff)
	}
	den := h.ok(events.OpDecide, acme, `{"scope":"tenant:acme","amounts":{"USD":"8"}}`).(events.ReserveResult)
	if den.Decision != "denied" || den.Denial.Available.String() != "7" {
		t.Errorf("decide denial: %s", jsonOf(den))
	}
	if diff := cmp.Diff([]string{"b tenant:acme tenant:acme none enforce | USD 10/3/0/7"}, renderViews(den.Instances)); diff != "" {
		t.Errorf("a denial shows the state as is (-want +got):\n%s", diff)
	}
	if h.s.LastSeq() != seq || string(h.s.Snapshot()) != snap {
		t.Fatal("decide changed the state")
	}
	// decide does not use the key: a reserve with it is new.
	if d := h.step(events.OpReserve, acme, `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"2"}}`); d.Duplicate != 0 || len(d.Events) == 0 {
		t.Errorf("reserve after decide: %s", describe(d))
	}
}

func TestRuleBalance(t *testing.T) {
	h := checked(t)
	h.set(acme, "monthly", `"limits":{"USD":"500","tokens":"1000000"},"period":"monthly","timezone":"Europe/Paris"`)
	h.set("tenant:acme/run:*", "per-run", `"limits":{"USD":"2"}`)
	h.res("tenant:acme/run:r1", `{"USD":"0.84","tokens":"12000"}`, "")
	h.charge("tenant:acme/run:r1", `{"USD":"12.3"}`)
	res := h.ok(events.OpBalance, acme, `{"scope":"tenant:acme/run:r1"}`).(events.BalanceResult)
	end := mustTime(t, "2026-11-30T23:00:00Z")
	want := events.BalanceResult{Scope: "tenant:acme/run:r1", Instances: []events.InstanceView{
		{Budget: "monthly", Pattern: acme, Scope: acme, Period: "2026-11", PeriodEnd: &end, Mode: events.ModeEnforce,
			Units: events.UnitBalances{
				{Unit: "USD", UnitBalance: events.UnitBalance{Limit: amt("500"), Spent: amt("12.3"), Reserved: amt("0.84"), Remaining: events.Signed{Amount: amt("486.86")}}},
				{Unit: "tokens", UnitBalance: events.UnitBalance{Limit: amt("1000000"), Spent: amt("0"), Reserved: amt("12000"), Remaining: events.Signed{Amount: amt("988000")}}},
			}},
		{Budget: "per-run", Pattern: "tenant:acme/run:*", Scope: "tenant:acme/run:r1", Period: "none", Mode: events.ModeEnforce,
			Units: events.UnitBalances{
				{Unit: "USD", UnitBalance: events.UnitBalance{Limit: amt("2"), Spent: amt("12.3"), Reserved: amt("0.84"), Remaining: events.Signed{Amount: amt("11.14").Neg()}}},
			}},
	}}
	if diff := cmp.Diff(want, res, amountCmp); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if j := jsonOf(res.Instances[1]); strings.Contains(j, "period_end") || !strings.Contains(j, `"period":"none"`) {
		t.Errorf("a period none instance renders %s", j)
	}
	if j := jsonOf(res.Instances[1].Units); j != `{"USD":{"limit":"2","spent":"12.3","reserved":"0.84","remaining":"-11.14"}}` {
		t.Errorf("units render %s", j)
	}
	if res := h.ok(events.OpBalance, "tenant:none", `{"scope":"tenant:none"}`).(events.BalanceResult); len(res.Instances) != 0 {
		t.Errorf("no budgets: %s", jsonOf(res))
	}
}

func TestRuleBudgets(t *testing.T) {
	t.Run("set stores the definition with its defaults; get returns it", func(t *testing.T) {
		h := checked(t)
		got := h.set("tenant:acme/workflow:cr/run:*", "per-run", `"limits":{"USD":"2.00"}`).Budget
		want := events.Budget{Scope: "tenant:acme/workflow:cr/run:*", Name: "per-run", Limits: events.Amounts{"USD": amt("2")},
			Period: events.PeriodNone, Timezone: "UTC", Mode: events.ModeEnforce, PriorityFloors: map[events.Priority]events.Amount{},
			AlertThresholds: []events.Amount{amt("0.5"), amt("0.8"), amt("1")}}
		if diff := cmp.Diff(want, got, amountCmp); diff != "" {
			t.Errorf("set (-want +got):\n%s", diff)
		}
		g := h.ok(events.OpBudgetGet, acme, `{"scope":"tenant:acme/workflow:cr/run:*","name":"per-run"}`).(events.BudgetResult)
		if diff := cmp.Diff(want, g.Budget, amountCmp); diff != "" {
			t.Errorf("get (-want +got):\n%s", diff)
		}
		if code := h.fail(events.OpBudgetGet, acme, `{"scope":"tenant:acme/workflow:cr/run:*","name":"other"}`); code != events.CodeNotFound {
			t.Errorf("get of an unknown budget: %s", code)
		}
	})
	t.Run("list gives the subject root's budgets by scope then name", func(t *testing.T) {
		h := checked(t)
		for _, b := range []struct{ scope, name string }{
			{"tenant:acme/run:*", "b"}, {"tenant:other", "a"}, {acme, "z"}, {"tenant:acme/run:*", "a"}, {acme, "m"}, {"tenant:acme/run:r1", "a"},
		} {
			h.set(b.scope, b.name, `"limits":{"USD":"1"}`)
		}
		l := h.ok(events.OpBudgetList, acme, `{}`).(events.BudgetListResult)
		var got []string
		for _, b := range l.Budgets {
			got = append(got, b.Scope+" "+b.Name)
		}
		want := []string{"tenant:acme m", "tenant:acme z", "tenant:acme/run:* a", "tenant:acme/run:* b", "tenant:acme/run:r1 a"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("replace keeps the current period's spent and reserved", func(t *testing.T) {
		h := checked(t)
		h.set(acme, "b", `"limits":{"USD":"10"},"period":"monthly"`)
		h.charge(acme, `{"USD":"3"}`)
		h.res(acme, `{"USD":"2"}`, "")
		h.set(acme, "b", `"limits":{"USD":"20"},"period":"monthly","mode":"shadow"`)
		if diff := cmp.Diff([]string{"b tenant:acme tenant:acme 2026-11 shadow | USD 20/3/2/15"}, h.balance(acme, acme)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		h.set(acme, "b", `"limits":{"USD":"4"},"period":"monthly"`)
		if diff := cmp.Diff([]string{"b tenant:acme tenant:acme 2026-11 enforce | USD 4/3/2/-1"}, h.balance(acme, acme)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		if r := h.res(acme, `{"USD":"0"}`, `"priority":"critical"`); r.Decision != "denied" {
			t.Errorf("a lowered limit below usage denies: %s", jsonOf(r))
		}
	})
	t.Run("delete removes the budget and its instances", func(t *testing.T) {
		h := checked(t)
		h.set(acme, "b", `"limits":{"USD":"10"}`)
		h.set(acme, "keep", `"limits":{"USD":"10"}`)
		open := h.res(acme, `{"USD":"4"}`, "").ReservationID
		h.charge(acme, `{"USD":"3"}`)
		del := h.ok(events.OpBudgetDelete, acme, `{"idempotency_key":"d","scope":"tenant:acme","name":"b"}`).(events.BudgetDeleteResult)
		if del.Scope != acme || del.Name != "b" {
			t.Errorf("delete answer %s", jsonOf(del))
		}
		if diff := cmp.Diff([]string{"keep tenant:acme tenant:acme none enforce | USD 10/3/4/3"}, h.balance(acme, acme)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		if code := h.fail(events.OpBudgetGet, acme, `{"scope":"tenant:acme","name":"b"}`); code != events.CodeNotFound {
			t.Errorf("get after delete: %s", code)
		}
		if code := h.fail(events.OpBudgetDelete, acme, `{"idempotency_key":"d2","scope":"tenant:acme","name":"b"}`); code != events.CodeNotFound {
			t.Errorf("second delete: %s", code)
		}
		// Set again, the budget starts afresh; the reservation made before
		// the delete no longer holds anything on it.
		h.set(acme, "b", `"limits":{"USD":"10"}`)
		h.charge(acme, `{"USD":"1"}`)
		rel := h.release(acme, open)
		want := []string{"b tenant:acme tenant:acme none enforce | USD 10/1/0/9", "keep tenant:acme tenant:acme none enforce | USD 10/4/0/6"}
		if diff := cmp.Diff(want[1:], renderViews(rel.Instances)); diff != "" {
			t.Errorf("release after delete and set (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, h.balance(acme, acme)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("replace keeps adjustments, never below a zero limit", func(t *testing.T) {
		h := checked(t)
		h.set(acme, "b", `"limits":{"USD":"10"},"period":"monthly"`)
		h.ok(events.OpBudgetAdjust, acme, `{"idempotency_key":"a1","scope":"tenant:acme","name":"b","delta":{"USD":"5"},"reason":"top-up"}`)
		h.set(acme, "b", `"limits":{"USD":"10"},"period":"monthly","alert_thresholds":["0.9"]`)
		if got := h.unit(acme, acme, "b", "USD").Limit.String(); got != "15" {
			t.Errorf("a top-up lost by an edit of the budget: limit %s", got)
		}
		h.ok(events.OpBudgetAdjust, acme, `{"idempotency_key":"a2","scope":"tenant:acme","name":"b","delta":{"USD":"-11"},"reason":"correction"}`)
		h.charge(acme, `{"USD":"1"}`)
		h.set(acme, "b", `"limits":{"USD":"3"},"period":"monthly"`) // 3 − 6 would be a negative limit
		if diff := cmp.Diff([]string{"b tenant:acme tenant:acme 2026-11 enforce | USD 0/1/0/-1"}, h.balance(acme, acme)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		h.ok(events.OpBudgetAdjust, acme, `{"idempotency_key":"a3","scope":"tenant:acme","name":"b","delta":{"USD":"2"},"reason":"top-up"}`)
		if diff := cmp.Diff([]string{"b tenant:acme tenant:acme 2026-11 enforce | USD 2/1/0/1"}, h.balance(acme, acme)); diff != "" {
			t.Errorf("a top-up from a zero limit (-want +got):\n%s", diff)
		}
	})
	t.Run("adjust", func(t *testing.T) {
		adjust := func(h *harness, scope, name, delta string) string {
			return fmt.Sprintf(`{"idempotency_key":%q,"scope":%q,"name":%q,"delta":%s,"reason":"why"}`, h.key("a"), scope, name, delta)
		}
		h := checked(t)
		h.set(acme, "b", `"limits":{"USD":"10","tokens":"100"},"period":"monthly"`)
		h.set("tenant:acme/run:*", "per-run", `"limits":{"USD":"2"}`)
		h.charge(acme, `{"USD":"10"}`)
		a := h.ok(events.OpBudgetAdjust, acme, adjust(h, acme, "b", `{"USD":"5"}`)).(events.BudgetAdjustResult)
		if diff := cmp.Diff([]string{"b tenant:acme tenant:acme 2026-11 enforce | USD 15/10/0/5 tokens 100/0/0/100"}, renderViews([]events.InstanceView{a.Instance})); diff != "" {
			t.Errorf("adjust answer (-want +got):\n%s", diff)
		}
		if a.Period != "2026-11" || a.Reason != "why" || jsonOf(a.Delta) != `{"USD":"5"}` {
			t.Errorf("adjust answer %s", jsonOf(a))
		}
		if r := h.res(acme, `{"USD":"5"}`, `"priority":"critical"`); r.Decision != "granted" {
			t.Errorf("after a top-up: %s", jsonOf(r))
		}
		if code := h.fail(events.OpBudgetAdjust, acme, adjust(h, acme, "b", `{"USD":"-15.5"}`)); code != events.CodeInvalidRequest {
			t.Errorf("a negative limit: %s", code)
		}
		if code := h.fail(events.OpBudgetAdjust, acme, adjust(h, acme, "b", `{"EUR":"1"}`)); code != events.CodeInvalidRequest {
			t.Errorf("a unit not limited: %s", code)
		}
		if code := h.fail(events.OpBudgetAdjust, acme, adjust(h, acme, "nope", `{"USD":"1"}`)); code != events.CodeNotFound {
			t.Errorf("an unknown budget: %s", code)
		}
		if code := h.fail(events.OpBudgetAdjust, acme, adjust(h, "tenant:acme/run:r1", "b", `{"USD":"1"}`)); code != events.CodeNotFound {
			t.Errorf("a budget of another level: %s", code)
		}
		h.ok(events.OpBudgetAdjust, acme, adjust(h, acme, "b", `{"USD":"-15"}`)) // to exactly 0
		if got := h.unit(acme, acme, "b", "USD").Limit.String(); got != "0" {
			t.Errorf("limit %s after adjusting to 0", got)
		}
		// A pattern budget's instance is adjusted alone.
		h.ok(events.OpBudgetAdjust, acme, adjust(h, "tenant:acme/run:r1", "per-run", `{"USD":"1.5"}`))
		if got := h.unit(acme, "tenant:acme/run:r1", "per-run", "USD").Limit.String(); got != "3.5" {
			t.Errorf("r1 limit %s", got)
		}
		if got := h.unit(acme, "tenant:acme/run:r2", "per-run", "USD").Limit.String(); got != "2" {
			t.Errorf("r2 limit %s", got)
		}
		// The next period starts from the budget's limit.
		h.now = mustTime(t, "2026-12-01T00:00:00Z")
		if diff := cmp.Diff([]string{"b tenant:acme tenant:acme 2026-12 enforce | USD 10/0/0/10 tokens 100/0/0/100"}, h.balance(acme, acme)); diff != "" {
			t.Errorf("next period (-want +got):\n%s", diff)
		}
	})
}

func TestRuleForbiddenWhenRootsDiffer(t *testing.T) {
	tests := []struct {
		op   events.Op
		body string // %s is the scope
	}{
		{events.OpReserve, `{"idempotency_key":"k","scope":"%s","amounts":{"USD":"1"}}`},
		{events.OpDecide, `{"scope":"%s","amounts":{"USD":"1"}}`},
		{events.OpCharge, `{"idempotency_key":"k","scope":"%s","amounts":{"USD":"1"}}`},
		{events.OpBalance, `{"scope":"%s"}`},
		{events.OpBudgetSet, `{"idempotency_key":"k","scope":"%s","name":"b","limits":{"USD":"1"}}`},
		{events.OpBudgetGet, `{"scope":"%s","name":"b"}`},
		{events.OpBudgetDelete, `{"idempotency_key":"k","scope":"%s","name":"b"}`},
		{events.OpBudgetAdjust, `{"idempotency_key":"k","scope":"%s","name":"b","delta":{"USD":"1"},"reason":"r"}`},
	}
	for _, tt := range tests {
		t.Run(string(tt.op), func(t *testing.T) {
			h := checked(t)
			h.set("tenant:other", "b", `"limits":{"USD":"10"}`)
			h.set(acme, "b", `"limits":{"USD":"10"}`)
			if code := h.fail(tt.op, acme, fmt.Sprintf(tt.body, "tenant:other/run:r1")); code != events.CodeForbidden {
				t.Fatalf("got %s, want FORBIDDEN", code)
			}
			// Nothing was recorded: the key works for the right root.
			scope := acme
			if tt.op == events.OpReserve || tt.op == events.OpCharge || tt.op == events.OpBalance || tt.op == events.OpDecide {
				scope = "tenant:acme/run:r1"
			}
			if d := h.step(tt.op, acme, fmt.Sprintf(tt.body, scope)); d.Err != nil || d.Duplicate != 0 {
				t.Fatalf("after FORBIDDEN: %s", describe(d))
			}
		})
	}
}

func TestRuleIdempotency(t *testing.T) {
	const reserve = `{"idempotency_key":"k1","scope":"tenant:acme/run:r1","amounts":{"USD":"0.50","tokens":"10"}}`
	setup := func(t *testing.T, cfg Config) *harness {
		h := newHarnessCfg(t, cfg)
		t.Cleanup(func() {
			if !t.Failed() {
				h.checkReplay()
			}
		})
		h.set(acme, "b", `"limits":{"USD":"1"}`)
		return h
	}
	// retry asserts that body is a duplicate of the event at seq whose
	// answer is want.
	retry := func(t *testing.T, h *harness, op events.Op, body string, seq uint64, want any) {
		t.Helper()
		d := h.step(op, acme, body)
		if d.Duplicate != seq || len(d.Events) != 0 || d.Err != nil {
			t.Fatalf("retry: %s, want a duplicate of seq %d", describe(d), seq)
		}
		got, _ := events.ResultOf(h.log[d.Duplicate-1], events.EventRef{})
		if diff := cmp.Diff(jsonOf(want), jsonOf(got)); diff != "" {
			t.Errorf("retry answer (-original +retry):\n%s", diff)
		}
	}
	t.Run("same key and payload: the original answer", func(t *testing.T) {
		h := setup(t, Config{Partition: 3})
		seq := h.s.LastSeq() + 1
		orig := h.reserve(acme, reserve)
		for _, body := range []string{
			reserve,
			// key order, white space and amount spelling do not matter
			`{ "amounts" : {"tokens":"10", "USD":"0.5"}, "scope":"tenant:acme/run:r1",` + "\n" + `"idempotency_key":"k1" }`,
			`{"idempotency_key":"k1","scope":"tenant:acme/run:r1","amounts":{"USD":"0.500000","tokens":"10.0"}}`,
		} {
			retry(t, h, events.OpReserve, body, seq, orig)
		}
		if n := h.s.OpenReservations(); n != 1 {
			t.Errorf("%d open reservations", n)
		}
	})
	// Decide evaluates a reserve before it looks its key up (to give the
	// look-up's memory read time to arrive): a retry still gets the
	// original answer when the evaluation would now deny it, find it out
	// of range, or find the partition full.
	t.Run("a grant stays a grant whatever the evaluation says now", func(t *testing.T) {
		h := setup(t, Config{Partition: 3, MaxOpenReservations: 2})
		h.set(acme, "b", `"limits":{"USD":"1000000000000000000000"}`)
		body := `{"idempotency_key":"g","scope":"tenant:acme/run:r1","amounts":{"USD":"0.000000000000000001"}}`
		seq := h.s.LastSeq() + 1
		orig := h.reserve(acme, body)
		if orig.Decision != events.DecisionGranted {
			t.Fatalf("original: %+v", orig)
		}
		h.release(acme, orig.ReservationID)
		// Out of range now: 10^20 + 10^-18 has 39 significant digits.
		h.charge("tenant:acme/run:r2", `{"USD":"100000000000000000000"}`)
		fresh := strings.Replace(body, `"g"`, `"g2"`, 1)
		if code := h.fail(events.OpReserve, acme, fresh); code != events.CodeInvalidRequest {
			t.Fatalf("a fresh key: %s, want INVALID_REQUEST (out of range)", code)
		}
		retry(t, h, events.OpReserve, body, seq, orig)
		// Denied now: the limit is below the spend.
		h.set(acme, "b", `"limits":{"USD":"1"}`)
		retry(t, h, events.OpReserve, body, seq, orig)
		// The partition full.
		h.set(acme, "b", `"limits":{"USD":"1000000000000000000000"}`)
		h.res("tenant:acme/run:r3", `{"USD":"1"}`, "")
		h.res("tenant:acme/run:r4", `{"USD":"1"}`, "")
		if code := h.fail(events.OpReserve, acme, fresh); code != events.CodeUnavailable {
			t.Fatalf("a fresh key with the partition full: %s, want UNAVAILABLE", code)
		}
		retry(t, h, events.OpReserve, body, seq, orig)
	})
	t.Run("a denial stays a denial", func(t *testing.T) {
		h := setup(t, Config{Partition: 3})
		body := `{"idempotency_key":"k1","scope":"tenant:acme","amounts":{"USD":"5"}}`
		seq := h.s.LastSeq() + 1
		orig := h.reserve(acme, body)
		if orig.Decision != "denied" {
			t.Fatalf("%s", jsonOf(orig))
		}
		h.set(acme, "b", `"limits":{"USD":"100"}`)
		retry(t, h, events.OpReserve, body, seq, orig)
	})
	conflicts := []struct{ name, body string }{
		{"another amount", `{"idempotency_key":"k1","scope":"tenant:acme/run:r1","amounts":{"USD":"0.51","tokens":"10"}}`},
		{"another scope", `{"idempotency_key":"k1","scope":"tenant:acme/run:r2","amounts":{"USD":"0.5","tokens":"10"}}`},
		{"an explicit default priority differs from an omitted one", `{"idempotency_key":"k1","scope":"tenant:acme/run:r1","amounts":{"USD":"0.5","tokens":"10"},"priority":"normal"}`},
		{"an explicit default ttl differs from an omitted one", `{"idempotency_key":"k1","scope":"tenant:acme/run:r1","amounts":{"USD":"0.5","tokens":"10"},"ttl_ms":60000}`},
		{"a label more", `{"idempotency_key":"k1","scope":"tenant:acme/run:r1","amounts":{"USD":"0.5","tokens":"10"},"labels":{"model":"m"}}`},
		{"options instead of amounts", `{"idempotency_key":"k1","scope":"tenant:acme/run:r1","options":[{"amounts":{"USD":"0.5","tokens":"10"}}]}`},
	}
	for _, c := range conflicts {
		t.Run("conflict: "+c.name, func(t *testing.T) {
			h := setup(t, Config{Partition: 3})
			h.reserve(acme, reserve)
			if code := h.fail(events.OpReserve, acme, c.body); code != events.CodeIdempotencyConflict {
				t.Fatalf("got %s", code)
			}
		})
	}
	t.Run("a precomputed hash is the one used and recorded", func(t *testing.T) {
		// The service hashes requests on the subscription goroutine
		// (Command.Hash); Decide must take that hash, not recompute it.
		h := setup(t, Config{Partition: 3})
		req, err := events.ParseRequest(events.OpReserve, []byte(reserve))
		if err != nil {
			t.Fatal(err)
		}
		hash := events.RequestHash(events.OpReserve, req)
		d := h.s.Step(Command{Op: events.OpReserve, Root: acme, Request: req, NewID: "R1", Hash: hash}, h.now)
		if len(d.Events) == 0 {
			t.Fatalf("%s", describe(d))
		}
		h.record(d)
		if got := d.Events[0].Data.(*events.ReservationGranted).RequestHash; got != hash {
			t.Fatalf("event records hash %q, the command carried %q", got, hash)
		}
		// A retry carrying another hash conflicts: the hash decides, even
		// for the same payload.
		other := Command{Op: events.OpReserve, Root: acme, Request: req, NewID: "R2", Hash: "00000000000000000000000000000000"}
		if d := h.s.Decide(other, h.now); d.Err == nil || d.Err.Code != events.CodeIdempotencyConflict {
			t.Fatalf("retry with another hash: %s", describe(d))
		}
		// Without one, Decide computes the same hash: a duplicate.
		if d := h.s.Decide(Command{Op: events.OpReserve, Root: acme, Request: req, NewID: "R3"}, h.now); d.Duplicate == 0 {
			t.Fatalf("retry without a hash: %s", describe(d))
		}
	})
	t.Run("keys are scoped per root and operation", func(t *testing.T) {
		h := setup(t, Config{Partition: 3})
		h.set("tenant:other", "b", `"limits":{"USD":"1"}`)
		r := h.reserve(acme, `{"idempotency_key":"same","scope":"tenant:acme","amounts":{"USD":"0.1"}}`)
		for _, s := range []struct {
			op         events.Op
			root, body string
		}{
			{events.OpReserve, "tenant:other", `{"idempotency_key":"same","scope":"tenant:other","amounts":{"USD":"0.1"}}`},
			{events.OpCharge, acme, `{"idempotency_key":"same","scope":"tenant:acme","amounts":{"USD":"0.1"}}`},
			{events.OpCommit, acme, `{"idempotency_key":"same","reservation_id":"` + r.ReservationID + `","actual":{"USD":"0.1"}}`},
			{events.OpBudgetSet, acme, `{"idempotency_key":"same","scope":"tenant:acme","name":"c","limits":{"USD":"1"}}`},
		} {
			if d := h.step(s.op, s.root, s.body); d.Err != nil || d.Duplicate != 0 || len(d.Events) == 0 {
				t.Errorf("%s on %s with a key used elsewhere: %s", s.op, s.root, describe(d))
			}
		}
	})
	t.Run("a key is forgotten after the window", func(t *testing.T) {
		h := setup(t, Config{Partition: 3, IdempotencyWindow: time.Hour})
		seq := h.s.LastSeq() + 1
		orig := h.reserve(acme, reserve)
		h.advance(time.Hour)
		retry(t, h, events.OpReserve, reserve, seq, orig) // the window's last instant
		h.advance(time.Nanosecond)
		d := h.step(events.OpReserve, acme, reserve)
		if d.Duplicate != 0 || len(d.Events) == 0 {
			t.Fatalf("retry after the window: %s, want a new request", describe(d))
		}
		// And the new request is now the one remembered.
		retry(t, h, events.OpReserve, reserve, h.s.LastSeq()-uint64(len(d.Events))+1, mustResult(t, d))
	})
	t.Run("closed reservations are forgotten after the window", func(t *testing.T) {
		h := setup(t, Config{Partition: 3, IdempotencyWindow: time.Hour})
		r := h.reserve(acme, reserve)
		h.release(acme, r.ReservationID)
		h.advance(time.Hour)
		if code := h.fail(events.OpRelease, acme, `{"idempotency_key":"z","reservation_id":"`+r.ReservationID+`"}`); code != events.CodeReservationClosed {
			t.Errorf("within the window: %s", code)
		}
		h.advance(time.Nanosecond)
		if code := h.fail(events.OpRelease, acme, `{"idempotency_key":"z","reservation_id":"`+r.ReservationID+`"}`); code != events.CodeNotFound {
			t.Errorf("after the window: %s", code)
		}
	})
	t.Run("past MaxIdempotencyKeys the oldest are forgotten", func(t *testing.T) {
		h := setup(t, Config{Partition: 3, MaxIdempotencyKeys: 3}) // the budget-set is the first key
		var seqs []uint64
		var answers []any
		for i := range 3 {
			body := fmt.Sprintf(`{"idempotency_key":"c%d","scope":"tenant:acme","amounts":{"tokens":"1"}}`, i)
			answers = append(answers, h.ok(events.OpCharge, acme, body))
			seqs = append(seqs, h.s.LastSeq())
		}
		if n := h.s.IdempotencyKeys(); n != 3 {
			t.Errorf("%d keys kept, want 3", n)
		}
		for i := 1; i < 3; i++ {
			retry(t, h, events.OpCharge, fmt.Sprintf(`{"idempotency_key":"c%d","scope":"tenant:acme","amounts":{"tokens":"1"}}`, i), seqs[i], answers[i])
		}
		// c0 was the oldest but one key: the budget-set went first, then c0.
		d := h.step(events.OpBudgetSet, acme, `{"idempotency_key":"b1","scope":"tenant:acme","name":"b","limits":{"USD":"1"}}`)
		if d.Duplicate != 0 || len(d.Events) == 0 {
			t.Errorf("the oldest key is forgotten: %s", describe(d))
		}
		d = h.step(events.OpCharge, acme, `{"idempotency_key":"c0","scope":"tenant:acme","amounts":{"tokens":"1"}}`)
		if d.Duplicate != 0 || len(d.Events) == 0 {
			t.Errorf("the next oldest is forgotten: %s", describe(d))
		}
	})
	t.Run("refused requests leave the key unused", func(t *testing.T) {
		h := setup(t, Config{Partition: 3})
		// A budget-adjust refused on the state (a unit not limited).
		if code := h.fail(events.OpBudgetAdjust, acme, `{"idempotency_key":"a","scope":"tenant:acme","name":"b","delta":{"EUR":"1"},"reason":"r"}`); code != events.CodeInvalidRequest {
			t.Fatalf("got %s", code)
		}
		// NOT_FOUND.
		if code := h.fail(events.OpBudgetAdjust, acme, `{"idempotency_key":"a","scope":"tenant:acme","name":"nope","delta":{"USD":"1"},"reason":"r"}`); code != events.CodeNotFound {
			t.Fatalf("got %s", code)
		}
		if d := h.step(events.OpBudgetAdjust, acme, `{"idempotency_key":"a","scope":"tenant:acme","name":"b","delta":{"USD":"1"},"reason":"r"}`); d.Err != nil || d.Duplicate != 0 {
			t.Fatalf("key a after refusals: %s", describe(d))
		}
	})
}

func TestRuleAlerts(t *testing.T) {
	type alert struct{ budget, scope, period, unit, threshold, spent, reserved string }
	alertsOf := func(d Decision) []alert {
		var out []alert
		for _, ev := range d.Events {
			if x, ok := ev.Data.(*events.ThresholdCrossed); ok {
				out = append(out, alert{x.Budget, x.Scope, x.Period, x.Unit, x.Threshold, x.Spent.String(), x.Reserved.String()})
			}
		}
		return out
	}
	h := checked(t)
	h.set(acme, "b", `"limits":{"USD":"10","tokens":"100"},"period":"daily"`)
	const day = "2026-11-28"
	steps := []struct {
		name string
		op   events.Op
		body string
		want []alert
	}{
		{"below every threshold", events.OpReserve, `{"idempotency_key":"r1","scope":"tenant:acme","amounts":{"USD":"4.99"}}`, nil},
		{"reaching 0.5 exactly", events.OpReserve, `{"idempotency_key":"r2","scope":"tenant:acme","amounts":{"USD":"0.01"}}`,
			[]alert{{"b", acme, day, "USD", "0.5", "0", "5"}}},
		{"0.5 only once", events.OpCharge, `{"idempotency_key":"c1","scope":"tenant:acme","amounts":{"USD":"1"}}`, nil},
		{"one unit crosses two thresholds at once", events.OpCharge, `{"idempotency_key":"c2","scope":"tenant:acme","amounts":{"tokens":"80","USD":"1"}}`,
			[]alert{{"b", acme, day, "tokens", "0.5", "80", "0"}, {"b", acme, day, "tokens", "0.8", "80", "0"}}},
		{"the first denial", events.OpReserve, `{"idempotency_key":"r3","scope":"tenant:acme","amounts":{"USD":"5"}}`,
			[]alert{{"b", acme, day, "USD", "denied", "2", "5"}}},
		{"the second denial is quiet", events.OpReserve, `{"idempotency_key":"r4","scope":"tenant:acme","amounts":{"USD":"6"}}`, nil},
		{"0.8 and 1.0 by one charge", events.OpCharge, `{"idempotency_key":"c3","scope":"tenant:acme","amounts":{"USD":"3"}}`,
			[]alert{{"b", acme, day, "USD", "0.8", "5", "5"}, {"b", acme, day, "USD", "1", "5", "5"}}},
		{"beyond 1.0 nothing more", events.OpCharge, `{"idempotency_key":"c4","scope":"tenant:acme","amounts":{"USD":"3"}}`, nil},
	}
	for _, st := range steps {
		d := h.step(st.op, acme, st.body)
		if d.Err != nil {
			t.Fatalf("%s: %v", st.name, d.Err)
		}
		if diff := cmp.Diff(st.want, alertsOf(d), cmp.AllowUnexported(alert{})); diff != "" {
			t.Errorf("%s (-want +got):\n%s", st.name, diff)
		}
	}
	// The next period alerts again.
	h.advance(3 * time.Hour)
	d := h.step(events.OpCharge, acme, `{"idempotency_key":"c5","scope":"tenant:acme","amounts":{"USD":"10"}}`)
	want := []alert{{"b", acme, "2026-11-29", "USD", "0.5", "10", "0"}, {"b", acme, "2026-11-29", "USD", "0.8", "10", "0"}, {"b", acme, "2026-11-29", "USD", "1", "10", "0"}}
	if diff := cmp.Diff(want, alertsOf(d), cmp.AllowUnexported(alert{})); diff != "" {
		t.Errorf("next period (-want +got):\n%s", diff)
	}
	d = h.step(events.OpReserve, acme, `{"idempotency_key":"r5","scope":"tenant:acme","amounts":{"USD":"1"}}`)
	if diff := cmp.Diff([]alert{{"b", acme, "2026-11-29", "USD", "denied", "10", "0"}}, alertsOf(d), cmp.AllowUnexported(alert{})); diff != "" {
		t.Errorf("next period's first denial (-want +got):\n%s", diff)
	}
	t.Run("shadow would-be denials alert once; custom thresholds", func(t *testing.T) {
		h := checked(t)
		h.set(acme, "w", `"limits":{"USD":"10"},"mode":"shadow","alert_thresholds":["0.25","2"]`)
		d := h.step(events.OpReserve, acme, `{"idempotency_key":"r1","scope":"tenant:acme","amounts":{"USD":"11"}}`)
		want := []alert{{"w", acme, "none", "USD", "0.25", "0", "11"}, {"w", acme, "none", "USD", "denied", "0", "0"}}
		if diff := cmp.Diff(want, alertsOf(d), cmp.AllowUnexported(alert{})); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		d = h.step(events.OpReserve, acme, `{"idempotency_key":"r2","scope":"tenant:acme","amounts":{"USD":"10"}}`)
		want = []alert{{"w", acme, "none", "USD", "2", "0", "21"}}
		if diff := cmp.Diff(want, alertsOf(d), cmp.AllowUnexported(alert{})); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

func TestRuleTimeNeverGoesBackwards(t *testing.T) {
	h := checked(t)
	h.set(acme, "b", `"limits":{"USD":"10"},"period":"daily"`)
	t0 := h.now
	h.advance(-time.Hour)
	d := h.step(events.OpReserve, acme, `{"idempotency_key":"r","scope":"tenant:acme","amounts":{"USD":"1"},"ttl_ms":1000}`)
	if !d.Events[0].At.Equal(t0) {
		t.Errorf("event at %s, want the clamped %s", d.Events[0].At, t0)
	}
	res := mustResult(t, d).(events.ReserveResult)
	if !res.ExpiresAt.Equal(t0.Add(time.Second)) {
		t.Errorf("expires_at %s, want from the clamped time", res.ExpiresAt)
	}
	if res.Instances[0].Period != "2026-11-28" {
		t.Errorf("period %s from the clamped time", res.Instances[0].Period)
	}
	h.now = t0.Add(-24 * time.Hour)
	if d := h.tick(); len(d.Events) != 0 {
		t.Errorf("a tick in the past expired %v", eventTypes(d))
	}
	if !h.s.LastAt().Equal(t0) {
		t.Errorf("LastAt %s", h.s.LastAt())
	}
}

func TestRuleMaxOpenReservations(t *testing.T) {
	h := newHarnessCfg(t, Config{Partition: 3, MaxOpenReservations: 2})
	h.set(acme, "b", `"limits":{"USD":"10"}`)
	first := h.reserve(acme, `{"idempotency_key":"r1","scope":"tenant:acme","amounts":{"USD":"1"}}`)
	h.reserve(acme, `{"idempotency_key":"r2","scope":"tenant:acme","amounts":{"USD":"1"}}`)
	if code := h.fail(events.OpReserve, acme, `{"idempotency_key":"r3","scope":"tenant:acme","amounts":{"USD":"1"}}`); code != events.CodeUnavailable {
		t.Fatalf("third open reservation: %s", code)
	}
	if d := h.step(events.OpReserve, acme, `{"idempotency_key":"r1","scope":"tenant:acme","amounts":{"USD":"1"}}`); d.Duplicate == 0 {
		t.Errorf("a retry at the bound: %s", describe(d))
	}
	if d := h.step(events.OpDecide, acme, `{"scope":"tenant:acme","amounts":{"USD":"1"}}`); d.Err != nil {
		t.Errorf("decide at the bound: %v", d.Err)
	}
	h.release(acme, first.ReservationID)
	if r := h.reserve(acme, `{"idempotency_key":"r3","scope":"tenant:acme","amounts":{"USD":"1"}}`); r.Decision != "granted" {
		t.Errorf("after a release: %s", jsonOf(r))
	}
	h.checkReplay()
}

func TestRuleBalanceBeyond38Digits(t *testing.T) {
	const e37 = "10000000000000000000000000000000000000" // 38 digits
	tests := []struct {
		name    string
		limits  string
		mode    string
		prelude func(h *harness) string // returns a reservation id for body's %[1]s
		op      events.Op
		body    string
	}{
		{name: "reserved would need 39 digits", limits: `{"USD":"20000000000000000000000000000000000000"}`,
			prelude: func(h *harness) string {
				return h.res(acme, `{"USD":"`+e37+`"}`, `"priority":"critical"`).ReservationID
			},
			op: events.OpReserve, body: `{"idempotency_key":"x","scope":"tenant:acme","amounts":{"USD":"0.1"},"priority":"critical"}`},
		{name: "a shadow instance's reserved", limits: `{"USD":"1"}`, mode: "shadow",
			prelude: func(h *harness) string { return h.res(acme, `{"USD":"`+e37+`"}`, "").ReservationID },
			op:      events.OpReserve, body: `{"idempotency_key":"x","scope":"tenant:acme","amounts":{"USD":"0.1"}}`},
		{name: "spent would need 39 digits", limits: `{"USD":"1"}`,
			prelude: func(h *harness) string { h.charge(acme, `{"USD":"`+e37+`"}`); return "" },
			op:      events.OpCharge, body: `{"idempotency_key":"x","scope":"tenant:acme","amounts":{"USD":"0.1"}}`},
		{name: "spent would overflow 38 nines", limits: `{"USD":"1"}`,
			prelude: func(h *harness) string { h.charge(acme, `{"USD":"99999999999999999999999999999999999999"}`); return "" },
			op:      events.OpCharge, body: `{"idempotency_key":"x","scope":"tenant:acme","amounts":{"USD":"1"}}`},
		{name: "a commit's spent", limits: `{"USD":"1"}`, mode: "shadow",
			prelude: func(h *harness) string {
				h.charge(acme, `{"USD":"`+e37+`"}`)
				return h.res(acme, `{"USD":"1"}`, "").ReservationID
			},
			op: events.OpCommit, body: `{"idempotency_key":"x","reservation_id":"%[1]s","actual":{"USD":"0.1"}}`},
		// A remaining beyond 38 digits is not refused: it is derived, not a
		// balance, and events carry it exactly (TestWideFiguresReplay).
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := checked(t)
			fields := `"limits":` + tt.limits
			if tt.mode != "" {
				fields += `,"mode":"` + tt.mode + `"`
			}
			h.set(acme, "b", fields)
			id := ""
			if tt.prelude != nil {
				id = tt.prelude(h)
			}
			body := tt.body
			if strings.Contains(body, "%[1]s") {
				body = fmt.Sprintf(body, id)
			}
			if code := h.fail(tt.op, acme, body); code != events.CodeInvalidRequest {
				t.Fatalf("got %s", code)
			}
		})
	}
}

func TestApplyPanicsOnInconsistentEvent(t *testing.T) {
	// base is a state with a budget and one granted reservation; each case
	// takes the next event the live state would append and breaks it.
	base := func(t *testing.T) (*harness, Decision) {
		h := newHarness(t)
		h.set(acme, "b", `"limits":{"USD":"10"}`)
		h.res(acme, `{"USD":"2"}`, `"ttl_ms":1000`)
		req, _ := events.ParseRequest(events.OpReserve, []byte(`{"idempotency_key":"next","scope":"tenant:acme","amounts":{"USD":"1"}}`))
		return h, h.s.Decide(Command{Op: events.OpReserve, Root: acme, Request: req, NewID: "NEXT"}, h.now)
	}
	tests := []struct {
		name   string
		break_ func(h *harness, d Decision) (uint64, events.Event)
		want   string // a fragment of the panic
	}{
		{name: "a granted event whose instance balances were tampered", want: "fold has spent",
			break_: func(h *harness, d Decision) (uint64, events.Event) {
				ev := d.Events[0]
				g := ev.Data.(*events.ReservationGranted)
				g.Instances = []events.InstanceView{g.Instances[0]}
				g.Instances[0].Units = events.UnitBalances{{Unit: "USD", UnitBalance: events.UnitBalance{Limit: amt("10"), Spent: amt("0"), Reserved: amt("4")}}}
				ev.Data = g
				return h.s.LastSeq() + 1, ev
			}},
		{name: "a granted event listing fewer instances than apply", want: "applicable instances",
			break_: func(h *harness, d Decision) (uint64, events.Event) {
				ev := d.Events[0]
				g := ev.Data.(*events.ReservationGranted)
				g.Instances = nil
				ev.Data = g
				return h.s.LastSeq() + 1, ev
			}},
		{name: "a reservation granted twice", want: "twice",
			break_: func(h *harness, d Decision) (uint64, events.Event) {
				ev := d.Events[0]
				g := ev.Data.(*events.ReservationGranted)
				g.ReservationID = h.log[1].Data.(*events.ReservationGranted).ReservationID
				ev.Data = g
				return h.s.LastSeq() + 1, ev
			}},
		{name: "a sequence that does not increase", want: "apply of seq",
			break_: func(h *harness, d Decision) (uint64, events.Event) { return h.s.LastSeq(), d.Events[0] }},
		{name: "an event before the last one", want: "before",
			break_: func(h *harness, d Decision) (uint64, events.Event) {
				ev := d.Events[0]
				ev.At = h.now.Add(-time.Second)
				return h.s.LastSeq() + 1, ev
			}},
		{name: "a commit of an unknown reservation", want: "unknown reservation",
			break_: func(h *harness, d Decision) (uint64, events.Event) {
				ev := h.s.event(acme, h.now, &events.ReservationCommitted{ReservationID: "nope", Charged: events.Amounts{}})
				return h.s.LastSeq() + 1, ev
			}},
		{name: "an expiry of a closed reservation", want: "expires reservation",
			break_: func(h *harness, d Decision) (uint64, events.Event) {
				id := h.log[1].Data.(*events.ReservationGranted).ReservationID
				h.release(acme, id)
				ev := h.s.event(acme, h.now, &events.ReservationExpired{ReservationID: id, Scope: acme})
				return h.s.LastSeq() + 1, ev
			}},
		{name: "a release whose balances were tampered", want: "fold has spent",
			break_: func(h *harness, d Decision) (uint64, events.Event) {
				id := h.log[1].Data.(*events.ReservationGranted).ReservationID
				req, _ := events.ParseRequest(events.OpRelease, []byte(`{"idempotency_key":"l","reservation_id":"`+id+`"}`))
				rd := h.s.Decide(Command{Op: events.OpRelease, Root: acme, Request: req}, h.now)
				ev := rd.Events[0]
				r := ev.Data.(*events.ReservationReleased)
				r.Instances[0].Units[0].Reserved = amt("2")
				ev.Data = r
				return h.s.LastSeq() + 1, ev
			}},
		{name: "an adjust of another period", want: "period",
			break_: func(h *harness, d Decision) (uint64, events.Event) {
				ev := h.s.event(acme, h.now, &events.BudgetAdjusted{Budget: "b", Pattern: acme, Scope: acme, Period: "2026-11"})
				return h.s.LastSeq() + 1, ev
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, d := base(t)
			seq, ev := tt.break_(h, d)
			msg := mustPanic(t, func() { h.s.Apply(seq, ev) })
			if !strings.Contains(msg, tt.want) {
				t.Errorf("panic %q does not mention %q", msg, tt.want)
			}
		})
	}
}
