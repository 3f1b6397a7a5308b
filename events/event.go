package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Version is the event format version this code writes and reads.
const Version = 1

// Type is an event type (DESIGN §4).
type Type string

// Event types.
const (
	TypeBudgetSet           Type = "budget.set"
	TypeBudgetDeleted       Type = "budget.deleted"
	TypeBudgetAdjusted      Type = "budget.adjusted"
	TypeReservationGranted  Type = "reservation.granted"
	TypeReservationDenied   Type = "reservation.denied"
	TypeReservationCommit   Type = "reservation.committed"
	TypeReservationReleased Type = "reservation.released"
	TypeReservationExtended Type = "reservation.extended"
	TypeReservationExpired  Type = "reservation.expired"
	TypeUsageCharged        Type = "usage.charged"
	TypeThresholdCrossed    Type = "budget.threshold_crossed"
	TypePartitionClaimed    Type = "partition.claimed"
)

// Types lists every event type.
var Types = []Type{TypeBudgetSet, TypeBudgetDeleted, TypeBudgetAdjusted, TypeReservationGranted,
	TypeReservationDenied, TypeReservationCommit, TypeReservationReleased, TypeReservationExtended,
	TypeReservationExpired, TypeUsageCharged, TypeThresholdCrossed, TypePartitionClaimed}

// Event is one immutable ledger entry: the envelope and its typed data.
type Event struct {
	V         int       `json:"v"`
	ID        string    `json:"id"`
	Type      Type      `json:"type"`
	Partition int       `json:"partition"`
	At        time.Time `json:"at"`
	Root      string    `json:"root"`
	Prev      string    `json:"prev"`
	Data      Data      `json:"data"`
}

// Data is the typed payload of an event; its Type names it. It is a
// pointer to one of the types below (their EventType methods have pointer
// receivers, so a value does not satisfy Data): the decision loop fills
// the data of its most frequent events in place instead of allocating a
// copy for each, and Apply and the projectors read it without copying.
// Data is not modified once its event is built.
type Data interface {
	EventType() Type
}

// Mutation is the part every request-driven event carries: what a retry of
// the same request needs to find and recognise the original.
type Mutation struct {
	IdempotencyKey string `json:"idempotency_key"`
	// RequestHash is the hex SHA-256 (first 16 bytes) of the canonical
	// request, so a retry with other content is an IDEMPOTENCY_CONFLICT even
	// after a restart.
	RequestHash string `json:"request_hash"`
}

// InstanceView is a budget instance's balances as answers and events show them.
type InstanceView struct {
	Budget    string       `json:"budget"`
	Pattern   string       `json:"pattern"`
	Scope     string       `json:"scope"`
	Period    string       `json:"period"`
	PeriodEnd *time.Time   `json:"period_end,omitempty"`
	Mode      Mode         `json:"mode"`
	Units     UnitBalances `json:"units"`
}

// UnitBalance is one unit of an instance.
type UnitBalance struct {
	Limit     Amount `json:"limit"`
	Spent     Amount `json:"spent"`
	Reserved  Amount `json:"reserved"`
	Remaining Signed `json:"remaining"`
}

// Denial says which instance refused a reserve and why.
type Denial struct {
	Code      DenialCode `json:"code"`
	Budget    string     `json:"budget"`
	Pattern   string     `json:"pattern"`
	Scope     string     `json:"scope"`
	Period    string     `json:"period"`
	Unit      string     `json:"unit"`
	Requested Amount     `json:"requested"`
	Available Amount     `json:"available"`
}

// DenialCode is the closed set of reasons for a denial.
type DenialCode string

// Denial codes.
const (
	DenialBudgetExhausted DenialCode = "BUDGET_EXHAUSTED"
	DenialPriorityFloor   DenialCode = "PRIORITY_FLOOR"
)

// ShadowDenial is what a shadow instance would have denied.
type ShadowDenial struct {
	Budget    string `json:"budget"`
	Pattern   string `json:"pattern"`
	Scope     string `json:"scope"`
	Period    string `json:"period"`
	Unit      string `json:"unit"`
	Requested Amount `json:"requested"`
	Available Amount `json:"available"`
	Overage   Amount `json:"overage"`
}

// OverLimit flags an instance a commit or charge drove above its limit.
type OverLimit struct {
	Budget  string `json:"budget"`
	Pattern string `json:"pattern"`
	Scope   string `json:"scope"`
	Period  string `json:"period"`
	Unit    string `json:"unit"`
	Over    Amount `json:"over"`
}

