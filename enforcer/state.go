package enforcer

import (
	"container/heap"
	"fmt"
	"slices"
	"strings"
	"time"

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

	budgets map[string]*budget   // budgetKey(pattern, name)
	byRoot  map[string][]*budget // sorted by depth, pattern, name

	instances map[instKey]*instance
	ofBudget  map[string]map[instKey]struct{}

	reservations map[string]*reservation // open, and closed ones still retained
	open         int
	expiries     expiryHeap
	closed       queue // closed reservations, oldest first

	idem      map[idemKey]idemEntry
	idemOrder queue // idempotency keys, oldest first
}

type budget struct {
	def   events.Budget
	units []string // def.Limits' units in byte order
	key   string
	depth int
	loc   *time.Location
	// cached window, valid for at in [win.Start, win.End)
	win events.Window
}

func budgetKey(pattern, name string) string { return pattern + "\x00" + name }

type instKey struct {
	budget string // budgetKey
	scope  string
	period string
}

type instance struct {
	key   instKey
	b     *budget
	win   events.Window
	units map[string]*unitState
	fired map[firedKey]struct{}
}

type firedKey struct{ unit, threshold string }

type unitState struct {
	spent, reserved, adjust events.Amount
}

type reservation struct {
	id        string
	root      string
	scope     string
	amounts   events.Amounts
	priority  events.Priority
	option    int
	label     string
	labels    events.Labels
	expiresAt time.Time
	status    events.ReservationStatus
	closedAt  time.Time
	holds     []hold
}

// hold is what a reservation holds on one instance: the units, in byte
// order, that the instance limited at grant time; each holds the
// reservation's amount of that unit.
type hold struct {
	key   instKey
	units []string
}

type idemKey struct {
	root string
	op   events.Op
	key  string
}

type idemEntry struct {
	hash string
	seq  uint64
	at   time.Time
}

