package events

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The data decoders of decode_fast.go against the general path
// (strictUnmarshal into the same type). This is an internal test, so the
// samples of codec_test.go (package events_test) are rebuilt here.

// fastCovered lists the types decodeData covers.
var fastCovered = []Type{TypeReservationGranted, TypeReservationDenied, TypeReservationCommit, TypeReservationReleased,
	TypeReservationExpired, TypeUsageCharged}

// fastCmp compares amounts by value and canonical form, and times by
// instant and location name (decoding must yield the same zone as
// time.Time.UnmarshalJSON).
var fastCmp = cmp.Options{
	cmp.Comparer(func(a, b Amount) bool { return a.String() == b.String() && a.Cmp(b) == 0 }),
	cmp.Comparer(func(a, b time.Time) bool {
		_, oa := a.Zone()
		_, ob := b.Zone()
		return a.Equal(b) && a.Location().String() == b.Location().String() && oa == ob
	}),
}

func fastAmt(s string) Amount {
	a, err := parseWideAmount(s)
	if err != nil {
		panic(err)
	}
	return a
}

func fastSigned(s string) Signed {
	a, err := parseSigned(s, true)
	if err != nil {
		panic(err)
	}
	return Signed{a}
}

func fastTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func fastInstance(budget, pattern, scope string) InstanceView {
	end := fastTime("2026-12-01T00:00:00Z")
	return InstanceView{Budget: budget, Pattern: pattern, Scope: scope, Period: "2026-11", PeriodEnd: &end, Mode: ModeEnforce,
		Units: UnitBalances{
			{Unit: "USD", UnitBalance: UnitBalance{Limit: fastAmt("500"), Spent: fastAmt("12.3"), Reserved: fastAmt("0.84"), Remaining: fastSigned("486.86")}},
			{Unit: "tokens", UnitBalance: UnitBalance{Limit: fastAmt("1000000"), Spent: fastAmt("1000500"), Reserved: fastAmt("12000"), Remaining: fastSigned("-12500")}},
		}}
}

// fastGranted is codec_test.go's grantedData: three instances of two units.
func fastGranted() *ReservationGranted {
	return &ReservationGranted{
		Mutation:      Mutation{IdempotencyKey: "k2", RequestHash: strings.Repeat("ab", 16)},
		ReservationID: "01JDQ7Z5N3W8K2V6X9Y4T0R1PQ",
		Scope:         "tenant:acme/workflow:code-review/run:r-42",
		Amounts:       Amounts{"USD": fastAmt("0.4"), "tokens": fastAmt("12000")},
		Priority:      PriorityNormal,
		ExpiresAt:     fastTime("2026-11-28T21:00:00Z"),
		Label:         "opus",
		Labels:        Labels{"model": "claude-opus-4"},
		Instances: []InstanceView{
			fastInstance("monthly", "tenant:acme", "tenant:acme"),
			fastInstance("workflow", "tenant:acme/workflow:code-review", "tenant:acme/workflow:code-review"),
			{Budget: "per-run", Pattern: "tenant:acme/workflow:code-review/run:*", Scope: "tenant:acme/workflow:code-review/run:r-42",
				Period: "none", Mode: ModeShadow, Units: UnitBalances{
					{Unit: "USD", UnitBalance: UnitBalance{Limit: fastAmt("2"), Spent: fastAmt("1.9"), Reserved: fastAmt("0.4"), Remaining: fastSigned("-0.3")}},
					{Unit: "tokens", UnitBalance: UnitBalance{Limit: fastAmt("50000"), Spent: fastAmt("0"), Reserved: fastAmt("12000"), Remaining: fastSigned("38000")}},
				}},
		},
		ShadowDenials: []ShadowDenial{{Budget: "per-run", Pattern: "tenant:acme/workflow:code-review/run:*",
			Scope: "tenant:acme/workflow:code-review/run:r-42", Period: "none", Unit: "USD",
			Requested: fastAmt("0.4"), Available: fastAmt("0.1"), Overage: fastAmt("0.3")}},
	}
}

