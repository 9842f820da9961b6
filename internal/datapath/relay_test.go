package datapath_test

import (
	"bytes"
	"github.com/sluicelb/sluice/internal/firewall"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// lbNet joins the LB nodes of a test cluster: what a node sends to another
// node's relay address is given to that node's relay; anything else is
// kept in sent, as the kernel would have sent it.
type lbNet struct {
	relays map[netip.AddrPort]*datapath.Relay
	sent   []spilled
}

// nodeSpill is node's link.Spill on net.
type nodeSpill struct{ net *lbNet }

func (s nodeSpill) SendUDP(payload []byte, src, dst [16]byte, v6 bool, port uint16) error {
	sp := newSpilled(payload, src, dst, v6, port)
	if r := s.net.relays[netip.AddrPortFrom(sp.dst, port)]; r != nil {
		r.Receive(payload)
		return nil
	}
	s.net.sent = append(s.net.sent, sp)
	return nil
}

// parityOwners makes node (ID>>1 & 1) the owner of a datagram (ID): the
// test's datagrams alternate which node comes first and which owns them.
type parityOwners struct {
	self   int
	relays [2]netip.AddrPort
}

func (o parityOwners) FragmentOwner(k *flow.Key) (netip.AddrPort, bool, bool) {
	i := int(k.DstPort>>1) & 1
	return o.relays[i], i == o.self, true
}

// newRelayRig is newSpillRig for LB node self of a two-node cluster on
// net; owners false: the node is alone (the control).
func newRelayRig(t testing.TB, net *lbNet, self int, relays [2]netip.AddrPort, owners bool) *rig {
	r := &rig{t: t, b: pipeline.NewBuilder()}
	r.link = mem.New(mem.Config{FrameSize: 9300, Sink: func(f []byte) { r.out = append(r.out, slices.Clone(f)) }})
	c := datapath.Config{Links: []link.Link{r.link}, FlowCapacity: 1024, Spill: nodeSpill{net}}
	if owners {
		c.FragmentOwners, c.RelaySource = parityOwners{self, relays}, relays[self].Addr()
	}
	dp, err := datapath.New(c)
	if err != nil {
		t.Fatal(err)
	}
	r.dp = dp
	if owners {
		net.relays[relays[self]] = dp.Relay()
	}
	return r
}

// TestFragmentsAcrossNodes: a router sends every datagram's first fragment
// to LB node A and its later fragments to node B. The datagram's owner
// (A or B) learns A's decision and gets B's fragments, and sends them to
// the first fragment's backend, whichever comes first. Control: without
// the cluster B cannot send them anywhere.
func TestFragmentsAcrossNodes(t *testing.T) {
	vu4 := netip.AddrPortFrom(vip4.Addr(), 53)
	vu6 := netip.AddrPortFrom(vip6.Addr(), 53)
	relays := [2]netip.AddrPort{netip.MustParseAddrPort("10.99.0.1:7948"), netip.MustParseAddrPort("[fd99::2]:7948")}
	for _, tc := range []struct {
		name string
		vip  netip.AddrPort
		be   []netip.Addr
	}{{"ipv4", vu4, backends4(4)}, {"ipv6", vu6, backends6(4)}} {
		for _, cluster := range []bool{true, false} {
			name := tc.name
			if !cluster {
				name += "-control"
			}
			t.Run(name, func(t *testing.T) {
				net := &lbNet{relays: map[netip.AddrPort]*datapath.Relay{}}
				a := newRelayRig(t, net, 0, relays, cluster)
				b := newRelayRig(t, net, 1, relays, cluster)
				spec := pipeline.Spec{MTU: 9000, Fragments: true, Services: []pipeline.ServiceSpec{udpService(tc.vip, tc.be)}}
				for i := range spec.Services[0].Backends {
					spec.Services[0].Backends[i].ClusterID = uint32(1000 + i) // as lbnode numbers them
				}
				a.apply(spec)
				b.apply(spec)
				const n = 40
				var followed int
				for d := range n {
					cl := clients4
					if tc.vip.Addr().Is6() {
						cl = clients6
					}
					frags := udpFragments(t, cl.FlowSrc(uint32(d)), tc.vip, uint32(2000+d), 4000, 1500, false)
					net.sent = net.sent[:0]
					var first [][]byte
					if d%2 == 0 {
						first = a.send(frags[0])
						b.send(frags[1:]...)
					} else { // later fragments first
						b.send(frags[1:]...)
						first = a.send(frags[0])
					}
					if len(first) != 1 {
						t.Fatalf("datagram %d: first fragment: %d frames out", d, len(first))
					}
					be := backendOf(t, first[0])
					got := 0
					for _, s := range net.sent {
						for i, f := range frags[1:] {
							if len(s.payload) > 4 && bytes.Equal(s.payload[4:], f[14:]) {
								if s.dst != be || s.port != 6080 {
									t.Errorf("datagram %d fragment %d to %v:%d, its first to %v", d, i+1, s.dst, s.port, be)
								}
								got++
							}
						}
					}
					if cluster && got != 2 {
						t.Fatalf("datagram %d: %d of 2 later fragments sent to the backend; sent %d", d, got, len(net.sent))
					}
					if !cluster && got != 0 {
						t.Fatalf("control: datagram %d: %d later fragments sent to the backend", d, got)
					}
					followed += got
				}
				ca, cb := a.counters(), b.counters()
				t.Logf("A: decisions %d relay: decisions %d fragments %d followed %d held %d released %d; B: to owner %d relay: decisions %d fragments %d followed %d held %d released %d; drops A %v B %v",
					ca.FragmentDecisions, ca.RelayDecisions, ca.RelayFragments, ca.FragmentsFollowed, ca.FragmentsHeld, ca.FragmentsReleased,
					cb.FragmentsToOwner, cb.RelayDecisions, cb.RelayFragments, cb.FragmentsFollowed, cb.FragmentsHeld, cb.FragmentsReleased,
					ca.Drops, cb.Drops)
				if !cluster {
					// Held until they time out, or dropped once the hold is full.
					if cb.FragmentsHeld+cb.Drops[pipeline.ReasonFragment] != 2*n || cb.FragmentsToOwner != 0 {
						t.Errorf("control: B held %d dropped %d to owner %d, want %d in all and 0", cb.FragmentsHeld, cb.Drops[pipeline.ReasonFragment], cb.FragmentsToOwner, 2*n)
					}
					return
				}
				if ca.FragmentDecisions != n || cb.FragmentsToOwner != 2*n {
					t.Errorf("decisions sent %d, fragments to their owner %d; want %d and %d", ca.FragmentDecisions, cb.FragmentsToOwner, n, 2*n)
				}
				if d, f := ca.RelayDecisions+cb.RelayDecisions, ca.RelayFragments+cb.RelayFragments; d != n || f != 2*n {
					t.Errorf("relays took %d decisions and %d fragments, want %d and %d", d, f, n, 2*n)
				}
				// Each relay is the owner of half the datagrams; half of
				// those had their fragments before their decision.
				if ca.RelayDecisions == 0 || cb.RelayDecisions == 0 {
					t.Errorf("relay decisions A %d B %d: both nodes own datagrams", ca.RelayDecisions, cb.RelayDecisions)
				}
				if held, rel := ca.FragmentsHeld+cb.FragmentsHeld, ca.FragmentsReleased+cb.FragmentsReleased; held != n || rel != n {
					t.Errorf("held %d released %d, want %d (the later-first datagrams' fragments)", held, rel, n)
				}
				if ca.Drops[pipeline.ReasonFragment]+cb.Drops[pipeline.ReasonFragment]+ca.Drops[pipeline.ReasonParse]+cb.Drops[pipeline.ReasonParse] != 0 {
					t.Errorf("drops A %v B %v", ca.Drops, cb.Drops)
				}
			})
		}
	}
}

// TestRelayRefuses: what is not a relay message, or not a later fragment
// of a service, is dropped and counted; a decision naming a backend the
// node does not have leaves the fragments to time out.
func TestRelayRefuses(t *testing.T) {
	net := &lbNet{relays: map[netip.AddrPort]*datapath.Relay{}}
	relays := [2]netip.AddrPort{netip.MustParseAddrPort("10.99.0.1:7948"), netip.MustParseAddrPort("10.99.0.2:7948")}
	a := newRelayRig(t, net, 0, relays, true)
	vu4 := netip.AddrPortFrom(vip4.Addr(), 53)
	a.apply(pipeline.Spec{MTU: 9000, Fragments: true, Services: []pipeline.ServiceSpec{udpService(vu4, backends4(2))}})
	r := a.dp.Relay()
	frags := udpFragments(t, clients4.FlowSrc(1), vu4, 77, 4000, 1500, false)
	gue := func(proto byte, inner []byte) []byte { return append([]byte{0, proto, 0, 0}, inner...) }
	for _, m := range [][]byte{
		nil,
		{0x40, 4, 0, 0},                // version 1
		{0x01, 4, 0, 0, 1, 2, 3, 4},    // optional fields
		gue(17, frags[1][14:]),         // not IP
		gue(4, frags[0][14:]),          // a first fragment
		gue(4, frags[1][14:30]),        // truncated
		{0x20, 0x53, 0, 0, 1, 2, 3, 4}, // a short decision
	} {
		r.Receive(m)
	}
	c := a.counters()
	if c.Drops[pipeline.ReasonParse] != 7 || c.FragmentsHeld != 0 {
		t.Errorf("parse drops %d held %d, want 7 and 0", c.Drops[pipeline.ReasonParse], c.FragmentsHeld)
	}
	// A later fragment with no decision is held, and times out.
	r.Receive(gue(4, frags[1][14:]))
	time.Sleep(80 * time.Millisecond)
	r.Expire()
	if c := a.counters(); c.FragmentsHeld != 1 || c.Drops[pipeline.ReasonFragmentTimeout] != 1 || c.RelayFragments != 1 {
		t.Errorf("held %d timed out %d relayed %d, want 1 1 1", c.FragmentsHeld, c.Drops[pipeline.ReasonFragmentTimeout], c.RelayFragments)
	}
	r.Reject()
	if c := a.counters(); c.RelayRejected != 1 {
		t.Errorf("rejected %d", c.RelayRejected)
	}
}

// FuzzRelay: whatever a member sends, the relay sends only later fragments
// of the service to its backends, GUE-encapsulated, and never panics.
func FuzzRelay(f *testing.F) {
	vu4 := netip.AddrPortFrom(vip4.Addr(), 53)
	vu6 := netip.AddrPortFrom(vip6.Addr(), 53)
	net := &lbNet{relays: map[netip.AddrPort]*datapath.Relay{}}
	relays := [2]netip.AddrPort{netip.MustParseAddrPort("10.99.0.1:7948"), netip.MustParseAddrPort("10.99.0.2:7948")}
	r := newRelayRig(f, net, 0, relays, true)
	bes := append(backends4(2), backends6(2)...)
	spec := pipeline.Spec{MTU: 9000, Fragments: true, Services: []pipeline.ServiceSpec{udpService(vu4, bes[:2]), udpService(vu6, bes[2:])}}
	for s := range spec.Services {
		for i := range spec.Services[s].Backends {
			spec.Services[s].Backends[i].ClusterID = uint32(10*s + i)
		}
	}
	r.apply(spec)
	for _, d := range []struct {
		src, vip netip.AddrPort
	}{{clients4.FlowSrc(1), vu4}, {clients6.FlowSrc(1), vu6}} {
		frags := udpFragments(f, d.src, d.vip, 5, 3000, 1500, false)
		proto := byte(4)
		if d.vip.Addr().Is6() {
			proto = 41
		}
		f.Add(append([]byte{0, proto, 0, 0}, frags[1][14:]...))
		// Its decision, as node 1 sends it to node 0, the owner of ID 5.
		capture := &lbNet{relays: map[netip.AddrPort]*datapath.Relay{}}
		a := newRelayRig(f, capture, 1, relays, true)
		a.apply(spec)
		a.send(frags[0])
		if len(capture.sent) != 1 || capture.sent[0].port != 7948 {
			f.Fatalf("no decision sent: %+v", capture.sent)
		}
		f.Add(capture.sent[0].payload)
	}
	f.Add([]byte{0x20, 0x53, 0, 0})
	valid := map[netip.Addr]bool{}
	for _, b := range bes {
		valid[b] = true
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		net.sent = net.sent[:0]
		r.dp.Relay().Receive(msg)
		for _, s := range net.sent {
			if !valid[s.dst] || s.port != 6080 || len(s.payload) < 4 || s.payload[0] != 0 {
				t.Fatalf("relay sent %d bytes to %v:%d", len(s.payload), s.dst, s.port)
			}
		}
	})
}

