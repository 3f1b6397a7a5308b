package projector

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the projector's Prometheus series. A nil *Metrics records
// nothing.
type Metrics struct {
	lag        *prometheus.GaugeVec
	checkpoint *prometheus.GaugeVec
	events     *prometheus.CounterVec
	flush      prometheus.Histogram
	writes     prometheus.Counter
}

// NewMetrics registers the projector's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tally_projector_lag_events",
			Help: "Events of the partition stream not yet reflected in the stored views: stream last sequence − checkpoint."}, []string{"partition"}),
		checkpoint: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tally_projector_checkpoint_seq",
			Help: "Stream sequence up to which the stored views reflect the partition."}, []string{"partition"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_projector_events_applied_total",
			Help: "Events folded into the views, by partition (redeliveries not counted)."}, []string{"partition"}),
		flush: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_projector_flush_seconds",
			Help: "Time to write one flush of changed views and the checkpoint.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_projector_kv_writes_total",
			Help: "View entries written or deleted in KV."}),
	}
	reg.MustRegister(m.lag, m.checkpoint, m.events, m.flush, m.writes)
	return m
}

func (m *Metrics) setLag(n int, lag uint64) {
	if m == nil {
		return
	}
	m.lag.WithLabelValues(strconv.Itoa(n)).Set(float64(lag))
}

func (m *Metrics) setCheckpoint(n int, seq uint64) {
	if m == nil {
		return
	}
	m.checkpoint.WithLabelValues(strconv.Itoa(n)).Set(float64(seq))
}

func (m *Metrics) applied(n int) {
	if m == nil {
		return
	}
	m.events.WithLabelValues(strconv.Itoa(n)).Inc()
}

func (m *Metrics) observeFlush(d time.Duration, writes int) {
	if m == nil {
		return
	}
	m.flush.Observe(d.Seconds())
	m.writes.Add(float64(writes))
}
