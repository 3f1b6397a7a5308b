package streams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults and limits of the ledger's layout.
const (
	// DefaultPartitions is P for a new ledger.
	DefaultPartitions = 8
	// MaxPartitions bounds P: each partition is a stream with its own
	// Raft group in a cluster.
	MaxPartitions = 1024

	// DefaultReplicas suits the embedded single server; clusters use 3.
	DefaultReplicas = 1
	// MaxReplicas is JetStream's own limit.
	MaxReplicas = 5

	// DefaultDuplicates is the Nats-Msg-Id dedupe window of partition
	// streams. tally never re-sends an append: a failed or timed-out append
	// makes the owner reload and look for its message in the stream, and
	// the sequence fence (expected last sequence and message id) refuses
	// any stray copy. The window only absorbs a client library's resend
	// after a reconnect, so it is short: JetStream keeps every id of the
	// window in memory, one object each for the garbage collector to mark
	// (2 minutes at 13 000 appends/s is 1.6 M ids; a 5 s window measured
	// 8 % more decisions/s than 2 minutes over a 30 s run, and at half load
	// after a warm-up 1 s against 10 s cut the p99 from 35 to 20 ms,
	// BENCHMARKS.md). The expected-message-id check does not depend on it:
	// JetStream keeps the last id apart from the window.
	DefaultDuplicates = time.Second
	// MinDuplicates and MaxDuplicates bound Config.Duplicates.
	MinDuplicates = time.Second
	MaxDuplicates = 24 * time.Hour

	// DefaultLeaseTTL is how long a partition lease lives without renewal.
	DefaultLeaseTTL = 10 * time.Second
	// MinLeaseTTL is the server's floor for limit-marker TTLs.
	MinLeaseTTL = time.Second
	// MaxLeaseTTL bounds failover time after a silent owner.
	MaxLeaseTTL = 10 * time.Minute

	// FormatVersion is the ledger format this code reads and writes,
	// stored under MetaKeyFormat.
	FormatVersion = 1

	// MetaKeyPartitions holds P in MetaBucket, as a decimal string.
	MetaKeyPartitions = "partitions"
	// MetaKeyFormat holds the format version in MetaBucket.
	MetaKeyFormat = "format"
)

// Retry pacing for JetStream API calls that fail while a cluster assembles.
const (
	attemptTimeout = 5 * time.Second
	backoffFirst   = 50 * time.Millisecond
	backoffMax     = time.Second
)

// JetStream API error codes that mean "not yet, try again".
const (
	errCodeNoPeers          jetstream.ErrorCode = 10005 // no suitable peers for placement (cluster assembling)
	errCodeClusterNotAvail  jetstream.ErrorCode = 10008 // JetStream system temporarily unavailable
	errCodeClusterNotLeader jetstream.ErrorCode = 10009 // cluster can not handle request (no meta leader)
	errCodeStreamCreate     jetstream.ErrorCode = 10049 // a stream's creation failed: "error creating store for stream"
)

// settleMax bounds the retries of errors a server answers for a moment
// after it loads an account (settling): past it they are taken as final.
const settleMax = 3 * time.Second

var (
	// ErrNoLedger is returned by Open when JetStream holds no tally ledger.
	ErrNoLedger = errors.New("no tally ledger")
	// ErrPartitionsMismatch is returned by Ensure when the ledger exists
	// with another P and Config.RequirePartitions is set.
	ErrPartitionsMismatch = errors.New("ledger has a different number of partitions")
	// ErrFormat reports a ledger written in a format this code cannot read.
	ErrFormat = errors.New("unsupported ledger format")
	// ErrIncompatible reports an existing stream whose configuration breaks
	// the ledger's invariants (deletable, limited, other subjects…).
	ErrIncompatible = errors.New("existing stream is incompatible with the ledger")
)

// Config describes the JetStream assets Ensure creates. Zero fields take
// the defaults named above.
type Config struct {
	// Partitions is P for a new ledger. P is fixed when the ledger is
	// created: for an existing ledger Ensure returns the stored P.
	Partitions int
	// RequirePartitions makes Ensure fail with ErrPartitionsMismatch when
	// the ledger exists with a P other than Partitions, instead of
	// silently adopting the stored P. Set it when the operator asked for a
	// P explicitly.
	RequirePartitions bool
	// Replicas of every stream, bucket and object store: 1 for the
	// embedded server, 3 in a cluster. Existing assets keep theirs.
	Replicas int
	// Duplicates is the dedupe window of the partition streams.
	Duplicates time.Duration
	// LeaseTTL is the TTL of tally_leases: a lease not renewed within it
	// expires, and watchers see a delete marker at once.
	LeaseTTL time.Duration
}

