package projector

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

// Imports point one way (STYLE): events ← projector ← report. projector
// never depends on enforcer, report or cmd, and its folds are pure.

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
		for _, no := range []string{"/enforcer", "/report", "/cmd/", "/client"} {
			if strings.HasPrefix(dep, "github.com/tallyledger/tally") && strings.Contains(dep+"/", no+"/") {
				t.Errorf("projector depends on %s", dep)
			}
		}
	}
}

// TestPureFolds: fold.go, key.go and entry.go use no NATS, no clock, no
// goroutines, no logging: the fold is a function of the events.
func TestPureFolds(t *testing.T) {
	fset := token.NewFileSet()
	for _, name := range []string{"fold.go", "key.go", "entry.go"} {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.Contains(path, "nats-io") || strings.Contains(path, "prometheus") || strings.HasPrefix(path, "log") || path == "os" || path == "net" {
				t.Errorf("%s imports %s", name, path)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && x.Name == "time" && (n.Sel.Name == "Now" || n.Sel.Name == "Since" || n.Sel.Name == "Sleep") {
					t.Errorf("%s: uses time.%s", fset.Position(n.Pos()), n.Sel.Name)
				}
			case *ast.GoStmt:
				t.Errorf("%s: starts a goroutine", fset.Position(n.Pos()))
			}
			return true
		})
	}
}
