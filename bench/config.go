package bench

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tallyledger/tally/streams"
)

// Mix is what each simulated agent does in a loop.
type Mix string

// Mixes.
const (
	// MixReserveCommit reserves an estimate, then commits the actual cost:
	// two decisions per cycle, each appending one event.
	MixReserveCommit Mix = "reserve-commit"
	// MixReserveRelease reserves, then releases: two decisions per cycle.
	MixReserveRelease Mix = "reserve-release"
	// MixDecide dry-runs a reserve: one decision, no event, no append.
	MixDecide Mix = "decide"
)

// Mixes lists every mix.
var Mixes = []Mix{MixReserveCommit, MixReserveRelease, MixDecide}

// Valid reports whether m is a known mix.
func (m Mix) Valid() bool {
	for _, x := range Mixes {
		if m == x {
			return true
		}
	}
	return false
}

// Target says which deployment the bench measures.
type Target string

// Targets.
const (
	// TargetURL measures a running tally (serve or enforcers on a cluster)
	// at Config.NATSURL.
	TargetURL Target = "nats-url"
	// TargetEmbedded starts a fresh embedded server (R1) and an enforcer in
	// the bench process: one command measures a fresh deployment.
	TargetEmbedded Target = "embedded"
	// TargetCluster3 starts a fresh 3-node in-process cluster with R3
	// streams and an enforcer in the bench process.
	TargetCluster3 Target = "cluster3"
)

// Sync modes of the servers the bench starts.
const (
	SyncAlways   = "always"
	SyncInterval = "interval"
)

// Group commit settings (as `tally serve --group-commit`).
const (
	GroupCommitAuto = "auto"
	GroupCommitOn   = "on"
	GroupCommitOff  = "off"
)

// Group fsync settings (as `tally serve --group-fsync`).
const (
	GroupFsyncAuto = "auto"
	GroupFsyncOff  = "off"
)

// Where the writes of a phase are made durable (Setup.Fsync).
const (
	// FsyncPerMessage: the server fsyncs every write before its ack.
	FsyncPerMessage = "server, per message"
	// FsyncGroup: the server does not fsync; the enforcer syncs the
	// store's file system (syncfs) once per group of acknowledged events
	// before it answers them (streams.Barrier).
	FsyncGroup = "group (syncfs)"
	// FsyncInterval: the server fsyncs on its interval (2 minutes).
	FsyncInterval = "server, interval"
)

// Defaults of Config.
const (
	DefaultClients  = 64
	DefaultDuration = 30 * time.Second
	DefaultRoots    = 100
	DefaultMix      = MixReserveCommit
	DefaultTimeout  = 5 * time.Second
	// DefaultAttempts is how often a tally request is sent (same body, so
	// the same idempotency key) before the bench gives up on it.
	DefaultAttempts = 5
)

// Limits of Config.
const (
	MaxClients  = 4096
	MaxRoots    = 100_000
	MaxDuration = 24 * time.Hour
	MinDuration = 100 * time.Millisecond
	// MaxRate bounds --rate (decisions/s over all clients).
	MaxRate = 10_000_000
	// MaxB1AppendBytes bounds the padded B1 appends (within max_payload).
	MaxB1AppendBytes = 1 << 20
)

