package main

// The client commands: one request each through the Go SDK (package
// client), a human answer on stdout or, with --json, the answer's result as
// a stable JSON document. Exit codes: 0 ok, 1 failure (an error answer, no
// answer, no connection), 2 usage, 3 denied by budget (reserve and decide).

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
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/tallyledger/tally/client"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/streams"
)

// DefaultNATSURL is where client commands look for tally: the address of
// `tally serve`'s embedded server (make run).
const DefaultNATSURL = "nats://127.0.0.1:4222"

// tryRunning is the fix printed when tally cannot be reached.
const tryRunning = "is tally running? start it with: make run"

// clientFlags are the flags every client command shares.
type clientFlags struct {
	natsURL string
	json    bool
	timeout time.Duration
	auth    natsAuth
}

func (f *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.natsURL, "nats-url", DefaultNATSURL, "NATS server(s) of the ledger, comma-separated; credentials go in the URL, e.g. nats://agent-acme:PASSWORD@host:4222")
	fs.BoolVar(&f.json, "json", false, "print the answer's result as a JSON document on stdout")
	fs.DurationVar(&f.timeout, "timeout", client.DefaultTimeout, "how long to wait for the answer, retries of UNAVAILABLE included")
	f.auth.register(fs)
}

// listFlag is a repeatable flag. A value given on the command line replaces
// the one taken from the flag's environment mirror (see parseClient).
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// errorPrefix makes the flag package's parse errors read like every other
// error of the CLI: "error: flag provided but not defined: -x".
type errorPrefix struct{ w io.Writer }

func (p errorPrefix) Write(b []byte) (int, error) {
	if _, err := fmt.Fprintf(p.w, "error: %s", b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// parseClient parses a client command's flags, environment mirrors first;
// the command takes no positional arguments unless positional is set. It
// returns an exit code, or -1 to go on.
func (e *env) parseClient(fs *flag.FlagSet, args []string, positional bool) int {
	fs.SetOutput(errorPrefix{e.stderr})
	if code := e.parse(fs, args); code >= 0 {
		return code
	}
	fs.Visit(func(f *flag.Flag) {
		if l, ok := f.Value.(*listFlag); ok && e.getenv(envName(f.Name)) != "" && len(*l) > 0 {
			*l = (*l)[1:]
		}
	})
	if !positional && fs.NArg() > 0 {
		return e.usageErr("unexpected argument %q (see tally %s --help)", fs.Arg(0), fs.Name())
	}
	return -1
}

// setOnCommandLine reports which flags the command line (not the
// environment) set.
func setOnCommandLine(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// connect dials NATS for a client command.
func (e *env) connect(f clientFlags) (*nats.Conn, int) {
	if f.timeout <= 0 {
		return nil, e.usageErr("--timeout %s: want a positive duration such as 5s", f.timeout)
	}
	opts, err := f.auth.options()
	if err != nil {
		return nil, e.usageErr("%v", err)
	}
	opts = append(opts, nats.Name("tally-cli"), nats.Timeout(f.timeout), quietAsync())
	nc, err := nats.Connect(f.natsURL, opts...)
	if err != nil {
		return nil, e.fail(fmt.Errorf("connect to NATS at %s: %w", f.natsURL, err), cmp.Or(connectFix(err), tryRunning))
	}
	return nc, -1
}

// Fixes printed with a NOT_FOUND answer.
const (
	hintReservation = "check --root and --id: a reservation is only found under the root of the scope it was reserved on"
	hintBudget      = "check --scope and --name: tally budget list --root R shows the budgets of a root"
)

// call connects, runs one request with the command's timeout and reports
// its failure (with notFound as the fix of a NOT_FOUND answer); it returns
// -1 when do succeeded.
func (e *env) call(ctx context.Context, f clientFlags, notFound string, do func(ctx context.Context, c *client.Client) error) int {
	nc, code := e.connect(f)
	if code >= 0 {
		return code
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if err := do(ctx, client.New(nc, client.WithTimeout(f.timeout))); err != nil {
		if perr := refusal(nc); perr != nil {
			return e.fail(perr, fixPermissions)
		}
		return e.requestErr(err, f.timeout, notFound)
	}
	return -1
}

// requestErr prints a request's failure: the server's error answer as
// "error: CODE: message", a missing answer with the hint to start tally.
func (e *env) requestErr(err error, timeout time.Duration, notFound string) int {
	var ae *events.Error
	switch {
	case errors.As(err, &ae):
		try := ""
		switch ae.Code {
		case events.CodeNotFound:
			try = notFound
		case events.CodeIdempotencyConflict:
			try = "this --key was used for a different request: use a new key, or omit --key to get a fresh one"
		case events.CodeUnavailable:
			try = "the partition is busy or moving: retry in a moment"
		}
		return e.fail(ae, try)
	case errors.Is(err, context.DeadlineExceeded):
		return e.fail(fmt.Errorf("no answer from tally within %s", timeout), tryRunning)
	case errors.Is(err, context.Canceled):
		return e.fail(errors.New("interrupted"), "")
	case errors.Is(err, client.ErrNoAnswer):
		return e.fail(err, tryRunning)
	}
	return e.fail(err, "")
}

// printJSON writes v as an indented JSON document.
func (e *env) printJSON(v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("tally: encode answer: %v", err)) // answers are plain data
	}
	b = append(b, '\n')
	_, _ = e.stdout.Write(b)
}

// printKey shows a generated idempotency key so the user can retry with it:
// on stdout with the human answer, on stderr next to --json.
func (e *env) printKey(key string, generated, asJSON bool) {
	if !generated {
		return
	}
	if asJSON {
		fmt.Fprintf(e.stderr, "key: %s\n", key)
		return
	}
	fmt.Fprintf(e.stdout, "key: %s\n", key)
}

// --- flag values ---

// checkScope rejects a missing scope or one whose root cannot name a
// request subject; the rest of the scope is the server's to validate.
func checkScope(scope string) error {
	if scope == "" {
		return errors.New("--scope is required (e.g. tenant:acme/workflow:review/run:r-42)")
	}
	if err := events.ValidatePattern(events.Root(scope)); err != nil {
		return fmt.Errorf("--scope %q: root: %v", scope, err)
	}
	return nil
}

// checkRoot validates a --root flag: the first segment of a scope.
func checkRoot(cmd, root string) error {
	if root == "" {
		return fmt.Errorf("%s needs --root, the root of the reservation's scope (e.g. tenant:acme): the reservation id alone does not name the root", cmd)
	}
	if strings.Contains(root, "/") {
		return fmt.Errorf("--root %q: want a root such as tenant:acme, not a whole scope", root)
	}
	if err := events.ValidatePattern(root); err != nil {
		return fmt.Errorf("--root: %v", err)
	}
	return nil
}

// parseAmounts reads UNIT=AMOUNT values (each may hold several, comma
// separated). Amounts stay exact decimals: they are parsed by events, never
// through a float.
func parseAmounts(name string, vals []string) (events.Amounts, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	out := events.Amounts{}
	for _, v := range vals {
		for part := range strings.SplitSeq(v, ",") {
			unit, text, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok {
				return nil, fmt.Errorf("--%s %q: want UNIT=AMOUNT, e.g. USD=0.40", name, part)
			}
			if err := events.ValidateUnit(unit); err != nil {
				return nil, fmt.Errorf("--%s %q: %v", name, part, err)
			}
			a, err := events.ParseAmount(text)
			if err != nil {
				return nil, fmt.Errorf("--%s %q: %v", name, part, err)
			}
			if _, dup := out[unit]; dup {
				return nil, fmt.Errorf("--%s: unit %s given twice", name, unit)
			}
			out[unit] = a
		}
	}
	return out, nil
}

// parseSigned reads UNIT=[-]AMOUNT values for budget adjust.
func parseSigned(name string, vals []string) (events.SignedAmounts, error) {
	out := events.SignedAmounts{}
	for _, v := range vals {
		for part := range strings.SplitSeq(v, ",") {
			unit, text, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok {
				return nil, fmt.Errorf("--%s %q: want UNIT=AMOUNT, e.g. USD=-5 or USD=100", name, part)
			}
			if err := events.ValidateUnit(unit); err != nil {
				return nil, fmt.Errorf("--%s %q: %v", name, part, err)
			}
			a, err := events.ParseSignedAmount(text)
			if err != nil {
				return nil, fmt.Errorf("--%s %q: %v", name, part, err)
			}
			if _, dup := out[unit]; dup {
				return nil, fmt.Errorf("--%s: unit %s given twice", name, unit)
			}
			out[unit] = events.Signed{Amount: a}
		}
	}
	return out, nil
}

// parseOptions reads LABEL:UNIT=AMOUNT,… values, one option each.
func parseOptions(vals []string) (events.Options, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	out := make(events.Options, 0, len(vals))
	for _, v := range vals {
		var label string
		rest := v
		if i, j := strings.IndexByte(v, ':'), strings.IndexByte(v, '='); i >= 0 && (j < 0 || i < j) {
			label, rest = v[:i], v[i+1:]
		}
		amounts, err := parseAmounts("option", []string{rest})
		if err != nil {
			return nil, fmt.Errorf("%v (want LABEL:UNIT=AMOUNT,…, e.g. small:USD=0.10,tokens=2000)", err)
		}
		out = append(out, events.Option{Label: label, Amounts: amounts})
	}
	return out, nil
}

// parseLabels reads KEY=VALUE values.
func parseLabels(vals []string) (events.Labels, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	out := events.Labels{}
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: want KEY=VALUE, e.g. model=claude", v)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("--label: %s given twice", k)
		}
		out[k] = val
	}
	return out, nil
}

