package events_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// events is the vocabulary every other package speaks: it must stay pure
// (STYLE: no NATS, no clock, no logging, no goroutines). Like tailscale's
// deptest, these tests pin what it may import and call.

// allowedModules are the only non-standard imports of events.
var allowedModules = map[string]bool{
	"github.com/cockroachdb/apd/v3": true,
	"github.com/oklog/ulid/v2":      true,
}

// forbiddenImports may not appear, directly or transitively.
var forbiddenImports = []string{"log", "log/slog", "net", "net/http", "os/exec", "github.com/nats-io/", "github.com/prometheus/"}

// sources parses the package's non-test Go files.
func sources(t *testing.T) (*token.FileSet, map[string]*ast.File) {
	t.Helper()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	files := map[string]*ast.File{}
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = f
	}
	if len(files) == 0 {
		t.Fatal("no source files")
	}
	return fset, files
}

func standard(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

func forbidden(path string) bool {
	for _, f := range forbiddenImports {
		if path == f || strings.HasSuffix(f, "/") && strings.HasPrefix(path, f) {
			return true
		}
	}
	return false
}

func TestImports(t *testing.T) {
	_, files := sources(t)
	for name, f := range files {
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !standard(path) && !allowedModules[path] {
				t.Errorf("%s imports %s: events may import only the standard library, apd and ulid", name, path)
			}
			if forbidden(path) {
				t.Errorf("%s imports %s, which events must not", name, path)
			}
			if path == "unsafe" || path == "C" {
				t.Errorf("%s imports %s", name, path)
			}
		}
	}
}

// TestDeps checks the transitive closure with `go list -deps`, so an
// allowed module cannot drag in a forbidden one.
func TestDeps(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	gobin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		if gobin, err = exec.LookPath("go"); err != nil {
			t.Skip("no go command")
		}
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case dep == "github.com/tallyledger/tally/events":
		case standard(dep):
			if forbidden(dep) {
				t.Errorf("events depends on %s", dep)
			}
		case allowedModules[dep]:
		default:
			t.Errorf("events depends on %s, outside the standard library, apd and ulid", dep)
		}
	}
}

// TestNoClockNoGoroutines: the vocabulary takes time as an argument and
// starts nothing. The source is searched both as text (time.Now) and as
// syntax (any clock or timer function, any go statement).
func TestNoClockNoGoroutines(t *testing.T) {
	clock := map[string]bool{"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true,
		"AfterFunc": true, "Tick": true, "NewTicker": true, "NewTimer": true}
	fset, files := sources(t)
	for name, f := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(src), "time.Now(") {
			t.Errorf("%s calls time.Now(", name)
		}
		timeName := ""
		for _, imp := range f.Imports {
			if imp.Path.Value == `"time"` {
				timeName = "time"
				if imp.Name != nil {
					timeName = imp.Name.Name
				}
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && timeName != "" && x.Name == timeName && clock[n.Sel.Name] {
					t.Errorf("%s: uses time.%s", fset.Position(n.Pos()), n.Sel.Name)
				}
			case *ast.GoStmt:
				t.Errorf("%s: starts a goroutine", fset.Position(n.Pos()))
			}
			return true
		})
	}
}
