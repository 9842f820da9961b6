package l2

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// The frames the responder reads and writes. Layouts (no VLAN tag; the
// segment the VIPs are announced on is untagged):
//
//	ARP over Ethernet (RFC 826), 14 + 28 bytes:
//	0  dst MAC | 6 src MAC | 12 0x0806
//	14 htype 1 | 16 ptype 0x0800 | 18 hlen 6 | 19 plen 4 | 20 op
//	22 sender MAC | 28 sender IP | 32 target MAC | 38 target IP
//
//	IPv6 neighbour solicitation / advertisement (RFC 4861), 14 + 40 + 32:
//	0  dst MAC | 6 src MAC | 12 0x86dd
//	14 IPv6: version 6, payload length @18, next header 58 @20,
//	   hop limit 255 @21, source @22, destination @38
//	54 ICMPv6: type @54 (135 NS, 136 NA), code 0 @55, checksum @56,
//	   NA flags @58 (R 0x80, S 0x40, O 0x20), target @62,
//	   option @78: type (1 source / 2 target link-layer address), length 1
//	   (8 bytes), MAC
const (
	ethLen      = 14
	arpLen      = 28
	ip6Len      = 40
	ndLen       = 24 // ICMPv6 header, flags or reserved, target
	ndOptLen    = 8
	etherARP    = 0x0806
	etherIPv6   = 0x86dd
	arpRequest  = 1
	arpReply    = 2
	icmp6       = 58
	typeNS      = 135
	typeNA      = 136
	naRouter    = 0x80
	naSolicited = 0x40
	naOverride  = 0x20
	optSrcLL    = 1
	optTgtLL    = 2
)

var (
	broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	allNodes     = netip.MustParseAddr("ff02::1")
)

// multicastMAC is the Ethernet address of IPv6 multicast group a (RFC 2464).
func multicastMAC(a netip.Addr) net.HardwareAddr {
	b := a.As16()
	return net.HardwareAddr{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

// SolicitedNode is the solicited-node multicast group of a (ff02::1:ffXX:XXXX),
// where neighbour solicitations for a are sent.
func SolicitedNode(a netip.Addr) netip.Addr {
	b := a.As16()
	return netip.AddrFrom16([16]byte{0xff, 0x02, 10: 0, 11: 1, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]})
}

func ethernet(dst, src net.HardwareAddr, typ uint16, n int) []byte {
	f := make([]byte, ethLen, ethLen+n)
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], typ)
	return f
}

func arpFrame(op uint16, ethDst, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	f := ethernet(ethDst, sha, etherARP, arpLen)
	f = binary.BigEndian.AppendUint16(f, 1)      // Ethernet
	f = binary.BigEndian.AppendUint16(f, 0x0800) // IPv4
	f = append(f, 6, 4)
	f = binary.BigEndian.AppendUint16(f, op)
	f = append(f, sha...)
	s := spa.As4()
	f = append(f, s[:]...)
	if tha == nil {
		tha = make(net.HardwareAddr, 6)
	}
	f = append(f, tha...)
	t := tpa.As4()
	return append(f, t[:]...)
}

// GratuitousARP is the announcement of vip at mac (RFC 5227 §3): a
// broadcast ARP request whose sender and target address are both vip.
// Neighbours that hold an entry for vip replace its MAC (Linux does so
// even within neigh locktime for a gratuitous request).
func GratuitousARP(mac net.HardwareAddr, vip netip.Addr) []byte {
	return arpFrame(arpRequest, broadcastMAC, mac, vip, nil, vip)
}

// ARPReply answers the request of (reqMAC, reqIP) for vip: vip is at mac.
func ARPReply(mac net.HardwareAddr, vip netip.Addr, reqMAC net.HardwareAddr, reqIP netip.Addr) []byte {
	return arpFrame(arpReply, reqMAC, mac, vip, reqMAC, reqIP)
}

// ARPRequest is a parsed ARP request.
type ARPRequest struct {
	SenderMAC net.HardwareAddr
	SenderIP  netip.Addr // 0.0.0.0 for a probe (RFC 5227)
	TargetIP  netip.Addr
}

