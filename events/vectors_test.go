package events_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tallyledger/tally/events"
)

// The shared vectors (DESIGN §1) pin the amount and scope grammars and the
// calendar windows; every implementation of tally must agree with them.

func TestAmountVectors(t *testing.T) {
	var v struct {
		Valid []struct {
			In        string `json:"in"`
			Canonical string `json:"canonical"`
		} `json:"valid"`
		Invalid []struct {
			In  string `json:"in"`
			Why string `json:"why"`
		} `json:"invalid"`
	}
	readVectors(t, "amounts.json", &v)
	if len(v.Valid) == 0 || len(v.Invalid) == 0 {
		t.Fatal("empty vector file")
	}
	for _, c := range v.Valid {
		a, err := events.ParseAmount(c.In)
		if err != nil {
			t.Errorf("ParseAmount(%q): %v", c.In, err)
			continue
		}
		if got := a.String(); got != c.Canonical {
			t.Errorf("ParseAmount(%q).String() = %q, want %q", c.In, got, c.Canonical)
		}
		// The canonical form is a fixed point.
		b, err := events.ParseAmount(c.Canonical)
		if err != nil || b.String() != c.Canonical || b.Cmp(a) != 0 {
			t.Errorf("canonical %q does not re-parse to itself: %v, %v", c.Canonical, b, err)
		}
	}
	// What the error text must mention for each "why" of the vectors; a
	// reason the table does not know fails, so new vectors get a look.
	mention := map[string]string{
		"negative":                        "negative",
		"exponent":                        "exponent",
		"not a number":                    "not a number",
		"no integer part":                 "no integer part",
		"no fraction digits":              "no fraction digits",
		"leading zeros":                   "leading zeros",
		"sign":                            "sign",
		"more than 18 fractional digits":  "more than 18 fractional digits",
		"space":                           "space",
		"empty":                           "empty",
		"comma":                           "','",
		"hex":                             "'x'",
		"more than 38 significant digits": "more than 38 significant digits",
		"non-ASCII digit":                 "non-ASCII",
		"two points":                      "two decimal points",
	}
	for _, c := range v.Invalid {
		a, err := events.ParseAmount(c.In)
		if err == nil {
			t.Errorf("ParseAmount(%q) = %s, want an error (%s)", c.In, a, c.Why)
			continue
		}
		if !errors.Is(err, events.ErrAmount) {
			t.Errorf("ParseAmount(%q): %v does not wrap ErrAmount", c.In, err)
		}
		want, ok := mention[c.Why]
		if !ok {
			t.Errorf("vector %q: no expectation for reason %q; add one", c.In, c.Why)
			continue
		}
		wantErr(t, err, want)
	}
}

func TestScopeVectors(t *testing.T) {
	var v struct {
		Concrete []string `json:"concrete"`
		Patterns []string `json:"patterns"`
		Invalid  []struct {
			In  string `json:"in"`
			Why string `json:"why"`
		} `json:"invalid"`
	}
	readVectors(t, "scopes.json", &v)
	if len(v.Concrete) == 0 || len(v.Patterns) == 0 || len(v.Invalid) == 0 {
		t.Fatal("empty vector file")
	}
	for _, s := range v.Concrete {
		if err := events.ValidateScope(s); err != nil {
			t.Errorf("ValidateScope(%q): %v", s, err)
		}
		if err := events.ValidatePattern(s); err != nil {
			t.Errorf("ValidatePattern(%q): %v (a concrete scope is a valid pattern)", s, err)
		}
		if events.IsPattern(s) {
			t.Errorf("IsPattern(%q) = true", s)
		}
	}
	for _, s := range v.Patterns {
		if err := events.ValidatePattern(s); err != nil {
			t.Errorf("ValidatePattern(%q): %v", s, err)
		}
		err := events.ValidateScope(s)
		wantErr(t, err, "'*' is only allowed in budget scopes")
		if !events.IsPattern(s) {
			t.Errorf("IsPattern(%q) = false", s)
		}
	}
	for _, c := range v.Invalid {
		for name, validate := range map[string]func(string) error{
			"ValidateScope":   events.ValidateScope,
			"ValidatePattern": events.ValidatePattern,
		} {
			err := validate(c.In)
			if err == nil {
				t.Errorf("%s(%q) = nil, want an error (%s)", name, c.In, c.Why)
				continue
			}
			var se *events.ScopeError
			if !errors.As(err, &se) {
				t.Errorf("%s(%q): %T is not a *ScopeError", name, c.In, err)
			}
		}
	}
}

