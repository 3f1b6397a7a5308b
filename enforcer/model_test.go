package enforcer

// A rapid state-modelMachine test of the core against a naive reference model
// written from DESIGN §2: plain maps, float64 amounts that are multiples of
// 1/4 or of 50 (exact in binary, so sums compare exactly), periods none and
// daily, four scopes, two units. Random actions: budget-set (enforce or
// shadow, floors), budget-delete, budget-adjust, reserve (amounts or
// options, priorities), decide, commit (below or above, maybe late),
// release, extend, charge, the clock moving on with an expiry tick,
// retries (same payload → the original answer; other payload → conflict)
// and restarts (replay of the encoded events, or Restore(Snapshot())).
//
// After every step: the model and the core agree on the answer and on the
// balances of every instance, no grant left an enforce instance above its
// capacity, and a replica fed every event through Encode/Decode has the
// live state's snapshot, byte for byte.
//
// More runs: go test ./enforcer -run TestModel -rapid.checks=2000 -rapid.steps=200

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"pgregory.net/rapid"

	"github.com/tallyledger/tally/events"
)

// --- the model ---------------------------------------------------------

// mSlot is a budget the model may define: a scope pattern, a name and the
// units it limits (fixed, so that replacing a budget changes values only).
type mSlot struct {
	pattern, name string
	units         []string
}

var mSlots = []mSlot{
	{"tenant:a", "ta", []string{"USD", "tokens"}},
	{"tenant:a/run:*", "run-cap", []string{"USD"}},
	{"tenant:a/run:r1", "run-cap", []string{"tokens"}}, // same name as the pattern: adjust prefers the exact scope
	{"tenant:a/run:*", "alt", []string{"USD", "tokens"}},
	{"tenant:b", "tb", []string{"USD"}},
}

var mScopes = []string{"tenant:a", "tenant:a/run:r1", "tenant:a/run:r2", "tenant:b"}

var mPriorities = []string{"critical", "high", "normal", "low", "bulk"}

type mBudget struct {
	slot   mSlot
	limits map[string]float64
	period string // none | daily
	tz     string
	mode   string
	floors map[string]float64
}

type mInstKey struct{ pattern, name, scope, period string }

type mUnit struct{ spent, reserved, adjust float64 }

type mHold struct {
	key   mInstKey
	units map[string]float64
}

type mReservation struct {
	id, root, scope string
	amounts         map[string]float64
	holds           []mHold
	status          string // open committed released expired
	expiresAt       time.Time
	closedAt        time.Time
}

type mKey struct {
	root string
	op   events.Op
	key  string
}

type mIdem struct {
	payload string
	at      time.Time
	seq     uint64 // the core's sequence of the event, set after the step
}

type refModel struct {
	window       time.Duration
	budgets      map[string]*mBudget // pattern \x00 name
	instances    map[mInstKey]map[string]*mUnit
	reservations map[string]*mReservation
	idem         map[mKey]*mIdem
}

func newModel() *refModel {
	return &refModel{window: DefaultIdempotencyWindow, budgets: map[string]*mBudget{},
		instances: map[mInstKey]map[string]*mUnit{}, reservations: map[string]*mReservation{}, idem: map[mKey]*mIdem{}}
}

type mApp struct {
	b   *mBudget
	key mInstKey
}

func mDepth(scope string) int { return strings.Count(scope, "/") + 1 }

// matches: same depth, each segment equal or the pattern's id is '*'.
func mMatches(pattern, scope string) bool {
	ps, ss := strings.Split(pattern, "/"), strings.Split(scope, "/")
	if len(ps) != len(ss) {
		return false
	}
	for i := range ps {
		pk, pid, _ := strings.Cut(ps[i], ":")
		sk, _, _ := strings.Cut(ss[i], ":")
		if ps[i] != ss[i] && !(pid == "*" && pk == sk) {
			return false
		}
	}
	return true
}

func (m *refModel) periodKey(b *mBudget, now time.Time) string {
	if b.period == "none" {
		return "none"
	}
	loc, err := time.LoadLocation(b.tz)
	if err != nil {
		panic(err)
	}
	return now.In(loc).Format("2006-01-02")
}

// applicable lists the instances that apply to scope: every prefix, root
// first; within a level by pattern, then name.
func (m *refModel) applicable(scope string, now time.Time) []mApp {
	segs := strings.Split(scope, "/")
	var out []mApp
	for d := 1; d <= len(segs); d++ {
		prefix := strings.Join(segs[:d], "/")
		var level []*mBudget
		for _, b := range m.budgets {
			if mDepth(b.slot.pattern) == d && mMatches(b.slot.pattern, prefix) {
				level = append(level, b)
			}
		}
		sort.Slice(level, func(i, j int) bool {
			if level[i].slot.pattern != level[j].slot.pattern {
				return level[i].slot.pattern < level[j].slot.pattern
			}
			return level[i].slot.name < level[j].slot.name
		})
		for _, b := range level {
			out = append(out, mApp{b: b, key: mInstKey{b.slot.pattern, b.slot.name, prefix, m.periodKey(b, now)}})
		}
	}
	return out
}

func (m *refModel) unit(k mInstKey, u string) *mUnit {
	in := m.instances[k]
	if in == nil {
		in = map[string]*mUnit{}
		m.instances[k] = in
	}
	us := in[u]
	if us == nil {
		us = &mUnit{}
		in[u] = us
	}
	return us
}

func (m *refModel) peek(k mInstKey, u string) mUnit {
	if us := m.instances[k][u]; us != nil {
		return *us
	}
	return mUnit{}
}

func (m *refModel) view(b *mBudget, k mInstKey) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s %s %s %s %s |", b.slot.name, b.slot.pattern, k.scope, k.period, b.mode)
	for _, u := range b.slot.units {
		us := m.peek(k, u)
		limit := b.limits[u] + us.adjust
		fmt.Fprintf(&sb, " %s %s/%s/%s/%s", u, mf(limit), mf(us.spent), mf(us.reserved), mf(limit-us.spent-us.reserved))
	}
	return sb.String()
}

