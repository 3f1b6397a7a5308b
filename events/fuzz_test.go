package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tallyledger/tally/events"
)

// fuzzOps are the operations FuzzParseRequest picks from by index: every
// real one and one that does not exist.
var fuzzOps = append(append([]events.Op{}, events.Ops...), "no-such-op")

// FuzzParseRequest: ParseRequest never panics; a request it accepts
// re-encodes to canonical bytes that parse again to an equal request, whose
// encoding is the same bytes (a fixed point) and whose RequestHash is the same.
func FuzzParseRequest(f *testing.F) {
	for i, op := range fuzzOps {
		if body, ok := validBodies[op]; ok {
			f.Add(uint8(i), []byte(body))
		}
	}
	for _, body := range []string{
		`{"idempotency_key":"k","scope":"tenant:acme/run:r1","options":[{"label":"a","amounts":{"USD":"0.40"}},{"amounts":{"USD":"0.000000000000000001"}}],"priority":"bulk","ttl_ms":1000}`,
		`{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":0.4}}`,
		`{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"-1"},"labels":{"model":null}}`,
		`{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"1"}}}`,
		`{"idempotency_key":"k","scope":"tenant:acme/run:*","amounts":{"USD":"1e3"}}`,
		`{"idempotency_key":"k","scope":"tenant:a","scope":"tenant:b","amounts":{"USD":"1"}}`,
		`{"idempotency_key":"k","scope":"tenant:acme","amounts":{"USD":"1","<&>":"2"},"labels":{"a.b":"<\u2028>"}}`,
		`[]`, ``, `null`, `{`, `{"":""}`,
	} {
		f.Add(uint8(0), []byte(body))
	}
	f.Add(uint8(8), []byte(`{"idempotency_key":"k1","scope":"tenant:acme","name":"b","limits":{"USD":"1"},"priority_floors":{},"alert_thresholds":[],"timezone":"America/New_York","period":"weekly","mode":"shadow"}`))
	f.Add(uint8(12), []byte(`{"idempotency_key":"k","scope":"tenant:a","name":"b","delta":{"USD":"-0"},"reason":"\u00e9"}`))

	f.Fuzz(func(t *testing.T, opIndex uint8, data []byte) {
		op := fuzzOps[int(opIndex)%len(fuzzOps)]
		req, err := events.ParseRequest(op, data)
		if err != nil {
			if req != nil {
				t.Fatalf("error %v with a request %+v", err, req)
			}
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			if !op.Valid() && !errors.Is(err, events.ErrUnknownOp) && !errors.Is(err, events.ErrTooLarge) {
				t.Fatalf("unknown op: %v", err)
			}
			return
		}
		if !op.Valid() {
			t.Fatalf("unknown op %q accepted", op)
		}
		canon, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("encoding %+v: %v", req, err)
		}
		again, err := events.ParseRequest(op, canon)
		if err != nil {
			t.Fatalf("canonical form %s of %q does not parse: %v", canon, data, err)
		}
		if diff := cmp.Diff(req, again, cmpOptsEmpty); diff != "" {
			t.Fatalf("canonical form %s parses to another request (-first +again):\n%s", canon, diff)
		}
		canon2, err := json.Marshal(again)
		if err != nil || !bytes.Equal(canon, canon2) {
			t.Fatalf("not a fixed point:\n%s\n%s (%v)", canon, canon2, err)
		}
		if events.RequestHash(op, req) != events.RequestHash(op, again) {
			t.Fatalf("RequestHash differs for %s", canon)
		}
	})
}

