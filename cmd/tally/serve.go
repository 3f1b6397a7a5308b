package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/projector"
	"github.com/tallyledger/tally/streams"
)

// serveFlags are the flags of serve and enforcer.
type serveFlags struct {
	dataDir     string
	natsListen  string
	natsURL     string
	partitions  int
	replicas    int
	sync        string
	httpListen  string
	logLevel    string
	groupCommit string
	owner       string
	auth        natsAuth // with natsURL
	natsConfig  string   // embedded: a nats-server configuration file
	natsAccount string   // embedded: its account that holds the ledger
	// partitionsSet says --partitions (or its env mirror) was given.
	partitionsSet bool
	projector     bool   // serve only: run the projector in-process (projector_cmd.go)
	groupFsync    string // serve only: auto or off
}

func (f *serveFlags) register(fs *flag.FlagSet, embedded bool) {
	if embedded {
		fs.StringVar(&f.dataDir, "data-dir", "./tally-data", "directory of the embedded server's JetStream store")
		fs.StringVar(&f.natsListen, "nats-listen", "127.0.0.1:4222", "client address of the embedded NATS server")
		fs.StringVar(&f.sync, "sync", "always", "embedded server durability: always (fsync before every ack) or interval")
		fs.StringVar(&f.natsConfig, "nats-config", "", "nats-server configuration file of the embedded server's accounts, users, permissions and TLS (e.g. deploy/nats/accounts.conf); its listen, jetstream, cluster and server_name settings are tally's flags' or refused; SIGHUP reloads it")
		fs.StringVar(&f.natsAccount, "nats-account", "", "with --nats-config: the account that holds the ledger (default: the only one, or "+streams.PreferredAccount+")")
		fs.StringVar(&f.groupFsync, "group-fsync", "auto", "with --sync always: auto (where the OS has syncfs: tally fsyncs the store once for every event acknowledged meanwhile, before answering them) or off (the server fsyncs each write)")
		fs.BoolVar(&f.projector, "projector", true, "also run the projector: the views of tally report balances|budgets, projector metrics")
	}
	fs.StringVar(&f.natsURL, "nats-url", "", "join an existing NATS cluster at these URLs instead of embedding a server")
	f.auth.register(fs)
	fs.IntVar(&f.partitions, "partitions", streams.DefaultPartitions, "partitions P of a new ledger (fixed at creation)")
	fs.IntVar(&f.replicas, "replicas", 1, "stream replicas of a new ledger: 1 embedded, 3 on a cluster")
	fs.StringVar(&f.httpListen, "http-listen", "127.0.0.1:9464", "address of /healthz and /metrics (empty: off)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.groupCommit, "group-commit", "auto", "batch appends atomically when the queue is deep: on, off, or auto (on with --sync always)")
	fs.StringVar(&f.owner, "owner", "", "name of this enforcer in partition.claimed events (default: generated)")
}

func (f *serveFlags) logger(e *env) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %v", f.logLevel, err)
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: lvl})), nil
}

func runServe(ctx context.Context, e *env, args []string) int {
	var f serveFlags
	fs := e.flagSet("serve", "serve [flags]")
	f.register(fs, true)
	if code := e.parse(fs, args); code >= 0 {
		return code
	}
	f.partitionsSet = flagGiven(fs, "partitions") || e.getenv(envName("partitions")) != ""
	return e.serve(ctx, f, f.natsURL == "")
}

func runEnforcer(ctx context.Context, e *env, args []string) int {
	var f serveFlags
	fs := e.flagSet("enforcer", "enforcer --nats-url URLS [flags]")
	f.register(fs, false)
	if code := e.parse(fs, args); code >= 0 {
		return code
	}
	if f.natsURL == "" {
		return e.usageErr("enforcer needs --nats-url (or TALLY_NATS_URL)")
	}
	f.partitionsSet = flagGiven(fs, "partitions") || e.getenv(envName("partitions")) != ""
	return e.serve(ctx, f, false)
}

