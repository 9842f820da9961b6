package datapath_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

// spilled is one datagram a fakeSpill was given.
type spilled struct {
	payload  []byte
	src, dst netip.Addr
	port     uint16
}

type fakeSpill struct{ got []spilled }

func (f *fakeSpill) SendUDP(payload []byte, src, dst [16]byte, v6 bool, port uint16) error {
	f.got = append(f.got, newSpilled(payload, src, dst, v6, port))
	return nil
}

// newSpilled is what link.Spill.SendUDP was given.
func newSpilled(payload []byte, src, dst [16]byte, v6 bool, port uint16) spilled {
	s := spilled{payload: slices.Clone(payload), src: netip.AddrFrom16(src), dst: netip.AddrFrom16(dst), port: port}
	if !v6 {
		s.src, s.dst = s.src.Unmap(), s.dst.Unmap()
	}
	return s
}

var _ link.Spill = (*fakeSpill)(nil)

// newSpillRig is newRig with a fake spill and 9 KB frames.
func newSpillRig(t testing.TB) (*rig, *fakeSpill) {
	r := &rig{t: t, b: pipeline.NewBuilder()}
	sp := &fakeSpill{}
	r.link = mem.New(mem.Config{FrameSize: 9300, Sink: func(f []byte) { r.out = append(r.out, slices.Clone(f)) }})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{r.link}, FlowCapacity: 1024, Spill: sp})
	if err != nil {
		t.Fatal(err)
	}
	r.dp = dp
	return r, sp
}

func udpService(vip netip.AddrPort, backends []netip.Addr) pipeline.ServiceSpec {
	s := service(vip, backends, nil)
	s.Proto = 17
	return s
}

func backends6(n int) []netip.Addr {
	var out []netip.Addr
	for i := range n {
		out = append(out, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: byte(11 + i)}))
	}
	return out
}

// TestTooBigAnswered: a full-size TCP segment with DF (IPv4) or any IPv6
// packet that no longer fits once encapsulated is answered with an ICMP
// error naming the inner MTU that fits (with the hop list), from the VIP to
// the client, back out of the link; with too_big: drop it is dropped.
func TestTooBigAnswered(t *testing.T) {
	for _, tc := range []struct {
		name    string
		vip     netip.AddrPort
		src     netip.AddrPort
		be      []netip.Addr
		payload int
		wantMTU uint32
	}{
		{"ipv4", vip4, clients4.FlowSrc(1), backends4(2), 1460, 1500 - 44},
		{"ipv6", vip6, clients6.FlowSrc(1), backends6(2), 1440, 1500 - 88},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, sp := newSpillRig(t)
			r.apply(pipeline.Spec{MTU: 1500, Services: []pipeline.ServiceSpec{service(tc.vip, tc.be, nil)}})
			f := sim.Frame{SrcMAC: hopMAC, DstMAC: lbMAC, Src: tc.src, Dst: tc.vip, Proto: 6, TCPFlags: sim.ACK, Payload: tc.payload}
			frame := make([]byte, f.Len())
			f.Encode(frame)
			small := sim.Frame{SrcMAC: hopMAC, DstMAC: lbMAC, Src: tc.src, Dst: tc.vip, Proto: 6, TCPFlags: sim.ACK, Payload: 100}
			sframe := make([]byte, small.Len())
			small.Encode(sframe)
			out := r.send(frame, sframe)
			if len(out) != 2 || len(sp.got) != 0 {
				t.Fatalf("%d frames out, %d spilled; want the answer and the small packet", len(out), len(sp.got))
			}
			if backendOf(t, out[1]) == (netip.Addr{}) {
				t.Fatal("small packet not encapsulated")
			}
			pkt := gopacket.NewPacket(out[0], layers.LayerTypeEthernet, gopacket.Default)
			eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			if !bytes.Equal(eth.DstMAC, hopMAC[:]) || !bytes.Equal(eth.SrcMAC, lbMAC[:]) {
				t.Errorf("answer goes %v -> %v, want back to the sender", eth.SrcMAC, eth.DstMAC)
			}
			var mtu uint32
			var from, to netip.Addr
			switch ip := pkt.NetworkLayer().(type) {
			case *layers.IPv4:
				from, _ = netip.AddrFromSlice(ip.SrcIP.To4())
				to, _ = netip.AddrFromSlice(ip.DstIP.To4())
				ic := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
				if ic.TypeCode != layers.CreateICMPv4TypeCode(3, 4) {
					t.Errorf("type %v", ic.TypeCode)
				}
				mtu = uint32(ic.Seq)
			case *layers.IPv6:
				from, _ = netip.AddrFromSlice(ip.SrcIP)
				to, _ = netip.AddrFromSlice(ip.DstIP)
				ic := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
				if ic.TypeCode != layers.CreateICMPv6TypeCode(2, 0) {
					t.Errorf("type %v", ic.TypeCode)
				}
				mtu = binary.BigEndian.Uint32(ic.Payload[0:4])
			default:
				t.Fatalf("answer has no IP layer: %v", pkt)
			}
			if from != tc.vip.Addr() || to != tc.src.Addr() {
				t.Errorf("answer %v -> %v, want %v -> %v", from, to, tc.vip.Addr(), tc.src.Addr())
			}
			if mtu != tc.wantMTU {
				t.Errorf("MTU %d, want %d", mtu, tc.wantMTU)
			}
			c := r.counters()
			if c.TooBigAnswered != 1 || c.TxPackets != 2 {
				t.Errorf("answered %d tx %d, want 1 2", c.TooBigAnswered, c.TxPackets)
			}

			// The same with too_big: drop.
			r.apply(pipeline.Spec{MTU: 1500, TooBig: pipeline.TooBigDrop, Services: []pipeline.ServiceSpec{service(tc.vip, tc.be, nil)}})
			f.Encode(frame)
			if out := r.send(frame); len(out) != 0 {
				t.Fatalf("too_big drop: %d frames out", len(out))
			}
			if c := r.counters(); c.Drops[pipeline.ReasonTooBig] != 1 || c.TooBigAnswered != 1 {
				t.Errorf("too_big drop: drops %d answered %d", c.Drops[pipeline.ReasonTooBig], c.TooBigAnswered)
			}
		})
	}
}

