package encap

import "encoding/binary"

// ICMP errors about full-NAT flows (DESIGN §3.3). A router between the node
// and a backend that cannot forward S:sp -> B:bp (too big, TTL exceeded,
// unreachable) sends its error to S quoting that packet; the client must
// receive it from the VIP quoting C:cp -> VIP:vp, the packet it sent, or its
// stack will not match it to the socket (and path MTU discovery breaks). The
// other way round, an error about VIP:vp -> C:cp addressed to the VIP goes
// to the backend as an error about B:bp -> S:sp, from S. Everything that
// names the flow is translated: the outer addresses, the quoted addresses
// and ports, the quoted IPv4 header checksum, the quoted UDP checksum and
// the quoted TCP checksum if the quote reaches it, and the ICMP checksum.

// Quoted-header constants (ICMP message offsets are in packet/icmp.go; these
// are the ones the translation needs).
const (
	icmpv4DestUnreach = 3
	icmpv4TimeExceed  = 11
	icmpv6DestUnreach = 1
	icmpv6TooBig      = 2
	icmpv6TimeExceed  = 3

	ip6HopByHop = 0
	ip6Routing  = 43
	ip6Fragment = 44
	ip6DestOpts = 60
	// natMaxExt bounds the extension headers walked in a quoted IPv6 packet.
	natMaxExt = 8
)

