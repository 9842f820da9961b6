package control

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicelb/sluice/internal/bypass"
	"github.com/sluicelb/sluice/internal/control/controltest"
	"github.com/sluicelb/sluice/internal/fielderr"
)

const bypassDoc = `
node:
  interfaces: [eth0]
  bgp: {asn: 65001, router_id: 10.0.0.11, peers: [{address: 10.0.0.1, asn: 65000}]}
vips:
  - {name: single, address: 10.0.0.5, protocol: tcp, port: 80, bypass: single-backend, second_chance: true, backends: [{address: 10.1.0.1}]}
  - {name: two, address: 10.0.0.6, protocol: tcp, port: 80, bypass: single-backend, second_chance: true, backends: [{address: 10.1.0.1}, {address: 10.1.0.3}]}
  - {name: plain, address: 10.0.0.7, protocol: tcp, port: 80, backends: [{address: 10.1.0.1}]}
`

// vip list shows each bypass VIP's state, next hop and reason, and the
// backends filling after a scale-out; /metrics exports the state and the
// transitions.
func TestListVIPsBypass(t *testing.T) {
	n := controltest.NewConfig(bypassDoc)
	until := time.Unix(2000, 0)
	n.Filling = []bypass.Fill{{VIP: "two", Backend: "10.1.0.3", Until: until}}
	s := New(n)
	by := map[string]VIPStatus{}
	for _, v := range s.ListVIPs() {
		by[v.Name] = v
	}
	if b := by["single"].Bypass; b == nil || b.State != BypassBypassed || b.NextHop != "10.1.0.1" || !strings.Contains(b.Reason, "one backend in service") {
		t.Errorf("single: %+v", b)
	}
	if b := by["two"].Bypass; b == nil || b.State != BypassThroughLB || b.NextHop != "" || !strings.Contains(b.Reason, "2 backends in service") {
		t.Errorf("two: %+v", b)
	}
	if b := by["plain"].Bypass; b != nil {
		t.Errorf("plain: %+v, want no bypass", b)
	}
	for _, b := range by["two"].Backends {
		want := StateActive
		if b.Address == "10.1.0.3" {
			want = StateFilling
		}
		if b.State != want || (want == StateFilling) != b.CompletesAt.Equal(until) {
			t.Errorf("two: backend %+v, want %s", b, want)
		}
	}
	if err := testutil.CollectAndCompare(s.Collector(), strings.NewReader(`
# HELP sluice_vip_bypass_transitions_total Transitions of a VIP address with bypass single-backend into (entered) and out of (left) bypass on this node.
# TYPE sluice_vip_bypass_transitions_total counter
sluice_vip_bypass_transitions_total{address="10.0.0.5",direction="entered"} 1
sluice_vip_bypass_transitions_total{address="10.0.0.5",direction="left"} 0
sluice_vip_bypass_transitions_total{address="10.0.0.6",direction="entered"} 0
sluice_vip_bypass_transitions_total{address="10.0.0.6",direction="left"} 0
# HELP sluice_vip_bypassed For each VIP address with bypass single-backend: 1 while it is announced with its backend (next_hop) as BGP next hop, bypassing the LB nodes; 0 while it goes through them (next_hop empty).
# TYPE sluice_vip_bypassed gauge
sluice_vip_bypassed{address="10.0.0.5",next_hop="10.1.0.1"} 1
sluice_vip_bypassed{address="10.0.0.6",next_hop=""} 0
`), "sluice_vip_bypassed", "sluice_vip_bypass_transitions_total"); err != nil {
		t.Fatal(err)
	}
}

// node status names the next hop of a bypassed VIP's route.
func TestNodeStatusBypassNextHop(t *testing.T) {
	s := New(controltest.NewConfig(bypassDoc))
	st := s.NodeStatus()
	if len(st.NextHops) != 1 || st.NextHops["10.0.0.5/32"] != "10.1.0.1" {
		t.Fatalf("next hops %v (announced %v)", st.NextHops, st.Announced)
	}
}

// A node that refuses a bypass backend off its peering subnet makes the
// apply an invalid configuration with the field's problem (HTTP 400), not
// an internal error.
func TestApplyBypassSubnetIsInvalidConfig(t *testing.T) {
	n := controltest.NewConfig(bypassDoc)
	n.ApplyErr = &fielderr.Error{Path: "vips[0].backends[0].address", Value: "10.9.0.5", Reason: "is not on a subnet this node shares with its BGP peers", Err: bypass.ErrSubnet}
	s := New(n)
	_, err := s.PutConfig(context.Background(), []byte(bypassDoc))
	var ce *ConfigError
	if !errors.Is(err, ErrInvalidConfig) || !errors.As(err, &ce) || len(ce.Problems) != 1 || ce.Problems[0].Path != "vips[0].backends[0].address" {
		t.Fatalf("PutConfig = %v (%+v), want an invalid configuration naming the field", err, ce)
	}
}
