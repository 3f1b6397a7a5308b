package streams

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Prefix is the first two tokens of every tally subject. The version token
// changes only with an incompatible wire protocol.
const Prefix = "tally.v1"

// Subject families below Prefix.
const (
	reqToken       = "req"   // tally.v1.req.<root>.<op>: what agents publish
	partitionToken = "p"     // tally.v1.p.<n>.<root>.<op>: what the mapping produces
	eventToken     = "ev"    // tally.v1.ev.<n>.<root>.<type>: events in stream TALLY_P<n>
	claimToken     = "claim" // tally.v1.claim.<n>: enforcer to enforcer, never agents
)

// Names of the JetStream assets. Partition streams are named by StreamName.
const (
	// MetaBucket (KV) holds the ledger's layout: P and the format version.
	MetaBucket = "tally_meta"
	// LeasesBucket (KV) holds partition ownership; liveness only.
	LeasesBucket = "tally_leases"
	// BalancesBucket (KV) is the projection of instance balances.
	BalancesBucket = "tally_balances"
	// BudgetsBucket (KV) is the projection of budget definitions.
	BudgetsBucket = "tally_budgets"
	// SnapshotsBucket (object store) holds enforcer snapshots.
	SnapshotsBucket = "tally_snapshots"

	// streamPrefix + n is the name of partition n's stream.
	streamPrefix = "TALLY_P"
)

// ErrBadSubject reports a subject that is not of the family a parser expects.
var ErrBadSubject = errors.New("not a tally subject")

// Family is tally's layout of request, partition and event subjects under
// a prefix. Ledger is tally's own; the bench's contract floor lays its
// subjects out the same way under a prefix of its own.
type Family string

// Ledger is the family of tally's subjects, under Prefix.
const Ledger Family = Prefix

// Request is the subject agents send op requests for root to:
// <prefix>.req.<root>.<op>.
func (f Family) Request(root, op string) string {
	return string(f) + "." + reqToken + "." + root + "." + op
}

// PartitionWildcard is the subscription that receives every request of
// partition n after the mapping: <prefix>.p.<n>.>.
func (f Family) PartitionWildcard(n int) string {
	return string(f) + "." + partitionToken + "." + strconv.Itoa(n) + ".>"
}

// Event is the subject of an event of type typ for root in partition n:
// <prefix>.ev.<n>.<root>.<type>, root "" standing as NoRootToken.
func (f Family) Event(n int, root, typ string) string {
	if root == "" {
		root = NoRootToken
	}
	return string(f) + "." + eventToken + "." + strconv.Itoa(n) + "." + root + "." + typ
}

// EventWildcard matches every event of partition n: <prefix>.ev.<n>.>.
func (f Family) EventWildcard(n int) string {
	return string(f) + "." + eventToken + "." + strconv.Itoa(n) + ".>"
}

// mappingSource is the pattern the family's request mapping rewrites, and
// mappingDestination where it sends it for p partitions: the partition
// token is FNV-1a of the root token mod p.
func (f Family) mappingSource() string { return string(f) + "." + reqToken + ".*.*" }

func (f Family) mappingDestination(p int) string {
	return fmt.Sprintf("%s.%s.{{partition(%d,1)}}.{{wildcard(1)}}.{{wildcard(2)}}", f, partitionToken, p)
}

// RequestSubject is the subject agents send op requests for root to:
// tally.v1.req.<root>.<op>. root and op must be single NATS tokens; roots
// look like "tenant:acme" (':' is a legal token character).
func RequestSubject(root, op string) string { return Ledger.Request(root, op) }

// PartitionSubject is the subject a request for root lands on after the
// server's mapping: tally.v1.p.<n>.<root>.<op>. The Go client may publish
// to it directly when it knows P.
func PartitionSubject(n int, root, op string) string {
	return Prefix + "." + partitionToken + "." + strconv.Itoa(n) + "." + root + "." + op
}

// PartitionWildcard is the subscription that receives every request of
// partition n: tally.v1.p.<n>.>.
func PartitionWildcard(n int) string { return Ledger.PartitionWildcard(n) }

// NoRootToken stands for the root in the subject of an event of no root.
const NoRootToken = "_"

