package encap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/sluicelb/sluice/internal/fielderr"
)

// Mode is the encapsulation used to reach a backend.
type Mode uint8

const (
	// GUE is Generic UDP Encapsulation, variant 0 (draft-ietf-intarea-gue),
	// optionally carrying the Sluice hop list as private data.
	GUE Mode = iota + 1
	// IPIP is plain IP-in-IP chosen by the outer family: for an IPv4 outer
	// header protocol 4 (IPv4 inner, RFC 2003) or 41 (IPv6 inner, 6in4); for
	// an IPv6 outer header next header 41 (IP6IP6, RFC 2473) or 4 (4in6).
	IPIP
)

// String returns "gue", "ipip" or "mode(N)".
func (m Mode) String() string {
	switch m {
	case GUE:
		return "gue"
	case IPIP:
		return "ipip"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// DefaultGUEPort is the GUE destination UDP port used when Tunnel.Port is 0.
const DefaultGUEPort = 6080

// DefaultTTL is the outer TTL / hop limit used when Tunnel.TTL is 0.
const DefaultTTL = 64

// Tunnel describes how packets reach one backend; it is compiled once per
// backend at config time into a Template.
type Tunnel struct {
	Mode           Mode
	SrcMAC, DstMAC [6]byte // outer Ethernet (next hop resolved by the caller)
	// VLAN is 0 for an untagged frame; otherwise one 802.1Q tag with this
	// TCI (PCP, DEI and VID) is written.
	VLAN     uint16
	Src, Dst netip.Addr // outer addresses, same family, no IPv4-mapped IPv6
	// Port is the GUE destination UDP port (0 = DefaultGUEPort). Ignored for
	// IPIP.
	Port uint16
	TTL  uint8 // outer TTL / hop limit, 0 = DefaultTTL
	// UDPChecksum makes an IPv4 outer GUE packet carry a computed UDP
	// checksum. By default it is zero, which is legal for UDP over IPv4.
	// Ignored for IPv6 outer (see ZeroUDP6Checksum) and for IPIP.
	UDPChecksum bool
	// ZeroUDP6Checksum makes an IPv6 outer GUE packet carry a zero UDP
	// checksum (RFC 6935, RFC 6936; the receiver must allow it, e.g. Linux
	// fou "udp6zerocsumrx"). Without it the checksum is always computed.
	// Ignored for IPv4 outer and for IPIP.
	ZeroUDP6Checksum bool
}

// ErrTunnel is matched (errors.Is) by every *TunnelError Compile returns.
var ErrTunnel = errors.New("encap: invalid tunnel")

// TunnelError is a validation error from Compile (fielderr.Error, matching
// ErrTunnel). Its path is "tunnel." and the Tunnel field, so that the
// config layer can prefix the path of the backend (e.g.
// "vips[0].backends[2].tunnel.Dst").
type TunnelError = fielderr.Error

func tunnelErr(field, value, reason string) *TunnelError {
	return &fielderr.Error{Path: "tunnel." + field, Value: value, Reason: reason, Err: ErrTunnel}
}

// Wire constants.
const (
	ethLen      = 14
	vlanLen     = 4
	ip4Len      = 20
	ip6Len      = 40
	udpLen      = 8
	gueBaseLen  = 4
	hopsHdrLen  = 4 // private data type, next-hop index, hop count
	encapHops   = 2 // Encap always writes [primary, secondary]
	maxOverhead = ethLen + vlanLen + ip6Len + udpLen + gueBaseLen + hopsHdrLen + encapHops*16

	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100

	protoIPv4 = 4  // IPPROTO_IPIP
	protoIPv6 = 41 // IPPROTO_IPV6
	protoUDP  = 17

	ip4FlagDF = 0x4000

	// srcPortBase is the start of the range the outer UDP source port is
	// drawn from (49152..65535, the IANA dynamic range).
	srcPortBase = 0xc000
	// hashMul is 2^64 / golden ratio (Fibonacci hashing): the high bits of
	// hash*hashMul depend on every bit of hash.
	hashMul = 0x9e3779b97f4a7c15
)

// Template is a compiled Tunnel: a pre-built header image per shape (with and
// without hop list) and the partial checksums over its constant words.
//
// A Template is immutable after Compile and safe for concurrent use by any
// number of workers. A config change compiles a new Template; it never
// mutates one that workers may hold.
type Template struct {
	mode   Mode
	v6     bool
	csum   bool  // GUE: compute the outer UDP checksum
	l2Len  uint8 // 14 or 18
	ipLen  uint8 // 20 or 40
	alen   uint8 // outer address length, 4 or 16
	src    netip.Addr
	dst    netip.Addr
	dstRaw [16]byte // dst in wire form (first alen bytes)
	dstSum uint16   // one's complement sum of dstRaw[:alen]
	port   uint16

	// img[0] has no hop list; img[1] (GUE only) carries [dst, secondary]
	// with the secondary address left zero.
	img [2]image
}

// image is one pre-built outer header. Fields written per packet are zero
// in b and excluded from the sums.
type image struct {
	n uint8 // header length: Ethernet through GUE (+ hop list)
	// ipSum: IPv4 outer only, the sum of the IPv4 header words with TOS,
	// total length, checksum and (IPIP) protocol zero.
	ipSum uint32
	// udpSum: GUE only, the sum of the UDP pseudo-header words except the
	// UDP length, plus the UDP/GUE/hop list words except source port,
	// length, checksum, GUE Proto and the secondary hop.
	udpSum uint32
	b      [maxOverhead]byte
}

// Compile validates t and builds its Template.
func Compile(t Tunnel) (*Template, error) {
	if t.Mode != GUE && t.Mode != IPIP {
		return nil, tunnelErr("Mode", t.Mode.String(), "must be GUE or IPIP")
	}
	src, dst := t.Src.WithZone(""), t.Dst.WithZone("")
	for _, a := range []struct {
		field string
		addr  netip.Addr
	}{{"Src", src}, {"Dst", dst}} {
		switch {
		case !a.addr.IsValid():
			return nil, tunnelErr(a.field, "invalid IP", "address required")
		case a.addr.IsUnspecified():
			return nil, tunnelErr(a.field, a.addr.String(), "zero address")
		case a.addr.Is4In6():
			return nil, tunnelErr(a.field, a.addr.String(), "IPv4-mapped IPv6 address; write the IPv4 form")
		case a.addr.IsMulticast():
			return nil, tunnelErr(a.field, a.addr.String(), "multicast address")
		}
	}
	if src.Is4() != dst.Is4() {
		return nil, tunnelErr("Dst", dst.String(), "address family differs from Src "+src.String())
	}
	v6 := dst.Is6()
	if t.Mode == GUE && v6 && t.UDPChecksum && t.ZeroUDP6Checksum {
		return nil, tunnelErr("ZeroUDP6Checksum", "true", "contradicts UDPChecksum=true")
	}

	tp := &Template{
		mode: t.Mode,
		v6:   v6,
		csum: t.Mode == GUE && (v6 && !t.ZeroUDP6Checksum || !v6 && t.UDPChecksum),
		src:  src,
		dst:  dst,
		port: t.Port,
	}
	if tp.port == 0 {
		tp.port = DefaultGUEPort
	}
	ttl := t.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	tp.l2Len = ethLen
	if t.VLAN != 0 {
		tp.l2Len += vlanLen
	}
	tp.ipLen, tp.alen = ip4Len, 4
	if v6 {
		tp.ipLen, tp.alen = ip6Len, 16
	}
	srcRaw := addrBytes(src)
	tp.dstRaw = addrBytes(dst)
	tp.dstSum = sum16(tp.dstRaw[:tp.alen])

	shapes := 1
	if t.Mode == GUE {
		shapes = 2
	}
	for hops := 0; hops < shapes; hops++ {
		img := &tp.img[hops]
		b := img.b[:]
		// Ethernet, optional 802.1Q tag.
		copy(b[0:6], t.DstMAC[:])
		copy(b[6:12], t.SrcMAC[:])
		o := 12
		if t.VLAN != 0 {
			binary.BigEndian.PutUint16(b[o:], etherTypeVLAN)
			binary.BigEndian.PutUint16(b[o+2:], t.VLAN)
			o += vlanLen
		}
		if v6 {
			binary.BigEndian.PutUint16(b[o:], etherTypeIPv6)
		} else {
			binary.BigEndian.PutUint16(b[o:], etherTypeIPv4)
		}
		o += 2
		// IP header; see encap.go for the fields written per packet.
		ip := b[o : o+int(tp.ipLen)]
		var proto uint8 // IPIP: written per packet
		if t.Mode == GUE {
			proto = protoUDP
		}
		if v6 {
			ip[0] = 6 << 4
			ip[6] = proto
			ip[7] = ttl
			copy(ip[8:24], srcRaw[:16])
			copy(ip[24:40], tp.dstRaw[:16])
		} else {
			ip[0] = 4<<4 | 5
			binary.BigEndian.PutUint16(ip[6:], ip4FlagDF) // DF, ID 0
			ip[8] = ttl
			ip[9] = proto
			copy(ip[12:16], srcRaw[:4])
			copy(ip[16:20], tp.dstRaw[:4])
			img.ipSum = uint32(sum16(ip))
		}
		o += int(tp.ipLen)
		if t.Mode == IPIP {
			img.n = uint8(o)
			continue
		}
		// UDP, GUE, hop list.
		udp := o
		binary.BigEndian.PutUint16(b[udp+2:], tp.port)
		o += udpLen
		if hops == 1 {
			hl := hopsHdrLen + encapHops*int(tp.alen)
			b[o] = uint8(hl / 4) // version 0, C 0, Hlen in 32-bit words
			o += gueBaseLen
			binary.BigEndian.PutUint16(b[o:], PrivateTypeHops)
			b[o+2] = 1 // next hop: hop 0 is the primary this packet goes to
			b[o+3] = encapHops
			copy(b[o+hopsHdrLen:], tp.dstRaw[:tp.alen])
			o += hl
		} else {
			o += gueBaseLen
		}
		img.n = uint8(o)
		// Pseudo-header: source, destination, protocol (the length is
		// added per packet), then the constant UDP/GUE words.
		img.udpSum = uint32(sum16(srcRaw[:tp.alen])) + uint32(tp.dstSum) + protoUDP +
			uint32(sum16(b[udp:o]))
	}
	return tp, nil
}

// addrBytes returns a in wire form: 4 bytes for IPv4, 16 for IPv6.
func addrBytes(a netip.Addr) (r [16]byte) {
	if a.Is4() {
		v := a.As4()
		copy(r[:], v[:])
		return r
	}
	return a.As16()
}

// Mode returns the encapsulation mode.
func (t *Template) Mode() Mode { return t.mode }

// Src returns the outer source address.
func (t *Template) Src() netip.Addr { return t.src }

// Dst returns the outer destination address (the backend).
func (t *Template) Dst() netip.Addr { return t.dst }

// Dst16 returns the outer destination address in 16-byte form, IPv4-mapped
// for IPv4 (netip.Addr.As16), as flow keys and HopList store addresses.
func (t *Template) Dst16() [16]byte { return t.dst.As16() }

// Is6 reports whether the outer header is IPv6.
func (t *Template) Is6() bool { return t.v6 }

// Port returns the GUE destination UDP port (meaningless for IPIP).
func (t *Template) Port() uint16 { return t.port }

// UDPChecksum reports whether Encap computes the outer UDP checksum.
func (t *Template) UDPChecksum() bool { return t.csum }

// Overhead returns the number of bytes of outer headers Encap writes in front
// of the inner IP packet: Ethernet (+802.1Q) and the outer IP header, and for
// GUE the UDP and GUE headers, plus the hop list when withHops. withHops is
// ignored for IPIP.
//
//	GUE,  IPv4 outer: 46 (58 with hops); IPv6 outer: 66 (102 with hops)
//	IPIP, IPv4 outer: 34;                 IPv6 outer: 54
//	+4 for a VLAN tag
func (t *Template) Overhead(withHops bool) int {
	if withHops && t.mode == GUE {
		return int(t.img[1].n)
	}
	return int(t.img[0].n)
}

// L3Overhead returns how much Encap grows the packet at layer 3:
// Overhead minus the outer Ethernet header and tag. An inner packet fits the
// link MTU when its length + L3Overhead <= MTU.
func (t *Template) L3Overhead(withHops bool) int {
	return t.Overhead(withHops) - int(t.l2Len)
}

// Headroom returns the number of bytes that must be free before the frame
// when the inner IP header starts l3Off bytes into it (the received Ethernet
// header and tags are overwritten): max(Overhead(withHops) - l3Off, 0).
func (t *Template) Headroom(l3Off int, withHops bool) int {
	return max(t.Overhead(withHops)-l3Off, 0)
}

// Image is a Template's outer headers without hop list, as a program outside
// Go applies them (the XDP offload, link/afxdp): Hdr[:Len] is the header
// image with the per-packet fields zero, and the sums are those Encap starts
// from.
type Image struct {
	Hdr    [maxOverhead]byte
	Len    int    // Ethernet (+802.1Q) through GUE
	L2Len  int    // 14, or 18 with an 802.1Q tag
	IPSum  uint32 // IPv4 outer: sum of the constant header words (with TOS, length, checksum and IPIP protocol zero)
	UDPSum uint32 // GUE: sum of the constant pseudo-header and UDP/GUE words
}

// Image returns the template's image without hop list.
func (t *Template) Image() Image {
	img := &t.img[0]
	return Image{Hdr: img.b, Len: int(img.n), L2Len: int(t.l2Len), IPSum: img.ipSum, UDPSum: img.udpSum}
}
