package projector

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/streams"
)

// DefaultRetention is how long the model label of an expired reservation
// is kept for a late commit: the enforcer accepts one while it retains the
// closed reservation (its idempotency window, 24 h by default).
const DefaultRetention = 48 * time.Hour

// View is the projection of one partition: every view entry of the
// partition, the fold of its events. It is pure: no I/O, no clock.
type View struct {
	n         int
	retention time.Duration
	seq       uint64
	at        time.Time

	inst     map[string]*Balance
	ofBudget map[string]map[string]struct{} // budgetID → instance keys
	budgets  map[string]*BudgetEntry
	shadow   map[string]*Shadow
	spend    map[string]*Spend
	wf       map[string]*WorkflowSpend
	resv     map[string]*Resv
	expired  []expiredResv // FIFO by expiry time
	unsorted bool          // Load appended to expired
	closing  []string      // keys of stored reservations marked Closed

	dirty   map[string]struct{}
	gone    map[string]struct{} // deleted keys that exist in KV
	applied int
	firstAt time.Time // at of the first event applied since the last Changes
}

type expiredResv struct {
	key string
	at  time.Time
}

// NewView returns the empty view of partition n. retention ≤ 0 means
// DefaultRetention.
func NewView(n int, retention time.Duration) *View {
	if retention <= 0 {
		retention = DefaultRetention
	}
	return &View{n: n, retention: retention,
		inst: map[string]*Balance{}, ofBudget: map[string]map[string]struct{}{}, budgets: map[string]*BudgetEntry{},
		shadow: map[string]*Shadow{}, spend: map[string]*Spend{}, wf: map[string]*WorkflowSpend{},
		resv: map[string]*Resv{}, dirty: map[string]struct{}{}, gone: map[string]struct{}{}}
}

// Partition is the view's partition.
func (v *View) Partition() int { return v.n }

// Seq is the last applied stream sequence.
func (v *View) Seq() uint64 { return v.seq }

// At is the time of the last applied event.
func (v *View) At() time.Time { return v.at }

// Pending is the number of events applied since the last Changes.
func (v *View) Pending() int { return v.applied }

// SetCheckpoint positions a view loaded from KV after the checkpoint.
func (v *View) SetCheckpoint(seq uint64, at time.Time) { v.seq, v.at = seq, at }

func budgetID(pattern, name string) string { return pattern + "\x00" + name }

// Apply folds the event stored at seq. It returns false, changing nothing,
// for seq ≤ Seq(): a redelivery. Within the fold, an entry whose own Seq is
// at or beyond seq already reflects the event and is left alone.
func (v *View) Apply(seq uint64, ev events.Event) bool {
	if seq <= v.seq {
		return false
	}
	if v.applied == 0 {
		v.firstAt = ev.At
	}
	v.seq = seq
	if ev.At.After(v.at) {
		v.at = ev.At
	}
	info := EventInfo{Type: ev.Type, ID: ev.ID, Seq: seq, At: ev.At}
	switch d := ev.Data.(type) {
	case *events.BudgetSet:
		v.budgetSet(info, d.Budget)
	case *events.BudgetDeleted:
		v.budgetDeleted(info, d.Scope, d.Name)
	case *events.BudgetAdjusted:
		v.instances(info, []events.InstanceView{d.Instance}, nil, d.Delta)
	case *events.ReservationGranted:
		v.instances(info, d.Instances, d.ShadowDenials, nil)
		if m := d.Labels["model"]; m != "" {
			v.resvGranted(info, d.ReservationID, m)
		}
	case *events.ReservationDenied:
		// A denial changes no balance (its instances show the state the
		// events before it left) and the enforcer creates no instance for
		// it: nothing to fold.
	case *events.ReservationCommitted:
		v.instances(info, d.Instances, nil, nil)
		model, ok := d.Labels["model"]
		if !ok {
			if r := v.resv[ResvKey(v.n, d.ReservationID)]; r != nil {
				model = r.Model
			}
		}
		v.rollUp(info, d.Scope, d.Charged, model)
		v.resvClosed(info, d.ReservationID)
	case *events.ReservationReleased:
		v.instances(info, d.Instances, nil, nil)
		v.resvClosed(info, d.ReservationID)
	case *events.ReservationExpired:
		v.instances(info, d.Instances, nil, nil)
		v.resvExpired(info, d.ReservationID)
	case *events.UsageCharged:
		v.instances(info, d.Instances, nil, nil)
		v.rollUp(info, d.Scope, d.Amounts, d.Labels["model"])
	case *events.ThresholdCrossed:
		v.alerted(info, d)
	}
	v.gc(info)
	v.applied++
	return true
}

