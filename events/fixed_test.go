package events

import (
	"strings"
	"testing"

	"github.com/cockroachdb/apd/v3"
	"pgregory.net/rapid"
)

// genAmountString draws amounts around the compact form's edges: integer
// parts of 0–25 digits (the compact form ends at 19), 0–36 fractional
// digits (it ends at 18), trailing zeros, and an optional sign.
func genAmountString(t *rapid.T, label string) string {
	digits := func(n int, lead bool) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			lo := 0
			if i == 0 && lead {
				lo = 1
			}
			d := rapid.IntRange(lo, 9).Draw(t, label+"d")
			if rapid.IntRange(0, 3).Draw(t, label+"z") == 0 {
				d = max(lo, 0) // runs of zeros
			}
			b.WriteByte(byte('0' + d))
		}
		return b.String()
	}
	ip := "0"
	if n := rapid.IntRange(0, 25).Draw(t, label+"int"); n > 0 {
		ip = digits(n, true)
	}
	s := ip
	if n := rapid.IntRange(0, 36).Draw(t, label+"frac"); n > 0 {
		s += "." + digits(n, false)
	}
	if rapid.Bool().Draw(t, label+"neg") && s != "0" {
		s = "-" + s
	}
	return s
}

func refDec(t *rapid.T, s string) *apd.Decimal {
	d, _, err := apd.NewFromString(s)
	if err != nil {
		t.Fatalf("reference parse %q: %v", s, err)
	}
	return d
}

func refText(d *apd.Decimal) string {
	var r apd.Decimal
	r.Reduce(d)
	if r.IsZero() {
		return "0"
	}
	return r.Text('f')
}

// TestAmountArithmeticMatchesApd checks every operation of Amount, compact
// or not, against apd computing on the same values.
func TestAmountArithmeticMatchesApd(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sa, sb := genAmountString(t, "a"), genAmountString(t, "b")
		a, err := parseSigned(sa, true)
		if err != nil {
			t.Skip(err) // beyond the wide bounds: not an amount
		}
		b, err := parseSigned(sb, true)
		if err != nil {
			t.Skip(err)
		}
		da, db := refDec(t, sa), refDec(t, sb)
		if got, want := a.String(), refText(da); got != want {
			t.Fatalf("String(%q) = %q, want %q", sa, got, want)
		}
		if got := string(a.Append([]byte("x"))); got != "x"+a.String() {
			t.Fatalf("Append(%q) = %q", sa, got)
		}
		c := apd.BaseContext.WithPrecision(200)
		check := func(op string, got Amount, f func(r, x, y *apd.Decimal) (apd.Condition, error)) {
			var r apd.Decimal
			if _, err := f(&r, da, db); err != nil {
				t.Fatalf("reference %s: %v", op, err)
			}
			if g, w := got.String(), refText(&r); g != w {
				t.Fatalf("%s %s %s = %s, want %s", sa, op, sb, g, w)
			}
			// Canonical: a value with a compact form is held compactly.
			if _, ok := parseFixed(strings.TrimPrefix(got.String(), "-")); ok != (got.big == nil) {
				t.Fatalf("%s %s %s = %s is not canonical (big %v)", sa, op, sb, got, got.big != nil)
			}
		}
		check("+", a.Add(b), c.Add)
		check("-", a.Sub(b), c.Sub)
		if a.InRange() && b.InRange() { // tally multiplies balances by fractions, never wide figures
			check("×", a.Mul(b), c.Mul)
		}
		check("neg", a.Neg(), func(r, x, _ *apd.Decimal) (apd.Condition, error) { r.Neg(x); return 0, nil })
		if got, want := a.Cmp(b), da.Cmp(db); got != want {
			t.Fatalf("Cmp(%s, %s) = %d, want %d", sa, sb, got, want)
		}
		// The inline paths, where they answer, answer as the methods do.
		if r, ok := a.AddInline(b); ok && (r != a.Add(b) || a.Negative() || b.Negative()) {
			t.Fatalf("AddInline(%s, %s) = %s, true; Add = %s", sa, sb, r, a.Add(b))
		}
		if r, ok := a.SubInline(b); ok && (r != a.Sub(b) || r.Negative()) {
			t.Fatalf("SubInline(%s, %s) = %s, true; Sub = %s", sa, sb, r, a.Sub(b))
		}
		if l, ok := a.LessInline(b); ok && l != (da.Cmp(db) < 0) {
			t.Fatalf("LessInline(%s, %s) = %v, true", sa, sb, l)
		}
		if got, want := a.Equal(b), da.Cmp(db) == 0; got != want {
			t.Fatalf("Equal(%s, %s) = %v, want %v", sa, sb, got, want)
		}
		if !a.Equal(a) || !a.Equal(a.Add(b).Sub(b)) {
			t.Fatalf("Equal: %s is not itself, or not %s + %s − %s", sa, sa, sb, sb)
		}
		if got, want := a.Negative(), da.Sign() < 0; got != want {
			t.Fatalf("Negative(%s) = %v, want %v", sa, got, want)
		}
		if got, want := a.Sign(), da.Sign(); got != want {
			t.Fatalf("Sign(%s) = %d, want %d", sa, got, want)
		}
		if a.IsZero() != da.IsZero() {
			t.Fatalf("IsZero(%s) = %v", sa, a.IsZero())
		}
		var red apd.Decimal
		red.Reduce(da)
		sig := 1
		if !red.IsZero() {
			sig = int(red.NumDigits()) + max(int(red.Exponent), 0)
		}
		if got := a.SignificantDigits(); got != sig {
			t.Fatalf("SignificantDigits(%s) = %d, want %d", sa, got, sig)
		}
		if got, want := a.FractionDigits(), max(0, -int(red.Exponent)); got != want {
			t.Fatalf("FractionDigits(%s) = %d, want %d", sa, got, want)
		}
		if got, want := a.InRange(), sig <= MaxSignificantDigits && max(0, -int(red.Exponent)) <= MaxFractionDigits; got != want {
			t.Fatalf("InRange(%s) = %v, want %v", sa, got, want)
		}
	})
}

