package report

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tallyledger/tally/events"
)

// ShadowQuery selects what a shadow report covers (DESIGN §7): shadow
// instances whose concrete scope is Scope or below it, and events whose at
// falls in [From, To).
type ShadowQuery struct {
	Scope    string
	From, To time.Time
}

// ShadowReport is the answer to "what would the shadow budgets have done?".
type ShadowReport struct {
	Scope string    `json:"scope"`
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	// WouldDeny is the number of calls that would have been denied: granted
	// reserves carrying at least one shadow denial of a covered instance.
	WouldDeny int64 `json:"would_deny"`
	// PeakOverage is the largest single-instance peak overage, in USD (or
	// EUR, GBP) when a covered instance limits it, else in the first
	// limited unit.
	PeakOverage Money          `json:"peak_overage"`
	Budgets     []ShadowBudget `json:"budgets"`
}

// ShadowBudget groups the covered instances of one shadow budget.
type ShadowBudget struct {
	Budget    string           `json:"budget"`
	Pattern   string           `json:"pattern"`
	Instances []ShadowInstance `json:"instances"`
}

// ShadowInstance is one shadow instance's figures over the window.
type ShadowInstance struct {
	Scope  string `json:"scope"`
	Period string `json:"period"`
	// WouldDeny counts the granted reserves with a shadow denial of this
	// instance.
	WouldDeny   int64        `json:"would_deny"`
	FirstDenial *time.Time   `json:"first_denial,omitempty"`
	LastDenial  *time.Time   `json:"last_denial,omitempty"`
	Units       []ShadowUnit `json:"units"`
}

// ShadowUnit is one unit of a shadow instance.
type ShadowUnit struct {
	Unit string `json:"unit"`
	// Limit is the limit at the instance's last event in the window.
	Limit events.Amount `json:"limit"`
	// WouldDeny counts the shadow denials of this unit.
	WouldDeny int64 `json:"would_deny"`
	// PeakOverage is the maximum over the instance's events of
	// spent + reserved − limit, 0 if it never went above.
	PeakOverage events.Amount `json:"peak_overage"`
	// CoveringLimit is the limit that would have covered all the observed
	// traffic: the maximum over the instance's events of spent + reserved.
	// (Priority floors need headroom on top: a grant at floor f needs a
	// limit of usage / (1 − f).)
	CoveringLimit events.Amount `json:"covering_limit"`
}

// Money is an amount of a unit with its display text.
type Money struct {
	Unit   string        `json:"unit"`
	Amount events.Amount `json:"amount"`
	Text   string        `json:"text"`
}

var currencySymbols = map[string]string{"USD": "$", "EUR": "€", "GBP": "£"}

// currencyOrder is the preference of the headline's unit.
var currencyOrder = []string{"USD", "EUR", "GBP"}

// FormatMoney renders an amount for people: currencies with their symbol
// and two decimals rounded half up ($47.30), other units exactly with
// their name (12000 tokens).
func FormatMoney(unit string, a events.Amount) string {
	if sym, ok := currencySymbols[unit]; ok {
		return sym + a.RoundHalfUp(2)
	}
	return a.String() + " " + unit
}

type instKey struct{ pattern, budget, scope, period string }

type shadowAcc struct {
	inst  ShadowInstance
	units map[string]*ShadowUnit
}

// Shadow builds a shadow report from events.
type Shadow struct {
	q     ShadowQuery
	calls int64
	inst  map[instKey]*shadowAcc
}

// NewShadow starts a shadow report.
func NewShadow(q ShadowQuery) *Shadow {
	return &Shadow{q: q, inst: map[instKey]*shadowAcc{}}
}

func (s *Shadow) covers(scope string) bool { return events.IsWithin(scope, s.q.Scope) }

// Add folds one event; events outside the window or scope change nothing.
func (s *Shadow) Add(ev events.Event) {
	if ev.At.Before(s.q.From) || !ev.At.Before(s.q.To) {
		return
	}
	var views []events.InstanceView
	var denials []events.ShadowDenial
	switch d := ev.Data.(type) {
	case *events.ReservationGranted:
		views, denials = d.Instances, d.ShadowDenials
	case *events.ReservationDenied:
		views = d.Instances
	case *events.ReservationCommitted:
		views = d.Instances
	case *events.ReservationReleased:
		views = d.Instances
	case *events.ReservationExpired:
		views = d.Instances
	case *events.UsageCharged:
		views = d.Instances
	case *events.BudgetAdjusted:
		views = []events.InstanceView{d.Instance}
	default:
		return
	}
	for _, v := range views {
		if v.Mode != events.ModeShadow || !s.covers(v.Scope) {
			continue
		}
		acc := s.acc(instKey{v.Pattern, v.Budget, v.Scope, v.Period})
		for _, u := range v.Units {
			su := acc.unit(u.Unit)
			used := u.Spent.Add(u.Reserved)
			su.Limit = u.Limit
			su.CoveringLimit = events.Max(su.CoveringLimit, used)
			su.PeakOverage = events.Max(su.PeakOverage, used.Sub(u.Limit))
		}
	}
	hit := false
	seen := map[instKey]bool{}
	for _, d := range denials {
		if !s.covers(d.Scope) {
			continue
		}
		k := instKey{d.Pattern, d.Budget, d.Scope, d.Period}
		acc := s.acc(k)
		acc.unit(d.Unit).WouldDeny++
		if !seen[k] {
			seen[k] = true
			acc.inst.WouldDeny++
			at := ev.At
			if acc.inst.FirstDenial == nil {
				acc.inst.FirstDenial = &at
			}
			acc.inst.LastDenial = &at
		}
		hit = true
	}
	if hit {
		s.calls++
	}
}