// ttlMS converts a --ttl to the wire's milliseconds.
func ttlMS(d time.Duration) *int64 {
	ms := d.Milliseconds()
	return &ms
}

// --- rendering ---

func amountsText(m events.Amounts) string {
	if len(m) == 0 {
		return "nothing"
	}
	units := make([]string, 0, len(m))
	for u := range m {
		units = append(units, u)
	}
	sort.Strings(units)
	parts := make([]string, len(units))
	for i, u := range units {
		parts[i] = u + " " + m[u].String()
	}
	return strings.Join(parts, ", ")
}

func signedText(m events.SignedAmounts) string {
	units := make([]string, 0, len(m))
	for u := range m {
		units = append(units, u)
	}
	sort.Strings(units)
	parts := make([]string, len(units))
	for i, u := range units {
		parts[i] = u + " " + m[u].String()
	}
	return strings.Join(parts, ", ")
}

func anyPositive(m events.Amounts) bool {
	for _, a := range m {
		if a.Sign() > 0 {
			return true
		}
	}
	return false
}

func timeText(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// printInstances writes one row per instance and unit.
func printInstances(w io.Writer, scope string, instances []events.InstanceView) {
	if len(instances) == 0 {
		fmt.Fprintf(w, "no budget applies to %s\n", scope)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BUDGET\tSCOPE\tPERIOD\tUNIT\tLIMIT\tSPENT\tRESERVED\tREMAINING\tMODE")
	for _, in := range instances {
		for _, u := range in.Units {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", in.Budget, in.Scope, in.Period, u.Unit,
				u.Limit, u.Spent, u.Reserved, u.Remaining.String(), in.Mode)
		}
	}
	_ = tw.Flush()
}

func printOverLimit(w io.Writer, ol []events.OverLimit) {
	for _, o := range ol {
		fmt.Fprintf(w, "over limit: budget %q on %s: %s %s over\n", o.Budget, o.Scope, o.Unit, o.Over)
	}
}

func denialText(d *events.Denial) string {
	return fmt.Sprintf("%s by budget %q on %s: %s %s requested, %s available", d.Code, d.Budget, d.Scope, d.Unit, d.Requested, d.Available)
}

var priorityOrder = []events.Priority{events.PriorityCritical, events.PriorityHigh, events.PriorityNormal, events.PriorityLow, events.PriorityBulk}

func printBudget(w io.Writer, b events.Budget) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "name\t%s\n", b.Name)
	fmt.Fprintf(tw, "scope\t%s\n", b.Scope)
	fmt.Fprintf(tw, "limits\t%s\n", amountsText(b.Limits))
	fmt.Fprintf(tw, "period\t%s\n", b.Period)
	fmt.Fprintf(tw, "timezone\t%s\n", b.Timezone)
	fmt.Fprintf(tw, "mode\t%s\n", b.Mode)
	var floors []string
	for _, p := range priorityOrder {
		if f, ok := b.PriorityFloors[p]; ok {
			floors = append(floors, string(p)+" "+f.String())
		}
	}
	if len(floors) == 0 {
		floors = []string{"none"}
	}
	fmt.Fprintf(tw, "floors\t%s\n", strings.Join(floors, ", "))
	alerts := make([]string, len(b.AlertThresholds))
	for i, a := range b.AlertThresholds {
		alerts[i] = a.String()
	}
	if len(alerts) == 0 {
		alerts = []string{"none"}
	}
	fmt.Fprintf(tw, "alerts\t%s\n", strings.Join(alerts, ", "))
	_ = tw.Flush()
}

