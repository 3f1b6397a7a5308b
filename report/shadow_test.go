package report_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/report"
)

func TestShadowReportSeedScenario(t *testing.T) {
	l := newLedger(t, 0)
	seedShadowScenario(l)
	from := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	s := report.NewShadow(report.ShadowQuery{Scope: "tenant:acme", From: from, To: from.Add(7 * 24 * time.Hour)})
	for _, r := range l.recs {
		s.Add(r.ev)
	}
	r := s.Report()
	if got, want := r.Headline(), "23 calls would have been denied. Peak overage: $47.30."; got != want {
		t.Fatalf("headline %q, want %q", got, want)
	}
	var buf bytes.Buffer
	if err := report.WriteShadowText(&buf, r); err != nil {
		t.Fatal(err)
	}
	want := `23 calls would have been denied. Peak overage: $47.30.

shadow budget "daily-shadow" on tenant:acme
SCOPE        PERIOD      UNIT  LIMIT  WOULD-DENY  PEAK OVERAGE  COVERING LIMIT
tenant:acme  2026-11-28  USD   100    23          47.3          147.3

shadow budget "review-shadow" on tenant:acme/workflow:code-review
SCOPE                             PERIOD      UNIT  LIMIT  WOULD-DENY  PEAK OVERAGE  COVERING LIMIT
tenant:acme/workflow:code-review  2026-11-28  USD   20     12          24            44
`
	if got := buf.String(); got != want {
		t.Fatalf("report:\n%s\nwant:\n%s", got, want)
	}
	first := r.Budgets[0].Instances[0]
	if first.FirstDenial == nil || first.LastDenial == nil || !first.LastDenial.After(*first.FirstDenial) {
		t.Fatalf("denial times %v %v", first.FirstDenial, first.LastDenial)
	}

	// Below the workflow, only its shadow instance is covered: 12 calls.
	s = report.NewShadow(report.ShadowQuery{Scope: "tenant:acme/workflow:code-review", From: from, To: from.Add(7 * 24 * time.Hour)})
	for _, r := range l.recs {
		s.Add(r.ev)
	}
	if got, want := s.Report().Headline(), "12 calls would have been denied. Peak overage: $24.00."; got != want {
		t.Fatalf("headline %q, want %q", got, want)
	}
	// A window that ends before the code-review calls: no denial, and the
	// tenant's shadow instance peaked at exactly its limit.
	cut := l.recs[0].ev.At
	for _, r := range l.recs {
		if d, ok := r.ev.Data.(*events.ReservationGranted); ok && strings.Contains(d.Scope, "code-review") {
			cut = r.ev.At
			break
		}
	}
	s = report.NewShadow(report.ShadowQuery{Scope: "tenant:acme", From: from, To: cut})
	for _, r := range l.recs {
		s.Add(r.ev)
	}
	if got, want := s.Report().Headline(), "0 calls would have been denied. Peak overage: $0.00."; got != want {
		t.Fatalf("headline %q, want %q", got, want)
	}
}

func TestShadowHeadlineUnits(t *testing.T) {
	at := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	view := func(scope string, units map[string][2]string) events.InstanceView {
		v := events.InstanceView{Budget: "b", Pattern: scope, Scope: scope, Period: "none", Mode: events.ModeShadow}
		for _, u := range events.SortedUnits(units) {
			l, used := events.MustAmount(units[u][0]), events.MustAmount(units[u][1])
			v.Units = append(v.Units, events.UnitEntry{Unit: u, UnitBalance: events.UnitBalance{Limit: l, Spent: used,
				Remaining: events.Signed{Amount: l.Sub(used)}}})
		}
		return v
	}
	for _, tc := range []struct {
		name  string
		views []events.InstanceView
		want  string
	}{
		{"nothing", nil, "0 calls would have been denied. Peak overage: $0.00."},
		{"tokens only", []events.InstanceView{view("t:a", map[string][2]string{"tokens": {"500000", "512000"}})},
			"1 call would have been denied. Peak overage: 12000 tokens."},
		{"first unit in byte order", []events.InstanceView{view("t:a", map[string][2]string{"tokens": {"5", "6"}, "requests": {"1", "3"}})},
			"1 call would have been denied. Peak overage: 2 requests."},
		{"EUR over tokens, half up", []events.InstanceView{view("t:a", map[string][2]string{"tokens": {"5", "9"}, "EUR": {"10", "12.345"}})},
			"1 call would have been denied. Peak overage: €2.35."},
		{"USD wins, largest instance", []events.InstanceView{
			view("t:a", map[string][2]string{"USD": {"10", "11.5"}, "GBP": {"1", "100"}}),
			view("t:a/w:x", map[string][2]string{"USD": {"10", "13.004"}})},
			"1 call would have been denied. Peak overage: $3.00."},
		{"GBP", []events.InstanceView{view("t:a", map[string][2]string{"GBP": {"10", "10"}})},
			"1 call would have been denied. Peak overage: £0.00."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := report.NewShadow(report.ShadowQuery{Scope: "t:a", From: at.Add(-time.Hour), To: at.Add(time.Hour)})
			ev := events.Event{Type: events.TypeReservationGranted, At: at, Data: &events.ReservationGranted{Instances: tc.views,
				ShadowDenials: []events.ShadowDenial{{Budget: "b", Pattern: "t:a", Scope: "t:a", Period: "none", Unit: "x"}}}}
			if tc.views == nil {
				ev.Data = &events.ReservationGranted{}
			}
			s.Add(ev)
			if got := s.Report().Headline(); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFormatMoney(t *testing.T) {
	for _, tc := range []struct{ unit, amount, want string }{
		{"USD", "47.3", "$47.30"},
		{"USD", "0.005", "$0.01"},
		{"USD", "0.0049", "$0.00"},
		{"USD", "1234567.895", "$1234567.90"},
		{"EUR", "2", "€2.00"},
		{"GBP", "0.125", "£0.13"},
		{"tokens", "12000", "12000 tokens"},
		{"search_calls", "0.5", "0.5 search_calls"},
	} {
		if got := report.FormatMoney(tc.unit, events.MustAmount(tc.amount)); got != tc.want {
			t.Errorf("FormatMoney(%s, %s) = %q, want %q", tc.unit, tc.amount, got, tc.want)
		}
	}
}