func (v *View) touch(key string) { v.dirty[key] = struct{}{} }

// created reports whether a new entry under key already exists in KV (it
// was deleted in memory since the last flush).
func (v *View) created(key string) bool {
	v.touch(key)
	if _, ok := v.gone[key]; ok {
		delete(v.gone, key)
		return true
	}
	return false
}

func (v *View) deleted(key string, stored bool) {
	v.touch(key)
	if stored {
		v.gone[key] = struct{}{}
	}
}

func (v *View) budgetSet(info EventInfo, def events.Budget) {
	key := BudgetKey(v.n, def.Scope, def.Name)
	e := v.budgets[key]
	if e == nil {
		e = &BudgetEntry{Partition: v.n}
		e.stored = v.created(key)
		v.budgets[key] = e
	}
	if e.Seq < info.Seq {
		e.Budget, e.LastEvent, e.Seq = def, info, info.Seq
		v.touch(key)
	}
	for _, ik := range sortedSet(v.ofBudget[budgetID(def.Scope, def.Name)]) {
		b := v.inst[ik]
		if b.Seq >= info.Seq {
			continue
		}
		held := map[string]Held{}
		for _, u := range b.Units {
			held[u.Unit] = Held{Spent: u.Spent, Reserved: u.Reserved}
		}
		for u, h := range b.Other {
			held[u] = h
		}
		b.Mode = def.Mode
		b.Units = make(events.UnitBalances, 0, len(def.Limits))
		for _, u := range events.SortedUnits(def.Limits) {
			h := held[u]
			delete(held, u)
			limit := def.Limits[u].Add(b.Adjust[u].Amount)
			b.Units = append(b.Units, events.UnitEntry{Unit: u, UnitBalance: events.UnitBalance{Limit: limit,
				Spent: h.Spent, Reserved: h.Reserved, Remaining: events.Signed{Amount: limit.Sub(h.Spent).Sub(h.Reserved)}}})
		}
		b.Other = nil
		if len(held) > 0 {
			b.Other = held
		}
		b.LastEvent, b.Seq = info, info.Seq
		v.touch(ik)
	}
}

func (v *View) budgetDeleted(info EventInfo, pattern, name string) {
	key := BudgetKey(v.n, pattern, name)
	if e := v.budgets[key]; e != nil && e.Seq < info.Seq {
		delete(v.budgets, key)
		v.deleted(key, e.stored)
	}
	id := budgetID(pattern, name)
	for _, ik := range sortedSet(v.ofBudget[id]) {
		b := v.inst[ik]
		if b.Seq >= info.Seq {
			continue
		}
		v.dropInstance(ik, id, b)
	}
}

func (v *View) dropInstance(key, id string, b *Balance) {
	delete(v.inst, key)
	delete(v.ofBudget[id], key)
	if len(v.ofBudget[id]) == 0 {
		delete(v.ofBudget, id)
	}
	v.deleted(key, b.stored)
}

func (v *View) addInstance(key string, b *Balance) {
	v.inst[key] = b
	id := budgetID(b.Pattern, b.Budget)
	set := v.ofBudget[id]
	if set == nil {
		set = map[string]struct{}{}
		v.ofBudget[id] = set
	}
	set[key] = struct{}{}
}

// alerted creates, like the enforcer, the instance an alert names when it
// does not exist yet (the first denial by a fresh instance): with nothing
// spent or reserved, the limits of the budget's definition.
func (v *View) alerted(info EventInfo, d *events.ThresholdCrossed) {
	key := InstanceKey(v.n, d.Pattern, d.Budget, d.Scope, d.Period)
	if _, ok := v.inst[key]; ok {
		return
	}
	e := v.budgets[BudgetKey(v.n, d.Pattern, d.Budget)]
	if e == nil {
		return
	}
	def := e.Budget
	view := events.InstanceView{Budget: def.Name, Pattern: def.Scope, Scope: d.Scope, Period: d.Period, Mode: def.Mode}
	if loc, err := events.LoadLocation(def.Timezone); err == nil && def.Period != events.PeriodNone {
		if w := events.WindowOf(def.Period, loc, info.At); w.Key == d.Period {
			end := w.End
			view.PeriodEnd = &end
		}
	}
	for _, u := range events.SortedUnits(def.Limits) {
		l := def.Limits[u]
		view.Units = append(view.Units, events.UnitEntry{Unit: u, UnitBalance: events.UnitBalance{Limit: l, Remaining: events.Signed{Amount: l}}})
	}
	v.balance(info, view, nil)
}

