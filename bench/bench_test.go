package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/bench"
	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

const testPartitions = 4

// startTally runs an enforcer for every partition against srv until the
// test ends.
func startTally(t *testing.T, srv *server.Server) {
	t.Helper()
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := streams.Ensure(ctx, js, streams.Config{Partitions: testPartitions}); err != nil {
		t.Fatal(err)
	}
	svc, err := enforcer.NewService(nc, enforcer.ServiceConfig{Partitions: testPartitions, GroupCommit: true})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("enforcer: %v", err)
		}
	})
}

// grants collects what the bench reports through Config.OnGranted.
type grants struct {
	mu     sync.Mutex
	byRoot map[string]int
	ids    map[string]string // reservation id → root
	dups   int
}

func newGrants() *grants { return &grants{byRoot: map[string]int{}, ids: map[string]string{}} }

func (g *grants) add(root, id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.ids[id]; ok {
		g.dups++
	}
	g.ids[id] = root
	g.byRoot[root]++
}

// grantedInStreams reads every partition stream with an ordered consumer
// and returns the reservation.granted events: count by root and id → root.
func grantedInStreams(t *testing.T, js jetstream.JetStream, partitions int) (map[string]int, map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	byRoot, ids := map[string]int{}, map[string]string{}
	for n := range partitions {
		s, err := js.Stream(ctx, streams.StreamName(n))
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			continue
		}
		cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		it, err := cons.Messages()
		if err != nil {
			t.Fatal(err)
		}
		for {
			m, err := it.Next()
			if err != nil {
				t.Fatalf("partition %d: %v", n, err)
			}
			ev, err := events.Decode(m.Data())
			if err != nil {
				t.Fatalf("partition %d: %v", n, err)
			}
			if g, ok := ev.Data.(events.ReservationGranted); ok {
				byRoot[ev.Root]++
				if _, dup := ids[g.ReservationID]; dup {
					t.Errorf("reservation %s granted twice in the stream", g.ReservationID)
				}
				ids[g.ReservationID] = ev.Root
			}
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			if md.Sequence.Stream >= info.State.LastSeq {
				break
			}
		}
		it.Stop()
	}
	return byRoot, ids
}

// A brief `tally bench --baseline` against a ledger started here: the JSON
// report is well formed, and every reservation the bench says it was
// granted is a reservation.granted event of the partition streams — the
// same number per root, exactly.
func TestBenchBaselineAccountsForEveryGrant(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	startTally(t, srv)
	g := newGrants()
	var progress bytes.Buffer
	rep, err := bench.Run(context.Background(), bench.Config{
		Target: bench.TargetURL, NATSURL: srv.ClientURL(), Clients: 8, Duration: 2 * time.Second, Roots: 10,
		Baseline: true, Progress: &progress, OnGranted: g.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := rep.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("progress:\n%s", progress.String())
	checkReportJSON(t, out.Bytes(), true)

	if g.dups > 0 {
		t.Errorf("the bench reported %d reservation ids twice", g.dups)
	}
	if uint64(len(g.ids)) != rep.Tally.Granted {
		t.Errorf("the bench reported %d grants through OnGranted, %d in its report", len(g.ids), rep.Tally.Granted)
	}
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	byRoot, ids := grantedInStreams(t, js, testPartitions)
	for id, root := range g.ids {
		if got, ok := ids[id]; !ok {
			t.Errorf("granted reservation %s (%s) has no reservation.granted event", id, root)
		} else if got != root {
			t.Errorf("reservation %s: granted under %s, its event is under %s", id, root, got)
		}
	}
	for root, n := range byRoot {
		if g.byRoot[root] != n {
			t.Errorf("%s: %d reservation.granted events, the bench counted %d", root, n, g.byRoot[root])
		}
	}
	for root, n := range g.byRoot {
		if byRoot[root] != n {
			t.Errorf("%s: the bench counted %d grants, the stream holds %d", root, n, byRoot[root])
		}
	}
	if len(g.byRoot) != 10 {
		t.Errorf("load reached %d roots, want 10", len(g.byRoot))
	}
	for _, final := range []string{"B0:", "B1:", "tally:", "raw publish:", "replay:"} {
		if !strings.Contains(progress.String(), final) {
			t.Errorf("progress has no final line %q:\n%s", final, progress.String())
		}
	}
}

// checkReportJSON checks the stable fields of a report: present, rates
// positive, percentiles ordered.
func checkReportJSON(t *testing.T, doc []byte, baseline bool) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, doc)
	}
	num := func(path ...string) float64 {
		t.Helper()
		var cur any = m
		for _, p := range path {
			obj, ok := cur.(map[string]any)
			if !ok {
				t.Fatalf("report: %s: not an object at %q\n%s", strings.Join(path, "."), p, doc)
			}
			if cur, ok = obj[p]; !ok {
				t.Fatalf("report: missing %s\n%s", strings.Join(path, "."), doc)
			}
		}
		f, ok := cur.(float64)
		if !ok {
			t.Fatalf("report: %s = %v, not a number", strings.Join(path, "."), cur)
		}
		return f
	}
	positive := func(path ...string) {
		t.Helper()
		if v := num(path...); v <= 0 {
			t.Errorf("report: %s = %v, want > 0", strings.Join(path, "."), v)
		}
	}
	ordered := func(phase string) {
		t.Helper()
		prev := 0.0
		for _, q := range []string{"p50", "p90", "p99", "p999", "max"} {
			v := num(phase, "latency_ms", q)
			if v < prev {
				t.Errorf("report: %s.latency_ms.%s = %v < the previous percentile %v", phase, q, v, prev)
			}
			prev = v
		}
		positive(phase, "latency_ms", "p50")
		positive(phase, "latency_ms", "mean")
	}
	if v := num("version"); v != bench.ReportVersion {
		t.Errorf("report version %v", v)
	}
	for _, f := range []string{"clients", "connections", "roots", "partitions", "replicas", "duration_s", "payload_bytes", "servers"} {
		positive("setup", f)
	}
	positive("machine", "cpus")
	for _, f := range []string{"decisions", "decisions_per_s", "elapsed_s"} {
		positive("tally", f)
	}
	num("tally", "errors")
	num("tally", "reserves")
	num("tally", "granted")
	ordered("tally")
	if !baseline {
		return m
	}
	positive("tally", "reserves_per_s")
	positive("tally", "granted")
	for _, b := range []string{"b0", "b1"} {
		positive(b, "requests")
		positive(b, "requests_per_s")
		num(b, "errors")
		ordered(b)
	}
	positive("raw_publish", "messages")
	positive("raw_publish", "messages_per_s")
	positive("replay", "messages")
	positive("replay", "messages_per_s")
	for _, r := range []string{"decisions_vs_b0", "decisions_vs_b1", "decisions_vs_raw_publish", "p50_vs_b0", "p99_vs_b0", "p50_vs_b1", "p99_vs_b1"} {
		positive("ratios", r)
	}
	return m
}

var _ = fmt.Sprint
var _ = nats.Connect
