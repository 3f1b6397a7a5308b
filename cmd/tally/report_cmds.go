package main

// What auditors, billing jobs and operators run: report shadow|spend
// (exact, computed from the events), report balances|budgets (the
// projector's eventually consistent views), events dump, audit verify.
// tally demo is in demo_cmd.go.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/projector"
	"github.com/tallyledger/tally/report"
	"github.com/tallyledger/tally/streams"
)

// ledgerFlags are the connection flags of the commands in this file.
type ledgerFlags struct {
	natsURL string
	timeout time.Duration
	auth    natsAuth
}

func (f *ledgerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.natsURL, "nats-url", DefaultNATSURL, "NATS server(s) of the ledger, comma-separated")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "how long to wait for the server to open the ledger")
	f.auth.register(fs)
}

// ledgerConn is an open ledger: a connection, JetStream and the layout.
type ledgerConn struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	layout streams.Layout
}

func (l *ledgerConn) close() { l.nc.Close() }

// partitionsOf is the partitions a --root (or every partition) covers.
func (l *ledgerConn) partitionsOf(root string) []int {
	if root != "" {
		return []int{streams.Partition(root, l.layout.Partitions)}
	}
	out := make([]int, l.layout.Partitions)
	for i := range out {
		out[i] = i
	}
	return out
}

// openLedger connects and reads the ledger's layout; it returns an exit
// code ≥ 0 on failure, after printing why.
func (e *env) openLedger(ctx context.Context, f ledgerFlags) (*ledgerConn, int) {
	if f.timeout <= 0 {
		return nil, e.usageErr("--timeout %s: want a positive duration such as 5s", f.timeout)
	}
	opts, err := f.auth.options()
	if err != nil {
		return nil, e.usageErr("%v", err)
	}
	nc, err := nats.Connect(f.natsURL, append(opts, nats.Name("tally-cli"), nats.Timeout(f.timeout), quietAsync())...)
	if err != nil {
		return nil, e.fail(fmt.Errorf("connect to NATS at %s: %w", f.natsURL, err), cmp.Or(connectFix(err), tryRunning))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, e.fail(err, "")
	}
	octx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	layout, err := streams.Open(octx, js)
	if err != nil {
		nc.Close()
		if perr := refusal(nc); perr != nil {
			return nil, e.fail(perr, fixPermissions)
		}
		return nil, e.fail(err, tryRunning)
	}
	return &ledgerConn{nc: nc, js: js, layout: layout}, -1
}

// parseCommand parses flags (env mirrors first) and refuses positional
// arguments; -1 means go on.
func (e *env) parseCommand(fs *flag.FlagSet, args []string) int {
	if code := e.parse(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		return e.usageErr("unexpected argument %q (see tally %s --help)", fs.Arg(0), fs.Name())
	}
	return -1
}

// parseWhen reads a time: RFC 3339, or a UTC date (2026-11-28) or minute
// (2026-11-28T21:30).
func parseWhen(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2026-11-28T21:00:00Z), a UTC date (2026-11-28) or minute (2026-11-28T21:30)", s)
}

// parseSince reads a look-back: a Go duration, or days (7d, 1d12h).
func parseSince(s string) (time.Duration, error) {
	var days time.Duration
	rest := s
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n < 0 {
			return 0, fmt.Errorf("--since %q: want 7d, 36h or 1d12h", s)
		}
		days, rest = time.Duration(n)*24*time.Hour, s[i+1:]
	}
	var d time.Duration
	if rest != "" {
		var err error
		if d, err = time.ParseDuration(rest); err != nil || d < 0 {
			return 0, fmt.Errorf("--since %q: want 7d, 36h or 1d12h", s)
		}
	}
	if days+d <= 0 {
		return 0, fmt.Errorf("--since %q: must be positive", s)
	}
	return days + d, nil
}

// window resolves --since or --from/--to into [from, to).
func window(sinceSet bool, since, fromS, toS string, now time.Time) (from, to time.Time, err error) {
	to = now
	switch {
	case fromS != "" || toS != "":
		if sinceSet {
			return from, to, errors.New("give --since or --from/--to, not both")
		}
		if fromS == "" {
			return from, to, errors.New("--to needs --from")
		}
		if from, err = parseWhen(fromS); err != nil {
			return from, to, fmt.Errorf("--from %v", err)
		}
		if toS != "" {
			if to, err = parseWhen(toS); err != nil {
				return from, to, fmt.Errorf("--to %v", err)
			}
		}
	default:
		d, err := parseSince(since)
		if err != nil {
			return from, to, err
		}
		from = now.Add(-d)
	}
	if !from.Before(to) {
		return from, to, errors.New("the window is empty: --from must be before --to")
	}
	return from, to, nil
}

