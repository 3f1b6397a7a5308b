package events_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tallyledger/tally/events"
)

// validBodies has one realistic valid body per operation (DESIGN §3); the
// fuzz seeds and benchmarks reuse them.
var validBodies = map[events.Op]string{
	events.OpReserve: `{"idempotency_key":"k2","scope":"tenant:acme/workflow:code-review/run:r-42",
		"amounts":{"USD":"0.40","tokens":"12000"},"priority":"normal","ttl_ms":60000,
		"labels":{"model":"claude-opus-4"}}`,
	events.OpDecide:         `{"scope":"tenant:acme/workflow:code-review/run:r-42","amounts":{"USD":"0.40"}}`,
	events.OpCommit:         `{"idempotency_key":"k3","reservation_id":"01JDQ7Z5N3W8K2V6X9Y4T0R1PQ","actual":{"USD":"0.37","tokens":"10500"}}`,
	events.OpRelease:        `{"idempotency_key":"k4","reservation_id":"01JDQ7Z5N3W8K2V6X9Y4T0R1PQ"}`,
	events.OpExtend:         `{"idempotency_key":"k5","reservation_id":"01JDQ7Z5N3W8K2V6X9Y4T0R1PQ","ttl_ms":30000}`,
	events.OpCharge:         `{"idempotency_key":"k6","scope":"tenant:acme/workflow:search","amounts":{"search_calls":"3"},"labels":{"tool":"web"}}`,
	events.OpBalance:        `{"scope":"tenant:acme"}`,
	events.OpReservationGet: `{"reservation_id":"01JDQ7Z5N3W8K2V6X9Y4T0R1PQ"}`,
	events.OpBudgetSet: `{"idempotency_key":"k1","scope":"tenant:acme/workflow:code-review/run:*","name":"per-run",
		"limits":{"USD":"2.00"},"period":"none","mode":"enforce"}`,
	events.OpBudgetGet:    `{"scope":"tenant:acme/workflow:code-review/run:*","name":"per-run"}`,
	events.OpBudgetList:   `{}`,
	events.OpBudgetDelete: `{"idempotency_key":"k7","scope":"tenant:acme","name":"monthly"}`,
	events.OpBudgetAdjust: `{"idempotency_key":"k8","scope":"tenant:acme/workflow:code-review/run:r-42","name":"per-run",
		"delta":{"USD":"-0.50","tokens":"1000"},"reason":"refund"}`,
}

