package packet

import (
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// The golden tests build frames with gopacket's serializers and check every
// field of Parsed against what gopacket's decoder reads from the same bytes
// (and, for ICMP quotes, against the packet that was quoted).

var (
	gMAC1  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xa}
	gMAC2  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xb}
	gV4Cli = net.IP{203, 0, 113, 7}
	gV4VIP = net.IP{198, 18, 0, 10}
	gV6Cli = net.ParseIP("2001:db8:aaaa::7")
	gV6VIP = net.ParseIP("2001:db8:ffff::10")
)

func gEth(t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: gMAC1, DstMAC: gMAC2, EthernetType: t}
}

func gIPv4(proto layers.IPProtocol, src, dst net.IP) *layers.IPv4 {
	return &layers.IPv4{Version: 4, TOS: 0x28, Id: 0x4321, Flags: layers.IPv4DontFragment, TTL: 61, Protocol: proto, SrcIP: src, DstIP: dst}
}

func gIPv6(nh layers.IPProtocol, src, dst net.IP) *layers.IPv6 {
	return &layers.IPv6{Version: 6, TrafficClass: 0x48, FlowLabel: 0x12345, HopLimit: 59, NextHeader: nh, SrcIP: src, DstIP: dst}
}

func gTCP(sport, dport layers.TCPPort) *layers.TCP {
	return &layers.TCP{SrcPort: sport, DstPort: dport, Seq: 7, Ack: 9, ACK: true, PSH: true, Window: 512}
}

