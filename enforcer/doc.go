// Package enforcer decides reservations for the partitions it owns.
//
// It is a pure core and a thin shell. The core — State, Decide and Apply —
// is deterministic and single-threaded: no clock (callers pass now), no
// goroutines, no I/O, no map-order dependence. Decide evaluates a command
// against the state and returns the events it would append; Apply is the
// only way state changes, live and in replay, so the state is always the
// fold of the partition's events. The core asserts its invariants and panics
// when one breaks: a corrupted ledger must not keep deciding.
//
// The shell (run.go and friends) subscribes to the partition subjects,
// decides in arrival order, appends with the Nats-Expected-Last-Sequence
// fence, and answers only after JetStream acknowledged the event. Its
// state renders a decision's instance views into a buffer that the next
// decision reuses (State.SetReuseViews): the loop encodes the events,
// applies them and renders the answer before it decides again, and the
// acker sends that answer once the append is acknowledged.
//
// enforcer imports events; it never imports projector, report or cmd.
package enforcer
