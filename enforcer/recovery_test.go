package enforcer_test

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// TestRecoveryTime measures how long a new owner takes to rebuild a
// partition of N events: full replay, and the newest snapshot plus a tail
// of DefaultSnapshotEvery events. It runs only when TALLY_RECOVERY_EVENTS
// is set (make bench-recovery: 1 000 000); the history is a real one,
// produced by the core (reserves across 1 000 runs, each committed) and
// appended with its hash chain. The raw ordered-consumer rate over the same
// stream is measured in the same run, before and after the full replay,
// through an in-process and a TCP connection, as the yardstick;
// TALLY_RECOVERY_CPUPROFILE=file writes a CPU profile of the full replay
// through TCP alone, TALLY_RECOVERY_LOAD_CPUPROFILE=file one of loading
// the snapshot.
func TestRecoveryTime(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("TALLY_RECOVERY_EVENTS"))
	if n == 0 {
		t.Skip("set TALLY_RECOVERY_EVENTS=1000000 (make bench-recovery) to measure recovery time")
	}
	srv := natstest.RunServer(t, natstest.WithPartitions(1))
	_, js := natstest.Ledger(t, srv, 1)
	ctx := context.Background()
	st := enforcer.New(enforcer.Config{Partition: 0})
	root := "tenant:big"
	now := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	hash := ""
	var pending []jetstream.PubAckFuture
	publish := func(evs []events.Event) {
		for _, ev := range evs {
			ev.ID = fmt.Sprintf("E%025d", st.LastSeq()+1)
			ev.Prev = hash
			raw, err := events.Encode(&ev)
			if err != nil {
				t.Fatal(err)
			}
			st.Apply(st.LastSeq()+1, ev)
			hash = events.Hash(raw)
			f, err := js.PublishAsync(streams.EventSubject(0, root, string(ev.Type)), raw)
			if err != nil {
				t.Fatal(err)
			}
			pending = append(pending, f)
		}
		if len(pending) >= 4000 {
			for _, f := range pending {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					t.Fatal(err)
				}
			}
			pending = pending[:0]
		}
	}
	step := func(op events.Op, body string) enforcer.Decision {
		req, err := events.ParseRequest(op, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		d := st.Decide(enforcer.Command{Op: op, Root: root, Request: req, NewID: fmt.Sprintf("R%d", st.LastSeq())}, now)
		if d.Err != nil {
			t.Fatalf("%s: %v", op, d.Err)
		}
		publish(d.Events)
		return d
	}
	step(events.OpBudgetSet, `{"idempotency_key":"b1","scope":"tenant:big","name":"m","limits":{"USD":"100000000000","tokens":"100000000000000"},"period":"monthly"}`)
	step(events.OpBudgetSet, `{"idempotency_key":"b2","scope":"tenant:big/workflow:w","name":"w","limits":{"USD":"100000000000","tokens":"100000000000000"},"period":"daily"}`)
	step(events.OpBudgetSet, `{"idempotency_key":"b3","scope":"tenant:big/workflow:w/run:*","name":"r","limits":{"USD":"100000000000","tokens":"100000000000000"}}`)
	var snapData []byte
	var snapSeq uint64
	var snapHash string
	start := time.Now()
	for i := 0; st.LastSeq() < uint64(n); i++ {
		now = now.Add(time.Millisecond)
		d := step(events.OpReserve, fmt.Sprintf(`{"idempotency_key":"k%d","scope":"tenant:big/workflow:w/run:r%d","amounts":{"USD":"0.42","tokens":"12000"},"labels":{"model":"m"}}`, i, i%1000))
		id := d.Events[0].Data.(*events.ReservationGranted).ReservationID
		step(events.OpCommit, fmt.Sprintf(`{"idempotency_key":"c%d","reservation_id":%q,"actual":{"USD":"0.37","tokens":"10500"}}`, i, id))
		if snapData == nil && st.LastSeq() >= uint64(n-min(enforcer.DefaultSnapshotEvery, n/2)) {
			snapData, snapSeq, snapHash = st.Snapshot(), st.LastSeq(), hash
		}
	}
	publish(nil)
	for _, f := range pending {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		}
	}
	t.Logf("generated and appended %d events in %s", st.LastSeq(), time.Since(start).Round(time.Millisecond))
	saveStart := time.Now()
	if err := enforcer.SaveSnapshot(ctx, js, 0, snapData, snapSeq, snapHash); err != nil {
		t.Fatal(err)
	}
	if info, err := js.ObjectStore(ctx, streams.SnapshotsBucket); err == nil {
		if meta, err := info.GetInfo(ctx, enforcer.SnapshotName(0)); err == nil {
			t.Logf("storing the snapshot (%d bytes, %d compressed) took %s", len(snapData), meta.Size, time.Since(saveStart).Round(time.Millisecond))
		}
	}

	// tally serve replays its embedded server through TCP loopback
	// (enforcer.ServiceConfig.ReplayConn); the raw read is measured through
	// both kinds of connection, before and after, and the faster is the
	// yardstick.
	tcp, err := jetstream.New(natstest.ConnectTCP(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	rawInBefore, rawTCPBefore := rawReplayRate(t, js, st.LastSeq()), rawReplayRate(t, tcp, st.LastSeq())
	// fullReplay times a full replay through js.
	fullReplay := func(js jetstream.JetStream) (*enforcer.State, time.Duration) {
		start := time.Now()
		full := enforcer.New(enforcer.Config{Partition: 0})
		if _, err := enforcer.Replay(ctx, js, 0, full, nil); err != nil {
			t.Fatal(err)
		}
		return full, time.Since(start)
	}
	_, inTime := fullReplay(js)
	stopProfile := profileTo(t, os.Getenv("TALLY_RECOVERY_CPUPROFILE"))
	full, fullTime := fullReplay(tcp)
	stopProfile()
	rawInAfter, rawTCPAfter := rawReplayRate(t, js, st.LastSeq()), rawReplayRate(t, tcp, st.LastSeq())
	// A takeover, timed in its two parts: what Recover does, step by step.
	stopProfile = profileTo(t, os.Getenv("TALLY_RECOVERY_LOAD_CPUPROFILE"))
	start = time.Now()
	rec, _, err := enforcer.LoadSnapshot(ctx, tcp, 0, enforcer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	loadTime := time.Since(start)
	stopProfile()
	if _, err := enforcer.Replay(ctx, tcp, 0, rec, nil); err != nil {
		t.Fatal(err)
	}
	snapTime := time.Since(start)
	// And Recover itself rebuilds the same state.
	recovered, _, err := enforcer.Recover(ctx, tcp, 0, enforcer.Config{}, func(err error) { t.Fatal(err) })
	if err != nil {
		t.Fatal(err)
	}
	if want := string(full.Snapshot()); want != string(rec.Snapshot()) || want != string(recovered.Snapshot()) || full.LastSeq() != st.LastSeq() {
		t.Fatal("snapshot + tail differs from full replay")
	}
	events := float64(full.LastSeq())
	rawIn, rawTCP := (rawInBefore+rawInAfter)/2, (rawTCPBefore+rawTCPAfter)/2
	raw := max(rawIn, rawTCP)
	t.Logf("raw ordered consumer over the same stream: in-process %.0f and %.0f msg/s, TCP loopback %.0f and %.0f msg/s (before and after)",
		rawInBefore, rawInAfter, rawTCPBefore, rawTCPAfter)
	t.Logf("full replay of %d events through TCP loopback (as tally serve): %s (%.0f events/s); replay/raw = %.2f",
		full.LastSeq(), fullTime.Round(time.Millisecond), events/fullTime.Seconds(), events/fullTime.Seconds()/raw)
	t.Logf("full replay through the in-process connection: %s (%.0f events/s); replay/raw = %.2f",
		inTime.Round(time.Millisecond), events/inTime.Seconds(), events/inTime.Seconds()/raw)
	t.Logf("snapshot at seq %d (%d bytes) + tail of %d events: %s (loading and restoring the snapshot %s, the tail %s)",
		snapSeq, len(snapData), full.LastSeq()-snapSeq, snapTime.Round(time.Millisecond),
		loadTime.Round(time.Millisecond), (snapTime - loadTime).Round(time.Millisecond))
	t.Logf("the takeover brought the state up to date with %d events at %.0f events/s: %.2f of the raw rate of reading them",
		full.LastSeq(), events/snapTime.Seconds(), events/snapTime.Seconds()/raw)
}

// profileTo starts a CPU profile into the file at path, if path is not
// empty, and returns what stops it.
func profileTo(t *testing.T, path string) (stop func()) {
	t.Helper()
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	}
}

// rawReplayRate reads partition 0's stream up to last with an ordered
// consumer — no decoding, no chain, no state — and returns its rate in
// messages per second: the yardstick for Replay.
func rawReplayRate(t *testing.T, js jetstream.JetStream, last uint64) float64 {
	t.Helper()
	ctx := context.Background()
	stream, err := js.Stream(ctx, streams.StreamName(0))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	var n, size int
	for {
		msg, err := it.Next() // as tally bench's raw replay reads
		if err != nil {
			t.Fatalf("raw replay after %d messages: %v", n, err)
		}
		n++
		size += len(msg.Data())
		md, err := msg.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		if md.Sequence.Stream >= last {
			break
		}
	}
	elapsed := time.Since(start)
	t.Logf("raw ordered consumer: %d messages (%d bytes) in %s", n, size, elapsed.Round(time.Millisecond))
	return float64(n) / elapsed.Seconds()
}
