package encap

import "encoding/binary"

// Sizes of the ICMP "too big" answers TooBig writes.
const (
	// TooBigHeadroom is the headroom TooBig needs in front of the frame:
	// the ICMPv6 answer's IPv6 and ICMPv6 headers (the ICMPv4 answer needs 28).
	TooBigHeadroom = ip6Len + icmpLen
	// tooBigMax4 is the longest ICMPv4 error (RFC 1812 4.3.2.3: as much of
	// the original datagram as fits in 576 octets).
	tooBigMax4 = 576
	// tooBigMax6 is the longest ICMPv6 error (RFC 4443 2.4(c): the minimum
	// IPv6 MTU).
	tooBigMax6 = 1280

	icmpLen         = 8
	protoICMP       = 1
	protoICMPv6     = 58
	icmp4Unreach    = 3
	icmp4FragNeeded = 4
	icmp6TooBig     = 2
	tooBigTTL       = 64
	tosNetControl   = 0xc0 // precedence 6, as Linux sends its ICMP errors
)

// TooBig turns the received frame buf[off:end], whose IP packet starts at
// l3, into the ICMP error a router sends back when a packet does not fit the
// next link: an ICMPv4 "fragmentation needed" (type 3, code 4, RFC 1191) or
// an ICMPv6 "packet too big" (type 2, RFC 4443 / RFC 8201) announcing mtu.
// The answer goes back where the frame came from: its Ethernet source and
// destination are swapped (802.1Q tags kept), its IP source is the original
// destination (the VIP) and its destination the original source (the
// client), and it quotes the start of the original packet, as much as fits
// in 576 octets (IPv4) or 1280 (IPv6).
//
// The original IP header must be valid (the caller decoded it): l3 < end,
// version v6 or 4. The new headers are written in front of the original IP
// packet, which stays where it is as the quote; TooBig returns the new
// frame's start and length (buf[start:start+n]), or -1, 0 if the frame has
// less than 28 (IPv4) or 48 (IPv6) bytes of headroom before off. It does not
// allocate.
func TooBig(buf []byte, off, l3, end int, v6 bool, mtu uint32) (start, n int) {
	hdr, max := ip4Len+icmpLen, tooBigMax4
	if v6 {
		hdr, max = ip6Len+icmpLen, tooBigMax6
	}
	l2 := l3 - off
	if off < hdr || l2 < ethLen || l3 >= end || end > len(buf) {
		return -1, 0
	}
	quote := min(end-l3, max-hdr)
	h := l3 - hdr // the new IP header
	start = off - hdr
	// The Ethernet header (and tags) moves in front of the new IP header,
	// with its addresses swapped.
	copy(buf[start:h], buf[off:l3])
	var mac [6]byte
	copy(mac[:], buf[start:start+6])
	copy(buf[start:start+6], buf[start+6:start+12])
	copy(buf[start+6:start+12], mac[:])

	orig := buf[l3:]
	ip := buf[h:l3]
	icmp := ip[hdr-icmpLen:]
	total := hdr + quote
	if v6 {
		ip[0], ip[1], ip[2], ip[3] = 6<<4, 0, 0, 0
		binary.BigEndian.PutUint16(ip[4:], uint16(icmpLen+quote))
		ip[6] = protoICMPv6
		ip[7] = tooBigTTL
		copy(ip[8:24], orig[24:40]) // source: the original destination
		copy(ip[24:40], orig[8:24]) // destination: the original source
		icmp[0], icmp[1] = icmp6TooBig, 0
		icmp[2], icmp[3] = 0, 0
		binary.BigEndian.PutUint32(icmp[4:], mtu)
		sum := uint32(sum16(ip[8:40])) + uint32(icmpLen+quote) + protoICMPv6
		binary.BigEndian.PutUint16(icmp[2:], Checksum(buf[l3-icmpLen:l3+quote], sum))
	} else {
		var src, dst [4]byte
		copy(src[:], orig[16:20]) // the original destination
		copy(dst[:], orig[12:16])
		ip[0], ip[1] = 4<<4|5, tosNetControl
		binary.BigEndian.PutUint16(ip[2:], uint16(total))
		binary.BigEndian.PutUint32(ip[4:], 0) // ID 0, no flags (not atomic: may be fragmented)
		ip[8], ip[9] = tooBigTTL, protoICMP
		ip[10], ip[11] = 0, 0
		copy(ip[12:16], src[:])
		copy(ip[16:20], dst[:])
		binary.BigEndian.PutUint16(ip[10:], Checksum(ip[:ip4Len], 0))
		icmp[0], icmp[1] = icmp4Unreach, icmp4FragNeeded
		icmp[2], icmp[3], icmp[4], icmp[5] = 0, 0, 0, 0
		binary.BigEndian.PutUint16(icmp[6:], uint16(min(mtu, 0xffff)))
		binary.BigEndian.PutUint16(icmp[2:], Checksum(buf[l3-icmpLen:l3+quote], 0))
	}
	return start, l2 + total
}

// UDPPayloadOffset returns where, in a frame Encap wrote with this GUE
// template, the outer UDP payload (the GUE header) starts, counted from the
// frame's start; -1 for IPIP, which has no UDP header.
func (t *Template) UDPPayloadOffset() int {
	if t.mode != GUE {
		return -1
	}
	return int(t.l2Len) + int(t.ipLen) + udpLen
}
