package bench_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
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
// test ends, and returns a JetStream context on srv.
func startTally(t *testing.T, srv *server.Server) jetstream.JetStream {
	t.Helper()
	nc, js := natstest.Ledger(t, srv, testPartitions)
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
	return js
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
			if g, ok := ev.Data.(*events.ReservationGranted); ok {
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
		Baseline: true, B1AppendBytes: 1400, B1AnswerBytes: 1300, Progress: &progress, OnGranted: g.add,
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
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if p := rep.B1Padded; p == nil || p.AppendBytes != 1400 || p.AnswerBytes != 1300 || p.Requests == 0 || p.Errors != 0 {
		t.Errorf("padded B1 phase: %+v, want 1400-byte appends and 1300-byte answers, answered, no errors", p)
	}
	for _, want := range []string{"B0 requests", "B1 requests", "B1 1400/1300 B ", "tally ", "raw async publish:", "ordered-consumer replay:", "tally ÷ B1:"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report has no %q:\n%s", want, text.String())
		}
	}

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
	num("tally", "cpu_s")
	num("tally", "cpu_us_per_decision")
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
		num(b, "cpu_us_per_request")
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

// An open-loop run paces the clients to the target rate (latency measured
// from each request's scheduled time) on a fresh embedded deployment the
// bench starts itself; reserve-release closes every reservation it got.
func TestBenchEmbeddedOpenLoop(t *testing.T) {
	const target = 200.0
	rep, err := bench.Run(context.Background(), bench.Config{
		Target: bench.TargetEmbedded, Sync: bench.SyncInterval, Partitions: testPartitions, Clients: 4,
		Duration: 1500 * time.Millisecond, Roots: 5, Mix: bench.MixReserveRelease, Rate: target,
	})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := rep.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	m := checkReportJSON(t, out.Bytes(), false)
	if _, ok := m["b0"]; ok {
		t.Error("a run without baseline reports b0")
	}
	tl := rep.Tally
	// Pacing can only lag: well below the target means it is broken, above
	// it means it does not pace at all.
	if got := tl.DecisionsPerS; got > 1.15*target || got < 0.5*target {
		t.Errorf("achieved %.1f decisions/s, target %g", got, target)
	}
	if tl.Releases != tl.Granted || tl.Commits != 0 || tl.Granted == 0 || tl.Decisions != tl.Reserves+tl.Releases {
		t.Errorf("reserve-release counts: %+v", tl)
	}
	if s := rep.Setup; s.Target != "embedded" || s.Sync != "interval" || s.Fsync != bench.FsyncInterval || s.BaselineFsync != "" ||
		s.GroupCommit == nil || *s.GroupCommit || s.Replicas != 1 || s.Partitions != testPartitions || s.TargetRate != target {
		t.Errorf("setup %+v", s)
	}
	if tl.Fsyncs != nil {
		t.Errorf("a run without group fsync reports %d fsyncs", *tl.Fsyncs)
	}
}

// --embedded --sync always with group fsync (the default where the OS has
// syncfs): the baselines run first on a server that fsyncs every write,
// then the tally's replaces it on the same store, and the report says
// which phases used which fsync — in the JSON and in the text.
func TestBenchEmbeddedGroupFsync(t *testing.T) {
	var progress bytes.Buffer
	rep, err := bench.Run(context.Background(), bench.Config{
		Target: bench.TargetEmbedded, Sync: bench.SyncAlways, Partitions: 2, Clients: 4,
		Duration: 300 * time.Millisecond, Roots: 3, Baseline: true, Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("progress:\n%s", progress.String())
	var out bytes.Buffer
	if err := rep.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	m := checkReportJSON(t, out.Bytes(), true)
	wantFsync := bench.FsyncGroup
	if !streams.GroupFsyncSupported {
		wantFsync = bench.FsyncPerMessage
	}
	setup := m["setup"].(map[string]any)
	if setup["fsync"] != wantFsync || setup["baseline_fsync"] != bench.FsyncPerMessage || setup["sync"] != "always" {
		t.Errorf("setup: fsync %v, baseline_fsync %v, sync %v; want %q, %q, always",
			setup["fsync"], setup["baseline_fsync"], setup["sync"], wantFsync, bench.FsyncPerMessage)
	}
	if s := rep.Setup; s.Connections != 4 || s.Partitions != 2 || s.Responders != 2 {
		t.Errorf("setup %+v", s)
	}
	if tl := rep.Tally; tl.Granted == 0 || tl.Commits != tl.Granted || tl.Errors != 0 {
		t.Errorf("tally %+v", tl)
	}
	if got := rep.Tally.Fsyncs != nil; got != streams.GroupFsyncSupported {
		t.Errorf("tally reports fsyncs: %v, want %v", got, streams.GroupFsyncSupported)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	wants := []string{"sync always", "tally ", "B1 requests", "fsync: server, per message)"}
	if streams.GroupFsyncSupported {
		wants = append(wants, "fsync: tally group (syncfs); baselines server, per message", "  group (syncfs)\n",
			"  server, per message\n", "group fsync: ")
	}
	for _, want := range wants {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report has no %q:\n%s", want, text.String())
		}
	}
	if streams.GroupFsyncSupported && !strings.Contains(progress.String(), "server restarted for tally") {
		t.Errorf("progress does not say the server restarted:\n%s", progress.String())
	}

	// off: one server, fsync per message in every phase.
	rep, err = bench.Run(context.Background(), bench.Config{
		Target: bench.TargetEmbedded, Sync: bench.SyncAlways, GroupFsync: bench.GroupFsyncOff, Partitions: 2, Clients: 2,
		Duration: 200 * time.Millisecond, Roots: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Setup; s.Fsync != bench.FsyncPerMessage || rep.Tally.Fsyncs != nil || rep.Tally.Decisions == 0 {
		t.Errorf("--group-fsync off: setup %+v, tally %+v", s, rep.Tally)
	}
}

// --single-root --mix decide: one root, dry runs only, nothing appended.
func TestBenchSingleRootDecide(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	js := startTally(t, srv)
	rep, err := bench.Run(context.Background(), bench.Config{NATSURL: srv.ClientURL(), Clients: 4,
		Duration: 500 * time.Millisecond, SingleRoot: true, Mix: bench.MixDecide})
	if err != nil {
		t.Fatal(err)
	}
	tl := rep.Tally
	if tl.Decides == 0 || tl.Decisions != tl.Decides || tl.Reserves != 0 || tl.Errors != 0 {
		t.Errorf("decide counts: %+v", tl)
	}
	if rep.Setup.Roots != 1 || !rep.Setup.SingleRoot {
		t.Errorf("setup %+v", rep.Setup)
	}
	// Only the budget-sets of the one root were appended.
	byType := map[events.Type]int{}
	for n := range testPartitions {
		s, err := js.Stream(context.Background(), streams.StreamName(n))
		if err != nil {
			t.Fatal(err)
		}
		last := natstest.PartitionState(t, js, n).LastSeq
		for seq := uint64(1); seq <= last; seq++ {
			m, err := s.GetMsg(context.Background(), seq)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := events.Decode(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			byType[ev.Type]++
		}
	}
	if byType[events.TypeBudgetSet] != 3 || byType[events.TypeReservationGranted] != 0 || byType[events.TypeReservationDenied] != 0 {
		t.Errorf("events appended: %v, want 3 budget.set and no reservation", byType)
	}
}

// --warmup runs the load unmeasured first: the stream holds the warm-up's
// grants too, the report counts only the measured ones, and every
// reservation of either is closed.
func TestBenchWarmup(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	js := startTally(t, srv)
	rep, err := bench.Run(context.Background(), bench.Config{NATSURL: srv.ClientURL(), Clients: 4,
		Duration: 400 * time.Millisecond, Warmup: 400 * time.Millisecond, Roots: 3})
	if err != nil {
		t.Fatal(err)
	}
	tl := rep.Tally
	if tl.Granted == 0 || tl.Commits != tl.Granted || tl.Errors != 0 {
		t.Fatalf("counts: %+v", tl)
	}
	if rep.Setup.WarmupS != 0.4 {
		t.Errorf("setup %+v", rep.Setup)
	}
	granted, committed := 0, 0
	for n := range testPartitions {
		st := enforcer.New(enforcer.Config{Partition: n})
		if _, err := enforcer.Replay(context.Background(), js, n, st, func(_ uint64, ev events.Event, _ []byte) {
			switch ev.Type {
			case events.TypeReservationGranted:
				granted++
			case events.TypeReservationCommit:
				committed++
			}
		}); err != nil {
			t.Fatal(err)
		}
		if st.OpenReservations() != 0 {
			t.Errorf("partition %d: %d reservations left open", n, st.OpenReservations())
		}
	}
	// The warm-up ran as long as the measurement: it granted some too.
	if granted <= int(tl.Granted) || committed != granted {
		t.Errorf("stream: %d granted, %d committed; report: %d granted (measured only)", granted, committed, tl.Granted)
	}
}

// --cluster3 starts a 3-node cluster with R3 streams and an enforcer, and
// spreads the clients over the nodes.
func TestBenchCluster3(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	rep, err := bench.Run(context.Background(), bench.Config{Target: bench.TargetCluster3, Sync: bench.SyncInterval,
		Partitions: 2, Clients: 6, Duration: time.Second, Roots: 4})
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Setup; s.Servers != 3 || s.Replicas != 3 || s.Partitions != 2 || s.GroupCommit == nil || !*s.GroupCommit {
		t.Errorf("setup %+v", s)
	}
	if tl := rep.Tally; tl.Decisions == 0 || tl.Commits != tl.Granted {
		t.Errorf("tally %+v", tl)
	}
}

// --b1-contract adds the contract floor's phase: it answers every request
// of the tally phase's steps, and the report gives its row, the sizes of a
// reserve's event and answer, and the ratios, in the JSON and the text.
func TestBenchContractFloor(t *testing.T) {
	rep, err := bench.Run(context.Background(), bench.Config{Target: bench.TargetEmbedded, Sync: bench.SyncInterval,
		Partitions: testPartitions, Clients: 4, Duration: 400 * time.Millisecond, Roots: 6, Baseline: true, B1Contract: true})
	if err != nil {
		t.Fatal(err)
	}
	c := rep.B1Contract
	if c == nil || c.Requests == 0 || c.Errors != 0 || c.AppendBytes < 1000 || c.AnswerBytes < 1000 {
		t.Fatalf("contract floor %+v", c)
	}
	if q := rep.Ratios; q == nil || q.DecisionsVsB1Contract <= 0 || q.B1ContractVsB1 <= 0 || q.P99VsB1Contract <= 0 {
		t.Errorf("ratios %+v", q)
	}
	var js, text bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if m := checkReportJSON(t, js.Bytes(), true); m["b1_contract"] == nil {
		t.Errorf("JSON without b1_contract: %s", js.Bytes())
	}
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nB1 contract ", "tally ÷ B1 contract: throughput "} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report without %q:\n%s", want, text.String())
		}
	}
}

// The scratch streams of the baselines are gone after the run.
func TestBenchDeletesScratchStreams(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	js := startTally(t, srv)
	// A leftover of an interrupted run is replaced.
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "TALLY_BENCH_B1", Subjects: []string{"tally.bench.leftover"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bench.Run(context.Background(), bench.Config{NATSURL: srv.ClientURL(), Clients: 2,
		Duration: 200 * time.Millisecond, Roots: 2, Baseline: true}); err != nil {
		t.Fatal(err)
	}
	for name := range js.StreamNames(context.Background()).Name() {
		if strings.HasPrefix(name, "TALLY_BENCH") {
			t.Errorf("stream %s is left over", name)
		}
	}
}

func TestBenchCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(1500*time.Millisecond, cancel)
	start := time.Now()
	_, err := bench.Run(ctx, bench.Config{Target: bench.TargetEmbedded, Sync: bench.SyncInterval,
		Partitions: testPartitions, Clients: 4, Duration: time.Minute, Roots: 2})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("a cancelled run took %s to stop", d)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  bench.Config
		want string // substring of the error
	}{
		{"no url", bench.Config{}, "NATS URL is required"},
		{"embedded with url", bench.Config{Target: bench.TargetEmbedded, NATSURL: "nats://x"}, "makes no sense"},
		{"cluster with connection options", bench.Config{Target: bench.TargetCluster3, NATSOptions: []nats.Option{nats.Name("x")}},
			"connection options make no sense"},
		{"unknown target", bench.Config{Target: "moon"}, "unknown target"},
		{"sync", bench.Config{Target: bench.TargetEmbedded, Sync: "never"}, "sync"},
		{"group commit", bench.Config{Target: bench.TargetEmbedded, GroupCommit: "maybe"}, "group commit"},
		{"group fsync", bench.Config{Target: bench.TargetEmbedded, GroupFsync: "on"}, "group fsync"},
		{"clients", bench.Config{NATSURL: "u", Clients: -1}, "clients"},
		{"too many clients", bench.Config{NATSURL: "u", Clients: bench.MaxClients + 1}, "clients"},
		{"duration", bench.Config{NATSURL: "u", Duration: time.Millisecond}, "duration"},
		{"warmup", bench.Config{NATSURL: "u", Warmup: -time.Second}, "warmup"},
		{"roots", bench.Config{NATSURL: "u", Roots: -3}, "roots"},
		{"mix", bench.Config{NATSURL: "u", Mix: "reserve-only"}, "mix"},
		{"rate", bench.Config{NATSURL: "u", Rate: -1}, "rate"},
		{"b1 append bytes", bench.Config{NATSURL: "u", Baseline: true, B1AppendBytes: -1}, "b1-append-bytes -1"},
		{"b1 append bytes without baseline", bench.Config{NATSURL: "u", B1AppendBytes: 1400}, "b1-append-bytes needs --baseline"},
		{"b1 answer bytes", bench.Config{NATSURL: "u", Baseline: true, B1AnswerBytes: bench.MaxB1AppendBytes + 1}, "b1-answer-bytes"},
		{"b1 answer bytes without baseline", bench.Config{NATSURL: "u", B1AnswerBytes: 1400}, "b1-answer-bytes needs --baseline"},
		{"b1 contract without baseline", bench.Config{Target: bench.TargetEmbedded, B1Contract: true}, "b1-contract needs --baseline"},
		{"b1 contract on a running tally", bench.Config{NATSURL: "u", Baseline: true, B1Contract: true}, "--embedded or --cluster3"},
		{"partitions", bench.Config{Target: bench.TargetEmbedded, Partitions: streams.MaxPartitions + 1}, "partitions"},
		{"ok", bench.Config{NATSURL: "u"}, ""},
		{"ok embedded", bench.Config{Target: bench.TargetCluster3, Sync: bench.SyncInterval, Rate: 100}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one about %q", err, tc.want)
			}
		})
	}
}