func (m *refModel) views(apps []mApp) string {
	lines := make([]string, len(apps))
	for i, a := range apps {
		lines[i] = m.view(a.b, a.key)
	}
	return strings.Join(lines, "\n")
}

func (m *refModel) balance(scope string, now time.Time) []string {
	var out []string
	for _, a := range m.applicable(scope, now) {
		out = append(out, m.view(a.b, a.key))
	}
	return out
}

// holdApps turns a reservation's holds into the instances they are on.
func (m *refModel) holdApps(r *mReservation) []mApp {
	var out []mApp
	for _, h := range r.holds {
		b := m.budgets[h.key.pattern+"\x00"+h.key.name]
		out = append(out, mApp{b: b, key: h.key})
	}
	return out
}

func (m *refModel) forgotten(at, now time.Time) bool { return at.Before(now.Add(-m.window)) }

// exec answers a request as DESIGN §2 says, changing the model. It returns
// the answer's summary and, for a request that appends an event, the key
// entry the caller fills in with the event's sequence.
func (m *refModel) exec(q mReq, newID string, now time.Time) (string, *mIdem) {
	if q.op == events.OpDecide {
		return m.reserve(q, newID, now, true), nil
	}
	k := mKey{q.root, q.op, q.key}
	if e, ok := m.idem[k]; ok && !m.forgotten(e.at, now) {
		if e.payload == q.payload() {
			return fmt.Sprintf("duplicate %d", e.seq), nil
		}
		return "error IDEMPOTENCY_CONFLICT", nil
	}
	var ans string
	switch q.op {
	case events.OpBudgetSet:
		ans = m.budgetSet(q)
	case events.OpBudgetDelete:
		ans = m.budgetDelete(q)
	case events.OpBudgetAdjust:
		ans = m.adjust(q, now)
	case events.OpReserve:
		ans = m.reserve(q, newID, now, false)
	case events.OpCommit:
		ans = m.commit(q, now)
	case events.OpRelease:
		ans = m.release(q, now)
	case events.OpExtend:
		ans = m.extend(q, now)
	case events.OpCharge:
		ans = m.charge(q, now)
	default:
		panic(q.op)
	}
	if strings.HasPrefix(ans, "error ") {
		return ans, nil // refused: nothing recorded, the key stays unused
	}
	e := &mIdem{payload: q.payload(), at: now}
	m.idem[k] = e
	return ans, e
}

func (m *refModel) budgetSet(q mReq) string {
	s := mSlots[q.slot]
	b := &mBudget{slot: s, limits: maps.Clone(q.limits), period: "none", tz: "UTC", mode: "enforce", floors: map[string]float64{}}
	if q.period != "" {
		b.period = q.period
	}
	if q.tz != "" {
		b.tz = q.tz
	}
	if q.mode != "" {
		b.mode = q.mode
	}
	if q.floors != nil {
		b.floors = maps.Clone(q.floors)
	}
	m.budgets[s.pattern+"\x00"+s.name] = b // replacing keeps the instances …
	for k, in := range m.instances {
		if k.pattern != s.pattern || k.name != s.name {
			continue
		}
		for u, us := range in {
			// … and their adjustments, as long as limit + adjustments stays ≥ 0.
			if l, ok := b.limits[u]; ok && l+us.adjust < 0 {
				us.adjust = -l
			}
		}
	}
	return fmt.Sprintf("budget-set %s %s limits={%s} %s %s %s floors={%s}", s.pattern, s.name, mAmounts(b.limits), b.period, b.tz, b.mode, mAmounts(b.floors))
}

func (m *refModel) budgetDelete(q mReq) string {
	s := mSlots[q.slot]
	if _, ok := m.budgets[s.pattern+"\x00"+s.name]; !ok {
		return "error NOT_FOUND"
	}
	delete(m.budgets, s.pattern+"\x00"+s.name)
	for k := range m.instances {
		if k.pattern == s.pattern && k.name == s.name {
			delete(m.instances, k)
		}
	}
	// Deleted instances take their holds with them.
	for _, r := range m.reservations {
		r.holds = slices.DeleteFunc(r.holds, func(h mHold) bool { return h.key.pattern == s.pattern && h.key.name == s.name })
	}
	return fmt.Sprintf("budget-delete %s %s", s.pattern, s.name)
}

func (m *refModel) adjust(q mReq, now time.Time) string {
	// The budget of that name on the scope's own level: one on exactly that
	// scope, else the first pattern that matches it.
	var b *mBudget
	for _, a := range m.applicable(q.scope, now) {
		if a.b.slot.name != q.name || a.key.scope != q.scope {
			continue
		}
		if a.b.slot.pattern == q.scope {
			b = a.b
			break
		}
		if b == nil {
			b = a.b
		}
	}
	if b == nil {
		return "error NOT_FOUND"
	}
	k := mInstKey{b.slot.pattern, b.slot.name, q.scope, m.periodKey(b, now)}
	for _, u := range mSortedKeys(q.delta) {
		l, ok := b.limits[u]
		if !ok || l+m.peek(k, u).adjust+q.delta[u] < 0 {
			return "error INVALID_REQUEST"
		}
	}
	for u, d := range q.delta {
		m.unit(k, u).adjust += d
	}
	return fmt.Sprintf("budget-adjust %s %s %s %s delta={%s}\n%s", b.slot.name, b.slot.pattern, q.scope, k.period, mAmounts(q.delta), m.view(b, k))
}

