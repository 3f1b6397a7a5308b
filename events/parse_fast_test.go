package events

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The fast request decoder (parse_fast.go) is checked against DecodeStrict
// differentially: whatever it accepts, the strict path accepts as an equal
// value, and ParseRequest answers exactly as the strict path alone would.

// fastOps are the operations the fast decoder covers.
var fastOps = []Op{OpReserve, OpDecide, OpCommit, OpRelease, OpExtend, OpCharge}

// amountCmp compares amounts through their API (the representation is
// another file's business). Nil and empty maps and slices stay distinct:
// validation tells them apart.
var amountCmp = cmp.Comparer(func(a, b Amount) bool { return a.Cmp(b) == 0 && a.String() == b.String() })

// newHotRequest returns a zero request of op's type, as ParseRequest makes it.
func newHotRequest(op Op) any {
	switch op {
	case OpReserve, OpDecide:
		return &ReserveRequest{}
	case OpCommit:
		return &CommitRequest{}
	case OpRelease:
		return &ReleaseRequest{}
	case OpExtend:
		return &ExtendRequest{}
	case OpCharge:
		return &ChargeRequest{}
	}
	panic("not a hot op: " + string(op))
}

// parseStrictOnly is ParseRequest for op without the fast path.
func parseStrictOnly(op Op, data []byte) (any, error) {
	if len(data) > MaxRequestBytes {
		return nil, ErrTooLarge
	}
	req := newHotRequest(op)
	if err := DecodeStrict(data, req); err != nil {
		return nil, err
	}
	var err error
	switch r := req.(type) {
	case *ReserveRequest:
		err = r.Validate(op == OpReserve)
	case *CommitRequest:
		err = r.Validate()
	case *ReleaseRequest:
		err = r.Validate()
	case *ExtendRequest:
		err = r.Validate()
	case *ChargeRequest:
		err = r.Validate()
	}
	if err != nil {
		return nil, err
	}
	return req, nil
}

// checkFastAgrees fails t if the fast decoder accepts data when the strict
// one does not, or yields another value, or touches its target when it
// declines; or if ParseRequest answers otherwise than the strict path. It
// reports whether the fast decoder accepted.
func checkFastAgrees(t *testing.T, op Op, data []byte) bool {
	t.Helper()
	fast := newHotRequest(op)
	accepted := decodeRequestFast(data, fast)
	strict := newHotRequest(op)
	strictErr := DecodeStrict(data, strict)
	switch {
	case accepted && strictErr != nil:
		t.Fatalf("%s %q: fast path accepted %+v, strict path says %v", op, data, fast, strictErr)
	case accepted:
		if diff := cmp.Diff(strict, fast, amountCmp); diff != "" {
			t.Fatalf("%s %q: fast path differs from strict (-strict +fast):\n%s", op, data, diff)
		}
	default:
		if diff := cmp.Diff(newHotRequest(op), fast, amountCmp); diff != "" {
			t.Fatalf("%s %q: fast path declined but changed its target:\n%s", op, data, diff)
		}
	}

	got, gotErr := ParseRequest(op, data)
	want, wantErr := parseStrictOnly(op, data)
	if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
		t.Fatalf("%s %q: ParseRequest error %v, strict path %v", op, data, gotErr, wantErr)
	}
	if diff := cmp.Diff(want, got, amountCmp); diff != "" {
		t.Fatalf("%s %q: ParseRequest differs from strict (-strict +got):\n%s", op, data, diff)
	}
	return accepted
}

