package enforcer

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tallyledger/tally/events"
)

// harness drives a State through Step with a controllable clock.
type harness struct {
	t    testing.TB
	s    *State
	now  time.Time
	n    int
	keys int
	log  []events.Event
}

func newHarness(t testing.TB) *harness {
	return newHarnessCfg(t, Config{Partition: 3})
}

func newHarnessCfg(t testing.TB, cfg Config) *harness {
	return &harness{t: t, s: New(cfg), now: time.Date(2026, 11, 28, 21, 0, 0, 0, time.UTC)}
}

func (h *harness) step(op events.Op, root, body string) Decision {
	h.t.Helper()
	req, err := events.ParseRequest(op, []byte(body))
	if err != nil {
		h.t.Fatalf("%s %s: %v", op, body, err)
	}
	h.n++
	d := h.s.Step(Command{Op: op, Root: root, Request: req, NewID: fmt.Sprintf("R%04d", h.n)}, h.now)
	h.record(d)
	return d
}

func (h *harness) tick() Decision {
	h.t.Helper()
	d := h.s.Step(Command{Op: OpExpire}, h.now)
	h.record(d)
	return d
}

// record logs a decision's events, checking that each survives the trip
// through the stream encoding unchanged: an event replay cannot read would
// stop the partition.
func (h *harness) record(d Decision) {
	h.t.Helper()
	for _, ev := range d.Events {
		b, err := events.Encode(&ev)
		if err != nil {
			h.t.Fatalf("encode %s: %v", ev.Type, err)
		}
		dec, err := events.Decode(b)
		if err != nil {
			h.t.Fatalf("decode %s: %v\n%s", ev.Type, err, b)
		}
		b2, err := events.Encode(&dec)
		if err != nil || string(b2) != string(b) {
			h.t.Fatalf("re-encode %s differs (%v):\n%s\n%s", ev.Type, err, b, b2)
		}
	}
	h.log = append(h.log, d.Events...)
}

// checked returns a harness that, when the test ends, checks that
// replaying its log reproduces the live state.
func checked(t *testing.T) *harness {
	h := newHarness(t)
	t.Cleanup(func() {
		if !t.Failed() {
			h.checkReplay()
		}
	})
	return h
}

// key returns a fresh idempotency key.
func (h *harness) key(prefix string) string {
	h.keys++
	return fmt.Sprintf("%s%d", prefix, h.keys)
}

// set creates or replaces a budget; fields are the JSON members after
// scope and name (`"limits":{"USD":"10"},"period":"monthly"`).
func (h *harness) set(scope, name, fields string) events.BudgetResult {
	h.t.Helper()
	body := fmt.Sprintf(`{"idempotency_key":%q,"scope":%q,"name":%q,%s}`, h.key("b"), scope, name, fields)
	return h.ok(events.OpBudgetSet, events.Root(scope), body).(events.BudgetResult)
}

// res reserves amounts (a JSON object) on scope; extra are more JSON
// members (`"priority":"high"`), or "".
func (h *harness) res(scope, amounts, extra string) events.ReserveResult {
	h.t.Helper()
	return h.reserve(events.Root(scope), h.reserveBody(scope, amounts, extra))
}

func (h *harness) reserveBody(scope, amounts, extra string) string {
	body := fmt.Sprintf(`{"idempotency_key":%q,"scope":%q,"amounts":%s`, h.key("r"), scope, amounts)
	if extra != "" {
		body += "," + extra
	}
	return body + "}"
}

// charge records usage on scope.
func (h *harness) charge(scope, amounts string) events.ChargeResult {
	h.t.Helper()
	body := fmt.Sprintf(`{"idempotency_key":%q,"scope":%q,"amounts":%s}`, h.key("c"), scope, amounts)
	return h.ok(events.OpCharge, events.Root(scope), body).(events.ChargeResult)
}

// commit commits actual (a JSON object) on reservation id of root.
func (h *harness) commit(root, id, actual string) events.CommitResult {
	h.t.Helper()
	body := fmt.Sprintf(`{"idempotency_key":%q,"reservation_id":%q,"actual":%s}`, h.key("k"), id, actual)
	return h.ok(events.OpCommit, root, body).(events.CommitResult)
}

// release releases reservation id of root.
func (h *harness) release(root, id string) events.ReleaseResult {
	h.t.Helper()
	body := fmt.Sprintf(`{"idempotency_key":%q,"reservation_id":%q}`, h.key("l"), id)
	return h.ok(events.OpRelease, root, body).(events.ReleaseResult)
}

// advance moves the clock.
func (h *harness) advance(d time.Duration) { h.now = h.now.Add(d) }

// ok steps a request that must not be an error and returns its answer.
func (h *harness) ok(op events.Op, root, body string) any {
	h.t.Helper()
	return mustResult(h.t, h.step(op, root, body))
}

