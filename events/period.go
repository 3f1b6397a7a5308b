package events

import (
	"fmt"
	"time"
)

// Period is a budget's calendar window kind.
type Period string

// Periods (DESIGN §1).
const (
	PeriodNone    Period = "none"
	PeriodHourly  Period = "hourly"
	PeriodDaily   Period = "daily"
	PeriodWeekly  Period = "weekly"
	PeriodMonthly Period = "monthly"
	PeriodYearly  Period = "yearly"
)

// Valid reports whether p is a known period.
func (p Period) Valid() bool {
	switch p {
	case PeriodNone, PeriodHourly, PeriodDaily, PeriodWeekly, PeriodMonthly, PeriodYearly:
		return true
	}
	return false
}

// Window is one concrete period: its key and its bounds [Start, End) in UTC.
// For PeriodNone the key is "none" and both bounds are zero.
type Window struct {
	Key   string
	Start time.Time
	End   time.Time
}

// WindowOf returns the window of kind p in loc that contains at.
func WindowOf(p Period, loc *time.Location, at time.Time) Window {
	if p == PeriodNone {
		return Window{Key: string(PeriodNone)}
	}
	t := at.In(loc)
	y, mo, d := t.Date()
	var start, end time.Time
	var key string
	switch p {
	case PeriodHourly:
		// The local hour, with its offset: the hour repeated when clocks go
		// back is two periods. Zones with sub-hour offsets start hours at :30.
		start = t.Add(-time.Duration(t.Minute())*time.Minute - time.Duration(t.Second())*time.Second - time.Duration(t.Nanosecond()))
		end = start.Add(time.Hour)
		key = start.Format("2006-01-02T15-07:00")
	case PeriodDaily:
		start = time.Date(y, mo, d, 0, 0, 0, 0, loc)
		end = time.Date(y, mo, d+1, 0, 0, 0, 0, loc)
		key = start.Format("2006-01-02")
	case PeriodWeekly:
		wy, wk := t.ISOWeek()
		back := (int(t.Weekday()) + 6) % 7 // days since Monday
		start = time.Date(y, mo, d-back, 0, 0, 0, 0, loc)
		end = time.Date(y, mo, d-back+7, 0, 0, 0, 0, loc)
		key = fmt.Sprintf("%04d-W%02d", wy, wk)
	case PeriodMonthly:
		start = time.Date(y, mo, 1, 0, 0, 0, 0, loc)
		end = time.Date(y, mo+1, 1, 0, 0, 0, 0, loc)
		key = start.Format("2006-01")
	case PeriodYearly:
		start = time.Date(y, 1, 1, 0, 0, 0, 0, loc)
		end = time.Date(y+1, 1, 1, 0, 0, 0, 0, loc)
		key = start.Format("2006")
	default:
		panic(fmt.Sprintf("events: unknown period %q", p))
	}
	return Window{Key: key, Start: start.UTC(), End: end.UTC()}
}
