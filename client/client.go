// Package client is the Go SDK agents use to talk to tally over NATS
// request-reply: typed requests and answers, retries that reuse the
// idempotency key (so a retry can never spend twice), and Execute, which
// reserves, runs the work, commits what it really cost and releases the
// reservation if the work fails.
//
// It imports events and streams (for subject names) only.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/streams"
)

// Defaults.
const (
	DefaultTimeout  = 5 * time.Second
	DefaultAttempts = 5
	DefaultBackoff  = 50 * time.Millisecond
	// MaxBackoff caps the pause between attempts: during a failover the
	// next attempt should come soon after the new owner is up.
	MaxBackoff = time.Second
)

// Client sends requests to tally.
type Client struct {
	nc       *nats.Conn
	timeout  time.Duration
	attempts int
	backoff  time.Duration
	// partitions, when set, makes the client address the mapped subject
	// tally.v1.p.<n>.<root>.<op> directly.
	partitions int
}

// Option configures a Client.
type Option func(*Client)

// WithTimeout sets how long one attempt waits for an answer.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithAttempts sets how many times a request is sent before giving up on
// timeouts and UNAVAILABLE answers.
func WithAttempts(n int) Option { return func(c *Client) { c.attempts = max(1, n) } }

// WithBackoff sets the first pause between attempts (it doubles).
func WithBackoff(d time.Duration) Option { return func(c *Client) { c.backoff = d } }

// WithPartitions makes the client publish to the partition subject itself
// (the server's mapping is then not needed); p must be the ledger's P.
func WithPartitions(p int) Option { return func(c *Client) { c.partitions = p } }

// New returns a client on an established connection.
func New(nc *nats.Conn, opts ...Option) *Client {
	c := &Client{nc: nc, timeout: DefaultTimeout, attempts: DefaultAttempts, backoff: DefaultBackoff}
	for _, o := range opts {
		o(c)
	}
	return c
}

// ErrNoAnswer is returned when no attempt got an answer.
var ErrNoAnswer = errors.New("tally: no answer")

// ErrRefused is returned when the NATS servers refused to carry the
// request, or to deliver its answer, by the permissions of the
// connection's user. It wraps the server's refusal; retrying cannot help.
var ErrRefused = errors.New("tally: refused by the NATS user's permissions")

// Do sends req (a JSON-encodable request) for op under root and decodes the
// result into out. Error answers are returned as *events.Error. Timeouts
// and UNAVAILABLE answers are retried with the same payload, so the same
// idempotency key.
func (c *Client) Do(ctx context.Context, root string, op events.Op, req, out any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("tally: encode %s request: %w", op, err)
	}
	subject := streams.RequestSubject(root, string(op))
	if c.partitions > 0 {
		subject = streams.PartitionSubject(streams.Partition(root, c.partitions), root, string(op))
	}
	pause := c.backoff
	var last error
	for attempt := 0; attempt < c.attempts; attempt++ {
		if attempt > 0 {
			// Full jitter: clients that failed together do not retry together.
			wait := pause/2 + time.Duration(rand.Int64N(int64(pause/2)+1))
			select {
			case <-ctx.Done():
				return errors.Join(ctx.Err(), last)
			case <-time.After(wait):
			}
			pause = min(2*pause, MaxBackoff)
		}
		actx, cancel := context.WithTimeout(ctx, c.timeout)
		msg, err := c.nc.RequestWithContext(actx, subject, body)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return errors.Join(ctx.Err(), err)
			}
			if rerr := c.refusal(root, op); rerr != nil {
				return rerr
			}
			last = fmt.Errorf("%w to %s: %v", ErrNoAnswer, op, err)
			continue
		}
		var a events.Answer
		if err := json.Unmarshal(msg.Data, &a); err != nil {
			return fmt.Errorf("tally: undecodable %s answer: %w", op, err)
		}
		if a.Error != nil {
			if a.Error.Code == events.CodeUnavailable {
				last = a.Error
				continue
			}
			return a.Error
		}
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(a.Result, out); err != nil {
			return fmt.Errorf("tally: decode %s result: %w", op, err)
		}
		return nil
	}
	return last
}

