// Package report computes what auditors, billing jobs and operators read
// from the ledger: the shadow report, the spend report, and the checks of
// the audit.
//
// Reports are computed from the events themselves, not from the
// projector's views, so they are exact to the last decimal and do not
// depend on how far behind the projector is. Each report is a pure fold:
// a builder (NewShadow, NewSpend, NewChecker) takes events one by one with
// Add or Check and returns a plain value; renderers write that value to an
// io.Writer as text, CSV or JSON. The one piece of I/O is Read, which
// streams a partition's stored events with an ordered consumer.
//
// report imports events, streams and projector (the audit compares the
// rebuilt balances with the projection). It never imports enforcer: the
// audit's rebuild of balances with the enforcer's Apply lives in cmd/tally,
// which hands the result to CompareBalances.
package report
