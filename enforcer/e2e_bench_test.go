package enforcer_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tallyledger/tally/bench"
	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// e2eClients is the number of concurrent client connections of
// BenchmarkE2EReserve, as `tally bench`'s default.
const e2eClients = 64

// BenchmarkE2EReserve is b.N granted reserves through a real in-process
// server and enforcer: 64 client connections over loopback TCP send
// concurrently, one request in flight each, against a 3-level hierarchy
// (tenant > workflow > run:*) with two units on one root per partition.
// It reports decisions/s and the p50 and p99 answer times, for
// `--sync always` (with group commit, as `tally serve` runs it) and
// `--sync interval` (without). `tally bench --embedded` measures the same
// path with the yardsticks B0 and B1 beside it.
func BenchmarkE2EReserve(b *testing.B) {
	for _, mode := range []struct {
		name        string
		syncAlways  bool
		groupCommit bool
	}{
		{"sync=always", true, true},
		{"sync=interval", false, false},
	} {
		b.Run(mode.name, func(b *testing.B) {
			opts := []natstest.Option{natstest.WithPartitions(testPartitions)}
			if mode.syncAlways {
				opts = append(opts, natstest.WithSyncAlways())
			}
			srv := natstest.RunServer(b, opts...)
			l := startLedger(b, srv, func(c *enforcer.ServiceConfig) { c.GroupCommit = mode.groupCommit })
			roots := make([]string, testPartitions)
			for n := range roots {
				roots[n] = rootOf(n)
				for i, budget := range []struct{ scope, name, period string }{
					{roots[n], "tenant", "monthly"},
					{roots[n] + "/workflow:agents", "workflow", "daily"},
					{roots[n] + "/workflow:agents/run:*", "per-run", "none"},
				} {
					mustOK(b, call(b, l.nc, roots[n], "budget-set", fmt.Sprintf(`{"idempotency_key":"b%d","scope":%q,"name":%q,`+
						`"limits":{"USD":"1000000000000","tokens":"1000000000000000"},"period":%q}`, i, budget.scope, budget.name, budget.period)), nil)
				}
			}
			conns := make([]*nats.Conn, e2eClients)
			for i := range conns {
				nc, err := nats.Connect(srv.ClientURL(), nats.Name(fmt.Sprintf("e2e-%d", i)))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(nc.Close)
				conns[i] = nc
			}

			hist := bench.NewHistogram()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for c, nc := range conns {
				wg.Go(func() {
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						root := roots[int(i)%len(roots)]
						body := fmt.Appendf(nil, `{"idempotency_key":"e2e-%d","scope":"%s/workflow:agents/run:a%d","amounts":{"USD":"0.42","tokens":"12000"}}`, i, root, c)
						t0 := time.Now()
						msg, err := nc.Request(streams.RequestSubject(root, "reserve"), body, 5*time.Second)
						if err != nil {
							b.Errorf("reserve %d: %v", i, err)
							return
						}
						hist.Record(time.Since(t0))
						if !strings.HasPrefix(string(msg.Data), `{"result":{"decision":"granted"`) {
							b.Errorf("reserve %d: %s", i, msg.Data)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
			b.ReportMetric(float64(hist.Quantile(0.5))/float64(time.Millisecond), "p50-ms")
			b.ReportMetric(float64(hist.Quantile(0.99))/float64(time.Millisecond), "p99-ms")
			b.ReportMetric(0, "ns/op") // wall time per op is meaningless with 64 in flight
		})
	}
}
