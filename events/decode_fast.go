package events

import (
	"hash/maphash"
	"math/bits"
	"time"
	"unicode/utf8"
)

// Single-pass decoders for the data of the event types replay reads most:
// reservation.granted, .denied, .committed, .released, .expired and
// usage.charged. The general path (strictUnmarshal: encoding/json with its
// custom unmarshallers) scanned a payload three times with 122 allocations
// for a granted event of three instances, and was most of a takeover's
// replay cost.
//
// Each decoder reads only the exact compact form the hand-written encoder
// writes (encode_fast.go): fields in struct order, omitempty fields absent
// when empty, no white space, strings without escapes (valid UTF-8 is
// taken as is, as encoding/json takes it). It either yields
// exactly the value strictUnmarshal yields or declines, and the caller runs
// the general path, which gives the value or the error; it never decides
// an error itself. Amounts follow the bounds the general path uses: Amounts
// maps 38/18, single amounts and unit balances the wide bounds, remaining
// signed with no negative zero. FuzzDecodeEventData (decode_fast_test.go)
// compares both paths.

// decodeData decodes the data of a covered event type, or reports false.
// Strings are shared through shared when it is not nil.
func decodeData(t Type, b []byte, shared *stringTable) (Data, bool) {
	l := decoder{lexer: lexer{b: b}, shared: shared}
	var (
		d  Data
		ok bool
	)
	switch t {
	case TypeReservationGranted:
		d, ok = l.reservationGranted()
	case TypeReservationDenied:
		l.kind = 1
		d, ok = l.reservationDenied()
	case TypeReservationCommit:
		l.kind = 2
		d, ok = l.reservationCommitted()
	case TypeReservationReleased:
		l.kind = 3
		d, ok = l.reservationReleased()
	case TypeReservationExpired:
		l.kind = 4
		d, ok = l.reservationExpired()
	case TypeUsageCharged:
		l.kind = 5
		d, ok = l.usageCharged()
	default:
		return nil, false
	}
	if !ok || l.i != len(b) {
		return nil, false
	}
	return d, true
}

// decoder is a lexer that shares the strings it reads: the names of units,
// budgets, scopes, periods and modes repeat across an event's instances,
// and a copy each was most of the decoder's allocations. (Strings are
// immutable, so sharing them is invisible.)
type decoder struct {
	lexer
	strs   [24]string
	n      int          // strings read so far
	kind   int          // the event type's row in stringTable.pos
	shared *stringTable // strings of earlier events, if not nil
}

// fastKinds is the number of event types decodeData covers.
const fastKinds = 6

// intern returns b as a string, one it returned before when equal.
func (l *decoder) intern(b []byte) string {
	if l.shared != nil {
		// Events of one type name their strings in the same order, and
		// consecutive ones mostly the same strings: the k-th string of
		// the last event of this type is tried first, with one compare
		// and no hash. Otherwise the shared table, which holds this
		// event's strings as well: a repeat within the event is found
		// there with one hash and one compare, cheaper than the scan
		// below.
		k := l.n
		l.n++
		if k < len(l.shared.pos[0]) {
			slot := &l.shared.pos[l.kind][k]
			if *slot != string(b) {
				*slot = l.shared.string(b)
			}
			return *slot
		}
		return l.shared.string(b)
	}
	for _, s := range l.strs[:l.n] {
		if s == string(b) {
			return s
		}
	}
	s := l.shared.string(b)
	if l.n < len(l.strs) {
		l.strs[l.n] = s
		l.n++
	}
	return s
}

// stringTable shares strings across the events one Decoder decodes: a
// partition's events name the same budgets, scopes, periods and units
// over and over, and replay allocated a copy of each in every event. It is
// a direct-mapped cache: a string seen before is found with one hash and
// one comparison, and a new one takes its slot, so strings that never
// repeat (a run's scope) cost no more than the copy they always did. pos
// holds, for each event type decodeData covers, the strings of the last
// event of that type in the order they were read (see decoder.intern).
type stringTable struct {
	seed  maphash.Seed
	slots []string
	pos   [fastKinds][48]string
}

// stringSlots is a stringTable's size (a power of two).
const stringSlots = 1 << 12