// --- reserve and decide ---

func runReserve(ctx context.Context, e *env, args []string) int { return e.reserve(ctx, args, false) }

func runDecide(ctx context.Context, e *env, args []string) int { return e.reserve(ctx, args, true) }

func (e *env) reserve(ctx context.Context, args []string, dryRun bool) int {
	name, what := "reserve", "Reserve an estimate against every budget that applies to the scope, atomically.\nExit 3 when denied."
	if dryRun {
		name, what = "decide", "Dry-run a reserve: nothing is reserved and no event is written; the balances\nare shown as if granted. Exit 3 when it would be denied."
	}
	var (
		cf                       clientFlags
		scope, priority, key     string
		ttl                      time.Duration
		amounts, options, labels listFlag
	)
	fs := e.flagSet(name, name+" --scope S (--amount UNIT=AMOUNT … | --option LABEL:UNIT=AMOUNT,… …) [flags]\n\n"+what)
	cf.register(fs)
	fs.StringVar(&scope, "scope", "", "scope to reserve on, e.g. tenant:acme/workflow:review/run:r-42 (required)")
	fs.Var(&amounts, "amount", "UNIT=AMOUNT to reserve, e.g. USD=0.40 (repeat, or comma-separate, for several units)")
	fs.Var(&options, "option", "LABEL:UNIT=AMOUNT,… one degradation option, in order of preference (repeat; instead of --amount)")
	fs.StringVar(&priority, "priority", string(events.PriorityNormal), "critical, high, normal, low or bulk")
	fs.DurationVar(&ttl, "ttl", events.DefaultTTL, "how long the reservation holds before it expires (1s to 24h)")
	fs.Var(&labels, "label", "KEY=VALUE annotation, e.g. model=claude (repeat)")
	if !dryRun {
		registerKey(fs, &key)
	}
	if code := e.parseClient(fs, args, false); code >= 0 {
		return code
	}
	if err := checkScope(scope); err != nil {
		return e.usageErr("%v", err)
	}
	if (len(amounts) == 0) == (len(options) == 0) {
		return e.usageErr("%s needs either --amount UNIT=AMOUNT or --option LABEL:UNIT=AMOUNT,… (not both)", name)
	}
	p := events.Priority(priority)
	if !p.Valid() {
		return e.usageErr("--priority %q: want critical, high, normal, low or bulk", priority)
	}
	req := events.ReserveRequest{Scope: scope, Priority: &p, TTLMS: ttlMS(ttl)}
	var err error
	if req.Amounts, err = parseAmounts("amount", amounts); err != nil {
		return e.usageErr("%v", err)
	}
	if req.Options, err = parseOptions(options); err != nil {
		return e.usageErr("%v", err)
	}
	if req.Labels, err = parseLabels(labels); err != nil {
		return e.usageErr("%v", err)
	}
	generated := false
	if !dryRun && key == "" {
		key, generated = client.NewKey(), true
	}
	req.IdempotencyKey = key

	var res events.ReserveResult
	code := e.call(ctx, cf, "", func(ctx context.Context, c *client.Client) error {
		var err error
		if dryRun {
			res, err = c.Decide(ctx, req)
		} else {
			res, err = c.Reserve(ctx, req)
		}
		return err
	})
	if code >= 0 {
		return code
	}
	if cf.json {
		e.printKey(key, generated, true)
		e.printJSON(res)
	} else {
		e.printReserve(res, scope, dryRun, len(options) > 0, key, generated)
	}
	if res.Decision != events.DecisionGranted {
		return exitDenied
	}
	return exitOK
}

func (e *env) printReserve(r events.ReserveResult, scope string, dryRun, withOptions bool, key string, generated bool) {
	w := e.stdout
	switch {
	case r.Decision == events.DecisionGranted && dryRun:
		fmt.Fprintln(w, "would be granted (dry run: nothing reserved)")
	case r.Decision == events.DecisionGranted:
		exp := ""
		if r.ExpiresAt != nil {
			exp = " (expires " + timeText(*r.ExpiresAt) + ")"
		}
		fmt.Fprintf(w, "granted %s%s\n", r.ReservationID, exp)
	case r.Denial != nil && dryRun:
		fmt.Fprintf(w, "would be denied: %s\n", denialText(r.Denial))
	case r.Denial != nil:
		fmt.Fprintf(w, "denied: %s\n", denialText(r.Denial))
	default:
		fmt.Fprintf(w, "%s\n", r.Decision)
	}
	e.printKey(key, generated, false)
	if withOptions && r.Decision == events.DecisionGranted {
		degraded := ""
		if r.Degraded {
			degraded = " (degraded)"
		}
		fmt.Fprintf(w, "option: %d %q%s\n", r.Option, r.Label, degraded)
	}
	for _, s := range r.ShadowDenials {
		fmt.Fprintf(w, "shadow: budget %q on %s would have denied: %s %s requested, %s available, %s over\n",
			s.Budget, s.Scope, s.Unit, s.Requested, s.Available, s.Overage)
	}
	printInstances(w, scope, r.Instances)
}

// --- commit, release, extend ---

// reservationFlags are --root and --id.
type reservationFlags struct{ root, id string }

func (f *reservationFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.root, "root", "", "root of the scope the reservation was made on, e.g. tenant:acme (required)")
	fs.StringVar(&f.id, "id", "", "reservation id, as printed by reserve (required)")
}

func (f *reservationFlags) check(cmd string) error {
	if err := checkRoot(cmd, f.root); err != nil {
		return err
	}
	if f.id == "" {
		return fmt.Errorf("%s needs --id, the reservation id printed by reserve", cmd)
	}
	return nil
}

