package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/streams"
)

// Readers of the stored views, for dashboards, the CLI and the audit. What
// they return is eventually consistent: pair it with Lag.

// ReadBalances returns the instance balances of the given partitions in key order.
func ReadBalances(ctx context.Context, js jetstream.JetStream, partitions []int) ([]Balance, error) {
	return readPrefix[Balance](ctx, js, streams.BalancesBucket, PrefixInstance, partitions)
}

// ReadBudgets returns the budget definitions of the given partitions in key order.
func ReadBudgets(ctx context.Context, js jetstream.JetStream, partitions []int) ([]BudgetEntry, error) {
	return readPrefix[BudgetEntry](ctx, js, streams.BudgetsBucket, PrefixBudget, partitions)
}

// ReadShadow returns the shadow statistics of the given partitions in key order.
func ReadShadow(ctx context.Context, js jetstream.JetStream, partitions []int) ([]Shadow, error) {
	return readPrefix[Shadow](ctx, js, streams.BalancesBucket, PrefixShadow, partitions)
}

// ReadCheckpoints returns the checkpoints of the given partitions, in order.
func ReadCheckpoints(ctx context.Context, js jetstream.JetStream, partitions []int) ([]Checkpoint, error) {
	kv, err := js.KeyValue(ctx, streams.BalancesBucket)
	if err != nil {
		return nil, err
	}
	out := make([]Checkpoint, 0, len(partitions))
	for _, n := range partitions {
		cp, err := ReadCheckpoint(ctx, kv, n)
		if err != nil {
			return nil, err
		}
		out = append(out, cp)
	}
	return out, nil
}

// Lag is, per partition, the stream's last sequence minus the checkpoint:
// the events not yet reflected in the stored views.
func Lag(ctx context.Context, js jetstream.JetStream, partitions []int) (map[int]uint64, error) {
	cps, err := ReadCheckpoints(ctx, js, partitions)
	if err != nil {
		return nil, err
	}
	out := map[int]uint64{}
	for i, n := range partitions {
		s, err := js.Stream(ctx, streams.StreamName(n))
		if err != nil {
			return nil, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return nil, err
		}
		last := info.State.LastSeq
		if cps[i].Rebuilding || cps[i].Seq > last {
			out[n] = last
			continue
		}
		out[n] = last - cps[i].Seq
	}
	return out, nil
}

// Dump returns every stored key and value of partition n's views, keyed
// "<bucket>/<key>", checkpoint included: tests compare a live projection
// with a rebuild through it.
func Dump(ctx context.Context, js jetstream.JetStream, n int) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, src := range []struct{ bucket, prefix string }{
		{streams.BalancesBucket, PrefixInstance}, {streams.BalancesBucket, PrefixShadow},
		{streams.BalancesBucket, PrefixSpend}, {streams.BalancesBucket, PrefixWorkflow},
		{streams.BalancesBucket, PrefixResv}, {streams.BudgetsBucket, PrefixBudget},
	} {
		kv, err := js.KeyValue(ctx, src.bucket)
		if err != nil {
			return nil, err
		}
		err = watchValues(ctx, kv, PartitionFilter(src.prefix, n), func(key string, val []byte) error {
			out[src.bucket+"/"+key] = slices.Clone(val)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	kv, err := js.KeyValue(ctx, streams.BalancesBucket)
	if err != nil {
		return nil, err
	}
	if e, err := kv.Get(ctx, CheckpointKey(n)); err == nil {
		out[streams.BalancesBucket+"/"+CheckpointKey(n)] = slices.Clone(e.Value())
	}
	return out, nil
}

func readPrefix[T any](ctx context.Context, js jetstream.JetStream, bucket, prefix string, partitions []int) ([]T, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	type kt struct {
		key string
		v   T
	}
	var all []kt
	for _, n := range partitions {
		err := watchValues(ctx, kv, PartitionFilter(prefix, n), func(key string, val []byte) error {
			var v T
			if err := json.Unmarshal(val, &v); err != nil {
				return fmt.Errorf("%s %s: %w", bucket, key, err)
			}
			all = append(all, kt{key, v})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(all, func(a, b kt) int {
		switch {
		case a.key < b.key:
			return -1
		case a.key > b.key:
			return 1
		}
		return 0
	})
	out := make([]T, len(all))
	for i, x := range all {
		out[i] = x.v
	}
	return out, nil
}
