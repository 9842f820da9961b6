package lbnode

import (
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/health"
)

// Announcements lists each VIP address once while one of its backends is
// in service; draining backends and weight 0 do not count; node drain
// withdraws everything and tells the announcer.
func TestAnnouncements(t *testing.T) {
	cfg, err := config.Parse([]byte(`
node: {interfaces: [eth0]}
vips:
  - {name: web, address: 198.18.0.10, protocol: tcp, port: 80, backends: [{address: 198.18.30.11}]}
  - {name: web443, address: 198.18.0.10, protocol: tcp, port: 443, backends: [{address: 198.18.30.11}]}
  - {name: web6, address: "2001:db8::10", protocol: tcp, port: 80, backends: [{address: "2001:db8:30::11"}]}
  - {name: drained, address: 198.18.0.11, protocol: tcp, port: 80, backends: [{address: 198.18.30.11, state: draining}, {address: 198.18.30.12, weight: 0}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	var got [][]netip.Prefix
	n := &Node{cfg: cfg, checks: health.NewChecker(nil), checkKeys: map[string]bool{}, log: slog.New(slog.DiscardHandler),
		announce: func(p []netip.Prefix) { got = append(got, p) }}
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
	if len(got) != 2 || len(got[0]) != 0 || !slices.Equal(got[1], want) {
		t.Fatalf("announcer calls %v", got)
	}
}
