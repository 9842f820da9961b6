package encap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/sluicelb/sluice/internal/fielderr"
)

var (
	natClient4, natVIP4 = netip.MustParseAddrPort("203.0.113.7:40123"), netip.MustParseAddrPort("198.18.0.10:443")
	natSNAT4, natBack4  = netip.MustParseAddr("198.18.30.11"), netip.MustParseAddrPort("198.18.30.101:8080")
	natClient6, natVIP6 = netip.MustParseAddrPort("[2001:db8:c::7]:40123"), netip.MustParseAddrPort("[2001:db8::10]:443")
	natSNAT6, natBack6  = netip.MustParseAddr("2001:db8:30::11"), netip.MustParseAddrPort("[2001:db8:30::101]:8080")
	natRouterMAC        = [6]byte{0x02, 0x00, 0x5e, 0x00, 0x00, 0xfe}
)

const natSPort = 20001 // the SNAT port the worker allocated

// pktSpec is an IP packet for the NAT tests, built with gopacket.
type pktSpec struct {
	v6      bool
	proto   uint8 // 6 or 17
	src     netip.AddrPort
	dst     netip.AddrPort
	payload []byte
	ip4Opts bool   // IPv4 with a 4-byte option (IHL 6)
	frag    uint8  // 0 none, 1 first fragment, 2 later fragment (IPv4: the MF flag / offset only)
	zeroUDP bool   // UDP checksum 0
	tweak   uint16 // added to the last payload word (to steer checksums)
}

// build serializes s with correct checksums (a later fragment carries raw
// payload bytes after the IP header, no L4 header) and returns the packet
// and the offset of its L4 header (0 for a later fragment).
func (s pktSpec) build(t testing.TB) (pkt []byte, l4 int) {
	t.Helper()
	sb := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	var ipl gopacket.NetworkLayer
	var ipLayer gopacket.SerializableLayer
	hl := 40
	if s.v6 {
		ip := &layers.IPv6{Version: 6, TrafficClass: testTOS, FlowLabel: 0x54321, HopLimit: 57,
			NextHeader: layers.IPProtocol(s.proto), SrcIP: net.IP(s.src.Addr().AsSlice()), DstIP: net.IP(s.dst.Addr().AsSlice())}
		ipl, ipLayer = ip, ip
	} else {
		ip := &layers.IPv4{Version: 4, IHL: 5, TOS: testTOS, Id: 0x1d2e, Flags: layers.IPv4DontFragment, TTL: 57,
			Protocol: layers.IPProtocol(s.proto), SrcIP: net.IP(s.src.Addr().AsSlice()), DstIP: net.IP(s.dst.Addr().AsSlice())}
		hl = 20
		if s.ip4Opts {
			ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
			hl = 24
		}
		switch s.frag {
		case 1:
			ip.Flags = layers.IPv4MoreFragments
		case 2:
			ip.Flags, ip.FragOffset = 0, 185
		}
		ipl, ipLayer = ip, ip
	}
	payload := append([]byte(nil), s.payload...)
	if s.tweak != 0 {
		n := len(payload) &^ 1
		binary.BigEndian.PutUint16(payload[n-2:], binary.BigEndian.Uint16(payload[n-2:])+s.tweak)
	}
	var err error
	switch {
	case s.frag == 2:
		err = gopacket.SerializeLayers(sb, opts, ipLayer, gopacket.Payload(payload))
	case s.proto == protoTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(s.src.Port()), DstPort: layers.TCPPort(s.dst.Port()),
			Seq: 0x01020304, Ack: 0x0a0b0c0d, ACK: true, PSH: true, Window: 501}
		if err := tcp.SetNetworkLayerForChecksum(ipl); err != nil {
			t.Fatal(err)
		}
		err = gopacket.SerializeLayers(sb, opts, ipLayer, tcp, gopacket.Payload(payload))
	default:
		udp := &layers.UDP{SrcPort: layers.UDPPort(s.src.Port()), DstPort: layers.UDPPort(s.dst.Port())}
		if err := udp.SetNetworkLayerForChecksum(ipl); err != nil {
			t.Fatal(err)
		}
		err = gopacket.SerializeLayers(sb, opts, ipLayer, udp, gopacket.Payload(payload))
	}
	if err != nil {
		t.Fatal(err)
	}
	pkt = bytes.Clone(sb.Bytes())
	if s.v6 && s.frag != 0 {
		// An IPv6 fragment header after the fixed header: offset 0 with
		// more fragments (first), or offset 1480 (later).
		fh := make([]byte, 8)
		fh[0] = s.proto
		if s.frag == 1 {
			binary.BigEndian.PutUint16(fh[2:], 1)
		} else {
			binary.BigEndian.PutUint16(fh[2:], 185<<3)
		}
		binary.BigEndian.PutUint32(fh[4:], 0xfeedf00d)
		pkt = append(pkt[:40:40], append(fh, pkt[40:]...)...)
		pkt[6] = 44
		binary.BigEndian.PutUint16(pkt[4:], binary.BigEndian.Uint16(pkt[4:])+8)
		hl = 48
	}
	if s.frag == 2 {
		return pkt, 0
	}
	if s.proto == protoUDP {
		if s.zeroUDP {
			binary.BigEndian.PutUint16(pkt[hl+6:], 0)
		} else if binary.BigEndian.Uint16(pkt[hl+6:]) == 0 {
			binary.BigEndian.PutUint16(pkt[hl+6:], 0xffff) // gopacket leaves a computed 0 as 0
		}
	}
	return pkt, hl
}

