package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"
)

// Pacing of the load generator.
const (
	// progressInterval is how often the live progress line is rewritten.
	progressInterval = time.Second
	// retryPause is the first pause before a retried attempt; it doubles.
	retryPause = 10 * time.Millisecond
)

// Error codes the bench gives to failures that are not tally answers.
const (
	codeTimeout      = "TIMEOUT"
	codeNoResponders = "NO_RESPONDERS"
	codeTransport    = "TRANSPORT"
	codeBadAnswer    = "BAD_ANSWER"
)

// counters are one client's tallies. They are atomic: the progress line
// reads them while the client runs.
type counters struct {
	answered atomic.Uint64 // requests that got a successful answer
	failed   atomic.Uint64 // failed attempts: error answers, timeouts
	reserves atomic.Uint64 // answered reserves (granted + denied)
	granted  atomic.Uint64
	denied   atomic.Uint64
	commits  atomic.Uint64
	releases atomic.Uint64
	decides  atomic.Uint64

	mu    sync.Mutex
	codes map[string]uint64 // failed attempts by code
}

// reset zeroes the counts and the histogram (after a warm-up; no step is
// running).
func (c *agent) reset() {
	for _, n := range []*atomic.Uint64{&c.answered, &c.failed, &c.reserves, &c.granted, &c.denied, &c.commits, &c.releases, &c.decides} {
		n.Store(0)
	}
	c.mu.Lock()
	c.codes = nil
	c.mu.Unlock()
	c.hist = NewHistogram()
}

func (c *counters) fail(code string) {
	c.failed.Add(1)
	c.mu.Lock()
	if c.codes == nil {
		c.codes = map[string]uint64{}
	}
	c.codes[code]++
	c.mu.Unlock()
}

// agent is one simulated agent of one phase, on its own connection.
type agent struct {
	id      int
	nc      *nats.Conn
	timeout time.Duration
	hist    *Histogram
	counters

	// interval is the pause between scheduled requests (open loop); 0
	// sends as soon as the previous answer came (closed loop).
	interval time.Duration
	next     time.Time // the next scheduled send
	cycle    uint64    // the step being run, for keys and root choice
}

// schedule returns when the next request is due, waiting for it in open
// loop; stopped reports that the phase ended while waiting.
func (c *agent) schedule(done <-chan struct{}) (at time.Time, stopped bool) {
	if c.interval == 0 {
		return time.Now(), false
	}
	at = c.next
	c.next = c.next.Add(c.interval)
	if d := time.Until(at); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-done:
			return time.Now(), true
		}
	}
	return at, false
}

// classifier says whether an answer is a success (code ""), and if not,
// its code and whether the same request may be sent again.
type classifier func(answer []byte) (code string, retry bool)

// request sends body to subject and waits for its answer, up to attempts
// times on timeouts and retryable answers (same body: a tally retry reuses
// its idempotency key). The latency of a successful answer is recorded
// from the request's scheduled time (open loop) or its first send (closed
// loop). Every failed attempt is counted. If the phase ended before the
// request was due, it is not sent unless force is set (a commit that
// closes a granted reservation).
func (c *agent) request(done <-chan struct{}, force bool, subject string, body []byte, attempts int, classify classifier) ([]byte, bool) {
	start, stopped := c.schedule(done)
	if stopped && !force {
		return nil, false
	}
	pause := retryPause
	for attempt := 0; attempt < attempts; attempt++ {
		if attempt > 0 {
			time.Sleep(pause)
			pause *= 2
		}
		msg, err := c.nc.Request(subject, body, c.timeout)
		if err != nil {
			if errors.Is(err, nats.ErrConnectionClosed) {
				return nil, false // the run was cancelled
			}
			c.fail(transportCode(err))
			continue
		}
		code, retry := classify(msg.Data)
		if code == "" {
			c.hist.Record(time.Since(start))
			c.answered.Add(1)
			return msg.Data, true
		}
		c.fail(code)
		if !retry {
			return msg.Data, false
		}
	}
	return nil, false
}

func transportCode(err error) string {
	switch {
	case errors.Is(err, nats.ErrTimeout):
		return codeTimeout
	case errors.Is(err, nats.ErrNoResponders):
		return codeNoResponders
	}
	return codeTransport
}