func TestParseRequestValid(t *testing.T) {
	const rid = "01JDQ7Z5N3W8K2V6X9Y4T0R1PQ"
	tests := []struct {
		name string
		op   events.Op
		body string
		want any
	}{
		{name: "reserve", op: events.OpReserve, body: validBodies[events.OpReserve],
			want: &events.ReserveRequest{IdempotencyKey: "k2", Scope: "tenant:acme/workflow:code-review/run:r-42",
				Amounts:  events.Amounts{"USD": amt("0.4"), "tokens": amt("12000")},
				Priority: ptr(events.PriorityNormal), TTLMS: ptr[int64](60000),
				Labels: events.Labels{"model": "claude-opus-4"}}},
		{name: "reserve minimal", op: events.OpReserve,
			body: `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"1"}}`,
			want: &events.ReserveRequest{IdempotencyKey: "k", Scope: "tenant:acme", Amounts: events.Amounts{"USD": amt("1")}}},
		{name: "reserve with options", op: events.OpReserve,
			body: `{"idempotency_key":"k","scope":"tenant:acme/run:r1","priority":"bulk",
				"options":[{"label":"opus","amounts":{"USD":"0.40"}},{"label":"haiku","amounts":{"USD":"0.02"}},{"amounts":{"USD":"0"}}]}`,
			want: &events.ReserveRequest{IdempotencyKey: "k", Scope: "tenant:acme/run:r1", Priority: ptr(events.PriorityBulk),
				Options: events.Options{
					{Label: "opus", Amounts: events.Amounts{"USD": amt("0.4")}},
					{Label: "haiku", Amounts: events.Amounts{"USD": amt("0.02")}},
					{Amounts: events.Amounts{"USD": amt("0")}},
				}}},
		{name: "reserve at the limits", op: events.OpReserve,
			body: fmt.Sprintf(`{"idempotency_key":%q,"scope":"tenant:acme","amounts":%s,"ttl_ms":86400000,"labels":%s}`,
				strings.Repeat("k", 128), unitsJSON(events.MaxUnits), labelsJSON(events.MaxLabels)),
			want: &events.ReserveRequest{IdempotencyKey: strings.Repeat("k", 128), Scope: "tenant:acme",
				Amounts: units(events.MaxUnits), TTLMS: ptr[int64](86400000), Labels: labels(events.MaxLabels)}},
		{name: "reserve ttl minimum", op: events.OpReserve,
			body: `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"1"},"ttl_ms":1000}`,
			want: &events.ReserveRequest{IdempotencyKey: "k", Scope: "tenant:acme", Amounts: events.Amounts{"USD": amt("1")}, TTLMS: ptr[int64](1000)}},
		{name: "white space and key order", op: events.OpReserve,
			body: " \n\t{ \"amounts\" : { \"USD\" : \"1\" } , \"scope\":\"tenant:acme\", \"idempotency_key\":\"k\" }\n ",
			want: &events.ReserveRequest{IdempotencyKey: "k", Scope: "tenant:acme", Amounts: events.Amounts{"USD": amt("1")}}},
		{name: "decide needs no key", op: events.OpDecide, body: validBodies[events.OpDecide],
			want: &events.ReserveRequest{Scope: "tenant:acme/workflow:code-review/run:r-42", Amounts: events.Amounts{"USD": amt("0.4")}}},
		{name: "commit", op: events.OpCommit, body: validBodies[events.OpCommit],
			want: &events.CommitRequest{IdempotencyKey: "k3", ReservationID: rid,
				Actual: events.Amounts{"USD": amt("0.37"), "tokens": amt("10500")}}},
		{name: "commit of nothing", op: events.OpCommit,
			body: `{"idempotency_key":"k3","reservation_id":"r1","actual":{},"labels":{"model":"m"}}`,
			want: &events.CommitRequest{IdempotencyKey: "k3", ReservationID: "r1", Actual: events.Amounts{}, Labels: events.Labels{"model": "m"}}},
		{name: "release", op: events.OpRelease, body: validBodies[events.OpRelease],
			want: &events.ReleaseRequest{IdempotencyKey: "k4", ReservationID: rid}},
		{name: "extend", op: events.OpExtend, body: validBodies[events.OpExtend],
			want: &events.ExtendRequest{IdempotencyKey: "k5", ReservationID: rid, TTLMS: ptr[int64](30000)}},
		{name: "charge", op: events.OpCharge, body: validBodies[events.OpCharge],
			want: &events.ChargeRequest{IdempotencyKey: "k6", Scope: "tenant:acme/workflow:search",
				Amounts: events.Amounts{"search_calls": amt("3")}, Labels: events.Labels{"tool": "web"}}},
		{name: "balance", op: events.OpBalance, body: validBodies[events.OpBalance],
			want: &events.BalanceRequest{Scope: "tenant:acme"}},
		{name: "reservation-get", op: events.OpReservationGet, body: validBodies[events.OpReservationGet],
			want: &events.ReservationGetRequest{ReservationID: rid}},
		{name: "budget-set", op: events.OpBudgetSet, body: validBodies[events.OpBudgetSet],
			want: &events.BudgetSetRequest{IdempotencyKey: "k1", Scope: "tenant:acme/workflow:code-review/run:*", Name: "per-run",
				Limits: events.Amounts{"USD": amt("2")}, Period: ptr(events.PeriodNone), Mode: ptr(events.ModeEnforce)}},
		{name: "budget-set full", op: events.OpBudgetSet,
			body: `{"idempotency_key":"k1","scope":"tenant:acme","name":"monthly","limits":{"USD":"500","tokens":"1000000"},
				"period":"monthly","timezone":"Europe/Paris","mode":"shadow",
				"priority_floors":{"critical":"0","high":"0.10","normal":"0.25","low":"0.50","bulk":"0.70"},
				"alert_thresholds":["0.5","0.9","1","1.5"]}`,
			want: &events.BudgetSetRequest{IdempotencyKey: "k1", Scope: "tenant:acme", Name: "monthly",
				Limits: events.Amounts{"USD": amt("500"), "tokens": amt("1000000")},
				Period: ptr(events.PeriodMonthly), Timezone: ptr("Europe/Paris"), Mode: ptr(events.ModeShadow),
				PriorityFloors: map[events.Priority]events.Amount{"critical": amt("0"), "high": amt("0.1"),
					"normal": amt("0.25"), "low": amt("0.5"), "bulk": amt("0.7")},
				AlertThresholds: &[]events.Amount{amt("0.5"), amt("0.9"), amt("1"), amt("1.5")}}},
		{name: "budget-get", op: events.OpBudgetGet, body: validBodies[events.OpBudgetGet],
			want: &events.BudgetRef{Scope: "tenant:acme/workflow:code-review/run:*", Name: "per-run"}},
		{name: "budget-list", op: events.OpBudgetList, body: validBodies[events.OpBudgetList],
			want: &events.BudgetListRequest{}},
		{name: "budget-delete", op: events.OpBudgetDelete, body: validBodies[events.OpBudgetDelete],
			want: &events.BudgetRef{IdempotencyKey: "k7", Scope: "tenant:acme", Name: "monthly"}},
		{name: "budget-adjust", op: events.OpBudgetAdjust, body: validBodies[events.OpBudgetAdjust],
			want: &events.BudgetAdjustRequest{IdempotencyKey: "k8", Scope: "tenant:acme/workflow:code-review/run:r-42",
				Name: "per-run", Delta: events.SignedAmounts{"USD": signed("-0.5"), "tokens": signed("1000")}, Reason: "refund"}},
	}
	covered := map[events.Op]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := events.ParseRequest(tt.op, []byte(tt.body))
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmpOpts); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
		covered[tt.op] = true
	}
	for _, op := range events.Ops {
		if !covered[op] {
			t.Errorf("no valid case for %s", op)
		}
		if _, ok := validBodies[op]; !ok {
			t.Errorf("no valid body for %s", op)
		}
	}
}

