package lbnode

import (
	"net/netip"
	"slices"
	"testing"
)

// Announcements lists each VIP address once while one of its backends is
// in service; draining backends and weight 0 do not count; node drain
// withdraws everything and tells the announcer.
func TestAnnouncements(t *testing.T) {
	cfg := mustParse(t, `
node: {interfaces: [eth0]}
vips:
  - {name: web, address: 198.18.0.10, protocol: tcp, port: 80, backends: [{address: 198.18.30.11}]}
  - {name: web443, address: 198.18.0.10, protocol: tcp, port: 443, backends: [{address: 198.18.30.11}]}
  - {name: web6, address: "2001:db8::10", protocol: tcp, port: 80, backends: [{address: "2001:db8:30::11"}]}
  - {name: drained, address: 198.18.0.11, protocol: tcp, port: 80, backends: [{address: 198.18.30.11, state: draining}, {address: 198.18.30.12, weight: 0}]}
`)
	fa := &fakeAnnouncer{}
	n := testNode(t, cfg, fa)
	want := []netip.Prefix{netip.MustParsePrefix("198.18.0.10/32"), netip.MustParsePrefix("2001:db8::10/128")}
	if a := n.Announcements(); !slices.Equal(a, want) {
		t.Fatalf("Announcements() = %v, want %v", a, want)
	}
	if !n.SetDraining(true) || n.SetDraining(true) || !n.Draining() {
		t.Fatal("SetDraining(true) twice: want true, then false")
	}
	if a := n.Announcements(); len(a) != 0 {
		t.Fatalf("drained node announces %v", a)
	}
	if !n.SetDraining(false) {
		t.Fatal("undrain changed nothing")
	}
	// The first generation's set, the drain's and the undrain's.
	if got := fa.sets; len(got) != 3 || !slices.Equal(got[0], want) || len(got[1]) != 0 || !slices.Equal(got[2], want) {
		t.Fatalf("announcer calls %v", got)
	}
}
