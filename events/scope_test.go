package events_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tallyledger/tally/events"
)

func TestScopeErrors(t *testing.T) {
	tests := []struct {
		name    string
		scope   string
		pattern bool
		want    string
		segment int
	}{
		{name: "empty", scope: "", want: `scope "": empty`},
		{name: "bad id char", scope: "tenant:acme/run:a.b", want: `segment 2: id "a.b": character '.' not allowed`, segment: 2},
		{name: "empty segment", scope: "tenant:acme//run:x", want: "segment 2: empty segment", segment: 2},
		{name: "trailing slash", scope: "tenant:acme/", want: "segment 2: empty segment (trailing '/')", segment: 2},
		{name: "not kind:id", scope: "tenant", want: `segment 1: "tenant" is not kind:id`, segment: 1},
		{name: "upper-case kind", scope: "Tenant:acme", want: `kind "Tenant": character 'T' not allowed`, segment: 1},
		{name: "digit first in kind", scope: "1tenant:acme", want: `character '1' not allowed`, segment: 1},
		{name: "empty kind", scope: ":acme", want: "empty kind", segment: 1},
		{name: "empty id", scope: "tenant:", want: "empty id", segment: 1},
		{name: "too deep", scope: "a:1/b:2/c:3/d:4/e:5/f:6/g:7/h:8/i:9", want: "more than 8 segments"},
		{name: "wildcard root", scope: "tenant:*", pattern: true, want: "root must be concrete", segment: 1},
		{name: "wildcard in concrete", scope: "tenant:a/run:*", want: "'*' is only allowed in budget scopes", segment: 2},
		{name: "partial wildcard", scope: "tenant:a/run:r*", pattern: true, want: "'*' only as a whole id", segment: 2},
		{name: "long kind", scope: strings.Repeat("k", 33) + ":a", want: "kind longer than 32", segment: 1},
		{name: "long id", scope: "tenant:" + strings.Repeat("x", 129), want: "id longer than 128", segment: 1},
		{name: "colon in id", scope: "tenant:acme:extra", want: `character ':' not allowed`, segment: 1},
		{name: "non-ASCII id", scope: "tenant:acmé", want: "not allowed", segment: 1},
		{name: "long scope is shortened", scope: "tenant:" + strings.Repeat("x", 100) + "!", want: "…", segment: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			validate := events.ValidateScope
			if tt.pattern {
				validate = events.ValidatePattern
			}
			err := validate(tt.scope)
			wantErr(t, err, tt.want)
			var se *events.ScopeError
			if !errors.As(err, &se) {
				t.Fatalf("%T is not a *ScopeError", err)
			}
			if se.Segment != tt.segment || se.Scope != tt.scope {
				t.Errorf("ScopeError{Scope: %q, Segment: %d}, want segment %d", se.Scope, se.Segment, tt.segment)
			}
		})
	}
	// Exactly at the limits is fine.
	for _, s := range []string{
		"a:1/b:2/c:3/d:4/e:5/f:6/g:7/h:8",
		strings.Repeat("k", 32) + ":" + strings.Repeat("x", 128),
		"t_9:A-z_0",
	} {
		if err := events.ValidateScope(s); err != nil {
			t.Errorf("ValidateScope(%q): %v", s, err)
		}
	}
}

func TestValidateUnitAndKey(t *testing.T) {
	for _, u := range []string{"USD", "tokens", "search_calls", "a", "X" + strings.Repeat("9", 31)} {
		if err := events.ValidateUnit(u); err != nil {
			t.Errorf("ValidateUnit(%q): %v", u, err)
		}
	}
	units := map[string]string{
		"":                      "empty unit name",
		"1USD":                  "character '1' not allowed",
		"_x":                    "character '_' not allowed",
		"US D":                  "character ' ' not allowed",
		"US-D":                  "character '-' not allowed",
		strings.Repeat("u", 33): "longer than 32",
	}
	for u, want := range units {
		wantErr(t, events.ValidateUnit(u), want)
	}
	for _, k := range []string{"k1", "A-b_C", strings.Repeat("k", 128)} {
		if err := events.ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q): %v", k, err)
		}
	}
	keys := map[string]string{
		"":                       "empty",
		"a b":                    "character ' ' not allowed",
		"a/b":                    "character '/' not allowed",
		strings.Repeat("k", 129): "longer than 128",
	}
	for k, want := range keys {
		wantErr(t, events.ValidateKey(k), want)
	}
}

