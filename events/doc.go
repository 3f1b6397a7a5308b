// Package events is tally's vocabulary: scopes, units, amounts, calendar
// periods, the wire requests and answers, the event envelope and its strict
// codec, and the hash chain that links a partition's events.
//
// It is pure: no NATS, no clock, no logging, no goroutines. Everything that
// reads or writes the ledger — the enforcer, the projector, reports, the
// audit and the Go client — speaks through these types, so a replay and a
// live decision see exactly the same values. A test pins its imports.
package events