func (m *refModel) reserve(q mReq, newID string, now time.Time, dry bool) string {
	apps := m.applicable(q.scope, now)
	opts := q.options
	if opts == nil {
		opts = []mOption{{amounts: q.amounts}}
	}
	prio := q.priority
	if prio == "" {
		prio = "normal"
	}
	var first string
	for i, o := range opts {
		var denial string
		var shadow []string
		for _, a := range apps {
			for _, u := range mSortedKeys(o.amounts) {
				limit, ok := a.b.limits[u]
				if !ok {
					continue // not limited: recorded, not checked
				}
				us := m.peek(a.key, u)
				limit += us.adjust
				floor := a.b.floors[prio]
				if prio == "critical" {
					floor = 0
				}
				capa := limit * (1 - floor)
				need := us.spent + us.reserved + o.amounts[u]
				if need <= capa {
					continue
				}
				avail := max(0, capa-us.spent-us.reserved)
				if a.b.mode == "shadow" {
					shadow = append(shadow, fmt.Sprintf("%s|%s|%s|%s|%s|%s", a.b.slot.name, a.key.scope, u, mf(o.amounts[u]), mf(avail), mf(need-capa)))
					continue
				}
				if denial == "" {
					code := "PRIORITY_FLOOR"
					if need > limit {
						code = "BUDGET_EXHAUSTED"
					}
					denial = fmt.Sprintf("%s %s %s %s %s requested=%s available=%s", code, a.b.slot.name, a.b.slot.pattern, a.key.scope, u, mf(o.amounts[u]), mf(avail))
				}
			}
		}
		if i == 0 {
			first = denial
		}
		if denial != "" {
			continue
		}
		// Granted: hold the option's amounts on every instance, shadow
		// included (a dry run takes them back after rendering).
		r := &mReservation{id: newID, root: q.root, scope: q.scope, amounts: o.amounts, status: "open", expiresAt: now.Add(q.ttl())}
		for _, a := range apps {
			h := mHold{key: a.key, units: map[string]float64{}}
			for u, v := range o.amounts {
				if _, ok := a.b.limits[u]; ok {
					h.units[u] = v
					m.unit(a.key, u).reserved += v
				}
			}
			r.holds = append(r.holds, h)
		}
		label, id := "", newID
		if q.options != nil {
			label = o.label
		}
		if dry {
			id = ""
		}
		ans := fmt.Sprintf("granted %s option=%d label=%q degraded=%v shadow=[%s]\n%s", id, i, label, i > 0, strings.Join(shadow, " "), m.views(apps))
		if dry {
			m.free(r)
		} else {
			m.reservations[newID] = r
		}
		return ans
	}
	label := ""
	if q.options != nil {
		label = q.options[0].label
	}
	return fmt.Sprintf("denied %s label=%q\n%s", first, label, m.views(apps))
}

func (m *refModel) reservationOf(q mReq, now time.Time) (*mReservation, string) {
	r, ok := m.reservations[q.id]
	if !ok || r.root != q.root || r.status != "open" && m.forgotten(r.closedAt, now) {
		return nil, "error NOT_FOUND"
	}
	return r, ""
}

func (m *refModel) commit(q mReq, now time.Time) string {
	r, e := m.reservationOf(q, now)
	if e != "" {
		return e
	}
	if r.status == "committed" || r.status == "released" {
		return "error RESERVATION_CLOSED"
	}
	late := r.status == "expired"
	released := map[string]float64{}
	if !late {
		for u, v := range r.amounts {
			released[u] = max(0, v-q.actual[u])
		}
	}
	overage := map[string]float64{}
	for u, v := range q.actual {
		overage[u] = max(0, v-r.amounts[u])
	}
	var over []string
	apps := m.holdApps(r)
	for i, a := range apps {
		held := r.holds[i].units
		units := map[string]bool{}
		for u := range held {
			units[u] = true
		}
		for u := range q.actual {
			if _, ok := a.b.limits[u]; ok {
				units[u] = true
			}
		}
		for _, u := range mSortedKeys(units) {
			us := m.unit(a.key, u)
			us.spent += q.actual[u]
			if !late {
				us.reserved -= held[u]
			}
			if q.actual[u] > 0 {
				if x := us.spent + us.reserved - (a.b.limits[u] + us.adjust); x > 0 {
					over = append(over, fmt.Sprintf("%s|%s|%s|%s", a.b.slot.name, a.key.scope, u, mf(x)))
				}
			}
		}
	}
	r.status, r.closedAt = "committed", now
	return fmt.Sprintf("commit %s charged={%s} released={%s} overage={%s} late=%v over=[%s]\n%s", r.id,
		mAmounts(q.actual), mAmounts(released), mAmounts(overage), late, strings.Join(over, " "), m.views(apps))
}

func (m *refModel) release(q mReq, now time.Time) string {
	r, e := m.reservationOf(q, now)
	if e != "" {
		return e
	}
	switch r.status {
	case "committed", "released":
		return "error RESERVATION_CLOSED"
	case "expired":
		r.status, r.closedAt = "released", now
		return fmt.Sprintf("release %s released={} already_expired=true\n%s", r.id, m.views(m.holdApps(r)))
	}
	m.free(r)
	r.status, r.closedAt = "released", now
	return fmt.Sprintf("release %s released={%s} already_expired=false\n%s", r.id, mAmounts(r.amounts), m.views(m.holdApps(r)))
}

func (m *refModel) free(r *mReservation) {
	for _, h := range r.holds {
		for u, v := range h.units {
			m.unit(h.key, u).reserved -= v
		}
	}
}

func (m *refModel) extend(q mReq, now time.Time) string {
	r, e := m.reservationOf(q, now)
	if e != "" {
		return e
	}
	if r.status != "open" || !now.Before(r.expiresAt) {
		return "error RESERVATION_CLOSED"
	}
	r.expiresAt = now.Add(time.Duration(q.ttlMS) * time.Millisecond)
	return fmt.Sprintf("extend %s expires=%s", r.id, r.expiresAt.Format(time.RFC3339Nano))
}

