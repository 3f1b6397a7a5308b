package enforcer

import (
	"strings"
	"unsafe"

	"github.com/tallyledger/tally/events"
)

// Flat reservations.
//
// The open reservations are most of a large state, and each stays in it
// for its life: the collector marks every one of them in every cycle. A
// reservation in memory allocated without pointer bits (a []byte) is
// marked but never scanned, which in the reserve benchmark, whose state
// grows a reservation an op, took a fifth off a grant.
//
// Memory without pointer bits hides the pointers it holds from the
// collector (which never moves heap objects, so they stay valid), so a
// flat reservation holds only pointers the collector needs not see,
// because what they point to stays reachable without them:
//   - into its own allocation: its id, root, scope, label, labels (encoded,
//     as a closed reservation's are) and any unit name the state has not
//     interned are copied behind the struct, and its units, amounts and
//     holds (and their units) are slices of its own buffers;
//   - to the state's interned unit names (State.unitNames, never removed);
//   - to the package's priority and status constants;
//   - to instances, which their budget holds (deleteBudget drops the holds
//     on a budget's instances before it lets go of them, and no other code
//     removes an instance).
//
// Its time.Times are UTC (no *Location), its amounts are not boxed, it has
// no labels map and no hold on a missing instance. A grant that needs more
// (more than two units or three instances, a boxed amount, an unknown
// priority) gets an ordinary reservation. Every later store into a
// reservation keeps to the same rules (extend, retire, deleteBudget), and
// checkFlat, which the state-machine test runs after every step, checks
// each flat reservation against them.

// flatUnits and flatHolds are what fits in a reservation's own buffers.
const (
	flatUnits = len(reservation{}.unitBuf)
	flatHolds = len(reservation{}.holdBuf)
)

// canonicalPriority returns the package constant equal to p.
func canonicalPriority(p events.Priority) (events.Priority, bool) {
	switch p {
	case events.PriorityNormal:
		return events.PriorityNormal, true
	case events.PriorityHigh:
		return events.PriorityHigh, true
	case events.PriorityLow:
		return events.PriorityLow, true
	case events.PriorityCritical:
		return events.PriorityCritical, true
	case events.PriorityBulk:
		return events.PriorityBulk, true
	}
	return "", false
}

// newReservation returns the open reservation of a grant of amts (as
// sortedAmounts gives them: sorted, interned where the state has the name)
// on n instances, flat when it can be, with its units and amounts set and
// room for n holds (r.holds has length n, for the caller to fill;
// heldUnits gives their units).
func (s *State) newReservation(d *events.ReservationGranted, root string, amts []unitAmount, n int) *reservation {
	prio, canon := canonicalPriority(d.Priority)
	flat := canon && len(amts) <= flatUnits && n <= flatHolds
	extra := 0
	for i := 0; flat && i < len(amts); i++ {
		flat = !amts[i].amt.Boxed()
		if !amts[i].interned {
			extra += len(amts[i].unit)
		}
	}
	var r *reservation
	if !flat {
		r = &reservation{id: d.ReservationID, root: root, scope: d.Scope, priority: d.Priority, label: d.Label,
			labels: d.Labels}
		r.setAmounts(amts)
	} else {
		// The struct, then its strings: id, scope, root unless the scope
		// starts with it, label, units the state has not interned, and
		// the labels encoded.
		var labels []byte
		if d.Labels != nil {
			s.scratch.labels = appendLabels(s.scratch.labels[:0], d.Labels)
			labels = s.scratch.labels
		}
		size := int(unsafe.Sizeof(reservation{}))
		strs := len(d.ReservationID) + len(d.Scope) + len(d.Label) + extra + len(labels)
		ownRoot := !strings.HasPrefix(d.Scope, root)
		if ownRoot {
			strs += len(root)
		}
		buf := make([]byte, size+strs)
		r = (*reservation)(unsafe.Pointer(unsafe.SliceData(buf)))
		r.flat = true
		rest := buf[size:]
		r.id, rest = copyString(rest, d.ReservationID)
		r.scope, rest = copyString(rest, d.Scope)
		if ownRoot {
			r.root, rest = copyString(rest, root)
		} else {
			r.root = r.scope[:len(root)]
		}
		r.label, rest = copyString(rest, d.Label)
		r.labelsFlat, rest = copyString(rest, unsafe.String(unsafe.SliceData(labels), len(labels)))
		r.priority = prio
		r.units, r.amts = r.unitBuf[:len(amts)], r.amtBuf[:len(amts)]
		for i := range amts {
			u := amts[i].unit
			if !amts[i].interned {
				u, rest = copyString(rest, u)
			}
			r.units[i], r.amts[i] = u, amts[i].amt
		}
	}
	r.option, r.expiresAt, r.status = d.Option, d.ExpiresAt.UTC(), events.StatusOpen
	r.holds = r.holdBuf[:0]
	if n > len(r.holdBuf) {
		r.holds = make([]hold, 0, n)
	}
	r.holds = r.holds[:n]
	return r
}

// copyString copies s to the front of buf and returns the copy, which
// shares buf's memory, and the rest of buf.
func copyString(buf []byte, s string) (string, []byte) {
	if len(s) == 0 {
		return "", buf
	}
	n := copy(buf, s)
	return unsafe.String(&buf[0], n), buf[n:]
}

// heldUnits returns the units of r that a's budget limits, in r.units'
// order: r.units itself when it limits all, else a slice of it when they
// are consecutive in it (always so for a flat reservation, which has at
// most two units), else a new slice.
func heldUnits(r *reservation, a *applicable) []string {
	if a.b.limitsAll(r.units) {
		return r.units
	}
	i, j, n := 0, 0, 0 // the first held unit, the one past the last, how many
	for k, u := range r.units {
		if a.b.limitsUnit(u) {
			if n == 0 {
				i = k
			}
			j = k + 1
			n++
		}
	}
	if j-i == n {
		return r.units[i:j:j]
	}
	held := make([]string, 0, n)
	for _, u := range r.units {
		if a.b.limitsUnit(u) {
			held = append(held, u)
		}
	}
	return held
}