// ethFrame serializes pkt behind an Ethernet header (with an 802.1Q tag if
// vlan != 0) with gopacket, without the padding to 60 bytes gopacket adds.
func ethFrame(t testing.TB, src, dst [6]byte, vlan uint16, v6 bool, pkt []byte) []byte {
	t.Helper()
	et := layers.EthernetTypeIPv4
	if v6 {
		et = layers.EthernetTypeIPv6
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(src[:]), DstMAC: net.HardwareAddr(dst[:]), EthernetType: et}
	ls := []gopacket.SerializableLayer{eth}
	if vlan != 0 {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{Priority: uint8(vlan >> 13), DropEligible: vlan&0x1000 != 0,
			VLANIdentifier: vlan & 0xfff, Type: et})
	}
	sb := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{}, append(ls, gopacket.Payload(pkt))...); err != nil {
		t.Fatal(err)
	}
	n := 14 + len(pkt)
	if vlan != 0 {
		n += 4
	}
	return bytes.Clone(sb.Bytes()[:n])
}

// received lays out slack | fake Ethernet header (0xee, rxL2 bytes) | pkt
// and returns the buffer, l3 and end.
func received(pkt []byte, rxL2, slack int) (buf []byte, l3, end int) {
	buf = make([]byte, slack+rxL2+len(pkt))
	for i := range buf[:slack+rxL2] {
		buf[i] = 0xee
	}
	l3 = slack + rxL2
	copy(buf[l3:], pkt)
	return buf, l3, len(buf)
}

// checksumOffsets returns the offsets, in a frame whose IP header starts at
// l3, of the checksums a recomputation may write as 0 where an incremental
// update writes 0xffff or the reverse (both are zero in one's complement):
// the IPv4 header checksum and the TCP checksum. UDP is not in the list: its
// 0 means "none", so it must match exactly.
func checksumOffsets(l3, l4 int, v6 bool, proto uint8) []int {
	var offs []int
	if !v6 {
		offs = append(offs, l3+10)
	}
	if l4 != 0 && proto == protoTCP {
		offs = append(offs, l4+16)
	}
	return offs
}

// sameFrame compares got with want, taking 0 and 0xffff as the same value
// at the 16-bit checksum offsets offs.
func sameFrame(got, want []byte, offs []int) error {
	if len(got) != len(want) {
		return fmt.Errorf("length %d, want %d\n got %x\nwant %x", len(got), len(want), got, want)
	}
	g, w := bytes.Clone(got), bytes.Clone(want)
	for _, o := range offs {
		for _, b := range [][]byte{g, w} {
			if binary.BigEndian.Uint16(b[o:]) == 0xffff {
				binary.BigEndian.PutUint16(b[o:], 0)
			}
		}
	}
	if !bytes.Equal(g, w) {
		for i := range g {
			if g[i] != w[i] {
				return fmt.Errorf("first difference at byte %d\n got %x\nwant %x", i, got, want)
			}
		}
	}
	return nil
}

