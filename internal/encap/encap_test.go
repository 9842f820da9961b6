package encap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	testSrcMAC = [6]byte{0x02, 0x00, 0x5e, 0x00, 0x00, 0x01}
	testDstMAC = [6]byte{0x02, 0x00, 0x5e, 0x00, 0x00, 0x02}

	lb4, be4, be4b = netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.1.10"), netip.MustParseAddr("198.18.1.11")
	lb6, be6, be6b = netip.MustParseAddr("2001:db8:1::1"), netip.MustParseAddr("2001:db8:2::10"), netip.MustParseAddr("2001:db8:2::11")
)

const testTOS = 0xb9 // DSCP 46 (EF), ECN 01 (ECT(1))

func mustCompile(t testing.TB, tun Tunnel) *Template {
	t.Helper()
	tp, err := Compile(tun)
	if err != nil {
		t.Fatalf("Compile(%+v): %v", tun, err)
	}
	return tp
}

// buildInner serializes an inner packet with gopacket: IPv4/TCP or IPv6/UDP
// carrying payloadLen random bytes, DSCP/ECN = testTOS.
func buildInner(t testing.TB, version uint8, payloadLen int, r *rand.Rand) []byte {
	t.Helper()
	payload := make([]byte, payloadLen)
	for i := range payload {
		payload[i] = byte(r.Uint32())
	}
	sb := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	var err error
	if version == 4 {
		ip := &layers.IPv4{Version: 4, IHL: 5, TOS: testTOS, Id: uint16(r.Uint32()), Flags: layers.IPv4DontFragment,
			TTL: 61, Protocol: layers.IPProtocolTCP,
			SrcIP: net.IP{203, 0, 113, 7}, DstIP: net.IP{198, 18, 100, 1}}
		tcp := &layers.TCP{SrcPort: layers.TCPPort(40000 + r.IntN(20000)), DstPort: 443,
			Seq: r.Uint32(), Ack: r.Uint32(), ACK: true, PSH: true, Window: 512}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		err = gopacket.SerializeLayers(sb, opts, ip, tcp, gopacket.Payload(payload))
	} else {
		ip := &layers.IPv6{Version: 6, TrafficClass: testTOS, FlowLabel: 0x12345, NextHeader: layers.IPProtocolUDP,
			HopLimit: 60, SrcIP: net.ParseIP("2001:db8:c::7"), DstIP: net.ParseIP("2001:db8:f::10")}
		udp := &layers.UDP{SrcPort: layers.UDPPort(40000 + r.IntN(20000)), DstPort: 443}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		err = gopacket.SerializeLayers(sb, opts, ip, udp, gopacket.Payload(payload))
	}
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(sb.Bytes())
}

// receivedFrame lays out buf = slack | headroom | Ethernet(+tag) | inner and
// returns buf, l3 and end. The fake received Ethernet header is filled with
// 0xee so that leftovers would show.
func receivedFrame(tp *Template, inner []byte, rxVLAN, withHops bool, slack int) (buf []byte, l3, end int) {
	l3Off := 14
	if rxVLAN {
		l3Off = 18
	}
	hr := tp.Headroom(l3Off, withHops)
	buf = make([]byte, slack+hr+l3Off+len(inner))
	for i := range buf[:slack+hr+l3Off] {
		buf[i] = 0xee
	}
	l3 = slack + hr + l3Off
	copy(buf[l3:], inner)
	return buf, l3, len(buf)
}

