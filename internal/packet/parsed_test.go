package packet

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
)

func m4(a [4]byte) [16]byte { return netip.AddrFrom4(a).As16() }

// fields checks named fields of a Parsed; a nil field map entry is skipped.
type fields map[string]any

func checkFields(t *testing.T, p *Parsed, want fields) {
	t.Helper()
	got := fields{
		"NumVLANs": p.NumVLANs, "VLANs": p.VLANs, "EtherType": p.EtherType,
		"L3Off": p.L3Off, "L4Off": p.L4Off, "PayloadOff": p.PayloadOff, "L3End": p.L3End,
		"Tuple": p.Tuple, "TTL": p.TTL, "TOS": p.TOS, "Frag": p.Frag, "FragID": p.FragID,
		"TCPFlags": p.TCPFlags, "TCPOptOff": p.TCPOptOff, "ICMPType": p.ICMPType, "ICMPCode": p.ICMPCode,
		"Inner": p.Inner, "HasInner": p.HasInner, "InnerPorts": p.InnerPorts, "MTU": p.MTU,
		"InnerComplete": p.InnerComplete(), "IsTCPSYN": p.IsTCPSYN(), "IsICMPError": p.IsICMPError(),
		"Proto": p.Tuple.Proto, "SrcPort": p.Tuple.SrcPort, "DstPort": p.Tuple.DstPort,
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Fatalf("checkFields: no field %q", k)
		}
		if g != w {
			t.Errorf("%s = %v, want %v", k, g, w)
		}
	}
}

func tuple4(proto uint8, sport, dport uint16) Tuple {
	return Tuple{Src: m4(v4Src), Dst: m4(v4Dst), SrcPort: sport, DstPort: dport, Proto: proto, IPVersion: 4}
}

func tuple6(proto uint8, sport, dport uint16) Tuple {
	return Tuple{Src: v6Src, Dst: v6Dst, SrcPort: sport, DstPort: dport, Proto: proto, IPVersion: 6}
}

type verdictCase struct {
	name  string
	frame []byte
	want  Verdict
	check fields
}