// refusal returns ErrRefused with the servers' reason when the last error
// they reported on the connection is a permissions violation that stops
// requests for op under root — publishing to its subject, whatever
// partition the mapping chose — or their answers, on the connection's
// reply inboxes. A request they refuse is dropped, so it looks like a
// timeout. The connection keeps one last error: of refusals on one
// connection at the same moment, those it no longer names stay ErrNoAnswer.
func (c *Client) refusal(root string, op events.Op) error {
	err := c.nc.LastError()
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return nil
	}
	msg := err.Error()
	inbox := c.nc.Opts.InboxPrefix
	if inbox == "" {
		inbox = nats.InboxPrefix
	}
	inbox = strings.TrimSuffix(inbox, ".") + "."
	if _, rest, ok := strings.Cut(msg, `for Publish to "`); ok {
		subject, _, _ := strings.Cut(rest, `"`)
		if !strings.HasPrefix(subject, streams.Prefix+".") || !strings.HasSuffix(subject, "."+root+"."+string(op)) {
			return nil
		}
	} else if !strings.Contains(msg, `for Subscription to "`+inbox) {
		return nil
	}
	return fmt.Errorf("%w: %s %s: %v", ErrRefused, op, root, err)
}

// NewKey returns a fresh idempotency key.
func NewKey() string { return ulid.Make().String() }

func keyed(k *string) {
	if *k == "" {
		*k = NewKey()
	}
}

// Reserve asks for a reservation; a denial is a result, not an error.
func (c *Client) Reserve(ctx context.Context, req events.ReserveRequest) (events.ReserveResult, error) {
	keyed(&req.IdempotencyKey)
	var r events.ReserveResult
	return r, c.Do(ctx, events.Root(req.Scope), events.OpReserve, req, &r)
}

// Decide is a dry-run reserve.
func (c *Client) Decide(ctx context.Context, req events.ReserveRequest) (events.ReserveResult, error) {
	var r events.ReserveResult
	return r, c.Do(ctx, events.Root(req.Scope), events.OpDecide, req, &r)
}

// Commit charges the actual cost of a reservation made under root.
func (c *Client) Commit(ctx context.Context, root string, req events.CommitRequest) (events.CommitResult, error) {
	keyed(&req.IdempotencyKey)
	var r events.CommitResult
	return r, c.Do(ctx, root, events.OpCommit, req, &r)
}

// Release frees a reservation made under root.
func (c *Client) Release(ctx context.Context, root string, req events.ReleaseRequest) (events.ReleaseResult, error) {
	keyed(&req.IdempotencyKey)
	var r events.ReleaseResult
	return r, c.Do(ctx, root, events.OpRelease, req, &r)
}

// Extend moves a reservation's expiry.
func (c *Client) Extend(ctx context.Context, root string, req events.ExtendRequest) (events.ExtendResult, error) {
	keyed(&req.IdempotencyKey)
	var r events.ExtendResult
	return r, c.Do(ctx, root, events.OpExtend, req, &r)
}

// Charge records usage without a reservation.
func (c *Client) Charge(ctx context.Context, req events.ChargeRequest) (events.ChargeResult, error) {
	keyed(&req.IdempotencyKey)
	var r events.ChargeResult
	return r, c.Do(ctx, events.Root(req.Scope), events.OpCharge, req, &r)
}

// Balance reads every instance that applies to scope, strongly consistent.
func (c *Client) Balance(ctx context.Context, scope string) (events.BalanceResult, error) {
	var r events.BalanceResult
	return r, c.Do(ctx, events.Root(scope), events.OpBalance, events.BalanceRequest{Scope: scope}, &r)
}

// Reservation reads one reservation.
func (c *Client) Reservation(ctx context.Context, root, id string) (events.ReservationView, error) {
	var r events.ReservationView
	return r, c.Do(ctx, root, events.OpReservationGet, events.ReservationGetRequest{ReservationID: id}, &r)
}

