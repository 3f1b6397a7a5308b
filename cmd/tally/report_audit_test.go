package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/client"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/projector"
	"github.com/tallyledger/tally/report"
	"github.com/tallyledger/tally/streams"
)

// auditTraffic is the seed scenario on two roots plus releases, charges
// and an adjustment.
func (l *rptLedger) auditTraffic() {
	l.t.Helper()
	ctx := context.Background()
	for _, root := range []string{"tenant:acme", "tenant:globex"} {
		l.seedShadowTraffic(root)
		res, err := l.c.Reserve(ctx, events.ReserveRequest{Scope: root + "/team:ml", Amounts: events.Amounts{"USD": events.MustAmount("1")}})
		if err != nil {
			l.t.Fatal(err)
		}
		if _, err := l.c.Release(ctx, root, events.ReleaseRequest{ReservationID: res.ReservationID}); err != nil {
			l.t.Fatal(err)
		}
		if _, err := l.c.Charge(ctx, events.ChargeRequest{Scope: root + "/team:ml", Amounts: events.Amounts{"USD": events.MustAmount("7.5")}}); err != nil {
			l.t.Fatal(err)
		}
		if _, err := l.c.AdjustBudget(ctx, events.BudgetAdjustRequest{Scope: root, Name: "monthly",
			Delta: events.SignedAmounts{"USD": {Amount: events.MustAmount("25")}}, Reason: "top-up"}); err != nil {
			l.t.Fatal(err)
		}
	}
}