// BudgetSet is the data of budget.set.
type BudgetSet struct {
	Mutation
	Budget Budget `json:"budget"`
}

// BudgetDeleted is the data of budget.deleted.
type BudgetDeleted struct {
	Mutation
	Scope string `json:"scope"`
	Name  string `json:"name"`
}

// BudgetAdjusted is the data of budget.adjusted.
type BudgetAdjusted struct {
	Mutation
	Budget   string        `json:"budget"`
	Pattern  string        `json:"pattern"`
	Scope    string        `json:"scope"`
	Period   string        `json:"period"`
	Delta    SignedAmounts `json:"delta"`
	Reason   string        `json:"reason"`
	Instance InstanceView  `json:"instance"`
}

// ReservationGranted is the data of reservation.granted.
type ReservationGranted struct {
	Mutation
	ReservationID string         `json:"reservation_id"`
	Scope         string         `json:"scope"`
	Amounts       Amounts        `json:"amounts"`
	Priority      Priority       `json:"priority"`
	ExpiresAt     time.Time      `json:"expires_at"`
	Option        int            `json:"option"`
	Label         string         `json:"label"`
	Degraded      bool           `json:"degraded"`
	Labels        Labels         `json:"labels,omitempty"`
	Instances     []InstanceView `json:"instances"`
	ShadowDenials []ShadowDenial `json:"shadow_denials"`
}

// ReservationDenied is the data of reservation.denied.
type ReservationDenied struct {
	Mutation
	Scope     string         `json:"scope"`
	Options   Options        `json:"options"`
	Priority  Priority       `json:"priority"`
	Labels    Labels         `json:"labels,omitempty"`
	Denial    Denial         `json:"denial"`
	Instances []InstanceView `json:"instances"`
}

// ReservationCommitted is the data of reservation.committed.
type ReservationCommitted struct {
	Mutation
	ReservationID string         `json:"reservation_id"`
	Scope         string         `json:"scope"`
	Charged       Amounts        `json:"charged"`
	Released      Amounts        `json:"released"`
	Overage       Amounts        `json:"overage"`
	Late          bool           `json:"late"`
	Labels        Labels         `json:"labels,omitempty"`
	OverLimit     []OverLimit    `json:"over_limit,omitempty"`
	Instances     []InstanceView `json:"instances"`
}

// ReservationReleased is the data of reservation.released.
type ReservationReleased struct {
	Mutation
	ReservationID  string         `json:"reservation_id"`
	Scope          string         `json:"scope"`
	Released       Amounts        `json:"released"`
	AlreadyExpired bool           `json:"already_expired"`
	Instances      []InstanceView `json:"instances"`
}

// ReservationExtended is the data of reservation.extended.
type ReservationExtended struct {
	Mutation
	ReservationID string    `json:"reservation_id"`
	Scope         string    `json:"scope"`
	ExpiresAt     time.Time `json:"expires_at"`
}

// ReservationExpired is the data of reservation.expired, appended by the
// enforcer itself.
type ReservationExpired struct {
	ReservationID string         `json:"reservation_id"`
	Scope         string         `json:"scope"`
	Released      Amounts        `json:"released"`
	Instances     []InstanceView `json:"instances"`
}

// UsageCharged is the data of usage.charged.
type UsageCharged struct {
	Mutation
	Scope     string         `json:"scope"`
	Amounts   Amounts        `json:"amounts"`
	Labels    Labels         `json:"labels,omitempty"`
	OverLimit []OverLimit    `json:"over_limit,omitempty"`
	Instances []InstanceView `json:"instances"`
}

// ThresholdKindDenied is the Threshold of an alert for a first denial.
const ThresholdKindDenied = "denied"

// ThresholdCrossed is the data of budget.threshold_crossed.
type ThresholdCrossed struct {
	Budget    string `json:"budget"`
	Pattern   string `json:"pattern"`
	Scope     string `json:"scope"`
	Period    string `json:"period"`
	Mode      Mode   `json:"mode"`
	Unit      string `json:"unit"`
	Threshold string `json:"threshold"` // a fraction of the limit, or "denied"
	Limit     Amount `json:"limit"`
	Spent     Amount `json:"spent"`
	Reserved  Amount `json:"reserved"`
}

// PartitionClaimed is the data of partition.claimed.
type PartitionClaimed struct {
	Owner string `json:"owner"`
	Epoch uint64 `json:"epoch"`
}

