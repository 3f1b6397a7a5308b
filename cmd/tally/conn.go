package main

import (
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// connLog reports a long-running process's connection events in its log:
// a lost connection with its cause, why attempts to restore it fail (each
// reason once per outage: a server down, a refused certificate or user),
// the restored connection with its server, and asynchronous errors (a
// permissions violation, a slow consumer) that nats.go would otherwise
// print to stderr in its own format. One per connection.
type connLog struct {
	log    *slog.Logger
	mu     sync.Mutex
	reason string // the last failure logged in the current outage
}

func newConnLog(log *slog.Logger) *connLog { return &connLog{log: log} }

// options are the connection's handlers.
func (c *connLog) options() []nats.Option {
	return []nats.Option{
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil { // nil: closed on purpose
				c.log.Warn("NATS connection lost; reconnecting", "conn", nc.Opts.Name, "err", err)
			}
		}),
		nats.ReconnectErrHandler(c.failed),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.mu.Lock()
			c.reason = ""
			c.mu.Unlock()
			c.log.Info("NATS connection restored", "conn", nc.Opts.Name, "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			args := []any{"conn", nc.Opts.Name, "err", err}
			if sub != nil {
				args = append(args, "subject", sub.Subject)
			}
			c.log.Warn("NATS asynchronous error", args...)
		}),
	}
}

// failed logs why an attempt to reconnect failed, unless it already did
// for the same reason in this outage.
func (c *connLog) failed(nc *nats.Conn, err error) {
	if err == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err.Error() == c.reason {
		return
	}
	c.reason = err.Error()
	c.log.Warn("NATS reconnect attempt failed; retrying", "conn", nc.Opts.Name, "err", err)
}

// watch looks at nc every interval until it closes: nats.go reports a
// failed dial to the reconnect error handler, but keeps a refused TLS
// handshake or user only as the connection's last error.
func (c *connLog) watch(nc *nats.Conn, interval time.Duration) {
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for range t.C {
			switch nc.Status() {
			case nats.CLOSED:
				return
			case nats.RECONNECTING:
				c.failed(nc, nc.LastError())
			}
		}
	}()
}

// registerConnMetrics exports the state of a long-running process's
// connection: tally_nats_connected{conn} (1 while connected) and
// tally_nats_reconnects_total{conn}, read from nc at each scrape.
func registerConnMetrics(reg prometheus.Registerer, nc *nats.Conn) {
	labels := prometheus.Labels{"conn": nc.Opts.Name}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_nats_connected", ConstLabels: labels,
			Help: "1 while the process's NATS connection is up, 0 while it is lost (reconnecting) or closed."},
			func() float64 {
				if nc.IsConnected() {
					return 1
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tally_nats_reconnects_total", ConstLabels: labels,
			Help: "Times the process's NATS connection was restored after a loss."},
			func() float64 { return float64(nc.Stats().Reconnects) }),
	)
}