// TestTooBigRateLimit: answers beyond the per-worker rate are dropped and
// counted.
func TestTooBigRateLimit(t *testing.T) {
	r, _ := newSpillRig(t)
	r.apply(pipeline.Spec{MTU: 1500, ICMPRate: 10, Services: []pipeline.ServiceSpec{service(vip4, backends4(2), nil)}})
	var frames [][]byte
	for i := range 5 {
		f := sim.Frame{SrcMAC: hopMAC, DstMAC: lbMAC, Src: clients4.FlowSrc(uint32(i)), Dst: vip4, Proto: 6, TCPFlags: sim.ACK, Payload: 1460}
		b := make([]byte, f.Len())
		f.Encode(b)
		frames = append(frames, b)
	}
	out := r.send(frames...)
	// A burst of rate/10+1 = 2, then nothing within the same millisecond
	// or two.
	c := r.counters()
	if len(out) < 2 || len(out) > 3 || c.TooBigAnswered != uint64(len(out)) || c.Drops[pipeline.ReasonTooBigLimited] != uint64(5-len(out)) {
		t.Fatalf("%d answers, counters answered %d limited %d", len(out), c.TooBigAnswered, c.Drops[pipeline.ReasonTooBigLimited])
	}
}

// udpFragments builds the fragments of one UDP datagram (IPv4 or IPv6) with
// size bytes of payload to dst, each carrying at most mtu bytes of IP packet;
// df sets DF on an unfragmented IPv4 one.
func udpFragments(t testing.TB, src, dst netip.AddrPort, id uint32, size, mtu int, df bool) [][]byte {
	t.Helper()
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	eth := &layers.Ethernet{SrcMAC: hopMAC[:], DstMAC: lbMAC[:]}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	var l4 []byte
	if src.Addr().Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		udp.SetNetworkLayerForChecksum(ip)
		sb := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(sb, opts, udp, gopacket.Payload(payload)); err != nil {
			t.Fatal(err)
		}
		l4 = sb.Bytes()
		chunk := (mtu - 20) &^ 7
		var out [][]byte
		for off := 0; off < len(l4); off += chunk {
			end := min(off+chunk, len(l4))
			ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, Id: uint16(id),
				SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice(), FragOffset: uint16(off / 8)}
			if end < len(l4) {
				ip.Flags = layers.IPv4MoreFragments
			} else if off == 0 && df {
				ip.Flags = layers.IPv4DontFragment
			}
			sb := gopacket.NewSerializeBuffer()
			if err := gopacket.SerializeLayers(sb, opts, eth, ip, gopacket.Payload(l4[off:end])); err != nil {
				t.Fatal(err)
			}
			out = append(out, slices.Clone(sb.Bytes()))
		}
		return out
	}
	eth.EthernetType = layers.EthernetTypeIPv6
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	udp.SetNetworkLayerForChecksum(ip)
	sb := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(sb, opts, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	l4 = sb.Bytes()
	chunk := (mtu - 48) &^ 7
	var out [][]byte
	for off := 0; off < len(l4); off += chunk {
		end := min(off+chunk, len(l4))
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolIPv6Fragment, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		fh := make([]byte, 8)
		fh[0] = 17
		fo := uint16(off/8) << 3
		if end < len(l4) {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], id)
		sb := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(sb, opts, eth, ip, gopacket.Payload(append(fh, l4[off:end]...))); err != nil {
			t.Fatal(err)
		}
		out = append(out, slices.Clone(sb.Bytes()))
	}
	return out
}