func mustCompileNAT(t testing.TB, n NAT) *NATTemplate {
	t.Helper()
	tp, err := CompileNAT(n)
	if err != nil {
		t.Fatalf("CompileNAT(%+v): %v", n, err)
	}
	return tp
}

type natCase struct {
	name string
	spec pktSpec // the client's packet (v6, proto, options; addresses are filled in)
	vlan uint16  // tag toward the next hop
	rxL2 int     // length of the received Ethernet header
}

func natCases() []natCase {
	pl := []byte("GET / HTTP/1.1\r\nHost: sluice\r\n\r\n")
	odd := []byte("odd length payload")[:17]
	return []natCase{
		{"v4-tcp", pktSpec{proto: protoTCP, payload: pl}, 0, 14},
		{"v4-tcp-vlan", pktSpec{proto: protoTCP, payload: pl}, 0x2064, 14},
		{"v4-tcp-rx-vlan", pktSpec{proto: protoTCP, payload: pl}, 0, 18},
		{"v4-tcp-options", pktSpec{proto: protoTCP, payload: pl, ip4Opts: true}, 0, 14},
		{"v4-udp", pktSpec{proto: protoUDP, payload: odd}, 0, 14},
		{"v4-udp-zero-checksum", pktSpec{proto: protoUDP, payload: pl, zeroUDP: true}, 0, 14},
		{"v4-udp-first-fragment", pktSpec{proto: protoUDP, payload: pl, frag: 1}, 0, 14},
		{"v4-later-fragment", pktSpec{proto: protoUDP, payload: pl, frag: 2}, 0, 14},
		{"v6-tcp", pktSpec{v6: true, proto: protoTCP, payload: pl}, 0, 14},
		{"v6-tcp-vlan", pktSpec{v6: true, proto: protoTCP, payload: pl}, 0xe00a, 18},
		{"v6-udp", pktSpec{v6: true, proto: protoUDP, payload: odd}, 0, 14},
		{"v6-udp-empty", pktSpec{v6: true, proto: protoUDP}, 0, 14},
		{"v6-udp-first-fragment", pktSpec{v6: true, proto: protoUDP, payload: pl, frag: 1}, 0, 14},
		{"v6-later-fragment", pktSpec{v6: true, proto: protoUDP, payload: pl, frag: 2}, 0, 14},
	}
}

// TestNATForwardGolden rewrites client packets toward a backend and
// compares the frames with what gopacket builds for the translated packet.
func TestNATForwardGolden(t *testing.T) {
	for _, c := range natCases() {
		t.Run(c.name, func(t *testing.T) {
			client, vip, snat, back := natClient4, natVIP4, natSNAT4, natBack4
			if c.spec.v6 {
				client, vip, snat, back = natClient6, natVIP6, natSNAT6, natBack6
			}
			tp := mustCompileNAT(t, NAT{L2: L2{SrcMAC: testSrcMAC, DstMAC: testDstMAC, VLAN: c.vlan}, SNAT: snat, Backend: back})
			in, out := c.spec, c.spec
			in.src, in.dst = client, vip
			out.src, out.dst = netip.AddrPortFrom(snat, natSPort), back
			pkt, l4 := in.build(t)
			wantPkt, _ := out.build(t)
			want := ethFrame(t, testSrcMAC, testDstMAC, c.vlan, c.spec.v6, wantPkt)

			buf, l3, end := received(pkt, c.rxL2, tp.Headroom(c.rxL2)+3)
			if l4 != 0 {
				l4 += l3
			}
			start := tp.Forward(buf, l3, l4, end, c.spec.proto, natSPort)
			if start != l3-len(want)+len(wantPkt) {
				t.Fatalf("Forward = %d, want %d", start, l3-len(want)+len(wantPkt))
			}
			frameL3 := len(want) - len(wantPkt)
			offs := checksumOffsets(frameL3, frameOff(l4, l3, frameL3), c.spec.v6, c.spec.proto)
			if err := sameFrame(buf[start:end], want, offs); err != nil {
				t.Fatal(err)
			}
			checkSums(t, buf[l3:end], l4-l3, c.spec)
		})
	}
}

// frameOff moves the buffer offset l4 (0: none) to the frame whose IP
// header starts at frameL3.
func frameOff(l4, l3, frameL3 int) int {
	if l4 == 0 {
		return 0
	}
	return l4 - l3 + frameL3
}