// TestLaterFragmentsMeetTheNewFirewall: a datagram's first fragment goes
// through; a new generation whose firewall denies its client comes before
// the later fragments, which are dropped (firewall_deny); a new generation
// that changes nothing for the flow lets another datagram's later
// fragments follow as before. The same holds for the relay's decisions.
func TestLaterFragmentsMeetTheNewFirewall(t *testing.T) {
	vu4 := netip.AddrPortFrom(vip4.Addr(), 53)
	r, _ := newSpillRig(t)
	spec := pipeline.Spec{MTU: 9000, Fragments: true, Services: []pipeline.ServiceSpec{udpService(vu4, backends4(3))}}
	r.apply(spec)
	client := clients4.FlowSrc(1)
	deny := func(a netip.Addr) *firewall.Set {
		set, err := firewall.Compile([]firewall.Rule{{Action: firewall.Deny, Src: netip.PrefixFrom(a, 32)}}, firewall.Allow)
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	// Unchanged for the flow: a rule about another address.
	frags := udpFragments(t, client, vu4, 1, 4000, 1500, false)
	r.send(frags[0])
	spec.Services[0].Firewall = deny(netip.MustParseAddr("192.0.2.99"))
	r.apply(spec)
	if out := r.send(frags[1:]...); len(out) != 2 {
		t.Fatalf("a generation that allows the flow: %d of 2 later fragments sent", len(out))
	}
	// Denied by the new generation.
	frags = udpFragments(t, client, vu4, 2, 4000, 1500, false)
	r.send(frags[0])
	spec.Services[0].Firewall = deny(client.Addr())
	r.apply(spec)
	if out := r.send(frags[1:]...); len(out) != 0 {
		t.Fatalf("a generation that denies the flow: %d later fragments sent", len(out))
	}
	if c := r.counters(); c.Drops[pipeline.ReasonFirewallDeny] != 2 {
		t.Errorf("firewall_deny %d, want 2", c.Drops[pipeline.ReasonFirewallDeny])
	}
}

// TestNATFragmentsInCluster: a full-NAT flow's later fragments that reach a
// node of a cluster before their first fragment stay on the node (held),
// as they would alone: another node's relay cannot rewrite them to this
// node's SNAT address, and no decision of a full-NAT flow is ever sent to
// it, so a fragment handed to the owner would be lost.
func TestNATFragmentsInCluster(t *testing.T) {
	net := &lbNet{relays: map[netip.AddrPort]*datapath.Relay{}}
	relays := [2]netip.AddrPort{netip.MustParseAddrPort("10.99.0.1:7948"), netip.MustParseAddrPort("10.99.0.2:7948")}
	r := &rig{t: t, b: pipeline.NewBuilder()}
	r.link = mem.New(mem.Config{FrameSize: 9300, Sink: func(f []byte) { r.out = append(r.out, slices.Clone(f)) }})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{r.link}, FlowCapacity: 1024, Spill: nodeSpill{net},
		SNAT: []netip.Addr{snat4, snat6}, FragmentOwners: parityOwners{0, relays}, RelaySource: relays[0].Addr()})
	if err != nil {
		t.Fatal(err)
	}
	r.dp = dp
	net.relays[relays[0]] = dp.Relay()
	vu4 := netip.AddrPortFrom(vip4.Addr(), 53)
	svc := udpService(vu4, backends4(3))
	svc.NAT = true
	r.apply(pipeline.Spec{Seed: 7, MTU: 1500, Fragments: true, SNAT: []netip.Addr{snat4, snat6}, Services: []pipeline.ServiceSpec{svc}})
	for d := range uint32(8) { // owners alternate: this node (local relay) and the other
		frags := udpFragments(t, clients4.FlowSrc(d), vu4, 2000+d, 4000, 1500, false)
		if o := r.send(frags[1:]...); len(o) != 0 {
			t.Fatalf("datagram %d: %d later fragments sent before the first", d, len(o))
		}
		out := r.send(frags[0])
		if len(out) != len(frags) {
			c := r.counters()
			t.Fatalf("datagram %d: %d of %d fragments out; to owner %d, relay fragments %d, drops %v", d, len(out), len(frags), c.FragmentsToOwner, c.RelayFragments, c.Drops)
		}
	}
	if c := r.counters(); c.FragmentsToOwner != 0 || len(net.sent) != 0 {
		t.Errorf("to owner %d, sent through the kernel %d: want 0", c.FragmentsToOwner, len(net.sent))
	}
}

