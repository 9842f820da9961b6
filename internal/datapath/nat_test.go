package datapath_test

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/nat"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

var (
	snat4     = netip.MustParseAddr("198.18.40.11")
	snat6     = netip.MustParseAddr("2001:db8:40::11")
	clientMAC = [6]byte{0x02, 0, 0, 0, 0, 0xc1} // the router the clients' packets come through
	backMAC   = [6]byte{0x02, 0, 0, 0, 0, 0xb1} // a backend
)

// natService is service() with full-NAT forwarding.
func natService(vip netip.AddrPort, backends []netip.Addr, weights map[netip.Addr]uint32) pipeline.ServiceSpec {
	s := service(vip, backends, weights)
	s.NAT = true
	return s
}

func newNATRig(t testing.TB, capacity int, layout nat.Layout) *rig {
	r := &rig{t: t, b: pipeline.NewBuilder()}
	r.link = mem.New(mem.Config{Sink: func(f []byte) { r.out = append(r.out, slices.Clone(f)) }})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{r.link}, FlowCapacity: capacity,
		SNAT: []netip.Addr{snat4, snat6}, SNATLayout: layout})
	if err != nil {
		t.Fatal(err)
	}
	r.dp = dp
	return r
}

// natFrame is a TCP frame from the MAC src to the node.
func natFrame(srcMAC [6]byte, src, dst netip.AddrPort, flags uint8) []byte {
	f := sim.Frame{SrcMAC: srcMAC, DstMAC: lbMAC, Src: src, Dst: dst, Proto: 6, TCPFlags: flags, Payload: 20}
	b := make([]byte, f.Len())
	f.Encode(b)
	return b
}

// natSeen is a plain (not encapsulated) TCP frame as gopacket sees it, with
// its checksums verified independently.
type natSeen struct {
	srcMAC, dstMAC [6]byte
	src, dst       netip.AddrPort
}

func seeNAT(t testing.TB, frame []byte) natSeen {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok {
		t.Fatalf("no TCP layer in % x", frame)
	}
	var s natSeen
	copy(s.srcMAC[:], eth.SrcMAC)
	copy(s.dstMAC[:], eth.DstMAC)
	var src, dst netip.Addr
	want := tcp.Checksum
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
		hc := ip.Checksum
		raw := slices.Clone(frame[14:34])
		raw[10], raw[11] = 0, 0
		if got := ^foldSum(raw); got != hc {
			t.Errorf("IPv4 header checksum %#04x, want %#04x", hc, got)
		}
		tcp.SetNetworkLayerForChecksum(ip)
	case *layers.IPv6:
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
		tcp.SetNetworkLayerForChecksum(ip)
	default:
		t.Fatalf("no IP layer in % x", frame)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, tcp, gopacket.Payload(tcp.Payload)); err != nil {
		t.Fatal(err)
	}
	if got := u16(buf.Bytes()[16:]); got != want {
		t.Errorf("TCP checksum %#04x, want %#04x", want, got)
	}
	s.src = netip.AddrPortFrom(src, uint16(tcp.SrcPort))
	s.dst = netip.AddrPortFrom(dst, uint16(tcp.DstPort))
	return s
}

func foldSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// TestNATForwardAndReply: a full-NAT flow leaves as SNAT:sp -> backend:vp
// toward the backend's next hop, and the backend's reply to SNAT:sp goes
// back to the client as VIP:vp -> client:cp toward the MAC the flow's first
// packet came from, over IPv4 and IPv6. A reply to a port no flow holds, or
// from another host than the flow's backend, is dropped.
func TestNATForwardAndReply(t *testing.T) {
	for _, tc := range []struct {
		name     string
		vip      netip.AddrPort
		clients  sim.Clients
		backends []netip.Addr
		snat     netip.Addr
	}{
		{"ipv4", vip4, clients4, backends4(3), snat4},
		{"ipv6", vip6, clients6, backends6(3), snat6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newNATRig(t, 1024, nat.Layout{})
			r.apply(pipeline.Spec{Seed: 7, SNAT: []netip.Addr{snat4, snat6}, Services: []pipeline.ServiceSpec{natService(tc.vip, tc.backends, nil)}})
			ports := map[uint16]bool{}
			for i := range uint32(20) {
				client := tc.clients.FlowSrc(i)
				out := r.send(natFrame(clientMAC, client, tc.vip, sim.SYN))
				if len(out) != 1 {
					t.Fatalf("flow %d: %d frames out, %+v", i, len(out), r.counters().Drops)
				}
				fw := seeNAT(t, out[0])
				if fw.src.Addr() != tc.snat || fw.dstMAC != hopMAC || fw.srcMAC != lbMAC ||
					!slices.Contains(tc.backends, fw.dst.Addr()) || fw.dst.Port() != tc.vip.Port() {
					t.Fatalf("flow %d forwarded as %+v", i, fw)
				}
				if fw.src.Port() < 1024 || ports[fw.src.Port()] {
					t.Fatalf("flow %d: SNAT port %d (seen: %v)", i, fw.src.Port(), ports[fw.src.Port()])
				}
				ports[fw.src.Port()] = true
				// A later packet of the flow: same rewrite, from the entry.
				out = r.send(natFrame(clientMAC, client, tc.vip, sim.ACK))
				if len(out) != 1 || seeNAT(t, out[0]) != fw {
					t.Fatalf("flow %d: second packet %d frames", i, len(out))
				}
				// The reply.
				out = r.send(natFrame(backMAC, fw.dst, fw.src, sim.SYN|sim.ACK))
				if len(out) != 1 {
					t.Fatalf("flow %d: reply: %d frames out, drops %v", i, len(out), r.counters().Drops)
				}
				rp := seeNAT(t, out[0])
				want := natSeen{srcMAC: lbMAC, dstMAC: clientMAC, src: tc.vip, dst: client}
				if rp != want {
					t.Fatalf("flow %d: reply %+v, want %+v", i, rp, want)
				}
				// Not from the flow's backend, or to a port no flow holds.
				other := netip.AddrPortFrom(tc.clients.FlowSrc(999).Addr(), fw.dst.Port())
				if out := r.send(natFrame(backMAC, other, fw.src, sim.ACK)); len(out) != 0 {
					t.Fatalf("a reply from %v was translated", other)
				}
			}
			if out := r.send(natFrame(backMAC, netip.AddrPortFrom(tc.backends[0], tc.vip.Port()), netip.AddrPortFrom(tc.snat, 1), sim.ACK)); len(out) != 0 {
				t.Fatal("a reply to an unbound port was translated")
			}
			c := r.counters()
			if c.NAT.Bound != 20 || c.NAT.Replies != 20 || c.NAT.Forwarded != 40 || c.NAT.InUse != 20 ||
				c.Drops[pipeline.ReasonNATNoBinding] != 21 {
				t.Fatalf("counters %+v, drops %v", c.NAT, c.Drops)
			}
		})
	}
}