// verifyChecksum is an independent RFC 1071 check: the sum over data that
// includes its checksum field must be one's complement zero.
func verifyChecksum(parts ...[]byte) bool {
	var s uint64
	for _, p := range parts {
		if len(p)%2 != 0 {
			p = append(bytes.Clone(p), 0)
		}
		for i := 0; i < len(p); i += 2 {
			s += uint64(binary.BigEndian.Uint16(p[i:]))
		}
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return s == 0xffff
}

type goldenCase struct {
	mode       Mode
	outer6     bool
	inner      uint8
	hops, vlan bool
	csum       bool // UDPChecksum for IPv4 outer; !ZeroUDP6Checksum for IPv6 outer
}

func (c goldenCase) String() string {
	s := fmt.Sprintf("%v/o%d/i%d", c.mode, map[bool]int{false: 4, true: 6}[c.outer6], c.inner)
	if c.hops {
		s += "/hops"
	}
	if c.vlan {
		s += "/vlan"
	}
	if c.mode == GUE {
		s += map[bool]string{false: "/nocsum", true: "/csum"}[c.csum]
	}
	return s
}

func goldenCases() []goldenCase {
	var cs []goldenCase
	for _, mode := range []Mode{GUE, IPIP} {
		for _, outer6 := range []bool{false, true} {
			for _, inner := range []uint8{4, 6} {
				for _, hops := range []bool{false, true} {
					if hops && mode != GUE {
						continue
					}
					for _, vlan := range []bool{false, true} {
						for _, csum := range []bool{false, true} {
							if csum && mode != GUE {
								continue
							}
							cs = append(cs, goldenCase{mode, outer6, inner, hops, vlan, csum})
						}
					}
				}
			}
		}
	}
	return cs
}

func (c goldenCase) tunnels() (prim, sec Tunnel) {
	prim = Tunnel{Mode: c.mode, SrcMAC: testSrcMAC, DstMAC: testDstMAC, Src: lb4, Dst: be4}
	sec = prim
	sec.Dst = be4b
	if c.outer6 {
		prim.Src, prim.Dst = lb6, be6
		sec.Src, sec.Dst = lb6, be6b
		prim.ZeroUDP6Checksum = !c.csum
	} else {
		prim.UDPChecksum = c.csum
	}
	if c.vlan {
		prim.VLAN = 0xb07b // PCP 5, DEI 1, VID 123
		prim.Port = 7000
		prim.TTL = 17
	}
	return prim, sec
}

func TestEncapGolden(t *testing.T) {
	cases := goldenCases()
	// GUE: 2 outer x 2 inner x 2 hops x 2 VLAN x 2 csum; IPIP: 2 x 2 x 2 VLAN.
	if len(cases) != 40 {
		t.Fatalf("%d golden cases, want 40", len(cases))
	}
	for _, c := range cases {
		t.Run(c.String(), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(len(c.String())), 99))
			primT, secT := c.tunnels()
			prim, sec := mustCompile(t, primT), mustCompile(t, secT)
			var secondary *Template
			if c.hops {
				secondary = sec
			}
			for i, payloadLen := range []int{0, 1, 37, 1200} {
				inner := buildInner(t, c.inner, payloadLen, r)
				hash := r.Uint64()
				buf, l3, end := receivedFrame(prim, inner, i%2 == 1, c.hops, i*3)
				orig := bytes.Clone(buf)
				start := prim.Encap(buf, l3, end, c.inner, hash, secondary)
				if want := l3 - prim.Overhead(c.hops); start != want {
					t.Fatalf("Encap returned %d, want %d", start, want)
				}
				if !bytes.Equal(buf[:start], orig[:start]) {
					t.Fatalf("Encap wrote before start")
				}
				if !bytes.Equal(buf[l3:end], inner) {
					t.Fatalf("Encap changed the inner packet")
				}
				checkGolden(t, c, primT, buf[start:end], inner, hash)
			}
		})
	}
}

