package enforcer

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tallyledger/tally/events"
)

func TestHashEncoding(t *testing.T) {
	for _, tc := range []struct {
		hash    string
		compact bool
	}{
		{"0123456789abcdef0123456789abcdef", true},
		{"ffffffffffffffffffffffffffffffff", true},
		{"00000000000000000000000000000000", true},
		{"0123456789ABCDEF0123456789abcdef", false}, // upper case is another string
		{"0123456789abcdeg0123456789abcdef", false},
		{"0123456789abcdef0123456789abcde/", false},
		{"0123456789abcdef0123456789abcde", false},
		{"", false},
	} {
		v := appendHash([]byte{7}, tc.hash)[1:]
		if got := v[0] == hashHex; got != tc.compact {
			t.Errorf("%q: compact %t, want %t", tc.hash, got, tc.compact)
		}
		if got := decodeHash(v); got != tc.hash {
			t.Errorf("%q decodes as %q", tc.hash, got)
		}
		if !hashEqual(v, tc.hash) {
			t.Errorf("%q is not equal to itself", tc.hash)
		}
		for _, other := range []string{tc.hash + "0", "x" + tc.hash, "0123456789abcdef0123456789abcdee"} {
			if other != tc.hash && hashEqual(v, other) {
				t.Errorf("%q equals %q", tc.hash, other)
			}
		}
	}
}

func TestIdemKeyEncoding(t *testing.T) {
	for _, k := range [][3]string{{"tenant:acme", "reserve", "k1"}, {"", "", ""}, {"a", "bc", ""}, {"ab", "c", "d"}} {
		b := idemKey(nil, k[0], events.Op(k[1]), k[2])
		root, op, key := parseIdemKey(b)
		if root != k[0] || string(op) != k[1] || key != k[2] {
			t.Errorf("%q: parsed as %q %q %q", k, root, op, key)
		}
	}
	// Distinct triples have distinct keys even when their concatenations agree.
	if string(idemKey(nil, "a", "bc", "")) == string(idemKey(nil, "ab", "c", "")) {
		t.Errorf("two triples share a key")
	}
}

// TestClosedEncoding round-trips closed reservations through the fifo,
// including the rare shapes: no amounts, nil and empty labels, a hold whose scope is not
// a prefix of the reservation's or that names a unit it does not reserve,
// and a hold on a budget deleted since, which reading drops.
func TestClosedEncoding(t *testing.T) {
	s := New(Config{Partition: 1})
	for _, scope := range []string{"tenant:a", "tenant:a/run:*", "tenant:b"} {
		s.putBudget(events.Budget{Scope: scope, Name: "x", Limits: events.Amounts{"USD": amt("10")}, Period: events.PeriodNone,
			Timezone: "UTC", Mode: events.ModeEnforce})
	}
	ba, brun, bb := s.budgets[budgetRef{"tenant:a", "x"}], s.budgets[budgetRef{"tenant:a/run:*", "x"}], s.budgets[budgetRef{"tenant:b", "x"}]
	in := s.getInstance(ba, "tenant:a", "none", events.Window{Key: "none"})
	at := time.Date(2026, 11, 28, 21, 0, 0, 123, time.UTC)
	units := []string{"USD", "tokens"}
	cases := []*reservation{
		{id: "R1", root: "tenant:a", scope: "tenant:a/run:r1", amts: []events.Amount{amt("0.25"), amt("12000")},
			units: []string{"USD", "tokens"}, priority: events.PriorityHigh, option: 2, label: "cheap",
			labels: events.Labels{"model": "opus", "a": ""}, expiresAt: at.Add(time.Minute), status: events.StatusCommitted,
			holds: []hold{
				holdOn(ba, "tenant:a", "none", in, units),
				holdOn(brun, "tenant:a/run:r1", "2026-11", nil, []string{"USD"}),
				holdOn(bb, "tenant:b", "none", nil, []string{"EUR", "USD"}), // not a prefix, an unreserved unit
			}},
		{id: "R2", root: "tenant:a", scope: "tenant:a", labels: events.Labels{},
			expiresAt: time.Time{}, status: events.StatusExpired, option: -1},
		{id: "", root: "", scope: "", status: events.StatusReleased, expiresAt: time.Unix(-5, 7).UTC()},
	}
	for i, r := range cases {
		s.closed.put(s.idKey(r.id), appendClosed(nil, r), uint64(i+1), stampOf(at))
	}
	s.deleteBudget("tenant:a/run:*", "x")
	for i, want := range cases {
		got := s.readClosed(s.closed.get([]byte(want.id)))
		want.closedAt, want.heapIdx = at, -1
		if i == 0 {
			want.holds = append(want.holds[:1], want.holds[2]) // the deleted budget's hold is gone
		}
		opts := cmp.Options{cmp.AllowUnexported(reservation{}, hold{}, instanceRef{}), amountCmp,
			cmp.Comparer(func(x, y *budget) bool { return x == y }), cmp.Comparer(func(x, y *instance) bool { return x == y })}
		if d := cmp.Diff(want, got, opts); d != "" {
			t.Errorf("reservation %d (-want +got):\n%s", i, d)
		}
		if (want.labels == nil) != (got.labels == nil) {
			t.Errorf("reservation %d: nil maps not kept", i)
		}
	}
}
