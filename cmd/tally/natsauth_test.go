package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// testPKI is a CA, a server certificate for 127.0.0.1 and a client
// certificate, as PEM files in a directory.
type testPKI struct {
	ca, serverCert, serverKey, clientCert, clientKey string
	otherCA                                          string // a CA that signed nothing here
}

func writeTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	serial := int64(0)
	template := func(cn string) *x509.Certificate {
		serial++
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	}
	newCA := func(name string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
		key := newKey()
		tmpl := template(name)
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return cert, key, write(name+".pem", "CERTIFICATE", der)
	}
	caCert, caKey, caFile := newCA("tally-test-ca")
	_, _, otherCAFile := newCA("other-ca")
	leaf := func(name string, usage x509.ExtKeyUsage) (string, string) {
		key := newKey()
		tmpl := template(name)
		tmpl.KeyUsage, tmpl.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{usage}
		tmpl.IPAddresses, tmpl.DNSNames = []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	p := testPKI{ca: caFile, otherCA: otherCAFile}
	p.serverCert, p.serverKey = leaf("server", x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", x509.ExtKeyUsageClientAuth)
	return p
}

// startConfigured starts a JetStream server on a free loopback port from
// a nats-server configuration text (its store in a temporary directory),
// shut down when the test ends, and returns its port.
func startConfigured(t *testing.T, conf string) int {
	t.Helper()
	return startConfiguredAt(t, conf, -1, t.TempDir()).Addr().(*net.TCPAddr).Port
}

// startConfiguredAt starts a JetStream server from a configuration text on
// a given loopback port (-1: a free one) with its store in storeDir, shut
// down when the test ends (or before, by the test).
func startConfiguredAt(t *testing.T, conf string, port int, storeDir string) *server.Server {
	t.Helper()
	opts := &server.Options{}
	if err := opts.ProcessConfigString(conf); err != nil {
		t.Fatalf("server configuration: %v\n%s", err, conf)
	}
	opts.Host, opts.Port, opts.NoSigs, opts.NoLog = "127.0.0.1", port, true, true
	opts.JetStream, opts.StoreDir = true, storeDir
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	return s
}

// newNKeyUser makes a user key pair and writes its seed to a file.
func newNKeyUser(t *testing.T) (pub, seedFile string, kp nkeys.KeyPair) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ = kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile = filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return pub, seedFile, kp
}

// secureLedger runs `tally serve --nats-url url` with the given connection
// flags (and serveArgs) until the test ends, waits until it answers through
// a client command with the same flags, and returns its log.
func secureLedger(t *testing.T, url string, partitions int, serveArgs []string, flags ...string) *natstest.Buffer {
	t.Helper()
	_, log := startServe(t, slices.Concat([]string{"--nats-url", url, "--partitions", fmt.Sprint(partitions), "--log-level", "warn"}, serveArgs, flags),
		func(string) error {
			args := append([]string{"budget", "list", "--root", "tenant:acme", "--nats-url", url, "--timeout", "1s"}, flags...)
			if code, out, errOut := tallyCmd(args...); code != exitOK {
				return fmt.Errorf("budget list: exit %d: %s%s", code, out, errOut)
			}
			return nil
		})
	return log
}

