package firewall_test

import (
	"fmt"
	"net/netip"

	"github.com/sluicelb/sluice/internal/firewall"
	"github.com/sluicelb/sluice/internal/packet"
)

func Example() {
	set, err := firewall.Compile([]firewall.Rule{
		{Name: "blocked", Action: firewall.Deny, Src: netip.MustParsePrefix("203.0.113.0/25")},
		{Name: "https", Action: firewall.Allow, Proto: 6, DstPorts: firewall.PortRange{Lo: 443, Hi: 443}},
	}, firewall.Deny)
	if err != nil {
		panic(err)
	}
	hits := set.NewCounters() // one per worker

	for _, src := range []string{"203.0.113.7:40000", "203.0.113.200:40000"} {
		s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort("198.18.0.10:443")
		t := packet.Tuple{Src: s.Addr().As16(), Dst: d.Addr().As16(), SrcPort: s.Port(), DstPort: d.Port(), Proto: 6, IPVersion: 4}
		verdict, rule := set.Match(&t)
		hits.Hit(rule)
		fmt.Println(src, verdict, set.Rule(rule).Name)
	}
	// Output:
	// 203.0.113.7:40000 deny blocked
	// 203.0.113.200:40000 allow https
}