// FuzzDecodeEvent: Decode never panics; an event it accepts re-encodes,
// decodes again to an equal event and re-encodes to the same bytes; its
// answer (if it stands for one) renders.
func FuzzDecodeEvent(f *testing.F) {
	for _, d := range sampleData() {
		b, err := events.Encode(sampleEvent(d))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		`{"v":1,"id":"x","type":"partition.claimed","partition":0,"at":"0000-01-01T00:30:00+01:00","root":"r","prev":"","data":{"owner":"o","epoch":1}}`,
		`{"v":2,"id":"x","type":"partition.claimed","partition":0,"at":"2026-11-28T00:00:00Z","root":"r","prev":"","data":{}}`,
		`{"v":1,"id":"x","type":"reservation.denied","partition":0,"at":"2026-11-28T00:00:00Z","root":"r","prev":"","data":{}}`,
		`{"v":1,"id":"x","type":"usage.charged","partition":0,"at":"2026-11-28T00:00:00Z","root":"r","prev":"","data":{"amounts":{"USD":"1"},"instances":[{"units":{"USD":{"limit":"1","spent":"0","reserved":"0","remaining":"-1"}}}]}}`,
		`{"v":1,"type":"budget.set","data":{"budget":{"priority_floors":{"high":"0.1"},"alert_thresholds":["0.5"]}},"at":"2026-11-28T00:00:00Z"}`,
		`{"v":1}`, `{}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := events.Decode(data)
		if err != nil {
			return
		}
		canon, err := events.Encode(&ev)
		if err != nil {
			t.Fatalf("decoded event %+v does not encode: %v", ev, err)
		}
		again, err := events.Decode(canon)
		if err != nil {
			t.Fatalf("canonical form %s does not decode: %v", canon, err)
		}
		if diff := cmp.Diff(ev, again, cmpOptsEmpty); diff != "" {
			t.Fatalf("canonical form %s decodes to another event (-first +again):\n%s", canon, diff)
		}
		canon2, err := events.Encode(&again)
		if err != nil || !bytes.Equal(canon, canon2) {
			t.Fatalf("not a fixed point:\n%s\n%s (%v)", canon, canon2, err)
		}
		if events.Hash(canon) != events.Hash(canon2) {
			t.Fatal("hash of equal bytes differs")
		}
		if res, ok := events.ResultOf(ev, events.EventRef{Partition: 1, Seq: 2}); ok {
			if _, err := json.Marshal(res); err != nil {
				t.Fatalf("answer of %s does not render: %v", canon, err)
			}
		}
	})
}

// amountRE is the amount grammar of DESIGN §1, as an independent oracle.
var amountRE = regexp.MustCompile(`^(0|[1-9][0-9]*)(\.[0-9]{1,18})?$`)

// significant counts significant digits of a grammatical amount string the
// slow way.
func significant(s string) int {
	i, frac, _ := strings.Cut(s, ".")
	digits := strings.TrimLeft(i+strings.TrimRight(frac, "0"), "0")
	if digits == "" {
		return 1
	}
	if strings.TrimRight(frac, "0") == "" {
		digits = strings.TrimLeft(i, "0")
	}
	return len(digits)
}

// FuzzParseAmount: ParseAmount accepts exactly the grammar with at most 38
// significant digits, and its canonical rendering re-parses to an equal
// amount and renders the same (a fixed point).
func FuzzParseAmount(f *testing.F) {
	for _, s := range []string{"0", "500", "0.000003", "0.50", "500.000", "0.0", "1.10",
		"0.000000000000000001", "12345678901234567890.123456789012345678", strings.Repeat("9", 38),
		"-1", "1e3", "NaN", "Infinity", ".5", "1.", "007", "+1", "0.0000000000000000001", "1 000", "",
		" 1", "1,5", "0x10", "1" + strings.Repeat("0", 38), "١", "1.5.2", "--1", "-0", strings.Repeat("1", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := events.ParseAmount(s)
		want := amountRE.MatchString(s) && significant(s) <= events.MaxSignificantDigits
		if (err == nil) != want {
			t.Fatalf("ParseAmount(%q) error = %v, grammar says valid = %v", s, err, want)
		}
		if err != nil {
			if !errors.Is(err, events.ErrAmount) {
				t.Fatalf("ParseAmount(%q): %v does not wrap ErrAmount", s, err)
			}
			// Bounded whatever the input: at most 48 input bytes, each
			// at most 4 bytes once quoted, and the reason.
			if len(err.Error()) > 300 {
				t.Fatalf("error for %d bytes of input is %d bytes long", len(s), len(err.Error()))
			}
			return
		}
		str := a.String()
		b, err := events.ParseAmount(str)
		if err != nil {
			t.Fatalf("%q renders %q, which does not parse: %v", s, str, err)
		}
		if b.Cmp(a) != 0 || b.String() != str {
			t.Fatalf("%q renders %q, which parses to %s", s, str, b)
		}
		if a.Sign() < 0 || !a.InRange() || a.SignificantDigits() != significant(s) {
			t.Fatalf("%q: sign %d, in range %v, %d significant digits", s, a.Sign(), a.InRange(), a.SignificantDigits())
		}
		if len(str) > len(s) || !strings.Contains(s, ".") && str != s {
			t.Fatalf("%q renders %q: not the shortest form", s, str)
		}
		j, err := json.Marshal(a)
		if err != nil || string(j) != `"`+str+`"` {
			t.Fatalf("JSON of %q = %s, %v", s, j, err)
		}
		var back events.Amount
		if err := json.Unmarshal(j, &back); err != nil || back.Cmp(a) != 0 {
			t.Fatalf("JSON %s does not decode back: %v", j, err)
		}
		// The signed form of a non-zero amount is its negation.
		if !a.IsZero() {
			n, err := events.ParseSignedAmount("-" + s)
			if err != nil || n.Cmp(a.Neg()) != 0 || n.String() != "-"+str {
				t.Fatalf("ParseSignedAmount(-%s) = %s, %v", s, n, err)
			}
		}
		// Arithmetic round trips exactly.
		if got := a.Add(a).Sub(a); got.Cmp(a) != 0 {
			t.Fatalf("%s + %s - %s = %s", a, a, a, got)
		}
	})
}
