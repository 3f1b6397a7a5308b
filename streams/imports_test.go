package streams_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// streams sits below every other tally package: it may import the standard
// library and NATS, nothing of tally's own (enforcer, projector, report,
// cmd would be a cycle in the architecture, and events is not needed) —
// and golang.org/x/sys, the standard library's system calls beyond
// syscall (syncfs for the group fsync).
func TestImports(t *testing.T) {
	allowedPrefixes := []string{"github.com/nats-io/", "golang.org/x/sys/"}
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			first, _, _ := strings.Cut(path, "/")
			if !strings.Contains(first, ".") {
				continue // standard library
			}
			ok := false
			for _, p := range allowedPrefixes {
				ok = ok || strings.HasPrefix(path, p)
			}
			if !ok {
				t.Errorf("%s imports %s: streams may import only the standard library, x/sys and NATS", name, path)
			}
		}
	}
}