// TestNATPortsReleased: a worker's SNAT ports run out (new flows dropped,
// snat_exhausted), and come back when their flows' entries are removed.
func TestNATPortsReleased(t *testing.T) {
	r := newNATRig(t, 1024, nat.Layout{Lo: 2000, Hi: 2002, Shift: 0}) // 3 ports a protocol and address
	spec := pipeline.Spec{SNAT: []netip.Addr{snat4, snat6}, Services: []pipeline.ServiceSpec{natService(vip4, backends4(2), nil)}}
	r.apply(spec)
	var frames [][]byte
	for i := range uint32(4) {
		frames = append(frames, natFrame(clientMAC, clients4.FlowSrc(i), vip4, sim.SYN))
	}
	if out := r.send(frames...); len(out) != 3 {
		t.Fatalf("%d of 4 flows forwarded with 3 ports", len(out))
	}
	c := r.counters()
	if c.Drops[pipeline.ReasonSNATExhausted] != 1 || c.NAT.Exhausted != 1 || c.NAT.InUse != 3 || c.Flows.Len != 3 {
		t.Fatalf("exhaustion: drops %v, nat %+v, flows %d", c.Drops, c.NAT, c.Flows.Len)
	}
	// Without backends the flows' entries are deleted; their ports return.
	drained := spec
	drained.Services = []pipeline.ServiceSpec{natService(vip4, nil, nil)}
	r.apply(drained)
	r.send(frames[:3]...)
	c = r.counters()
	if c.NAT.InUse != 0 || c.NAT.Released != 3 || c.Flows.Len != 0 {
		t.Fatalf("after the flows went: nat %+v, flows %d", c.NAT, c.Flows.Len)
	}
	r.apply(spec)
	if out := r.send(frames[3]); len(out) != 1 {
		t.Fatalf("the fourth flow still has no port: %v", r.counters().Drops)
	}
}

// natFlows creates n full-NAT flows through a rig and returns, for each,
// a client packet and the backend's reply to it.
func natFlows(t testing.TB, r *rig, n uint32, vip netip.AddrPort, clients sim.Clients) (fwd, rep [][]byte) {
	for i := range n {
		f := natFrame(clientMAC, clients.FlowSrc(i), vip, sim.ACK)
		out := r.send(natFrame(clientMAC, clients.FlowSrc(i), vip, sim.SYN)) // only a SYN binds
		if len(out) != 1 {
			t.Fatalf("flow %d not forwarded: %v", i, r.counters().Drops)
		}
		s := seeNAT(t, out[0])
		fwd = append(fwd, f)
		rep = append(rep, natFrame(backMAC, s.dst, s.src, sim.ACK))
	}
	return fwd, rep
}

