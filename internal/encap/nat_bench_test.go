package encap

import (
	"net/netip"
	"testing"
	"time"
)

// natBenchCases are the full-NAT hits measured beside the GUE hits of
// BenchmarkEncap: the same inner sizes (64 bytes IPv4, 80 bytes IPv6).
func natBenchCases(b *testing.B) []struct {
	name  string
	tp    *NATTemplate
	gue   *Template
	v6    bool
	proto uint8
	size  int
} {
	n4 := mustCompileNAT(b, NAT{SNAT: natSNAT4, Backend: natBack4})
	n6 := mustCompileNAT(b, NAT{SNAT: natSNAT6, Backend: natBack6})
	g4 := mustCompile(b, Tunnel{Mode: GUE, Src: lb4, Dst: be4})
	g6 := mustCompile(b, Tunnel{Mode: GUE, Src: lb6, Dst: be6})
	return []struct {
		name  string
		tp    *NATTemplate
		gue   *Template
		v6    bool
		proto uint8
		size  int
	}{
		{"v4-tcp", n4, g4, false, protoTCP, 64},
		{"v4-udp", n4, g4, false, protoUDP, 64},
		{"v6-tcp", n6, g6, true, protoTCP, 80},
		{"v6-udp", n6, g6, true, protoUDP, 80},
	}
}

// natBenchPacket returns a received frame (Ethernet at 114, IP at 128) of a
// client packet of size bytes, and its l3, l4 and end.
func natBenchPacket(b *testing.B, v6 bool, proto uint8, size int) (buf []byte, l3, l4, end int) {
	hl, src, dst := 20, natClient4, natVIP4
	if v6 {
		hl, src, dst = 40, natClient6, natVIP6
	}
	l4Len := 20
	if proto == protoUDP {
		l4Len = 8
	}
	pkt, _ := pktSpec{v6: v6, proto: proto, src: src, dst: dst, payload: make([]byte, size-hl-l4Len)}.build(b)
	const at = 128
	buf = make([]byte, at+len(pkt))
	copy(buf[at:], pkt)
	return buf, at, at + hl, len(buf)
}

// BenchmarkNAT is a full-NAT hit: rewrite toward the backend (addresses,
// ports, incremental checksums, Ethernet header), and the return direction
// through L2Template.NAT. Compare with BenchmarkEncap/gue4-v4inner and
// gue6-v6inner, or read the ratio from BenchmarkNATvsGUE.
func BenchmarkNAT(b *testing.B) {
	for _, bc := range natBenchCases(b) {
		b.Run(bc.name, func(b *testing.B) {
			buf, l3, l4, end := natBenchPacket(b, bc.v6, bc.proto, bc.size)
			port := uint16(1024)
			b.ReportAllocs()
			for b.Loop() {
				port++
				if bc.tp.Forward(buf, l3, l4, end, bc.proto, port) < 0 {
					b.Fatal("Forward failed")
				}
			}
		})
	}
	b.Run("return-v4-tcp", func(b *testing.B) {
		buf, l3, l4, end := natBenchPacket(b, false, protoTCP, 64)
		h := CompileL2(L2{SrcMAC: testSrcMAC, DstMAC: natRouterMAC})
		to := MakeNATTuple(natVIP4, natClient4)
		b.ReportAllocs()
		for b.Loop() {
			to.DstPort++
			if h.NAT(buf, l3, l4, end, protoTCP, &to) < 0 {
				b.Fatal("NAT failed")
			}
		}
	})
	b.Run("return-v6-tcp", func(b *testing.B) {
		buf, l3, l4, end := natBenchPacket(b, true, protoTCP, 80)
		h := CompileL2(L2{SrcMAC: testSrcMAC, DstMAC: natRouterMAC})
		to := MakeNATTuple(natVIP6, natClient6)
		b.ReportAllocs()
		for b.Loop() {
			to.DstPort++
			if h.NAT(buf, l3, l4, end, protoTCP, &to) < 0 {
				b.Fatal("NAT failed")
			}
		}
	})
	b.Run("icmp-v6-too-big-1232", func(b *testing.B) {
		tcp6, _ := pktSpec{v6: true, proto: protoTCP, src: netip.AddrPortFrom(natSNAT6, natSPort), dst: natBack6,
			payload: make([]byte, 1300)}.build(b)
		in := icmpErrorPacket(b, true, natRouter6, natSNAT6, 2, 0, 1280, tcp6[:1232])
		buf, l3, end := received(in, 14, 0)
		h := CompileL2(L2{})
		src, dst := natVIP6.Addr().As16(), natClient6.Addr().As16()
		q := MakeNATTuple(natClient6, natVIP6)
		back := MakeNATTuple(netip.AddrPortFrom(natSNAT6, natSPort), natBack6)
		from, to := natRouter6.As16(), natSNAT6.As16()
		b.ReportAllocs()
		for b.Loop() {
			if h.NATICMPError(buf, l3, l3+40, end, &src, &dst, &q) < 0 ||
				h.NATICMPError(buf, l3, l3+40, end, &from, &to, &back) < 0 {
				b.Fatal("translation failed")
			}
		}
	})
}

// BenchmarkNATvsGUE times a full-NAT hit and a GUE encapsulation hit of the
// same packet size in alternating rounds of one run, so both see the same
// machine load, and reports both per packet and their ratio (the goal:
// nat/gue <= 1.2). ns/op is the NAT time per packet.
func BenchmarkNATvsGUE(b *testing.B) {
	for _, bc := range natBenchCases(b) {
		if bc.proto != protoTCP {
			continue
		}
		b.Run(bc.name, func(b *testing.B) {
			buf, l3, l4, end := natBenchPacket(b, bc.v6, bc.proto, bc.size)
			gbuf, gl3, _, gend := natBenchPacket(b, bc.v6, bc.proto, bc.size)
			version := uint8(4)
			if bc.v6 {
				version = 6
			}
			const round = 256
			var natT, gueT time.Duration
			var hash uint64 = 0x243f6a8885a308d3
			port := uint16(1024)
			rounds := 0
			for b.Loop() {
				t0 := time.Now()
				for range round {
					hash++
					if bc.gue.Encap(gbuf, gl3, gend, version, hash, nil) < 0 {
						b.Fatal("Encap failed")
					}
				}
				t1 := time.Now()
				for range round {
					port++
					if bc.tp.Forward(buf, l3, l4, end, bc.proto, port) < 0 {
						b.Fatal("Forward failed")
					}
				}
				natT += time.Since(t1)
				gueT += t1.Sub(t0)
				rounds++
			}
			pkts := float64(rounds * round)
			b.ReportMetric(float64(natT.Nanoseconds())/pkts, "ns/op")
			b.ReportMetric(float64(gueT.Nanoseconds())/pkts, "gue-ns/op")
			b.ReportMetric(float64(natT)/float64(gueT), "nat/gue")
		})
	}
}