func TestReserveDefaults(t *testing.T) {
	r, err := events.ParseRequest(events.OpReserve, []byte(`{"idempotency_key":"k","scope":"tenant:a","amounts":{"USD":"1"}}`))
	if err != nil {
		t.Fatal(err)
	}
	req := r.(*events.ReserveRequest)
	if req.EffectivePriority() != events.PriorityNormal || req.EffectiveTTL() != time.Minute {
		t.Errorf("defaults: %s %s", req.EffectivePriority(), req.EffectiveTTL())
	}
	if diff := cmp.Diff(events.Options{{Amounts: events.Amounts{"USD": amt("1")}}}, req.EffectiveOptions(), cmpOpts); diff != "" {
		t.Errorf("EffectiveOptions (-want +got):\n%s", diff)
	}
	r, _ = events.ParseRequest(events.OpReserve, []byte(`{"idempotency_key":"k","scope":"tenant:a","priority":"critical","ttl_ms":1500,
		"options":[{"label":"a","amounts":{"USD":"2"}}]}`))
	req = r.(*events.ReserveRequest)
	if req.EffectivePriority() != events.PriorityCritical || req.EffectiveTTL() != 1500*time.Millisecond {
		t.Errorf("explicit: %s %s", req.EffectivePriority(), req.EffectiveTTL())
	}
	if got := req.EffectiveOptions(); len(got) != 1 || got[0].Label != "a" {
		t.Errorf("EffectiveOptions = %v", got)
	}
}