func verdictCases() []verdictCase {
	e4 := eth(EtherTypeIPv4)
	e6 := eth(EtherTypeIPv6)
	v4tcp := ip4(ProtoTCP, 0, nil, tcp(1, 2, TCPFlagACK, nil, nil))
	v6tcp := ip6(ProtoTCP, tcp(1, 2, TCPFlagACK, nil, nil))
	dst9 := func(n int) []byte { // n destination options headers then UDP
		var b []byte
		for i := 0; i < n; i++ {
			nh := uint8(ProtoDestOpts)
			if i == n-1 {
				nh = ProtoUDP
			}
			b = append(b, ext6(nh, 0)...)
		}
		return append(b, udp(1, 2, nil)...)
	}
	quotedV4Frag := swap4(ip4(ProtoUDP, 100, nil, []byte("later fragment data")))
	quotedV4GRE := ip4(47, 0, nil, make([]byte, 8))
	quotedV4Echo := ip4(ProtoICMP, 0, nil, icmp(ICMPv4EchoRequest, 0, 0x55550001, nil))
	quotedV6Frag := ip6(ProtoDestOpts, cat(ext6(ProtoFragment, 0), frag6(ProtoTCP, 0, true, 9), tcp(7, 8, 0, nil, nil)))
	quotedV6Later := ip6(ProtoFragment, cat(frag6(ProtoTCP, 1024, true, 9), make([]byte, 16)))

	return []verdictCase{
		// OK, with the fields each shape fills.
		{"v4-tcp-syn", frameV4TCP, OK, fields{
			"EtherType": uint16(EtherTypeIPv4), "L3Off": 14, "L4Off": 34, "TCPOptOff": 54, "PayloadOff": 58, "L3End": 58,
			"Tuple": tuple4(ProtoTCP, 40000, 443), "TTL": uint8(64), "TOS": uint8(0xb8), "FragID": uint32(0x1234),
			"Frag": NotFragment, "TCPFlags": uint8(TCPFlagSYN), "IsTCPSYN": true, "HasInner": false, "NumVLANs": uint8(0)}},
		{"v4-tcp-ack-payload", frameV4TCPAck, OK, fields{
			"L4Off": 34, "PayloadOff": 54, "L3End": 54 + 18, "TCPFlags": uint8(TCPFlagACK | TCPFlagPSH), "IsTCPSYN": false}},
		{"v4-tcp-synack", cat(e4, ip4(ProtoTCP, 0, nil, tcp(443, 40000, TCPFlagSYN|TCPFlagACK, nil, nil))), OK, fields{
			"IsTCPSYN": false}},
		{"v4-ethernet-padding", cat(e4, v4tcp, make([]byte, 6)), OK, fields{"L3End": 54, "PayloadOff": 54}},
		{"v4-options", cat(e4, ip4(ProtoUDP, 0, []byte{148, 4, 0, 0, 1, 1, 1, 0}, udp(1, 2, nil))), OK, fields{
			"L4Off": 42, "PayloadOff": 50, "L3End": 50, "Tuple": tuple4(ProtoUDP, 1, 2)}},
		{"v4-ihl-15", cat(e4, ip4(ProtoUDP, 0, make([]byte, 40), udp(1, 2, nil))), OK, fields{"L4Off": 74}},
		{"v4-first-fragment", cat(e4, ip4(ProtoTCP, IPv4FlagMF, nil, tcp(1, 2, TCPFlagSYN, nil, make([]byte, 64)))), OK, fields{
			"Frag": FirstFragment, "L4Off": 34, "Tuple": tuple4(ProtoTCP, 1, 2), "FragID": uint32(0x1234)}},
		{"v4-first-fragment-udp-long", cat(e4, ip4(ProtoUDP, IPv4FlagMF, nil, patch(udp(1, 2, make([]byte, 16)), 4, 0x05, 0xdc))), OK, fields{
			"Frag": FirstFragment, "Tuple": tuple4(ProtoUDP, 1, 2)}},
		{"v4-later-fragment", cat(e4, ip4(ProtoTCP, 185, nil, tcp(1, 2, TCPFlagSYN, nil, nil))), OK, fields{
			"Frag": LaterFragment, "L4Off": 0, "PayloadOff": 34, "Tuple": tuple4(ProtoTCP, 0, 0), "TCPFlags": uint8(0), "IsTCPSYN": false}},
		{"v4-later-fragment-last", cat(e4, ip4(ProtoUDP, 1, nil, []byte{1, 2, 3})), OK, fields{"Frag": LaterFragment, "L4Off": 0}},
		{"v4-later-fragment-empty", cat(e4, ip4(ProtoUDP, IPv4FlagMF|2, nil, nil)), OK, fields{
			"Frag": LaterFragment, "PayloadOff": 34, "L3End": 34}},
		{"v4-gre", cat(e4, ip4(47, 0, nil, make([]byte, 4))), OK, fields{
			"Proto": uint8(47), "L4Off": 34, "PayloadOff": 34, "SrcPort": uint16(0)}},
		{"v4-icmpv6-is-unknown", cat(e4, ip4(ProtoICMPv6, 0, nil, icmp(ICMPv6EchoRequest, 0, 0x10001, nil))), OK, fields{
			"Proto": uint8(ProtoICMPv6), "L4Off": 34, "PayloadOff": 34, "ICMPType": uint8(0), "SrcPort": uint16(0)}},
		{"v4-icmp-echo", frameV4Echo, OK, fields{
			"Tuple": tuple4(ProtoICMP, 0x7777, 0x7777), "ICMPType": uint8(ICMPv4EchoRequest), "PayloadOff": 42, "IsICMPError": false}},
		{"v4-icmp-echo-reply", cat(e4, ip4(ProtoICMP, 0, nil, icmp(ICMPv4EchoReply, 0, 0x00090001, nil))), OK, fields{
			"Tuple": tuple4(ProtoICMP, 9, 9)}},
		{"v4-icmp-other", cat(e4, ip4(ProtoICMP, 0, nil, icmp(13, 0, 0x00090001, make([]byte, 12)))), OK, fields{
			"Tuple": tuple4(ProtoICMP, 0, 0), "ICMPType": uint8(13), "HasInner": false}},
		{"v4-frag-needed", frameFragNeeded, OK, fields{
			"ICMPType": uint8(3), "ICMPCode": uint8(4), "MTU": uint32(1400), "PayloadOff": 42, "L3End": 14 + 20 + 8 + 28,
			"Tuple":    tuple4(ProtoICMP, 0, 0),
			"Inner":    Tuple{Src: m4(v4Dst), Dst: m4(v4Src), SrcPort: 443, DstPort: 40000, Proto: ProtoTCP, IPVersion: 4},
			"HasInner": true, "InnerPorts": true, "InnerComplete": true, "IsICMPError": true}},
		{"v4-port-unreachable-full-quote", cat(e4, ip4(ProtoICMP, 0, nil, icmp(3, 3, 0, ip4(ProtoUDP, 0, nil, udp(53, 5353, []byte("answer")))))), OK, fields{
			"MTU": uint32(0), "Inner": tuple4(ProtoUDP, 53, 5353), "InnerPorts": true}},
		{"v4-time-exceeded-quote-echo", cat(e4, ip4(ProtoICMP, 0, nil, icmp(ICMPv4TimeExceeded, 0, 0, quotedV4Echo))), OK, fields{
			"Inner": tuple4(ProtoICMP, 0x5555, 0x5555), "InnerPorts": true, "InnerComplete": true}},
		{"v4-quote-short-l4", cat(e4, ip4(ProtoICMP, 0, nil, icmp(3, 4, 576, quotedV4TCP[:27]))), OK, fields{
			"Inner":    Tuple{Src: m4(v4Dst), Dst: m4(v4Src), Proto: ProtoTCP, IPVersion: 4},
			"HasInner": true, "InnerPorts": false, "InnerComplete": false, "MTU": uint32(576)}},
		{"v4-quote-options-cut", cat(e4, ip4(ProtoICMP, 0, nil, icmp(11, 0, 0, ip4(ProtoTCP, 0, make([]byte, 8), nil)[:24]))), OK, fields{
			"HasInner": true, "InnerPorts": false, "Inner": tuple4(ProtoTCP, 0, 0)}},
		{"v4-quote-later-fragment", cat(e4, ip4(ProtoICMP, 0, nil, icmp(11, 1, 0, quotedV4Frag))), OK, fields{
			"HasInner": true, "InnerPorts": false, "InnerComplete": true,
			"Inner": Tuple{Src: m4(v4Dst), Dst: m4(v4Src), Proto: ProtoUDP, IPVersion: 4}}},
		{"v4-quote-gre", cat(e4, ip4(ProtoICMP, 0, nil, icmp(3, 1, 0, quotedV4GRE))), OK, fields{
			"HasInner": true, "InnerPorts": false, "InnerComplete": true, "Inner": tuple4(47, 0, 0)}},
		{"v4-quote-too-short", cat(e4, ip4(ProtoICMP, 0, nil, icmp(3, 1, 0, quotedV4TCP[:19]))), OK, fields{
			"HasInner": false, "Inner": Tuple{}, "IsICMPError": true}},
		{"v4-quote-bad-ihl", cat(e4, ip4(ProtoICMP, 0, nil, icmp(3, 1, 0, patch(quotedV4TCP[:28], 0, 0x44)))), OK, fields{
			"HasInner": false, "Inner": Tuple{}}},
		{"v4-quote-is-ipv6", cat(e4, ip4(ProtoICMP, 0, nil, icmp(3, 1, 0, quotedV6TCP[:48]))), OK, fields{"HasInner": false}},
		{"v4-quote-empty", cat(e4, ip4(ProtoICMP, 0, nil, icmp(3, 1, 0, nil))), OK, fields{"HasInner": false, "PayloadOff": 42}},
		{"vlan-0x8100", frameVLANUDP, OK, fields{
			"NumVLANs": uint8(1), "VLANs": [2]uint16{0x101, 0}, "EtherType": uint16(EtherTypeIPv4), "L3Off": 18, "L4Off": 38,
			"Tuple": tuple4(ProtoUDP, 5353, 53)}},
		{"vlan-qinq-ipv6", frameQinQTCP, OK, fields{
			"NumVLANs": uint8(2), "VLANs": [2]uint16{0x101, 0x102}, "EtherType": uint16(EtherTypeIPv6), "L3Off": 22, "L4Off": 62,
			"Tuple": tuple6(ProtoTCP, 40000, 443)}},
		{"vlan-0x9100", cat(eth(EtherTypeQinQLegacy, EtherTypeIPv4), v4tcp), OK, fields{"NumVLANs": uint8(1), "L3Off": 18}},
		{"v6-tcp", frameV6TCP, OK, fields{
			"EtherType": uint16(EtherTypeIPv6), "L3Off": 14, "L4Off": 54, "TCPOptOff": 74, "PayloadOff": 78, "L3End": 78,
			"Tuple": tuple6(ProtoTCP, 40000, 443), "TTL": uint8(255), "TOS": uint8(0x2e), "FragID": uint32(0), "IsTCPSYN": true}},
		{"v6-ext-chain-first-fragment", frameV6Ext, OK, fields{
			"L4Off": 14 + 40 + 8 + 16 + 8 + 8, "Tuple": tuple6(ProtoUDP, 1000, 2000), "Frag": FirstFragment, "FragID": uint32(0xabcdef01)}},
		{"v6-later-fragment", cat(e6, ip6(ProtoHopByHop, cat(ext6(ProtoFragment, 0), frag6(ProtoTCP, 1448, false, 77), make([]byte, 40)))), OK, fields{
			"Frag": LaterFragment, "FragID": uint32(77), "L4Off": 0, "PayloadOff": 14 + 40 + 16, "Tuple": tuple6(ProtoTCP, 0, 0)}},
		{"v6-atomic-fragment", cat(e6, ip6(ProtoFragment, cat(frag6(ProtoUDP, 0, false, 5), udp(1, 2, nil)))), OK, fields{
			"Frag": NotFragment, "FragID": uint32(5), "Tuple": tuple6(ProtoUDP, 1, 2), "L4Off": 62}},
		{"v6-eight-ext-headers", cat(e6, ip6(ProtoDestOpts, dst9(8))), OK, fields{"Tuple": tuple6(ProtoUDP, 1, 2), "L4Off": 14 + 40 + 64}},
		{"v6-no-next-header-empty", cat(e6, ip6(ProtoNoNext, nil)), OK, fields{"Proto": uint8(ProtoNoNext), "L4Off": 54, "PayloadOff": 54, "L3End": 54}},
		{"v6-no-next-header-after-ext", cat(e6, ip6(ProtoDestOpts, cat(ext6(ProtoNoNext, 0), []byte("junk")))), OK, fields{
			"Proto": uint8(ProtoNoNext), "L4Off": 62, "PayloadOff": 62, "L3End": 66}},
		{"v6-esp", cat(e6, ip6(ProtoESP, make([]byte, 24))), OK, fields{"Proto": uint8(ProtoESP), "L4Off": 54, "PayloadOff": 54, "SrcPort": uint16(0)}},
		{"v6-ah-stops", cat(e6, ip6(ProtoAH, cat(ext6(ProtoTCP, 1), tcp(1, 2, 0, nil, nil)))), OK, fields{"Proto": uint8(ProtoAH), "L4Off": 54, "SrcPort": uint16(0)}},
		{"v6-icmpv4-is-unknown", cat(e6, ip6(ProtoICMP, icmp(ICMPv4EchoRequest, 0, 0x10001, nil))), OK, fields{
			"Proto": uint8(ProtoICMP), "PayloadOff": 54, "ICMPType": uint8(0), "SrcPort": uint16(0)}},
		{"v6-ethernet-padding", cat(e6, ip6(ProtoUDP, udp(1, 2, nil)), make([]byte, 10)), OK, fields{"L3End": 62}},
		{"v6-echo", frameV6Echo, OK, fields{"Tuple": tuple6(ProtoICMPv6, 0x4242, 0x4242), "ICMPType": uint8(ICMPv6EchoReply)}},
		{"v6-packet-too-big", framePacketTooBig, OK, fields{
			"ICMPType": uint8(ICMPv6PacketTooBig), "MTU": uint32(1280), "L3End": 14 + 1280,
			"Inner":    Tuple{Src: v6Dst, Dst: v6Src, SrcPort: 443, DstPort: 40000, Proto: ProtoTCP, IPVersion: 6},
			"HasInner": true, "InnerPorts": true, "IsICMPError": true}},
		{"v6-unreachable-quote-ext-first-fragment", cat(e6, ip6(ProtoICMPv6, icmp(ICMPv6DestUnreachable, 4, 0, quotedV6Frag))), OK, fields{
			"Inner": tuple6(ProtoTCP, 7, 8), "InnerPorts": true, "MTU": uint32(0)}},
		{"v6-time-exceeded-quote-later-fragment", cat(e6, ip6(ProtoICMPv6, icmp(ICMPv6TimeExceeded, 0, 0, quotedV6Later))), OK, fields{
			"Inner": tuple6(ProtoTCP, 0, 0), "HasInner": true, "InnerPorts": false, "InnerComplete": true}},
		{"v6-quote-ext-cut", cat(e6, ip6(ProtoICMPv6, icmp(ICMPv6DestUnreachable, 0, 0, quotedV6Frag[:44]))), OK, fields{
			"HasInner": false, "Inner": Tuple{}}},
		{"v6-quote-l4-cut", cat(e6, ip6(ProtoICMPv6, icmp(ICMPv6DestUnreachable, 0, 0, quotedV6TCP[:44]))), OK, fields{
			"HasInner": true, "InnerPorts": false, "Inner": Tuple{Src: v6Dst, Dst: v6Src, Proto: ProtoTCP, IPVersion: 6}}},
		{"v6-quote-is-ipv4", cat(e6, ip6(ProtoICMPv6, icmp(ICMPv6DestUnreachable, 0, 0, quotedV4TCP[:48]))), OK, fields{"HasInner": false}},
		{"v6-icmp-informational", cat(e6, ip6(ProtoICMPv6, icmp(135, 0, 0, make([]byte, 16)))), OK, fields{
			"ICMPType": uint8(135), "HasInner": false, "SrcPort": uint16(0)}},

		// Truncated: the frame ends inside a header it claims.
		{"truncated-empty", nil, Truncated, nil},
		{"truncated-ethernet", eth(EtherTypeIPv4)[:13], Truncated, nil},
		{"truncated-vlan", eth(EtherTypeVLAN, EtherTypeIPv4)[:17], Truncated, nil},
		{"truncated-second-vlan", eth(EtherTypeQinQ, EtherTypeVLAN, EtherTypeIPv4)[:21], Truncated, nil},
		{"truncated-no-ip", eth(EtherTypeIPv4), Truncated, nil},
		{"truncated-ipv4", cat(e4, v4tcp[:19]), Truncated, nil},
		{"truncated-ipv6", cat(e6, v6tcp[:39]), Truncated, nil},

		{"unsupported-arp", cat(eth(EtherTypeARP), make([]byte, 28)), UnsupportedEtherType, fields{"EtherType": uint16(EtherTypeARP)}},
		{"unsupported-8023-length", cat(eth(100), make([]byte, 100)), UnsupportedEtherType, nil},
		{"unsupported-after-vlan", cat(eth(EtherTypeVLAN, 0x8847), make([]byte, 40)), UnsupportedEtherType, nil},

		{"too-many-vlans", cat(eth(EtherTypeQinQ, EtherTypeVLAN, EtherTypeVLAN, EtherTypeIPv4), v4tcp), TooManyVLANs, nil},
		{"too-many-vlans-cut", eth(EtherTypeQinQ, EtherTypeVLAN, EtherTypeVLAN), TooManyVLANs, nil},

		{"bad-version-4-says-6", cat(e4, v6tcp), BadIPVersion, nil},
		{"bad-version-6-says-4", cat(e6, v4tcp, make([]byte, 20)), BadIPVersion, nil},
		{"bad-version-zero", cat(e4, patch(v4tcp, 0, 0x05)), BadIPVersion, nil},

		{"bad-ihl-4", cat(e4, patch(v4tcp, 0, 0x44)), BadIHL, nil},
		{"bad-ihl-0", cat(e4, patch(v4tcp, 0, 0x40)), BadIHL, nil},
		{"bad-ihl-beyond-frame", cat(e4, patch(v4tcp, 0, 0x4f)), BadIHL, nil},

		{"bad-length-below-header", cat(e4, patch(v4tcp, 2, 0, 19)), BadLength, nil},
		{"bad-length-below-ihl", cat(e4, patch(ip4(ProtoUDP, 0, make([]byte, 8), udp(1, 2, nil)), 2, 0, 24)), BadLength, nil},
		{"bad-length-zero-tso", cat(e4, patch(v4tcp, 2, 0, 0)), BadLength, nil},
		{"bad-length-beyond-frame", cat(e4, patch(v4tcp, 2, 0, 41)), BadLength, nil},
		{"bad-length-v6-beyond-frame", cat(e6, patch(v6tcp, 4, 0, 21)), BadLength, nil},
		{"bad-length-v6-jumbogram", cat(e6, patch(ip6(ProtoHopByHop, cat(ext6(ProtoTCP, 0), tcp(1, 2, 0, nil, nil))), 4, 0, 0)), BadLength, nil},
		{"bad-length-v6-zero-tcp", cat(e6, patch(v6tcp, 4, 0, 0)), BadLength, nil},

		{"bad-ext-beyond-packet", cat(e6, ip6(ProtoDestOpts, cat([]byte{ProtoUDP, 2}, make([]byte, 6), udp(1, 2, nil)))), BadExtHeader, nil},
		{"bad-ext-short", cat(e6, ip6(ProtoDestOpts, make([]byte, 6))), BadExtHeader, nil},
		{"bad-ext-hbh-not-first", cat(e6, ip6(ProtoDestOpts, cat(ext6(ProtoHopByHop, 0), ext6(ProtoUDP, 0), udp(1, 2, nil)))), BadExtHeader, nil},
		{"bad-ext-two-fragment-headers", cat(e6, ip6(ProtoFragment, cat(frag6(ProtoFragment, 0, true, 1), frag6(ProtoUDP, 0, true, 1), udp(1, 2, nil)))), BadExtHeader, nil},
		{"bad-ext-fragment-short", cat(e6, ip6(ProtoFragment, frag6(ProtoUDP, 8, false, 1)[:7])), BadExtHeader, nil},

		{"too-many-ext-headers", cat(e6, ip6(ProtoDestOpts, dst9(9))), TooManyExtHeaders, nil},

		{"bad-tcp-offset-4", cat(e4, ip4(ProtoTCP, 0, nil, patch(tcp(1, 2, 0, nil, nil), 12, 0x40))), BadTCPOffset, nil},
		{"bad-tcp-offset-beyond", cat(e4, ip4(ProtoTCP, 0, nil, patch(tcp(1, 2, 0, nil, nil), 12, 0x60))), BadTCPOffset, nil},
		{"bad-tcp-offset-into-padding", cat(e4, ip4(ProtoTCP, 0, nil, patch(tcp(1, 2, 0, nil, nil), 12, 0x60)), make([]byte, 4)), BadTCPOffset, nil},
		{"bad-tcp-short", cat(e4, ip4(ProtoTCP, 0, nil, tcp(1, 2, 0, nil, nil)[:19])), BadTCPOffset, nil},
		{"bad-tcp-tiny-first-fragment", cat(e4, ip4(ProtoTCP, IPv4FlagMF, nil, tcp(1, 2, 0, nil, nil)[:8])), BadTCPOffset, nil},
		{"bad-tcp-offset-v6", cat(e6, ip6(ProtoTCP, patch(tcp(1, 2, 0, nil, nil), 12, 0xf0))), BadTCPOffset, nil},

		{"bad-udp-length-7", cat(e4, ip4(ProtoUDP, 0, nil, patch(udp(1, 2, nil), 4, 0, 7))), BadUDPLength, nil},
		{"bad-udp-length-beyond", cat(e4, ip4(ProtoUDP, 0, nil, patch(udp(1, 2, []byte("abc")), 4, 0, 12))), BadUDPLength, nil},
		{"bad-udp-short", cat(e4, ip4(ProtoUDP, 0, nil, udp(1, 2, nil)[:7])), BadUDPLength, nil},
		{"bad-udp-length-zero-v6", cat(e6, ip6(ProtoUDP, patch(udp(1, 2, nil), 4, 0, 0))), BadUDPLength, nil},
		{"bad-udp-first-fragment-short", cat(e4, ip4(ProtoUDP, IPv4FlagMF, nil, patch(udp(1, 2, nil), 4, 0, 4))), BadUDPLength, nil},

		{"bad-icmp-short", cat(e4, ip4(ProtoICMP, 0, nil, icmp(8, 0, 1, nil)[:7])), BadICMP, nil},
		{"bad-icmpv6-short", cat(e6, ip6(ProtoICMPv6, icmp(128, 0, 1, nil)[:4])), BadICMP, nil},
	}
}

