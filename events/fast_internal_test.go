package events

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// The fast decoders must agree with the strict ones on everything Encode
// writes, and leave everything else to them.
func TestFastPathsAgreeWithStrict(t *testing.T) {
	amounts := []string{`{}`, `{"USD":"0.4","tokens":"12000"}`, `{"A":"1","B":"2.50"}`}
	for _, in := range amounts {
		fast, ok := fastAmounts([]byte(in))
		if !ok {
			t.Fatalf("fast path refused %s", in)
		}
		raw, _ := decodeObject([]byte(in))
		if len(raw) != len(fast) {
			t.Fatalf("%s: %d units fast, %d strict", in, len(fast), len(raw))
		}
		for u, r := range raw {
			var a Amount
			if err := a.UnmarshalJSON(r); err != nil || a.Cmp(fast[u]) != 0 {
				t.Fatalf("%s: unit %s differs", in, u)
			}
		}
	}
	for _, in := range []string{`{"tokens":"1","USD":"2"}`, `{"USD":"1","USD":"2"}`, `{ "USD":"1"}`, `{"USD":"-1"}`, `{"USD":"1e3"}`, `{"U\u0053D":"1"}`, `{"USD":1}`} {
		if _, ok := fastAmounts([]byte(in)); ok {
			t.Errorf("fast path accepted %s", in)
		}
	}
	ub := UnitBalances{{Unit: "USD", UnitBalance: UnitBalance{Limit: MustAmount("2"), Spent: MustAmount("0.4"),
		Reserved: MustAmount("1.7"), Remaining: Signed{MustAmount("0.1").Neg()}}}, {Unit: "tokens"}}
	b, err := json.Marshal(ub)
	if err != nil {
		t.Fatal(err)
	}
	fast, ok := fastUnitBalances(b)
	if !ok {
		t.Fatalf("fast path refused %s", b)
	}
	again, _ := json.Marshal(fast)
	if !bytes.Equal(again, b) {
		t.Fatalf("fast round trip %s != %s", again, b)
	}
	for _, in := range []string{`{"USD":{"spent":"1","limit":"2","reserved":"0","remaining":"1"}}`, `{"USD":{"limit":"2","spent":"1","reserved":"0","remaining":"-0"}}`} {
		if _, ok := fastUnitBalances([]byte(in)); ok {
			t.Errorf("fast path accepted %s", in)
		}
	}
	// Whole events: the fast decoder and the strict one agree.
	ev := Event{V: Version, ID: "01JDQ7Z5N3W8K2V6X9Y4T0R1PQ", Type: TypeUsageCharged, Partition: 2, Root: "tenant:a",
		Data: &UsageCharged{Mutation: Mutation{IdempotencyKey: "k", RequestHash: "h"}, Scope: "tenant:a",
			Amounts: Amounts{"USD": MustAmount("1.5")}, Instances: []InstanceView{{Budget: "b", Pattern: "tenant:a",
				Scope: "tenant:a", Period: "none", Mode: ModeEnforce, Units: ub}}}}
	raw, err := Encode(&ev)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := decodeFast(raw, nil)
	if !ok {
		t.Fatal("fast decoder refused an encoded event")
	}
	s, err := decodeStrict(raw)
	if err != nil {
		t.Fatal(err)
	}
	fb, _ := Encode(&f)
	sb, _ := Encode(&s)
	if !bytes.Equal(fb, sb) || !bytes.Equal(fb, raw) {
		t.Fatalf("fast and strict decoders differ:\n%s\n%s", fb, sb)
	}
}

// TestPlainRun checks plainRun against the byte scan it shortens: it
// never skips a byte the scan stops at, and skips every whole word of
// plain ASCII before the first such byte.
func TestPlainRun(t *testing.T) {
	stops := func(c byte) bool { return c == '"' || c == '\\' || c < 0x20 || c >= 0x80 }
	check := func(b []byte) {
		t.Helper()
		first := len(b)
		for i, c := range b {
			if stops(c) {
				first = i
				break
			}
		}
		// The word holding the first stop, or the tail after the last
		// whole word: a word flagged without a stop would be a false
		// positive, which the borrows never make across words.
		want := min(first, len(b)-len(b)%8) / 8 * 8
		if got := plainRun(b, 0); got != want {
			t.Fatalf("plainRun(%q) = %d, want %d (first stop at %d)", b, got, want, first)
		}
	}
	for c := range 256 {
		for pos := range 17 {
			b := []byte(strings.Repeat("a", 24))
			b[pos] = byte(c)
			check(b)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(0x20 + r.IntN(0x60))
			if r.IntN(30) == 0 {
				b[i] = byte(r.IntN(256))
			}
		}
		check(b)
	}
}