// TestNoDecisionsForNATAddresses: a first fragment to an address that also
// has a full-NAT service sends no decision to the datagram's owner: the
// later fragments of such an address stay on their node.
func TestNoDecisionsForNATAddresses(t *testing.T) {
	net := &lbNet{relays: map[netip.AddrPort]*datapath.Relay{}}
	relays := [2]netip.AddrPort{netip.MustParseAddrPort("10.99.0.1:7948"), netip.MustParseAddrPort("10.99.0.2:7948")}
	r := &rig{t: t, b: pipeline.NewBuilder()}
	r.link = mem.New(mem.Config{FrameSize: 9300, Sink: func(f []byte) { r.out = append(r.out, slices.Clone(f)) }})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{r.link}, FlowCapacity: 1024, Spill: nodeSpill{net},
		SNAT: []netip.Addr{snat4, snat6}, FragmentOwners: parityOwners{0, relays}, RelaySource: relays[0].Addr()})
	if err != nil {
		t.Fatal(err)
	}
	r.dp = dp
	net.relays[relays[0]] = dp.Relay()
	web := natService(vip4, backends4(2), nil) // TCP 80, full-NAT
	dns := udpService(netip.AddrPortFrom(vip4.Addr(), 53), backends4(2))
	dns.Name = "dns"
	r.apply(pipeline.Spec{Seed: 7, MTU: 9000, Fragments: true, SNAT: []netip.Addr{snat4, snat6}, Services: []pipeline.ServiceSpec{web, dns}})
	for d := range uint32(4) {
		frags := udpFragments(t, clients4.FlowSrc(d), netip.AddrPortFrom(vip4.Addr(), 53), 3000+d, 4000, 1500, false)
		if out := r.send(frags...); len(out) != len(frags) {
			t.Fatalf("datagram %d: %d of %d fragments out", d, len(out), len(frags))
		}
	}
	if c := r.counters(); c.FragmentDecisions != 0 || c.RelayDecisions != 0 || len(net.sent) != 0 {
		t.Errorf("decisions sent %d, taken %d, kernel sends %d: want none", c.FragmentDecisions, c.RelayDecisions, len(net.sent))
	}
}
