package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tallyledger/tally/internal/natstest"
)

// startServe runs `tally serve` with args (and no HTTP listener or
// projector unless args say otherwise) until stop is called or the test
// ends, when it must exit 0; it returns once ready, given serve's log so
// far, returns nil. serve exiting before that fails the test.
func startServe(t *testing.T, args []string, ready func(log string) error) (stop func(), log *natstest.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log = &natstest.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--http-listen", "", "--projector=false"}, args...),
			strings.NewReader(""), &bytes.Buffer{}, log)
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("serve exited %d: %s", code, log.String())
			}
		case <-time.After(20 * time.Second):
			t.Errorf("serve did not stop")
		}
	}
	t.Cleanup(stop)
	natstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		select {
		case code := <-done:
			done <- code
			t.Fatalf("serve exited %d: %s", code, log.String())
		default:
		}
		return ready(log.String())
	})
	return stop, log
}

// TestServeWithNATSConfig gives the embedded server the shipped accounts,
// users and permissions (deploy/nats/accounts.conf) and TLS through
// --nats-config: the ledger lives in the TALLY account, each user gets
// what its permissions allow and nothing more, an unknown connection is
// refused, and a restart with another --partitions than the ledger's
// routes requests in that account by the ledger's P.
func TestServeWithNATSConfig(t *testing.T) {
	pki := writeTestPKI(t)
	dir := t.TempDir()
	accounts, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats", "accounts.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), accounts, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "tally.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `
