package encap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	natRouter4, natRouter6 = netip.MustParseAddr("198.18.30.1"), netip.MustParseAddr("2001:db8:30::1")
	natEdge4, natEdge6     = netip.MustParseAddr("198.18.20.1"), netip.MustParseAddr("2001:db8:20::1")
)

// icmpErrorPacket builds, with gopacket, an IP packet carrying an ICMPv4 or
// ICMPv6 error from src to dst: type, code, the second word rest (MTU) and
// the quote.
func icmpErrorPacket(t testing.TB, v6 bool, src, dst netip.Addr, typ, code uint8, rest uint32, quote []byte) []byte {
	t.Helper()
	sb := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	var err error
	if v6 {
		ip := &layers.IPv6{Version: 6, HopLimit: 250, NextHeader: layers.IPProtocolICMPv6,
			SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice())}
		ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}
		if err := ic.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		body := binary.BigEndian.AppendUint32(nil, rest)
		err = gopacket.SerializeLayers(sb, opts, ip, ic, gopacket.Payload(append(body, quote...)))
	} else {
		ip := &layers.IPv4{Version: 4, IHL: 5, TOS: 0xc0, Id: 0x4242, TTL: 250, Protocol: layers.IPProtocolICMPv4,
			SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice())}
		ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: uint16(rest >> 16), Seq: uint16(rest)}
		err = gopacket.SerializeLayers(sb, opts, ip, ic, gopacket.Payload(quote))
	}
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(sb.Bytes())
}

type icmpNATCase struct {
	name      string
	v6        bool
	spec      pktSpec // the quoted packet's shape
	typ, code uint8
	rest      uint32
	quote     int // octets of the packet quoted; 0: IP header + 8
}

func icmpNATCases() []icmpNATCase {
	big := make([]byte, 1400)
	for i := range big {
		big[i] = byte(i * 7)
	}
	small := []byte("ping over udp")
	return []icmpNATCase{
		{"v4-frag-needed-tcp-8", false, pktSpec{proto: protoTCP, payload: big}, 3, 4, 1400, 0},
		{"v4-frag-needed-tcp-548", false, pktSpec{proto: protoTCP, payload: big}, 3, 4, 1400, 548},
		{"v4-time-exceeded-udp", false, pktSpec{proto: protoUDP, payload: small}, 11, 0, 0, 0},
		{"v4-port-unreachable-udp-whole", false, pktSpec{proto: protoUDP, payload: small}, 3, 3, 0, -1},
		{"v4-unreachable-udp-no-checksum", false, pktSpec{proto: protoUDP, payload: small, zeroUDP: true}, 3, 1, 0, 0},
		{"v4-options-tcp", false, pktSpec{proto: protoTCP, payload: big, ip4Opts: true}, 3, 4, 1200, 0},
		{"v4-later-fragment", false, pktSpec{proto: protoUDP, payload: big, frag: 2}, 11, 1, 0, 0},
		{"v6-packet-too-big-tcp-1232", true, pktSpec{v6: true, proto: protoTCP, payload: big}, 2, 0, 1280, 1232},
		{"v6-packet-too-big-tcp-8", true, pktSpec{v6: true, proto: protoTCP, payload: big}, 2, 0, 1280, 0},
		{"v6-time-exceeded-udp", true, pktSpec{v6: true, proto: protoUDP, payload: small}, 3, 0, 0, -1},
		{"v6-port-unreachable-udp", true, pktSpec{v6: true, proto: protoUDP, payload: small}, 1, 4, 0, 0},
		{"v6-too-big-first-fragment", true, pktSpec{v6: true, proto: protoUDP, payload: big, frag: 1}, 2, 0, 1280, 1232},
		{"v6-time-exceeded-later-fragment", true, pktSpec{v6: true, proto: protoUDP, payload: big, frag: 2}, 3, 1, 0, 0},
	}
}

// quoteOf returns the first n octets of pkt as an ICMP error quotes them
// (0: the IP header and 8 octets; -1: all of it).
func quoteOf(pkt []byte, v6 bool, n int) []byte {
	switch n {
	case 0:
		if v6 {
			return pkt[:48]
		}
		return pkt[:int(pkt[0]&0xf)*4+8]
	case -1:
		return pkt
	}
	return pkt[:n]
}

