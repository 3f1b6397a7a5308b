package events

import (
	"encoding/binary"
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// Fast paths for the compact JSON that this package writes. Replay decodes
// every stored event, and the general strict decoder (reflection, nested
// re-scans, paths for error messages) made that the bottleneck of a
// takeover. A fast path accepts only a strict subset of what the general
// decoder accepts — compact, keys in increasing byte order, strings
// without escapes — and yields the same value; anything else, including
// every invalid input, falls back to the general decoder, which produces
// the error message.

// lexer reads compact JSON.
type lexer struct {
	b []byte
	i int
}

func (l *lexer) eat(c byte) bool {
	if l.i < len(l.b) && l.b[l.i] == c {
		l.i++
		return true
	}
	return false
}

// plainBytes reads a JSON string of ASCII without escapes or control
// characters; the bytes alias the input.
func (l *lexer) plainBytes() ([]byte, bool) {
	if !l.eat('"') {
		return nil, false
	}
	start := l.i
	l.i = plainRun(l.b, l.i)
	for l.i < len(l.b) {
		c := l.b[l.i]
		if c == '"' {
			b := l.b[start:l.i]
			l.i++
			return b, true
		}
		if c == '\\' || c < 0x20 || c >= 0x80 {
			return nil, false
		}
		l.i++
	}
	return nil, false
}

// plainRun returns the index of the first 8-byte word of b from i on
// that may hold a byte a string scan stops at ('"', '\\', a control
// character, a byte of a multi-byte UTF-8 sequence), or of the tail
// shorter than a word: the scan goes on from there byte by byte. The words
// skipped hold plain ASCII only. Strings in events are mostly ids and
// scopes of tens of bytes.
func plainRun(b []byte, i int) int {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		q := x ^ ('"' * ones)  // a zero byte where x has '"'
		e := x ^ ('\\' * ones) // a zero byte where x has '\\'
		// A byte below 0x20 or a zero byte of q or e sets its high bit
		// here (borrows reach only bytes above such a byte); x's own
		// high bits mark non-ASCII bytes.
		if ((x-0x20*ones)|(q-ones)|(e-ones))&^x&highs|x&highs != 0 {
			return i
		}
	}
	return i
}

// plainString reads what plainBytes reads, as a string.
func (l *lexer) plainString() (string, bool) {
	b, ok := l.plainBytes()
	if !ok {
		return "", false
	}
	return string(b), true
}

// key reads the member name want and its colon. It compares bytes in
// place: want is plain ASCII, so an escaped or otherwise different name
// does not match (and the general decoder gets the input), as before.
func (l *lexer) key(want string) bool {
	n := len(want)
	if l.i+n+3 > len(l.b) || l.b[l.i] != '"' || string(l.b[l.i+1:l.i+1+n]) != want || l.b[l.i+1+n] != '"' || l.b[l.i+2+n] != ':' {
		return false
	}
	l.i += n + 3
	return true
}

func (l *lexer) amount() (Amount, bool) {
	s, ok := l.plainString()
	if !ok {
		return Amount{}, false
	}
	a, err := ParseAmount(s)
	return a, err == nil
}

// wideAmount reads an amount within the wide bounds (a computed figure).
func (l *lexer) wideAmount() (Amount, bool) {
	s, ok := l.plainString()
	if !ok {
		return Amount{}, false
	}
	a, err := parseWideAmount(s)
	return a, err == nil
}

func (l *lexer) signed() (Signed, bool) {
	s, ok := l.plainString()
	if !ok {
		return Signed{}, false
	}
	a, err := parseSigned(s, true)
	if err != nil || a.IsZero() && strings.HasPrefix(s, "-") {
		return Signed{}, false
	}
	return Signed{a}, true
}

// object calls f for each key of a compact object whose keys are valid
// units in strictly increasing order.
func (l *lexer) unitObject(f func(unit string) bool) bool { return l.units(l.plainString, f) }

// units is unitObject with the unit names read by read.
func (l *lexer) units(read func() (string, bool), f func(unit string) bool) bool {
	if !l.eat('{') {
		return false
	}
	if l.eat('}') {
		return true
	}
	prev := ""
	for first := true; ; first = false {
		u, ok := read()
		if !ok || !first && u <= prev || ValidateUnit(u) != nil || !l.eat(':') || !f(u) {
			return false
		}
		prev = u
		if l.eat('}') {
			return true
		}
		if !l.eat(',') {
			return false
		}
	}
}

func fastAmounts(b []byte) (Amounts, bool) {
	l := lexer{b: b}
	out := Amounts{}
	ok := l.unitObject(func(u string) bool {
		a, ok := l.amount()
		out[u] = a
		return ok
	})
	return out, ok && l.i == len(b)
}

