package control_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// The control server depends on the interfaces it declares, never on the
// LB node that implements them.
func TestControlDoesNotImportLBNode(t *testing.T) {
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "list", "-deps",
		"github.com/sluicelb/sluice/internal/control", "github.com/sluicelb/sluice/internal/control/api").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if slices.Contains(strings.Fields(string(out)), "github.com/sluicelb/sluice/internal/lbnode") {
		t.Error("internal/control depends on internal/lbnode")
	}
}