// --- report ---

func runReport(ctx context.Context, e *env, args []string) int {
	const usage = "usage: tally report shadow|spend|balances|budgets [flags]\n\n" +
		"  shadow    what the shadow budgets would have denied (exact, from the events)\n" +
		"  spend     spend by unit, workflow, model, scope kind or label (exact, from the events)\n" +
		"  balances  instance balances from the projection (eventually consistent)\n" +
		"  budgets   budget definitions of every root from the projection (eventually consistent)\n\n" +
		"run 'tally report <report> --help' for its flags"
	if len(args) == 0 {
		fmt.Fprintln(e.stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprintln(e.stderr, usage)
		return exitOK
	case "shadow":
		return e.reportShadow(ctx, args[1:])
	case "spend":
		return e.reportSpend(ctx, args[1:])
	case "balances":
		return e.reportBalances(ctx, args[1:])
	case "budgets":
		return e.reportBudgets(ctx, args[1:])
	}
	return e.usageErr("unknown report %q (want shadow, spend, balances or budgets)", args[0])
}

func (e *env) reportShadow(ctx context.Context, args []string) int {
	var (
		lf                     ledgerFlags
		scope, since, from, to string
		asJSON                 bool
	)
	fs := e.flagSet("report shadow", "report shadow --scope S [--since 7d | --from T [--to T]] [--json]\n\n"+
		"What the shadow budgets on S and below would have denied in the window, computed from\n"+
		"the events: the calls that would have been denied, the peak overage, and per shadow\n"+
		"instance its would-deny count, peak overage and the limit that would have covered\n"+
		"the observed traffic (peak usage; priority floors need headroom on top).")
	lf.register(fs)
	fs.StringVar(&scope, "scope", "", "the scope to report on, e.g. tenant:acme or tenant:acme/workflow:chat")
	fs.StringVar(&since, "since", "7d", "window ending now: 7d, 36h, 1d12h")
	fs.StringVar(&from, "from", "", "window start (RFC 3339 or 2026-11-28, UTC), instead of --since")
	fs.StringVar(&to, "to", "", "window end, exclusive (default now)")
	fs.BoolVar(&asJSON, "json", false, "print the report as a JSON document")
	if code := e.parseCommand(fs, args); code >= 0 {
		return code
	}
	if err := events.ValidateScope(scope); err != nil {
		if scope == "" {
			return e.usageErr("--scope is required (e.g. tenant:acme)")
		}
		return e.usageErr("--scope: %v", err)
	}
	sinceSet := false
	fs.Visit(func(f *flag.Flag) { sinceSet = sinceSet || f.Name == "since" })
	wf, wt, err := window(sinceSet || e.getenv(envName("since")) != "", since, from, to, time.Now().UTC())
	if err != nil {
		return e.usageErr("%v", err)
	}
	l, code := e.openLedger(ctx, lf)
	if code >= 0 {
		return code
	}
	defer l.close()
	r, err := shadowReport(ctx, l.js, l.layout.Partitions, scope, wf, wt)
	if err != nil {
		return e.ledgerFail(l, err, "")
	}
	if asJSON {
		err = report.WriteShadowJSON(e.stdout, r)
	} else {
		err = report.WriteShadowText(e.stdout, r)
	}
	if err != nil {
		return e.ledgerFail(l, err, "")
	}
	return exitOK
}

// shadowReport reads the events of scope's root in the window.
func shadowReport(ctx context.Context, js jetstream.JetStream, p int, scope string, from, to time.Time) (report.ShadowReport, error) {
	root := events.Root(scope)
	s := report.NewShadow(report.ShadowQuery{Scope: scope, From: from, To: to})
	q := report.Query{Partition: streams.Partition(root, p), Root: root, Since: from}
	err := report.ReadEvents(ctx, js, q, func(_ report.Record, ev events.Event) error {
		if !ev.At.Before(to) {
			return report.ErrStop // event time never goes backwards in a partition
		}
		s.Add(ev)
		return nil
	})
	return s.Report(), err
}

func (e *env) reportSpend(ctx context.Context, args []string) int {
	var (
		lf                       ledgerFlags
		root, period, by, format string
		from, to                 string
		lookback                 time.Duration
	)
	fs := e.flagSet("report spend", "report spend --root R --period 2026-11 [--by workflow,model] [--format table|csv|json]\n\n"+
		"Spend of a root for billing, exact to the last decimal: charged of commits plus amounts\n"+
		"of charges, by event time in UTC. --by groups by unit, workflow (the id of the scope's\n"+
		"workflow: segment), model (label model; a commit's labels over its reserve's), any scope\n"+
		"kind or label name (kind:NAME or label:NAME to say which). CSV: a header row of the --by\n"+
		"columns in order, then unit unless among them, then amount.")
	lf.register(fs)
	fs.StringVar(&root, "root", "", "the root to bill, e.g. tenant:acme")
	fs.StringVar(&period, "period", "", "UTC period: 2026, 2026-11, 2026-W48, 2026-11-28 or 2026-11-28T21")
	fs.StringVar(&from, "from", "", "window start instead of --period (RFC 3339 or 2026-11-28, UTC)")
	fs.StringVar(&to, "to", "", "window end, exclusive, with --from (default now)")
	fs.StringVar(&by, "by", "", "comma-separated dimensions, e.g. workflow,model (default: unit)")
	fs.StringVar(&format, "format", "table", "table, csv or json")
	fs.DurationVar(&lookback, "lookback", report.DefaultLookback, "how far before the window to read reserves, for the labels of commits in it")
	if code := e.parseCommand(fs, args); code >= 0 {
		return code
	}
	if root == "" {
		return e.usageErr("--root is required (e.g. tenant:acme)")
	}
	if err := events.ValidateScope(root); err != nil || strings.Contains(root, "/") {
		return e.usageErr("--root %q: want a root such as tenant:acme", root)
	}
	var wf, wt time.Time
	var err error
	switch {
	case period != "" && from != "":
		return e.usageErr("give --period or --from/--to, not both")
	case period != "":
		if wf, wt, err = report.ParsePeriod(period); err != nil {
			return e.usageErr("--%v", err)
		}
	case from != "":
		if wf, wt, err = window(false, "", from, to, time.Now().UTC()); err != nil {
			return e.usageErr("%v", err)
		}
	default:
		return e.usageErr("--period is required (e.g. --period %s)", time.Now().UTC().Format("2006-01"))
	}
	var dims []string
	if by != "" {
		dims = strings.Split(by, ",")
	}
	if err := report.ValidateBy(dims); err != nil {
		return e.usageErr("%v", err)
	}
	write := map[string]func(io.Writer, report.SpendReport) error{"table": report.WriteSpendTable,
		"csv": report.WriteSpendCSV, "json": report.WriteSpendJSON}[format]
	if write == nil {
		return e.usageErr("--format %q: want table, csv or json", format)
	}
	l, code := e.openLedger(ctx, lf)
	if code >= 0 {
		return code
	}
	defer l.close()
	s, err := report.NewSpend(report.SpendQuery{Root: root, Period: period, From: wf, To: wt, By: dims})
	if err != nil {
		return e.usageErr("%v", err)
	}
	q := report.Query{Partition: streams.Partition(root, l.layout.Partitions), Root: root, Since: wf.Add(-lookback),
		Types: []events.Type{events.TypeReservationGranted, events.TypeReservationCommit, events.TypeReservationReleased, events.TypeUsageCharged}}
	err = report.ReadEvents(ctx, l.js, q, func(_ report.Record, ev events.Event) error {
		if !ev.At.Before(wt) {
			return report.ErrStop
		}
		s.Add(ev)
		return nil
	})
	if err != nil {
		return e.ledgerFail(l, err, "")
	}
	if err := write(e.stdout, s.Report()); err != nil {
		return e.ledgerFail(l, err, "")
	}
	return exitOK
}

const consistencyNote = "eventually consistent: read from the projection (%s); %s behind the ledger. " +
	"For the strongly consistent answer ask the enforcer: tally %s\n"

func lagText(lag map[int]uint64) string {
	var total uint64
	for _, l := range lag {
		total += l
	}
	return plural(int(total), "event")
}

// plural is "1 event", "2 events".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func (e *env) reportBalances(ctx context.Context, args []string) int {
	var (
		lf          ledgerFlags
		root, scope string
		asJSON      bool
	)
	fs := e.flagSet("report balances", "report balances [--root R] [--scope S] [--json]\n\n"+
		"Instance balances from the projection (KV tally_balances), for dashboards: every root,\n"+
		"one root, or the instances on S and below. Eventually consistent — the output says how\n"+
		"far behind; `tally balance --scope S` is the enforcer's strongly consistent answer.")
	lf.register(fs)
	fs.StringVar(&root, "root", "", "only this root's instances")
	fs.StringVar(&scope, "scope", "", "only instances on this scope or below it")
	fs.BoolVar(&asJSON, "json", false, "print a JSON document")
	if code := e.parseCommand(fs, args); code >= 0 {
		return code
	}
	if scope != "" {
		if err := events.ValidateScope(scope); err != nil {
			return e.usageErr("--scope: %v", err)
		}
		if root != "" && events.Root(scope) != root {
			return e.usageErr("--scope %s is not under --root %s", scope, root)
		}
		root = events.Root(scope)
	}
	l, code := e.openLedger(ctx, lf)
	if code >= 0 {
		return code
	}
	defer l.close()
	parts := l.partitionsOf(root)
	bals, err := projector.ReadBalances(ctx, l.js, parts)
	if err != nil {
		return e.ledgerFail(l, err, "is the ledger's projection there? run tally projector, or tally serve")
	}
	lag, err := projector.Lag(ctx, l.js, parts)
	if err != nil {
		return e.ledgerFail(l, err, "")
	}
	bals = slices.DeleteFunc(bals, func(b projector.Balance) bool {
		return root != "" && events.Root(b.Scope) != root || scope != "" && !events.IsWithin(b.Scope, scope)
	})
	slices.SortFunc(bals, func(a, b projector.Balance) int {
		return strings.Compare(a.Scope+"\x00"+a.Budget+"\x00"+a.Period, b.Scope+"\x00"+b.Budget+"\x00"+b.Period)
	})
	if asJSON {
		return e.reportJSON(struct {
			Consistency string              `json:"consistency"`
			Lag         map[string]uint64   `json:"lag"`
			Balances    []projector.Balance `json:"balances"`
		}{"eventual", lagByName(lag), nonNilSlice(bals)})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BUDGET\tSCOPE\tPERIOD\tUNIT\tLIMIT\tSPENT\tRESERVED\tREMAINING\tMODE\tLAST EVENT")
	for _, b := range bals {
		for _, u := range b.Units {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.Budget, b.Scope, b.Period, u.Unit, u.Limit, u.Spent,
				u.Reserved, u.Remaining.String(), b.Mode, b.LastEvent.At.Format(time.RFC3339))
		}
	}
	tw.Flush()
	if len(bals) == 0 {
		fmt.Fprintln(e.stdout, "no balance in the projection")
	}
	ask := "balance --scope S"
	if scope != "" {
		ask = "balance --scope " + scope
	}
	fmt.Fprintf(e.stdout, consistencyNote, streams.BalancesBucket, lagText(lag), ask)
	return exitOK
}

