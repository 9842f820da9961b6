package lbnode

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/nexthop"
)

// A route's neighbour must be on-link: one the kernel reaches through a
// gateway would take the backend's packets elsewhere than the route says.
func TestHopProblem(t *testing.T) {
	be := netip.MustParseAddr("198.18.30.102")
	via := netip.MustParseAddr("198.18.30.1")
	far := netip.MustParseAddr("198.18.99.1")
	gw := netip.MustParseAddr("198.18.30.254")
	ifaces := []string{"eth0"}
	for _, tc := range []struct {
		name    string
		a, to   netip.Addr
		hop     nexthop.Hop
		problem string // "" none
	}{
		{"direct, on-link", be, be, nexthop.Hop{Dst: be, Via: be, Ifname: "eth0"}, ""},
		{"direct, through a gateway", be, be, nexthop.Hop{Dst: be, Via: gw, Ifname: "eth0"}, ""},
		{"routed, neighbour on-link", be, via, nexthop.Hop{Dst: via, Via: via, Ifname: "eth0"}, ""},
		{"routed, neighbour behind a gateway", be, far, nexthop.Hop{Dst: far, Via: gw, Ifname: "eth0"}, "not on-link"},
		{"another interface", be, be, nexthop.Hop{Dst: be, Via: be, Ifname: "eth1"}, "not a configured interface"},
	} {
		got := hopProblem(tc.a, tc.to, tc.hop, ifaces)
		if (got == "") != (tc.problem == "") || tc.problem != "" && !strings.Contains(got, tc.problem) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.problem)
		}
	}
}
