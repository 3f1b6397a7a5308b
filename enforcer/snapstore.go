package enforcer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/streams"
)

// DefaultSnapshotEvery is how many events a partition appends between
// snapshots: recovery replays at most that many events after the snapshot.
const DefaultSnapshotEvery = 50_000

// Snapshot object metadata: the stream position a snapshot claims, which
// restore verifies against the stream before trusting it.
const (
	metaSeq      = "tally-seq"
	metaHash     = "tally-hash"
	metaVersion  = "tally-version"  // the data's format; informational, Restore tells them apart itself
	metaEncoding = "tally-encoding" // "gzip"
	metaSize     = "tally-size"     // bytes of the snapshot before compression
	// maxSizeHint bounds how much LoadSnapshot reserves up front from
	// metaSize (a larger snapshot still loads, growing as it reads).
	maxSizeHint = 1 << 30
	// snapshotIOTimeout bounds storing or loading one snapshot when the
	// caller gives no deadline: nats.go otherwise allows its 5 s API
	// timeout for the whole object, too little for a large partition.
	snapshotIOTimeout = 10 * time.Minute
	// snapshotLookupTimeout bounds finding a snapshot before reading it.
	snapshotLookupTimeout = 5 * time.Second
	// snapshotPending bounds the chunks of a snapshot in flight: a large
	// snapshot published with the default async window makes JetStream
	// answer 429 (too many requests).
	snapshotPending = 64
)

// SnapshotName is partition n's object in streams.SnapshotsBucket.
func SnapshotName(n int) string { return "p" + strconv.Itoa(n) }

// SaveSnapshot stores st's snapshot for partition n; hash is the hash of
// the message at st.LastSeq(), the chain position it claims.
func SaveSnapshot(ctx context.Context, js jetstream.JetStream, n int, data []byte, seq uint64, hash string) error {
	ctx, cancel := withIOTimeout(ctx)
	defer cancel()
	// A dedicated context with a small async window paces the chunks.
	sjs, err := jetstream.New(js.Conn(), jetstream.WithPublishAsyncMaxPending(snapshotPending))
	if err != nil {
		return err
	}
	obs, err := sjs.ObjectStore(ctx, streams.SnapshotsBucket)
	if err != nil {
		return err
	}
	// Snapshots repeat roots, scopes and key prefixes: gzip makes a binary
	// one about 4 times smaller to store and to read back on takeover (a
	// JSON one of an earlier build about 12 times); Restore reads both.
	var zbuf bytes.Buffer
	zw := newGzipWriter(&zbuf)
	if _, err := zw.Write(data); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	version := SnapshotVersion
	if len(data) > 0 && data[0] == '{' {
		version = SnapshotVersionJSON
	}
	_, err = obs.Put(ctx, jetstream.ObjectMeta{Name: SnapshotName(n), Metadata: map[string]string{
		metaSeq: strconv.FormatUint(seq, 10), metaHash: hash, metaVersion: strconv.Itoa(version),
		metaEncoding: "gzip", metaSize: strconv.Itoa(len(data))}}, &zbuf)
	return err
}

// newGzipWriter compresses snapshots: klauspost/compress's gzip, which
// writes and reads the same format as the standard library's at about
// twice its speed (decompressing is part of every takeover), at its
// fastest level. Snapshots are compressed while the partition decides, on
// the same CPUs: on a 17 MB snapshot of 50 000 reserve+commit pairs the
// fastest level took 31 ms for 2.87 MB where the default took 82 ms for
// 2.62 MB. Tests swap in the standard library's, which earlier builds
// wrote with.
var newGzipWriter = func(w io.Writer) io.WriteCloser {
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		panic(err) // BestSpeed is a valid level
	}
	return zw
}

// ErrNoSnapshot is returned when a partition has no usable snapshot.
var ErrNoSnapshot = errors.New("no snapshot")

