package projector

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Key prefixes (see the package documentation).
const (
	PrefixInstance   = "inst"
	PrefixShadow     = "shadow"
	PrefixSpend      = "spend"
	PrefixWorkflow   = "wfspend"
	PrefixResv       = "resv"
	PrefixCheckpoint = "checkpoint"
	PrefixBudget     = "budget"
)

// hourLayout is the <hour> token of roll-up keys: the UTC hour.
const hourLayout = "2006010215"

var b64 = base64.RawURLEncoding

// enc encodes one string part of a key.
func enc(s string) string {
	if s == "" {
		return "_"
	}
	return b64.EncodeToString([]byte(s))
}

// dec reverses enc.
func dec(tok string) (string, error) {
	if tok == "_" {
		return "", nil
	}
	b, err := b64.DecodeString(tok)
	if err != nil {
		return "", fmt.Errorf("key token %q: %w", tok, err)
	}
	return string(b), nil
}

func join(prefix string, n int, parts ...string) string {
	var sb strings.Builder
	sb.WriteString(prefix)
	sb.WriteByte('.')
	sb.WriteString(strconv.Itoa(n))
	for _, p := range parts {
		sb.WriteByte('.')
		sb.WriteString(p)
	}
	return sb.String()
}

// InstanceKey is the tally_balances key of a budget instance's balance.
func InstanceKey(n int, pattern, name, scope, period string) string {
	return join(PrefixInstance, n, enc(pattern), enc(name), enc(scope), enc(period))
}

// ShadowKey is the tally_balances key of a shadow instance's statistics.
func ShadowKey(n int, pattern, name, scope, period string) string {
	return join(PrefixShadow, n, enc(pattern), enc(name), enc(scope), enc(period))
}

// HourToken renders the UTC hour of t as used in roll-up keys.
func HourToken(t time.Time) string { return t.UTC().Format(hourLayout) }

// SpendKey is the key of a scope's spend roll-up.
func SpendKey(n int, hour time.Time, scope, unit, model string) string {
	return join(PrefixSpend, n, HourToken(hour), enc(scope), enc(unit), enc(model))
}

// WorkflowKey is the key of a workflow's spend roll-up.
func WorkflowKey(n int, hour time.Time, root, workflow, unit, model string) string {
	return join(PrefixWorkflow, n, HourToken(hour), enc(root), enc(workflow), enc(unit), enc(model))
}

// ResvKey is the key of an open (or recently expired) reservation's labels.
func ResvKey(n int, id string) string { return join(PrefixResv, n, enc(id)) }

// CheckpointKey is the key of partition n's checkpoint in tally_balances.
func CheckpointKey(n int) string { return join(PrefixCheckpoint, n) }

// BudgetKey is the tally_budgets key of a budget definition.
func BudgetKey(n int, pattern, name string) string {
	return join(PrefixBudget, n, enc(pattern), enc(name))
}

// PartitionFilter is the KV filter matching every key of prefix in partition n.
func PartitionFilter(prefix string, n int) string { return join(prefix, n) + ".>" }

// Key is a parsed key.
type Key struct {
	Prefix    string
	Partition int
	// Hour is set for spend and wfspend keys.
	Hour time.Time
	// Parts are the decoded string parts after the partition (and hour).
	Parts []string
}

// ErrKey is wrapped by ParseKey's errors.
var ErrKey = errors.New("not a projector key")

// ParseKey reverses the key encoding.
func ParseKey(key string) (Key, error) {
	toks := strings.Split(key, ".")
	if len(toks) < 2 {
		return Key{}, fmt.Errorf("%w: %q", ErrKey, key)
	}
	n, err := strconv.Atoi(toks[1])
	if err != nil || n < 0 || strconv.Itoa(n) != toks[1] {
		return Key{}, fmt.Errorf("%w: %q: bad partition", ErrKey, key)
	}
	k := Key{Prefix: toks[0], Partition: n}
	want := map[string]int{PrefixInstance: 4, PrefixShadow: 4, PrefixSpend: 4, PrefixWorkflow: 5,
		PrefixResv: 1, PrefixCheckpoint: 0, PrefixBudget: 2}
	nparts, ok := want[k.Prefix]
	if !ok {
		return Key{}, fmt.Errorf("%w: %q: unknown prefix", ErrKey, key)
	}
	rest := toks[2:]
	if k.Prefix == PrefixSpend || k.Prefix == PrefixWorkflow {
		if len(rest) == 0 {
			return Key{}, fmt.Errorf("%w: %q: no hour", ErrKey, key)
		}
		h, err := time.Parse(hourLayout, rest[0])
		if err != nil {
			return Key{}, fmt.Errorf("%w: %q: hour: %v", ErrKey, key, err)
		}
		k.Hour = h
		rest = rest[1:]
		nparts--
	}
	if len(rest) != nparts {
		return Key{}, fmt.Errorf("%w: %q: %d parts, want %d", ErrKey, key, len(rest), nparts)
	}
	for _, t := range rest {
		s, err := dec(t)
		if err != nil {
			return Key{}, fmt.Errorf("%w: %q: %v", ErrKey, key, err)
		}
		k.Parts = append(k.Parts, s)
	}
	return k, nil
}
