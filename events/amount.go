package events

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"

	"github.com/cockroachdb/apd/v3"
)

// Amount limits (DESIGN §1).
const (
	MaxFractionDigits    = 18
	MaxSignificantDigits = 38
)

// ctx is wide enough that no operation tally performs on in-range amounts
// ever rounds: 38 significant digits plus 18 fractional digits of a floor
// fraction is 56 digits; products and sums stay far below 100.
var ctx = func() *apd.Context {
	c := apd.BaseContext.WithPrecision(100)
	c.Traps = apd.DefaultTraps | apd.Inexact | apd.Rounded
	return c
}()

// Amount is an exact decimal quantity of some unit. The zero value is 0.
// Amounts are values: operations return new Amounts and never alias.
//
// An amount is held in the compact form of fixed.go when it has one (v;
// big is nil) and otherwise, exactly, as a reduced apd decimal that is
// never mutated. The form is canonical: big is set only for values the
// compact form cannot hold, so equal amounts have equal representations.
type Amount struct {
	// v is the compact form: the sign in bit 127 (never set on zero), and
	// |value| × 10^18, below 10^37 < 2^123, in the bits below. With the
	// sign inside, an Amount is 24 bytes, not 32: events carry dozens.
	v   u128
	big *apd.Decimal
}

// signBit is the sign's bit in v.hi.
const signBit = 1 << 63

// mag is a compact amount's magnitude, |value| × 10^18.
func (a Amount) mag() u128 { return u128{a.v.hi &^ signBit, a.v.lo} }

// neg reports whether a compact amount is negative.
func (a Amount) neg() bool { return a.v.hi&signBit != 0 }

// compact is the compact amount of magnitude m (below 10^37) and sign neg;
// zero is never negative.
func compact(m u128, neg bool) Amount {
	if neg && !m.isZero() {
		m.hi |= signBit
	}
	return Amount{v: m}
}

// dec returns a's value as an apd decimal the caller must not modify.
func (a Amount) dec() *apd.Decimal {
	if a.big != nil {
		return a.big
	}
	d := new(apd.Decimal)
	if _, _, err := d.SetString(string(appendFixed(nil, a))); err != nil {
		panic(fmt.Sprintf("events: compact amount %v (negative %v): %v", a.mag(), a.neg(), err))
	}
	return d
}

// fromDec makes the canonical Amount of d, which it takes over.
func fromDec(d *apd.Decimal) Amount {
	d.Reduce(d)
	if d.IsZero() {
		return Amount{}
	}
	if d.Exponent >= -fixedScale && int64(d.NumDigits())+int64(d.Exponent) <= 19 {
		var abs apd.Decimal
		abs.Abs(d)
		if a, ok := parseFixed(abs.Text('f')); ok {
			return compact(a.mag(), d.Negative)
		}
	}
	return Amount{big: d}
}

// ErrAmount is wrapped by every amount parse error.
var ErrAmount = errors.New("invalid amount")

// AmountError says why an amount string was rejected.
type AmountError struct {
	Input  string
	Reason string
}

func (e *AmountError) Error() string {
	in := e.Input
	if len(in) > 48 {
		in = in[:48] + "…"
	}
	return fmt.Sprintf("%s amount %q", e.Reason, in)
}

func (e *AmountError) Unwrap() error { return ErrAmount }

// ParseAmount parses a decimal string of the grammar
// ^(0|[1-9][0-9]*)(\.[0-9]{1,18})?$ with at most 38 significant digits.
func ParseAmount(s string) (Amount, error) {
	return parseAmount(s, MaxSignificantDigits, MaxFractionDigits)
}

// Wide bounds: what a figure tally computes may need. A balance view can
// pass 38 significant digits (a limit replaced under existing spend), and
// limit × (1 − floor) has up to 36 fractional digits, so a denial's
// available or a shadow overage can too. Events carry such figures exactly
// and must decode, or replay would stop: single amounts decode within the
// wide bounds, while request amounts (maps, budget fields) keep 38/18.
const (
	wideSignificantDigits = 2 * MaxSignificantDigits
	wideFractionDigits    = 2 * MaxFractionDigits
)

// parseWideAmount parses the amount grammar within the wide bounds.
func parseWideAmount(s string) (Amount, error) {
	return parseAmount(s, wideSignificantDigits, wideFractionDigits)
}