func gSYN(sport, dport layers.TCPPort) *layers.TCP {
	return &layers.TCP{SrcPort: sport, DstPort: dport, Seq: 7, SYN: true, ECE: true, CWR: true, Window: 64240,
		Options: []layers.TCPOption{
			{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
			{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
			{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		}}
}

// serialize builds a frame; L4 layers get their checksum's network layer.
func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	var netLayer gopacket.NetworkLayer
	for _, l := range ls {
		switch l := l.(type) {
		case *layers.IPv4:
			netLayer = l
		case *layers.IPv6:
			netLayer = l
		case *layers.TCP:
			if err := l.SetNetworkLayerForChecksum(netLayer); err != nil {
				t.Fatal(err)
			}
		case *layers.UDP:
			if err := l.SetNetworkLayerForChecksum(netLayer); err != nil {
				t.Fatal(err)
			}
		case *layers.ICMPv6:
			if err := l.SetNetworkLayerForChecksum(netLayer); err != nil {
				t.Fatal(err)
			}
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

type goldenCase struct {
	name  string
	frame []byte
	// For ICMP errors: the tuple of the packet that was quoted, as built,
	// and whether its ports are expected to be read.
	inner         *Tuple
	innerPorts    bool
	innerComplete bool
}

func addr16(ip net.IP) [16]byte { return netip.MustParseAddr(ip.String()).As16() }

func tupleOf(proto uint8, src, dst net.IP, sport, dport uint16) *Tuple {
	v := uint8(6)
	if src.To4() != nil {
		v = 4
	}
	return &Tuple{Src: addr16(src), Dst: addr16(dst), SrcPort: sport, DstPort: dport, Proto: proto, IPVersion: v}
}

func goldenCases(t testing.TB) []goldenCase {
	t.Helper()
	ext := func(nh layers.IPProtocol) *layers.IPv6Destination {
		d := &layers.IPv6Destination{Options: []*layers.IPv6DestinationOption{{OptionType: 0x1e, OptionData: []byte{1, 2, 3, 4}}}}
		d.NextHeader = nh
		return d
	}
	hbh := &layers.IPv6HopByHop{Options: []*layers.IPv6HopByHopOption{{OptionType: 0x3e, OptionData: []byte{9, 9, 9, 9}}}} // experimental (RFC 4727)
	hbh.NextHeader = layers.IPProtocolIPv6Routing
	rt := &layers.IPv6Routing{RoutingType: 0, SegmentsLeft: 0, Reserved: []byte{0, 0, 0, 0}, SourceRoutingIPs: []net.IP{gV6VIP}}
	rt.NextHeader = layers.IPProtocolIPv6Destination

	// Packets quoted by ICMP errors: replies from the VIP to the client.
	replyV4 := serialize(t, gIPv4(layers.IPProtocolTCP, gV4VIP, gV4Cli), gTCP(443, 51000), gopacket.Payload(make([]byte, 1400)))
	optsV4 := gIPv4(layers.IPProtocolTCP, gV4VIP, gV4Cli)
	optsV4.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}}
	replyV4Opts := serialize(t, optsV4, gTCP(443, 51001), gopacket.Payload("data"))
	udpV4 := serialize(t, gIPv4(layers.IPProtocolUDP, gV4Cli, gV4VIP), &layers.UDP{SrcPort: 5000, DstPort: 9053}, gopacket.Payload("query"))
	replyV6 := serialize(t, gIPv6(layers.IPProtocolTCP, gV6VIP, gV6Cli), gTCP(443, 51002), gopacket.Payload(make([]byte, 1400)))
	udpV6Ext := serialize(t, gIPv6(layers.IPProtocolIPv6Destination, gV6Cli, gV6VIP), ext(layers.IPProtocolUDP), &layers.UDP{SrcPort: 5001, DstPort: 443}, gopacket.Payload("quic"))
	laterV6 := serialize(t, gIPv6(layers.IPProtocolIPv6Fragment, gV6VIP, gV6Cli),
		&layers.IPv6Fragment{NextHeader: layers.IPProtocolTCP, FragmentOffset: 100, MoreFragments: true, Identification: 99}, gopacket.Payload(make([]byte, 64)))

	first4 := gIPv4(layers.IPProtocolTCP, gV4Cli, gV4VIP)
	first4.Flags = layers.IPv4MoreFragments
	later4 := gIPv4(layers.IPProtocolUDP, gV4Cli, gV4VIP)
	later4.Flags, later4.FragOffset = 0, 185

	mtu := func(v uint32, quote []byte) gopacket.Payload {
		return gopacket.Payload(append([]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}, quote...))
	}

	return []goldenCase{
		{name: "ipv4-tcp-syn-options", frame: serialize(t, gEth(layers.EthernetTypeIPv4), gIPv4(layers.IPProtocolTCP, gV4Cli, gV4VIP), gSYN(51000, 443))},
		{name: "ipv4-tcp-data", frame: serialize(t, gEth(layers.EthernetTypeIPv4), gIPv4(layers.IPProtocolTCP, gV4Cli, gV4VIP), gTCP(51000, 443), gopacket.Payload("hello"))},
		{name: "ipv4-udp", frame: serialize(t, gEth(layers.EthernetTypeIPv4), gIPv4(layers.IPProtocolUDP, gV4Cli, gV4VIP), &layers.UDP{SrcPort: 5000, DstPort: 9053}, gopacket.Payload("a dns query"))},
		{name: "ipv4-icmp-echo", frame: serialize(t, gEth(layers.EthernetTypeIPv4), gIPv4(layers.IPProtocolICMPv4, gV4Cli, gV4VIP),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 0xbeef, Seq: 3}, gopacket.Payload("ping"))},
		{name: "ipv4-icmp-echo-reply", frame: serialize(t, gEth(layers.EthernetTypeIPv4), gIPv4(layers.IPProtocolICMPv4, gV4VIP, gV4Cli),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoReply, 0), Id: 0xbeef, Seq: 3}, gopacket.Payload("ping"))},
		{name: "vlan-ipv4-udp", frame: serialize(t, gEth(layers.EthernetTypeDot1Q), &layers.Dot1Q{Priority: 5, VLANIdentifier: 100, Type: layers.EthernetTypeIPv4},
			gIPv4(layers.IPProtocolUDP, gV4Cli, gV4VIP), &layers.UDP{SrcPort: 5000, DstPort: 9053}, gopacket.Payload("q"))},
		{name: "qinq-ipv6-tcp", frame: serialize(t, gEth(layers.EthernetTypeQinQ), &layers.Dot1Q{VLANIdentifier: 200, Type: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{Priority: 3, DropEligible: true, VLANIdentifier: 4094, Type: layers.EthernetTypeIPv6},
			gIPv6(layers.IPProtocolTCP, gV6Cli, gV6VIP), gSYN(51000, 443))},
		{name: "ipv4-options-tcp", frame: func() []byte {
			ip := gIPv4(layers.IPProtocolTCP, gV4Cli, gV4VIP)
			ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}, {OptionType: 7, OptionLength: 7, OptionData: []byte{4, 0, 0, 0, 0}}}
			return serialize(t, gEth(layers.EthernetTypeIPv4), ip, gTCP(51000, 443), gopacket.Payload("x"))
		}()},
		{name: "ipv4-first-fragment-tcp", frame: serialize(t, gEth(layers.EthernetTypeIPv4), first4, gTCP(51000, 443), gopacket.Payload(make([]byte, 200)))},
		{name: "ipv4-later-fragment", frame: serialize(t, gEth(layers.EthernetTypeIPv4), later4, gopacket.Payload(make([]byte, 100)))},
		{name: "ipv4-gre", frame: serialize(t, gEth(layers.EthernetTypeIPv4), gIPv4(layers.IPProtocolGRE, gV4Cli, gV4VIP),
			&layers.GRE{Protocol: layers.EthernetTypeIPv4}, gIPv4(layers.IPProtocolUDP, gV4Cli, gV4VIP), &layers.UDP{SrcPort: 1, DstPort: 2})},
		{name: "ipv4-icmp-frag-needed", frame: serialize(t, gEth(layers.EthernetTypeIPv4), gIPv4(layers.IPProtocolICMPv4, net.IP{192, 0, 2, 254}, gV4VIP),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded), Seq: 1380},
			gopacket.Payload(replyV4[:28])),
			inner: tupleOf(ProtoTCP, gV4VIP, gV4Cli, 443, 51000), innerPorts: true, innerComplete: true},
		{name: "ipv4-icmp-host-unreachable-inner-options", frame: serialize(t, gEth(layers.EthernetTypeIPv4), gIPv4(layers.IPProtocolICMPv4, net.IP{192, 0, 2, 254}, gV4VIP),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeHost)},
			gopacket.Payload(replyV4Opts[:36])),
			inner: tupleOf(ProtoTCP, gV4VIP, gV4Cli, 443, 51001), innerPorts: true, innerComplete: true},
		{name: "ipv4-icmp-time-exceeded-udp-full", frame: serialize(t, gEth(layers.EthernetTypeIPv4), gIPv4(layers.IPProtocolICMPv4, net.IP{192, 0, 2, 254}, gV4Cli),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeTimeExceeded, layers.ICMPv4CodeTTLExceeded)},
			gopacket.Payload(udpV4)),
			inner: tupleOf(ProtoUDP, gV4Cli, gV4VIP, 5000, 9053), innerPorts: true, innerComplete: true},
		{name: "ipv4-icmp-frag-needed-short-quote", frame: serialize(t, gEth(layers.EthernetTypeIPv4), gIPv4(layers.IPProtocolICMPv4, net.IP{192, 0, 2, 254}, gV4VIP),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded), Seq: 576},
			gopacket.Payload(replyV4[:24])),
			inner: tupleOf(ProtoTCP, gV4VIP, gV4Cli, 0, 0)},
		{name: "ipv6-tcp", frame: serialize(t, gEth(layers.EthernetTypeIPv6), gIPv6(layers.IPProtocolTCP, gV6Cli, gV6VIP), gTCP(51000, 443), gopacket.Payload("hello"))},
		{name: "vlan-ipv6-udp", frame: serialize(t, gEth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv6},
			gIPv6(layers.IPProtocolUDP, gV6Cli, gV6VIP), &layers.UDP{SrcPort: 5001, DstPort: 443}, gopacket.Payload("quic"))},
		{name: "ipv6-ext-chain-udp", frame: serialize(t, gEth(layers.EthernetTypeIPv6), gIPv6(layers.IPProtocolIPv6HopByHop, gV6Cli, gV6VIP),
			hbh, rt, ext(layers.IPProtocolUDP), &layers.UDP{SrcPort: 5001, DstPort: 443}, gopacket.Payload("quic"))},
		{name: "ipv6-first-fragment-tcp", frame: serialize(t, gEth(layers.EthernetTypeIPv6), gIPv6(layers.IPProtocolIPv6Fragment, gV6Cli, gV6VIP),
			&layers.IPv6Fragment{NextHeader: layers.IPProtocolTCP, MoreFragments: true, Identification: 0xa1b2c3d4}, gTCP(51000, 443), gopacket.Payload(make([]byte, 100)))},
		{name: "ipv6-later-fragment", frame: serialize(t, gEth(layers.EthernetTypeIPv6), gIPv6(layers.IPProtocolIPv6Destination, gV6Cli, gV6VIP),
			ext(layers.IPProtocolIPv6Fragment), &layers.IPv6Fragment{NextHeader: layers.IPProtocolUDP, FragmentOffset: 181, Identification: 42}, gopacket.Payload(make([]byte, 77)))},
		{name: "ipv6-atomic-fragment-udp", frame: serialize(t, gEth(layers.EthernetTypeIPv6), gIPv6(layers.IPProtocolIPv6Fragment, gV6Cli, gV6VIP),
			&layers.IPv6Fragment{NextHeader: layers.IPProtocolUDP, Identification: 43}, &layers.UDP{SrcPort: 5001, DstPort: 443}, gopacket.Payload("x"))},
		{name: "ipv6-esp", frame: serialize(t, gEth(layers.EthernetTypeIPv6), gIPv6(layers.IPProtocolESP, gV6Cli, gV6VIP), gopacket.Payload(make([]byte, 32)))},
		{name: "ipv6-icmp-echo", frame: serialize(t, gEth(layers.EthernetTypeIPv6), gIPv6(layers.IPProtocolICMPv6, gV6Cli, gV6VIP),
			&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}, &layers.ICMPv6Echo{Identifier: 0x0102, SeqNumber: 9}, gopacket.Payload("ping"))},
		{name: "ipv6-icmp-packet-too-big", frame: serialize(t, gEth(layers.EthernetTypeIPv6), gIPv6(layers.IPProtocolICMPv6, net.ParseIP("2001:db8::fe"), gV6VIP),
			&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypePacketTooBig, 0)}, mtu(1280, replyV6[:1232])),
			inner: tupleOf(ProtoTCP, gV6VIP, gV6Cli, 443, 51002), innerPorts: true, innerComplete: true},
		{name: "ipv6-icmp-unreachable-quote-ext", frame: serialize(t, gEth(layers.EthernetTypeIPv6), gIPv6(layers.IPProtocolICMPv6, net.ParseIP("2001:db8::fe"), gV6Cli),
			&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeDestinationUnreachable, layers.ICMPv6CodePortUnreachable)}, mtu(0, udpV6Ext)),
			inner: tupleOf(ProtoUDP, gV6Cli, gV6VIP, 5001, 443), innerPorts: true, innerComplete: true},
		{name: "ipv6-icmp-time-exceeded-quote-later-fragment", frame: serialize(t, gEth(layers.EthernetTypeIPv6), gIPv6(layers.IPProtocolICMPv6, net.ParseIP("2001:db8::fe"), gV6VIP),
			&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeTimeExceeded, 0)}, mtu(0, laterV6)),
			inner: tupleOf(ProtoTCP, gV6VIP, gV6Cli, 0, 0), innerComplete: true},
	}
}

