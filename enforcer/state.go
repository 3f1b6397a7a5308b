package enforcer

import (
	"container/heap"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/tallyledger/tally/events"
)

// Core limits and defaults (DESIGN §2, §6).
const (
	DefaultIdempotencyWindow     = 24 * time.Hour
	DefaultMaxIdempotencyKeys    = 2_000_000
	DefaultMaxOpenReservations   = 1_000_000
	DefaultMaxClosedReservations = 2_000_000
	DefaultMaxBudgetsPerRoot     = 1_000
	// MaxExpiriesPerTick bounds the events one expiry tick produces.
	MaxExpiriesPerTick = 512
)

// Config bounds a partition's state. The zero value of a field means its default.
type Config struct {
	Partition             int
	IdempotencyWindow     time.Duration
	MaxIdempotencyKeys    int
	MaxOpenReservations   int
	MaxClosedReservations int
	MaxBudgetsPerRoot     int
}

func (c Config) withDefaults() Config {
	if c.IdempotencyWindow == 0 {
		c.IdempotencyWindow = DefaultIdempotencyWindow
	}
	if c.MaxIdempotencyKeys == 0 {
		c.MaxIdempotencyKeys = DefaultMaxIdempotencyKeys
	}
	if c.MaxOpenReservations == 0 {
		c.MaxOpenReservations = DefaultMaxOpenReservations
	}
	if c.MaxClosedReservations == 0 {
		c.MaxClosedReservations = DefaultMaxClosedReservations
	}
	if c.MaxBudgetsPerRoot == 0 {
		c.MaxBudgetsPerRoot = DefaultMaxBudgetsPerRoot
	}
	return c
}

// Validate rejects nonsense.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Partition < 0:
		return fmt.Errorf("enforcer: partition %d is negative", c.Partition)
	case c.IdempotencyWindow < time.Minute:
		return fmt.Errorf("enforcer: idempotency window %s below 1m", c.IdempotencyWindow)
	case c.MaxIdempotencyKeys < 1, c.MaxOpenReservations < 1, c.MaxClosedReservations < 1, c.MaxBudgetsPerRoot < 1:
		return fmt.Errorf("enforcer: limits must be positive")
	}
	return nil
}

// State is one partition's ledger state: the fold of its events.
type State struct {
	cfg     Config
	lastAt  time.Time
	lastSeq uint64
	// claimedBy is the owner named by the last partition.claimed event.
	claimedBy string

	budgets map[budgetRef]*budget
	byRoot  map[string][]*budget // sorted by depth, pattern, name
	byID    map[uint64]*budget   // what closed reservations' holds name
	lastID  uint64

	open     openSet    // open reservations
	expiries expiryHeap // the open reservations, soonest first
	// maxID is at least the greatest id of the reservations held, open or
	// closed: a grant of a greater id (the decision loop's ids are
	// monotonic ULIDs) cannot be a second grant of one, and skips the two
	// look-ups of exists.
	maxID string
	// closed holds the closed reservations still retained, oldest first,
	// encoded (closed.go): key the id, value the reservation.
	closed fifo
	// idem holds the idempotency keys, oldest first: key the
	// (root, operation, key) triple (idemKey), value the request hash.
	idem fifo

	// scratch is reused by every decision and apply (the state is
	// single-threaded); no event or answer refers to it.
	scratch scratch
	// reuseViews renders a decision's instance views into vbuf, which the
	// next Decide reuses (SetReuseViews).
	reuseViews bool
	vbuf       viewBuf
	// gen counts changes to the budgets and their instances; appsCache
	// holds while it stays.
	gen       uint64
	appsCache appsCache
	// unitNames holds one copy of each unit name the budgets limit, so
	// that the unit names of requests, reservations and instances are
	// mostly that copy, and comparing two is comparing pointers.
	unitNames map[string]string
}

// intern returns the state's copy of unit name u and true if it has one,
// else u and false.
func (s *State) intern(u string) (string, bool) {
	if c, ok := s.unitNames[u]; ok {
		return c, true
	}
	return u, false
}

// internUnits makes units, a budget's, the state's copies, adding those
// it lacks.
func (s *State) internUnits(units []string) {
	if s.unitNames == nil {
		s.unitNames = map[string]string{}
	}
	for i, u := range units {
		if c, ok := s.unitNames[u]; ok {
			units[i] = c
		} else {
			s.unitNames[u] = u
		}
	}
}

type budgetRef struct{ pattern, name string }