func (e *env) reportBudgets(ctx context.Context, args []string) int {
	var (
		lf     ledgerFlags
		root   string
		asJSON bool
	)
	fs := e.flagSet("report budgets", "report budgets [--root R] [--json]\n\n"+
		"Budget definitions of every root (or one) from the projection (KV tally_budgets).\n"+
		"Eventually consistent; `tally budget list --root R` asks the enforcer.")
	lf.register(fs)
	fs.StringVar(&root, "root", "", "only this root's budgets")
	fs.BoolVar(&asJSON, "json", false, "print a JSON document")
	if code := e.parseCommand(fs, args); code >= 0 {
		return code
	}
	l, code := e.openLedger(ctx, lf)
	if code >= 0 {
		return code
	}
	defer l.close()
	parts := l.partitionsOf(root)
	entries, err := projector.ReadBudgets(ctx, l.js, parts)
	if err != nil {
		return e.ledgerFail(l, err, "is the ledger's projection there? run tally projector, or tally serve")
	}
	lag, err := projector.Lag(ctx, l.js, parts)
	if err != nil {
		return e.ledgerFail(l, err, "")
	}
	var defs []events.Budget
	for _, be := range entries {
		if root == "" || events.Root(be.Budget.Scope) == root {
			defs = append(defs, be.Budget)
		}
	}
	slices.SortFunc(defs, func(a, b events.Budget) int { return strings.Compare(a.Scope+"\x00"+a.Name, b.Scope+"\x00"+b.Name) })
	if asJSON {
		return e.reportJSON(struct {
			Consistency string            `json:"consistency"`
			Lag         map[string]uint64 `json:"lag"`
			Budgets     []events.Budget   `json:"budgets"`
		}{"eventual", lagByName(lag), nonNilSlice(defs)})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCOPE\tNAME\tLIMITS\tPERIOD\tTIMEZONE\tMODE")
	for _, b := range defs {
		var limits []string
		for _, u := range events.SortedUnits(b.Limits) {
			limits = append(limits, u+" "+b.Limits[u].String())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", b.Scope, b.Name, strings.Join(limits, ", "), b.Period, b.Timezone, b.Mode)
	}
	tw.Flush()
	if len(defs) == 0 {
		fmt.Fprintln(e.stdout, "no budget in the projection")
	}
	fmt.Fprintf(e.stdout, consistencyNote, streams.BudgetsBucket, lagText(lag), "budget list --root R")
	return exitOK
}

func lagByName(lag map[int]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(lag))
	for n, l := range lag {
		out[strconv.Itoa(n)] = l
	}
	return out
}

func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (e *env) reportJSON(v any) int {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return e.fail(err, "")
	}
	if _, err := e.stdout.Write(append(b, '\n')); err != nil {
		return e.fail(err, "")
	}
	return exitOK
}

