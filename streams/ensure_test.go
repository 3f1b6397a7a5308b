package streams_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

const (
	testTimeout  = 30 * time.Second
	pollInterval = 25 * time.Millisecond
)

// newJetStream starts a server and returns a JetStream context on it and a
// context bounded by testTimeout.
func newJetStream(t *testing.T) (jetstream.JetStream, *nats.Conn, context.Context) {
	t.Helper()
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return js, nc, ctx
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     streams.Config
		wantErr string // substring; "" means valid
	}{
		{"zero takes defaults", streams.Config{}, ""},
		{"cluster", streams.Config{Partitions: 16, Replicas: 3, Duplicates: time.Minute, LeaseTTL: 5 * time.Second}, ""},
		{"negative partitions", streams.Config{Partitions: -1}, "partitions"},
		{"too many partitions", streams.Config{Partitions: streams.MaxPartitions + 1}, "partitions"},
		{"too many replicas", streams.Config{Replicas: 7}, "replicas"},
		{"short duplicates", streams.Config{Duplicates: time.Millisecond}, "duplicates"},
		{"long duplicates", streams.Config{Duplicates: 48 * time.Hour}, "duplicates"},
		{"short lease", streams.Config{LeaseTTL: 10 * time.Millisecond}, "lease"},
		{"long lease", streams.Config{LeaseTTL: time.Hour}, "lease"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error about %q", err, tt.wantErr)
			}
		})
	}
}

// TestEnsureIdempotent runs Ensure twice and checks every asset.
func TestEnsureIdempotent(t *testing.T) {
	js, _, ctx := newJetStream(t)
	cfg := streams.Config{}
	first, err := streams.Ensure(ctx, js, cfg)
	if err != nil {
		t.Fatalf("first Ensure: %v", err)
	}
	second, err := streams.Ensure(ctx, js, cfg)
	if err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	if first != second || first.Partitions != streams.DefaultPartitions {
		t.Errorf("layouts %+v then %+v, want P=%d twice", first, second, streams.DefaultPartitions)
	}

	var names []string
	for name := range js.StreamNames(ctx).Name() {
		names = append(names, name)
	}
	slices.Sort(names)
	want := []string{"KV_" + streams.BalancesBucket, "KV_" + streams.BudgetsBucket, "KV_" + streams.LeasesBucket,
		"KV_" + streams.MetaBucket, "OBJ_" + streams.SnapshotsBucket}
	for n := range streams.DefaultPartitions {
		want = append(want, streams.StreamName(n))
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("streams %q, want %q", names, want)
	}

	meta, err := js.KeyValue(ctx, streams.MetaBucket)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		streams.MetaKeyPartitions: strconv.Itoa(streams.DefaultPartitions),
		streams.MetaKeyFormat:     strconv.Itoa(streams.FormatVersion),
	} {
		e, err := meta.Get(ctx, key)
		if err != nil {
			t.Fatalf("meta %q: %v", key, err)
		}
		if string(e.Value()) != want {
			t.Errorf("meta %q = %q, want %q", key, e.Value(), want)
		}
		if e.Revision() > 2 {
			t.Errorf("meta %q rewritten (revision %d)", key, e.Revision())
		}
	}
	if _, err := js.ObjectStore(ctx, streams.SnapshotsBucket); err != nil {
		t.Errorf("object store: %v", err)
	}
}

