package datapath_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The datapath packages never depend on control-plane code: configuration
// formats, HTTP, BGP, metrics libraries or the CLI (DESIGN.md §4).
func TestDatapathImportsNoControlPlane(t *testing.T) {
	datapathPkgs := []string{
		"packet", "maglev", "flow", "encap", "pipeline", "datapath", "link", "link/mem",
	}
	forbidden := []string{
		"github.com/sluicelb/sluice/internal/config",
		"github.com/sluicelb/sluice/internal/control",
		"github.com/sluicelb/sluice/internal/announce",
		"github.com/sluicelb/sluice/internal/health",
		"github.com/sluicelb/sluice/internal/cluster",
		"github.com/sluicelb/sluice/cmd",
		"net/http",
		"gopkg.in/yaml",
		"github.com/osrg/gobgp",
		"github.com/prometheus",
		"github.com/spf13/cobra",
		"google.golang.org/grpc",
		"github.com/quic-go", // QUIC-LB decoding is internal/quiclb alone
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, p := range datapathPkgs {
		pkg := "github.com/sluicelb/sluice/internal/" + p
		out, err := exec.Command(goBin, "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if dep == f || strings.HasPrefix(dep, f+"/") {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