func TestDecodeVerdicts(t *testing.T) {
	cases := verdictCases()
	seen := make(map[Verdict]bool)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var p Parsed
			p.Decode(tc.frame)
			if p.Verdict != tc.want {
				t.Fatalf("Verdict = %v, want %v", p.Verdict, tc.want)
			}
			checkFields(t, &p, tc.check)
			if p.Verdict == OK {
				checkInvariants(t, tc.frame, &p)
			}
		})
		seen[tc.want] = true
	}
	for v := OK; v < NumVerdicts; v++ {
		if !seen[v] {
			t.Errorf("no test case for verdict %v", v)
		}
	}
}

// checkInvariants checks what must hold for every frame Decode calls OK.
func checkInvariants(t testing.TB, frame []byte, p *Parsed) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s; frame %x\nparsed %+v", fmt.Sprintf(format, args...), frame, *p)
	}
	if p.Verdict != OK {
		fail("invariants checked on verdict %v", p.Verdict)
	}
	if !(p.L3Off < p.PayloadOff && p.PayloadOff <= p.L3End && p.L3End <= len(frame)) {
		fail("offsets out of order: L3Off %d PayloadOff %d L3End %d len %d", p.L3Off, p.PayloadOff, p.L3End, len(frame))
	}
	if p.L4Off != 0 && !(p.L3Off < p.L4Off && p.L4Off <= p.PayloadOff) {
		fail("L4Off %d not in (L3Off %d, PayloadOff %d]", p.L4Off, p.L3Off, p.PayloadOff)
	}
	if p.L3Off != EthernetHeaderLen+VLANTagLen*int(p.NumVLANs) {
		fail("L3Off %d with %d VLANs", p.L3Off, p.NumVLANs)
	}
	for i := int(p.NumVLANs); i < MaxVLANs; i++ {
		if p.VLANs[i] != 0 {
			fail("VLANs[%d] set beyond NumVLANs", i)
		}
	}
	switch p.EtherType {
	case EtherTypeIPv4:
		if p.Tuple.IPVersion != 4 || p.L3End-p.L3Off < IPv4MinHeaderLen {
			fail("IPv4 frame with IPVersion %d", p.Tuple.IPVersion)
		}
		if [12]byte(p.Tuple.Src[:12]) != [12]byte{10: 0xff, 11: 0xff} || [12]byte(p.Tuple.Dst[:12]) != [12]byte{10: 0xff, 11: 0xff} {
			fail("IPv4 addresses not IPv4-mapped")
		}
	case EtherTypeIPv6:
		if p.Tuple.IPVersion != 6 || p.L3End-p.L3Off < IPv6HeaderLen {
			fail("IPv6 frame with IPVersion %d", p.Tuple.IPVersion)
		}
	default:
		fail("OK with EtherType %#x", p.EtherType)
	}
	if (p.L4Off == 0) != (p.Frag == LaterFragment) {
		fail("L4Off %d with Frag %v", p.L4Off, p.Frag)
	}
	proto := p.Tuple.Proto
	isTCP := proto == ProtoTCP && p.L4Off != 0
	if isTCP != (p.TCPOptOff != 0) || (isTCP && (p.TCPOptOff != p.L4Off+TCPMinHeaderLen || p.TCPOptOff > p.PayloadOff ||
		(p.PayloadOff-p.L4Off)%4 != 0 || p.PayloadOff-p.L4Off > TCPMaxHeaderLen)) {
		fail("TCPOptOff %d for proto %d L4Off %d PayloadOff %d", p.TCPOptOff, proto, p.L4Off, p.PayloadOff)
	}
	if !isTCP && p.TCPFlags != 0 {
		fail("TCPFlags on a non-TCP packet")
	}
	isUDP := proto == ProtoUDP && p.L4Off != 0
	isICMP := p.L4Off != 0 && ((proto == ProtoICMP && p.Tuple.IPVersion == 4) || (proto == ProtoICMPv6 && p.Tuple.IPVersion == 6))
	switch {
	case isUDP:
		if p.PayloadOff != p.L4Off+UDPHeaderLen {
			fail("UDP PayloadOff")
		}
	case isICMP:
		if p.PayloadOff != p.L4Off+ICMPHeaderLen {
			fail("ICMP PayloadOff")
		}
		if p.Tuple.SrcPort != p.Tuple.DstPort {
			fail("ICMP ports differ")
		}
	case isTCP:
	default:
		if p.Tuple.SrcPort != 0 || p.Tuple.DstPort != 0 {
			fail("ports on proto %d without L4 parse", proto)
		}
		if p.L4Off != 0 && p.PayloadOff != p.L4Off {
			fail("unparsed proto %d: PayloadOff %d != L4Off %d", proto, p.PayloadOff, p.L4Off)
		}
	}
	if !isICMP && (p.ICMPType != 0 || p.ICMPCode != 0) {
		fail("ICMP type/code on a non-ICMP packet")
	}
	if !p.IsICMPError() && (p.HasInner || p.MTU != 0) {
		fail("inner/MTU on a packet that is not an ICMP error")
	}
	if !p.HasInner && (p.Inner != Tuple{} || p.InnerPorts || p.InnerComplete()) {
		fail("inner fields without HasInner")
	}
	if p.InnerPorts && !p.InnerComplete() {
		fail("InnerPorts without InnerComplete")
	}
	if p.HasInner && p.Inner.IPVersion != p.Tuple.IPVersion {
		fail("inner IP version %d in an ICMP error of IPv%d", p.Inner.IPVersion, p.Tuple.IPVersion)
	}
}