func parseAmount(s string, maxSig, maxFrac int) (Amount, error) {
	if reason := amountGrammar(s, maxSig, maxFrac); reason != "" {
		return Amount{}, &AmountError{Input: s, Reason: reason}
	}
	if a, ok := parseFixed(s); ok {
		return a, nil // at most 37 significant digits
	}
	d := new(apd.Decimal)
	if _, _, err := d.SetString(s); err != nil {
		return Amount{}, &AmountError{Input: s, Reason: "not a number"}
	}
	a := fromDec(d)
	if a.SignificantDigits() > maxSig {
		return Amount{}, &AmountError{Input: s, Reason: fmt.Sprintf("more than %d significant digits in", maxSig)}
	}
	return a, nil
}

// MustAmount parses s or panics; for constants and tests.
func MustAmount(s string) Amount {
	a, err := ParseAmount(s)
	if err != nil {
		panic(err)
	}
	return a
}

// amountGrammar returns "" if s matches the amount grammar, else a reason.
func amountGrammar(s string, maxSig, maxFrac int) string {
	if s == "" {
		return "empty"
	}
	if len(s) > 1+maxSig+1+maxFrac+20 {
		return "too long"
	}
	switch c := s[0]; {
	case c == '-' && len(s) > 1 && s[1] >= '0' && s[1] <= '9':
		return "negative"
	case c == '-' || c == '+':
		return "signed"
	case c == '.':
		return "no integer part in"
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		return fmt.Sprintf("not a number, bad character %q in", c)
	}
	intPart, frac, hasPoint := strings.Cut(s, ".")
	for i := 0; i < len(intPart); i++ {
		c := intPart[i]
		if c < '0' || c > '9' {
			return badChar(c)
		}
	}
	if len(intPart) > 1 && intPart[0] == '0' {
		return "leading zeros in"
	}
	if !hasPoint {
		return ""
	}
	if frac == "" {
		return "no fraction digits in"
	}
	for i := 0; i < len(frac); i++ {
		c := frac[i]
		if c < '0' || c > '9' {
			return badChar(c)
		}
	}
	if len(frac) > maxFrac {
		return fmt.Sprintf("more than %d fractional digits in", maxFrac)
	}
	return ""
}

func badChar(c byte) string {
	switch {
	case c == 'e' || c == 'E':
		return "exponent in"
	case c == '.':
		return "two decimal points in"
	case c == ' ' || c == '\t' || c == '\n' || c == '\r':
		return "space in"
	case c >= 0x80:
		return "non-ASCII character in"
	default:
		return fmt.Sprintf("bad character %q in", c)
	}
}

// String renders the canonical form: no exponent, no trailing fractional
// zeros, no sign for zero.
func (a Amount) String() string {
	if a.big == nil {
		var buf [48]byte
		return string(appendFixed(buf[:0], a))
	}
	return a.big.Text('f')
}

// Append appends the canonical form (String) to b.
func (a Amount) Append(b []byte) []byte {
	if a.big == nil {
		return appendFixed(b, a)
	}
	return a.big.Append(b, 'f')
}

// Sign is -1, 0 or +1.
func (a Amount) Sign() int {
	if a.big != nil {
		return a.big.Sign()
	}
	return a.signFixed()
}

// Negative reports whether a < 0.
func (a Amount) Negative() bool {
	return a.v.hi&signBit != 0 || a.big != nil && a.big.Sign() < 0
}

// Equal reports whether a = b.
func (a Amount) Equal(b Amount) bool {
	if a.big == nil && b.big == nil {
		return a.v == b.v // compact amounts are canonical
	}
	return a.cmp(b) == 0
}

// IsZero reports whether a is 0.
func (a Amount) IsZero() bool { return a.big == nil && a.v.isZero() }

// Boxed reports whether a keeps its value outside itself, behind a
// pointer: a decimal beyond the compact range. An Amount that is not boxed
// holds no pointer.
func (a Amount) Boxed() bool { return a.big != nil }

// smallHi bounds the high half of the compact amounts that Add, Sub and
// Cmp handle inline, the common case of every balance: below it the sign
// bit is clear, and two magnitudes below 2^121 add to less than
// 2^122 < 10^37, so their sum is compact too.
const smallHi = 1 << 57

// small reports whether a and b are both compact, non-negative and below
// 2^121 (2.6 × 10^18 as a value).
func small(a, b Amount) bool { return a.big == nil && b.big == nil && a.v.hi|b.v.hi < smallHi }

