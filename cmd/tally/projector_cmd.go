package main

// tally projector: folds every partition stream into the KV views
// (tally_balances, tally_budgets) that dashboards and `tally report
// balances|budgets` read, and serves its metrics. `tally serve` runs the
// same projector in-process.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/tallyledger/tally/projector"
	"github.com/tallyledger/tally/streams"
)

// defaultProjectorHTTP is the projector's metrics address: next to
// serve's 9464, so both run on one machine.
const defaultProjectorHTTP = "127.0.0.1:9465"

func runProjector(ctx context.Context, e *env, args []string) int {
	var (
		natsURL, httpListen, logLevel string
		rebuild, once                 bool
		flushInterval, retention      time.Duration
		auth                          natsAuth
	)
	fs := e.flagSet("projector", "projector [--nats-url URLS] [--http-listen ADDR] [--rebuild] [--once]\n\n"+
		"Fold every partition stream into the views tally_balances and tally_budgets (balances,\n"+
		"budget definitions, spend roll-ups, shadow statistics). Restarts resume from the stored\n"+
		"checkpoints; --rebuild wipes the views and folds every partition from sequence 1 (stop\n"+
		"other projectors first). The views are eventually consistent: tally_projector_lag_events\n"+
		"on /metrics says by how much. When the tally serve that runs the server syncs its store\n"+
		"itself (group fsync, --sync always), the projector's writes wait for its syncs.")
	fs.StringVar(&natsURL, "nats-url", DefaultNATSURL, "NATS server(s) of the ledger, comma-separated")
	auth.register(fs)
	fs.StringVar(&httpListen, "http-listen", defaultProjectorHTTP, "address of /healthz and /metrics (empty: off)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&rebuild, "rebuild", false, "wipe the views and rebuild them from sequence 1")
	fs.BoolVar(&once, "once", false, "stop once every partition has caught up with the stream (with --rebuild: rebuild and exit)")
	fs.DurationVar(&flushInterval, "flush-interval", projector.DefaultFlushInterval, "longest wait before applied events are written to KV")
	fs.DurationVar(&retention, "retention", projector.DefaultRetention, "how long an expired reservation's model label is kept for a late commit")
	if code := e.parse(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		return e.usageErr("unexpected argument %q (see tally projector --help)", fs.Arg(0))
	}
	sf := serveFlags{logLevel: logLevel}
	log, err := sf.logger(e)
	if err != nil {
		return e.usageErr("%v", err)
	}
	opts, err := auth.options()
	if err != nil {
		return e.usageErr("%v", err)
	}
	ncLog := newConnLog(log)
	nc, err := nats.Connect(natsURL, slices.Concat(opts, ncLog.options(), []nats.Option{nats.Name("tally-projector"), nats.MaxReconnects(-1)})...)
	if err != nil {
		return e.fail(fmt.Errorf("connect to NATS at %s: %w", natsURL, err), cmp.Or(connectFix(err), tryRunning))
	}
	defer nc.Close()
	ncLog.watch(nc, time.Second)
	js, err := jetstream.New(nc)
	if err != nil {
		return e.fail(err, "")
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	layout, err := streams.Open(octx, js)
	cancel()
	if err != nil {
		return e.fail(err, tryRunning)
	}
	// With group fsync the server acks writes before they are on disk:
	// the checkpoints wait for the syncs of the tally serve that runs it.
	barrier, err := streams.DialBarrier(ctx, nc)
	if err != nil {
		return e.fail(fmt.Errorf("ask the servers' tally serve for its group fsync: %w", err), "see the logs of tally serve: its sync of the store failed or it did not answer")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerConnMetrics(reg, nc)
	pcfg := projector.Config{Partitions: layout.Partitions, FlushInterval: flushInterval,
		Retention: retention, Rebuild: rebuild, Once: once, Logger: log, Metrics: projector.NewMetrics(reg)}
	if barrier != nil {
		pcfg.Barrier = barrier.Sync
		log.Info("group fsync: syncing through tally serve", "subject", streams.SyncSubject)
	}
	p, err := projector.New(js, pcfg)
	if err != nil {
		return e.usageErr("%v", err)
	}
	log.Info("projector running", "partitions", layout.Partitions, "rebuild", rebuild, "once", once)
	g, gctx := errgroup.WithContext(ctx)
	pctx, stopHTTP := context.WithCancel(gctx)
	g.Go(func() error {
		defer stopHTTP() // with --once, the metrics server goes when the projector is done
		return p.Run(gctx)
	})
	if httpListen != "" {
		ln, err := net.Listen("tcp", httpListen)
		if err != nil {
			return e.fail(fmt.Errorf("--http-listen: %w", err), "choose another --http-listen, or empty to turn it off")
		}
		serveHTTP(pctx, g, ln, reg, nc)
	}
	err = g.Wait()
	if derr := nc.Drain(); derr != nil {
		log.Debug("drain", "err", derr)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		if errors.Is(err, projector.ErrCorrupt) {
			return e.fail(err, "tally audit verify")
		}
		return e.fail(err, "")
	}
	log.Info("projector stopped")
	return exitOK
}

// serveHTTP serves /metrics and /healthz on ln until ctx ends (serve,
// enforcer and projector).
func serveHTTP(ctx context.Context, g *errgroup.Group, ln net.Listener, reg *prometheus.Registry, nc *nats.Conn) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if nc.Status() != nats.CONNECTED {
			http.Error(w, "nats: "+nc.Status().String(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	g.Go(func() error {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return hs.Shutdown(sctx)
	})
}