type budget struct {
	def    events.Budget
	units  []string        // def.Limits' units in byte order
	limits []events.Amount // def.Limits[units[i]]: a few units are found faster in a slice
	// free[p] is 1 − floor(p) for the priority of index p, nil for a
	// zero floor (capacity is then the limit itself).
	free [len(priorities)]*events.Amount
	// alert0[i] is limits[i] × the first alert threshold, if there is one.
	alert0 []events.Amount
	key    string // pattern "\x00" name, as snapshots name budgets
	id     uint64 // unique in the state, never reused
	depth  int
	loc    *time.Location
	// cached window, valid for at in [win.Start, win.End)
	win       events.Window
	instances map[instRef]*instance
	last      *instance // the instance found last: requests come in runs on one scope
}

func budgetKey(pattern, name string) string { return pattern + "\x00" + name }

type instRef struct{ scope, period string }

type instance struct {
	b      *budget
	scope  string
	period string
	win    events.Window
	units  []unitEntry // in order of first use
	fired  []firedKey
}

type unitEntry struct {
	unit string
	unitState
}

type firedKey struct{ unit, threshold string }

type unitState struct {
	spent, reserved, adjust events.Amount
}

type reservation struct {
	id    string
	root  string
	scope string
	// The amounts reserved: amts[i] of units[i], the units in byte order.
	// Not a map: a reservation stays in the state for its life, and a map
	// is two more objects of pointers for the collector to scan (and no
	// flat reservation could hold one).
	units    []string
	amts     []events.Amount
	priority events.Priority
	option   int
	label    string
	labels   events.Labels
	// labelsFlat holds a flat reservation's labels (appendLabels), in its
	// own memory; "" when labels holds them (labelsMap).
	labelsFlat string
	expiresAt  time.Time
	status     events.ReservationStatus
	closedAt   time.Time
	holds      []hold
	heapIdx    int32 // in State.expiries while open
	flat       bool  // allocated without pointer bits (flat.go)
	// Room for the common case, saving three allocations per grant.
	unitBuf [2]string
	amtBuf  [2]events.Amount
	holdBuf [3]hold
}

// setAmounts makes r's units and amounts those of as (in byte order), in
// r's own room when they fit.
func (r *reservation) setAmounts(as []unitAmount) {
	r.units, r.amts = r.unitBuf[:0], r.amtBuf[:0]
	if len(as) > len(r.unitBuf) {
		r.units, r.amts = make([]string, 0, len(as)), make([]events.Amount, 0, len(as))
	}
	for i := range as {
		r.units = append(r.units, as[i].unit)
		r.amts = append(r.amts, as[i].amt)
	}
}

// amount returns r's amount of unit u, zero if it has none.
func (r *reservation) amount(u string) events.Amount {
	for i, v := range r.units {
		if v == u {
			return r.amts[i]
		}
	}
	return events.Amount{}
}

// amountsInto fills m, which must be empty, with r's amounts and returns it.
func (r *reservation) amountsInto(m events.Amounts) events.Amounts {
	for i, u := range r.units {
		m[u] = r.amts[i]
	}
	return m
}

// labelsMap returns r's labels: a flat reservation's in a new map.
func (r *reservation) labelsMap() events.Labels {
	if r.labelsFlat == "" {
		return r.labels
	}
	d := decoder{b: unsafe.Slice(unsafe.StringData(r.labelsFlat), len(r.labelsFlat))}
	return d.labels()
}

// amountsMap returns r's amounts in a new map.
func (r *reservation) amountsMap() events.Amounts {
	return r.amountsInto(make(events.Amounts, len(r.units)))
}

// hold is what a reservation holds on one instance: the units, in byte
// order, that the instance limited at grant time; each holds the
// reservation's amount of that unit. in is nil when the instance does not
// exist (a hold is dropped with its budget, so only a restored snapshot
// can name a missing instance): missing then names it. A hold names its
// instance by the one pointer otherwise: reservations are most of a large
// state, and a flat one (flat.go) may point to nothing but an instance
// its budget holds.
type hold struct {
	in      *instance
	missing *instanceRef
	units   []string
}

// instanceRef names an instance by its budget, scope and period.
type instanceRef struct {
	b      *budget
	scope  string
	period string
}

// holdOn is the hold of units on the instance of b, scope and period; in
// is that instance, or nil if it does not exist.
func holdOn(b *budget, scope, period string, in *instance, units []string) hold {
	if in != nil {
		return hold{in: in, units: units}
	}
	return hold{missing: &instanceRef{b, scope, period}, units: units}
}

// budget, scope and period name the hold's instance.
func (h *hold) budget() *budget {
	if h.in != nil {
		return h.in.b
	}
	return h.missing.b
}