func TestBudgetDefaults(t *testing.T) {
	r, err := events.ParseRequest(events.OpBudgetSet, []byte(`{"idempotency_key":"k","scope":"tenant:acme","name":"b","limits":{"USD":"10"}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.(*events.BudgetSetRequest).Budget()
	if err != nil {
		t.Fatal(err)
	}
	want := events.Budget{Scope: "tenant:acme", Name: "b", Limits: events.Amounts{"USD": amt("10")},
		Period: events.PeriodNone, Timezone: "UTC", Mode: events.ModeEnforce,
		PriorityFloors: map[events.Priority]events.Amount{}, AlertThresholds: events.DefaultAlertThresholds}
	if diff := cmp.Diff(want, b, cmpOpts); diff != "" {
		t.Errorf("Budget (-want +got):\n%s", diff)
	}
	b.PriorityFloors = map[events.Priority]events.Amount{"normal": amt("0.25"), "critical": amt("0")}
	for p, want := range map[events.Priority]string{"critical": "0", "normal": "0.25", "low": "0"} {
		if got := b.Floor(p).String(); got != want {
			t.Errorf("Floor(%s) = %s, want %s", p, got, want)
		}
	}
}

func TestParseRequestInvalid(t *testing.T) {
	const key = `"idempotency_key":"k",`
	reserve := func(fields string) string {
		return `{` + key + `"scope":"tenant:acme",` + fields + `}`
	}
	budget := func(fields string) string {
		return `{` + key + `"scope":"tenant:acme","name":"b","limits":{"USD":"1"}` + fields + `}`
	}
	opts := func(n int) string {
		o := make([]string, n)
		for i := range o {
			o[i] = `{"amounts":{"USD":"1"}}`
		}
		return `"options":[` + strings.Join(o, ",") + `]`
	}
	tests := []struct {
		name string
		op   events.Op
		body string
		want string // the whole message, or a fragment of it with wantFragment
		frag bool
	}{
		// Documents.
		{name: "empty", op: events.OpReserve, body: ``, want: "empty document, expected a JSON object"},
		{name: "blank", op: events.OpBalance, body: " \n ", want: "empty document, expected a JSON object"},
		{name: "array", op: events.OpReserve, body: `[]`, want: "expected a JSON object, got an array"},
		{name: "string", op: events.OpReserve, body: `"x"`, want: "expected a JSON object, got a string"},
		{name: "null document", op: events.OpBudgetList, body: `null`, want: "expected a JSON object, got null"},
		{name: "broken JSON", op: events.OpReserve, body: `{"scope":"tenant:acme",`, want: "malformed JSON", frag: true},
		{name: "unquoted key", op: events.OpReserve, body: `{scope:"tenant:acme"}`, want: "malformed JSON: invalid character 's'", frag: true},
		{name: "bare NaN", op: events.OpReserve, body: reserve(`"amounts":{"USD":NaN}`), want: "malformed JSON: invalid character 'N'", frag: true},
		{name: "trailing object", op: events.OpBalance, body: `{"scope":"tenant:acme"} {}`, want: "trailing data after the JSON object"},
		{name: "trailing brace", op: events.OpBalance, body: `{"scope":"tenant:acme"}}`, want: "trailing data after the JSON object"},
		{name: "trailing bracket", op: events.OpBalance, body: `{"scope":"tenant:acme"} ]`, want: "trailing data after the JSON object"},
		{name: "trailing garbage", op: events.OpBalance, body: `{"scope":"tenant:acme"}x`, want: "trailing data after the JSON object"},
		{name: "duplicate field", op: events.OpBalance, body: `{"scope":"tenant:acme","scope":"tenant:evil"}`, want: "scope: duplicate field"},
		{name: "duplicate unit", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1","USD":"2"}`), want: "amounts.USD: duplicate field"},

		// Fields.
		{name: "unknown field", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"amount":{"USD":"1"}`), want: "amount: unknown field"},
		{name: "field names are case sensitive", op: events.OpBalance, body: `{"Scope":"tenant:acme"}`, want: "Scope: unknown field"},
		{name: "unknown field in option", op: events.OpReserve, body: reserve(`"options":[{"amounts":{"USD":"1"}},{"amounts":{"USD":"1"},"priority":"high"}]`),
			want: "options[1].priority: unknown field"},
		{name: "null field", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"priority":null`),
			want: "priority: null is not allowed; omit the field instead"},
		{name: "null amount", op: events.OpReserve, body: reserve(`"amounts":{"USD":null}`), want: "amounts.USD: invalid amount: amounts are decimal strings, not JSON null"},
		{name: "null label", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"labels":{"model":null}`), want: "labels.model: null is not allowed"},
		{name: "null option", op: events.OpReserve, body: reserve(`"options":[{"amounts":{"USD":"1"}},null]`), want: "options[1]: null is not allowed"},
		{name: "null threshold", op: events.OpBudgetSet, body: budget(`,"alert_thresholds":["0.5",null]`), want: "alert_thresholds[1]: null is not allowed"},
		{name: "null floor", op: events.OpBudgetSet, body: budget(`,"priority_floors":{"high":null}`), want: "priority_floors.high: null is not allowed"},

		// Types.
		{name: "scope number", op: events.OpReserve, body: `{` + key + `"scope":5,"amounts":{"USD":"1"}}`, want: "scope: expected a string, got number 5"},
		{name: "ttl string", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"ttl_ms":"60000"`), want: "ttl_ms: expected an integer, got a string"},
		{name: "ttl float", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"ttl_ms":1500.5`), want: "ttl_ms: expected an integer, got number 1500.5"},
		{name: "ttl exponent", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"ttl_ms":6e4`), want: "ttl_ms: expected an integer, got number 6e4"},
		{name: "ttl overflow", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"ttl_ms":99999999999999999999`), want: "ttl_ms: expected an integer, got number 99999999999999999999"},
		{name: "amounts array", op: events.OpReserve, body: reserve(`"amounts":["1"]`), want: "amounts: expected an object, got an array"},
		{name: "options object", op: events.OpReserve, body: reserve(`"options":{}`), want: "options: expected an array, got an object"},
		{name: "option not object", op: events.OpReserve, body: reserve(`"options":["x"]`), want: "options[0]: expected an object, got a string"},
		{name: "labels array", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"labels":[]`), want: "labels: expected an object, got an array"},
		{name: "label number", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"labels":{"model":5}`), want: "labels.model: expected a string, got number 5"},
		{name: "priority number", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"priority":1`), want: "priority: expected a string, got number 1"},
		{name: "bool as key", op: events.OpRelease, body: `{"idempotency_key":true,"reservation_id":"r"}`, want: "idempotency_key: expected a string, got a boolean"},
		{name: "threshold float", op: events.OpBudgetSet, body: budget(`,"alert_thresholds":["0.5",0.8]`),
			want: "alert_thresholds[1]: invalid amount: amounts are decimal strings, not JSON number 0.8"},

		// Amounts.
		{name: "float amount", op: events.OpReserve, body: reserve(`"amounts":{"USD":0.4}`), want: "amounts.USD: invalid amount: amounts are decimal strings, not JSON number 0.4"},
		{name: "integer amount", op: events.OpCharge, body: reserve(`"amounts":{"tokens":12000}`), want: "amounts.tokens: invalid amount: amounts are decimal strings, not JSON number 12000"},
		{name: "negative", op: events.OpReserve, body: reserve(`"amounts":{"USD":"-1"}`), want: `amounts.USD: negative amount "-1"`},
		{name: "exponent", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1e3"}`), want: `amounts.USD: exponent in amount "1e3"`},
		{name: "NaN string", op: events.OpReserve, body: reserve(`"amounts":{"USD":"NaN"}`), want: `amounts.USD: not a number, bad character 'N' in amount "NaN"`},
		{name: "10 000 digits", op: events.OpReserve, body: reserve(`"amounts":{"USD":"` + strings.Repeat("9", 10000) + `"}`),
			want: `amounts.USD: too long amount "999999999999999999999999999999999999999999999999…"`},
		{name: "10 000-digit number", op: events.OpReserve, body: reserve(`"amounts":{"USD":` + strings.Repeat("9", 10000) + `}`),
			want: "amounts.USD: invalid amount: amounts are decimal strings, not JSON number 999999999999999999999999…"},
		{name: "39 digits", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1` + strings.Repeat("0", 38) + `"}`),
			want: "amounts.USD: more than 38 significant digits in amount", frag: true},
		{name: "19 fraction digits", op: events.OpCommit, body: `{` + key + `"reservation_id":"r","actual":{"USD":"0.0000000000000000001"}}`,
			want: `actual.USD: more than 18 fractional digits in amount "0.0000000000000000001"`},
		{name: "option amount", op: events.OpReserve, body: reserve(`"options":[{"amounts":{"USD":"1"}},{"amounts":{"USD":"-1"}}]`),
			want: `options[1].amounts.USD: negative amount "-1"`},
		{name: "option float", op: events.OpDecide, body: `{"scope":"tenant:acme","options":[{"amounts":{"USD":0.4}}]}`,
			want: "options[0].amounts.USD: invalid amount: amounts are decimal strings, not JSON number 0.4"},
		{name: "bad unit", op: events.OpReserve, body: reserve(`"amounts":{"U$D":"1"}`), want: `amounts.U$D: unit "U$D": character '$' not allowed`, frag: true},
		{name: "empty unit", op: events.OpReserve, body: reserve(`"amounts":{"":"1"}`), want: "amounts: empty unit name"},
		{name: "too many units", op: events.OpReserve, body: reserve(`"amounts":` + unitsJSON(events.MaxUnits+1)), want: "amounts: more than 16 units"},
		{name: "too many actual units", op: events.OpCommit, body: `{` + key + `"reservation_id":"r","actual":` + unitsJSON(events.MaxUnits+1) + `}`,
			want: "actual: more than 16 units"},
		{name: "no units", op: events.OpReserve, body: reserve(`"amounts":{}`), want: "amounts: at least one unit is required"},
		{name: "no units in option", op: events.OpReserve, body: reserve(`"options":[{"amounts":{"USD":"1"}},{"label":"x"}]`),
			want: "options[1].amounts: at least one unit is required"},
		{name: "charge without amounts", op: events.OpCharge, body: `{` + key + `"scope":"tenant:acme"}`, want: "amounts: at least one unit is required"},
		{name: "signed delta float", op: events.OpBudgetAdjust, body: `{` + key + `"scope":"tenant:acme","name":"b","delta":{"USD":-1},"reason":"x"}`,
			want: "delta.USD: invalid amount: amounts are decimal strings, not JSON number -1"},
		{name: "negative zero delta", op: events.OpBudgetAdjust, body: `{` + key + `"scope":"tenant:acme","name":"b","delta":{"USD":"-0"},"reason":"x"}`,
			want: `delta.USD: negative zero amount "-0"`},
		{name: "too many delta units", op: events.OpBudgetAdjust, body: `{` + key + `"scope":"tenant:acme","name":"b","delta":` + unitsJSON(events.MaxUnits+1) + `,"reason":"x"}`,
			want: "delta: more than 16 units"},
		{name: "empty delta", op: events.OpBudgetAdjust, body: `{` + key + `"scope":"tenant:acme","name":"b","delta":{},"reason":"x"}`,
			want: "delta: at least one unit is required"},

		// Reserve shape.
		{name: "amounts and options", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},` + opts(1)), want: "options: give either amounts or options, not both"},
		{name: "neither amounts nor options", op: events.OpReserve, body: reserve(`"priority":"high"`), want: "amounts: required (or options)"},
		{name: "no options", op: events.OpReserve, body: reserve(`"options":[]`), want: "options: 1 to 8 options are required"},
		{name: "too many options", op: events.OpReserve, body: reserve(opts(events.MaxOptions + 1)), want: "options: 1 to 8 options are required"},
		{name: "long option label", op: events.OpReserve, body: reserve(`"options":[{"label":"` + strings.Repeat("l", 65) + `","amounts":{"USD":"1"}}]`),
			want: "options[0].label: labels are at most 64 bytes of UTF-8"},
		{name: "unknown priority", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"priority":"urgent"`),
			want: `priority: unknown priority "urgent" (one of critical high normal low bulk)`},
		{name: "ttl too small", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"ttl_ms":999`), want: "ttl_ms: 999 out of range [1000, 86400000]"},
		{name: "ttl too large", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"ttl_ms":86400001`), want: "ttl_ms: 86400001 out of range [1000, 86400000]"},
		{name: "ttl negative", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"ttl_ms":-1`), want: "ttl_ms: -1 out of range [1000, 86400000]"},
		{name: "extend without ttl", op: events.OpExtend, body: `{` + key + `"reservation_id":"r"}`, want: "ttl_ms: required"},
		{name: "extend ttl zero", op: events.OpExtend, body: `{` + key + `"reservation_id":"r","ttl_ms":0}`, want: "ttl_ms: 0 out of range [1000, 86400000]"},

		// Labels.
		{name: "too many labels", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"labels":` + labelsJSON(events.MaxLabels+1)), want: "labels: more than 16 labels"},
		{name: "bad label name", op: events.OpCharge, body: reserve(`"amounts":{"USD":"1"},"labels":{"my label":"x"}`),
			want: `labels.my label: character ' ' not allowed in a label name (use [A-Za-z0-9_.-])`},
		{name: "empty label name", op: events.OpCommit, body: `{` + key + `"reservation_id":"r","actual":{},"labels":{"":"x"}}`,
			want: "labels: label names are 1–64 characters"},
		{name: "long label value", op: events.OpReserve, body: reserve(`"amounts":{"USD":"1"},"labels":{"model":"` + strings.Repeat("v", 257) + `"}`),
			want: "labels.model: label value longer than 256 bytes"},

		// Scopes and keys.
		{name: "missing scope", op: events.OpReserve, body: `{` + key + `"amounts":{"USD":"1"}}`, want: `scope: scope "": empty`},
		{name: "bad scope", op: events.OpReserve, body: `{` + key + `"scope":"tenant:acme/run:a.b","amounts":{"USD":"1"}}`,
			want: `scope: scope "tenant:acme/run:a.b": segment 2: id "a.b": character '.' not allowed (ids are [A-Za-z0-9_-])`},
		{name: "wildcard in reserve", op: events.OpReserve, body: `{` + key + `"scope":"tenant:acme/run:*","amounts":{"USD":"1"}}`,
			want: `scope: scope "tenant:acme/run:*": segment 2: '*' is only allowed in budget scopes`},
		{name: "wildcard in charge", op: events.OpCharge, body: `{` + key + `"scope":"tenant:acme/run:*","amounts":{"USD":"1"}}`,
			want: "'*' is only allowed in budget scopes", frag: true},
		{name: "wildcard in balance", op: events.OpBalance, body: `{"scope":"tenant:acme/run:*"}`, want: "'*' is only allowed in budget scopes", frag: true},
		{name: "wildcard in adjust", op: events.OpBudgetAdjust, body: `{` + key + `"scope":"tenant:acme/run:*","name":"b","delta":{"USD":"1"},"reason":"x"}`,
			want: "'*' is only allowed in budget scopes", frag: true},
		{name: "wildcard root in budget", op: events.OpBudgetSet, body: `{` + key + `"scope":"tenant:*","name":"b","limits":{"USD":"1"}}`,
			want: `scope: scope "tenant:*": segment 1: root must be concrete, '*' not allowed`},
		{name: "missing key", op: events.OpReserve, body: `{"scope":"tenant:acme","amounts":{"USD":"1"}}`, want: "idempotency_key: empty"},
		{name: "bad key", op: events.OpCommit, body: `{"idempotency_key":"a b","reservation_id":"r","actual":{}}`,
			want: "idempotency_key: character ' ' not allowed (use [A-Za-z0-9_-])"},
		{name: "long key", op: events.OpRelease, body: `{"idempotency_key":"` + strings.Repeat("k", 129) + `","reservation_id":"r"}`,
			want: "idempotency_key: longer than 128"},
		{name: "bad key on decide", op: events.OpDecide, body: `{"idempotency_key":"a/b","scope":"tenant:acme","amounts":{"USD":"1"}}`,
			want: "idempotency_key: character '/' not allowed", frag: true},
		{name: "missing reservation id", op: events.OpRelease, body: `{` + key[:len(key)-1] + `}`, want: "reservation_id: required"},
		{name: "bad reservation id", op: events.OpReservationGet, body: `{"reservation_id":"../x"}`, want: "reservation_id: character '.' not allowed (use [A-Za-z0-9_-])"},
		{name: "long reservation id", op: events.OpCommit, body: `{` + key + `"reservation_id":"` + strings.Repeat("r", 129) + `","actual":{}}`,
			want: "reservation_id: longer than 128"},
		{name: "commit without actual", op: events.OpCommit, body: `{` + key + `"reservation_id":"r"}`, want: "actual: required"},

		// Budgets.
		{name: "budget without name", op: events.OpBudgetSet, body: `{` + key + `"scope":"tenant:acme","limits":{"USD":"1"}}`, want: "name: empty"},
		{name: "budget without limits", op: events.OpBudgetSet, body: `{` + key + `"scope":"tenant:acme","name":"b"}`, want: "limits: at least one unit is required"},
		{name: "budget without key", op: events.OpBudgetSet, body: `{"scope":"tenant:acme","name":"b","limits":{"USD":"1"}}`, want: "idempotency_key: empty"},
		{name: "unknown period", op: events.OpBudgetSet, body: budget(`,"period":"fortnightly"`),
			want: `period: unknown period "fortnightly" (one of none hourly daily weekly monthly yearly)`},
		{name: "unknown zone", op: events.OpBudgetSet, body: budget(`,"timezone":"Mars/Olympus"`),
			want: `timezone: unknown time zone "Mars/Olympus" (use an IANA name such as Europe/Paris)`},
		{name: "Local zone", op: events.OpBudgetSet, body: budget(`,"timezone":"Local"`), want: `timezone: unknown time zone "Local"`, frag: true},
		{name: "path zone", op: events.OpBudgetSet, body: budget(`,"timezone":"../../etc/passwd"`), want: `timezone: unknown time zone`, frag: true},
		{name: "unknown mode", op: events.OpBudgetSet, body: budget(`,"mode":"audit"`), want: `mode: unknown mode "audit" (enforce or shadow)`},
		{name: "unknown floor priority", op: events.OpBudgetSet, body: budget(`,"priority_floors":{"urgent":"0.1"}`), want: "priority_floors.urgent: unknown priority"},
		{name: "critical floor", op: events.OpBudgetSet, body: budget(`,"priority_floors":{"critical":"0.1"}`), want: "priority_floors.critical: critical is always 0"},
		{name: "floor above 1", op: events.OpBudgetSet, body: budget(`,"priority_floors":{"low":"1.5"}`), want: "priority_floors.low: floor 1.5 above 1"},
		{name: "zero threshold", op: events.OpBudgetSet, body: budget(`,"alert_thresholds":["0"]`), want: "alert_thresholds[0]: threshold 0 out of range (0, 10]"},
		{name: "threshold above 10", op: events.OpBudgetSet, body: budget(`,"alert_thresholds":["0.5","10.5"]`), want: "alert_thresholds[1]: threshold 10.5 out of range (0, 10]"},
		{name: "thresholds not increasing", op: events.OpBudgetSet, body: budget(`,"alert_thresholds":["0.8","0.5"]`),
			want: "alert_thresholds[1]: thresholds must be strictly increasing"},
		{name: "too many thresholds", op: events.OpBudgetSet, body: budget(`,"alert_thresholds":` + thresholdsJSON(events.MaxThresholds+1)),
			want: "alert_thresholds: more than 16 thresholds"},
		{name: "budget-delete needs a key", op: events.OpBudgetDelete, body: `{"scope":"tenant:acme","name":"b"}`, want: "idempotency_key: empty"},
		{name: "budget-get bad name", op: events.OpBudgetGet, body: `{"scope":"tenant:acme","name":"a b"}`, want: "name: character ' ' not allowed (use [A-Za-z0-9_-])"},
		{name: "budget-list takes nothing", op: events.OpBudgetList, body: `{"scope":"tenant:acme"}`, want: "scope: unknown field"},
		{name: "adjust without reason", op: events.OpBudgetAdjust, body: `{` + key + `"scope":"tenant:acme","name":"b","delta":{"USD":"1"}}`,
			want: "reason: required: 1–1024 bytes of UTF-8"},
		{name: "adjust long reason", op: events.OpBudgetAdjust, body: `{` + key + `"scope":"tenant:acme","name":"b","delta":{"USD":"1"},"reason":"` + strings.Repeat("r", 1025) + `"}`,
			want: "reason: required: 1–1024 bytes of UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := events.ParseRequest(tt.op, []byte(tt.body))
			if err == nil {
				t.Fatalf("ParseRequest(%s) = %+v, want error %q", tt.op, got, tt.want)
			}
			if got != nil {
				t.Errorf("a rejected request returned %+v", got)
			}
			if tt.frag {
				wantErr(t, err, tt.want)
			} else if err.Error() != tt.want {
				t.Errorf("error\n got %q\nwant %q", err, tt.want)
			}
			// Every message is a usable INVALID_REQUEST answer, and the
			// field it names is in the details.
			inv := events.Invalid(err)
			if inv.Code != events.CodeInvalidRequest || inv.Message != err.Error() {
				t.Errorf("Invalid(err) = %+v", inv)
			}
			var fe *events.FieldError
			if errors.As(err, &fe) && fe.Path != "" {
				if inv.Details["field"] != fe.Path || !strings.HasPrefix(err.Error(), fe.Path+": ") {
					t.Errorf("field %q not reported: %q %v", fe.Path, err, inv.Details)
				}
			}
		})
	}
}

