package enforcer

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/tallyledger/tally/events"
)

// OpExpire is the internal command that expires reservations whose TTL
// has passed. It has no request and is never sent by clients.
const OpExpire events.Op = "expire"

// Command is one request to decide, or an expiry tick.
type Command struct {
	Op events.Op
	// Root is the root of the request subject; the payload's scope must
	// have the same root.
	Root string
	// Request is the parsed, validated request (events.ParseRequest). The
	// decision's events may share its maps and strings (a grant's amounts,
	// a commit's charged amounts), and the state keeps some of them: it
	// must not be changed after Decide.
	Request any
	// NewID is a fresh ULID: the reservation id if a reserve is granted.
	NewID string
	// Hash is events.RequestHash(Op, Request) of a mutating request when
	// the caller has computed it; empty, Decide computes it. The service
	// computes it on the subscription's goroutine, with the parse, so
	// that the partition's single decision loop does not.
	Hash string
}

// requestHash is the request's idempotency fingerprint: cmd.Hash, or
// computed for op.
func (cmd *Command) requestHash(op events.Op, req any) string {
	if cmd.Hash != "" {
		return cmd.Hash
	}
	return events.RequestHash(op, req)
}

// Decision is the outcome of Decide. Exactly one of these holds:
//   - Err is set: an error answer; nothing is appended;
//   - Duplicate > 0: a retry of the request whose event is at that stream
//     sequence; the answer is events.ResultOf that event;
//   - Events is non-empty: append them in order; the answer is
//     events.ResultOf(Events[0]) (nothing to answer for an expiry tick);
//   - Result is set: the answer of a read (balance, decide, budget-get, …).
type Decision struct {
	Events    []events.Event
	Result    any
	Err       *events.Error
	Duplicate uint64
}

func fail(code events.Code, format string, args ...any) Decision {
	return Decision{Err: events.Errorf(code, format, args...)}
}

// Decide evaluates cmd at time now without changing the state. now is
// clamped so that time never goes backwards within the partition.
func (s *State) Decide(cmd Command, now time.Time) Decision {
	s.vbuf.reset()
	now = now.UTC()
	if now.Before(s.lastAt) {
		now = s.lastAt
	}
	switch cmd.Op {
	case OpExpire:
		return s.decideExpire(now)
	case events.OpReserve:
		return s.decideReserve(cmd, cmd.Request.(*events.ReserveRequest), now, false)
	case events.OpDecide:
		return s.decideReserve(cmd, cmd.Request.(*events.ReserveRequest), now, true)
	case events.OpCommit:
		return s.decideCommit(cmd, cmd.Request.(*events.CommitRequest), now)
	case events.OpRelease:
		return s.decideRelease(cmd, cmd.Request.(*events.ReleaseRequest), now)
	case events.OpExtend:
		return s.decideExtend(cmd, cmd.Request.(*events.ExtendRequest), now)
	case events.OpCharge:
		return s.decideCharge(cmd, cmd.Request.(*events.ChargeRequest), now)
	case events.OpBalance:
		return s.decideBalance(cmd, cmd.Request.(*events.BalanceRequest), now)
	case events.OpReservationGet:
		return s.decideReservationGet(cmd, cmd.Request.(*events.ReservationGetRequest), now)
	case events.OpBudgetSet:
		return s.decideBudgetSet(cmd, cmd.Request.(*events.BudgetSetRequest), now)
	case events.OpBudgetGet:
		return s.decideBudgetGet(cmd, cmd.Request.(*events.BudgetRef))
	case events.OpBudgetList:
		return s.decideBudgetList(cmd)
	case events.OpBudgetDelete:
		return s.decideBudgetDelete(cmd, cmd.Request.(*events.BudgetRef), now)
	case events.OpBudgetAdjust:
		return s.decideBudgetAdjust(cmd, cmd.Request.(*events.BudgetAdjustRequest), now)
	}
	return fail(events.CodeInvalidRequest, "unknown operation %q", cmd.Op)
}

// Step decides cmd and applies its events with consecutive sequences after
// LastSeq: the whole cycle, for tests, tools and replay-free callers.
func (s *State) Step(cmd Command, now time.Time) Decision {
	d := s.Decide(cmd, now)
	for _, ev := range d.Events {
		s.Apply(s.lastSeq+1, ev)
	}
	return d
}

func (s *State) event(root string, now time.Time, d events.Data) events.Event {
	return events.Event{V: events.Version, Type: d.EventType(), Partition: s.cfg.Partition, At: now, Root: root, Data: d}
}

// oneEvent returns a decision's events: the one event of data, with room
// for alerts; with SetReuseViews, in the state's buffer.
func (s *State) oneEvent(root string, now time.Time, d events.Data) []events.Event {
	ev := s.event(root, now, d)
	if !s.reuseViews {
		return []events.Event{ev}
	}
	s.vbuf.events = append(s.vbuf.events[:0], ev)
	return s.vbuf.events
}

func (s *State) checkRoot(cmd Command, scope, field string) *events.Error {
	if r := events.Root(scope); r != cmd.Root {
		return &events.Error{Code: events.CodeForbidden,
			Message: fmt.Sprintf("%s: root %q does not match the subject's root %q", field, r, cmd.Root),
			Details: map[string]any{"field": field}}
	}
	return nil
}

// admit runs the checks every scoped mutating request passes first, in
// DESIGN's order: the root check, then the idempotency look-up (before any
// state check). It returns the request hash, or the decision to give now.
func (s *State) admit(cmd Command, scope string, op events.Op, key string, req any, now time.Time) (string, *Decision) {
	if e := s.checkRoot(cmd, scope, "scope"); e != nil {
		return "", &Decision{Err: e}
	}
	hash := cmd.requestHash(op, req)
	if d, ok := s.lookupKey(cmd, key, hash, now); !ok {
		return "", &d
	}
	return hash, nil
}

// prefetchKey asks for the slot of the idempotency index where a look-up
// of cmd's key starts, and returns the key's hash for lookupKeyHashed.
func (s *State) prefetchKey(cmd Command, key string) uint64 {
	s.scratch.idem = idemKey(s.scratch.idem[:0], cmd.Root, cmd.Op, key)
	h := s.idem.hash(s.scratch.idem)
	s.idem.prefetch(h)
	return h
}

// lookupKey checks a mutating request's idempotency key. It returns a
// decision to give at once (a duplicate or a conflict), or ok to proceed.
func (s *State) lookupKey(cmd Command, key, hash string, now time.Time) (Decision, bool) {
	s.scratch.idem = idemKey(s.scratch.idem[:0], cmd.Root, cmd.Op, key)
	return s.lookupKeyHashed(cmd, key, s.idem.hash(s.scratch.idem), hash, now)
}