// checkSums verifies the IPv4 header checksum and the L4 checksum of pkt
// from scratch (independently of gopacket), l4 in pkt (<= 0: none).
func checkSums(t *testing.T, pkt []byte, l4 int, s pktSpec) {
	t.Helper()
	if !s.v6 {
		hl := int(pkt[0]&0xf) * 4
		if c := Checksum(pkt[:hl], 0); c != 0 {
			t.Errorf("IPv4 header checksum does not verify (residue %#04x)", c)
		}
	}
	if l4 <= 0 {
		return
	}
	seg := pkt[l4:]
	if s.proto == protoUDP && binary.BigEndian.Uint16(seg[6:]) == 0 {
		if !s.zeroUDP || s.v6 {
			t.Error("UDP checksum 0")
		}
		return
	}
	if s.frag == 1 {
		return // the checksum covers the whole datagram
	}
	var ph uint32
	if s.v6 {
		ph = uint32(sum16(pkt[8:40]))
	} else {
		ph = uint32(sum16(pkt[12:20]))
	}
	ph += uint32(s.proto) + uint32(len(seg))
	if c := Checksum(seg, ph); c != 0 {
		t.Errorf("L4 checksum does not verify (residue %#04x)", c)
	}
}

// TestNATReturnGolden rewrites the backend's replies toward the client with
// L2Template.NAT.
func TestNATReturnGolden(t *testing.T) {
	for _, c := range natCases() {
		t.Run(c.name, func(t *testing.T) {
			client, vip, snat, back := natClient4, natVIP4, natSNAT4, natBack4
			if c.spec.v6 {
				client, vip, snat, back = natClient6, natVIP6, natSNAT6, natBack6
			}
			h := CompileL2(L2{SrcMAC: testSrcMAC, DstMAC: natRouterMAC, VLAN: c.vlan})
			in, out := c.spec, c.spec
			in.src, in.dst = back, netip.AddrPortFrom(snat, natSPort)
			out.src, out.dst = vip, client
			pkt, l4 := in.build(t)
			wantPkt, _ := out.build(t)
			want := ethFrame(t, testSrcMAC, natRouterMAC, c.vlan, c.spec.v6, wantPkt)

			buf, l3, end := received(pkt, c.rxL2, max(h.Len()-c.rxL2, 0))
			if l4 != 0 {
				l4 += l3
			}
			to := MakeNATTuple(vip, client)
			start := h.NAT(buf, l3, l4, end, c.spec.proto, &to)
			if start != l3-h.Len() {
				t.Fatalf("NAT = %d, want %d", start, l3-h.Len())
			}
			frameL3 := h.Len()
			offs := checksumOffsets(frameL3, frameOff(l4, l3, frameL3), c.spec.v6, c.spec.proto)
			if err := sameFrame(buf[start:end], want, offs); err != nil {
				t.Fatal(err)
			}
			checkSums(t, buf[l3:end], l4-l3, c.spec)
		})
	}
}

// TestNATUDPChecksumZero: a UDP checksum that comes out 0 is sent as 0xffff
// (RFC 768), in both families. The payload is chosen so that the
// translated datagram's checksum computes to 0.
func TestNATUDPChecksumZero(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprint("v6=", v6), func(t *testing.T) {
			client, vip, snat, back := natClient4, natVIP4, natSNAT4, natBack4
			if v6 {
				client, vip, snat, back = natClient6, natVIP6, natSNAT6, natBack6
			}
			out := pktSpec{v6: v6, proto: protoUDP, payload: make([]byte, 16),
				src: netip.AddrPortFrom(snat, natSPort), dst: back}
			// Find the tweak that makes the checksum of the translated
			// datagram compute to 0 (sent as 0xffff).
			probe, hl := out.build(t)
			c := binary.BigEndian.Uint16(probe[hl+6:])
			out.tweak = c // adds ~sum, so the sum becomes 0xffff and its complement 0
			wantPkt, _ := out.build(t)
			if got := binary.BigEndian.Uint16(wantPkt[hl+6:]); got != 0xffff {
				t.Fatalf("test setup: translated checksum %#04x, want 0xffff", got)
			}
			in := out
			in.src, in.dst = client, vip
			pkt, l4 := in.build(t)
			buf, l3, end := received(pkt, 14, 0)
			tp := mustCompileNAT(t, NAT{SNAT: snat, Backend: back})
			if tp.Forward(buf, l3, l3+l4, end, protoUDP, natSPort) < 0 {
				t.Fatal("Forward failed")
			}
			if got := binary.BigEndian.Uint16(buf[l3+l4+6:]); got != 0xffff {
				t.Fatalf("UDP checksum %#04x, want 0xffff", got)
			}
			if !bytes.Equal(buf[l3:end], wantPkt) {
				t.Fatalf("packet\n got %x\nwant %x", buf[l3:end], wantPkt)
			}
		})
	}
}