func TestPeriodVectors(t *testing.T) {
	var v struct {
		Cases []struct {
			At       string `json:"at"`
			Timezone string `json:"timezone"`
			Period   string `json:"period"`
			Key      string `json:"key"`
			Start    string `json:"start"`
			End      string `json:"end"`
		} `json:"cases"`
	}
	readVectors(t, "periods.json", &v)
	if len(v.Cases) == 0 {
		t.Fatal("empty vector file")
	}
	for _, c := range v.Cases {
		name := c.At + " " + c.Timezone + " " + c.Period
		t.Run(name, func(t *testing.T) {
			loc, err := events.LoadLocation(c.Timezone)
			if err != nil {
				t.Fatal(err)
			}
			p := events.Period(c.Period)
			if !p.Valid() {
				t.Fatalf("period %q not valid", c.Period)
			}
			got := events.WindowOf(p, loc, mustTime(c.At))
			want := events.Window{Key: c.Key, Start: mustTime(c.Start), End: mustTime(c.End)}
			if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
				t.Errorf("WindowOf (-want +got):\n%s", diff)
			}
			if got.Start.Location() != time.UTC || got.End.Location() != time.UTC {
				t.Errorf("bounds not in UTC: %v %v", got.Start, got.End)
			}
			// The window contains at, and every instant of it has the same key.
			at := mustTime(c.At)
			if at.Before(got.Start) || !at.Before(got.End) {
				t.Errorf("at %v outside [%v, %v)", at, got.Start, got.End)
			}
			for _, edge := range []string{"start", "last"} {
				instant := got.Start
				if edge == "last" {
					instant = got.End.Add(-1)
				}
				if k := events.WindowOf(p, loc, instant).Key; k != c.Key {
					t.Errorf("%s instant %v has key %q, want %q", edge, instant, k, c.Key)
				}
			}
			if k := events.WindowOf(p, loc, got.End).Key; k == c.Key {
				t.Errorf("end instant %v still has key %q", got.End, k)
			}
		})
	}
}

// TestWindowOf adds cases the shared vectors do not pin.
func TestWindowOf(t *testing.T) {
	tests := []struct {
		name   string
		period events.Period
		zone   string
		at     string
		want   events.Window
	}{
		{name: "none", period: events.PeriodNone, zone: "UTC", at: "2026-11-28T21:43:02Z", want: events.Window{Key: "none"}},
		{name: "half-hour zone hour", period: events.PeriodHourly, zone: "Asia/Kolkata", at: "2026-11-30T19:00:00Z",
			want: events.Window{Key: "2026-12-01T00+05:30", Start: mustTime("2026-11-30T18:30:00Z"), End: mustTime("2026-11-30T19:30:00Z")}},
		{name: "hour after spring forward", period: events.PeriodHourly, zone: "America/New_York", at: "2026-03-08T07:30:00Z",
			want: events.Window{Key: "2026-03-08T03-04:00", Start: mustTime("2026-03-08T07:00:00Z"), End: mustTime("2026-03-08T08:00:00Z")}},
		{name: "hour before spring forward", period: events.PeriodHourly, zone: "America/New_York", at: "2026-03-08T06:59:59.999999999Z",
			want: events.Window{Key: "2026-03-08T01-05:00", Start: mustTime("2026-03-08T06:00:00Z"), End: mustTime("2026-03-08T07:00:00Z")}},
		{name: "ISO week 1 starts in December", period: events.PeriodWeekly, zone: "UTC", at: "2025-12-31T12:00:00Z",
			want: events.Window{Key: "2026-W01", Start: mustTime("2025-12-29T00:00:00Z"), End: mustTime("2026-01-05T00:00:00Z")}},
		{name: "Sunday is the last day of the week", period: events.PeriodWeekly, zone: "Europe/Paris", at: "2026-11-29T22:59:59Z",
			want: events.Window{Key: "2026-W48", Start: mustTime("2026-11-22T23:00:00Z"), End: mustTime("2026-11-29T23:00:00Z")}},
		{name: "leap day", period: events.PeriodDaily, zone: "UTC", at: "2028-02-29T12:00:00Z",
			want: events.Window{Key: "2028-02-29", Start: mustTime("2028-02-29T00:00:00Z"), End: mustTime("2028-03-01T00:00:00Z")}},
		{name: "nanoseconds before the end", period: events.PeriodMonthly, zone: "UTC", at: "2026-02-28T23:59:59.999999999Z",
			want: events.Window{Key: "2026-02", Start: mustTime("2026-02-01T00:00:00Z"), End: mustTime("2026-03-01T00:00:00Z")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loc, err := events.LoadLocation(tt.zone)
			if err != nil {
				t.Fatal(err)
			}
			got := events.WindowOf(tt.period, loc, mustTime(tt.at))
			if diff := cmp.Diff(tt.want, got, cmpOpts); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	defer func() {
		if recover() == nil {
			t.Error("WindowOf of an unknown period did not panic")
		}
	}()
	events.WindowOf("quarterly", time.UTC, time.Unix(0, 0))
}
