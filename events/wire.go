package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"
)

// Request limits (DESIGN §6).
const (
	MaxRequestBytes   = 64 << 10
	MaxUnits          = 16
	MaxOptions        = 8
	MaxLabels         = 16
	maxLabelKeyLen    = 64
	maxLabelValueLen  = 256
	maxReasonLen      = 1024
	MaxThresholds     = 16
	MinTTL            = time.Second
	MaxTTL            = 24 * time.Hour
	DefaultTTL        = time.Minute
	maxOptionLabelLen = 64
)

// Op is a request operation: the last token of the request subject.
type Op string

// Operations (DESIGN §3).
const (
	OpReserve        Op = "reserve"
	OpCommit         Op = "commit"
	OpRelease        Op = "release"
	OpExtend         Op = "extend"
	OpCharge         Op = "charge"
	OpDecide         Op = "decide"
	OpBalance        Op = "balance"
	OpReservationGet Op = "reservation-get"
	OpBudgetSet      Op = "budget-set"
	OpBudgetGet      Op = "budget-get"
	OpBudgetList     Op = "budget-list"
	OpBudgetDelete   Op = "budget-delete"
	OpBudgetAdjust   Op = "budget-adjust"
)

// Ops lists every operation.
var Ops = []Op{OpReserve, OpCommit, OpRelease, OpExtend, OpCharge, OpDecide, OpBalance,
	OpReservationGet, OpBudgetSet, OpBudgetGet, OpBudgetList, OpBudgetDelete, OpBudgetAdjust}

// Mutating reports whether op appends events and carries an idempotency key.
func (op Op) Mutating() bool {
	switch op {
	case OpReserve, OpCommit, OpRelease, OpExtend, OpCharge, OpBudgetSet, OpBudgetDelete, OpBudgetAdjust:
		return true
	}
	return false
}

// Valid reports whether op is known.
func (op Op) Valid() bool {
	for _, o := range Ops {
		if o == op {
			return true
		}
	}
	return false
}

// Priority of a reservation.
type Priority string

// Priorities, highest first.
const (
	PriorityCritical Priority = "critical"
	PriorityHigh     Priority = "high"
	PriorityNormal   Priority = "normal"
	PriorityLow      Priority = "low"
	PriorityBulk     Priority = "bulk"
)

// Valid reports whether p is known.
func (p Priority) Valid() bool {
	switch p {
	case PriorityCritical, PriorityHigh, PriorityNormal, PriorityLow, PriorityBulk:
		return true
	}
	return false
}

// Mode of a budget.
type Mode string

// Modes.
const (
	ModeEnforce Mode = "enforce"
	ModeShadow  Mode = "shadow"
)

// Labels are free-form request annotations (model, agent, …).
type Labels map[string]string

// Validate checks label count and grammar.
func (l Labels) Validate() error {
	if len(l) > MaxLabels {
		return fmt.Errorf("more than %d labels", MaxLabels)
	}
	for _, k := range sortedKeys(l) {
		if k == "" || len(k) > maxLabelKeyLen {
			return &FieldError{Path: k, Err: errors.New("label names are 1–64 characters")}
		}
		for i := 0; i < len(k); i++ {
			if c := k[i]; !idChar(c) && c != '.' {
				return &FieldError{Path: k, Err: fmt.Errorf("character %q not allowed in a label name (use [A-Za-z0-9_.-])", rune(c))}
			}
		}
		v := l[k]
		if len(v) > maxLabelValueLen {
			return &FieldError{Path: k, Err: errors.New("label value longer than 256 bytes")}
		}
		if !utf8.ValidString(v) {
			return &FieldError{Path: k, Err: errors.New("label value is not valid UTF-8")}
		}
	}
	return nil
}

func validateAmounts(m Amounts) error {
	if len(m) == 0 {
		return errors.New("at least one unit is required")
	}
	if len(m) > MaxUnits {
		return fmt.Errorf("more than %d units", MaxUnits)
	}
	return nil
}