// tallyCmd runs one tally command in-process.
func tallyCmd(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// refusedConn is a connection the servers must refuse: the flags it is made
// with, and what its error and its fix must say.
type refusedConn struct {
	flags     []string
	want, fix string
}

// Fixes printed with a refused connection.
const (
	fixCredentials = "try: check the credentials: --nats-creds, --nats-nkey"
	fixTLS         = "try: check TLS: --nats-tls-ca"
)

// checkSecuredCommands runs the client, report, projector and bench
// commands against a ledger served at url: with flags each works; each of
// the refusals fails with exit 1 and an error and fix that say why.
func checkSecuredCommands(t *testing.T, url string, flags []string, refusals map[string]refusedConn) {
	t.Helper()
	with := func(args ...string) []string { return append(append(args, "--nats-url", url), flags...) }
	if code, out, errOut := tallyCmd(with("budget", "set", "--scope", "tenant:acme", "--name", "monthly", "--limit", "USD=10")...); code != exitOK {
		t.Fatalf("budget set: exit %d: %s%s", code, out, errOut)
	}
	code, out, errOut := tallyCmd(with("reserve", "--scope", "tenant:acme/run:r1", "--amount", "USD=4", "--json")...)
	if code != exitOK || !strings.Contains(out, `"decision": "granted"`) {
		t.Fatalf("reserve: exit %d: %s%s", code, out, errOut)
	}
	if code, out, errOut := tallyCmd(with("reserve", "--scope", "tenant:acme/run:r2", "--amount", "USD=7")...); code != exitDenied {
		t.Fatalf("reserve over the limit: exit %d, want %d: %s%s", code, exitDenied, out, errOut)
	}
	// budget.set, reservation.granted, reservation.denied and the
	// budget.threshold_crossed of the first denial.
	if code, out, errOut := tallyCmd(with("events", "tail", "--root", "tenant:acme")...); code != exitOK || strings.Count(out, "\n") != 4 {
		t.Fatalf("events tail: exit %d, want 4 events: %s%s", code, out, errOut)
	}
	if code, out, errOut := tallyCmd(with("audit", "verify", "--no-projection")...); code != exitOK {
		t.Fatalf("audit verify: exit %d: %s%s", code, out, errOut)
	}
	if code, out, errOut := tallyCmd(with("projector", "--once", "--http-listen", "")...); code != exitOK {
		t.Fatalf("projector --once: exit %d: %s%s", code, out, errOut)
	}
	if code, out, errOut := tallyCmd(with("report", "balances", "--root", "tenant:acme")...); code != exitOK || !strings.Contains(out, "monthly") {
		t.Fatalf("report balances: exit %d: %s%s", code, out, errOut)
	}
	if code, out, errOut := tallyCmd(with("bench", "--clients", "2", "--roots", "2", "--duration", "1s", "--json")...); code != exitOK || !strings.Contains(out, `"decisions_per_s"`) {
		t.Fatalf("bench: exit %d: %s%s", code, out, errOut)
	}
	for name, r := range refusals {
		for _, cmd := range [][]string{{"budget", "list", "--root", "tenant:acme", "--timeout", "2s"}, {"audit", "verify"}} {
			code, out, errOut := tallyCmd(append(append(cmd, "--nats-url", url), r.flags...)...)
			if code != exitFail || !strings.Contains(errOut, r.want) || !strings.Contains(errOut, r.fix) {
				t.Errorf("%s, %s: exit %d, want %d with %q and %q: %s%s", name, cmd[0], code, exitFail, r.want, r.fix, out, errOut)
			}
		}
	}
}

// TestMutualTLSWithNKey runs the ledger on a server that takes only TLS
// connections with a client certificate of its CA, from a user it knows
// by NKey: `tally serve --nats-url` and every kind of command connect with
// --nats-tls-ca, --nats-tls-cert, --nats-tls-key and --nats-nkey.
func TestMutualTLSWithNKey(t *testing.T) {
	const p = 2
	pki := writeTestPKI(t)
	pub, seedFile, _ := newNKeyUser(t)
	port := startConfigured(t, fmt.Sprintf(`
tls {
  cert_file: %q
  key_file: %q
  ca_file: %q
  verify: true
}
authorization { users = [ { nkey: %q } ] }
%s`, pki.serverCert, pki.serverKey, pki.ca, pub, streams.Mapping(p)))
	url := fmt.Sprintf("tls://127.0.0.1:%d", port)
	flags := []string{"--nats-tls-ca", pki.ca, "--nats-tls-cert", pki.clientCert, "--nats-tls-key", pki.clientKey, "--nats-nkey", seedFile}
	secureLedger(t, url, p, nil, flags...)
	_, otherSeed, _ := newNKeyUser(t)
	clientCert := []string{"--nats-tls-cert", pki.clientCert, "--nats-tls-key", pki.clientKey}
	unknownCA := "x509: certificate signed by unknown authority"
	checkSecuredCommands(t, url, flags, map[string]refusedConn{
		"no CA":      {slices.Concat(clientCert, []string{"--nats-nkey", seedFile}), unknownCA, fixTLS},
		"another CA": {slices.Concat(clientCert, []string{"--nats-tls-ca", pki.otherCA, "--nats-nkey", seedFile}), unknownCA, fixTLS},
		// TLS 1.3: the server refuses the certificate after the handshake,
		// and the client sees its alert or a closed connection.
		"no client certificate": {[]string{"--nats-tls-ca", pki.ca, "--nats-nkey", seedFile}, "tls", fixTLS},
		"no NKey":               {slices.Concat(clientCert, []string{"--nats-tls-ca", pki.ca}), "Authorization Violation", fixCredentials},
		"unknown NKey":          {slices.Concat(clientCert, []string{"--nats-tls-ca", pki.ca, "--nats-nkey", otherSeed}), "Authorization Violation", fixCredentials},
	})
}

// TestTLSFilesReadAgainAtReconnect rotates the certificates under a running
// `tally serve --nats-url`: the server restarts with certificates of
// another CA, the files behind --nats-tls-ca, --nats-tls-cert and
// --nats-tls-key are replaced, and the enforcer answers again without a
// restart of its own, because it reads the files again when it reconnects.
// Had it kept what it read at start it would never reconnect: the new
// server refuses the old client certificate, and the old CA refuses the
// new server's. A rotation gone wrong (files of a CA the server does not
// use) keeps it away, and its log says why until the right files come.
func TestTLSFilesReadAgainAtReconnect(t *testing.T) {
	const p = 2
	before, after, wrong := writeTestPKI(t), writeTestPKI(t), writeTestPKI(t)
	dir := t.TempDir()
	ca, cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	install := func(pki testPKI) {
		t.Helper()
		for dst, src := range map[string]string{ca: pki.ca, cert: pki.clientCert, key: pki.clientKey} {
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			// Renamed over the old file, as certificate managers do: no
			// reader sees half a file.
			if err := os.WriteFile(dst+".new", data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(dst+".new", dst); err != nil {
				t.Fatal(err)
			}
		}
	}
	conf := func(pki testPKI) string {
		return fmt.Sprintf(`
tls {
  cert_file: %q
  key_file: %q
  ca_file: %q
  verify: true
}
%s`, pki.serverCert, pki.serverKey, pki.ca, streams.Mapping(p))
	}
	install(before)
	store := t.TempDir()
	s := startConfiguredAt(t, conf(before), -1, store)
	port := s.Addr().(*net.TCPAddr).Port
	url := fmt.Sprintf("tls://127.0.0.1:%d", port)
	flags := []string{"--nats-tls-ca", ca, "--nats-tls-cert", cert, "--nats-tls-key", key}
	httpAddr := freeAddr(t)
	log := secureLedger(t, url, p, []string{"--http-listen", httpAddr}, flags...)
	metric := func(name string) float64 {
		t.Helper()
		v, ok := scrape(t, httpAddr, name, `conn="tally-enforcer"`)
		if !ok {
			t.Fatalf("no %s{conn=\"tally-enforcer\"} on /metrics", name)
		}
		return v
	}
	if c, r := metric("tally_nats_connected"), metric("tally_nats_reconnects_total"); c != 1 || r != 0 {
		t.Fatalf("before the rotation: connected %v, reconnects %v; want 1 and 0", c, r)
	}
	with := func(args ...string) []string {
		return append(append(args, "--nats-url", url, "--timeout", "2s"), flags...)
	}
	if code, out, errOut := tallyCmd(with("budget", "set", "--scope", "tenant:acme", "--name", "monthly", "--limit", "USD=10")...); code != exitOK {
		t.Fatalf("budget set: exit %d: %s%s", code, out, errOut)
	}
	reserve := func(run string) (int, string, string) {
		return tallyCmd(with("reserve", "--scope", "tenant:acme/run:"+run, "--amount", "USD=4", "--key", "rotation-"+run)...)
	}
	if code, out, errOut := reserve("r1"); code != exitOK {
		t.Fatalf("reserve before the rotation: exit %d: %s%s", code, out, errOut)
	}

	s.Shutdown()
	s.WaitForShutdown()
	install(after)
	s = startConfiguredAt(t, conf(after), port, store)
	// The same key on every attempt: an attempt decided after its client
	// gave up is not granted twice.
	natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if code, out, errOut := reserve("r2"); code != exitOK {
			return fmt.Errorf("reserve after the rotation: exit %d: %s%s", code, out, errOut)
		}
		return nil
	})
	if want := `msg="NATS connection lost; reconnecting" conn=tally-enforcer`; !strings.Contains(log.String(), want) {
		t.Errorf("serve's log has no %s:\n%s", want, log.String())
	}
	if c, r := metric("tally_nats_connected"), metric("tally_nats_reconnects_total"); c != 1 || r != 1 {
		t.Errorf("after the rotation: connected %v, reconnects %v; want 1 and 1", c, r)
	}

	// A rotation gone wrong: the enforcer cannot come back, and says why.
	s.Shutdown()
	s.WaitForShutdown()
	install(wrong)
	startConfiguredAt(t, conf(after), port, store)
	natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if !strings.Contains(log.String(), `msg="NATS reconnect attempt failed; retrying" conn=tally-enforcer err="nats: tls error: tls: failed to verify certificate: x509: certificate signed by unknown authority`) {
			return fmt.Errorf("serve's log does not say why it cannot reconnect:\n%s", log.String())
		}
		return nil
	})
	if c := metric("tally_nats_connected"); c != 0 {
		t.Errorf("while the files are wrong: connected %v, want 0", c)
	}
	install(after)
	natstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if code, out, errOut := reserve("r2"); code != exitOK {
			return fmt.Errorf("reserve once the right files are back: exit %d: %s%s", code, out, errOut)
		}
		return nil
	})
	// The ledger is the one from before: a third $4 does not fit in $10.
	if code, out, errOut := reserve("r3"); code != exitDenied {
		t.Fatalf("third reserve: exit %d, want %d (denied): %s%s", code, exitDenied, out, errOut)
	}
}

