package events

import (
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Hand-written encoders for the hot path: events, the answers the enforcer
// writes, and the requests RequestHash fingerprints. encoding/json spent
// most of an event's encoding time in reflection; these write the same
// bytes directly.
//
// The contract is byte identity with json.Marshal, because the bytes are
// hashed into the partition chain and into request fingerprints that are
// stored in events: a changed byte would break a chain or make a retry an
// IDEMPOTENCY_CONFLICT. So each function mirrors its struct field by field
// (order, omitempty, nil as null) and every custom marshaller (Amounts,
// UnitBalances, Options, SignedAmounts, Amount, Signed, time.Time). Where
// reproducing encoding/json would take more than a few lines — a unit name
// with characters that Amounts.MarshalJSON would leave to json's compaction
// to escape or reject, a time that does not fit RFC 3339 — the writer
// fails and the caller falls back to json.Marshal, which gives the bytes or
// the error. Validated data never takes that path. A differential test and
// a fuzz target (encode_fast_test.go) compare both encoders, and a test
// sets every field of every covered type, so a field added to a struct
// without its encoder fails there.

// writer appends JSON to b.
type writer struct {
	b []byte
	// failed is set by a value the writer does not render as
	// encoding/json would; the caller then falls back to json.Marshal.
	failed bool
	// lists counts the instance lists written, and b[listFrom:listTo] is
	// the last one.
	lists            int
	listFrom, listTo int
	// views, if set, is the encoding of the next instance list to write,
	// copied instead of rendered: the caller vouches that it is that list's.
	views []byte
}

// scratch holds reusable buffers: callers copy the result out, so a buffer
// is never shared.
var scratch = sync.Pool{New: func() any { return &writer{b: make([]byte, 0, 4096)} }}

// maxScratch bounds what the pool keeps: an occasional huge value should
// not pin its buffer.
const maxScratch = 64 << 10

func getWriter() *writer {
	w := scratch.Get().(*writer)
	*w = writer{b: w.b[:0]}
	return w
}

func putWriter(w *writer) {
	if cap(w.b) <= maxScratch {
		scratch.Put(w)
	}
}

// encodeEvent is Encode's fast path (ev.At must already be in UTC). It
// also returns the encoding of the event's instance views, a subslice of
// its bytes, if the event has exactly one list of them.
func encodeEvent(ev *Event) (raw, views []byte, ok bool) {
	w := getWriter()
	defer putWriter(w)
	if !w.event(ev) || w.failed {
		return nil, nil, false
	}
	raw = slices.Clone(w.b)
	if w.lists == 1 {
		views = raw[w.listFrom:w.listTo:w.listTo]
	}
	return raw, views, true
}

// AppendResult appends the JSON encoding of an answer's result — the bytes
// json.Marshal(v) writes — to b. It covers the result types the enforcer
// answers with (ReserveResult, CommitResult, ReleaseResult, ExtendResult,
// ChargeResult, BalanceResult, BudgetResult, BudgetListResult,
// BudgetDeleteResult, BudgetAdjustResult, ReservationView), passed by
// value. For any other value, or one only json.Marshal can render (or
// refuse), it returns b unchanged and false: the caller uses json.Marshal.
func AppendResult(b []byte, v any) ([]byte, bool) { return appendResult(b, v, nil) }

// appendResult is AppendResult, copying views (if not nil) as the
// result's instance list (AppendResultAnswerViews).
func appendResult(b []byte, v any, views []byte) ([]byte, bool) {
	w := writer{b: b, views: views}
	if !w.result(v) || w.failed {
		return b, false
	}
	return w.b, true
}

// appendRequest appends the canonical encoding of a parsed request (what
// json.Marshal writes) to b, or reports false for a type it does not cover.
func appendRequest(b []byte, req any) ([]byte, bool) {
	w := writer{b: b}
	if !w.request(req) || w.failed {
		return b, false
	}
	return w.b, true
}

// Scalars.

func (w *writer) raw(s string) { w.b = append(w.b, s...) }

func (w *writer) int(n int64) { w.b = strconv.AppendInt(w.b, n, 10) }

func (w *writer) uint(n uint64) { w.b = strconv.AppendUint(w.b, n, 10) }

func (w *writer) bool(v bool) { w.b = strconv.AppendBool(w.b, v) }

// string is encoding/json's appendString with HTML escaping, its default:
// ", \ and control characters escaped (\b \f \n \r \t by name, the rest as
// \u00XX), < > & as \u003c \u003e \u0026, U+2028 and U+2029 escaped, and
// each byte of invalid UTF-8 replaced by \ufffd.
func (w *writer) string(s string) {
	const hex = "0123456789abcdef"
	// The common case, a string of safe ASCII bytes only, is one table
	// look-up per byte and one copy.
	i := 0
	for i < len(s) && safeASCII[s[i]] {
		i++
	}
	b := append(w.b, '"')
	if i == len(s) {
		b = append(b, s...)
		w.b = append(b, '"')
		return
	}
	start := 0
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if safeASCII[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	w.b = append(b, '"')
}

// htmlSafe reports whether encoding/json writes the ASCII byte c as is.
func htmlSafe(c byte) bool {
	return c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}

// safeASCII[c] is htmlSafe(c), as a table: the string writer's loop.
var safeASCII = func() (t [256]bool) {
	for c := range t {
		t[c] = htmlSafe(byte(c))
	}
	return t
}()

// plainUnit reports whether a unit name comes out of Amounts.MarshalJSON
// and UnitBalances.MarshalJSON (which quote it without escaping) unchanged
// by json's compaction. Valid units always do.
func plainUnit(u string) bool {
	for i := 0; i < len(u); i++ {
		if !htmlSafe(u[i]) {
			return false
		}
	}
	return true
}

// time is time.Time.MarshalJSON; a time outside RFC 3339 fails.
func (w *writer) time(t time.Time) {
	b, err := t.AppendText(append(w.b, '"'))
	if err != nil {
		w.failed = true
		return
	}
	w.b = append(b, '"')
}

// amount is Amount.MarshalText as a JSON string: the canonical form has
// only digits, '.' and '-', which need no escaping.
func (w *writer) amount(a Amount) {
	w.b = append(a.Append(append(w.b, '"')), '"')
}

// signed is Signed.MarshalText as a JSON string.
func (w *writer) signed(s Signed) { w.amount(s.Amount) }

// Collections.

// list writes a slice, nil as null.
func list[T any](w *writer, s []T, elem func(*writer, *T)) {
	if s == nil {
		w.raw("null")
		return
	}
	w.b = append(w.b, '[')
	for i := range s {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		elem(w, &s[i])
	}
	w.b = append(w.b, ']')
}

// sortedKeysInto returns m's keys in byte order, in buf when it is large
// enough (maps here hold at most 16 units or labels).
func sortedKeysInto[K ~string, V any](buf []string, m map[K]V) []string {
	keys := buf[:0]
	for k := range m {
		keys = append(keys, string(k))
	}
	slices.Sort(keys)
	return keys
}

// amounts is Amounts.MarshalJSON: units in byte order, nil as {}.
func (w *writer) amounts(m Amounts) {
	var buf [MaxUnits]string
	w.b = append(w.b, '{')
	for i, u := range sortedKeysInto(buf[:], m) {
		if !plainUnit(u) {
			w.failed = true
			return
		}
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.b = append(append(append(w.b, '"'), u...), `":`...)
		w.amount(m[u])
	}
	w.b = append(w.b, '}')
}

// signedAmounts is SignedAmounts.MarshalJSON: a json.Marshal of the map
// (keys escaped, in byte order), nil as {}.
func (w *writer) signedAmounts(m SignedAmounts) {
	var buf [MaxUnits]string
	w.b = append(w.b, '{')
	for i, u := range sortedKeysInto(buf[:], m) {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.string(u)
		w.b = append(w.b, ':')
		w.signed(m[u])
	}
	w.b = append(w.b, '}')
}

// unitBalances is UnitBalances.MarshalJSON: an object in slice order, nil
// as {}.
func (w *writer) unitBalances(ub UnitBalances) {
	w.b = append(w.b, '{')
	for i := range ub {
		e := &ub[i]
		if !plainUnit(e.Unit) {
			w.failed = true
			return
		}
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.b = append(append(append(w.b, '"'), e.Unit...), `":{"limit":`...)
		w.amount(e.Limit)
		w.raw(`,"spent":`)
		w.amount(e.Spent)
		w.raw(`,"reserved":`)
		w.amount(e.Reserved)
		w.raw(`,"remaining":`)
		w.signed(e.Remaining)
		w.b = append(w.b, '}')
	}
	w.b = append(w.b, '}')
}

// labels is a plain map[string]string: keys in byte order, nil as null.
func (w *writer) labels(l Labels) {
	if l == nil {
		w.raw("null")
		return
	}
	var buf [MaxLabels]string
	w.b = append(w.b, '{')
	for i, k := range sortedKeysInto(buf[:], l) {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.string(k)
		w.b = append(w.b, ':')
		w.string(l[k])
	}
	w.b = append(w.b, '}')
}

// priorityFloors is a plain map with string keys: nil as null.
func (w *writer) priorityFloors(m map[Priority]Amount) {
	if m == nil {
		w.raw("null")
		return
	}
	var buf [8]string
	w.b = append(w.b, '{')
	for i, p := range sortedKeysInto(buf[:], m) {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.string(p)
		w.b = append(w.b, ':')
		w.amount(m[Priority(p)])
	}
	w.b = append(w.b, '}')
}

func (w *writer) amountList(s []Amount) {
	list(w, s, func(w *writer, a *Amount) { w.amount(*a) })
}

// options is Options.MarshalJSON: nil as [].
func (w *writer) options(os Options) {
	if len(os) == 0 {
		w.raw("[]")
		return
	}
	list(w, os, (*writer).option)
}

// Structs, field by field.

func (w *writer) option(o *Option) {
	w.b = append(w.b, '{')
	if o.Label != "" {
		w.raw(`"label":`)
		w.string(o.Label)
		w.b = append(w.b, ',')
	}
	w.raw(`"amounts":`)
	w.amounts(o.Amounts)
	w.b = append(w.b, '}')
}

func (w *writer) instanceView(v *InstanceView) {
	w.raw(`{"budget":`)
	w.string(v.Budget)
	w.raw(`,"pattern":`)
	w.string(v.Pattern)
	w.raw(`,"scope":`)
	w.string(v.Scope)
	w.raw(`,"period":`)
	w.string(v.Period)
	if v.PeriodEnd != nil {
		w.raw(`,"period_end":`)
		w.time(*v.PeriodEnd)
	}
	w.raw(`,"mode":`)
	w.string(string(v.Mode))
	w.raw(`,"units":`)
	w.unitBalances(v.Units)
	w.b = append(w.b, '}')
}

func (w *writer) instances(s []InstanceView) {
	if w.views != nil {
		w.b, w.views = append(w.b, w.views...), nil
		return
	}
	from := len(w.b)
	list(w, s, (*writer).instanceView)
	w.lists, w.listFrom, w.listTo = w.lists+1, from, len(w.b)
}

func (w *writer) denial(d *Denial) {
	w.raw(`{"code":`)
	w.string(string(d.Code))
	w.raw(`,"budget":`)
	w.string(d.Budget)
	w.raw(`,"pattern":`)
	w.string(d.Pattern)
	w.raw(`,"scope":`)
	w.string(d.Scope)
	w.raw(`,"period":`)
	w.string(d.Period)
	w.raw(`,"unit":`)
	w.string(d.Unit)
	w.raw(`,"requested":`)
	w.amount(d.Requested)
	w.raw(`,"available":`)
	w.amount(d.Available)
	w.b = append(w.b, '}')
}

func (w *writer) shadowDenial(d *ShadowDenial) {
	w.raw(`{"budget":`)
	w.string(d.Budget)
	w.raw(`,"pattern":`)
	w.string(d.Pattern)
	w.raw(`,"scope":`)
	w.string(d.Scope)
	w.raw(`,"period":`)
	w.string(d.Period)
	w.raw(`,"unit":`)
	w.string(d.Unit)
	w.raw(`,"requested":`)
	w.amount(d.Requested)
	w.raw(`,"available":`)
	w.amount(d.Available)
	w.raw(`,"overage":`)
	w.amount(d.Overage)
	w.b = append(w.b, '}')
}

func (w *writer) shadowDenials(s []ShadowDenial) { list(w, s, (*writer).shadowDenial) }

func (w *writer) overLimit(o *OverLimit) {
	w.raw(`{"budget":`)
	w.string(o.Budget)
	w.raw(`,"pattern":`)
	w.string(o.Pattern)
	w.raw(`,"scope":`)
	w.string(o.Scope)
	w.raw(`,"period":`)
	w.string(o.Period)
	w.raw(`,"unit":`)
	w.string(o.Unit)
	w.raw(`,"over":`)
	w.amount(o.Over)
	w.b = append(w.b, '}')
}

// overLimits writes an `over_limit,omitempty` field with its leading comma.
func (w *writer) overLimits(s []OverLimit) {
	if len(s) > 0 {
		w.raw(`,"over_limit":`)
		list(w, s, (*writer).overLimit)
	}
}

// optionalLabels writes a `labels,omitempty` field with its leading comma.
func (w *writer) optionalLabels(l Labels) {
	if len(l) > 0 {
		w.raw(`,"labels":`)
		w.labels(l)
	}
}

func (w *writer) budget(b *Budget) {
	w.raw(`{"scope":`)
	w.string(b.Scope)
	w.raw(`,"name":`)
	w.string(b.Name)
	w.raw(`,"limits":`)
	w.amounts(b.Limits)
	w.raw(`,"period":`)
	w.string(string(b.Period))
	w.raw(`,"timezone":`)
	w.string(b.Timezone)
	w.raw(`,"mode":`)
	w.string(string(b.Mode))
	w.raw(`,"priority_floors":`)
	w.priorityFloors(b.PriorityFloors)
	w.raw(`,"alert_thresholds":`)
	w.amountList(b.AlertThresholds)
	w.b = append(w.b, '}')
}

func (w *writer) eventRef(r *EventRef) {
	if r == nil {
		w.raw("null")
		return
	}
	w.raw(`{"partition":`)
	w.int(int64(r.Partition))
	w.raw(`,"seq":`)
	w.uint(r.Seq)
	w.b = append(w.b, '}')
}

// Events.

// event writes the envelope and its data; it reports false for data of a
// type it does not know (a pointer, say), which json.Marshal renders.
func (w *writer) event(ev *Event) bool {
	w.raw(`{"v":`)
	w.int(int64(ev.V))
	w.raw(`,"id":`)
	w.string(ev.ID)
	w.raw(`,"type":`)
	w.string(string(ev.Type))
	w.raw(`,"partition":`)
	w.int(int64(ev.Partition))
	w.raw(`,"at":`)
	w.time(ev.At)
	w.raw(`,"root":`)
	w.string(ev.Root)
	w.raw(`,"prev":`)
	w.string(ev.Prev)
	w.raw(`,"data":`)
	if !w.data(ev.Data) {
		return false
	}
	w.b = append(w.b, '}')
	return true
}

func (w *writer) data(d Data) bool {
	switch d := d.(type) {
	case *BudgetSet:
		w.budgetSet(d)
	case *BudgetDeleted:
		w.budgetDeleted(d)
	case *BudgetAdjusted:
		w.budgetAdjusted(d)
	case *ReservationGranted:
		w.reservationGranted(d)
	case *ReservationDenied:
		w.reservationDenied(d)
	case *ReservationCommitted:
		w.reservationCommitted(d)
	case *ReservationReleased:
		w.reservationReleased(d)
	case *ReservationExtended:
		w.reservationExtended(d)
	case *ReservationExpired:
		w.reservationExpired(d)
	case *UsageCharged:
		w.usageCharged(d)
	case *ThresholdCrossed:
		w.thresholdCrossed(d)
	case *PartitionClaimed:
		w.partitionClaimed(d)
	default:
		return false
	}
	return true
}

// mutation writes the embedded Mutation's fields, which open the object.
func (w *writer) mutation(m *Mutation) {
	w.raw(`{"idempotency_key":`)
	w.string(m.IdempotencyKey)
	w.raw(`,"request_hash":`)
	w.string(m.RequestHash)
}

func (w *writer) budgetSet(d *BudgetSet) {
	w.mutation(&d.Mutation)
	w.raw(`,"budget":`)
	w.budget(&d.Budget)
	w.b = append(w.b, '}')
}

func (w *writer) budgetDeleted(d *BudgetDeleted) {
	w.mutation(&d.Mutation)
	w.raw(`,"scope":`)
	w.string(d.Scope)
	w.raw(`,"name":`)
	w.string(d.Name)
	w.b = append(w.b, '}')
}

func (w *writer) budgetAdjusted(d *BudgetAdjusted) {
	w.mutation(&d.Mutation)
	w.raw(`,"budget":`)
	w.string(d.Budget)
	w.raw(`,"pattern":`)
	w.string(d.Pattern)
	w.raw(`,"scope":`)
	w.string(d.Scope)
	w.raw(`,"period":`)
	w.string(d.Period)
	w.raw(`,"delta":`)
	w.signedAmounts(d.Delta)
	w.raw(`,"reason":`)
	w.string(d.Reason)
	w.raw(`,"instance":`)
	w.instanceView(&d.Instance)
	w.b = append(w.b, '}')
}

func (w *writer) reservationGranted(d *ReservationGranted) {
	w.mutation(&d.Mutation)
	w.raw(`,"reservation_id":`)
	w.string(d.ReservationID)
	w.raw(`,"scope":`)
	w.string(d.Scope)
	w.raw(`,"amounts":`)
	w.amounts(d.Amounts)
	w.raw(`,"priority":`)
	w.string(string(d.Priority))
	w.raw(`,"expires_at":`)
	w.time(d.ExpiresAt)
	w.raw(`,"option":`)
	w.int(int64(d.Option))
	w.raw(`,"label":`)
	w.string(d.Label)
	w.raw(`,"degraded":`)
	w.bool(d.Degraded)
	w.optionalLabels(d.Labels)
	w.raw(`,"instances":`)
	w.instances(d.Instances)
	w.raw(`,"shadow_denials":`)
	w.shadowDenials(d.ShadowDenials)
	w.b = append(w.b, '}')
}

func (w *writer) reservationDenied(d *ReservationDenied) {
	w.mutation(&d.Mutation)
	w.raw(`,"scope":`)
	w.string(d.Scope)
	w.raw(`,"options":`)
	w.options(d.Options)
	w.raw(`,"priority":`)
	w.string(string(d.Priority))
	w.optionalLabels(d.Labels)
	w.raw(`,"denial":`)
	w.denial(&d.Denial)
	w.raw(`,"instances":`)
	w.instances(d.Instances)
	w.b = append(w.b, '}')
}

func (w *writer) reservationCommitted(d *ReservationCommitted) {
	w.mutation(&d.Mutation)
	w.raw(`,"reservation_id":`)
	w.string(d.ReservationID)
	w.raw(`,"scope":`)
	w.string(d.Scope)
	w.raw(`,"charged":`)
	w.amounts(d.Charged)
	w.raw(`,"released":`)
	w.amounts(d.Released)
	w.raw(`,"overage":`)
	w.amounts(d.Overage)
	w.raw(`,"late":`)
	w.bool(d.Late)
	w.optionalLabels(d.Labels)
	w.overLimits(d.OverLimit)
	w.raw(`,"instances":`)
	w.instances(d.Instances)
	w.b = append(w.b, '}')
}

func (w *writer) reservationReleased(d *ReservationReleased) {
	w.mutation(&d.Mutation)
	w.raw(`,"reservation_id":`)
	w.string(d.ReservationID)
	w.raw(`,"scope":`)
	w.string(d.Scope)
	w.raw(`,"released":`)
	w.amounts(d.Released)
	w.raw(`,"already_expired":`)
	w.bool(d.AlreadyExpired)
	w.raw(`,"instances":`)
	w.instances(d.Instances)
	w.b = append(w.b, '}')
}

func (w *writer) reservationExtended(d *ReservationExtended) {
	w.mutation(&d.Mutation)
	w.raw(`,"reservation_id":`)
	w.string(d.ReservationID)
	w.raw(`,"scope":`)
	w.string(d.Scope)
	w.raw(`,"expires_at":`)
	w.time(d.ExpiresAt)
	w.b = append(w.b, '}')
}

func (w *writer) reservationExpired(d *ReservationExpired) {
	w.raw(`{"reservation_id":`)
	w.string(d.ReservationID)
	w.raw(`,"scope":`)
	w.string(d.Scope)
	w.raw(`,"released":`)
	w.amounts(d.Released)
	w.raw(`,"instances":`)
	w.instances(d.Instances)
	w.b = append(w.b, '}')
}

func (w *writer) usageCharged(d *UsageCharged) {
	w.mutation(&d.Mutation)
	w.raw(`,"scope":`)
	w.string(d.Scope)
	w.raw(`,"amounts":`)
	w.amounts(d.Amounts)
	w.optionalLabels(d.Labels)
	w.overLimits(d.OverLimit)
	w.raw(`,"instances":`)
	w.instances(d.Instances)
	w.b = append(w.b, '}')
}

func (w *writer) thresholdCrossed(d *ThresholdCrossed) {
	w.raw(`{"budget":`)
	w.string(d.Budget)
	w.raw(`,"pattern":`)
	w.string(d.Pattern)
	w.raw(`,"scope":`)
	w.string(d.Scope)
	w.raw(`,"period":`)
	w.string(d.Period)
	w.raw(`,"mode":`)
	w.string(string(d.Mode))
	w.raw(`,"unit":`)
	w.string(d.Unit)
	w.raw(`,"threshold":`)
	w.string(d.Threshold)
	w.raw(`,"limit":`)
	w.amount(d.Limit)
	w.raw(`,"spent":`)
	w.amount(d.Spent)
	w.raw(`,"reserved":`)
	w.amount(d.Reserved)
	w.b = append(w.b, '}')
}

func (w *writer) partitionClaimed(d *PartitionClaimed) {
	w.raw(`{"owner":`)
	w.string(d.Owner)
	w.raw(`,"epoch":`)
	w.uint(d.Epoch)
	w.b = append(w.b, '}')
}

// Results.

func (w *writer) result(v any) bool {
	switch v := v.(type) {
	case ReserveResult:
		w.reserveResult(&v)
	case CommitResult:
		w.commitResult(&v)
	case ReleaseResult:
		w.releaseResult(&v)
	case ExtendResult:
		w.extendResult(&v)
	case ChargeResult:
		w.chargeResult(&v)
	case BalanceResult:
		w.balanceResult(&v)
	case BudgetResult:
		w.budgetResult(&v)
	case BudgetListResult:
		w.budgetListResult(&v)
	case BudgetDeleteResult:
		w.budgetDeleteResult(&v)
	case BudgetAdjustResult:
		w.budgetAdjustResult(&v)
	case ReservationView:
		w.reservationView(&v)
	default:
		return false
	}
	return true
}

func (w *writer) reserveResult(r *ReserveResult) {
	w.raw(`{"decision":`)
	w.string(r.Decision)
	if r.ReservationID != "" {
		w.raw(`,"reservation_id":`)
		w.string(r.ReservationID)
	}
	if r.ExpiresAt != nil {
		w.raw(`,"expires_at":`)
		w.time(*r.ExpiresAt)
	}
	w.raw(`,"option":`)
	w.int(int64(r.Option))
	w.raw(`,"label":`)
	w.string(r.Label)
	w.raw(`,"degraded":`)
	w.bool(r.Degraded)
	w.raw(`,"instances":`)
	w.instances(r.Instances)
	if r.Denial != nil {
		w.raw(`,"denial":`)
		w.denial(r.Denial)
	}
	w.raw(`,"shadow_denials":`)
	w.shadowDenials(r.ShadowDenials)
	if r.Event != nil {
		w.raw(`,"event":`)
		w.eventRef(r.Event)
	}
	w.b = append(w.b, '}')
}

func (w *writer) commitResult(r *CommitResult) {
	w.raw(`{"reservation_id":`)
	w.string(r.ReservationID)
	w.raw(`,"charged":`)
	w.amounts(r.Charged)
	w.raw(`,"released":`)
	w.amounts(r.Released)
	w.raw(`,"overage":`)
	w.amounts(r.Overage)
	w.raw(`,"late":`)
	w.bool(r.Late)
	w.overLimits(r.OverLimit)
	w.raw(`,"instances":`)
	w.instances(r.Instances)
	w.raw(`,"event":`)
	w.eventRef(r.Event)
	w.b = append(w.b, '}')
}

func (w *writer) releaseResult(r *ReleaseResult) {
	w.raw(`{"reservation_id":`)
	w.string(r.ReservationID)
	w.raw(`,"released":`)
	w.amounts(r.Released)
	w.raw(`,"already_expired":`)
	w.bool(r.AlreadyExpired)
	w.raw(`,"instances":`)
	w.instances(r.Instances)
	w.raw(`,"event":`)
	w.eventRef(r.Event)
	w.b = append(w.b, '}')
}

func (w *writer) extendResult(r *ExtendResult) {
	w.raw(`{"reservation_id":`)
	w.string(r.ReservationID)
	w.raw(`,"expires_at":`)
	w.time(r.ExpiresAt)
	w.raw(`,"event":`)
	w.eventRef(r.Event)
	w.b = append(w.b, '}')
}

func (w *writer) chargeResult(r *ChargeResult) {
	w.raw(`{"scope":`)
	w.string(r.Scope)
	w.raw(`,"charged":`)
	w.amounts(r.Charged)
	w.overLimits(r.OverLimit)
	w.raw(`,"instances":`)
	w.instances(r.Instances)
	w.raw(`,"event":`)
	w.eventRef(r.Event)
	w.b = append(w.b, '}')
}

func (w *writer) balanceResult(r *BalanceResult) {
	w.raw(`{"scope":`)
	w.string(r.Scope)
	w.raw(`,"instances":`)
	w.instances(r.Instances)
	w.b = append(w.b, '}')
}

func (w *writer) budgetResult(r *BudgetResult) {
	w.raw(`{"budget":`)
	w.budget(&r.Budget)
	if r.Event != nil {
		w.raw(`,"event":`)
		w.eventRef(r.Event)
	}
	w.b = append(w.b, '}')
}

func (w *writer) budgetListResult(r *BudgetListResult) {
	w.raw(`{"budgets":`)
	list(w, r.Budgets, (*writer).budget)
	w.b = append(w.b, '}')
}

func (w *writer) budgetDeleteResult(r *BudgetDeleteResult) {
	w.raw(`{"scope":`)
	w.string(r.Scope)
	w.raw(`,"name":`)
	w.string(r.Name)
	w.raw(`,"event":`)
	w.eventRef(r.Event)
	w.b = append(w.b, '}')
}

func (w *writer) budgetAdjustResult(r *BudgetAdjustResult) {
	w.raw(`{"budget":`)
	w.string(r.Budget)
	w.raw(`,"scope":`)
	w.string(r.Scope)
	w.raw(`,"period":`)
	w.string(r.Period)
	w.raw(`,"delta":`)
	w.signedAmounts(r.Delta)
	w.raw(`,"reason":`)
	w.string(r.Reason)
	w.raw(`,"instance":`)
	w.instanceView(&r.Instance)
	w.raw(`,"event":`)
	w.eventRef(r.Event)
	w.b = append(w.b, '}')
}

func (w *writer) reservationView(r *ReservationView) {
	w.raw(`{"reservation_id":`)
	w.string(r.ReservationID)
	w.raw(`,"scope":`)
	w.string(r.Scope)
	w.raw(`,"status":`)
	w.string(string(r.Status))
	w.raw(`,"amounts":`)
	w.amounts(r.Amounts)
	w.raw(`,"priority":`)
	w.string(string(r.Priority))
	w.raw(`,"expires_at":`)
	w.time(r.ExpiresAt)
	w.raw(`,"label":`)
	w.string(r.Label)
	w.raw(`,"option":`)
	w.int(int64(r.Option))
	w.optionalLabels(r.Labels)
	w.b = append(w.b, '}')
}

// Requests, as ParseRequest returns them: pointers.

func (w *writer) request(req any) bool {
	switch r := req.(type) {
	case *ReserveRequest:
		nullable(w, r, (*writer).reserveRequest)
	case *CommitRequest:
		nullable(w, r, (*writer).commitRequest)
	case *ReleaseRequest:
		nullable(w, r, (*writer).releaseRequest)
	case *ExtendRequest:
		nullable(w, r, (*writer).extendRequest)
	case *ChargeRequest:
		nullable(w, r, (*writer).chargeRequest)
	case *BalanceRequest:
		nullable(w, r, (*writer).balanceRequest)
	case *ReservationGetRequest:
		nullable(w, r, (*writer).reservationGetRequest)
	case *BudgetSetRequest:
		nullable(w, r, (*writer).budgetSetRequest)
	case *BudgetRef:
		nullable(w, r, (*writer).budgetRef)
	case *BudgetListRequest:
		nullable(w, r, func(w *writer, _ *BudgetListRequest) { w.raw("{}") })
	case *BudgetAdjustRequest:
		nullable(w, r, (*writer).budgetAdjustRequest)
	default:
		return false
	}
	return true
}

// nullable writes a pointer to a struct, nil as null.
func nullable[T any](w *writer, p *T, write func(*writer, *T)) {
	if p == nil {
		w.raw("null")
		return
	}
	write(w, p)
}

func (w *writer) reserveRequest(r *ReserveRequest) {
	w.b = append(w.b, '{')
	if r.IdempotencyKey != "" {
		w.raw(`"idempotency_key":`)
		w.string(r.IdempotencyKey)
		w.b = append(w.b, ',')
	}
	w.raw(`"scope":`)
	w.string(r.Scope)
	if len(r.Amounts) > 0 {
		w.raw(`,"amounts":`)
		w.amounts(r.Amounts)
	}
	if len(r.Options) > 0 {
		w.raw(`,"options":`)
		w.options(r.Options)
	}
	if r.Priority != nil {
		w.raw(`,"priority":`)
		w.string(string(*r.Priority))
	}
	if r.TTLMS != nil {
		w.raw(`,"ttl_ms":`)
		w.int(*r.TTLMS)
	}
	w.optionalLabels(r.Labels)
	w.b = append(w.b, '}')
}

func (w *writer) commitRequest(r *CommitRequest) {
	w.raw(`{"idempotency_key":`)
	w.string(r.IdempotencyKey)
	w.raw(`,"reservation_id":`)
	w.string(r.ReservationID)
	w.raw(`,"actual":`)
	w.amounts(r.Actual)
	w.optionalLabels(r.Labels)
	w.b = append(w.b, '}')
}

func (w *writer) releaseRequest(r *ReleaseRequest) {
	w.raw(`{"idempotency_key":`)
	w.string(r.IdempotencyKey)
	w.raw(`,"reservation_id":`)
	w.string(r.ReservationID)
	w.b = append(w.b, '}')
}

func (w *writer) extendRequest(r *ExtendRequest) {
	w.raw(`{"idempotency_key":`)
	w.string(r.IdempotencyKey)
	w.raw(`,"reservation_id":`)
	w.string(r.ReservationID)
	w.raw(`,"ttl_ms":`)
	if r.TTLMS == nil {
		w.raw("null")
	} else {
		w.int(*r.TTLMS)
	}
	w.b = append(w.b, '}')
}

func (w *writer) chargeRequest(r *ChargeRequest) {
	w.raw(`{"idempotency_key":`)
	w.string(r.IdempotencyKey)
	w.raw(`,"scope":`)
	w.string(r.Scope)
	w.raw(`,"amounts":`)
	w.amounts(r.Amounts)
	w.optionalLabels(r.Labels)
	w.b = append(w.b, '}')
}

func (w *writer) balanceRequest(r *BalanceRequest) {
	w.raw(`{"scope":`)
	w.string(r.Scope)
	w.b = append(w.b, '}')
}

func (w *writer) reservationGetRequest(r *ReservationGetRequest) {
	w.raw(`{"reservation_id":`)
	w.string(r.ReservationID)
	w.b = append(w.b, '}')
}

func (w *writer) budgetSetRequest(r *BudgetSetRequest) {
	w.raw(`{"idempotency_key":`)
	w.string(r.IdempotencyKey)
	w.raw(`,"scope":`)
	w.string(r.Scope)
	w.raw(`,"name":`)
	w.string(r.Name)
	w.raw(`,"limits":`)
	w.amounts(r.Limits)
	if r.Period != nil {
		w.raw(`,"period":`)
		w.string(string(*r.Period))
	}
	if r.Timezone != nil {
		w.raw(`,"timezone":`)
		w.string(*r.Timezone)
	}
	if r.Mode != nil {
		w.raw(`,"mode":`)
		w.string(string(*r.Mode))
	}
	if len(r.PriorityFloors) > 0 {
		w.raw(`,"priority_floors":`)
		w.priorityFloors(r.PriorityFloors)
	}
	if r.AlertThresholds != nil {
		w.raw(`,"alert_thresholds":`)
		w.amountList(*r.AlertThresholds)
	}
	w.b = append(w.b, '}')
}

func (w *writer) budgetRef(r *BudgetRef) {
	w.b = append(w.b, '{')
	if r.IdempotencyKey != "" {
		w.raw(`"idempotency_key":`)
		w.string(r.IdempotencyKey)
		w.b = append(w.b, ',')
	}
	w.raw(`"scope":`)
	w.string(r.Scope)
	w.raw(`,"name":`)
	w.string(r.Name)
	w.b = append(w.b, '}')
}

func (w *writer) budgetAdjustRequest(r *BudgetAdjustRequest) {
	w.raw(`{"idempotency_key":`)
	w.string(r.IdempotencyKey)
	w.raw(`,"scope":`)
	w.string(r.Scope)
	w.raw(`,"name":`)
	w.string(r.Name)
	w.raw(`,"delta":`)
	w.signedAmounts(r.Delta)
	w.raw(`,"reason":`)
	w.string(r.Reason)
	w.b = append(w.b, '}')
}