// lookupKeyHashed is lookupKey of the key in s.scratch.idem, whose hash is
// kh (prefetchKey).
func (s *State) lookupKeyHashed(cmd Command, key string, kh uint64, hash string, now time.Time) (Decision, bool) {
	e := s.idem.getHashed(s.scratch.idem, kh)
	if e == nil || e.at.before(stampOf(now.Add(-s.cfg.IdempotencyWindow))) {
		// Beyond the window the key is forgotten, whether or not an event
		// has been applied since to drop it from memory.
		return Decision{}, true
	}
	if !hashEqual(s.idem.value(e), hash) {
		return Decision{Err: &events.Error{Code: events.CodeIdempotencyConflict,
			Message: fmt.Sprintf("idempotency_key %q was used for a different %s request", key, cmd.Op),
			Details: map[string]any{"event_seq": e.seq}}}, false
	}
	return Decision{Duplicate: e.seq}, false
}

// change is a delta to one unit of one instance.
type change struct {
	unit     string
	reserved events.Amount
	spent    events.Amount
	// after is the unit's state after the change, and used its spent +
	// reserved, once settled: a decision reads them several times (range
	// check, views, alerts, over-limit flags).
	after   unitState
	used    events.Amount
	settled bool
	// quiet says that used is below the unit's first alert threshold of
	// the limit as defined, with no adjustment: no alert to check. Only
	// evaluate finds it out (it has the unit's index at hand); false
	// leaves the check to appendAlerts.
	quiet bool
}

// belowFirstAlert reports whether use, with no adjustment of the limit,
// is below the first alert threshold of unit k of b: the common case, in
// which no threshold is crossed.
func belowFirstAlert(b *budget, k int, us *unitState, used events.Amount) bool {
	if k < 0 || !us.adjust.IsZero() || len(b.alert0) == 0 {
		return false
	}
	below, ok := used.LessInline(b.alert0[k])
	if !ok {
		below = used.Cmp(b.alert0[k]) < 0
	}
	return below
}

// settleFrom settles c on us, the unit's state before it.
func (c *change) settleFrom(us *unitState) {
	c.after = *us
	if !c.reserved.IsZero() {
		c.after.reserved = us.reserved.Add(c.reserved)
	}
	var ok bool
	if !c.spent.IsZero() {
		if c.after.spent, ok = us.spent.AddInline(c.spent); !ok {
			c.after.spent = us.spent.Add(c.spent)
		}
	}
	if c.used, ok = c.after.spent.AddInline(c.after.reserved); !ok {
		c.used = c.after.spent.Add(c.after.reserved)
	}
	c.settled = true
}

// reset makes c the unsettled change of reserved and spent to unit u,
// as change{unit: u, reserved: reserved, spent: spent} would, without
// building and copying a whole change.
func (c *change) reset(u string, reserved, spent events.Amount) {
	c.unit, c.reserved, c.spent = u, reserved, spent
	c.after, c.used = unitState{}, events.Amount{}
	c.settled, c.quiet = false, false
}

// settleReserve makes c a reservation of amt of unit u, settled on us:
// what settleFrom makes of change{unit: u, reserved: amt}, written field by
// field rather than through a zeroed copy of the whole change.
//
// It reports whether both sums took AddInline's path: then every balance
// of c is compact, which is within range (inRange), and the caller need
// not check.
func (c *change) settleReserve(u string, amt events.Amount, us *unitState) (compact bool) {
	c.unit, c.reserved, c.spent = u, amt, events.Amount{}
	c.after.spent, c.after.adjust = us.spent, us.adjust
	// The sums inline in the common case (AddInline); Add otherwise.
	ok1, ok2 := false, false
	if c.after.reserved, ok1 = us.reserved.AddInline(amt); !ok1 {
		c.after.reserved = us.reserved.Add(amt)
	}
	if c.used, ok2 = us.spent.AddInline(c.after.reserved); !ok2 {
		c.used = us.spent.Add(c.after.reserved)
	}
	c.settled, c.quiet = true, false
	return ok1 && ok2
}

// grows reports whether c adds to its unit's use (spent + reserved).
func (c *change) grows() bool {
	switch {
	case c.spent.IsZero():
		return c.reserved.Sign() > 0
	case c.reserved.IsZero():
		return c.spent.Sign() > 0
	}
	return c.reserved.Add(c.spent).Sign() > 0
}

// target is an instance and the changes a decision makes to it. app
// points into applicableAt's list or the scratch applicables of
// holdTargets, and lives as long as they do: until the next decision.
type target struct {
	app     *applicable
	changes []change
	held    []string // for a reservation's hold: the units it holds
	checked bool     // a grant's fold has checked the view of it
}

// scratch holds buffers that decisions and applies reuse.
type scratch struct {
	targets [2][]target
	changes [2][]change
	amounts []unitAmount
	// idem is the idempotency key being looked up (idemKey).
	idem []byte
	// amountsOf is the map amounts were read from.
	amountsOf events.Amounts
	held      []unitAmount
	// labels are a grant's labels encoded (newReservation).
	labels []byte
	// holdApps are the applicables of holdTargets' targets.
	holdApps []applicable
	key      []byte
	val      []byte
}

// targets returns n zeroed targets and m changes to share among them from
// scratch buffer set slot (0, or 1 for a second option's evaluation while
// the first one's is kept).
func (s *State) targets(slot, n, m int) ([]target, []change) {
	ts, cs := s.scratch.targets[slot], s.scratch.changes[slot]
	if cap(ts) < n {
		ts = make([]target, n)
	}
	if cap(cs) < m {
		cs = make([]change, m)
	}
	ts, cs = ts[:n], cs[:m]
	clear(ts)
	s.scratch.targets[slot], s.scratch.changes[slot] = ts, cs
	return ts, cs
}

// unitAmount is one unit of a request's amounts. interned says that unit
// is the state's copy of the name (State.intern); sortedAmounts sets it.
type unitAmount struct {
	unit     string
	amt      events.Amount
	interned bool
}