// TestZeroAllocsNAT: the full-NAT established path and the reply path
// allocate nothing.
func TestZeroAllocsNAT(t *testing.T) {
	const flows = 256
	r := newNATRig(t, 4096, nat.Layout{})
	g := r.apply(pipeline.Spec{Seed: 1, SNAT: []netip.Addr{snat4, snat6}, Services: []pipeline.ServiceSpec{natService(vip4, backends4(4), nil)}})
	fwd, rep := natFlows(t, r, flows, vip4, clients4)
	frames := append(fwd, rep...)
	// The second datapath first sees each flow's SYN (only a SYN binds),
	// then the established packets and replies, round and round.
	var syns [][]byte
	for i := range uint32(flows) {
		syns = append(syns, natFrame(clientMAC, clients4.FlowSrc(i), vip4, sim.SYN))
	}
	var k, sk int
	l := mem.New(mem.Config{BatchSize: 64, Source: func(buf []byte) int {
		if sk < len(syns) {
			sk++
			return copy(buf, syns[sk-1])
		}
		f := frames[k]
		if k++; k == len(frames) {
			k = 0
		}
		return copy(buf, f)
	}})
	// A second datapath over the source link with the same flows: the
	// frames come from the source (no allocation), what leaves is dropped.
	dp, err := datapath.New(datapath.Config{Links: []link.Link{l}, FlowCapacity: 4096, SNAT: []netip.Addr{snat4, snat6}})
	if err != nil {
		t.Fatal(err)
	}
	dp.Apply(g)
	w := dp.Workers()[0]
	for range 3 * flows / 64 { // the SYNs create the flows
		w.Poll()
	}
	// Replies now find their bindings: the ports are allocated in the same
	// order by both datapaths' first workers.
	if n := testing.AllocsPerRun(200, func() { w.Poll() }); n != 0 {
		t.Fatalf("Poll allocates %.1f times per batch", n)
	}
	c := w.Snapshot()
	if c.NAT.Replies == 0 || c.NAT.Forwarded == 0 || c.Dropped() != 0 || c.TxPackets != c.RxPackets {
		t.Fatalf("nat %+v drops %v rx %d tx %d", c.NAT, c.Drops, c.RxPackets, c.TxPackets)
	}
}

// icmpAbout builds an ICMP error from src to dst quoting the IP packet of
// frame (its first 28 / 48 bytes and 8 of TCP): fragmentation needed
// (IPv4) or packet too big (IPv6), MTU 1400.
func icmpAbout(t testing.TB, srcMAC [6]byte, src, dst netip.Addr, frame []byte) []byte {
	t.Helper()
	quote := frame[14:]
	eth := &layers.Ethernet{SrcMAC: srcMAC[:], DstMAC: lbMAC[:]}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}
	var err error
	if src.Is4() {
		quote = quote[:28]
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4), Seq: 1400}
		err = gopacket.SerializeLayers(buf, opts, eth, ip, icmp, gopacket.Payload(quote))
	} else {
		quote = quote[:48]
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(2, 0)}
		icmp.SetNetworkLayerForChecksum(ip)
		err = gopacket.SerializeLayers(buf, opts, eth, ip, icmp, gopacket.Payload([]byte{0, 0, 0x05, 0x78}), gopacket.Payload(quote))
	}
	if err != nil {
		t.Fatal(err)
	}
	return slices.Clone(buf.Bytes())
}

// seeICMP returns an ICMP error's outer addresses and the addresses and
// ports of the packet it quotes, and checks the ICMP checksum.
func seeICMP(t testing.TB, frame []byte) (src, dst netip.Addr, quoted natSeen) {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	var payload []byte
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
		if foldSum(ip.Payload) != 0xffff {
			t.Errorf("ICMPv4 checksum wrong")
		}
		payload = ip.Payload[8:]
	case *layers.IPv6:
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
		payload = ip.Payload[8:]
	default:
		t.Fatalf("no IP layer in % x", frame)
	}
	var q gopacket.Packet
	if src.Is4() {
		q = gopacket.NewPacket(payload, layers.LayerTypeIPv4, gopacket.Default)
	} else {
		q = gopacket.NewPacket(payload, layers.LayerTypeIPv6, gopacket.Default)
	}
	var qs, qd netip.Addr
	switch ip := q.NetworkLayer().(type) {
	case *layers.IPv4:
		qs, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		qd, _ = netip.AddrFromSlice(ip.DstIP.To4())
	case *layers.IPv6:
		qs, _ = netip.AddrFromSlice(ip.SrcIP)
		qd, _ = netip.AddrFromSlice(ip.DstIP)
	}
	l4 := q.NetworkLayer().LayerPayload()
	quoted.src = netip.AddrPortFrom(qs, u16(l4[0:]))
	quoted.dst = netip.AddrPortFrom(qd, u16(l4[2:]))
	return src, dst, quoted
}