// TestNATICMPErrorGolden translates gopacket-built ICMP errors both ways
// and compares them with the errors gopacket builds for the other side:
//
//	toward the client:  R -> S quoting S:sp -> B:bp   becomes  VIP -> C quoting C:cp -> VIP:vp
//	toward the backend: R' -> VIP quoting VIP:vp -> C:cp  becomes  S -> B quoting B:bp -> S:sp
func TestNATICMPErrorGolden(t *testing.T) {
	for _, c := range icmpNATCases() {
		client, vip, snat, back, router, edge := natClient4, natVIP4, natSNAT4, natBack4, natRouter4, natEdge4
		if c.v6 {
			client, vip, snat, back, router, edge = natClient6, natVIP6, natSNAT6, natBack6, natRouter6, natEdge6
		}
		sp := netip.AddrPortFrom(snat, natSPort)
		for _, dir := range []struct {
			name string
			// the packet as the client or backend sent it, as the node sent it on
			origSrc, origDst, sentSrc, sentDst netip.AddrPort
			// the error as it arrives and as it must leave
			errFrom, errTo, newFrom, newTo netip.Addr
		}{
			{"to-client", client, vip, sp, back, router, snat, vip.Addr(), client.Addr()},
			{"to-backend", back, sp, vip, client, edge, vip.Addr(), snat, back.Addr()},
		} {
			t.Run(c.name+"/"+dir.name, func(t *testing.T) {
				orig, sent := c.spec, c.spec
				orig.src, orig.dst = dir.origSrc, dir.origDst
				sent.src, sent.dst = dir.sentSrc, dir.sentDst
				origPkt, l4 := orig.build(t)
				sentPkt, _ := sent.build(t)
				in := icmpErrorPacket(t, c.v6, dir.errFrom, dir.errTo, c.typ, c.code, c.rest, quoteOf(sentPkt, c.v6, c.quote))
				wantQuote := quoteOf(origPkt, c.v6, c.quote)
				want := ethFrame(t, testSrcMAC, testDstMAC, 0, c.v6,
					icmpErrorPacket(t, c.v6, dir.newFrom, dir.newTo, c.typ, c.code, c.rest, wantQuote))

				h := CompileL2(L2{SrcMAC: testSrcMAC, DstMAC: testDstMAC})
				buf, l3, end := received(in, 14, 0)
				hl := 20
				if c.v6 {
					hl = 40
				}
				src, dst := dir.newFrom.As16(), dir.newTo.As16()
				quoted := MakeNATTuple(dir.origSrc, dir.origDst)
				start := h.NATICMPError(buf, l3, l3+hl, end, &src, &dst, &quoted)
				if start != 0 {
					t.Fatalf("NATICMPError = %d, want 0", start)
				}
				// Checksums that may differ as 0 / 0xffff: the outer IPv4
				// header, the quoted IPv4 header, the quoted TCP checksum.
				qo := 14 + hl + 8
				var offs []int
				if !c.v6 {
					offs = append(offs, 14+10, qo+10)
				}
				if c.spec.proto == protoTCP && c.spec.frag == 0 && len(wantQuote) >= l4+18 {
					offs = append(offs, qo+l4+16)
				}
				if err := sameFrame(buf[start:end], want, offs); err != nil {
					t.Fatal(err)
				}
				verifyICMP(t, buf[l3:end], hl, c.v6)
			})
		}
	}
}

// verifyICMP checks the outer IPv4 header checksum, the ICMP checksum and,
// for IPv4, the quoted header's checksum, from scratch.
func verifyICMP(t *testing.T, pkt []byte, hl int, v6 bool) {
	t.Helper()
	icmp := pkt[hl:]
	var ph uint32
	if v6 {
		ph = uint32(sum16(pkt[8:40])) + uint32(len(icmp)) + protoICMPv6
	} else {
		if Checksum(pkt[:hl], 0) != 0 {
			t.Error("outer IPv4 header checksum does not verify")
		}
		q := icmp[8:]
		if Checksum(q[:int(q[0]&0xf)*4], 0) != 0 {
			t.Error("quoted IPv4 header checksum does not verify")
		}
	}
	if Checksum(icmp, ph) != 0 {
		t.Error("ICMP checksum does not verify")
	}
}

