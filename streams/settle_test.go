package streams_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/tallyledger/tally/streams"
)

// TestEnsureWhileTheAccountLoads starts tally's ledger in an account of an
// operator-mode server at the moment another of the account's clients
// connects, as when agents connect while tally starts. The connections
// load the account from the resolver at once; nats-server then sets up the
// account's JetStream twice, and for a moment creating a stream fails
// ("could not create storage directory", 10049) or finds no JetStream.
// In a reproduction with two clients and without -race, 3 to 15 fresh
// servers in 60 failed that way; Ensure must ride it out every time.
func TestEnsureWhileTheAccountLoads(t *testing.T) {
	const servers = 60
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range servers {
		opKP, err := nkeys.CreateOperator()
		must(err)
		opPub, _ := opKP.PublicKey()
		opJWT, err := jwt.NewOperatorClaims(opPub).Encode(opKP)
		must(err)
		account := func(js bool) (nkeys.KeyPair, string, string) {
			kp, err := nkeys.CreateAccount()
			must(err)
			pub, _ := kp.PublicKey()
			ac := jwt.NewAccountClaims(pub)
			if js {
				ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
			}
			claims, err := ac.Encode(opKP)
			must(err)
			return kp, pub, claims
		}
		_, sysPub, sysJWT := account(false)
		accKP, accPub, accJWT := account(true)
		ukp, err := nkeys.CreateUser()
		must(err)
		upub, _ := ukp.PublicKey()
		useed, _ := ukp.Seed()
		ujwt, err := jwt.NewUserClaims(upub).Encode(accKP)
		must(err)

		opts := &server.Options{}
		must(opts.ProcessConfigString(fmt.Sprintf("operator: %q\nsystem_account: %q\nresolver: MEMORY\n"+
			"resolver_preload: {\n  %s: %q\n  %s: %q\n}\n", opJWT, sysPub, sysPub, sysJWT, accPub, accJWT)))
		opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
		opts.JetStream, opts.StoreDir = true, t.TempDir()
		s, err := server.NewServer(opts)
		must(err)
		s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() }) // if the test ends early
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("server not ready")
		}

		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		var wg sync.WaitGroup
		var ensureErr error
		start := make(chan struct{})
		for role := range 4 {
			wg.Go(func() {
				<-start
				// The server may also refuse a connection that races
				// another's load of the account (Authorization Violation,
				// seen once in CI): that is not this test's subject, so a
				// refused connection tries again.
				var nc *nats.Conn
				var err error
				for attempt := 1; ; attempt++ {
					if nc, err = nats.Connect(s.ClientURL(), nats.UserJWTAndSeed(ujwt, string(useed))); err == nil {
						break
					}
					if attempt == 3 {
						t.Errorf("server %d: connect: %v", i+1, err)
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
				defer nc.Close()
				js, err := jetstream.New(nc)
				if err != nil {
					t.Errorf("server %d: %v", i+1, err)
					return
				}
				if role == 0 {
					_, ensureErr = streams.Ensure(ctx, js, streams.Config{Partitions: 1})
					return
				}
				js.AccountInfo(ctx) // an agent's first JetStream call; its result does not matter
			})
		}
		close(start)
		wg.Wait()
		cancel()
		s.Shutdown()
		s.WaitForShutdown()
		if ensureErr != nil {
			t.Fatalf("server %d of %d: Ensure while other clients load the account: %v", i+1, servers, ensureErr)
		}
	}
}