// withDefaults fills zero fields with their defaults.
func (c Config) withDefaults() Config {
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.Duplicates == 0 {
		c.Duplicates = DefaultDuplicates
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	return c
}

// Validate reports the first nonsensical field, after defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	if err := validatePartitions(c.Partitions); err != nil {
		return err
	}
	if c.Replicas < 1 || c.Replicas > MaxReplicas {
		return fmt.Errorf("replicas %d: must be 1..%d", c.Replicas, MaxReplicas)
	}
	if c.Duplicates < MinDuplicates || c.Duplicates > MaxDuplicates {
		return fmt.Errorf("duplicates window %s: must be %s..%s", c.Duplicates, MinDuplicates, MaxDuplicates)
	}
	if c.LeaseTTL < MinLeaseTTL || c.LeaseTTL > MaxLeaseTTL {
		return fmt.Errorf("lease TTL %s: must be %s..%s", c.LeaseTTL, MinLeaseTTL, MaxLeaseTTL)
	}
	return nil
}

func validatePartitions(p int) error {
	if p < 1 || p > MaxPartitions {
		return fmt.Errorf("partitions %d: must be 1..%d", p, MaxPartitions)
	}
	return nil
}

// Layout is what a ledger's meta bucket says about it.
type Layout struct {
	// Partitions is P: streams TALLY_P0 … TALLY_P<P-1>.
	Partitions int
}

// Ensure creates whatever is missing of the ledger and returns its layout.
// It is idempotent and safe to run concurrently from several processes:
//
//   - MetaBucket holds MetaKeyFormat and MetaKeyPartitions, written with
//     KV Create, so concurrent callers agree on the first writer's P. An
//     existing ledger keeps its P (see Config.RequirePartitions).
//   - One stream per partition, StreamName(n) on EventWildcard(n): file
//     storage, Limits retention without any limit, DenyDelete, DenyPurge,
//     AllowAtomicPublish, the Duplicates window. An existing stream is
//     checked, never changed: one that allows deletes, has limits or other
//     subjects fails with ErrIncompatible.
//   - KV LeasesBucket with TTL and limit markers of LeaseTTL: each write
//     renews a key, a key not renewed within LeaseTTL expires and watchers
//     see a delete marker. (The bucket also allows per-key TTLs,
//     jetstream.KeyTTL, for records that need a shorter life.) Lease
//     values should still carry their own expiry for diagnostics.
//   - KV BalancesBucket and BudgetsBucket (history 1), object store
//     SnapshotsBucket.
//
// Existing buckets are kept as they are. In a cluster, API calls that fail
// while the cluster assembles (no meta leader, no suitable peers yet) are
// retried with backoff until ctx ends: give ctx a deadline. Those that
// fail while a server loads the account (see settling) are retried for
// settleMax.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config) (Layout, error) {
	if err := cfg.Validate(); err != nil {
		return Layout{}, fmt.Errorf("ensure ledger: %w", err)
	}
	cfg = cfg.withDefaults()

	meta, err := ensureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      MetaBucket,
		Description: "tally ledger layout: partitions and format version",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return Layout{}, err
	}
	format, err := createOrRead(ctx, meta, MetaKeyFormat, strconv.Itoa(FormatVersion))
	if err != nil {
		return Layout{}, err
	}
	if err := checkFormat(format); err != nil {
		return Layout{}, err
	}
	stored, err := createOrRead(ctx, meta, MetaKeyPartitions, strconv.Itoa(cfg.Partitions))
	if err != nil {
		return Layout{}, err
	}
	p, err := parsePartitions(stored)
	if err != nil {
		return Layout{}, err
	}
	if p != cfg.Partitions && cfg.RequirePartitions {
		return Layout{}, fmt.Errorf("ensure ledger: %w: it has %d, %d were required", ErrPartitionsMismatch, p, cfg.Partitions)
	}

	for n := range p {
		if err := ensureStream(ctx, js, partitionStreamConfig(n, cfg)); err != nil {
			return Layout{}, err
		}
	}
	kvs := []jetstream.KeyValueConfig{{
		Bucket:         LeasesBucket,
		Description:    "tally partition leases: liveness only, safety comes from the append fence",
		History:        1,
		TTL:            cfg.LeaseTTL,
		LimitMarkerTTL: cfg.LeaseTTL,
		Storage:        jetstream.FileStorage,
		Replicas:       cfg.Replicas,
	}, {
		Bucket:      BalancesBucket,
		Description: "tally projection: budget instance balances",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}, {
		Bucket:      BudgetsBucket,
		Description: "tally projection: budget definitions",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}}
	for _, kvc := range kvs {
		if _, err := ensureKV(ctx, js, kvc); err != nil {
			return Layout{}, err
		}
	}
	if err := ensureObjectStore(ctx, js, jetstream.ObjectStoreConfig{
		Bucket:      SnapshotsBucket,
		Description: "tally enforcer snapshots: partition state at a stream sequence",
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}); err != nil {
		return Layout{}, err
	}
	return Layout{Partitions: p}, nil
}

