package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/streams"
)

// Timeouts of setting a deployment up.
const (
	// ensureTimeout bounds creating the ledger's streams (a cluster may
	// take a few seconds to place R3 streams).
	ensureTimeout = 60 * time.Second
	// servingTimeout bounds the wait for every partition to answer.
	servingTimeout = 30 * time.Second
	// probeTimeout bounds one probe request while waiting.
	probeTimeout = 500 * time.Millisecond
	// closeSyncTimeout bounds the wait for the group fsync's last sync.
	closeSyncTimeout = 10 * time.Second
	// benchOwner names the bench's enforcer in partition.claimed events.
	benchOwner = "tally-bench"
)

// deployment is what the bench measures: the servers, and the enforcer the
// bench runs itself (nil when it measures a running tally).
type deployment struct {
	// urls are the client URLs, one per server; client i connects to
	// urls[i mod len] first.
	urls []string
	// partitions and replicas of the ledger.
	partitions int
	replicas   int
	// sync is the servers' sync mode; "" when unknown (TargetURL).
	sync string
	// fsync says how the writes of the tally phases are made durable, and
	// baselineFsync those of the baselines (FsyncPerMessage, FsyncGroup,
	// FsyncInterval); "" when unknown (TargetURL).
	fsync, baselineFsync string
	// groupCommit of the enforcer the bench runs; nil when unknown.
	groupCommit *bool
	// baselineServer says the servers are the baselines' own, which keep
	// the per-message fsync that the tally's, with group fsync, leaves to
	// the enforcer: there is no enforcer yet, and restartForTally
	// replaces them once the baselines are measured.
	baselineServer bool

	// connectServer opens a connection the way the server side connects:
	// the enforcer, and the B0/B1 responders so they compete on equal
	// terms (in-process with the embedded server, TCP otherwise).
	connectServer func(name string) (*nats.Conn, error)
	// urlOptions are Config.NATSOptions, for every connection to urls.
	urlOptions []nats.Option

	// svc is the enforcer to run, on enforcerConn; nil with TargetURL
	// and on the baselines' server.
	svc          *enforcer.Service
	enforcerConn *nats.Conn

	servers []*server.Server
	dir     string // the servers' store
	tempDir string // removed by close
	// barrier is the group fsync of the tally's server, through the
	// directory that closeFsync closes; nil without group fsync.
	barrier    *streams.Barrier
	closeFsync func() error
	// fsyncs counts the barrier's syncs.
	fsyncs atomic.Uint64
}

// deploy prepares cfg's target: with TargetEmbedded or TargetCluster3 it
// starts the servers, creates the ledger and the enforcer (the caller runs
// it) — or, with group fsync and Config.Baseline, the baselines' server
// first (baselineServer); with TargetURL it checks the ledger exists.
// close undoes it, also after an error.
func deploy(ctx context.Context, cfg Config) (*deployment, error) {
	d := &deployment{}
	if cfg.Target == TargetURL {
		d.urls, d.urlOptions = strings.Split(cfg.NATSURL, ","), cfg.NATSOptions
		d.connectServer = func(name string) (*nats.Conn, error) {
			return d.dial(cfg.NATSURL, name)
		}
		return d, d.openLedger(ctx)
	}

	d.dir = cfg.DataDir
	if d.dir == "" {
		tmp, err := os.MkdirTemp("", "tally-bench-")
		if err != nil {
			return d, fmt.Errorf("bench: store directory: %w", err)
		}
		d.tempDir, d.dir = tmp, tmp
	}
	d.sync = cfg.Sync
	d.fsync, d.baselineFsync = FsyncInterval, FsyncInterval
	if cfg.Sync == SyncAlways {
		d.fsync, d.baselineFsync = FsyncPerMessage, FsyncPerMessage
	}
	gc := cfg.groupCommit()
	d.groupCommit = &gc
	switch cfg.Target {
	case TargetEmbedded:
		if cfg.groupFsync() {
			d.fsync = FsyncGroup
			d.baselineServer = cfg.Baseline
		}
		if err := d.startEmbedded(cfg); err != nil {
			return d, err
		}
	case TargetCluster3:
		servers, err := startCluster(ctx, d.dir, cfg.Partitions, cfg.Sync == SyncAlways)
		d.servers = servers
		if err != nil {
			return d, fmt.Errorf("bench: %w", err)
		}
		for _, s := range servers {
			d.urls = append(d.urls, s.ClientURL())
		}
		d.replicas = clusterSize
		all := strings.Join(d.urls, ",")
		d.connectServer = func(name string) (*nats.Conn, error) {
			return nats.Connect(all, nats.Name(name), nats.MaxReconnects(-1))
		}
	}
	return d, d.openEnforcer(ctx, cfg)
}

// startEmbedded starts the embedded server on d.dir: the baselines' with
// the per-message fsync of --sync always, the tally's without it when the
// enforcer syncs in groups (d.fsync is FsyncGroup) — then with a barrier
// on the store's file system.
func (d *deployment) startEmbedded(cfg Config) error {
	group := d.fsync == FsyncGroup && !d.baselineServer
	if group {
		sync, closeFsync, err := streams.FileSystemSync(d.dir)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		d.barrier = streams.NewBarrier(func(ctx context.Context) error {
			d.fsyncs.Add(1)
			return sync(ctx)
		})
		d.closeFsync = closeFsync
	}
	s, err := streams.StartServer(streams.ServerConfig{Name: benchOwner, DataDir: d.dir, Listen: loopback + ":-1",
		Partitions: cfg.Partitions, SyncAlways: cfg.Sync == SyncAlways && !group, Logger: cfg.Logger})
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	d.servers = []*server.Server{s}
	d.urls = []string{s.ClientURL()}
	d.replicas = 1
	d.connectServer = func(name string) (*nats.Conn, error) {
		return nats.Connect("", nats.InProcessServer(s), nats.Name(name))
	}
	return nil
}

