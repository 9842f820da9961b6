package lbnode

import (
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/pipeline"
)

// A new owner waits for its cluster member's sync only for VIPs whose
// flows use the owner chains now.
func TestL2NeedSync(t *testing.T) {
	v4, v6 := netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("2001:db8::10")
	g := &pipeline.Generation{Services: []*pipeline.Service{
		{Addr: v4.As16(), Chain: pipeline.ChainChanged},
		{Addr: v6.As16(), Chain: pipeline.ChainNever},
	}}
	if needSync(g, v4) || needSync(g, v6) || needSync(nil, v4) {
		t.Fatal("sync needed without chained flows")
	}
	g.Services[0].InFlight = true // an on-change VIP with a backend change in flight
	if !needSync(g, v4) || needSync(g, netip.MustParseAddr("198.18.0.11")) {
		t.Fatal("on-change in flight")
	}
	g.Services = append(g.Services, &pipeline.Service{Addr: v6.As16(), Chain: pipeline.ChainAlways})
	if !needSync(g, v6) {
		t.Fatal("affinity always")
	}
}
