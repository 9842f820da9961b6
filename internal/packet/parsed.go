package packet

import (
	"fmt"
	"net/netip"
)

// IP protocol numbers (IANA "Assigned Internet Protocol Numbers"), shared by
// the IPv4 protocol field and the IPv6 next header field.
const (
	ProtoHopByHop = 0
	ProtoICMP     = 1
	ProtoTCP      = 6
	ProtoUDP      = 17
	ProtoIPv6     = 41
	ProtoRouting  = 43
	ProtoFragment = 44
	ProtoESP      = 50
	ProtoAH       = 51
	ProtoICMPv6   = 58
	ProtoNoNext   = 59
	ProtoDestOpts = 60
)

// Verdict is the outcome of Decode; anything but OK names why the frame was
// rejected. The values are dense from 0 to NumVerdicts-1 so that they can
// index an array of counters.
type Verdict uint8

const (
	// OK: the frame is IPv4 or IPv6 and every header Decode reads is sound.
	OK Verdict = iota
	// Truncated: the frame ends inside the Ethernet header, a VLAN tag or
	// the fixed IPv4/IPv6 header.
	Truncated
	// UnsupportedEtherType: not IPv4/IPv6 (ARP etc.: not for the datapath).
	UnsupportedEtherType
	// TooManyVLANs: more than MaxVLANs 802.1Q/802.1ad tags.
	TooManyVLANs
	// BadIPVersion: the version nibble disagrees with the EtherType.
	BadIPVersion
	// BadIHL: IPv4 IHL < 5, or the header runs past the frame.
	BadIHL
	// BadLength: the IP total/payload length is smaller than the header or
	// larger than the frame; or an IPv6 payload length of 0 (jumbogram).
	BadLength
	// BadExtHeader: malformed IPv6 extension header chain (a header runs
	// past the packet, hop-by-hop not first, two fragment headers).
	BadExtHeader
	// TooManyExtHeaders: more than MaxExtHeaders IPv6 extension headers.
	TooManyExtHeaders
	// BadTCPOffset: fewer than 20 octets of TCP, data offset < 5, or the
	// header (with options) runs past the IP packet.
	BadTCPOffset
	// BadUDPLength: fewer than 8 octets of UDP, or a length field < 8 or
	// (unless a first fragment) larger than the IP payload.
	BadUDPLength
	// BadICMP: fewer than the 8 octets of the ICMP header. An ICMP error
	// whose quoted packet is unusable is NOT this: the packet is OK and
	// HasInner is false.
	BadICMP
	// NumVerdicts is the number of verdicts, for counter arrays.
	NumVerdicts
)

var verdictNames = [NumVerdicts]string{
	OK:                   "ok",
	Truncated:            "truncated",
	UnsupportedEtherType: "unsupported_ethertype",
	TooManyVLANs:         "too_many_vlans",
	BadIPVersion:         "bad_ip_version",
	BadIHL:               "bad_ihl",
	BadLength:            "bad_length",
	BadExtHeader:         "bad_ext_header",
	TooManyExtHeaders:    "too_many_ext_headers",
	BadTCPOffset:         "bad_tcp_offset",
	BadUDPLength:         "bad_udp_length",
	BadICMP:              "bad_icmp",
}

// String returns the verdict in snake_case, as used for a metric label.
// It does not allocate.
func (v Verdict) String() string {
	if v < NumVerdicts {
		return verdictNames[v]
	}
	return "unknown"
}

// Fragment says where a packet sits in a fragmented datagram.
type Fragment uint8

const (
	// NotFragment: a whole packet (an IPv6 atomic fragment is one too).
	NotFragment Fragment = iota
	// FirstFragment: offset 0, more fragments follow; L4 is parsed.
	FirstFragment
	// LaterFragment: offset > 0; there is no L4 header, ports are 0.
	LaterFragment
)

// String returns "none", "first" or "later".
func (f Fragment) String() string {
	switch f {
	case NotFragment:
		return "none"
	case FirstFragment:
		return "first"
	case LaterFragment:
		return "later"
	}
	return "unknown"
}

