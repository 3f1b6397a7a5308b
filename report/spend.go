package report

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tallyledger/tally/events"
)

// Spend report dimensions (--by).
const (
	ByUnit     = "unit"
	ByWorkflow = "workflow"
	ByModel    = "model"
	// kindPrefix and labelPrefix force a name to be read as a scope kind
	// or a label name: kind:team, label:agent.
	kindPrefix  = "kind:"
	labelPrefix = "label:"
)

// MaxBy bounds the dimensions of a spend report.
const MaxBy = 8

// DefaultLookback is how far before the report's window Read starts so
// that a commit in the window finds its reserve's labels: a reservation
// lives at most a day (events.MaxTTL) and a late commit is accepted while
// the enforcer keeps the expired reservation (its idempotency window, a
// day by default).
const DefaultLookback = 49 * time.Hour

// SpendQuery selects a spend report: the root's spend with event at in
// [From, To), grouped by By.
type SpendQuery struct {
	Root     string
	Period   string // the period key the window came from, for display
	From, To time.Time
	By       []string
}

// SpendReport is billing's view of the ledger: spend = charged of commits
// + amounts of charges, by event time in UTC.
type SpendReport struct {
	Root   string    `json:"root"`
	Period string    `json:"period,omitempty"`
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	// Columns are the --by dimensions in order, then unit unless among
	// them; every row has one value per column, then its amount.
	Columns []string       `json:"columns"`
	Rows    []SpendRow     `json:"rows"`
	Totals  events.Amounts `json:"totals"`
}

// SpendRow is the spend of one combination of the columns' values.
type SpendRow struct {
	Values []string      `json:"values"`
	Unit   string        `json:"unit"`
	Amount events.Amount `json:"amount"`
}

var byName = regexp.MustCompile(`^((kind|label):)?[A-Za-z0-9_.-]{1,64}$`)

// ValidateBy checks --by dimensions: unit, workflow, model, a scope kind
// or a label name (kind:NAME and label:NAME say which), each at most once.
func ValidateBy(by []string) error {
	if len(by) > MaxBy {
		return fmt.Errorf("--by: at most %d dimensions", MaxBy)
	}
	seen := map[string]bool{}
	for _, b := range by {
		if !byName.MatchString(b) {
			return fmt.Errorf("--by %q: want unit, workflow, model, a scope kind or a label name (kind:NAME or label:NAME to say which)", b)
		}
		if seen[b] {
			return fmt.Errorf("--by: %s given twice", b)
		}
		seen[b] = true
	}
	return nil
}

var weekKey = regexp.MustCompile(`^([0-9]{4})-W([0-9]{2})$`)

// ParsePeriod turns a period key into its window in UTC: 2026 (year),
// 2026-11 (month), 2026-W48 (ISO week, from Monday), 2026-11-28 (day),
// 2026-11-28T21 (hour).
func ParsePeriod(p string) (from, to time.Time, err error) {
	bad := fmt.Errorf("period %q: want 2026, 2026-11, 2026-W48, 2026-11-28 or 2026-11-28T21 (UTC)", p)
	if m := weekKey.FindStringSubmatch(p); m != nil {
		var y, w int
		fmt.Sscan(m[1], &y)
		fmt.Sscan(m[2], &w)
		// ISO week 1 is the week of January 4th.
		jan4 := time.Date(y, 1, 4, 0, 0, 0, 0, time.UTC)
		from = jan4.AddDate(0, 0, -((int(jan4.Weekday())+6)%7)+7*(w-1))
		if wy, ww := from.ISOWeek(); w < 1 || wy != y || ww != w {
			return time.Time{}, time.Time{}, bad
		}
		return from, from.AddDate(0, 0, 7), nil
	}
	for _, f := range []struct {
		layout string
		next   func(time.Time) time.Time
	}{
		{"2006", func(t time.Time) time.Time { return t.AddDate(1, 0, 0) }},
		{"2006-01", func(t time.Time) time.Time { return t.AddDate(0, 1, 0) }},
		{"2006-01-02", func(t time.Time) time.Time { return t.AddDate(0, 0, 1) }},
		{"2006-01-02T15", func(t time.Time) time.Time { return t.Add(time.Hour) }},
	} {
		if len(p) != len(f.layout) {
			continue
		}
		t, err := time.Parse(f.layout, p)
		if err != nil {
			return time.Time{}, time.Time{}, bad
		}
		return t, f.next(t), nil
	}
	return time.Time{}, time.Time{}, bad
}

// Spend builds a spend report from events. Add every event of the root
// from DefaultLookback before From on, so that commits find the labels of
// their reserves.
type Spend struct {
	q      SpendQuery
	cols   []string
	labels map[string]events.Labels // reservation id → reserve labels
	sums   map[string]*SpendRow
}

// NewSpend starts a spend report.
func NewSpend(q SpendQuery) (*Spend, error) {
	if err := ValidateBy(q.By); err != nil {
		return nil, err
	}
	if !q.From.Before(q.To) {
		return nil, errors.New("spend report: empty window")
	}
	cols := slices.Clone(q.By)
	if !slices.Contains(cols, ByUnit) {
		cols = append(cols, ByUnit)
	}
	return &Spend{q: q, cols: cols, labels: map[string]events.Labels{}, sums: map[string]*SpendRow{}}, nil
}