// ProfileDir leaves a CPU profile, an execution trace and a heap profile of
// every phase, each a well-formed file of its kind.
func TestBenchProfileDir(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	startTally(t, srv)
	dir := filepath.Join(t.TempDir(), "profiles", "run1") // made by the run
	if _, err := bench.Run(context.Background(), bench.Config{NATSURL: srv.ClientURL(), Clients: 2,
		Duration: 300 * time.Millisecond, Roots: 2, Mix: bench.MixDecide, ProfileDir: dir}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tally.cpu.prof", "tally.heap.prof"} {
		// A pprof profile is a gzipped protocol buffer.
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			t.Fatalf("%s: %v", name, err)
		}
		pb, err := io.ReadAll(zr)
		f.Close()
		if err != nil || len(pb) == 0 {
			t.Errorf("%s: %d bytes of profile, %v", name, len(pb), err)
		}
	}
	tr, err := os.ReadFile(filepath.Join(dir, "tally.trace"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(tr, []byte("go 1.")) {
		t.Errorf("tally.trace does not start as an execution trace: %q", tr[:min(len(tr), 16)])
	}
	// The process profiles one phase at a time: a second run works too.
	if _, err := bench.Run(context.Background(), bench.Config{NATSURL: srv.ClientURL(), Clients: 2,
		Duration: 100 * time.Millisecond, Roots: 2, Mix: bench.MixDecide, ProfileDir: dir}); err != nil {
		t.Fatalf("second profiled run: %v", err)
	}
}