// reserve steps a reserve (or decide) and returns its answer.
func (h *harness) reserve(root, body string) events.ReserveResult {
	h.t.Helper()
	return h.ok(events.OpReserve, root, body).(events.ReserveResult)
}

// fail steps a request that must be an error answer and returns its code;
// an error appends nothing.
func (h *harness) fail(op events.Op, root, body string) events.Code {
	h.t.Helper()
	seq := h.s.LastSeq()
	d := h.step(op, root, body)
	if d.Err == nil {
		h.t.Fatalf("%s %s: want an error, got %s", op, body, describe(d))
	}
	if len(d.Events) != 0 || d.Duplicate != 0 || h.s.LastSeq() != seq {
		h.t.Fatalf("%s: an error answer recorded something: %+v", op, d)
	}
	return d.Err.Code
}

// balance renders the balances of every instance that applies to scope.
func (h *harness) balance(root, scope string) []string {
	h.t.Helper()
	res := h.ok(events.OpBalance, root, `{"scope":"`+scope+`"}`).(events.BalanceResult)
	return renderViews(res.Instances)
}

// unit returns one unit's balance of the instance of budget name in a
// balance answer for scope.
func (h *harness) unit(root, scope, name, unit string) events.UnitBalance {
	h.t.Helper()
	res := h.ok(events.OpBalance, root, `{"scope":"`+scope+`"}`).(events.BalanceResult)
	for _, v := range res.Instances {
		if v.Budget == name {
			ub, ok := v.Units.Get(unit)
			if !ok {
				h.t.Fatalf("instance %s of %s has no unit %s", name, scope, unit)
			}
			return ub
		}
	}
	h.t.Fatalf("no instance of %s applies to %s", name, scope)
	return events.UnitBalance{}
}

// replay folds the log into a fresh State through the stream encoding.
func (h *harness) replay() *State {
	h.t.Helper()
	return replayInto(h.t, New(h.s.cfg), h.log)
}

func replayInto(t testing.TB, s *State, log []events.Event) *State {
	t.Helper()
	for i, ev := range log {
		b, err := events.Encode(&ev)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := events.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		s.Apply(uint64(i+1), dec)
	}
	return s
}

// checkReplay asserts that replaying the log reproduces the live state.
func (h *harness) checkReplay() {
	h.t.Helper()
	if got, want := string(h.replay().Snapshot()), string(h.s.Snapshot()); got != want {
		h.t.Fatalf("replay differs from the live state:\n%s", snapshotDiff([]byte(want), []byte(got)))
	}
}

// types lists the types of a decision's events.
func eventTypes(d Decision) []events.Type {
	out := make([]events.Type, len(d.Events))
	for i, ev := range d.Events {
		out[i] = ev.Type
	}
	return out
}

func describe(d Decision) string {
	switch {
	case d.Err != nil:
		return "error " + d.Err.Error()
	case d.Duplicate > 0:
		return fmt.Sprintf("duplicate of seq %d", d.Duplicate)
	case d.Result != nil:
		return "result " + jsonOf(d.Result)
	}
	return fmt.Sprintf("events %v", eventTypes(d))
}

func mustResult(t testing.TB, d Decision) any {
	t.Helper()
	if d.Err != nil {
		t.Fatalf("unexpected error %v", d.Err)
	}
	if d.Result != nil {
		return d.Result
	}
	if len(d.Events) == 0 {
		t.Fatalf("decision has neither result nor events")
	}
	r, ok := events.ResultOf(d.Events[0], events.EventRef{})
	if !ok {
		t.Fatalf("no result for %s", d.Events[0].Type)
	}
	return r
}

// renderViews renders instances one line each:
// "budget pattern scope period mode | unit limit/spent/reserved/remaining …".
func renderViews(vs []events.InstanceView) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s %s %s %s |", v.Budget, v.Pattern, v.Scope, v.Period, v.Mode)
		for _, e := range v.Units {
			fmt.Fprintf(&b, " %s %s/%s/%s/%s", e.Unit, e.Limit, e.Spent, e.Reserved, e.Remaining)
		}
		out[i] = b.String()
	}
	return out
}

// amountsString renders amounts canonically: "USD=1.5 tokens=100".
func amountsString(m events.Amounts) string {
	parts := make([]string, 0, len(m))
	for _, u := range events.SortedUnits(m) {
		parts = append(parts, u+"="+m[u].String())
	}
	return strings.Join(parts, " ")
}

func jsonOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// amountCmp compares amounts by value, for cmp.Diff.
var amountCmp = cmp.Comparer(func(a, b events.Amount) bool { return a.Cmp(b) == 0 })

// amt parses an amount, for expectations.
func amt(s string) events.Amount { return events.MustAmount(s) }

// mustPanic runs f and returns what it panicked with; it fails if f returns.
func mustPanic(t testing.TB, f func()) (msg string) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil {
			t.Fatalf("no panic")
		}
		msg = fmt.Sprint(r)
	}()
	f()
	return ""
}