// TestCredsFile runs the ledger on a server in operator mode (decentralized
// JWT authentication, as nsc and Synadia Cloud set up): the account's JWT
// carries the request mapping and JetStream limits, and every process
// connects with --nats-creds.
func TestCredsFile(t *testing.T) {
	const p = 2
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	opKP, err := nkeys.CreateOperator()
	must(err)
	opPub, _ := opKP.PublicKey()
	opJWT, err := jwt.NewOperatorClaims(opPub).Encode(opKP)
	must(err)
	account := func(name string) (nkeys.KeyPair, string, *jwt.AccountClaims) {
		kp, err := nkeys.CreateAccount()
		must(err)
		pub, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		ac.Name = name
		return kp, pub, ac
	}
	_, sysPub, sysClaims := account("SYS")
	sysJWT, err := sysClaims.Encode(opKP)
	must(err)
	accKP, accPub, accClaims := account("TALLY")
	accClaims.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accClaims.Mappings = jwt.Mapping{jwt.Subject(streams.MappingSource): {{Subject: jwt.Subject(streams.MappingDestination(p))}}}
	accJWT, err := accClaims.Encode(opKP)
	must(err)
	creds := func(name string, signer nkeys.KeyPair) string {
		ukp, err := nkeys.CreateUser()
		must(err)
		upub, _ := ukp.PublicKey()
		useed, _ := ukp.Seed()
		uc := jwt.NewUserClaims(upub)
		uc.Name = name
		ujwt, err := uc.Encode(signer)
		must(err)
		data, err := jwt.FormatUserConfig(ujwt, useed)
		must(err)
		f := filepath.Join(t.TempDir(), name+".creds")
		must(os.WriteFile(f, data, 0o600))
		return f
	}
	port := startConfigured(t, fmt.Sprintf(`
operator: %q
system_account: %q
resolver: MEMORY
resolver_preload: {
  %s: %q
  %s: %q
}`, opJWT, sysPub, sysPub, sysJWT, accPub, accJWT))
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	tallyCreds := creds("tally", accKP)
	strangerKP, err := nkeys.CreateAccount() // an account the operator never signed
	must(err)
	secureLedger(t, url, p, nil, "--nats-creds", tallyCreds)
	checkSecuredCommands(t, url, []string{"--nats-creds", tallyCreds}, map[string]refusedConn{
		"no credentials":                {nil, "Authorization Violation", fixCredentials},
		"credentials of another signer": {[]string{"--nats-creds", creds("stranger", strangerKP)}, "Authorization Violation", fixCredentials},
	})
}