// sdkBody is what client.Do sends: json.Marshal of the request.
func sdkBody(t testing.TB, req any) string {
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const (
	fastRID   = "01JDQ7Z5N3W8K2V6X9Y4T0R1PQ"
	fastScope = "tenant:acme/workflow:code-review/run:r-42"
)

func int64p(v int64) *int64          { return &v }
func priorityp(p Priority) *Priority { return &p }

// commonRequests are well-formed requests as the SDK, the CLI and the
// benchmark load send them, and as DESIGN §3 spells them.
func commonRequests(t testing.TB) []struct {
	name string
	op   Op
	body string
} {
	usd := Amounts{"USD": MustAmount("0.40"), "tokens": MustAmount("12000")}
	return []struct {
		name string
		op   Op
		body string
	}{
		// DESIGN §3.
		{"design reserve", OpReserve, `{"idempotency_key":"k2","scope":"tenant:acme/workflow:code-review/run:r-42",
             "amounts":{"USD":"0.40","tokens":"12000"},"priority":"normal","ttl_ms":60000,
             "labels":{"model":"claude-opus-4"}}`},
		{"design commit", OpCommit, `{"idempotency_key":"k3","reservation_id":"01JDQ7Z5N3W8K2V6X9Y4T0R1PQ","actual":{"USD":"0.37","tokens":"10500"}}`},
		{"design release", OpRelease, `{"idempotency_key":"k4","reservation_id":"01JDQ7Z5N3W8K2V6X9Y4T0R1PQ"}`},
		{"design extend", OpExtend, `{"idempotency_key":"k5","reservation_id":"01JDQ7Z5N3W8K2V6X9Y4T0R1PQ","ttl_ms":30000}`},
		{"design charge", OpCharge, `{"idempotency_key":"k6","scope":"tenant:acme/workflow:search","amounts":{"search_calls":"3"},"labels":{"tool":"web"}}`},
		{"design decide", OpDecide, `{"scope":"tenant:acme/workflow:code-review/run:r-42","amounts":{"USD":"0.40"}}`},

		// bench/tally.go: reserveBody, commitBody, releaseBody.
		{"bench reserve", OpReserve, `{"idempotency_key":"b7f3-12-4-r","scope":"tenant:t3/workflow:agents/run:a12","amounts":{"USD":"0.42","tokens":"12000"},"labels":{"model":"bench"}}`},
		{"bench decide", OpDecide, `{"scope":"tenant:t3/workflow:agents/run:a12","amounts":{"USD":"0.42","tokens":"12000"},"labels":{"model":"bench"}}`},
		{"bench commit", OpCommit, `{"idempotency_key":"b7f3-12-4-c","reservation_id":"01JDQ7Z5N3W8K2V6X9Y4T0R1PQ","actual":{"USD":"0.37","tokens":"10500"}}`},
		{"bench release", OpRelease, `{"idempotency_key":"b7f3-12-4-x","reservation_id":"01JDQ7Z5N3W8K2V6X9Y4T0R1PQ"}`},

		// client: json.Marshal of the request (Execute, the CLI's flags).
		{"sdk execute reserve", OpReserve, sdkBody(t, ReserveRequest{IdempotencyKey: "01JDQ7Z5N3W8K2V6X9Y4T0R1PQ-r", Scope: fastScope, Amounts: usd})},
		{"sdk cli reserve", OpReserve, sdkBody(t, ReserveRequest{IdempotencyKey: "01JDQ7Z5N3W8K2V6X9Y4T0R1PQ", Scope: fastScope, Amounts: usd,
			Priority: priorityp(PriorityHigh), TTLMS: int64p(90000), Labels: Labels{"model": "claude-opus-4", "agent.name": "reviewer"}})},
		{"sdk cli reserve options", OpReserve, sdkBody(t, ReserveRequest{IdempotencyKey: "k", Scope: fastScope,
			Options:  Options{{Label: "opus", Amounts: usd}, {Label: "haiku", Amounts: Amounts{"USD": MustAmount("0.05")}}, {Amounts: Amounts{"USD": MustAmount("0.000000000000000001")}}},
			Priority: priorityp(PriorityBulk), TTLMS: int64p(1000)})},
		{"sdk cli decide", OpDecide, sdkBody(t, ReserveRequest{Scope: fastScope, Amounts: usd, Priority: priorityp(PriorityNormal), TTLMS: int64p(60000)})},
		{"sdk execute commit", OpCommit, sdkBody(t, CommitRequest{IdempotencyKey: "01JDQ7Z5N3W8K2V6X9Y4T0R1PQ-c", ReservationID: fastRID,
			Actual: Amounts{"USD": MustAmount("0.37")}, Labels: Labels{"model": "claude-opus-4"}})},
		{"sdk commit nothing spent", OpCommit, sdkBody(t, CommitRequest{IdempotencyKey: "k", ReservationID: fastRID, Actual: Amounts{"USD": Zero}})},
		{"sdk execute release", OpRelease, sdkBody(t, ReleaseRequest{IdempotencyKey: "01JDQ7Z5N3W8K2V6X9Y4T0R1PQ-x", ReservationID: fastRID})},
		{"sdk extend", OpExtend, sdkBody(t, ExtendRequest{IdempotencyKey: "k", ReservationID: fastRID, TTLMS: int64p(86400000)})},
		{"sdk charge", OpCharge, sdkBody(t, ChargeRequest{IdempotencyKey: "k", Scope: fastScope, Amounts: Amounts{"USD": MustAmount("7.5")}})},
		{"sdk charge labels", OpCharge, sdkBody(t, ChargeRequest{IdempotencyKey: "k", Scope: fastScope, Amounts: usd, Labels: Labels{"tool": "web"}})},

		// By hand (nats req): any member order, white space, UTF-8.
		{"pretty reserve", OpReserve, "{\n  \"labels\": { \"model\" : \"claude\" },\n\t\"ttl_ms\": 5000,\r\n  \"amounts\": {\"tokens\": \"1\", \"USD\": \"0.1\"},\n  \"scope\": \"tenant:acme\",\n  \"idempotency_key\": \"k\"\n}\n"},
		{"utf-8 label", OpCharge, `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"1"},"labels":{"user":"Zoë 😀"}}`},
		{"max units", OpCommit, `{"idempotency_key":"k","reservation_id":"r","actual":{"a":"1","b":"1","c":"1","d":"1","e":"1","f":"1","g":"1","h":"1","i":"1","j":"1","k":"1","l":"1","m":"1","n":"1","o":"1","p":"1"}}`},
	}
}

// The common requests take the fast path (it is not dead code) and agree
// with the strict one.
func TestParseFastAcceptsCommonRequests(t *testing.T) {
	for _, tt := range commonRequests(t) {
		t.Run(tt.name, func(t *testing.T) {
			if !checkFastAgrees(t, tt.op, []byte(tt.body)) {
				t.Fatalf("fast path declined %s", tt.body)
			}
			if _, err := ParseRequest(tt.op, []byte(tt.body)); err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
		})
	}
}

// Inputs the fast path must decline: the strict path rejects them, or
// accepts them in a way the fast path does not mirror (escapes, wider
// white space).
func TestParseFastDeclines(t *testing.T) {
	const pre = `{"idempotency_key":"k","scope":"tenant:acme",`
	tests := []struct {
		name string
		op   Op
		body string
	}{
		{"unknown field", OpReserve, pre + `"amounts":{"USD":"1"},"amount":{"USD":"1"}}`},
		{"wrong case", OpReserve, pre + `"Amounts":{"USD":"1"}}`},
		{"duplicate field", OpReserve, pre + `"amounts":{"USD":"1"},"scope":"tenant:b"}`},
		{"duplicate unit", OpReserve, pre + `"amounts":{"USD":"1","USD":"2"}}`},
		{"duplicate label", OpCharge, pre + `"amounts":{"USD":"1"},"labels":{"a":"x","a":"y"}}`},
		{"duplicate option field", OpReserve, pre + `"options":[{"label":"a","label":"b","amounts":{"USD":"1"}}]}`},
		{"null field", OpReserve, pre + `"amounts":{"USD":"1"},"priority":null}`},
		{"null amount", OpReserve, pre + `"amounts":{"USD":null}}`},
		{"null label", OpReserve, pre + `"amounts":{"USD":"1"},"labels":{"model":null}}`},
		{"null option", OpReserve, pre + `"options":[null]}`},
		{"null ttl", OpExtend, `{"idempotency_key":"k","reservation_id":"r","ttl_ms":null}`},
		{"number amount", OpReserve, pre + `"amounts":{"USD":0.4}}`},
		{"negative amount", OpReserve, pre + `"amounts":{"USD":"-1"}}`},
		{"exponent amount", OpCharge, pre + `"amounts":{"USD":"1e3"}}`},
		{"19 fraction digits", OpCharge, pre + `"amounts":{"USD":"0.0000000000000000001"}}`},
		{"bad unit", OpCharge, pre + `"amounts":{"1USD":"1"}}`},
		{"too many units", OpCommit, `{"idempotency_key":"k","reservation_id":"r","actual":{"a":"1","b":"1","c":"1","d":"1","e":"1","f":"1","g":"1","h":"1","i":"1","j":"1","k":"1","l":"1","m":"1","n":"1","o":"1","p":"1","q":"1"}}`},
		{"string ttl", OpExtend, `{"idempotency_key":"k","reservation_id":"r","ttl_ms":"30000"}`},
		{"float ttl", OpExtend, `{"idempotency_key":"k","reservation_id":"r","ttl_ms":30000.0}`},
		{"exponent ttl", OpExtend, `{"idempotency_key":"k","reservation_id":"r","ttl_ms":3e4}`},
		{"negative ttl", OpReserve, pre + `"amounts":{"USD":"1"},"ttl_ms":-1}`},
		{"leading zero ttl", OpReserve, pre + `"amounts":{"USD":"1"},"ttl_ms":030000}`},
		{"huge ttl", OpReserve, pre + `"amounts":{"USD":"1"},"ttl_ms":99999999999999999999}`},
		{"number key", OpRelease, `{"idempotency_key":1,"reservation_id":"r"}`},
		{"number priority", OpReserve, pre + `"amounts":{"USD":"1"},"priority":1}`},
		{"object labels value", OpCharge, pre + `"amounts":{"USD":"1"},"labels":{"a":{}}}`},
		{"array amounts", OpCharge, pre + `"amounts":["1"]}`},
		{"object options", OpReserve, pre + `"options":{"amounts":{"USD":"1"}}}`},
		{"unknown option field", OpReserve, pre + `"options":[{"amount":{"USD":"1"}}]}`},
		{"escaped key", OpRelease, `{"idempotency_key":"k","reservation_\u0069d":"r"}`},
		{"escaped value", OpCharge, pre + `"amounts":{"USD":"1"},"labels":{"a":"\u0026"}}`},
		{"escaped amount", OpCharge, pre + `"amounts":{"USD":"\u0031"}}`},
		{"invalid utf-8", OpCharge, pre + `"amounts":{"USD":"1"},"labels":{"a":"` + "\xff" + `"}}`},
		{"control character", OpCharge, pre + `"amounts":{"USD":"1"},"labels":{"a":"` + "\t" + `"}}`},
		{"trailing garbage", OpRelease, `{"idempotency_key":"k","reservation_id":"r"}x`},
		{"trailing brace", OpRelease, `{"idempotency_key":"k","reservation_id":"r"}}`},
		{"two objects", OpRelease, `{"idempotency_key":"k","reservation_id":"r"} {}`},
		{"vertical tab", OpRelease, "\v" + `{"idempotency_key":"k","reservation_id":"r"}`},
		{"no-break space", OpRelease, `{"idempotency_key":"k","reservation_id":"r"}` + "\u00a0"},
		{"trailing comma", OpRelease, `{"idempotency_key":"k","reservation_id":"r",}`},
		{"truncated", OpRelease, `{"idempotency_key":"k","reservation_id":"r"`},
		{"not an object", OpRelease, `["k","r"]`},
		{"null document", OpRelease, `null`},
		{"empty", OpRelease, ``},
		{"too many options", OpReserve, pre + `"options":[` + strings.Repeat(`{"amounts":{"USD":"1"}},`, MaxOptions) + `{"amounts":{"USD":"1"}}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if checkFastAgrees(t, tt.op, []byte(tt.body)) {
				t.Fatalf("fast path accepted %s", tt.body)
			}
		})
	}
}

// Validation runs after the fast path as after the strict one: requests
// that decode but are invalid get the strict path's message.
func TestParseFastValidates(t *testing.T) {
	tests := []struct {
		op      Op
		body    string
		message string
	}{
		{OpReserve, `{"idempotency_key":"k","scope":"tenant:acme","amounts":{}}`, "amounts: at least one unit is required"},
		{OpReserve, `{"scope":"tenant:acme","amounts":{"USD":"1"}}`, "idempotency_key: empty"},
		{OpReserve, `{"idempotency_key":"k","scope":"tenant:acme","options":[]}`, "options: 1 to 8 options are required"},
		{OpReserve, `{"idempotency_key":"k","scope":"tenant:acme","options":[{}]}`, "options[0].amounts: at least one unit is required"},
		{OpReserve, `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"1"},"options":[{"amounts":{"USD":"1"}}]}`, "options: give either amounts or options, not both"},
		{OpReserve, `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"1"},"priority":"urgent"}`, `priority: unknown priority "urgent"`},
		{OpReserve, `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"1"},"ttl_ms":0}`, "ttl_ms: 0 out of range"},
		{OpReserve, `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"1"},"labels":{"a b":"x"}}`, "labels.a b: character ' ' not allowed"},
		{OpDecide, `{"scope":"tenant:*","amounts":{"USD":"1"}}`, "scope: "},
		{OpCommit, `{"idempotency_key":"k","reservation_id":"r"}`, "actual: required"},
		{OpExtend, `{"idempotency_key":"k","reservation_id":"r"}`, "ttl_ms: required"},
		{OpRelease, `{}`, "idempotency_key: empty"},
		{OpCharge, `{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"1"},"labels":{"":"x"}}`, "labels: label names are 1–64 characters"},
	}
	for _, tt := range tests {
		if !checkFastAgrees(t, tt.op, []byte(tt.body)) {
			t.Errorf("%s %s: fast path declined", tt.op, tt.body)
		}
		_, err := ParseRequest(tt.op, []byte(tt.body))
		if err == nil || !strings.Contains(err.Error(), tt.message) {
			t.Errorf("%s %s: error %v, want %q", tt.op, tt.body, err, tt.message)
		}
	}
}

// FuzzParseFast: whatever the fast request decoder accepts, the strict one
// accepts as an equal value; whatever the strict one rejects, the fast one
// declines; ParseRequest answers (value or message) as the strict path alone.
func FuzzParseFast(f *testing.F) {
	for _, tt := range commonRequests(f) {
		f.Add(uint8(indexOfOp(tt.op)), []byte(tt.body))
	}
	const pre = `{"idempotency_key":"k","scope":"tenant:acme",`
	for _, body := range []string{
		pre + `"amounts":{"USD":"1"},"priority":null}`,
		pre + `"amounts":{"USD":0.4}}`,
		pre + `"amounts":{"USD":"-1"},"labels":{"model":null}}`,
		pre + `"amounts":{"USD":"1"}}}`,
		pre + `"amounts":{"USD":"1","USD":"2"}}`,
		pre + `"amounts":{"USD":"1"},"scope":"tenant:b"}`,
		pre + `"amounts":{"USD":"1"},"labels":{"a.b":"<\u2028>","c":"\ud83d\ude00","d":"\ud800"}}`,
		pre + `"amounts":{"U\u0053D":"1"}}`,
		pre + `"amounts":{"USD":"1"},"ttl_ms":1e3}`,
		pre + `"amounts":{"USD":"1"},"ttl_ms":-0}`,
		pre + `"amounts":{"USD":"1"},"ttl_ms":9223372036854775808}`,
		pre + `"amounts":{"USD":"1"},"ttl_ms":999999999999999999}`,
		pre + `"options":[{"label":"a","amounts":{"USD":"0.40"}},{"amounts":{}}],"priority":"bulk"}`,
		pre + `"options":[],"labels":{}}`,
		pre + `"amounts":{"USD":"1"},"labels":{"a":"` + "\xed\xa0\x80" + `"}}`,
		pre + `"amounts":{"USD":"1"},"labels":{"a":"` + "\xef\xbf\xbd" + `"}}`,
		"\v" + pre + `"amounts":{"USD":"1"}}`,
		pre + `"amounts":{"USD":"1"}}` + "\u0085",
		`{}`, `[]`, ``, `null`, `{`, `{"":""}`, ` { } `,
	} {
		f.Add(uint8(0), []byte(body))
	}
	f.Add(uint8(indexOfOp(OpExtend)), []byte(`{"idempotency_key":"k","reservation_id":"r","ttl_ms":30000.0}`))
	f.Add(uint8(indexOfOp(OpCommit)), []byte(`{"idempotency_key":"k","reservation_id":"r","actual":{}}`))
	f.Add(uint8(indexOfOp(OpRelease)), []byte(`{"idempotency_key":"k","reservation_id":"r","actual":{}}`))

	f.Fuzz(func(t *testing.T, opIndex uint8, data []byte) {
		checkFastAgrees(t, fastOps[int(opIndex)%len(fastOps)], data)
	})
}

func indexOfOp(op Op) int {
	for i, o := range fastOps {
		if o == op {
			return i
		}
	}
	panic("not a hot op: " + string(op))
}

// BenchmarkParseRequestHot measures ParseRequest (fast path, falling back
// to strict) and the strict path alone on typical reserve and commit bodies.
func BenchmarkParseRequestHot(b *testing.B) {
	bodies := []struct {
		op   Op
		body string
	}{
		{OpReserve, `{"idempotency_key":"b7f3-12-4-r","scope":"tenant:t3/workflow:agents/run:a12","amounts":{"USD":"0.42","tokens":"12000"},"priority":"normal","ttl_ms":60000,"labels":{"model":"claude-opus-4"}}`},
		{OpCommit, `{"idempotency_key":"b7f3-12-4-c","reservation_id":"01JDQ7Z5N3W8K2V6X9Y4T0R1PQ","actual":{"USD":"0.37","tokens":"10500"}}`},
	}
	for _, bb := range bodies {
		body := []byte(bb.body)
		b.Run(string(bb.op), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseRequest(bb.op, body); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(string(bb.op)+"-strict", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := parseStrictOnly(bb.op, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
