package enforcer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/streams"
)

// Lease keys in streams.LeasesBucket: "m.<owner>" says an enforcer is
// alive, "p.<n>" says who serves partition n. Every key lives for the
// bucket's TTL unless rewritten, so a silent enforcer's keys vanish.
//
// Leases are liveness only. Safety comes from the fence: every append
// carries Nats-Expected-Last-Sequence, so an owner that lost its lease
// without knowing it fails at its first append.
const (
	memberPrefix = "m."
	leasePrefix  = "p."
	// releaseTimeout bounds giving a lease back on the way out; if the
	// server is gone the lease expires by itself.
	releaseTimeout = time.Second
)

// lease is the value of a partition lease.
type lease struct {
	Owner   string    `json:"owner"`
	Renewed time.Time `json:"renewed"`
}

// member is the value of a member key.
type member struct {
	Owner string    `json:"owner"`
	Seen  time.Time `json:"seen"`
}

// owned is a partition this process runs.
type owned struct {
	cancel context.CancelFunc
	done   chan error
	rev    uint64 // revision of our lease key
}

// manage spreads the partitions over the live enforcers with rendezvous
// hashing: partition n belongs to the live member whose hash(member, n) is
// highest. Each tick it renews its member key and its leases, takes the
// free partitions it should have, and hands over the ones another live
// member should have. A partition whose run ends (lost fence, error) is
// released and may be taken again on a later tick.
func (s *Service) manage(ctx context.Context) error {
	kv, err := s.js.KeyValue(ctx, streams.LeasesBucket)
	if err != nil {
		return fmt.Errorf("enforcer: leases: %w", err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("enforcer: leases: %w", err)
	}
	ttl := st.TTL()
	if ttl <= 0 {
		return fmt.Errorf("enforcer: bucket %s has no TTL: leases would never expire", streams.LeasesBucket)
	}
	m := &leaseManager{svc: s, kv: kv, ttl: ttl, run: map[int]*owned{}}
	defer m.shutdown()
	t := time.NewTicker(max(ttl/4, 50*time.Millisecond))
	defer t.Stop()
	for {
		if b := s.cfg.Barrier; b != nil && b.Err() != nil {
			// The store's fsync failed: nothing acknowledged since the
			// last good one is known to be on disk, and no partition may
			// serve again until a restart reads what the disk holds.
			return fmt.Errorf("enforcer: %w", b.Err())
		}
		m.round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// leaseManager is the state of manage's loop (one goroutine).
type leaseManager struct {
	svc *Service
	kv  jetstream.KeyValue
	ttl time.Duration
	run map[int]*owned
	// stopping are partitions being handed over: their lease is released
	// once their run has ended.
	stopping sync.WaitGroup
}

// call runs one KV operation with a deadline well inside the TTL, so a
// slow cluster never holds the loop past the leases' life.
func (m *leaseManager) call(ctx context.Context, f func(ctx context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, max(m.ttl/4, 50*time.Millisecond))
	defer cancel()
	return f(cctx)
}

func (m *leaseManager) shutdown() {
	// Stop every partition at once (each finishes its decisions and waits
	// for their acks), then release the leases so the others need not wait
	// for them to expire.
	for _, o := range m.run {
		o.cancel()
	}
	var wg sync.WaitGroup
	for n, o := range m.run {
		wg.Go(func() {
			<-o.done
			m.svc.releaseLease(m.kv, n, o.rev)
		})
	}
	wg.Go(func() {
		dctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
		defer cancel()
		_ = m.kv.Delete(dctx, memberPrefix+m.svc.cfg.Owner)
	})
	wg.Wait()
	m.stopping.Wait()
}

// round is one tick: renew, reap, hand over, take.
func (m *leaseManager) round(ctx context.Context) {
	s, me := m.svc, m.svc.cfg.Owner
	log := s.cfg.Logger
	// Renew first: nothing else may delay it.
	mb, _ := json.Marshal(member{Owner: me, Seen: time.Now().UTC()})
	if err := m.call(ctx, func(c context.Context) error { _, err := m.kv.Put(c, memberPrefix+me, mb); return err }); err != nil {
		log.Warn("member key not renewed", logErr, err)
	}
	for n, o := range m.run {
		lb, _ := json.Marshal(lease{Owner: me, Renewed: time.Now().UTC()})
		var rev uint64
		err := m.call(ctx, func(c context.Context) (err error) {
			rev, err = m.kv.Update(c, leasePrefix+strconv.Itoa(n), lb, o.rev)
			return err
		})
		switch {
		case err == nil:
			o.rev = rev
		case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyNotFound), isWrongSequence(err):
			// Someone else holds it now, or it expired: stop at once.
			log.Warn("lease lost", logPartition, n, logErr, err)
			o.cancel()
			delete(m.run, n)
			m.stopping.Go(func() { <-o.done })
		default:
			// A slow or failing call: the lease may still be ours; retry
			// next tick (the fence keeps us safe if it is not).
			log.Debug("lease not renewed", logPartition, n, logErr, err)
		}
	}
	// Reap partitions whose run ended (lost fence, error).
	for n, o := range m.run {
		select {
		case err := <-o.done:
			if err != nil && ctx.Err() == nil {
				log.Warn("partition stopped", logPartition, n, logErr, err)
			}
			delete(m.run, n)
			m.svc.releaseLease(m.kv, n, o.rev)
		default:
		}
	}
	var (
		members []string
		leases  map[int]string
	)
	if err := m.call(ctx, func(c context.Context) (err error) { members, leases, err = s.readLeases(c, m.kv); return err }); err != nil {
		log.Debug("leases not read", logErr, err)
		return
	}
	for n := 0; n < s.cfg.Partitions; n++ {
		want := rendezvous(members, n) == me
		if o, ok := m.run[n]; ok {
			if !want {
				// Hand over to the live member that should have it, without
				// holding up this loop.
				o.cancel()
				delete(m.run, n)
				m.stopping.Go(func() {
					<-o.done
					s.releaseLease(m.kv, n, o.rev)
					log.Info("handed over", logPartition, n, "to", rendezvous(members, n))
				})
			}
			continue
		}
		if !want {
			continue
		}
		if holder, held := leases[n]; held && holder != me {
			continue // wait for the holder to hand over, or for its lease to expire
		}
		lb, _ := json.Marshal(lease{Owner: me, Renewed: time.Now().UTC()})
		var rev uint64
		if err := m.call(ctx, func(c context.Context) (err error) {
			rev, err = m.kv.Create(c, leasePrefix+strconv.Itoa(n), lb)
			return err
		}); err != nil {
			if !errors.Is(err, jetstream.ErrKeyExists) {
				log.Debug("lease not taken", logPartition, n, logErr, err)
			}
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		o := &owned{cancel: cancel, done: make(chan error, 1), rev: rev}
		m.run[n] = o
		p := s.newPartition(n)
		go func() { o.done <- p.run(pctx) }()
		log.Info("took partition", logPartition, n, "members", len(members))
	}
}

// isWrongSequence reports a CAS failure reported as JetStream error 10071.
func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeWrongLastSeq
}

func (s *Service) releaseLease(kv jetstream.KeyValue, n int, rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	// Only delete the lease if it is still ours (revision unchanged).
	if err := kv.Delete(ctx, leasePrefix+strconv.Itoa(n), jetstream.LastRevision(rev)); err != nil {
		s.cfg.Logger.Debug("lease not released", logPartition, n, logErr, err)
	}
}

// readLeases returns the live members (sorted) and the partition holders.
func (s *Service) readLeases(ctx context.Context, kv jetstream.KeyValue) ([]string, map[int]string, error) {
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, nil, err
	}
	var members []string
	leases := map[int]string{}
	for k := range keys.Keys() {
		switch {
		case strings.HasPrefix(k, memberPrefix):
			members = append(members, strings.TrimPrefix(k, memberPrefix))
		case strings.HasPrefix(k, leasePrefix):
			n, err := strconv.Atoi(strings.TrimPrefix(k, leasePrefix))
			if err != nil {
				continue
			}
			e, err := kv.Get(ctx, k)
			if err != nil {
				continue
			}
			var l lease
			if json.Unmarshal(e.Value(), &l) == nil {
				leases[n] = l.Owner
			}
		}
	}
	if !slices.Contains(members, s.cfg.Owner) {
		members = append(members, s.cfg.Owner)
	}
	slices.Sort(members)
	return members, leases, nil
}

// rendezvous picks the member with the highest hash for partition n.
func rendezvous(members []string, n int) string {
	best, bestH := "", uint64(0)
	for _, m := range members {
		h := fnv.New64a()
		h.Write([]byte(m))
		h.Write([]byte{'/'})
		h.Write([]byte(strconv.Itoa(n)))
		if v := mix64(h.Sum64()); best == "" || v > bestH {
			best, bestH = m, v
		}
	}
	return best
}

// mix64 is splitmix64's finalizer: FNV-1a alone scores "e1/n" and "e2/n"
// in the same order for most n, which would give one member everything.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