func runCommit(ctx context.Context, e *env, args []string) int {
	var (
		cf             clientFlags
		rf             reservationFlags
		key            string
		actual, labels listFlag
	)
	fs := e.flagSet("commit", "commit --root R --id RID --actual UNIT=AMOUNT … [flags]\n\nCharge the actual cost of a reservation in full and free its hold. Spend above\nthe reservation is charged and reported as overage.")
	cf.register(fs)
	rf.register(fs)
	fs.Var(&actual, "actual", "UNIT=AMOUNT actually spent, e.g. USD=0.37 (repeat, or comma-separate; required)")
	fs.Var(&labels, "label", "KEY=VALUE annotation, e.g. model=claude (repeat)")
	registerKey(fs, &key)
	if code := e.parseClient(fs, args, false); code >= 0 {
		return code
	}
	if err := rf.check("commit"); err != nil {
		return e.usageErr("%v", err)
	}
	if len(actual) == 0 {
		return e.usageErr("commit needs --actual UNIT=AMOUNT (USD=0 if nothing was spent)")
	}
	req := events.CommitRequest{ReservationID: rf.id}
	var err error
	if req.Actual, err = parseAmounts("actual", actual); err != nil {
		return e.usageErr("%v", err)
	}
	if req.Labels, err = parseLabels(labels); err != nil {
		return e.usageErr("%v", err)
	}
	key, generated := keyOrNew(key)
	req.IdempotencyKey = key
	var res events.CommitResult
	if code := e.call(ctx, cf, hintReservation, func(ctx context.Context, c *client.Client) error {
		var err error
		res, err = c.Commit(ctx, rf.root, req)
		return err
	}); code >= 0 {
		return code
	}
	if cf.json {
		e.printKey(key, generated, true)
		e.printJSON(res)
		return exitOK
	}
	w := e.stdout
	fmt.Fprintf(w, "committed %s: charged %s, released %s\n", res.ReservationID, amountsText(res.Charged), amountsText(res.Released))
	e.printKey(key, generated, false)
	if anyPositive(res.Overage) {
		fmt.Fprintf(w, "overage: %s above the reservation\n", amountsText(positive(res.Overage)))
	}
	if res.Late {
		fmt.Fprintln(w, "late: the reservation had expired; the cost is charged, its hold was already freed")
	}
	printOverLimit(w, res.OverLimit)
	printInstances(w, rf.root, res.Instances)
	return exitOK
}

func positive(m events.Amounts) events.Amounts {
	out := events.Amounts{}
	for u, a := range m {
		if a.Sign() > 0 {
			out[u] = a
		}
	}
	return out
}

func runRelease(ctx context.Context, e *env, args []string) int {
	var (
		cf  clientFlags
		rf  reservationFlags
		key string
	)
	fs := e.flagSet("release", "release --root R --id RID [flags]\n\nFree a reservation's hold without charging anything.")
	cf.register(fs)
	rf.register(fs)
	registerKey(fs, &key)
	if code := e.parseClient(fs, args, false); code >= 0 {
		return code
	}
	if err := rf.check("release"); err != nil {
		return e.usageErr("%v", err)
	}
	key, generated := keyOrNew(key)
	var res events.ReleaseResult
	if code := e.call(ctx, cf, hintReservation, func(ctx context.Context, c *client.Client) error {
		var err error
		res, err = c.Release(ctx, rf.root, events.ReleaseRequest{IdempotencyKey: key, ReservationID: rf.id})
		return err
	}); code >= 0 {
		return code
	}
	if cf.json {
		e.printKey(key, generated, true)
		e.printJSON(res)
		return exitOK
	}
	if res.AlreadyExpired {
		fmt.Fprintf(e.stdout, "released %s: it had already expired, nothing left to free\n", res.ReservationID)
	} else {
		fmt.Fprintf(e.stdout, "released %s: %s\n", res.ReservationID, amountsText(res.Released))
	}
	e.printKey(key, generated, false)
	printInstances(e.stdout, rf.root, res.Instances)
	return exitOK
}

func runExtend(ctx context.Context, e *env, args []string) int {
	var (
		cf  clientFlags
		rf  reservationFlags
		key string
		ttl time.Duration
	)
	fs := e.flagSet("extend", "extend --root R --id RID [--ttl 30s] [flags]\n\nMove an open reservation's expiry to now + ttl.")
	cf.register(fs)
	rf.register(fs)
	fs.DurationVar(&ttl, "ttl", events.DefaultTTL, "new time to live, from now (1s to 24h)")
	registerKey(fs, &key)
	if code := e.parseClient(fs, args, false); code >= 0 {
		return code
	}
	if err := rf.check("extend"); err != nil {
		return e.usageErr("%v", err)
	}
	key, generated := keyOrNew(key)
	var res events.ExtendResult
	if code := e.call(ctx, cf, hintReservation, func(ctx context.Context, c *client.Client) error {
		var err error
		res, err = c.Extend(ctx, rf.root, events.ExtendRequest{IdempotencyKey: key, ReservationID: rf.id, TTLMS: ttlMS(ttl)})
		return err
	}); code >= 0 {
		return code
	}
	if cf.json {
		e.printKey(key, generated, true)
		e.printJSON(res)
		return exitOK
	}
	fmt.Fprintf(e.stdout, "extended %s (expires %s)\n", res.ReservationID, timeText(res.ExpiresAt))
	e.printKey(key, generated, false)
	return exitOK
}

// --- charge, balance, reservation ---

func runCharge(ctx context.Context, e *env, args []string) int {
	var (
		cf              clientFlags
		scope, key      string
		amounts, labels listFlag
	)
	fs := e.flagSet("charge", "charge --scope S --amount UNIT=AMOUNT … [flags]\n\nRecord usage without a reservation (post-hoc bills). It is always recorded, and\nflagged when it drives a budget over its limit.")
	cf.register(fs)
	fs.StringVar(&scope, "scope", "", "scope the usage belongs to (required)")
	fs.Var(&amounts, "amount", "UNIT=AMOUNT spent, e.g. USD=0.40 (repeat, or comma-separate; required)")
	fs.Var(&labels, "label", "KEY=VALUE annotation, e.g. model=claude (repeat)")
	registerKey(fs, &key)
	if code := e.parseClient(fs, args, false); code >= 0 {
		return code
	}
	if err := checkScope(scope); err != nil {
		return e.usageErr("%v", err)
	}
	if len(amounts) == 0 {
		return e.usageErr("charge needs --amount UNIT=AMOUNT")
	}
	req := events.ChargeRequest{Scope: scope}
	var err error
	if req.Amounts, err = parseAmounts("amount", amounts); err != nil {
		return e.usageErr("%v", err)
	}
	if req.Labels, err = parseLabels(labels); err != nil {
		return e.usageErr("%v", err)
	}
	key, generated := keyOrNew(key)
	req.IdempotencyKey = key
	var res events.ChargeResult
	if code := e.call(ctx, cf, "", func(ctx context.Context, c *client.Client) error {
		var err error
		res, err = c.Charge(ctx, req)
		return err
	}); code >= 0 {
		return code
	}
	if cf.json {
		e.printKey(key, generated, true)
		e.printJSON(res)
		return exitOK
	}
	fmt.Fprintf(e.stdout, "charged %s: %s\n", res.Scope, amountsText(res.Charged))
	e.printKey(key, generated, false)
	printOverLimit(e.stdout, res.OverLimit)
	printInstances(e.stdout, scope, res.Instances)
	return exitOK
}