// serve runs the server process. Shutdown order: stop taking requests,
// finish the decisions in flight and wait for their acks (the enforcer's
// Run returns), drain the connection, stop the embedded server.
func (e *env) serve(ctx context.Context, f serveFlags, embedded bool) int {
	log, err := f.logger(e)
	if err != nil {
		return e.usageErr("%v", err)
	}
	if f.sync != "" && f.sync != "always" && f.sync != "interval" {
		return e.usageErr("--sync %q: want always or interval", f.sync)
	}
	groupCommit := f.groupCommit == "on" || f.groupCommit == "auto" && (f.sync == "always" || !embedded)
	if f.groupCommit != "on" && f.groupCommit != "off" && f.groupCommit != "auto" {
		return e.usageErr("--group-commit %q: want on, off or auto", f.groupCommit)
	}
	if f.groupFsync != "" && f.groupFsync != "auto" && f.groupFsync != "off" {
		return e.usageErr("--group-fsync %q: want auto or off", f.groupFsync)
	}
	// Group fsync: the embedded server acks without fsync, and every
	// answer, snapshot and checkpoint waits for a syncfs that began after
	// the ack of what it rests on (streams.Barrier).
	wantGroupFsync := embedded && f.sync == "always" && f.groupFsync == "auto"
	groupFsync := wantGroupFsync && streams.GroupFsyncSupported
	if wantGroupFsync && !groupFsync {
		log.Info("group fsync needs Linux 5.8 or later (a syncfs that reports write-back errors): the server fsyncs each write")
	}

	if name, ok := f.auth.given(); ok && embedded {
		return e.usageErr("--%s (or %s) secures a connection to the servers of --nats-url; the embedded server is reached in-process", name, envName(name))
	}
	authOpts, err := f.auth.options()
	if err != nil {
		return e.usageErr("%v", err)
	}

	if f.natsAccount != "" && f.natsConfig == "" {
		return e.usageErr("--nats-account names an account of --nats-config")
	}
	if f.natsConfig != "" && !embedded {
		return e.usageErr("--nats-config configures the embedded server; with --nats-url tally joins NATS servers that have their own configuration")
	}
	var ns *server.Server
	var scfg streams.ServerConfig // of ns
	var nc *nats.Conn
	ncLog := newConnLog(log)
	var ledgerAccount string // "" the global account
	var users bool           // the embedded server has users
	var serviceUser []nats.Option
	if embedded {
		scfg = streams.ServerConfig{Name: "tally", DataDir: f.dataDir, Listen: f.natsListen,
			Partitions: f.partitions, SyncAlways: f.sync == "always" && !groupFsync, Logger: log}
		if f.natsConfig != "" {
			scfg.ConfigFile, scfg.Account = f.natsConfig, f.natsAccount
			scfg.ServiceUser, scfg.ServicePassword = serviceUserName, rand.Text()
			serviceUser = []nats.Option{nats.UserInfo(scfg.ServiceUser, scfg.ServicePassword)}
			if ledgerAccount, users, err = scfg.LedgerAccount(); err != nil {
				return e.usageErr("--nats-config: %v", err)
			}
		}
		ns, err = streams.StartServer(scfg)
		if err != nil {
			return e.fail(err, "is another tally running? choose another --nats-listen or --data-dir")
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		if !users && !loopback(f.natsListen) {
			log.Warn("the embedded NATS server listens beyond this machine and has no users: whoever reaches it can "+
				"set budgets and read the ledger; keep --nats-listen on loopback, or give it users and TLS with "+
				"--nats-config", "nats_listen", f.natsListen)
		}
		nc, err = nats.Connect("", slices.Concat(serviceUser, ncLog.options(), []nats.Option{nats.InProcessServer(ns), nats.Name("tally-serve")})...)
	} else {
		nc, err = nats.Connect(f.natsURL, slices.Concat(authOpts, ncLog.options(), []nats.Option{nats.Name("tally-enforcer"), nats.MaxReconnects(-1)})...)
	}
	if err != nil {
		return e.fail(fmt.Errorf("connect to NATS: %w", err), cmp.Or(connectFix(err), "check --nats-url"))
	}
	defer nc.Close()
	ncLog.watch(nc, time.Second)
	reg := prometheus.NewRegistry()
	barrier, closeBarrier, err := f.barrier(ctx, nc, groupFsync, reg, log)
	if err != nil {
		return e.fail(err, "")
	}
	defer closeBarrier() // after the enforcer: its last answers wait for syncs
	js, err := jetstream.New(nc)
	if err != nil {
		return e.fail(err, "")
	}
	ectx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	layout, err := streams.Ensure(ectx, js, streams.Config{Partitions: f.partitions, Replicas: f.replicas,
		RequirePartitions: f.partitionsSet})
	if errors.Is(err, streams.ErrPartitionsMismatch) {
		return e.fail(err, "P is fixed when the ledger is created: drop --partitions to use the existing ledger's P")
	}
	if err != nil {
		return e.fail(fmt.Errorf("prepare the ledger's streams: %w", err), "")
	}
	if ns != nil && layout.Partitions != f.partitions {
		// An existing data dir keeps its P: route requests by it.
		if err := streams.ApplyMapping(ns, ledgerAccount, layout.Partitions); err != nil {
			return e.fail(err, "")
		}
	}
	if err := streams.VerifyMapping(ectx, nc, layout.Partitions); err != nil {
		return e.fail(fmt.Errorf("the NATS servers route requests for another partition count than the ledger's %d: %w", layout.Partitions, err),
			"give every server the mapping of the shipped deploy/nats/accounts.conf for this P")
	}
	if barrier != nil {
		// The streams and buckets just created go to disk before use.
		if err := barrier.Sync(ectx); err != nil {
			return e.fail(err, "")
		}
	}
	cancel()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerConnMetrics(reg, nc)
	// Replays (taking a partition over) read the embedded server through
	// TCP loopback: the in-process connection is an unbuffered pipe, slower
	// for bulk reads (enforcer.ServiceConfig.ReplayConn).
	var replayConn *nats.Conn
	if ns != nil {
		if replayConn, err = nats.Connect(ns.ClientURL(), slices.Concat(serviceUser, newConnLog(log).options(), []nats.Option{nats.Name("tally-replay")})...); err != nil {
			// With --nats-config TLS on the client port is expected to
			// refuse a loopback connection without certificates.
			lvl := slog.LevelWarn
			if f.natsConfig != "" {
				lvl = slog.LevelInfo
			}
			log.Log(ctx, lvl, "replays use the in-process connection: no loopback connection to the embedded server", "err", err)
			replayConn = nil
		} else {
			defer replayConn.Close()
		}
	}
	svc, err := enforcer.NewService(nc, enforcer.ServiceConfig{Partitions: layout.Partitions, Owner: f.owner,
		GroupCommit: groupCommit, ReplayConn: replayConn, Barrier: barrier, Logger: log, Metrics: enforcer.NewMetrics(reg)})
	if err != nil {
		return e.fail(err, "")
	}
	// --- projector: the read-side views, on the same connection and registry (projector_cmd.go) ---
	var proj *projector.Projector
	if f.projector {
		pcfg := projector.Config{Partitions: layout.Partitions, Logger: log, Metrics: projector.NewMetrics(reg)}
		if barrier != nil {
			pcfg.Barrier = barrier.Sync
		}
		if proj, err = projector.New(js, pcfg); err != nil {
			return e.fail(err, "")
		}
	}
	// --- end projector ---
	// SIGHUP reloads --nats-config, as it does for nats-server.
	var hup chan os.Signal
	if ns != nil && scfg.ConfigFile != "" {
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	log.Info("tally serving", "partitions", layout.Partitions, "nats", natsAddr(ns, f.natsURL), "sync", f.sync,
		"group_fsync", groupFsync, "group_commit", groupCommit)

	g, gctx := errgroup.WithContext(ctx)
	if hup != nil {
		g.Go(func() error {
			for {
				select {
				case <-gctx.Done():
					return nil
				case <-hup:
					if err := streams.ReloadConfig(ns, scfg, layout.Partitions); err != nil {
						log.Error("--nats-config not reloaded: the server keeps the configuration it had", "err", err)
					} else {
						log.Info("--nats-config reloaded", "file", scfg.ConfigFile)
					}
				}
			}
		})
	}
	g.Go(func() error { return svc.Run(gctx) })
	if proj != nil { // --- projector: a failure stops the views, never the enforcer ---
		g.Go(func() error {
			if err := proj.Run(gctx); err != nil {
				log.Error("projector stopped; the views are no longer updated", "err", err)
			}
			return nil
		})
	}
	if f.httpListen != "" {
		ln, err := net.Listen("tcp", f.httpListen)
		if err != nil {
			return e.fail(fmt.Errorf("--http-listen: %w", err), "choose another --http-listen, or empty to turn it off")
		}
		serveHTTP(gctx, g, ln, reg, nc)
	}
	err = g.Wait()
	if derr := nc.Drain(); derr != nil {
		log.Debug("drain", "err", derr)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return e.fail(err, "")
	}
	log.Info("tally stopped")
	return exitOK
}

func natsAddr(ns *server.Server, url string) string {
	if ns != nil {
		return ns.ClientURL()
	}
	return url
}

// serviceUserName is the user `tally serve` connects to its embedded
// server as when --nats-config gives it users; its password is new at
// every start (crypto/rand.Text) and never leaves the process.
const serviceUserName = "tally-serve-internal"

// loopback reports whether a listen address (host:port) is reachable
// only from this machine.
func loopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// flagGiven reports whether a flag was set on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// barrier returns what makes acknowledged writes durable before tally
// acts on them: with group fsync, a syncfs of the embedded server's store,
// which it also serves to the other processes writing to that server
// (streams.ServeBarrier); joining servers over --nats-url, the barrier of
// the tally serve that syncs them, if one does (streams.DialBarrier); else
// nil, and the servers' own sync mode is all there is.
func (f *serveFlags) barrier(ctx context.Context, nc *nats.Conn, groupFsync bool, reg prometheus.Registerer, log *slog.Logger) (*streams.Barrier, func(), error) {
	nop := func() {}
	if !groupFsync {
		if f.natsURL == "" {
			return nil, nop, nil
		}
		b, err := streams.DialBarrier(ctx, nc)
		if err != nil {
			return nil, nop, fmt.Errorf("ask the servers' tally serve for its group fsync: %w", err)
		}
		if b != nil {
			log.Info("group fsync: the servers' tally serve syncs their store; answers wait for it", "subject", streams.SyncSubject)
		}
		return b, nop, nil
	}
	sync, closeDir, err := streams.FileSystemSync(f.dataDir)
	if err != nil {
		return nil, nop, err
	}
	observe := registerFsyncMetrics(reg)
	b := streams.NewBarrier(func(ctx context.Context) error {
		start := time.Now()
		err := sync(ctx)
		observe(time.Since(start), err)
		if err != nil {
			log.Error("fsync of the store failed: tally stops serving; restart it once the disk is sound", "err", err)
		}
		return err
	})
	if _, err := streams.ServeBarrier(nc, b); err != nil {
		_ = closeDir()
		return nil, nop, err
	}
	return b, func() { _ = closeDir() }, nil
}

// registerFsyncMetrics registers the group fsync's series on reg and
// returns what records one sync.
func registerFsyncMetrics(reg prometheus.Registerer) func(time.Duration, error) {
	syncs := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_fsync_seconds",
		Help:    "Group fsync (--sync always, --group-fsync auto): duration of each sync of the store's file system; its count is the number of syncs.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)})
	failures := prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_fsync_failures_total",
		Help: "Failed syncs of the store: after one, tally stops serving until restarted."})
	reg.MustRegister(syncs, failures)
	return func(d time.Duration, err error) {
		syncs.Observe(d.Seconds())
		if err != nil {
			failures.Inc()
		}
	}
}
