package events_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tallyledger/tally/events"
)

// The hand-written encoders must write exactly what encoding/json writes:
// the bytes are hashed into the partition chain and into request
// fingerprints stored in events. These tests compare them with json.Marshal
// directly (EncodeEventFast, AppendResult and AppendRequestFast have no
// fallback), on random values that fill every field of every covered type,
// on hand-written edge cases, and on every event Decode accepts (fuzz).

// encReferenceEvent is what Encode wrote before the hand-written encoder:
// json.Marshal of the envelope with at in UTC.
func encReferenceEvent(ev *events.Event) ([]byte, error) {
	e := *ev
	e.At = e.At.UTC()
	return json.Marshal(&e)
}

// encReferenceHash is RequestHash as it was: SHA-256 of op, NUL and
// json.Marshal of the request, first 16 bytes in hex.
func encReferenceHash(op events.Op, req any) string {
	b, err := json.Marshal(req)
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(append(append([]byte(op), 0), b...))
	return hex.EncodeToString(sum[:16])
}

// encUTC returns a copy of ev with at in UTC, as Encode hands it to the
// fast encoder.
func encUTC(ev *events.Event) *events.Event {
	e := *ev
	e.At = e.At.UTC()
	return &e
}

type encT interface {
	Helper()
	Fatalf(string, ...any)
}

// encCheck compares a fast encoding (ok false: refused) with json.Marshal's
// (err non-nil: refused). mayRefuse says the value may hold a unit name the
// fast encoders leave to json.Marshal by design.
func encCheck(t encT, what string, got []byte, ok bool, want []byte, err error, mayRefuse bool) {
	t.Helper()
	switch {
	case !ok && err == nil && !mayRefuse:
		t.Fatalf("%s: the fast encoder refused a value json.Marshal renders as\n%s", what, want)
	case ok && err != nil:
		t.Fatalf("%s: the fast encoder rendered\n%s\nwhere json.Marshal fails: %v", what, got, err)
	case ok && !bytes.Equal(got, want):
		t.Fatalf("%s differs from json.Marshal:\nfast %s\njson %s", what, got, want)
	}
}

// encCheckOdd is encCheck for a value drawn by g: one holding an odd unit
// must be refused.
func encCheckOdd(t encT, g *encGen, what string, got []byte, ok bool, want []byte, err error) {
	t.Helper()
	if g.oddUnit && ok {
		t.Fatalf("%s: the fast encoder rendered a unit it must leave to json.Marshal:\n%s", what, got)
	}
	encCheck(t, what, got, ok, want, err, g.oddUnit)
}

// encGen draws values of the package's types. It fills every exported
// field of every struct by reflection, so a field added to a covered type
// shows up here with random content, and a field of a kind it cannot draw
// fails the test instead of being skipped.
type encGen struct {
	t *rapid.T
	// oddUnit is set when a unit name drawn for Amounts or UnitBalances
	// is one the fast encoders leave to json.Marshal.
	oddUnit bool
}

var (
	encAmountType        = reflect.TypeFor[events.Amount]()
	encSignedType        = reflect.TypeFor[events.Signed]()
	encTimeType          = reflect.TypeFor[time.Time]()
	encAmountsType       = reflect.TypeFor[events.Amounts]()
	encSignedAmountsType = reflect.TypeFor[events.SignedAmounts]()
	encUnitBalancesType  = reflect.TypeFor[events.UnitBalances]()
)

