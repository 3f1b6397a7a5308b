// Package natstest starts real nats-server instances for tests: a single
// in-process JetStream server (RunServer) or a 3-node JetStream cluster on
// loopback (RunCluster), both with tally's request mapping, Ledger to create
// the ledger's streams and buckets on one, and CheckFor to
// poll for a condition instead of sleeping.
//
// It is imported only by tests. Every server lives in t.TempDir() and is
// shut down by t.Cleanup; nothing is mocked.
package natstest

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/streams"
)

// Option changes how RunServer and RunCluster configure their servers.
type Option func(*options)

type options struct {
	partitions int  // P of the request mapping
	syncAlways bool // fsync before every ack
}

func newOptions(opts []Option) options {
	o := options{partitions: streams.DefaultPartitions}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithPartitions sets P for the request mapping (default
// streams.DefaultPartitions).
func WithPartitions(p int) Option { return func(o *options) { o.partitions = p } }

// WithSyncAlways makes JetStream fsync every write before acknowledging it.
func WithSyncAlways() Option { return func(o *options) { o.syncAlways = true } }

// serverName is the name of the single test server.
const serverName = "test"

// RunServer starts an in-process JetStream server on a random loopback port
// with its store in t.TempDir() and the request mapping, through
// streams.StartServer (the embedded server `tally serve` runs). It is shut
// down when the test ends.
func RunServer(t testing.TB, opts ...Option) *server.Server {
	t.Helper()
	o := newOptions(opts)
	s, err := streams.StartServer(streams.ServerConfig{
		Name:       serverName,
		DataDir:    t.TempDir(),
		Listen:     "127.0.0.1:-1",
		Partitions: o.partitions,
		SyncAlways: o.syncAlways,
	})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect opens an in-process connection to s (no TCP), closed when the
// test ends. opts are added to the connection's options.
func Connect(t testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.InProcessServer(s), nats.Name(t.Name())}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		t.Fatalf("natstest: connect in-process to %s: %v", s.Name(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// ConnectTCP opens a connection to s through its loopback client port, as
// tally serve's replays read its embedded server; it is closed when the
// test ends.
func ConnectTCP(t testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.Name(t.Name())}, opts...)
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("natstest: connect to %s: %v", s.ClientURL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Ledger connects to s in-process (Connect, with opts) and creates the
// ledger's streams and buckets for p partitions (streams.Ensure), as tally
// serve does when it starts; it returns the connection and its JetStream.
func Ledger(t testing.TB, s *server.Server, p int, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc := Connect(t, s, opts...)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := streams.Ensure(ctx, js, streams.Config{Partitions: p}); err != nil {
		t.Fatalf("natstest: create the ledger: %v", err)
	}
	return nc, js
}

// PartitionState returns the state of partition n's stream (its message
// count, last sequence, …), failing the test if it cannot be read.
func PartitionState(t testing.TB, js jetstream.JetStream, n int) jetstream.StreamState {
	t.Helper()
	s, err := js.Stream(context.Background(), streams.StreamName(n))
	if err != nil {
		t.Fatalf("natstest: stream of partition %d: %v", n, err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatalf("natstest: stream of partition %d: %v", n, err)
	}
	return info.State
}

// CheckFor calls f every interval until it returns nil, and fails the test
// with f's last error if that has not happened within total. It is the way
// tests wait for something asynchronous (after nats-server's checkFor).
func CheckFor(t testing.TB, total, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: still failing after %s: %v", total, err)
		}
		time.Sleep(interval)
	}
}

// ConnectFar opens a TCP connection to s whose every write reaches the
// server delay late, as from an enforcer on a distant machine: what it
// sends loses nearly every race against a nearby client. It is closed
// when the test ends.
func ConnectFar(t testing.TB, s *server.Server, delay time.Duration, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.Name(t.Name()), nats.SetCustomDialer(farDialer{delay})}, opts...)
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("natstest: connect to %s: %v", s.ClientURL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

type farDialer struct{ delay time.Duration }

func (d farDialer) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return farConn{c, d.delay}, nil
}

type farConn struct {
	net.Conn
	delay time.Duration
}

func (c farConn) Write(b []byte) (int, error) {
	time.Sleep(c.delay)
	return c.Conn.Write(b)
}

// Buffer is a bytes.Buffer that a logger or a command may write to while
// the test reads it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
