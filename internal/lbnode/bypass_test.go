package lbnode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/bypass"
)

// bypassDoc is a VIP address with two services, bypass single-backend and
// second chance (a backend life cycle without a cluster), with backends.
func bypassDoc(backends string) string {
	return fmt.Sprintf(`
node:
  interfaces: [eth0]
  bgp: {asn: 65001, router_id: 198.18.30.11, peers: [{address: 198.18.30.1, asn: 65000}]}
vips:
  - {name: web, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, second_chance: true, drain_period: 1s, backends: [%[1]s]}
  - {name: stream, address: 198.18.0.10, protocol: tcp, port: 9000, bypass: single-backend, second_chance: true, drain_period: 1s, backends: [%[1]s]}
  - {name: other, address: 198.18.0.11, protocol: tcp, port: 80, backends: [{address: 198.18.30.101}]}
`, backends)
}

func services(n *Node) (stateless, inFlight map[string]bool) {
	stateless, inFlight = map[string]bool{}, map[string]bool{}
	for _, s := range n.Generation().Services {
		stateless[s.Name], inFlight[s.Name] = s.Stateless, s.InFlight
	}
	return stateless, inFlight
}

// The node announces a bypassed address with its backend as next hop and
// keeps no flow state for it; a second backend takes the route back and
// fills for the drain period; without it the address is bypassed again.
func TestBypassLifeCycle(t *testing.T) {
	be1, be2 := "198.18.30.101", "198.18.30.102"
	one := `{address: ` + be1 + `}`
	fa := &fakeAnnouncer{}
	n := testNode(t, mustParse(t, bypassDoc(one)), fa)
	vip := netip.MustParsePrefix("198.18.0.10/32")
	nextHop := func() string {
		for _, r := range fa.last() {
			if r.Prefix == vip {
				if !r.NextHop.IsValid() {
					return "self"
				}
				return r.NextHop.String()
			}
		}
		return "none"
	}
	if got := nextHop(); got != be1 {
		t.Fatalf("next hop %s, want %s (routes %v)", got, be1, fa.last())
	}
	for _, r := range fa.last() {
		if r.Prefix.Addr().String() == "198.18.0.11" && r.NextHop.IsValid() {
			t.Errorf("a VIP without bypass is announced via %v", r.NextHop)
		}
	}
	if sl, _ := services(n); !sl["web"] || !sl["stream"] || sl["other"] {
		t.Errorf("stateless services %v, want web and stream", sl)
	}
	v := n.Bypass()
	if len(v.VIPs) != 1 || !v.VIPs[0].Bypassed || v.VIPs[0].Entered != 1 || v.VIPs[0].NextHop.String() != be1 {
		t.Fatalf("bypass view %+v", v)
	}

	// Scale out: be2 added active.
	two := one + `, {address: ` + be2 + `}`
	if err := n.Apply(context.Background(), mustParse(t, bypassDoc(two))); err != nil {
		t.Fatal(err)
	}
	if got := nextHop(); got != "self" {
		t.Fatalf("after scale-out: next hop %s, want self", got)
	}
	sl, fl := services(n)
	if sl["web"] || sl["stream"] || !fl["web"] || !fl["stream"] {
		t.Errorf("after scale-out: stateless %v in flight %v, want web and stream stateful and in flight", sl, fl)
	}
	v = n.Bypass()
	if v.VIPs[0].Bypassed || v.VIPs[0].Left != 1 || len(v.Filling) != 2 || v.Filling[0].Backend != be2 {
		t.Fatalf("after scale-out: %+v", v)
	}
	for _, s := range n.Generation().Services {
		if s.Name == "web" {
			if len(s.Reals) < 2 {
				t.Fatalf("web reals %v", s.Reals)
			}
		}
	}
	// The fill ends after the drain period (1s): be2 active.
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, fl := services(n); !fl["web"] && !fl["stream"] && len(n.Bypass().Filling) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fill did not end: %+v", n.Bypass())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := nextHop(); got != "self" {
		t.Fatalf("after the fill: next hop %s, want self", got)
	}

	// be2 draining: still through the LB nodes.
	if err := n.Apply(context.Background(), mustParse(t, bypassDoc(one+`, {address: `+be2+`, state: draining}`))); err != nil {
		t.Fatal(err)
	}
	if got := nextHop(); got != "self" {
		t.Fatalf("be2 draining: next hop %s, want self", got)
	}
	// Removed: bypassed again.
	if err := n.Apply(context.Background(), mustParse(t, bypassDoc(one))); err != nil {
		t.Fatal(err)
	}
	if got := nextHop(); got != be1 {
		t.Fatalf("be2 removed: next hop %s, want %s", got, be1)
	}
	v = n.Bypass()
	if st := v.VIPs[0]; !st.Bypassed || st.Entered != 2 || st.Left != 1 || len(v.Filling) != 0 {
		t.Fatalf("bypassed again: %+v", v)
	}
	var rep strings.Builder
	n.Report(&rep)
	if !strings.Contains(rep.String(), "bypass 198.18.0.10 via "+be1+" (bypass)  entered 2  left 1") {
		t.Errorf("report:\n%s", rep.String())
	}
	// A drained node announces nothing.
	n.SetDraining(true)
	if rs := fa.last(); len(rs) != 0 {
		t.Errorf("drained node announces %v", rs)
	}
}