// TestNATSAuthFlagErrors: a bad combination or an unreadable or malformed
// file is a usage error naming the flag and the file, before any
// connection is tried; the flags make no sense for servers tally starts.
func TestNATSAuthFlagErrors(t *testing.T) {
	pki := writeTestPKI(t)
	_, seedFile, _ := newNKeyUser(t)
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"creds and nkey", []string{"--nats-creds", junk, "--nats-nkey", seedFile}, "--nats-creds and --nats-nkey exclude each other"},
		{"missing creds", []string{"--nats-creds", missing}, "--nats-creds: open " + missing},
		{"junk creds", []string{"--nats-creds", junk}, "--nats-creds " + junk + ": no user JWT in it"},
		{"nkey file holding a certificate", []string{"--nats-nkey", pki.ca}, "--nats-nkey " + pki.ca},
		{"missing nkey", []string{"--nats-nkey", missing}, "--nats-nkey " + missing},
		{"cert without key", []string{"--nats-tls-cert", pki.clientCert}, "--nats-tls-cert and --nats-tls-key go together"},
		{"key without cert", []string{"--nats-tls-key", pki.clientKey}, "--nats-tls-cert and --nats-tls-key go together"},
		{"missing CA", []string{"--nats-tls-ca", missing}, "--nats-tls-ca: open " + missing},
		{"CA file without a certificate", []string{"--nats-tls-ca", junk}, "--nats-tls-ca " + junk + ": no PEM certificate in it"},
		{"inbox prefix with a wildcard", []string{"--inbox-prefix", "_INBOX_acme.*"}, `--inbox-prefix "_INBOX_acme.*": want a subject prefix without wildcards`},
		{"key of another certificate", []string{"--nats-tls-cert", pki.clientCert, "--nats-tls-key", pki.serverKey},
			"--nats-tls-cert " + pki.clientCert + ", --nats-tls-key " + pki.serverKey + ": tls: private key does not match public key"},
	}
	commands := [][]string{
		{"budget", "list", "--root", "tenant:acme"},
		{"events", "tail"},
		{"audit", "verify"},
		{"projector", "--once"},
		{"enforcer"},
		{"bench"},
	}
	for _, c := range cases {
		for _, cmd := range commands {
			t.Run(c.name+"/"+cmd[0], func(t *testing.T) {
				// CLOSED: nothing listens there, so a connection attempt
				// would fail with another error.
				args := append(append(append([]string{}, cmd...), "--nats-url", "nats://127.0.0.1:1"), c.args...)
				code, out, errOut := tallyCmd(args...)
				if code != exitUsage || !strings.Contains(errOut, "error: "+c.want) {
					t.Errorf("tally %s: exit %d, want %d with %q: %s%s", strings.Join(args, " "), code, exitUsage, c.want, out, errOut)
				}
			})
		}
	}
	for _, args := range [][]string{
		{"serve", "--data-dir", dir, "--http-listen", "", "--nats-listen", "127.0.0.1:-1", "--nats-creds", junk},
		{"bench", "--embedded", "--nats-tls-ca", pki.ca},
		{"bench", "--cluster3", "--nats-nkey", seedFile},
	} {
		code, out, errOut := tallyCmd(args...)
		if code != exitUsage || !strings.Contains(errOut, "secures") {
			t.Errorf("tally %s: exit %d, want %d saying what the flag secures: %s%s", strings.Join(args, " "), code, exitUsage, out, errOut)
		}
	}
}

