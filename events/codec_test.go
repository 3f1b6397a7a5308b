package events_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tallyledger/tally/events"
)

var (
	at0  = mustTime("2026-11-28T20:59:00.123456789Z")
	exp0 = mustTime("2026-11-28T21:00:00Z")
	end0 = mustTime("2026-12-01T00:00:00Z")
)

func mutation(key string) events.Mutation {
	return events.Mutation{IdempotencyKey: key, RequestHash: strings.Repeat("ab", 16)}
}

// instance is a budget instance view with two units, as reserve answers show them.
func instance(budget, pattern, scope string) events.InstanceView {
	return events.InstanceView{Budget: budget, Pattern: pattern, Scope: scope, Period: "2026-11",
		PeriodEnd: &end0, Mode: events.ModeEnforce,
		Units: events.UnitBalances{
			{Unit: "USD", UnitBalance: events.UnitBalance{Limit: amt("500"), Spent: amt("12.3"), Reserved: amt("0.84"), Remaining: signed("486.86")}},
			{Unit: "tokens", UnitBalance: events.UnitBalance{Limit: amt("1000000"), Spent: amt("1000500"), Reserved: amt("12000"), Remaining: signed("-12500")}},
		}}
}

// grantedData is a realistic reservation.granted: three instances (tenant,
// workflow, per-run pattern) of two units each.
func grantedData() *events.ReservationGranted {
	return &events.ReservationGranted{
		Mutation:      mutation("k2"),
		ReservationID: "01JDQ7Z5N3W8K2V6X9Y4T0R1PQ",
		Scope:         "tenant:acme/workflow:code-review/run:r-42",
		Amounts:       events.Amounts{"USD": amt("0.4"), "tokens": amt("12000")},
		Priority:      events.PriorityNormal,
		ExpiresAt:     exp0,
		Label:         "opus",
		Labels:        events.Labels{"model": "claude-opus-4"},
		Instances: []events.InstanceView{
			instance("monthly", "tenant:acme", "tenant:acme"),
			instance("workflow", "tenant:acme/workflow:code-review", "tenant:acme/workflow:code-review"),
			{Budget: "per-run", Pattern: "tenant:acme/workflow:code-review/run:*", Scope: "tenant:acme/workflow:code-review/run:r-42",
				Period: "none", Mode: events.ModeShadow, Units: events.UnitBalances{
					{Unit: "USD", UnitBalance: events.UnitBalance{Limit: amt("2"), Spent: amt("1.9"), Reserved: amt("0.4"), Remaining: signed("-0.3")}},
					{Unit: "tokens", UnitBalance: events.UnitBalance{Limit: amt("50000"), Spent: amt("0"), Reserved: amt("12000"), Remaining: signed("38000")}},
				}},
		},
		ShadowDenials: []events.ShadowDenial{{Budget: "per-run", Pattern: "tenant:acme/workflow:code-review/run:*",
			Scope: "tenant:acme/workflow:code-review/run:r-42", Period: "none", Unit: "USD",
			Requested: amt("0.4"), Available: amt("0.1"), Overage: amt("0.3")}},
	}
}

