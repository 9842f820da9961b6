package datapath_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// datapathPkgs are the datapath packages (DESIGN.md §4), under internal/.
var datapathPkgs = []string{
	"packet", "maglev", "flow", "encap", "pipeline", "datapath",
	"link", "link/mem", "link/afpacket", "link/afxdp", "link/stack",
	"nat", "firewall", "offload",
}

// forbiddenDeps are what no datapath package may depend on: configuration
// formats, HTTP, BGP, metrics libraries, the CLI, and the control-plane
// packages (the node server, next-hop resolution, the cluster).
var forbiddenDeps = []string{
	"github.com/sluicelb/sluice/internal/config",
	"github.com/sluicelb/sluice/internal/control",
	"github.com/sluicelb/sluice/internal/announce",
	"github.com/sluicelb/sluice/internal/health",
	"github.com/sluicelb/sluice/internal/cluster",
	"github.com/sluicelb/sluice/internal/lbnode",
	"github.com/sluicelb/sluice/internal/nexthop",
	"github.com/sluicelb/sluice/internal/agent",
	"github.com/sluicelb/sluice/internal/lab",
	"github.com/sluicelb/sluice/cmd",
	"github.com/vishvananda/netlink",
	"net/http",
	"gopkg.in/yaml",
	"github.com/osrg/gobgp",
	"github.com/prometheus",
	"github.com/spf13/cobra",
	"google.golang.org/grpc",
	"github.com/quic-go", // QUIC-LB decoding is internal/quiclb alone
}

// allowedDeps are the exceptions: link/afxdp attaches its XDP program to
// the interface over netlink (the only datapath package that talks to the
// kernel's link configuration).
var allowedDeps = map[string][]string{
	"link/afxdp": {"github.com/vishvananda/netlink"},
}

// The datapath packages never depend on control-plane code (DESIGN.md §4).
func TestDatapathImportsNoControlPlane(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, p := range datapathPkgs {
		pkg := "github.com/sluicelb/sluice/internal/" + p
		out, err := exec.Command(goBin, "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		for _, f := range forbiddenDeps {
			if dep := dependsOn(deps, f); dep != "" && !allowed(p, dep) {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
}

// dependsOn returns the first of deps that is pkg or one of its
// subpackages, or "".
func dependsOn(deps []string, pkg string) string {
	for _, d := range deps {
		if d == pkg || strings.HasPrefix(d, pkg+"/") {
			return d
		}
	}
	return ""
}

// allowed reports whether datapath package p may depend on dep.
func allowed(p, dep string) bool {
	for _, a := range allowedDeps[p] {
		if dependsOn([]string{dep}, a) != "" {
			return true
		}
	}
	return false
}

// The boundary check itself: it catches a dependency that is there, and
// lets the one exception through.
func TestDependsOn(t *testing.T) {
	deps := []string{"fmt", "github.com/vishvananda/netlink/nl", "github.com/sluicelb/sluice/internal/lbnode"}
	if got := dependsOn(deps, "github.com/vishvananda/netlink"); got != "github.com/vishvananda/netlink/nl" {
		t.Errorf("netlink: got %q", got)
	}
	if got := dependsOn(deps, "github.com/sluicelb/sluice/internal/lb"); got != "" {
		t.Errorf("internal/lb matched %q (a prefix of a name is not a subpackage)", got)
	}
	if !allowed("link/afxdp", "github.com/vishvananda/netlink/nl") {
		t.Error("link/afxdp may use netlink and its subpackages")
	}
	if allowed("link/afpacket", "github.com/vishvananda/netlink") || allowed("link/afxdp", "github.com/sluicelb/sluice/internal/nexthop") {
		t.Error("only link/afxdp, and only netlink, is an exception")
	}
}