// New returns the empty state of a partition.
func New(cfg Config) *State {
	return &State{
		cfg:          cfg.withDefaults(),
		budgets:      map[string]*budget{},
		byRoot:       map[string][]*budget{},
		instances:    map[instKey]*instance{},
		ofBudget:     map[string]map[instKey]struct{}{},
		reservations: map[string]*reservation{},
		idem:         map[idemKey]idemEntry{},
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
func (s *State) OpenReservations() int { return s.open }

// IdempotencyKeys is the number of idempotency keys remembered.
func (s *State) IdempotencyKeys() int { return len(s.idem) }

// IdempotencyHorizon is how far back keys are remembered now: the window,
// or less when the count bound forgot keys earlier.
func (s *State) IdempotencyHorizon() time.Duration {
	for i := s.idemOrder.head; i < len(s.idemOrder.items); i++ {
		it := s.idemOrder.items[i]
		if e, ok := s.idem[it.k]; ok && e.seq == it.seq {
			return s.lastAt.Sub(e.at)
		}
	}
	return s.cfg.IdempotencyWindow
}

// NextExpiry is the earliest expiry of an open reservation.
func (s *State) NextExpiry() (time.Time, bool) {
	for len(s.expiries) > 0 {
		top := s.expiries[0]
		r, ok := s.reservations[top.id]
		if ok && r.status == events.StatusOpen && r.expiresAt.Equal(top.at) {
			return top.at, true
		}
		heap.Pop(&s.expiries) // stale entry: closed or extended
	}
	return time.Time{}, false
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
	key := budgetKey(def.Scope, def.Name)
	loc, err := events.LoadLocation(def.Timezone)
	if err != nil {
		panic(fmt.Sprintf("enforcer: budget %s has an unloadable time zone: %v", def.Name, err))
	}
	if b, ok := s.budgets[key]; ok {
		if b.def.Period != def.Period || b.def.Timezone != def.Timezone {
			b.win = events.Window{}
		}
		b.def, b.loc, b.units = def, loc, events.SortedUnits(def.Limits)
		// Instances keep their adjustments (a top-up survives an edit of
		// the budget), but a lower new limit must not leave limit +
		// adjustments below zero: a negative limit is not an amount.
		for k := range s.ofBudget[key] {
			for u, us := range s.instances[k].units {
				if l, ok := def.Limits[u]; ok && l.Add(us.adjust).Sign() < 0 {
					us.adjust = l.Neg()
				}
			}
		}
		return
	}
	b := &budget{def: def, key: key, depth: events.Depth(def.Scope), loc: loc, units: events.SortedUnits(def.Limits)}
	s.budgets[key] = b
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
	key := budgetKey(pattern, name)
	b, ok := s.budgets[key]
	if !ok {
		panic(fmt.Sprintf("enforcer: delete of unknown budget %s %s", pattern, name))
	}
	delete(s.budgets, key)
	root := events.Root(pattern)
	s.byRoot[root] = slices.DeleteFunc(s.byRoot[root], func(x *budget) bool { return x == b })
	if len(s.byRoot[root]) == 0 {
		delete(s.byRoot, root)
	}
	for k := range s.ofBudget[key] {
		delete(s.instances, k)
	}
	delete(s.ofBudget, key)
	// Holds on the deleted instances go with them: a budget set again under
	// the same scope and name starts afresh, and a later release, expiry or
	// commit must not free on it what was reserved on the deleted one.
	for _, r := range s.reservations {
		r.holds = slices.DeleteFunc(r.holds, func(h hold) bool { return h.key.budget == key })
	}
}

// applicable lists the budgets that apply to a concrete scope, root to
// leaf, within a level by pattern then name, with the instance key each
// has at time at.
type applicable struct {
	b   *budget
	key instKey
	win events.Window
}

func (s *State) applicableAt(scope string, at time.Time, out []applicable) []applicable {
	list := s.byRoot[events.Root(scope)]
	if len(list) == 0 {
		return out
	}
	if out == nil {
		out = make([]applicable, 0, len(list))
	}
	depth := 0
	prefix := ""
	for i := 0; i <= len(scope); i++ {
		if i < len(scope) && scope[i] != '/' {
			continue
		}
		depth++
		prefix = scope[:i]
		for _, b := range list {
			if b.depth != depth || !events.Matches(b.def.Scope, prefix) {
				continue
			}
			w := b.windowOf(at)
			out = append(out, applicable{b: b, key: instKey{budget: b.key, scope: prefix, period: w.Key}, win: w})
		}
	}
	return out
}

// unit returns the state of unit u of an instance, or zeros if absent.
func (s *State) unitOf(k instKey, u string) unitState {
	if in, ok := s.instances[k]; ok {
		if us, ok := in.units[u]; ok {
			return *us
		}
	}
	return unitState{}
}

// getInstance returns the instance for a, creating it.
func (s *State) getInstance(b *budget, k instKey, win events.Window) *instance {
	if in, ok := s.instances[k]; ok {
		return in
	}
	in := &instance{key: k, b: b, win: win, units: map[string]*unitState{}, fired: map[firedKey]struct{}{}}
	s.instances[k] = in
	set := s.ofBudget[b.key]
	if set == nil {
		set = map[instKey]struct{}{}
		s.ofBudget[b.key] = set
	}
	set[k] = struct{}{}
	return in
}

func (in *instance) unit(u string) *unitState {
	us, ok := in.units[u]
	if !ok {
		us = &unitState{}
		in.units[u] = us
	}
	return us
}

// limit is the effective limit of unit u: the budget's limit plus the
// instance's adjustments.
func limitOf(b *budget, us unitState, u string) (events.Amount, bool) {
	l, ok := b.def.Limits[u]
	if !ok {
		return events.Amount{}, false
	}
	return l.Add(us.adjust), true
}

// queue is a FIFO of (key, seq) with amortised O(1) pops.
type queue struct {
	items []queueItem
	head  int
}

type queueItem struct {
	k   idemKey // for idempotency entries
	id  string  // for closed reservations
	seq uint64
	at  time.Time
}

func (q *queue) push(it queueItem) { q.items = append(q.items, it) }
func (q *queue) len() int          { return len(q.items) - q.head }
func (q *queue) front() queueItem  { return q.items[q.head] }
func (q *queue) pop() {
	q.items[q.head] = queueItem{}
	q.head++
	if q.head > 1024 && q.head*2 > len(q.items) {
		q.items = append([]queueItem(nil), q.items[q.head:]...)
		q.head = 0
	}
}

type expiryEntry struct {
	at time.Time
	id string
}

type expiryHeap []expiryEntry

func (h expiryHeap) Len() int { return len(h) }
func (h expiryHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].id < h[j].id
}
func (h expiryHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)   { *h = append(*h, x.(expiryEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// limitsAll reports whether the budget limits every unit of units.
func (b *budget) limitsAll(units []string) bool {
	for _, u := range units {
		if _, ok := b.def.Limits[u]; !ok {
			return false
		}
	}
	return true
}