func validateIdemKey(k string) error {
	if err := ValidateKey(k); err != nil {
		return at("idempotency_key", err)
	}
	return nil
}

func validateTTL(ms int64) error {
	if ms < MinTTL.Milliseconds() || ms > MaxTTL.Milliseconds() {
		return at("ttl_ms", fmt.Errorf("%d out of range [%d, %d]", ms, MinTTL.Milliseconds(), MaxTTL.Milliseconds()))
	}
	return nil
}

// Option is one degradation alternative of a reserve.
type Option struct {
	Label   string  `json:"label,omitempty"`
	Amounts Amounts `json:"amounts"`
}

// UnmarshalJSON decodes strictly.
func (o *Option) UnmarshalJSON(b []byte) error {
	raw, err := decodeObject(b)
	if err != nil {
		return err
	}
	type plain Option
	var p plain
	if err := decodeFieldsInto(raw, &p); err != nil {
		return err
	}
	*o = Option(p)
	return nil
}

// Options is the ordered list of a reserve's alternatives.
type Options []Option

// MarshalJSON renders nil as [], not null, which UnmarshalJSON would refuse.
func (os Options) MarshalJSON() ([]byte, error) {
	if os == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]Option(os))
}

// UnmarshalJSON decodes strictly, naming the index in errors.
func (os *Options) UnmarshalJSON(b []byte) error {
	raw, err := decodeArray(b)
	if err != nil {
		return err
	}
	out := make(Options, len(raw))
	for i, r := range raw {
		if string(r) == "null" {
			return &FieldError{Path: "[" + itoa(i) + "]", Err: errors.New("null is not allowed")}
		}
		if err := out[i].UnmarshalJSON(r); err != nil {
			return at("["+itoa(i)+"]", err)
		}
	}
	*os = out
	return nil
}

// ReserveRequest asks for a reservation (and is the body of decide).
type ReserveRequest struct {
	IdempotencyKey string    `json:"idempotency_key,omitempty"`
	Scope          string    `json:"scope"`
	Amounts        Amounts   `json:"amounts,omitempty"`
	Options        Options   `json:"options,omitempty"`
	Priority       *Priority `json:"priority,omitempty"`
	TTLMS          *int64    `json:"ttl_ms,omitempty"`
	Labels         Labels    `json:"labels,omitempty"`
}

// Validate checks a reserve (keyRequired) or decide request.
func (r *ReserveRequest) Validate(keyRequired bool) error {
	if keyRequired || r.IdempotencyKey != "" {
		if err := validateIdemKey(r.IdempotencyKey); err != nil {
			return err
		}
	}
	if err := ValidateScope(r.Scope); err != nil {
		return at("scope", err)
	}
	switch {
	case r.Amounts != nil && r.Options != nil:
		return &FieldError{Path: "options", Err: errors.New("give either amounts or options, not both")}
	case r.Amounts == nil && r.Options == nil:
		return &FieldError{Path: "amounts", Err: errors.New("required (or options)")}
	case r.Amounts != nil:
		if err := validateAmounts(r.Amounts); err != nil {
			return at("amounts", err)
		}
	default:
		if len(r.Options) == 0 || len(r.Options) > MaxOptions {
			return at("options", fmt.Errorf("1 to %d options are required", MaxOptions))
		}
		for i, o := range r.Options {
			if len(o.Label) > maxOptionLabelLen || !utf8.ValidString(o.Label) {
				return at(fmt.Sprintf("options[%d].label", i), errors.New("labels are at most 64 bytes of UTF-8"))
			}
			if err := validateAmounts(o.Amounts); err != nil {
				return at(fmt.Sprintf("options[%d].amounts", i), err)
			}
		}
	}
	if r.Priority != nil && !r.Priority.Valid() {
		return at("priority", fmt.Errorf("unknown priority %q (one of critical high normal low bulk)", *r.Priority))
	}
	if r.TTLMS != nil {
		if err := validateTTL(*r.TTLMS); err != nil {
			return err
		}
	}
	return at("labels", r.Labels.Validate())
}

