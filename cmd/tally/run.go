package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	_ "time/tzdata" // budgets name IANA zones; work on machines without tzdata
)

// Exit codes (STYLE.md).
const (
	exitOK     = 0
	exitFail   = 1
	exitUsage  = 2
	exitDenied = 3
)

// env is the process environment, read through a function so tests can
// replace it.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) int
}

func commands() []command {
	return []command{
		{"serve", "run tally: embedded NATS server, enforcer, projector, metrics", runServe},
		{"enforcer", "run an enforcer against a NATS cluster (--nats-url)", runEnforcer},
		{"projector", "run the projector: balance views, spend roll-ups, shadow statistics", runProjector},
		{"reserve", "reserve an estimate against every budget of a scope", runReserve},
		{"commit", "commit the actual cost of a reservation", runCommit},
		{"release", "release a reservation", runRelease},
		{"extend", "extend a reservation's expiry", runExtend},
		{"charge", "record usage without a reservation", runCharge},
		{"decide", "dry-run a reserve: would it be granted?", runDecide},
		{"balance", "show the balances of every budget that applies to a scope", runBalance},
		{"reservation", "show a reservation (reservation get <root> <id>)", runReservation},
		{"budget", "manage budgets: set, get, list, delete, adjust", runBudget},
		{"events", "the event history: events tail, events dump, events restore", runEvents},
		{"report", "reports from the event history: report shadow, report spend", runReport},
		{"audit", "verify the ledger: audit verify", runAudit},
		{"demo", "set up the seed's budgets and run simulated agents against a running tally", runDemo},
		{"bench", "measure decisions/s and latency against the yardsticks B0 and B1", runBench},
	}
}

// run is main without the process: tests call it.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	return e.dispatch(ctx, args)
}

func (e *env) dispatch(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		e.usage()
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	fmt.Fprintf(e.stderr, "error: unknown command %q\ntry: tally --help\n", args[0])
	return exitUsage
}

func (e *env) usage() {
	fmt.Fprintln(e.stderr, "tally — a budget ledger for AI agents on NATS JetStream")
	fmt.Fprintln(e.stderr, "\nusage: tally <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(e.stderr, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(e.stderr, "\nexit codes: 0 ok, 1 failure, 2 usage, 3 denied by budget")
	fmt.Fprintln(e.stderr, "run 'tally <command> --help' for its flags; every flag has a TALLY_* environment mirror")
}

// flagSet returns a FlagSet whose usage lists env mirrors.
func (e *env) flagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: tally %s\n\nflags (each also read from the TALLY_* variable named in brackets):\n", usage)
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(e.stderr, "  --%s [%s]\n    \t%s (default %q)\n", f.Name, envName(f.Name), f.Usage, f.DefValue)
		})
	}
	return fs
}

// envName is the environment mirror of a flag: --nats-url → TALLY_NATS_URL.
func envName(flagName string) string {
	return "TALLY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parse parses args after applying environment mirrors as defaults. It
// returns a usage exit code (or -1 to go on).
func (e *env) parse(fs *flag.FlagSet, args []string) int {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v := e.getenv(envName(f.Name)); v != "" {
			if err := f.Value.Set(v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%s=%q: %v", envName(f.Name), v, err)
			}
		}
	})
	if envErr != nil {
		fmt.Fprintf(e.stderr, "error: %v\n", envErr)
		return exitUsage
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	return -1
}

// fail prints an error (and a fix, if any) and returns exitFail.
func (e *env) fail(err error, try string) int {
	fmt.Fprintf(e.stderr, "error: %v\n", err)
	if try != "" {
		fmt.Fprintf(e.stderr, "try: %s\n", try)
	}
	return exitFail
}

func (e *env) usageErr(format string, args ...any) int {
	fmt.Fprintf(e.stderr, "error: "+format+"\n", args...)
	return exitUsage
}