func TestParseRequestLimits(t *testing.T) {
	// A body of exactly MaxRequestBytes is parsed; one byte more is refused
	// before any decoding.
	pad := func(n int) []byte {
		body := `{"scope":"tenant:acme"}`
		return []byte(body + strings.Repeat(" ", n-len(body)))
	}
	if _, err := events.ParseRequest(events.OpBalance, pad(events.MaxRequestBytes)); err != nil {
		t.Errorf("a body of exactly %d bytes: %v", events.MaxRequestBytes, err)
	}
	_, err := events.ParseRequest(events.OpBalance, pad(events.MaxRequestBytes+1))
	if !errors.Is(err, events.ErrTooLarge) {
		t.Errorf("a body of %d bytes: %v, want ErrTooLarge", events.MaxRequestBytes+1, err)
	}
	// Even if it is not JSON at all, or for an unknown op.
	_, err = events.ParseRequest(events.Op("nope"), make([]byte, 100<<10))
	if !errors.Is(err, events.ErrTooLarge) {
		t.Errorf("large body to an unknown op: %v, want ErrTooLarge", err)
	}
	wantErr(t, err, "65536 bytes")

	for _, op := range []events.Op{"", "Reserve", "reserve ", "budget_set", "hold"} {
		_, err := events.ParseRequest(op, []byte(`{}`))
		if !errors.Is(err, events.ErrUnknownOp) {
			t.Errorf("op %q: %v, want ErrUnknownOp", op, err)
		}
		wantErr(t, err, fmt.Sprintf("unknown operation %q (one of reserve commit", op))
	}
}

