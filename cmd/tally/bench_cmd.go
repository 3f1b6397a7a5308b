package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tallyledger/tally/bench"
	"github.com/tallyledger/tally/streams"
)

// benchFlags are the flags of `tally bench`.
type benchFlags struct {
	natsURL     string
	embedded    bool
	cluster3    bool
	sync        string
	groupCommit string
	groupFsync  string
	partitions  int
	dataDir     string
	auth        natsAuth // with natsURL

	clients    int
	duration   time.Duration
	warmup     time.Duration
	roots      int
	singleRoot bool
	mix        string
	rate       float64
	b1Append   int
	b1Answer   int
	b1Contract bool
	baseline   bool
	timeout    time.Duration

	json        bool
	cpuProfile  string
	profileDir  string
	grantedFile string
	logLevel    string
}

const benchUsage = "bench (--nats-url URLS | --embedded | --cluster3) [flags]"

func runBench(ctx context.Context, e *env, args []string) int {
	var f benchFlags
	fs := e.flagSet("bench", benchUsage)
	fs.StringVar(&f.natsURL, "nats-url", "", "measure the running tally at these NATS URLs")
	f.auth.register(fs)
	fs.BoolVar(&f.embedded, "embedded", false, "start a fresh embedded server (R1) and enforcer in this process and measure them")
	fs.BoolVar(&f.cluster3, "cluster3", false, "start a fresh in-process 3-node cluster (R3 streams) and enforcer and measure them")
	fs.StringVar(&f.sync, "sync", bench.SyncAlways, "with --embedded or --cluster3: always (fsync before every ack) or interval")
	fs.StringVar(&f.groupCommit, "group-commit", bench.GroupCommitAuto, "with --embedded or --cluster3: on, off, or auto (on with --sync always or on a cluster)")
	fs.StringVar(&f.groupFsync, "group-fsync", bench.GroupFsyncAuto, "with --embedded --sync always: auto (as tally serve, where the OS has syncfs: the server does not fsync each write and tally fsyncs the store once for every event acknowledged meanwhile, before answering them; B0, B1 and raw publish keep the server's per-message fsync, on a server of their own started first on the same store) or off (the server fsyncs each write in every phase)")
	fs.IntVar(&f.partitions, "partitions", streams.DefaultPartitions, "with --embedded or --cluster3: partitions P of the new ledger")
	fs.StringVar(&f.dataDir, "data-dir", "", "with --embedded or --cluster3: store directory; empty: a temporary one, removed at the end")
	fs.IntVar(&f.clients, "clients", bench.DefaultClients, "simulated agents, each on its own NATS connection")
	fs.DurationVar(&f.duration, "duration", bench.DefaultDuration, "length of each measured phase")
	fs.DurationVar(&f.warmup, "warmup", 0, "run each phase's load this long before measuring it (a fresh process grows its heap and the streams' write caches first; a long-running deployment has)")
	fs.IntVar(&f.roots, "roots", bench.DefaultRoots, "tenants (roots) the load is spread over, each with tenant > workflow > run:* budgets in USD and tokens")
	fs.BoolVar(&f.singleRoot, "single-root", false, "put all load on one root: one partition's decision loop")
	fs.StringVar(&f.mix, "mix", string(bench.DefaultMix), "what each agent does: reserve-commit, reserve-release or decide")
	fs.IntVar(&f.b1Append, "b1-append-bytes", 0, "with --baseline: also measure B1 appending records padded to this many bytes (e.g. the size of tally's events, to separate their cost from tally's own work)")
	fs.IntVar(&f.b1Answer, "b1-answer-bytes", 0, "with --baseline: also measure B1 answering with its ack padded to this many bytes (e.g. the size of tally's answers); with --b1-append-bytes, in the same phase")
	fs.BoolVar(&f.b1Contract, "b1-contract", false, "with --baseline and --embedded or --cluster3: also measure the contract floor, a B1 carrying what tally's decisions carry through the server (tally's requests, subject mapping, event and answer sizes, stream configuration and subjects, fence and dedupe headers) that decides nothing")
	fs.Float64Var(&f.rate, "rate", 0, "open loop: target decisions/s over all clients (0: closed loop, as fast as answers come)")
	fs.BoolVar(&f.baseline, "baseline", false, "also measure, in the same run: B0 (answer at once), B1 (append, answer after the ack), raw async publish and replay")
	fs.DurationVar(&f.timeout, "timeout", bench.DefaultTimeout, "how long one attempt of a request waits for its answer")
	fs.BoolVar(&f.json, "json", false, "print the report as JSON (stable field names)")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of this process to FILE (with --embedded or --cluster3 it covers the servers and the enforcer)")
	fs.StringVar(&f.profileDir, "profile-dir", "", "write a CPU profile, an execution trace and a heap profile of each phase to DIR/<phase>.{cpu.prof,trace,heap.prof} (compare tally's costs with B1's); not with --cpuprofile")
	fs.StringVar(&f.grantedFile, "granted-file", "", "write the root and id of every granted reservation to FILE, one per line (for audits of the bench itself)")
	fs.StringVar(&f.logLevel, "log-level", "warn", "log level of the servers and enforcer the bench starts: debug, info, warn or error")
	if code := e.parse(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		return e.usageErr("bench takes no arguments, got %q", fs.Args())
	}
	given := map[string]bool{} // flags on the command line, not from the environment
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	if f.embedded || f.cluster3 {
		// A TALLY_NATS_URL in the environment does not conflict with an
		// explicit --embedded or --cluster3; a --nats-url flag does.
		if !given["nats-url"] {
			f.natsURL = ""
		}
		// Nor do the connection's credentials and TLS files.
		if !slices.ContainsFunc(natsAuthFlags, func(name string) bool { return given[name] }) {
			f.auth = natsAuth{}
		}
	} else {
		for _, name := range []string{"sync", "group-commit", "group-fsync", "partitions", "data-dir"} {
			if given[name] {
				return e.usageErr("--%s applies to the servers the bench starts (--embedded, --cluster3); a running tally keeps its own", name)
			}
		}
	}
	cfg, code := f.config(e)
	if code >= 0 {
		return code
	}

	if f.grantedFile != "" {
		out, err := os.Create(f.grantedFile)
		if err != nil {
			return e.fail(fmt.Errorf("--granted-file: %w", err), "")
		}
		w := &grantedWriter{w: bufio.NewWriter(out)}
		cfg.OnGranted = w.add
		defer func() {
			if err := errors.Join(w.flush(), out.Close()); err != nil {
				fmt.Fprintf(e.stderr, "error: --granted-file: %v\n", err)
			}
		}()
	}
	if f.cpuProfile != "" {
		out, err := os.Create(f.cpuProfile)
		if err != nil {
			return e.fail(fmt.Errorf("--cpuprofile: %w", err), "")
		}
		defer out.Close()
		if err := pprof.StartCPUProfile(out); err != nil {
			return e.fail(fmt.Errorf("--cpuprofile: %w", err), "")
		}
		defer pprof.StopCPUProfile()
	}

	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return e.fail(errors.New("bench interrupted"), "")
		}
		try := ""
		if cfg.Target == bench.TargetURL {
			try = "is tally running there (tally serve)? or measure a fresh one with --embedded"
		}
		return e.fail(err, try)
	}
	if f.json {
		err = rep.WriteJSON(e.stdout)
	} else {
		err = rep.WriteText(e.stdout)
	}
	if err != nil {
		return e.fail(err, "")
	}
	if rep.Tally.Decisions == 0 {
		return e.fail(errors.New("tally answered no request"), "see errors_by_code in the report")
	}
	return exitOK
}