func runBalance(ctx context.Context, e *env, args []string) int {
	if rest, ok := cutFlag(args, "projection"); ok {
		// Dashboards: the projection, eventually consistent (report balances).
		return e.reportBalances(ctx, rest)
	}
	var (
		cf    clientFlags
		scope string
	)
	fs := e.flagSet("balance", "balance --scope S [flags]\n\nShow every budget instance that applies to the scope: limit, spent, reserved,\nremaining per unit. Reflects every decision answered before it was asked.\n\nWith --projection, read the projection tally_balances instead:\neventually consistent, for dashboards (same as tally report balances).")
	cf.register(fs)
	fs.StringVar(&scope, "scope", "", "scope to show, e.g. tenant:acme/workflow:review (required)")
	if code := e.parseClient(fs, args, false); code >= 0 {
		return code
	}
	if err := checkScope(scope); err != nil {
		return e.usageErr("%v", err)
	}
	var res events.BalanceResult
	if code := e.call(ctx, cf, "", func(ctx context.Context, c *client.Client) error {
		var err error
		res, err = c.Balance(ctx, scope)
		return err
	}); code >= 0 {
		return code
	}
	if cf.json {
		if res.Instances == nil {
			res.Instances = []events.InstanceView{}
		}
		e.printJSON(res)
		return exitOK
	}
	printInstances(e.stdout, scope, res.Instances)
	return exitOK
}

func runReservation(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] != "get" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprintln(e.stderr, "usage: tally reservation get --root R --id RID [flags]")
			return exitOK
		}
		if len(args) == 0 {
			return e.usageErr("usage: tally reservation get --root R --id RID")
		}
		return e.usageErr("unknown reservation command %q (want: reservation get --root R --id RID)", args[0])
	}
	var (
		cf clientFlags
		rf reservationFlags
	)
	fs := e.flagSet("reservation get", "reservation get --root R --id RID [flags]\n       tally reservation get R RID\n\nShow one reservation: scope, status, amounts, priority, expiry.")
	cf.register(fs)
	rf.register(fs)
	if code := e.parseClient(fs, args[1:], true); code >= 0 {
		return code
	}
	switch {
	case fs.NArg() == 2 && rf.root == "" && rf.id == "":
		rf.root, rf.id = fs.Arg(0), fs.Arg(1)
	case fs.NArg() > 0:
		return e.usageErr("unexpected argument %q (see tally reservation get --help)", fs.Arg(0))
	}
	if err := rf.check("reservation get"); err != nil {
		return e.usageErr("%v", err)
	}
	var res events.ReservationView
	if code := e.call(ctx, cf, hintReservation, func(ctx context.Context, c *client.Client) error {
		var err error
		res, err = c.Reservation(ctx, rf.root, rf.id)
		return err
	}); code >= 0 {
		return code
	}
	if cf.json {
		e.printJSON(res)
		return exitOK
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "reservation\t%s\n", res.ReservationID)
	fmt.Fprintf(tw, "scope\t%s\n", res.Scope)
	fmt.Fprintf(tw, "status\t%s\n", res.Status)
	fmt.Fprintf(tw, "amounts\t%s\n", amountsText(res.Amounts))
	fmt.Fprintf(tw, "priority\t%s\n", res.Priority)
	fmt.Fprintf(tw, "expires\t%s\n", timeText(res.ExpiresAt))
	if res.Label != "" || res.Option > 0 {
		fmt.Fprintf(tw, "option\t%d %q\n", res.Option, res.Label)
	}
	if len(res.Labels) > 0 {
		keys := make([]string, 0, len(res.Labels))
		for k := range res.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			keys[i] = k + "=" + res.Labels[k]
		}
		fmt.Fprintf(tw, "labels\t%s\n", strings.Join(keys, ", "))
	}
	_ = tw.Flush()
	return exitOK
}

// --- budget ---

var budgetCommands = []struct {
	name, summary string
	run           func(ctx context.Context, e *env, args []string) int
}{
	{"set", "create or replace a budget (from flags, or --file budget.json)", runBudgetSet},
	{"get", "show a budget", runBudgetGet},
	{"list", "list the budgets of a root", runBudgetList},
	{"delete", "delete a budget", runBudgetDelete},
	{"adjust", "top up or correct one instance's limit for its current period", runBudgetAdjust},
}