// sampleData has one realistic payload per event type.
func sampleData() []events.Data {
	inst := instance("monthly", "tenant:acme", "tenant:acme")
	overLimit := []events.OverLimit{{Budget: "monthly", Pattern: "tenant:acme", Scope: "tenant:acme", Period: "2026-11", Unit: "USD", Over: amt("0.07")}}
	return []events.Data{
		&events.BudgetSet{Mutation: mutation("k1"), Budget: events.Budget{Scope: "tenant:acme/workflow:code-review/run:*", Name: "per-run",
			Limits: events.Amounts{"USD": amt("2")}, Period: events.PeriodMonthly, Timezone: "Europe/Paris", Mode: events.ModeShadow,
			PriorityFloors:  map[events.Priority]events.Amount{"high": amt("0.1"), "bulk": amt("0.7")},
			AlertThresholds: events.DefaultAlertThresholds}},
		&events.BudgetDeleted{Mutation: mutation("k7"), Scope: "tenant:acme", Name: "monthly"},
		&events.BudgetAdjusted{Mutation: mutation("k8"), Budget: "monthly", Pattern: "tenant:acme", Scope: "tenant:acme", Period: "2026-11",
			Delta: events.SignedAmounts{"USD": signed("-50"), "tokens": signed("1000")}, Reason: "refund", Instance: inst},
		grantedData(),
		&events.ReservationDenied{Mutation: mutation("k9"), Scope: "tenant:acme/run:r1",
			Options:  events.Options{{Label: "opus", Amounts: events.Amounts{"USD": amt("0.4")}}, {Amounts: events.Amounts{"USD": amt("0.02")}}},
			Priority: events.PriorityLow, Labels: events.Labels{"model": "m"},
			Denial: events.Denial{Code: events.DenialPriorityFloor, Budget: "monthly", Pattern: "tenant:acme", Scope: "tenant:acme",
				Period: "2026-11", Unit: "USD", Requested: amt("0.4"), Available: amt("0.1")},
			Instances: []events.InstanceView{inst}},
		&events.ReservationCommitted{Mutation: mutation("k3"), ReservationID: "r1", Scope: "tenant:acme/run:r1",
			Charged: events.Amounts{"USD": amt("0.47")}, Released: events.Amounts{}, Overage: events.Amounts{"USD": amt("0.07")},
			Late: true, Labels: events.Labels{"model": "m"}, OverLimit: overLimit, Instances: []events.InstanceView{inst}},
		&events.ReservationReleased{Mutation: mutation("k4"), ReservationID: "r1", Scope: "tenant:acme/run:r1",
			Released: events.Amounts{"USD": amt("0.4")}, Instances: []events.InstanceView{inst}},
		&events.ReservationExtended{Mutation: mutation("k5"), ReservationID: "r1", Scope: "tenant:acme/run:r1", ExpiresAt: exp0.Add(time.Minute)},
		&events.ReservationExpired{ReservationID: "r1", Scope: "tenant:acme/run:r1", Released: events.Amounts{"USD": amt("0.4")},
			Instances: []events.InstanceView{inst}},
		&events.UsageCharged{Mutation: mutation("k6"), Scope: "tenant:acme/workflow:search", Amounts: events.Amounts{"search_calls": amt("3")},
			Labels: events.Labels{"tool": "web"}, OverLimit: overLimit, Instances: []events.InstanceView{inst}},
		&events.ThresholdCrossed{Budget: "monthly", Pattern: "tenant:acme", Scope: "tenant:acme", Period: "2026-11", Mode: events.ModeEnforce,
			Unit: "USD", Threshold: "0.8", Limit: amt("500"), Spent: amt("390"), Reserved: amt("12.5")},
		&events.PartitionClaimed{Owner: "enforcer-1", Epoch: 7},
	}
}

func sampleEvent(d events.Data) *events.Event {
	return &events.Event{V: events.Version, ID: "01JDQ7Z5N3W8K2V6X9Y4T0R1PQ", Type: d.EventType(), Partition: 3,
		At: at0, Root: "tenant:acme", Prev: events.Hash([]byte("previous")), Data: d}
}