// LoadSnapshot restores partition n's newest snapshot after checking that
// the stream's message at the sequence it claims hashes to the hash it
// recorded. It returns the state and that hash.
func LoadSnapshot(ctx context.Context, js jetstream.JetStream, n int, cfg Config) (*State, string, error) {
	// Lookups fail fast (a stream may be changing leader: the caller then
	// replays from the stream); only streaming the object gets the long
	// deadline a large snapshot needs.
	lctx, lcancel := context.WithTimeout(ctx, snapshotLookupTimeout)
	defer lcancel()
	obs, err := js.ObjectStore(lctx, streams.SnapshotsBucket)
	if err != nil {
		return nil, "", err
	}
	if _, err := obs.GetInfo(lctx, SnapshotName(n)); errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, "", ErrNoSnapshot
	} else if err != nil {
		return nil, "", err
	}
	ctx, cancel := withIOTimeout(ctx)
	defer cancel()
	res, err := obs.Get(ctx, SnapshotName(n))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, "", ErrNoSnapshot
	}
	if err != nil {
		return nil, "", err
	}
	defer res.Close()
	info, err := res.Info()
	if err != nil {
		return nil, "", err
	}
	seq, err := strconv.ParseUint(info.Metadata[metaSeq], 10, 64)
	if err != nil || seq == 0 {
		return nil, "", fmt.Errorf("snapshot of partition %d: bad %s %q", n, metaSeq, info.Metadata[metaSeq])
	}
	hash := info.Metadata[metaHash]
	vctx, vcancel := context.WithTimeout(ctx, snapshotLookupTimeout)
	defer vcancel()
	stream, err := js.Stream(vctx, streams.StreamName(n))
	if err != nil {
		return nil, "", err
	}
	m, err := stream.GetMsg(vctx, seq)
	if err != nil {
		return nil, "", fmt.Errorf("snapshot of partition %d claims seq %d: %w", n, seq, err)
	}
	if got := events.Hash(m.Data); got != hash {
		return nil, "", fmt.Errorf("snapshot of partition %d claims seq %d with hash %s, the stream's message hashes to %s", n, seq, hash, got)
	}
	var src io.Reader = res
	if info.Metadata[metaEncoding] == "gzip" {
		zr, err := gzip.NewReader(res)
		if err != nil {
			return nil, "", fmt.Errorf("snapshot of partition %d: %w", n, err)
		}
		defer zr.Close()
		src = zr
	}
	size, _ := strconv.Atoi(info.Metadata[metaSize]) // 0 when missing: no hint
	data, release, err := readSnapshot(src, size)
	if err != nil {
		return nil, "", fmt.Errorf("snapshot of partition %d: %w", n, err)
	}
	cfg.Partition = n
	st, err := Restore(cfg, data)
	release()
	if err != nil {
		return nil, "", err
	}
	if st.LastSeq() != seq {
		return nil, "", fmt.Errorf("snapshot of partition %d: metadata says seq %d, state says %d", n, seq, st.LastSeq())
	}
	return st, hash, nil
}

// Recover rebuilds partition n: the newest valid snapshot plus the tail of
// the stream, or a full replay when there is no valid snapshot.
func Recover(ctx context.Context, js jetstream.JetStream, n int, cfg Config, warn func(error)) (*State, string, error) {
	st, _, err := LoadSnapshot(ctx, js, n, cfg)
	if err != nil {
		if !errors.Is(err, ErrNoSnapshot) && warn != nil {
			warn(err)
		}
		cfg.Partition = n
		st = New(cfg)
	}
	hash, err := Replay(ctx, js, n, st, nil)
	if err != nil {
		return nil, "", err
	}
	return st, hash, nil
}

// snapshot clones the state now (in the decision loop: a copy of memory)
// and, on another goroutine, encodes the copy and stores it once its last
// event is acknowledged. Encoding takes far longer than copying (seconds
// for a state of a few hundred MB), and decisions go on meanwhile. One
// snapshot at a time: while one is in progress the next waits.
func (p *partition) snapshot(ctx context.Context) {
	if !p.snapBusy.CompareAndSwap(false, true) {
		return
	}
	start := time.Now()
	// Into the previous snapshot's copy and buffer: that goroutine handed
	// them back before it let go of snapBusy, which this one holds now.
	st, seq, hash := p.state.CloneInto(p.snapCopy), p.state.LastSeq(), p.hash
	buf := p.snapBuf
	p.snapCopy, p.snapBuf = nil, nil
	p.snapSeq = seq
	cloned := time.Since(start)
	p.snaps.Go(func() {
		var data []byte
		defer func() {
			p.snapCopy, p.snapBuf = st, data
			p.snapBusy.Store(false)
		}()
		// Under a uniform load every partition reaches its snapshot at
		// about the same time: one at a time, their encoding and storing
		// leave the other CPU to the decisions instead of taking both.
		select {
		case p.svc.snapTurn <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-p.svc.snapTurn }()
		if h := snapshotTurnHook; h != nil {
			h(p.n, true)
			defer h(p.n, false)
		}
		data = st.AppendSnapshot(buf[:0])
		p.log.Debug("snapshot encoded", logSeq, seq, "bytes", len(data), "clone", cloned, "encode", time.Since(start)-cloned)
		deadline := time.Now().Add(p.svc.cfg.AppendTimeout)
		for p.acked.Load() < seq {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return // the next snapshot will do
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := SaveSnapshot(context.WithoutCancel(ctx), p.svc.js, p.n, data, seq, hash); err != nil {
			p.log.Warn("snapshot not stored", logSeq, seq, logErr, err)
			return
		}
		p.log.Debug("snapshot stored", logSeq, seq, "bytes", len(data))
	})
}

// snapshotTurnHook, set by tests only, is called as a partition takes the
// snapshot turn (taken) and as it gives it back.
var snapshotTurnHook func(partition int, taken bool)

// withIOTimeout gives ctx a deadline for snapshot I/O if it has none.
func withIOTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, snapshotIOTimeout)
}