// Open reads the layout of an existing ledger without creating anything. It
// fails with ErrNoLedger when there is none (or its creation never
// finished writing the meta bucket).
func Open(ctx context.Context, js jetstream.JetStream) (Layout, error) {
	var meta jetstream.KeyValue
	err := retry(ctx, func(ctx context.Context) error {
		var err error
		meta, err = js.KeyValue(ctx, MetaBucket)
		return err
	})
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return Layout{}, fmt.Errorf("open ledger: %w: bucket %s not found", ErrNoLedger, MetaBucket)
	}
	if err != nil {
		return Layout{}, fmt.Errorf("open ledger: bucket %s: %w", MetaBucket, err)
	}
	read := func(key string) (string, error) {
		var value string
		err := retry(ctx, func(ctx context.Context) error {
			e, err := meta.Get(ctx, key)
			if err != nil {
				return err
			}
			value = string(e.Value())
			return nil
		})
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return "", fmt.Errorf("open ledger: %w: %s has no key %q", ErrNoLedger, MetaBucket, key)
		}
		if err != nil {
			return "", fmt.Errorf("open ledger: %s key %q: %w", MetaBucket, key, err)
		}
		return value, nil
	}
	format, err := read(MetaKeyFormat)
	if err != nil {
		return Layout{}, err
	}
	if err := checkFormat(format); err != nil {
		return Layout{}, err
	}
	stored, err := read(MetaKeyPartitions)
	if err != nil {
		return Layout{}, err
	}
	p, err := parsePartitions(stored)
	if err != nil {
		return Layout{}, err
	}
	return Layout{Partitions: p}, nil
}

// partitionStreamConfig is the configuration of partition n's stream: an
// append-only, never-expiring, undeletable log.
func partitionStreamConfig(n int, cfg Config) jetstream.StreamConfig {
	c := StreamConfigLike(StreamName(n), EventWildcard(n), cfg)
	c.Description = fmt.Sprintf("tally events of partition %d", n)
	return c
}

// StreamConfigLike is the configuration of a partition stream (cfg's
// replicas and dedupe window, defaults for zero fields) under another
// name and subject: the bench's contract floor appends to streams
// configured as the ledger's.
func StreamConfigLike(name, subject string, cfg Config) jetstream.StreamConfig {
	cfg = cfg.withDefaults()
	return jetstream.StreamConfig{
		Name:      name,
		Subjects:  []string{subject},
		Retention: jetstream.LimitsPolicy,
		// No limits at all: MaxAge, MaxMsgs, MaxBytes or TTLs would delete
		// history. Should a limit ever be set, DiscardNew refuses appends
		// instead of dropping old events.
		MaxConsumers:       -1,
		MaxMsgs:            -1,
		MaxBytes:           -1,
		MaxMsgsPerSubject:  -1,
		MaxMsgSize:         -1,
		Discard:            jetstream.DiscardNew,
		Storage:            jetstream.FileStorage,
		Replicas:           cfg.Replicas,
		Duplicates:         cfg.Duplicates,
		DenyDelete:         true,
		DenyPurge:          true,
		AllowDirect:        true,
		AllowAtomicPublish: true,
	}
}

// checkPartitionStream reports how an existing partition stream breaks the
// ledger's invariants, if it does. Replicas, Duplicates and Description may
// differ: they are the operator's to change.
func checkPartitionStream(have, want jetstream.StreamConfig) error {
	var problems []string
	if !slices.Equal(have.Subjects, want.Subjects) {
		problems = append(problems, fmt.Sprintf("subjects %q, want %q", have.Subjects, want.Subjects))
	}
	if have.Storage != jetstream.FileStorage {
		problems = append(problems, "storage is not file")
	}
	if have.Retention != jetstream.LimitsPolicy {
		problems = append(problems, fmt.Sprintf("retention %s, want limits", have.Retention))
	}
	if !have.DenyDelete {
		problems = append(problems, "deletes allowed")
	}
	if !have.DenyPurge {
		problems = append(problems, "purges allowed")
	}
	if !have.AllowAtomicPublish {
		problems = append(problems, "atomic publish not allowed")
	}
	if have.MaxMsgs > 0 || have.MaxBytes > 0 || have.MaxAge > 0 || have.MaxMsgsPerSubject > 0 {
		problems = append(problems, "has limits that would delete history")
	}
	if have.AllowMsgTTL {
		problems = append(problems, "per-message TTLs allowed")
	}
	if have.Sealed {
		problems = append(problems, "sealed")
	}
	if have.Mirror != nil || len(have.Sources) > 0 {
		problems = append(problems, "is a mirror or has sources")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: stream %s: %v", ErrIncompatible, want.Name, problems)
	}
	return nil
}

