package enforcer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// replayStream appends n partition.claimed events to partition 0's stream
// of a new server, chained, except that message bad (if > 0) is replaced
// by what corrupt makes of it. It returns the stream's messages.
func replayStream(t *testing.T, n, bad int, corrupt func(raw []byte) []byte) (jetstream.JetStream, [][]byte) {
	t.Helper()
	srv := natstest.RunServer(t, natstest.WithPartitions(1))
	_, js := natstest.Ledger(t, srv, 1)
	at := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	prev := ""
	var msgs [][]byte
	var acks []jetstream.PubAckFuture
	for seq := 1; seq <= n; seq++ {
		ev := events.Event{V: events.Version, ID: fmt.Sprintf("E%025d", seq), Type: events.TypePartitionClaimed,
			At: at.Add(time.Duration(seq) * time.Millisecond), Root: "_", Prev: prev,
			Data: &events.PartitionClaimed{Owner: fmt.Sprintf("owner-%d", seq), Epoch: uint64(seq)}}
		raw, err := events.Encode(&ev)
		if err != nil {
			t.Fatal(err)
		}
		if seq == bad {
			raw = corrupt(raw)
		}
		prev = events.Hash(raw)
		msgs = append(msgs, raw)
		f, err := js.PublishAsync(streams.EventSubject(0, "_", string(ev.Type)), raw)
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, f)
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		}
	}
	return js, msgs
}

// replayGoroutines lists the goroutines of Replay's pipeline still alive.
func replayGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var alive []string
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("enforcer.readReplay")) || bytes.Contains(g, []byte("enforcer.decodeReplay")) {
			alive = append(alive, string(g))
		}
	}
	return alive
}

// Replay applies every message in order, from any starting point, with
// any number of decoders, and returns the head's hash.
func TestReplayOrder(t *testing.T) {
	const n = 2000 // many batches, and a last one that is not full
	js, msgs := replayStream(t, n, 0, nil)
	for _, decoders := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("decoders=%d", decoders), func(t *testing.T) { testReplayOrder(t, js, msgs, decoders) })
	}
}

func testReplayOrder(t *testing.T, js jetstream.JetStream, msgs [][]byte, decoders int) {
	n := len(msgs)
	for _, from := range []int{0, 1, 127, 1000, n - 1, n} {
		st := enforcer.New(enforcer.Config{Partition: 0})
		for seq := 1; seq <= from; seq++ {
			ev, err := events.Decode(msgs[seq-1])
			if err != nil {
				t.Fatal(err)
			}
			st.Apply(uint64(seq), ev)
		}
		next := uint64(from + 1)
		hash, err := enforcer.ReplayWithDecoders(context.Background(), js, 0, st, func(seq uint64, ev events.Event, raw []byte) {
			if seq != next {
				t.Fatalf("from %d: visited seq %d, want %d", from, seq, next)
			}
			if !bytes.Equal(raw, msgs[seq-1]) || ev.ID != fmt.Sprintf("E%025d", seq) {
				t.Fatalf("from %d: seq %d: visited another message", from, seq)
			}
			next++
		}, decoders)
		if err != nil {
			t.Fatalf("from %d: %v", from, err)
		}
		if st.LastSeq() != uint64(n) || next != uint64(n+1) {
			t.Fatalf("from %d: replayed to seq %d, visited up to %d; want %d", from, st.LastSeq(), next-1, n)
		}
		if want := events.Hash(msgs[n-1]); hash != want {
			t.Fatalf("from %d: hash %s, want the head's %s", from, hash, want)
		}
		if st.ClaimedBy() != fmt.Sprintf("owner-%d", n) {
			t.Fatalf("from %d: claimed by %q", from, st.ClaimedBy())
		}
	}
	if g := replayGoroutines(); len(g) > 0 {
		t.Fatalf("%d pipeline goroutines left after Replay returned:\n%s", len(g), strings.Join(g, "\n\n"))
	}
}

