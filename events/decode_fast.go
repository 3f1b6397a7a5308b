package events

import (
	"time"
	"unicode/utf8"
)

// Single-pass decoders for the data of the event types replay reads most:
// reservation.granted, .committed, .released, .expired and usage.charged.
// The general path (strictUnmarshal: encoding/json with its custom
// unmarshallers) scanned a payload three times with some 150 allocations
// and was most of a takeover's replay cost.
//
// Each decoder reads only the exact compact form the hand-written encoder
// writes (encode_fast.go): fields in struct order, omitempty fields absent
// when empty, no white space, strings without escapes. It either yields
// exactly the value strictUnmarshal yields or declines, and the caller runs
// the general path, which gives the value or the error; it never decides
// an error itself. Amounts follow the bounds the general path uses: Amounts
// maps 38/18, single amounts and unit balances the wide bounds, remaining
// signed with no negative zero. FuzzDecodeEventData (decode_fast_test.go)
// compares both paths.

// decodeData decodes the data of a covered event type, or reports false.
func decodeData(t Type, b []byte) (Data, bool) {
	l := lexer{b: b}
	var (
		d  Data
		ok bool
	)
	switch t {
	case TypeReservationGranted:
		d, ok = l.reservationGranted()
	case TypeReservationCommit:
		d, ok = l.reservationCommitted()
	case TypeReservationReleased:
		d, ok = l.reservationReleased()
	case TypeReservationExpired:
		d, ok = l.reservationExpired()
	case TypeUsageCharged:
		d, ok = l.usageCharged()
	default:
		return nil, false
	}
	if !ok || l.i != len(b) {
		return nil, false
	}
	return d, true
}

// lit consumes s, a run of punctuation and keys, if it comes next.
func (l *lexer) lit(s string) bool {
	if len(l.b)-l.i >= len(s) && string(l.b[l.i:l.i+len(s)]) == s {
		l.i += len(s)
		return true
	}
	return false
}

// text reads a JSON string without escapes or control characters. Other
// bytes are taken as they are when the content is valid UTF-8, which is
// what encoding/json yields for it; invalid UTF-8 (which json replaces by
// U+FFFD) declines.
func (l *lexer) text() (string, bool) {
	if !l.eat('"') {
		return "", false
	}
	start, ascii := l.i, true
	for l.i < len(l.b) {
		c := l.b[l.i]
		switch {
		case c == '"':
			s := l.b[start:l.i]
			if !ascii && !utf8.Valid(s) {
				return "", false
			}
			l.i++
			return string(s), true
		case c == '\\' || c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
		l.i++
	}
	return "", false
}

// time reads a JSON string and gives it to time.Time.UnmarshalJSON, as
// encoding/json does, so the instant and the location are the same.
func (l *lexer) time() (time.Time, bool) {
	start := l.i
	if !l.eat('"') {
		return time.Time{}, false
	}
	for l.i < len(l.b) && l.b[l.i] != '"' {
		if c := l.b[l.i]; c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			return time.Time{}, false
		}
		l.i++
	}
	if !l.eat('"') {
		return time.Time{}, false
	}
	var t time.Time
	if t.UnmarshalJSON(l.b[start:l.i]) != nil {
		return time.Time{}, false
	}
	return t, true
}

// boolean reads true or false.
func (l *lexer) boolean() (bool, bool) {
	if l.lit("true") {
		return true, true
	}
	if l.lit("false") {
		return false, true
	}
	return false, false
}