// ensureStream creates a partition stream, or checks the existing one.
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	err := retry(ctx, func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, want)
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return err
		}
		s, err := js.Stream(ctx, want.Name)
		if err != nil {
			return err
		}
		return checkPartitionStream(s.CachedInfo().Config, want)
	})
	if err != nil {
		return fmt.Errorf("ensure stream %s: %w", want.Name, err)
	}
	return nil
}

// ensureKV creates a KV bucket or opens the existing one.
func ensureKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	var kv jetstream.KeyValue
	err := retry(ctx, func(ctx context.Context) error {
		var err error
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ensure KV bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// ensureObjectStore creates an object store or opens the existing one.
func ensureObjectStore(ctx context.Context, js jetstream.JetStream, cfg jetstream.ObjectStoreConfig) error {
	err := retry(ctx, func(ctx context.Context) error {
		_, err := js.CreateObjectStore(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			_, err = js.ObjectStore(ctx, cfg.Bucket)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("ensure object store %s: %w", cfg.Bucket, err)
	}
	return nil
}

// createOrRead writes value under key unless the key exists, and returns
// the stored value: the first writer wins and everyone reads its value.
func createOrRead(ctx context.Context, kv jetstream.KeyValue, key, value string) (string, error) {
	err := retry(ctx, func(ctx context.Context) error {
		_, err := kv.Create(ctx, key, []byte(value))
		return err
	})
	if err == nil {
		return value, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return "", fmt.Errorf("create %s key %q: %w", kv.Bucket(), key, err)
	}
	// On a replicated bucket, ErrKeyExists may mean that a concurrent
	// Create is still in flight (10164): wait until it is readable.
	var stored string
	err = retry(ctx, func(ctx context.Context) error {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return errNotYet
		}
		if err != nil {
			return err
		}
		stored = string(e.Value())
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read %s key %q: %w", kv.Bucket(), key, err)
	}
	return stored, nil
}

func checkFormat(stored string) error {
	if stored != strconv.Itoa(FormatVersion) {
		return fmt.Errorf("%w: %s says %q, this tally reads %d", ErrFormat, MetaBucket, stored, FormatVersion)
	}
	return nil
}

func parsePartitions(stored string) (int, error) {
	p, err := strconv.Atoi(stored)
	if err != nil || validatePartitions(p) != nil {
		return 0, fmt.Errorf("ledger meta: %s key %q holds %q, not a partition count 1..%d", MetaBucket, MetaKeyPartitions, stored, MaxPartitions)
	}
	return p, nil
}

// errNotYet marks a condition that a retry will resolve.
var errNotYet = errors.New("not yet")

// retry calls f, each attempt under its own timeout, until it succeeds,
// fails with an error that is neither transient nor settling, settles
// for longer than settleMax, or ctx ends. On ctx's end it returns ctx's
// error joined with the last attempt's.
func retry(ctx context.Context, f func(ctx context.Context) error) error {
	backoff := backoffFirst
	var settleSince time.Time // of the first settling error in a row
	for {
		attempt, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := f(attempt)
		cancel()
		switch {
		case err == nil:
			return nil
		case settling(err):
			if settleSince.IsZero() {
				settleSince = time.Now()
			} else if time.Since(settleSince) > settleMax {
				return err
			}
		case transient(err):
			settleSince = time.Time{}
		default:
			return err
		}
		if ctx.Err() != nil {
			return errors.Join(ctx.Err(), err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, backoffMax)
	}
}

// settling reports whether err is one a server answers for a moment
// after it loads an account from its resolver, when two connections
// loaded it at once: nats-server 2.15.2 and 2.15.3 then set up the
// account's JetStream twice, and its first stream creations fail
// ("could not create storage directory", 10049) or find no JetStream
// (10076, 10039), though a retry 50 ms later succeeds
// (TestEnsureWhileTheAccountLoads). The same codes also mean a disk or
// account that stays broken, so they are retried for settleMax only.
func settling(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case errCodeStreamCreate, jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount:
		return true
	}
	return false
}

// transient reports whether err may go away by itself: the cluster is
// electing a meta leader or still gathering peers, or a request timed out.
func transient(err error) bool {
	if errors.Is(err, errNotYet) ||
		errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errCodeNoPeers, errCodeClusterNotAvail, errCodeClusterNotLeader:
			return true
		}
	}
	return false
}