// sortedAmounts returns the units of m with their amounts, in byte order
// of unit, in a scratch buffer: one pass over the map instead of a look-up
// for every budget and unit.
//
// Requests mostly carry the units of the last one (and Apply folds the
// amounts its Decide has just sorted), and the buffer still holds those,
// sorted and interned: when m has as many units and each of them, it has
// exactly those, and a look-up per unit replaces iterating the map (whose
// start alone costs more than two look-ups) and sorting.
func (s *State) sortedAmounts(m events.Amounts) []unitAmount {
	if us := s.scratch.amounts; len(us) == len(m) && len(m) > 0 {
		// Apply of a grant folds the very map its Decide sorted, which
		// the caller does not change after Decide (Command): the buffer
		// holds its amounts.
		if sameMap(s.scratch.amountsOf, m) {
			return us
		}
		same := true
		for i := range us {
			a, ok := m[us[i].unit]
			if !ok {
				same = false
				break
			}
			us[i].amt = a
		}
		if same {
			s.scratch.amountsOf = m
			return us
		}
	}
	us := s.scratch.amounts[:0]
	for u, a := range m {
		c, interned := s.intern(u)
		us = append(us, unitAmount{c, a, interned})
	}
	if len(us) == 2 {
		if us[1].unit < us[0].unit {
			us[0], us[1] = us[1], us[0]
		}
	} else {
		slices.SortFunc(us, func(a, b unitAmount) int { return strings.Compare(a.unit, b.unit) })
	}
	s.scratch.amounts, s.scratch.amountsOf = us, m
	return us
}

// sameMap reports whether a and b are the same map object.
func sameMap(a, b events.Amounts) bool {
	return *(*unsafe.Pointer)(unsafe.Pointer(&a)) == *(*unsafe.Pointer)(unsafe.Pointer(&b))
}

// changeOf returns t's change of unit u (a target changes a unit at most
// once), or nil, and where to look for the next unit's: j is where to look
// first, as changes are mostly in the byte order of their units.
func (t *target) changeOf(u string, j int) (*change, int) {
	if j < len(t.changes) && t.changes[j].unit == u {
		return &t.changes[j], j + 1
	}
	for i := range t.changes {
		if t.changes[i].unit == u {
			return &t.changes[i], i + 1
		}
	}
	return nil, j
}

// settle returns the state of c's unit after c, one of t's changes.
func settle(t *target, c *change) *unitState {
	if !c.settled {
		c.settleFrom(peekUnit(t.app.in, c.unit))
	}
	return &c.after
}

// views renders the instances after the targets' changes: in memory of
// their own, or, with SetReuseViews, in the state's view buffer.
func (s *State) views(ts []target) []events.InstanceView {
	// One allocation each for all units and period ends of the views.
	n, ends := 0, 0
	for i := range ts {
		n += len(ts[i].app.b.units)
		if ts[i].app.b.def.Period != events.PeriodNone {
			ends++
		}
	}
	var (
		out    []events.InstanceView
		units  events.UnitBalances
		endBuf []time.Time
	)
	if s.reuseViews {
		out, units, endBuf = s.vbuf.take(len(ts), n, ends)
	} else {
		out, units = make([]events.InstanceView, len(ts)), make(events.UnitBalances, n)
		if ends > 0 {
			endBuf = make([]time.Time, 0, ends)
		}
	}
	for i := range ts {
		var end *time.Time
		if ts[i].app.b.def.Period != events.PeriodNone {
			endBuf = append(endBuf, ts[i].app.win.End)
			end = &endBuf[len(endBuf)-1]
		}
		k := len(ts[i].app.b.units)
		s.viewOf(&out[i], &ts[i], units[:k:k], end)
		units = units[k:]
	}
	return out
}

// SetReuseViews makes the state render the instance views of a decision's
// events and result, and the data of its grant or commit event, into a
// buffer of its own, which the next Decide overwrites, instead of
// allocating them: the decision loop's views are half of what a reserve
// allocates. The caller must be done with a
// decision (its events encoded and applied, its answer rendered) before
// it decides again. The service's decision loop is; tests that keep
// decisions are not, and leave it off.
func (s *State) SetReuseViews(on bool) { s.reuseViews = on }

// viewBuf is the memory of one decision's views, events, event data and
// commit amounts with SetReuseViews. Views taken during one decision never share
// memory: when a chunk runs out a new one is allocated, and the views
// already taken keep the old one.
type viewBuf struct {
	views   []events.InstanceView
	units   events.UnitBalances
	ends    []time.Time
	events  []events.Event
	amounts [2]events.Amounts
	// The data of the two events a decision most often makes.
	granted   events.ReservationGranted
	committed events.ReservationCommitted
}

// box is where a decision puts its event's data: buf, the view buffer's
// memory for it, when reuse is on; new memory otherwise.
func box[T any](reuse bool, buf *T) *T {
	if reuse {
		return buf
	}
	return new(T)
}

// amounts returns an empty map for n units: map i of the view buffer, or
// a new one without SetReuseViews.
func (s *State) amounts(i, n int) events.Amounts {
	if !s.reuseViews {
		return make(events.Amounts, n)
	}
	m := s.vbuf.amounts[i]
	if m == nil {
		m = make(events.Amounts, n)
		s.vbuf.amounts[i] = m
	}
	clear(m)
	return m
}

// reset makes the whole buffer available again: the previous decision's
// views are dead.
func (v *viewBuf) reset() {
	v.views, v.units, v.ends = v.views[:0], v.units[:0], v.ends[:0]
}

// take returns memory for n views with units unit entries, which the
// caller overwrites whole (viewOf), and room for ends period ends (an
// empty slice of that capacity).
func (v *viewBuf) take(n, units, ends int) ([]events.InstanceView, events.UnitBalances, []time.Time) {
	out := grab(&v.views, n)
	us := grab(&v.units, units)
	es := grab(&v.ends, ends)
	return out, us, es[:0]
}

// grab takes the next n elements of *buf, in a new chunk when its capacity
// runs out (the views taken before keep the old one).
func grab[S ~[]E, E any](buf *S, n int) S {
	b := *buf
	if len(b)+n > cap(b) {
		b = make(S, 0, max(2*cap(b), n, 16))
	}
	*buf = b[:len(b)+n]
	return b[len(b) : len(b)+n : len(b)+n]
}

