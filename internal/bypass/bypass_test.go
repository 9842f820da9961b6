package bypass

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/fielderr"
)

const head = `
node:
  interfaces: [eth0]
  bgp: {asn: 65001, router_id: 10.0.0.11, peers: [{address: 10.0.0.1, asn: 65000}]}
vips:
`

func parse(t *testing.T, vips string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(head + vips))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name string
		vips string
		down []string // "vip backend"
		// want per address: "" not bypassed, else the next hop
		want   map[string]string
		reason string // part of the first address's reason
	}{
		{name: "one service one backend", vips: `
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, backends: [{address: 10.0.0.21}]}
`, want: map[string]string{"198.18.0.10": "10.0.0.21"}, reason: "one backend in service (10.0.0.21)"},
		{name: "two services same backend", vips: `
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, backends: [{address: 10.0.0.21}]}
  - {name: b, address: 198.18.0.10, protocol: udp, port: 53, bypass: single-backend, backends: [{address: 10.0.0.21}]}
`, want: map[string]string{"198.18.0.10": "10.0.0.21"}},
		{name: "two services different backends", vips: `
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, backends: [{address: 10.0.0.21}]}
  - {name: b, address: 198.18.0.10, protocol: udp, port: 53, bypass: single-backend, backends: [{address: 10.0.0.22}]}
`, want: map[string]string{"198.18.0.10": ""}, reason: "a has backend 10.0.0.21, b has 10.0.0.22"},
		{name: "two backends", vips: `
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, backends: [{address: 10.0.0.21}, {address: 10.0.0.22}]}
`, want: map[string]string{"198.18.0.10": ""}, reason: "a has 2 backends in service"},
		{name: "second backend down", vips: `
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, backends: [{address: 10.0.0.21}, {address: 10.0.0.22}]}
`, down: []string{"a 10.0.0.22"}, want: map[string]string{"198.18.0.10": "10.0.0.21"}},
		{name: "only backend down", vips: `
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, backends: [{address: 10.0.0.21}]}
`, down: []string{"a 10.0.0.21"}, want: map[string]string{"198.18.0.10": ""}, reason: "no backend in service"},
		{name: "other backend draining", vips: `
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, backends: [{address: 10.0.0.21}, {address: 10.0.0.22, state: draining}]}
`, want: map[string]string{"198.18.0.10": ""}, reason: "10.0.0.22 draining"},
		{name: "only backend draining", vips: `
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, backends: [{address: 10.0.0.21, state: draining}]}
`, want: map[string]string{"198.18.0.10": ""}, reason: "is draining"},
		{name: "only backend weight 0", vips: `
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, backends: [{address: 10.0.0.21, weight: 0}]}
`, want: map[string]string{"198.18.0.10": ""}, reason: "weight 0"},
		{name: "off", vips: `
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, backends: [{address: 10.0.0.21}]}
  - {name: b, address: 198.18.0.11, protocol: tcp, port: 80, bypass: "off", backends: [{address: 10.0.0.21}]}
`, want: map[string]string{}},
		{name: "two addresses", vips: `
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, backends: [{address: 10.0.0.21}]}
  - {name: b, address: 198.18.0.11, protocol: tcp, port: 80, bypass: single-backend, backends: [{address: 10.0.0.21}, {address: 10.0.0.22}]}
  - {name: c, address: "2001:db8::10", protocol: tcp, port: 80, bypass: single-backend, backends: [{address: "2001:db8:30::21"}]}
`, want: map[string]string{"198.18.0.10": "10.0.0.21", "198.18.0.11": "", "2001:db8::10": "2001:db8:30::21"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := parse(t, tc.vips)
			down := func(vip, be string) bool {
				for _, d := range tc.down {
					if d == vip+" "+be {
						return true
					}
				}
				return false
			}
			ds := Decide(c, down)
			if len(ds) != len(tc.want) {
				t.Fatalf("%d decisions, want %d: %+v", len(ds), len(tc.want), ds)
			}
			for _, d := range ds {
				want, ok := tc.want[d.Addr.String()]
				if !ok {
					t.Fatalf("decision for %v not expected", d.Addr)
				}
				got := ""
				if d.Bypassed {
					got = d.NextHop.String()
				}
				if got != want {
					t.Errorf("%v: next hop %q, want %q (%s)", d.Addr, got, want, d.Reason)
				}
			}
			if tc.reason != "" && !strings.Contains(ds[0].Reason, tc.reason) {
				t.Errorf("reason %q lacks %q", ds[0].Reason, tc.reason)
			}
		})
	}
}