func (m *refModel) charge(q mReq, now time.Time) string {
	apps := m.applicable(q.scope, now)
	var over []string
	for _, a := range apps {
		for _, u := range mSortedKeys(q.amounts) {
			if _, ok := a.b.limits[u]; !ok {
				continue
			}
			us := m.unit(a.key, u)
			us.spent += q.amounts[u]
			if q.amounts[u] > 0 {
				if x := us.spent + us.reserved - (a.b.limits[u] + us.adjust); x > 0 {
					over = append(over, fmt.Sprintf("%s|%s|%s|%s", a.b.slot.name, a.key.scope, u, mf(x)))
				}
			}
		}
	}
	return fmt.Sprintf("charge %s charged={%s} over=[%s]\n%s", q.scope, mAmounts(q.amounts), strings.Join(over, " "), m.views(apps))
}

// expire expires every open reservation whose expiry has come.
func (m *refModel) expire(now time.Time) int {
	n := 0
	for _, r := range m.reservations {
		if r.status == "open" && !r.expiresAt.After(now) {
			m.free(r)
			r.status, r.closedAt = "expired", now
			n++
		}
	}
	return n
}

// --- requests ----------------------------------------------------------

type mOption struct {
	label   string
	amounts map[string]float64
}

// mReq is one request as the model sees it; body renders it as JSON.
type mReq struct {
	op       events.Op
	root     string
	key      string
	scope    string
	amounts  map[string]float64
	options  []mOption
	priority string // "" omitted
	ttlMS    int64  // 0 omitted (reserve)
	id       string
	actual   map[string]float64
	slot     int
	limits   map[string]float64
	period   string // "" omitted
	tz       string
	mode     string
	floors   map[string]float64 // nil omitted
	name     string
	delta    map[string]float64
}

func (q mReq) ttl() time.Duration {
	if q.ttlMS == 0 {
		return events.DefaultTTL
	}
	return time.Duration(q.ttlMS) * time.Millisecond
}

// payload is the model's own notion of "the same parsed request": the
// canonical body.
func (q mReq) payload() string { return q.body(mStyle{}) }

// style varies what must not matter: member order, white space and
// amount spelling.
type mStyle struct {
	reverse, spaces, zeros bool
}