// EventType implementations.
func (*BudgetSet) EventType() Type            { return TypeBudgetSet }
func (*BudgetDeleted) EventType() Type        { return TypeBudgetDeleted }
func (*BudgetAdjusted) EventType() Type       { return TypeBudgetAdjusted }
func (*ReservationGranted) EventType() Type   { return TypeReservationGranted }
func (*ReservationDenied) EventType() Type    { return TypeReservationDenied }
func (*ReservationCommitted) EventType() Type { return TypeReservationCommit }
func (*ReservationReleased) EventType() Type  { return TypeReservationReleased }
func (*ReservationExtended) EventType() Type  { return TypeReservationExtended }
func (*ReservationExpired) EventType() Type   { return TypeReservationExpired }
func (*UsageCharged) EventType() Type         { return TypeUsageCharged }
func (*ThresholdCrossed) EventType() Type     { return TypeThresholdCrossed }
func (*PartitionClaimed) EventType() Type     { return TypePartitionClaimed }

func newData(t Type) (Data, error) {
	switch t {
	case TypeBudgetSet:
		return &BudgetSet{}, nil
	case TypeBudgetDeleted:
		return &BudgetDeleted{}, nil
	case TypeBudgetAdjusted:
		return &BudgetAdjusted{}, nil
	case TypeReservationGranted:
		return &ReservationGranted{}, nil
	case TypeReservationDenied:
		return &ReservationDenied{}, nil
	case TypeReservationCommit:
		return &ReservationCommitted{}, nil
	case TypeReservationReleased:
		return &ReservationReleased{}, nil
	case TypeReservationExtended:
		return &ReservationExtended{}, nil
	case TypeReservationExpired:
		return &ReservationExpired{}, nil
	case TypeUsageCharged:
		return &UsageCharged{}, nil
	case TypeThresholdCrossed:
		return &ThresholdCrossed{}, nil
	case TypePartitionClaimed:
		return &PartitionClaimed{}, nil
	}
	return nil, fmt.Errorf("unknown event type %q", t)
}

// ErrVersion is returned for an event of a version this code cannot read:
// replay must stop rather than guess.
var ErrVersion = errors.New("unsupported event version")

// Encode renders an event as the bytes stored in the stream.
func Encode(ev *Event) ([]byte, error) {
	raw, _, err := EncodeViews(ev)
	return raw, err
}

// EncodeViews is Encode that also returns the encoding of the event's
// instance views, a subslice of its bytes, for AppendResultAnswerViews to
// copy into the answer the event stands for. views is nil for an event
// without one list of views, and for one encoding/json rendered.
func EncodeViews(ev *Event) (raw, views []byte, err error) {
	if ev.Data == nil || ev.Data.EventType() != ev.Type {
		return nil, nil, fmt.Errorf("events: data of %q does not match type %q", typeOf(ev.Data), ev.Type)
	}
	e := *ev
	e.At = e.At.UTC()
	if b, views, ok := encodeEvent(&e); ok {
		return b, views, nil
	}
	// What the hand-written encoder leaves to encoding/json (encode_fast.go),
	// json.Marshal writes or refuses. (A copy, so e itself does not escape.)
	fallback := e
	raw, err = json.Marshal(&fallback)
	return raw, nil, err
}

func typeOf(d Data) Type {
	if d == nil {
		return ""
	}
	return d.EventType()
}

// Decode parses stored event bytes strictly: unknown fields, unknown types
// and unknown versions are errors.
func Decode(b []byte) (Event, error) { return decode(b, nil) }

// A Decoder decodes events as Decode does, sharing the strings it reads
// (budget names, scopes, periods, units…) across the events it decodes: in
// a long run of one partition's events most of them repeat. The values are
// those Decode gives. A Decoder is not safe for concurrent use; its zero
// value is ready.
type Decoder struct{ strs stringTable }

// Decode decodes one event (see the package function Decode).
func (d *Decoder) Decode(b []byte) (Event, error) { return decode(b, &d.strs) }

// decode is Decode, sharing strings through shared when it is not nil.
func decode(b []byte, shared *stringTable) (Event, error) {
	if ev, ok := decodeFast(b, shared); ok {
		return ev, nil
	}
	return decodeStrict(b)
}