func TestVerdictString(t *testing.T) {
	names := make(map[string]bool)
	for v := OK; v < NumVerdicts; v++ {
		s := v.String()
		if s == "" || s == "unknown" || names[s] {
			t.Errorf("Verdict(%d).String() = %q: empty, unknown or duplicate", v, s)
		}
		for _, r := range s {
			if !(r >= 'a' && r <= 'z' || r == '_') {
				t.Errorf("Verdict(%d).String() = %q: not snake_case", v, s)
			}
		}
		names[s] = true
	}
	if OK.String() != "ok" || Truncated.String() != "truncated" || UnsupportedEtherType.String() != "unsupported_ethertype" {
		t.Errorf("unexpected names: %q %q %q", OK, Truncated, UnsupportedEtherType)
	}
	if s := NumVerdicts.String(); s != "unknown" {
		t.Errorf("NumVerdicts.String() = %q", s)
	}
	if NumVerdicts != 12 {
		t.Errorf("NumVerdicts = %d, want 12 (the contract's list)", NumVerdicts)
	}
}

// TestDecodeResets checks that nothing of an earlier Decode survives.
func TestDecodeResets(t *testing.T) {
	var p Parsed
	for _, first := range [][]byte{frameFragNeeded, framePacketTooBig, frameQinQTCP, frameV6Ext} {
		for _, tc := range verdictCases() {
			var fresh Parsed
			fresh.Decode(tc.frame)
			p.Decode(first)
			p.Decode(tc.frame)
			if p != fresh {
				t.Fatalf("%s after another frame:\n got %+v\nwant %+v", tc.name, p, fresh)
			}
		}
	}
	// Garbage in every field, including the unexported one.
	p = Parsed{Verdict: 9, NumVLANs: 7, L4Off: -5, HasInner: true, innerComplete: true, MTU: 1}
	p.Decode(frameV4TCP)
	var fresh Parsed
	fresh.Decode(frameV4TCP)
	if p != fresh {
		t.Fatalf("Decode over garbage:\n got %+v\nwant %+v", p, fresh)
	}
}