// ParseARPRequest parses an Ethernet frame holding an IPv4-over-Ethernet
// ARP request; ok is false for anything else.
func ParseARPRequest(f []byte) (r ARPRequest, ok bool) {
	if len(f) < ethLen+arpLen || binary.BigEndian.Uint16(f[12:14]) != etherARP {
		return r, false
	}
	a := f[ethLen:]
	if binary.BigEndian.Uint16(a[0:2]) != 1 || binary.BigEndian.Uint16(a[2:4]) != 0x0800 || a[4] != 6 || a[5] != 4 ||
		binary.BigEndian.Uint16(a[6:8]) != arpRequest {
		return r, false
	}
	r.SenderMAC = net.HardwareAddr(append([]byte(nil), a[8:14]...))
	r.SenderIP = netip.AddrFrom4([4]byte(a[14:18]))
	r.TargetIP = netip.AddrFrom4([4]byte(a[24:28]))
	return r, true
}

// neighborAdvert builds an NA for target at mac from src to dst.
func neighborAdvert(ethDst, mac net.HardwareAddr, src, dst, target netip.Addr, flags byte) []byte {
	f := ethernet(ethDst, mac, etherIPv6, ip6Len+ndLen+ndOptLen)
	f = append(f, 0x60, 0, 0, 0)
	f = binary.BigEndian.AppendUint16(f, ndLen+ndOptLen)
	f = append(f, icmp6, 255)
	s, d, t := src.As16(), dst.As16(), target.As16()
	f = append(f, s[:]...)
	f = append(f, d[:]...)
	icmp := len(f)
	f = append(f, typeNA, 0, 0, 0, flags, 0, 0, 0)
	f = append(f, t[:]...)
	f = append(f, optTgtLL, 1)
	f = append(f, mac...)
	binary.BigEndian.PutUint16(f[icmp+2:], icmp6Checksum(s, d, f[icmp:]))
	return f
}

// UnsolicitedNA announces that vip is at mac (RFC 4861 §7.2.6): to all
// nodes, from src (an address of the sending interface, its link-local
// address), override flag set so that neighbours replace the MAC of an
// entry they hold.
func UnsolicitedNA(mac net.HardwareAddr, src, vip netip.Addr) []byte {
	return neighborAdvert(multicastMAC(allNodes), mac, src, allNodes, vip, naOverride)
}

// SolicitedNA answers solicitation ns for vip: solicited and override
// flags set, to the solicitation's source (to all nodes when that is the
// unspecified address, without the solicited flag: RFC 4861 §7.2.4).
func SolicitedNA(mac net.HardwareAddr, src netip.Addr, ns NS) []byte {
	if ns.Source.IsUnspecified() {
		return neighborAdvert(multicastMAC(allNodes), mac, src, allNodes, ns.Target, naOverride)
	}
	return neighborAdvert(ns.SenderMAC, mac, src, ns.Source, ns.Target, naSolicited|naOverride)
}

// NS is a parsed neighbour solicitation.
type NS struct {
	SenderMAC net.HardwareAddr // the frame's source
	Source    netip.Addr       // the IPv6 source (:: for duplicate address detection)
	Target    netip.Addr
}

// ParseNS parses an Ethernet frame holding an IPv6 neighbour solicitation
// (no extension headers, hop limit 255, code 0, a valid checksum, RFC 4861
// §7.1.1); ok is false for anything else.
func ParseNS(f []byte) (ns NS, ok bool) {
	if len(f) < ethLen+ip6Len+ndLen || binary.BigEndian.Uint16(f[12:14]) != etherIPv6 {
		return ns, false
	}
	ip := f[ethLen:]
	if ip[0]>>4 != 6 || ip[6] != icmp6 || ip[7] != 255 {
		return ns, false
	}
	plen := int(binary.BigEndian.Uint16(ip[4:6]))
	if plen < ndLen || ip6Len+plen > len(ip) {
		return ns, false
	}
	m := ip[ip6Len : ip6Len+plen]
	if m[0] != typeNS || m[1] != 0 {
		return ns, false
	}
	src, dst := [16]byte(ip[8:24]), [16]byte(ip[24:40])
	if icmp6Checksum(src, dst, m) != 0 {
		return ns, false
	}
	ns.SenderMAC = net.HardwareAddr(append([]byte(nil), f[6:12]...))
	ns.Source = netip.AddrFrom16(src)
	ns.Target = netip.AddrFrom16([16]byte(m[8:24]))
	if ns.Target.IsMulticast() {
		return ns, false
	}
	return ns, true
}

// icmp6Checksum is the ICMPv6 checksum of msg with the IPv6 pseudo-header
// (RFC 8200 §8.1). Computed over a message whose checksum field is set, it
// is 0 for a correct one.
func icmp6Checksum(src, dst [16]byte, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	sum += uint32(len(msg)) + icmp6
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