// string returns b as a string, shared when t has seen it (t may be nil).
func (t *stringTable) string(b []byte) string {
	if t == nil {
		return string(b)
	}
	if t.slots == nil {
		t.seed, t.slots = maphash.MakeSeed(), make([]string, stringSlots)
	}
	slot := &t.slots[maphash.Bytes(t.seed, b)&(stringSlots-1)]
	if *slot == string(b) {
		return *slot
	}
	s := string(b)
	*slot = s
	return s
}

// plainText reads what plainString reads, interned.
func (l *decoder) plainText() (string, bool) {
	b, ok := l.plainBytes()
	if !ok {
		return "", false
	}
	return l.intern(b), true
}

// unitObject is lexer.unitObject with interned unit names.
func (l *decoder) unitObject(f func(unit string) bool) bool { return l.units(l.plainText, f) }

// fixed reads a JSON string holding an amount of the form
// (0|[1-9][0-9]{0,18})(\.[0-9]{1,18})? below 10^19 without a string copy.
// Such a string passes the amount grammar within both bounds and
// parseAmount returns parseFixed's value for it, which this computes the
// same way. It reports false, having consumed nothing, for anything else.
func (l *decoder) fixed() (Amount, bool) {
	if l.i >= len(l.b) || l.b[l.i] != '"' {
		return Amount{}, false
	}
	return l.fixedFrom(l.i + 1)
}

// fixedFrom is fixed for the digits at start, past the quote and any sign.
func (l *decoder) fixedFrom(start int) (Amount, bool) {
	b, i := l.b, start
	var ip uint64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		ip = ip*10 + uint64(b[i]-'0')
		i++
	}
	if n := i - start; n == 0 || n > 19 || n > 1 && b[start] == '0' {
		return Amount{}, false
	}
	if i == len(b) {
		return Amount{}, false
	}
	var f uint64
	if b[i] == '.' {
		i++
		fs := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			f = f*10 + uint64(b[i]-'0')
			i++
		}
		n := i - fs
		if n == 0 || n > fixedScale {
			return Amount{}, false
		}
		f *= pow10[fixedScale-n]
	}
	if i == len(b) || b[i] != '"' {
		return Amount{}, false
	}
	hi, lo := bits.Mul64(ip, pow10[fixedScale])
	m := u128{hi, lo}.add(u128{0, f})
	if m.cmp(fixedLimit) >= 0 {
		return Amount{}, false
	}
	l.i = i + 1
	return Amount{v: m}, true
}

// amount reads an amount within the request bounds (ParseAmount).
func (l *decoder) amount() (Amount, bool) {
	if a, ok := l.fixed(); ok {
		return a, true
	}
	return l.lexer.amount()
}

// wideAmount reads an amount within the wide bounds.
func (l *decoder) wideAmount() (Amount, bool) {
	if a, ok := l.fixed(); ok {
		return a, true
	}
	return l.lexer.wideAmount()
}

// signed reads a signed amount within the wide bounds, no negative zero:
// parseSigned negates what the unsigned parse of the rest yields.
func (l *decoder) signed() (Signed, bool) {
	if l.i+1 < len(l.b) && l.b[l.i] == '"' && l.b[l.i+1] == '-' {
		if a, ok := l.fixedFrom(l.i + 2); ok && !a.IsZero() {
			return Signed{a.Neg()}, true
		}
	} else if a, ok := l.fixed(); ok {
		return Signed{a}, true
	}
	return l.lexer.signed()
}

