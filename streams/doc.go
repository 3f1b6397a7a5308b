// Package streams is the only package that knows tally's JetStream layout:
// subject names, stream and bucket names, replicas, limits, the request
// mapping that spreads roots over partitions, and the embedded nats-server.
//
// Its contract:
//
//   - Subjects: agents send requests to RequestSubject(root, op); the server
//     maps them to PartitionSubject(Partition(root, P), root, op) with the
//     subject mapping returned by Mapping(P). Events of partition n are
//     appended to EventSubject(n, root, type) in stream StreamName(n).
//   - Assets: Ensure creates, idempotently, the partition streams (immutable:
//     DenyDelete, DenyPurge, no limits), the KV buckets and the snapshot
//     object store. The number of partitions P is written once into the
//     tally_meta bucket when the ledger is created and never changes.
//   - Server: StartServer runs nats-server in-process with JetStream and the
//     request mapping, for `tally serve` and for tests.
//
// No other package creates JetStream assets or spells a subject. streams
// must not import enforcer, projector, report or cmd: it sits below them.
package streams