// Config describes one bench run. Zero fields take the defaults above.
type Config struct {
	// Target is the deployment to measure.
	Target Target
	// NATSURL is the server list of TargetURL.
	NATSURL string
	// NATSOptions are added to every connection the bench opens to
	// NATSURL (credentials, TLS); only with TargetURL.
	NATSOptions []nats.Option
	// Sync is SyncAlways or SyncInterval for the servers the bench starts
	// (TargetEmbedded, TargetCluster3). Default SyncAlways.
	Sync string
	// GroupCommit of the enforcer the bench starts: auto (on with sync
	// always or on a cluster, as `tally serve`), on or off.
	GroupCommit string
	// GroupFsync is auto or off (as `tally serve --group-fsync`). auto,
	// with TargetEmbedded and SyncAlways where the system has syncfs
	// (streams.GroupFsyncSupported): the tally phases run on a server
	// that does not fsync each write, and the enforcer makes what it
	// answers durable in groups (streams.Barrier). The baselines keep the
	// server's per-message fsync: B1 is a minimal durable ledger, not one
	// that borrows tally's fsync. With Baseline they run first, on a
	// server of their own on the same store, stopped before the tally's
	// starts. off: the server fsyncs every write in every phase.
	GroupFsync string
	// Partitions is P of the ledger the bench creates; default
	// streams.DefaultPartitions. With TargetURL the ledger's own P is used.
	Partitions int
	// DataDir holds the store of the servers the bench starts; empty: a
	// temporary directory, removed at the end.
	DataDir string

	// Clients is the number of simulated agents, each on its own NATS
	// connection.
	Clients int
	// Duration of each measured phase.
	Duration time.Duration
	// Warmup, if positive, runs each phase's load this long before it is
	// measured, with the same clients continuing into the measurement: a
	// fresh process first grows its heap and JetStream its write caches
	// (page faults), which a long-running deployment has done long ago.
	Warmup time.Duration
	// Roots is the number of tenants the load is spread over.
	Roots int
	// SingleRoot puts all load on one root (one partition's decision loop).
	SingleRoot bool
	// Mix is what each agent does.
	Mix Mix
	// B1AppendBytes, if larger than the request, pads what the B1
	// responder appends to this many bytes: with --baseline an extra phase
	// "B1-padded" measures the minimal durable ledger appending records as
	// large as tally's events (~1.4 KB for a reserve against three budgets
	// in two units), separating the cost of the events' size from the cost
	// of tally's own work. 0: no extra phase.
	B1AppendBytes int
	// B1AnswerBytes, if larger than JetStream's ack, pads the answers of
	// the "B1-padded" phase to this many bytes (tally's reserve answer
	// carries the same instance views as its event, ~1.4 KB): with
	// B1AppendBytes, a minimal durable ledger moving tally's bytes, so
	// what remains between it and tally is tally's own work. 0: the ack.
	B1AnswerBytes int
	// B1Contract, with Baseline, also measures the contract floor
	// ("B1-contract", contract.go): a B1 whose requests, appends and
	// answers carry what tally's do through the server (the same request
	// bodies and mapping, events and answers of tally's sizes on the
	// partition streams' configuration and subjects, with tally's fence and
	// dedupe headers, pipelined) and that decides nothing. Only with the
	// servers the bench starts, whose mapping it extends.
	B1Contract bool
	// Rate, if positive, paces the clients (open loop) to this many
	// decisions/s over all of them; latency is then measured from each
	// request's scheduled time, so a stall is not hidden (no coordinated
	// omission). 0 runs closed loop: each client sends as fast as answers
	// come.
	Rate float64
	// Baseline measures, in the same run, with the same clients and
	// server: B0 (a responder that answers at once), B1 (a responder that
	// appends each request to a stream and answers after the ack), then
	// tally, the raw async publish rate and the ordered-consumer replay
	// rate.
	Baseline bool
	// Timeout bounds one attempt of a request.
	Timeout time.Duration
	// Attempts is how often a tally request is sent before giving up.
	Attempts int

	// Progress receives a progress line per phase; nil: none.
	Progress io.Writer
	// LiveProgress rewrites the progress line every second (Progress is a
	// terminal); otherwise only each phase's final line is written.
	LiveProgress bool
	// Logger receives the enforcer's and servers' logs; nil discards them.
	Logger *slog.Logger
	// ProfileDir, if not empty, receives a CPU profile of this process
	// per phase (DIR/<phase>.cpu.prof: B0, B1, tally, ...), so the
	// yardsticks' costs can be compared with tally's, an execution trace
	// (DIR/<phase>.trace: where goroutines waited) and a heap profile as
	// each phase ends (DIR/<phase>.heap.prof). The process must not be
	// profiling or tracing already.
	ProfileDir string
	// OnGranted, if not nil, is called (from any client goroutine,
	// concurrently) with the root and id of every reservation the bench
	// got granted, in a warm-up too: tests check each one against the
	// stream.
	OnGranted func(root, reservationID string)
}