// TestNATICMPErrors: an ICMP error about a packet the node sent to a
// backend (addressed to the SNAT address) reaches the client from the VIP,
// quoting the packet the client sent; one about a reply (addressed to the
// VIP) reaches the backend from the SNAT address, quoting the packet the
// backend sent. Both families.
func TestNATICMPErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		vip      netip.AddrPort
		clients  sim.Clients
		backends []netip.Addr
		snat     netip.Addr
		router   netip.Addr
	}{
		{"ipv4", vip4, clients4, backends4(2), snat4, netip.MustParseAddr("198.18.30.1")},
		{"ipv6", vip6, clients6, backends6(2), snat6, netip.MustParseAddr("2001:db8:30::1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newNATRig(t, 1024, nat.Layout{})
			r.apply(pipeline.Spec{Seed: 7, SNAT: []netip.Addr{snat4, snat6}, Services: []pipeline.ServiceSpec{natService(tc.vip, tc.backends, nil)}})
			client := tc.clients.FlowSrc(1)
			out := r.send(natFrame(clientMAC, client, tc.vip, sim.SYN))
			if len(out) != 1 {
				t.Fatalf("not forwarded: %v", r.counters().Drops)
			}
			fwdFrame := out[0]
			fw := seeNAT(t, fwdFrame)
			out = r.send(natFrame(backMAC, fw.dst, fw.src, sim.SYN|sim.ACK))
			if len(out) != 1 {
				t.Fatalf("reply not translated: %v", r.counters().Drops)
			}
			replyFrame := out[0]

			// Toward the backend, too big: to the client from the VIP.
			out = r.send(icmpAbout(t, backMAC, tc.router, tc.snat, fwdFrame))
			if len(out) != 1 {
				t.Fatalf("error to the SNAT address not translated: %v", r.counters().Drops)
			}
			src, dst, q := seeICMP(t, out[0])
			if src != tc.vip.Addr() || dst != client.Addr() || q.src != client || q.dst != tc.vip {
				t.Fatalf("to the client: %v -> %v quoting %v -> %v", src, dst, q.src, q.dst)
			}
			if mac := [6]byte(out[0][0:6]); mac != clientMAC {
				t.Fatalf("to the client via %x, want %x", mac, clientMAC)
			}
			// About a reply, to the VIP: to the backend from SNAT.
			out = r.send(icmpAbout(t, clientMAC, tc.router, tc.vip.Addr(), replyFrame))
			if len(out) != 1 {
				t.Fatalf("error to the VIP not translated: %v", r.counters().Drops)
			}
			src, dst, q = seeICMP(t, out[0])
			if src != tc.snat || dst != fw.dst.Addr() || q.src != fw.dst || q.dst != fw.src {
				t.Fatalf("to the backend: %v -> %v quoting %v -> %v", src, dst, q.src, q.dst)
			}
			if c := r.counters(); c.NAT.ICMPToClient != 1 || c.NAT.ICMPToBackend != 1 {
				t.Fatalf("counters %+v", c.NAT)
			}
		})
	}
}

// TestNATRescheduled: a flow whose backend leaves the service moves to
// another backend with its SNAT port; the binding follows, so the new
// backend's replies are translated and the old one's are not.
func TestNATRescheduled(t *testing.T) {
	r := newNATRig(t, 1024, nat.Layout{})
	bes := backends4(2)
	spec := pipeline.Spec{SNAT: []netip.Addr{snat4}, Services: []pipeline.ServiceSpec{natService(vip4, bes, nil)}}
	r.apply(spec)
	client := clients4.FlowSrc(3)
	out := r.send(natFrame(clientMAC, client, vip4, sim.SYN))
	if len(out) != 1 {
		t.Fatal("not forwarded")
	}
	before := seeNAT(t, out[0])
	var rest []netip.Addr
	for _, b := range bes {
		if b != before.dst.Addr() {
			rest = append(rest, b)
		}
	}
	spec.Services = []pipeline.ServiceSpec{natService(vip4, rest, nil)}
	r.apply(spec)
	out = r.send(natFrame(clientMAC, client, vip4, sim.ACK))
	if len(out) != 1 {
		t.Fatal("not forwarded after the change")
	}
	after := seeNAT(t, out[0])
	if after.dst.Addr() != rest[0] || after.src != before.src {
		t.Fatalf("after the change: %v -> %v, before %v -> %v", after.src, after.dst, before.src, before.dst)
	}
	if out := r.send(natFrame(backMAC, before.dst, before.src, sim.ACK)); len(out) != 0 {
		t.Fatal("a reply from the old backend was translated")
	}
	if out := r.send(natFrame(backMAC, after.dst, after.src, sim.ACK)); len(out) != 1 {
		t.Fatalf("the new backend's reply was not translated: %v", r.counters().Drops)
	}
	if c := r.counters(); c.NAT.BackendChanged != 1 || c.NAT.InUse != 1 {
		t.Fatalf("counters %+v", c.NAT)
	}
}

