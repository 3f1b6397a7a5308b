package projector

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/streams"
)

// memKV stands in for the two buckets in the pure tests: "<bucket>/<key>" → value.
type memKV map[string][]byte

func (m memKV) write(c Change) {
	if c.Value == nil {
		delete(m, c.Bucket+"/"+c.Key)
		return
	}
	m[c.Bucket+"/"+c.Key] = c.Value
}

// load builds the view a restarting shell builds: every entry of the
// partition but only the roll-ups of rollUpHours.
func (m memKV) load(t testing.TB, n int, cp Checkpoint) *View {
	t.Helper()
	v := NewView(n, testRetention)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, bk := range keys {
		_, key, _ := strings.Cut(bk, "/")
		k, err := ParseKey(key)
		if err != nil {
			t.Fatal(err)
		}
		if k.Prefix == PrefixSpend || k.Prefix == PrefixWorkflow {
			from, to, ok := rollUpHours(cp)
			if !ok || k.Hour.Before(from) || k.Hour.After(to) {
				continue
			}
		}
		if err := v.Load(key, m[bk]); err != nil {
			t.Fatal(err)
		}
	}
	v.SetCheckpoint(cp.Seq, cp.At)
	return v
}

const testRetention = 30 * time.Hour

// flushAll writes every change, then purges, and returns the checkpoint.
func flushAll(v *View, kv memKV) Checkpoint {
	cs, fl := v.Changes()
	for _, c := range cs {
		kv.write(c)
	}
	for _, c := range v.Purge(fl.Seq) {
		kv.write(c)
	}
	return Checkpoint{Seq: fl.Seq, At: fl.At}
}

// foldClean is the reference: one uninterrupted fold, flushed every few events.
func foldClean(log []stored, every int) memKV {
	kv := memKV{}
	v := NewView(0, testRetention)
	for i, s := range log {
		v.Apply(s.seq, s.ev)
		if (i+1)%every == 0 {
			flushAll(v, kv)
		}
	}
	flushAll(v, kv)
	return kv
}

// TestRestartsLoseAndDoubleCountNothing folds random histories with
// crashes: flushes cut after an arbitrary subset of their writes (the
// shell writes concurrently), restarts from what KV holds, and
// redeliveries of events already applied. The stored views must end
// byte-equal to those of one uninterrupted fold.
func TestRestartsLoseAndDoubleCountNothing(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			w := newWorkload(t, seed)
			w.run(400)
			want := foldClean(w.log, 1+int(seed%7))

			rng := rand.New(rand.NewPCG(seed, 7))
			kv := memKV{}
			cp := Checkpoint{}
			v := kv.load(t, 0, cp)
			crashes := 0
			for i := 0; i < len(w.log); {
				s := w.log[i]
				v.Apply(s.seq, s.ev)
				i++
				if rng.IntN(10) == 0 && i > 3 { // a redelivery of recent events
					for _, r := range w.log[i-3 : i] {
						if v.Apply(r.seq, r.ev) {
							t.Fatalf("redelivered seq %d applied again", r.seq)
						}
					}
				}
				if rng.IntN(8) != 0 {
					continue
				}
				cs, fl := v.Changes()
				if len(cs) > 0 {
					cp = aheadMarker(cp, fl)
				}
				if rng.IntN(3) != 0 {
					for _, c := range cs {
						kv.write(c)
					}
					cp = flushed(cp, fl)
					cut := false
					for _, c := range v.Purge(cp.Seq) {
						if rng.IntN(4) != 0 { // a crash may cut the purge too
							kv.write(c)
						} else {
							cut = true
						}
					}
					if cut {
						crashes++
						v = kv.load(t, 0, cp)
						i = int(cp.Seq)
					}
					continue
				}
				// Crash: some puts landed (any subset), deletes only once
				// every put did; the checkpoint was not written.
				crashes++
				puts := slices.IndexFunc(cs, func(c Change) bool { return c.Value == nil })
				if puts < 0 {
					puts = len(cs)
				}
				all := true
				for _, c := range cs[:puts] {
					if rng.IntN(2) == 0 {
						kv.write(c)
					} else {
						all = false
					}
				}
				if all {
					for _, c := range cs[puts:] {
						if rng.IntN(2) == 0 {
							kv.write(c)
						}
					}
				}
				v = kv.load(t, 0, cp)
				i = int(cp.Seq) // resume after the checkpoint
			}
			flushAll(v, kv)
			if crashes == 0 {
				t.Fatal("no crash simulated")
			}
			if diff := cmp.Diff(strMap(want), strMap(kv)); diff != "" {
				t.Fatalf("after %d crashes the views differ from one fold (-want +got):\n%s", crashes, diff)
			}
		})
	}
}