// SetBudget creates or replaces a budget.
func (c *Client) SetBudget(ctx context.Context, req events.BudgetSetRequest) (events.BudgetResult, error) {
	keyed(&req.IdempotencyKey)
	var r events.BudgetResult
	return r, c.Do(ctx, events.Root(req.Scope), events.OpBudgetSet, req, &r)
}

// Budget reads one budget.
func (c *Client) Budget(ctx context.Context, scope, name string) (events.BudgetResult, error) {
	var r events.BudgetResult
	return r, c.Do(ctx, events.Root(scope), events.OpBudgetGet, events.BudgetRef{Scope: scope, Name: name}, &r)
}

// Budgets lists the budgets of a root.
func (c *Client) Budgets(ctx context.Context, root string) (events.BudgetListResult, error) {
	var r events.BudgetListResult
	return r, c.Do(ctx, root, events.OpBudgetList, events.BudgetListRequest{}, &r)
}

// DeleteBudget deletes a budget.
func (c *Client) DeleteBudget(ctx context.Context, req events.BudgetRef) (events.BudgetDeleteResult, error) {
	keyed(&req.IdempotencyKey)
	var r events.BudgetDeleteResult
	return r, c.Do(ctx, events.Root(req.Scope), events.OpBudgetDelete, req, &r)
}

// AdjustBudget tops up or corrects one instance's limit for its current period.
func (c *Client) AdjustBudget(ctx context.Context, req events.BudgetAdjustRequest) (events.BudgetAdjustResult, error) {
	keyed(&req.IdempotencyKey)
	var r events.BudgetAdjustResult
	return r, c.Do(ctx, events.Root(req.Scope), events.OpBudgetAdjust, req, &r)
}

// DeniedError is returned by Execute when the reservation was denied.
type DeniedError struct {
	Result events.ReserveResult
}

func (e *DeniedError) Error() string {
	d := e.Result.Denial
	if d == nil {
		return "tally: denied"
	}
	return fmt.Sprintf("tally: denied by budget %q on %s: %s %s requested, %s available (%s)",
		d.Budget, d.Scope, d.Requested, d.Unit, d.Available, d.Code)
}

// Work is what Execute runs: it returns what it actually cost.
type Work func(ctx context.Context, granted events.ReserveResult) (actual events.Amounts, err error)

// Execute reserves the estimate on scope, runs fn, and commits the actual
// cost fn reports — or releases the reservation when fn fails (its error is
// returned, joined with any release error). A denial returns *DeniedError
// without running fn. opts tune the reservation (priority, TTL, labels,
// options); its idempotency keys derive from one fresh key so the whole
// sequence is safe to retry.
func (c *Client) Execute(ctx context.Context, scope string, estimate events.Amounts, fn Work, opts ...func(*events.ReserveRequest)) (events.CommitResult, error) {
	key := NewKey()
	req := events.ReserveRequest{IdempotencyKey: key + "-r", Scope: scope, Amounts: estimate}
	for _, o := range opts {
		o(&req)
	}
	if req.Options != nil {
		req.Amounts = nil
	}
	res, err := c.Reserve(ctx, req)
	if err != nil {
		return events.CommitResult{}, err
	}
	if res.Decision != events.DecisionGranted {
		return events.CommitResult{}, &DeniedError{Result: res}
	}
	root := events.Root(scope)
	actual, ferr := fn(ctx, res)
	if ferr != nil {
		// Release on a context that outlives a cancelled ctx: the hold must
		// not wait for its TTL.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout*time.Duration(c.attempts))
		defer cancel()
		_, rerr := c.Release(rctx, root, events.ReleaseRequest{IdempotencyKey: key + "-x", ReservationID: res.ReservationID})
		return events.CommitResult{}, errors.Join(ferr, rerr)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout*time.Duration(c.attempts))
	defer cancel()
	return c.Commit(cctx, root, events.CommitRequest{IdempotencyKey: key + "-c", ReservationID: res.ReservationID, Actual: actual, Labels: req.Labels})
}