func (q mReq) body(st mStyle) string {
	type member struct{ name, value string }
	var ms []member
	add := func(name, value string) { ms = append(ms, member{name, value}) }
	amts := func(m map[string]float64) string {
		keys := mSortedKeys(m)
		if st.reverse {
			slices.Reverse(keys)
		}
		parts := make([]string, len(keys))
		for i, k := range keys {
			v := mf(m[k])
			if st.zeros {
				if strings.Contains(v, ".") {
					v += "00"
				} else {
					v += ".0"
				}
			}
			parts[i] = strconv.Quote(k) + ":" + strconv.Quote(v)
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	if q.op != events.OpDecide || q.key != "" {
		add("idempotency_key", strconv.Quote(q.key))
	}
	switch q.op {
	case events.OpReserve, events.OpDecide:
		add("scope", strconv.Quote(q.scope))
		if q.options != nil {
			var os []string
			for _, o := range q.options {
				os = append(os, `{"label":`+strconv.Quote(o.label)+`,"amounts":`+amts(o.amounts)+`}`)
			}
			add("options", "["+strings.Join(os, ",")+"]")
		} else {
			add("amounts", amts(q.amounts))
		}
		if q.priority != "" {
			add("priority", strconv.Quote(q.priority))
		}
		if q.ttlMS != 0 {
			add("ttl_ms", strconv.FormatInt(q.ttlMS, 10))
		}
	case events.OpCommit:
		add("reservation_id", strconv.Quote(q.id))
		add("actual", amts(q.actual))
	case events.OpRelease:
		add("reservation_id", strconv.Quote(q.id))
	case events.OpExtend:
		add("reservation_id", strconv.Quote(q.id))
		add("ttl_ms", strconv.FormatInt(q.ttlMS, 10))
	case events.OpCharge:
		add("scope", strconv.Quote(q.scope))
		add("amounts", amts(q.amounts))
	case events.OpBudgetSet:
		s := mSlots[q.slot]
		add("scope", strconv.Quote(s.pattern))
		add("name", strconv.Quote(s.name))
		add("limits", amts(q.limits))
		if q.period != "" {
			add("period", strconv.Quote(q.period))
		}
		if q.tz != "" {
			add("timezone", strconv.Quote(q.tz))
		}
		if q.mode != "" {
			add("mode", strconv.Quote(q.mode))
		}
		if q.floors != nil {
			add("priority_floors", amts(q.floors))
		}
	case events.OpBudgetDelete:
		s := mSlots[q.slot]
		add("scope", strconv.Quote(s.pattern))
		add("name", strconv.Quote(s.name))
	case events.OpBudgetAdjust:
		add("scope", strconv.Quote(q.scope))
		add("name", strconv.Quote(q.name))
		add("delta", amts(q.delta))
		add("reason", `"model"`)
	}
	if st.reverse {
		slices.Reverse(ms)
	}
	sep := ","
	colon := ":"
	if st.spaces {
		sep, colon = ",\n  ", " : "
	}
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = strconv.Quote(m.name) + colon + m.value
	}
	return "{" + strings.Join(parts, sep) + "}"
}

// f renders a model amount canonically, like events.Amount.String.
func mf(x float64) string {
	if x == 0 {
		return "0"
	}
	return strconv.FormatFloat(x, 'f', -1, 64)
}

func mAmounts[V float64 | events.Amount](m map[string]V) string {
	parts := make([]string, 0, len(m))
	for _, u := range mSortedKeys(m) {
		switch v := any(m[u]).(type) {
		case float64:
			parts = append(parts, u+"="+mf(v))
		case events.Amount:
			parts = append(parts, u+"="+v.String())
		}
	}
	return strings.Join(parts, " ")
}

func mSortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// --- the core's answers, summarised like the model's -------------------

func modelSummary(d Decision) string {
	switch {
	case d.Err != nil:
		return "error " + string(d.Err.Code)
	case d.Duplicate > 0:
		return fmt.Sprintf("duplicate %d", d.Duplicate)
	case d.Result != nil:
		return modelSummaryOf(d.Result)
	case len(d.Events) == 0:
		return "nothing"
	}
	res, ok := events.ResultOf(d.Events[0], events.EventRef{})
	if !ok {
		return "no answer for " + string(d.Events[0].Type)
	}
	return modelSummaryOf(res)
}

func modelSummaryOf(res any) string {
	views := func(vs []events.InstanceView) string { return strings.Join(renderViews(vs), "\n") }
	switch r := res.(type) {
	case events.ReserveResult:
		if r.Decision == events.DecisionDenied {
			d := r.Denial
			return fmt.Sprintf("denied %s %s %s %s %s requested=%s available=%s label=%q\n%s", d.Code, d.Budget, d.Pattern, d.Scope, d.Unit,
				d.Requested, d.Available, r.Label, views(r.Instances))
		}
		var sh []string
		for _, s := range r.ShadowDenials {
			sh = append(sh, fmt.Sprintf("%s|%s|%s|%s|%s|%s", s.Budget, s.Scope, s.Unit, s.Requested, s.Available, s.Overage))
		}
		return fmt.Sprintf("granted %s option=%d label=%q degraded=%v shadow=[%s]\n%s", r.ReservationID, r.Option, r.Label, r.Degraded,
			strings.Join(sh, " "), views(r.Instances))
	case events.CommitResult:
		return fmt.Sprintf("commit %s charged={%s} released={%s} overage={%s} late=%v over=[%s]\n%s", r.ReservationID,
			mAmounts(r.Charged), mAmounts(r.Released), mAmounts(r.Overage), r.Late, mOverLimits(r.OverLimit), views(r.Instances))
	case events.ReleaseResult:
		return fmt.Sprintf("release %s released={%s} already_expired=%v\n%s", r.ReservationID, mAmounts(r.Released), r.AlreadyExpired, views(r.Instances))
	case events.ExtendResult:
		return fmt.Sprintf("extend %s expires=%s", r.ReservationID, r.ExpiresAt.Format(time.RFC3339Nano))
	case events.ChargeResult:
		return fmt.Sprintf("charge %s charged={%s} over=[%s]\n%s", r.Scope, mAmounts(r.Charged), mOverLimits(r.OverLimit), views(r.Instances))
	case events.BudgetResult:
		b := r.Budget
		floors := map[string]events.Amount{}
		for p, v := range b.PriorityFloors {
			floors[string(p)] = v
		}
		return fmt.Sprintf("budget-set %s %s limits={%s} %s %s %s floors={%s}", b.Scope, b.Name, mAmounts(b.Limits), b.Period, b.Timezone, b.Mode, mAmounts(floors))
	case events.BudgetDeleteResult:
		return fmt.Sprintf("budget-delete %s %s", r.Scope, r.Name)
	case events.BudgetAdjustResult:
		delta := map[string]events.Amount{}
		for u, v := range r.Delta {
			delta[u] = v.Amount
		}
		return fmt.Sprintf("budget-adjust %s %s %s %s delta={%s}\n%s", r.Budget, r.Instance.Pattern, r.Scope, r.Period, mAmounts(delta), views([]events.InstanceView{r.Instance}))
	}
	return fmt.Sprintf("unexpected %T", res)
}

func mOverLimits(os []events.OverLimit) string {
	var out []string
	for _, o := range os {
		out = append(out, fmt.Sprintf("%s|%s|%s|%s", o.Budget, o.Scope, o.Unit, o.Over))
	}
	return strings.Join(out, " ")
}

// --- the machine: the core, a replica, the model -----------------------

type modelMachine struct {
	cfg      Config
	live     *State
	replica  *State // fed every event through Encode/Decode
	log      []events.Event
	answers  map[uint64]string // seq → the JSON answer of a request-driven event
	now      time.Time
	m        *refModel
	hist     []mReq // every mutating request sent
	ids      int
	keys     int
	compared uint64 // the last sequence at which snapshots were compared
	// clone is a Clone of live taken at the last comparison, with the
	// snapshot it had then: later steps on live must not change it.
	clone     *State
	cloneSnap string
}

func newMachine() *modelMachine {
	cfg := Config{Partition: 1}
	return &modelMachine{cfg: cfg, live: New(cfg), replica: New(cfg), answers: map[uint64]string{},
		now: time.Date(2026, 11, 28, 20, 0, 0, 0, time.UTC), m: newModel()}
}

func (mc *modelMachine) newKey() string {
	mc.keys++
	return fmt.Sprintf("k%d", mc.keys)
}

// do sends one request to the model and to the core and compares answers.
func (mc *modelMachine) do(t *rapid.T, q mReq, st mStyle) {
	body := q.body(st)
	req, err := events.ParseRequest(q.op, []byte(body))
	if err != nil {
		t.Fatalf("the model built an invalid request %s: %v", body, err)
	}
	mc.ids++
	newID := fmt.Sprintf("R%05d", mc.ids)
	want, entry := mc.m.exec(q, newID, mc.now)
	first := mc.live.LastSeq() + 1
	cmd := Command{Op: q.op, Root: q.root, Request: req, NewID: newID}
	if q.op.Mutating() && rapid.Bool().Draw(t, "prehashed") {
		cmd.Hash = events.RequestHash(q.op, req) // as the service's subscription goroutine does
	}
	d := mc.live.Step(cmd, mc.now)
	mc.appendChecked(t, d, first)
	got := modelSummary(d)
	t.Logf("%s %s\n  → %s", q.op, body, strings.ReplaceAll(got, "\n", "\n    "))
	if got != want {
		t.Fatalf("%s %s: the core and the model disagree (-model +core):\n%s", q.op, body, cmp.Diff(strings.Split(want, "\n"), strings.Split(got, "\n")))
	}
	if d.Duplicate > 0 {
		// The retry's answer is the original answer, event ref included.
		res, _ := events.ResultOf(mc.log[d.Duplicate-1], events.EventRef{Partition: mc.cfg.Partition, Seq: d.Duplicate})
		if orig := mc.answers[d.Duplicate]; jsonOf(res) != orig {
			t.Fatalf("retry answer differs:\n%s\n%s", orig, jsonOf(res))
		}
	}
	if entry != nil {
		entry.seq = first
	}
	if q.op.Mutating() {
		mc.hist = append(mc.hist, q)
	}
	if q.op == events.OpReserve && len(d.Events) > 0 {
		mc.checkGrant(t, d)
	}
}

// appendChecked feeds the replica and the log with a decision's events.
func (mc *modelMachine) appendChecked(t *rapid.T, d Decision, first uint64) {
	for i, ev := range d.Events {
		seq := first + uint64(i)
		b, err := events.Encode(&ev)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		dec, err := events.Decode(b)
		if err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		mc.replica.Apply(seq, dec)
		// The decoded copy: with reused views the next decision
		// overwrites ev's.
		mc.log = append(mc.log, dec)
		if res, ok := events.ResultOf(ev, events.EventRef{Partition: mc.cfg.Partition, Seq: seq}); ok {
			mc.answers[seq] = jsonOf(res)
		}
	}
}

// checkGrant: a grant never leaves an enforce instance above its capacity,
// limit × (1 − floor), on a unit it reserved (commits and charges may go
// over; grants may not). Floors come from the model's budgets.
func (mc *modelMachine) checkGrant(t *rapid.T, d Decision) {
	g, ok := d.Events[0].Data.(*events.ReservationGranted)
	if !ok {
		return
	}
	num := func(a events.Amount) float64 {
		x, err := strconv.ParseFloat(a.String(), 64)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	for _, v := range g.Instances {
		if v.Mode != events.ModeEnforce {
			continue
		}
		floor := mc.m.budgets[v.Pattern+"\x00"+v.Budget].floors[string(g.Priority)]
		if g.Priority == events.PriorityCritical {
			floor = 0
		}
		for _, e := range v.Units {
			if _, asked := g.Amounts[e.Unit]; !asked {
				continue
			}
			if used, capa := num(e.Spent)+num(e.Reserved), num(e.Limit)*(1-floor); used > capa {
				t.Fatalf("grant %s left %s %s %s at %s+%s, above %s × (1 − %s)", g.ReservationID, v.Budget, v.Scope, e.Unit, e.Spent, e.Reserved, e.Limit, mf(floor))
			}
		}
	}
}

func (mc *modelMachine) check(t *rapid.T) {
	checkFlat(t, mc.live)
	checkFlat(t, mc.replica)
	for _, scope := range mScopes {
		root := events.Root(scope)
		req := &events.BalanceRequest{Scope: scope}
		d := mc.live.Decide(Command{Op: events.OpBalance, Root: root, Request: req}, mc.now)
		if d.Err != nil {
			t.Fatalf("balance %s: %v", scope, d.Err)
		}
		got := renderViews(d.Result.(events.BalanceResult).Instances)
		if diff := cmp.Diff(mc.m.balance(scope, mc.now), got, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("balance of %s (-model +core):\n%s", scope, diff)
		}
	}
	// Only Apply changes a State: compare snapshots when events were appended.
	if seq := mc.live.LastSeq(); seq != mc.compared || seq == 0 {
		mc.compared = seq
		want := string(mc.live.Snapshot())
		// Snapshot writes the retained keys straight from the fifos: the
		// same bytes as encoding the canonical form.
		if ref := string(appendSnapshot(nil, mc.live.canonical())); ref != want {
			t.Fatalf("Snapshot differs from the canonical form's encoding:\n%s", snapshotDiff([]byte(ref), []byte(want)))
		}
		if got := string(mc.replica.Snapshot()); got != want {
			t.Fatalf("the replayed state differs from the live one:\n%s", snapshotDiff([]byte(want), []byte(got)))
		}
		if mc.clone != nil {
			if got := string(mc.clone.Snapshot()); got != mc.cloneSnap {
				t.Fatalf("a clone changed with the state it was taken from:\n%s", snapshotDiff([]byte(mc.cloneSnap), []byte(got)))
			}
		}
		// Half the time into the previous clone's memory, as the service's
		// snapshots do: nothing of it may show through.
		if rapid.Bool().Draw(t, "clone into the previous clone") {
			mc.clone = mc.live.CloneInto(mc.clone)
		} else {
			mc.clone = mc.live.Clone()
		}
		mc.cloneSnap = want
		if got := string(mc.clone.Snapshot()); got != want {
			t.Fatalf("a clone differs from its original:\n%s", snapshotDiff([]byte(want), []byte(got)))
		}
	}
}

// --- generators --------------------------------------------------------

func mGenUSD(t *rapid.T, label string, maxQuarters int) float64 {
	return float64(rapid.IntRange(0, maxQuarters).Draw(t, label)) / 4
}

func mGenTokens(t *rapid.T, label string, max50 int) float64 {
	return float64(rapid.IntRange(0, max50).Draw(t, label) * 50)
}

func mGenAmounts(t *rapid.T, label string) map[string]float64 {
	m := map[string]float64{}
	switch rapid.IntRange(0, 2).Draw(t, label+"-units") {
	case 0:
		m["USD"] = mGenUSD(t, label+"-usd", 16)
	case 1:
		m["tokens"] = mGenTokens(t, label+"-tokens", 20)
	default:
		m["USD"] = mGenUSD(t, label+"-usd", 16)
		m["tokens"] = mGenTokens(t, label+"-tokens", 20)
	}
	return m
}

func mGenLimits(t *rapid.T, s mSlot) map[string]float64 {
	m := map[string]float64{}
	for _, u := range s.units {
		if u == "USD" {
			m[u] = mGenUSD(t, "limit-usd", 40)
		} else {
			m[u] = mGenTokens(t, "limit-tokens", 40)
		}
	}
	return m
}

var mFloorSets = []map[string]float64{
	nil,
	{},
	{"normal": 0.25, "low": 0.5, "bulk": 0.75},
	{"high": 0.25},
	{"critical": 0, "bulk": 1},
}

// --- the test ----------------------------------------------------------

func TestModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		mc := newMachine()
		// The service's decision loop renders views into a reused buffer;
		// the live state does so in half the runs.
		reuse := rapid.Bool().Draw(t, "reuse views")
		mc.live.SetReuseViews(reuse)
		actions := map[string]func(*rapid.T){
			"": mc.check,
			"budget-set": func(t *rapid.T) {
				i := rapid.IntRange(0, len(mSlots)-1).Draw(t, "slot")
				q := mReq{op: events.OpBudgetSet, root: events.Root(mSlots[i].pattern), key: mc.newKey(), slot: i, limits: mGenLimits(t, mSlots[i]),
					period: rapid.SampledFrom([]string{"", "none", "daily"}).Draw(t, "period"),
					mode:   rapid.SampledFrom([]string{"", "enforce", "shadow"}).Draw(t, "mode"),
					floors: mFloorSets[rapid.IntRange(0, len(mFloorSets)-1).Draw(t, "floors")]}
				if q.period == "daily" {
					q.tz = rapid.SampledFrom([]string{"", "UTC", "Asia/Tokyo"}).Draw(t, "tz")
				}
				mc.do(t, q, mStyle{})
			},
			"budget-delete": func(t *rapid.T) {
				i := mc.pickSlot(t)
				mc.do(t, mReq{op: events.OpBudgetDelete, root: events.Root(mSlots[i].pattern), key: mc.newKey(), slot: i}, mStyle{})
			},
			"budget-adjust": func(t *rapid.T) {
				// Mostly an instance of a defined budget, sometimes anything.
				i := mc.pickSlot(t)
				var scopes []string
				for _, sc := range mScopes {
					if mMatches(mSlots[i].pattern, sc) {
						scopes = append(scopes, sc)
					}
				}
				scope := rapid.SampledFrom(scopes).Draw(t, "scope")
				name := mSlots[i].name
				units := mSlots[i].units
				if rapid.IntRange(0, 4).Draw(t, "anything") == 0 {
					scope = rapid.SampledFrom(mScopes).Draw(t, "any-scope")
					name = rapid.SampledFrom([]string{"ta", "run-cap", "alt", "tb"}).Draw(t, "any-name")
					units = rapid.SampledFrom([][]string{{"USD"}, {"tokens"}, {"USD", "tokens"}}).Draw(t, "any-units")
				}
				delta := map[string]float64{}
				for _, u := range units {
					if u == "USD" {
						delta[u] = float64(rapid.IntRange(-20, 20).Draw(t, "delta-usd")) / 4
					} else {
						delta[u] = float64(rapid.IntRange(-20, 20).Draw(t, "delta-tokens") * 50)
					}
				}
				mc.do(t, mReq{op: events.OpBudgetAdjust, root: events.Root(scope), key: mc.newKey(), scope: scope, name: name, delta: delta}, mStyle{})
			},
			"reserve": func(t *rapid.T) { mc.do(t, mc.genReserve(t, events.OpReserve), mStyle{}) },
			"decide":  func(t *rapid.T) { mc.do(t, mc.genReserve(t, events.OpDecide), mStyle{}) },
			"commit": func(t *rapid.T) {
				q := mc.pickReservation(t, events.OpCommit)
				q.actual = map[string]float64{}
				if r := mc.m.reservations[q.id]; r != nil {
					for _, u := range mSortedKeys(r.amounts) {
						step := mGenUSD(t, "actual-diff", 8)
						if u == "tokens" {
							step = mGenTokens(t, "actual-diff", 8)
						}
						switch rapid.IntRange(0, 3).Draw(t, "actual-"+u) {
						case 0:
							q.actual[u] = r.amounts[u]
						case 1:
							q.actual[u] = max(0, r.amounts[u]-step)
						case 2:
							q.actual[u] = r.amounts[u] + step
						}
					}
				}
				if rapid.IntRange(0, 4).Draw(t, "extra-unit") == 0 {
					if _, ok := q.actual["tokens"]; !ok {
						q.actual["tokens"] = mGenTokens(t, "extra-tokens", 8)
					}
				}
				mc.do(t, q, mStyle{})
			},
			"release": func(t *rapid.T) { mc.do(t, mc.pickReservation(t, events.OpRelease), mStyle{}) },
			"extend": func(t *rapid.T) {
				q := mc.pickReservation(t, events.OpExtend)
				q.ttlMS = rapid.SampledFrom([]int64{1000, 5000, 60000, 3600000}).Draw(t, "ttl")
				mc.do(t, q, mStyle{})
			},
			"charge": func(t *rapid.T) {
				scope := rapid.SampledFrom(mScopes).Draw(t, "scope")
				mc.do(t, mReq{op: events.OpCharge, root: events.Root(scope), key: mc.newKey(), scope: scope, amounts: mGenAmounts(t, "charge")}, mStyle{})
			},
			"expire": func(t *rapid.T) {
				d := rapid.SampledFrom([]time.Duration{400 * time.Millisecond, time.Second, 5 * time.Second, 61 * time.Second,
					time.Hour, 7 * time.Hour, 24*time.Hour + time.Second}).Draw(t, "advance")
				mc.now = mc.now.Add(d)
				want := mc.m.expire(mc.now)
				got := 0
				for {
					dec := mc.live.Decide(Command{Op: OpExpire}, mc.now)
					if len(dec.Events) == 0 {
						break
					}
					first := mc.live.LastSeq() + 1
					for i, ev := range dec.Events {
						if ev.Type != events.TypeReservationExpired {
							t.Fatalf("a tick appended %s", ev.Type)
						}
						mc.live.Apply(first+uint64(i), ev)
					}
					mc.appendChecked(t, dec, first)
					got += len(dec.Events)
				}
				t.Logf("advance %s, %d expired", d, got)
				if got != want {
					t.Fatalf("advance %s: the core expired %d reservations, the model %d", d, got, want)
				}
				if at, ok := mc.live.NextExpiry(); ok && !at.After(mc.now) {
					t.Fatalf("NextExpiry %s is due at %s after the tick", at, mc.now)
				}
			},
			"retry": func(t *rapid.T) {
				if len(mc.hist) == 0 {
					t.Skip("nothing to retry")
				}
				q := rapid.SampledFrom(mc.hist).Draw(t, "request")
				st := mStyle{reverse: rapid.Bool().Draw(t, "reverse"), spaces: rapid.Bool().Draw(t, "spaces"), zeros: rapid.Bool().Draw(t, "zeros")}
				mc.do(t, q, st)
			},
			"conflict": func(t *rapid.T) {
				if len(mc.hist) == 0 {
					t.Skip("nothing to retry")
				}
				q := rapid.SampledFrom(mc.hist).Draw(t, "request")
				mc.do(t, mc.perturb(q), mStyle{})
			},
			"restart": func(t *rapid.T) {
				before := string(mc.live.Snapshot())
				switch rapid.IntRange(0, 2).Draw(t, "from") {
				case 0: // a clone carries on as the live state
					mc.live = mc.live.Clone()
				case 1:
					s, err := Restore(mc.cfg, []byte(before))
					if err != nil {
						t.Fatal(err)
					}
					mc.live = s
				default:
					mc.live = New(mc.cfg)
					for i, ev := range mc.log {
						b, err := events.Encode(&ev)
						if err != nil {
							t.Fatal(err)
						}
						dec, err := events.Decode(b)
						if err != nil {
							t.Fatal(err)
						}
						mc.live.Apply(uint64(i+1), dec)
					}
				}
				mc.live.SetReuseViews(reuse)
				if after := string(mc.live.Snapshot()); after != before {
					t.Fatalf("restart changed the state:\n%s", snapshotDiff([]byte(before), []byte(after)))
				}
			},
		}
		// Weights: the common operations appear under several names.
		for name, extra := range map[string]int{"reserve": 2, "commit": 1, "budget-set": 1, "expire": 1, "retry": 1} {
			for i := range extra {
				actions[fmt.Sprintf("%s-%d", name, i+2)] = actions[name]
			}
		}
		// Several Repeat rounds make longer histories (clock moves of a day
		// and more, forgotten keys) than one round of the default length.
		for range 2 {
			t.Repeat(actions)
		}
	})
}