func fastUnitBalances(b []byte) (UnitBalances, bool) {
	l := lexer{b: b}
	var out UnitBalances
	ok := l.unitObject(func(u string) bool {
		var e UnitEntry
		e.Unit = u
		var ok bool
		if !l.eat('{') || !l.key("limit") {
			return false
		}
		if e.Limit, ok = l.wideAmount(); !ok || !l.eat(',') || !l.key("spent") {
			return false
		}
		if e.Spent, ok = l.wideAmount(); !ok || !l.eat(',') || !l.key("reserved") {
			return false
		}
		if e.Reserved, ok = l.wideAmount(); !ok || !l.eat(',') || !l.key("remaining") {
			return false
		}
		if e.Remaining, ok = l.signed(); !ok || !l.eat('}') {
			return false
		}
		out = append(out, e)
		return true
	})
	if out == nil {
		out = UnitBalances{}
	}
	return out, ok && l.i == len(b)
}

// appendAmounts writes m compactly, units in byte order.
func appendAmounts(buf []byte, m Amounts) []byte {
	units := make([]string, 0, len(m))
	for u := range m {
		units = append(units, u)
	}
	slices.Sort(units)
	buf = append(buf, '{')
	for i, u := range units {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendQuoted(buf, u)
		buf = append(buf, ':')
		buf = appendQuoted(buf, m[u].String())
	}
	return append(buf, '}')
}

func appendUnitBalances(buf []byte, ub UnitBalances) []byte {
	buf = append(buf, '{')
	for i, e := range ub {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendQuoted(buf, e.Unit)
		buf = append(buf, `:{"limit":`...)
		buf = appendQuoted(buf, e.Limit.String())
		buf = append(buf, `,"spent":`...)
		buf = appendQuoted(buf, e.Spent.String())
		buf = append(buf, `,"reserved":`...)
		buf = appendQuoted(buf, e.Reserved.String())
		buf = append(buf, `,"remaining":`...)
		buf = appendQuoted(buf, e.Remaining.String())
		buf = append(buf, '}')
	}
	return append(buf, '}')
}

// appendQuoted quotes s, which must be a unit name or an amount: neither
// holds characters JSON escapes (units are validated, amounts are digits).
func appendQuoted(buf []byte, s string) []byte {
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

// quickUnquote returns the content of a JSON string without escapes.
func quickUnquote(b []byte) (string, bool) {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return "", false
	}
	for _, c := range b[1 : len(b)-1] {
		if c == '\\' || c == '"' || c < 0x20 || c >= 0x80 {
			return "", false
		}
	}
	return string(b[1 : len(b)-1]), true
}

// fastEnvelope reads the envelope exactly as Encode writes it (fields in
// struct order, compact) and leaves data as the raw rest; the data is then
// decoded strictly. It reports false for any other form.
func fastEnvelope(b []byte, v **int, id, typ *string, partition *int, at *time.Time, root, prev *string, data *json.RawMessage) bool {
	l := lexer{b: b}
	if !l.eat('{') || !l.key("v") {
		return false
	}
	ver, ok := l.integer()
	if !ok || !l.eat(',') || !l.key("id") {
		return false
	}
	if *id, ok = l.plainString(); !ok || !l.eat(',') || !l.key("type") {
		return false
	}
	if *typ, ok = l.plainString(); !ok || !l.eat(',') || !l.key("partition") {
		return false
	}
	if *partition, ok = l.integer(); !ok || !l.eat(',') || !l.key("at") {
		return false
	}
	ts, ok := l.plainString()
	if !ok || !l.eat(',') || !l.key("root") {
		return false
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return false
	}
	if *root, ok = l.plainString(); !ok || !l.eat(',') || !l.key("prev") {
		return false
	}
	if *prev, ok = l.plainString(); !ok || !l.eat(',') || !l.key("data") {
		return false
	}
	if len(b) < l.i+2 || b[len(b)-1] != '}' || b[l.i] != '{' {
		return false
	}
	*v, *at, *data = &ver, t, json.RawMessage(b[l.i:len(b)-1])
	return true
}

// integer reads a non-negative JSON integer of at most 9 digits.
func (l *lexer) integer() (int, bool) {
	start, n := l.i, 0
	for l.i < len(l.b) && l.b[l.i] >= '0' && l.b[l.i] <= '9' && l.i-start < 9 {
		n = n*10 + int(l.b[l.i]-'0')
		l.i++
	}
	if l.i == start || l.i-start > 1 && l.b[start] == '0' {
		return 0, false
	}
	return n, true
}