// expectFromGopacket builds the Parsed that frame should decode to from
// gopacket's decoding of it.
func expectFromGopacket(t *testing.T, frame []byte) Parsed {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	var w Parsed
	off := 0
	setAddrs := func(tp *Tuple, src, dst net.IP) {
		tp.Src, tp.Dst = addr16(src), addr16(dst)
	}
	var walk func(ls []gopacket.Layer)
	walk = func(ls []gopacket.Layer) {
		for _, l := range ls {
			switch l := l.(type) {
			case *layers.Ethernet:
				w.EtherType = uint16(l.EthernetType)
				off += len(l.Contents)
			case *layers.Dot1Q:
				tci := uint16(l.Priority)<<13 | l.VLANIdentifier
				if l.DropEligible {
					tci |= 0x1000
				}
				w.VLANs[w.NumVLANs] = tci
				w.NumVLANs++
				w.EtherType = uint16(l.Type)
				off += len(l.Contents)
			case *layers.IPv4:
				w.L3Off = off
				w.L3End = off + int(l.Length)
				w.TOS, w.TTL, w.FragID = l.TOS, l.TTL, uint32(l.Id)
				setAddrs(&w.Tuple, l.SrcIP, l.DstIP)
				w.Tuple.Proto, w.Tuple.IPVersion = uint8(l.Protocol), 4
				off += len(l.Contents)
				switch {
				case l.FragOffset != 0:
					w.Frag, w.PayloadOff = LaterFragment, off
				case l.Flags&layers.IPv4MoreFragments != 0:
					w.Frag = FirstFragment
				}
			case *layers.IPv6:
				w.L3Off = off
				w.L3End = off + IPv6HeaderLen + int(l.Length)
				w.TOS, w.TTL = l.TrafficClass, l.HopLimit
				setAddrs(&w.Tuple, l.SrcIP, l.DstIP)
				w.Tuple.Proto, w.Tuple.IPVersion = uint8(l.NextHeader), 6
				off += len(l.Contents)
			case *layers.IPv6HopByHop:
				w.Tuple.Proto = uint8(l.NextHeader)
				off += len(l.Contents)
			case *layers.IPv6Routing:
				w.Tuple.Proto = uint8(l.NextHeader)
				off += len(l.Contents)
			case *layers.IPv6Destination:
				w.Tuple.Proto = uint8(l.NextHeader)
				off += len(l.Contents)
			case *layers.IPv6Fragment:
				w.Tuple.Proto = uint8(l.NextHeader)
				w.FragID = l.Identification
				off += len(l.Contents)
				switch {
				case l.FragmentOffset != 0:
					w.Frag, w.PayloadOff = LaterFragment, off
				case l.MoreFragments:
					w.Frag = FirstFragment
				}
			case *gopacket.Fragment:
				if w.Frag != LaterFragment {
					// gopacket stops at any fragment header, even an atomic
					// one; decode the start as the L4 header it is.
					lt := layers.IPProtocol(w.Tuple.Proto).LayerType()
					walk(gopacket.NewPacket(l.LayerContents(), lt, gopacket.Default).Layers())
				}
			case *layers.TCP:
				w.L4Off = off
				w.Tuple.SrcPort, w.Tuple.DstPort = uint16(l.SrcPort), uint16(l.DstPort)
				for i, f := range []bool{l.FIN, l.SYN, l.RST, l.PSH, l.ACK, l.URG, l.ECE, l.CWR} {
					if f {
						w.TCPFlags |= 1 << i
					}
				}
				w.TCPOptOff = off + 20
				w.PayloadOff = off + int(l.DataOffset)*4
				off += len(l.Contents)
			case *layers.UDP:
				w.L4Off = off
				w.Tuple.SrcPort, w.Tuple.DstPort = uint16(l.SrcPort), uint16(l.DstPort)
				off += len(l.Contents)
				w.PayloadOff = off
			case *layers.ICMPv4:
				w.L4Off = off
				w.ICMPType, w.ICMPCode = l.TypeCode.Type(), l.TypeCode.Code()
				switch w.ICMPType {
				case layers.ICMPv4TypeEchoRequest, layers.ICMPv4TypeEchoReply:
					w.Tuple.SrcPort, w.Tuple.DstPort = l.Id, l.Id
				case layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4TypeTimeExceeded:
					if l.TypeCode == layers.CreateICMPv4TypeCode(3, 4) {
						w.MTU = uint32(l.Seq)
					}
					innerFromGopacket(t, &w, l.Payload, layers.LayerTypeIPv4)
				}
				off += len(l.Contents)
				w.PayloadOff = off
			case *layers.ICMPv6:
				w.L4Off = off
				w.ICMPType, w.ICMPCode = l.TypeCode.Type(), l.TypeCode.Code()
				switch w.ICMPType {
				case layers.ICMPv6TypeDestinationUnreachable, layers.ICMPv6TypePacketTooBig, layers.ICMPv6TypeTimeExceeded:
					// gopacket leaves the second word in the payload.
					rest := l.Payload
					if w.ICMPType == layers.ICMPv6TypePacketTooBig {
						w.MTU = uint32(rest[0])<<24 | uint32(rest[1])<<16 | uint32(rest[2])<<8 | uint32(rest[3])
					}
					innerFromGopacket(t, &w, rest[4:], layers.LayerTypeIPv6)
				}
				w.PayloadOff = off + 8
				off += len(l.Contents)
			case *layers.ICMPv6Echo:
				w.Tuple.SrcPort, w.Tuple.DstPort = l.Identifier, l.Identifier
			case *layers.GRE, *layers.IPSecESP:
				w.L4Off, w.PayloadOff = off, off
				return // what GRE carries is not ours to parse
			case *gopacket.Payload:
			default:
				t.Fatalf("golden: unexpected layer %v", l.LayerType())
			}
		}
	}
	walk(pkt.Layers())
	return w
}

