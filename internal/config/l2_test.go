package config

import (
	"strings"
	"testing"
)

func TestL2Section(t *testing.T) {
	doc := `node:
  interfaces: [eth0]
  l2: {}
vips:
  - {name: web4, address: 198.18.0.10, protocol: tcp, port: 80, backends: [{address: 198.18.30.101}]}
  - {name: dns4, address: 198.18.0.10, protocol: udp, port: 53, backends: [{address: 198.18.30.101}]}
  - {name: web6, address: "2001:db8::10", protocol: tcp, port: 80, backends: [{address: "2001:db8:30::101"}]}
`
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Node.L2
	if l.Interface != "eth0" || *l.Gratuitous != DefaultL2Gratuitous || l.GratuitousInterval != DefaultL2GratuitousInterval ||
		l.SyncWait != DefaultL2SyncWait || l.Settle != DefaultL2Settle || l.ShutdownGrace != DefaultL2ShutdownGrace {
		t.Errorf("defaults: %+v", l)
	}
	if got := l.Addrs(c); len(got) != 2 || got[0].String() != "198.18.0.10" || got[1].String() != "2001:db8::10" {
		t.Errorf("addresses %v", got)
	}
	c, err = Parse([]byte(strings.Replace(doc, "l2: {}", "l2: {vips: [\"2001:db8::10\"], gratuitous: 0}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Node.L2.Addrs(c); len(got) != 1 || *c.Node.L2.Gratuitous != 0 {
		t.Errorf("vips: %v, gratuitous %d", got, *c.Node.L2.Gratuitous)
	}
	for _, tc := range []struct{ l2, want string }{
		{`l2: {vips: [198.18.0.11]}`, "node.l2.vips[0]: 198.18.0.11 is the address of no VIP"},
		{`l2: {vips: [nope]}`, `node.l2.vips[0]: "nope" is not an IP address`},
		{`l2: {gratuitous: -1}`, "node.l2.gratuitous: -1 is not between 0 and 100"},
		{`l2: {gratuitous_interval: 20s}`, "node.l2.gratuitous_interval: 20s is not between 1ms and 10s"},
		{"interfaces: [eth1]\n  l2: {}", "node.l2.interface: is required"},
		{"l2: {}\n  offload: auto", "node.offload: auto with node.l2 and an IPv6 VIP (2001:db8::10)"},
		{"l2: {}\n  bgp: {asn: 65001, router_id: 198.18.30.11, peers: [{address: 198.18.30.1, asn: 65000}]}", "node.l2: set excludes node.bgp"},
	} {
		d := strings.Replace(doc, "l2: {}", tc.l2, 1)
		if strings.HasPrefix(tc.l2, "interfaces") {
			d = strings.Replace(doc, "interfaces: [eth0]\n  l2: {}", "interfaces: [eth0, eth1]\n  l2: {}", 1)
		}
		_, err := Parse([]byte(d))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.l2, err, tc.want)
		}
	}
}