// step is one iteration of a client's loop: one or more requests.
type step func(c *agent, done <-chan struct{})

// loadResult is what one phase measured.
type loadResult struct {
	elapsed time.Duration
	cpu     time.Duration // this process's CPU time during the phase
	syncs   uint64        // group fsyncs during the phase (phase.syncs)
	hist    *Histogram
	clients []*agent
}

func (r loadResult) sum(f func(*agent) *atomic.Uint64) uint64 {
	var n uint64
	for _, c := range r.clients {
		n += f(c).Load()
	}
	return n
}

func (r loadResult) answered() uint64 {
	return r.sum(func(c *agent) *atomic.Uint64 { return &c.answered })
}
func (r loadResult) failed() uint64 { return r.sum(func(c *agent) *atomic.Uint64 { return &c.failed }) }

func (r loadResult) perSecond(n uint64) float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(n) / r.elapsed.Seconds()
}

func (r loadResult) codes() map[string]uint64 {
	out := map[string]uint64{}
	for _, c := range r.clients {
		c.mu.Lock()
		for k, v := range c.codes {
			out[k] += v
		}
		c.mu.Unlock()
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// phase is one measured load: every connection runs step in a loop for
// cfg.Duration.
type phase struct {
	name  string // in progress lines: B0, B1, tally
	unit  string // what is counted: "requests" or "decisions"
	conns []*nats.Conn
	cfg   Config
	step  step
	// syncs, if not nil, counts the group fsyncs of the store: the phase
	// reports how many its measurement saw.
	syncs *atomic.Uint64
}

// run measures the phase. Each client runs on its own goroutine; after the
// duration, every client finishes its step (a granted reservation is
// always closed) and the phase ends when the last one has. With a warm-up
// the same clients first run for cfg.Warmup unmeasured, then their counts
// and histograms start afresh; an open-loop schedule goes on, so a lag the
// warm-up left is measured. Only cancellation of ctx stops it early (with
// ctx's error).
func (p phase) run(ctx context.Context) (res loadResult, err error) {
	res = loadResult{hist: NewHistogram(), clients: make([]*agent, len(p.conns))}
	var interval time.Duration
	if p.cfg.Rate > 0 {
		interval = time.Duration(float64(len(p.conns)) / p.cfg.Rate * float64(time.Second))
	}
	start := time.Now()
	for i, nc := range p.conns {
		res.clients[i] = &agent{id: i, nc: nc, timeout: p.cfg.Timeout, hist: NewHistogram(), interval: interval,
			// Stagger the first sends over one interval.
			next: start.Add(interval * time.Duration(i) / time.Duration(len(p.conns)))}
	}
	if p.cfg.Warmup > 0 {
		warm := p
		warm.name, warm.cfg.Duration = p.name+" warm-up", p.cfg.Warmup
		if err := warm.drive(ctx, time.Now(), res); err != nil {
			return res, err
		}
		for _, c := range res.clients {
			c.reset()
		}
	}
	if p.cfg.ProfileDir != "" {
		stop, err := startProfile(p.cfg.ProfileDir, p.name)
		if err != nil {
			return res, err
		}
		defer stop()
	}
	var syncsStart uint64
	if p.syncs != nil {
		syncsStart = p.syncs.Load()
	}
	start, cpuStart := time.Now(), processCPU()
	err = p.drive(ctx, start, res)
	res.elapsed, res.cpu = time.Since(start), processCPU()-cpuStart
	if p.syncs != nil {
		res.syncs = p.syncs.Load() - syncsStart
	}
	for _, c := range res.clients {
		res.hist.Merge(c.hist)
	}
	if err != nil {
		return res, err
	}
	if w := p.cfg.Progress; w != nil {
		if p.cfg.LiveProgress {
			fmt.Fprint(w, "\r\x1b[K")
		}
		fmt.Fprintf(w, "%s: %.1fs, %.0f %s/s, %d errors, p50 %s, p99 %s, max %s\n", p.name, res.elapsed.Seconds(),
			res.perSecond(res.answered()), p.unit, res.failed(), fmtDuration(res.hist.Quantile(0.5)),
			fmtDuration(res.hist.Quantile(0.99)), fmtDuration(res.hist.Max()))
	}
	return res, nil
}

// drive runs res's clients for the phase's duration from start.
func (p phase) drive(ctx context.Context, start time.Time, res loadResult) error {
	done := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range res.clients {
		g.Go(func() error {
			for {
				select {
				case <-done:
					return nil
				case <-gctx.Done():
					return gctx.Err()
				default:
				}
				c.cycle++
				p.step(c, done)
			}
		})
	}
	g.Go(func() error {
		defer close(done)
		return p.watch(gctx, start, res)
	})
	return g.Wait()
}

// watch waits for the phase's duration, writing the live progress line
// every progressInterval when asked to.
func (p phase) watch(ctx context.Context, start time.Time, res loadResult) error {
	end := time.NewTimer(p.cfg.Duration)
	defer end.Stop()
	var tick <-chan time.Time
	if p.cfg.Progress != nil && p.cfg.LiveProgress {
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		tick = t.C
	}
	last, lastAt := uint64(0), start
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-end.C:
			return nil
		case now := <-tick:
			n := res.answered()
			h := NewHistogram()
			for _, c := range res.clients {
				h.Merge(c.hist)
			}
			rate := float64(n-last) / now.Sub(lastAt).Seconds()
			last, lastAt = n, now
			fmt.Fprintf(p.cfg.Progress, "\r\x1b[K%s %5.1fs  %8.0f %s/s  errors %d  p99 %s", p.name,
				now.Sub(start).Seconds(), rate, p.unit, res.failed(), fmtDuration(h.Quantile(0.99)))
		}
	}
}