func (h *hold) scope() string {
	if h.in != nil {
		return h.in.scope
	}
	return h.missing.scope
}

func (h *hold) period() string {
	if h.in != nil {
		return h.in.period
	}
	return h.missing.period
}

// New returns the empty state of a partition.
func New(cfg Config) *State {
	return &State{
		cfg:     cfg.withDefaults(),
		budgets: map[budgetRef]*budget{},
		byRoot:  map[string][]*budget{},
		byID:    map[uint64]*budget{},
		open:    newOpenSet(),
		closed:  newFifo(),
		idem:    newFifo(),
	}
}

// LastSeq is the stream sequence of the last applied event.
func (s *State) LastSeq() uint64 { return s.lastSeq }

// ClaimedBy is the owner of the last partition.claimed event: the only
// writer whose appends can still land.
func (s *State) ClaimedBy() string { return s.claimedBy }

// LastAt is the time of the last applied event.
func (s *State) LastAt() time.Time { return s.lastAt }

// OpenReservations is the number of open reservations.
func (s *State) OpenReservations() int { return s.open.len() }

// IdempotencyKeys is the number of idempotency keys remembered.
func (s *State) IdempotencyKeys() int { return s.idem.len() }

// IdempotencyHorizon is how far back keys are remembered now: the window,
// or less when the count bound forgot keys earlier.
func (s *State) IdempotencyHorizon() time.Duration {
	for pos := s.idem.head; pos < s.idem.tail; pos++ {
		if r := s.idem.at(pos); s.idem.current(r) == r {
			return s.lastAt.Sub(r.at.time())
		}
	}
	return s.cfg.IdempotencyWindow
}

// NextExpiry is the earliest expiry of an open reservation.
func (s *State) NextExpiry() (time.Time, bool) {
	if len(s.expiries) == 0 {
		return time.Time{}, false
	}
	return s.expiries[0].expiresAt, true
}

// windowOf returns b's window containing at, cached.
func (b *budget) windowOf(at time.Time) events.Window {
	if b.def.Period == events.PeriodNone {
		return events.Window{Key: string(events.PeriodNone)}
	}
	if !b.win.Start.IsZero() && !at.Before(b.win.Start) && at.Before(b.win.End) {
		return b.win
	}
	b.win = events.WindowOf(b.def.Period, b.loc, at)
	return b.win
}

func (s *State) putBudget(def events.Budget) {
	s.changed()
	ref := budgetRef{def.Scope, def.Name}
	loc, err := events.LoadLocation(def.Timezone)
	if err != nil {
		panic(fmt.Sprintf("enforcer: budget %s has an unloadable time zone: %v", def.Name, err))
	}
	if b, ok := s.budgets[ref]; ok {
		if b.def.Period != def.Period || b.def.Timezone != def.Timezone {
			b.win = events.Window{}
		}
		b.def, b.loc = def, loc
		b.define()
		s.internUnits(b.units)
		// Instances keep their adjustments (a top-up survives an edit of
		// the budget), but a lower new limit must not leave limit +
		// adjustments below zero: a negative limit is not an amount.
		for _, in := range b.instances {
			for i := range in.units {
				us := &in.units[i]
				if l, ok := def.Limits[us.unit]; ok && l.Add(us.adjust).Sign() < 0 {
					us.adjust = l.Neg()
				}
			}
		}
		return
	}
	s.lastID++
	b := &budget{def: def, key: budgetKey(def.Scope, def.Name), id: s.lastID, depth: events.Depth(def.Scope), loc: loc,
		instances: map[instRef]*instance{}}
	b.define()
	s.internUnits(b.units)
	s.budgets[ref] = b
	s.byID[b.id] = b
	root := events.Root(def.Scope)
	list := append(s.byRoot[root], b)
	slices.SortFunc(list, func(x, y *budget) int {
		if x.depth != y.depth {
			return x.depth - y.depth
		}
		if c := strings.Compare(x.def.Scope, y.def.Scope); c != 0 {
			return c
		}
		return strings.Compare(x.def.Name, y.def.Name)
	})
	s.byRoot[root] = list
}