func strMap(m memKV) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

func TestRedeliveryChangesNothing(t *testing.T) {
	w := newWorkload(t, 99)
	w.run(200)
	v := NewView(0, testRetention)
	for _, s := range w.log {
		v.Apply(s.seq, s.ev)
	}
	v.Changes()
	for _, s := range w.log {
		if v.Apply(s.seq, s.ev) {
			t.Fatalf("seq %d applied twice", s.seq)
		}
	}
	if cs, fl := v.Changes(); len(cs) != 0 || fl.Events != 0 {
		t.Fatalf("redelivery produced %d changes, %d events", len(cs), fl.Events)
	}
}

// snapInstance mirrors the enforcer snapshot's instance, as
// enforcer.SnapshotJSON renders it.
type snapInstance struct {
	Budget string `json:"budget"`
	Scope  string `json:"scope"`
	Period string `json:"period"`
	Units  []struct {
		Unit     string        `json:"unit"`
		Spent    events.Amount `json:"spent"`
		Reserved events.Amount `json:"reserved"`
		Adjust   events.Signed `json:"adjust"`
	} `json:"units"`
}

// TestBalancesEqualEnforcer checks the balance view against the
// enforcer's own state after random histories: for every instance and
// every unit its budget limits, the same limit, spent and reserved.
func TestBalancesEqualEnforcer(t *testing.T) {
	for seed := range uint64(4) {
		w := newWorkload(t, 100+seed)
		w.run(400)
		kv := foldClean(w.log, 5)
		var snap struct {
			Budgets   []events.Budget `json:"budgets"`
			Instances []snapInstance  `json:"instances"`
		}
		doc, err := enforcer.SnapshotJSON(w.st.Snapshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(doc, &snap); err != nil {
			t.Fatal(err)
		}
		defs := map[string]events.Budget{}
		for _, b := range snap.Budgets {
			defs[b.Scope+"\x00"+b.Name] = b
		}
		type bal struct{ Limit, Spent, Reserved string }
		want := map[string]bal{}
		for _, in := range snap.Instances {
			def := defs[in.Budget]
			pattern, name, _ := strings.Cut(in.Budget, "\x00")
			for u, l := range def.Limits {
				b := bal{Limit: l.String(), Spent: "0", Reserved: "0"}
				for _, su := range in.Units {
					if su.Unit == u {
						b = bal{Limit: l.Add(su.Adjust.Amount).String(), Spent: su.Spent.String(), Reserved: su.Reserved.String()}
					}
				}
				want[InstanceKey(0, pattern, name, in.Scope, in.Period)+" "+u] = b
			}
		}
		got := map[string]bal{}
		for bk, val := range kv {
			_, key, _ := strings.Cut(bk, "/")
			if !strings.HasPrefix(key, PrefixInstance+".") {
				continue
			}
			var b Balance
			if err := json.Unmarshal(val, &b); err != nil {
				t.Fatal(err)
			}
			for _, u := range b.Units {
				got[key+" "+u.Unit] = bal{Limit: u.Limit.String(), Spent: u.Spent.String(), Reserved: u.Reserved.String()}
				if r := u.Limit.Sub(u.Spent).Sub(u.Reserved); r.Cmp(u.Remaining.Amount) != 0 {
					t.Fatalf("%s %s: remaining %s, want %s", key, u.Unit, u.Remaining, r)
				}
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("seed %d: projection differs from the enforcer's state (-enforcer +projection):\n%s", seed, diff)
		}
	}
}

// TestSpendRollUpsSumEvents checks the roll-ups against sums computed
// directly from the events, and that the commit's model label wins over
// the reserve's.
func TestSpendRollUpsSumEvents(t *testing.T) {
	w := newWorkload(t, 7)
	w.run(500)
	kv := foldClean(w.log, 3)
	want := map[string]events.Amount{}
	models := map[string]string{}
	add := func(at time.Time, scope string, amounts events.Amounts, model string) {
		for u, a := range amounts {
			if a.Sign() > 0 {
				k := fmt.Sprintf("%s|%s|%s|%s", at.UTC().Truncate(time.Hour).Format(time.RFC3339), scope, u, model)
				want[k] = want[k].Add(a)
			}
		}
	}
	for _, s := range w.log {
		switch d := s.ev.Data.(type) {
		case *events.ReservationGranted:
			models[d.ReservationID] = d.Labels["model"]
		case *events.ReservationCommitted:
			m, ok := d.Labels["model"]
			if !ok {
				m = models[d.ReservationID]
			}
			add(s.ev.At, d.Scope, d.Charged, m)
		case *events.UsageCharged:
			add(s.ev.At, d.Scope, d.Amounts, d.Labels["model"])
		}
	}
	got := map[string]events.Amount{}
	wfTotal, spendTotal := events.Zero, events.Zero
	for bk, val := range kv {
		_, key, _ := strings.Cut(bk, "/")
		switch {
		case strings.HasPrefix(key, PrefixSpend+"."):
			var s Spend
			if err := json.Unmarshal(val, &s); err != nil {
				t.Fatal(err)
			}
			got[fmt.Sprintf("%s|%s|%s|%s", s.Hour.Format(time.RFC3339), s.Scope, s.Unit, s.Model)] = s.Amount
			spendTotal = spendTotal.Add(s.Amount)
		case strings.HasPrefix(key, PrefixWorkflow+"."):
			var s WorkflowSpend
			if err := json.Unmarshal(val, &s); err != nil {
				t.Fatal(err)
			}
			wfTotal = wfTotal.Add(s.Amount)
		}
	}
	if len(want) == 0 {
		t.Fatal("workload spent nothing")
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b events.Amount) bool { return a.Cmp(b) == 0 })); diff != "" {
		t.Fatalf("roll-ups (-events +view):\n%s", diff)
	}
	if wfTotal.Cmp(spendTotal) != 0 {
		t.Fatalf("workflow roll-ups total %s, scope roll-ups %s", wfTotal, spendTotal)
	}
}