// NATICMPError translates, in place, the ICMPv4 or ICMPv6 error in
// buf[l3:end] whose ICMP header is at l4 (after any IPv6 extension headers;
// the caller decoded the packet): its outer source and destination become
// *src and *dst, the packet it quotes gets the addresses and ports of
// *quoted (as that packet's own source and destination: for an error going
// to the client, quoted = C:cp -> VIP:vp), and the Ethernet header h is
// written in front. It returns the frame's start, l3 - h.Len().
//
// Addresses are 16 bytes, IPv4-mapped for IPv4, of the packet's family.
// Errors translated: ICMPv4 destination unreachable (fragmentation needed
// included) and time exceeded; ICMPv6 destination unreachable, packet too
// big and time exceeded. The quote must hold the quoted IP header and at
// least 8 octets of its TCP or UDP header (RFC 792's minimum); a quoted later
// fragment (no L4 header) has only its addresses translated. The quoted
// IPv4 header checksum and a nonzero quoted UDP checksum are updated
// incrementally, the quoted TCP checksum too when the quote contains it,
// the outer IPv4 header checksum incrementally, and the ICMP checksum
// (ICMPv6: over the pseudo-header with the new addresses) is verified
// before and computed anew after: a corrupt error is refused, not laundered.
//
// NATICMPError returns -1 and writes nothing if the packet is not such an
// error, the quote is unusable, the ICMP checksum is wrong, or there is no
// room for the Ethernet header. It does not allocate.
func (h *L2Template) NATICMPError(buf []byte, l3, l4, end int, src, dst *[16]byte, quoted *NATTuple) int {
	if l3 < int(h.n) || l3 >= end || end > len(buf) || l4 <= l3 || l4 > end-icmpLen {
		return -1
	}
	pkt := buf[l3:end:end]
	icmp := buf[l4:end:end]
	v6 := pkt[0]>>4 == 6
	al := 4
	if v6 {
		al = 16
		if len(pkt) < ip6Len || l4-l3 < ip6Len {
			return -1
		}
		switch icmp[0] {
		case icmpv6DestUnreach, icmpv6TooBig, icmpv6TimeExceed:
		default:
			return -1
		}
	} else {
		if pkt[0]>>4 != 4 || pkt[9] != protoICMP {
			return -1
		}
		if hl := int(pkt[0]&0x0f) * 4; hl < ip4Len || l4-l3 != hl {
			return -1
		}
		switch icmp[0] {
		case icmpv4DestUnreach, icmpv4TimeExceed:
		default:
			return -1
		}
	}
	aoff := 12 // outer addresses in the IP header
	if v6 {
		aoff = 8
	}

	// The quote.
	q := icmp[icmpLen:]
	var qaoff, ql4 int
	var qproto uint8
	later := false
	if v6 {
		if len(q) < ip6Len || q[0]>>4 != 6 {
			return -1
		}
		qaoff = 8
		nh, off := q[6], ip6Len
	walk:
		for n := 0; ; n++ {
			switch nh {
			case ip6HopByHop, ip6Routing, ip6DestOpts, ip6Fragment:
			default:
				break walk
			}
			if n == natMaxExt || off > len(q)-8 {
				return -1
			}
			if nh == ip6Fragment {
				nh = q[off]
				fo := binary.BigEndian.Uint16(q[off+2:]) &^ 7
				off += 8
				if fo != 0 {
					later = true
					break walk
				}
				continue
			}
			nh, off = q[off], off+(int(q[off+1])+1)*8
		}
		qproto, ql4 = nh, off
	} else {
		if len(q) < ip4Len || q[0]>>4 != 4 {
			return -1
		}
		qhl := int(q[0]&0x0f) * 4
		if qhl < ip4Len || qhl > len(q) {
			return -1
		}
		qaoff, qproto, ql4 = 12, q[9], qhl
		later = binary.BigEndian.Uint16(q[6:])&0x1fff != 0
	}
	qcs := -1 // offset of the quoted L4 checksum in q, if quoted and in use
	if !later {
		switch qproto {
		case protoTCP:
			if len(q) >= ql4+18 { // the quote reaches the checksum
				qcs = ql4 + 16
			}
		case protoUDP:
			if ql4 <= len(q)-udpLen {
				qcs = ql4 + 6
			}
		default:
			return -1
		}
		if ql4 > len(q)-udpLen { // fewer than the 8 octets of L4 header
			return -1
		}
	}

	// Verify the ICMP checksum as received.
	var pseudo uint32
	if v6 {
		pseudo = uint32(sum16(pkt[8:40])) + uint32(len(icmp)) + protoICMPv6
	}
	if Checksum(icmp, pseudo) != 0 {
		return -1
	}

	// From here on nothing fails. The quoted packet: addresses, ports, its
	// IPv4 header checksum and its L4 checksum, incrementally (see
	// natRewrite for the complement arithmetic).
	le := binary.LittleEndian
	var qa [32]byte
	if v6 {
		copy(qa[:16], quoted.Src[:])
		copy(qa[16:], quoted.Dst[:])
	} else {
		copy(qa[:4], quoted.Src[12:])
		copy(qa[4:8], quoted.Dst[12:])
	}
	oldA, newA := replaceWords(q[qaoff:qaoff+2*al], qa[:2*al])
	if !v6 {
		patch16(q[10:], oldA, newA)
	}
	if !later {
		var ports [4]byte
		binary.BigEndian.PutUint16(ports[0:], quoted.SrcPort)
		binary.BigEndian.PutUint16(ports[2:], quoted.DstPort)
		oldP, newP := replaceWords(q[ql4:ql4+4], ports[:])
		if qcs >= 0 && (qproto == protoTCP || le.Uint16(q[qcs:]) != 0) {
			c := ^fold64(uint64(^le.Uint16(q[qcs:])) + oldA + oldP + newA + newP)
			if c == 0 && qproto == protoUDP {
				c = 0xffff
			}
			le.PutUint16(q[qcs:], c)
		}
	}

	// The outer header.
	var oa [32]byte
	if v6 {
		copy(oa[:16], src[:])
		copy(oa[16:], dst[:])
	} else {
		copy(oa[:4], src[12:])
		copy(oa[4:8], dst[12:])
	}
	oldO, newO := replaceWords(pkt[aoff:aoff+2*al], oa[:2*al])
	if !v6 {
		patch16(pkt[10:], oldO, newO)
	}

	// The ICMP checksum, anew.
	icmp[2], icmp[3] = 0, 0
	if v6 {
		pseudo = uint32(sum16(pkt[8:40])) + uint32(len(icmp)) + protoICMPv6
	}
	binary.BigEndian.PutUint16(icmp[2:], Checksum(icmp, pseudo))
	return h.write(buf, l3, v6)
}

// replaceWords overwrites b with n (same length, a multiple of 4) and
// returns the sum of the complements of b's old 32-bit little-endian words
// and the sum of n's, for an incremental checksum update.
func replaceWords(b, n []byte) (old, new uint64) {
	for i := 0; i+4 <= len(b); i += 4 {
		old += uint64(^le32(b[i:]))
		new += uint64(le32(n[i:]))
	}
	copy(b, n)
	return old, new
}

// patch16 updates the checksum at b[0:2] for data whose complemented old
// words summed to old and whose new words sum to new.
func patch16(b []byte, old, new uint64) {
	le := binary.LittleEndian
	le.PutUint16(b, ^fold64(uint64(^le.Uint16(b))+old+new))
}