func TestMatches(t *testing.T) {
	tests := []struct {
		name           string
		pattern, scope string
		want           bool
	}{
		{"equal root", "tenant:acme", "tenant:acme", true},
		{"other root", "tenant:acme", "tenant:other", false},
		{"wildcard leaf", "tenant:acme/workflow:cr/run:*", "tenant:acme/workflow:cr/run:r-42", true},
		{"wildcard kind differs", "tenant:acme/workflow:cr/run:*", "tenant:acme/workflow:cr/session:s1", false},
		{"wildcard but parent differs", "tenant:acme/workflow:cr/run:*", "tenant:acme/workflow:other/run:r-42", false},
		{"pattern shallower", "tenant:acme/run:*", "tenant:acme/run:r1/step:s1", false},
		{"pattern deeper", "tenant:acme/run:*", "tenant:acme", false},
		{"two wildcards", "tenant:acme/agent:*/session:*", "tenant:acme/agent:a1/session:s9", true},
		{"concrete pattern at depth", "tenant:acme/run:r1", "tenant:acme/run:r1", true},
		{"concrete pattern, other id", "tenant:acme/run:r1", "tenant:acme/run:r2", false},
		{"prefix is not a match", "tenant:ac", "tenant:acme", false},
		{"wildcard matches a literal star", "tenant:acme/run:*", "tenant:acme/run:*", true},
	}
	for _, tt := range tests {
		if got := events.Matches(tt.pattern, tt.scope); got != tt.want {
			t.Errorf("%s: Matches(%q, %q) = %v, want %v", tt.name, tt.pattern, tt.scope, got, tt.want)
		}
	}
}

func TestScopeHelpers(t *testing.T) {
	s := "tenant:acme/workflow:code-review/run:r-42"
	if diff := cmp.Diff([]string{"tenant:acme", "tenant:acme/workflow:code-review", s}, events.Prefixes(s)); diff != "" {
		t.Errorf("Prefixes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"tenant:acme"}, events.Prefixes("tenant:acme")); diff != "" {
		t.Errorf("Prefixes of a root (-want +got):\n%s", diff)
	}
	for scope, want := range map[string]string{s: "tenant:acme", "tenant:acme": "tenant:acme", "org:x/team:y": "org:x"} {
		if got := events.Root(scope); got != want {
			t.Errorf("Root(%q) = %q, want %q", scope, got, want)
		}
	}
	if got := events.Depth(s); got != 3 {
		t.Errorf("Depth = %d", got)
	}

	within := []struct {
		scope, base string
		want        bool
	}{
		{s, "tenant:acme", true},
		{s, s, true},
		{s, "tenant:acme/workflow:code-review", true},
		{"tenant:acme", s, false},
		{"tenant:acme2/run:x", "tenant:acme", false},
		{"tenant:acme/workflow:code-reviewer", "tenant:acme/workflow:code-review", false},
		{"tenant:other", "tenant:acme", false},
	}
	for _, tt := range within {
		if got := events.IsWithin(tt.scope, tt.base); got != tt.want {
			t.Errorf("IsWithin(%q, %q) = %v, want %v", tt.scope, tt.base, got, tt.want)
		}
	}

	ids := []struct {
		scope, kind, want string
	}{
		{s, "workflow", "code-review"},
		{s, "run", "r-42"},
		{s, "tenant", "acme"},
		{s, "session", ""},
		{s, "work", ""},
		{"tenant:a/run:r1/run:r2", "run", "r1"},
	}
	for _, tt := range ids {
		if got := events.SegmentID(tt.scope, tt.kind); got != tt.want {
			t.Errorf("SegmentID(%q, %q) = %q, want %q", tt.scope, tt.kind, got, tt.want)
		}
	}
}

func TestSortedUnits(t *testing.T) {
	got := events.SortedUnits(map[string]int{"tokens": 1, "USD": 2, "EUR": 3, "a": 4})
	if diff := cmp.Diff([]string{"EUR", "USD", "a", "tokens"}, got); diff != "" {
		t.Errorf("SortedUnits (-want +got):\n%s", diff)
	}
}