// lit consumes s, a run of punctuation and keys, if it comes next.
func (l *decoder) lit(s string) bool {
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
func (l *decoder) text() (string, bool) {
	if !l.eat('"') {
		return "", false
	}
	start, ascii := l.i, true
	l.i = plainRun(l.b, l.i)
	for l.i < len(l.b) {
		c := l.b[l.i]
		switch {
		case c == '"':
			s := l.b[start:l.i]
			if !ascii && !utf8.Valid(s) {
				return "", false
			}
			l.i++
			return l.intern(s), true
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
func (l *decoder) time() (time.Time, bool) {
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
func (l *decoder) boolean() (bool, bool) {
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
func (l *decoder) smallInt() (int, bool) {
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
func (l *decoder) amounts() (Amounts, bool) {
	out := Amounts{}
	ok := l.unitObject(func(u string) bool {
		a, ok := l.amount()
		out[u] = a
		return ok
	})
	return out, ok
}

// unitBalances is fastUnitBalances in place.
func (l *decoder) unitBalances() (UnitBalances, bool) {
	var buf [MaxUnits]UnitEntry // copied out at the end, as in array
	out, ok := l.unitEntries(buf[:0])
	if !ok {
		return nil, false
	}
	return exact(out), true
}

// unitEntries reads a unit balances object, appending its entries to dst.
func (l *decoder) unitEntries(dst []UnitEntry) ([]UnitEntry, bool) {
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
		dst = append(dst, e)
		return true
	})
	return dst, ok
}

// optionalLabels reads a `,"labels":{…}` field if it comes next; Encode
// writes it only when non-empty, so an empty or null one declines.
func (l *decoder) optionalLabels() (Labels, bool) {
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

// arrayStart opens a JSON array: null reports nil (as encoding/json
// leaves a nil slice), else more reports whether an element follows '['.
func (l *decoder) arrayStart() (null, more, ok bool) {
	if l.lit("null") {
		return true, false, true
	}
	if !l.eat('[') {
		return false, false, false
	}
	return false, !l.eat(']'), true
}

// arrayNext reads what follows an element: ',' (more) or ']'.
func (l *decoder) arrayNext() (more, ok bool) {
	if l.eat(',') {
		return true, true
	}
	return false, l.eat(']')
}

// exact copies s to the heap at its length; [] gives an empty slice, not
// nil, as encoding/json does. The decoders below read elements into a
// buffer on the stack (with direct calls, so that it stays there) and make
// one allocation of the exact size.
func exact[T any](s []T) []T {
	r := make([]T, len(s))
	copy(r, s)
	return r
}

// texts reads string fields, each preceded by its key literal.
func (l *decoder) texts(keys []string, dst ...*string) bool {
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

// instanceView reads a view into v, except for its units and period end:
// it appends those to units and ends (see instances).
func (l *decoder) instanceView(v *InstanceView, units []UnitEntry, ends []time.Time) ([]UnitEntry, []time.Time, bool) {
	if !l.texts(instanceKeys, &v.Budget, &v.Pattern, &v.Scope, &v.Period) {
		return nil, nil, false
	}
	if l.lit(`,"period_end":`) {
		t, ok := l.time()
		if !ok {
			return nil, nil, false
		}
		ends = append(ends, t)
	}
	mode, ok := "", l.lit(`,"mode":`)
	if ok {
		mode, ok = l.text()
	}
	if !ok || !l.lit(`,"units":`) {
		return nil, nil, false
	}
	v.Mode = Mode(mode)
	if units, ok = l.unitEntries(units); !ok {
		return nil, nil, false
	}
	return units, ends, l.eat('}')
}

// instances reads a list of views. The units of all views share one
// allocation, and so do their period ends: an event's views are read and
// dropped together, and replay decodes several per event.
func (l *decoder) instances() ([]InstanceView, bool) {
	null, more, ok := l.arrayStart()
	if null || !ok {
		return nil, ok
	}
	var (
		buf   [4]InstanceView
		ubuf  [12]UnitEntry
		ebuf  [4]time.Time
		nbuf  [4]int  // units of each view
		hbuf  [4]bool // whether each view has a period end
		units = ubuf[:0]
		ends  = ebuf[:0]
	)
	out, counts, hasEnd := buf[:0], nbuf[:0], hbuf[:0]
	for more {
		out = append(out, InstanceView{})
		nu, ne := len(units), len(ends)
		if units, ends, ok = l.instanceView(&out[len(out)-1], units, ends); !ok {
			return nil, false
		}
		counts, hasEnd = append(counts, len(units)-nu), append(hasEnd, len(ends) > ne)
		if more, ok = l.arrayNext(); !ok {
			return nil, false
		}
	}
	us, es := exact(units), exact(ends)
	for i := range out {
		v, n := &out[i], counts[i]
		v.Units, us = UnitBalances(us[:n:n]), us[n:]
		if hasEnd[i] {
			v.PeriodEnd, es = &es[0], es[1:]
		}
	}
	return exact(out), true
}

func (l *decoder) shadowDenials() ([]ShadowDenial, bool) {
	null, more, ok := l.arrayStart()
	if null || !ok {
		return nil, ok
	}
	var buf [4]ShadowDenial
	out := buf[:0]
	for more {
		out = append(out, ShadowDenial{})
		if !l.shadowDenial(&out[len(out)-1]) {
			return nil, false
		}
		if more, ok = l.arrayNext(); !ok {
			return nil, false
		}
	}
	return exact(out), true
}

func (l *decoder) overLimits() ([]OverLimit, bool) {
	null, more, ok := l.arrayStart()
	if null || !ok {
		return nil, ok
	}
	var buf [4]OverLimit
	out := buf[:0]
	for more {
		out = append(out, OverLimit{})
		if !l.overLimit(&out[len(out)-1]) {
			return nil, false
		}
		if more, ok = l.arrayNext(); !ok {
			return nil, false
		}
	}
	return exact(out), true
}

var shadowKeys = []string{`{"budget":`, `,"pattern":`, `,"scope":`, `,"period":`, `,"unit":`}

func (l *decoder) shadowDenial(d *ShadowDenial) bool {
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

func (l *decoder) overLimit(o *OverLimit) bool {
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
func (l *decoder) optionalOverLimits() ([]OverLimit, bool) {
	if !l.lit(`,"over_limit":`) {
		return nil, true
	}
	s, ok := l.overLimits()
	return s, ok && len(s) > 0
}

var mutationKeys = []string{`{"idempotency_key":`, `,"request_hash":`}

func (l *decoder) mutation(m *Mutation) bool {
	return l.texts(mutationKeys, &m.IdempotencyKey, &m.RequestHash)
}

var idScopeKeys = []string{`,"reservation_id":`, `,"scope":`}

func (l *decoder) reservationGranted() (*ReservationGranted, bool) {
	d := new(ReservationGranted)
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
	if d.ShadowDenials, ok = l.shadowDenials(); !ok {
		return d, false
	}
	return d, l.eat('}')
}

func (l *decoder) reservationCommitted() (*ReservationCommitted, bool) {
	d := new(ReservationCommitted)
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

func (l *decoder) reservationReleased() (*ReservationReleased, bool) {
	d := new(ReservationReleased)
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

func (l *decoder) reservationExpired() (*ReservationExpired, bool) {
	d := new(ReservationExpired)
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

func (l *decoder) usageCharged() (*UsageCharged, bool) {
	d := new(UsageCharged)
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

// options reads what Options.UnmarshalJSON yields for the form Encode
// writes: an array (never null) of {"label":…,"amounts":{…}}, the label
// omitted when empty.
func (l *decoder) options() (Options, bool) {
	if !l.eat('[') {
		return nil, false
	}
	var buf [4]Option
	out := buf[:0]
	for more := !l.eat(']'); more; {
		var o Option
		var ok bool
		if !l.eat('{') {
			return nil, false
		}
		if l.lit(`"label":`) {
			if o.Label, ok = l.text(); !ok || o.Label == "" || !l.eat(',') {
				return nil, false
			}
		}
		if !l.lit(`"amounts":`) {
			return nil, false
		}
		if o.Amounts, ok = l.amounts(); !ok || !l.eat('}') {
			return nil, false
		}
		out = append(out, o)
		if more, ok = l.arrayNext(); !ok {
			return nil, false
		}
	}
	return exact(out), true
}

var denialKeys = []string{`{"code":`, `,"budget":`, `,"pattern":`, `,"scope":`, `,"period":`, `,"unit":`}

func (l *decoder) denial(d *Denial) bool {
	var code string
	if !l.texts(denialKeys, &code, &d.Budget, &d.Pattern, &d.Scope, &d.Period, &d.Unit) || !l.lit(`,"requested":`) {
		return false
	}
	d.Code = DenialCode(code)
	var ok bool
	if d.Requested, ok = l.wideAmount(); !ok || !l.lit(`,"available":`) {
		return false
	}
	if d.Available, ok = l.wideAmount(); !ok {
		return false
	}
	return l.eat('}')
}

func (l *decoder) reservationDenied() (*ReservationDenied, bool) {
	d := new(ReservationDenied)
	var ok bool
	if !l.mutation(&d.Mutation) || !l.lit(`,"scope":`) {
		return d, false
	}
	if d.Scope, ok = l.text(); !ok || !l.lit(`,"options":`) {
		return d, false
	}
	if d.Options, ok = l.options(); !ok || !l.lit(`,"priority":`) {
		return d, false
	}
	p, ok := l.text()
	if !ok {
		return d, false
	}
	d.Priority = Priority(p)
	if d.Labels, ok = l.optionalLabels(); !ok || !l.lit(`,"denial":`) || !l.denial(&d.Denial) || !l.lit(`,"instances":`) {
		return d, false
	}
	if d.Instances, ok = l.instances(); !ok {
		return d, false
	}
	return d, l.eat('}')
}