// smallInt reads -?(0|[1-9][0-9]*) of at most 18 digits: a JSON number that
// encoding/json stores in an int unchanged.
func (l *lexer) smallInt() (int, bool) {
	neg := l.eat('-')
	start, n := l.i, 0
	for l.i < len(l.b) && l.b[l.i] >= '0' && l.b[l.i] <= '9' {
		if l.i-start == 18 {
			return 0, false
		}
		n = n*10 + int(l.b[l.i]-'0')
		l.i++
	}
	if l.i == start || l.i-start > 1 && l.b[start] == '0' {
		return 0, false
	}
	if l.i < len(l.b) && (l.b[l.i] == '.' || l.b[l.i] == 'e' || l.b[l.i] == 'E') {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// amounts is fastAmounts in place: what Amounts.UnmarshalJSON yields for
// the form Encode writes (units valid and in increasing order, ParseAmount).
func (l *lexer) amounts() (Amounts, bool) {
	out := Amounts{}
	ok := l.unitObject(func(u string) bool {
		a, ok := l.amount()
		out[u] = a
		return ok
	})
	return out, ok
}

// unitBalances is fastUnitBalances in place.
func (l *lexer) unitBalances() (UnitBalances, bool) {
	var out UnitBalances
	ok := l.unitObject(func(u string) bool {
		e := UnitEntry{Unit: u}
		var ok bool
		if !l.lit(`{"limit":`) {
			return false
		}
		if e.Limit, ok = l.wideAmount(); !ok || !l.lit(`,"spent":`) {
			return false
		}
		if e.Spent, ok = l.wideAmount(); !ok || !l.lit(`,"reserved":`) {
			return false
		}
		if e.Reserved, ok = l.wideAmount(); !ok || !l.lit(`,"remaining":`) {
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
	return out, ok
}

// optionalLabels reads a `,"labels":{…}` field if it comes next; Encode
// writes it only when non-empty, so an empty or null one declines.
func (l *lexer) optionalLabels() (Labels, bool) {
	if !l.lit(`,"labels":{`) {
		return nil, true
	}
	out := Labels{}
	prev := ""
	for first := true; ; first = false {
		k, ok := l.text()
		if !ok || !first && k <= prev || !l.eat(':') {
			return nil, false
		}
		if out[k], ok = l.text(); !ok {
			return nil, false
		}
		prev = k
		if l.eat('}') {
			return out, true
		}
		if !l.eat(',') {
			return nil, false
		}
	}
}

// array reads a JSON array of objects, null as nil and [] as an empty
// slice, as encoding/json does.
func array[T any](l *lexer, elem func(*lexer, *T) bool) ([]T, bool) {
	if l.lit("null") {
		return nil, true
	}
	if !l.eat('[') {
		return nil, false
	}
	out := make([]T, 0, 4)
	if l.eat(']') {
		return out, true
	}
	for {
		out = append(out, *new(T))
		if !elem(l, &out[len(out)-1]) {
			return nil, false
		}
		if l.eat(']') {
			return out, true
		}
		if !l.eat(',') {
			return nil, false
		}
	}
}

// texts reads string fields, each preceded by its key literal.
func (l *lexer) texts(keys []string, dst ...*string) bool {
	for i, k := range keys {
		if !l.lit(k) {
			return false
		}
		s, ok := l.text()
		if !ok {
			return false
		}
		*dst[i] = s
	}
	return true
}

var instanceKeys = []string{`{"budget":`, `,"pattern":`, `,"scope":`, `,"period":`}

func (l *lexer) instanceView(v *InstanceView) bool {
	if !l.texts(instanceKeys, &v.Budget, &v.Pattern, &v.Scope, &v.Period) {
		return false
	}
	if l.lit(`,"period_end":`) {
		t, ok := l.time()
		if !ok {
			return false
		}
		v.PeriodEnd = &t
	}
	mode, ok := "", l.lit(`,"mode":`)
	if ok {
		mode, ok = l.text()
	}
	if !ok || !l.lit(`,"units":`) {
		return false
	}
	v.Mode = Mode(mode)
	if v.Units, ok = l.unitBalances(); !ok {
		return false
	}
	return l.eat('}')
}

func (l *lexer) instances() ([]InstanceView, bool) {
	return array(l, (*lexer).instanceView)
}

var shadowKeys = []string{`{"budget":`, `,"pattern":`, `,"scope":`, `,"period":`, `,"unit":`}

func (l *lexer) shadowDenial(d *ShadowDenial) bool {
	if !l.texts(shadowKeys, &d.Budget, &d.Pattern, &d.Scope, &d.Period, &d.Unit) {
		return false
	}
	var ok bool
	if !l.lit(`,"requested":`) {
		return false
	}
	if d.Requested, ok = l.wideAmount(); !ok || !l.lit(`,"available":`) {
		return false
	}
	if d.Available, ok = l.wideAmount(); !ok || !l.lit(`,"overage":`) {
		return false
	}
	if d.Overage, ok = l.wideAmount(); !ok {
		return false
	}
	return l.eat('}')
}

func (l *lexer) overLimit(o *OverLimit) bool {
	if !l.texts(shadowKeys, &o.Budget, &o.Pattern, &o.Scope, &o.Period, &o.Unit) || !l.lit(`,"over":`) {
		return false
	}
	var ok bool
	if o.Over, ok = l.wideAmount(); !ok {
		return false
	}
	return l.eat('}')
}

// optionalOverLimits reads a `,"over_limit":[…]` field if it comes next;
// Encode writes it only when non-empty, so null and [] decline.
func (l *lexer) optionalOverLimits() ([]OverLimit, bool) {
	if !l.lit(`,"over_limit":`) {
		return nil, true
	}
	s, ok := array(l, (*lexer).overLimit)
	return s, ok && len(s) > 0
}

var mutationKeys = []string{`{"idempotency_key":`, `,"request_hash":`}

func (l *lexer) mutation(m *Mutation) bool {
	return l.texts(mutationKeys, &m.IdempotencyKey, &m.RequestHash)
}

var idScopeKeys = []string{`,"reservation_id":`, `,"scope":`}

func (l *lexer) reservationGranted() (ReservationGranted, bool) {
	var d ReservationGranted
	var ok bool
	if !l.mutation(&d.Mutation) || !l.texts(idScopeKeys, &d.ReservationID, &d.Scope) || !l.lit(`,"amounts":`) {
		return d, false
	}
	if d.Amounts, ok = l.amounts(); !ok || !l.lit(`,"priority":`) {
		return d, false
	}
	p, ok := l.text()
	if !ok || !l.lit(`,"expires_at":`) {
		return d, false
	}
	d.Priority = Priority(p)
	if d.ExpiresAt, ok = l.time(); !ok || !l.lit(`,"option":`) {
		return d, false
	}
	if d.Option, ok = l.smallInt(); !ok || !l.lit(`,"label":`) {
		return d, false
	}
	if d.Label, ok = l.text(); !ok || !l.lit(`,"degraded":`) {
		return d, false
	}
	if d.Degraded, ok = l.boolean(); !ok {
		return d, false
	}
	if d.Labels, ok = l.optionalLabels(); !ok || !l.lit(`,"instances":`) {
		return d, false
	}
	if d.Instances, ok = l.instances(); !ok || !l.lit(`,"shadow_denials":`) {
		return d, false
	}
	if d.ShadowDenials, ok = array(l, (*lexer).shadowDenial); !ok {
		return d, false
	}
	return d, l.eat('}')
}

func (l *lexer) reservationCommitted() (ReservationCommitted, bool) {
	var d ReservationCommitted
	var ok bool
	if !l.mutation(&d.Mutation) || !l.texts(idScopeKeys, &d.ReservationID, &d.Scope) || !l.lit(`,"charged":`) {
		return d, false
	}
	if d.Charged, ok = l.amounts(); !ok || !l.lit(`,"released":`) {
		return d, false
	}
	if d.Released, ok = l.amounts(); !ok || !l.lit(`,"overage":`) {
		return d, false
	}
	if d.Overage, ok = l.amounts(); !ok || !l.lit(`,"late":`) {
		return d, false
	}
	if d.Late, ok = l.boolean(); !ok {
		return d, false
	}
	if d.Labels, ok = l.optionalLabels(); !ok {
		return d, false
	}
	if d.OverLimit, ok = l.optionalOverLimits(); !ok || !l.lit(`,"instances":`) {
		return d, false
	}
	if d.Instances, ok = l.instances(); !ok {
		return d, false
	}
	return d, l.eat('}')
}

func (l *lexer) reservationReleased() (ReservationReleased, bool) {
	var d ReservationReleased
	var ok bool
	if !l.mutation(&d.Mutation) || !l.texts(idScopeKeys, &d.ReservationID, &d.Scope) || !l.lit(`,"released":`) {
		return d, false
	}
	if d.Released, ok = l.amounts(); !ok || !l.lit(`,"already_expired":`) {
		return d, false
	}
	if d.AlreadyExpired, ok = l.boolean(); !ok || !l.lit(`,"instances":`) {
		return d, false
	}
	if d.Instances, ok = l.instances(); !ok {
		return d, false
	}
	return d, l.eat('}')
}

var expiredKeys = []string{`{"reservation_id":`, `,"scope":`}

func (l *lexer) reservationExpired() (ReservationExpired, bool) {
	var d ReservationExpired
	var ok bool
	if !l.texts(expiredKeys, &d.ReservationID, &d.Scope) || !l.lit(`,"released":`) {
		return d, false
	}
	if d.Released, ok = l.amounts(); !ok || !l.lit(`,"instances":`) {
		return d, false
	}
	if d.Instances, ok = l.instances(); !ok {
		return d, false
	}
	return d, l.eat('}')
}

func (l *lexer) usageCharged() (UsageCharged, bool) {
	var d UsageCharged
	var ok bool
	if !l.mutation(&d.Mutation) || !l.lit(`,"scope":`) {
		return d, false
	}
	if d.Scope, ok = l.text(); !ok || !l.lit(`,"amounts":`) {
		return d, false
	}
	if d.Amounts, ok = l.amounts(); !ok {
		return d, false
	}
	if d.Labels, ok = l.optionalLabels(); !ok {
		return d, false
	}
	if d.OverLimit, ok = l.optionalOverLimits(); !ok || !l.lit(`,"instances":`) {
		return d, false
	}
	if d.Instances, ok = l.instances(); !ok {
		return d, false
	}
	return d, l.eat('}')
}