// Cmp compares a and b: -1, 0, +1.
func (a Amount) Cmp(b Amount) int {
	if small(a, b) {
		if a.v.hi != b.v.hi {
			return cmpUint(a.v.hi, b.v.hi)
		}
		return cmpUint(a.v.lo, b.v.lo)
	}
	return a.cmp(b)
}

func cmpUint(a, b uint64) int {
	if a < b {
		return -1
	}
	if a > b {
		return 1
	}
	return 0
}

func (a Amount) cmp(b Amount) int {
	if a.big == nil && b.big == nil {
		return cmpFixed(a, b)
	}
	return a.dec().Cmp(b.dec())
}

// AddInline is Add's inline path: a + b and true when both are compact,
// non-negative and below 2^121 × 10^-18 (the common case of every
// balance), false otherwise, when the caller calls Add. Unlike Add it
// inlines, so a decision's hottest sums make no call.
func (a Amount) AddInline(b Amount) (Amount, bool) {
	if !small(a, b) {
		return Amount{}, false
	}
	lo, c := bits.Add64(a.v.lo, b.v.lo, 0)
	return Amount{v: u128{a.v.hi + b.v.hi + c, lo}}, true
}

// SubInline is Sub's inline path: a − b and true when both are compact,
// non-negative and below 2^121 × 10^-18 and a ≥ b; false otherwise, when
// the caller calls Sub. It inlines.
func (a Amount) SubInline(b Amount) (Amount, bool) {
	if !small(a, b) {
		return Amount{}, false
	}
	lo, c := bits.Sub64(a.v.lo, b.v.lo, 0)
	hi, c := bits.Sub64(a.v.hi, b.v.hi, c)
	return Amount{v: u128{hi, lo}}, c == 0
}

// LessInline is a < b and true when both are compact, non-negative and
// below 2^121 × 10^-18, false otherwise, when the caller calls Cmp. It
// inlines.
func (a Amount) LessInline(b Amount) (less, ok bool) {
	if !small(a, b) {
		return false, false
	}
	return a.v.hi < b.v.hi || a.v.hi == b.v.hi && a.v.lo < b.v.lo, true
}

// Add returns a + b.
func (a Amount) Add(b Amount) Amount {
	if r, ok := a.AddInline(b); ok {
		return r
	}
	// A balance less a hold, a commit's or a release's: a is small and
	// non-negative, b small and negative (b.v.hi^signBit is its magnitude's
	// high half; below smallHi only when the sign was set), |b| ≤ a.
	if a.big == nil && b.big == nil && a.v.hi < smallHi && b.v.hi^signBit < smallHi {
		lo, c := bits.Sub64(a.v.lo, b.v.lo, 0)
		if hi, c := bits.Sub64(a.v.hi, b.v.hi^signBit, c); c == 0 {
			return Amount{v: u128{hi, lo}}
		}
	}
	return a.add(b)
}

func (a Amount) add(b Amount) Amount {
	if a.big == nil && b.big == nil {
		if r, ok := addFixed(a, b); ok {
			return r
		}
	}
	r := new(apd.Decimal)
	mustExact(ctx.Add(r, a.dec(), b.dec()))
	return fromDec(r)
}

// Sub returns a − b (possibly negative).
func (a Amount) Sub(b Amount) Amount {
	if r, ok := a.SubInline(b); ok {
		return r
	}
	return a.add(b.Neg())
}

// Mul returns a × b.
func (a Amount) Mul(b Amount) Amount {
	if a.big == nil && b.big == nil {
		if r, ok := mulFixed(a, b); ok {
			return r
		}
		if r, ok := mulFixed(b, a); ok {
			return r
		}
	}
	r := new(apd.Decimal)
	mustExact(ctx.Mul(r, a.dec(), b.dec()))
	return fromDec(r)
}

// Neg returns −a.
func (a Amount) Neg() Amount {
	if a.big == nil {
		return compact(a.mag(), !a.neg())
	}
	r := new(apd.Decimal)
	r.Neg(a.big)
	return Amount{big: r}
}

// Max returns the larger of a and b.
func Max(a, b Amount) Amount {
	if a.Cmp(b) >= 0 {
		return a
	}
	return b
}

// Min returns the smaller of a and b.
func Min(a, b Amount) Amount {
	if a.Cmp(b) <= 0 {
		return a
	}
	return b
}

// Zero is the amount 0.
var Zero Amount

// One is the amount 1.
var One = MustAmount("1")

