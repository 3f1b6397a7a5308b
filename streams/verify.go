package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// Probing the server's request mapping.
const (
	// probeRoots is how many roots VerifyMapping sends: with several, a
	// mapping for another P cannot agree with Partition by chance.
	probeRoots = 16
	// probeKind and probeOp name the probe requests. No enforcer serves
	// the op; probes carry no reply subject, so nobody answers them.
	probeKind = "tally_probe"
	probeOp   = "probe"
)

// ErrMappingMismatch is returned by VerifyMapping when the server the
// connection uses does not map requests as Mapping(p) does.
var ErrMappingMismatch = errors.New("server's request mapping does not match the ledger")

// VerifyMapping checks, through nc, that the server maps request subjects
// to partitions exactly as Mapping(p) would, so that requests reach the
// enforcer owning their root. An enforcer runs it at start: a cluster whose
// configuration carries another P (or no mapping) would otherwise route
// requests to the wrong partition. It needs permission to publish
// tally.v1.req.> and subscribe tally.v1.> (the tally service user has it).
// Only the server nc is connected to is checked.
func VerifyMapping(ctx context.Context, nc *nats.Conn, p int) error {
	if err := validatePartitions(p); err != nil {
		return err
	}
	id := nuid.Next()
	roots := make(map[string]bool, probeRoots)
	for i := range probeRoots {
		roots[probeKind+":"+id+"-"+strconv.Itoa(i)] = true
	}
	// Both the mapped and the unmapped form, so that a missing mapping is
	// seen at once instead of as a time-out.
	msgs := make(chan *nats.Msg, 2*probeRoots)
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	for _, subject := range []string{
		Prefix + "." + partitionToken + ".*.*." + probeOp,
		Prefix + "." + reqToken + ".*." + probeOp,
	} {
		s, err := nc.ChanSubscribe(subject, msgs)
		if err != nil {
			return fmt.Errorf("verify mapping: subscribe %s: %w", subject, err)
		}
		subs = append(subs, s)
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("verify mapping: %w", err)
	}
	for root := range roots {
		if err := nc.Publish(RequestSubject(root, probeOp), nil); err != nil {
			return fmt.Errorf("verify mapping: publish probe: %w", err)
		}
	}
	for pending := len(roots); pending > 0; {
		select {
		case <-ctx.Done():
			return fmt.Errorf("verify mapping: %d of %d probes never arrived: %w", pending, probeRoots, ctx.Err())
		case m := <-msgs:
			n, root, _, err := ParsePartitionSubject(m.Subject)
			if err != nil {
				if roots[unmappedRoot(m.Subject)] {
					return fmt.Errorf("verify mapping: %w: %s arrived unmapped (the server has no request mapping)", ErrMappingMismatch, m.Subject)
				}
				continue
			}
			if !roots[root] {
				continue // another process's probe
			}
			if want := Partition(root, p); n != want {
				return fmt.Errorf("verify mapping: %w: root %s mapped to partition %d, want %d of %d", ErrMappingMismatch, root, n, want, p)
			}
			delete(roots, root)
			pending--
		}
	}
	return nil
}

// unmappedRoot extracts the root of an unmapped probe request subject
// tally.v1.req.<root>.probe, or "".
func unmappedRoot(subject string) string {
	rest, ok := strings.CutPrefix(subject, Prefix+"."+reqToken+".")
	if !ok {
		return ""
	}
	root, ok := strings.CutSuffix(rest, "."+probeOp)
	if !ok {
		return ""
	}
	return root
}
