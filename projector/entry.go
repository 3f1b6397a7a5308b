package projector

import (
	"time"

	"github.com/tallyledger/tally/events"
)

// The values stored under the keys of the package documentation. Each
// carries Seq, the stream sequence of the last event that changed it: the
// entry's own checkpoint. Fields are only ever added.

// EventInfo names an event.
type EventInfo struct {
	Type events.Type `json:"type"`
	ID   string      `json:"id"`
	Seq  uint64      `json:"seq"`
	At   time.Time   `json:"at"`
}

// Held is a unit's spent and reserved.
type Held struct {
	Spent    events.Amount `json:"spent"`
	Reserved events.Amount `json:"reserved"`
}

// Balance is a budget instance's balances (key inst.…).
type Balance struct {
	Partition int `json:"partition"`
	events.InstanceView
	// Adjust is the sum of the instance's budget-adjust deltas by unit.
	Adjust events.SignedAmounts `json:"adjust,omitempty"`
	// Other keeps the balances of units the budget no longer limits, in
	// case a later definition limits them again. Events show only limited
	// units, so what happens to such a unit meanwhile (a commit of a
	// reservation that held it) reaches the view only with the next event
	// that shows the unit again: a known limit of the view.
	Other     map[string]Held `json:"other,omitempty"`
	LastEvent EventInfo       `json:"last_event"`
	Seq       uint64          `json:"seq"`

	stored bool
}

// BudgetEntry is a budget definition (tally_budgets, key budget.…).
type BudgetEntry struct {
	Partition int           `json:"partition"`
	Budget    events.Budget `json:"budget"`
	LastEvent EventInfo     `json:"last_event"`
	Seq       uint64        `json:"seq"`

	stored bool
}

// Shadow is the statistics of a shadow instance (key shadow.…).
type Shadow struct {
	Partition int    `json:"partition"`
	Budget    string `json:"budget"`
	Pattern   string `json:"pattern"`
	Scope     string `json:"scope"`
	Period    string `json:"period"`
	// WouldDeny counts the granted reserves that carried at least one
	// shadow denial of this instance.
	WouldDeny   int64                 `json:"would_deny"`
	FirstDenial *time.Time            `json:"first_denial,omitempty"`
	LastDenial  *time.Time            `json:"last_denial,omitempty"`
	Units       map[string]ShadowUnit `json:"units"`
	Seq         uint64                `json:"seq"`

	stored bool
}

// ShadowUnit is one unit of a shadow instance's statistics.
type ShadowUnit struct {
	// Limit is the unit's limit at the last event.
	Limit events.Amount `json:"limit"`
	// WouldDeny counts the shadow denials of this unit.
	WouldDeny int64 `json:"would_deny"`
	// PeakOverage is the largest spent + reserved − limit seen (0 if the
	// instance never went above its limit).
	PeakOverage events.Amount `json:"peak_overage"`
	// PeakUsage is the largest spent + reserved seen: the limit that would
	// have covered the observed traffic (before priority floors).
	PeakUsage events.Amount `json:"peak_usage"`
}

// Spend is an hourly spend roll-up of a scope (key spend.…).
type Spend struct {
	Partition int           `json:"partition"`
	Hour      time.Time     `json:"hour"`
	Scope     string        `json:"scope"`
	Unit      string        `json:"unit"`
	Model     string        `json:"model"`
	Amount    events.Amount `json:"amount"`
	Seq       uint64        `json:"seq"`

	stored bool
}

// WorkflowSpend is an hourly spend roll-up of a workflow (key wfspend.…);
// Workflow is the id of the scope's workflow segment, "" for scopes
// outside any workflow.
type WorkflowSpend struct {
	Partition int           `json:"partition"`
	Hour      time.Time     `json:"hour"`
	Root      string        `json:"root"`
	Workflow  string        `json:"workflow"`
	Unit      string        `json:"unit"`
	Model     string        `json:"model"`
	Amount    events.Amount `json:"amount"`
	Seq       uint64        `json:"seq"`

	stored bool
}

// Resv remembers the model label of a reservation until it is committed or
// released (or Retention after it expired: a late commit may still come),
// so a commit is rolled up under its reserve's model. Reservations without
// a model label are not stored.
//
// A stored Resv is not deleted by the event that closes it: it is marked
// Closed, and deleted only once the checkpoint has passed that event. A
// replay of the closing event after a cut flush thus still finds the
// model (see the package documentation).
type Resv struct {
	Partition int        `json:"partition"`
	ID        string     `json:"id"`
	Model     string     `json:"model"`
	ExpiredAt *time.Time `json:"expired_at,omitempty"`
	Closed    bool       `json:"closed,omitempty"`
	Seq       uint64     `json:"seq"`

	stored bool
}

// Checkpoint is partition n's progress (key checkpoint.<n>): every event up
// to Seq, stamped At, is reflected in the stored views. Entries may
// already reflect later events, up to AheadSeq, stamped AheadAt, when a
// flush was cut between its entries and its checkpoint: their own Seq says
// so, and AheadFromAt (for Seq 0: the time of the first event) and AheadAt
// bound the hours of the spend roll-ups it may have written.
type Checkpoint struct {
	Partition   int       `json:"partition"`
	Seq         uint64    `json:"seq"`
	At          time.Time `json:"at"`
	AheadSeq    uint64    `json:"ahead_seq,omitempty"`
	AheadFromAt time.Time `json:"ahead_from_at,omitzero"`
	AheadAt     time.Time `json:"ahead_at,omitzero"`
	// Rebuilding marks a wipe in progress: a projector that finds it
	// finishes the wipe before folding.
	Rebuilding bool `json:"rebuilding,omitempty"`
}
