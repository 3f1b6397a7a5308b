package enforcer

import (
	"bytes"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tallyledger/tally/events"
)

// Metrics are the enforcer's Prometheus series. A nil *Metrics records
// nothing.
type Metrics struct {
	decisions       *prometheus.CounterVec
	latency         *prometheus.HistogramVec
	appendLatency   prometheus.Histogram
	appendEvents    prometheus.Histogram
	open            *prometheus.GaugeVec
	owned           *prometheus.GaugeVec
	idempotencyKeys *prometheus.GaugeVec
}

// NewMetrics registers the enforcer's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_decisions_total",
			Help: "Answered requests by operation and outcome (granted, denied, ok, or the error code)."}, []string{"op", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tally_decision_latency_seconds",
			Help:    "Time from a request's arrival to its answer.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"op"}),
		appendLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_append_latency_seconds",
			Help: "Time from publishing an append to its JetStream ack.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		appendEvents: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_append_events",
			Help:    "Events per append published (counted as it is sent, before its ack): 1 for a single message, more for an atomic batch (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11)}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tally_open_reservations",
			Help: "Open reservations by partition."}, []string{"partition"}),
		owned: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tally_partitions_owned",
			Help: "1 for each partition this process serves."}, []string{"partition"}),
		idempotencyKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tally_idempotency_window_seconds",
			Help: "How far back idempotency keys are remembered, by partition."}, []string{"partition"}),
	}
	reg.MustRegister(m.decisions, m.latency, m.appendLatency, m.appendEvents, m.open, m.owned, m.idempotencyKeys)
	return m
}

func (m *Metrics) observe(op events.Op, answer []byte, received time.Time) {
	if m == nil {
		return
	}
	m.decisions.WithLabelValues(string(op), outcomeOf(answer)).Inc()
	m.latency.WithLabelValues(string(op)).Observe(time.Since(received).Seconds())
}

// outcomeOf classifies an answer without decoding it all.
func outcomeOf(answer []byte) string {
	switch {
	case bytes.HasPrefix(answer, []byte(`{"error":{"code":"`)):
		rest := answer[len(`{"error":{"code":"`):]
		if i := bytes.IndexByte(rest, '"'); i > 0 {
			return string(rest[:i])
		}
		return "error"
	case bytes.HasPrefix(answer, []byte(`{"result":{"decision":"granted"`)):
		return "granted"
	case bytes.HasPrefix(answer, []byte(`{"result":{"decision":"denied"`)):
		return "denied"
	}
	return "ok"
}

func (m *Metrics) observeAppend(d time.Duration) {
	if m == nil {
		return
	}
	m.appendLatency.Observe(d.Seconds())
}

// observeSent records an append of n events, as it is published: before
// any answer that waits for its ack.
func (m *Metrics) observeSent(n int) {
	if m == nil {
		return
	}
	m.appendEvents.Observe(float64(n))
}

func (m *Metrics) setOpen(n, open int) {
	if m == nil {
		return
	}
	m.open.WithLabelValues(strconv.Itoa(n)).Set(float64(open))
}

func (m *Metrics) setWindow(n int, d time.Duration) {
	if m == nil {
		return
	}
	m.idempotencyKeys.WithLabelValues(strconv.Itoa(n)).Set(d.Seconds())
}

func (m *Metrics) partitionOwned(n int, owned bool) {
	if m == nil {
		return
	}
	v := 0.0
	if owned {
		v = 1
	}
	m.owned.WithLabelValues(strconv.Itoa(n)).Set(v)
}