// TestNATICMPErrorRejects: everything refused returns -1 and leaves the
// buffer as it was.
func TestNATICMPErrorRejects(t *testing.T) {
	tcp4, _ := pktSpec{proto: protoTCP, src: netip.AddrPortFrom(natSNAT4, natSPort), dst: natBack4, payload: make([]byte, 40)}.build(t)
	tcp6, _ := pktSpec{v6: true, proto: protoTCP, src: netip.AddrPortFrom(natSNAT6, natSPort), dst: natBack6}.build(t)
	good4 := icmpErrorPacket(t, false, natRouter4, natSNAT4, 3, 4, 1400, tcp4[:28])
	good6 := icmpErrorPacket(t, true, natRouter6, natSNAT6, 2, 0, 1280, tcp6[:48])
	icmpQuote4 := bytes.Clone(tcp4[:28])
	icmpQuote4[9] = protoICMP
	binary.BigEndian.PutUint16(icmpQuote4[10:], 0)
	binary.BigEndian.PutUint16(icmpQuote4[10:], Checksum(icmpQuote4[:20], 0))
	badSum := bytes.Clone(good4)
	badSum[len(badSum)-1] ^= 1
	badSum6 := bytes.Clone(good6)
	badSum6[20] ^= 0x80 // outer source: the ICMPv6 pseudo-header no longer matches
	for _, c := range []struct {
		name string
		pkt  []byte
		hl   int
		cut  int
		h    *L2Template
	}{
		{"echo request", icmpErrorPacket(t, false, natRouter4, natSNAT4, 8, 0, 1, tcp4[:28]), 20, 0, nil},
		{"echo request v6", icmpErrorPacket(t, true, natRouter6, natSNAT6, 128, 0, 1, tcp6[:48]), 40, 0, nil},
		{"redirect", icmpErrorPacket(t, false, natRouter4, natSNAT4, 5, 0, 1, tcp4[:28]), 20, 0, nil},
		{"quote of 7 L4 octets", icmpErrorPacket(t, false, natRouter4, natSNAT4, 3, 4, 1400, tcp4[:27]), 20, 0, nil},
		{"quote of 7 L4 octets v6", icmpErrorPacket(t, true, natRouter6, natSNAT6, 2, 0, 1280, tcp6[:47]), 40, 0, nil},
		{"quote without IP header", icmpErrorPacket(t, false, natRouter4, natSNAT4, 3, 4, 1400, tcp4[:19]), 20, 0, nil},
		{"quote of ICMP", icmpErrorPacket(t, false, natRouter4, natSNAT4, 3, 4, 1400, icmpQuote4), 20, 0, nil},
		{"bad ICMP checksum", badSum, 20, 0, nil},
		{"bad ICMPv6 checksum", badSum6, 40, 0, nil},
		{"l4 not after the IPv4 header", good4, 24, 0, nil},
		{"ICMP header cut", good4, 20, len(good4) - 27, nil},
		{"no headroom for the tag", good4, 20, 0, CompileL2(L2{VLAN: 3})},
		{"not ICMP", tcp4, 20, 0, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := c.h
			if h == nil {
				h = CompileL2(L2{})
			}
			buf, l3, end := received(c.pkt, 14, 0)
			end -= c.cut
			before := bytes.Clone(buf)
			src, dst := natVIP4.Addr().As16(), natClient4.Addr().As16()
			q := MakeNATTuple(natClient4, natVIP4)
			if got := h.NATICMPError(buf, l3, l3+c.hl, end, &src, &dst, &q); got != -1 {
				t.Errorf("NATICMPError = %d, want -1", got)
			}
			if !bytes.Equal(buf, before) {
				t.Error("buffer changed")
			}
		})
	}
}

func TestNATICMPErrorZeroAllocs(t *testing.T) {
	tcp6, _ := pktSpec{v6: true, proto: protoTCP, src: netip.AddrPortFrom(natSNAT6, natSPort), dst: natBack6, payload: make([]byte, 1300)}.build(t)
	in := icmpErrorPacket(t, true, natRouter6, natSNAT6, 2, 0, 1280, tcp6[:1232])
	buf, l3, end := received(in, 14, 0)
	h := CompileL2(L2{})
	src, dst := natVIP6.Addr().As16(), natClient6.Addr().As16()
	q := MakeNATTuple(natClient6, natVIP6)
	back := MakeNATTuple(netip.AddrPortFrom(natSNAT6, natSPort), natBack6)
	from, to := natRouter6.As16(), natSNAT6.As16()
	allocs := testing.AllocsPerRun(100, func() {
		if h.NATICMPError(buf, l3, l3+40, end, &src, &dst, &q) < 0 ||
			h.NATICMPError(buf, l3, l3+40, end, &from, &to, &back) < 0 {
			panic("translation failed")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per translation, want 0", allocs)
	}
}

// TestNATICMPErrorRandomRoundTrip translates random errors one way and
// back: the result is the error as it arrived (up to 0 / 0xffff in the
// checksums a recomputation may write either way).
func TestNATICMPErrorRandomRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(792, 4443))
	for i := range 200 {
		v6 := r.IntN(2) == 1
		proto := uint8(protoTCP)
		if r.IntN(2) == 1 {
			proto = protoUDP
		}
		payload := make([]byte, r.IntN(600))
		for j := range payload {
			payload[j] = byte(r.Uint32())
		}
		sent := pktSpec{v6: v6, proto: proto, payload: payload,
			src: netip.AddrPortFrom(randAddr(r, v6), uint16(r.IntN(65536))), dst: netip.AddrPortFrom(randAddr(r, v6), uint16(r.IntN(65536)))}
		sentPkt, _ := sent.build(t)
		typ, code := uint8(3), uint8(4)
		hl := 20
		if v6 {
			typ, code, hl = 2, 0, 40
		}
		qn := min(len(sentPkt), hl+8+r.IntN(len(sentPkt)-hl-7))
		routerAddr := randAddr(r, v6)
		in := icmpErrorPacket(t, v6, routerAddr, sent.src.Addr(), typ, code, 1400, sentPkt[:qn])
		buf, l3, end := received(in, 14, 0)
		h := CompileL2(L2{})
		ns, nd := randAddr(r, v6).As16(), randAddr(r, v6).As16()
		nq := NATTuple{Src: randAddr(r, v6).As16(), Dst: randAddr(r, v6).As16(), SrcPort: uint16(r.IntN(65536)), DstPort: uint16(r.IntN(65536))}
		if h.NATICMPError(buf, l3, l3+hl, end, &ns, &nd, &nq) < 0 {
			t.Fatalf("%d: translation failed", i)
		}
		verifyICMP(t, buf[l3:end], hl, v6)
		os, od := routerAddr.As16(), sent.src.Addr().As16()
		oq := MakeNATTuple(sent.src, sent.dst)
		if h.NATICMPError(buf, l3, l3+hl, end, &os, &od, &oq) < 0 {
			t.Fatalf("%d: translation back failed", i)
		}
		offs := []int{}
		if !v6 {
			offs = append(offs, 10, hl+8+10)
		}
		if proto == protoTCP && qn >= hl+8+hl+18 {
			offs = append(offs, hl+8+hl+16)
		}
		got := buf[l3:end]
		// The ICMP checksum was recomputed over bytes equal up to the
		// 0 / 0xffff checksums; compare it only when those match exactly.
		if err := sameFrame(got, in, append(offs, hl+2)); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
	}
}