// --- events dump ---

// runEventsDump prints stored events as JSON Lines: the bytes exactly as
// the partition streams hold them, partition by partition in stream
// order, so an auditor can re-hash them.
func runEventsDump(ctx context.Context, e *env, args []string) int {
	var (
		lf         ledgerFlags
		root, typ  string
		fromS, toS string
		partition  int
	)
	fs := e.flagSet("events dump", "events dump [--root R] [--from T] [--to T] [--type T] [--partition n]\n\n"+
		"Print stored events as JSON Lines — the stored bytes, one event per line — partition by\n"+
		"partition in stream order, up to the end of each stream when it is read. --from/--to\n"+
		"select by the event's at (UTC). A whole partition's lines re-hash into its chain:\n"+
		"each line's prev is the SHA-256 of the line before.")
	lf.register(fs)
	fs.StringVar(&root, "root", "", "only events of this root, e.g. tenant:acme")
	fs.StringVar(&typ, "type", "", "only events of this type, e.g. reservation.committed")
	fs.StringVar(&fromS, "from", "", "only events at or after (RFC 3339 or 2026-11-28, UTC)")
	fs.StringVar(&toS, "to", "", "only events before")
	fs.IntVar(&partition, "partition", -1, "only this partition")
	if code := e.parseCommand(fs, args); code >= 0 {
		return code
	}
	if root != "" {
		if err := events.ValidateScope(root); err != nil || strings.Contains(root, "/") {
			return e.usageErr("--root %q: want a root such as tenant:acme", root)
		}
	}
	var types []events.Type
	if typ != "" {
		if !slices.Contains(events.Types, events.Type(typ)) {
			return e.usageErr("--type %q: want one of %v", typ, events.Types)
		}
		types = []events.Type{events.Type(typ)}
	}
	var from, to time.Time
	var err error
	if fromS != "" {
		if from, err = parseWhen(fromS); err != nil {
			return e.usageErr("--from %v", err)
		}
	}
	if toS != "" {
		if to, err = parseWhen(toS); err != nil {
			return e.usageErr("--to %v", err)
		}
	}
	l, code := e.openLedger(ctx, lf)
	if code >= 0 {
		return code
	}
	defer l.close()
	parts := l.partitionsOf(root)
	if partition >= 0 {
		if partition >= l.layout.Partitions || root != "" && parts[0] != partition {
			return e.usageErr("--partition %d: the ledger has partitions 0 to %d (and --root %q lives on %d)",
				partition, l.layout.Partitions-1, root, parts[0])
		}
		parts = []int{partition}
	}
	for _, n := range parts {
		err := report.Read(ctx, l.js, report.Query{Partition: n, Root: root, Types: types, Since: from}, func(r report.Record) error {
			if !from.IsZero() || !to.IsZero() {
				ev, err := events.Decode(r.Data)
				if err != nil {
					return fmt.Errorf("partition %d seq %d: %w (run tally audit verify)", n, r.Seq, err)
				}
				if ev.At.Before(from) {
					return nil
				}
				if !to.IsZero() && !ev.At.Before(to) {
					return report.ErrStop
				}
			}
			if _, err := e.stdout.Write(append(r.Data, '\n')); err != nil {
				return err
			}
			return nil
		})
		if err != nil {
			return e.ledgerFail(l, err, "")
		}
	}
	return exitOK
}

