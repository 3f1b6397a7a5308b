package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram shape: log-linear buckets in the style of HdrHistogram. Values
// below 2^histSubBits nanoseconds have a bucket each; above, every power of
// two is split into histHalf equal buckets, so a bucket's width is at most
// 1/histHalf (0.78%) of its lower bound and its midpoint is within 0.4% of
// any value it holds.
const (
	histSubBits = 8
	histSub     = 1 << histSubBits // exact buckets 0 … histSub-1
	histHalf    = histSub / 2      // buckets per power of two above histSub
	// HistogramMax is the largest value the histogram distinguishes (about
	// 18 minutes); larger values land in the last bucket, though Max still
	// reports them exactly.
	HistogramMax = time.Duration(1)<<40 - 1
	// HistogramRelativeError bounds |reported − true| / true for any
	// quantile.
	HistogramRelativeError = 1.0 / (2 * histHalf)
	histBuckets            = histSub + (40-histSubBits)*histHalf
)

// Histogram records durations with bounded relative error. Record, and
// every read, may be called from any goroutine: counts are atomic, so a
// live progress line can read a histogram while its client writes it.
// The zero value is not usable; call NewHistogram.
type Histogram struct {
	counts []atomic.Uint64
	total  atomic.Uint64
	sum    atomic.Uint64 // nanoseconds; wraps after 584 years of latency
	max    atomic.Int64
	min    atomic.Int64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	h := &Histogram{counts: make([]atomic.Uint64, histBuckets)}
	h.min.Store(math.MaxInt64)
	return h
}

// bucketOf is the index of the bucket holding v ≥ 0 nanoseconds.
func bucketOf(v uint64) int {
	if v < histSub {
		return int(v)
	}
	if v > uint64(HistogramMax) {
		return histBuckets - 1
	}
	shift := bits.Len64(v) - histSubBits // ≥ 1
	mantissa := v >> shift               // in [histHalf, histSub)
	return histSub + (shift-1)*histHalf + int(mantissa-histHalf)
}

// bucketBounds returns the smallest value of bucket i and its width.
func bucketBounds(i int) (low, width uint64) {
	if i < histSub {
		return uint64(i), 1
	}
	j := i - histSub
	shift := j/histHalf + 1
	mantissa := uint64(j%histHalf + histHalf)
	return mantissa << shift, 1 << shift
}

// Record adds one observation; negative durations count as 0.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(uint64(v))].Add(1)
	h.total.Add(1)
	h.sum.Add(uint64(v))
	for cur := h.max.Load(); v > cur && !h.max.CompareAndSwap(cur, v); cur = h.max.Load() {
	}
	for cur := h.min.Load(); v < cur && !h.min.CompareAndSwap(cur, v); cur = h.min.Load() {
	}
}

// Merge adds every observation of o to h.
func (h *Histogram) Merge(o *Histogram) {
	var n uint64
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
			n += c
		}
	}
	h.total.Add(n)
	h.sum.Add(o.sum.Load())
	if m := o.max.Load(); n > 0 {
		for cur := h.max.Load(); m > cur && !h.max.CompareAndSwap(cur, m); cur = h.max.Load() {
		}
	}
	if m := o.min.Load(); n > 0 {
		for cur := h.min.Load(); m < cur && !h.min.CompareAndSwap(cur, m); cur = h.min.Load() {
		}
	}
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 { return h.total.Load() }

// Max is the largest observation, exactly; 0 when empty.
func (h *Histogram) Max() time.Duration {
	if h.Count() == 0 {
		return 0
	}
	return time.Duration(h.max.Load())
}

// Min is the smallest observation, exactly; 0 when empty.
func (h *Histogram) Min() time.Duration {
	if h.Count() == 0 {
		return 0
	}
	return time.Duration(h.min.Load())
}

// Mean is the exact mean; 0 when empty.
func (h *Histogram) Mean() time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / n)
}

// Quantile returns the value below or at which a fraction q (0 < q ≤ 1) of
// the observations lie: the midpoint of the bucket holding the observation
// of rank ⌈q·n⌉, clamped to [Min, Max]; the first and last ranks are Min
// and Max exactly. Quantiles are monotone in q and never exceed Max. It
// returns 0 when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := max(uint64(math.Ceil(q*float64(n))), 1)
	switch {
	case rank >= n:
		return h.Max()
	case rank == 1:
		return h.Min()
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			low, width := bucketBounds(i)
			v := time.Duration(low + (width-1)/2)
			return min(max(v, h.Min()), h.Max())
		}
	}
	// Counts grew while we read them (a live read): the rank lies in the
	// last observations, so Max is the honest answer.
	return h.Max()
}