// encAtoms are the pieces strings are made of: everything encoding/json
// escapes or replaces, and some that it must leave alone.
var encAtoms = []string{`"`, `\`, `/`, `<`, `>`, `&`, "\u2028", "\u2029", "\x00", "\x01", "\x1f", "\b", "\f",
	"\n", "\r", "\t", "\x7f", " ", "a", "Z", "é", "日本", "\U0001F600", "\xff", "\x80", "\xe2\x80", "\xe2\x80\xa8",
	"\xe2\x80\xa9", "\xed\xa0\x80", "\xc0\xaf", "\ufffd", "\xef\xbf\xbd", `\u2028`, `\n`, "tenant:acme", "0.5", ":", "{}"}

var encStrings = rapid.OneOf(
	rapid.StringMatching(`[a-z0-9:/_-]{0,24}`),
	rapid.String(),
	rapid.Map(rapid.SliceOfN(rapid.Byte(), 0, 16), func(b []byte) string { return string(b) }),
	rapid.Map(rapid.SliceOfN(rapid.SampledFrom(encAtoms), 0, 6), func(p []string) string { return strings.Join(p, "") }),
)

var encUnits = rapid.StringMatching(`[A-Za-z][A-Za-z0-9_]{0,31}`)

// encAmountStrings are canonical and non-canonical spellings around the
// edges of Amount's compact form (10^19, 18 fractional digits) and of the
// request bounds (38 significant digits).
var encAmountStrings = []string{"0", "0.0", "1", "0.5", "0.50", "12.3", "500", "500.000", "0.000000000000000001",
	"9999999999999999999", "10000000000000000000", "10000000000000000000.5",
	"99999999999999999999999999999999999999", "12345678901234567890.123456789012345678"}

func (g *encGen) str(label string) string { return encStrings.Draw(g.t, label) }

// unit draws a valid unit name, or now and then any string.
func (g *encGen) unit(label string) string {
	if rapid.IntRange(0, 19).Draw(g.t, label+"?") > 0 {
		return encUnits.Draw(g.t, label)
	}
	u := g.str(label)
	if !events.PlainUnit(u) {
		g.oddUnit = true
	}
	return u
}

// amount draws small, large, wide (products), negative and zero amounts,
// in both the compact and the apd representation.
func (g *encGen) amount(label string) events.Amount {
	simple := func(label string) events.Amount {
		if rapid.Bool().Draw(g.t, label+"?") {
			return events.MustAmount(rapid.SampledFrom(encAmountStrings).Draw(g.t, label))
		}
		s := rapid.StringMatching(`(0|[1-9][0-9]{0,19})(\.[0-9]{1,18})?`).Draw(g.t, label)
		return events.MustAmount(s)
	}
	switch rapid.IntRange(0, 5).Draw(g.t, label+"kind") {
	case 0:
		return events.Amount{}
	case 1:
		return simple(label + "a").Mul(simple(label + "b"))
	case 2:
		return simple(label).Neg()
	case 3:
		return simple(label + "a").Sub(simple(label + "b"))
	}
	return simple(label)
}

var encZones = func() []*time.Location {
	zones := []*time.Location{time.UTC, time.FixedZone("", 5*3600+30*60), time.FixedZone("X", -8*3600),
		time.FixedZone("", 3600+30), time.FixedZone("", -(23*3600 + 59*60))}
	if ny, err := time.LoadLocation("America/New_York"); err == nil {
		zones = append(zones, ny)
	}
	return zones
}()

// time draws zero, ordinary and boundary times in several zones, now and
// then one outside RFC 3339 (both encoders must refuse it).
func (g *encGen) time(label string) time.Time {
	switch rapid.IntRange(0, 29).Draw(g.t, label+"kind") {
	case 0:
		return time.Time{}
	case 1:
		return time.Date(rapid.SampledFrom([]int{-1, 10000}).Draw(g.t, label+"year"), 1, 1, 0, 0, 0, 0, time.UTC)
	case 2:
		return time.Date(rapid.SampledFrom([]int{0, 9999}).Draw(g.t, label+"year"), 12, 31, 23, 59, 59, 999999999, time.UTC).
			In(rapid.SampledFrom(encZones).Draw(g.t, label+"zone"))
	}
	sec := rapid.Int64Range(-62167219200, 253402300799).Draw(g.t, label+"sec")
	nsec := rapid.SampledFrom([]int64{0, 1, 100, 120000000, 999999999}).Draw(g.t, label+"ns")
	if rapid.Bool().Draw(g.t, label+"ns?") {
		nsec = rapid.Int64Range(0, 999999999).Draw(g.t, label+"ns")
	}
	return time.Unix(sec, nsec).In(rapid.SampledFrom(encZones).Draw(g.t, label+"zone"))
}

func (g *encGen) length(label string) int { return rapid.IntRange(-1, 3).Draw(g.t, label) }

// fill draws a value for v, which must be settable.
func (g *encGen) fill(v reflect.Value, path string) {
	switch v.Type() {
	case encAmountType:
		v.Set(reflect.ValueOf(g.amount(path)))
		return
	case encSignedType:
		v.Set(reflect.ValueOf(events.Signed{Amount: g.amount(path)}))
		return
	case encTimeType:
		v.Set(reflect.ValueOf(g.time(path)))
		return
	case encUnitBalancesType:
		n := g.length(path + ".len")
		if n < 0 {
			return
		}
		ub := make(events.UnitBalances, n) // in any order: the encoding keeps the slice's
		for i := range ub {
			ub[i].Unit = g.unit(fmt.Sprintf("%s[%d]", path, i))
			g.fill(reflect.ValueOf(&ub[i].UnitBalance).Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(reflect.ValueOf(ub))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(g.str(path))
	case reflect.Bool:
		v.SetBool(rapid.Bool().Draw(g.t, path))
	case reflect.Int, reflect.Int64:
		v.SetInt(rapid.Int64().Draw(g.t, path))
	case reflect.Uint64:
		v.SetUint(rapid.Uint64().Draw(g.t, path))
	case reflect.Pointer:
		if rapid.Bool().Draw(g.t, path+"?") {
			p := reflect.New(v.Type().Elem())
			g.fill(p.Elem(), path)
			v.Set(p)
		}
	case reflect.Slice:
		n := g.length(path + ".len")
		if n < 0 {
			return
		}
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			g.fill(s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		n := g.length(path + ".len")
		if n < 0 {
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), n)
		for i := range n {
			var k string
			switch v.Type() {
			case encAmountsType:
				k = g.unit(fmt.Sprintf("%s.key%d", path, i))
			case encSignedAmountsType:
				k = encUnits.Draw(g.t, fmt.Sprintf("%s.key%d", path, i))
				if rapid.IntRange(0, 9).Draw(g.t, path+"oddkey") == 0 {
					k = g.str(fmt.Sprintf("%s.key%d", path, i)) // escaped, not odd
				}
			default:
				k = g.str(fmt.Sprintf("%s.key%d", path, i))
			}
			e := reflect.New(v.Type().Elem()).Elem()
			g.fill(e, path+"."+k)
			m.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), e)
		}
		v.Set(m)
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() {
				g.t.Fatalf("%s: %s has an unexported field %s: teach encGen its values", path, v.Type(), f.Name)
			}
			g.fill(v.Field(i), path+"."+f.Name)
		}
	default:
		g.t.Fatalf("%s: encGen cannot draw a %s (%s)", path, v.Type(), v.Kind())
	}
}

// draw returns a random value of proto's type (a pointer type yields a
// non-nil pointer to a random value).
func (g *encGen) draw(proto any, label string) any {
	rt := reflect.TypeOf(proto)
	if rt.Kind() == reflect.Pointer {
		p := reflect.New(rt.Elem())
		g.fill(p.Elem(), label)
		return p.Interface()
	}
	v := reflect.New(rt).Elem()
	g.fill(v, label)
	return v.Interface()
}

// encDataTypes are the data types of every event type.
func encDataTypes() []events.Data {
	return []events.Data{&events.BudgetSet{}, &events.BudgetDeleted{}, &events.BudgetAdjusted{},
		&events.ReservationGranted{}, &events.ReservationDenied{}, &events.ReservationCommitted{},
		&events.ReservationReleased{}, &events.ReservationExtended{}, &events.ReservationExpired{},
		&events.UsageCharged{}, &events.ThresholdCrossed{}, &events.PartitionClaimed{}}
}

// encResultTypes are the results AppendResult covers, by value.
func encResultTypes() []any {
	return []any{events.ReserveResult{}, events.CommitResult{}, events.ReleaseResult{}, events.ExtendResult{},
		events.ChargeResult{}, events.BalanceResult{}, events.BudgetResult{}, events.BudgetListResult{},
		events.BudgetDeleteResult{}, events.BudgetAdjustResult{}, events.ReservationView{}}
}

// encRequestTypes are the parsed requests, as ParseRequest returns them.
func encRequestTypes() []any {
	return []any{&events.ReserveRequest{}, &events.CommitRequest{}, &events.ReleaseRequest{}, &events.ExtendRequest{},
		&events.ChargeRequest{}, &events.BalanceRequest{}, &events.ReservationGetRequest{}, &events.BudgetSetRequest{},
		&events.BudgetRef{}, &events.BudgetListRequest{}, &events.BudgetAdjustRequest{}}
}

func TestEncodeTypesCovered(t *testing.T) {
	seen := map[events.Type]bool{}
	for _, d := range encDataTypes() {
		seen[d.EventType()] = true
	}
	for _, typ := range events.Types {
		if !seen[typ] {
			t.Errorf("event type %s has no data type in encDataTypes", typ)
		}
	}
	if len(seen) != len(events.Types) {
		t.Errorf("%d data types for %d event types", len(seen), len(events.Types))
	}
}

// TestEncodeEventMatchesJSON: random events of every type.
func TestEncodeEventMatchesJSON(t *testing.T) {
	rendered := 0
	rapid.Check(t, func(t *rapid.T) {
		g := &encGen{t: t}
		d := g.draw(rapid.SampledFrom(encDataTypes()).Draw(t, "type"), "data").(events.Data)
		ev := &events.Event{V: rapid.IntRange(-1, 3).Draw(t, "v"), ID: g.str("id"), Type: d.EventType(),
			Partition: rapid.Int().Draw(t, "partition"), At: g.time("at"), Root: g.str("root"), Prev: g.str("prev"), Data: d}
		want, err := encReferenceEvent(ev)
		got, ok := events.EncodeEventFast(encUTC(ev))
		encCheckOdd(t, g, string(ev.Type), got, ok, want, err)
		if ok {
			rendered++
		}
		// Encode, with its fallback, always agrees.
		pub, pubErr := events.Encode(ev)
		if (pubErr == nil) != (err == nil) || !bytes.Equal(pub, want) {
			t.Fatalf("Encode = %s, %v; json.Marshal = %s, %v", pub, pubErr, want, err)
		}
		// So do the answers the event stands for.
		if res, ok := events.ResultOf(*ev, events.EventRef{Partition: 1, Seq: 2}); ok {
			want, err := json.Marshal(res)
			got, ok := events.AppendResult(nil, res)
			encCheck(t, "answer to "+string(ev.Type), got, ok, want, err, g.oddUnit)
		}
	})
	// The draws must mostly reach the fast encoder, or the comparison
	// above says little.
	t.Logf("the fast encoder rendered %d random events", rendered)
	if rendered < 30 {
		t.Errorf("the fast encoder rendered only %d of the random events", rendered)
	}
}

// TestAppendResultMatchesJSON: random results of every covered type,
// appended after a prefix.
func TestAppendResultMatchesJSON(t *testing.T) {
	rendered := 0
	rapid.Check(t, func(t *rapid.T) {
		g := &encGen{t: t}
		res := g.draw(rapid.SampledFrom(encResultTypes()).Draw(t, "type"), "result")
		want, err := json.Marshal(res)
		prefix := []byte(`{"result":`)
		got, ok := events.AppendResult(prefix, res)
		if !bytes.HasPrefix(got, prefix) || !ok && len(got) != len(prefix) {
			t.Fatalf("AppendResult(%q, …) = %q, %v", prefix, got, ok)
		}
		encCheckOdd(t, g, fmt.Sprintf("%T", res), got[len(prefix):], ok, want, err)
		if ok {
			rendered++
		}
	})
	if rendered < 30 {
		t.Errorf("AppendResult rendered only %d of the random results", rendered)
	}
}

// TestRequestEncodingMatchesJSON: random requests of every type, and their
// RequestHash.
func TestRequestEncodingMatchesJSON(t *testing.T) {
	rendered := 0
	rapid.Check(t, func(t *rapid.T) {
		g := &encGen{t: t}
		req := g.draw(rapid.SampledFrom(encRequestTypes()).Draw(t, "type"), "request")
		want, err := json.Marshal(req)
		got, ok := events.AppendRequestFast(nil, req)
		encCheckOdd(t, g, fmt.Sprintf("%T", req), got, ok, want, err)
		if ok {
			rendered++
		}
		if err == nil {
			op := rapid.SampledFrom(events.Ops).Draw(t, "op")
			if h, w := events.RequestHash(op, req), encReferenceHash(op, req); h != w {
				t.Fatalf("RequestHash(%s, %s) = %s, want %s", op, want, h, w)
			}
		}
	})
	if rendered < 30 {
		t.Errorf("the fast encoder rendered only %d of the random requests", rendered)
	}
}

// encFill sets every field of v to a non-zero value, deterministically:
// one element per slice and map, every pointer set.
func encFill(t *testing.T, v reflect.Value) {
	switch v.Type() {
	case encAmountType:
		v.Set(reflect.ValueOf(amt("1.5")))
		return
	case encSignedType:
		v.Set(reflect.ValueOf(signed("-2.5")))
		return
	case encTimeType:
		v.Set(reflect.ValueOf(at0))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("USD")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64, reflect.Uint64:
		v.Set(reflect.ValueOf(7).Convert(v.Type()))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		encFill(t, v.Elem())
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		encFill(t, v.Index(0))
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		e := reflect.New(v.Type().Elem()).Elem()
		encFill(t, e)
		m.SetMapIndex(reflect.ValueOf("USD").Convert(v.Type().Key()), e)
		v.Set(m)
	case reflect.Struct:
		for i := range v.NumField() {
			if !v.Type().Field(i).IsExported() {
				t.Fatalf("%s has an unexported field %s: teach encFill its values", v.Type(), v.Type().Field(i).Name)
			}
			encFill(t, v.Field(i))
		}
	default:
		t.Fatalf("encFill cannot fill a %s", v.Type())
	}
}

// TestEncodeEveryField: every covered type with every field set, so a
// field added to a struct (or to a struct inside it) without its encoder
// fails here deterministically.
func TestEncodeEveryField(t *testing.T) {
	full := func(proto any) any {
		rt := reflect.TypeOf(proto)
		if rt.Kind() == reflect.Pointer {
			p := reflect.New(rt.Elem())
			encFill(t, p.Elem())
			return p.Interface()
		}
		v := reflect.New(rt).Elem()
		encFill(t, v)
		return v.Interface()
	}
	for _, d := range encDataTypes() {
		ev := sampleEvent(full(d).(events.Data))
		want, err := encReferenceEvent(ev)
		got, ok := events.EncodeEventFast(ev)
		encCheck(t, string(ev.Type), got, ok, want, err, false)
	}
	for _, r := range encResultTypes() {
		res := full(r)
		want, err := json.Marshal(res)
		got, ok := events.AppendResult(nil, res)
		encCheck(t, fmt.Sprintf("%T", res), got, ok, want, err, false)
	}
	for _, r := range encRequestTypes() {
		req := full(r)
		want, err := json.Marshal(req)
		got, ok := events.AppendRequestFast(nil, req)
		encCheck(t, fmt.Sprintf("%T", req), got, ok, want, err, false)
	}
}

// encCases are hand-written events at the edges: every sample, every data
// type at its zero value (nil slices and maps), empty collections, escapes,
// extreme amounts and times in other zones.
func encCases() []*events.Event {
	var out []*events.Event
	for _, d := range sampleData() {
		out = append(out, sampleEvent(d))
	}
	for _, d := range encDataTypes() {
		out = append(out, sampleEvent(d))
	}
	tricky := "q\"b\\s/<x>&\u2028\u2029\x00\x1f\b\f\n\r\t\x7f é日本\U0001F600 \xff\xe2\x80 \xed\xa0\x80"
	paris, _ := time.LoadLocation("Europe/Paris")
	end := time.Date(2026, 12, 1, 0, 0, 0, 0, paris)
	big := events.Amounts{}
	for i := range 20 { // more than the encoder's stack buffer
		big[fmt.Sprintf("u%02d", 19-i)] = amt(fmt.Sprintf("%d.%d", i, i))
	}
	labels := events.Labels{}
	for i := range 20 {
		labels[fmt.Sprintf("k%d", i)] = tricky[:i]
	}
	wide := amt("99999999999999999999999999999999999999").Mul(amt("0.000000000000000001"))
	inst := events.InstanceView{Budget: tricky, Pattern: "tenant:a/run:*", Scope: "tenant:a/run:r1", Period: "2026-11",
		PeriodEnd: &end, Mode: events.Mode(tricky), Units: events.UnitBalances{
			{Unit: "tokens", UnitBalance: events.UnitBalance{Limit: wide, Spent: amt("10000000000000000000"),
				Reserved: amt("0.000000000000000001"), Remaining: events.Signed{Amount: wide.Neg()}}},
			{Unit: "USD"}, // zero amounts
		}}
	g := grantedData()
	g.ReservationID, g.Scope, g.Label = tricky, tricky, tricky
	g.Labels = labels
	g.Amounts = big
	g.ExpiresAt = time.Date(2026, 3, 29, 2, 30, 0, 1, paris)
	g.Instances = append(g.Instances, inst, events.InstanceView{})
	g.ShadowDenials = []events.ShadowDenial{}
	out = append(out, sampleEvent(g))
	g2 := *g // the first event keeps its data
	g2.Labels, g2.Instances, g2.ShadowDenials = events.Labels{}, []events.InstanceView{}, nil
	out = append(out, sampleEvent(&g2))
	out = append(out,
		sampleEvent(&events.ReservationDenied{Options: events.Options{}, Labels: events.Labels{"": ""},
			Denial: events.Denial{Code: events.DenialCode(tricky), Requested: amt("0.1").Neg()}}),
		sampleEvent(&events.ReservationDenied{Options: events.Options{{}, {Label: tricky, Amounts: events.Amounts{}}, {Amounts: big}}}),
		sampleEvent(&events.ReservationCommitted{Charged: events.Amounts{}, Released: nil, OverLimit: []events.OverLimit{},
			Labels: events.Labels{tricky: tricky}, Instances: []events.InstanceView{{Units: events.UnitBalances{}}}}),
		sampleEvent(&events.UsageCharged{OverLimit: []events.OverLimit{{Over: wide}, {}}}),
		sampleEvent(&events.BudgetAdjusted{Delta: events.SignedAmounts{tricky: signed("-1"), "USD": {}, "<b>": signed("0.5")}}),
		sampleEvent(&events.BudgetAdjusted{Delta: events.SignedAmounts{}}),
		sampleEvent(&events.BudgetSet{Budget: events.Budget{PriorityFloors: map[events.Priority]events.Amount{},
			AlertThresholds: []events.Amount{}, Limits: big}}),
		sampleEvent(&events.BudgetSet{Budget: events.Budget{PriorityFloors: map[events.Priority]events.Amount{
			events.Priority(tricky): amt("0.5"), "": {}, "bulk": wide}}}),
		sampleEvent(&events.ReservationExtended{ExpiresAt: time.Date(0, 1, 1, 0, 0, 0, 0, time.FixedZone("", -3600))}),
		sampleEvent(&events.ReservationExtended{ExpiresAt: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)}),
		sampleEvent(&events.PartitionClaimed{Owner: tricky, Epoch: 1<<64 - 1}),
		sampleEvent(&events.ThresholdCrossed{Threshold: events.ThresholdKindDenied, Limit: wide, Spent: wide.Neg()}),
	)
	// Envelopes: at in another zone (Encode writes it in UTC), zero, at
	// the ends of RFC 3339, negative and large numbers, escapes.
	for _, at := range []time.Time{{}, time.Date(2026, 11, 28, 22, 59, 0, 123456789, paris),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)} {
		ev := sampleEvent(&events.PartitionClaimed{Owner: "o"})
		ev.At, ev.ID, ev.Root, ev.Prev, ev.V, ev.Partition = at, tricky, tricky, tricky, -1, -1<<63
		out = append(out, ev)
	}
	return out
}

// TestEncodeCases: the hand-written edge cases, through the fast encoder
// and through Encode; their answers through AppendResult.
func TestEncodeCases(t *testing.T) {
	for i, ev := range encCases() {
		name := fmt.Sprintf("%d-%s", i, ev.Type)
		want, err := encReferenceEvent(ev)
		if err != nil {
			t.Fatalf("%s: json.Marshal: %v", name, err)
		}
		got, ok := events.EncodeEventFast(encUTC(ev))
		encCheck(t, name, got, ok, want, nil, false)
		if pub, err := events.Encode(ev); err != nil || !bytes.Equal(pub, want) {
			t.Fatalf("%s: Encode = %s, %v", name, pub, err)
		}
		if res, ok := events.ResultOf(*ev, events.EventRef{Partition: -1, Seq: 1<<64 - 1}); ok {
			want, err := json.Marshal(res)
			got, ok := events.AppendResult(nil, res)
			encCheck(t, "answer to "+name, got, ok, want, err, false)
		}
	}
}

// TestEncodeFallback: what the fast encoders refuse by design, Encode and
// RequestHash still write (or refuse) exactly as json.Marshal does.
func TestEncodeFallback(t *testing.T) {
	oddUnits := []string{"<U>", "a\"b", `a\nb`, `a\u00`, "a\nb", "é", "\u2028", "\xff", "a&b"}
	for _, u := range oddUnits {
		for _, ev := range []*events.Event{
			sampleEvent(&events.UsageCharged{Amounts: events.Amounts{u: amt("1")}}),
			sampleEvent(&events.ReservationExpired{Instances: []events.InstanceView{{Units: events.UnitBalances{{Unit: u}}}}}),
		} {
			if got, ok := events.EncodeEventFast(ev); ok {
				t.Errorf("unit %q: the fast encoder rendered %s", u, got)
			}
			want, wantErr := encReferenceEvent(ev)
			got, err := events.Encode(ev)
			if (err == nil) != (wantErr == nil) || !bytes.Equal(got, want) {
				t.Errorf("unit %q: Encode = %s, %v; json.Marshal = %s, %v", u, got, err, want, wantErr)
			}
		}
		req := &events.ReserveRequest{Scope: "tenant:a", Amounts: events.Amounts{u: amt("1")}}
		if _, err := json.Marshal(req); err == nil {
			if h, w := events.RequestHash(events.OpReserve, req), encReferenceHash(events.OpReserve, req); h != w {
				t.Errorf("unit %q: RequestHash = %s, want %s", u, h, w)
			}
		}
	}
	// Times outside RFC 3339 (at is made UTC first, so year 10000 only
	// there): both encoders refuse.
	for _, ev := range []*events.Event{
		sampleEvent(&events.ReservationExtended{ExpiresAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}),
		sampleEvent(&events.ReservationExtended{ExpiresAt: time.Date(9999, 12, 31, 23, 0, 0, 0, time.UTC).In(time.FixedZone("", 2*3600))}),
		sampleEvent(&events.ReservationExtended{ExpiresAt: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}),
		func() *events.Event {
			ev := sampleEvent(&events.PartitionClaimed{})
			ev.At = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
			return ev
		}(),
	} {
		if got, ok := events.EncodeEventFast(encUTC(ev)); ok {
			t.Errorf("the fast encoder rendered %s", got)
		}
		if _, err := encReferenceEvent(ev); err == nil {
			t.Fatalf("json.Marshal renders %+v", ev.Data)
		}
		if got, err := events.Encode(ev); err == nil {
			t.Errorf("Encode rendered %s", got)
		}
	}
	// Data of a type outside the switch: json.Marshal renders it.
	ev := sampleEvent(grantedData())
	ev.Data = foreignData{*grantedData()}
	if _, ok := events.EncodeEventFast(ev); ok {
		t.Error("the fast encoder rendered data of a foreign type")
	}
	want, _ := encReferenceEvent(ev)
	if got, err := events.Encode(ev); err != nil || !bytes.Equal(got, want) {
		t.Errorf("Encode(foreign data) = %s, %v; want %s", got, err, want)
	}
	// AppendResult covers values only, and leaves b alone otherwise.
	b := []byte("prefix")
	for _, v := range []any{nil, 42, &events.ReserveResult{}, events.Answer{}, events.Error{}, &events.ReservationGranted{}} {
		if got, ok := events.AppendResult(b, v); ok || string(got) != "prefix" {
			t.Errorf("AppendResult(%T) = %q, %v", v, got, ok)
		}
	}
	res := events.ExtendResult{ExpiresAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if got, ok := events.AppendResult(b, res); ok || string(got) != "prefix" {
		t.Errorf("AppendResult(year 10000) = %q, %v", got, ok)
	}
	// Requests of other types, and nil ones, hash as before.
	for _, req := range []any{(*events.ReserveRequest)(nil), events.ReserveRequest{Scope: "tenant:a"}, map[string]int{"a": 1}} {
		if h, w := events.RequestHash(events.OpReserve, req), encReferenceHash(events.OpReserve, req); h != w {
			t.Errorf("RequestHash(%T) = %s, want %s", req, h, w)
		}
	}
}

// TestEncodeStrings: every string of up to three bytes from an alphabet of
// the bytes encoding/json treats specially (control characters, quotes,
// HTML characters, UTF-8 lead and continuation bytes, U+2028's bytes).
func TestEncodeStrings(t *testing.T) {
	alphabet := []byte{0x00, 0x08, 0x09, 0x0a, 0x1f, ' ', '"', '&', '/', '<', '>', '\\', 'a', 0x7f,
		0x80, 0xa8, 0xa9, 0xbf, 0xc2, 0xe2, 0xed, 0xf0, 0x9f, 0xff}
	check := func(s string) {
		t.Helper()
		res := events.BalanceResult{Scope: s}
		want, err := json.Marshal(res)
		got, ok := events.AppendResult(nil, res)
		encCheck(t, fmt.Sprintf("%q", s), got, ok, want, err, false)
	}
	var s [3]byte
	for _, a := range alphabet {
		s[0] = a
		check(string(s[:1]))
		for _, b := range alphabet {
			s[1] = b
			check(string(s[:2]))
			for _, c := range alphabet {
				s[2] = c
				check(string(s[:3]))
			}
		}
	}
	for _, r := range []rune{0x7f, 0x80, 0x7ff, 0x800, 0x2027, 0x2028, 0x2029, 0x202a, 0xd7ff, 0xe000, 0xfffd, 0xffff, 0x10000, 0x10ffff} {
		check(string(r))
		check("a" + string(r) + "<")
	}
	for c := range 0x80 {
		check(string(rune(c)) + "x" + string(rune(c)))
	}
}

// TestRequestHashPinned: the fingerprints stored in events before the
// hand-written encoder existed.
func TestRequestHashPinned(t *testing.T) {
	for _, c := range []struct {
		op   events.Op
		body string
		want string
	}{
		{events.OpReserve, `{"idempotency_key":"k","scope":"tenant:acme/run:r1","amounts":{"USD":"0.50","tokens":"100"}}`, "457f3c6456b5526d36a9de09d23fa177"},
		{events.OpReserve, `{"idempotency_key":"k","scope":"tenant:acme/run:r1","options":[{"label":"<opus>","amounts":{"USD":"0.4"}},{"amounts":{"USD":"0.02"}}],"priority":"low","ttl_ms":1000,"labels":{"model":"\u2028é","a.b":""}}`, "1c5ff7f91618957fc5607e03c0886742"},
		{events.OpDecide, `{"scope":"tenant:acme","amounts":{"USD":"1"}}`, "f711e6a63f111a8e2fe0ca1c1bab37b2"},
		{events.OpCommit, `{"idempotency_key":"k3","reservation_id":"01J","actual":{"USD":"0.37","tokens":"10500"},"labels":{"m":"x"}}`, "9b56649c4341ff4235ed87c4cb2e8630"},
		{events.OpCommit, `{"idempotency_key":"k3","reservation_id":"01J","actual":{}}`, "0c0ae6e7eb80ad85e0c24ad8400325f6"},
		{events.OpRelease, `{"idempotency_key":"k4","reservation_id":"01J"}`, "7334744c9b3bf344cbae33462500bf3b"},
		{events.OpExtend, `{"idempotency_key":"k5","reservation_id":"01J","ttl_ms":30000}`, "1524b865b4163ef8dda55fd4a9154d17"},
		{events.OpCharge, `{"idempotency_key":"k6","scope":"tenant:acme","amounts":{"USD":"1.5"}}`, "f0778da811f347f4907feb5e88abb106"},
		{events.OpBudgetSet, `{"idempotency_key":"k1","scope":"tenant:acme/run:*","name":"per-run","limits":{"USD":"2.00"},"period":"weekly","timezone":"Europe/Paris","mode":"shadow","priority_floors":{"low":"0.2","bulk":"0.5"},"alert_thresholds":["0.5","1"]}`, "1820db21bffd350d9eb7d72d9bbd5b40"},
		{events.OpBudgetSet, `{"idempotency_key":"k1","scope":"tenant:acme","name":"m","limits":{"USD":"2"},"alert_thresholds":[]}`, "60548c656b572f05a6b622e048dd0db3"},
		{events.OpBudgetDelete, `{"idempotency_key":"k7","scope":"tenant:acme","name":"m"}`, "0b883e60d9fd34d7f41684efe99c33f2"},
		{events.OpBudgetGet, `{"scope":"tenant:acme","name":"m"}`, "cea21d087258db7b39916663e8014694"},
		{events.OpBudgetAdjust, `{"idempotency_key":"k8","scope":"tenant:acme","name":"m","delta":{"USD":"-50","tokens":"1000"},"reason":"refund <&>"}`, "a68bb952125d695108215a80b9ddaffa"},
		{events.OpBalance, `{"scope":"tenant:acme"}`, "f01e2a902054f07766a32330e5069aa8"},
		{events.OpReservationGet, `{"reservation_id":"01J"}`, "2724fedd4f94cb948a3aea1e0efd3848"},
		{events.OpBudgetList, `{}`, "46eb8cf08f864a8a321c1ec052e6b872"},
	} {
		req, err := events.ParseRequest(c.op, []byte(c.body))
		if err != nil {
			t.Fatal(err)
		}
		if got := events.RequestHash(c.op, req); got != c.want {
			t.Errorf("RequestHash(%s, %s) = %s, want %s", c.op, c.body, got, c.want)
		}
	}
}

// FuzzEncodeEvent: for every event Decode accepts, Encode and the fast
// encoder write exactly what json.Marshal writes, and so does AppendResult
// for the answer the event stands for. Decoded events hold only valid units
// and RFC 3339 times, so the fast encoders must not fall back on them.
func FuzzEncodeEvent(f *testing.F) {
	for _, ev := range encCases() {
		if b, err := events.Encode(ev); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"v":1,"id":"x","type":"reservation.extended","partition":0,"at":"2026-11-28T00:00:00Z","root":"r","prev":"",` +
		`"data":{"idempotency_key":"\u2028\u003c","request_hash":"\ud800","reservation_id":"\u00e9\"","scope":"a\\b","expires_at":"0000-01-01T00:30:00+01:00"}}`))
	f.Add([]byte(`{"v":1,"id":"x","type":"budget.adjusted","partition":0,"at":"2026-11-28T00:00:00Z","root":"r","prev":"",` +
		`"data":{"delta":{"USD":"-1.50","tokens":"0"},"instance":{"units":{"USD":{"limit":"1","spent":"0.1","reserved":"0","remaining":"-1"}}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := events.Decode(data)
		if err != nil {
			return
		}
		want, err := encReferenceEvent(&ev)
		if err != nil {
			t.Fatalf("json.Marshal of a decoded event: %v", err)
		}
		got, ok := events.EncodeEventFast(&ev)
		encCheck(t, "decoded event", got, ok, want, nil, false)
		pub, err := events.Encode(&ev)
		if err != nil || !bytes.Equal(pub, want) {
			t.Fatalf("Encode = %s, %v; json.Marshal = %s", pub, err, want)
		}
		if res, ok := events.ResultOf(ev, events.EventRef{Partition: ev.Partition, Seq: 7}); ok {
			want, err := json.Marshal(res)
			got, ok := events.AppendResult(nil, res)
			encCheck(t, "answer", got, ok, want, err, false)
			// The answer with the event's encoded views copied in is the
			// same answer.
			raw, views, err := events.EncodeViews(&ev)
			if err != nil || !bytes.Equal(raw, pub) {
				t.Fatalf("EncodeViews = %s, %v; Encode = %s", raw, err, pub)
			}
			if f := reflect.ValueOf(ev.Data).Elem().FieldByName("Instances"); f.IsValid() && views == nil {
				t.Fatalf("EncodeViews of a %s returned no views", ev.Type)
			}
			if ans := events.AppendResultAnswerViews([]byte("x"), res, views); string(ans) != `x{"result":`+string(want)+`}` {
				t.Fatalf("answer with the event's views = %s, want %s", ans, want)
			}
		}
	})
}

// Benchmarks: the hand-written encoders and encoding/json on the same
// values.

// BenchmarkEncodeGrantedJSON is BenchmarkEncodeGranted with json.Marshal,
// what Encode did before the hand-written encoder.
func BenchmarkEncodeGrantedJSON(b *testing.B) {
	ev := benchGranted()
	b.ReportAllocs()
	for b.Loop() {
		out, err := encReferenceEvent(ev)
		if err != nil {
			b.Fatal(err)
		}
		encSink = out
	}
}

// BenchmarkRequestHashReserveJSON is BenchmarkRequestHashReserve with
// json.Marshal, what RequestHash did before the hand-written encoder.
func BenchmarkRequestHashReserveJSON(b *testing.B) {
	req, err := events.ParseRequest(events.OpReserve, []byte(validBodies[events.OpReserve]))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		encReferenceHash(events.OpReserve, req)
	}
}

// encResultAnswerJSON is the enforcer's resultAnswer before AppendResult.
func encResultAnswerJSON(v any) []byte {
	r, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("enforcer: encode answer: %v", err))
	}
	b := make([]byte, 0, len(r)+len(`{"result":}`))
	b = append(b, `{"result":`...)
	b = append(b, r...)
	return append(b, '}')
}

// TestResultAnswerMatchesEnvelope: the proposed resultAnswer writes what
// marshalling the answer envelope writes, for every sample answer.
func TestResultAnswerMatchesEnvelope(t *testing.T) {
	for _, ev := range encCases() {
		res, ok := events.ResultOf(*ev, events.EventRef{Partition: 3, Seq: 18})
		if !ok {
			continue
		}
		r, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(events.Answer{Result: r})
		if err != nil {
			t.Fatal(err)
		}
		if got := events.ResultAnswer(res); !bytes.Equal(got, want) {
			t.Fatalf("%s:\ngot  %s\nwant %s", ev.Type, got, want)
		}
	}
}

// encSink keeps benchmark results alive, as the enforcer's reply does.
var encSink []byte

// benchReserveAnswer is the answer to the reserve that wrote benchGranted.
func benchReserveAnswer(b *testing.B) any {
	res, ok := events.ResultOf(*benchGranted(), events.EventRef{Partition: 3, Seq: 18})
	if !ok {
		b.Fatal("no answer")
	}
	return res
}

// BenchmarkReserveAnswer is the enforcer's resultAnswer with AppendResult.
func BenchmarkReserveAnswer(b *testing.B) {
	res := benchReserveAnswer(b)
	b.ReportAllocs()
	for b.Loop() {
		encSink = events.ResultAnswer(res)
	}
	b.ReportMetric(float64(len(encSink)), "bytes/answer")
}

// BenchmarkReserveAnswerJSON is the enforcer's resultAnswer with json.Marshal.
func BenchmarkReserveAnswerJSON(b *testing.B) {
	res := benchReserveAnswer(b)
	b.ReportAllocs()
	for b.Loop() {
		encSink = encResultAnswerJSON(res)
	}
}

// foreignData is event data of a type the events package does not know.
type foreignData struct{ events.ReservationGranted }

func (foreignData) EventType() events.Type { return events.TypeReservationGranted }