// FuzzNATICMPError translates arbitrary bytes as an ICMP error: no panic,
// nothing written outside the frame or on failure, and on success every
// checksum the translation owns verifies.
func FuzzNATICMPError(f *testing.F) {
	for _, c := range icmpNATCases() {
		s := c.spec
		s.src, s.dst = netip.AddrPortFrom(natSNAT4, natSPort), natBack4
		if c.v6 {
			s.src, s.dst = netip.AddrPortFrom(natSNAT6, natSPort), natBack6
		}
		p, _ := s.build(f)
		r, d := natRouter4, natSNAT4
		if c.v6 {
			r, d = natRouter6, natSNAT6
		}
		f.Add(icmpErrorPacket(f, c.v6, r, d, c.typ, c.code, c.rest, quoteOf(p, c.v6, c.quote)), uint8(0))
	}
	f.Fuzz(func(t *testing.T, pkt []byte, extra uint8) {
		if len(pkt) == 0 {
			return
		}
		hl := 20
		v6 := pkt[0]>>4 == 6
		if v6 {
			hl = 40
		}
		hl += int(extra % 16) // sometimes a wrong l4
		buf := make([]byte, 14+len(pkt)+8)
		l3 := 14
		copy(buf[l3:], pkt)
		end := l3 + len(pkt)
		orig := bytes.Clone(buf)
		h := CompileL2(L2{SrcMAC: testSrcMAC})
		src, dst := natVIP4.Addr().As16(), natClient4.Addr().As16()
		q := MakeNATTuple(natClient4, natVIP4)
		if v6 {
			src, dst = natVIP6.Addr().As16(), natClient6.Addr().As16()
			q = MakeNATTuple(natClient6, natVIP6)
		}
		start := h.NATICMPError(buf, l3, l3+hl, end, &src, &dst, &q)
		if start < 0 {
			if !bytes.Equal(buf, orig) {
				t.Fatal("failed translation wrote to the buffer")
			}
			return
		}
		if start != 0 || !bytes.Equal(buf[end:], orig[end:]) {
			t.Fatal("wrote outside the frame")
		}
		p := buf[l3:end]
		icmp := p[hl:]
		var ph uint32
		if v6 {
			ph = uint32(sum16(p[8:40])) + uint32(len(icmp)) + protoICMPv6
			if !bytes.Equal(p[8:24], src[:]) || !bytes.Equal(p[24:40], dst[:]) {
				t.Fatal("outer addresses not rewritten")
			}
		} else if !bytes.Equal(p[12:16], src[12:]) || !bytes.Equal(p[16:20], dst[12:]) {
			t.Fatal("outer addresses not rewritten")
		}
		if Checksum(icmp, ph) != 0 {
			t.Fatal(fmt.Sprintf("ICMP checksum does not verify: %x", p))
		}
	})
}