// instances folds the instance views an event carries: balances (adding
// delta to the adjustments first, for budget.adjusted) and, for shadow
// instances, the statistics.
func (v *View) instances(info EventInfo, views []events.InstanceView, denials []events.ShadowDenial, delta events.SignedAmounts) {
	for _, view := range views {
		v.balance(info, view, delta)
		var mine []events.ShadowDenial
		for _, d := range denials {
			if d.Pattern == view.Pattern && d.Budget == view.Budget && d.Scope == view.Scope && d.Period == view.Period {
				mine = append(mine, d)
			}
		}
		if view.Mode == events.ModeShadow || len(mine) > 0 {
			v.shadowStats(info, view, mine)
		}
	}
}

// balance folds one instance view into the instance's balance, adding
// delta to its adjustments first (budget.adjusted).
func (v *View) balance(info EventInfo, view events.InstanceView, delta events.SignedAmounts) {
	key := InstanceKey(v.n, view.Pattern, view.Budget, view.Scope, view.Period)
	b := v.inst[key]
	if b == nil {
		b = &Balance{Partition: v.n}
		b.stored = v.created(key)
		b.Budget, b.Pattern = view.Budget, view.Pattern // for the index
		v.addInstance(key, b)
	}
	if b.Seq >= info.Seq {
		return
	}
	if len(delta) > 0 {
		adj := events.SignedAmounts{}
		for u, a := range b.Adjust {
			adj[u] = a
		}
		for u, d := range delta {
			adj[u] = events.Signed{Amount: adj[u].Add(d.Amount)}
		}
		b.Adjust = adj
	}
	b.InstanceView = view
	for _, u := range view.Units {
		delete(b.Other, u.Unit)
	}
	if len(b.Other) == 0 {
		b.Other = nil
	}
	b.LastEvent, b.Seq = info, info.Seq
	v.touch(key)
}

func (v *View) shadowStats(info EventInfo, view events.InstanceView, denials []events.ShadowDenial) {
	key := ShadowKey(v.n, view.Pattern, view.Budget, view.Scope, view.Period)
	s := v.shadow[key]
	if s == nil {
		s = &Shadow{Partition: v.n, Budget: view.Budget, Pattern: view.Pattern, Scope: view.Scope,
			Period: view.Period, Units: map[string]ShadowUnit{}}
		s.stored = v.created(key)
		v.shadow[key] = s
	}
	if s.Seq >= info.Seq {
		return
	}
	for _, u := range view.Units {
		su := s.Units[u.Unit]
		used := u.Spent.Add(u.Reserved)
		su.Limit = u.Limit
		su.PeakUsage = events.Max(su.PeakUsage, used)
		su.PeakOverage = events.Max(su.PeakOverage, used.Sub(u.Limit))
		s.Units[u.Unit] = su
	}
	if len(denials) > 0 {
		s.WouldDeny++
		at := info.At
		if s.FirstDenial == nil {
			s.FirstDenial = &at
		}
		s.LastDenial = &at
		for _, d := range denials {
			su := s.Units[d.Unit]
			su.WouldDeny++
			s.Units[d.Unit] = su
		}
	}
	s.Seq = info.Seq
	v.touch(key)
}

// rollUp adds spend to the hourly roll-ups of scope and of its workflow.
func (v *View) rollUp(info EventInfo, scope string, amounts events.Amounts, model string) {
	hour := info.At.UTC().Truncate(time.Hour)
	root, workflow := events.Root(scope), events.SegmentID(scope, "workflow")
	for _, u := range events.SortedUnits(amounts) {
		a := amounts[u]
		if a.Sign() <= 0 {
			continue
		}
		key := SpendKey(v.n, hour, scope, u, model)
		s := v.spend[key]
		if s == nil {
			s = &Spend{Partition: v.n, Hour: hour, Scope: scope, Unit: u, Model: model}
			s.stored = v.created(key)
			v.spend[key] = s
		}
		if s.Seq < info.Seq {
			s.Amount, s.Seq = s.Amount.Add(a), info.Seq
			v.touch(key)
		}
		wkey := WorkflowKey(v.n, hour, root, workflow, u, model)
		w := v.wf[wkey]
		if w == nil {
			w = &WorkflowSpend{Partition: v.n, Hour: hour, Root: root, Workflow: workflow, Unit: u, Model: model}
			w.stored = v.created(wkey)
			v.wf[wkey] = w
		}
		if w.Seq < info.Seq {
			w.Amount, w.Seq = w.Amount.Add(a), info.Seq
			v.touch(wkey)
		}
	}
}