// openEnforcer connects the enforcer, creates the ledger (or finds it) and,
// unless the servers are the baselines' own, the enforcer.
func (d *deployment) openEnforcer(ctx context.Context, cfg Config) error {
	nc, err := d.connectServer(benchOwner + "-enforcer")
	if err != nil {
		return fmt.Errorf("bench: connect the enforcer: %w", err)
	}
	d.enforcerConn = nc
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	ectx, cancel := context.WithTimeout(ctx, ensureTimeout)
	layout, err := streams.Ensure(ectx, js, streams.Config{Partitions: cfg.Partitions, Replicas: d.replicas})
	cancel()
	if err != nil {
		return fmt.Errorf("bench: create the ledger: %w", err)
	}
	d.partitions = layout.Partitions
	if layout.Partitions != cfg.Partitions {
		// A reused --data-dir holds a ledger with another P: route
		// requests the way that ledger expects.
		for _, s := range d.servers {
			if err := streams.ApplyMapping(s, "", layout.Partitions); err != nil {
				return fmt.Errorf("bench: %w", err)
			}
		}
	}
	if d.baselineServer {
		return nil
	}
	d.svc, err = enforcer.NewService(nc, enforcer.ServiceConfig{Partitions: layout.Partitions, Owner: benchOwner,
		GroupCommit: *d.groupCommit, Barrier: d.barrier, Logger: cfg.logger()})
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// restartForTally replaces the baselines' server by the tally's, on the
// same store: the connection drains, the server shuts down cleanly, and
// the new one (without the per-message fsync, with a barrier) recovers
// the ledger the first one created. The clients must reconnect.
func (d *deployment) restartForTally(ctx context.Context, cfg Config) error {
	d.closeEnforcerConn()
	shutdownAll(d.servers)
	d.servers, d.urls, d.baselineServer = nil, nil, false
	if err := d.startEmbedded(cfg); err != nil {
		return err
	}
	return d.openEnforcer(ctx, cfg)
}

// openLedger reads the layout of the running ledger at d.urls.
func (d *deployment) openLedger(ctx context.Context) error {
	nc, err := d.connectServer(benchOwner + "-setup")
	if err != nil {
		return fmt.Errorf("bench: connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	octx, cancel := context.WithTimeout(ctx, ensureTimeout)
	defer cancel()
	layout, err := streams.Open(octx, js)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	d.partitions = layout.Partitions
	info, err := js.Stream(octx, streams.StreamName(0))
	if err != nil {
		return fmt.Errorf("bench: stream %s: %w", streams.StreamName(0), err)
	}
	d.replicas = info.CachedInfo().Config.Replicas
	return nil
}

// close drains the enforcer's connection, stops the servers the bench
// started, closes the group fsync's directory and removes its temporary
// store. Call it after the enforcer's Run returned.
func (d *deployment) close() {
	d.closeEnforcerConn()
	shutdownAll(d.servers)
	if d.barrier != nil {
		// The directory must not close under a sync in flight (its
		// descriptor could be another file's by then). Nothing takes
		// tickets once the enforcer has returned: this one waits for the
		// last sync. A sync that outlasts the wait keeps the directory.
		ctx, cancel := context.WithTimeout(context.Background(), closeSyncTimeout)
		err := d.barrier.Sync(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			_ = d.closeFsync()
		}
	}
	if d.tempDir != "" {
		_ = os.RemoveAll(d.tempDir)
	}
}

// closeEnforcerConn drains the enforcer's connection, if any.
func (d *deployment) closeEnforcerConn() {
	if d.enforcerConn != nil {
		_ = d.enforcerConn.Drain()
		waitClosed(d.enforcerConn)
		d.enforcerConn = nil
	}
}

// waitClosed waits (briefly) until a draining connection has closed.
func waitClosed(nc *nats.Conn) {
	deadline := time.Now().Add(5 * time.Second)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// waitServing waits until every partition's enforcer answers a request.
func waitServing(ctx context.Context, nc *nats.Conn, partitions int, total time.Duration) error {
	pending := make(map[int]string, partitions)
	for n := range partitions {
		pending[n] = probeRoot(n, partitions)
	}
	return poll(ctx, total, func() error {
		for n, root := range pending {
			_, err := nc.Request(streams.RequestSubject(root, "budget-list"), []byte(`{}`), probeTimeout)
			if err != nil {
				if errors.Is(err, nats.ErrNoResponders) {
					return fmt.Errorf("partition %d: no enforcer answers", n)
				}
				return fmt.Errorf("partition %d: %w", n, err)
			}
			delete(pending, n)
		}
		return nil
	})
}

// probeRoot is a root that lands on partition n of p.
func probeRoot(n, p int) string {
	for i := 0; ; i++ {
		r := fmt.Sprintf("tenant:bench-probe-%d", i)
		if streams.Partition(r, p) == n {
			return r
		}
	}
}

// dial connects to urls (comma-separated) as name, with the deployment's
// connection options and opts.
func (d *deployment) dial(urls, name string, opts ...nats.Option) (*nats.Conn, error) {
	all := append(append(make([]nats.Option, 0, len(d.urlOptions)+1+len(opts)), d.urlOptions...), nats.Name(name))
	return nats.Connect(urls, append(all, opts...)...)
}