// innerFromGopacket fills the inner addresses and protocol of an ICMP error
// from gopacket's decoding of the quote (which fails at the cut-short L4
// header, after the IP header and its extensions are read).
func innerFromGopacket(t *testing.T, w *Parsed, quote []byte, first gopacket.LayerType) {
	t.Helper()
	q := gopacket.NewPacket(quote, first, gopacket.Default)
	// gopacket adds an L4 layer it failed to decode; its ports are not read.
	l4ok := q.ErrorLayer() == nil
	for _, l := range q.Layers() {
		switch l := l.(type) {
		case *layers.IPv4:
			w.Inner.Src, w.Inner.Dst = addr16(l.SrcIP), addr16(l.DstIP)
			w.Inner.Proto, w.Inner.IPVersion = uint8(l.Protocol), 4
			w.HasInner = true
		case *layers.IPv6:
			w.Inner.Src, w.Inner.Dst = addr16(l.SrcIP), addr16(l.DstIP)
			w.Inner.Proto, w.Inner.IPVersion = uint8(l.NextHeader), 6
			w.HasInner = true
		case *layers.IPv6HopByHop:
			w.Inner.Proto = uint8(l.NextHeader)
		case *layers.IPv6Destination:
			w.Inner.Proto = uint8(l.NextHeader)
		case *layers.IPv6Fragment:
			w.Inner.Proto = uint8(l.NextHeader)
		case *layers.TCP:
			if l4ok {
				w.Inner.SrcPort, w.Inner.DstPort = uint16(l.SrcPort), uint16(l.DstPort)
				w.InnerPorts = true
			}
		case *layers.UDP:
			if l4ok {
				w.Inner.SrcPort, w.Inner.DstPort = uint16(l.SrcPort), uint16(l.DstPort)
				w.InnerPorts = true
			}
		}
	}
}

func TestDecodeGolden(t *testing.T) {
	for _, gc := range goldenCases(t) {
		t.Run(gc.name, func(t *testing.T) {
			want := expectFromGopacket(t, gc.frame)
			if gc.inner != nil {
				// gopacket reads no ports from a quote cut after 8 octets
				// of TCP: take those from the packet that was quoted.
				if !want.InnerPorts && gc.innerPorts {
					want.Inner.SrcPort, want.Inner.DstPort = gc.inner.SrcPort, gc.inner.DstPort
					want.InnerPorts = true
				}
				if want.Inner != *gc.inner {
					t.Fatalf("test bug: gopacket reads quote as %v, built as %v", want.Inner, *gc.inner)
				}
			} else if want.HasInner {
				t.Fatalf("test bug: quote without expectation")
			}
			want.innerComplete = gc.innerComplete
			var got Parsed
			got.Decode(gc.frame)
			if got != want {
				t.Errorf("frame %x\n got %+v\nwant %+v", gc.frame, got, want)
			}
			if got.Verdict == OK {
				checkInvariants(t, gc.frame, &got)
			}
		})
	}
}
