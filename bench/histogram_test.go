package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// Every value falls in the bucket whose bounds hold it, and buckets are no
// wider than the promised relative error allows.
func TestHistogramBuckets(t *testing.T) {
	values := []uint64{0, 1, 2, 127, 128, 255, 256, 257, 511, 512, 1000, 1 << 20, 1<<20 + 1, 123456789, uint64(HistogramMax)}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		values = append(values, rng.Uint64N(uint64(HistogramMax)+1)>>rng.UintN(40))
	}
	prev := -1
	for _, v := range slices.Sorted(slices.Values(values)) {
		i := bucketOf(v)
		if i < prev {
			t.Fatalf("bucketOf(%d) = %d, below the bucket of a smaller value (%d)", v, i, prev)
		}
		prev = i
		if i < 0 || i >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d, out of [0, %d)", v, i, histBuckets)
		}
		low, width := bucketBounds(i)
		if v < low || v >= low+width {
			t.Fatalf("value %d in bucket %d = [%d, %d)", v, i, low, low+width)
		}
		if v >= histSub && float64(width)/float64(low) > 1.0/histHalf {
			t.Fatalf("bucket %d = [%d, %d): relative width %g > %g", i, low, low+width, float64(width)/float64(low), 1.0/histHalf)
		}
	}
	if i := bucketOf(uint64(HistogramMax) + 1); i != histBuckets-1 {
		t.Fatalf("a value beyond HistogramMax lands in bucket %d, want the last (%d)", i, histBuckets-1)
	}
}

// Quantiles are within HistogramRelativeError of the exact quantile of the
// recorded sample, monotone, and Max, Min and Mean are exact.
func TestHistogramQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	h := NewHistogram()
	var sample []time.Duration
	var sum time.Duration
	for range 200_000 {
		// Log-normal-ish latencies from about 50µs to a few seconds.
		d := time.Duration(math.Exp(rng.NormFloat64()*1.5+13) + 1)
		h.Record(d)
		sample = append(sample, d)
		sum += d
	}
	slices.Sort(sample)
	prev := time.Duration(0)
	for _, q := range []float64{0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1} {
		got := h.Quantile(q)
		want := sample[max(int(math.Ceil(q*float64(len(sample))))-1, 0)]
		if rel := math.Abs(float64(got-want)) / float64(want); rel > HistogramRelativeError+1e-9 {
			t.Errorf("q%g = %s, exact %s: relative error %g > %g", q, got, want, rel, HistogramRelativeError)
		}
		if got < prev {
			t.Errorf("q%g = %s < the previous quantile %s", q, got, prev)
		}
		prev = got
	}
	if h.Max() != sample[len(sample)-1] || h.Quantile(1) != h.Max() {
		t.Errorf("max %s, q1 %s, want %s", h.Max(), h.Quantile(1), sample[len(sample)-1])
	}
	if h.Min() != sample[0] {
		t.Errorf("min %s, want %s", h.Min(), sample[0])
	}
	if want := sum / time.Duration(len(sample)); h.Mean() != want {
		t.Errorf("mean %s, want %s", h.Mean(), want)
	}
	if h.Count() != uint64(len(sample)) {
		t.Errorf("count %d, want %d", h.Count(), len(sample))
	}
}

func TestHistogramEdges(t *testing.T) {
	h := NewHistogram()
	if h.Quantile(0.5) != 0 || h.Max() != 0 || h.Min() != 0 || h.Mean() != 0 || h.Count() != 0 {
		t.Fatal("an empty histogram reports non-zero figures")
	}
	h.Record(-time.Second) // clamps to 0
	h.Record(time.Hour)    // beyond HistogramMax: last bucket, exact max
	if h.Min() != 0 || h.Max() != time.Hour || h.Quantile(1) != time.Hour {
		t.Fatalf("min %s max %s q1 %s", h.Min(), h.Max(), h.Quantile(1))
	}
	if q := h.Quantile(0.5); q != 0 {
		t.Fatalf("median of {0, 1h} = %s, want 0", q)
	}
	one := NewHistogram()
	one.Record(1234567 * time.Nanosecond)
	for _, q := range []float64{0, 0.5, 1} {
		if got := one.Quantile(q); got != 1234567 {
			t.Errorf("single value: q%g = %d, want it exactly (clamped to min and max)", q, got)
		}
	}
}

// Merging per-client histograms equals recording everything in one, and
// recording from many goroutines loses nothing.
func TestHistogramMergeConcurrent(t *testing.T) {
	const clients, each = 8, 20_000
	all := NewHistogram()
	parts := make([]*Histogram, clients)
	var wg sync.WaitGroup
	for c := range clients {
		parts[c] = NewHistogram()
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 9))
			for range each {
				d := time.Duration(rng.Int64N(int64(50 * time.Millisecond)))
				parts[c].Record(d)
				all.Record(d)
			}
		})
	}
	wg.Wait()
	merged := NewHistogram()
	for _, p := range parts {
		merged.Merge(p)
	}
	if merged.Count() != clients*each || all.Count() != clients*each {
		t.Fatalf("counts: merged %d, shared %d, want %d", merged.Count(), all.Count(), clients*each)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		if merged.Quantile(q) != all.Quantile(q) {
			t.Errorf("q%g: merged %s, shared %s", q, merged.Quantile(q), all.Quantile(q))
		}
	}
	if merged.Min() != all.Min() || merged.Max() != all.Max() || merged.Mean() != all.Mean() {
		t.Errorf("merged min/max/mean %s/%s/%s, shared %s/%s/%s", merged.Min(), merged.Max(), merged.Mean(), all.Min(), all.Max(), all.Mean())
	}
	empty := NewHistogram()
	merged.Merge(empty)
	if merged.Min() != all.Min() {
		t.Errorf("merging an empty histogram moved min to %s", merged.Min())
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	h := NewHistogram()
	d := 1234567 * time.Nanosecond
	b.ReportAllocs()
	for b.Loop() {
		h.Record(d)
		d += 7919
	}
}