// SignificantDigits counts the digits from the first non-zero digit to the
// last non-zero fractional digit, or to the units digit for integers
// (100 has 3). Zero has 1.
func (a Amount) SignificantDigits() int {
	if a.big == nil {
		ip, frac := a.mag().split()
		switch {
		case frac == 0:
			return decimalDigits(ip)
		case ip == 0:
			return decimalDigits(frac) - trailingZeros(frac)
		}
		return decimalDigits(ip) + fixedScale - trailingZeros(frac)
	}
	n := int(a.big.NumDigits())
	if a.big.Exponent > 0 {
		n += int(a.big.Exponent)
	}
	return n
}

// FractionDigits is the number of digits after the point in canonical form.
func (a Amount) FractionDigits() int {
	if a.big == nil {
		if _, frac := a.mag().split(); frac != 0 {
			return fixedScale - trailingZeros(frac)
		}
		return 0
	}
	if a.big.Exponent >= 0 {
		return 0
	}
	return int(-a.big.Exponent)
}

// InRange reports whether a is a representable balance: |a| has at most 38
// significant digits and 18 fractional digits.
func (a Amount) InRange() bool {
	// A compact amount has at most 37 significant and 18 fractional digits.
	return a.big == nil || a.bigInRange()
}

func (a Amount) bigInRange() bool {
	return a.SignificantDigits() <= MaxSignificantDigits && a.FractionDigits() <= MaxFractionDigits
}

// ParseSignedAmount parses an optionally negative amount ("-1.5"), used by
// budget-adjust deltas.
func ParseSignedAmount(s string) (Amount, error) { return parseSigned(s, false) }

func parseSigned(s string, wide bool) (Amount, error) {
	parse := ParseAmount
	if wide {
		parse = parseWideAmount
	}
	if rest, ok := strings.CutPrefix(s, "-"); ok {
		a, err := parse(rest)
		if err != nil {
			var ae *AmountError
			if errors.As(err, &ae) {
				ae.Input = s
			}
			return Amount{}, err
		}
		return a.Neg(), nil
	}
	return parse(s)
}

// RoundHalfUp rounds a to places fractional digits, halves away from zero;
// for display only (reports), never for balances.
func (a Amount) RoundHalfUp(places int) string {
	c := apd.BaseContext.WithPrecision(100)
	c.Rounding = apd.RoundHalfUp
	var r apd.Decimal
	if _, err := c.Quantize(&r, a.dec(), int32(-places)); err != nil {
		panic(err)
	}
	return r.Text('f')
}

func mustExact(_ apd.Condition, err error) {
	if err != nil {
		panic(fmt.Sprintf("events: inexact decimal arithmetic: %v", err))
	}
}

// MarshalText renders the canonical string; JSON encodes it as a string.
func (a Amount) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalJSON accepts only a JSON string holding an amount: a JSON
// number (a float on the wire) is rejected. A single amount decodes within
// the wide bounds (it may be a computed figure of an event); request
// amounts come in maps (Amounts) and budget fields, which keep 38/18.
func (a *Amount) UnmarshalJSON(b []byte) error {
	v, err := decodeAmountJSON(b, true, false)
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// decodeAmountJSON decodes a JSON string amount, strictly (38/18) or within
// the wide bounds, optionally signed.
func decodeAmountJSON(b []byte, wide, signed bool) (Amount, error) {
	if len(b) == 0 || b[0] != '"' {
		return Amount{}, fmt.Errorf("%w: amounts are decimal strings, not JSON %s", ErrAmount, jsonKind(b))
	}
	s, ok := quickUnquote(b)
	if !ok {
		var err error
		if s, err = unquote(b); err != nil {
			return Amount{}, err
		}
	}
	if !signed {
		if wide {
			return parseWideAmount(s)
		}
		return ParseAmount(s)
	}
	a, err := parseSigned(s, wide)
	if err != nil {
		return Amount{}, err
	}
	if a.IsZero() && strings.HasPrefix(s, "-") {
		return Amount{}, &AmountError{Input: s, Reason: "negative zero"}
	}
	return a, nil
}

// Amounts maps unit names to amounts.
type Amounts map[string]Amount

// MarshalJSON renders units in byte order; a nil map is {}, not null, which
// UnmarshalJSON would refuse: whatever Encode writes, Decode must read.
func (m Amounts) MarshalJSON() ([]byte, error) {
	return appendAmounts(make([]byte, 0, 24*len(m)+2), m), nil
}

// Clone copies m.
func (m Amounts) Clone() Amounts {
	if m == nil {
		return nil
	}
	c := make(Amounts, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