// TestDecodeEveryPrefix cuts sound frames at every length: nothing may
// panic, and every OK prefix must satisfy the invariants.
func TestDecodeEveryPrefix(t *testing.T) {
	for _, tc := range verdictCases() {
		for n := 0; n <= len(tc.frame); n++ {
			var p Parsed
			p.Decode(tc.frame[:n])
			if p.Verdict == OK {
				checkInvariants(t, tc.frame[:n], &p)
			}
		}
	}
}

func TestTupleAddr(t *testing.T) {
	var p Parsed
	p.Decode(frameV4TCP)
	if got := p.Tuple.SrcAddr(); got != netip.AddrFrom4(v4Src) {
		t.Errorf("SrcAddr = %v", got)
	}
	if got := p.Tuple.DstAddr(); got != netip.AddrFrom4(v4Dst) {
		t.Errorf("DstAddr = %v", got)
	}
	if got, want := p.Tuple.String(), "6:192.0.2.1:40000->198.51.100.2:443"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	p.Decode(frameV6TCP)
	if got := p.Tuple.DstAddr(); got != netip.AddrFrom16(v6Dst) {
		t.Errorf("DstAddr = %v", got)
	}
}

func TestViews(t *testing.T) {
	f := frameV4TCP
	e := Ethernet(f)
	if e.Dst() != [6]byte{2, 0, 0, 0, 0, 1} || e.Src() != [6]byte{2, 0, 0, 0, 0, 2} || e.EtherType() != EtherTypeIPv4 {
		t.Errorf("Ethernet view: %x %x %#x", e.Dst(), e.Src(), e.EtherType())
	}
	ip := IPv4(f[14:])
	if ip.Version() != 4 || ip.HeaderLen() != 20 || ip.TotalLen() != 44 || ip.ID() != 0x1234 || !ip.DontFragment() ||
		ip.MoreFragments() || ip.FragmentOffset() != 0 || ip.TTL() != 64 || ip.Protocol() != ProtoTCP || ip.Src() != v4Src ||
		ip.Dst() != v4Dst || len(ip.Options()) != 0 || ip.Checksum() != 0 || ip.TOS() != 0xb8 {
		t.Errorf("IPv4 view wrong")
	}
	if got := IPv4(ip4(ProtoUDP, 0x2000|100, nil, nil)).FragmentOffset(); got != 800 {
		t.Errorf("FragmentOffset = %d, want 800", got)
	}
	tc := TCP(f[34:])
	if tc.SrcPort() != 40000 || tc.DstPort() != 443 || tc.Seq() != 1000 || tc.Ack() != 2000 || tc.DataOffset() != 24 ||
		tc.Flags() != TCPFlagSYN || tc.Window() != 65535 || tc.Checksum() != 0 || tc.Urgent() != 0 || string(tc.Options()) != string(mssOpt) {
		t.Errorf("TCP view wrong")
	}
	v6 := IPv6(frameV6TCP[14:])
	if v6.Version() != 6 || v6.TrafficClass() != 0x2e || v6.FlowLabel() != 0xbeef || v6.PayloadLen() != 24 || v6.NextHeader() != ProtoTCP ||
		v6.HopLimit() != 255 || v6.Src() != v6Src || v6.Dst() != v6Dst {
		t.Errorf("IPv6 view wrong")
	}
	fr := IPv6Fragment(frag6(ProtoUDP, 1448, true, 0xdeadbeef))
	if fr.NextHeader() != ProtoUDP || fr.FragmentOffset() != 1448 || !fr.More() || fr.ID() != 0xdeadbeef {
		t.Errorf("IPv6Fragment view wrong")
	}
	x := IPv6Ext(ext6(ProtoTCP, 3))
	if x.NextHeader() != ProtoTCP || x.Len() != 32 {
		t.Errorf("IPv6Ext view wrong")
	}
	u := UDP(udp(1, 2, []byte("abc")))
	if u.SrcPort() != 1 || u.DstPort() != 2 || u.Length() != 11 || u.Checksum() != 0 {
		t.Errorf("UDP view wrong")
	}
	v := VLAN(frameVLANUDP[14:])
	if v.TCI() != 0x101 || v.EtherType() != EtherTypeIPv4 || VLANID(0xf123) != 0x123 || VLANPCP(0xf123) != 7 || !VLANDEI(0xf123) {
		t.Errorf("VLAN view wrong")
	}
	i4 := ICMPv4(frameFragNeeded[34:])
	if i4.Type() != 3 || i4.Code() != 4 || i4.NextHopMTU() != 1400 || !i4.IsError() || len(i4.Quote()) != 28 || i4.Checksum() != 0 {
		t.Errorf("ICMPv4 view wrong")
	}
	e4 := ICMPv4(frameV4Echo[34:])
	if e4.Ident() != 0x7777 || e4.Seq() != 1 || e4.IsError() {
		t.Errorf("ICMPv4 echo view wrong")
	}
	i6 := ICMPv6(framePacketTooBig[54:])
	if i6.Type() != 2 || i6.MTU() != 1280 || !i6.IsError() || len(i6.Quote()) != 1232 || i6.Code() != 0 || i6.Checksum() != 0 {
		t.Errorf("ICMPv6 view wrong")
	}
	e6 := ICMPv6(frameV6Echo[54:])
	if e6.Ident() != 0x4242 || e6.Seq() != 9 {
		t.Errorf("ICMPv6 echo view wrong")
	}
	if !IsVLANTPID(0x8100) || !IsVLANTPID(0x88a8) || !IsVLANTPID(0x9100) || IsVLANTPID(0x0800) {
		t.Errorf("IsVLANTPID wrong")
	}
	if binary.BigEndian.Uint16(be16(0x1234)) != 0x1234 {
		t.Errorf("be16")
	}
	if NotFragment.String() != "none" || FirstFragment.String() != "first" || LaterFragment.String() != "later" || Fragment(9).String() != "unknown" {
		t.Errorf("Fragment.String wrong")
	}
}