func (s *State) deleteBudget(pattern, name string) {
	s.changed()
	ref := budgetRef{pattern, name}
	b, ok := s.budgets[ref]
	if !ok {
		panic(fmt.Sprintf("enforcer: delete of unknown budget %s %s", pattern, name))
	}
	delete(s.budgets, ref)
	delete(s.byID, b.id)
	root := events.Root(pattern)
	s.byRoot[root] = slices.DeleteFunc(s.byRoot[root], func(x *budget) bool { return x == b })
	if len(s.byRoot[root]) == 0 {
		delete(s.byRoot, root)
	}
	// Holds on the deleted instances go with them: a budget set again under
	// the same scope and name starts afresh, and a later release, expiry or
	// commit must not free on it what was reserved on the deleted one.
	// Closed reservations name the budget by its id, which is gone now:
	// their holds on it are dropped when they are read (closed.go).
	for r := range s.open.all() {
		r.holds = slices.DeleteFunc(r.holds, func(h hold) bool { return h.budget() == b })
	}
	b.instances, b.last = nil, nil
}

// applicable is a budget that applies to a concrete scope, with the
// instance it has at some time: in is nil until that instance exists.
type applicable struct { // holdTargets writes each field: a new one must be written there too
	b      *budget
	in     *instance
	scope  string
	period string
	win    events.Window
}

// applicableAt returns the budgets that apply to a concrete scope, root to
// leaf, within a level by pattern then name, with the instance each has at
// time at. The list is the state's own (appsCache): the caller reads it,
// and only until it calls applicableAt again.
func (s *State) applicableAt(scope string, at time.Time) []applicable {
	c := &s.appsCache
	if c.gen == s.gen && c.scope == scope && c.holds(instantOf(at)) {
		return c.apps
	}
	list := s.byRoot[events.Root(scope)]
	out := c.apps[:0]
	depth := 0
	for i := 0; i <= len(scope); i++ {
		if i < len(scope) && scope[i] != '/' {
			continue
		}
		depth++
		prefix := scope[:i]
		for _, b := range list {
			if b.depth != depth || !events.Matches(b.def.Scope, prefix) {
				continue
			}
			w := b.windowOf(at)
			out = append(out, applicable{b: b, in: b.instanceOf(prefix, w.Key), scope: prefix, period: w.Key, win: w})
		}
	}
	c.keep(scope, s.gen, out)
	return out
}

// appsCache is the last list applicableAt built: requests come in runs on
// one scope, and Apply folds the scope its Decide has just looked up. The
// list holds while no budget or instance is added, changed or removed
// (State.gen) and the time stays within every window in it. The zero
// value holds for no time at all.
type appsCache struct {
	scope       string
	gen         uint64
	from, until instant // the intersection of the list's windows
	apps        []applicable
}

// instant is a time as Unix seconds and nanoseconds: two of them compare
// without time.Time's monotonic-clock branches and calls.
type instant struct {
	sec  int64
	nsec int32
}

func instantOf(t time.Time) instant { return instant{t.Unix(), int32(t.Nanosecond())} }

func (a instant) before(b instant) bool { return a.sec < b.sec || a.sec == b.sec && a.nsec < b.nsec }

// holds reports whether at is within [from, until).
func (c *appsCache) holds(at instant) bool { return !at.before(c.from) && at.before(c.until) }

// endOfTime bounds a list without periodic windows.
var endOfTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

func (c *appsCache) keep(scope string, gen uint64, apps []applicable) {
	from, until := time.Time{}, endOfTime
	for i := range apps {
		if apps[i].b.def.Period == events.PeriodNone {
			continue
		}
		if w := apps[i].win; w.Start.After(from) {
			from = w.Start
		}
		if w := apps[i].win; w.End.Before(until) {
			until = w.End
		}
	}
	c.scope, c.gen, c.from, c.until = scope, gen, instantOf(from), instantOf(until)
	c.apps = apps
}

// changed invalidates what was derived from the budgets and instances.
func (s *State) changed() { s.gen++ }

// unitOf returns the state of unit u of an instance, or zeros if absent.
func unitOf(in *instance, u string) unitState { return *peekUnit(in, u) }

// noUnit is the state of a unit an instance does not have. Nothing writes it.
var noUnit unitState

// peekUnit is unitOf without the copy, for reading only: the state of unit
// u of an instance, or noUnit.
func peekUnit(in *instance, u string) *unitState {
	if in != nil {
		for i := range in.units {
			if in.units[i].unit == u {
				return &in.units[i].unitState
			}
		}
	}
	return &noUnit
}

// instanceOf returns b's instance of (scope, period), or nil.
func (b *budget) instanceOf(scope, period string) *instance {
	if in := b.last; in != nil && in.scope == scope && in.period == period {
		return in
	}
	in := b.instances[instRef{scope, period}]
	if in != nil {
		b.last = in
	}
	return in
}

