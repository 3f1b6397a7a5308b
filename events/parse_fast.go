package events

import "unicode/utf8"

// A single-pass decoder for the hot requests (reserve, decide, commit,
// release, extend, charge). DecodeStrict costs a map of raw members, a
// duplicate scan and a reflective decode per field; this reads the bytes
// once and builds the typed request directly.
//
// It either accepts, yielding exactly the value DecodeStrict would, or
// declines, and never reports an error: ParseRequest then runs
// DecodeStrict, which stays the only source of error messages. It accepts
// a subset of what DecodeStrict accepts — known fields, each once, in any
// order, JSON white space between tokens; strings without escapes or
// control characters, in valid UTF-8 (so encoding/json would copy them
// unchanged); amounts as strings ParseAmount accepts; ttl_ms as a
// non-negative integer of at most 18 digits — and declines the rest:
// nulls, unknown or repeated members, escapes, wrong JSON types, numbers
// with a fraction or exponent, garbage before or after the object, more
// units, options or labels than the limits allow. Validation runs after it
// exactly as after the strict path.

// decodeRequestFast decodes data into dst (a pointer to one of the hot
// request types) and reports whether it did; dst is untouched when not.
func decodeRequestFast(data []byte, dst any) bool {
	switch r := dst.(type) {
	case *ReserveRequest:
		return fastInto(r, fastReserveRequest, data)
	case *CommitRequest:
		return fastInto(r, fastCommitRequest, data)
	case *ReleaseRequest:
		return fastInto(r, fastReleaseRequest, data)
	case *ExtendRequest:
		return fastInto(r, fastExtendRequest, data)
	case *ChargeRequest:
		return fastInto(r, fastChargeRequest, data)
	}
	return false
}

// fastInto stores what decode makes of data in dst if it accepts.
func fastInto[T any](dst *T, decode func([]byte) (T, bool), data []byte) bool {
	v, ok := decode(data)
	if ok {
		*dst = v
	}
	return ok
}

func fastReserveRequest(b []byte) (ReserveRequest, bool) {
	var r ReserveRequest
	var seen memberSet
	s := requestScanner{b: b}
	ok := s.document(func(name []byte) bool {
		switch string(name) {
		case "idempotency_key":
			return seen.first(0) && s.str(&r.IdempotencyKey)
		case "scope":
			return seen.first(1) && s.str(&r.Scope)
		case "amounts":
			return seen.first(2) && s.amounts(&r.Amounts)
		case "options":
			return seen.first(3) && s.options(&r.Options)
		case "priority":
			return seen.first(4) && s.priority(&r.Priority)
		case "ttl_ms":
			return seen.first(5) && s.integer(&r.TTLMS)
		case "labels":
			return seen.first(6) && s.labels(&r.Labels)
		}
		return false
	})
	return r, ok
}

func fastCommitRequest(b []byte) (CommitRequest, bool) {
	var r CommitRequest
	var seen memberSet
	s := requestScanner{b: b}
	ok := s.document(func(name []byte) bool {
		switch string(name) {
		case "idempotency_key":
			return seen.first(0) && s.str(&r.IdempotencyKey)
		case "reservation_id":
			return seen.first(1) && s.str(&r.ReservationID)
		case "actual":
			return seen.first(2) && s.amounts(&r.Actual)
		case "labels":
			return seen.first(3) && s.labels(&r.Labels)
		}
		return false
	})
	return r, ok
}

func fastReleaseRequest(b []byte) (ReleaseRequest, bool) {
	var r ReleaseRequest
	var seen memberSet
	s := requestScanner{b: b}
	ok := s.document(func(name []byte) bool {
		switch string(name) {
		case "idempotency_key":
			return seen.first(0) && s.str(&r.IdempotencyKey)
		case "reservation_id":
			return seen.first(1) && s.str(&r.ReservationID)
		}
		return false
	})
	return r, ok
}

func fastExtendRequest(b []byte) (ExtendRequest, bool) {
	var r ExtendRequest
	var seen memberSet
	s := requestScanner{b: b}
	ok := s.document(func(name []byte) bool {
		switch string(name) {
		case "idempotency_key":
			return seen.first(0) && s.str(&r.IdempotencyKey)
		case "reservation_id":
			return seen.first(1) && s.str(&r.ReservationID)
		case "ttl_ms":
			return seen.first(2) && s.integer(&r.TTLMS)
		}
		return false
	})
	return r, ok
}

func fastChargeRequest(b []byte) (ChargeRequest, bool) {
	var r ChargeRequest
	var seen memberSet
	s := requestScanner{b: b}
	ok := s.document(func(name []byte) bool {
		switch string(name) {
		case "idempotency_key":
			return seen.first(0) && s.str(&r.IdempotencyKey)
		case "scope":
			return seen.first(1) && s.str(&r.Scope)
		case "amounts":
			return seen.first(2) && s.amounts(&r.Amounts)
		case "labels":
			return seen.first(3) && s.labels(&r.Labels)
		}
		return false
	})
	return r, ok
}