func TestLoopback(t *testing.T) {
	for listen, want := range map[string]bool{
		"127.0.0.1:4222": true, "127.0.0.1:-1": true, "[::1]:4222": true, "localhost:4222": true, "127.1.2.3:1": true,
		"0.0.0.0:4222": false, ":4222": false, "[::]:4222": false, "10.0.0.5:4222": false, "nats.example.com:4222": false,
		"no port": false,
	} {
		if got := loopback(listen); got != want {
			t.Errorf("loopback(%q) = %v, want %v", listen, got, want)
		}
	}
}

// TestServeWarnsOfAnOpenEmbeddedServer: an embedded server without users
// (none, or a --nats-config without any) logs a warning that says so when
// it listens beyond loopback, and not on loopback or with users.
func TestServeWarnsOfAnOpenEmbeddedServer(t *testing.T) {
	const warning = "the embedded NATS server listens beyond this machine and has no users"
	dir := t.TempDir()
	withUsers := filepath.Join(dir, "users.conf")
	noUsers := filepath.Join(dir, "nousers.conf")
	for f, text := range map[string]string{
		withUsers: `authorization { users: [{user: a, password: b}] }`,
		noUsers:   `max_connections: 1000`,
	} {
		if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		host  string
		extra []string
		warn  bool
	}{
		{"0.0.0.0", nil, true},
		{"127.0.0.1", nil, false},
		{"0.0.0.0", []string{"--nats-config", withUsers}, false},
		{"0.0.0.0", []string{"--nats-config", noUsers}, true},
	} {
		name := c.host
		if len(c.extra) > 0 {
			name += " " + filepath.Base(c.extra[1])
		}
		t.Run(name, func(t *testing.T) {
			_, port, err := net.SplitHostPort(freeAddr(t))
			if err != nil {
				t.Fatal(err)
			}
			stop, stderr := startServe(t, append([]string{"--data-dir", t.TempDir(), "--nats-listen", net.JoinHostPort(c.host, port),
				"--partitions", "1"}, c.extra...), func(log string) error {
				if !strings.Contains(log, "tally serving") {
					return errors.New("not serving yet")
				}
				return nil
			})
			stop()
			if got := strings.Contains(stderr.String(), warning); got != c.warn {
				t.Errorf("warned: %v, want %v:\n%s", got, c.warn, stderr.String())
			}
		})
	}
}