func TestFixedEdges(t *testing.T) {
	for _, tc := range []struct{ a, op, b, want string }{
		{"9999999999999999999.999999999999999999", "+", "0.000000000000000001", "10000000000000000000"},
		{"10000000000000000000", "-", "0.000000000000000001", "9999999999999999999.999999999999999999"},
		{"0.1", "-", "0.1", "0"},
		// Around 2^121 × 10^-18, where Add, Sub and Cmp leave their inline path.
		{"2658455991569831745.807614120560689151", "+", "0.000000000000000001", "2658455991569831745.807614120560689152"},
		{"2658455991569831745.807614120560689152", "-", "0.000000000000000001", "2658455991569831745.807614120560689151"},
		{"0.000000000000000001", "-", "2658455991569831745.807614120560689151", "-2658455991569831745.80761412056068915"},
		{"2658455991569831745.807614120560689151", "+", "2658455991569831745.807614120560689151", "5316911983139663491.615228241121378302"},
		{"5316911983139663491.615228241121378302", "-", "2658455991569831745.807614120560689151", "2658455991569831745.807614120560689151"},
		{"-0.1", "+", "0.1", "0"},
		// Add's second inline path: a small non-negative a, a small negative b.
		{"0.5", "+", "-0.5", "0"},
		{"1", "+", "-0.000000000000000001", "0.999999999999999999"},
		{"0.3", "+", "-0.5", "-0.2"},
		{"2658455991569831745.807614120560689151", "+", "-2658455991569831745.807614120560689151", "0"},
		{"2658455991569831745.807614120560689152", "+", "-1", "2658455991569831744.807614120560689152"},
		{"5", "+", "-2658455991569831745.807614120560689152", "-2658455991569831740.807614120560689152"},
		{"0.000000000000000001", "×", "0.1", "0.0000000000000000001"},
		{"1000000000000", "×", "0.8", "800000000000"},
		{"18446744073709551616", "×", "1", "18446744073709551616"},
		{"9999999999999999999", "×", "9999999999999999999", "99999999999999999980000000000000000001"},
		{"0.999999999999999999", "×", "0.999999999999999999", "0.999999999999999998000000000000000001"},
	} {
		a, b := MustAmount(strings.TrimPrefix(tc.a, "-")), MustAmount(strings.TrimPrefix(tc.b, "-"))
		if strings.HasPrefix(tc.a, "-") {
			a = a.Neg()
		}
		if strings.HasPrefix(tc.b, "-") {
			b = b.Neg()
		}
		var got Amount
		switch tc.op {
		case "+":
			got = a.Add(b)
		case "-":
			got = a.Sub(b)
		case "×":
			got = a.Mul(b)
		}
		if got.String() != tc.want {
			t.Errorf("%s %s %s = %s, want %s", tc.a, tc.op, tc.b, got, tc.want)
		}
	}
	if z := MustAmount("0").Neg(); z.neg() || z.String() != "0" {
		t.Errorf("−0 = %q (neg %v)", z, z.neg())
	}
}

// TestInlinePathsTakeBalances checks that the inline paths answer for the
// amounts balances hold, up to their edge at 2^121 × 10^-18, and leave
// the rest to the methods.
func TestInlinePathsTakeBalances(t *testing.T) {
	edge := MustAmount("2658455991569831745.807614120560689151") // the largest inline amount
	past := edge.Add(MustAmount("0.000000000000000001"))
	for _, tc := range []struct {
		a, b         Amount
		add, sub, lt bool // whether each inline path answers
	}{
		{MustAmount("12000"), MustAmount("0.42"), true, true, true},
		{MustAmount("0.42"), MustAmount("12000"), true, false, true}, // 0.42 − 12000 < 0: Sub's
		{Zero, Zero, true, true, true},
		{edge, edge, true, true, true},
		{past, One, false, false, false},
		{One, MustAmount("5").Neg(), false, false, false},
		{MustAmount("1" + strings.Repeat("0", 30)), One, false, false, false},
	} {
		if _, ok := tc.a.AddInline(tc.b); ok != tc.add {
			t.Errorf("AddInline(%s, %s): ok %v, want %v", tc.a, tc.b, ok, tc.add)
		}
		if _, ok := tc.a.SubInline(tc.b); ok != tc.sub {
			t.Errorf("SubInline(%s, %s): ok %v, want %v", tc.a, tc.b, ok, tc.sub)
		}
		if _, ok := tc.a.LessInline(tc.b); ok != tc.lt {
			t.Errorf("LessInline(%s, %s): ok %v, want %v", tc.a, tc.b, ok, tc.lt)
		}
	}
}
