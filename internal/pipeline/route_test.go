package pipeline

import (
	"net/netip"
	"testing"
)

func TestLookupRoute(t *testing.T) {
	rt := func(p, via string) RouteSpec {
		return RouteSpec{Prefix: netip.MustParsePrefix(p), Via: netip.MustParseAddr(via)}
	}
	routes := []RouteSpec{
		rt("198.18.0.0/16", "198.18.30.1"),
		rt("198.18.30.0/24", "198.18.30.2"),
		rt("198.18.30.102/32", "198.18.30.3"),
		rt("0.0.0.0/0", "198.18.30.4"),
		rt("2001:db8::/32", "2001:db8:30::1"),
		rt("198.18.30.0/24", "198.18.30.9"), // the same prefix again: the first wins
	}
	for _, tc := range []struct {
		addr, via string // via "": no route
		routes    []RouteSpec
	}{
		{"198.18.30.102", "198.18.30.3", routes},
		{"198.18.30.103", "198.18.30.2", routes},
		{"198.18.31.1", "198.18.30.1", routes},
		{"192.0.2.1", "198.18.30.4", routes},
		{"::ffff:198.18.30.103", "198.18.30.2", routes}, // IPv4-mapped: as IPv4
		{"2001:db8:30::101", "2001:db8:30::1", routes},
		{"2001:db9::1", "", routes},
		{"192.0.2.1", "", routes[:3]},
		{"198.18.30.102", "", nil},
	} {
		r, ok := LookupRoute(tc.routes, netip.MustParseAddr(tc.addr))
		if got := ""; ok != (tc.via != "") || ok && r.Via.String() != tc.via {
			if ok {
				got = r.String()
			}
			t.Errorf("%s: route %q (found %v), want via %q", tc.addr, got, ok, tc.via)
		}
	}
}

// The route stage drops, on a flow's first packet, what goes to a backend
// without a resolved next hop, and the backend keeps the route that chose
// its next hop.
func TestRouteStage(t *testing.T) {
	unresolved := be("198.18.30.12", 1)
	unresolved.NoNextHop = true
	routed := be("198.18.30.13", 1)
	routed.Route = RouteSpec{Prefix: netip.MustParsePrefix("198.18.30.13/32"), Via: netip.MustParseAddr("198.18.30.1")}
	g, err := NewBuilder().Build(Spec{Services: []ServiceSpec{svc("web", "198.18.0.10", 6, 80, 0, be("198.18.30.11", 1), unresolved, routed)}})
	if err != nil {
		t.Fatal(err)
	}
	var c Context
	c.Gen = g
	pkts := make([]*Packet, 0, 3)
	for _, r := range g.Services[0].Reals {
		pkts = append(pkts, &Packet{Real: r, Verdict: Continue})
	}
	Route{}.Process(&c, pkts)
	for _, p := range pkts {
		want := Continue
		if p.Real.Name == "198.18.30.12" {
			want = Drop
		}
		if p.Verdict != want || want == Drop && p.Reason != ReasonNoNextHop {
			t.Errorf("%s: %v %v", p.Real.Name, p.Verdict, p.Reason)
		}
		if (p.Real.Name == "198.18.30.13") != p.Real.Route.Prefix.IsValid() {
			t.Errorf("%s: route %v", p.Real.Name, p.Real.Route)
		}
	}
}
