package events

import (
	"fmt"
	"strings"
)

// Scope limits (DESIGN §1).
const (
	MaxScopeDepth = 8
	maxKindLen    = 32
	maxIDLen      = 128
	maxUnitLen    = 32
	maxKeyLen     = 128
)

// Wildcard is the id that makes a budget scope a pattern.
const Wildcard = "*"

// ScopeError says what is wrong with a scope and where.
type ScopeError struct {
	Scope   string
	Segment int // 1-based; 0 for the scope as a whole
	Reason  string
}

func (e *ScopeError) Error() string {
	s := e.Scope
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	if e.Segment > 0 {
		return fmt.Sprintf("scope %q: segment %d: %s", s, e.Segment, e.Reason)
	}
	return fmt.Sprintf("scope %q: %s", s, e.Reason)
}

// ValidateScope checks a concrete scope: 1–8 segments kind:id, no '*'.
func ValidateScope(s string) error { return validateScope(s, false) }

// ValidatePattern checks a budget scope: like a concrete scope, but any
// non-root id may be '*'.
func ValidatePattern(s string) error { return validateScope(s, true) }

func validateScope(s string, pattern bool) error {
	if s == "" {
		return &ScopeError{Scope: s, Reason: "empty"}
	}
	n := 0
	rest := s
	for {
		n++
		if n > MaxScopeDepth {
			return &ScopeError{Scope: s, Reason: fmt.Sprintf("more than %d segments", MaxScopeDepth)}
		}
		seg, tail, more := strings.Cut(rest, "/")
		if err := validateSegment(s, n, seg, pattern); err != nil {
			return err
		}
		if !more {
			return nil
		}
		if tail == "" {
			return &ScopeError{Scope: s, Segment: n + 1, Reason: "empty segment (trailing '/')"}
		}
		rest = tail
	}
}

func validateSegment(scope string, n int, seg string, pattern bool) error {
	if seg == "" {
		return &ScopeError{Scope: scope, Segment: n, Reason: "empty segment"}
	}
	kind, id, ok := strings.Cut(seg, ":")
	if !ok {
		return &ScopeError{Scope: scope, Segment: n, Reason: fmt.Sprintf("%q is not kind:id", seg)}
	}
	if kind == "" {
		return &ScopeError{Scope: scope, Segment: n, Reason: "empty kind"}
	}
	if len(kind) > maxKindLen {
		return &ScopeError{Scope: scope, Segment: n, Reason: "kind longer than 32"}
	}
	for i := 0; i < len(kind); i++ {
		c := kind[i]
		ok := c >= 'a' && c <= 'z' || i > 0 && (c >= '0' && c <= '9' || c == '_')
		if !ok {
			return &ScopeError{Scope: scope, Segment: n, Reason: fmt.Sprintf("kind %q: character %q not allowed (kinds are [a-z][a-z0-9_]*)", kind, rune(c))}
		}
	}
	if id == "" {
		return &ScopeError{Scope: scope, Segment: n, Reason: "empty id"}
	}
	if id == Wildcard {
		if n == 1 {
			return &ScopeError{Scope: scope, Segment: n, Reason: "root must be concrete, '*' not allowed"}
		}
		if !pattern {
			return &ScopeError{Scope: scope, Segment: n, Reason: "'*' is only allowed in budget scopes"}
		}
		return nil
	}
	if len(id) > maxIDLen {
		return &ScopeError{Scope: scope, Segment: n, Reason: "id longer than 128"}
	}
	for i := 0; i < len(id); i++ {
		if !idChar(id[i]) {
			reason := fmt.Sprintf("id %q: character %q not allowed (ids are [A-Za-z0-9_-])", id, rune(id[i]))
			if id[i] == '*' {
				reason = "'*' only as a whole id"
			}
			return &ScopeError{Scope: scope, Segment: n, Reason: reason}
		}
	}
	return nil
}

func idChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// ValidateUnit checks a unit name: [A-Za-z][A-Za-z0-9_]{0,31}.
func ValidateUnit(u string) error {
	if u == "" {
		return fmt.Errorf("empty unit name")
	}
	if len(u) > maxUnitLen {
		return fmt.Errorf("unit %q longer than 32", u[:maxUnitLen]+"…")
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '_')
		if !ok {
			return fmt.Errorf("unit %q: character %q not allowed (units are [A-Za-z][A-Za-z0-9_]*)", u, rune(c))
		}
	}
	return nil
}

// ValidateKey checks an idempotency key or budget name: 1–128 of [A-Za-z0-9_-].
func ValidateKey(k string) error {
	if k == "" {
		return fmt.Errorf("empty")
	}
	if len(k) > maxKeyLen {
		return fmt.Errorf("longer than 128")
	}
	for i := 0; i < len(k); i++ {
		if !idChar(k[i]) {
			return fmt.Errorf("character %q not allowed (use [A-Za-z0-9_-])", rune(k[i]))
		}
	}
	return nil
}

// Root returns the first segment of a scope ("tenant:acme").
func Root(scope string) string {
	if i := strings.IndexByte(scope, '/'); i >= 0 {
		return scope[:i]
	}
	return scope
}

// Depth is the number of segments of a valid scope.
func Depth(scope string) int { return strings.Count(scope, "/") + 1 }

// Prefixes returns the prefixes of a valid scope, root first, the scope last.
func Prefixes(scope string) []string {
	out := make([]string, 0, Depth(scope))
	for i := 0; i < len(scope); i++ {
		if scope[i] == '/' {
			out = append(out, scope[:i])
		}
	}
	return append(out, scope)
}

// Matches reports whether a budget pattern applies to a concrete scope of
// the same depth: segments equal, or the pattern's id is '*' with the same kind.
func Matches(pattern, scope string) bool {
	for {
		pseg, prest, pmore := strings.Cut(pattern, "/")
		sseg, srest, smore := strings.Cut(scope, "/")
		if pseg != sseg {
			pk, pid, _ := strings.Cut(pseg, ":")
			sk, _, _ := strings.Cut(sseg, ":")
			if pid != Wildcard || pk != sk {
				return false
			}
		}
		if pmore != smore {
			return false
		}
		if !pmore {
			return true
		}
		pattern, scope = prest, srest
	}
}

// IsPattern reports whether a valid scope contains a '*' id.
func IsPattern(scope string) bool {
	return strings.Contains(scope, ":*")
}

// SegmentID returns the id of the first segment of kind in scope, or "".
func SegmentID(scope, kind string) string {
	for seg := range strings.SplitSeq(scope, "/") {
		k, id, _ := strings.Cut(seg, ":")
		if k == kind {
			return id
		}
	}
	return ""
}

// IsWithin reports whether scope equals base or lies below it.
func IsWithin(scope, base string) bool {
	return scope == base || strings.HasPrefix(scope, base) && len(scope) > len(base) && scope[len(base)] == '/'
}