// Tuple is an L3/L4 5-tuple view. Addresses are 16 bytes; IPv4 stored
// IPv4-mapped (::ffff:a.b.c.d), exactly as netip.Addr.As16 gives them.
type Tuple struct {
	Src, Dst         [16]byte
	SrcPort, DstPort uint16 // ICMP echo request/reply: identifier in both; no ports: 0
	Proto            uint8  // final L4 protocol number after IPv6 extension headers
	IPVersion        uint8  // 4 or 6
}

// SrcAddr returns the source address, unmapped for IPv4.
func (t *Tuple) SrcAddr() netip.Addr { return t.addr(t.Src) }

// DstAddr returns the destination address, unmapped for IPv4.
func (t *Tuple) DstAddr() netip.Addr { return t.addr(t.Dst) }

func (t *Tuple) addr(a [16]byte) netip.Addr {
	if t.IPVersion == 4 {
		return netip.AddrFrom16(a).Unmap()
	}
	return netip.AddrFrom16(a)
}

// String formats the tuple for logs and test failures; it allocates.
func (t Tuple) String() string {
	return fmt.Sprintf("%d:%v->%v", t.Proto,
		netip.AddrPortFrom(t.SrcAddr(), t.SrcPort), netip.AddrPortFrom(t.DstAddr(), t.DstPort))
}

// Parsed is the result of decoding one frame. The caller owns it and
// reuses it; Decode overwrites every field. See the package comment for
// which fields to trust when Verdict is not OK (none).
//
// For an OK frame the offsets satisfy
//
//	L3Off < PayloadOff <= L3End <= len(frame)
//	L4Off == 0 || L3Off < L4Off <= PayloadOff
//	TCPOptOff == 0 || TCPOptOff == L4Off+20 <= PayloadOff
//
// L4Off is 0 only for a later fragment. For a protocol Decode does not parse
// (ESP, GRE, IPv6 "no next header", ICMPv4 over IPv6, ...), L4Off is where
// its header starts and PayloadOff == L4Off. For a later fragment
// PayloadOff is where the fragment's data starts.
type Parsed struct {
	Verdict    Verdict
	NumVLANs   uint8
	VLANs      [MaxVLANs]uint16 // TCI of each tag, outer first
	EtherType  uint16           // of the L3 payload (0x0800 / 0x86DD) after tags
	L3Off      int              // offset of the IP header in the frame
	L4Off      int              // offset of the L4 header (0 for a later fragment)
	PayloadOff int              // offset after the L4 header (TCP incl. options)
	L3End      int              // end of the IP packet per its length field (<= len(frame)); trailing Ethernet padding excluded
	Tuple      Tuple
	TTL        uint8    // TTL / hop limit
	TOS        uint8    // IPv4 TOS / IPv6 traffic class
	Frag       Fragment // NotFragment, FirstFragment or LaterFragment
	FragID     uint32   // IPv4 identification (always) or IPv6 fragment header identification (if any)
	TCPFlags   uint8    // FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 URG=0x20 ECE=0x40 CWR=0x80 (TCPFlag*)
	TCPOptOff  int      // offset of TCP options (== L4Off+20), PayloadOff marks their end; 0 if not TCP

	ICMPType, ICMPCode uint8

	// Inner is the quoted packet of an ICMPv4 destination-unreachable
	// (incl. fragmentation-needed, type 3 code 4) / time-exceeded, or
	// ICMPv6 destination-unreachable / packet-too-big / time-exceeded: the
	// IP header plus the first 8 octets of its L4 header that the ICMP error
	// carries. HasInner is true when at least the addresses and protocol
	// could be read; InnerPorts when the ports could be read too (TCP, UDP
	// or ICMP echo with its first 8 octets quoted). Inner is as quoted (the
	// original packet's direction: for an error about a reply a backend
	// sent from the VIP, Inner.Src is the VIP). A malformed quote leaves
	// HasInner false but the outer packet OK. The quote must be of the same
	// IP version as the error. IPv6 extension headers in the quote are
	// skipped; IPv4 options by IHL.
	Inner      Tuple
	HasInner   bool
	InnerPorts bool
	MTU        uint32 // next-hop MTU of frag-needed / packet-too-big

	// innerComplete: Inner is the whole tuple Decode gives the quoted
	// packet; see InnerComplete.
	innerComplete bool
}

// IsTCPSYN reports whether the packet is a TCP SYN: SYN set, ACK clear.
func (p *Parsed) IsTCPSYN() bool {
	return p.Tuple.Proto == ProtoTCP && p.TCPFlags&(TCPFlagSYN|TCPFlagACK) == TCPFlagSYN
}