func TestFills(t *testing.T) {
	c := parse(t, `
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, second_chance: true, drain_period: 10s,
     backends: [{address: 10.0.0.21}, {address: 10.0.0.22}, {address: 10.0.0.23, weight: 0}, {address: 10.0.0.24}]}
  - {name: b, address: 198.18.0.10, protocol: udp, port: 53, bypass: single-backend, backends: [{address: 10.0.0.21}, {address: 10.0.0.22}]}
`)
	prev := Decision{Addr: netip.MustParseAddr("198.18.0.10"), Services: []string{"a", "b"}, Bypassed: true, NextHop: netip.MustParseAddr("10.0.0.21")}
	now := time.Unix(1000, 0)
	got := Fills(c, prev, now)
	// b has no life cycle (no second chance, no cluster): its new backend
	// is active at once. On a: not the bypass backend, not weight 0; one
	// that is down now (10.0.0.24, say) fills when it comes back.
	want := []Fill{{VIP: "a", Backend: "10.0.0.22", Until: now.Add(10 * time.Second)}, {VIP: "a", Backend: "10.0.0.24", Until: now.Add(10 * time.Second)}}
	if !slices.Equal(got, want) {
		t.Fatalf("Fills = %+v, want %+v", got, want)
	}
}

func TestCheckSubnets(t *testing.T) {
	c := parse(t, `
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, backends: [{address: 10.0.0.21}, {address: 10.9.0.5}]}
  - {name: b, address: "2001:db8::10", protocol: tcp, port: 80, bypass: single-backend, backends: [{address: "2001:db8:30::21"}, {address: "2001:db8:40::1"}]}
  - {name: c, address: 198.18.0.11, protocol: tcp, port: 80, backends: [{address: 10.9.0.5}]}
`)
	ifaces := []Interface{
		{Name: "eth0", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.11/24"), netip.MustParsePrefix("2001:db8:30::11/64")}},
		{Name: "eth1", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24"), netip.MustParsePrefix("2001:db8:40::2/64")}},
	}
	err := CheckSubnets(c, ifaces)
	if !errors.Is(err, ErrSubnet) {
		t.Fatalf("err = %v, want ErrSubnet", err)
	}
	var paths []string
	for _, e := range fielderr.All(err) {
		paths = append(paths, e.Path)
	}
	if strings.Join(paths, " ") != "vips[0].backends[1].address vips[1].backends[1].address" {
		t.Fatalf("refused %v:\n%v", paths, err)
	}
	if !strings.Contains(err.Error(), "vips[0].backends[1].address: 10.9.0.5 is not on a subnet this node shares with its BGP peers 10.0.0.1 (eth0 10.0.0.0/24)") {
		t.Errorf("message: %v", err)
	}
	// A peer on eth1 too makes every backend usable.
	c.Node.BGP.Peers = append(c.Node.BGP.Peers, config.BGPPeer{Address: "10.9.0.1", ASN: 65000})
	if err := CheckSubnets(c, ifaces); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`
node: {interfaces: [eth0]}
vips:
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, backends: [{address: 10.0.0.21}]}
`, "vips[0].bypass: single-backend needs node.bgp"},
		{head + `
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, bypass: always, backends: [{address: 10.0.0.21}]}
`, `vips[0].bypass: "always" is not off or single-backend`},
		{head + `
  - {name: a, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, backends: [{address: 10.0.0.21}]}
  - {name: b, address: 198.18.0.10, protocol: udp, port: 53, backends: [{address: 10.0.0.21}]}
`, "vips[1].bypass: off differs from vips[0] (a) on the same address"},
		{head + `
  - {name: a, address: "2001:db8::10", protocol: tcp, port: 80, bypass: single-backend, backends: [{address: 10.0.0.21}]}
`, "vips[0].backends[0].address: 10.0.0.21 differs in family from the VIP"},
	} {
		_, err := config.Parse([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}