func runBudget(ctx context.Context, e *env, args []string) int {
	usage := func() {
		fmt.Fprintln(e.stderr, "usage: tally budget <command> [flags]\n\ncommands:")
		for _, c := range budgetCommands {
			fmt.Fprintf(e.stderr, "  %-8s %s\n", c.name, c.summary)
		}
		fmt.Fprintln(e.stderr, "\nrun 'tally budget <command> --help' for its flags")
	}
	if len(args) == 0 {
		usage()
		return exitUsage
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		return exitOK
	}
	for _, c := range budgetCommands {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	fmt.Fprintf(e.stderr, "error: unknown budget command %q\ntry: tally budget --help\n", args[0])
	return exitUsage
}

// budgetDefinitionFlags are the flags that --file replaces.
var budgetDefinitionFlags = []string{"scope", "name", "limit", "period", "timezone", "mode", "floor", "alert"}

func runBudgetSet(ctx context.Context, e *env, args []string) int {
	var (
		cf                                       clientFlags
		scope, name, period, tz, mode, key, file string
		limits, floors, alerts                   listFlag
	)
	fs := e.flagSet("budget set", "budget set --scope S --name N --limit UNIT=AMOUNT … [flags]\n       tally budget set --file budget.json [--key K]\n\nCreate or replace a budget; spent and reserved of the current period are kept.\nThe file holds the wire's budget-set request (- reads stdin).")
	cf.register(fs)
	fs.StringVar(&scope, "scope", "", "budget scope; '*' as a non-root id makes one instance per concrete scope, e.g. tenant:acme/workflow:review/run:*")
	fs.StringVar(&name, "name", "", "budget name, unique within its scope ([A-Za-z0-9_-])")
	fs.Var(&limits, "limit", "UNIT=AMOUNT limit, e.g. USD=500 (repeat, or comma-separate, for several units)")
	fs.StringVar(&period, "period", string(events.PeriodNone), "none, hourly, daily, weekly, monthly or yearly")
	fs.StringVar(&tz, "timezone", "UTC", "IANA time zone of the calendar periods, e.g. Europe/Paris")
	fs.StringVar(&mode, "mode", string(events.ModeEnforce), "enforce (denies) or shadow (tracks, never denies)")
	fs.Var(&floors, "floor", "PRIORITY=FRACTION of the limit that must stay free after a grant, e.g. normal=0.25 (repeat)")
	fs.Var(&alerts, "alert", "alert threshold as a fraction of the limit, e.g. 0.8 (repeat; default 0.5 0.8 1)")
	fs.StringVar(&file, "file", "", "read the budget-set request from this JSON file instead of the flags (- for stdin)")
	fs.StringVar(&key, "key", "", "idempotency key; a retry with the same key returns the original answer (empty: the file's, else a new key, printed)")
	if code := e.parseClient(fs, args, false); code >= 0 {
		return code
	}
	var req events.BudgetSetRequest
	if file != "" {
		set := setOnCommandLine(fs)
		for _, f := range budgetDefinitionFlags {
			if set[f] {
				return e.usageErr("--file and --%s exclude each other: the file holds the whole definition", f)
			}
		}
		var data []byte
		var err error
		if file == "-" {
			data, err = io.ReadAll(io.LimitReader(e.stdin, events.MaxRequestBytes+1))
		} else {
			data, err = os.ReadFile(file)
		}
		if err != nil {
			return e.usageErr("--file: %v", err)
		}
		if len(data) > events.MaxRequestBytes {
			return e.usageErr("--file %s: larger than %d bytes", file, events.MaxRequestBytes)
		}
		if err := events.DecodeStrict(data, &req); err != nil {
			return e.usageErr("--file %s: %v", file, err)
		}
		if err := checkScope(req.Scope); err != nil {
			return e.usageErr("--file %s: %v", file, strings.Replace(err.Error(), "--scope", "scope", 1))
		}
	} else {
		if err := checkScope(scope); err != nil {
			return e.usageErr("%v", err)
		}
		if name == "" {
			return e.usageErr("budget set needs --name")
		}
		if len(limits) == 0 {
			return e.usageErr("budget set needs --limit UNIT=AMOUNT")
		}
		p, m := events.Period(period), events.Mode(mode)
		if !p.Valid() {
			return e.usageErr("--period %q: want none, hourly, daily, weekly, monthly or yearly", period)
		}
		if m != events.ModeEnforce && m != events.ModeShadow {
			return e.usageErr("--mode %q: want enforce or shadow", mode)
		}
		req = events.BudgetSetRequest{Scope: scope, Name: name, Period: &p, Timezone: &tz, Mode: &m}
		var err error
		if req.Limits, err = parseAmounts("limit", limits); err != nil {
			return e.usageErr("%v", err)
		}
		for _, f := range floors {
			pr, text, ok := strings.Cut(f, "=")
			if !ok || !events.Priority(pr).Valid() {
				return e.usageErr("--floor %q: want PRIORITY=FRACTION with PRIORITY one of critical high normal low bulk, e.g. normal=0.25", f)
			}
			a, err := events.ParseAmount(text)
			if err != nil {
				return e.usageErr("--floor %q: %v", f, err)
			}
			if req.PriorityFloors == nil {
				req.PriorityFloors = map[events.Priority]events.Amount{}
			}
			if _, dup := req.PriorityFloors[events.Priority(pr)]; dup {
				return e.usageErr("--floor: %s given twice", pr)
			}
			req.PriorityFloors[events.Priority(pr)] = a
		}
		if len(alerts) > 0 {
			th := make([]events.Amount, 0, len(alerts))
			for _, v := range alerts {
				for part := range strings.SplitSeq(v, ",") {
					a, err := events.ParseAmount(strings.TrimSpace(part))
					if err != nil {
						return e.usageErr("--alert %q: %v", part, err)
					}
					th = append(th, a)
				}
			}
			req.AlertThresholds = &th
		}
	}
	generated := false
	switch {
	case key != "":
		req.IdempotencyKey = key
	case req.IdempotencyKey == "":
		req.IdempotencyKey, generated = client.NewKey(), true
	}
	var res events.BudgetResult
	if code := e.call(ctx, cf, "", func(ctx context.Context, c *client.Client) error {
		var err error
		res, err = c.SetBudget(ctx, req)
		return err
	}); code >= 0 {
		return code
	}
	if cf.json {
		e.printKey(req.IdempotencyKey, generated, true)
		e.printJSON(res)
		return exitOK
	}
	fmt.Fprintf(e.stdout, "set budget %q on %s\n", res.Budget.Name, res.Budget.Scope)
	e.printKey(req.IdempotencyKey, generated, false)
	printBudget(e.stdout, res.Budget)
	return exitOK
}

// budgetRefFlags are --scope and --name.
type budgetRefFlags struct{ scope, name string }

func (f *budgetRefFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.scope, "scope", "", "the budget's scope, as set (required)")
	fs.StringVar(&f.name, "name", "", "the budget's name (required)")
}

func (f *budgetRefFlags) check(cmd string) error {
	if err := checkScope(f.scope); err != nil {
		return err
	}
	if f.name == "" {
		return fmt.Errorf("%s needs --name", cmd)
	}
	return nil
}