// IsICMPError reports whether the packet is an ICMP error whose quote Decode
// reads (whether or not the quote was usable).
func (p *Parsed) IsICMPError() bool {
	if p.L4Off == 0 {
		return false
	}
	switch {
	case p.Tuple.IPVersion == 4 && p.Tuple.Proto == ProtoICMP:
		return icmp4IsError(p.ICMPType)
	case p.Tuple.IPVersion == 6 && p.Tuple.Proto == ProtoICMPv6:
		return icmp6IsError(p.ICMPType)
	}
	return false
}

// InnerComplete reports whether Inner is the whole tuple Decode would give
// the quoted packet: the ports were read (InnerPorts), or the quoted packet
// carries none (a later fragment, or a protocol other than TCP, UDP and
// ICMP echo) so zero ports are right. It is false when HasInner is false.
func (p *Parsed) InnerComplete() bool { return p.innerComplete }

// Decode parses frame, an Ethernet frame, into p. It resets *p first, so
// nothing from an earlier call survives. It never panics, never allocates
// and keeps no reference to frame.
func (p *Parsed) Decode(frame []byte) {
	*p = Parsed{}
	p.Verdict = p.decode(frame)
}

func (p *Parsed) decode(frame []byte) Verdict {
	if len(frame) < EthernetHeaderLen {
		return Truncated
	}
	et := Ethernet(frame).EtherType()
	off := EthernetHeaderLen
	for n := 0; IsVLANTPID(et); n++ {
		if n == MaxVLANs {
			return TooManyVLANs
		}
		if len(frame)-off < VLANTagLen {
			return Truncated
		}
		tag := VLAN(frame[off:])
		p.VLANs[n] = tag.TCI()
		p.NumVLANs = uint8(n + 1)
		et = tag.EtherType()
		off += VLANTagLen
	}
	p.EtherType = et
	p.L3Off = off
	switch et {
	case EtherTypeIPv4:
		return p.decode4(frame, off)
	case EtherTypeIPv6:
		return p.decode6(frame, off)
	}
	return UnsupportedEtherType
}

// decode4 parses the IPv4 packet at frame[l3:].
func (p *Parsed) decode4(frame []byte, l3 int) Verdict {
	pkt := frame[l3:]
	if len(pkt) < IPv4MinHeaderLen {
		return Truncated
	}
	ip := IPv4(pkt)
	if ip.Version() != 4 {
		return BadIPVersion
	}
	hl := ip.HeaderLen()
	if hl < IPv4MinHeaderLen || hl > len(pkt) {
		return BadIHL
	}
	tl := int(ip.TotalLen())
	if tl < hl || tl > len(pkt) {
		return BadLength
	}
	p.L3End = l3 + tl
	p.TOS = ip.TOS()
	p.TTL = ip.TTL()
	p.FragID = uint32(ip.ID())
	proto := ip.Protocol()
	putMapped4(&p.Tuple.Src, pkt[ipv4Src:ipv4Src+IPv4AddrLen])
	putMapped4(&p.Tuple.Dst, pkt[ipv4Dst:ipv4Dst+IPv4AddrLen])
	p.Tuple.Proto = proto
	p.Tuple.IPVersion = 4

	l4 := l3 + hl
	ff := ip.FlagsFrag()
	if ff&ipv4FragOffMask != 0 {
		p.Frag = LaterFragment
		p.PayloadOff = l4
		return OK
	}
	if ff&IPv4FlagMF != 0 {
		p.Frag = FirstFragment
	}
	return p.decodeL4(frame[:p.L3End], l4, proto)
}

