package streams_test

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats.go"

	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

func TestSubjects(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"request", streams.RequestSubject("tenant:acme", "reserve"), "tally.v1.req.tenant:acme.reserve"},
		{"partition", streams.PartitionSubject(3, "tenant:acme", "reservation-get"), "tally.v1.p.3.tenant:acme.reservation-get"},
		{"partition wildcard", streams.PartitionWildcard(7), "tally.v1.p.7.>"},
		{"event", streams.EventSubject(0, "tenant:acme", "reservation.granted"), "tally.v1.ev.0.tenant:acme.reservation.granted"},
		{"event wildcard", streams.EventWildcard(12), "tally.v1.ev.12.>"},
		{"stream", streams.StreamName(5), "TALLY_P5"},
		{"mapping destination", streams.MappingDestination(8), "tally.v1.p.{{partition(8,1)}}.{{wildcard(1)}}.{{wildcard(2)}}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestParsePartitionSubject(t *testing.T) {
	n, root, op, err := streams.ParsePartitionSubject(streams.PartitionSubject(6, "tenant:acme", "budget-set"))
	if err != nil || n != 6 || root != "tenant:acme" || op != "budget-set" {
		t.Errorf("round trip = %d %q %q %v", n, root, op, err)
	}
	for _, bad := range []string{
		"tally.v1.req.tenant:acme.reserve",
		"tally.v1.p.x.tenant:acme.reserve",
		"tally.v1.p.-1.tenant:acme.reserve",
		"tally.v1.p.01.tenant:acme.reserve",
		"tally.v1.p.1.tenant:acme",
		"tally.v1.p.1.tenant:acme.reserve.more",
		"tally.v1.p.1..reserve",
		"tally.v2.p.1.tenant:acme.reserve",
	} {
		if _, _, _, err := streams.ParsePartitionSubject(bad); !errors.Is(err, streams.ErrBadSubject) {
			t.Errorf("ParsePartitionSubject(%q) error = %v, want ErrBadSubject", bad, err)
		}
	}
	// Event types contain dots: the type is every token after the root.
	n, root, typ, err := streams.ParseEventSubject(streams.EventSubject(2, "tenant:acme", "reservation.granted"))
	if err != nil || n != 2 || root != "tenant:acme" || typ != "reservation.granted" {
		t.Errorf("ParseEventSubject = %d %q %q %v", n, root, typ, err)
	}
}

func TestPartitionKnownValues(t *testing.T) {
	// FNV-1a 32 of the empty string is the offset basis 2166136261.
	if got, want := streams.Partition("", 1000), int(2166136261%1000); got != want {
		t.Errorf("Partition(\"\", 1000) = %d, want %d", got, want)
	}
	for _, root := range []string{"tenant:acme", "tenant:globex", "org:x"} {
		if got := streams.Partition(root, 1); got != 0 {
			t.Errorf("Partition(%q, 1) = %d, want 0", root, got)
		}
	}
}

// TestPartitionMatchesServer pins Partition to the server's
// {{partition(P,1)}} mapping: requests for random roots sent to the request
// subject arrive on the partition Partition computes.
func TestPartitionMatchesServer(t *testing.T) {
	const roots = 200
	rng := rand.New(rand.NewPCG(1, 2)) // fixed seed: a failure reproduces
	for _, p := range []int{streams.DefaultPartitions, 13} {
		s := natstest.RunServer(t, natstest.WithPartitions(p))
		nc := natstest.Connect(t, s)
		sub, err := nc.Subscribe("tally.v1.p.*.>", func(m *nats.Msg) { _ = m.Respond([]byte(m.Subject)) })
		if err != nil {
			t.Fatal(err)
		}
		for range roots {
			root := randomRoot(rng)
			reply, err := nc.Request(streams.RequestSubject(root, "balance"), nil, 5*time.Second)
			if err != nil {
				t.Fatalf("P=%d root %q: request: %v", p, root, err)
			}
			n, gotRoot, op, err := streams.ParsePartitionSubject(string(reply.Data))
			if err != nil {
				t.Fatalf("P=%d root %q: %v", p, root, err)
			}
			if want := streams.Partition(root, p); n != want || gotRoot != root || op != "balance" {
				t.Errorf("P=%d root %q: server mapped to %q, Partition says %d", p, root, reply.Data, want)
			}
		}
		_ = sub.Unsubscribe()
	}
}

// randomRoot returns a root scope segment kind:id in tally's grammar.
func randomRoot(rng *rand.Rand) string {
	const (
		kindChars = "abcdefghijklmnopqrstuvwxyz0123456789_"
		idChars   = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
	)
	var b strings.Builder
	b.WriteByte(kindChars[rng.IntN(26)])
	for range rng.IntN(8) {
		b.WriteByte(kindChars[rng.IntN(len(kindChars))])
	}
	b.WriteByte(':')
	for range 1 + rng.IntN(40) {
		b.WriteByte(idChars[rng.IntN(len(idChars))])
	}
	return b.String()
}

func TestMappingIsConfig(t *testing.T) {
	m, err := conf.Parse(streams.Mapping(8))
	if err != nil {
		t.Fatalf("Mapping(8) does not parse as nats-server config: %v", err)
	}
	want := map[string]any{"mappings": map[string]any{streams.MappingSource: streams.MappingDestination(8)}}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("Mapping(8) parsed (-want +got):\n%s", diff)
	}
}