// TestNATRandomRoundTrip: random packets translated toward the backend and
// back again come out as they went in (checksums included, up to 0/0xffff
// for TCP and the IPv4 header), and every intermediate checksum verifies.
func TestNATRandomRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 1624))
	n := 300
	if testing.Short() {
		n = 100
	}
	for i := range n {
		v6 := r.IntN(2) == 1
		proto := uint8(protoTCP)
		if r.IntN(2) == 1 {
			proto = protoUDP
		}
		snat, back := randAddr(r, v6), netip.AddrPortFrom(randAddr(r, v6), uint16(1+r.IntN(65535)))
		client := netip.AddrPortFrom(randAddr(r, v6), uint16(r.IntN(65536)))
		vip := netip.AddrPortFrom(randAddr(r, v6), uint16(1+r.IntN(65535)))
		sport := uint16(r.IntN(65536))
		payload := make([]byte, r.IntN(200))
		for j := range payload {
			payload[j] = byte(r.Uint32())
		}
		s := pktSpec{v6: v6, proto: proto, src: client, dst: vip, payload: payload, ip4Opts: !v6 && r.IntN(4) == 0}
		pkt, l4 := s.build(t)
		buf, l3, end := received(pkt, 14, 4)
		tp := mustCompileNAT(t, NAT{L2: L2{VLAN: uint16(r.IntN(2)) * 7}, SNAT: snat, Backend: back})
		if tp.Forward(buf, l3, l3+l4, end, proto, sport) < 0 {
			t.Fatalf("%d: Forward failed", i)
		}
		mid := s
		mid.src, mid.dst = netip.AddrPortFrom(snat, sport), back
		checkSums(t, buf[l3:end], l4, mid)
		to := MakeNATTuple(client, vip)
		if CompileL2(L2{}).NAT(buf, l3, l3+l4, end, proto, &to) < 0 {
			t.Fatalf("%d: NAT back failed", i)
		}
		if err := sameFrame(buf[l3:end], pkt, checksumOffsets(0, l4, v6, proto)); err != nil {
			t.Fatalf("%d: round trip: %v", i, err)
		}
		if t.Failed() {
			t.Fatalf("%d: %+v", i, s)
		}
	}
}

func randAddr(r *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		var a [16]byte
		binary.LittleEndian.PutUint64(a[:], r.Uint64())
		binary.LittleEndian.PutUint64(a[8:], r.Uint64()|1)
		a[0] = 0x20
		return netip.AddrFrom16(a)
	}
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], r.Uint32()|1)
	a[0] = 1 + a[0]%223
	return netip.AddrFrom4(a)
}

