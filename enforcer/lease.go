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
	tick := max(ttl/4, 50*time.Millisecond)
	run := map[int]*owned{}
	defer func() {
		// Stop every partition at once (each finishes its decisions and
		// waits for their acks), then release the leases so the others
		// need not wait for them to expire.
		for _, o := range run {
			o.cancel()
		}
		for _, o := range run {
			<-o.done
		}
		var wg sync.WaitGroup
		for n, o := range run {
			wg.Go(func() { s.releaseLease(kv, n, o.rev) })
		}
		wg.Go(func() {
			dctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
			defer cancel()
			_ = kv.Delete(dctx, memberPrefix+s.cfg.Owner)
		})
		wg.Wait()
	}()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		if err := s.rebalance(ctx, kv, run); err != nil {
			s.cfg.Logger.Warn("lease round failed", logErr, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Service) rebalance(ctx context.Context, kv jetstream.KeyValue, run map[int]*owned) error {
	me := s.cfg.Owner
	mb, _ := json.Marshal(member{Owner: me, Seen: time.Now().UTC()})
	if _, err := kv.Put(ctx, memberPrefix+me, mb); err != nil {
		return fmt.Errorf("renew member key: %w", err)
	}
	members, leases, err := s.readLeases(ctx, kv)
	if err != nil {
		return err
	}
	// Reap partitions whose run ended.
	for n, o := range run {
		select {
		case err := <-o.done:
			if err != nil {
				s.cfg.Logger.Warn("partition stopped", logPartition, n, logErr, err)
			}
			delete(run, n)
			s.releaseLease(kv, n, o.rev)
		default:
		}
	}
	for n := 0; n < s.cfg.Partitions; n++ {
		want := rendezvous(members, n) == me
		if o, ok := run[n]; ok {
			if !want {
				// Hand over to the live member that should have it.
				o.cancel()
				<-o.done
				delete(run, n)
				s.releaseLease(kv, n, o.rev)
				s.cfg.Logger.Info("handed over", logPartition, n, "to", rendezvous(members, n))
				continue
			}
			lb, _ := json.Marshal(lease{Owner: me, Renewed: time.Now().UTC()})
			rev, err := kv.Update(ctx, leasePrefix+strconv.Itoa(n), lb, o.rev)
			if err != nil {
				// Someone else holds it now, or it expired: stop at once.
				s.cfg.Logger.Warn("lease lost", logPartition, n, logErr, err)
				o.cancel()
				<-o.done
				delete(run, n)
				continue
			}
			o.rev = rev
			continue
		}
		if !want {
			continue
		}
		if holder, held := leases[n]; held && holder != me {
			continue // wait for the holder to hand over, or for its lease to expire
		}
		lb, _ := json.Marshal(lease{Owner: me, Renewed: time.Now().UTC()})
		rev, err := kv.Create(ctx, leasePrefix+strconv.Itoa(n), lb)
		if err != nil {
			if !errors.Is(err, jetstream.ErrKeyExists) {
				s.cfg.Logger.Debug("lease not taken", logPartition, n, logErr, err)
			}
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		o := &owned{cancel: cancel, done: make(chan error, 1), rev: rev}
		run[n] = o
		p := s.newPartition(n)
		go func() { o.done <- p.run(pctx) }()
		s.cfg.Logger.Info("took partition", logPartition, n, "members", len(members))
	}
	return nil
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
		if v := h.Sum64(); best == "" || v > bestH {
			best, bestH = m, v
		}
	}
	return best
}
