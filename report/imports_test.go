package report_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// report depends on events, streams and projector, never on enforcer
// (the audit's replay with Apply lives in cmd/tally), client or cmd.
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
		for _, no := range []string{"/enforcer", "/cmd/", "/client"} {
			if strings.HasPrefix(dep, "github.com/tallyledger/tally") && strings.Contains(dep+"/", no+"/") {
				t.Errorf("report depends on %s", dep)
			}
		}
	}
}