// memberSet records which members of an object were seen.
type memberSet uint16

// first marks member i and reports whether it was not seen before.
func (m *memberSet) first(i uint) bool {
	if *m&(1<<i) != 0 {
		return false
	}
	*m |= 1 << i
	return true
}

// requestScanner reads the JSON subset described above.
type requestScanner struct {
	b []byte
	i int
}

// space skips JSON white space (not the wider set bytes.TrimSpace strips:
// those documents are the strict path's to judge).
func (s *requestScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// eat consumes c after white space.
func (s *requestScanner) eat(c byte) bool {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// document reads one object, with only white space around it, calling
// member for each name with the scanner before the member's value.
func (s *requestScanner) document(member func(name []byte) bool) bool {
	if !s.object(member) {
		return false
	}
	s.space()
	return s.i == len(s.b)
}

func (s *requestScanner) object(member func(name []byte) bool) bool {
	if !s.eat('{') {
		return false
	}
	if s.eat('}') {
		return true
	}
	for {
		name, ok := s.rawString()
		if !ok || !s.eat(':') || !member(name) {
			return false
		}
		if s.eat('}') {
			return true
		}
		if !s.eat(',') {
			return false
		}
	}
}

// rawString returns the content of a string that encoding/json would
// unquote to the same bytes: no escapes, no control characters, valid UTF-8
// (invalid bytes it would replace with U+FFFD).
func (s *requestScanner) rawString() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start, ascii := s.i, true
	for ; s.i < len(s.b); s.i++ {
		switch c := s.b[s.i]; {
		case c == '"':
			v := s.b[start:s.i]
			s.i++
			return v, ascii || utf8.Valid(v)
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

func (s *requestScanner) str(dst *string) bool {
	v, ok := s.rawString()
	*dst = string(v)
	return ok
}

func (s *requestScanner) priority(dst **Priority) bool {
	v, ok := s.rawString()
	if !ok {
		return false
	}
	p := new(Priority)
	switch string(v) { // the constants, so that the common case copies no bytes
	case string(PriorityCritical):
		*p = PriorityCritical
	case string(PriorityHigh):
		*p = PriorityHigh
	case string(PriorityNormal):
		*p = PriorityNormal
	case string(PriorityLow):
		*p = PriorityLow
	case string(PriorityBulk):
		*p = PriorityBulk
	default:
		*p = Priority(v)
	}
	*dst = p
	return true
}

// integer reads a JSON integer 0 ≤ n < 10^18 (what encoding/json decodes
// into an int64 without complaint, minus signs and overflow).
func (s *requestScanner) integer(dst **int64) bool {
	s.space()
	start := s.i
	var n int64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		if s.i-start == 18 {
			return false
		}
		n = n*10 + int64(s.b[s.i]-'0')
		s.i++
	}
	if s.i == start || s.i-start > 1 && s.b[start] == '0' {
		return false
	}
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case '.', 'e', 'E':
			return false
		}
	}
	*dst = &n
	return true
}

// amounts reads unit → amount as Amounts.UnmarshalJSON does (ParseAmount,
// the 38/18 bounds), at most MaxUnits units.
func (s *requestScanner) amounts(dst *Amounts) bool {
	out := make(Amounts, 2)
	ok := s.object(func(name []byte) bool {
		if len(out) == MaxUnits {
			return false
		}
		if _, dup := out[string(name)]; dup {
			return false
		}
		unit := string(name)
		if ValidateUnit(unit) != nil {
			return false
		}
		v, ok := s.rawString()
		if !ok {
			return false
		}
		a, err := ParseAmount(string(v))
		if err != nil {
			return false
		}
		out[unit] = a
		return true
	})
	*dst = out
	return ok
}

// labels reads name → value, at most MaxLabels labels.
func (s *requestScanner) labels(dst *Labels) bool {
	out := make(Labels, 1)
	ok := s.object(func(name []byte) bool {
		if len(out) == MaxLabels {
			return false
		}
		if _, dup := out[string(name)]; dup {
			return false
		}
		v, ok := s.rawString()
		if !ok {
			return false
		}
		out[string(name)] = string(v)
		return true
	})
	*dst = out
	return ok
}

// options reads the array of options, at most MaxOptions.
func (s *requestScanner) options(dst *Options) bool {
	if !s.eat('[') {
		return false
	}
	out := Options{}
	if s.eat(']') {
		*dst = out
		return true
	}
	for {
		if len(out) == MaxOptions {
			return false
		}
		var o Option
		var seen memberSet
		ok := s.object(func(name []byte) bool {
			switch string(name) {
			case "label":
				return seen.first(0) && s.str(&o.Label)
			case "amounts":
				return seen.first(1) && s.amounts(&o.Amounts)
			}
			return false
		})
		if !ok {
			return false
		}
		out = append(out, o)
		if s.eat(']') {
			*dst = out
			return true
		}
		if !s.eat(',') {
			return false
		}
	}
}
