package enforcer

import (
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
