// Package bench measures tally against the physical limit: a load
// generator of simulated agents (each on its own NATS connection) spread
// over many roots with a 3-level budget hierarchy and two units, an
// HDR-style latency histogram, and the yardsticks of DESIGN §9 measured in
// the same run on the same server with the same clients — B0 (a responder
// that answers at once), B1 (a responder that appends each request to a
// stream and answers after the ack), the raw async publish rate and the
// ordered-consumer replay rate.
//
// Run is what `tally bench` calls; tests and benchmarks call it, and use
// Histogram, directly. It can measure a running tally (TargetURL) or start
// a fresh one in-process: an embedded R1 server (TargetEmbedded) or a
// 3-node R3 cluster (TargetCluster3), each with an enforcer.
//
// The bench writes budgets and events under roots tenant:bench-* of the
// ledger it measures, and creates and deletes its own scratch streams
// (TALLY_BENCH_B1, TALLY_BENCH_RAW) outside the ledger's subjects.
//
// bench sits above enforcer, streams and client; only cmd and tests import
// it.
package bench