// EventSubject is the subject of an event of type typ for root in
// partition n: tally.v1.ev.<n>.<root>.<type>. Consumers filter on it by
// root or type. An event of no root (partition.claimed) has the token _.
func EventSubject(n int, root, typ string) string { return Ledger.Event(n, root, typ) }

// EventWildcard matches every event of partition n, tally.v1.ev.<n>.>: the
// subject of stream StreamName(n).
func EventWildcard(n int) string { return Ledger.EventWildcard(n) }

// ClaimSubject is where a new owner of partition n, while claiming it,
// asks any other enforcer still serving it to hold its decisions:
// tally.v1.claim.<n>, payload the new owner's name. Only enforcers should
// be allowed to publish to it: holding delays decisions.
func ClaimSubject(n int) string {
	return Prefix + "." + claimToken + "." + strconv.Itoa(n)
}

// StreamName is the name of partition n's stream: TALLY_P<n>.
func StreamName(n int) string {
	return streamPrefix + strconv.Itoa(n)
}

// ParsePartitionSubject splits a mapped request subject
// tally.v1.p.<n>.<root>.<op> into its parts. The enforcer must still check
// that Partition(root, P) == n: a client allowed to publish
// tally.v1.p.*.<root>.> may name any partition.
func ParsePartitionSubject(subject string) (n int, root, op string, err error) {
	n, root, op, err = parseSubject(subject, partitionToken)
	if err == nil && strings.Contains(op, ".") {
		err = fmt.Errorf("%w: %q: want %s.%s.<n>.<root>.<op>", ErrBadSubject, subject, Prefix, partitionToken)
	}
	return n, root, op, err
}

// ParseEventSubject splits an event subject tally.v1.ev.<n>.<root>.<type>;
// the type may span several tokens (reservation.granted).
func ParseEventSubject(subject string) (n int, root, typ string, err error) {
	return parseSubject(subject, eventToken)
}

// parseSubject splits tally.v1.<family>.<n>.<root>.<rest>.
func parseSubject(subject, family string) (int, string, string, error) {
	bad := func(why string) error {
		return fmt.Errorf("%w: %q: %s, want %s.%s.<n>.<root>.<...>", ErrBadSubject, subject, why, Prefix, family)
	}
	rest, ok := strings.CutPrefix(subject, Prefix+"."+family+".")
	if !ok {
		return 0, "", "", bad("wrong prefix")
	}
	tokens := strings.SplitN(rest, ".", 3)
	if len(tokens) != 3 || tokens[1] == "" || tokens[2] == "" || strings.HasPrefix(tokens[2], ".") ||
		strings.HasSuffix(tokens[2], ".") || strings.Contains(tokens[2], "..") {
		return 0, "", "", bad("missing or empty tokens")
	}
	n, err := strconv.Atoi(tokens[0])
	if err != nil || n < 0 || n >= MaxPartitions || strconv.Itoa(n) != tokens[0] {
		return 0, "", "", bad("bad partition " + strconv.Quote(tokens[0]))
	}
	return n, tokens[1], tokens[2], nil
}

// Partition is the partition that owns root among p partitions: FNV-1a
// 32-bit of the root token, mod p. It equals what the server's
// {{partition(p,1)}} mapping computes (a test pins that), so a request sent
// to RequestSubject and one sent to PartitionSubject(Partition(...)) land
// on the same partition. p must be positive.
func Partition(root string, p int) int {
	if p <= 0 {
		panic(fmt.Sprintf("streams.Partition: p = %d, want > 0", p))
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(root)) // a hash.Hash never fails to write
	return int(h.Sum32() % uint32(p))
}

// MappingSource is the subject pattern that the request mapping rewrites.
const MappingSource = Prefix + "." + reqToken + ".*.*"

// MappingDestination is where the request mapping sends MappingSource for p
// partitions: the partition token is FNV-1a of the root token mod p.
func MappingDestination(p int) string { return Ledger.mappingDestination(p) }

// Mapping is the nats-server configuration block that maps requests to
// partitions for p partitions. StartServer applies it; the shipped cluster
// configuration (deploy/nats/accounts.conf) carries the same mapping for
// p = DefaultPartitions inside the TALLY account, and a test keeps them
// equal. Every server of a cluster needs it: the mapping is applied by the
// server the client is connected to.
func Mapping(p int) string {
	return fmt.Sprintf("mappings {\n  %q: %q\n}\n", MappingSource, MappingDestination(p))
}