// FuzzWorkerNAT feeds arbitrary frames through a worker with full-NAT
// services on both families and live flows: it must never panic, every
// frame is accounted for exactly once, and what leaves is either from an
// SNAT address to a backend or from a VIP (a reply or a translated error).
func FuzzWorkerNAT(f *testing.F) {
	r := newNATRig(f, 256, nat.Layout{})
	b4, b6 := backends4(2), backends6(2)
	r.apply(pipeline.Spec{SNAT: []netip.Addr{snat4, snat6}, Services: []pipeline.ServiceSpec{natService(vip4, b4, nil), natService(vip6, b6, nil)}})
	for _, tc := range []struct {
		vip     netip.AddrPort
		clients sim.Clients
	}{{vip4, clients4}, {vip6, clients6}} {
		fwd, rep := natFlows(f, r, 4, tc.vip, tc.clients)
		f.Add(fwd[0])
		f.Add(rep[0])
		out := r.send(fwd[1])
		f.Add(icmpAbout(f, backMAC, tc.clients.FlowSrc(99).Addr(), seeNAT(f, out[0]).src.Addr(), out[0]))
	}
	f.Add([]byte{})
	from := map[netip.Addr]bool{snat4: true, snat6: true, vip4.Addr(): true, vip6.Addr(): true}
	f.Fuzz(func(t *testing.T, frame []byte) {
		r.t = t
		out := r.sendAccounted(t, frame)
		for _, o := range out {
			pkt := gopacket.NewPacket(o, layers.LayerTypeEthernet, gopacket.Default)
			nl := pkt.NetworkLayer()
			if nl == nil {
				t.Fatalf("sent a frame without an IP header: % x", o)
			}
			src, _ := netip.AddrFromSlice(nl.NetworkFlow().Src().Raw())
			if !from[src.Unmap()] {
				t.Fatalf("sent a packet from %v", src)
			}
		}
	})
}

// A TCP packet that is not a SYN gets no SNAT port (a spoofed ACK flood
// cannot exhaust the pool), and once a flow's backend has left the
// generation its binding still admits replies from that backend only.
func TestNATBindsOnSYNAndChecksReplySource(t *testing.T) {
	r := newNATRig(t, 1024, nat.Layout{})
	bes := backends4(2)
	spec := pipeline.Spec{SNAT: []netip.Addr{snat4}, Services: []pipeline.ServiceSpec{natService(vip4, bes, nil)}}
	r.apply(spec)
	for i := range uint32(50) {
		if out := r.send(natFrame(clientMAC, clients4.FlowSrc(i), vip4, sim.ACK)); len(out) != 0 {
			t.Fatalf("an ACK without a flow was forwarded")
		}
	}
	if c := r.counters(); c.NAT.Bound != 0 || c.NAT.InUse != 0 {
		t.Fatalf("ACKs bound ports: %+v", c.NAT)
	}
	client := clients4.FlowSrc(77)
	out := r.send(natFrame(clientMAC, client, vip4, sim.SYN))
	if len(out) != 1 {
		t.Fatal("SYN not forwarded")
	}
	fw := seeNAT(t, out[0])
	// Remove the flow's backend: the flow keeps its binding until its next
	// packet; a stranger's packet to the SNAT port is not translated.
	var rest []netip.Addr
	for _, b := range bes {
		if b != fw.dst.Addr() {
			rest = append(rest, b)
		}
	}
	r.apply(pipeline.Spec{SNAT: []netip.Addr{snat4}, Services: []pipeline.ServiceSpec{natService(vip4, rest, nil)}})
	stranger := netip.MustParseAddrPort("203.0.113.66:80")
	if out := r.send(natFrame(backMAC, stranger, fw.src, sim.RST)); len(out) != 0 {
		t.Fatal("a stranger's packet to the SNAT port of a flow whose backend left was translated to the client")
	}
	if out := r.send(natFrame(backMAC, fw.dst, fw.src, sim.SYN|sim.ACK)); len(out) != 1 {
		t.Fatal("the binding's own backend is no longer translated")
	}
}

// natPair is two workers over in-memory links, sharing the SNAT addresses
// (full-NAT with several workers): frames sent by worker i land in out[i].
type natPair struct {
	t    *testing.T
	dp   *datapath.Datapath
	ws   []*datapath.Worker
	mems [2]*mem.Link
	out  [2][][]byte
}

func newNATPair(t *testing.T) *natPair {
	r := &natPair{t: t}
	links := make([]link.Link, 2)
	for i := range r.mems {
		r.mems[i] = mem.New(mem.Config{Sink: func(f []byte) { r.out[i] = append(r.out[i], slices.Clone(f)) }})
		links[i] = r.mems[i]
	}
	dp, err := datapath.New(datapath.Config{Links: links, FlowCapacity: 1024, SNAT: []netip.Addr{snat4, snat6}})
	if err != nil {
		t.Fatal(err)
	}
	r.dp, r.ws = dp, dp.Workers()
	return r
}

// apply builds and applies spec (with the SNAT addresses).
func (r *natPair) apply(spec pipeline.Spec) *pipeline.Generation {
	r.t.Helper()
	spec.SNAT = []netip.Addr{snat4, snat6}
	g, err := pipeline.NewBuilder().Build(spec)
	if err != nil {
		r.t.Fatal(err)
	}
	r.dp.Apply(g)
	return g
}

// poll gives worker i frames and runs one poll (none: an idle one, which
// serves its inbox); it returns what worker i sent.
func (r *natPair) poll(i int, frames ...[]byte) [][]byte {
	r.t.Helper()
	r.out[i] = r.out[i][:0]
	for _, f := range frames {
		r.mems[i].Inject(f)
	}
	if n, err := r.ws[i].Poll(); n != len(frames) || err != nil {
		r.t.Fatalf("worker %d: poll %d of %d, %v", i, n, len(frames), err)
	}
	return r.out[i]
}