func TestOps(t *testing.T) {
	mutating := map[events.Op]bool{
		events.OpReserve: true, events.OpCommit: true, events.OpRelease: true, events.OpExtend: true,
		events.OpCharge: true, events.OpBudgetSet: true, events.OpBudgetDelete: true, events.OpBudgetAdjust: true,
	}
	if len(events.Ops) != 13 {
		t.Errorf("%d ops, DESIGN §3 lists 13", len(events.Ops))
	}
	for _, op := range events.Ops {
		if !op.Valid() {
			t.Errorf("%s not Valid", op)
		}
		if op.Mutating() != mutating[op] {
			t.Errorf("%s.Mutating() = %v", op, op.Mutating())
		}
		// A mutating request without its key is refused; the others do
		// not need one.
		var body map[string]any
		if err := json.Unmarshal([]byte(validBodies[op]), &body); err != nil {
			t.Fatal(err)
		}
		delete(body, "idempotency_key")
		b, _ := json.Marshal(body)
		_, err := events.ParseRequest(op, b)
		switch {
		case mutating[op] && (err == nil || err.Error() != "idempotency_key: empty"):
			t.Errorf("%s without a key: %v, want idempotency_key: empty", op, err)
		case !mutating[op] && err != nil:
			t.Errorf("%s without a key: %v", op, err)
		}
	}
	if events.Op("hold").Valid() {
		t.Error("unknown op Valid")
	}
	for _, p := range []events.Priority{"critical", "high", "normal", "low", "bulk"} {
		if !p.Valid() {
			t.Errorf("priority %s not Valid", p)
		}
	}
	if events.Priority("urgent").Valid() || events.Priority("").Valid() {
		t.Error("unknown priority Valid")
	}
	for _, p := range []events.Period{"none", "hourly", "daily", "weekly", "monthly", "yearly"} {
		if !p.Valid() {
			t.Errorf("period %s not Valid", p)
		}
	}
	if events.Period("quarterly").Valid() {
		t.Error("unknown period Valid")
	}
}

