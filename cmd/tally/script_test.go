package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/streams"
)

// TestMain lets the test binary act as the tally command inside scripts
// (`exec tally …`): testscript puts a copy of it named tally on $PATH.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"tally": func() {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
			stop()
			os.Exit(code)
		},
	})
}

// TestScripts runs testdata/script/*.txtar, each against its own real
// ledger: an in-process JetStream server and an enforcer for all of its
// partitions, reached through TALLY_NATS_URL.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		Setup:               startLedger,
		RequireExplicitExec: true,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits":   cmdExits,
			"json":    cmdJSON,
			"capture": cmdCapture,
			"await":   cmdAwait,
		},
	})
}

// scriptPartitions is P of the scripts' ledgers: small, so events tail
// reads few streams.
const scriptPartitions = 4

// startLedger is a script's Setup: it starts a server and an enforcer,
// waits until every partition answers, and sets
//
//	TALLY_NATS_URL   the server's client URL
//	CLOSED_NATS_URL  a loopback address nothing listens on
//	GORACE           atexit_sleep_ms=0 added
func startLedger(env *testscript.Env) error {
	dir, err := os.MkdirTemp("", "tally-script-")
	if err != nil {
		return err
	}
	ns, err := streams.StartServer(streams.ServerConfig{Name: "tally-script", DataDir: dir,
		Listen: "127.0.0.1:-1", Partitions: scriptPartitions})
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.Name("tally-script-enforcer"))
	stopServer := func() {
		if nc != nil {
			nc.Close()
		}
		ns.Shutdown()
		ns.WaitForShutdown()
		os.RemoveAll(dir)
	}
	if err != nil {
		stopServer()
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		stopServer()
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := streams.Ensure(ctx, js, streams.Config{Partitions: scriptPartitions}); err != nil {
		stopServer()
		return err
	}
	svc, err := enforcer.NewService(nc, enforcer.ServiceConfig{Partitions: scriptPartitions})
	if err != nil {
		stopServer()
		return err
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	env.Defer(func() {
		stop()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				env.T().Log("enforcer stopped with", err)
			}
		case <-time.After(15 * time.Second):
			env.T().Log("enforcer did not stop")
		}
		stopServer()
	})
	if err := waitServing(ctx, nc); err != nil {
		return err
	}
	env.Setenv("TALLY_NATS_URL", ns.ClientURL())
	// Under -race every tally the scripts run would sleep 1 s on exit
	// (the race runtime's default atexit_sleep_ms): dozens of seconds.
	env.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	closed := "nats://" + ln.Addr().String()
	ln.Close()
	env.Setenv("CLOSED_NATS_URL", closed)
	return nil
}

// waitServing polls until every partition answers a request.
func waitServing(ctx context.Context, nc *nats.Conn) error {
	for n := range scriptPartitions {
		root := rootOn(n)
		for {
			_, err := nc.Request(streams.RequestSubject(root, "budget-list"), []byte(`{}`), 200*time.Millisecond)
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("partition %d never answered: %w", n, err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// rootOn finds a root that lands on partition n.
func rootOn(n int) string {
	for i := 0; ; i++ {
		r := fmt.Sprintf("tenant:p%d-%d", n, i)
		if streams.Partition(r, scriptPartitions) == n {
			return r
		}
	}
}

// cmdExits runs a command and checks its exit code:
//
//	exits 3 tally reserve …
//
// stdout and stderr are kept for the next commands, as with exec.
func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits CODE command [args...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exits: bad code %q", args[0])
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("exits: %v", err)
	}
	if got != want {
		ts.Fatalf("exit code %d, want %d", got, want)
	}
}

// cmdJSON checks a field of a JSON document against a regexp:
//
//	json stdout instances.0.units.USD.remaining '^1.6$'
//
// The path is dot-separated object keys and array indexes; strings are
// matched unquoted, other values as JSON.
func cmdJSON(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: json FILE PATH REGEXP")
	}
	var doc any
	if err := json.Unmarshal([]byte(ts.ReadFile(args[0])), &doc); err != nil {
		ts.Fatalf("json: %s is not a JSON document: %v", args[0], err)
	}
	v := doc
	for _, k := range strings.Split(args[1], ".") {
		switch c := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = c[k]; !ok {
				ts.Fatalf("json: %s: no field %q", args[1], k)
			}
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(c) {
				ts.Fatalf("json: %s: no element %q in an array of %d", args[1], k, len(c))
			}
			v = c[i]
		default:
			ts.Fatalf("json: %s: %q is inside a %T", args[1], k, v)
		}
	}
	text, ok := v.(string)
	if !ok {
		b, _ := json.Marshal(v)
		text = string(b)
	}
	re, err := regexp.Compile(args[2])
	ts.Check(err)
	if re.MatchString(text) == neg {
		ts.Fatalf("json: %s = %q; match %q: %v, want %v", args[1], text, args[2], !neg, neg)
	}
}

// cmdCapture sets an environment variable to the first submatch of a
// regexp in a file:
//
//	capture RID stdout '^granted (\S+)'
func cmdCapture(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: capture VAR FILE REGEXP")
	}
	re, err := regexp.Compile("(?m)" + args[2])
	ts.Check(err)
	m := re.FindStringSubmatch(ts.ReadFile(args[1]))
	if len(m) < 2 {
		ts.Fatalf("capture: no match of %q with a group in %s", args[2], args[1])
	}
	ts.Setenv(args[0], m[1])
}

// cmdAwait polls a file until it matches a regexp (10 s at most): the
// checkFor of scripts, for output written by a background command.
func cmdAwait(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: await FILE REGEXP")
	}
	re, err := regexp.Compile("(?m)" + args[1])
	ts.Check(err)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(ts.MkAbs(args[0]))
		if re.Match(b) {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("await: %s never matched %q; it holds:\n%s", args[0], args[1], b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
