package events_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tallyledger/tally/events"
)

func TestAmountArithmetic(t *testing.T) {
	big := strings.Repeat("9", 38)
	tests := []struct {
		name     string
		a, b     string
		add, sub string
		mul      string
		cmp      int
	}{
		{name: "zeros", a: "0", b: "0", add: "0", sub: "0", mul: "0", cmp: 0},
		{name: "cents", a: "0.40", b: "0.37", add: "0.77", sub: "0.03", mul: "0.148", cmp: 1},
		{name: "sub goes negative", a: "0.1", b: "0.3", add: "0.4", sub: "-0.2", mul: "0.03", cmp: -1},
		{name: "equal despite spelling", a: "1.50", b: "1.5", add: "3", sub: "0", mul: "2.25", cmp: 0},
		{name: "integers keep no exponent", a: "500", b: "1500", add: "2000", sub: "-1000", mul: "750000", cmp: -1},
		{name: "tiny", a: "0.000000000000000001", b: "0.000000000000000001", add: "0.000000000000000002", sub: "0",
			mul: "0.000000000000000000000000000000000001", cmp: 0},
		{name: "widest integers", a: big, b: "1", add: "1" + strings.Repeat("0", 38), sub: strings.Repeat("9", 37) + "8",
			mul: big, cmp: 1},
		{name: "floor fraction", a: "500", b: "0.75", add: "500.75", sub: "499.25", mul: "375", cmp: 1},
		{name: "widest operands multiply exactly", a: big, b: big,
			add: "1" + strings.Repeat("9", 37) + "8",
			sub: "0",
			mul: strings.Repeat("9", 37) + "8" + strings.Repeat("0", 37) + "1", cmp: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := amt(tt.a), amt(tt.b)
			got := map[string]string{
				"add": a.Add(b).String(),
				"sub": a.Sub(b).String(),
				"mul": a.Mul(b).String(),
			}
			want := map[string]string{"add": tt.add, "sub": tt.sub, "mul": tt.mul}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if c := a.Cmp(b); c != tt.cmp {
				t.Errorf("Cmp = %d, want %d", c, tt.cmp)
			}
			if c := b.Cmp(a); c != -tt.cmp {
				t.Errorf("reverse Cmp = %d, want %d", c, -tt.cmp)
			}
			// Operations return new values: the operands are unchanged.
			if a.String() != amt(tt.a).String() || b.String() != amt(tt.b).String() {
				t.Errorf("operands changed: %s %s", a, b)
			}
		})
	}
}

func TestAmountHelpers(t *testing.T) {
	a, b := amt("2.5"), amt("10")
	if got := events.Max(a, b).String(); got != "10" {
		t.Errorf("Max = %s", got)
	}
	if got := events.Min(a, b).String(); got != "2.5" {
		t.Errorf("Min = %s", got)
	}
	if got := a.Neg().String(); got != "-2.5" {
		t.Errorf("Neg = %s", got)
	}
	if got := a.Neg().Sign(); got != -1 {
		t.Errorf("Neg Sign = %d", got)
	}
	if got := events.Zero.Neg(); got.String() != "0" || got.Sign() != 0 || !got.IsZero() {
		t.Errorf("-0 = %q sign %d", got, got.Sign())
	}
	var zero events.Amount
	if zero.String() != "0" || !zero.IsZero() || zero.Cmp(events.Zero) != 0 {
		t.Errorf("zero value = %q", zero)
	}
	if events.One.String() != "1" {
		t.Errorf("One = %s", events.One)
	}
	m := events.Amounts{"USD": amt("1")}
	c := m.Clone()
	c["USD"] = amt("2")
	if m["USD"].String() != "1" {
		t.Error("Clone aliases its source")
	}
	if events.Amounts(nil).Clone() != nil {
		t.Error("Clone(nil) != nil")
	}
}

func TestSignificantDigits(t *testing.T) {
	tests := []struct {
		in        string
		sig, frac int
		inRange   bool
	}{
		{"0", 1, 0, true},
		{"0.000", 1, 0, true},
		{"100", 3, 0, true},
		{"100.5", 4, 1, true},
		{"0.001", 1, 3, true},
		{"1.50", 2, 1, true},
		{"0.000000000000000001", 1, 18, true},
		{strings.Repeat("9", 38), 38, 0, true},
		{"12345678901234567890.123456789012345678", 38, 18, true},
	}
	for _, tt := range tests {
		a := amt(tt.in)
		got := []any{a.SignificantDigits(), a.FractionDigits(), a.InRange()}
		if diff := cmp.Diff([]any{tt.sig, tt.frac, tt.inRange}, got); diff != "" {
			t.Errorf("%s: (sig, frac, inRange) (-want +got):\n%s", tt.in, diff)
		}
	}
	// Results of arithmetic may leave the range; InRange is how callers know.
	out := []struct {
		name string
		a    events.Amount
	}{
		{"39 digits", amt(strings.Repeat("9", 38)).Add(events.One)},
		{"19 fraction digits", amt("0.000000000000000001").Mul(amt("0.1"))},
		{"negative 39 digits", amt(strings.Repeat("9", 38)).Add(events.One).Neg()},
		{"56 significant digits", amt(strings.Repeat("9", 38)).Add(amt("0.000000000000000001"))},
	}
	for _, o := range out {
		if o.a.InRange() {
			t.Errorf("%s: %s InRange = true", o.name, o.a)
		}
	}
	if !amt("5").Neg().InRange() {
		t.Error("-5 not InRange")
	}
}