// A message that does not decode or breaks the chain stops the replay with
// its sequence; everything before it is applied, nothing after, and no
// goroutine of the pipeline outlives Replay.
func TestReplayFailures(t *testing.T) {
	const n, bad = 3000, 1500 // far enough in for the reader and decoders to run ahead
	cases := []struct {
		name    string
		corrupt func(raw []byte) []byte
		want    string
	}{
		{"undecodable", func([]byte) []byte { return []byte(`{"v":1,"id":"x"`) }, fmt.Sprintf("replay seq %d: ", bad)},
		{"unknown field", func(raw []byte) []byte {
			return append([]byte(`{"extra":1,`), raw[1:]...)
		}, fmt.Sprintf("replay seq %d: ", bad)},
		{"broken chain", func(raw []byte) []byte {
			ev, err := events.Decode(raw)
			if err != nil {
				panic(err)
			}
			ev.Prev = events.Hash([]byte("forged"))
			b, err := events.Encode(&ev)
			if err != nil {
				panic(err)
			}
			return b
		}, fmt.Sprintf("replay seq %d: hash chain broken: prev %q, previous message hashes to ", bad, events.Hash([]byte("forged")))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			js, msgs := replayStream(t, n, bad, tc.corrupt)
			for _, decoders := range []int{1, 2} {
				st := enforcer.New(enforcer.Config{Partition: 0})
				visited := uint64(0)
				_, err := enforcer.ReplayWithDecoders(context.Background(), js, 0, st, func(seq uint64, _ events.Event, _ []byte) { visited = seq }, decoders)
				if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
					t.Fatalf("%d decoders: error %v, want one starting %q", decoders, err, tc.want)
				}
				if tc.name == "broken chain" && !strings.HasSuffix(err.Error(), fmt.Sprintf("%q", events.Hash(msgs[bad-2]))) {
					t.Fatalf("%d decoders: error %v does not name the hash of seq %d", decoders, err, bad-1)
				}
				if st.LastSeq() != bad-1 || visited != bad-1 {
					t.Fatalf("%d decoders: applied up to seq %d, visited up to %d; want %d", decoders, st.LastSeq(), visited, bad-1)
				}
				if g := replayGoroutines(); len(g) > 0 {
					t.Fatalf("%d decoders: %d pipeline goroutines left after Replay returned:\n%s", decoders, len(g), strings.Join(g, "\n\n"))
				}
			}
		})
	}
}

// A cancelled context or a panic in the caller's goroutine (Apply or
// visit) ends the pipeline too.
func TestReplayStops(t *testing.T) {
	const n = 3000
	js, _ := replayStream(t, n, 0, nil)
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st := enforcer.New(enforcer.Config{Partition: 0})
		_, err := enforcer.Replay(ctx, js, 0, st, func(seq uint64, _ events.Event, _ []byte) {
			if seq == 1000 {
				cancel()
			}
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
		if st.LastSeq() != 1000 {
			t.Fatalf("applied up to seq %d, want 1000", st.LastSeq())
		}
		if g := replayGoroutines(); len(g) > 0 {
			t.Fatalf("%d pipeline goroutines left after Replay returned:\n%s", len(g), strings.Join(g, "\n\n"))
		}
	})
	t.Run("panic", func(t *testing.T) {
		st := enforcer.New(enforcer.Config{Partition: 0})
		func() {
			defer func() {
				if r := recover(); r != "stop at 1000" {
					t.Fatalf("recovered %v", r)
				}
			}()
			_, _ = enforcer.Replay(context.Background(), js, 0, st, func(seq uint64, _ events.Event, _ []byte) {
				if seq == 1000 {
					panic("stop at 1000")
				}
			})
		}()
		if g := replayGoroutines(); len(g) > 0 {
			t.Fatalf("%d pipeline goroutines left after Replay panicked:\n%s", len(g), strings.Join(g, "\n\n"))
		}
	})
}

// A reader whose consumer delivers nothing more gives up after
// replayStalls stalls, each a new consumer at the next sequence, having
// read everything there was; cancelling ctx during a stall ends it at once.
func TestReplayStalls(t *testing.T) {
	js, msgs := replayStream(t, 20, 0, nil)
	stream, err := js.Stream(context.Background(), streams.StreamName(0))
	if err != nil {
		t.Fatal(err)
	}
	const stall = 100 * time.Millisecond
	start := time.Now()
	n, err := enforcer.ReadReplayStalling(context.Background(), stream, uint64(len(msgs))+3, stall)
	took := time.Since(start)
	if n != len(msgs) {
		t.Errorf("read %d messages, want %d", n, len(msgs))
	}
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("no message after seq %d", len(msgs))) {
		t.Errorf("err = %v, want no message after seq %d", err, len(msgs))
	}
	// Five stalls of at least one stall period each (at most two: the
	// watchdog ticks once per period).
	if took < 5*stall || took > 12*stall+2*time.Second {
		t.Errorf("gave up after %s, want between %s and %s", took, 5*stall, 12*stall)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start = time.Now()
	n, err = enforcer.ReadReplayStalling(ctx, stream, uint64(len(msgs))+3, time.Minute)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a cancelled reader took %s to stop, with a one-minute stall period", took)
	}
	// Once ctx ends the reader may drop its last batch (Replay has
	// returned and needs none); what it does hand over is ctx's error.
	if n > len(msgs) || err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: read %d (at most %d), err %v (want none or context.Canceled)", n, len(msgs), err)
	}
}