// copyLedger copies every partition stream of src into a fresh server's
// ledger, byte for byte, letting alter change or add messages. It
// returns the copy's URL and JetStream.
func copyLedger(t *testing.T, src jetstream.JetStream, alter func(n int, seq uint64, data []byte) [][]byte) (string, jetstream.JetStream) {
	t.Helper()
	dst := natstest.RunServer(t, natstest.WithPartitions(rptPartitions))
	js, err := jetstream.New(natstest.Connect(t, dst))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := streams.Ensure(ctx, js, streams.Config{Partitions: rptPartitions}); err != nil {
		t.Fatal(err)
	}
	for n := range rptPartitions {
		err := report.Read(ctx, src, report.Query{Partition: n}, func(r report.Record) error {
			for _, data := range alter(n, r.Seq, bytes.Clone(r.Data)) {
				if _, err := js.Publish(ctx, r.Subject, data); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return dst.ClientURL(), js
}

func TestAuditVerify(t *testing.T) {
	awayFromMidnight()
	l := startRptLedger(t)
	l.startProjector()
	l.auditTraffic()
	l.waitProjected()

	// A clean history verifies, and the projection matches the rebuild.
	code, out, errOut := l.tally("audit", "verify")
	if code != exitOK || !strings.Contains(out, "audit ok: ") || strings.Count(out, "projection: matches at seq") != rptPartitions-countEmpty(t, l) {
		t.Fatalf("clean audit: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = l.tally("audit", "verify", "--json")
	var doc struct {
		OK       bool             `json:"ok"`
		Events   int              `json:"events"`
		Findings []report.Finding `json:"findings"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &doc) != nil || !doc.OK || doc.Events < 100 || len(doc.Findings) != 0 {
		t.Fatalf("clean audit --json: exit %d\n%s", code, out)
	}

	// The partition tenant:acme lives on, and an event in its middle.
	n := streams.Partition("tenant:acme", rptPartitions)
	var mid uint64
	err := report.ReadEvents(context.Background(), l.js, report.Query{Partition: n, Root: "tenant:acme", Types: []events.Type{events.TypeReservationCommit}},
		func(r report.Record, _ events.Event) error {
			if mid == 0 && r.Seq > 30 {
				mid = r.Seq
			}
			return nil
		})
	if err != nil || mid == 0 {
		t.Fatalf("no commit to alter: %v", err)
	}

	t.Run("altered event", func(t *testing.T) {
		url, _ := copyLedger(t, l.js, func(p int, seq uint64, data []byte) [][]byte {
			if p == n && seq == mid { // one byte: a digit of a spent amount
				i := bytes.Index(data, []byte(`"spent":"`)) + len(`"spent":"`)
				if data[i] == '9' {
					data[i] = '8'
				} else {
					data[i]++
				}
			}
			return [][]byte{data}
		})
		code, out, _ := tallyAt(t, url, "audit", "verify")
		if code != exitFail {
			t.Fatalf("exit %d\n%s", code, out)
		}
		for _, want := range []string{
			fmt.Sprintf("FINDING partition %d seq %d: chain: ", n, mid+1),
			fmt.Sprintf("seq %d or this event was altered", mid),
			fmt.Sprintf("FINDING partition %d seq %d: replay: ", n, mid),
			"projection: not compared: the partition was never projected",
			"audit FAILED: ",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("audit output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("broken invariant", func(t *testing.T) {
		var last []byte
		var lastSeq uint64
		url, js := copyLedger(t, l.js, func(p int, seq uint64, data []byte) [][]byte {
			if p != n {
				return [][]byte{data}
			}
			last, lastSeq = data, seq
			return [][]byte{data}
		})
		// Append, through a fence-less publish, a commit of a reservation
		// that was never granted, with a valid chain link.
		ev := events.Event{V: events.Version, ID: "FORGED", Type: events.TypeReservationCommit, Partition: n,
			At: time.Now().UTC(), Root: "tenant:acme", Prev: events.Hash(last),
			Data: &events.ReservationCommitted{ReservationID: "NEVER-GRANTED", Scope: "tenant:acme",
				Charged: events.Amounts{"USD": events.MustAmount("1000")}, Released: events.Amounts{}, Overage: events.Amounts{}}}
		data, err := events.Encode(&ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(context.Background(), streams.EventSubject(n, "tenant:acme", string(ev.Type)), data); err != nil {
			t.Fatal(err)
		}
		code, out, _ := tallyAt(t, url, "audit", "verify", "--partition", strconv.Itoa(n))
		want := fmt.Sprintf("FINDING partition %d seq %d: reservation: reservation NEVER-GRANTED was never granted", n, lastSeq+1)
		if code != exitFail || !strings.Contains(out, want) || !strings.Contains(out, fmt.Sprintf("seq %d: replay:", lastSeq+1)) {
			t.Fatalf("exit %d, want %q in:\n%s", code, want, out)
		}
	})

	t.Run("projection differs", func(t *testing.T) {
		l.stopAll() // the projector and the enforcer: nothing moves
		kv, err := l.js.KeyValue(context.Background(), streams.BalancesBucket)
		if err != nil {
			t.Fatal(err)
		}
		bals, err := projector.ReadBalances(context.Background(), l.js, []int{n})
		if err != nil {
			t.Fatal(err)
		}
		var b projector.Balance
		for _, x := range bals {
			if x.Budget == "monthly" && x.Scope == "tenant:acme" {
				b = x
			}
		}
		b.Units[0].Spent = b.Units[0].Spent.Add(events.MustAmount("0.01"))
		val, _ := json.Marshal(b)
		if _, err := kv.Put(context.Background(), projector.InstanceKey(n, b.Pattern, b.Budget, b.Scope, b.Period), val); err != nil {
			t.Fatal(err)
		}
		code, out, _ := l.tally("audit", "verify")
		want := fmt.Sprintf(": projection: budget monthly on tenant:acme period %s USD: projection has limit 525 spent %s reserved 0, the events give limit 525 spent %s",
			b.Period, b.Units[0].Spent, b.Units[0].Spent.Sub(events.MustAmount("0.01")))
		if code != exitFail || !strings.Contains(out, want) {
			t.Fatalf("exit %d:\n%s", code, out)
		}
	})
}

// countEmpty is the number of partitions without events (nothing to compare).
func countEmpty(t *testing.T, l *rptLedger) int {
	empty := 0
	for n := range rptPartitions {
		s, err := l.js.Stream(context.Background(), streams.StreamName(n))
		if err != nil {
			t.Fatal(err)
		}
		if info, err := s.Info(context.Background()); err != nil || info.State.Msgs == 0 {
			empty++
		}
	}
	return empty
}

// scrape reads /metrics and sums the samples of name whose labels
// contain every one of labels.
func scrape(t *testing.T, addr, name string, labels ...string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		sum += v
		found = true
	}
	return sum, found
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeMetrics runs `tally serve` (embedded server, enforcer,
// projector) on free ports and checks that /metrics moves with requests:
// decisions, events applied by the projector, its checkpoint and lag.
func TestServeMetrics(t *testing.T) {
	natsAddr, httpAddr := freeAddr(t), freeAddr(t)
	url := "nats://" + natsAddr
	var c *client.Client
	startServe(t, []string{"--data-dir", t.TempDir(), "--nats-listen", natsAddr, "--http-listen", httpAddr, "--projector=true",
		"--partitions", "3", "--sync", "interval", "--log-level", "warn"}, func(string) error {
		if c == nil {
			nc, err := nats.Connect(url)
			if err != nil {
				return err
			}
			t.Cleanup(nc.Close)
			c = client.New(nc, client.WithTimeout(time.Second))
		}
		for i := range 6 {
			if _, err := c.Budgets(context.Background(), fmt.Sprintf("tenant:m%d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	reserves := func(k int) {
		for i := range k {
			root := fmt.Sprintf("tenant:m%d", i%6)
			if _, err := c.Reserve(context.Background(), events.ReserveRequest{Scope: root, Amounts: events.Amounts{"USD": events.One}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	granted := func() float64 {
		v, _ := scrape(t, httpAddr, "tally_decisions_total", `op="reserve"`, `outcome="granted"`)
		return v
	}
	applied := func() float64 {
		v, _ := scrape(t, httpAddr, "tally_projector_events_applied_total")
		return v
	}
	before, appliedBefore := granted(), applied()
	reserves(12)
	if got := granted(); got != before+12 {
		t.Fatalf("granted reserves %v → %v, want +12", before, got)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if a := applied(); a < appliedBefore+12 {
			return fmt.Errorf("events applied %v, want ≥ %v", a, appliedBefore+12)
		}
		if lag, ok := scrape(t, httpAddr, "tally_projector_lag_events"); !ok || lag != 0 {
			return fmt.Errorf("lag %v (present %v)", lag, ok)
		}
		return nil
	})
	// The checkpoint gauge moves when the views are flushed, after the
	// events are applied: wait for it too (summed over the partitions).
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if cp, ok := scrape(t, httpAddr, "tally_projector_checkpoint_seq"); !ok || cp < 12 {
			return fmt.Errorf("checkpoints sum to %v, want ≥ 12", cp)
		}
		return nil
	})
	if v, ok := scrape(t, httpAddr, "tally_nats_connected", `conn="tally-serve"`); !ok || v != 1 {
		t.Errorf(`tally_nats_connected{conn="tally-serve"} %v (present %v), want 1`, v, ok)
	}
	if v, ok := scrape(t, httpAddr, "tally_nats_reconnects_total", `conn="tally-serve"`); !ok || v != 0 {
		t.Errorf(`tally_nats_reconnects_total{conn="tally-serve"} %v (present %v), want 0`, v, ok)
	}
	for _, name := range []string{"tally_decision_latency_seconds_count", "tally_append_events_count", "tally_partitions_owned", "tally_open_reservations"} {
		if _, ok := scrape(t, httpAddr, name); !ok {
			t.Errorf("no %s on /metrics", name)
		}
	}
	// The views serve dashboards: eventually consistent, and saying so.
	code, out, errOut := tallyAt(t, url, "report", "balances", "--root", "tenant:m1")
	if code != exitOK || !strings.Contains(out, "eventually consistent") || !strings.Contains(out, "0 events behind") {
		t.Fatalf("report balances: exit %d\n%s%s", code, out, errOut)
	}
}

// TestProjectorCommand runs `tally projector`: --once catches up and
// exits, its /metrics shows lag and events applied moving, --rebuild
// --once rebuilds equal views, and report balances|budgets read them.
func TestProjectorCommand(t *testing.T) {
	awayFromMidnight()
	l := startRptLedger(t)
	l.auditTraffic()
	if code, _, errOut := l.tally("projector", "--once", "--http-listen", "", "--log-level", "warn"); code != exitOK {
		t.Fatalf("projector --once: exit %d: %s", code, errOut)
	}
	dump := func() map[string]string {
		out := map[string]string{}
		for n := range rptPartitions {
			d, err := projector.Dump(context.Background(), l.js, n)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range d {
				out[k] = string(v)
			}
		}
		return out
	}
	live := dump()
	if code, _, errOut := l.tally("projector", "--rebuild", "--once", "--http-listen", "", "--log-level", "warn"); code != exitOK {
		t.Fatalf("projector --rebuild --once: exit %d: %s", code, errOut)
	}
	if rebuilt := dump(); fmt.Sprint(rebuilt) != fmt.Sprint(live) || len(live) < 20 {
		t.Fatalf("rebuild differs from the live views (%d vs %d entries)", len(rebuilt), len(live))
	}

	// The enforcer's answer and the projection agree.
	code, out, _ := l.tally("report", "balances", "--scope", "tenant:acme", "--json")
	var doc struct {
		Consistency string              `json:"consistency"`
		Balances    []projector.Balance `json:"balances"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &doc) != nil || doc.Consistency != "eventual" {
		t.Fatalf("report balances: exit %d\n%s", code, out)
	}
	want, err := l.c.Balance(context.Background(), "tenant:acme")
	if err != nil {
		t.Fatal(err)
	}
	matched := 0
	for _, w := range want.Instances {
		for _, b := range doc.Balances {
			if b.Budget == w.Budget && b.Scope == w.Scope && b.Period == w.Period {
				if fmt.Sprint(b.Units) != fmt.Sprint(w.Units) {
					t.Errorf("%s: projection %v, enforcer %v", w.Budget, b.Units, w.Units)
				}
				matched++
			}
		}
	}
	if matched != len(want.Instances) || matched < 2 {
		t.Fatalf("matched %d of %d instances", matched, len(want.Instances))
	}
	code, out, _ = l.tally("report", "budgets")
	if code != exitOK || strings.Count(out, "daily-shadow") != 2 || !strings.Contains(out, "tenant:globex/workflow:chat/session:*") {
		t.Fatalf("report budgets: exit %d\n%s", code, out)
	}
	// The spellings read the same projection: budget list --all,
	// balance --projection.
	if code, all, _ := l.tally("budget", "list", "--all"); code != exitOK || all != out {
		t.Fatalf("budget list --all: exit %d\n%s\nwant\n%s", code, all, out)
	}
	_, viaReport, _ := l.tally("report", "balances", "--scope", "tenant:acme")
	if code, viaBalance, _ := l.tally("balance", "--projection", "--scope", "tenant:acme"); code != exitOK || viaBalance != viaReport || !strings.Contains(viaBalance, "eventually consistent") {
		t.Fatalf("balance --projection: exit %d\n%s\nwant\n%s", code, viaBalance, viaReport)
	}

	// A running projector's metrics move with new events.
	httpAddr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		var o, e bytes.Buffer
		done <- run(ctx, []string{"projector", "--nats-url", l.url, "--http-listen", httpAddr, "--log-level", "warn"}, strings.NewReader(""), &o, &e)
	}()
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if _, ok := scrapeMaybe(httpAddr, "tally_projector_lag_events"); !ok {
			return fmt.Errorf("no lag yet")
		}
		return nil
	})
	base, _ := scrapeMaybe(httpAddr, "tally_projector_events_applied_total")
	l.reserveCommit("tenant:acme/team:ml", "1", nil)
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if v, _ := scrapeMaybe(httpAddr, "tally_projector_events_applied_total"); v < base+2 {
			return fmt.Errorf("applied %v, want ≥ %v", v, base+2)
		}
		return nil
	})
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("projector exited %d", code)
	}
}

// scrapeMaybe is scrape for a server that may not be up yet.
func scrapeMaybe(addr, name string) (float64, bool) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err == nil {
				sum += v
				found = true
			}
		}
	}
	return sum, found
}
