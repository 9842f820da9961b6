package config

import (
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/firewall"
	"github.com/sluicelb/sluice/internal/packet"
)

func TestFirewallCompiles(t *testing.T) {
	c, err := Parse([]byte(`
node:
  interfaces: [eth0]
vips:
  - name: web
    address: 198.18.0.10
    protocol: tcp
    port: 80
    firewall:
      rules:
        - name: block-lab
          action: deny
          src: 198.18.10.2
          proto: tcp
          ports: 80
        - action: allow
          src: 198.18.10.0/24
          src_ports: 1024-65535
    backends:
      - address: 198.18.30.11
`))
	if err != nil {
		t.Fatal(err)
	}
	f := c.VIPs[0].Firewall
	if f.Default != FirewallAllow {
		t.Fatalf("default %q", f.Default)
	}
	set, err := f.Compile()
	if err != nil {
		t.Fatal(err)
	}
	tuple := func(src string, sport uint16) *packet.Tuple {
		return &packet.Tuple{Src: netip.MustParseAddr(src).As16(), Dst: netip.MustParseAddr("198.18.0.10").As16(), SrcPort: sport, DstPort: 80, Proto: 6, IPVersion: 4}
	}
	for _, tc := range []struct {
		src   string
		sport uint16
		want  firewall.Action
		rule  int
	}{
		{"198.18.10.2", 40000, firewall.Deny, 0},
		{"198.18.10.3", 40000, firewall.Allow, 1},
		{"198.18.10.3", 53, firewall.Allow, -1},
		{"198.18.11.3", 40000, firewall.Allow, -1},
	} {
		if a, r := set.Match(tuple(tc.src, tc.sport)); a != tc.want || r != tc.rule {
			t.Errorf("%s:%d: %v rule %d, want %v rule %d", tc.src, tc.sport, a, r, tc.want, tc.rule)
		}
	}
	if set.Rule(0).Name != "block-lab" || set.Rule(0).DstPorts != (firewall.PortRange{Lo: 80, Hi: 80}) {
		t.Fatalf("rule 0: %+v", set.Rule(0))
	}
}