func runBudgetGet(ctx context.Context, e *env, args []string) int {
	var (
		cf clientFlags
		bf budgetRefFlags
	)
	fs := e.flagSet("budget get", "budget get --scope S --name N [flags]\n\nShow a budget's definition.")
	cf.register(fs)
	bf.register(fs)
	if code := e.parseClient(fs, args, false); code >= 0 {
		return code
	}
	if err := bf.check("budget get"); err != nil {
		return e.usageErr("%v", err)
	}
	var res events.BudgetResult
	if code := e.call(ctx, cf, hintBudget, func(ctx context.Context, c *client.Client) error {
		var err error
		res, err = c.Budget(ctx, bf.scope, bf.name)
		return err
	}); code >= 0 {
		return code
	}
	if cf.json {
		e.printJSON(res)
		return exitOK
	}
	printBudget(e.stdout, res.Budget)
	return exitOK
}

func runBudgetList(ctx context.Context, e *env, args []string) int {
	if rest, ok := cutFlag(args, "all"); ok {
		// Every root's budgets from the projection, eventually consistent.
		return e.reportBudgets(ctx, rest)
	}
	var (
		cf   clientFlags
		root string
	)
	fs := e.flagSet("budget list", "budget list --root R [flags]\n\nList every budget under a root.\n\nWith --all, list the budgets of every root from the projection tally_budgets:\neventually consistent, for dashboards (same as tally report budgets).")
	cf.register(fs)
	fs.StringVar(&root, "root", "", "the root whose budgets to list, e.g. tenant:acme (required)")
	if code := e.parseClient(fs, args, false); code >= 0 {
		return code
	}
	if root == "" {
		return e.usageErr("budget list needs --root, e.g. tenant:acme")
	}
	if err := checkRoot("budget list", root); err != nil {
		return e.usageErr("%v", err)
	}
	var res events.BudgetListResult
	if code := e.call(ctx, cf, "", func(ctx context.Context, c *client.Client) error {
		var err error
		res, err = c.Budgets(ctx, root)
		return err
	}); code >= 0 {
		return code
	}
	if res.Budgets == nil {
		res.Budgets = []events.Budget{}
	}
	if cf.json {
		e.printJSON(res)
		return exitOK
	}
	if len(res.Budgets) == 0 {
		fmt.Fprintf(e.stdout, "no budgets under %s\n", root)
		return exitOK
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSCOPE\tLIMITS\tPERIOD\tMODE")
	for _, b := range res.Budgets {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.Name, b.Scope, amountsText(b.Limits), b.Period, b.Mode)
	}
	_ = tw.Flush()
	return exitOK
}

func runBudgetDelete(ctx context.Context, e *env, args []string) int {
	var (
		cf  clientFlags
		bf  budgetRefFlags
		key string
	)
	fs := e.flagSet("budget delete", "budget delete --scope S --name N [flags]\n\nDelete a budget: it no longer applies to new requests.")
	cf.register(fs)
	bf.register(fs)
	registerKey(fs, &key)
	if code := e.parseClient(fs, args, false); code >= 0 {
		return code
	}
	if err := bf.check("budget delete"); err != nil {
		return e.usageErr("%v", err)
	}
	key, generated := keyOrNew(key)
	var res events.BudgetDeleteResult
	if code := e.call(ctx, cf, hintBudget, func(ctx context.Context, c *client.Client) error {
		var err error
		res, err = c.DeleteBudget(ctx, events.BudgetRef{IdempotencyKey: key, Scope: bf.scope, Name: bf.name})
		return err
	}); code >= 0 {
		return code
	}
	if cf.json {
		e.printKey(key, generated, true)
		e.printJSON(res)
		return exitOK
	}
	fmt.Fprintf(e.stdout, "deleted budget %q on %s\n", res.Name, res.Scope)
	e.printKey(key, generated, false)
	return exitOK
}

func runBudgetAdjust(ctx context.Context, e *env, args []string) int {
	var (
		cf          clientFlags
		bf          budgetRefFlags
		key, reason string
		delta       listFlag
	)
	fs := e.flagSet("budget adjust", "budget adjust --scope S --name N --delta UNIT=[-]AMOUNT … --reason TEXT [flags]\n\nTop up (positive) or correct (negative) the limit of one budget instance for\nits current period. --scope is the instance's concrete scope.")
	cf.register(fs)
	bf.register(fs)
	fs.Var(&delta, "delta", "UNIT=[-]AMOUNT added to the limit, e.g. USD=100 or USD=-5 (repeat; required)")
	fs.StringVar(&reason, "reason", "", "why, for the audit trail (required)")
	registerKey(fs, &key)
	if code := e.parseClient(fs, args, false); code >= 0 {
		return code
	}
	if err := bf.check("budget adjust"); err != nil {
		return e.usageErr("%v", err)
	}
	if len(delta) == 0 {
		return e.usageErr("budget adjust needs --delta UNIT=[-]AMOUNT")
	}
	if reason == "" {
		return e.usageErr("budget adjust needs --reason")
	}
	d, err := parseSigned("delta", delta)
	if err != nil {
		return e.usageErr("%v", err)
	}
	key, generated := keyOrNew(key)
	var res events.BudgetAdjustResult
	if code := e.call(ctx, cf, hintBudget, func(ctx context.Context, c *client.Client) error {
		var err error
		res, err = c.AdjustBudget(ctx, events.BudgetAdjustRequest{IdempotencyKey: key, Scope: bf.scope, Name: bf.name, Delta: d, Reason: reason})
		return err
	}); code >= 0 {
		return code
	}
	if cf.json {
		e.printKey(key, generated, true)
		e.printJSON(res)
		return exitOK
	}
	fmt.Fprintf(e.stdout, "adjusted budget %q on %s for period %s: %s (%s)\n", res.Budget, res.Scope, res.Period, signedText(res.Delta), res.Reason)
	e.printKey(key, generated, false)
	printInstances(e.stdout, res.Scope, []events.InstanceView{res.Instance})
	return exitOK
}

// --- events ---