// TestFragmentsFollowFirst: the later fragments of many datagrams go to the
// backend their first fragment went to, in order and out of order (held,
// then sent through the kernel), over IPv4 and IPv6; with fragment handling
// off they are dropped.
func TestFragmentsFollowFirst(t *testing.T) {
	vu4 := netip.AddrPortFrom(vip4.Addr(), 53)
	vu6 := netip.AddrPortFrom(vip6.Addr(), 53)
	for _, tc := range []struct {
		name string
		vip  netip.AddrPort
		be   []netip.Addr
		cl   sim.Clients
	}{{"ipv4", vu4, backends4(4), clients4}, {"ipv6", vu6, backends6(4), clients6}} {
		t.Run(tc.name, func(t *testing.T) {
			r, sp := newSpillRig(t)
			spec := pipeline.Spec{MTU: 9000, Fragments: true, Services: []pipeline.ServiceSpec{udpService(tc.vip, tc.be)}}
			r.apply(spec)
			backends := map[netip.Addr]bool{}
			for d := range 40 {
				frags := udpFragments(t, tc.cl.FlowSrc(uint32(d)), tc.vip, uint32(1000+d), 4000, 1500, false)
				if len(frags) != 3 {
					t.Fatalf("%d fragments", len(frags))
				}
				if d%2 == 1 {
					// Later fragments first: held, then released through
					// the kernel when the first arrives.
					out := r.send(frags[2], frags[1])
					if len(out) != 0 {
						t.Fatalf("datagram %d: %d later fragments sent before the first", d, len(out))
					}
					sp.got = sp.got[:0]
					out = r.send(frags[0])
					if len(out) != 1 || len(sp.got) != 2 {
						t.Fatalf("datagram %d: %d sent, %d spilled after the first; want 1 and 2", d, len(out), len(sp.got))
					}
					be := backendOf(t, out[0])
					for _, s := range sp.got {
						if s.dst != be || s.port != 6080 {
							t.Errorf("datagram %d: held fragment to %v:%d, first to %v", d, s.dst, s.port, be)
						}
					}
					backends[be] = true
					continue
				}
				out := r.send(frags...)
				if len(out) != 3 {
					t.Fatalf("datagram %d: %d of 3 fragments sent", d, len(out))
				}
				be := backendOf(t, out[0])
				for i, o := range out {
					if got := backendOf(t, o); got != be {
						t.Errorf("datagram %d fragment %d to %v, first to %v", d, i, got, be)
					}
					if inner := decode(t, o).inner; !bytes.Equal(inner, frags[i][14:]) {
						t.Errorf("datagram %d fragment %d: inner packet changed", d, i)
					}
				}
				backends[be] = true
			}
			if len(backends) < 2 {
				t.Errorf("40 datagrams went to %d backends: fragments are not spread by their flows", len(backends))
			}
			c := r.counters()
			if c.FragmentsFollowed != 40 || c.FragmentsHeld != 40 || c.FragmentsReleased != 40 || c.Drops[pipeline.ReasonFragment] != 0 {
				t.Errorf("followed %d held %d released %d dropped %d; want 40 40 40 0",
					c.FragmentsFollowed, c.FragmentsHeld, c.FragmentsReleased, c.Drops[pipeline.ReasonFragment])
			}

			// Held fragments whose first never comes time out.
			frags := udpFragments(t, tc.cl.FlowSrc(99), tc.vip, 7, 4000, 1500, false)
			r.send(frags[1], frags[2])
			time.Sleep(80 * time.Millisecond)
			r.dp.Workers()[0].Poll()
			if c := r.counters(); c.Drops[pipeline.ReasonFragmentTimeout] != 2 {
				t.Errorf("fragment_timeout %d, want 2", c.Drops[pipeline.ReasonFragmentTimeout])
			}

			// Control: handling off drops every later fragment.
			spec.Fragments = false
			r.apply(spec)
			frags = udpFragments(t, tc.cl.FlowSrc(100), tc.vip, 8, 4000, 1500, false)
			if out := r.send(frags...); len(out) != 1 {
				t.Fatalf("fragments off: %d sent, want the first only", len(out))
			}
			if c := r.counters(); c.Drops[pipeline.ReasonFragment] != 2 {
				t.Errorf("fragments off: fragment drops %d, want 2", c.Drops[pipeline.ReasonFragment])
			}
		})
	}
}