// checkGolden decodes frame with gopacket (and GUE by hand) and checks every
// field against the tunnel, the case and the inner packet.
func checkGolden(t *testing.T, c goldenCase, tun Tunnel, frame, inner []byte, hash uint64) {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	ls := pkt.Layers()
	next := func(want gopacket.LayerType) gopacket.Layer {
		t.Helper()
		if len(ls) == 0 || ls[0].LayerType() != want {
			t.Fatalf("layers %v: want %v next", pkt.Layers(), want)
		}
		l := ls[0]
		ls = ls[1:]
		return l
	}
	wantEtherType := layers.EthernetTypeIPv4
	if c.outer6 {
		wantEtherType = layers.EthernetTypeIPv6
	}

	// Ethernet and VLAN.
	eth := next(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !bytes.Equal(eth.SrcMAC, tun.SrcMAC[:]) || !bytes.Equal(eth.DstMAC, tun.DstMAC[:]) {
		t.Errorf("MACs %v -> %v", eth.SrcMAC, eth.DstMAC)
	}
	l2 := 14
	if c.vlan {
		l2 = 18
		if eth.EthernetType != layers.EthernetTypeDot1Q {
			t.Errorf("ethertype %v, want 802.1Q", eth.EthernetType)
		}
		tag := next(layers.LayerTypeDot1Q).(*layers.Dot1Q)
		tci := uint16(tag.Priority)<<13 | tag.VLANIdentifier
		if tag.DropEligible {
			tci |= 1 << 12
		}
		if tci != tun.VLAN || tag.Type != wantEtherType {
			t.Errorf("802.1Q TCI %#04x type %v, want %#04x %v", tci, tag.Type, tun.VLAN, wantEtherType)
		}
	} else if eth.EthernetType != wantEtherType {
		t.Errorf("ethertype %v, want %v", eth.EthernetType, wantEtherType)
	}

	// Outer IP.
	wantTTL := tun.TTL
	if wantTTL == 0 {
		wantTTL = 64
	}
	var wantProto layers.IPProtocol = layers.IPProtocolUDP
	if c.mode == IPIP {
		wantProto = map[uint8]layers.IPProtocol{4: layers.IPProtocolIPv4, 6: layers.IPProtocolIPv6}[c.inner]
	}
	ipLen := 20
	var pseudo []byte // UDP pseudo-header
	if c.outer6 {
		ipLen = 40
		ip := next(layers.LayerTypeIPv6).(*layers.IPv6)
		wantFL := uint32((hash * 0x9E3779B97F4A7C15) >> 44)
		if ip.Version != 6 || ip.TrafficClass != testTOS || ip.FlowLabel != wantFL || ip.HopLimit != wantTTL ||
			ip.NextHeader != wantProto {
			t.Errorf("IPv6 v%d tc %#x fl %#x hlim %d nh %v, want tc %#x fl %#x hlim %d nh %v", ip.Version,
				ip.TrafficClass, ip.FlowLabel, ip.HopLimit, ip.NextHeader, testTOS, wantFL, wantTTL, wantProto)
		}
		if int(ip.Length) != len(frame)-l2-40 {
			t.Errorf("IPv6 payload length %d, want %d", ip.Length, len(frame)-l2-40)
		}
		if !ip.SrcIP.Equal(tun.Src.AsSlice()) || !ip.DstIP.Equal(tun.Dst.AsSlice()) {
			t.Errorf("IPv6 %v -> %v, want %v -> %v", ip.SrcIP, ip.DstIP, tun.Src, tun.Dst)
		}
		pseudo = append(append(append([]byte{}, ip.SrcIP...), ip.DstIP...), 0, 0, 0, 0, 0, 0, 0, 17)
		binary.BigEndian.PutUint16(pseudo[34:], ip.Length) // = UDP length
	} else {
		ip := next(layers.LayerTypeIPv4).(*layers.IPv4)
		if ip.Version != 4 || ip.IHL != 5 || ip.TOS != testTOS || ip.Id != 0 || ip.Flags != layers.IPv4DontFragment ||
			ip.FragOffset != 0 || ip.TTL != wantTTL || ip.Protocol != wantProto {
			t.Errorf("IPv4 v%d ihl %d tos %#x id %d flags %v frag %d ttl %d proto %v, want tos %#x DF ttl %d proto %v",
				ip.Version, ip.IHL, ip.TOS, ip.Id, ip.Flags, ip.FragOffset, ip.TTL, ip.Protocol, testTOS, wantTTL, wantProto)
		}
		if int(ip.Length) != len(frame)-l2 {
			t.Errorf("IPv4 total length %d, want %d", ip.Length, len(frame)-l2)
		}
		if !ip.SrcIP.Equal(tun.Src.AsSlice()) || !ip.DstIP.Equal(tun.Dst.AsSlice()) {
			t.Errorf("IPv4 %v -> %v, want %v -> %v", ip.SrcIP, ip.DstIP, tun.Src, tun.Dst)
		}
		if !verifyChecksum(frame[l2 : l2+20]) {
			t.Errorf("IPv4 header checksum %#04x does not verify", ip.Checksum)
		}
		pseudo = append(append(append([]byte{}, ip.SrcIP.To4()...), ip.DstIP.To4()...), 0, 17, 0, 0)
		binary.BigEndian.PutUint16(pseudo[10:], ip.Length-20)
	}

	if c.mode == IPIP {
		if got := frame[l2+ipLen:]; !bytes.Equal(got, inner) {
			t.Fatalf("IPIP payload differs from the inner packet")
		}
		checkInnerDecodes(t, inner, c.inner)
		return
	}

	// UDP.
	udp := next(layers.LayerTypeUDP).(*layers.UDP)
	wantPort := tun.Port
	if wantPort == 0 {
		wantPort = 6080
	}
	wantSport := layers.UDPPort(0xc000 | (hash*0x9E3779B97F4A7C15)>>50)
	if udp.SrcPort != wantSport || udp.SrcPort < 49152 || udp.DstPort != layers.UDPPort(wantPort) {
		t.Errorf("UDP ports %d -> %d, want %d -> %d", udp.SrcPort, udp.DstPort, wantSport, wantPort)
	}
	seg := frame[l2+ipLen:]
	if int(udp.Length) != len(seg) {
		t.Errorf("UDP length %d, want %d", udp.Length, len(seg))
	}
	if c.csum {
		if udp.Checksum == 0 || !verifyChecksum(pseudo, seg) {
			t.Errorf("UDP checksum %#04x does not verify", udp.Checksum)
		}
	} else if udp.Checksum != 0 {
		t.Errorf("UDP checksum %#04x, want 0 (off)", udp.Checksum)
	}

	// GUE, by hand.
	p := udp.Payload
	if len(p) < 4 {
		t.Fatalf("GUE: %d bytes", len(p))
	}
	ver, ctl, hlen := p[0]>>6, p[0]>>5&1, int(p[0]&0x1f)
	wantGUEProto := map[uint8]byte{4: 4, 6: 41}[c.inner]
	if ver != 0 || ctl != 0 || p[1] != wantGUEProto || p[2] != 0 || p[3] != 0 {
		t.Errorf("GUE ver %d C %d proto %d flags %#x, want 0 0 %d 0", ver, ctl, p[1], p[2:4], wantGUEProto)
	}
	alen := 4
	prim, sec := be4, be4b
	if c.outer6 {
		alen = 16
		prim, sec = be6, be6b
	}
	if c.hops {
		if hlen != (4+2*alen)/4 {
			t.Fatalf("GUE Hlen %d words, want %d", hlen, (4+2*alen)/4)
		}
		priv := p[4 : 4+4*hlen]
		typ, nxt, cnt := binary.BigEndian.Uint16(priv), priv[2], priv[3]
		h0, _ := netip.AddrFromSlice(priv[4 : 4+alen])
		h1, _ := netip.AddrFromSlice(priv[4+alen : 4+2*alen])
		if typ != 0x5343 || nxt != 1 || cnt != 2 || h0 != prim || h1 != sec {
			t.Errorf("hop list type %#04x next %d count %d hops [%v %v], want 0x5343 1 2 [%v %v]",
				typ, nxt, cnt, h0, h1, prim, sec)
		}
	} else if hlen != 0 {
		t.Errorf("GUE Hlen %d, want 0", hlen)
	}
	if got := p[4+4*hlen:]; !bytes.Equal(got, inner) {
		t.Fatalf("GUE payload differs from the inner packet")
	}
	checkInnerDecodes(t, inner, c.inner)
}

func checkInnerDecodes(t *testing.T, inner []byte, version uint8) {
	t.Helper()
	first := map[uint8]gopacket.LayerType{4: layers.LayerTypeIPv4, 6: layers.LayerTypeIPv6}[version]
	pkt := gopacket.NewPacket(inner, first, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("inner: %v", el.Error())
	}
	if pkt.NetworkLayer() == nil || pkt.TransportLayer() == nil {
		t.Fatalf("inner: layers %v", pkt.Layers())
	}
}

func TestEncapChecksumAllOnes(t *testing.T) {
	// Search for a packet whose computed UDP checksum is 0: it must be sent
	// as 0xffff. The inner payload's last word is tuned to force it.
	tp := mustCompile(t, Tunnel{Mode: GUE, Src: lb4, Dst: be4, UDPChecksum: true})
	inner := buildInner(t, 4, 2, rand.New(rand.NewPCG(7, 7)))
	buf, l3, end := receivedFrame(tp, inner, false, false, 0)
	start := tp.Encap(buf, l3, end, 4, 42, nil)
	udp := buf[start+14+20:]
	c := binary.BigEndian.Uint16(udp[6:])
	// Adding c to the last inner word makes the computed checksum 0.
	w := binary.BigEndian.Uint16(buf[end-2:])
	s := uint32(w) + uint32(c)
	s = s>>16 + s&0xffff
	binary.BigEndian.PutUint16(buf[end-2:], uint16(s))
	start = tp.Encap(buf, l3, end, 4, 42, nil)
	if got := binary.BigEndian.Uint16(buf[start+14+20+6:]); got != 0xffff {
		t.Fatalf("UDP checksum %#04x, want 0xffff for a computed zero", got)
	}
	if !verifyChecksum([]byte{198, 18, 0, 1, 198, 18, 1, 10, 0, 17, 0, byte(end - start - 34)}, buf[start+34:end]) {
		t.Fatalf("0xffff checksum does not verify")
	}
}

func TestEncapHeadroom(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	for _, c := range goldenCases() {
		primT, secT := c.tunnels()
		prim, sec := mustCompile(t, primT), mustCompile(t, secT)
		var secondary *Template
		if c.hops {
			secondary = sec
		}
		inner := buildInner(t, c.inner, 10, r)
		ov := prim.Overhead(c.hops)
		// Exactly enough: start is 0.
		buf := make([]byte, ov+len(inner))
		copy(buf[ov:], inner)
		if got := prim.Encap(buf, ov, len(buf), c.inner, 1, secondary); got != 0 {
			t.Errorf("%v: exact headroom: Encap = %d, want 0", c, got)
		}
		// One byte short: -1 and nothing written.
		buf = make([]byte, ov-1+len(inner))
		for i := range buf {
			buf[i] = 0xa5
		}
		copy(buf[ov-1:], inner)
		orig := bytes.Clone(buf)
		if got := prim.Encap(buf, ov-1, len(buf), c.inner, 1, secondary); got != -1 {
			t.Errorf("%v: short headroom: Encap = %d, want -1", c, got)
		}
		if !bytes.Equal(buf, orig) {
			t.Errorf("%v: short headroom: buffer modified", c)
		}
		if got, want := prim.Headroom(14, c.hops), ov-14; got != want {
			t.Errorf("%v: Headroom(14) = %d, want %d", c, got, want)
		}
		if got := prim.Headroom(ov+5, c.hops); got != 0 {
			t.Errorf("%v: Headroom(ov+5) = %d, want 0", c, got)
		}
	}
}

func TestEncapRejects(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	g4 := mustCompile(t, Tunnel{Mode: GUE, Src: lb4, Dst: be4})
	g6 := mustCompile(t, Tunnel{Mode: GUE, Src: lb6, Dst: be6})
	i4 := mustCompile(t, Tunnel{Mode: IPIP, Src: lb4, Dst: be4})
	in4, in6 := buildInner(t, 4, 10, r), buildInner(t, 6, 10, r)
	const hr = 128
	mk := func(inner []byte) []byte {
		b := make([]byte, hr+len(inner))
		for i := range b[:hr] {
			b[i] = 0x5a
		}
		copy(b[hr:], inner)
		return b
	}
	for _, tc := range []struct {
		name     string
		tp       *Template
		inner    []byte
		l3, end  int // end -1 means len(buf)
		version  uint8
		sec      *Template
		wantFail bool
	}{
		{"ok", g4, in4, hr, -1, 4, nil, false},
		{"family mismatch v4/v6", g4, in4, hr, -1, 4, g6, true},
		{"family mismatch v6/v4", g6, in4, hr, -1, 4, g4, true},
		{"ipip ignores secondary", i4, in4, hr, -1, 4, g6, false},
		{"version 5", g4, in4, hr, -1, 5, nil, true},
		{"version 0", g4, in4, hr, -1, 0, nil, true},
		{"says 4, is 6", g4, in6, hr, -1, 4, nil, true},
		{"says 6, is 4", g4, in4, hr, -1, 6, nil, true},
		{"short v4", g4, in4, hr, hr + 19, 4, nil, true},
		{"short v6", g4, in6, hr, hr + 39, 6, nil, true},
		{"end past buffer", g4, in4, hr, hr + len(in4) + 1, 4, nil, true},
		{"l3 past end", g4, in4, hr + 30, hr + 20, 4, nil, true},
		{"negative l3", g4, in4, -1, -1, 4, nil, true},
	} {
		buf := mk(tc.inner)
		orig := bytes.Clone(buf)
		end := tc.end
		if end == -1 {
			end = len(buf)
		}
		got := tc.tp.Encap(buf, tc.l3, end, tc.version, 7, tc.sec)
		if tc.wantFail {
			if got != -1 {
				t.Errorf("%s: Encap = %d, want -1", tc.name, got)
			}
			if !bytes.Equal(buf, orig) {
				t.Errorf("%s: buffer modified on failure", tc.name)
			}
		} else if got < 0 {
			t.Errorf("%s: Encap = %d, want success", tc.name, got)
		}
	}
}

func TestEncapTooLong(t *testing.T) {
	// IPv4 outer: total length must fit 16 bits.
	g4 := mustCompile(t, Tunnel{Mode: GUE, Src: lb4, Dst: be4})
	innerLen := 0xffff - 20 - 8 - 4 + 1 // one byte too long
	buf := make([]byte, 64+innerLen)
	buf[64] = 0x45
	if got := g4.Encap(buf, 64, len(buf), 4, 0, nil); got != -1 {
		t.Errorf("IPv4 outer, total length 65536: Encap = %d, want -1", got)
	}
	if got := g4.Encap(buf, 64, len(buf)-1, 4, 0, nil); got != 64-46 {
		t.Errorf("IPv4 outer, total length 65535: Encap = %d, want %d", got, 64-46)
	}
	// IPv6 outer: payload length must fit 16 bits.
	g6 := mustCompile(t, Tunnel{Mode: GUE, Src: lb6, Dst: be6})
	innerLen = 0xffff - 8 - 4 + 1
	buf = make([]byte, 128+innerLen)
	buf[128] = 0x60
	if got := g6.Encap(buf, 128, len(buf), 6, 0, nil); got != -1 {
		t.Errorf("IPv6 outer, payload length 65536: Encap = %d, want -1", got)
	}
	if got := g6.Encap(buf, 128, len(buf)-1, 6, 0, nil); got != 128-66 {
		t.Errorf("IPv6 outer, payload length 65535: Encap = %d, want %d", got, 128-66)
	}
}

func TestOverhead(t *testing.T) {
	for _, tc := range []struct {
		mode            Mode
		v6, vlan        bool
		plain, hops, l3 int
	}{
		{GUE, false, false, 46, 58, 32},
		{GUE, true, false, 66, 102, 52},
		{GUE, false, true, 50, 62, 32},
		{GUE, true, true, 70, 106, 52},
		{IPIP, false, false, 34, 34, 20},
		{IPIP, true, false, 54, 54, 40},
		{IPIP, true, true, 58, 58, 40},
	} {
		tun := Tunnel{Mode: tc.mode, Src: lb4, Dst: be4}
		if tc.v6 {
			tun.Src, tun.Dst = lb6, be6
		}
		if tc.vlan {
			tun.VLAN = 5
		}
		tp := mustCompile(t, tun)
		if got := tp.Overhead(false); got != tc.plain {
			t.Errorf("%v v6=%v vlan=%v: Overhead(false) = %d, want %d", tc.mode, tc.v6, tc.vlan, got, tc.plain)
		}
		if got := tp.Overhead(true); got != tc.hops {
			t.Errorf("%v v6=%v vlan=%v: Overhead(true) = %d, want %d", tc.mode, tc.v6, tc.vlan, got, tc.hops)
		}
		if got := tp.L3Overhead(false); got != tc.l3 {
			t.Errorf("%v v6=%v vlan=%v: L3Overhead(false) = %d, want %d", tc.mode, tc.v6, tc.vlan, got, tc.l3)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	good := Tunnel{Mode: GUE, Src: lb4, Dst: be4}
	for _, tc := range []struct {
		name  string
		edit  func(*Tunnel)
		field string
	}{
		{"mode zero", func(u *Tunnel) { u.Mode = 0 }, "Mode"},
		{"mode 3", func(u *Tunnel) { u.Mode = 3 }, "Mode"},
		{"src missing", func(u *Tunnel) { u.Src = netip.Addr{} }, "Src"},
		{"dst missing", func(u *Tunnel) { u.Dst = netip.Addr{} }, "Dst"},
		{"src 0.0.0.0", func(u *Tunnel) { u.Src = netip.IPv4Unspecified() }, "Src"},
		{"dst ::", func(u *Tunnel) { u.Src, u.Dst = lb6, netip.IPv6Unspecified() }, "Dst"},
		{"families differ", func(u *Tunnel) { u.Dst = be6 }, "Dst"},
		{"mapped", func(u *Tunnel) { u.Dst = netip.AddrFrom16(be4.As16()) }, "Dst"},
		{"multicast", func(u *Tunnel) { u.Dst = netip.MustParseAddr("239.1.1.1") }, "Dst"},
		{"v6 csum contradiction", func(u *Tunnel) {
			u.Src, u.Dst, u.UDPChecksum, u.ZeroUDP6Checksum = lb6, be6, true, true
		}, "ZeroUDP6Checksum"},
	} {
		tun := good
		tc.edit(&tun)
		tp, err := Compile(tun)
		var te *TunnelError
		switch {
		case err == nil:
			t.Errorf("%s: Compile succeeded (%v)", tc.name, tp)
		case !errors.Is(err, ErrTunnel) || !errors.As(err, &te):
			t.Errorf("%s: error %v is not a *TunnelError matching ErrTunnel", tc.name, err)
		case te.Path != "tunnel."+tc.field:
			t.Errorf("%s: error names %q, want tunnel.%s (%v)", tc.name, te.Path, tc.field, err)
		}
	}
	if _, err := Compile(good); err != nil {
		t.Fatalf("good tunnel: %v", err)
	}
}

func TestTemplateAccessors(t *testing.T) {
	tp := mustCompile(t, Tunnel{Mode: GUE, Src: lb4, Dst: be4})
	if tp.Dst() != be4 || tp.Src() != lb4 || tp.Dst16() != be4.As16() || tp.Port() != DefaultGUEPort ||
		tp.Is6() || tp.UDPChecksum() || tp.Mode() != GUE {
		t.Errorf("accessors: %v %v %v %d %v %v %v", tp.Src(), tp.Dst(), tp.Dst16(), tp.Port(), tp.Is6(), tp.UDPChecksum(), tp.Mode())
	}
	tp6 := mustCompile(t, Tunnel{Mode: GUE, Src: lb6, Dst: be6, Port: 9})
	if tp6.Dst16() != be6.As16() || !tp6.Is6() || !tp6.UDPChecksum() || tp6.Port() != 9 {
		t.Errorf("v6 accessors: %v %v %v %d", tp6.Dst16(), tp6.Is6(), tp6.UDPChecksum(), tp6.Port())
	}
}

func TestEncapZeroAlloc(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 10))
	for _, c := range goldenCases() {
		primT, secT := c.tunnels()
		prim, sec := mustCompile(t, primT), mustCompile(t, secT)
		var secondary *Template
		if c.hops {
			secondary = sec
		}
		inner := buildInner(t, c.inner, 100, r)
		buf, l3, end := receivedFrame(prim, inner, false, c.hops, 0)
		var hash uint64
		allocs := testing.AllocsPerRun(200, func() {
			hash++
			if prim.Encap(buf, l3, end, c.inner, hash, secondary) < 0 {
				panic("encap failed")
			}
		})
		if allocs != 0 {
			t.Errorf("%v: %.1f allocations per Encap, want 0", c, allocs)
		}
	}
}

// TestSrcPortSpread checks that the outer UDP source ports of 100k flows
// cover 49152..65535 evenly, for random hashes and for poorly mixed ones
// (sequential, only high bits varying, only low bits varying).
func TestSrcPortSpread(t *testing.T) {
	const n, bins = 100_000, 1 << 14
	r := rand.New(rand.NewPCG(11, 11))
	for _, tc := range []struct {
		name string
		hash func(i uint64) uint64
	}{
		{"random", func(uint64) uint64 { return r.Uint64() }},
		{"sequential", func(i uint64) uint64 { return i }},
		{"high bits", func(i uint64) uint64 { return i << 40 }},
		{"stride 2^14", func(i uint64) uint64 { return i << 14 }},
	} {
		var counts [bins]int
		for i := range uint64(n) {
			p := SrcPort(tc.hash(i))
			if p < 49152 {
				t.Fatalf("%s: port %d outside 49152..65535", tc.name, p)
			}
			counts[p-49152]++
		}
		// Pearson's chi-square over the 16384 ports: mean df = 16383, sd =
		// sqrt(2 df) = 181. Allow 5 sd.
		exp := float64(n) / bins
		var chi2 float64
		for _, c := range counts {
			d := float64(c) - exp
			chi2 += d * d / exp
		}
		if limit := float64(bins-1) + 5*181; chi2 > limit {
			t.Errorf("%s: chi-square %.0f over %d ports exceeds %.0f", tc.name, chi2, bins, limit)
		}
		// Coarse view: 64 ranges of 256 ports, each within 10% of 1562.5
		// (about 4 standard deviations).
		for i := 0; i < bins; i += 256 {
			s := 0
			for _, c := range counts[i : i+256] {
				s += c
			}
			if e := float64(n) / 64; float64(s) < 0.9*e || float64(s) > 1.1*e {
				t.Errorf("%s: ports %d..%d got %d of %d flows", tc.name, 49152+i, 49152+i+255, s, n)
			}
		}
	}
}

func TestSrcPortStable(t *testing.T) {
	for _, h := range []uint64{0, 1, 0xdeadbeef, ^uint64(0)} {
		if SrcPort(h) != SrcPort(h) || FlowLabel(h) > 0xfffff {
			t.Fatalf("hash %#x: port %d label %#x", h, SrcPort(h), FlowLabel(h))
		}
	}
	if SrcPort(1) == SrcPort(2) {
		t.Errorf("hashes 1 and 2 share a source port")
	}
}
