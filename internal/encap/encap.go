package encap

import "encoding/binary"

// SrcPort returns the outer UDP source port Encap writes for a flow with
// inner flow hash hash:
//
//	0xC000 | (hash * 0x9E3779B97F4A7C15) >> 50
//
// i.e. the top 14 bits of a Fibonacci-hash multiply, in the dynamic range
// 49152..65535. Each of those bits depends on every bit of hash, so the ports
// spread evenly even when the hash varies only in its low or only in its high
// bits, and one flow always gets the same port (no reordering across ECMP
// paths or RSS queues).
func SrcPort(hash uint64) uint16 {
	return srcPortBase | uint16((hash*hashMul)>>50)
}

// FlowLabel returns the IPv6 flow label Encap writes for an IPv6 outer header
// (RFC 6438: the tunnel endpoint derives it from the inner flow):
//
//	(hash * 0x9E3779B97F4A7C15) >> 44   (20 bits)
//
// It shares its top 14 bits with the SrcPort bits.
func FlowLabel(hash uint64) uint32 {
	return uint32((hash * hashMul) >> 44)
}

// Encap prepends the outer headers to the inner IP packet buf[l3:end] and
// returns the start of the encapsulated frame, start = l3 -
// Overhead(secondary != nil); the frame is buf[start:end]. The bytes
// buf[start:l3] (the received Ethernet header and tags, and headroom) are
// overwritten; the inner packet is only read.
//
// innerVersion is 4 or 6 and must match the version nibble of buf[l3]; the
// inner packet must be at least as long as its fixed IP header. hash is the
// inner flow hash; the outer UDP source port (GUE) and IPv6 flow label come
// from it (SrcPort, FlowLabel). The inner DSCP and ECN bits are copied to the
// outer TOS / traffic class. An IPv4 outer header has DF set and ID 0 (RFC
// 6864 atomic datagram; Sluice never fragments, the caller checks the MTU
// with L3Overhead) and a correct header checksum. The GUE UDP checksum is
// computed over pseudo-header, UDP, GUE, hop list and inner packet when
// Template.UDPChecksum reports so, and is zero otherwise.
//
// secondary, if non-nil, adds the GUE private-data hop list [t.Dst,
// secondary.Dst] with next-hop index 1, so that the primary backend's agent
// can hand the packet on to the secondary (see the package documentation).
// It must have the same outer family as t. For IPIP it is ignored.
//
// Encap returns -1 and writes nothing if l3 leaves less than Overhead bytes
// of headroom, end is out of range, innerVersion is invalid or does not match
// the packet, the outer length would exceed 65535, or the outer families of t
// and secondary differ. It does not allocate.
func (t *Template) Encap(buf []byte, l3, end int, innerVersion uint8, hash uint64, secondary *Template) int {
	img := &t.img[0]
	if secondary != nil && t.mode == GUE {
		if secondary.v6 != t.v6 {
			return -1
		}
		img = &t.img[1]
	} else {
		secondary = nil
	}
	n := int(img.n)
	start := l3 - n
	if start < 0 || l3 > end || end > len(buf) {
		return -1
	}
	inner := buf[l3:end:end]
	var tos, proto uint8
	switch innerVersion {
	case 4:
		if len(inner) < ip4Len || inner[0]>>4 != 4 {
			return -1
		}
		tos, proto = inner[1], protoIPv4
	case 6:
		if len(inner) < ip6Len || inner[0]>>4 != 6 {
			return -1
		}
		tos, proto = inner[0]<<4|inner[1]>>4, protoIPv6
	default:
		return -1
	}
	// Outer IP length: IPv4 total length, or IPv6 payload length + 40.
	ipTotal := n - int(t.l2Len) + len(inner)
	if t.v6 {
		if ipTotal-ip6Len > 0xffff {
			return -1
		}
	} else if ipTotal > 0xffff {
		return -1
	}

	h := buf[start:l3:l3]
	copyHeader(h, &img.b)
	m := hash * hashMul

	ipo := int(t.l2Len)
	if t.v6 {
		ip := (*[ip6Len]byte)(h[ipo:])
		binary.BigEndian.PutUint32(ip[0:], 6<<28|uint32(tos)<<20|uint32(m>>44))
		binary.BigEndian.PutUint16(ip[4:], uint16(ipTotal-ip6Len))
		if t.mode == IPIP {
			ip[6] = proto
			return start
		}
	} else {
		ip := (*[ip4Len]byte)(h[ipo:])
		ip[1] = tos
		binary.BigEndian.PutUint16(ip[2:], uint16(ipTotal))
		s := img.ipSum + uint32(tos) + uint32(ipTotal)
		if t.mode == IPIP {
			ip[9] = proto
			s += uint32(proto)
		}
		binary.BigEndian.PutUint16(ip[10:], ^fold64(uint64(s)))
		if t.mode == IPIP {
			return start
		}
	}

	// GUE: UDP header, GUE base header, hop list.
	udpo := ipo + int(t.ipLen)
	udp := (*[udpLen + gueBaseLen]byte)(h[udpo:])
	sport := uint16(srcPortBase | m>>50)
	ulen := uint32(ipTotal) - uint32(t.ipLen)
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[4:], uint16(ulen))
	udp[udpLen+1] = proto // GUE Proto/ctype
	var secSum uint32
	if secondary != nil {
		// The secondary is the last hop, right before the inner packet.
		// (Word moves, not copy: see copyHeader.)
		hop, a := h[n-int(t.alen):], &secondary.dstRaw
		if t.v6 {
			binary.LittleEndian.PutUint64(hop, binary.LittleEndian.Uint64(a[0:8]))
			binary.LittleEndian.PutUint64(hop[8:], binary.LittleEndian.Uint64(a[8:16]))
		} else {
			binary.LittleEndian.PutUint32(hop, binary.LittleEndian.Uint32(a[0:4]))
		}
		secSum = uint32(secondary.dstSum)
	}
	if t.csum {
		s := uint64(img.udpSum) + uint64(2*ulen) + uint64(sport) + uint64(proto) +
			uint64(secSum) + uint64(sum16(inner))
		c := ^fold64(s)
		if c == 0 {
			c = 0xffff // RFC 768: a computed 0 is sent as all ones
		}
		binary.BigEndian.PutUint16(udp[6:], c)
	}
	return start
}

// copyHeader copies the header image src[:len(dst)] to dst, 34 <= len(dst)
// <= maxOverhead, in 8-byte words with an overlapping last word. Plain copy
// (and fixed-size array assignment, which may alias) calls memmove, which
// costs more than the copy itself at these sizes and spills every live
// register around the call.
func copyHeader(dst []byte, src *[maxOverhead]byte) {
	n := len(dst)
	if n < 8 || n > maxOverhead {
		panic("encap: header size out of range")
	}
	for i := 0; i < n-8; i += 8 {
		binary.LittleEndian.PutUint64(dst[i:], binary.LittleEndian.Uint64(src[i:]))
	}
	binary.LittleEndian.PutUint64(dst[n-8:], binary.LittleEndian.Uint64(src[n-8:]))
}
