package enforcer

import (
	"encoding/json"
	"testing"

	"github.com/tallyledger/tally/events"
)

func TestSmokeHierarchy(t *testing.T) {
	h := newHarness(t)
	h.step(events.OpBudgetSet, "tenant:acme", `{"idempotency_key":"b1","scope":"tenant:acme","name":"monthly","limits":{"USD":"500"},"period":"monthly"}`)
	h.step(events.OpBudgetSet, "tenant:acme", `{"idempotency_key":"b2","scope":"tenant:acme/workflow:code-review/run:*","name":"per-run","limits":{"USD":"2.00"}}`)
	d := h.step(events.OpReserve, "tenant:acme", `{"idempotency_key":"k1","scope":"tenant:acme/workflow:code-review/run:r-42","amounts":{"USD":"1.5","tokens":"100"}}`)
	res := mustResult(t, d).(events.ReserveResult)
	if res.Decision != "granted" || len(res.Instances) != 2 {
		t.Fatalf("got %+v", res)
	}
	d = h.step(events.OpReserve, "tenant:acme", `{"idempotency_key":"k2","scope":"tenant:acme/workflow:code-review/run:r-42","amounts":{"USD":"0.6"}}`)
	res = mustResult(t, d).(events.ReserveResult)
	if res.Decision != "denied" || res.Denial.Budget != "per-run" || res.Denial.Available.String() != "0.5" {
		t.Fatalf("got %+v %+v", res, res.Denial)
	}
	d = h.step(events.OpCommit, "tenant:acme", `{"idempotency_key":"c1","reservation_id":"R0003","actual":{"USD":"1.7"}}`)
	cr := mustResult(t, d).(events.CommitResult)
	if cr.Overage["USD"].String() != "0.2" || cr.Released["USD"].String() != "0" {
		t.Fatalf("commit %+v", cr)
	}
	// Retry gives a duplicate of the commit event.
	d = h.step(events.OpCommit, "tenant:acme", `{"idempotency_key":"c1","reservation_id":"R0003","actual":{"USD":"1.70"}}`)
	if d.Duplicate == 0 {
		t.Fatalf("want duplicate, got %+v", d)
	}
	// Replay reproduces.
	r := New(Config{Partition: 3})
	for i, ev := range h.log {
		b, err := events.Encode(&ev)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := events.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		r.Apply(uint64(i+1), dec)
	}
	bal := r.Decide(Command{Op: events.OpBalance, Root: "tenant:acme", Request: &events.BalanceRequest{Scope: "tenant:acme/workflow:code-review/run:r-42"}}, h.now)
	got := bal.Result.(events.BalanceResult)
	run, _ := got.Instances[1].Units.Get("USD")
	ten, _ := got.Instances[0].Units.Get("USD")
	if run.Spent.String() != "1.7" || ten.Remaining.String() != "498.3" {
		t.Fatalf("replayed balance %+v", got)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	h := newHarness(t)
	h.step(events.OpBudgetSet, "tenant:acme", `{"idempotency_key":"b1","scope":"tenant:acme","name":"monthly","limits":{"USD":"500"},"period":"monthly","timezone":"Europe/Paris"}`)
	h.step(events.OpReserve, "tenant:acme", `{"idempotency_key":"k1","scope":"tenant:acme/run:r1","amounts":{"USD":"300"}}`)
	h.step(events.OpReserve, "tenant:acme", `{"idempotency_key":"k2","scope":"tenant:acme/run:r2","amounts":{"USD":"300"}}`)
	h.step(events.OpRelease, "tenant:acme", `{"idempotency_key":"k3","reservation_id":"R0002"}`)
	snap := h.s.Snapshot()
	r, err := Restore(Config{Partition: 3}, snap)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Snapshot(); string(got) != string(snap) {
		t.Fatalf("restore changed the state:\n%s\n%s", snap, got)
	}
}

// Figures tally computes can pass the request bounds: limit × (1 − floor)
// has up to 36 fractional digits (a denial's available, a shadow overage),
// and a limit replaced under existing spend can leave a remaining beyond 38
// significant digits. Such events must encode, decode and replay.
func TestWideFiguresReplay(t *testing.T) {
	h := newHarness(t)
	root := "tenant:wide"
	h.step(events.OpBudgetSet, root, `{"idempotency_key":"b1","scope":"tenant:wide","name":"floor","limits":{"USD":"1.000000000000000001"},"priority_floors":{"low":"0.333333333333333333"}}`)
	h.step(events.OpBudgetSet, root, `{"idempotency_key":"b2","scope":"tenant:wide","name":"shadow","mode":"shadow","limits":{"USD":"0.000000000000000003"},"priority_floors":{"low":"0.123456789012345678"}}`)
	d := h.step(events.OpReserve, root, `{"idempotency_key":"k1","scope":"tenant:wide","amounts":{"USD":"0.5"},"priority":"low"}`)
	res := mustResult(t, d).(events.ReserveResult)
	if res.Decision != events.DecisionGranted || len(res.ShadowDenials) != 1 || res.ShadowDenials[0].Overage.FractionDigits() <= events.MaxFractionDigits {
		t.Fatalf("want a grant with a 36-digit shadow overage, got %+v", res)
	}
	d = h.step(events.OpReserve, root, `{"idempotency_key":"k2","scope":"tenant:wide","amounts":{"USD":"0.4"},"priority":"low"}`)
	res = mustResult(t, d).(events.ReserveResult)
	if res.Decision != events.DecisionDenied || res.Denial.Available.FractionDigits() <= events.MaxFractionDigits {
		t.Fatalf("want a denial with a 36-digit available, got %+v %+v", res, res.Denial)
	}
	// Spend under a small limit, then replace it by a 38-digit one.
	h.step(events.OpCharge, root, `{"idempotency_key":"c1","scope":"tenant:wide","amounts":{"USD":"0.000000000000000001"}}`)
	h.step(events.OpBudgetSet, root, `{"idempotency_key":"b3","scope":"tenant:wide","name":"floor","limits":{"USD":"10000000000000000000000000000000000000"}}`)
	h.step(events.OpRelease, root, `{"idempotency_key":"r1","reservation_id":"R0003"}`)
	r := New(Config{Partition: 3})
	for i, ev := range h.log {
		b, err := events.Encode(&ev)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := events.Decode(b)
		if err != nil {
			t.Fatalf("event %d (%s) does not decode: %v\n%s", i+1, ev.Type, err, b)
		}
		r.Apply(uint64(i+1), dec)
	}
	if string(r.Snapshot()) != string(h.s.Snapshot()) {
		t.Fatal("replay differs from the live state")
	}
}

// A derived remaining beyond 38 significant digits refuses nothing: spend
// that happened is recorded, and an adjust that keeps the limit in range
// is accepted.
func TestRemainingBeyond38DigitsIsRecorded(t *testing.T) {
	h := newHarness(t)
	root := "tenant:acme"
	h.step(events.OpBudgetSet, root, `{"idempotency_key":"b","scope":"tenant:acme","name":"b","limits":{"USD":"1000000000000000000000000000000000"}}`)
	d := h.step(events.OpCharge, root, `{"idempotency_key":"c","scope":"tenant:acme","amounts":{"USD":"0.000003"}}`)
	cr := mustResult(t, d).(events.ChargeResult)
	if u, _ := cr.Instances[0].Units.Get("USD"); u.Remaining.String() != "999999999999999999999999999999999.999997" {
		t.Fatalf("remaining %s", u.Remaining)
	}
	d = h.step(events.OpBudgetAdjust, root, `{"idempotency_key":"a","scope":"tenant:acme","name":"b","delta":{"USD":"1"},"reason":"top-up"}`)
	if d.Err != nil {
		t.Fatalf("adjust refused: %v", d.Err)
	}
}

// events.ResultAnswer writes exactly what marshalling the answer envelope would.
func TestResultAnswerMatchesEnvelope(t *testing.T) {
	res := events.BalanceResult{Scope: "tenant:a", Instances: []events.InstanceView{{Budget: "b", Pattern: "tenant:a",
		Scope: "tenant:a", Period: "none", Mode: events.ModeEnforce, Units: events.UnitBalances{{Unit: "USD"}}}}}
	r, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(events.Answer{Result: r})
	if err != nil {
		t.Fatal(err)
	}
	if got := events.ResultAnswer(res); string(got) != string(want) {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}
