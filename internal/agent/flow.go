package agent

import (
	"encoding/binary"

	"github.com/sluicelb/sluice/internal/packet"
)

// flowKey names an inner flow as the client sends it: client address and
// port, VIP address and port, protocol. Addresses are 16 bytes, IPv4 in
// IPv4-mapped form (netip.Addr.As16); v6 tells the families apart. It holds
// no pointers, so it is comparable and hashes as plain memory.
type flowKey struct {
	client, vip  [16]byte
	cport, vport uint16
	proto        uint8 // packet.ProtoTCP or packet.ProtoUDP
	v6           bool
}

// flowClass is what the ownership rule makes of an inner packet.
type flowClass uint8

const (
	// classOther: no 4-tuple the agent can look up (not TCP or UDP, a
	// fragment, an IPv6 extension header, a header cut short, an ICMP
	// message that is not an error about a VIP's TCP or UDP packet).
	// Always local.
	classOther flowClass = iota
	// classTCPSYN: a TCP SYN without ACK, a new connection. Always local.
	classTCPSYN
	// classTCP: any other TCP segment, or an ICMP error quoting a TCP
	// segment the VIP sent. Local if a socket here owns the 4-tuple.
	classTCP
	// classUDP: a UDP datagram, or an ICMP error quoting one the VIP sent.
	// Local under UDPLocal; under UDPSecondChance if a connected UDP socket
	// here matches the 4-tuple.
	classUDP
)

// flowInfo is parseFlow's result, owned by the Run goroutine.
type flowInfo struct {
	key   flowKey
	class flowClass
	// flags are the TCP flags of a TCP segment (0 for an ICMP error).
	flags uint8
	// icmp: the key comes from the packet an ICMP error quotes. Such a
	// packet is routed like its flow but never recorded in, or removed
	// from, the agent's flow record.
	icmp bool
}

// ICMP error types whose quote names a flow.
const (
	icmp4Unreachable   = packet.ICMPv4DestUnreachable
	icmp4TimeExceeded  = packet.ICMPv4TimeExceeded
	icmp4ParamProblem  = 12
	icmp6Unreachable   = packet.ICMPv6DestUnreachable
	icmp6PacketTooBig  = packet.ICMPv6PacketTooBig
	icmp6TimeExceeded  = packet.ICMPv6TimeExceeded
	icmp6ParamProblem  = 4
	ipv4FragOffsetMask = 0x1fff
)

// parseFlow classifies inner, an IP packet that vipSet.inspect accepted
// (so its IP header and length are sound and trimmed), into f. It does not
// allocate and never fails: what it cannot read is classOther.
//
// It reads TCP and UDP directly after the IPv4 header (options skipped) or
// the fixed IPv6 header; an IPv4 fragment (offset > 0 or MF set) or an IPv6
// extension header makes the packet classOther. An ICMPv4 error
// (unreachable, time exceeded, parameter problem) or ICMPv6 error
// (unreachable, packet too big, time exceeded, parameter problem) whose
// quote is a TCP or UDP packet from the inner destination (the VIP) takes
// the quoted flow, turned around to the client's direction.
func parseFlow(inner []byte, f *flowInfo) {
	*f = flowInfo{}
	k := &f.key
	var l4 []byte
	var proto uint8
	if inner[0]>>4 == 4 {
		ip := packet.IPv4(inner)
		if ip.FlagsFrag()&(packet.IPv4FlagMF|ipv4FragOffsetMask) != 0 {
			return
		}
		putMapped(&k.client, inner[12:16])
		putMapped(&k.vip, inner[16:20])
		proto, l4 = ip.Protocol(), inner[ip.HeaderLen():]
	} else {
		k.v6 = true
		copy(k.client[:], inner[8:24])
		copy(k.vip[:], inner[24:40])
		proto, l4 = packet.IPv6(inner).NextHeader(), inner[packet.IPv6HeaderLen:]
	}
	switch {
	case proto == packet.ProtoTCP:
		if len(l4) < packet.TCPMinHeaderLen {
			return
		}
		t := packet.TCP(l4)
		k.proto, k.cport, k.vport, f.flags = proto, t.SrcPort(), t.DstPort(), t.Flags()
		f.class = classTCP
		if f.flags&(packet.TCPFlagSYN|packet.TCPFlagACK) == packet.TCPFlagSYN {
			f.class = classTCPSYN
		}
	case proto == packet.ProtoUDP:
		if len(l4) < packet.UDPHeaderLen {
			return
		}
		k.proto, k.cport, k.vport = proto, binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		f.class = classUDP
	case proto == packet.ProtoICMP && !k.v6:
		if len(l4) >= packet.ICMPHeaderLen {
			switch l4[0] {
			case icmp4Unreachable, icmp4TimeExceeded, icmp4ParamProblem:
				parseQuote4(l4[packet.ICMPHeaderLen:], f)
			}
		}
	case proto == packet.ProtoICMPv6 && k.v6:
		if len(l4) >= packet.ICMPHeaderLen {
			switch l4[0] {
			case icmp6Unreachable, icmp6PacketTooBig, icmp6TimeExceeded, icmp6ParamProblem:
				parseQuote6(l4[packet.ICMPHeaderLen:], f)
			}
		}
	}
}

// parseQuote4 reads the IPv4 packet an ICMPv4 error quotes: it must come
// from the VIP (f.key.vip, the error's destination), not be a later
// fragment, and carry at least the ports of a TCP or UDP header. f.key's
// addresses are those of the error on entry; on success the quoted flow
// replaces them.
func parseQuote4(q []byte, f *flowInfo) {
	if len(q) < packet.IPv4MinHeaderLen || q[0]>>4 != 4 {
		return
	}
	ip := packet.IPv4(q)
	hl := ip.HeaderLen()
	if hl < packet.IPv4MinHeaderLen || len(q) < hl+packet.ICMPQuotedL4Len ||
		ip.FlagsFrag()&ipv4FragOffsetMask != 0 || ip.Src() != [4]byte(f.key.vip[12:]) {
		return
	}
	quoted(f, ip.Protocol(), q[16:20], q[hl:])
}

// parseQuote6 is parseQuote4 for an ICMPv6 error; the quoted packet must
// have TCP or UDP right after its fixed header.
func parseQuote6(q []byte, f *flowInfo) {
	if len(q) < packet.IPv6HeaderLen+packet.ICMPQuotedL4Len || q[0]>>4 != 6 {
		return
	}
	ip := packet.IPv6(q)
	if ip.Src() != f.key.vip {
		return
	}
	quoted(f, ip.NextHeader(), q[24:40], q[packet.IPv6HeaderLen:])
}

// quoted sets f to the flow of a quoted packet the VIP sent to dst with
// protocol proto and L4 header l4 (at least 8 bytes).
func quoted(f *flowInfo, proto uint8, dst, l4 []byte) {
	k := &f.key
	switch proto {
	case packet.ProtoTCP:
		f.class = classTCP
	case packet.ProtoUDP:
		f.class = classUDP
	default:
		return
	}
	if len(dst) == 4 {
		putMapped(&k.client, dst)
	} else {
		copy(k.client[:], dst)
	}
	k.proto = proto
	k.vport, k.cport = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
	f.icmp = true
}

// putMapped stores the IPv4 address a (4 bytes) in IPv4-mapped form.
func putMapped(dst *[16]byte, a []byte) {
	*dst = [16]byte{10: 0xff, 11: 0xff}
	copy(dst[12:], a)
}
