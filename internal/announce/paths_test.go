package announce

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

func pfx(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func setOf(ss ...string) prefixSet {
	m := prefixSet{}
	for _, p := range pfx(ss...) {
		m[p] = netip.Addr{}
	}
	return m
}

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name       string
		have, want prefixSet
		add, del   []netip.Prefix
	}{
		{"empty", nil, nil, nil, nil},
		{"first set", nil, setOf("10.0.0.2/32", "10.0.0.1/32", "2001:db8::1/128"),
			pfx("10.0.0.1/32", "10.0.0.2/32", "2001:db8::1/128"), nil},
		{"same set", setOf("10.0.0.1/32", "2001:db8::1/128"), setOf("2001:db8::1/128", "10.0.0.1/32"), nil, nil},
		{"fewer", setOf("10.0.0.1/32", "10.0.0.2/32", "2001:db8::1/128"), setOf("10.0.0.2/32"),
			nil, pfx("10.0.0.1/32", "2001:db8::1/128")},
		{"replace", setOf("10.0.0.1/32", "10.0.0.2/32"), setOf("10.0.0.2/32", "10.0.0.3/32"),
			pfx("10.0.0.3/32"), pfx("10.0.0.1/32")},
		{"all gone", setOf("10.0.0.1/32", "2001:db8::1/128"), prefixSet{}, nil, pfx("10.0.0.1/32", "2001:db8::1/128")},
		{"next hop changed", setOf("10.0.0.1/32", "10.0.0.2/32"),
			prefixSet{netip.MustParsePrefix("10.0.0.1/32"): netip.MustParseAddr("10.9.0.5"), netip.MustParsePrefix("10.0.0.2/32"): {}},
			pfx("10.0.0.1/32"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			add, del := diff(tc.have, tc.want)
			if !slices.Equal(add, tc.add) || !slices.Equal(del, tc.del) {
				t.Errorf("diff = +%v -%v, want +%v -%v", add, del, tc.add, tc.del)
			}
			// Applying the diff to have gives want.
			got := prefixSet{}
			for p := range tc.have {
				got[p] = netip.Addr{}
			}
			for _, p := range add {
				got[p] = netip.Addr{}
			}
			for _, p := range del {
				delete(got, p)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("have+add-del = %v, want %v", got, tc.want)
			}
			for p := range tc.want {
				if _, ok := got[p]; !ok {
					t.Fatalf("have+add-del = %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestSetChecksPrefixes(t *testing.T) {
	v4only := validConfig() // one IPv4 peer, no next hops configured
	with6 := validConfig()
	with6.NextHop6 = netip.MustParseAddr("2001:db8::10")
	v6peer := validConfig()
	v6peer.Peers[0].Address = netip.MustParseAddr("2001:db8::1")
	for _, tc := range []struct {
		name   string
		cfg    Config
		prefix netip.Prefix
		ok     bool
	}{
		{"v4 host", v4only, netip.MustParsePrefix("192.0.2.1/32"), true},
		{"v6 over v4 session without NextHop6", v4only, netip.MustParsePrefix("2001:db8:1::1/128"), false},
		{"v6 over v4 session with NextHop6", with6, netip.MustParsePrefix("2001:db8:1::1/128"), true},
		{"v6 over v6 session", v6peer, netip.MustParsePrefix("2001:db8:1::1/128"), true},
		{"v4 over v6 session without NextHop4", v6peer, netip.MustParsePrefix("192.0.2.1/32"), false},
		{"not a host route", v4only, netip.MustParsePrefix("192.0.2.0/24"), false},
		{"not masked", v4only, netip.PrefixFrom(netip.MustParseAddr("192.0.2.1"), 24), false},
		{"v6 not a host route", with6, netip.MustParsePrefix("2001:db8:1::/64"), false},
		{"mapped", with6, netip.MustParsePrefix("::ffff:192.0.2.1/128"), false},
		{"invalid", v4only, netip.Prefix{}, false},
		{"loopback", v4only, netip.MustParsePrefix("127.0.0.1/32"), false},
		{"multicast", v4only, netip.MustParsePrefix("239.1.1.1/32"), false},
		{"unspecified", v4only, netip.MustParsePrefix("0.0.0.0/32"), false},
		{"link-local", with6, netip.MustParsePrefix("fe80::1/128"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			good, other := pfx("198.51.100.1/32"), pfx("198.51.100.2/32")
			if tc.cfg.Peers[0].Address.Is6() {
				good, other = pfx("2001:db8:2::1/128"), pfx("2001:db8:2::2/128")
			}
			if err := s.Set(good); err != nil {
				t.Fatal(err)
			}
			err = s.Set(append(other, tc.prefix))
			if tc.ok {
				if err != nil {
					t.Fatalf("Set: %v", err)
				}
				return
			}
			var pe *PrefixError
			if !errors.As(err, &pe) || !errors.Is(err, ErrPrefix) || pe.Index != 1 || pe.Prefix != tc.prefix {
				t.Fatalf("Set = %v, want a *PrefixError for prefixes[1]", err)
			}
			t.Log(err)
			if got := s.Prefixes(); !slices.Equal(got, good) {
				t.Errorf("a refused Set changed the set to %v", got)
			}
		})
	}
}

func TestSetReplacesAndDeduplicates(t *testing.T) {
	c := validConfig()
	c.NextHop6 = netip.MustParseAddr("2001:db8::10")
	s, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set(pfx("192.0.2.2/32", "2001:db8:1::1/128", "192.0.2.1/32", "192.0.2.2/32")); err != nil {
		t.Fatal(err)
	}
	if got, want := s.Prefixes(), pfx("192.0.2.1/32", "192.0.2.2/32", "2001:db8:1::1/128"); !slices.Equal(got, want) {
		t.Errorf("Prefixes = %v, want %v", got, want)
	}
	if err := s.Set(nil); err != nil {
		t.Fatal(err)
	}
	if got := s.Prefixes(); len(got) != 0 {
		t.Errorf("Prefixes after Set(nil) = %v", got)
	}
	st := s.Peers()
	if len(st) != 1 || st[0].State != "idle" || st[0].Address != c.Peers[0].Address || st[0].ASN != 65001 {
		t.Errorf("Peers before Run = %+v", st)
	}
}

// SetRoutes checks each route's own next hop: of the route's family and
// global unicast; with one, an IPv6 route over an IPv4 session needs no
// NextHop6. Routes lists what was set.
func TestSetRoutesNextHops(t *testing.T) {
	s, err := New(validConfig(), nil) // an IPv4 peer, no NextHop6
	if err != nil {
		t.Fatal(err)
	}
	v4, v6 := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8:1::1/128")
	good := []Route{{Prefix: v4, NextHop: netip.MustParseAddr("192.0.2.77")}, {Prefix: v6, NextHop: netip.MustParseAddr("2001:db8::77")}}
	if err := s.SetRoutes(good); err != nil {
		t.Fatal(err)
	}
	if got := s.Routes(); !slices.Equal(got, good) {
		t.Errorf("Routes = %v, want %v", got, good)
	}
	for _, tc := range []struct {
		r    Route
		want string
	}{
		{Route{Prefix: v4, NextHop: netip.MustParseAddr("2001:db8::77")}, "not of the route's family"},
		{Route{Prefix: v6, NextHop: netip.MustParseAddr("192.0.2.77")}, "not of the route's family"},
		{Route{Prefix: v4, NextHop: netip.MustParseAddr("127.0.0.1")}, "not a global unicast address"},
		{Route{Prefix: v6, NextHop: netip.MustParseAddr("fe80::1")}, "not a global unicast address"},
		{Route{Prefix: v6}, "needs Config.NextHop6"},
	} {
		err := s.SetRoutes([]Route{good[0], tc.r})
		var pe *PrefixError
		if !errors.As(err, &pe) || pe.Index != 1 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SetRoutes(%v) = %v, want %q", tc.r, err, tc.want)
		}
	}
	if got := s.Routes(); !slices.Equal(got, good) {
		t.Errorf("a refused SetRoutes changed the routes to %v", got)
	}
}

func TestPaths(t *testing.T) {
	c := validConfig()
	c.Communities = []string{"65000:100", "65000:200"}
	c.NextHop6 = netip.MustParseAddr("2001:db8::10")
	b := newPathBuilder(c.withDefaults())
	for _, tc := range []struct {
		prefix  string
		family  bgp.Family
		set     string // the route's own next hop (bypass); "": the node's
		nextHop string
	}{
		{"192.0.2.1/32", bgp.RF_IPv4_UC, "", "0.0.0.0"}, // the session's local address
		{"2001:db8:1::1/128", bgp.RF_IPv6_UC, "", "2001:db8::10"},
		{"192.0.2.1/32", bgp.RF_IPv4_UC, "192.0.2.77", "192.0.2.77"}, // third party
		{"2001:db8:1::1/128", bgp.RF_IPv6_UC, "2001:db8::77", "2001:db8::77"},
	} {
		p := netip.MustParsePrefix(tc.prefix)
		var set netip.Addr
		if tc.set != "" {
			set = netip.MustParseAddr(tc.set)
		}
		for _, withdraw := range []bool{false, true} {
			path, err := b.path(p, set, withdraw)
			if err != nil {
				t.Fatal(err)
			}
			if path.Family != tc.family || path.Withdrawal != withdraw {
				t.Errorf("%s: family %v withdraw %v", p, path.Family, path.Withdrawal)
			}
			if got := path.Nlri.(*bgp.IPAddrPrefix).Prefix; got != p {
				t.Errorf("NLRI %v, want %v", got, p)
			}
			var nh netip.Addr
			var comms []uint32
			for _, a := range path.Attrs {
				switch a := a.(type) {
				case *bgp.PathAttributeNextHop:
					nh = a.Value
				case *bgp.PathAttributeMpReachNLRI:
					nh = a.Nexthop
					if a.AFI != bgp.AFI_IP6 || a.SAFI != bgp.SAFI_UNICAST {
						t.Errorf("MP_REACH family %d/%d", a.AFI, a.SAFI)
					}
				case *bgp.PathAttributeCommunities:
					comms = a.Value
				}
			}
			if nh.String() != tc.nextHop {
				t.Errorf("%s: next hop %v, want %s", p, nh, tc.nextHop)
			}
			if !slices.Equal(comms, []uint32{65000<<16 | 100, 65000<<16 | 200}) {
				t.Errorf("%s: communities %v", p, comms)
			}
		}
	}
}
