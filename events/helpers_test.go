package events_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tallyledger/tally/events"
)

// cmpOpts compares the package's values: Amounts by canonical string (the
// apd internals are unexported and "0.50" equals "0.5"), times by instant.
var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b events.Amount) bool { return a.String() == b.String() && a.Cmp(b) == 0 }),
	cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }),
}

// cmpOptsEmpty is cmpOpts where nil and empty maps and slices are equal:
// canonical encodings omit empty optional fields.
var cmpOptsEmpty = cmp.Options{cmpOpts, cmpopts.EquateEmpty()}

// readVectors decodes a shared test-vector file from the repository's testdata.
func readVectors(t testing.TB, name string, v any) {
	t.Helper()
	b, err := os.ReadFile("../testdata/" + name)
	if err != nil {
		t.Fatalf("reading vectors: %v", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decoding %s: %v", name, err)
	}
}

// wantErr fails unless err is non-nil and its text contains every fragment.
func wantErr(t testing.TB, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", fragments)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not contain %q", err, f)
		}
	}
}

func amt(s string) events.Amount { return events.MustAmount(s) }

func signed(s string) events.Signed {
	a, err := events.ParseSignedAmount(s)
	if err != nil {
		panic(err)
	}
	return events.Signed{Amount: a}
}

func ptr[T any](v T) *T { return &v }

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}