// TestShadowStatistics folds a hand-built history and checks every figure.
func TestShadowStatistics(t *testing.T) {
	at := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	view := func(spent, reserved string) events.InstanceView {
		l, s, r := events.MustAmount("100"), events.MustAmount(spent), events.MustAmount(reserved)
		return events.InstanceView{Budget: "daily", Pattern: "tenant:a", Scope: "tenant:a", Period: "2026-11-28", Mode: events.ModeShadow,
			Units: events.UnitBalances{{Unit: "USD", UnitBalance: events.UnitBalance{Limit: l, Spent: s, Reserved: r,
				Remaining: events.Signed{Amount: l.Sub(s).Sub(r)}}}}}
	}
	denial := func(over string) []events.ShadowDenial {
		return []events.ShadowDenial{{Budget: "daily", Pattern: "tenant:a", Scope: "tenant:a", Period: "2026-11-28", Unit: "USD",
			Overage: events.MustAmount(over)}}
	}
	evs := []events.Event{
		{Type: events.TypeReservationGranted, At: at, Data: &events.ReservationGranted{ReservationID: "r1", Scope: "tenant:a",
			Instances: []events.InstanceView{view("90", "5")}}},
		{Type: events.TypeReservationGranted, At: at.Add(time.Minute), Data: &events.ReservationGranted{ReservationID: "r2", Scope: "tenant:a",
			Instances: []events.InstanceView{view("90", "25")}, ShadowDenials: denial("15")}},
		{Type: events.TypeReservationCommit, At: at.Add(2 * time.Minute), Data: &events.ReservationCommitted{ReservationID: "r2", Scope: "tenant:a",
			Instances: []events.InstanceView{view("140", "5")}}},
		{Type: events.TypeReservationGranted, At: at.Add(3 * time.Minute), Data: &events.ReservationGranted{ReservationID: "r3", Scope: "tenant:a",
			Instances: []events.InstanceView{view("140", "6")}, ShadowDenials: denial("1")}},
	}
	v := NewView(0, 0)
	for i, ev := range evs {
		v.Apply(uint64(i+1), ev)
	}
	got := v.shadow[ShadowKey(0, "tenant:a", "daily", "tenant:a", "2026-11-28")]
	first, last := at.Add(time.Minute), at.Add(3*time.Minute)
	want := &Shadow{Budget: "daily", Pattern: "tenant:a", Scope: "tenant:a", Period: "2026-11-28", WouldDeny: 2,
		FirstDenial: &first, LastDenial: &last, Seq: 4, Units: map[string]ShadowUnit{"USD": {Limit: events.MustAmount("100"),
			WouldDeny: 2, PeakOverage: events.MustAmount("46"), PeakUsage: events.MustAmount("146")}}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(Shadow{}), cmp.Comparer(func(a, b events.Amount) bool { return a.Cmp(b) == 0 })); diff != "" {
		t.Fatalf("shadow statistics (-want +got):\n%s", diff)
	}
}

