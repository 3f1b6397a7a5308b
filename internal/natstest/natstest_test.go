package natstest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

const (
	testTimeout  = 30 * time.Second
	pollInterval = 25 * time.Millisecond
)

func TestRunServer(t *testing.T) {
	const p = 4
	s := natstest.RunServer(t, natstest.WithPartitions(p))
	nc := natstest.Connect(t, s)

	// The request mapping is in place: a request lands on its partition.
	sub, err := nc.Subscribe(streams.PartitionWildcard(streams.Partition("tenant:acme", p)), func(m *nats.Msg) {
		_ = m.Respond([]byte(m.Subject))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	reply, err := nc.Request(streams.RequestSubject("tenant:acme", "balance"), nil, 5*time.Second)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	want := streams.PartitionSubject(streams.Partition("tenant:acme", p), "tenant:acme", "balance")
	if got := string(reply.Data); got != want {
		t.Errorf("mapped subject = %q, want %q", got, want)
	}

	// JetStream is enabled.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("JetStream account info: %v", err)
	}
}

func TestCheckForRetriesUntilNil(t *testing.T) {
	calls := 0
	natstest.CheckFor(t, time.Second, time.Millisecond, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 {
		t.Errorf("f called %d times, want 3", calls)
	}
}

// TestCluster forms a cluster, creates an R3 stream, stops its leader and
// checks that a new leader takes writes, then brings the node back.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped in -short")
	}
	c := natstest.RunCluster(t)
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	const stream = "R3TEST"
	natstest.CheckFor(t, testTimeout, pollInterval, func() error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: stream, Subjects: []string{"r3.>"}, Replicas: natstest.ClusterSize, Storage: jetstream.FileStorage,
		})
		return err // 10005 while peers assemble
	})
	publish := func(i int) error {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := js.Publish(pctx, "r3.x", fmt.Appendf(nil, "%d", i))
		return err
	}
	const before = 10
	for i := range before {
		if err := publish(i); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}

	var leader int
	natstest.CheckFor(t, testTimeout, pollInterval, func() error {
		if leader = c.StreamLeader(stream); leader < 0 {
			return errors.New("no stream leader")
		}
		return nil
	})
	c.Shutdown(leader)
	if c.Server(leader) != nil {
		t.Fatalf("node %d still reported running after Shutdown", leader)
	}
	natstest.CheckFor(t, testTimeout, pollInterval, func() error {
		if l := c.StreamLeader(stream); l < 0 || l == leader {
			return fmt.Errorf("stream leader is %d", l)
		}
		return nil
	})
	// Writes continue on the new leader (the client may be reconnecting).
	natstest.CheckFor(t, testTimeout, pollInterval, func() error { return publish(before) })

	c.Restart(leader)
	c.WaitJetStreamReady(t)
	natstest.CheckFor(t, testTimeout, pollInterval, func() error {
		if !c.Server(leader).JetStreamIsStreamCurrent("$G", stream) {
			return fmt.Errorf("restarted node %d not current on %s", leader, stream)
		}
		info, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		if got := info.CachedInfo().State.Msgs; got != before+1 {
			return fmt.Errorf("stream holds %d messages, want %d", got, before+1)
		}
		return nil
	})
}
