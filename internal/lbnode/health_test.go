package lbnode

import (
	"context"
	"errors"
	"testing"

	"github.com/sluicelb/sluice/internal/health"
)

// Health lists the checked backends with their state and the transitions
// the node applied; a removed check's counts are forgotten.
func TestHealth(t *testing.T) {
	doc := `
node: {interfaces: [eth0]}
vips:
  - name: web
    address: 198.18.0.10
    protocol: tcp
    port: 80
    health: {type: tcp}
    backends: [{address: 198.18.30.11}, {address: 198.18.30.12}]
  - {name: dns, address: 198.18.0.11, protocol: udp, port: 53, backends: [{address: 198.18.30.13}]}
`
	n := testNode(t, mustParse(t, doc), nil)
	k1 := healthKey("web", "198.18.30.11")
	n.healthChanged(health.Transition{Key: k1, From: health.Unknown, To: health.Up})
	n.healthChanged(health.Transition{Key: k1, From: health.Up, To: health.Down, Err: errors.New("refused")})
	n.healthChanged(health.Transition{Key: k1, From: health.Down, To: health.Up})
	got := n.Health()
	want := []health.Backend{
		{VIP: "web", Backend: "198.18.30.11", State: health.Unknown, Up: 2, Down: 1},
		{VIP: "web", Backend: "198.18.30.12", State: health.Unknown},
	}
	if len(got) != len(want) {
		t.Fatalf("Health() = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Health()[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}

	cfg := mustParse(t, doc)
	cfg.VIPs[0].Backends = cfg.VIPs[0].Backends[1:]
	if err := n.Apply(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if h := n.Health(); len(h) != 1 || h[0].Backend != "198.18.30.12" {
		t.Fatalf("removed check still reported: %+v", h)
	}
	cfg = mustParse(t, doc)
	if err := n.Apply(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if h := n.Health(); len(h) != 2 || h[0].Up != 0 || h[0].Down != 0 {
		t.Fatalf("a check added again starts from zero: %+v", h)
	}
}