// viewOf renders t's instance into v, its units into units (one entry for
// each unit the budget limits); end is its period's end, nil without one.
// It overwrites all of v and units.
func (s *State) viewOf(v *events.InstanceView, t *target, units events.UnitBalances, end *time.Time) {
	b := t.app.b
	v.Budget, v.Pattern, v.Scope, v.Period = b.def.Name, b.def.Scope, t.app.scope, t.app.period
	v.Mode, v.Units, v.PeriodEnd = b.def.Mode, units, end
	j := 0
	for i, u := range b.units {
		var (
			us   *unitState
			used events.Amount
			c    *change
		)
		if c, j = t.changeOf(u, j); c != nil {
			us, used = settle(t, c), c.used
		} else {
			us = peekUnit(t.app.in, u)
			used = us.spent.Add(us.reserved)
		}
		limit := b.limits[i]
		if !us.adjust.IsZero() {
			limit = limit.Add(us.adjust)
		}
		// Field by field: a composite literal would be built aside and copied.
		e := &units[i]
		e.Unit, e.Limit, e.Spent, e.Reserved = u, limit, us.spent, us.reserved
		rem, ok := limit.SubInline(used)
		if !ok {
			rem = limit.Sub(used)
		}
		e.Remaining = events.Signed{Amount: rem}
	}
}

// checkRange rejects a decision that would take a balance beyond 38
// significant digits.
func (s *State) checkRange(ts []target) *events.Error {
	for i := range ts {
		for j := range ts[i].changes {
			c := &ts[i].changes[j]
			settle(&ts[i], c)
			if !c.inRange() {
				return rangeErr(&ts[i], c)
			}
		}
	}
	return nil
}

// inRange reports whether a settled change leaves its unit's balances
// within 38 significant digits. remaining is derived (limit − spent −
// reserved, at most 56 digits) and events decode it within the wide
// bounds, so only the balances themselves are bounded (DESIGN §1).
func (c *change) inRange() bool {
	return c.after.spent.InRange() && c.after.reserved.InRange() && c.used.InRange()
}

func rangeErr(t *target, c *change) *events.Error {
	return events.Errorf(events.CodeInvalidRequest,
		"%s: the balance of budget %q on %s would exceed %d significant digits",
		c.unit, t.app.b.def.Name, t.app.scope, events.MaxSignificantDigits)
}

// capacity is limit × (1 − floor).
func capacity(limit, floor events.Amount) events.Amount {
	if floor.IsZero() {
		return limit
	}
	return limit.Mul(events.One.Sub(floor))
}

// evaluation is the outcome of checking one option.
type evaluation struct {
	targets []target
	denial  *events.Denial
	shadow  []events.ShadowDenial
	// denied lists the instances to alert for a first (would-be) denial.
	denied []alertAt
	// outOfRange is checkRange's answer for the targets.
	outOfRange *events.Error
	// loud counts the changes not known to stay below their first alert
	// threshold (change.quiet): with none, and nothing denied, a grant
	// has no alerts to look for.
	loud int
}

type alertAt struct {
	t    int // index into targets
	unit string
}

// evaluate checks amounts against every applicable instance (DESIGN §2),
// with the targets in scratch buffer set slot.
func (s *State) evaluate(apps []applicable, amounts events.Amounts, prio events.Priority, slot int) evaluation {
	req := s.sortedAmounts(amounts)
	pi := slices.Index(priorities[:], prio)
	ts, backing := s.targets(slot, len(apps), len(apps)*len(req))
	ev := evaluation{targets: ts}
	for i := range apps {
		a := &apps[i]
		t := &ev.targets[i]
		t.app = a
		t.changes, backing = backing[:0:len(req)], backing[len(req):]
		for r := range req {
			ua := &req[r]
			k := a.b.unitIndex(ua.unit)
			if k < 0 {
				continue
			}
			u, amt := ua.unit, ua.amt
			us := peekUnit(a.in, u)
			t.changes = t.changes[:len(t.changes)+1]
			c := &t.changes[len(t.changes)-1]
			if !c.settleReserve(u, amt, us) && ev.outOfRange == nil && !c.inRange() {
				ev.outOfRange = rangeErr(t, c)
			}
			limit := a.b.limits[k]
			if !us.adjust.IsZero() {
				limit = limit.Add(us.adjust)
			}
			need := &c.used
			capa := limit // the common case inline: no floor for prio
			if pi < 0 || a.b.free[pi] != nil {
				capa = a.b.capacityAt(limit, pi, prio)
			}
			over, ok := capa.LessInline(*need)
			if !ok {
				over = need.Cmp(capa) > 0
			}
			if !over {
				if c.quiet = belowFirstAlert(a.b, k, us, *need); !c.quiet {
					ev.loud++
				}
				continue
			}
			ev.loud++
			avail := events.Max(events.Zero, capa.Sub(us.spent.Add(us.reserved)))
			if a.b.def.Mode == events.ModeShadow {
				ev.shadow = append(ev.shadow, events.ShadowDenial{Budget: a.b.def.Name, Pattern: a.b.def.Scope,
					Scope: a.scope, Period: a.period, Unit: u, Requested: amt, Available: avail,
					Overage: need.Sub(capa)})
				ev.denied = append(ev.denied, alertAt{t: i, unit: u})
				continue
			}
			if ev.denial == nil {
				code := events.DenialPriorityFloor
				if need.Cmp(limit) > 0 {
					code = events.DenialBudgetExhausted
				}
				ev.denial = &events.Denial{Code: code, Budget: a.b.def.Name, Pattern: a.b.def.Scope,
					Scope: a.scope, Period: a.period, Unit: u, Requested: amt, Available: avail}
				ev.denied = append(ev.denied, alertAt{t: i, unit: u})
			}
		}
	}
	return ev
}