// fastSamples are payloads of every covered type, realistic and odd: nil
// and empty collections, wide and negative figures, non-ASCII text, times
// with offsets, and strings Encode escapes (which decodeData declines).
func fastSamples() []Data {
	inst := fastInstance("monthly", "tenant:acme", "tenant:acme")
	wide := InstanceView{Budget: "b", Pattern: "p", Scope: "s", Period: "none", Mode: ModeShadow, Units: UnitBalances{
		{Unit: "u", UnitBalance: UnitBalance{Limit: fastAmt("12345678901234567890123456789012345678901234"),
			Spent: fastAmt("0.000000000000000000000000000000000001"), Reserved: fastAmt("0"), Remaining: fastSigned("-99999999999999999999999999999999999999.5")}}}}
	noUnits := InstanceView{Budget: "é", Pattern: "日本", Scope: "x", Period: "2026-11", Units: UnitBalances{}}
	over := []OverLimit{{Budget: "monthly", Pattern: "tenant:acme", Scope: "tenant:acme", Period: "2026-11", Unit: "USD", Over: fastAmt("0.07")},
		{Budget: "w", Pattern: "p", Scope: "s", Period: "none", Unit: "tokens", Over: fastAmt("1.000000000000000000000001")}}
	paris := time.FixedZone("", 3600)
	g := fastGranted()
	gOdd := fastGranted()
	gOdd.ExpiresAt = time.Date(2026, 11, 28, 21, 0, 0, 5, paris)
	gOdd.Option, gOdd.Degraded, gOdd.Labels, gOdd.ShadowDenials = 2, true, nil, nil
	gOdd.Instances = append(gOdd.Instances, wide, noUnits)
	gEmpty := &ReservationGranted{Amounts: Amounts{}, Instances: []InstanceView{}, ShadowDenials: []ShadowDenial{}, Option: -1}
	gEsc := fastGranted()
	gEsc.Label = `a "quoted" <label>`
	gEsc.Labels = Labels{"a": "1", "b": "x\ny", "c": "ü"}
	return []Data{
		g, gOdd, gEmpty, gEsc, &ReservationGranted{},
		&ReservationDenied{Mutation: Mutation{IdempotencyKey: "k9", RequestHash: "ab"}, Scope: "tenant:acme/run:r1",
			Options:  Options{{Label: "opus", Amounts: Amounts{"USD": fastAmt("0.4")}}, {Amounts: Amounts{"USD": fastAmt("0.02"), "tokens": fastAmt("10")}}},
			Priority: PriorityLow, Labels: Labels{"model": "m"},
			Denial: Denial{Code: DenialPriorityFloor, Budget: "monthly", Pattern: "tenant:acme", Scope: "tenant:acme",
				Period: "2026-11", Unit: "USD", Requested: fastAmt("0.4"), Available: fastAmt("0.000000000000000000000000000001")},
			Instances: []InstanceView{inst, wide}},
		&ReservationDenied{Options: Options{}, Denial: Denial{Code: DenialBudgetExhausted}, Instances: []InstanceView{}},
		&ReservationDenied{Options: Options{{Amounts: Amounts{}}}},
		&ReservationDenied{},
		&ReservationCommitted{Mutation: Mutation{IdempotencyKey: "k3", RequestHash: "abab"}, ReservationID: "r1", Scope: "tenant:acme/run:r1",
			Charged: Amounts{"USD": fastAmt("0.47")}, Released: Amounts{}, Overage: Amounts{"USD": fastAmt("0.07")},
			Late: true, Labels: Labels{"model": "m", "tool": "t"}, OverLimit: over, Instances: []InstanceView{inst}},
		&ReservationCommitted{ReservationID: "r2", Charged: Amounts{"USD": fastAmt("1")}, Instances: []InstanceView{inst, wide}},
		&ReservationCommitted{},
		&ReservationReleased{Mutation: Mutation{IdempotencyKey: "k4"}, ReservationID: "r1", Scope: "tenant:acme/run:r1",
			Released: Amounts{"USD": fastAmt("0.4"), "tokens": fastAmt("100")}, Instances: []InstanceView{inst}},
		&ReservationReleased{AlreadyExpired: true, Released: Amounts{}, Instances: []InstanceView{noUnits}},
		&ReservationReleased{},
		&ReservationExpired{ReservationID: "r1", Scope: "tenant:acme/run:r1", Released: Amounts{"USD": fastAmt("0.4")}, Instances: []InstanceView{inst}},
		&ReservationExpired{ReservationID: "r1", Scope: "tenant:acme/run:r1", Released: Amounts{"USD": fastAmt("0.4")}, Instances: []InstanceView{}},
		&ReservationExpired{},
		&UsageCharged{Mutation: Mutation{IdempotencyKey: "k6", RequestHash: "cd"}, Scope: "tenant:acme/workflow:search",
			Amounts: Amounts{"search_calls": fastAmt("3")}, Labels: Labels{"tool": "web"}, OverLimit: over, Instances: []InstanceView{inst}},
		&UsageCharged{Scope: "s", Amounts: Amounts{"USD": fastAmt("99999999999999999999.999999999999999999")}, Instances: []InstanceView{wide, noUnits}},
		&UsageCharged{},
	}
}

