package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// ReportVersion is the version of the JSON report. Fields are only ever
// added; a rename or a change of meaning bumps it.
const ReportVersion = 1

// Report is what a bench run measured. Its JSON form (WriteJSON) is the
// stable, machine-readable output of `tally bench --json`.
type Report struct {
	Version int       `json:"version"`
	Started time.Time `json:"started"`
	Setup   Setup     `json:"setup"`
	Machine Machine   `json:"machine"`
	// Tally is the tally phase.
	Tally Tally `json:"tally"`
	// B0, B1, RawPublish and Replay are set with Config.Baseline.
	B0 *Load `json:"b0,omitempty"`
	B1 *Load `json:"b1,omitempty"`
	// B1Padded is B1 appending Config.B1AppendBytes per request.
	B1Padded *Load `json:"b1_padded,omitempty"`
	// B1Contract is the contract floor (Config.B1Contract); its
	// AppendBytes and AnswerBytes are those of a reserve.
	B1Contract *Load       `json:"b1_contract,omitempty"`
	RawPublish *Throughput `json:"raw_publish,omitempty"`
	Replay     *Throughput `json:"replay,omitempty"`
	Ratios     *Ratios     `json:"ratios,omitempty"`
}

// Setup is what was measured, and how.
type Setup struct {
	Target     string `json:"target"`
	NATSURL    string `json:"nats_url,omitempty"`
	Servers    int    `json:"servers"`
	Partitions int    `json:"partitions"`
	Replicas   int    `json:"replicas"`
	// Sync is the servers' sync mode ("always" or "interval"), empty when
	// the bench did not start them.
	Sync string `json:"sync,omitempty"`
	// Fsync says how the writes of the tally phase were made durable:
	// FsyncPerMessage (the server fsyncs each before its ack), FsyncGroup
	// (the server does not; the enforcer syncs the store's file system
	// once per group of acknowledged events before answering them) or
	// FsyncInterval; empty when the bench did not start the servers.
	Fsync string `json:"fsync,omitempty"`
	// BaselineFsync is Fsync of the baselines (B0, B1, B1-padded, raw
	// publish), with Config.Baseline. It is always the servers' own: with
	// group fsync the baselines ran on a server of their own that fsyncs
	// every write, stopped before the tally's started on the same store.
	BaselineFsync string `json:"baseline_fsync,omitempty"`
	// GroupCommit of the enforcer the bench ran; absent when it measured
	// a running tally.
	GroupCommit  *bool   `json:"group_commit,omitempty"`
	Clients      int     `json:"clients"`
	Connections  int     `json:"connections"`
	Roots        int     `json:"roots"`
	SingleRoot   bool    `json:"single_root"`
	Mix          string  `json:"mix"`
	DurationS    float64 `json:"duration_s"`
	WarmupS      float64 `json:"warmup_s,omitempty"`
	TargetRate   float64 `json:"target_rate"`
	PayloadBytes int     `json:"payload_bytes"`
	// Responders is the number of B0/B1 responder subscriptions (one per
	// partition, like the enforcer's one decision loop per partition).
	Responders int `json:"responders,omitempty"`
}

// Machine describes where the bench ran.
type Machine struct {
	CPUs      int    `json:"cpus"`
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	GoVersion string `json:"go_version"`
	// Load1 and Load1End are the 1-minute load average when the bench
	// started and when it ended (Linux): the bench's own load is about
	// the number of CPUs; much more means something else competed.
	Load1    *float64 `json:"load1,omitempty"`
	Load1End *float64 `json:"load1_end,omitempty"`
	// OtherCPUS is the CPU time every other process of the machine used
	// while the bench ran (Linux), and OtherCPUShare that time over the
	// machine's capacity (wall time × CPUs). A fair measurement of a
	// deployment the bench starts itself has a share near 0; with
	// --nats-url it includes the tally being measured.
	OtherCPUS     *float64 `json:"other_cpu_s,omitempty"`
	OtherCPUShare *float64 `json:"other_cpu_share,omitempty"`
}

// clockTicks is Linux's USER_HZ, the unit of /proc/stat.
const clockTicks = 100