// TestTooBigSpilled: what may be fragmented (IPv4 without DF, fragments)
// and exceeds the MTU once encapsulated goes through the kernel, whole:
// GUE header and inner packet as an unfragmented frame would carry them.
func TestTooBigSpilled(t *testing.T) {
	vu4 := netip.AddrPortFrom(vip4.Addr(), 53)
	r, sp := newSpillRig(t)
	r.apply(pipeline.Spec{MTU: 1500, Fragments: true, Services: []pipeline.ServiceSpec{udpService(vu4, backends4(3))}})
	whole := udpFragments(t, clients4.FlowSrc(1), vu4, 1, 1460, 1500, false)[0] // no DF
	frags := udpFragments(t, clients4.FlowSrc(2), vu4, 2, 4000, 1500, false)
	out := r.send(append([][]byte{whole}, frags...)...)
	if len(out) != 1 { // the last fragment (1068 bytes) fits
		t.Fatalf("%d frames sent by the link, want 1", len(out))
	}
	if len(sp.got) != 3 {
		t.Fatalf("%d spilled, want 3", len(sp.got))
	}
	for i, s := range sp.got {
		src := frags[i-min(i, 1)]
		if i == 0 {
			src = whole
		}
		if s.src != lb4 || s.port != 6080 || len(s.payload) < 4 || !bytes.Equal(s.payload[4:], src[14:]) {
			t.Errorf("spilled %d: %v -> %v:%d, %d bytes; want the GUE header and the inner packet", i, s.src, s.dst, s.port, len(s.payload))
		}
	}
	if sp.got[1].dst != sp.got[2].dst || sp.got[2].dst != backendOf(t, out[0]) {
		t.Errorf("fragments went to %v, %v and %v", sp.got[1].dst, sp.got[2].dst, backendOf(t, out[0]))
	}
	if c := r.counters(); c.Spilled != 3 || c.TooBigAnswered != 0 {
		t.Errorf("spilled %d answered %d", c.Spilled, c.TooBigAnswered)
	}
}

// A later fragment to an address that is no VIP is left to the kernel.
func TestFragmentNotForVIPPasses(t *testing.T) {
	r, _ := newSpillRig(t)
	r.apply(pipeline.Spec{MTU: 1500, Fragments: true, Services: []pipeline.ServiceSpec{udpService(netip.AddrPortFrom(vip4.Addr(), 53), backends4(2))}})
	frags := udpFragments(t, clients4.FlowSrc(1), netip.MustParseAddrPort("198.18.0.99:53"), 3, 3000, 1500, false)
	r.send(frags[1])
	if c := r.counters(); c.Passed != 1 || c.FragmentsHeld != 0 {
		t.Errorf("passed %d held %d", c.Passed, c.FragmentsHeld)
	}
}

