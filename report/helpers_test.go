package report_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/streams"
)

// ledger drives the enforcer's pure core with a controllable clock and
// keeps the stored form of every event, as a partition stream would.
type ledger struct {
	t    testing.TB
	st   *enforcer.State
	now  time.Time
	n    int
	recs []rec
	prev string
}

type rec struct {
	seq     uint64
	subject string
	data    []byte
	ev      events.Event
}

func newLedger(t testing.TB, partition int) *ledger {
	return &ledger{t: t, st: enforcer.New(enforcer.Config{Partition: partition}),
		now: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)}
}

// do decides a request given as JSON and appends its events.
func (l *ledger) do(op events.Op, root, body string) enforcer.Decision {
	l.t.Helper()
	req, err := events.ParseRequest(op, []byte(body))
	if err != nil {
		l.t.Fatalf("%s %s: %v", op, body, err)
	}
	l.n++
	l.now = l.now.Add(time.Second)
	d := l.st.Decide(enforcer.Command{Op: op, Root: root, Request: req, NewID: fmt.Sprintf("R%05d", l.n)}, l.now)
	if d.Err != nil {
		l.t.Fatalf("%s %s: %v", op, body, d.Err)
	}
	for _, ev := range d.Events {
		l.append(ev)
	}
	return d
}

func (l *ledger) append(ev events.Event) {
	l.t.Helper()
	ev.ID = fmt.Sprintf("E%06d", len(l.recs)+1)
	ev.Prev = l.prev
	b, err := events.Encode(&ev)
	if err != nil {
		l.t.Fatal(err)
	}
	dec, err := events.Decode(b)
	if err != nil {
		l.t.Fatal(err)
	}
	seq := uint64(len(l.recs) + 1)
	l.st.Apply(seq, dec)
	root := ev.Root
	if root == "" {
		root = "_"
	}
	l.recs = append(l.recs, rec{seq: seq, subject: streams.EventSubject(ev.Partition, root, string(ev.Type)), data: b, ev: dec})
	l.prev = events.Hash(b)
}

// reserveCommit reserves amount on scope and commits the same.
func (l *ledger) reserveCommit(root, scope, usd string, labels string) string {
	l.t.Helper()
	if labels == "" {
		labels = "{}"
	}
	d := l.do(events.OpReserve, root, fmt.Sprintf(`{"idempotency_key":"k%d","scope":%q,"amounts":{"USD":%q},"labels":%s}`, l.n, scope, usd, labels))
	g, ok := d.Events[0].Data.(*events.ReservationGranted)
	if !ok {
		return ""
	}
	l.do(events.OpCommit, root, fmt.Sprintf(`{"idempotency_key":"c%d","reservation_id":%q,"actual":{"USD":%q}}`, l.n, g.ReservationID, usd))
	return g.ReservationID
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// seedShadowScenario is the seed's combined structure with a shadow
// rollout (budget-patterns.txt, patterns 1, 2, 3 and 5) and traffic
// designed so that exactly 23 granted calls carry a shadow denial and the
// largest instance peak overage is $47.30:
//
//   - 2 chat calls of $0.40 granted, a third denied by the $1 session cap
//     (an enforce denial reserves nothing: no shadow denial either);
//   - 9 research runs of $10 and one of $9.20: the tenant's $100/day
//     shadow budget reaches exactly 100, no shadow denial;
//   - 22 code-review runs of $2: each would have been denied by the
//     tenant shadow budget, and from the 11th by the code-review
//     workflow's $20/day shadow budget;
//   - 1 research run of $3.30: denied by the tenant shadow budget;
//     its usage peaks at 100 + 44 + 3.30 = 147.30, an overage of 47.30.
func seedShadowScenario(l *ledger) {
	root := "tenant:acme"
	for _, b := range []string{
		`{"idempotency_key":"b1","scope":"tenant:acme","name":"monthly","limits":{"USD":"500"},"period":"monthly"}`,
		`{"idempotency_key":"b2","scope":"tenant:acme/workflow:code-review/run:*","name":"per-run","limits":{"USD":"2"}}`,
		`{"idempotency_key":"b3","scope":"tenant:acme/workflow:deep-research/run:*","name":"per-run","limits":{"USD":"25"}}`,
		`{"idempotency_key":"b4","scope":"tenant:acme/workflow:chat/session:*","name":"per-session","limits":{"USD":"1"}}`,
		`{"idempotency_key":"b5","scope":"tenant:acme","name":"daily-shadow","limits":{"USD":"100"},"period":"daily","mode":"shadow"}`,
		`{"idempotency_key":"b6","scope":"tenant:acme/workflow:code-review","name":"review-shadow","limits":{"USD":"20"},"period":"daily","mode":"shadow"}`,
	} {
		l.do(events.OpBudgetSet, root, b)
	}
	l.reserveCommit(root, "tenant:acme/workflow:chat/session:s1", "0.40", `{"model":"haiku"}`)
	l.reserveCommit(root, "tenant:acme/workflow:chat/session:s1", "0.40", `{"model":"haiku"}`)
	if id := l.reserveCommit(root, "tenant:acme/workflow:chat/session:s1", "0.40", ""); id != "" {
		l.t.Fatal("the third chat call was granted")
	}
	for i := 1; i <= 10; i++ {
		usd := "10"
		if i == 10 {
			usd = "9.20"
		}
		l.reserveCommit(root, fmt.Sprintf("tenant:acme/workflow:deep-research/run:r%d", i), usd, `{"model":"opus"}`)
	}
	for i := 1; i <= 22; i++ {
		l.reserveCommit(root, fmt.Sprintf("tenant:acme/workflow:code-review/run:c%d", i), "2", `{"model":"sonnet"}`)
	}
	l.reserveCommit(root, "tenant:acme/workflow:deep-research/run:r11", "3.30", `{"model":"opus"}`)
}

func enforcerExpire() enforcer.Command { return enforcer.Command{Op: enforcer.OpExpire} }