func (v *View) resvGranted(info EventInfo, id, model string) {
	key := ResvKey(v.n, id)
	r := v.resv[key]
	if r == nil {
		r = &Resv{Partition: v.n, ID: id}
		r.stored = v.created(key)
		v.resv[key] = r
	}
	if r.Seq < info.Seq {
		r.Model, r.Seq = model, info.Seq
		v.touch(key)
	}
}

func (v *View) resvClosed(info EventInfo, id string) {
	key := ResvKey(v.n, id)
	if r := v.resv[key]; r != nil && r.Seq < info.Seq {
		v.closeResv(info, key, r)
	}
}

// closeResv forgets a reservation's model: at once if it was never
// stored (its grant comes after the checkpoint, so a replay sees it
// again), else by marking it Closed until Purge.
func (v *View) closeResv(info EventInfo, key string, r *Resv) {
	if !r.stored {
		delete(v.resv, key)
		return
	}
	r.Closed, r.Seq = true, info.Seq
	v.touch(key)
	v.closing = append(v.closing, key)
}

func (v *View) resvExpired(info EventInfo, id string) {
	key := ResvKey(v.n, id)
	r := v.resv[key]
	if r == nil || r.Seq >= info.Seq {
		return
	}
	at := info.At
	r.ExpiredAt, r.Seq = &at, info.Seq
	v.touch(key)
	v.expired = append(v.expired, expiredResv{key: key, at: at})
}

// gc forgets the models of reservations that expired more than the
// retention before the event (event time, so a replay forgets the same).
func (v *View) gc(info EventInfo) {
	if v.unsorted {
		slices.SortStableFunc(v.expired, func(a, b expiredResv) int { return a.at.Compare(b.at) })
		v.unsorted = false
	}
	horizon := info.At.Add(-v.retention)
	i := 0
	for ; i < len(v.expired) && v.expired[i].at.Before(horizon); i++ {
		it := v.expired[i]
		if r := v.resv[it.key]; r != nil && !r.Closed && r.ExpiredAt != nil && r.ExpiredAt.Equal(it.at) && r.Seq < info.Seq {
			v.closeResv(info, it.key, r)
		}
	}
	if i > 0 {
		v.expired = slices.Delete(v.expired, 0, i)
	}
}