// pickSlot picks a defined budget most of the time, any slot otherwise.
func (mc *modelMachine) pickSlot(t *rapid.T) int {
	var defined []int
	for i, s := range mSlots {
		if _, ok := mc.m.budgets[s.pattern+"\x00"+s.name]; ok {
			defined = append(defined, i)
		}
	}
	if len(defined) > 0 && rapid.IntRange(0, 4).Draw(t, "undefined") > 0 {
		return rapid.SampledFrom(defined).Draw(t, "slot")
	}
	return rapid.IntRange(0, len(mSlots)-1).Draw(t, "slot")
}

func (mc *modelMachine) genReserve(t *rapid.T, op events.Op) mReq {
	scope := rapid.SampledFrom(mScopes).Draw(t, "scope")
	q := mReq{op: op, root: events.Root(scope), scope: scope,
		priority: rapid.SampledFrom(append([]string{""}, mPriorities...)).Draw(t, "priority"),
		ttlMS:    rapid.SampledFrom([]int64{0, 1000, 5000, 60000, 3600000}).Draw(t, "ttl")}
	if op == events.OpReserve {
		q.key = mc.newKey()
	} else {
		q.ttlMS = 0
	}
	if rapid.Bool().Draw(t, "with-options") {
		n := rapid.IntRange(1, 3).Draw(t, "options")
		for i := range n {
			q.options = append(q.options, mOption{label: fmt.Sprintf("o%d", i), amounts: mGenAmounts(t, "option")})
		}
	} else {
		q.amounts = mGenAmounts(t, "amounts")
	}
	return q
}