// EffectiveOptions returns the options to try in order: the amounts as a
// single unlabeled option, or the options.
func (r *ReserveRequest) EffectiveOptions() Options {
	if r.Options != nil {
		return r.Options
	}
	return Options{{Amounts: r.Amounts}}
}

// EffectivePriority returns the priority, normal by default.
func (r *ReserveRequest) EffectivePriority() Priority {
	if r.Priority == nil {
		return PriorityNormal
	}
	return *r.Priority
}

// EffectiveTTL returns the TTL, 60 s by default.
func (r *ReserveRequest) EffectiveTTL() time.Duration {
	if r.TTLMS == nil {
		return DefaultTTL
	}
	return time.Duration(*r.TTLMS) * time.Millisecond
}

// CommitRequest charges the actual cost of a reservation.
type CommitRequest struct {
	IdempotencyKey string  `json:"idempotency_key"`
	ReservationID  string  `json:"reservation_id"`
	Actual         Amounts `json:"actual"`
	Labels         Labels  `json:"labels,omitempty"`
}

// Validate checks the request.
func (r *CommitRequest) Validate() error {
	if err := validateIdemKey(r.IdempotencyKey); err != nil {
		return err
	}
	if err := validateReservationID(r.ReservationID); err != nil {
		return err
	}
	if r.Actual == nil {
		return &FieldError{Path: "actual", Err: errors.New("required")}
	}
	if len(r.Actual) > MaxUnits {
		return at("actual", fmt.Errorf("more than %d units", MaxUnits))
	}
	return at("labels", r.Labels.Validate())
}

func validateReservationID(id string) error {
	if id == "" {
		return &FieldError{Path: "reservation_id", Err: errors.New("required")}
	}
	if len(id) > maxKeyLen {
		return &FieldError{Path: "reservation_id", Err: errors.New("longer than 128")}
	}
	if err := ValidateKey(id); err != nil {
		return at("reservation_id", err)
	}
	return nil
}

// ReleaseRequest frees a reservation.
type ReleaseRequest struct {
	IdempotencyKey string `json:"idempotency_key"`
	ReservationID  string `json:"reservation_id"`
}

// Validate checks the request.
func (r *ReleaseRequest) Validate() error {
	if err := validateIdemKey(r.IdempotencyKey); err != nil {
		return err
	}
	return validateReservationID(r.ReservationID)
}

// ExtendRequest moves a reservation's expiry to now + ttl.
type ExtendRequest struct {
	IdempotencyKey string `json:"idempotency_key"`
	ReservationID  string `json:"reservation_id"`
	TTLMS          *int64 `json:"ttl_ms"`
}

// Validate checks the request.
func (r *ExtendRequest) Validate() error {
	if err := validateIdemKey(r.IdempotencyKey); err != nil {
		return err
	}
	if err := validateReservationID(r.ReservationID); err != nil {
		return err
	}
	if r.TTLMS == nil {
		return &FieldError{Path: "ttl_ms", Err: errors.New("required")}
	}
	return validateTTL(*r.TTLMS)
}

// ChargeRequest records usage without a reservation.
type ChargeRequest struct {
	IdempotencyKey string  `json:"idempotency_key"`
	Scope          string  `json:"scope"`
	Amounts        Amounts `json:"amounts"`
	Labels         Labels  `json:"labels,omitempty"`
}

// Validate checks the request.
func (r *ChargeRequest) Validate() error {
	if err := validateIdemKey(r.IdempotencyKey); err != nil {
		return err
	}
	if err := ValidateScope(r.Scope); err != nil {
		return at("scope", err)
	}
	if err := validateAmounts(r.Amounts); err != nil {
		return at("amounts", err)
	}
	return at("labels", r.Labels.Validate())
}

