package lbnode

import (
	"errors"
	"testing"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/health"
)

// Health lists the checked backends with their state and the transitions
// healthChanged counted; a removed check's counts are forgotten.
func TestHealth(t *testing.T) {
	cfg, err := config.Parse([]byte(`
node: {interfaces: [eth0]}
vips:
  - name: web
    address: 198.18.0.10
    protocol: tcp
    port: 80
    health: {type: tcp}
    backends: [{address: 198.18.30.11}, {address: 198.18.30.12}]
  - {name: dns, address: 198.18.0.11, protocol: udp, port: 53, backends: [{address: 198.18.30.13}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: cfg, checks: health.NewChecker(nil), checkKeys: map[string]bool{}}
	n.setChecks()
	k1 := healthKey("web", "198.18.30.11")
	n.countTransition(health.Transition{Key: k1, From: health.Unknown, To: health.Up})
	n.countTransition(health.Transition{Key: k1, From: health.Up, To: health.Down, Err: errors.New("refused")})
	n.countTransition(health.Transition{Key: k1, From: health.Down, To: health.Up})
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

	n.cfg.VIPs[0].Backends = n.cfg.VIPs[0].Backends[1:]
	n.setChecks()
	if _, ok := n.transitions[k1]; ok || len(n.Health()) != 1 {
		t.Fatalf("removed check still reported: %+v", n.Health())
	}
}