// fastEncodeData returns Encode's bytes for the data of d.
func fastEncodeData(t testing.TB, d Data) []byte {
	t.Helper()
	w := getWriter()
	defer putWriter(w)
	if !w.data(d) || w.failed {
		t.Fatalf("%T: the fast encoder refused it", d)
	}
	return bytes.Clone(w.b)
}

// sharedStrings is a string table shared by every checkFastData call.
var (
	sharedMu      sync.Mutex
	sharedStrings stringTable
)

// checkFastData fails if decodeData accepts b as data of typ but the
// general path refuses it or yields another value; it reports acceptance.
func checkFastData(t *testing.T, typ Type, b []byte) bool {
	t.Helper()
	got, ok := decodeData(typ, b, nil)
	// A Decoder's table holds the strings of every input before this one:
	// sharing them must not change a value.
	sharedMu.Lock()
	withShared, sharedOK := decodeData(typ, b, &sharedStrings)
	sharedMu.Unlock()
	if sharedOK != ok {
		t.Fatalf("%s data: accepted %t alone, %t with shared strings:\n%s", typ, ok, sharedOK, b)
	}
	if !ok {
		return false
	}
	if diff := cmp.Diff(got, withShared, fastCmp); diff != "" {
		t.Fatalf("%s data decoded differently with shared strings (-alone +shared):\n%s\ninput: %s", typ, diff, b)
	}
	p, err := newData(typ)
	if err != nil {
		t.Fatalf("decodeData accepted unknown type %q", typ)
	}
	if err := strictUnmarshal(b, p); err != nil {
		t.Fatalf("decodeData accepted %s data the general path refuses (%v):\n%s", typ, err, b)
	}
	if diff := cmp.Diff(p, got, fastCmp); diff != "" {
		t.Fatalf("%s data decoded differently (-general +fast):\n%s\ninput: %s", typ, diff, b)
	}
	return true
}

// TestDecodeDataAcceptsEncoded: for every covered type, what Encode writes
// takes the fast path (else it would be dead code) and yields the general
// path's value; strings Encode escapes are the one thing it declines.
func TestDecodeDataAcceptsEncoded(t *testing.T) {
	accepted := map[Type]int{}
	for _, d := range fastSamples() {
		b := fastEncodeData(t, d)
		ok := checkFastData(t, d.EventType(), b)
		escaped := bytes.IndexByte(b, '\\') >= 0
		if ok == escaped {
			t.Errorf("%T: accepted %v, but escapes %v:\n%s", d, ok, escaped, b)
		}
		if ok {
			accepted[d.EventType()]++
		}
	}
	for _, typ := range fastCovered {
		if accepted[typ] == 0 {
			t.Errorf("%s: no sample took the fast path", typ)
		}
	}
	// Types decodeData does not cover decline, whatever the bytes.
	for _, typ := range Types {
		if _, ok := decodeData(typ, fastEncodeData(t, fastGranted()), nil); ok != (typ == TypeReservationGranted) {
			t.Errorf("%s: decodeData of granted data reports %v", typ, ok)
		}
	}
}