// --- audit ---

func runAudit(ctx context.Context, e *env, args []string) int {
	const usage = "usage: tally audit verify [flags]\n\nrun 'tally audit verify --help' for its flags"
	if len(args) == 0 {
		fmt.Fprintln(e.stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprintln(e.stderr, usage)
		return exitOK
	case "verify":
		return e.auditVerify(ctx, args[1:])
	}
	return e.usageErr("unknown audit command %q (want: audit verify)", args[0])
}

// partitionAudit is the outcome of one partition's audit.
type partitionAudit struct {
	Partition  int    `json:"partition"`
	FirstSeq   uint64 `json:"first_seq"`
	LastSeq    uint64 `json:"last_seq"`
	Events     int    `json:"events"`
	Projection string `json:"projection"`
	Findings   int    `json:"findings"`
}

func (e *env) auditVerify(ctx context.Context, args []string) int {
	var (
		lf           ledgerFlags
		asJSON, noPr bool
		partition    int
		idemWindow   time.Duration
	)
	fs := e.flagSet("audit verify", "audit verify [--partition n] [--json] [--no-projection]\n\n"+
		"Read every partition from its first sequence and check the hash chain, the event schema\n"+
		"(strict decoding), the envelope (partition, root, subject) and the invariants: sequences\n"+
		"and times monotonic, no enforce-mode grant above its limit, every commit, release,\n"+
		"extension and expiry refers to an open reservation, remaining = limit − spent − reserved.\n"+
		"Then rebuild the balances with the enforcer's own Apply and compare them with the\n"+
		"projection (tally_balances, tally_budgets) at its checkpoint. Exits 1 on any finding,\n"+
		"naming partition and sequence.")
	lf.register(fs)
	fs.BoolVar(&asJSON, "json", false, "print the outcome as a JSON document")
	fs.BoolVar(&noPr, "no-projection", false, "do not compare with the projection")
	fs.IntVar(&partition, "partition", -1, "only this partition")
	fs.DurationVar(&idemWindow, "idempotency-window", enforcer.DefaultIdempotencyWindow, "the enforcer's idempotency window: how long after expiry a late commit is accepted")
	if code := e.parseCommand(fs, args); code >= 0 {
		return code
	}
	l, code := e.openLedger(ctx, lf)
	if code >= 0 {
		return code
	}
	defer l.close()
	parts := l.partitionsOf("")
	if partition >= 0 {
		if partition >= l.layout.Partitions {
			return e.usageErr("--partition %d: the ledger has partitions 0 to %d", partition, l.layout.Partitions-1)
		}
		parts = []int{partition}
	}
	prog := newProgress(e.stderr)
	var (
		findings []report.Finding
		outcomes []partitionAudit
		total    int
	)
	for _, n := range parts {
		out, fs, err := auditPartition(ctx, l, n, idemWindow, !noPr, prog)
		if err != nil {
			prog.done()
			return e.ledgerFail(l, fmt.Errorf("audit of partition %d: %w", n, err), "")
		}
		findings = append(findings, fs...)
		outcomes = append(outcomes, out)
		total += out.Events
		if !asJSON {
			prog.clear()
			for _, f := range fs {
				fmt.Fprintf(e.stdout, "FINDING %s\n", f)
			}
			span := "empty"
			if out.Events > 0 {
				span = fmt.Sprintf("seq %d–%d", out.FirstSeq, out.LastSeq)
			}
			verdict := "ok"
			if out.Findings > 0 {
				verdict = plural(out.Findings, "finding")
			}
			fmt.Fprintf(e.stdout, "partition %d: %s (%s): %s; projection: %s\n", n, plural(out.Events, "event"), span, verdict, out.Projection)
		}
	}
	prog.done()
	if asJSON {
		code := e.reportJSON(struct {
			OK         bool             `json:"ok"`
			Events     int              `json:"events"`
			Partitions []partitionAudit `json:"partitions"`
			Findings   []report.Finding `json:"findings"`
		}{len(findings) == 0, total, outcomes, nonNilSlice(findings)})
		if code != exitOK || len(findings) > 0 {
			return exitFail
		}
		return exitOK
	}
	if len(findings) > 0 {
		fmt.Fprintf(e.stdout, "audit FAILED: %s in %s of %s\n", plural(len(findings), "finding"), plural(total, "event"), plural(len(parts), "partition"))
		return exitFail
	}
	fmt.Fprintf(e.stdout, "audit ok: %s of %s verified\n", plural(total, "event"), plural(len(parts), "partition"))
	return exitOK
}

// auditPartition checks partition n from its first sequence, rebuilds
// its state with the enforcer's Apply, and compares the balances at the
// projection's checkpoint with the projection.
func auditPartition(ctx context.Context, l *ledgerConn, n int, idemWindow time.Duration, compare bool, prog *progress) (partitionAudit, []report.Finding, error) {
	out := partitionAudit{Partition: n, Projection: "not compared (--no-projection)"}
	stream, err := l.js.Stream(ctx, streams.StreamName(n))
	if err != nil {
		return out, nil, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return out, nil, err
	}
	var cp0 projector.Checkpoint
	if compare {
		cps, err := projector.ReadCheckpoints(ctx, l.js, []int{n})
		if err != nil {
			return out, nil, err
		}
		cp0 = cps[0]
	}
	checker := report.NewChecker(n, l.layout.Partitions, idemWindow+time.Hour)
	st := enforcer.New(enforcer.Config{Partition: n, IdempotencyWindow: idemWindow})
	replayOK := true
	var snap []byte
	var findings []report.Finding
	apply := func(seq uint64, ev events.Event) (msg string) {
		defer func() {
			if r := recover(); r != nil {
				msg = fmt.Sprint(r)
			}
		}()
		st.Apply(seq, ev)
		return ""
	}
	err = report.Read(ctx, l.js, report.Query{Partition: n}, func(r report.Record) error {
		if out.Events == 0 {
			out.FirstSeq = r.Seq
		}
		out.Events++
		out.LastSeq = r.Seq
		ev, ok, fs := checker.Check(r.Seq, r.Subject, r.Data)
		findings = append(findings, fs...)
		if ok && replayOK && out.FirstSeq == 1 {
			if msg := apply(r.Seq, ev); msg != "" {
				replayOK = false
				findings = append(findings, report.Finding{Partition: n, Seq: r.Seq, Check: report.CheckReplay,
					Message: strings.TrimPrefix(msg, "enforcer: ") + " (balances not rebuilt past this event)"})
			}
		} else if !ok && replayOK {
			replayOK = false // the state cannot follow an undecodable event
		}
		if replayOK && r.Seq == cp0.Seq {
			snap = st.Snapshot()
		}
		prog.show(n, r.Seq, info.State.LastSeq)
		return nil
	})
	if err != nil {
		return out, nil, err
	}
	out.Findings = len(findings)
	if !compare {
		return out, findings, nil
	}
	switch {
	case cp0.Seq == 0:
		out.Projection = "not compared: the partition was never projected (is a projector running?)"
		return out, findings, nil
	case out.FirstSeq != 1:
		out.Projection = fmt.Sprintf("not compared: the history starts at seq %d, balances cannot be rebuilt", out.FirstSeq)
		return out, findings, nil
	case snap == nil:
		out.Projection = fmt.Sprintf("not compared: the replay stopped before the projection's checkpoint %d", cp0.Seq)
		return out, findings, nil
	}
	bals, err := projector.ReadBalances(ctx, l.js, []int{n})
	if err != nil {
		return out, nil, err
	}
	budgets, err := projector.ReadBudgets(ctx, l.js, []int{n})
	if err != nil {
		return out, nil, err
	}
	cps, err := projector.ReadCheckpoints(ctx, l.js, []int{n})
	if err != nil {
		return out, nil, err
	}
	moved := cps[0] != cp0 || cp0.AheadSeq > 0
	for _, b := range bals {
		moved = moved || b.Seq > cp0.Seq
	}
	if moved {
		out.Projection = fmt.Sprintf("not compared: the projection moved during the audit (checkpoint %d → %d); run again with the projector idle", cp0.Seq, cps[0].Seq)
		return out, findings, nil
	}
	rebuilt, defs, err := balancesOf(snap)
	if err != nil {
		return out, nil, err
	}
	pf := report.CompareBalances(n, cp0.Seq, rebuilt, bals)
	pf = append(pf, report.CompareBudgets(n, cp0.Seq, defs, budgets)...)
	findings = append(findings, pf...)
	out.Findings = len(findings)
	if len(pf) == 0 {
		out.Projection = fmt.Sprintf("matches at seq %d (%d instances, %d budgets)", cp0.Seq, len(bals), len(budgets))
	} else {
		out.Projection = fmt.Sprintf("%d differences at seq %d", len(pf), cp0.Seq)
	}
	return out, findings, nil
}

// enforcerSnapshot mirrors the parts of an enforcer snapshot, rendered as
// JSON by enforcer.SnapshotJSON (version enforcer.SnapshotVersionJSON),
// that the audit reads.
type enforcerSnapshot struct {
	V         int             `json:"v"`
	Budgets   []events.Budget `json:"budgets"`
	Instances []struct {
		Budget string `json:"budget"` // pattern "\x00" name
		Scope  string `json:"scope"`
		Period string `json:"period"`
		Units  []struct {
			Unit     string        `json:"unit"`
			Spent    events.Amount `json:"spent"`
			Reserved events.Amount `json:"reserved"`
			Adjust   events.Signed `json:"adjust"`
		} `json:"units"`
	} `json:"instances"`
}

// balancesOf turns a rebuilt state into the balances of every unit each
// instance's budget limits.
func balancesOf(snap []byte) ([]report.InstanceBalance, []events.Budget, error) {
	doc, err := enforcer.SnapshotJSON(snap)
	if err != nil {
		return nil, nil, fmt.Errorf("read the rebuilt state: %w", err)
	}
	var sn enforcerSnapshot
	if err := json.Unmarshal(doc, &sn); err != nil {
		return nil, nil, fmt.Errorf("read the rebuilt state: %w", err)
	}
	if sn.V != enforcer.SnapshotVersionJSON {
		return nil, nil, fmt.Errorf("rebuilt state of version %d, the audit reads %d", sn.V, enforcer.SnapshotVersionJSON)
	}
	defs := map[string]events.Budget{}
	for _, b := range sn.Budgets {
		defs[b.Scope+"\x00"+b.Name] = b
	}
	var out []report.InstanceBalance
	for _, in := range sn.Instances {
		def, ok := defs[in.Budget]
		if !ok {
			continue
		}
		ib := report.InstanceBalance{Pattern: def.Scope, Budget: def.Name, Scope: in.Scope, Period: in.Period, Units: map[string]report.UnitBalance{}}
		for u, limit := range def.Limits {
			ub := report.UnitBalance{Limit: limit}
			for _, su := range in.Units {
				if su.Unit == u {
					ub = report.UnitBalance{Limit: limit.Add(su.Adjust.Amount), Spent: su.Spent, Reserved: su.Reserved}
				}
			}
			ib.Units[u] = ub
		}
		out = append(out, ib)
	}
	return out, sn.Budgets, nil
}

// progress shows the audit's progress on stderr when it is a terminal.
type progress struct {
	w    io.Writer
	on   bool
	last time.Time
	text bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.on = true
		}
	}
	return p
}

func (p *progress) show(n int, seq, last uint64) {
	if !p.on || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	fmt.Fprintf(p.w, "\r\033[Kaudit: partition %d: seq %d of %d", n, seq, last)
	p.text = true
}

func (p *progress) clear() {
	if p.on && p.text {
		fmt.Fprint(p.w, "\r\033[K")
		p.text = false
	}
}

func (p *progress) done() { p.clear() }

// ledgerFail is e.fail for a command on an open ledger: when the servers
// refused one of its requests by the user's permissions (which the request
// only sees as a timeout), the refusal is the reason, with its fix.
func (e *env) ledgerFail(l *ledgerConn, err error, try string) int {
	if perr := refusal(l.nc); perr != nil {
		return e.fail(fmt.Errorf("%v, because %w", err, perr), fixPermissions)
	}
	return e.fail(err, try)
}