// Purge deletes the closed reservations whose closing event is at or
// before seq, the checkpoint just written: no replay can need them.
func (v *View) Purge(seq uint64) []Change {
	var out []Change
	keep := v.closing[:0]
	for _, key := range v.closing {
		r := v.resv[key]
		switch {
		case r == nil || !r.Closed:
		case r.Seq > seq:
			keep = append(keep, key)
		default:
			if _, dirty := v.dirty[key]; dirty {
				keep = append(keep, key) // its tombstone is not written yet
				continue
			}
			delete(v.resv, key)
			out = append(out, Change{Bucket: streams.BalancesBucket, Key: key})
		}
	}
	v.closing = keep
	slices.SortFunc(out, func(a, b Change) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Change is one KV write of a flush: Value nil deletes the key.
type Change struct {
	Bucket string
	Key    string
	Value  []byte
}

// Flush describes the events a set of changes covers.
type Flush struct {
	Seq    uint64    // the last applied sequence
	At     time.Time // its time
	FromAt time.Time // the time of the first event since the previous flush
	Events int       // events applied since the previous flush
}

// Changes returns the KV writes that bring the stored views up to Seq —
// puts first, then deletes, each in key order — and starts a new flush.
// It assumes the caller writes them all; if not, the caller must reload
// the view from KV (the shell restarts the partition).
func (v *View) Changes() ([]Change, Flush) {
	fl := Flush{Seq: v.seq, At: v.at, FromAt: v.firstAt, Events: v.applied}
	keys := make([]string, 0, len(v.dirty))
	for k := range v.dirty {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var puts, dels []Change
	for _, k := range keys {
		val, stored, ok := v.entry(k)
		if ok {
			b, err := json.Marshal(val)
			if err != nil {
				panic(fmt.Sprintf("projector: encode %s: %v", k, err))
			}
			puts = append(puts, Change{Bucket: bucketOf(k), Key: k, Value: b})
			*stored = true
			continue
		}
		if _, ok := v.gone[k]; ok {
			dels = append(dels, Change{Bucket: bucketOf(k), Key: k})
		}
	}
	clear(v.dirty)
	clear(v.gone)
	v.applied = 0
	v.firstAt = time.Time{}
	v.evict()
	return append(puts, dels...), fl
}

// evict drops the roll-ups of hours before the last event's: event time
// never goes backwards in a partition, so they are final, and flushed.
func (v *View) evict() {
	cur := v.at.UTC().Truncate(time.Hour)
	for k, s := range v.spend {
		if s.Hour.Before(cur) {
			delete(v.spend, k)
		}
	}
	for k, w := range v.wf {
		if w.Hour.Before(cur) {
			delete(v.wf, k)
		}
	}
}

func bucketOf(key string) string {
	if strings.HasPrefix(key, PrefixBudget+".") {
		return streams.BudgetsBucket
	}
	return streams.BalancesBucket
}

// entry returns the value stored under key, and its stored flag.
func (v *View) entry(key string) (any, *bool, bool) {
	prefix, _, _ := strings.Cut(key, ".")
	switch prefix {
	case PrefixInstance:
		if e, ok := v.inst[key]; ok {
			return e, &e.stored, true
		}
	case PrefixBudget:
		if e, ok := v.budgets[key]; ok {
			return e, &e.stored, true
		}
	case PrefixShadow:
		if e, ok := v.shadow[key]; ok {
			return e, &e.stored, true
		}
	case PrefixSpend:
		if e, ok := v.spend[key]; ok {
			return e, &e.stored, true
		}
	case PrefixWorkflow:
		if e, ok := v.wf[key]; ok {
			return e, &e.stored, true
		}
	case PrefixResv:
		if e, ok := v.resv[key]; ok {
			return e, &e.stored, true
		}
	}
	return nil, nil, false
}

// Load adds an entry read from KV (anything but the checkpoint).
func (v *View) Load(key string, value []byte) error {
	k, err := ParseKey(key)
	if err != nil {
		return err
	}
	if k.Partition != v.n {
		return fmt.Errorf("projector: key %q of partition %d loaded into partition %d", key, k.Partition, v.n)
	}
	bad := func(err error) error { return fmt.Errorf("projector: value of %q: %w", key, err) }
	switch k.Prefix {
	case PrefixInstance:
		var e Balance
		if err := json.Unmarshal(value, &e); err != nil {
			return bad(err)
		}
		e.stored = true
		v.addInstance(key, &e)
	case PrefixBudget:
		var e BudgetEntry
		if err := json.Unmarshal(value, &e); err != nil {
			return bad(err)
		}
		e.stored = true
		v.budgets[key] = &e
	case PrefixShadow:
		var e Shadow
		if err := json.Unmarshal(value, &e); err != nil {
			return bad(err)
		}
		if e.Units == nil {
			e.Units = map[string]ShadowUnit{}
		}
		e.stored = true
		v.shadow[key] = &e
	case PrefixSpend:
		var e Spend
		if err := json.Unmarshal(value, &e); err != nil {
			return bad(err)
		}
		e.stored = true
		v.spend[key] = &e
	case PrefixWorkflow:
		var e WorkflowSpend
		if err := json.Unmarshal(value, &e); err != nil {
			return bad(err)
		}
		e.stored = true
		v.wf[key] = &e
	case PrefixResv:
		var e Resv
		if err := json.Unmarshal(value, &e); err != nil {
			return bad(err)
		}
		e.stored = true
		v.resv[key] = &e
		if e.Closed {
			v.closing = append(v.closing, key)
		}
		if e.ExpiredAt != nil {
			v.expired = append(v.expired, expiredResv{key: key, at: *e.ExpiredAt})
			v.unsorted = true
		}
	default:
		return fmt.Errorf("projector: cannot load key %q", key)
	}
	return nil
}

func sortedSet(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