func (s *Shadow) acc(k instKey) *shadowAcc {
	a := s.inst[k]
	if a == nil {
		a = &shadowAcc{inst: ShadowInstance{Scope: k.scope, Period: k.period}, units: map[string]*ShadowUnit{}}
		s.inst[k] = a
	}
	return a
}

func (a *shadowAcc) unit(u string) *ShadowUnit {
	su := a.units[u]
	if su == nil {
		su = &ShadowUnit{Unit: u}
		a.units[u] = su
	}
	return su
}

// Report returns the report of the events added so far.
func (s *Shadow) Report() ShadowReport {
	r := ShadowReport{Scope: s.q.Scope, From: s.q.From, To: s.q.To, WouldDeny: s.calls, Budgets: []ShadowBudget{}}
	keys := make([]instKey, 0, len(s.inst))
	for k := range s.inst {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b instKey) int {
		return strings.Compare(a.pattern+"\x00"+a.budget+"\x00"+a.scope+"\x00"+a.period,
			b.pattern+"\x00"+b.budget+"\x00"+b.scope+"\x00"+b.period)
	})
	peaks := map[string]events.Amount{}
	for _, k := range keys {
		acc := s.inst[k]
		in := acc.inst
		for _, u := range events.SortedUnits(acc.units) {
			su := *acc.units[u]
			in.Units = append(in.Units, su)
			peaks[u] = events.Max(peaks[u], su.PeakOverage)
		}
		if n := len(r.Budgets); n == 0 || r.Budgets[n-1].Pattern != k.pattern || r.Budgets[n-1].Budget != k.budget {
			r.Budgets = append(r.Budgets, ShadowBudget{Budget: k.budget, Pattern: k.pattern})
		}
		b := &r.Budgets[len(r.Budgets)-1]
		b.Instances = append(b.Instances, in)
	}
	unit := "USD"
	if len(peaks) > 0 {
		unit = events.SortedUnits(peaks)[0]
		for _, c := range currencyOrder {
			if _, ok := peaks[c]; ok {
				unit = c
				break
			}
		}
	}
	r.PeakOverage = Money{Unit: unit, Amount: peaks[unit], Text: FormatMoney(unit, peaks[unit])}
	return r
}

// Headline is the report's first line, in the seed's words:
// "23 calls would have been denied. Peak overage: $47.30."
func (r ShadowReport) Headline() string {
	calls := "calls"
	if r.WouldDeny == 1 {
		calls = "call"
	}
	return fmt.Sprintf("%d %s would have been denied. Peak overage: %s.", r.WouldDeny, calls, r.PeakOverage.Text)
}

// WriteShadowText writes the headline and a table per shadow budget.
func WriteShadowText(w io.Writer, r ShadowReport) error {
	var sb strings.Builder
	sb.WriteString(r.Headline() + "\n")
	if len(r.Budgets) == 0 {
		fmt.Fprintf(&sb, "\nno shadow budget covers %s between %s and %s\n", r.Scope, r.From.Format(time.RFC3339), r.To.Format(time.RFC3339))
	}
	for _, b := range r.Budgets {
		fmt.Fprintf(&sb, "\nshadow budget %q on %s\n", b.Budget, b.Pattern)
		tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SCOPE\tPERIOD\tUNIT\tLIMIT\tWOULD-DENY\tPEAK OVERAGE\tCOVERING LIMIT")
		for _, in := range b.Instances {
			for _, u := range in.Units {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", in.Scope, in.Period, u.Unit, u.Limit, u.WouldDeny, u.PeakOverage, u.CoveringLimit)
			}
		}
		tw.Flush()
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

// WriteShadowJSON writes the report as an indented JSON document, its
// headline included.
func WriteShadowJSON(w io.Writer, r ShadowReport) error {
	doc := struct {
		Headline string `json:"headline"`
		ShadowReport
	}{r.Headline(), r}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