// TestNATRepliesHandedOff: with two workers, a flow's binding comes from
// the share of the worker its client's packets reach; a reply that reaches
// the other worker is handed to the owner, which translates it and sends
// it on its own link at its next poll. Replies that reach the owner are
// translated at once.
func TestNATRepliesHandedOff(t *testing.T) {
	r := newNATPair(t)
	r.apply(pipeline.Spec{Seed: 7, Services: []pipeline.ServiceSpec{natService(vip4, backends4(3), nil)}})
	send := func(i int, frame []byte) [][]byte { return r.poll(i, frame) }
	layout := nat.DefaultLayout(2)
	for flow := range uint32(20) {
		owner := int(flow % 2) // the worker the client's packets reach
		client := clients4.FlowSrc(flow)
		out := send(owner, natFrame(clientMAC, client, vip4, sim.SYN))
		if len(out) != 1 {
			t.Fatalf("flow %d: %d frames out", flow, len(out))
		}
		fw := seeNAT(t, out[0])
		if o := layout.Owner(fw.src.Port()); o != owner {
			t.Fatalf("flow %d: SNAT port %d of worker %d, bound by worker %d", flow, fw.src.Port(), o, owner)
		}
		want := natSeen{srcMAC: lbMAC, dstMAC: clientMAC, src: vip4, dst: client}
		reply := natFrame(backMAC, fw.dst, fw.src, sim.SYN|sim.ACK)
		// The reply reaches the other worker: handed off, nothing sent.
		if out := send(1-owner, reply); len(out) != 0 {
			t.Fatalf("flow %d: the other worker sent %d frames", flow, len(out))
		}
		// The owner's next poll (an idle one) sends it, translated.
		if out := r.poll(owner); len(out) != 1 || seeNAT(t, out[0]) != want {
			t.Fatalf("flow %d: owner sent %d frames after the hand-off", flow, len(out))
		}
		// A reply that reaches the owner is translated at once.
		if out := send(owner, reply); len(out) != 1 || seeNAT(t, out[0]) != want {
			t.Fatalf("flow %d: reply at its owner: %d frames", flow, len(out))
		}
	}
	c := r.dp.Counters()
	if c.NAT.HandedOff != 20 || c.NAT.HandoffDropped != 0 || c.NAT.Replies != 40 || c.Drops[pipeline.ReasonNATNoBinding] != 0 {
		t.Fatalf("handed off %d dropped %d replies %d, drops %v", c.NAT.HandedOff, c.NAT.HandoffDropped, c.NAT.Replies, c.Drops)
	}
}

// reassembled is a datagram rebuilt from its fragments (IPv4 or IPv6 with
// a Fragment header right after the fixed header, as udpFragments makes
// them and the full-NAT rewrite keeps them).
type reassembled struct {
	src, dst netip.AddrPort
	csumOK   bool // the UDP checksum over the new addresses
	size     int  // UDP payload bytes
}

func reassemble(t *testing.T, frames [][]byte) reassembled {
	t.Helper()
	var src, dst netip.Addr
	data := map[int][]byte{}
	for _, f := range frames {
		ip := f[14:]
		var off int
		var payload []byte
		if ip[0]>>4 == 4 {
			hl := int(ip[0]&0xf) * 4
			tl := int(binary.BigEndian.Uint16(ip[2:]))
			if foldSum(ip[:hl]) != 0xffff {
				t.Fatalf("IPv4 header checksum wrong")
			}
			src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
			off = int(binary.BigEndian.Uint16(ip[6:])&0x1fff) * 8
			payload = ip[hl:tl]
		} else {
			pl := int(binary.BigEndian.Uint16(ip[4:]))
			src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
			if ip[6] != 44 {
				t.Fatalf("IPv6 next header %d, want a Fragment header", ip[6])
			}
			off = int(binary.BigEndian.Uint16(ip[42:]) &^ 7)
			payload = ip[48 : 40+pl]
		}
		data[off] = payload
	}
	var udp []byte
	for len(data) > 0 {
		p, ok := data[len(udp)]
		if !ok {
			t.Fatalf("fragments do not join at offset %d", len(udp))
		}
		delete(data, len(udp))
		udp = append(udp, p...)
	}
	// The pseudo header, then the UDP header and payload.
	var ph []byte
	if src.Is4() {
		ph = append(append(src.AsSlice(), dst.AsSlice()...), 0, 17, byte(len(udp)>>8), byte(len(udp)))
	} else {
		ph = append(append(src.AsSlice(), dst.AsSlice()...), 0, 0, byte(len(udp)>>8), byte(len(udp)), 0, 0, 0, 17)
	}
	sum := append(ph, udp...)
	if len(sum)%2 == 1 {
		sum = append(sum, 0)
	}
	return reassembled{
		src:    netip.AddrPortFrom(src, binary.BigEndian.Uint16(udp[0:])),
		dst:    netip.AddrPortFrom(dst, binary.BigEndian.Uint16(udp[2:])),
		csumOK: foldSum(sum) == 0xffff,
		size:   len(udp) - 8,
	}
}