// TestNATRejects: every refusal returns -1 and leaves the buffer untouched.
func TestNATRejects(t *testing.T) {
	tp4 := mustCompileNAT(t, NAT{SNAT: natSNAT4, Backend: natBack4})
	tp4v := mustCompileNAT(t, NAT{L2: L2{VLAN: 5}, SNAT: natSNAT4, Backend: natBack4})
	tp6 := mustCompileNAT(t, NAT{SNAT: natSNAT6, Backend: natBack6})
	tcp4, _ := pktSpec{proto: protoTCP, src: natClient4, dst: natVIP4}.build(t)
	udp6, _ := pktSpec{v6: true, proto: protoUDP, src: natClient6, dst: natVIP6}.build(t)
	for _, c := range []struct {
		name           string
		tp             *NATTemplate
		pkt            []byte
		rx, l4, cutEnd int
		proto          uint8
	}{
		{"family mismatch", tp6, tcp4, 14, 20, 0, protoTCP},
		{"family mismatch 6", tp4, udp6, 14, 40, 0, protoUDP},
		{"no headroom for the tag", tp4v, tcp4, 14, 20, 0, protoTCP},
		{"not TCP or UDP", tp4, tcp4, 14, 20, 0, 1},
		{"TCP header cut", tp4, tcp4, 14, 20, 1, protoTCP},
		{"UDP header cut", tp6, udp6, 14, 40, 1, protoUDP},
		{"l4 inside the IP header", tp4, tcp4, 14, 12, 0, protoTCP},
		{"l4 past the end", tp4, tcp4, 14, 60, 0, protoTCP},
		{"IP header cut", tp6, udp6, 14, 0, 48 - 39, protoUDP},
	} {
		t.Run(c.name, func(t *testing.T) {
			buf, l3, end := received(c.pkt, c.rx, 0)
			end -= c.cutEnd
			l4 := 0
			if c.l4 != 0 {
				l4 = l3 + c.l4
			}
			before := bytes.Clone(buf)
			if got := c.tp.Forward(buf, l3, l4, end, c.proto, 1); got != -1 {
				t.Errorf("Forward = %d, want -1", got)
			}
			to := MakeNATTuple(natVIP4, natClient4)
			if c.tp.Is6() {
				to = MakeNATTuple(natVIP6, natClient6)
			}
			if !strings.HasPrefix(c.name, "family") { // NAT takes the family from the packet
				if got := c.tp.l2.NAT(buf, l3, l4, end, c.proto, &to); got != -1 {
					t.Errorf("NAT = %d, want -1", got)
				}
			}
			if !bytes.Equal(buf, before) {
				t.Error("buffer changed")
			}
		})
	}
	// Offsets out of range.
	buf, l3, end := received(tcp4, 14, 0)
	for _, a := range [][3]int{{-1, 34, end}, {l3, l3 + 20, end + 1}, {end, 0, end}, {l3, l3 + 20, l3}} {
		if got := tp4.Forward(buf, a[0], a[1], a[2], protoTCP, 1); got != -1 {
			t.Errorf("Forward(l3 %d, l4 %d, end %d) = %d, want -1", a[0], a[1], a[2], got)
		}
	}
}

func TestCompileNATErrors(t *testing.T) {
	for _, c := range []struct {
		n     NAT
		field string
	}{
		{NAT{Backend: natBack4}, "SNAT"},
		{NAT{SNAT: natSNAT4}, "Backend"},
		{NAT{SNAT: natSNAT4, Backend: netip.AddrPortFrom(natBack4.Addr(), 0)}, "Backend"},
		{NAT{SNAT: natSNAT6, Backend: natBack4}, "Backend"},
		{NAT{SNAT: netip.MustParseAddr("::ffff:1.2.3.4"), Backend: natBack4}, "SNAT"},
		{NAT{SNAT: netip.IPv4Unspecified(), Backend: natBack4}, "SNAT"},
		{NAT{SNAT: natSNAT4, Backend: netip.MustParseAddrPort("224.0.0.1:80")}, "Backend"},
	} {
		_, err := CompileNAT(c.n)
		var fe *fielderr.Error
		if !errors.Is(err, ErrNAT) || !errors.As(err, &fe) || fe.Path != "nat."+c.field {
			t.Errorf("CompileNAT(%+v) = %v, want a fielderr.Error on nat.%s", c.n, err, c.field)
		}
	}
}