func (c Config) withDefaults() Config {
	if c.Target == "" {
		c.Target = TargetURL
	}
	if c.Sync == "" {
		c.Sync = SyncAlways
	}
	if c.GroupCommit == "" {
		c.GroupCommit = GroupCommitAuto
	}
	if c.GroupFsync == "" {
		c.GroupFsync = GroupFsyncAuto
	}
	if c.Partitions == 0 {
		c.Partitions = streams.DefaultPartitions
	}
	if c.Clients == 0 {
		c.Clients = DefaultClients
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Roots == 0 {
		c.Roots = DefaultRoots
	}
	if c.SingleRoot {
		c.Roots = 1
	}
	if c.Mix == "" {
		c.Mix = DefaultMix
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Attempts == 0 {
		c.Attempts = DefaultAttempts
	}
	return c
}

// logger is the configured logger, or one that discards.
func (c Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// Validate reports the first nonsensical field, after defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch c.Target {
	case TargetURL:
		if c.NATSURL == "" {
			return errors.New("bench: a NATS URL is required to measure a running tally")
		}
	case TargetEmbedded, TargetCluster3:
		if c.NATSURL != "" {
			return fmt.Errorf("bench: target %s starts its own servers; a NATS URL makes no sense with it", c.Target)
		}
		if len(c.NATSOptions) > 0 {
			return fmt.Errorf("bench: target %s starts its own servers; connection options make no sense with it", c.Target)
		}
	default:
		return fmt.Errorf("bench: unknown target %q (one of %s %s %s)", c.Target, TargetURL, TargetEmbedded, TargetCluster3)
	}
	if c.Sync != SyncAlways && c.Sync != SyncInterval {
		return fmt.Errorf("bench: sync %q: want %s or %s", c.Sync, SyncAlways, SyncInterval)
	}
	if c.GroupCommit != GroupCommitAuto && c.GroupCommit != GroupCommitOn && c.GroupCommit != GroupCommitOff {
		return fmt.Errorf("bench: group commit %q: want %s, %s or %s", c.GroupCommit, GroupCommitAuto, GroupCommitOn, GroupCommitOff)
	}
	if c.GroupFsync != GroupFsyncAuto && c.GroupFsync != GroupFsyncOff {
		return fmt.Errorf("bench: group fsync %q: want %s or %s", c.GroupFsync, GroupFsyncAuto, GroupFsyncOff)
	}
	if c.Partitions < 1 || c.Partitions > streams.MaxPartitions {
		return fmt.Errorf("bench: partitions %d: must be 1..%d", c.Partitions, streams.MaxPartitions)
	}
	if c.Clients < 1 || c.Clients > MaxClients {
		return fmt.Errorf("bench: clients %d: must be 1..%d", c.Clients, MaxClients)
	}
	if c.Warmup < 0 || c.Warmup > MaxDuration {
		return fmt.Errorf("bench: warmup %s: must be 0..%s", c.Warmup, MaxDuration)
	}
	if c.Duration < MinDuration || c.Duration > MaxDuration {
		return fmt.Errorf("bench: duration %s: must be %s..%s", c.Duration, MinDuration, MaxDuration)
	}
	if c.Roots < 1 || c.Roots > MaxRoots {
		return fmt.Errorf("bench: roots %d: must be 1..%d", c.Roots, MaxRoots)
	}
	if !c.Mix.Valid() {
		return fmt.Errorf("bench: mix %q: want one of %v", c.Mix, Mixes)
	}
	if c.B1AppendBytes < 0 || c.B1AppendBytes > MaxB1AppendBytes {
		return fmt.Errorf("bench: b1-append-bytes %d: must be 0 to %d", c.B1AppendBytes, MaxB1AppendBytes)
	}
	if c.B1AppendBytes > 0 && !c.Baseline {
		return errors.New("bench: b1-append-bytes needs --baseline")
	}
	if c.B1AnswerBytes < 0 || c.B1AnswerBytes > MaxB1AppendBytes {
		return fmt.Errorf("bench: b1-answer-bytes %d: must be 0 to %d", c.B1AnswerBytes, MaxB1AppendBytes)
	}
	if c.B1AnswerBytes > 0 && !c.Baseline {
		return errors.New("bench: b1-answer-bytes needs --baseline")
	}
	if c.B1Contract && !c.Baseline {
		return errors.New("bench: b1-contract needs --baseline")
	}
	if c.B1Contract && c.Target != TargetEmbedded && c.Target != TargetCluster3 {
		return errors.New("bench: b1-contract maps subjects on the servers the bench starts: use --embedded or --cluster3")
	}
	if c.Rate < 0 || c.Rate > MaxRate {
		return fmt.Errorf("bench: rate %g: must be 0 (closed loop) to %d decisions/s", c.Rate, MaxRate)
	}
	if c.Timeout < time.Millisecond {
		return fmt.Errorf("bench: timeout %s: too short", c.Timeout)
	}
	if c.Attempts < 1 || c.Attempts > 100 {
		return fmt.Errorf("bench: attempts %d: must be 1..100", c.Attempts)
	}
	return nil
}

// groupCommit resolves GroupCommitAuto as `tally serve` does: on with sync
// always or on a cluster.
func (c Config) groupCommit() bool {
	switch c.GroupCommit {
	case GroupCommitOn:
		return true
	case GroupCommitOff:
		return false
	}
	return c.Sync == SyncAlways || c.Target == TargetCluster3
}

// groupFsync resolves GroupFsyncAuto as `tally serve` does: on with sync
// always on the embedded server, where the system has syncfs.
func (c Config) groupFsync() bool {
	return c.GroupFsync != GroupFsyncOff && c.Target == TargetEmbedded && c.Sync == SyncAlways && streams.GroupFsyncSupported
}