func TestLoadLocation(t *testing.T) {
	a, err := events.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := events.LoadLocation("Europe/Paris")
	if a != b {
		t.Error("LoadLocation does not cache")
	}
	if l, err := events.LoadLocation("UTC"); err != nil || l.String() != "UTC" {
		t.Errorf("UTC: %v %v", l, err)
	}
	for _, name := range []string{"", "Local", "Nowhere/City", "/etc/localtime"} {
		if _, err := events.LoadLocation(name); err == nil {
			t.Errorf("LoadLocation(%q) succeeded", name)
		}
	}
}

func units(n int) events.Amounts {
	m := events.Amounts{}
	for i := range n {
		m[fmt.Sprintf("u%02d", i)] = amt("1")
	}
	return m
}

func unitsJSON(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf(`"u%02d":"1"`, i)
	}
	return "{" + strings.Join(s, ",") + "}"
}

func labels(n int) events.Labels {
	m := events.Labels{}
	for i := range n {
		m[fmt.Sprintf("l%02d", i)] = "v"
	}
	return m
}

func labelsJSON(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf(`"l%02d":"v"`, i)
	}
	return "{" + strings.Join(s, ",") + "}"
}

func thresholdsJSON(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf(`"0.%02d"`, i+1)
	}
	return "[" + strings.Join(s, ",") + "]"
}