func (s *State) decideReserve(cmd Command, req *events.ReserveRequest, now time.Time, dry bool) Decision {
	if e := s.checkRoot(cmd, req.Scope, "scope"); e != nil {
		return Decision{Err: e}
	}
	var kh uint64
	if !dry {
		// The idempotency key's look-up, and the open set's insertion
		// when the grant is applied, each read a slot of a table that in
		// a large state is in memory, not in a cache: ask for both now,
		// and look the key up after the evaluation (which changes nothing
		// in the state), by when they have arrived.
		kh = s.prefetchKey(cmd, req.IdempotencyKey)
		s.open.prefetch(cmd.NewID)
	}
	apps := s.applicableAt(req.Scope, now)
	prio := req.EffectivePriority()
	// The options, without building a list for a request of amounts: the
	// first that fits, if any.
	var first, ev evaluation
	var o events.Option
	fits := -1
	for i := range max(len(req.Options), 1) {
		o = events.Option{Amounts: req.Amounts}
		if req.Options != nil {
			o = req.Options[i]
		}
		ev = s.evaluate(apps, o.Amounts, prio, min(i, 1))
		if i == 0 {
			first = ev
		}
		if ev.denial == nil {
			fits = i
			break
		}
	}
	var hash string
	if !dry {
		hash = cmd.requestHash(events.OpReserve, req)
		if d, ok := s.lookupKeyHashed(cmd, req.IdempotencyKey, kh, hash, now); !ok {
			return d
		}
		if s.open.len() >= s.cfg.MaxOpenReservations {
			return fail(events.CodeUnavailable, "partition %d holds %d open reservations, its limit; retry after some are committed or released",
				s.cfg.Partition, s.open.len())
		}
	}
	if i := fits; i >= 0 {
		if ev.outOfRange != nil {
			return Decision{Err: ev.outOfRange}
		}
		exp := now.Add(req.EffectiveTTL())
		res := events.ReserveResult{Decision: events.DecisionGranted, Option: i, Label: o.Label, Degraded: i > 0,
			Instances: s.views(ev.targets), ShadowDenials: ev.shadow}
		if dry {
			res.ShadowDenials = nonNil(res.ShadowDenials)
			return Decision{Result: res}
		}
		data := box(s.reuseViews, &s.vbuf.granted)
		*data = events.ReservationGranted{Mutation: events.Mutation{IdempotencyKey: req.IdempotencyKey, RequestHash: hash},
			ReservationID: cmd.NewID, Scope: req.Scope, Amounts: o.Amounts, Priority: prio, ExpiresAt: exp,
			Option: i, Label: o.Label, Degraded: i > 0, Labels: req.Labels, Instances: res.Instances,
			ShadowDenials: nonNil(ev.shadow)}
		evs := s.oneEvent(cmd.Root, now, data)
		if ev.loud > 0 || len(ev.denied) > 0 {
			evs = s.appendAlerts(evs, cmd.Root, now, ev.targets, ev.denied)
		}
		return Decision{Events: evs}
	}
	// Denied: nothing is reserved anywhere; the instances show the state as is.
	opts := req.EffectiveOptions()
	cur := make([]target, len(apps))
	for i := range apps {
		cur[i].app = &apps[i]
	}
	views := s.views(cur)
	if dry {
		return Decision{Result: events.ReserveResult{Decision: events.DecisionDenied, Label: opts[0].Label,
			Instances: views, Denial: first.denial, ShadowDenials: []events.ShadowDenial{}}}
	}
	data := &events.ReservationDenied{Mutation: events.Mutation{IdempotencyKey: req.IdempotencyKey, RequestHash: hash},
		Scope: req.Scope, Options: opts, Priority: prio, Labels: req.Labels, Denial: *first.denial, Instances: views}
	evs := s.oneEvent(cmd.Root, now, data)
	// Alert the first denial of the failing enforce instance only.
	var denied []alertAt
	for _, d := range first.denied {
		if first.targets[d.t].app.b.def.Mode == events.ModeEnforce {
			denied = append(denied, d)
			break
		}
	}
	evs = s.appendAlerts(evs, cmd.Root, now, cur, nil)
	evs = s.appendDenialAlerts(evs, cmd.Root, now, first.targets, denied)
	return Decision{Events: evs}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// appendAlerts adds budget.threshold_crossed events for thresholds that
// the targets' usage reaches for the first time in their period, and for
// first (would-be) denials.
func (s *State) appendAlerts(evs []events.Event, root string, now time.Time, ts []target, denied []alertAt) []events.Event {
	for i := range ts {
		t := &ts[i]
		b := t.app.b
		for j := range t.changes {
			c := &t.changes[j]
			if c.quiet || !c.grows() {
				continue
			}
			us := settle(t, c)
			used := c.used
			if belowFirstAlert(b, b.unitIndex(c.unit), us, used) {
				continue
			}
			limit, _ := limitOf(b, us, c.unit)
			for _, th := range b.def.AlertThresholds {
				if used.Cmp(limit.Mul(th)) < 0 {
					break // thresholds increase: none further is reached
				}
				name := th.String()
				if t.app.in != nil && t.app.in.hasFired(c.unit, name) {
					continue
				}
				evs = append(evs, s.event(root, now, &events.ThresholdCrossed{Budget: b.def.Name, Pattern: b.def.Scope,
					Scope: t.app.scope, Period: t.app.period, Mode: b.def.Mode, Unit: c.unit,
					Threshold: name, Limit: limit, Spent: us.spent, Reserved: us.reserved}))
			}
		}
	}
	return s.appendDenialAlerts(evs, root, now, ts, denied)
}

func (s *State) appendDenialAlerts(evs []events.Event, root string, now time.Time, ts []target, denied []alertAt) []events.Event {
	for _, d := range denied {
		t := &ts[d.t]
		if t.app.in != nil && t.app.in.hasFired(d.unit, events.ThresholdKindDenied) {
			continue
		}
		us := unitOf(t.app.in, d.unit)
		limit, _ := limitOf(t.app.b, &us, d.unit)
		evs = append(evs, s.event(root, now, &events.ThresholdCrossed{Budget: t.app.b.def.Name, Pattern: t.app.b.def.Scope,
			Scope: t.app.scope, Period: t.app.period, Mode: t.app.b.def.Mode, Unit: d.unit,
			Threshold: events.ThresholdKindDenied, Limit: limit, Spent: us.spent, Reserved: us.reserved}))
	}
	return evs
}

// heldAmounts returns r's units with their amounts, in the order of
// r.units, in a scratch buffer.
func (s *State) heldAmounts(r *reservation) []unitAmount {
	as := s.scratch.held[:0]
	for i, u := range r.units {
		as = append(as, unitAmount{unit: u, amt: r.amts[i]})
	}
	s.scratch.held = as
	return as
}

// amountIn returns the amount of unit u in as, zero if it has none.
func amountIn(as []unitAmount, u string) events.Amount {
	for i := range as {
		if as[i].unit == u {
			return as[i].amt
		}
	}
	return events.Amount{}
}

// excess is max(0, a − b).
func excess(a, b events.Amount) events.Amount {
	if a.Cmp(b) <= 0 {
		return events.Zero
	}
	return a.Sub(b)
}

// holdTargets turns a reservation's holds into targets on the instances
// that still exist (an instance disappears with its budget), with room for
// extra changes each beyond the units it holds.
func (s *State) holdTargets(r *reservation, extra int) ([]target, []change) {
	m := 0
	for i := range r.holds {
		m += len(r.holds[i].units) + extra
	}
	ts, cs := s.targets(0, len(r.holds), m)
	ts = ts[:0]
	apps := s.scratch.holdApps[:0]
	if cap(apps) < len(r.holds) {
		apps = make([]applicable, 0, len(r.holds))
	}
	s.scratch.holdApps = apps
	// Both have room for every hold: written in place, not appended.
	for i := range r.holds {
		h := &r.holds[i]
		in := h.in
		if in == nil {
			m := h.missing
			if in = m.b.instances[instRef{m.scope, m.period}]; in == nil {
				continue
			}
		}
		k := len(h.units) + extra
		apps = apps[:len(apps)+1]
		a := &apps[len(apps)-1]
		a.b, a.in, a.scope, a.period, a.win = in.b, in, in.scope, in.period, in.win
		ts = ts[:len(ts)+1]
		t := &ts[len(ts)-1]
		t.app, t.held, t.changes = a, h.units, cs[:0:k]
		cs = cs[k:]
	}
	return ts, cs
}

// commitTargets computes the changes of a commit: the hold is freed (unless
// it already expired) and the actual is charged in full to every instance
// recorded at grant time, for each unit it held or limits.
func (s *State) commitTargets(r *reservation, actual events.Amounts, late bool) []target {
	return s.commitTargetsOf(r, s.sortedAmounts(actual), s.heldAmounts(r), late)
}

// commitTargetsOf is commitTargets of the actual amounts sorted (units)
// and the reservation's held amounts (heldAmounts), as a commit's Decide
// has already read them.
func (s *State) commitTargetsOf(r *reservation, units, ramts []unitAmount, late bool) []target {
	ts, _ := s.holdTargets(r, len(units))
	for i := range ts {
		t := &ts[i]
		held := t.held
		// The union of held and units, both in byte order, in order.
		for h, a := 0, 0; h < len(held) || a < len(units); {
			var (
				u      string
				spent  events.Amount
				isHeld bool
			)
			// Equal first: a commit's units are mostly the ones it held,
			// and == is a length and (interned) pointer check.
			switch {
			case h < len(held) && a < len(units) && held[h] == units[a].unit:
				u, spent, isHeld = held[h], units[a].amt, true
				h++
				a++
			case a == len(units) || h < len(held) && held[h] < units[a].unit:
				u, isHeld = held[h], true
				h++
			default:
				u, spent = units[a].unit, units[a].amt
				a++
			}
			if !isHeld && !t.app.b.limitsUnit(u) {
				continue
			}
			var freed events.Amount
			if !late && isHeld {
				freed = amountIn(ramts, u).Neg()
			}
			t.changes = t.changes[:len(t.changes)+1]
			t.changes[len(t.changes)-1].reset(u, freed, spent)
		}
	}
	return ts
}

// releaseTargets frees a reservation's hold.
func (s *State) releaseTargets(r *reservation) []target {
	ramts := s.heldAmounts(r)
	ts, _ := s.holdTargets(r, 0)
	for i := range ts {
		for _, u := range ts[i].held {
			ts[i].changes = append(ts[i].changes, change{unit: u, reserved: amountIn(ramts, u).Neg()})
		}
	}
	return ts
}

// overLimit flags the instances the targets' spend drives above a limit.
func (s *State) overLimit(ts []target) []events.OverLimit {
	var out []events.OverLimit
	for i := range ts {
		t := &ts[i]
		for j := range t.changes {
			c := &t.changes[j]
			if c.spent.IsZero() || c.spent.Negative() {
				continue
			}
			us := settle(t, c)
			limit, ok := limitOf(t.app.b, us, c.unit)
			if !ok {
				continue
			}
			if c.used.Cmp(limit) > 0 {
				over := c.used.Sub(limit)
				out = append(out, events.OverLimit{Budget: t.app.b.def.Name, Pattern: t.app.b.def.Scope,
					Scope: t.app.scope, Period: t.app.period, Unit: c.unit, Over: over})
			}
		}
	}
	return out
}

// reservationFor finds a reservation of the subject's root.
func (s *State) reservationFor(cmd Command, id string, now time.Time) (*reservation, *events.Error) {
	r, ok := s.reservation(id)
	if ok && r.status != events.StatusOpen && s.beyondWindow(r.closedAt, now) {
		ok = false // forgotten, as forget does at the next Apply
	}
	if !ok || r.root != cmd.Root {
		return nil, &events.Error{Code: events.CodeNotFound, Message: fmt.Sprintf("reservation_id: no reservation %q", id),
			Details: map[string]any{"field": "reservation_id"}}
	}
	return r, nil
}

func closedErr(r *reservation) Decision {
	return Decision{Err: &events.Error{Code: events.CodeReservationClosed,
		Message: fmt.Sprintf("reservation_id: reservation %q is %s", r.id, r.status),
		Details: map[string]any{"field": "reservation_id", "status": string(r.status)}}}
}

func (s *State) decideCommit(cmd Command, req *events.CommitRequest, now time.Time) Decision {
	hash := cmd.requestHash(events.OpCommit, req)
	if d, ok := s.lookupKey(cmd, req.IdempotencyKey, hash, now); !ok {
		return d
	}
	r, e := s.reservationFor(cmd, req.ReservationID, now)
	if e != nil {
		return Decision{Err: e}
	}
	if r.status == events.StatusCommitted || r.status == events.StatusReleased {
		return closedErr(r)
	}
	late := r.status == events.StatusExpired
	ramts, actual := s.heldAmounts(r), s.sortedAmounts(req.Actual)
	released := s.amounts(0, len(r.units))
	if !late {
		for _, h := range ramts {
			released[h.unit] = excess(h.amt, amountIn(actual, h.unit))
		}
	}
	overage := s.amounts(1, len(actual))
	for _, a := range actual {
		overage[a.unit] = excess(a.amt, amountIn(ramts, a.unit))
	}
	ts := s.commitTargetsOf(r, actual, ramts, late)
	if e := s.checkRange(ts); e != nil {
		return Decision{Err: e}
	}
	data := box(s.reuseViews, &s.vbuf.committed)
	*data = events.ReservationCommitted{Mutation: events.Mutation{IdempotencyKey: req.IdempotencyKey, RequestHash: hash},
		ReservationID: r.id, Scope: r.scope, Charged: req.Actual, Released: released, Overage: overage,
		Late: late, Labels: req.Labels, OverLimit: s.overLimit(ts), Instances: s.views(ts)}
	evs := s.oneEvent(cmd.Root, now, data)
	return Decision{Events: s.appendAlerts(evs, cmd.Root, now, ts, nil)}
}

func (s *State) decideRelease(cmd Command, req *events.ReleaseRequest, now time.Time) Decision {
	hash := cmd.requestHash(events.OpRelease, req)
	if d, ok := s.lookupKey(cmd, req.IdempotencyKey, hash, now); !ok {
		return d
	}
	r, e := s.reservationFor(cmd, req.ReservationID, now)
	if e != nil {
		return Decision{Err: e}
	}
	data := &events.ReservationReleased{Mutation: events.Mutation{IdempotencyKey: req.IdempotencyKey, RequestHash: hash},
		ReservationID: r.id, Scope: r.scope, Released: events.Amounts{}}
	switch r.status {
	case events.StatusCommitted, events.StatusReleased:
		return closedErr(r)
	case events.StatusExpired:
		data.AlreadyExpired = true
		ts, _ := s.holdTargets(r, 0)
		data.Instances = s.views(ts)
	default:
		data.Released = r.amountsMap()
		data.Instances = s.views(s.releaseTargets(r))
	}
	return Decision{Events: s.oneEvent(cmd.Root, now, data)}
}

func (s *State) decideExtend(cmd Command, req *events.ExtendRequest, now time.Time) Decision {
	hash := cmd.requestHash(events.OpExtend, req)
	if d, ok := s.lookupKey(cmd, req.IdempotencyKey, hash, now); !ok {
		return d
	}
	r, e := s.reservationFor(cmd, req.ReservationID, now)
	if e != nil {
		return Decision{Err: e}
	}
	if r.status != events.StatusOpen || !now.Before(r.expiresAt) {
		if r.status == events.StatusOpen {
			return Decision{Err: &events.Error{Code: events.CodeReservationClosed,
				Message: fmt.Sprintf("reservation_id: reservation %q expired at %s", r.id, r.expiresAt.Format(time.RFC3339Nano)),
				Details: map[string]any{"field": "reservation_id", "status": string(events.StatusExpired)}}}
		}
		return closedErr(r)
	}
	data := &events.ReservationExtended{Mutation: events.Mutation{IdempotencyKey: req.IdempotencyKey, RequestHash: hash},
		ReservationID: r.id, Scope: r.scope, ExpiresAt: now.Add(time.Duration(*req.TTLMS) * time.Millisecond)}
	return Decision{Events: s.oneEvent(cmd.Root, now, data)}
}

// chargeTargets charges amounts to every applicable instance that limits the unit.
func (s *State) chargeTargets(apps []applicable, amounts events.Amounts) []target {
	units := s.sortedAmounts(amounts)
	ts, cs := s.targets(0, len(apps), len(apps)*len(units))
	for i := range apps {
		a := &apps[i]
		ts[i].app = a
		ts[i].changes, cs = cs[:0:len(units)], cs[len(units):]
		for _, ua := range units {
			if a.b.limitsUnit(ua.unit) {
				ts[i].changes = append(ts[i].changes, change{unit: ua.unit, spent: ua.amt})
			}
		}
	}
	return ts
}

func (s *State) decideCharge(cmd Command, req *events.ChargeRequest, now time.Time) Decision {
	hash, stop := s.admit(cmd, req.Scope, events.OpCharge, req.IdempotencyKey, req, now)
	if stop != nil {
		return *stop
	}
	ts := s.chargeTargets(s.applicableAt(req.Scope, now), req.Amounts)
	if e := s.checkRange(ts); e != nil {
		return Decision{Err: e}
	}
	data := &events.UsageCharged{Mutation: events.Mutation{IdempotencyKey: req.IdempotencyKey, RequestHash: hash},
		Scope: req.Scope, Amounts: req.Amounts, Labels: req.Labels, OverLimit: s.overLimit(ts), Instances: s.views(ts)}
	evs := s.oneEvent(cmd.Root, now, data)
	return Decision{Events: s.appendAlerts(evs, cmd.Root, now, ts, nil)}
}

func (s *State) decideBalance(cmd Command, req *events.BalanceRequest, now time.Time) Decision {
	if e := s.checkRoot(cmd, req.Scope, "scope"); e != nil {
		return Decision{Err: e}
	}
	apps := s.applicableAt(req.Scope, now)
	ts, _ := s.targets(0, len(apps), 0)
	for i := range apps {
		ts[i].app = &apps[i]
	}
	return Decision{Result: events.BalanceResult{Scope: req.Scope, Instances: s.views(ts)}}
}

func (s *State) decideReservationGet(cmd Command, req *events.ReservationGetRequest, now time.Time) Decision {
	r, e := s.reservationFor(cmd, req.ReservationID, now)
	if e != nil {
		return Decision{Err: e}
	}
	return Decision{Result: events.ReservationView{ReservationID: r.id, Scope: r.scope, Status: r.status,
		Amounts: r.amountsMap(), Priority: r.priority, ExpiresAt: r.expiresAt, Label: r.label, Option: r.option, Labels: r.labelsMap()}}
}

func (s *State) decideBudgetSet(cmd Command, req *events.BudgetSetRequest, now time.Time) Decision {
	def, err := req.Budget()
	if err != nil {
		return Decision{Err: events.Invalid(err)}
	}
	if e := s.checkRoot(cmd, def.Scope, "scope"); e != nil {
		return Decision{Err: e}
	}
	hash := cmd.requestHash(events.OpBudgetSet, req)
	if d, ok := s.lookupKey(cmd, req.IdempotencyKey, hash, now); !ok {
		return d
	}
	if _, exists := s.budgets[budgetRef{def.Scope, def.Name}]; !exists && len(s.byRoot[cmd.Root]) >= s.cfg.MaxBudgetsPerRoot {
		return fail(events.CodeInvalidRequest, "root %q already has %d budgets, the limit", cmd.Root, s.cfg.MaxBudgetsPerRoot)
	}
	data := &events.BudgetSet{Mutation: events.Mutation{IdempotencyKey: req.IdempotencyKey, RequestHash: hash}, Budget: def}
	return Decision{Events: s.oneEvent(cmd.Root, now, data)}
}

func (s *State) budgetFor(cmd Command, ref *events.BudgetRef) (*budget, *events.Error) {
	if e := s.checkRoot(cmd, ref.Scope, "scope"); e != nil {
		return nil, e
	}
	b, ok := s.budgets[budgetRef{ref.Scope, ref.Name}]
	if !ok {
		return nil, &events.Error{Code: events.CodeNotFound, Message: fmt.Sprintf("no budget %q on scope %q", ref.Name, ref.Scope),
			Details: map[string]any{"field": "name"}}
	}
	return b, nil
}

func (s *State) decideBudgetGet(cmd Command, ref *events.BudgetRef) Decision {
	b, e := s.budgetFor(cmd, ref)
	if e != nil {
		return Decision{Err: e}
	}
	return Decision{Result: events.BudgetResult{Budget: b.def}}
}

func (s *State) decideBudgetList(cmd Command) Decision {
	list := slices.Clone(s.byRoot[cmd.Root])
	slices.SortFunc(list, func(x, y *budget) int {
		if x.def.Scope != y.def.Scope {
			if x.def.Scope < y.def.Scope {
				return -1
			}
			return 1
		}
		if x.def.Name < y.def.Name {
			return -1
		}
		if x.def.Name > y.def.Name {
			return 1
		}
		return 0
	})
	out := make([]events.Budget, len(list))
	for i, b := range list {
		out[i] = b.def
	}
	return Decision{Result: events.BudgetListResult{Budgets: out}}
}

func (s *State) decideBudgetDelete(cmd Command, ref *events.BudgetRef, now time.Time) Decision {
	if e := s.checkRoot(cmd, ref.Scope, "scope"); e != nil {
		return Decision{Err: e}
	}
	hash := cmd.requestHash(events.OpBudgetDelete, ref)
	if d, ok := s.lookupKey(cmd, ref.IdempotencyKey, hash, now); !ok {
		return d
	}
	if _, e := s.budgetFor(cmd, ref); e != nil {
		return Decision{Err: e}
	}
	data := &events.BudgetDeleted{Mutation: events.Mutation{IdempotencyKey: ref.IdempotencyKey, RequestHash: hash},
		Scope: ref.Scope, Name: ref.Name}
	return Decision{Events: s.oneEvent(cmd.Root, now, data)}
}

// adjustTarget finds the budget named name that applies to the concrete
// scope itself: a budget on exactly that scope first, else the first
// matching pattern.
func (s *State) adjustTarget(scope, name string) *budget {
	depth := events.Depth(scope)
	var found *budget
	for _, b := range s.byRoot[events.Root(scope)] {
		if b.depth != depth || b.def.Name != name || !events.Matches(b.def.Scope, scope) {
			continue
		}
		if b.def.Scope == scope {
			return b
		}
		if found == nil {
			found = b
		}
	}
	return found
}

func (s *State) decideBudgetAdjust(cmd Command, req *events.BudgetAdjustRequest, now time.Time) Decision {
	hash, stop := s.admit(cmd, req.Scope, events.OpBudgetAdjust, req.IdempotencyKey, req, now)
	if stop != nil {
		return *stop
	}
	b := s.adjustTarget(req.Scope, req.Name)
	if b == nil {
		return Decision{Err: &events.Error{Code: events.CodeNotFound,
			Message: fmt.Sprintf("no budget %q applies to scope %q itself", req.Name, req.Scope), Details: map[string]any{"field": "name"}}}
	}
	w := b.windowOf(now)
	t := target{app: &applicable{b: b, in: b.instances[instRef{req.Scope, w.Key}], scope: req.Scope, period: w.Key, win: w}}
	for _, u := range events.SortedUnits(req.Delta) {
		if !b.limitsUnit(u) {
			return Decision{Err: &events.Error{Code: events.CodeInvalidRequest,
				Message: fmt.Sprintf("delta.%s: budget %q does not limit %s", u, b.def.Name, u), Details: map[string]any{"field": "delta." + u}}}
		}
		us := unitOf(t.app.in, u)
		limit, _ := limitOf(b, &us, u)
		nl := limit.Add(req.Delta[u].Amount)
		if nl.Sign() < 0 {
			return Decision{Err: &events.Error{Code: events.CodeInvalidRequest,
				Message: fmt.Sprintf("delta.%s: the limit %s would become negative", u, limit), Details: map[string]any{"field": "delta." + u}}}
		}
		if !nl.InRange() {
			return Decision{Err: &events.Error{Code: events.CodeInvalidRequest,
				Message: fmt.Sprintf("delta.%s: the limit would exceed %d significant digits", u, events.MaxSignificantDigits), Details: map[string]any{"field": "delta." + u}}}
		}
	}
	data := &events.BudgetAdjusted{Mutation: events.Mutation{IdempotencyKey: req.IdempotencyKey, RequestHash: hash},
		Budget: b.def.Name, Pattern: b.def.Scope, Scope: req.Scope, Period: w.Key, Delta: req.Delta, Reason: req.Reason}
	data.Instance = s.adjustedView(t, req.Delta)
	return Decision{Events: s.oneEvent(cmd.Root, now, data)}
}

func (s *State) adjustedView(t target, delta events.SignedAmounts) events.InstanceView {
	v := s.views([]target{t})[0]
	for i, e := range v.Units {
		if d, ok := delta[e.Unit]; ok {
			v.Units[i].Limit = e.Limit.Add(d.Amount)
			v.Units[i].Remaining = events.Signed{Amount: e.Remaining.Add(d.Amount)}
		}
	}
	return v
}

func (s *State) decideExpire(now time.Time) Decision {
	var evs []events.Event
	// Take the due reservations off the heap and put them back afterwards:
	// the order is unchanged.
	var due []*reservation
	freed := map[*instance]map[string]events.Amount{}
	for len(due) < MaxExpiriesPerTick && len(s.expiries) > 0 && !s.expiries[0].expiresAt.After(now) {
		r := s.expiries.pop()
		due = append(due, r)
		// The expiries of one tick are applied in order: each event's
		// balances include what the earlier ones freed.
		ts := s.releaseTargets(r)
		for i := range ts {
			ts[i].changes = addPrior(ts[i].changes, freed[ts[i].app.in])
		}
		data := &events.ReservationExpired{ReservationID: r.id, Scope: r.scope, Released: r.amountsMap(),
			Instances: s.views(ts)}
		evs = append(evs, s.event(r.root, now, data))
		for i := range ts {
			in := ts[i].app.in
			if freed[in] == nil {
				freed[in] = map[string]events.Amount{}
			}
			for _, u := range ts[i].held {
				freed[in][u] = freed[in][u].Sub(r.amount(u))
			}
		}
	}
	for _, r := range due {
		s.expiries.push(r)
	}
	return Decision{Events: evs}
}

// addPrior adds to a target's changes what earlier events of the same
// decision changed on its instance.
func addPrior(cs []change, prior map[string]events.Amount) []change {
	for _, u := range events.SortedUnits(prior) {
		i := slices.IndexFunc(cs, func(c change) bool { return c.unit == u })
		if i < 0 {
			cs = append(cs, change{unit: u, reserved: prior[u]})
			continue
		}
		cs[i].reserved = cs[i].reserved.Add(prior[u])
	}
	return cs
}