// IPv6 fragments with an extension header after the Fragment header: the
// first fragment is parsed to UDP, the later ones name the Destination
// Options header; they are one datagram all the same (RFC 8200 4.5).
func TestFragmentsIPv6ExtensionHeader(t *testing.T) {
	vu6 := netip.AddrPortFrom(vip6.Addr(), 53)
	r, _ := newSpillRig(t)
	r.apply(pipeline.Spec{MTU: 9000, Fragments: true, Services: []pipeline.ServiceSpec{udpService(vu6, backends6(4))}})
	src := clients6.FlowSrc(1)
	udp := make([]byte, 8+3000)
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], vu6.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	// Destination Options: next header UDP, 8 bytes, PadN.
	body := append([]byte{17, 0, 1, 4, 0, 0, 0, 0}, udp...)
	var frames [][]byte
	const chunk = 1400
	for off := 0; off < len(body); off += chunk {
		end := min(off+chunk, len(body))
		fh := []byte{60, 0, 0, 0, 0, 0, 0x12, 0x34}
		fo := uint16(off/8) << 3
		if end < len(body) {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		payload := append(fh, body[off:end]...)
		f := make([]byte, 14+40+len(payload))
		copy(f[0:6], lbMAC[:])
		copy(f[6:12], hopMAC[:])
		f[12], f[13] = 0x86, 0xdd
		f[14] = 6 << 4
		binary.BigEndian.PutUint16(f[14+4:], uint16(len(payload)))
		f[14+6], f[14+7] = 44, 64
		s16, d16 := src.Addr().As16(), vu6.Addr().As16()
		copy(f[14+8:], s16[:])
		copy(f[14+24:], d16[:])
		copy(f[54:], payload)
		frames = append(frames, f)
	}
	out := r.send(frames...)
	if len(out) != len(frames) {
		t.Fatalf("%d of %d fragments sent", len(out), len(frames))
	}
	for i, o := range out {
		if backendOf(t, o) != backendOf(t, out[0]) {
			t.Errorf("fragment %d went to %v, the first to %v", i, backendOf(t, o), backendOf(t, out[0]))
		}
		if u16(o[34:36]) != u16(out[0][34:36]) {
			t.Errorf("fragment %d: outer source port %d, the first's %d", i, u16(o[34:36]), u16(out[0][34:36]))
		}
	}
}

// Held fragments of a datagram whose backend is reached by IPIP cannot be
// spilled (no UDP payload): they are counted as dropped, not released.
func TestHeldFragmentsIPIP(t *testing.T) {
	vu4 := netip.AddrPortFrom(vip4.Addr(), 53)
	r, sp := newSpillRig(t)
	svc := udpService(vu4, backends4(2))
	for i := range svc.Backends {
		svc.Backends[i].Tunnel.Mode = encap.IPIP
	}
	r.apply(pipeline.Spec{MTU: 9000, Fragments: true, Services: []pipeline.ServiceSpec{svc}})
	frags := udpFragments(t, clients4.FlowSrc(1), vu4, 5, 4000, 1500, false)
	r.send(frags[2], frags[1])
	r.send(frags[0])
	c := r.counters()
	if c.FragmentsHeld != 2 || c.FragmentsReleased != 0 || len(sp.got) != 0 || c.Drops[pipeline.ReasonTooBig] != 2 {
		t.Fatalf("held %d released %d spilled %d too_big %d; want 2 0 0 2", c.FragmentsHeld, c.FragmentsReleased, len(sp.got), c.Drops[pipeline.ReasonTooBig])
	}
}

// No ICMP error goes to a source that cannot be one host's (the packet is
// sent fragmented instead).
func TestTooBigNotToMulticast(t *testing.T) {
	r, _ := newSpillRig(t)
	r.apply(pipeline.Spec{MTU: 1500, Services: []pipeline.ServiceSpec{service(vip4, backends4(2), nil)}})
	f := sim.Frame{SrcMAC: hopMAC, DstMAC: lbMAC, Src: netip.MustParseAddrPort("224.0.0.9:4000"), Dst: vip4, Proto: 6, TCPFlags: sim.ACK, Payload: 1460}
	b := make([]byte, f.Len())
	f.Encode(b)
	if out := r.send(b); len(out) != 0 {
		t.Fatalf("%d frames out for a too-big packet from a multicast source", len(out))
	}
	if c := r.counters(); c.TooBigAnswered != 0 {
		t.Fatalf("answered %d", c.TooBigAnswered)
	}
}