// pickReservation addresses a known reservation (any status), sometimes
// from another root or an unknown one.
func (mc *modelMachine) pickReservation(t *rapid.T, op events.Op) mReq {
	ids := mSortedKeys(mc.m.reservations)
	q := mReq{op: op, key: mc.newKey(), root: "tenant:a", id: "nope"}
	if len(ids) > 0 && rapid.IntRange(0, 9).Draw(t, "unknown") > 0 {
		q.id = rapid.SampledFrom(ids).Draw(t, "id")
		q.root = mc.m.reservations[q.id].root
		if rapid.IntRange(0, 9).Draw(t, "other-root") == 0 {
			q.root = map[string]string{"tenant:a": "tenant:b", "tenant:b": "tenant:a"}[q.root]
		}
	}
	return q
}

// perturb changes a request's payload, keeping its key.
func (mc *modelMachine) perturb(q mReq) mReq {
	q = mClone(q)
	switch q.op {
	case events.OpReserve:
		if q.options != nil {
			q.options = q.options[:len(q.options)-1]
			if len(q.options) == 0 {
				q.options, q.amounts = nil, map[string]float64{"USD": 0.25}
			}
		} else if q.priority == "" {
			q.priority = "normal" // an explicit default is another payload
		} else {
			q.amounts["USD"] += 0.25
		}
	case events.OpCommit:
		q.actual["USD"] += 0.25
	case events.OpRelease:
		q.id += "x"
	case events.OpExtend:
		q.ttlMS += 1000
	case events.OpCharge:
		q.amounts["tokens"] += 50
	case events.OpBudgetSet:
		q.limits[mSlots[q.slot].units[0]] += 0.25
	case events.OpBudgetDelete:
		q.slot = (q.slot + 1) % len(mSlots)
		q.root = events.Root(mSlots[q.slot].pattern)
	case events.OpBudgetAdjust:
		q.delta["USD"] += 0.25
	}
	return q
}

func mClone(q mReq) mReq {
	q.amounts = maps.Clone(q.amounts)
	q.actual = maps.Clone(q.actual)
	q.limits = maps.Clone(q.limits)
	q.delta = maps.Clone(q.delta)
	q.options = slices.Clone(q.options)
	return q
}