# settings tally owns are taken from its flags instead
listen: 0.0.0.0:4222
jetstream { store_dir: /nonexistent }
tls { cert_file: %q, key_file: %q }
include ./accounts.conf
`, pki.serverCert, pki.serverKey), 0o600); err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + port
	as := func(user, password, inbox string, args ...string) (int, string, string) {
		args = append(args, "--nats-url", fmt.Sprintf("tls://%s:%s@%s", user, password, addr), "--nats-tls-ca", pki.ca, "--timeout", "2s")
		if inbox != "" {
			args = append(args, "--inbox-prefix", inbox)
		}
		return tallyCmd(args...)
	}
	ready := func(string) error {
		if code, out, errOut := as("tally", "CHANGE-ME-tally", "", "budget", "list", "--root", "tenant:acme"); code != exitOK {
			return fmt.Errorf("budget list: exit %d: %s%s", code, out, errOut)
		}
		return nil
	}
	data := t.TempDir()
	stop, _ := startServe(t, []string{"--data-dir", data, "--nats-listen", addr, "--nats-config", conf, "--partitions", "2",
		"--projector=true"}, ready)

	if code, out, errOut := as("admin", "CHANGE-ME-admin", "_INBOX_admin", "budget", "set", "--scope", "tenant:acme", "--name", "monthly", "--limit", "USD=10"); code != exitOK {
		t.Fatalf("admin budget set: exit %d: %s%s", code, out, errOut)
	}
	reserve := func(user, password, inbox, scope string) (int, string, string) {
		return as(user, password, inbox, "reserve", "--scope", scope, "--amount", "USD=1")
	}
	if code, out, errOut := reserve("agent-acme", "CHANGE-ME-acme", "_INBOX_acme", "tenant:acme/run:r1"); code != exitOK {
		t.Fatalf("agent-acme reserve on its tenant: exit %d: %s%s", code, out, errOut)
	}
	refused := func(what string, code int, out, errOut, subject string) {
		t.Helper()
		want := `error: nats: permissions violation: Permissions Violation for Publish to "` + subject + `"`
		if code != exitFail || !strings.HasPrefix(errOut, want) || !strings.Contains(errOut, "try: "+fixPermissions) || strings.Count(errOut, "error:") != 1 {
			t.Errorf("%s: exit %d, want %d with %q and the fix, once: %s%s", what, code, exitFail, want, out, errOut)
		}
	}
	code, out, errOut := reserve("agent-acme", "CHANGE-ME-acme", "_INBOX_acme", "tenant:globex/run:r1")
	refused("agent-acme reserve on another tenant", code, out, errOut, "tally.v1.p.0.tenant:globex.reserve")
	code, out, errOut = as("agent-acme", "CHANGE-ME-acme", "_INBOX_acme", "budget", "set", "--scope", "tenant:acme", "--name", "x", "--limit", "USD=1000")
	refused("agent-acme budget set", code, out, errOut, "tally.v1.p.1.tenant:acme.budget-set")
	code, out, errOut = as("agent-acme", "CHANGE-ME-acme", "", "balance", "--scope", "tenant:acme")
	if code != exitFail || !strings.Contains(errOut, "Permissions Violation for Subscription to") || !strings.Contains(errOut, "--inbox-prefix") {
		t.Errorf("agent-acme without its inbox prefix: exit %d, want %d naming the subscription and the fix: %s%s", code, exitFail, out, errOut)
	}
	// The auditor reads and checks the ledger and the projection with its
	// own inboxes.
	for _, args := range [][]string{
		{"audit", "verify"},
		{"report", "balances", "--root", "tenant:acme"},
		{"events", "dump", "--root", "tenant:acme"},
		{"events", "tail", "--root", "tenant:acme"},
		{"report", "spend", "--root", "tenant:acme", "--period", time.Now().UTC().Format("2006-01")},
		{"report", "shadow", "--scope", "tenant:acme"},
	} {
		if code, out, errOut := as("auditor", "CHANGE-ME-auditor", "_INBOX_auditor", args...); code != exitOK {
			t.Errorf("auditor %s: exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
		}
	}
	code, out, errOut = as("agent-acme", "CHANGE-ME-acme", "_INBOX_acme", "events", "tail", "--root", "tenant:acme")
	if code != exitFail || !strings.Contains(errOut, `Permissions Violation for Publish to "$JS.API.STREAM.INFO.KV_tally_meta"`) ||
		!strings.Contains(errOut, fixPermissions) {
		t.Errorf("agent-acme events tail: exit %d, want %d refused with the reason and fix: %s%s", code, exitFail, out, errOut)
	}
	code, out, errOut = as("auditor", "CHANGE-ME-auditor", "", "audit", "verify", "--no-projection")
	if code != exitFail || !strings.Contains(errOut, "Permissions Violation for Subscription to") || !strings.Contains(errOut, fixPermissions) {
		t.Errorf("auditor without its inbox prefix: exit %d, want %d refused with the reason and fix: %s%s", code, exitFail, out, errOut)
	}

	code, out, errOut = tallyCmd("budget", "list", "--root", "tenant:acme", "--nats-url", "tls://"+addr, "--nats-tls-ca", pki.ca)
	if code != exitFail || !strings.Contains(errOut, "Authorization Violation") || !strings.Contains(errOut, fixCredentials) {
		t.Errorf("no user: exit %d, want %d refused with the fix: %s%s", code, exitFail, out, errOut)
	}
	code, out, errOut = tallyCmd("budget", "list", "--root", "tenant:acme", "--nats-url", "nats://tally:CHANGE-ME-tally@"+addr)
	if code != exitFail || !strings.Contains(errOut, fixTLS) {
		t.Errorf("without the CA: exit %d, want %d refused with the fix: %s%s", code, exitFail, out, errOut)
	}
	stop()

	// The ledger keeps P = 2; the flag's default (8) is what the server
	// starts with, and the mapping in the TALLY account is corrected.
	_, serveLog := startServe(t, []string{"--data-dir", data, "--nats-listen", addr, "--nats-config", conf}, ready)
	for i := range 8 {
		if code, out, errOut := reserve("agent-acme", "CHANGE-ME-acme", "_INBOX_acme", fmt.Sprintf("tenant:acme/run:s%d", i)); code != exitOK {
			t.Fatalf("agent-acme reserve %d after the restart: exit %d: %s%s", i, code, out, errOut)
		}
	}
	code, out, errOut = as("admin", "CHANGE-ME-admin", "_INBOX_admin", "balance", "--scope", "tenant:acme", "--json")
	if code != exitOK || !strings.Contains(out, `"reserved": "9"`) {
		t.Errorf("balance after the restart: exit %d, want 9 USD reserved: %s%s", code, out, errOut)
	}

	// A rotated password, reloaded on SIGHUP: the ledger's account keeps
	// its JetStream and its mapping for P = 2.
	if code, out, errOut := as("admin", "CHANGE-ME-admin", "_INBOX_admin", "budget", "set", "--scope", "tenant:acme", "--name", "monthly", "--limit", "USD=100"); code != exitOK {
		t.Fatalf("admin raises the budget: exit %d: %s%s", code, out, errOut)
	}
	rotated := strings.ReplaceAll(string(accounts), "CHANGE-ME-acme", "rotated-acme")
	if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), []byte(rotated), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// No new connection until the reload is done: nats-server 2.15.2
	// checks the connected clients' credentials during a reload without
	// the lock their CONNECT is parsed under (the race detector caught a
	// CLI connection arriving mid-reload).
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(serveLog.String(), "--nats-config reloaded") {
			return errors.New("no reload in serve's log yet")
		}
		return nil
	})
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if code, _, _ := as("agent-acme", "CHANGE-ME-acme", "_INBOX_acme", "balance", "--scope", "tenant:acme"); code == exitOK {
			return errors.New("the old password still works")
		}
		return nil
	})
	for i := range 4 {
		if code, out, errOut := reserve("agent-acme", "rotated-acme", "_INBOX_acme", fmt.Sprintf("tenant:acme/run:t%d", i)); code != exitOK {
			t.Fatalf("reserve %d with the rotated password: exit %d: %s%s", i, code, out, errOut)
		}
	}
}

// TestServeNATSConfigErrors: a configuration the embedded server cannot
// take is a usage error naming the file and what is wrong, before the
// server starts.
func TestServeNATSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	twoAccounts := write("two.conf", `accounts { A { jetstream: enabled, users: [{user: a, password: a}] }, B { users: [{user: b, password: b}] } }`)
	cases := []struct {
		name string
		args []string
		want string
		code int
	}{
		{"missing file", []string{"--nats-config", filepath.Join(dir, "missing.conf")}, "missing.conf", exitUsage},
		{"syntax", []string{"--nats-config", write("syntax.conf", "accounts {")}, "syntax.conf", exitUsage},
		{"cluster", []string{"--nats-config", write("cluster.conf", "cluster { name: c, listen: 127.0.0.1:-1 }")}, "cluster: the embedded server is one server", exitUsage},
		{"token", []string{"--nats-config", write("token.conf", "authorization { token: s3cret }")}, "authorization with a token", exitUsage},
		{"single user", []string{"--nats-config", write("user.conf", "authorization { user: u, password: p }")}, "authorization with a single user", exitUsage},
		{"two accounts", []string{"--nats-config", twoAccounts}, "accounts A, B: name the one that holds the ledger", exitUsage},
		{"unknown account", []string{"--nats-config", twoAccounts, "--nats-account", "C"}, `account "C": not defined (accounts: A, B)`, exitUsage},
		{"account without JetStream", []string{"--nats-config", twoAccounts, "--nats-account", "B"}, `account "B" has no JetStream`, exitFail},
		{"taken user name", []string{"--nats-config", write("taken.conf", `authorization { users: [{user: `+serviceUserName+`, password: p}] }`)},
			"the name of tally's own user", exitUsage},
		{"account without config", []string{"--nats-account", "A"}, "--nats-account names an account of --nats-config", exitUsage},
		{"config with a URL", []string{"--nats-config", twoAccounts, "--nats-url", "nats://127.0.0.1:1"}, "--nats-config configures the embedded server", exitUsage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"serve", "--data-dir", t.TempDir(), "--nats-listen", "127.0.0.1:-1", "--http-listen", "",
				"--projector=false"}, c.args...)
			code, out, errOut := tallyCmd(args...)
			if code != c.code || !strings.Contains(errOut, c.want) {
				t.Errorf("exit %d, want %d with %q: %s%s", code, c.code, c.want, out, errOut)
			}
		})
	}
}

// TestServeReloadsNATSConfigOnSIGHUP: SIGHUP reads --nats-config again, as
// nats-server does: a user taken out is disconnected and refused, a user
// put in gets in, tally keeps serving (its own user and the mapping stay),
// and a file that no longer loads changes nothing.
func TestServeReloadsNATSConfigOnSIGHUP(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "users.conf")
	writeConf := func(text string) {
		t.Helper()
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConf(`authorization { users: [{user: old, password: pw-old}] }`)
	_, port, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + port
	url := func(user, password string) string { return fmt.Sprintf("nats://%s:%s@%s", user, password, addr) }
	list := func(user, password string) (int, string, string) {
		return tallyCmd("budget", "list", "--root", "tenant:acme", "--nats-url", url(user, password), "--timeout", "2s")
	}
	// Only once serve says it serves is SIGHUP its: before, the signal's
	// default would end the test binary.
	_, stderr := startServe(t, []string{"--data-dir", t.TempDir(), "--nats-listen", addr, "--partitions", "2", "--nats-config", conf},
		func(log string) error {
			if !strings.Contains(log, "tally serving") {
				return errors.New("not serving yet")
			}
			if code, out, errOut := list("old", "pw-old"); code != exitOK {
				return fmt.Errorf("budget list: exit %d: %s%s", code, out, errOut)
			}
			return nil
		})
	held, err := nats.Connect(url("old", "pw-old"), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	hup := func(want string) {
		t.Helper()
		before := strings.Count(stderr.String(), want)
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			if strings.Count(stderr.String(), want) == before {
				return fmt.Errorf("no %q in the log yet", want)
			}
			return nil
		})
	}
	writeConf(`authorization { users: [{user: new, password: pw-new}] }`)
	hup("--nats-config reloaded")
	code, out, errOut := list("old", "pw-old")
	if code != exitFail || !strings.Contains(errOut, "Authorization Violation") {
		t.Errorf("the removed user: exit %d, want %d refused: %s%s", code, exitFail, out, errOut)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if held.IsConnected() {
			return errors.New("the removed user's connection is still up")
		}
		return nil
	})
	if code, out, errOut := tallyCmd("budget", "set", "--scope", "tenant:acme", "--name", "m", "--limit", "USD=5", "--nats-url", url("new", "pw-new")); code != exitOK {
		t.Fatalf("the added user: exit %d: %s%s", code, out, errOut)
	}
	for i := range 4 { // roots of both partitions: the mapping is intact
		root := fmt.Sprintf("tenant:r%d", i)
		if code, out, errOut := tallyCmd("reserve", "--scope", root, "--amount", "USD=1", "--nats-url", url("new", "pw-new")); code != exitOK {
			t.Fatalf("reserve on %s after the reload: exit %d: %s%s", root, code, out, errOut)
		}
	}

	writeConf(`authorization { users: [ {user: new, password: pw-new`)
	hup("--nats-config not reloaded")
	if code, out, errOut := list("new", "pw-new"); code != exitOK {
		t.Errorf("after a failed reload: exit %d: %s%s", code, out, errOut)
	}
}

// TestLedgerCommandRefusedAfterOpen: a user who may open the ledger but
// not read the projection gets the servers' refusal as the reason, with
// its fix, not a bare timeout.
func TestLedgerCommandRefusedAfterOpen(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "meta.conf")
	if err := os.WriteFile(conf, []byte(`authorization { users: [
  { user: meta, password: m, permissions: {
      publish: ["$JS.API.INFO", "$JS.API.STREAM.INFO.KV_tally_meta", "$JS.API.STREAM.MSG.GET.KV_tally_meta",
                "$JS.API.DIRECT.GET.KV_tally_meta", "$JS.API.DIRECT.GET.KV_tally_meta.>"]
      subscribe: "_INBOX.>" } }
] }`), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	url := "nats://meta:m@" + addr
	startServe(t, []string{"--data-dir", t.TempDir(), "--nats-listen", addr, "--partitions", "1", "--nats-config", conf},
		func(log string) error {
			if !strings.Contains(log, "tally serving") {
				return errors.New("not serving yet")
			}
			return nil
		})
	code, out, errOut := tallyCmd("report", "balances", "--root", "tenant:acme", "--nats-url", url, "--timeout", "1s")
	want := `error: bucket tally_balances: context deadline exceeded, because nats: permissions violation: Permissions Violation for Publish to "$JS.API.STREAM.INFO.KV_tally_balances"`
	if code != exitFail || !strings.HasPrefix(errOut, want) || !strings.Contains(errOut, "try: "+fixPermissions) {
		t.Errorf("exit %d, want %d with %q and the fix: %s%s", code, exitFail, want, out, errOut)
	}
}