// decodeFast decodes an event in the exact form Encode writes; on anything
// else it reports false and decodeStrict gives the verdict and the message.
func decodeFast(b []byte, shared *stringTable) (Event, bool) {
	var (
		v    *int
		ev   Event
		typ  string
		data json.RawMessage
	)
	if !fastEnvelope(b, &v, &ev.ID, &typ, &ev.Partition, &ev.At, &ev.Root, &ev.Prev, &data) || *v != Version {
		return Event{}, false
	}
	ev.V, ev.Type = *v, Type(typ)
	// The hot types' data in the exact form Encode writes (decode_fast.go);
	// anything else goes through encoding/json.
	d, ok := decodeData(ev.Type, data, shared)
	if !ok {
		p, err := newData(ev.Type)
		if err != nil || strictUnmarshal(data, p) != nil {
			return Event{}, false
		}
		d = p
	}
	if _, off := ev.At.Zone(); off != 0 || !validPrev(ev.Prev) {
		return Event{}, false
	}
	ev.At = ev.At.UTC()
	ev.Data = d
	return ev, true
}

func decodeStrict(b []byte) (Event, error) {
	var env struct {
		V         *int            `json:"v"`
		ID        string          `json:"id"`
		Type      Type            `json:"type"`
		Partition int             `json:"partition"`
		At        time.Time       `json:"at"`
		Root      string          `json:"root"`
		Prev      string          `json:"prev"`
		Data      json.RawMessage `json:"data"`
	}
	if err := DecodeStrict(b, &env); err != nil {
		return Event{}, fmt.Errorf("event: %w", err)
	}
	if env.V == nil {
		return Event{}, errors.New("event: v: missing version")
	}
	if *env.V != Version {
		return Event{}, fmt.Errorf("event %s: %w %d (this build reads %d)", env.ID, ErrVersion, *env.V, Version)
	}
	d, err := newData(env.Type)
	if err != nil {
		return Event{}, fmt.Errorf("event %s: %w", env.ID, err)
	}
	if len(env.Data) == 0 {
		return Event{}, fmt.Errorf("event %s: data: missing", env.ID)
	}
	if err := strictUnmarshal(env.Data, d); err != nil {
		return Event{}, fmt.Errorf("event %s: data: %w", env.ID, err)
	}
	// Encode writes at in UTC; another offset would not survive re-encoding
	// (and can move the year out of RFC 3339's range).
	if _, off := env.At.Zone(); off != 0 {
		return Event{}, fmt.Errorf("event %s: at: %s is not in UTC", env.ID, env.At.Format(time.RFC3339Nano))
	}
	if !validPrev(env.Prev) {
		return Event{}, fmt.Errorf("event %s: prev: not a SHA-256 hex digest", env.ID)
	}
	return Event{V: *env.V, ID: env.ID, Type: env.Type, Partition: env.Partition, At: env.At.UTC(),
		Root: env.Root, Prev: env.Prev, Data: d}, nil
}

// validPrev reports whether prev is "" or what Hash returns: 64 lowercase
// hex digits. Auditors compare it byte for byte with the hash of the
// previous message, so an upper-case spelling is not the same link.
func validPrev(prev string) bool {
	if prev == "" {
		return true
	}
	if len(prev) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(prev); i++ {
		if c := prev[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// strictUnmarshal is json.Unmarshal with DisallowUnknownFields and no trailing data.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	// More() lets a stray '}' or ']' through: require that nothing but
	// white space follows the value.
	if len(bytes.TrimSpace(b[dec.InputOffset():])) != 0 {
		return errors.New("trailing data")
	}
	return nil
}

// Hash returns the chain link for a stored message: lowercase hex SHA-256.
func Hash(msg []byte) string {
	sum := sha256.Sum256(msg)
	return hex.EncodeToString(sum[:])
}

// MutationOf returns the idempotency part of a request-driven event.
func MutationOf(d Data) (Mutation, bool) {
	switch v := d.(type) {
	case *BudgetSet:
		return v.Mutation, true
	case *BudgetDeleted:
		return v.Mutation, true
	case *BudgetAdjusted:
		return v.Mutation, true
	case *ReservationGranted:
		return v.Mutation, true
	case *ReservationDenied:
		return v.Mutation, true
	case *ReservationCommitted:
		return v.Mutation, true
	case *ReservationReleased:
		return v.Mutation, true
	case *ReservationExtended:
		return v.Mutation, true
	case *UsageCharged:
		return v.Mutation, true
	}
	return Mutation{}, false
}