// TestEnsureConcurrent runs Ensure from several goroutines at once, with
// different P: they all agree on one.
func TestEnsureConcurrent(t *testing.T) {
	js, _, ctx := newJetStream(t)
	const callers = 4
	layouts := make([]streams.Layout, callers)
	var g errgroup.Group
	for i := range callers {
		g.Go(func() error {
			var err error
			layouts[i], err = streams.Ensure(ctx, js, streams.Config{Partitions: 2 + i})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	for _, l := range layouts[1:] {
		if l != layouts[0] {
			t.Fatalf("concurrent Ensure calls disagree: %+v", layouts)
		}
	}
}

// TestEnsurePartitionsFixed: P is fixed when the ledger is created.
func TestEnsurePartitionsFixed(t *testing.T) {
	js, _, ctx := newJetStream(t)
	if _, err := streams.Open(ctx, js); !errors.Is(err, streams.ErrNoLedger) {
		t.Fatalf("Open before Ensure = %v, want ErrNoLedger", err)
	}
	if _, err := streams.Ensure(ctx, js, streams.Config{Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	layout, err := streams.Ensure(ctx, js, streams.Config{Partitions: 8})
	if err != nil {
		t.Fatalf("Ensure with another P: %v", err)
	}
	if layout.Partitions != 4 {
		t.Errorf("Ensure(P=8) on a P=4 ledger: Partitions = %d, want 4", layout.Partitions)
	}
	if _, err := js.Stream(ctx, streams.StreamName(4)); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream %s: %v, want not found", streams.StreamName(4), err)
	}
	_, err = streams.Ensure(ctx, js, streams.Config{Partitions: 8, RequirePartitions: true})
	if !errors.Is(err, streams.ErrPartitionsMismatch) {
		t.Errorf("Ensure(P=8, required) = %v, want ErrPartitionsMismatch", err)
	}
	if _, err := streams.Ensure(ctx, js, streams.Config{Partitions: 4, RequirePartitions: true}); err != nil {
		t.Errorf("Ensure(P=4, required) = %v", err)
	}
	layout, err = streams.Open(ctx, js)
	if err != nil || layout.Partitions != 4 {
		t.Errorf("Open = %+v, %v; want P=4", layout, err)
	}
}

func TestEnsureRefusesOtherFormat(t *testing.T) {
	js, _, ctx := newJetStream(t)
	meta, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.MetaBucket})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := meta.Put(ctx, streams.MetaKeyFormat, []byte("99")); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.Ensure(ctx, js, streams.Config{}); !errors.Is(err, streams.ErrFormat) {
		t.Errorf("Ensure = %v, want ErrFormat", err)
	}
	if _, err := streams.Open(ctx, js); !errors.Is(err, streams.ErrFormat) {
		t.Errorf("Open = %v, want ErrFormat", err)
	}
}

func TestEnsureRefusesDeletableStream(t *testing.T) {
	js, _, ctx := newJetStream(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: streams.StreamName(0), Subjects: []string{streams.EventWildcard(0)}, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	_, err := streams.Ensure(ctx, js, streams.Config{})
	if !errors.Is(err, streams.ErrIncompatible) {
		t.Fatalf("Ensure = %v, want ErrIncompatible", err)
	}
	if !strings.Contains(err.Error(), "deletes allowed") {
		t.Errorf("error %q does not say what is wrong", err)
	}
}

// TestPartitionStreamIsImmutable: the ledger's streams keep every event.
func TestPartitionStreamIsImmutable(t *testing.T) {
	js, _, ctx := newJetStream(t)
	if _, err := streams.Ensure(ctx, js, streams.Config{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	for n := range 2 {
		s, err := js.Stream(ctx, streams.StreamName(n))
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		if !c.DenyDelete || !c.DenyPurge || !c.AllowAtomicPublish || c.Storage != jetstream.FileStorage ||
			c.Retention != jetstream.LimitsPolicy || c.MaxAge != 0 || c.MaxMsgs > 0 || c.MaxBytes > 0 ||
			c.Duplicates != streams.DefaultDuplicates || !slices.Equal(c.Subjects, []string{streams.EventWildcard(n)}) {
			t.Errorf("stream %s config %+v", c.Name, c)
		}
	}

	subject := streams.EventSubject(0, "tenant:acme", "budget.set")
	ack, err := js.Publish(ctx, subject, []byte(`{"v":1}`), jetstream.WithMsgID("ev-1"))
	if err != nil {
		t.Fatal(err)
	}
	// Nats-Msg-Id deduplicates a retried append.
	dup, err := js.Publish(ctx, subject, []byte(`{"v":1}`), jetstream.WithMsgID("ev-1"))
	if err != nil || !dup.Duplicate || dup.Sequence != ack.Sequence {
		t.Errorf("retried append = %+v, %v; want a duplicate of seq %d", dup, err, ack.Sequence)
	}

	s, err := js.Stream(ctx, streams.StreamName(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx, ack.Sequence); err == nil {
		t.Error("DeleteMsg succeeded on a ledger stream")
	}
	if err := s.SecureDeleteMsg(ctx, ack.Sequence); err == nil {
		t.Error("SecureDeleteMsg succeeded on a ledger stream")
	}
	if err := s.Purge(ctx); err == nil {
		t.Error("Purge succeeded on a ledger stream")
	}
	if _, err := s.GetMsg(ctx, ack.Sequence); err != nil {
		t.Errorf("event %d gone: %v", ack.Sequence, err)
	}
}

// TestPartitionStreamTakesAtomicBatch sends a fenced atomic batch with raw
// headers, as the enforcer's group commit does, then a stale one.
func TestPartitionStreamTakesAtomicBatch(t *testing.T) {
	js, nc, ctx := newJetStream(t)
	if _, err := streams.Ensure(ctx, js, streams.Config{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	batch := func(id string, expectLast uint64, size int) (*nats.Msg, error) {
		for i := 1; i <= size; i++ {
			m := nats.NewMsg(streams.EventSubject(0, "tenant:acme", "usage.charged"))
			m.Data = fmt.Appendf(nil, `{"i":%d}`, i)
			m.Header.Set("Nats-Batch-Id", id)
			m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i))
			if i == 1 {
				m.Header.Set("Nats-Expected-Last-Sequence", strconv.FormatUint(expectLast, 10))
			}
			if i < size {
				if err := nc.PublishMsg(m); err != nil {
					return nil, err
				}
				continue
			}
			m.Header.Set("Nats-Batch-Commit", "1")
			return nc.RequestMsgWithContext(ctx, m)
		}
		panic("unreachable")
	}
	reply, err := batch("b1", 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	var ack struct {
		Seq   uint64 `json:"seq"`
		Count int    `json:"count"`
		Error *struct {
			ErrCode int `json:"err_code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(reply.Data, &ack); err != nil || ack.Error != nil || ack.Seq != 3 || ack.Count != 3 {
		t.Fatalf("batch ack %s (%v), want seq 3 count 3", reply.Data, err)
	}
	// A stale writer's batch (fence 0 again) is refused whole.
	reply, err = batch("b2", 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	ack.Error = nil
	if err := json.Unmarshal(reply.Data, &ack); err != nil || ack.Error == nil || ack.Error.ErrCode != 10071 {
		t.Errorf("stale batch ack %s, want error 10071", reply.Data)
	}
	s, err := js.Stream(ctx, streams.StreamName(0))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().State.Msgs; got != 3 {
		t.Errorf("stream holds %d events, want 3", got)
	}
}

// TestLeaseExpires: a lease not renewed within LeaseTTL disappears, a
// watcher sees it go, and the partition can be claimed again.
func TestLeaseExpires(t *testing.T) {
	js, _, ctx := newJetStream(t)
	if _, err := streams.Ensure(ctx, js, streams.Config{Partitions: 1, LeaseTTL: streams.MinLeaseTTL}); err != nil {
		t.Fatal(err)
	}
	leases, err := js.KeyValue(ctx, streams.LeasesBucket)
	if err != nil {
		t.Fatal(err)
	}
	w, err := leases.Watch(ctx, "p0", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	if _, err := leases.Create(ctx, "p0", []byte("owner-a")); err != nil {
		t.Fatal(err)
	}
	if _, err := leases.Create(ctx, "p0", []byte("owner-b")); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("second claim = %v, want ErrKeyExists", err)
	}
	sawDelete := false
	natstest.CheckFor(t, 10*time.Second, pollInterval, func() error {
		for {
			select {
			case e := <-w.Updates():
				if e != nil && e.Operation() != jetstream.KeyValuePut {
					sawDelete = true
				}
				continue
			default:
			}
			break
		}
		if !sawDelete {
			return errors.New("watcher has not seen the lease expire")
		}
		_, err := leases.Get(ctx, "p0")
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("lease still readable: %v", err)
		}
		return nil
	})
	if _, err := leases.Create(ctx, "p0", []byte("owner-b")); err != nil {
		t.Errorf("claim after expiry: %v", err)
	}
}

// TestEnsureCluster creates an R3 ledger right after the cluster forms,
// from two clients on different nodes at once.
func TestEnsureCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped in -short")
	}
	c := natstest.RunCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var g errgroup.Group
	layouts := make([]streams.Layout, 2)
	for i := range layouts {
		nc := natstest.Connect(t, c.Server(i))
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		g.Go(func() error {
			var err error
			layouts[i], err = streams.Ensure(ctx, js, streams.Config{Partitions: 4, Replicas: 3})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if layouts[0] != layouts[1] || layouts[0].Partitions != 4 {
		t.Fatalf("layouts %+v", layouts)
	}
	js, err := jetstream.New(natstest.Connect(t, c.Server(2)))
	if err != nil {
		t.Fatal(err)
	}
	for n := range 4 {
		s, err := js.Stream(ctx, streams.StreamName(n))
		if err != nil {
			t.Fatal(err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("%s has %d replicas, want 3", streams.StreamName(n), r)
		}
	}
	if l, err := streams.Open(ctx, js); err != nil || l.Partitions != 4 {
		t.Errorf("Open = %+v, %v", l, err)
	}
}