func TestEventRoundTrip(t *testing.T) {
	seen := map[events.Type]bool{}
	for _, d := range sampleData() {
		ev := sampleEvent(d)
		t.Run(string(ev.Type), func(t *testing.T) {
			b, err := events.Encode(ev)
			if err != nil {
				t.Fatal(err)
			}
			got, err := events.Decode(b)
			if err != nil {
				t.Fatalf("Decode(%s): %v", b, err)
			}
			if diff := cmp.Diff(*ev, got, cmpOpts); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			again, err := events.Encode(&got)
			if err != nil || !bytes.Equal(b, again) {
				t.Errorf("re-encoding differs:\n%s\n%s (%v)", b, again, err)
			}
			// Pinned envelope fields (DESIGN §4).
			var env map[string]json.RawMessage
			if err := json.Unmarshal(b, &env); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"v", "id", "type", "partition", "at", "root", "prev", "data"} {
				if _, ok := env[f]; !ok {
					t.Errorf("envelope lacks %q", f)
				}
			}
			if len(env) != 8 {
				t.Errorf("envelope has %d fields: %s", len(env), b)
			}
			if string(env["at"]) != `"2026-11-28T20:59:00.123456789Z"` || string(env["v"]) != "1" {
				t.Errorf("at = %s, v = %s", env["at"], env["v"])
			}
			if _, isMutation := events.MutationOf(got.Data); isMutation {
				var data map[string]json.RawMessage
				_ = json.Unmarshal(env["data"], &data)
				if _, ok := data["idempotency_key"]; !ok {
					t.Errorf("mutating event without idempotency_key: %s", env["data"])
				}
			}
		})
		seen[ev.Type] = true
	}
	for _, typ := range events.Types {
		if !seen[typ] {
			t.Errorf("no sample for %s", typ)
		}
	}
	if len(events.Types) != 12 {
		t.Errorf("%d types, DESIGN §4 lists 12", len(events.Types))
	}
}