// decode6 parses the IPv6 packet at frame[l3:], walking its extension
// headers.
func (p *Parsed) decode6(frame []byte, l3 int) Verdict {
	pkt := frame[l3:]
	if len(pkt) < IPv6HeaderLen {
		return Truncated
	}
	ip := IPv6(pkt)
	if ip.Version() != 6 {
		return BadIPVersion
	}
	nh := ip.NextHeader()
	pl := int(ip.PayloadLen())
	if pl > len(pkt)-IPv6HeaderLen || (pl == 0 && nh != ProtoNoNext) {
		return BadLength
	}
	end := l3 + IPv6HeaderLen + pl
	p.L3End = end
	p.TOS = ip.TrafficClass()
	p.TTL = ip.HopLimit()
	p.Tuple.Src = ip.Src()
	p.Tuple.Dst = ip.Dst()
	p.Tuple.IPVersion = 6

	frame = frame[:end]
	off := l3 + IPv6HeaderLen
	fragSeen := false
walk:
	for n := 0; ; n++ {
		switch nh {
		case ProtoHopByHop, ProtoRouting, ProtoDestOpts, ProtoFragment:
		default:
			break walk
		}
		if n == MaxExtHeaders {
			return TooManyExtHeaders
		}
		ext := frame[off:]
		if len(ext) < IPv6ExtMinLen {
			return BadExtHeader
		}
		switch nh {
		case ProtoFragment:
			if fragSeen {
				return BadExtHeader
			}
			fragSeen = true
			f := IPv6Fragment(ext)
			p.FragID = f.ID()
			nh = f.NextHeader()
			off += IPv6FragmentLen
			if f.FragmentOffset() != 0 {
				p.Frag = LaterFragment
				p.Tuple.Proto = nh
				p.PayloadOff = off
				return OK
			}
			if f.More() {
				p.Frag = FirstFragment
			}
		case ProtoHopByHop:
			if n != 0 {
				return BadExtHeader
			}
			fallthrough
		default:
			e := IPv6Ext(ext)
			l := e.Len()
			if l > len(ext) {
				return BadExtHeader
			}
			nh = e.NextHeader()
			off += l
		}
	}
	p.Tuple.Proto = nh
	return p.decodeL4(frame, off, nh)
}

// decodeL4 parses the header of protocol proto at pkt[off:]; pkt ends where
// the IP packet ends.
func (p *Parsed) decodeL4(pkt []byte, off int, proto uint8) Verdict {
	p.L4Off = off
	l4 := pkt[off:]
	switch proto {
	case ProtoTCP:
		if len(l4) < TCPMinHeaderLen {
			return BadTCPOffset
		}
		tcp := TCP(l4)
		doff := tcp.DataOffset()
		if doff < TCPMinHeaderLen || doff > len(l4) {
			return BadTCPOffset
		}
		p.Tuple.SrcPort = tcp.SrcPort()
		p.Tuple.DstPort = tcp.DstPort()
		p.TCPFlags = tcp.Flags()
		p.TCPOptOff = off + TCPMinHeaderLen
		p.PayloadOff = off + doff
		return OK
	case ProtoUDP:
		if len(l4) < UDPHeaderLen {
			return BadUDPLength
		}
		udp := UDP(l4)
		// A first fragment carries only part of the datagram the length
		// describes.
		ul := int(udp.Length())
		if ul < UDPHeaderLen || (ul > len(l4) && p.Frag != FirstFragment) {
			return BadUDPLength
		}
		p.Tuple.SrcPort = udp.SrcPort()
		p.Tuple.DstPort = udp.DstPort()
		p.PayloadOff = off + UDPHeaderLen
		return OK
	case ProtoICMP:
		if p.Tuple.IPVersion == 4 {
			return p.decodeICMP4(l4, off)
		}
	case ProtoICMPv6:
		if p.Tuple.IPVersion == 6 {
			return p.decodeICMP6(l4, off)
		}
	}
	p.PayloadOff = off
	return OK
}

func (p *Parsed) decodeICMP4(l4 []byte, off int) Verdict {
	if len(l4) < ICMPHeaderLen {
		return BadICMP
	}
	icmp := ICMPv4(l4)
	typ := icmp.Type()
	p.ICMPType = typ
	p.ICMPCode = icmp.Code()
	p.PayloadOff = off + ICMPHeaderLen
	switch {
	case icmp4IsEcho(typ):
		id := icmp.Ident()
		p.Tuple.SrcPort = id
		p.Tuple.DstPort = id
	case icmp4IsError(typ):
		if typ == ICMPv4DestUnreachable && p.ICMPCode == ICMPv4CodeFragNeeded {
			p.MTU = uint32(icmp.NextHopMTU())
		}
		p.decodeQuote4(icmp.Quote())
	}
	return OK
}

