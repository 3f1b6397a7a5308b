package events

import (
	"math/bits"
	"strconv"
)

// The compact form of an Amount: a sign and a 128-bit magnitude counting
// units of 10^-18. Every amount a request may carry with an integer part
// below 10^19 has one, so the arithmetic of a decision is a handful of
// integer instructions and allocates nothing; anything else (a balance past
// 10^19, a figure with more than 18 fractional digits such as
// limit × (1 − floor)) is held exactly by apd instead.

// fixedScale is the number of fractional digits of the compact form.
const fixedScale = 18

// pow10 holds 10^0 … 10^19.
var pow10 = func() (p [20]uint64) {
	p[0] = 1
	for i := 1; i < len(p); i++ {
		p[i] = p[i-1] * 10
	}
	return p
}()

// u128 is an unsigned 128-bit integer.
type u128 struct{ hi, lo uint64 }

// fixedLimit is 10^37: compact magnitudes are below it, so the integer part
// (magnitude / 10^18) fits a uint64 and the sum of two magnitudes cannot
// overflow 128 bits.
var fixedLimit = func() u128 {
	hi, lo := bits.Mul64(pow10[19], pow10[18])
	return u128{hi, lo}
}()

func (a u128) isZero() bool { return a.hi == 0 && a.lo == 0 }

func (a u128) cmp(b u128) int {
	switch {
	case a.hi < b.hi:
		return -1
	case a.hi > b.hi:
		return 1
	case a.lo < b.lo:
		return -1
	case a.lo > b.lo:
		return 1
	}
	return 0
}

func (a u128) add(b u128) u128 {
	lo, c := bits.Add64(a.lo, b.lo, 0)
	hi, _ := bits.Add64(a.hi, b.hi, c)
	return u128{hi, lo}
}

// sub returns a − b for a ≥ b.
func (a u128) sub(b u128) u128 {
	lo, c := bits.Sub64(a.lo, b.lo, 0)
	hi, _ := bits.Sub64(a.hi, b.hi, c)
	return u128{hi, lo}
}

// split returns the integer part and the fraction (in units of 10^-18) of
// a compact magnitude.
func (a u128) split() (ip, frac uint64) {
	return bits.Div64(a.hi, a.lo, pow10[fixedScale]) // a.hi < 10^18 below fixedLimit
}

// trailingZeros counts the trailing decimal zeros of a non-zero fraction
// (at most 17).
func trailingZeros(frac uint64) int {
	n := 0
	for frac%10 == 0 {
		frac /= 10
		n++
	}
	return n
}

func decimalDigits(v uint64) int {
	n := 1
	for n < len(pow10) && v >= pow10[n] {
		n++
	}
	return n
}

// parseFixed reads a string that already matched the amount grammar into
// the compact form; false if it has no compact form (an integer part of
// 20 digits or more, or non-zero digits past the 18th fractional place).
func parseFixed(s string) (Amount, bool) {
	intPart, frac := s, ""
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			intPart, frac = s[:i], s[i+1:]
			break
		}
	}
	for len(frac) > 0 && frac[len(frac)-1] == '0' {
		frac = frac[:len(frac)-1]
	}
	if len(intPart) > 19 || len(frac) > fixedScale {
		return Amount{}, false
	}
	ip, err := strconv.ParseUint(intPart, 10, 64)
	if err != nil {
		return Amount{}, false
	}
	var f uint64
	for i := 0; i < len(frac); i++ {
		f = f*10 + uint64(frac[i]-'0')
	}
	f *= pow10[fixedScale-len(frac)]
	hi, lo := bits.Mul64(ip, pow10[fixedScale])
	m := u128{hi, lo}.add(u128{0, f})
	if m.cmp(fixedLimit) >= 0 {
		return Amount{}, false
	}
	return Amount{v: m}, true
}

// appendFixed appends the canonical form of a compact amount.
func appendFixed(b []byte, a Amount) []byte {
	if a.neg() {
		b = append(b, '-')
	}
	ip, frac := a.mag().split()
	b = strconv.AppendUint(b, ip, 10)
	if frac == 0 {
		return b
	}
	// Drop the trailing zeros first (amounts mostly have few decimals),
	// then write the n digits left, leading zeros included.
	n := fixedScale
	if frac%1e9 == 0 {
		frac, n = frac/1e9, n-9
	}
	for frac%1e4 == 0 {
		frac, n = frac/1e4, n-4
	}
	for frac%10 == 0 {
		frac, n = frac/10, n-1
	}
	var buf [fixedScale]byte
	for i := n - 1; i >= 0; i-- {
		buf[i] = '0' + byte(frac%10)
		frac /= 10
	}
	b = append(b, '.')
	return append(b, buf[:n]...)
}

// addFixed adds two compact amounts; false if the sum has no compact form.
func addFixed(a, b Amount) (Amount, bool) {
	am, bm, an := a.mag(), b.mag(), a.neg()
	if an == b.neg() {
		m := am.add(bm)
		if m.cmp(fixedLimit) >= 0 {
			return Amount{}, false
		}
		return compact(m, an), true
	}
	switch c := am.cmp(bm); {
	case c > 0:
		return compact(am.sub(bm), an), true
	case c < 0:
		return compact(bm.sub(am), !an), true
	}
	return Amount{}, true
}

func cmpFixed(a, b Amount) int {
	sa, sb := a.signFixed(), b.signFixed()
	switch {
	case sa < sb:
		return -1
	case sa > sb:
		return 1
	}
	if sa < 0 {
		return -a.mag().cmp(b.mag())
	}
	return a.mag().cmp(b.mag())
}

func (a Amount) signFixed() int {
	switch {
	case a.v.isZero():
		return 0
	case a.neg():
		return -1
	}
	return 1
}

// coefficient returns c and f with a = c × 10^-f (c < 2^64, f ≤ 18) for a
// compact amount whose digits fit 64 bits.
func (a Amount) coefficient() (c uint64, f int, ok bool) {
	ip, frac := a.mag().split()
	if frac == 0 {
		return ip, 0, true
	}
	tz := trailingZeros(frac)
	f = fixedScale - tz
	// c = ip × 10^f + frac / 10^tz, if it fits.
	hi, lo := bits.Mul64(ip, pow10[f])
	if hi != 0 {
		return 0, 0, false
	}
	c, carry := bits.Add64(lo, frac/pow10[tz], 0)
	return c, f, carry == 0
}

// mulFixed multiplies two compact amounts exactly; false if the product
// has no compact form (or b's digits do not fit 64 bits).
func mulFixed(a, b Amount) (Amount, bool) {
	c, f, ok := b.coefficient()
	if !ok {
		return Amount{}, false
	}
	// p = |a| × c, 192 bits (p2:p1:p0).
	am := a.mag()
	h1, p0 := bits.Mul64(am.lo, c)
	h2, l1 := bits.Mul64(am.hi, c)
	p1, carry := bits.Add64(h1, l1, 0)
	p2 := h2 + carry
	// q = p / 10^f, exactly.
	d := pow10[f]
	if p2 >= d {
		return Amount{}, false
	}
	q1, r := bits.Div64(p2, p1, d)
	q0, r := bits.Div64(r, p0, d)
	if r != 0 {
		return Amount{}, false
	}
	m := u128{q1, q0}
	if m.cmp(fixedLimit) >= 0 {
		return Amount{}, false
	}
	if m.isZero() {
		return Amount{}, true
	}
	return compact(m, a.neg() != b.neg()), true
}