func TestKeyEncodingRoundTrip(t *testing.T) {
	hour := time.Date(2026, 11, 28, 21, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		key  string
		want Key
	}{
		{"instance", InstanceKey(3, "tenant:acme/workflow:*/run:*", "per-run", "tenant:acme/workflow:x/run:r-1", "none"),
			Key{Prefix: PrefixInstance, Partition: 3, Parts: []string{"tenant:acme/workflow:*/run:*", "per-run", "tenant:acme/workflow:x/run:r-1", "none"}}},
		{"spend with empty model", SpendKey(0, hour, "tenant:a", "USD", ""),
			Key{Prefix: PrefixSpend, Partition: 0, Hour: hour, Parts: []string{"tenant:a", "USD", ""}}},
		{"workflow", WorkflowKey(7, hour, "tenant:a", "", "tokens", "opus"),
			Key{Prefix: PrefixWorkflow, Partition: 7, Hour: hour, Parts: []string{"tenant:a", "", "tokens", "opus"}}},
		{"budget", BudgetKey(12, "tenant:a", "monthly"), Key{Prefix: PrefixBudget, Partition: 12, Parts: []string{"tenant:a", "monthly"}}},
		{"checkpoint", CheckpointKey(2), Key{Prefix: PrefixCheckpoint, Partition: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range tc.key {
				if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.", c)) {
					t.Fatalf("key %q has %q, not a KV key character", tc.key, c)
				}
			}
			got, err := ParseKey(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("ParseKey(%q) (-want +got):\n%s", tc.key, diff)
			}
		})
	}
	for _, bad := range []string{"inst", "inst.x.a.b.c.d", "inst.01.a.b.c.d", "nope.1.a", "inst.1.a.b.c", "spend.1.2026.a.b.c", "inst.1.!!.b.c.d"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
	if bucketOf(BudgetKey(0, "a:b", "n")) != streams.BudgetsBucket || bucketOf(InstanceKey(0, "a:b", "n", "a:b", "none")) != streams.BalancesBucket {
		t.Fatal("bucketOf")
	}
}
