// Package projector folds the partition streams into the read-side views
// that dashboards, billing jobs and operators consume:
//
//   - instance balances (KV tally_balances, keys inst.…): per budget
//     instance the limit, spent, reserved and remaining of every unit it
//     limits, its period, mode and the last event that changed it;
//   - budget definitions across roots (KV tally_budgets, keys budget.…);
//   - spend roll-ups: hour × scope × unit × label model (spend.…) and
//     hour × root × workflow × unit × label model (wfspend.…);
//   - shadow statistics per shadow instance and unit (shadow.…): would-deny
//     count, peak overage, peak usage, first and last would-be denial.
//
// The views are eventually consistent: the enforcer's own balance answer is
// the strongly consistent one. Reports that must be exact (report shadow,
// report spend) are computed from the events themselves, not from here.
//
// # Pure folds and a thin shell
//
// fold.go holds View, the projection of one partition, with
// Apply(seq, event): pure, deterministic, no I/O. run.go is the shell: one
// ordered consumer per partition feeds View.Apply, and every flush
// (FlushInterval, or MaxPending applied events) writes the changed entries
// to KV together with the partition's checkpoint.
//
// # Restarts, redelivery and the checkpoint
//
// Every value written carries seq, the stream sequence of the last event
// that changed it, and View.Apply skips an entry whose seq is at or beyond
// the event's: each entry is its own checkpoint. A flush writes every
// changed entry (puts, then deletes) and then checkpoint.<n>, the last
// applied sequence and its time.
//
// On start the shell loads the partition's entries, reads the checkpoint
// and consumes from the sequence after it. Events already reflected in an
// entry written by a flush that was cut before its checkpoint are skipped
// by that entry's seq, the others are applied: a restart or a redelivery
// neither loses nor double-counts anything, and the views after any
// history of restarts equal the views of one uninterrupted fold (entries
// are deterministic functions of the events: seq is the last event that
// changed the entry, not the flush).
//
// That order holds on disk too when the server does not fsync each write
// (the group fsync of --sync always): Config.Barrier runs before every
// write phase — the marker, the entries, the checkpoint, a purge — so a
// power cut never keeps a checkpoint without the entries it vouches for,
// nor entries folded from events that were not on disk.
//
// Spend roll-ups are keyed by hour, and event time never goes backwards
// within a partition, so a roll-up of an hour before the last event's is
// final: it is evicted from memory once flushed, which bounds memory by the
// current hour. On start only the checkpoint's hour is loaded back: the
// next events may extend it. Later hours hold only contributions of events
// after the checkpoint, which the fold recomputes in full; whatever a cut
// flush wrote there is overwritten.
//
// Rebuild wipes a partition's entries (marking the checkpoint rebuilding
// first, so a crash during the wipe resumes it) and folds from sequence 1.
//
// # Key encoding
//
// KV keys must be valid NATS subject tokens, and scopes contain ':' and
// '/'. Every string part of a key is encoded as unpadded base64url
// (RFC 4648 §5), and the empty string as "_" (which no base64 output is);
// parts are joined by '.'. The partition number comes right after the
// prefix, so a partition's entries are the filter <prefix>.<n>.>:
//
//	tally_balances  inst.<n>.<pattern>.<name>.<scope>.<period>
//	                shadow.<n>.<pattern>.<name>.<scope>.<period>
//	                spend.<n>.<hour>.<scope>.<unit>.<model>
//	                wfspend.<n>.<hour>.<root>.<workflow>.<unit>.<model>
//	                resv.<n>.<reservation id>      (labels of open reservations)
//	                checkpoint.<n>
//	tally_budgets   budget.<n>.<pattern>.<name>
//
// <hour> is the UTC hour of the event, YYYYMMDDHH, not encoded. ParseKey
// reverses the encoding.
//
// projector imports events and streams; it never imports enforcer, report
// or cmd.
package projector