func TestEncodeNormalisesTime(t *testing.T) {
	ev := sampleEvent(&events.PartitionClaimed{Owner: "o", Epoch: 1})
	ev.At = at0.In(time.FixedZone("CET", 3600))
	b, err := events.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"at":"2026-11-28T20:59:00.123456789Z"`)) {
		t.Errorf("at not rendered in UTC: %s", b)
	}
	if ev.At.Location().String() != "CET" {
		t.Error("Encode modified its argument")
	}
}

func TestEncodeRejectsMismatch(t *testing.T) {
	ev := sampleEvent(&events.PartitionClaimed{Owner: "o"})
	ev.Type = events.TypeBudgetSet
	_, err := events.Encode(ev)
	wantErr(t, err, `data of "partition.claimed" does not match type "budget.set"`)
	ev.Data = nil
	_, err = events.Encode(ev)
	wantErr(t, err, `data of "" does not match`)
}

func TestMutationOf(t *testing.T) {
	for _, d := range sampleData() {
		m, ok := events.MutationOf(d)
		want := d.EventType() != events.TypeReservationExpired && d.EventType() != events.TypeThresholdCrossed &&
			d.EventType() != events.TypePartitionClaimed
		if ok != want {
			t.Errorf("MutationOf(%s) ok = %v", d.EventType(), ok)
		}
		if ok && m.IdempotencyKey == "" {
			t.Errorf("MutationOf(%s) lost the key", d.EventType())
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good, err := events.Encode(sampleEvent(&events.PartitionClaimed{Owner: "o", Epoch: 1}))
	if err != nil {
		t.Fatal(err)
	}
	edit := func(from, to string) string {
		if !bytes.Contains(good, []byte(from)) {
			t.Fatalf("%q not in %s", from, good)
		}
		return strings.Replace(string(good), from, to, 1)
	}
	tests := []struct {
		name    string
		in      string
		want    string
		frag    bool
		version bool
	}{
		{name: "empty", in: "", want: "event: empty document, expected a JSON object"},
		{name: "not an object", in: "[1]", want: "event: expected a JSON object, got an array"},
		{name: "truncated", in: string(good[:len(good)-3]), want: "event: malformed JSON", frag: true},
		{name: "trailing", in: string(good) + "}", want: "event: trailing data after the JSON object"},
		{name: "unknown envelope field", in: edit(`{"v":1,`, `{"v":1,"w":2,`), want: "event: w: unknown field"},
		{name: "duplicate envelope field", in: edit(`{"v":1,`, `{"v":1,"v":1,`), want: "event: v: duplicate field"},
		{name: "unknown data field", in: edit(`"epoch":1`, `"epoch":1,"term":2`), want: `event 01JDQ7Z5N3W8K2V6X9Y4T0R1PQ: data: json: unknown field "term"`},
		{name: "data of wrong shape", in: edit(`"epoch":1`, `"epoch":"1"`), want: "data: json: cannot unmarshal string", frag: true},
		{name: "trailing data in data", in: edit(`"epoch":1}`, `"epoch":1} `), want: ""},
		{name: "unknown type", in: edit(`"partition.claimed"`, `"partition.released"`),
			want: `event 01JDQ7Z5N3W8K2V6X9Y4T0R1PQ: unknown event type "partition.released"`},
		{name: "empty type", in: edit(`"type":"partition.claimed",`, ``), want: `unknown event type ""`, frag: true},
		{name: "unknown version", in: edit(`"v":1`, `"v":2`), version: true,
			want: "event 01JDQ7Z5N3W8K2V6X9Y4T0R1PQ: unsupported event version 2 (this build reads 1)"},
		{name: "version zero", in: edit(`"v":1`, `"v":0`), version: true, want: "unsupported event version 0", frag: true},
		{name: "missing version", in: edit(`"v":1,`, ``), want: "event: v: missing version"},
		{name: "null version", in: edit(`"v":1`, `"v":null`), want: "event: v: null is not allowed; omit the field instead"},
		{name: "string version", in: edit(`"v":1`, `"v":"1"`), want: "event: v: expected an integer, got a string"},
		{name: "float version", in: edit(`"v":1`, `"v":1.0`), want: "event: v: expected an integer, got number 1.0"},
		{name: "missing data", in: edit(`,"data":{"owner":"o","epoch":1}`, ``), want: "event 01JDQ7Z5N3W8K2V6X9Y4T0R1PQ: data: missing"},
		{name: "null data", in: edit(`{"owner":"o","epoch":1}`, `null`), want: "event: data: null is not allowed", frag: true},
		{name: "bad at", in: edit(`"2026-11-28T20:59:00.123456789Z"`, `"yesterday"`), want: "event: at:", frag: true},
		{name: "at with an offset", in: edit(`"2026-11-28T20:59:00.123456789Z"`, `"2026-11-28T21:59:00.123456789+01:00"`),
			want: "event 01JDQ7Z5N3W8K2V6X9Y4T0R1PQ: at: 2026-11-28T21:59:00.123456789+01:00 is not in UTC"},
		{name: "at that cannot be re-encoded", in: edit(`"2026-11-28T20:59:00.123456789Z"`, `"0000-01-01T00:30:00+01:00"`),
			want: "is not in UTC", frag: true},
		{name: "at with offset zero", in: edit(`"2026-11-28T20:59:00.123456789Z"`, `"2026-11-28T20:59:00.123456789+00:00"`)},
		{name: "short prev", in: strings.Replace(string(good), events.Hash([]byte("previous")), "abc", 1),
			want: "prev: not a SHA-256 hex digest", frag: true},
		{name: "upper-case prev", in: strings.Replace(string(good), events.Hash([]byte("previous")), strings.ToUpper(events.Hash([]byte("previous"))), 1),
			want: "prev: not a SHA-256 hex digest", frag: true},
		{name: "non-hex prev", in: strings.Replace(string(good), events.Hash([]byte("previous")), strings.Repeat("g", 64), 1),
			want: "prev: not a SHA-256 hex digest", frag: true},
		{name: "amount as number", in: `{"v":1,"id":"x","type":"usage.charged","partition":0,"at":"2026-11-28T00:00:00Z","root":"tenant:a","prev":"",` +
			`"data":{"idempotency_key":"k","request_hash":"","scope":"tenant:a","amounts":{"USD":0.4},"instances":[]}}`,
			want: "amounts are decimal strings, not JSON number 0.4", frag: true},
		{name: "negative amount", in: `{"v":1,"id":"x","type":"usage.charged","partition":0,"at":"2026-11-28T00:00:00Z","root":"tenant:a","prev":"",` +
			`"data":{"idempotency_key":"k","request_hash":"","scope":"tenant:a","amounts":{"USD":"-1"},"instances":[]}}`,
			want: `negative amount "-1"`, frag: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := events.Decode([]byte(tt.in))
			if tt.want == "" {
				if err != nil {
					t.Errorf("Decode: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Decode(%s) = %+v, want an error", tt.in, ev)
			}
			if tt.frag {
				wantErr(t, err, tt.want)
			} else if err.Error() != tt.want {
				t.Errorf("error\n got %q\nwant %q", err, tt.want)
			}
			if errors.Is(err, events.ErrVersion) != tt.version {
				t.Errorf("errors.Is(%v, ErrVersion) = %v", err, !tt.version)
			}
		})
	}
}

func TestHash(t *testing.T) {
	hex64 := regexp.MustCompile(`^[0-9a-f]{64}$`)
	for _, msg := range [][]byte{nil, []byte(""), []byte("abc"), bytes.Repeat([]byte{0xff}, 1000)} {
		h := events.Hash(msg)
		sum := sha256.Sum256(msg)
		if h != hex.EncodeToString(sum[:]) || !hex64.MatchString(h) {
			t.Errorf("Hash(%q) = %q", msg, h)
		}
	}
	// The well-known digest of "abc".
	if got := events.Hash([]byte("abc")); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("Hash(abc) = %s", got)
	}

	// A chain: each event's prev is the hash of the previous stored bytes,
	// and every decoded prev verifies.
	prev := ""
	var stored [][]byte
	for i, d := range sampleData() {
		ev := sampleEvent(d)
		ev.Prev = prev
		b, err := events.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, b)
		prev = events.Hash(b)
		if i == 0 && !bytes.Contains(b, []byte(`"prev":""`)) {
			t.Errorf("first event's prev not empty: %s", b)
		}
	}
	for i := 1; i < len(stored); i++ {
		ev, err := events.Decode(stored[i])
		if err != nil {
			t.Fatal(err)
		}
		if ev.Prev != events.Hash(stored[i-1]) {
			t.Errorf("event %d: prev %s does not link", i, ev.Prev)
		}
	}
}

func TestRequestHash(t *testing.T) {
	hash := func(op events.Op, body string) string {
		t.Helper()
		req, err := events.ParseRequest(op, []byte(body))
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		return events.RequestHash(op, req)
	}
	base := `{"idempotency_key":"k","scope":"tenant:acme/run:r1","amounts":{"USD":"0.50","tokens":"100"}}`
	h := hash(events.OpReserve, base)
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(h) {
		t.Errorf("RequestHash = %q, want 32 lowercase hex digits", h)
	}
	same := map[string]string{
		"key order":       `{"amounts":{"tokens":"100","USD":"0.50"},"scope":"tenant:acme/run:r1","idempotency_key":"k"}`,
		"white space":     "{ \"idempotency_key\" : \"k\" ,\n\t\"scope\":\"tenant:acme/run:r1\",\"amounts\":{ \"USD\":\"0.50\", \"tokens\":\"100\" } }\n",
		"amount spelling": `{"idempotency_key":"k","scope":"tenant:acme/run:r1","amounts":{"USD":"0.5","tokens":"100.000"}}`,
		"string escapes":  `{"idempotency_key":"\u006b","scope":"tenant:acme/run:r1","amounts":{"USD":"0.5","tokens":"100"}}`,
	}
	for name, body := range same {
		if got := hash(events.OpReserve, body); got != h {
			t.Errorf("%s: hash %s, want %s", name, got, h)
		}
	}
	different := map[string]string{
		"explicit default priority": `{"idempotency_key":"k","scope":"tenant:acme/run:r1","amounts":{"USD":"0.5","tokens":"100"},"priority":"normal"}`,
		"explicit default ttl":      `{"idempotency_key":"k","scope":"tenant:acme/run:r1","amounts":{"USD":"0.5","tokens":"100"},"ttl_ms":60000}`,
		"other amount":              `{"idempotency_key":"k","scope":"tenant:acme/run:r1","amounts":{"USD":"0.51","tokens":"100"}}`,
		"other scope":               `{"idempotency_key":"k","scope":"tenant:acme/run:r2","amounts":{"USD":"0.5","tokens":"100"}}`,
		"other key":                 `{"idempotency_key":"k2","scope":"tenant:acme/run:r1","amounts":{"USD":"0.5","tokens":"100"}}`,
		"one option":                `{"idempotency_key":"k","scope":"tenant:acme/run:r1","options":[{"amounts":{"USD":"0.5","tokens":"100"}}]}`,
		"a label":                   `{"idempotency_key":"k","scope":"tenant:acme/run:r1","amounts":{"USD":"0.5","tokens":"100"},"labels":{"model":"m"}}`,
	}
	seen := map[string]string{h: "base"}
	for name, body := range different {
		got := hash(events.OpReserve, body)
		if other, dup := seen[got]; dup {
			t.Errorf("%s: same hash as %s", name, other)
		}
		seen[got] = name
	}
	// The operation is part of the fingerprint: a decide and a reserve of
	// the same body differ.
	if hash(events.OpDecide, base) == h {
		t.Error("reserve and decide of the same body hash equal")
	}
	// Budgets: an omitted period differs from an explicit "none".
	b1 := hash(events.OpBudgetSet, `{"idempotency_key":"k","scope":"tenant:a","name":"b","limits":{"USD":"1"}}`)
	b2 := hash(events.OpBudgetSet, `{"idempotency_key":"k","scope":"tenant:a","name":"b","limits":{"USD":"1"},"period":"none"}`)
	b3 := hash(events.OpBudgetSet, `{"limits":{"USD":"1.0"},"name":"b","scope":"tenant:a","idempotency_key":"k"}`)
	if b1 == b2 || b1 != b3 {
		t.Errorf("budget-set hashes: omitted %s, explicit %s, reordered %s", b1, b2, b3)
	}
}

func TestResultOf(t *testing.T) {
	ref := events.EventRef{Partition: 3, Seq: 18}
	for _, d := range sampleData() {
		ev := sampleEvent(d)
		res, ok := events.ResultOf(*ev, ref)
		_, mutation := events.MutationOf(d)
		if ok != mutation {
			t.Errorf("ResultOf(%s) ok = %v, want %v", ev.Type, ok, mutation)
		}
		if !ok {
			continue
		}
		b, err := json.Marshal(res)
		if err != nil {
			t.Fatalf("%s: %v", ev.Type, err)
		}
		if !bytes.Contains(b, []byte(`"event":{"partition":3,"seq":18}`)) {
			t.Errorf("%s answer lacks its event ref: %s", ev.Type, b)
		}
	}

	res, _ := events.ResultOf(*sampleEvent(grantedData()), ref)
	got := res.(events.ReserveResult)
	if got.Decision != events.DecisionGranted || got.ReservationID != "01JDQ7Z5N3W8K2V6X9Y4T0R1PQ" || !got.ExpiresAt.Equal(exp0) ||
		got.Label != "opus" || len(got.Instances) != 3 || len(got.ShadowDenials) != 1 {
		t.Errorf("granted answer = %+v", got)
	}
	// A grant without shadow denials answers [] rather than null.
	g := grantedData()
	g.ShadowDenials = nil
	res, _ = events.ResultOf(*sampleEvent(g), ref)
	b, _ := json.Marshal(res)
	if !bytes.Contains(b, []byte(`"shadow_denials":[]`)) || bytes.Contains(b, []byte(`"denial"`)) {
		t.Errorf("granted answer: %s", b)
	}

	denied := sampleData()[4].(*events.ReservationDenied)
	res, _ = events.ResultOf(*sampleEvent(denied), ref)
	b, _ = json.Marshal(res)
	for _, want := range []string{`"decision":"denied"`, `"label":"opus"`, `"shadow_denials":[]`,
		`"denial":{"code":"PRIORITY_FLOOR","budget":"monthly"`, `"requested":"0.4","available":"0.1"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("denied answer lacks %s: %s", want, b)
		}
	}
	if bytes.Contains(b, []byte(`"reservation_id"`)) || bytes.Contains(b, []byte(`"expires_at"`)) {
		t.Errorf("denied answer has a reservation: %s", b)
	}
	// A denial decoded from a stream without options (a corrupt or foreign
	// event) must not panic the answer path.
	denied.Options = nil
	if _, ok := events.ResultOf(*sampleEvent(denied), ref); !ok {
		t.Error("denied without options: no answer")
	}
}

func TestErrorAnswer(t *testing.T) {
	_, err := events.ParseRequest(events.OpReserve, []byte(`{"idempotency_key":"k","scope":"tenant:a","amounts":{"USD":"-1"}}`))
	inv := events.Invalid(err)
	b, _ := json.Marshal(events.Answer{Error: inv})
	want := `{"error":{"code":"INVALID_REQUEST","message":"amounts.USD: negative amount \"-1\"","details":{"field":"amounts.USD"}}}`
	if string(b) != want {
		t.Errorf("answer\n got %s\nwant %s", b, want)
	}
	var target *events.Error
	if !errors.As(error(inv), &target) || target.Code != events.CodeInvalidRequest {
		t.Error("errors.As(*Error) failed")
	}
	e := events.Errorf(events.CodeNotFound, "reservation %q", "r1")
	if e.Error() != `NOT_FOUND: reservation "r1"` {
		t.Errorf("Errorf = %q", e)
	}
	// An error without a field has no details.
	inv = events.Invalid(errors.New("bad"))
	if inv.Details != nil {
		t.Errorf("details = %v", inv.Details)
	}
}

// TestZeroDataRoundTrip: an event whose data has every field at its zero
// value (nil maps and slices included) still decodes: Encode never writes
// what Decode refuses, such as null for a set of amounts.
func TestZeroDataRoundTrip(t *testing.T) {
	zeros := []events.Data{&events.BudgetSet{}, &events.BudgetDeleted{}, &events.BudgetAdjusted{}, &events.ReservationGranted{},
		&events.ReservationDenied{}, &events.ReservationCommitted{}, &events.ReservationReleased{}, &events.ReservationExtended{},
		&events.ReservationExpired{}, &events.UsageCharged{}, &events.ThresholdCrossed{}, &events.PartitionClaimed{}}
	if len(zeros) != len(events.Types) {
		t.Fatalf("%d zero values for %d types", len(zeros), len(events.Types))
	}
	for _, d := range zeros {
		ev := &events.Event{V: events.Version, Type: d.EventType(), Data: d}
		b, err := events.Encode(ev)
		if err != nil {
			t.Fatalf("%s: %v", ev.Type, err)
		}
		got, err := events.Decode(b)
		if err != nil {
			t.Errorf("%s: Decode(%s): %v", ev.Type, b, err)
			continue
		}
		if diff := cmp.Diff(*ev, got, cmpOptsEmpty); diff != "" {
			t.Errorf("%s (-want +got):\n%s", ev.Type, diff)
		}
		if bytes.Contains(b, []byte(`"released":null`)) || bytes.Contains(b, []byte(`"amounts":null`)) {
			t.Errorf("%s: empty amounts encoded as null: %s", ev.Type, b)
		}
	}
	// The same holds inside answers: an empty set of amounts is {}.
	b, _ := json.Marshal(events.CommitResult{})
	if !bytes.Contains(b, []byte(`"charged":{},"released":{},"overage":{}`)) {
		t.Errorf("CommitResult{} = %s", b)
	}
}