// Without a backend life cycle the second backend is active at once.
func TestBypassScaleOutWithoutLifeCycle(t *testing.T) {
	doc := func(backends string) string {
		return `
node:
  interfaces: [eth0]
  bgp: {asn: 65001, router_id: 198.18.30.11, peers: [{address: 198.18.30.1, asn: 65000}]}
vips:
  - {name: web, address: 198.18.0.10, protocol: tcp, port: 80, bypass: single-backend, backends: [` + backends + `]}
`
	}
	fa := &fakeAnnouncer{}
	n := testNode(t, mustParse(t, doc(`{address: 198.18.30.101}`)), fa)
	if err := n.Apply(context.Background(), mustParse(t, doc(`{address: 198.18.30.101}, {address: 198.18.30.102}`))); err != nil {
		t.Fatal(err)
	}
	if _, fl := services(n); fl["web"] || len(n.Bypass().Filling) != 0 {
		t.Fatalf("in flight %v, fills %+v: want none", fl, n.Bypass().Filling)
	}
	for _, s := range n.Generation().Services {
		for _, r := range s.Reals {
			if r != nil && r.Weight == 0 {
				t.Errorf("backend %s weight 0", r.Name)
			}
		}
	}
}

// A bypass VIP with a backend off the peering subnet is refused, and the
// running configuration stays.
func TestBypassRefusesBackendOffSubnet(t *testing.T) {
	fa := &fakeAnnouncer{}
	n := testNode(t, mustParse(t, bypassDoc(`{address: 198.18.30.101}`)), fa)
	n.ifaces = func() ([]bypass.Interface, error) {
		return []bypass.Interface{{Name: "eth0", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.30.11/24")}}}, nil
	}
	running := n.Config()
	err := n.Apply(context.Background(), mustParse(t, bypassDoc(`{address: 198.18.40.5}`)))
	if !errors.Is(err, bypass.ErrSubnet) {
		t.Fatalf("Apply: %v, want ErrSubnet", err)
	}
	t.Log(err)
	if n.Config() != running {
		t.Error("the running configuration changed")
	}
	if err := n.Apply(context.Background(), mustParse(t, bypassDoc(`{address: 198.18.30.102}`))); err != nil {
		t.Fatalf("a backend on the subnet: %v", err)
	}
}

// A second backend that fails its health check leaves the first one alone
// in service: the address is bypassed to it. When the second passes its
// check again, the address goes back through the LB nodes and the second
// backend fills, as if it had been added.
func TestBypassHealth(t *testing.T) {
	l1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	port := l1.Addr().(*net.TCPAddr).Port
	doc := fmt.Sprintf(`
node:
  interfaces: [eth0]
  bgp: {asn: 65001, router_id: 198.18.30.11, peers: [{address: 198.18.30.1, asn: 65000}]}
vips:
  - name: web
    address: 198.18.0.10
    protocol: tcp
    port: 80
    bypass: single-backend
    second_chance: true
    health: {type: tcp, port: %d, interval: 100ms, timeout: 50ms, rise: 1, fall: 1}
    backends: [{address: 127.0.0.1}, {address: 127.0.0.2}]
`, port)
	fa := &fakeAnnouncer{}
	n := testNode(t, mustParse(t, doc), fa)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.checks.Run(ctx)
	wait := func(what string, cond func(bypass.View) bool) bypass.View {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			v := n.Bypass()
			if cond(v) {
				return v
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v (health %+v)", what, v, n.Health())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Nothing listens on 127.0.0.2: it goes down, 127.0.0.1 is alone.
	v := wait("bypassed to 127.0.0.1", func(v bypass.View) bool { return len(v.VIPs) == 1 && v.VIPs[0].Bypassed })
	if v.VIPs[0].NextHop.String() != "127.0.0.1" {
		t.Fatalf("next hop %v", v.VIPs[0].NextHop)
	}
	if r := fa.last(); len(r) != 1 || r[0].NextHop.String() != "127.0.0.1" {
		t.Fatalf("routes %v", r)
	}
	// 127.0.0.2 comes back.
	l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", port))
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	defer l2.Close()
	v = wait("through the LB nodes with 127.0.0.2 filling", func(v bypass.View) bool {
		return len(v.VIPs) == 1 && !v.VIPs[0].Bypassed && v.VIPs[0].Left == 1
	})
	if len(v.Filling) != 1 || v.Filling[0].Backend != "127.0.0.2" {
		t.Fatalf("fills %+v", v.Filling)
	}
	if r := fa.last(); len(r) != 1 || r[0].NextHop.IsValid() {
		t.Fatalf("routes %v, want the node's own next hop", r)
	}
	if _, fl := services(n); !fl["web"] {
		t.Error("web not in flight while 127.0.0.2 fills")
	}
	// Both fail: the VIP is withdrawn, as any VIP without a backend.
	l1.Close()
	l2.Close()
	wait("no backend in service", func(v bypass.View) bool {
		return len(v.VIPs) == 1 && !v.VIPs[0].Bypassed && strings.Contains(v.VIPs[0].Reason, "no backend in service")
	})
	if r := fa.last(); len(r) != 0 {
		t.Fatalf("routes %v, want none", r)
	}
}