// TestNATFragments: a full-NAT UDP datagram fragmented by its client goes
// to the backend with every fragment rewritten (the first one's ports and
// checksum for the whole datagram, the later ones' addresses), in order or
// with the later fragments first (held, then sent); the backend's
// fragmented reply reaches the client the same way. Control: with
// fragment handling off the later fragments are dropped.
func TestNATFragments(t *testing.T) {
	for _, tc := range []struct {
		name     string
		vip      netip.AddrPort
		clients  sim.Clients
		backends []netip.Addr
		snat     netip.Addr
	}{
		{"ipv4", netip.AddrPortFrom(vip4.Addr(), 53), clients4, backends4(3), snat4},
		{"ipv6", netip.AddrPortFrom(vip6.Addr(), 53), clients6, backends6(3), snat6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newNATRig(t, 1024, nat.Layout{})
			svc := udpService(tc.vip, tc.backends)
			svc.NAT = true
			spec := pipeline.Spec{Seed: 7, MTU: 1500, Fragments: true, SNAT: []netip.Addr{snat4, snat6}, Services: []pipeline.ServiceSpec{svc}}
			r.apply(spec)
			for d := range uint32(10) {
				client := tc.clients.FlowSrc(d)
				frags := udpFragments(t, client, tc.vip, 100+d, 4000, 1500, false)
				var out [][]byte
				if d%2 == 0 {
					out = r.send(frags...)
				} else { // later fragments first: held, then sent with the first
					if o := r.send(frags[1:]...); len(o) != 0 {
						t.Fatalf("datagram %d: %d later fragments sent before the first", d, len(o))
					}
					out = r.send(frags[0])
				}
				if len(out) != len(frags) {
					t.Fatalf("datagram %d: %d of %d fragments out; drops %v", d, len(out), len(frags), r.counters().Drops)
				}
				fw := reassemble(t, out)
				if fw.src.Addr() != tc.snat || fw.src.Port() < 1024 || !slices.Contains(tc.backends, fw.dst.Addr()) || fw.dst.Port() != 53 || !fw.csumOK || fw.size != 4000 {
					t.Fatalf("datagram %d reached the backend as %+v", d, fw)
				}
				// The backend's fragmented reply.
				rep := udpFragments(t, fw.dst, fw.src, 500+d, 3000, 1500, false)
				out = r.send(rep...)
				if len(out) != len(rep) {
					t.Fatalf("reply %d: %d of %d fragments out; drops %v", d, len(out), len(rep), r.counters().Drops)
				}
				back := reassemble(t, out)
				if back.src != tc.vip || back.dst != client || !back.csumOK || back.size != 3000 {
					t.Fatalf("reply %d reached the client as %+v", d, back)
				}
			}
			c := r.counters()
			t.Logf("followed %d held %d released %d; NAT %+v; drops %v", c.FragmentsFollowed, c.FragmentsHeld, c.FragmentsReleased, c.NAT, c.Drops)
			if c.FragmentsHeld != 10 || c.FragmentsReleased != 10 {
				t.Errorf("held %d released %d, want 10 and 10", c.FragmentsHeld, c.FragmentsReleased)
			}

			// Control: handling off drops the later fragments both ways.
			spec.Fragments = false
			r.apply(spec)
			frags := udpFragments(t, tc.clients.FlowSrc(50), tc.vip, 999, 4000, 1500, false)
			if out := r.send(frags...); len(out) != 1 {
				t.Fatalf("fragments off: %d sent, want the first only", len(out))
			}
		})
	}
}

// TestNATReplyFragmentsHandedOff: with two workers, a backend's fragmented
// reply that reaches the worker not owning its SNAT port (all its
// fragments do: a NIC hashes fragments by their addresses) is handed off
// whole: the first fragment by its port, the later ones after it, and the
// owner translates them all.
func TestNATReplyFragmentsHandedOff(t *testing.T) {
	r := newNATPair(t)
	dp := r.dp
	for _, tc := range []struct {
		name     string
		vip      netip.AddrPort
		clients  sim.Clients
		backends []netip.Addr
	}{
		{"ipv4", netip.AddrPortFrom(vip4.Addr(), 53), clients4, backends4(3)},
		{"ipv6", netip.AddrPortFrom(vip6.Addr(), 53), clients6, backends6(3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := udpService(tc.vip, tc.backends)
			svc.NAT = true
			r.t = t
			r.apply(pipeline.Spec{Seed: 7, MTU: 1500, Fragments: true, Services: []pipeline.ServiceSpec{svc}})
			send := r.poll
			for d := range uint32(6) {
				owner := int(d % 2)
				client := tc.clients.FlowSrc(d)
				out := send(owner, udpFragments(t, client, tc.vip, 100+d, 1000, 1500, false)...)
				if len(out) != 1 {
					t.Fatalf("datagram %d: %d frames out", d, len(out))
				}
				fw := reassemble(t, out)
				rep := udpFragments(t, fw.dst, fw.src, 500+d, 3000, 1500, false)
				if out := send(1-owner, rep...); len(out) != 0 {
					t.Fatalf("reply %d: the other worker sent %d frames", d, len(out))
				}
				out = r.poll(owner)
				if len(out) != len(rep) {
					c := dp.Counters()
					t.Fatalf("reply %d: the owner sent %d of %d fragments; NAT %+v drops %v", d, len(out), len(rep), c.NAT, c.Drops)
				}
				back := reassemble(t, out)
				if back.src != tc.vip || back.dst != client || !back.csumOK || back.size != 3000 {
					t.Fatalf("reply %d reached the client as %+v", d, back)
				}
			}
		})
	}
}