// Add folds one event.
func (s *Spend) Add(ev events.Event) {
	if ev.Root != s.q.Root {
		return
	}
	in := !ev.At.Before(s.q.From) && ev.At.Before(s.q.To)
	switch d := ev.Data.(type) {
	case *events.ReservationGranted:
		if len(d.Labels) > 0 {
			s.labels[d.ReservationID] = d.Labels
		}
	case *events.ReservationReleased:
		delete(s.labels, d.ReservationID)
	case *events.ReservationCommitted:
		labels := s.labels[d.ReservationID]
		delete(s.labels, d.ReservationID)
		if !in {
			return
		}
		if len(d.Labels) > 0 {
			merged := events.Labels{}
			for k, v := range labels {
				merged[k] = v
			}
			for k, v := range d.Labels {
				merged[k] = v
			}
			labels = merged
		}
		s.add(d.Scope, labels, d.Charged)
	case *events.UsageCharged:
		if in {
			s.add(d.Scope, d.Labels, d.Amounts)
		}
	}
}

func (s *Spend) add(scope string, labels events.Labels, amounts events.Amounts) {
	for _, u := range events.SortedUnits(amounts) {
		a := amounts[u]
		if a.Sign() == 0 {
			continue
		}
		vals := make([]string, len(s.cols))
		for i, c := range s.cols {
			vals[i] = dimension(c, scope, u, labels)
		}
		k := strings.Join(vals, "\x00")
		row := s.sums[k]
		if row == nil {
			row = &SpendRow{Values: vals, Unit: u}
			s.sums[k] = row
		}
		row.Amount = row.Amount.Add(a)
	}
}

// dimension is the value of one --by column for a charge.
func dimension(col, scope, unit string, labels events.Labels) string {
	switch {
	case col == ByUnit:
		return unit
	case col == ByWorkflow:
		return events.SegmentID(scope, "workflow")
	case col == ByModel:
		return labels["model"]
	case strings.HasPrefix(col, kindPrefix):
		return events.SegmentID(scope, strings.TrimPrefix(col, kindPrefix))
	case strings.HasPrefix(col, labelPrefix):
		return labels[strings.TrimPrefix(col, labelPrefix)]
	}
	if id := events.SegmentID(scope, col); id != "" {
		return id
	}
	return labels[col]
}

// Report returns the report of the events added so far, rows in the order
// of their values.
func (s *Spend) Report() SpendReport {
	r := SpendReport{Root: s.q.Root, Period: s.q.Period, From: s.q.From, To: s.q.To, Columns: s.cols,
		Rows: []SpendRow{}, Totals: events.Amounts{}}
	for _, row := range s.sums {
		r.Rows = append(r.Rows, *row)
		r.Totals[row.Unit] = r.Totals[row.Unit].Add(row.Amount)
	}
	slices.SortFunc(r.Rows, func(a, b SpendRow) int { return slices.Compare(a.Values, b.Values) })
	return r
}

// header is the columns then amount.
func (r SpendReport) header() []string { return append(slices.Clone(r.Columns), "amount") }

// WriteSpendCSV writes a header row (the --by columns in order, then unit
// unless among them, then amount) and one row per combination.
func WriteSpendCSV(w io.Writer, r SpendReport) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(r.header()); err != nil {
		return err
	}
	for _, row := range r.Rows {
		if err := cw.Write(append(slices.Clone(row.Values), row.Amount.String())); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteSpendTable writes the rows as an aligned table with totals per unit.
func WriteSpendTable(w io.Writer, r SpendReport) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "spend of %s", r.Root)
	if r.Period != "" {
		fmt.Fprintf(&sb, " in %s", r.Period)
	}
	fmt.Fprintf(&sb, " (%s to %s, UTC)\n\n", r.From.Format(time.RFC3339), r.To.Format(time.RFC3339))
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := r.header()
	for i := range hdr {
		hdr[i] = strings.ToUpper(hdr[i])
	}
	fmt.Fprintln(tw, strings.Join(hdr, "\t")+"\t")
	for _, row := range r.Rows {
		vals := slices.Clone(row.Values)
		for i, v := range vals {
			if v == "" {
				vals[i] = "-"
			}
		}
		fmt.Fprintln(tw, strings.Join(vals, "\t")+"\t"+row.Amount.String()+"\t")
	}
	tw.Flush()
	if len(r.Rows) == 0 {
		sb.WriteString("no spend\n")
	}
	for _, u := range events.SortedUnits(r.Totals) {
		fmt.Fprintf(&sb, "total %s: %s\n", u, r.Totals[u])
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

// WriteSpendJSON writes the report as an indented JSON document; each row
// is an object of its columns and amount.
func WriteSpendJSON(w io.Writer, r SpendReport) error {
	rows := make([]map[string]string, len(r.Rows))
	for i, row := range r.Rows {
		m := map[string]string{"amount": row.Amount.String()}
		for j, c := range r.Columns {
			m[c] = row.Values[j]
		}
		rows[i] = m
	}
	doc := struct {
		Root    string              `json:"root"`
		Period  string              `json:"period,omitempty"`
		From    time.Time           `json:"from"`
		To      time.Time           `json:"to"`
		Columns []string            `json:"columns"`
		Rows    []map[string]string `json:"rows"`
		Totals  events.Amounts      `json:"totals"`
	}{r.Root, r.Period, r.From, r.To, r.Columns, rows, r.Totals}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