func TestNATZeroAllocs(t *testing.T) {
	tp := mustCompileNAT(t, NAT{L2: L2{VLAN: 9}, SNAT: natSNAT6, Backend: natBack6})
	pkt, l4 := pktSpec{v6: true, proto: protoTCP, src: natClient6, dst: natVIP6, payload: make([]byte, 64)}.build(t)
	buf, l3, end := received(pkt, 14, 4)
	to := MakeNATTuple(natVIP6, natClient6)
	h := CompileL2(L2{})
	allocs := testing.AllocsPerRun(100, func() {
		if tp.Forward(buf, l3, l3+l4, end, protoTCP, natSPort) < 0 || h.NAT(buf, l3, l3+l4, end, protoTCP, &to) < 0 {
			panic("rewrite failed")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per Forward+NAT, want 0", allocs)
	}
}

// FuzzNAT rewrites arbitrary bytes as an IP packet. It must never panic or
// write outside buf[l3-L2:end]; when it succeeds the addresses and ports are
// the template's and the checksums keep their residue (a correct checksum
// stays correct, a wrong one stays exactly as wrong).
func FuzzNAT(f *testing.F) {
	for _, c := range natCases() {
		s := c.spec
		s.src, s.dst = natClient4, natVIP4
		if s.v6 {
			s.src, s.dst = natClient6, natVIP6
		}
		pkt, l4 := s.build(f)
		f.Add(pkt, uint8(l4), s.proto, s.v6)
	}
	tp4 := mustCompileNAT(f, NAT{SNAT: natSNAT4, Backend: natBack4})
	tp6 := mustCompileNAT(f, NAT{L2: L2{VLAN: 3}, SNAT: natSNAT6, Backend: natBack6})
	f.Fuzz(func(t *testing.T, pkt []byte, l4 uint8, proto uint8, v6 bool) {
		tp := tp4
		if v6 {
			tp = tp6
		}
		const guard = 8
		buf := make([]byte, guard+18+len(pkt)+guard)
		l3 := guard + 18
		copy(buf[l3:], pkt)
		end := l3 + len(pkt)
		l4o := 0
		if l4 != 0 {
			l4o = l3 + int(l4)
		}
		orig := bytes.Clone(buf)
		// L2Template.NAT with the same Ethernet header and tuple must do
		// exactly what Forward does.
		other := bytes.Clone(buf)
		to := MakeNATTuple(netip.AddrPortFrom(tp.SNAT(), natSPort), tp.Backend())
		ostart := tp.l2.NAT(other, l3, l4o, end, proto, &to)
		start := tp.Forward(buf, l3, l4o, end, proto, natSPort)
		if !bytes.Equal(buf, other) || ostart != start && (ostart >= 0 || start >= 0) {
			// NAT takes the family from the packet, Forward from the
			// template: they differ only when those differ.
			if len(pkt) > 0 && (pkt[0]>>4 == 6 && v6 || pkt[0]>>4 == 4 && !v6) {
				t.Fatalf("Forward = %d, L2Template.NAT = %d\nForward %x\nNAT     %x", start, ostart, buf, other)
			}
		}
		if start < 0 {
			if !bytes.Equal(buf, orig) {
				t.Fatal("failed Forward wrote to the buffer")
			}
			return
		}
		if start != l3-tp.l2.Len() || !bytes.Equal(buf[:start], orig[:start]) || !bytes.Equal(buf[end:], orig[end:]) {
			t.Fatal("Forward wrote outside its frame")
		}
		p := buf[l3:end]
		var src, dst netip.Addr
		if v6 {
			src, dst = netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
		} else {
			src, dst = netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
			hl := int(p[0]&0xf) * 4
			if !sameResidue(Checksum(orig[l3:l3+hl], 0), Checksum(p[:hl], 0)) {
				t.Fatal("IPv4 header checksum residue changed")
			}
		}
		if src != tp.SNAT() || dst != tp.Backend().Addr() {
			t.Fatalf("addresses %v -> %v", src, dst)
		}
		if l4o == 0 {
			return
		}
		seg, oseg := buf[l4o:end], orig[l4o:end]
		if binary.BigEndian.Uint16(seg) != natSPort || binary.BigEndian.Uint16(seg[2:]) != tp.Backend().Port() {
			t.Fatal("ports not rewritten")
		}
		var ph, oph uint32
		if v6 {
			ph, oph = uint32(sum16(p[8:40])), uint32(sum16(orig[l3+8:l3+40]))
		} else {
			ph, oph = uint32(sum16(p[12:20])), uint32(sum16(orig[l3+12:l3+20]))
		}
		if proto == protoUDP {
			if binary.BigEndian.Uint16(oseg[6:]) == 0 {
				if binary.BigEndian.Uint16(seg[6:]) != 0 {
					t.Fatal("UDP checksum 0 not kept")
				}
				return
			}
			if binary.BigEndian.Uint16(seg[6:]) == 0 {
				t.Fatal("UDP checksum became 0")
			}
		}
		if !sameResidue(Checksum(oseg, oph), Checksum(seg, ph)) {
			t.Fatalf("L4 checksum residue changed")
		}
	})
}

// sameResidue compares two verification results in one's complement, where
// 0 and 0xffff are both zero.
func sameResidue(a, b uint16) bool {
	return a == b || (a == 0 || a == 0xffff) && (b == 0 || b == 0xffff)
}
