package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"golang.org/x/sync/errgroup"

	"github.com/tallyledger/tally/streams"
)

// Run measures cfg's target and returns the report. With TargetEmbedded or
// TargetCluster3 it starts the servers and an enforcer first; then it
// connects the clients, sets up the budgets and runs the phases — with
// Config.Baseline in the order B0, B1, tally, raw publish, replay. With
// group fsync (Config.GroupFsync) the baselines keep the server's
// per-message fsync: B0, B1 and raw publish run first, on a server of
// their own, which then stops cleanly; the tally's server starts on the
// same store, and the same number of clients connect to it afresh for
// the budgets, tally and replay. It blocks until everything it started
// has stopped (shutdown order: clients finish their step, the enforcer
// finishes the decisions in flight, its connection drains, the servers
// stop) and owns every goroutine it starts. Cancelling ctx stops it early
// with ctx's error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.ProfileDir != "" {
		// Created (or found) now, not after the first phase has run.
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return nil, fmt.Errorf("bench: profile directory: %w", err)
		}
	}
	rep := &Report{Version: ReportVersion, Started: time.Now().UTC().Round(time.Millisecond), Machine: machine()}
	use := startUsage()
	dep, err := deploy(ctx, cfg)
	defer dep.close()
	if err != nil {
		return nil, err
	}
	load := newTallyLoad(cfg, ulid.Make().String())
	baselines := cfg.Baseline
	if dep.baselineServer {
		if err := measure(ctx, cfg, dep, load, rep, true, false); err != nil {
			return nil, err
		}
		if err := dep.restartForTally(ctx, cfg); err != nil {
			return nil, err
		}
		if w := cfg.Progress; w != nil {
			fmt.Fprintf(w, "server restarted for tally: fsync %s\n", dep.fsync)
		}
		baselines = false
	}
	g, gctx := errgroup.WithContext(ctx)
	ectx, stopEnforcer := context.WithCancel(gctx)
	defer stopEnforcer()
	if dep.svc != nil {
		g.Go(func() error { return dep.svc.Run(ectx) })
	}
	g.Go(func() error {
		defer stopEnforcer()
		return measure(gctx, cfg, dep, load, rep, baselines, true)
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	use.finish(&rep.Machine)
	return rep, nil
}

// measure runs phases against a serving deployment and fills rep: with
// baselines B0, B1, B1-padded and B1-contract, with tally the budgets'
// setup and the tally phase, and with Config.Baseline the raw publish (on
// the baselines' server), the replay and the ratios (once tally is
// measured).
func measure(ctx context.Context, cfg Config, dep *deployment, load *tallyLoad, rep *Report, baselines, tally bool) error {
	ctl, err := dep.dial(strings.Join(dep.urls, ","), benchOwner+"-control")
	if err != nil {
		return fmt.Errorf("bench: connect to %s: %w", dep.urls[0], err)
	}
	defer ctl.Close()
	js, err := jetstream.New(ctl)
	if err != nil {
		return err
	}
	if tally {
		if err := waitServing(ctx, ctl, dep.partitions, servingTimeout); err != nil {
			return fmt.Errorf("bench: the ledger does not answer: %w", err)
		}
	}
	conns, err := connectClients(dep, cfg.Clients)
	if err != nil {
		return err
	}
	defer closeAll(conns)
	// On cancellation, closing the connections ends the requests in flight.
	defer context.AfterFunc(ctx, func() { closeAll(conns) })()
	if tally {
		if err := setupBudgets(ctx, conns, cfg.Roots, cfg.Timeout); err != nil {
			return err
		}
	}

	payload := load.reserveBody(&agent{cycle: 1}, load.roots[0], true)
	rep.Setup = Setup{Target: string(cfg.Target), NATSURL: cfg.NATSURL, Servers: len(dep.urls), Partitions: dep.partitions,
		Replicas: dep.replicas, Sync: dep.sync, Fsync: dep.fsync, GroupCommit: dep.groupCommit, Clients: cfg.Clients, Connections: len(conns),
		Roots: cfg.Roots, SingleRoot: cfg.SingleRoot, Mix: string(cfg.Mix), DurationS: cfg.Duration.Seconds(), WarmupS: cfg.Warmup.Seconds(),
		TargetRate: cfg.Rate, PayloadBytes: len(payload)}
	if cfg.Baseline {
		rep.Setup.Responders, rep.Setup.BaselineFsync = dep.partitions, dep.baselineFsync
	}

	if baselines {
		resp, err := dep.connectServer(benchOwner + "-responders")
		if err != nil {
			return fmt.Errorf("bench: connect the responders: %w", err)
		}
		defer resp.Close()
		if rep.B0, err = runB0(ctx, cfg, conns, resp, dep.partitions, payload); err != nil {
			return err
		}
		if rep.B1, err = runB1(ctx, cfg, conns, resp, js, dep, payload, 0, 0); err != nil {
			return err
		}
		if cfg.B1AppendBytes > 0 || cfg.B1AnswerBytes > 0 {
			if rep.B1Padded, err = runB1(ctx, cfg, conns, resp, js, dep, payload, cfg.B1AppendBytes, cfg.B1AnswerBytes); err != nil {
				return err
			}
		}
		if cfg.B1Contract {
			if rep.B1Contract, err = runB1Contract(ctx, cfg, conns, resp, js, dep, load); err != nil {
				return err
			}
		}
	}
	if !tally {
		// The baselines' server stops next: raw publish, a yardstick of
		// its writes too, runs on it.
		rep.RawPublish, err = runRawPublish(ctx, cfg, dep, js, payload)
		return err
	}

	tp := phase{name: "tally", unit: "decisions", conns: conns, cfg: cfg, step: load.step}
	if dep.barrier != nil {
		tp.syncs = &dep.fsyncs
	}
	res, err := tp.run(ctx)
	if err != nil {
		return err
	}
	count := func(f func(*agent) *atomic.Uint64) uint64 { return res.sum(f) }
	reserves := count(func(c *agent) *atomic.Uint64 { return &c.reserves })
	rep.Tally = Tally{
		Decisions: res.answered(), DecisionsPerS: rate(res.answered(), res.elapsed),
		Reserves: reserves, ReservesPerS: rate(reserves, res.elapsed),
		Granted:  count(func(c *agent) *atomic.Uint64 { return &c.granted }),
		Denied:   count(func(c *agent) *atomic.Uint64 { return &c.denied }),
		Commits:  count(func(c *agent) *atomic.Uint64 { return &c.commits }),
		Releases: count(func(c *agent) *atomic.Uint64 { return &c.releases }),
		Decides:  count(func(c *agent) *atomic.Uint64 { return &c.decides }),
		Errors:   res.failed(), ErrorsByCode: res.codes(), ElapsedS: seconds(res.elapsed), Latency: latencyOf(res.hist),
		CPUS: seconds(res.cpu), CPUPerDecisionUS: perOp(res.cpu, res.answered()),
	}
	if tp.syncs != nil {
		rep.Tally.Fsyncs = &res.syncs
	}

	if cfg.Baseline {
		if baselines {
			if rep.RawPublish, err = runRawPublish(ctx, cfg, dep, js, payload); err != nil {
				return err
			}
		}
		if rep.Replay, err = runReplay(ctx, cfg, js, dep.partitions); err != nil {
			return err
		}
		t := rep.Tally
		rep.Ratios = &Ratios{
			DecisionsVsB0:         ratio(t.DecisionsPerS, rep.B0.RequestsPerS),
			DecisionsVsB1:         ratio(t.DecisionsPerS, rep.B1.RequestsPerS),
			DecisionsVsRawPublish: ratio(t.DecisionsPerS, rep.RawPublish.MessagesPerS),
			P50VsB0:               ratio(t.Latency.P50, rep.B0.Latency.P50),
			P99VsB0:               ratio(t.Latency.P99, rep.B0.Latency.P99),
			P50VsB1:               ratio(t.Latency.P50, rep.B1.Latency.P50),
			P99VsB1:               ratio(t.Latency.P99, rep.B1.Latency.P99),
		}
		if c := rep.B1Contract; c != nil {
			rep.Ratios.DecisionsVsB1Contract = ratio(t.DecisionsPerS, c.RequestsPerS)
			rep.Ratios.P99VsB1Contract = ratio(t.Latency.P99, c.Latency.P99)
			rep.Ratios.B1ContractVsB1 = ratio(c.RequestsPerS, rep.B1.RequestsPerS)
		}
	}
	return nil
}

// runB0 measures the transport: responders that answer at once.
func runB0(ctx context.Context, cfg Config, conns []*nats.Conn, resp *nats.Conn, responders int, payload []byte) (*Load, error) {
	subs, err := subscribeB0(resp, responders)
	if err != nil {
		return nil, err
	}
	defer unsubscribeAll(subs)
	res, err := phase{name: "B0", unit: "requests", conns: conns, cfg: cfg, step: baselineStep(b0Subject, payload)}.run(ctx)
	if err != nil {
		return nil, err
	}
	return loadOf(res), nil
}

// runB1 measures the minimal durable ledger: responders that append each
// request to a scratch stream and answer after the ack.
func runB1(ctx context.Context, cfg Config, conns []*nats.Conn, resp *nats.Conn, js jetstream.JetStream, dep *deployment, payload []byte, pad, answerPad int) (l *Load, err error) {
	if err := createScratch(ctx, js, b1Stream, b1AppendSubject, dep.replicas); err != nil {
		return nil, err
	}
	defer func() {
		if derr := deleteScratch(ctx, js, b1Stream); err == nil && derr != nil {
			l, err = nil, derr
		}
	}()
	subs, err := subscribeB1(resp, dep.partitions, pad, answerPad)
	if err != nil {
		return nil, err
	}
	defer unsubscribeAll(subs)
	name := "B1"
	if pad > 0 || answerPad > 0 {
		name = "B1-padded"
	}
	res, err := phase{name: name, unit: "requests", conns: conns, cfg: cfg, step: baselineStep(b1Subject, payload)}.run(ctx)
	if err != nil {
		return nil, err
	}
	l = loadOf(res)
	if pad > 0 {
		l.AppendBytes = max(pad, len(payload))
	}
	l.AnswerBytes = answerPad
	return l, nil
}

func loadOf(res loadResult) *Load {
	return &Load{Requests: res.answered(), RequestsPerS: rate(res.answered(), res.elapsed), Errors: res.failed(),
		ErrorsByCode: res.codes(), ElapsedS: seconds(res.elapsed), Latency: latencyOf(res.hist),
		CPUS: seconds(res.cpu), CPUPerRequestUS: perOp(res.cpu, res.answered())}
}

// runRawPublish measures JetStream's async publish rate on a fresh
// connection to a scratch stream.
func runRawPublish(ctx context.Context, cfg Config, dep *deployment, js jetstream.JetStream, payload []byte) (t *Throughput, err error) {
	if err := createScratch(ctx, js, rawStream, rawSubject, dep.replicas); err != nil {
		return nil, err
	}
	defer func() {
		if derr := deleteScratch(ctx, js, rawStream); err == nil && derr != nil {
			t, err = nil, derr
		}
	}()
	nc, err := dep.dial(dep.urls[0], benchOwner+"-raw")
	if err != nil {
		return nil, fmt.Errorf("bench: connect the raw publisher: %w", err)
	}
	defer nc.Close()
	acked, failed, elapsed, err := rawPublish(ctx, nc, payload, min(cfg.Duration, maxRawDuration))
	if err != nil {
		return nil, err
	}
	t = &Throughput{Stream: rawStream, Messages: acked, MessagesPerS: rate(acked, elapsed), Bytes: acked * uint64(len(payload)),
		Errors: failed, ElapsedS: seconds(elapsed)}
	if w := cfg.Progress; w != nil {
		fmt.Fprintf(w, "raw publish: %.1fs, %.0f msg/s, %d errors\n", elapsed.Seconds(), t.MessagesPerS, failed)
	}
	return t, nil
}

// runReplay measures the ordered-consumer replay of the partition streams.
func runReplay(ctx context.Context, cfg Config, js jetstream.JetStream, partitions int) (*Throughput, error) {
	msgs, size, elapsed, err := replay(ctx, js, partitions)
	if err != nil {
		return nil, err
	}
	t := &Throughput{Stream: streams.StreamName(0) + "…" + streams.StreamName(partitions-1), Messages: msgs,
		MessagesPerS: rate(msgs, elapsed), Bytes: size, ElapsedS: seconds(elapsed)}
	if w := cfg.Progress; w != nil {
		fmt.Fprintf(w, "replay: %.1fs, %.0f msg/s, %d messages\n", elapsed.Seconds(), t.MessagesPerS, msgs)
	}
	return t, nil
}

// seconds rounds a duration to the millisecond, in seconds.
func seconds(d time.Duration) float64 { return d.Round(time.Millisecond).Seconds() }