func TestRoundHalfUp(t *testing.T) {
	tests := []struct {
		in     events.Amount
		places int
		want   string
	}{
		{amt("47.295"), 2, "47.30"},
		{amt("47.294"), 2, "47.29"},
		{amt("47.3"), 2, "47.30"},
		{amt("0.005"), 2, "0.01"},
		{amt("0.004999"), 2, "0.00"},
		{amt("0"), 2, "0.00"},
		{amt("12000"), 0, "12000"},
		{amt("2.5"), 0, "3"},
		{amt("47.295").Neg(), 2, "-47.30"},
		{amt("0.000000000000000001"), 18, "0.000000000000000001"},
	}
	for _, tt := range tests {
		if got := tt.in.RoundHalfUp(tt.places); got != tt.want {
			t.Errorf("%s.RoundHalfUp(%d) = %q, want %q", tt.in, tt.places, got, tt.want)
		}
	}
}

func TestParseSignedAmount(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: "1.5", want: "1.5"},
		{in: "-1.5", want: "-1.5"},
		{in: "-0.50", want: "-0.5"},
		{in: "0", want: "0"},
		{in: "-100", want: "-100"},
		{in: "--1", wantErr: `negative amount "--1"`},
		{in: "-", wantErr: `empty amount "-"`},
		{in: "+1", wantErr: "signed"},
		{in: "-1e3", wantErr: `exponent in amount "-1e3"`},
		{in: "-.5", wantErr: `no integer part in amount "-.5"`},
		{in: "- 1", wantErr: "space"},
	}
	for _, tt := range tests {
		got, err := events.ParseSignedAmount(tt.in)
		if tt.wantErr != "" {
			wantErr(t, err, tt.wantErr)
			if err != nil && !errors.Is(err, events.ErrAmount) {
				t.Errorf("%q: %v does not wrap ErrAmount", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseSignedAmount(%q): %v", tt.in, err)
			continue
		}
		if got.String() != tt.want {
			t.Errorf("ParseSignedAmount(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestSignedJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: `"-2.50"`, want: "-2.5"},
		{in: `"3"`, want: "3"},
		{in: `"0"`, want: "0"},
		{in: `"-0"`, wantErr: "negative zero"},
		{in: `"-0.00"`, wantErr: "negative zero"},
		{in: `-1`, wantErr: "not JSON number -1"},
		{in: `null`, wantErr: "not JSON null"},
		{in: `"1e3"`, wantErr: "exponent"},
	}
	for _, tt := range tests {
		var s events.Signed
		err := json.Unmarshal([]byte(tt.in), &s)
		if tt.wantErr != "" {
			wantErr(t, err, tt.wantErr)
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.in, err)
			continue
		}
		if s.String() != tt.want {
			t.Errorf("%s = %s, want %s", tt.in, s, tt.want)
		}
		out, err := json.Marshal(s)
		if err != nil || string(out) != `"`+tt.want+`"` {
			t.Errorf("Marshal(%s) = %s, %v", tt.in, out, err)
		}
	}
	var m events.SignedAmounts
	err := json.Unmarshal([]byte(`{"USD":"-1","tokens":"500"}`), &m)
	if err != nil || m["USD"].String() != "-1" || m["tokens"].String() != "500" {
		t.Errorf("SignedAmounts = %v, %v", m, err)
	}
	wantErr(t, json.Unmarshal([]byte(`{"US D":"1"}`), &m), "US D")
	wantErr(t, json.Unmarshal([]byte(`{"USD":"-x"}`), &m), `USD: not a number, bad character 'x' in amount "-x"`)
}

func TestAmountJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: `"0.50"`, want: "0.5"},
		{in: `"12000"`, want: "12000"},
		{in: `"\u0031"`, want: "1"},
		{in: `0.4`, wantErr: "amounts are decimal strings, not JSON number 0.4"},
		{in: `1`, wantErr: "not JSON number 1"},
		{in: `true`, wantErr: "not JSON a boolean"},
		{in: `null`, wantErr: "not JSON null"},
		{in: `{}`, wantErr: "not JSON an object"},
		{in: `"-1"`, wantErr: `negative amount "-1"`},
		{in: `"NaN"`, wantErr: "not a number"},
	}
	for _, tt := range tests {
		var a events.Amount
		err := json.Unmarshal([]byte(tt.in), &a)
		if tt.wantErr != "" {
			wantErr(t, err, tt.wantErr)
			if err != nil && !errors.Is(err, events.ErrAmount) {
				t.Errorf("%s: %v does not wrap ErrAmount", tt.in, err)
			}
			continue
		}
		if err != nil || a.String() != tt.want {
			t.Errorf("%s = %s, %v; want %s", tt.in, a, err, tt.want)
		}
	}
	out, err := json.Marshal(events.Amounts{"USD": amt("0.50"), "EUR": amt("500.000")})
	if err != nil || string(out) != `{"EUR":"500","USD":"0.5"}` {
		t.Errorf("Marshal(Amounts) = %s, %v", out, err)
	}
}

func TestAmountErrorTruncates(t *testing.T) {
	long := strings.Repeat("1", 10000)
	_, err := events.ParseAmount(long)
	wantErr(t, err, "too long")
	if len(err.Error()) > 100 {
		t.Errorf("error for a 10 000-digit amount is %d bytes long", len(err.Error()))
	}
	var ae *events.AmountError
	if !errors.As(err, &ae) || ae.Input != long {
		t.Errorf("AmountError does not keep the input: %#v", err)
	}
}