// getInstance returns b's instance of (scope, period), creating it with
// window win.
func (s *State) getInstance(b *budget, scope, period string, win events.Window) *instance {
	ref := instRef{scope, period}
	if in, ok := b.instances[ref]; ok {
		return in
	}
	in := &instance{b: b, scope: scope, period: period, win: win}
	b.instances[ref] = in
	s.changed()
	return in
}

// unit returns the state of unit u, creating it; the pointer is valid until
// the next unit is created.
func (in *instance) unit(u string) *unitState {
	for i := range in.units {
		if in.units[i].unit == u {
			return &in.units[i].unitState
		}
	}
	in.units = append(in.units, unitEntry{unit: u})
	return &in.units[len(in.units)-1].unitState
}

func (in *instance) hasFired(unit, threshold string) bool {
	return slices.Contains(in.fired, firedKey{unit, threshold})
}

func (in *instance) fire(unit, threshold string) {
	if !in.hasFired(unit, threshold) {
		in.fired = append(in.fired, firedKey{unit, threshold})
	}
}

// define derives what decisions read from b.def.
func (b *budget) define() {
	b.units = events.SortedUnits(b.def.Limits)
	b.limits = make([]events.Amount, len(b.units))
	for i, u := range b.units {
		b.limits[i] = b.def.Limits[u]
	}
	b.alert0 = nil
	if len(b.def.AlertThresholds) > 0 {
		b.alert0 = make([]events.Amount, len(b.units))
		for i, l := range b.limits {
			b.alert0[i] = l.Mul(b.def.AlertThresholds[0])
		}
	}
	for i, p := range priorities {
		b.free[i] = nil
		if f := b.def.Floor(p); !f.IsZero() {
			free := events.One.Sub(f)
			b.free[i] = &free
		}
	}
}

// limit returns the budget's limit of unit u, if it limits u.
func (b *budget) limit(u string) (events.Amount, bool) {
	if i := b.unitIndex(u); i >= 0 {
		return b.limits[i], true
	}
	return events.Amount{}, false
}

// unitIndex is the index of unit u in b.units, or -1.
func (b *budget) unitIndex(u string) int { return slices.Index(b.units, u) }

// limitsUnit reports whether the budget limits unit u.
func (b *budget) limitsUnit(u string) bool { return slices.Contains(b.units, u) }

// capacityAt is limit × (1 − floor(p)); i is p's index in priorities (or
// -1), looked up once for a whole decision.
func (b *budget) capacityAt(limit events.Amount, i int, p events.Priority) events.Amount {
	if i < 0 {
		return capacity(limit, b.def.Floor(p))
	}
	if b.free[i] == nil {
		return limit
	}
	return limit.Mul(*b.free[i])
}

var priorities = [...]events.Priority{events.PriorityCritical, events.PriorityHigh, events.PriorityNormal, events.PriorityLow, events.PriorityBulk}

// limit is the effective limit of unit u: the budget's limit plus the
// instance's adjustments.
func limitOf(b *budget, us *unitState, u string) (events.Amount, bool) {
	l, ok := b.limit(u)
	if !ok {
		return events.Amount{}, false
	}
	if us.adjust.IsZero() {
		return l, true
	}
	return l.Add(us.adjust), true
}

// expiryHeap orders the open reservations by expiry, then id, with
// container/heap; each reservation knows its index (heapIdx, -1 once out).
type expiryHeap []*reservation

// expiresBefore is the heap's order.
func expiresBefore(a, b *reservation) bool {
	if c := a.expiresAt.Compare(b.expiresAt); c != 0 {
		return c < 0
	}
	return a.id < b.id
}

func (h *expiryHeap) push(r *reservation) { heap.Push(h, r) }

// pop removes and returns the soonest.
func (h *expiryHeap) pop() *reservation { return heap.Pop(h).(*reservation) }

// remove takes out the reservation at index i.
func (h *expiryHeap) remove(i int) { heap.Remove(h, i) }

// fix restores the order after the expiry of the reservation at i changed.
func (h *expiryHeap) fix(i int) { heap.Fix(h, i) }

// heap.Interface.
func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return expiresBefore(h[i], h[j]) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = int32(i), int32(j)
}
func (h *expiryHeap) Push(x any) {
	r := x.(*reservation)
	if len(*h) == math.MaxInt32 {
		panic("enforcer: 2^31 open reservations")
	}
	r.heapIdx = int32(len(*h))
	*h = append(*h, r)
}
func (h *expiryHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	r.heapIdx = -1
	return r
}

// limitsAll reports whether the budget limits every unit of units.
func (b *budget) limitsAll(units []string) bool {
	for _, u := range units {
		if !b.limitsUnit(u) {
			return false
		}
	}
	return true
}