// fmtDuration renders a latency with three significant digits.
func fmtDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.3gs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.3gms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.3gµs", float64(d)/float64(time.Microsecond))
	}
}

// connectClients opens n client connections to dep, client i to
// dep.urls[i mod len(dep.urls)] first, so the load spreads over a
// cluster's nodes.
func connectClients(dep *deployment, n int) ([]*nats.Conn, error) {
	urls := dep.urls
	conns := make([]*nats.Conn, 0, n)
	for i := range n {
		k := i % len(urls)
		rotated := append(append([]string{}, urls[k:]...), urls[:k]...)
		nc, err := dep.dial(strings.Join(rotated, ","), fmt.Sprintf("%s-client-%d", benchOwner, i), nats.DontRandomize())
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("bench: connect client %d to %s: %w", i, urls[k], err)
		}
		conns = append(conns, nc)
	}
	return conns, nil
}

func closeAll(conns []*nats.Conn) {
	for _, nc := range conns {
		nc.Close()
	}
}

// sortedCodes renders error counts by code, for text output.
func sortedCodes(w io.Writer, codes map[string]uint64) {
	keys := make([]string, 0, len(codes))
	for k := range codes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i > 0 {
			fmt.Fprint(w, ", ")
		}
		fmt.Fprintf(w, "%s %d", k, codes[k])
	}
}

// startProfile starts a CPU profile of the process into dir/<name>.cpu.prof;
// stop ends it and closes the file.
func startProfile(dir, name string) (stop func(), err error) {
	out, err := os.Create(filepath.Join(dir, name+".cpu.prof"))
	if err != nil {
		return nil, fmt.Errorf("bench: profile of phase %s: %w", name, err)
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		out.Close()
		return nil, fmt.Errorf("bench: profile of phase %s: %w", name, err)
	}
	// An execution trace shows what a profile cannot: where goroutines
	// waited (go tool trace -pprof=sched|syscall|sync FILE).
	tr, err := os.Create(filepath.Join(dir, name+".trace"))
	if err != nil {
		pprof.StopCPUProfile()
		out.Close()
		return nil, fmt.Errorf("bench: trace of phase %s: %w", name, err)
	}
	if err := trace.Start(tr); err != nil {
		tr.Close()
		tr = nil
	}
	return func() {
		if tr != nil {
			trace.Stop()
			tr.Close()
		}
		pprof.StopCPUProfile()
		out.Close()
		// The heap as the phase leaves it: what its load keeps alive.
		if h, err := os.Create(filepath.Join(dir, name+".heap.prof")); err == nil {
			runtime.GC()
			_ = pprof.WriteHeapProfile(h)
			h.Close()
		}
	}, nil
}
