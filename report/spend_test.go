package report_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/report"
)

func TestParsePeriod(t *testing.T) {
	d := func(y int, m time.Month, day, h int) time.Time { return time.Date(y, m, day, h, 0, 0, 0, time.UTC) }
	for _, tc := range []struct {
		in       string
		from, to time.Time
	}{
		{"2026", d(2026, 1, 1, 0), d(2027, 1, 1, 0)},
		{"2026-11", d(2026, 11, 1, 0), d(2026, 12, 1, 0)},
		{"2026-12", d(2026, 12, 1, 0), d(2027, 1, 1, 0)},
		{"2026-11-28", d(2026, 11, 28, 0), d(2026, 11, 29, 0)},
		{"2026-11-28T21", d(2026, 11, 28, 21), d(2026, 11, 28, 22)},
		{"2026-W48", d(2026, 11, 23, 0), d(2026, 11, 30, 0)},
		{"2026-W01", d(2025, 12, 29, 0), d(2026, 1, 5, 0)},
		{"2020-W53", d(2020, 12, 28, 0), d(2021, 1, 4, 0)},
	} {
		from, to, err := report.ParsePeriod(tc.in)
		if err != nil || !from.Equal(tc.from) || !to.Equal(tc.to) {
			t.Errorf("ParsePeriod(%q) = %v, %v, %v; want %v, %v", tc.in, from, to, err, tc.from, tc.to)
		}
	}
	for _, bad := range []string{"", "26", "2026-13", "2026-11-31", "2026-W54", "2026-W00", "2021-W53", "2026-11-28T24", "2026/11", "november"} {
		if _, _, err := report.ParsePeriod(bad); err == nil {
			t.Errorf("ParsePeriod(%q) accepted", bad)
		}
	}
}

func spendOf(t *testing.T, recs []rec, q report.SpendQuery) report.SpendReport {
	t.Helper()
	s, err := report.NewSpend(q)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		s.Add(r.ev)
	}
	return s.Report()
}

func TestSpendReportSeedScenario(t *testing.T) {
	l := newLedger(t, 0)
	seedShadowScenario(l)
	from, to, _ := report.ParsePeriod("2026-11")
	r := spendOf(t, l.recs, report.SpendQuery{Root: "tenant:acme", Period: "2026-11", From: from, To: to, By: []string{"workflow", "model"}})
	var buf bytes.Buffer
	if err := report.WriteSpendCSV(&buf, r); err != nil {
		t.Fatal(err)
	}
	want := "workflow,model,unit,amount\nchat,haiku,USD,0.8\ncode-review,sonnet,USD,44\ndeep-research,opus,USD,102.5\n"
	if got := buf.String(); got != want {
		t.Fatalf("csv:\n%s\nwant:\n%s", got, want)
	}
	if got := r.Totals["USD"].String(); got != "147.3" {
		t.Fatalf("total %s", got)
	}
	// unit among --by keeps its place; a scope kind groups by its id.
	r = spendOf(t, l.recs, report.SpendQuery{Root: "tenant:acme", From: from, To: to, By: []string{"unit", "session"}})
	buf.Reset()
	report.WriteSpendCSV(&buf, r)
	if got, want := buf.String(), "unit,session,amount\nUSD,,146.5\nUSD,s1,0.8\n"; got != want {
		t.Fatalf("csv:\n%s\nwant:\n%s", got, want)
	}
	// Another month, another root: nothing.
	from, to, _ = report.ParsePeriod("2026-10")
	if r := spendOf(t, l.recs, report.SpendQuery{Root: "tenant:acme", From: from, To: to}); len(r.Rows) != 0 {
		t.Fatalf("October: %+v", r.Rows)
	}
	from, to, _ = report.ParsePeriod("2026")
	if r := spendOf(t, l.recs, report.SpendQuery{Root: "tenant:other", From: from, To: to}); len(r.Rows) != 0 {
		t.Fatalf("other root: %+v", r.Rows)
	}
}

// TestSpendLabels: commit labels over reserve labels, per key; a reserve
// before the window still lends its labels to a commit inside it; charges
// carry their own; label:NAME and kind:NAME say which is meant.
func TestSpendLabels(t *testing.T) {
	l := newLedger(t, 0)
	root := "tenant:acme"
	l.do(events.OpBudgetSet, root, `{"idempotency_key":"b1","scope":"tenant:acme","name":"m","limits":{"USD":"500"}}`)
	reserve := func(key, scope, labels string) string {
		d := l.do(events.OpReserve, root, fmt.Sprintf(`{"idempotency_key":%q,"scope":%q,"amounts":{"USD":"5"},"labels":%s,"ttl_ms":86400000}`, key, scope, labels))
		return d.Events[0].Data.(*events.ReservationGranted).ReservationID
	}
	commit := func(key, id, usd, labels string) {
		l.do(events.OpCommit, root, fmt.Sprintf(`{"idempotency_key":%q,"reservation_id":%q,"actual":{"USD":%q,"tokens":"100"},"labels":%s}`, key, id, usd, labels))
	}
	early := reserve("r1", "tenant:acme/team:ml", `{"model":"opus","agent":"a1"}`)
	l.now = l.now.Add(2 * time.Hour)
	windowStart := l.now
	commit("c1", early, "1.5", `{"agent":"a2"}`) // model from the reserve, agent from the commit
	id := reserve("r2", "tenant:acme/workflow:w/team:ml", `{"model":"opus"}`)
	commit("c2", id, "2.25", `{"model":"haiku"}`)
	l.do(events.OpCharge, root, `{"idempotency_key":"x1","scope":"tenant:acme/team:ops","amounts":{"USD":"0.01"},"labels":{"model":"haiku","team":"label-team"}}`)
	r := spendOf(t, l.recs, report.SpendQuery{Root: root, From: windowStart, To: l.now.Add(time.Hour),
		By: []string{"model", "label:agent", "team", "label:team", "workflow"}})
	var buf bytes.Buffer
	report.WriteSpendCSV(&buf, r)
	want := strings.Join([]string{
		"model,label:agent,team,label:team,workflow,unit,amount",
		"haiku,,ml,,w,USD,2.25",
		"haiku,,ml,,w,tokens,100",
		"haiku,,ops,label-team,,USD,0.01",
		"opus,a2,ml,,,USD,1.5",
		"opus,a2,ml,,,tokens,100",
	}, "\n") + "\n"
	if got := buf.String(); got != want {
		t.Fatalf("csv:\n%s\nwant:\n%s", got, want)
	}
	buf.Reset()
	if err := report.WriteSpendJSON(&buf, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"totals": {`) || !strings.Contains(buf.String(), `"USD": "3.76"`) {
		t.Fatalf("json:\n%s", buf.String())
	}
	buf.Reset()
	if err := report.WriteSpendTable(&buf, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "total USD: 3.76\ntotal tokens: 200\n") {
		t.Fatalf("table:\n%s", buf.String())
	}
}

func TestValidateBy(t *testing.T) {
	for _, ok := range [][]string{nil, {"unit"}, {"workflow", "model"}, {"kind:team", "label:agent.name"}} {
		if err := report.ValidateBy(ok); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, bad := range [][]string{{""}, {"model", "model"}, {"a b"}, {"kind:"}, {"x", "x", "y"}, strings.Fields("a b c d e f g h i")} {
		if err := report.ValidateBy(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