// config turns the flags into a bench configuration, or a usage exit code.
func (f *benchFlags) config(e *env) (bench.Config, int) {
	targets := 0
	cfg := bench.Config{Target: bench.TargetURL, NATSURL: f.natsURL}
	if f.natsURL != "" {
		targets++
	}
	if f.embedded {
		targets++
		cfg.Target = bench.TargetEmbedded
	}
	if f.cluster3 {
		targets++
		cfg.Target = bench.TargetCluster3
	}
	if targets != 1 {
		return cfg, e.usageErr("bench needs exactly one of --nats-url, --embedded and --cluster3")
	}
	if name, ok := f.auth.given(); ok && cfg.Target != bench.TargetURL {
		return cfg, e.usageErr("--%s (or %s) secures the connections to --nats-url; --embedded and --cluster3 start servers without users or TLS", name, envName(name))
	}
	opts, err := f.auth.options()
	if err != nil {
		return cfg, e.usageErr("%v", err)
	}
	cfg.NATSOptions = opts
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		return cfg, e.usageErr("--log-level %q: %v", f.logLevel, err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: lvl}))
	cfg.Sync, cfg.GroupCommit, cfg.GroupFsync, cfg.Partitions, cfg.DataDir = f.sync, f.groupCommit, f.groupFsync, f.partitions, f.dataDir
	cfg.Clients, cfg.Duration, cfg.Roots, cfg.SingleRoot = f.clients, f.duration, f.roots, f.singleRoot
	cfg.Warmup = f.warmup
	cfg.Mix, cfg.Rate, cfg.Baseline, cfg.Timeout = bench.Mix(f.mix), f.rate, f.baseline, f.timeout
	cfg.B1AppendBytes, cfg.B1AnswerBytes, cfg.B1Contract, cfg.ProfileDir = f.b1Append, f.b1Answer, f.b1Contract, f.profileDir
	if f.profileDir != "" && f.cpuProfile != "" {
		return cfg, e.usageErr("--profile-dir and --cpuprofile both profile the process: choose one")
	}
	cfg.Progress, cfg.LiveProgress = e.stderr, benchTerminal(e.stderr)
	if err := cfg.Validate(); err != nil {
		return cfg, e.usageErr("%s", strings.TrimPrefix(err.Error(), "bench: "))
	}
	return cfg, -1
}

// grantedWriter writes "root id" lines; OnGranted calls it concurrently.
type grantedWriter struct {
	mu  sync.Mutex
	w   *bufio.Writer
	err error
}

func (g *grantedWriter) flush() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return g.err
	}
	return g.w.Flush()
}

func (g *grantedWriter) add(root, id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		_, g.err = fmt.Fprintf(g.w, "%s %s\n", root, id)
	}
}

// benchTerminal reports whether w is a character device (a terminal).
func benchTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}