func runEvents(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		return e.usageErr("usage: tally events tail|dump|restore [flags]")
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(e.stderr, "usage: tally events tail|dump|restore [flags]\n\nrun 'tally events tail --help', 'tally events dump --help' or 'tally events restore --help' for their flags")
		return exitOK
	}
	if args[0] == "dump" { // events dump: report_cmds.go
		return runEventsDump(ctx, e, args[1:])
	}
	if args[0] == "restore" { // events restore: restore_cmd.go
		return runEventsRestore(ctx, e, args[1:])
	}
	if args[0] != "tail" {
		return e.usageErr("unknown events command %q (want: events tail, events dump or events restore)", args[0])
	}
	var (
		cf              clientFlags
		partition       int
		root, typ       string
		fromSeq         uint64
		follow, ignored bool
	)
	fs := e.flagSet("events tail", "events tail [--partition n] [--root R] [--type T] [--from-seq N] [--follow] [flags]\n\nPrint the ledger's events, one JSON document per line (JSON Lines: the stored\nbytes), in stream order per partition. Without --follow it stops at the\ncurrent end; with --follow it waits for new events until interrupted.")
	fs.StringVar(&cf.natsURL, "nats-url", DefaultNATSURL, "NATS server(s) of the ledger, comma-separated")
	cf.auth.register(fs)
	fs.BoolVar(&ignored, "json", false, "accepted for uniformity: events are always printed as JSON Lines")
	fs.DurationVar(&cf.timeout, "timeout", client.DefaultTimeout, "how long to wait for the server on each step (not for new events with --follow)")
	fs.IntVar(&partition, "partition", -1, "read only partition n (default: every partition, or the one --root lives on)")
	fs.StringVar(&root, "root", "", "only events of this root, e.g. tenant:acme")
	fs.StringVar(&typ, "type", "", "only events of this type, e.g. reservation.granted")
	fs.Uint64Var(&fromSeq, "from-seq", 0, "start at this stream sequence of each partition read (default: the first)")
	fs.BoolVar(&follow, "follow", false, "keep waiting for new events until interrupted")
	if code := e.parseClient(fs, args[1:], false); code >= 0 {
		return code
	}
	_ = ignored
	if root != "" {
		if err := checkRoot("events tail", root); err != nil {
			return e.usageErr("%v", err)
		}
	}
	if typ != "" && !slices.Contains(events.Types, events.Type(typ)) {
		names := make([]string, len(events.Types))
		for i, t := range events.Types {
			names[i] = string(t)
		}
		return e.usageErr("--type %q: want one of %s", typ, strings.Join(names, " "))
	}
	l, code := e.openLedger(ctx, ledgerFlags{natsURL: cf.natsURL, timeout: cf.timeout, auth: cf.auth})
	if code >= 0 {
		return code
	}
	defer l.close()
	js, layout := l.js, l.layout
	var parts []int
	switch {
	case partition < -1 || partition >= layout.Partitions:
		return e.usageErr("--partition %d: the ledger has partitions 0 to %d", partition, layout.Partitions-1)
	case root != "" && partition >= 0 && streams.Partition(root, layout.Partitions) != partition:
		return e.usageErr("--root %s lives on partition %d, not %d", root, streams.Partition(root, layout.Partitions), partition)
	case root != "":
		parts = []int{streams.Partition(root, layout.Partitions)}
	case partition >= 0:
		parts = []int{partition}
	default:
		for n := range layout.Partitions {
			parts = append(parts, n)
		}
	}
	t := tailer{js: js, root: root, typ: typ, fromSeq: fromSeq, follow: follow, timeout: cf.timeout, w: e.stdout}
	var err error
	if follow {
		g, gctx := errgroup.WithContext(ctx)
		for _, n := range parts {
			g.Go(func() error { return t.partition(gctx, n) })
		}
		err = g.Wait()
	} else {
		for _, n := range parts {
			if err = t.partition(ctx, n); err != nil {
				break
			}
		}
	}
	switch {
	case err == nil:
		return exitOK
	case follow && ctx.Err() != nil:
		return exitOK // interrupted: the normal end of --follow
	case errors.Is(err, context.DeadlineExceeded):
		return e.ledgerFail(l, err, tryRunning)
	}
	return e.ledgerFail(l, err, "")
}

// tailer prints the events of partition streams.
type tailer struct {
	js        jetstream.JetStream
	root, typ string
	fromSeq   uint64
	follow    bool
	timeout   time.Duration
	mu        sync.Mutex // serialises lines of concurrent partitions
	w         io.Writer
}

// partition prints partition n's events with an ordered consumer: up to
// the messages pending when it started, or forever with follow.
func (t *tailer) partition(ctx context.Context, n int) error {
	// The server drops the ephemeral consumer soon after the command ends.
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: 30 * time.Second}
	if t.root != "" || t.typ != "" {
		root, typ := t.root, t.typ
		if root == "" {
			root = "*"
		}
		if typ == "" {
			typ = ">"
		}
		cfg.FilterSubjects = []string{streams.EventSubject(n, root, typ)}
	}
	if t.fromSeq > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = t.fromSeq
	}
	cctx, cancel := context.WithTimeout(ctx, t.timeout)
	cons, err := t.js.OrderedConsumer(cctx, streams.StreamName(n), cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("partition %d: %w", n, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("partition %d: %w", n, err)
	}
	defer it.Stop()
	if !t.follow {
		if info := cons.CachedInfo(); info == nil || info.NumPending == 0 {
			return nil
		}
	}
	for {
		nctx, cancel := ctx, context.CancelFunc(func() {})
		if !t.follow {
			nctx, cancel = context.WithTimeout(ctx, t.timeout)
		}
		msg, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			return fmt.Errorf("partition %d: %w", n, err)
		}
		line := strings.TrimRight(string(msg.Data()), "\n") + "\n"
		t.mu.Lock()
		_, err = io.WriteString(t.w, line)
		t.mu.Unlock()
		if err != nil {
			return err
		}
		if !t.follow {
			if md, err := msg.Metadata(); err == nil && md.NumPending == 0 {
				return nil
			}
		}
	}
}

// registerKey adds the --key flag of the commands that change state.
func registerKey(fs *flag.FlagSet, key *string) {
	fs.StringVar(key, "key", "", "idempotency key; a retry with the same key returns the original answer (empty: a new key, printed)")
}

// keyOrNew returns key, or a fresh one (generated is then true, and the
// command prints it so the user can retry with it).
func keyOrNew(key string) (string, bool) {
	if key == "" {
		return client.NewKey(), true
	}
	return key, false
}

// cutFlag removes a boolean flag (--name or -name) from args.
func cutFlag(args []string, name string) ([]string, bool) {
	out := make([]string, 0, len(args))
	found := false
	for _, a := range args {
		if a == "--"+name || a == "-"+name || a == "--"+name+"=true" {
			found = true
			continue
		}
		out = append(out, a)
	}
	return out, found
}
