package events

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Code is the closed set of error codes of the wire protocol (DESIGN §3).
type Code string

// Error codes.
const (
	CodeInvalidRequest      Code = "INVALID_REQUEST"
	CodeForbidden           Code = "FORBIDDEN"
	CodeNotFound            Code = "NOT_FOUND"
	CodeReservationClosed   Code = "RESERVATION_CLOSED"
	CodeIdempotencyConflict Code = "IDEMPOTENCY_CONFLICT"
	CodeUnavailable         Code = "UNAVAILABLE"
	CodeTooLarge            Code = "TOO_LARGE"
	CodeInternal            Code = "INTERNAL"
)

// Error is an error answer. It is also a Go error, so clients can
// errors.As it.
type Error struct {
	Code    Code           `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Errorf builds an error answer.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid wraps a validation error as INVALID_REQUEST, keeping its path.
func Invalid(err error) *Error {
	e := &Error{Code: CodeInvalidRequest, Message: err.Error()}
	var fe *FieldError
	if ok := asFieldError(err, &fe); ok && fe.Path != "" {
		e.Details = map[string]any{"field": fe.Path}
	}
	return e
}

// Answer is the envelope of every reply: exactly one of Result and Error.
type Answer struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// EventRef locates the event that carries a decision.
type EventRef struct {
	Partition int    `json:"partition"`
	Seq       uint64 `json:"seq"`
}

// Decision values of a reserve answer.
const (
	DecisionGranted = "granted"
	DecisionDenied  = "denied"
)

// ReserveResult answers reserve (and decide, without id and event).
type ReserveResult struct {
	Decision      string         `json:"decision"`
	ReservationID string         `json:"reservation_id,omitempty"`
	ExpiresAt     *time.Time     `json:"expires_at,omitempty"`
	Option        int            `json:"option"`
	Label         string         `json:"label"`
	Degraded      bool           `json:"degraded"`
	Instances     []InstanceView `json:"instances"`
	Denial        *Denial        `json:"denial,omitempty"`
	ShadowDenials []ShadowDenial `json:"shadow_denials"`
	Event         *EventRef      `json:"event,omitempty"`
}

// CommitResult answers commit.
type CommitResult struct {
	ReservationID string         `json:"reservation_id"`
	Charged       Amounts        `json:"charged"`
	Released      Amounts        `json:"released"`
	Overage       Amounts        `json:"overage"`
	Late          bool           `json:"late"`
	OverLimit     []OverLimit    `json:"over_limit,omitempty"`
	Instances     []InstanceView `json:"instances"`
	Event         *EventRef      `json:"event"`
}

// ReleaseResult answers release.
type ReleaseResult struct {
	ReservationID  string         `json:"reservation_id"`
	Released       Amounts        `json:"released"`
	AlreadyExpired bool           `json:"already_expired"`
	Instances      []InstanceView `json:"instances"`
	Event          *EventRef      `json:"event"`
}

// ExtendResult answers extend.
type ExtendResult struct {
	ReservationID string    `json:"reservation_id"`
	ExpiresAt     time.Time `json:"expires_at"`
	Event         *EventRef `json:"event"`
}

// ChargeResult answers charge.
type ChargeResult struct {
	Scope     string         `json:"scope"`
	Charged   Amounts        `json:"charged"`
	OverLimit []OverLimit    `json:"over_limit,omitempty"`
	Instances []InstanceView `json:"instances"`
	Event     *EventRef      `json:"event"`
}

// BalanceResult answers balance.
type BalanceResult struct {
	Scope     string         `json:"scope"`
	Instances []InstanceView `json:"instances"`
}

// BudgetResult answers budget-set and budget-get.
type BudgetResult struct {
	Budget Budget    `json:"budget"`
	Event  *EventRef `json:"event,omitempty"`
}

// BudgetListResult answers budget-list.
type BudgetListResult struct {
	Budgets []Budget `json:"budgets"`
}

// BudgetDeleteResult answers budget-delete.
type BudgetDeleteResult struct {
	Scope string    `json:"scope"`
	Name  string    `json:"name"`
	Event *EventRef `json:"event"`
}

// BudgetAdjustResult answers budget-adjust.
type BudgetAdjustResult struct {
	Budget   string        `json:"budget"`
	Scope    string        `json:"scope"`
	Period   string        `json:"period"`
	Delta    SignedAmounts `json:"delta"`
	Reason   string        `json:"reason"`
	Instance InstanceView  `json:"instance"`
	Event    *EventRef     `json:"event"`
}

// ReservationStatus is the state of a reservation.
type ReservationStatus string

// Reservation states.
const (
	StatusOpen      ReservationStatus = "open"
	StatusCommitted ReservationStatus = "committed"
	StatusReleased  ReservationStatus = "released"
	StatusExpired   ReservationStatus = "expired"
)

// ReservationView answers reservation-get.
type ReservationView struct {
	ReservationID string            `json:"reservation_id"`
	Scope         string            `json:"scope"`
	Status        ReservationStatus `json:"status"`
	Amounts       Amounts           `json:"amounts"`
	Priority      Priority          `json:"priority"`
	ExpiresAt     time.Time         `json:"expires_at"`
	Label         string            `json:"label"`
	Option        int               `json:"option"`
	Labels        Labels            `json:"labels,omitempty"`
}

// ResultOf builds the answer a request-driven event stands for. Live
// answers and answers to retries are both built here, so a retry gets the
// same answer as the original.
func ResultOf(ev Event, ref EventRef) (any, bool) {
	r := &ref
	switch d := ev.Data.(type) {
	case *ReservationGranted:
		exp := d.ExpiresAt
		return ReserveResult{Decision: DecisionGranted, ReservationID: d.ReservationID, ExpiresAt: &exp,
			Option: d.Option, Label: d.Label, Degraded: d.Degraded, Instances: d.Instances,
			ShadowDenials: nonNil(d.ShadowDenials), Event: r}, true
	case *ReservationDenied:
		den := d.Denial
		label := "" // the first option's; guarded because the event may come from a stream
		if len(d.Options) > 0 {
			label = d.Options[0].Label
		}
		return ReserveResult{Decision: DecisionDenied, Instances: d.Instances, Denial: &den,
			Label: label, ShadowDenials: []ShadowDenial{}, Event: r}, true
	case *ReservationCommitted:
		return CommitResult{ReservationID: d.ReservationID, Charged: d.Charged, Released: d.Released,
			Overage: d.Overage, Late: d.Late, OverLimit: d.OverLimit, Instances: d.Instances, Event: r}, true
	case *ReservationReleased:
		return ReleaseResult{ReservationID: d.ReservationID, Released: d.Released,
			AlreadyExpired: d.AlreadyExpired, Instances: d.Instances, Event: r}, true
	case *ReservationExtended:
		return ExtendResult{ReservationID: d.ReservationID, ExpiresAt: d.ExpiresAt, Event: r}, true
	case *UsageCharged:
		return ChargeResult{Scope: d.Scope, Charged: d.Amounts, OverLimit: d.OverLimit, Instances: d.Instances, Event: r}, true
	case *BudgetSet:
		return BudgetResult{Budget: d.Budget, Event: r}, true
	case *BudgetDeleted:
		return BudgetDeleteResult{Scope: d.Scope, Name: d.Name, Event: r}, true
	case *BudgetAdjusted:
		return BudgetAdjustResult{Budget: d.Budget, Scope: d.Scope, Period: d.Period, Delta: d.Delta,
			Reason: d.Reason, Instance: d.Instance, Event: r}, true
	}
	return nil, false
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// RequestHash is the idempotency fingerprint of a parsed request: the hash
// of its canonical encoding, so key order, white space and amount spelling
// ("0.50" and "0.5") do not matter, while an omitted field differs from an
// explicit default.
//
// The canonical encoding is what json.Marshal writes; the hand-written
// encoder (encode_fast.go) writes the same bytes for the request types, so
// fingerprints stored in events keep matching.
func RequestHash(op Op, req any) string {
	w := getWriter()
	defer putWriter(w)
	w.b = append(append(w.b, op...), 0)
	b, ok := appendRequest(w.b, req)
	if !ok {
		body, err := json.Marshal(req)
		if err != nil {
			panic(fmt.Sprintf("events: canonical request encoding: %v", err))
		}
		b = append(b, body...)
	}
	w.b = b
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// ResultAnswer renders the answer {"result":…} for a result value — the
// bytes json.Marshal(Answer{Result: …}) writes — with the hand-written
// encoder where it covers the value and json.Marshal otherwise. It panics
// if the value cannot be encoded, which no result type allows.
func ResultAnswer(v any) []byte {
	return AppendResultAnswer(make([]byte, 0, 2048), v)
}

// AppendResultAnswer appends ResultAnswer(v) to b.
func AppendResultAnswer(b []byte, v any) []byte { return AppendResultAnswerViews(b, v, nil) }

// AppendResultAnswerViews is AppendResultAnswer for the result ResultOf
// gives for an event, with views the event's encoded instance views from
// EncodeViews (or nil): the answer copies them rather than rendering the
// same list again.
func AppendResultAnswerViews(b []byte, v any, views []byte) []byte {
	b = append(b, `{"result":`...)
	if r, ok := appendResult(b, v, views); ok {
		return append(r, '}')
	}
	r, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("events: encode answer: %v", err))
	}
	b = append(b, r...)
	return append(b, '}')
}
