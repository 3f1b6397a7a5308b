package report_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/report"
)

// TestRead stores a history in a real partition stream and reads it back
// with every filter.
func TestRead(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithPartitions(1))
	_, js := natstest.Ledger(t, srv, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Empty stream: nothing, at once.
	if err := report.Read(ctx, js, report.Query{}, func(report.Record) error { t.Fatal("record from an empty stream"); return nil }); err != nil {
		t.Fatal(err)
	}
	l := newLedger(t, 0)
	seedShadowScenario(l)
	l.do(events.OpBudgetSet, "tenant:zeta", `{"idempotency_key":"z","scope":"tenant:zeta","name":"m","limits":{"USD":"1"}}`)
	for _, r := range l.recs {
		if _, err := js.Publish(ctx, r.subject, r.data); err != nil {
			t.Fatal(err)
		}
	}
	read := func(q report.Query) []uint64 {
		t.Helper()
		var seqs []uint64
		err := report.ReadEvents(ctx, js, q, func(r report.Record, ev events.Event) error {
			seqs = append(seqs, r.Seq)
			if ev.ID != l.recs[r.Seq-1].ev.ID {
				t.Fatalf("seq %d is %s", r.Seq, ev.ID)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return seqs
	}
	all := read(report.Query{})
	if len(all) != len(l.recs) || all[0] != 1 {
		t.Fatalf("read %d of %d", len(all), len(l.recs))
	}
	if got := read(report.Query{Root: "tenant:zeta"}); !slices.Equal(got, []uint64{uint64(len(l.recs))}) {
		t.Fatalf("root filter: %v", got)
	}
	denied := read(report.Query{Root: "tenant:acme", Types: []events.Type{events.TypeReservationDenied, events.TypeBudgetDeleted}})
	if len(denied) != 1 || l.recs[denied[0]-1].ev.Type != events.TypeReservationDenied {
		t.Fatalf("type filter: %v", denied)
	}
	if got := read(report.Query{FromSeq: 5}); len(got) != len(l.recs)-4 || got[0] != 5 {
		t.Fatalf("from seq: %v", got)
	}
	if got := read(report.Query{Since: time.Now().Add(time.Hour)}); len(got) != 0 {
		// storage time, minus the margin, is still before any message
		t.Fatalf("since the future: %v", got)
	}
	n := 0
	if err := report.Read(ctx, js, report.Query{}, func(report.Record) error { n++; return report.ErrStop }); err != nil || n != 1 {
		t.Fatalf("stop: %d, %v", n, err)
	}
}