// TestZeroAllocsNATHandoff: the owner's poll that sends a burst of handed-off
// replies (the first since it started) allocates nothing.
func TestZeroAllocsNATHandoff(t *testing.T) {
	var fwd [][]byte
	record, sent := true, 0
	links := make([]link.Link, 2)
	mems := make([]*mem.Link, 2)
	for i := range mems {
		mems[i] = mem.New(mem.Config{Sink: func(f []byte) {
			if sent++; record {
				fwd = append(fwd, slices.Clone(f))
			}
		}})
		links[i] = mems[i]
	}
	dp, err := datapath.New(datapath.Config{Links: links, FlowCapacity: 1024, SNAT: []netip.Addr{snat4, snat6}})
	if err != nil {
		t.Fatal(err)
	}
	g, err := pipeline.NewBuilder().Build(pipeline.Spec{Seed: 7, SNAT: []netip.Addr{snat4, snat6}, Services: []pipeline.ServiceSpec{natService(vip4, backends4(3), nil)}})
	if err != nil {
		t.Fatal(err)
	}
	dp.Apply(g)
	ws := dp.Workers()
	const n = 32
	for flow := range uint32(n) {
		mems[0].Inject(natFrame(clientMAC, clients4.FlowSrc(flow), vip4, sim.SYN))
	}
	ws[0].Poll()
	if len(fwd) != n {
		t.Fatalf("%d forwarded", len(fwd))
	}
	for _, f := range fwd {
		s := seeNAT(t, f)
		mems[1].Inject(natFrame(backMAC, s.dst, s.src, sim.SYN|sim.ACK))
	}
	ws[1].Poll() // hands them to worker 0
	record, sent = false, 0
	// A packet of an established flow too, so that the in-memory link's
	// Recv does not wait (its timer allocates).
	mems[0].Inject(natFrame(clientMAC, clients4.FlowSrc(0), vip4, sim.ACK))
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	ws[0].Poll()
	runtime.ReadMemStats(&m1)
	if sent != n+1 {
		t.Fatalf("the owner sent %d frames, want %d replies and a packet", sent, n+1)
	}
	if a := m1.Mallocs - m0.Mallocs; a != 0 {
		t.Errorf("%d allocations sending %d handed-off replies", a, n)
	}
}

// TestNATICMPErrorsToVIPHandedOff: with two workers, an ICMP error about a
// reply (to the VIP, quoting VIP -> client) that reaches the worker without
// the client's flow is handed to the others; the one with the flow sends it
// to the backend, translated.
func TestNATICMPErrorsToVIPHandedOff(t *testing.T) {
	r := newNATPair(t)
	r.apply(pipeline.Spec{Seed: 7, Services: []pipeline.ServiceSpec{natService(vip4, backends4(3), nil)}})
	poll, dp := r.poll, r.dp
	router := netip.MustParseAddr("198.18.30.1")
	for flow := range uint32(6) {
		owner := int(flow % 2)
		client := clients4.FlowSrc(flow)
		out := poll(owner, natFrame(clientMAC, client, vip4, sim.SYN))
		if len(out) != 1 {
			t.Fatalf("flow %d: %d frames out", flow, len(out))
		}
		fw := seeNAT(t, out[0])
		out = poll(owner, natFrame(backMAC, fw.dst, fw.src, sim.SYN|sim.ACK))
		if len(out) != 1 {
			t.Fatalf("flow %d: reply not translated", flow)
		}
		if out := poll(1-owner, icmpAbout(t, clientMAC, router, vip4.Addr(), out[0])); len(out) != 0 {
			t.Fatalf("flow %d: the other worker sent %d frames", flow, len(out))
		}
		out = poll(owner)
		if len(out) != 1 {
			c := dp.Counters()
			t.Fatalf("flow %d: the flow's worker sent %d frames; NAT %+v drops %v", flow, len(out), c.NAT, c.Drops)
		}
		src, dst, q := seeICMP(t, out[0])
		if src != snat4 || dst != fw.dst.Addr() || q.src != fw.dst || q.dst != fw.src {
			t.Fatalf("flow %d: to the backend: %v -> %v quoting %v -> %v", flow, src, dst, q.src, q.dst)
		}
	}
	if c := dp.Counters(); c.NAT.ICMPToBackend != 6 || c.Drops[pipeline.ReasonICMP] != 0 {
		t.Fatalf("NAT %+v drops %v", c.NAT, c.Drops)
	}
}
