package enforcer

import (
	"fmt"
	"testing"
	"time"

	"github.com/tallyledger/tally/events"
)

// BenchmarkReserve is Decide+Apply of a granted reserve against a
// 3-level hierarchy (tenant > workflow > run) with 2 units, then a commit
// so the balances stay in range over any b.N.
func BenchmarkReserveDecideApply(b *testing.B) {
	h := newHarness(b)
	h.step(events.OpBudgetSet, "tenant:acme", `{"idempotency_key":"b1","scope":"tenant:acme","name":"monthly","limits":{"USD":"1000000000000","tokens":"1000000000000000"},"period":"monthly"}`)
	h.step(events.OpBudgetSet, "tenant:acme", `{"idempotency_key":"b2","scope":"tenant:acme/workflow:code-review","name":"wf","limits":{"USD":"1000000000000","tokens":"1000000000000000"},"period":"daily"}`)
	h.step(events.OpBudgetSet, "tenant:acme", `{"idempotency_key":"b3","scope":"tenant:acme/workflow:code-review/run:*","name":"per-run","limits":{"USD":"1000000000000","tokens":"1000000000000000"}}`)
	s := h.s
	prio := events.PriorityNormal
	b.ReportAllocs()
	i := 0
	now := h.now
	for b.Loop() {
		i++
		req := &events.ReserveRequest{IdempotencyKey: fmt.Sprintf("k%d", i), Scope: "tenant:acme/workflow:code-review/run:r-42",
			Amounts: events.Amounts{"USD": events.MustAmount("0.42"), "tokens": events.MustAmount("12000")}, Priority: &prio}
		d := s.Decide(Command{Op: events.OpReserve, Root: "tenant:acme", Request: req, NewID: fmt.Sprintf("R%d", i)}, now)
		if len(d.Events) == 0 {
			b.Fatalf("no events: %+v", d.Err)
		}
		for _, ev := range d.Events {
			s.Apply(s.LastSeq()+1, ev)
		}
		now = now.Add(time.Microsecond)
	}
}