// BalanceRequest reads the instances that apply to a scope.
type BalanceRequest struct {
	Scope string `json:"scope"`
}

// Validate checks the request.
func (r *BalanceRequest) Validate() error {
	if err := ValidateScope(r.Scope); err != nil {
		return at("scope", err)
	}
	return nil
}

// ReservationGetRequest reads one reservation.
type ReservationGetRequest struct {
	ReservationID string `json:"reservation_id"`
}

// Validate checks the request.
func (r *ReservationGetRequest) Validate() error { return validateReservationID(r.ReservationID) }

// BudgetSetRequest creates or replaces a budget.
type BudgetSetRequest struct {
	IdempotencyKey  string              `json:"idempotency_key"`
	Scope           string              `json:"scope"`
	Name            string              `json:"name"`
	Limits          Amounts             `json:"limits"`
	Period          *Period             `json:"period,omitempty"`
	Timezone        *string             `json:"timezone,omitempty"`
	Mode            *Mode               `json:"mode,omitempty"`
	PriorityFloors  map[Priority]Amount `json:"priority_floors,omitempty"`
	AlertThresholds *[]Amount           `json:"alert_thresholds,omitempty"`
}

// DefaultAlertThresholds are 50%, 80% and 100% of the limit.
var DefaultAlertThresholds = []Amount{MustAmount("0.5"), MustAmount("0.8"), MustAmount("1")}

var maxThreshold = MustAmount("10")

// Budget is a stored budget definition, defaults filled in.
type Budget struct {
	Scope           string              `json:"scope"`
	Name            string              `json:"name"`
	Limits          Amounts             `json:"limits"`
	Period          Period              `json:"period"`
	Timezone        string              `json:"timezone"`
	Mode            Mode                `json:"mode"`
	PriorityFloors  map[Priority]Amount `json:"priority_floors"`
	AlertThresholds []Amount            `json:"alert_thresholds"`
}

// Budget validates the request and returns the definition it stores.
func (r *BudgetSetRequest) Budget() (Budget, error) {
	if err := validateIdemKey(r.IdempotencyKey); err != nil {
		return Budget{}, err
	}
	b := Budget{Scope: r.Scope, Name: r.Name, Limits: r.Limits, Period: PeriodNone, Timezone: "UTC",
		Mode: ModeEnforce, PriorityFloors: map[Priority]Amount{}, AlertThresholds: DefaultAlertThresholds}
	if r.Period != nil {
		b.Period = *r.Period
	}
	if r.Timezone != nil {
		b.Timezone = *r.Timezone
	}
	if r.Mode != nil {
		b.Mode = *r.Mode
	}
	if r.PriorityFloors != nil {
		b.PriorityFloors = r.PriorityFloors
	}
	if r.AlertThresholds != nil {
		b.AlertThresholds = *r.AlertThresholds
	}
	return b, b.Validate()
}

