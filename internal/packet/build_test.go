package packet

import "encoding/binary"

// Hand builders for test frames. They write every octet themselves so that
// the verdict tests do not depend on another decoder's idea of a packet,
// and so that malformed frames are one patch away from sound ones.

var (
	v4Src = [4]byte{192, 0, 2, 1}
	v4Dst = [4]byte{198, 51, 100, 2}
	v6Src = [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}
	v6Dst = [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: 2}
)

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// patch returns a copy of b with v written at off.
func patch(b []byte, off int, v ...byte) []byte {
	c := append([]byte(nil), b...)
	copy(c[off:], v)
	return c
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// eth builds an Ethernet header: types[0] is the first EtherType; each
// further type follows a VLAN tag whose TCI is 0x100+i (i counting from 1).
func eth(types ...uint16) []byte {
	b := []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2}
	b = append(b, be16(types[0])...)
	for i, t := range types[1:] {
		b = append(b, be16(uint16(0x100+i+1))...)
		b = append(b, be16(t)...)
	}
	return b
}

// ip4 builds an IPv4 packet around payload: IHL from the options (which
// must be a multiple of 4 long), total length exact, checksum zero.
func ip4(proto uint8, flagsFrag uint16, opts []byte, payload []byte) []byte {
	hl := 20 + len(opts)
	b := make([]byte, hl, hl+len(payload))
	b[0] = 0x40 | byte(hl/4)
	b[1] = 0xb8 // DSCP EF
	binary.BigEndian.PutUint16(b[2:], uint16(hl+len(payload)))
	binary.BigEndian.PutUint16(b[4:], 0x1234)
	binary.BigEndian.PutUint16(b[6:], flagsFrag)
	b[8] = 64
	b[9] = proto
	copy(b[12:], v4Src[:])
	copy(b[16:], v4Dst[:])
	copy(b[20:], opts)
	return append(b, payload...)
}

// ip6 builds an IPv6 packet around payload (extension headers included).
func ip6(nh uint8, payload []byte) []byte {
	b := make([]byte, 40, 40+len(payload))
	binary.BigEndian.PutUint32(b[0:], 6<<28|0x2e<<20|0xbeef) // traffic class 0x2e, flow label 0xbeef
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6] = nh
	b[7] = 255
	copy(b[8:], v6Src[:])
	copy(b[24:], v6Dst[:])
	return append(b, payload...)
}

// ext6 builds a hop-by-hop/routing/destination options header of
// (units+1)*8 octets, its body filled with PadN.
func ext6(nh uint8, units int) []byte {
	b := make([]byte, (units+1)*8)
	b[0] = nh
	b[1] = byte(units)
	b[2] = 1 // PadN
	b[3] = byte(len(b) - 4)
	return b
}

// frag6 builds an IPv6 fragment header; off is in octets (multiple of 8).
func frag6(nh uint8, off uint16, more bool, id uint32) []byte {
	b := make([]byte, 8)
	b[0] = nh
	v := off &^ 7
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[2:], v)
	binary.BigEndian.PutUint32(b[4:], id)
	return b
}

// tcp builds a TCP header with the given options (a multiple of 4 long)
// and payload.
func tcp(sport, dport uint16, flags uint8, opts, payload []byte) []byte {
	hl := 20 + len(opts)
	b := make([]byte, hl, hl+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 1000)
	binary.BigEndian.PutUint32(b[8:], 2000)
	b[12] = byte(hl/4) << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	copy(b[20:], opts)
	return append(b, payload...)
}

func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

// icmp builds an ICMPv4/ICMPv6 message: rest is the second word (echo
// identifier and sequence, MTU, ...).
func icmp(typ, code uint8, rest uint32, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	b[0] = typ
	b[1] = code
	binary.BigEndian.PutUint32(b[4:], rest)
	return append(b, payload...)
}

// Sound frames used across the tests and benchmarks.
var (
	mssOpt = []byte{2, 4, 0x05, 0xb4} // MSS 1460

	frameV4TCP    = cat(eth(EtherTypeIPv4), ip4(ProtoTCP, IPv4FlagDF, nil, tcp(40000, 443, TCPFlagSYN, mssOpt, nil)))
	frameV4TCPAck = cat(eth(EtherTypeIPv4), ip4(ProtoTCP, IPv4FlagDF, nil, tcp(40000, 443, TCPFlagACK|TCPFlagPSH, nil, []byte("GET / HTTP/1.1\r\n\r\n"))))
	frameV4UDP    = cat(eth(EtherTypeIPv4), ip4(ProtoUDP, 0, nil, udp(5353, 53, []byte("query"))))
	frameVLANUDP  = cat(eth(EtherTypeVLAN, EtherTypeIPv4), ip4(ProtoUDP, 0, nil, udp(5353, 53, []byte("query"))))
	frameQinQTCP  = cat(eth(EtherTypeQinQ, EtherTypeVLAN, EtherTypeIPv6), ip6(ProtoTCP, tcp(40000, 443, TCPFlagACK, nil, nil)))
	frameV4Echo   = cat(eth(EtherTypeIPv4), ip4(ProtoICMP, 0, nil, icmp(ICMPv4EchoRequest, 0, 0x77770001, []byte("ping"))))
	frameV6TCP    = cat(eth(EtherTypeIPv6), ip6(ProtoTCP, tcp(40000, 443, TCPFlagSYN, mssOpt, nil)))
	frameV6Ext    = cat(eth(EtherTypeIPv6), ip6(ProtoHopByHop, cat(ext6(ProtoDestOpts, 0), ext6(ProtoRouting, 1), ext6(ProtoFragment, 0),
		frag6(ProtoUDP, 0, true, 0xabcdef01), udp(1000, 2000, []byte("x")))))
	frameV6Echo = cat(eth(EtherTypeIPv6), ip6(ProtoICMPv6, icmp(ICMPv6EchoReply, 0, 0x42420009, nil)))

	// quotedV4TCP is a reply from the VIP 198.51.100.2:443 to the client,
	// as a router quotes it in a fragmentation-needed message.
	quotedV4TCP       = swap4(ip4(ProtoTCP, IPv4FlagDF, nil, tcp(443, 40000, TCPFlagACK, nil, make([]byte, 1400))))
	frameFragNeeded   = cat(eth(EtherTypeIPv4), ip4(ProtoICMP, 0, nil, icmp(ICMPv4DestUnreachable, ICMPv4CodeFragNeeded, 1400, quotedV4TCP[:28])))
	quotedV6TCP       = swap6(ip6(ProtoTCP, tcp(443, 40000, TCPFlagACK, nil, make([]byte, 1400))))
	framePacketTooBig = cat(eth(EtherTypeIPv6), ip6(ProtoICMPv6, icmp(ICMPv6PacketTooBig, 0, 1280, quotedV6TCP[:1232])))
)

// swap4 swaps the addresses of an IPv4 packet.
func swap4(p []byte) []byte {
	c := append([]byte(nil), p...)
	copy(c[12:16], p[16:20])
	copy(c[16:20], p[12:16])
	return c
}

// swap6 swaps the addresses of an IPv6 packet.
func swap6(p []byte) []byte {
	c := append([]byte(nil), p...)
	copy(c[8:24], p[24:40])
	copy(c[24:40], p[8:24])
	return c
}