// TestDecodeFastRoundTrip: Decode(Encode(ev)) takes decodeFast for every
// sample, and re-encodes to the same bytes.
func TestDecodeFastRoundTrip(t *testing.T) {
	for _, d := range fastSamples() {
		ev := &Event{V: Version, ID: "01JDQ7Z5N3W8K2V6X9Y4T0R1PQ", Type: d.EventType(), Partition: 3,
			At: fastTime("2026-11-28T20:59:00.123456789Z"), Root: "tenant:acme", Prev: Hash([]byte("previous")), Data: d}
		b, err := Encode(ev)
		if err != nil {
			t.Fatalf("%T: %v", d, err)
		}
		fast, ok := decodeFast(b, nil)
		if !ok {
			t.Fatalf("%T: decodeFast refused what Encode wrote:\n%s", d, b)
		}
		strict, err := decodeStrict(b)
		if err != nil {
			t.Fatalf("%T: decodeStrict: %v", d, err)
		}
		if diff := cmp.Diff(strict, fast, fastCmp); diff != "" {
			t.Fatalf("%T: decodeFast and decodeStrict differ (-strict +fast):\n%s", d, diff)
		}
		again, err := Encode(&fast)
		if err != nil {
			t.Fatalf("%T: re-encoding: %v", d, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("%T: re-encoded differently:\n%s\n%s", d, b, again)
		}
	}
}

// TestDecodeDataDeclines: forms Encode never writes decline (and the
// general path then gives its verdict), even where it would accept them.
func TestDecodeDataDeclines(t *testing.T) {
	g := string(fastEncodeData(t, fastGranted()))
	if !checkFastData(t, TypeReservationGranted, []byte(g)) {
		t.Fatal("the unmodified sample declines")
	}
	edits := map[string][2]string{
		"white space":        {`"scope":`, `"scope": `},
		"field order":        {`"idempotency_key":"k2","request_hash":"` + strings.Repeat("ab", 16) + `"`, `"request_hash":"` + strings.Repeat("ab", 16) + `","idempotency_key":"k2"`},
		"unknown field":      {`"degraded":false`, `"degraded":false,"x":1`},
		"escape":             {`"opus"`, `"op\u0075s"`},
		"null labels":        {`"labels":{"model":"claude-opus-4"}`, `"labels":null`},
		"empty labels":       {`"labels":{"model":"claude-opus-4"}`, `"labels":{}`},
		"null amounts":       {`"amounts":{"USD":"0.4","tokens":"12000"}`, `"amounts":null`},
		"null period_end":    {`"period_end":"2026-12-01T00:00:00Z"`, `"period_end":null`},
		"float option":       {`"option":0`, `"option":0.0`},
		"exponent option":    {`"option":0`, `"option":0e0`},
		"leading zero":       {`"option":0`, `"option":00`},
		"trailing data":      {`"shadow_denials":`, `"shadow_denials":`}, // with a suffix, below
		"unsorted units":     {`{"USD":"0.4","tokens":"12000"}`, `{"tokens":"12000","USD":"0.4"}`},
		"amount number":      {`"USD":"0.4","tokens"`, `"USD":0.4,"tokens"`},
		"negative zero":      {`"remaining":"38000"`, `"remaining":"-0"`},
		"wide map amount":    {`"USD":"0.4","tokens"`, `"USD":"0.4000000000000000001","tokens"`},
		"string degraded":    {`"degraded":false`, `"degraded":"false"`},
		"time not RFC 3339":  {`"expires_at":"2026-11-28T21:00:00Z"`, `"expires_at":"2026-11-28 21:00:00Z"`},
		"null shadow member": {`"shadow_denials":[`, `"shadow_denials":[null,`},
	}
	for name, e := range edits {
		in := strings.Replace(g, e[0], e[1], 1)
		if name == "trailing data" {
			in += " "
		}
		if in == g && name != "trailing data" {
			t.Fatalf("%s: the edit does not apply", name)
		}
		if _, ok := decodeData(TypeReservationGranted, []byte(in), nil); ok {
			t.Errorf("%s: accepted %s", name, in)
		}
	}
	denied := string(fastEncodeData(t, fastSamples()[5]))
	for name, e := range map[string][2]string{
		"null options":    {`"options":[`, `"options":null,"x":[`},
		"empty label":     {`[{"label":"opus",`, `[{"label":"",`},
		"options no list": {`"options":[`, `"options":{`},
	} {
		in := strings.Replace(denied, e[0], e[1], 1)
		if in == denied {
			t.Fatalf("%s: the edit does not apply to %s", name, denied)
		}
		if _, ok := decodeData(TypeReservationDenied, []byte(in), nil); ok {
			t.Errorf("%s: accepted %s", name, in)
		}
	}
	if !checkFastData(t, TypeReservationDenied, []byte(denied)) {
		t.Errorf("the unmodified denied sample declines: %s", denied)
	}
}

func FuzzDecodeEventData(f *testing.F) {
	kind := map[Type]uint8{}
	for k, typ := range fastCovered {
		kind[typ] = uint8(k)
	}
	for _, d := range fastSamples() {
		b, k := fastEncodeData(f, d), kind[d.EventType()]
		f.Add(k, b)
		// Mutations: a field's value replaced, a byte dropped, a suffix.
		f.Add(k, bytes.Replace(b, []byte(`"USD"`), []byte(`"usd"`), 1))
		f.Add(k, bytes.Replace(b, []byte(`"0.4"`), []byte(`"-0.4"`), 1))
		f.Add(k, bytes.Replace(b, []byte(`:null`), []byte(`:[]`), 1))
		f.Add(k, bytes.Replace(b, []byte(`Z"`), []byte(`+02:00"`), 1))
		f.Add(k, append(bytes.Clone(b), ' '))
		if len(b) > 10 {
			f.Add(k, append(bytes.Clone(b[:len(b)/2]), b[len(b)/2+1:]...))
		}
	}
	g := fastEncodeData(f, fastGranted())
	for _, s := range fastAmountInputs {
		for _, old := range []string{`"486.86"`, `"0.84"`, `"12000"`, `"0.3"`} {
			f.Add(kind[TypeReservationGranted], bytes.Replace(g, []byte(old), []byte(`"`+s+`"`), 1))
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, b []byte) {
		checkFastData(t, fastCovered[int(kind)%len(fastCovered)], b)
	})
}

// BenchmarkDecodeGrantedData compares the data decoders alone on the
// granted payload of BenchmarkDecodeGranted (three instances × two units).
func BenchmarkDecodeGrantedData(b *testing.B) {
	data := fastEncodeData(b, fastGranted())
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := decodeData(TypeReservationGranted, data, nil); !ok {
				b.Fatal("declined")
			}
		}
	})
	b.Run("fast-shared", func(b *testing.B) {
		// As a Decoder decodes a run of events: strings seen before are shared.
		b.ReportAllocs()
		var t stringTable
		for b.Loop() {
			if _, ok := decodeData(TypeReservationGranted, data, &t); !ok {
				b.Fatal("declined")
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var d ReservationGranted
			if err := strictUnmarshal(data, &d); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// fastAmountInputs are amount strings around the edges of decoder.fixed:
// digit counts, the 10^19 limit of the compact form, zeros, signs.
var fastAmountInputs = []string{"0", "1", "0.4", "12.30", "0.000000000000000000", "0.000000000000000001",
	"0.0000000000000000001", "9999999999999999999", "9999999999999999999.999999999999999999", "10000000000000000000",
	"1844674407370955161", "18446744073709551616", "123456789012345678901234567890", "00", "01", "1.", ".5", "1e3",
	"-0", "-0.0", "-1", "-0.000000000000000001", "--1", "+1", "", "1.2.3", "١", "-9999999999999999999.5"}

// TestDecoderAmountsAgree compares the decoder's amount readers with the
// parsers the general path uses, on each input alone and in a unit balance.
func TestDecoderAmountsAgree(t *testing.T) {
	for _, s := range fastAmountInputs {
		lit := []byte(`"` + s + `"`)
		for _, c := range []struct {
			name string
			read func(*decoder) (any, bool)
			dec  func([]byte) (any, error)
		}{
			{"amount", func(l *decoder) (any, bool) { return l.amount() },
				func(b []byte) (any, error) { return decodeAmountJSON(b, false, false) }},
			{"wide", func(l *decoder) (any, bool) { return l.wideAmount() },
				func(b []byte) (any, error) { return decodeAmountJSON(b, true, false) }},
			{"signed", func(l *decoder) (any, bool) { a, ok := l.signed(); return a.Amount, ok },
				func(b []byte) (any, error) { return decodeAmountJSON(b, true, true) }},
		} {
			l := decoder{lexer: lexer{b: lit}}
			got, ok := c.read(&l)
			want, err := c.dec(lit)
			if ok != (err == nil) || ok && l.i != len(lit) {
				t.Errorf("%s %q: decoder %v at %d, general path %v", c.name, s, ok, l.i, err)
				continue
			}
			if diff := cmp.Diff(want, got, fastCmp); ok && diff != "" {
				t.Errorf("%s %q: (-general +decoder)\n%s", c.name, s, diff)
			}
		}
		ub := []byte(`{"USD":{"limit":"` + s + `","spent":"0","reserved":"0","remaining":"` + s + `"}}`)
		var want UnitBalances
		l := decoder{lexer: lexer{b: ub}}
		got, ok := l.unitBalances()
		if err := strictUnmarshal(ub, &want); ok && (err != nil || l.i != len(ub)) {
			t.Errorf("unit balance %q: decoder accepted, general path %v", s, err)
		} else if diff := cmp.Diff(want, got, fastCmp); ok && diff != "" {
			t.Errorf("unit balance %q: (-general +decoder)\n%s", s, diff)
		}
	}
}