// Validate checks a budget definition.
func (b *Budget) Validate() error {
	if err := ValidatePattern(b.Scope); err != nil {
		return at("scope", err)
	}
	if err := ValidateKey(b.Name); err != nil {
		return at("name", err)
	}
	if err := validateAmounts(b.Limits); err != nil {
		return at("limits", err)
	}
	if !b.Period.Valid() {
		return at("period", fmt.Errorf("unknown period %q (one of none hourly daily weekly monthly yearly)", b.Period))
	}
	if _, err := LoadLocation(b.Timezone); err != nil {
		return at("timezone", err)
	}
	if b.Mode != ModeEnforce && b.Mode != ModeShadow {
		return at("mode", fmt.Errorf("unknown mode %q (enforce or shadow)", b.Mode))
	}
	for _, p := range sortedKeys(b.PriorityFloors) {
		f := b.PriorityFloors[Priority(p)]
		switch {
		case !Priority(p).Valid():
			return at("priority_floors", &FieldError{Path: p, Err: errors.New("unknown priority")})
		case Priority(p) == PriorityCritical && !f.IsZero():
			return at("priority_floors", &FieldError{Path: p, Err: errors.New("critical is always 0")})
		case !f.InRange():
			return at("priority_floors", &FieldError{Path: p, Err: fmt.Errorf("floor %s has more than %d fractional digits", f, MaxFractionDigits)})
		case f.Cmp(One) > 0:
			return at("priority_floors", &FieldError{Path: p, Err: fmt.Errorf("floor %s above 1", f)})
		}
	}
	if len(b.AlertThresholds) > MaxThresholds {
		return at("alert_thresholds", fmt.Errorf("more than %d thresholds", MaxThresholds))
	}
	for i, t := range b.AlertThresholds {
		if !t.InRange() {
			return at(fmt.Sprintf("alert_thresholds[%d]", i), fmt.Errorf("threshold %s has more than %d fractional digits", t, MaxFractionDigits))
		}
		if t.IsZero() || t.Cmp(maxThreshold) > 0 {
			return at(fmt.Sprintf("alert_thresholds[%d]", i), fmt.Errorf("threshold %s out of range (0, 10]", t))
		}
		if i > 0 && t.Cmp(b.AlertThresholds[i-1]) <= 0 {
			return at(fmt.Sprintf("alert_thresholds[%d]", i), errors.New("thresholds must be strictly increasing"))
		}
	}
	return nil
}

// Floor returns the fraction of the limit that must stay free for p.
func (b *Budget) Floor(p Priority) Amount {
	if p == PriorityCritical {
		return Zero
	}
	return b.PriorityFloors[p]
}

var locations sync.Map // string → *time.Location

// LoadLocation resolves an IANA zone name, cached.
func LoadLocation(name string) (*time.Location, error) {
	if l, ok := locations.Load(name); ok {
		return l.(*time.Location), nil
	}
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("unknown time zone %q (use an IANA name such as Europe/Paris)", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q (use an IANA name such as Europe/Paris)", name)
	}
	locations.Store(name, loc)
	return loc, nil
}

// BudgetRef names one budget.
type BudgetRef struct {
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	Scope          string `json:"scope"`
	Name           string `json:"name"`
}

// Validate checks the reference (keyRequired for budget-delete).
func (r *BudgetRef) Validate(keyRequired bool) error {
	if keyRequired || r.IdempotencyKey != "" {
		if err := validateIdemKey(r.IdempotencyKey); err != nil {
			return err
		}
	}
	if err := ValidatePattern(r.Scope); err != nil {
		return at("scope", err)
	}
	if err := ValidateKey(r.Name); err != nil {
		return at("name", err)
	}
	return nil
}

// BudgetListRequest lists the budgets of the subject's root.
type BudgetListRequest struct{}

// BudgetAdjustRequest tops up or corrects one instance's limit for its
// current period.
type BudgetAdjustRequest struct {
	IdempotencyKey string        `json:"idempotency_key"`
	Scope          string        `json:"scope"`
	Name           string        `json:"name"`
	Delta          SignedAmounts `json:"delta"`
	Reason         string        `json:"reason"`
}

// Validate checks the request.
func (r *BudgetAdjustRequest) Validate() error {
	if err := validateIdemKey(r.IdempotencyKey); err != nil {
		return err
	}
	if err := ValidateScope(r.Scope); err != nil {
		return at("scope", err)
	}
	if err := ValidateKey(r.Name); err != nil {
		return at("name", err)
	}
	if len(r.Delta) == 0 {
		return &FieldError{Path: "delta", Err: errors.New("at least one unit is required")}
	}
	if len(r.Delta) > MaxUnits {
		return at("delta", fmt.Errorf("more than %d units", MaxUnits))
	}
	if r.Reason == "" || len(r.Reason) > maxReasonLen || !utf8.ValidString(r.Reason) {
		return &FieldError{Path: "reason", Err: errors.New("required: 1–1024 bytes of UTF-8")}
	}
	return nil
}
