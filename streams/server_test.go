package streams_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

func TestServerConfigValidate(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "l.conf")
	if err := os.WriteFile(conf, []byte(`accounts { L { jetstream: enabled, users: [{user: a, password: b}] } }`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     streams.ServerConfig
		wantErr string // substring; "" means valid
	}{
		{"defaults", streams.ServerConfig{DataDir: dir}, ""},
		{"random port -1", streams.ServerConfig{DataDir: dir, Listen: "127.0.0.1:-1"}, ""},
		{"random port 0", streams.ServerConfig{DataDir: dir, Listen: "127.0.0.1:0"}, ""},
		{"no data dir", streams.ServerConfig{}, "data dir"},
		{"no port", streams.ServerConfig{DataDir: dir, Listen: "127.0.0.1"}, "listen address"},
		{"bad port", streams.ServerConfig{DataDir: dir, Listen: "127.0.0.1:70000"}, "port"},
		{"name with space", streams.ServerConfig{DataDir: dir, Name: "a b"}, "server name"},
		{"negative partitions", streams.ServerConfig{DataDir: dir, Partitions: -1}, "partitions"},
		{"too many partitions", streams.ServerConfig{DataDir: dir, Partitions: streams.MaxPartitions + 1}, "partitions"},
		{"negative timeout", streams.ServerConfig{DataDir: dir, ReadyTimeout: -time.Second}, "ready timeout"},
		{"account without a file", streams.ServerConfig{DataDir: dir, Account: "TALLY"}, "only with a configuration file"},
		{"service user without a file", streams.ServerConfig{DataDir: dir, ServiceUser: "u", ServicePassword: "p"}, "only with a configuration file"},
		{"file without a service user", streams.ServerConfig{DataDir: dir, ConfigFile: conf}, "a service user and password are required"},
		{"file", streams.ServerConfig{DataDir: dir, ConfigFile: conf, ServiceUser: "u", ServicePassword: "p"}, ""},
		{"file's account", streams.ServerConfig{DataDir: dir, ConfigFile: conf, Account: "L", ServiceUser: "u", ServicePassword: "p"}, ""},
		{"unknown account", streams.ServerConfig{DataDir: dir, ConfigFile: conf, Account: "M", ServiceUser: "u", ServicePassword: "p"}, `account "M": not defined (accounts: L)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if err == nil { // what only reading the file finds
				_, _, err = tt.cfg.LedgerAccount()
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error about %q", err, tt.wantErr)
			}
		})
	}
}

// oneLedger starts an embedded server on dir in the given sync mode and
// creates a one-partition ledger on it; the context bounds the test's
// JetStream calls.
func oneLedger(t *testing.T, dir string, always bool) (*server.Server, jetstream.JetStream, context.Context) {
	t.Helper()
	s, err := streams.StartServer(streams.ServerConfig{DataDir: dir, Listen: "127.0.0.1:-1", SyncAlways: always})
	if err != nil {
		t.Fatalf("StartServer(SyncAlways=%v): %v", always, err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	js, err := jetstream.New(natstest.Connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	if _, err := streams.Ensure(ctx, js, streams.Config{Partitions: 1}); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	return s, js, ctx
}

// TestStartServerSyncAlways starts the embedded server in both sync modes
// and appends through JetStream.
func TestStartServerSyncAlways(t *testing.T) {
	for _, always := range []bool{true, false} {
		s, js, ctx := oneLedger(t, t.TempDir(), always)
		if got := s.JetStreamConfig().SyncAlways; got != always {
			t.Errorf("JetStream SyncAlways = %v, want %v", got, always)
		}
		if got := s.JetStreamConfig().StoreDir; got == "" {
			t.Error("JetStream has no store dir")
		}
		if _, err := js.Publish(ctx, streams.EventSubject(0, "tenant:acme", "budget.set"), []byte("{}")); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
}

// TestAckedAppendIsInTheFiles pins what JETSTREAM.md says of the embedded
// R1 server in both sync modes: by the time an append is acknowledged its
// bytes are in the stream's files, handed to the operating system (so they
// survive the process being killed; without SyncAlways not yet a power
// loss). Each acked payload is looked for in the store at once, before
// anything flushes or syncs it: a server that acked from its own buffers
// would fail this.
func TestAckedAppendIsInTheFiles(t *testing.T) {
	for _, always := range []bool{true, false} {
		dir := t.TempDir()
		_, js, ctx := oneLedger(t, dir, always)
		for i := range 20 {
			payload := fmt.Sprintf(`{"pin":"acked-%v-%03d"}`, always, i)
			if _, err := js.Publish(ctx, streams.EventSubject(0, "tenant:acme", "budget.set"), []byte(payload)); err != nil {
				t.Fatalf("append: %v", err)
			}
			found := false
			err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() || found {
					return err
				}
				b, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				found = bytes.Contains(b, []byte(payload))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !found {
				t.Fatalf("SyncAlways=%v: acked append %d (%s) is in no file under the store", always, i, payload)
			}
		}
	}
}

func TestStartServerReportsListenFailure(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	_, err = streams.StartServer(streams.ServerConfig{
		DataDir:      t.TempDir(),
		Listen:       l.Addr().String(),
		ReadyTimeout: 500 * time.Millisecond,
	})
	if err == nil {
		t.Fatal("StartServer on a busy port succeeded")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), l.Addr().String()) {
		t.Errorf("error %q does not name the address", err)
	}
}

// TestApplyMapping re-maps a running server to another P.
func TestApplyMapping(t *testing.T) {
	s := natstest.RunServer(t, natstest.WithPartitions(8))
	nc := natstest.Connect(t, s)
	const p = 3
	if err := streams.ApplyMapping(s, "", p); err != nil {
		t.Fatal(err)
	}
	root := "tenant:acme"
	sub, err := nc.SubscribeSync(streams.PartitionWildcard(streams.Partition(root, p)))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(streams.RequestSubject(root, "balance"), nil); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("request did not reach partition %d: %v", streams.Partition(root, p), err)
	}
	if want := streams.PartitionSubject(streams.Partition(root, p), root, "balance"); m.Subject != want {
		t.Errorf("subject %q, want %q", m.Subject, want)
	}
	if err := streams.ApplyMapping(s, "", 0); err == nil {
		t.Error("ApplyMapping(0) succeeded")
	}
}

func TestVerifyMapping(t *testing.T) {
	s := natstest.RunServer(t, natstest.WithPartitions(8))
	nc := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := streams.VerifyMapping(ctx, nc, 8); err != nil {
		t.Errorf("VerifyMapping(8) on a P=8 server: %v", err)
	}
	for _, p := range []int{1, 4, 7, 16} {
		if err := streams.VerifyMapping(ctx, nc, p); !errors.Is(err, streams.ErrMappingMismatch) {
			t.Errorf("VerifyMapping(%d) on a P=8 server = %v, want ErrMappingMismatch", p, err)
		}
	}

	// A server without the mapping.
	bare, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	bare.Start()
	t.Cleanup(func() { bare.Shutdown(); bare.WaitForShutdown() })
	if !bare.ReadyForConnections(10 * time.Second) {
		t.Fatal("bare server not ready")
	}
	if err := streams.VerifyMapping(ctx, natstest.Connect(t, bare), 8); !errors.Is(err, streams.ErrMappingMismatch) {
		t.Errorf("VerifyMapping on a server without mapping = %v, want ErrMappingMismatch", err)
	}
}

// TestStartServerWithConfigFile: a configuration file's account, users and
// permissions hold on the embedded server; the service user reaches the
// ledger's account with full access; an NKey user of the file still
// authenticates beside it; the request mapping is in the ledger's account.
func TestStartServerWithConfigFile(t *testing.T) {
	dir := t.TempDir()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(dir, "u.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "l.conf")
	if err := os.WriteFile(conf, []byte(`accounts {
  L { jetstream: enabled, users: [{nkey: `+pub+`, permissions: {publish: "tally.v1.p.*.tenant:acme.reserve", subscribe: "_INBOX.>"}}] }
  OTHER { users: [{user: o, password: o}] }
}`), 0o600); err != nil {
		t.Fatal(err)
	}
	const p = 3
	s, err := streams.StartServer(streams.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:-1", Partitions: p,
		ConfigFile: conf, Account: "L", ServiceUser: "svc", ServicePassword: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if _, err := nats.Connect(s.ClientURL()); err == nil {
		t.Fatal("a connection without a user was accepted")
	}
	svc := natstest.Connect(t, s, nats.UserInfo("svc", "pw")) // the service user
	js, err := jetstream.New(svc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("service user's JetStream: %v", err)
	}
	if err := streams.VerifyMapping(ctx, svc, p); err != nil {
		t.Fatalf("mapping in the ledger's account: %v", err)
	}
	opt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := nats.Connect(s.ClientURL(), opt)
	if err != nil {
		t.Fatalf("the file's NKey user: %v", err)
	}
	defer agent.Close()
	// The agent's request is mapped to a partition subject, which its
	// permissions allow (they are checked after the mapping), and the
	// service user answers there.
	sub, err := svc.Subscribe(streams.Prefix+".p.*.tenant:acme.reserve", func(m *nats.Msg) { m.Respond([]byte("ok")) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}
	if msg, err := agent.Request(streams.RequestSubject("tenant:acme", "reserve"), nil, 5*time.Second); err != nil || string(msg.Data) != "ok" {
		t.Fatalf("agent request: %v %v", msg, err)
	}
}