// hostBusy is the CPU time all processes of the machine have used since
// boot, from /proc/stat; ok is false where it cannot be read.
func hostBusy() (busy time.Duration, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, false
	}
	var ticks int64
	// user nice system idle iowait irq softirq steal: all but idle and
	// iowait are busy.
	for i, v := range f[1:9] {
		if i == 3 || i == 4 {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, true
}

// usage measures what the rest of the machine did during a run.
type usage struct {
	start  time.Time
	own    time.Duration
	host   time.Duration
	hostOK bool
}

func startUsage() usage {
	host, ok := hostBusy()
	return usage{start: time.Now(), own: processCPU(), host: host, hostOK: ok}
}

// finish fills m's end-of-run fields.
func (u usage) finish(m *Machine) {
	m.Load1End = load1()
	host, ok := hostBusy()
	if !ok || !u.hostOK {
		return
	}
	other := max((host-u.host)-(processCPU()-u.own), 0)
	s := math.Round(other.Seconds()*10) / 10
	share := math.Round(other.Seconds()/(time.Since(u.start).Seconds()*float64(m.CPUs))*1000) / 1000
	m.OtherCPUS, m.OtherCPUShare = &s, &share
}

// Latency is a distribution of answer times in milliseconds, from the
// HDR-style histogram (relative error ≤ HistogramRelativeError; max and
// mean are exact).
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Tally is the tally phase: a decision is one answered request (reserve,
// commit, release and decide each count).
type Tally struct {
	Decisions     uint64  `json:"decisions"`
	DecisionsPerS float64 `json:"decisions_per_s"`
	Reserves      uint64  `json:"reserves"`
	ReservesPerS  float64 `json:"reserves_per_s"`
	Granted       uint64  `json:"granted"`
	Denied        uint64  `json:"denied"`
	Commits       uint64  `json:"commits"`
	Releases      uint64  `json:"releases"`
	Decides       uint64  `json:"decides"`
	// Errors counts failed attempts (error answers, timeouts); a retried
	// request that then succeeds counts once here and once as a decision.
	Errors       uint64            `json:"errors"`
	ErrorsByCode map[string]uint64 `json:"errors_by_code,omitempty"`
	ElapsedS     float64           `json:"elapsed_s"`
	Latency      Latency           `json:"latency_ms"`
	// CPUS is the CPU time this process used during the phase: with
	// --embedded and --cluster3 it includes the servers and the enforcer,
	// with --nats-url only the clients. CPUPerDecisionUS divides it by
	// the decisions.
	CPUS             float64 `json:"cpu_s"`
	CPUPerDecisionUS float64 `json:"cpu_us_per_decision"`
	// Fsyncs counts the syncs of the store's file system during the
	// phase, with group fsync (Setup.Fsync); absent without. 0 with
	// decisions appended means the enforcer answered without waiting for
	// any: its answers were not durable.
	Fsyncs *uint64 `json:"fsyncs,omitempty"`
}

// Load is a baseline phase: requests answered by a B0 or B1 responder.
type Load struct {
	Requests     uint64            `json:"requests"`
	RequestsPerS float64           `json:"requests_per_s"`
	Errors       uint64            `json:"errors"`
	ErrorsByCode map[string]uint64 `json:"errors_by_code,omitempty"`
	ElapsedS     float64           `json:"elapsed_s"`
	Latency      Latency           `json:"latency_ms"`
	// CPUS and CPUPerRequestUS are as Tally's, the responders included.
	CPUS            float64 `json:"cpu_s"`
	CPUPerRequestUS float64 `json:"cpu_us_per_request"`
	// AppendBytes is the size of each append of a padded B1 phase, and
	// AnswerBytes of each answer when those are padded too.
	AppendBytes int `json:"append_bytes,omitempty"`
	AnswerBytes int `json:"answer_bytes,omitempty"`
}

// Throughput is a one-way phase: raw publish or replay.
type Throughput struct {
	Stream       string  `json:"stream"`
	Messages     uint64  `json:"messages"`
	MessagesPerS float64 `json:"messages_per_s"`
	Bytes        uint64  `json:"bytes"`
	Errors       uint64  `json:"errors"`
	ElapsedS     float64 `json:"elapsed_s"`
}

// Ratios hold tally's figures against the baselines of the same run:
// throughput as tally ÷ baseline (1 = as fast), latency as tally ÷
// baseline (1 = as quick). Zero when a baseline measured nothing.
type Ratios struct {
	DecisionsVsB0         float64 `json:"decisions_vs_b0"`
	DecisionsVsB1         float64 `json:"decisions_vs_b1"`
	DecisionsVsRawPublish float64 `json:"decisions_vs_raw_publish"`
	P50VsB0               float64 `json:"p50_vs_b0"`
	P99VsB0               float64 `json:"p99_vs_b0"`
	P50VsB1               float64 `json:"p50_vs_b1"`
	P99VsB1               float64 `json:"p99_vs_b1"`
	// With the contract floor: tally's throughput and p99 over its, and
	// its throughput over B1's.
	DecisionsVsB1Contract float64 `json:"decisions_vs_b1_contract,omitempty"`
	P99VsB1Contract       float64 `json:"p99_vs_b1_contract,omitempty"`
	B1ContractVsB1        float64 `json:"b1_contract_vs_b1,omitempty"`
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	s := r.Setup
	var b strings.Builder
	fmt.Fprintf(&b, "tally bench: %s", s.Target)
	if s.NATSURL != "" {
		fmt.Fprintf(&b, " %s", s.NATSURL)
	}
	fmt.Fprintf(&b, ", %d server(s), R%d, %d partitions", s.Servers, s.Replicas, s.Partitions)
	if s.Sync != "" {
		fmt.Fprintf(&b, ", sync %s", s.Sync)
	}
	if s.GroupCommit != nil {
		fmt.Fprintf(&b, ", group commit %s", onOff(*s.GroupCommit))
	}
	switch {
	case s.Fsync != "" && s.BaselineFsync != "" && s.BaselineFsync != s.Fsync:
		fmt.Fprintf(&b, "\nfsync: tally %s; baselines %s, on a server of their own (same store)", s.Fsync, s.BaselineFsync)
	case s.Fsync != "":
		fmt.Fprintf(&b, "\nfsync: %s", s.Fsync)
	}
	fmt.Fprintf(&b, "\n%d clients (one connection each), %d roots, mix %s, %gs per phase, payload %d B",
		s.Clients, s.Roots, s.Mix, s.DurationS, s.PayloadBytes)
	if s.WarmupS > 0 {
		fmt.Fprintf(&b, ", after a %gs warm-up", s.WarmupS)
	}
	if s.TargetRate > 0 {
		fmt.Fprintf(&b, ", open loop at %g decisions/s", s.TargetRate)
	} else {
		b.WriteString(", closed loop")
	}
	fmt.Fprintf(&b, "\nmachine: %d CPUs", r.Machine.CPUs)
	if l := r.Machine.Load1; l != nil {
		fmt.Fprintf(&b, ", load %.2f at the start", *l)
	}
	if l := r.Machine.Load1End; l != nil {
		fmt.Fprintf(&b, ", %.2f at the end", *l)
	}
	if o := r.Machine.OtherCPUShare; o != nil {
		fmt.Fprintf(&b, "; other processes used %.1f%% of it", 100**o)
	}
	// The fsync column, when known, says how each row's writes were made
	// durable, so a row copied on its own says it too.
	fsyncHeader := ""
	if s.Fsync != "" {
		fsyncHeader = "  fsync"
	}
	fmt.Fprintf(&b, "\n\n%-15s %12s %8s %9s %9s %9s %9s %9s %10s%s\n", "", "per second", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "cpu µs/op", fsyncHeader)
	row := func(name string, rate float64, errs uint64, l Latency, cpu float64, fsync string) {
		fmt.Fprintf(&b, "%-15s %12.0f %8d %9.3f %9.3f %9.3f %9.3f %9.3f %10.1f", name, rate, errs, l.P50, l.P90, l.P99, l.P999, l.Max, cpu)
		if fsync != "" {
			fmt.Fprintf(&b, "  %s", fsync)
		}
		b.WriteString("\n")
	}
	baselineFsync := s.BaselineFsync
	if baselineFsync == "" {
		baselineFsync = s.Fsync
	}
	if r.B0 != nil {
		row("B0 requests", r.B0.RequestsPerS, r.B0.Errors, r.B0.Latency, r.B0.CPUPerRequestUS, baselineFsync)
	}
	if r.B1 != nil {
		row("B1 requests", r.B1.RequestsPerS, r.B1.Errors, r.B1.Latency, r.B1.CPUPerRequestUS, baselineFsync)
	}
	if r.B1Padded != nil {
		name := "B1 padded"
		switch p := r.B1Padded; {
		case p.AppendBytes > 0 && p.AnswerBytes > 0:
			name = fmt.Sprintf("B1 %d/%d B", p.AppendBytes, p.AnswerBytes)
		case p.AppendBytes > 0:
			name = fmt.Sprintf("B1 %d B", p.AppendBytes)
		}
		row(name, r.B1Padded.RequestsPerS, r.B1Padded.Errors, r.B1Padded.Latency, r.B1Padded.CPUPerRequestUS, baselineFsync)
	}
	if c := r.B1Contract; c != nil {
		row("B1 contract", c.RequestsPerS, c.Errors, c.Latency, c.CPUPerRequestUS, baselineFsync)
	}
	t := r.Tally
	row("tally", t.DecisionsPerS, t.Errors, t.Latency, t.CPUPerDecisionUS, s.Fsync)
	fmt.Fprintf(&b, "\ntally: %d decisions (%d reserves: %d granted, %d denied; %d commits, %d releases, %d decides) in %.1fs; %.0f reserves/s\n",
		t.Decisions, t.Reserves, t.Granted, t.Denied, t.Commits, t.Releases, t.Decides, t.ElapsedS, t.ReservesPerS)
	if n := t.Fsyncs; n != nil {
		fmt.Fprintf(&b, "group fsync: %d syncs of the store", *n)
		if *n > 0 {
			fmt.Fprintf(&b, ", %.1f decisions per sync", float64(t.Decisions)/float64(*n))
		}
		b.WriteString("\n")
	}
	if len(t.ErrorsByCode) > 0 {
		b.WriteString("errors: ")
		sortedCodes(&b, t.ErrorsByCode)
		b.WriteString("\n")
	}
	if r.RawPublish != nil {
		fmt.Fprintf(&b, "raw async publish: %.0f msg/s (%d messages to %s", r.RawPublish.MessagesPerS, r.RawPublish.Messages, r.RawPublish.Stream)
		if baselineFsync != "" {
			fmt.Fprintf(&b, "; fsync: %s", baselineFsync)
		}
		b.WriteString(")\n")
	}
	if r.Replay != nil {
		fmt.Fprintf(&b, "ordered-consumer replay: %.0f msg/s (%d messages, %.1f MB of %s)\n", r.Replay.MessagesPerS,
			r.Replay.Messages, float64(r.Replay.Bytes)/1e6, r.Replay.Stream)
	}
	if q := r.Ratios; q != nil {
		fmt.Fprintf(&b, "\ntally ÷ B0: throughput %.2f, p50 %.2f, p99 %.2f\n", q.DecisionsVsB0, q.P50VsB0, q.P99VsB0)
		fmt.Fprintf(&b, "tally ÷ B1: throughput %.2f, p50 %.2f, p99 %.2f\n", q.DecisionsVsB1, q.P50VsB1, q.P99VsB1)
		if r.B1Contract != nil {
			fmt.Fprintf(&b, "tally ÷ B1 contract: throughput %.2f, p99 %.2f (B1 contract ÷ B1: throughput %.2f; a reserve's event %d B, its answer %d B)\n",
				q.DecisionsVsB1Contract, q.P99VsB1Contract, q.B1ContractVsB1, r.B1Contract.AppendBytes, r.B1Contract.AnswerBytes)
		}
		fmt.Fprintf(&b, "tally ÷ raw publish: throughput %.3f\n", q.DecisionsVsRawPublish)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// latencyOf summarises a histogram in milliseconds.
func latencyOf(h *Histogram) Latency {
	return Latency{P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)), P99: ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)), Max: ms(h.Max()), Mean: ms(h.Mean())}
}

// ms renders a duration in milliseconds, to the microsecond.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// ratio is a ÷ b, 0 when b is 0, to three decimals.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(a/b*1000) / 1000
}

// rate rounds a per-second figure to one decimal.
func rate(n uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return math.Round(float64(n)/d.Seconds()*10) / 10
}

// perOp is the CPU time per operation in microseconds, to 0.1 µs.
func perOp(cpu time.Duration, n uint64) float64 {
	if n == 0 {
		return 0
	}
	return math.Round(float64(cpu)/float64(time.Microsecond)/float64(n)*10) / 10
}

// machine describes this machine now.
func machine() Machine {
	return Machine{CPUs: runtime.NumCPU(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, GoVersion: runtime.Version(), Load1: load1()}
}

// load1 is the 1-minute load average, nil where /proc/loadavg is missing.
func load1() *float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return nil
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return nil
	}
	return &v
}