func (p *Parsed) decodeICMP6(l4 []byte, off int) Verdict {
	if len(l4) < ICMPHeaderLen {
		return BadICMP
	}
	icmp := ICMPv6(l4)
	typ := icmp.Type()
	p.ICMPType = typ
	p.ICMPCode = icmp.Code()
	p.PayloadOff = off + ICMPHeaderLen
	switch {
	case icmp6IsEcho(typ):
		id := icmp.Ident()
		p.Tuple.SrcPort = id
		p.Tuple.DstPort = id
	case icmp6IsError(typ):
		if typ == ICMPv6PacketTooBig {
			p.MTU = icmp.MTU()
		}
		p.decodeQuote6(icmp.Quote())
	}
	return OK
}

// decodeQuote4 reads the IPv4 packet an ICMPv4 error quotes. The quote is
// usually cut short, so it is judged leniently: the fixed header must be
// there and sound, the length fields are not checked.
func (p *Parsed) decodeQuote4(q []byte) {
	if len(q) < IPv4MinHeaderLen {
		return
	}
	ip := IPv4(q)
	hl := ip.HeaderLen()
	if ip.Version() != 4 || hl < IPv4MinHeaderLen {
		return
	}
	in := &p.Inner
	putMapped4(&in.Src, q[ipv4Src:ipv4Src+IPv4AddrLen])
	putMapped4(&in.Dst, q[ipv4Dst:ipv4Dst+IPv4AddrLen])
	in.Proto = ip.Protocol()
	in.IPVersion = 4
	p.HasInner = true
	if ip.FlagsFrag()&ipv4FragOffMask != 0 {
		p.innerComplete = true // a later fragment has no ports
		return
	}
	if hl > len(q) {
		return
	}
	p.quotePorts(q[hl:], ProtoICMP)
}

// decodeQuote6 reads the IPv6 packet an ICMPv6 error quotes, skipping its
// extension headers as far as the quote goes.
func (p *Parsed) decodeQuote6(q []byte) {
	if len(q) < IPv6HeaderLen {
		return
	}
	ip := IPv6(q)
	if ip.Version() != 6 {
		return
	}
	nh := ip.NextHeader()
	off := IPv6HeaderLen
	later := false
walk:
	for n := 0; ; n++ {
		switch nh {
		case ProtoHopByHop, ProtoRouting, ProtoDestOpts, ProtoFragment:
		default:
			break walk
		}
		if n == MaxExtHeaders || off > len(q)-IPv6ExtMinLen {
			return // the quoted protocol cannot be known
		}
		ext := q[off:]
		if nh == ProtoFragment {
			f := IPv6Fragment(ext)
			nh = f.NextHeader()
			off += IPv6FragmentLen
			if f.FragmentOffset() != 0 {
				later = true
				break walk
			}
			continue
		}
		e := IPv6Ext(ext)
		nh = e.NextHeader()
		off += e.Len()
	}
	in := &p.Inner
	in.Src = ip.Src()
	in.Dst = ip.Dst()
	in.Proto = nh
	in.IPVersion = 6
	p.HasInner = true
	if later {
		p.innerComplete = true
		return
	}
	if off > len(q) {
		return
	}
	p.quotePorts(q[off:], ProtoICMPv6)
}

// quotePorts reads the ports of the quoted L4 header l4 into Inner, as
// Decode would have read them from the quoted packet; icmpProto is the ICMP
// protocol number of the quote's IP version.
func (p *Parsed) quotePorts(l4 []byte, icmpProto uint8) {
	in := &p.Inner
	switch in.Proto {
	case ProtoTCP, ProtoUDP:
		if len(l4) < ICMPQuotedL4Len {
			return
		}
		in.SrcPort = TCP(l4).SrcPort() // TCP and UDP ports share their place
		in.DstPort = TCP(l4).DstPort()
	case icmpProto:
		if len(l4) < ICMPQuotedL4Len {
			return
		}
		t := l4[icmpType]
		if (icmpProto == ProtoICMP && icmp4IsEcho(t)) || (icmpProto == ProtoICMPv6 && icmp6IsEcho(t)) {
			id := ICMPv4(l4).Ident()
			in.SrcPort = id
			in.DstPort = id
		} else {
			p.innerComplete = true // no ports to read
			return
		}
	default:
		p.innerComplete = true // a protocol without ports
		return
	}
	p.InnerPorts = true
	p.innerComplete = true
}
