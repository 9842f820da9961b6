package pipeline

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/encap"
)

var (
	lb  = netip.MustParseAddr("198.18.0.2")
	lb6 = netip.MustParseAddr("2001:db8::2")
)

func be(addr string, weight uint32) BackendSpec {
	a := netip.MustParseAddr(addr)
	src := lb
	if a.Is6() {
		src = lb6
	}
	return BackendSpec{Weight: weight, Tunnel: encap.Tunnel{Mode: encap.GUE, Src: src, Dst: a}}
}

func svc(name, addr string, proto uint8, port, end uint16, bes ...BackendSpec) ServiceSpec {
	return ServiceSpec{Name: name, Addr: netip.MustParseAddr(addr), Proto: proto, Port: port, PortEnd: end, Backends: bes}
}

func TestBuildRejects(t *testing.T) {
	ok := be("198.18.1.1", 1)
	for _, tc := range []struct {
		name string
		spec Spec
		want string
	}{
		{"no address", Spec{Services: []ServiceSpec{{Name: "a", Proto: 6, Port: 80}}}, "services[0] (a): address is not set"},
		{"protocol", Spec{Services: []ServiceSpec{svc("a", "198.18.0.10", 1, 80, 0, ok)}}, "protocol 1 is not tcp"},
		{"reversed range", Spec{Services: []ServiceSpec{svc("a", "198.18.0.10", 6, 90, 80, ok)}}, "port range 90-80 is reversed"},
		{"overlap", Spec{Services: []ServiceSpec{
			svc("a", "198.18.0.10", 6, 80, 90, ok), svc("b", "198.18.0.10", 6, 85, 0, ok),
		}}, "services[1] (b): ports 85-85 overlap service a"},
		{"overlap all ports", Spec{Services: []ServiceSpec{
			svc("a", "198.18.0.10", 6, 80, 0, ok), svc("b", "198.18.0.10", 6, 0, 0, ok),
		}}, "overlap service a"},
		{"duplicate backend", Spec{Services: []ServiceSpec{svc("a", "198.18.0.10", 6, 80, 0, ok, ok)}}, `backends[1]: duplicate backend "198.18.1.1"`},
		{"mixed families", Spec{Services: []ServiceSpec{svc("a", "198.18.0.10", 6, 80, 0, ok, be("2001:db8::5", 1))}}, "mixes address families"},
		{"bad tunnel", Spec{Services: []ServiceSpec{svc("a", "198.18.0.10", 6, 80, 0, BackendSpec{Weight: 1})}}, "backends[0]"},
		{"maglev size", Spec{Services: []ServiceSpec{{Name: "a", Addr: netip.MustParseAddr("198.18.0.10"), Proto: 6, Port: 80, M: 100, Backends: []BackendSpec{ok}}}}, "maglev"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBuilder()
			g, err := b.Build(tc.spec)
			if err == nil {
				t.Fatalf("built generation %d, want error %q", g.ID, tc.want)
			}
			if !errors.Is(err, ErrSpec) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q and wrap ErrSpec", err, tc.want)
			}
			if b.Current() != nil {
				t.Fatal("a rejected spec changed the builder")
			}
		})
	}
}

func TestLookup(t *testing.T) {
	g, err := NewBuilder().Build(Spec{Services: []ServiceSpec{
		svc("web", "198.18.0.10", 6, 80, 0, be("198.18.1.1", 1)),
		svc("range", "198.18.0.10", 6, 8000, 8099, be("198.18.1.2", 1)),
		svc("dns", "198.18.0.10", 17, 0, 0, be("198.18.1.3", 1)),
		svc("v6", "2001:db8::10", 6, 443, 0, be("2001:db8:1::1", 1)),
	}})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("198.18.0.10").As16()
	for _, tc := range []struct {
		addr  [16]byte
		proto uint8
		port  uint16
		want  string
	}{
		{a, 6, 80, "web"},
		{a, 6, 81, ""},
		{a, 6, 8000, "range"},
		{a, 6, 8099, "range"},
		{a, 6, 8100, ""},
		{a, 17, 53, "dns"},
		{a, 17, 0, "dns"},
		{netip.MustParseAddr("2001:db8::10").As16(), 6, 443, "v6"},
		{netip.MustParseAddr("198.18.0.11").As16(), 6, 80, ""},
	} {
		got := ""
		if s := g.Lookup(tc.addr, tc.proto, tc.port); s != nil {
			got = s.Name
		}
		if got != tc.want {
			t.Errorf("Lookup(%v, %d, %d) = %q, want %q", netip.AddrFrom16(tc.addr).Unmap(), tc.proto, tc.port, got, tc.want)
		}
	}
}

// Backend IDs are connection state held in flow entries: they must survive
// rebuilds while the backend stays, and never be handed to another backend.
func TestRealIDsStable(t *testing.T) {
	b := NewBuilder()
	g1, err := b.Build(Spec{Services: []ServiceSpec{svc("web", "198.18.0.10", 6, 80, 0, be("198.18.1.1", 1), be("198.18.1.2", 1))}})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]uint32{}
	for _, r := range g1.Services[0].Reals {
		ids[r.Name] = r.ID
	}
	// Reorder, drain one, remove one, add one, add a service in front.
	g2, err := b.Build(Spec{Services: []ServiceSpec{
		svc("other", "198.18.0.11", 6, 80, 0, be("198.18.1.1", 1)),
		svc("web", "198.18.0.10", 6, 80, 0, be("198.18.1.3", 1), be("198.18.1.1", 0)),
	}})
	if err != nil {
		t.Fatal(err)
	}
	web := g2.Services[1]
	seen := map[uint32]string{}
	for _, s := range g2.Services {
		for _, r := range s.Reals {
			if r == nil {
				continue
			}
			if other, dup := seen[r.ID]; dup {
				t.Fatalf("ID %d given to %s and %s", r.ID, other, r.Name)
			}
			seen[r.ID] = s.Name + "/" + r.Name
			if g2.Reals[r.ID] != r {
				t.Fatalf("Reals[%d] is not %s", r.ID, r.Name)
			}
		}
	}
	for _, r := range web.Reals {
		switch {
		case r == nil:
		case r.Name == "198.18.1.1" && r.ID != ids["198.18.1.1"]:
			t.Errorf("kept backend changed ID %d -> %d", ids["198.18.1.1"], r.ID)
		case r.Name == "198.18.1.3" && (r.ID == ids["198.18.1.2"] || r.ID == ids["198.18.1.1"]):
			t.Errorf("new backend reuses ID %d", r.ID)
		}
	}
	if int(ids["198.18.1.2"]) < len(g2.Reals) && g2.Reals[ids["198.18.1.2"]] != nil {
		t.Error("removed backend still resolvable by its ID")
	}
	// A change made without the life cycle: the running generation's
	// owners are the previous owners, the removed backend among them.
	if _, ok := web.Table.Index("198.18.1.2"); !ok {
		t.Error("removed backend is not kept as a previous owner")
	}
	if g2.ID != g1.ID+1 {
		t.Errorf("generation %d after %d", g2.ID, g1.ID)
	}
}
