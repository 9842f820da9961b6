package encap

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"net/netip"

	"github.com/sluicelb/sluice/internal/fielderr"
)

// Full-NAT (DESIGN §3.3, §3.8) rewrites a packet instead of encapsulating it:
//
//	client -> node   C:cp   -> VIP:vp    becomes   S:sp   -> B:bp    node -> backend
//	backend -> node  B:bp   -> S:sp      becomes   VIP:vp -> C:cp    node -> client
//
// S is one of the node's SNAT addresses and sp a port the worker allocated
// for the flow (internal/nat). Only the addresses and ports change, with the
// IPv4 header checksum and the TCP or UDP checksum patched incrementally
// (RFC 1624); the TTL / hop limit is left alone (Sluice is an L4 load
// balancer, not a router hop), and so are lengths, DSCP/ECN, the IPv4 ID and
// every byte of payload. The Ethernet header is replaced with the one toward
// the next hop.
//
// The incremental update works in swapped byte order: RFC 1071 §2(B) lets
// the one's complement sum be computed on little-endian loads as long as
// every operand, the checksum field included, is read the same way, which
// saves the byte swaps of the addresses and ports (see checksum.go).

// L2 is the Ethernet header a NAT rewrite writes in front of the IP packet:
// toward the next hop that leads to the new destination.
type L2 struct {
	SrcMAC, DstMAC [6]byte
	// VLAN is 0 for an untagged frame; otherwise one 802.1Q tag with this
	// TCI (PCP, DEI and VID) is written.
	VLAN uint16
}

// L2Template is a compiled L2: the Ethernet header image with the
// EtherType left to the packet's family. It is immutable and safe for
// concurrent use.
type L2Template struct {
	n   uint8 // 14 or 18
	img [l2Max]byte
	// fam[0] is img with the IPv4 EtherType, fam[1] with the IPv6 one.
	fam [2][l2Max]byte
}

const l2Max = ethLen + vlanLen

// CompileL2 builds the header image of h.
func CompileL2(h L2) *L2Template {
	t := &L2Template{n: ethLen}
	copy(t.img[0:6], h.DstMAC[:])
	copy(t.img[6:12], h.SrcMAC[:])
	if h.VLAN != 0 {
		binary.BigEndian.PutUint16(t.img[12:], etherTypeVLAN)
		binary.BigEndian.PutUint16(t.img[14:], h.VLAN)
		t.n += vlanLen
	}
	t.fam[0], t.fam[1] = t.img, t.img
	binary.BigEndian.PutUint16(t.fam[0][t.n-2:], etherTypeIPv4)
	binary.BigEndian.PutUint16(t.fam[1][t.n-2:], etherTypeIPv6)
	return t
}

// Len returns the length of the Ethernet header (and tag) the template
// writes: the headroom a rewrite needs in front of the IP header.
func (h *L2Template) Len() int { return int(h.n) }

// write puts the header in front of l3 with the EtherType of the family;
// the caller has checked l3 >= h.n. Two or three overlapping 8-byte stores
// instead of copy's memmove call (see copyHeader).
func (h *L2Template) write(buf []byte, l3 int, v6 bool) int {
	n := int(h.n)
	start := l3 - n
	d := buf[start:l3:l3]
	img := &h.fam[0]
	if v6 {
		img = &h.fam[1]
	}
	le := binary.LittleEndian
	le.PutUint64(d[0:], le.Uint64(img[0:]))
	le.PutUint64(d[n-8:], le.Uint64(img[n-8:]))
	if n > 16 {
		le.PutUint64(d[8:], le.Uint64(img[8:]))
	}
	return start
}

// NATTuple is what a NAT rewrite makes of a packet's addresses and ports.
// Addresses are 16 bytes, IPv4 in IPv4-mapped form (::ffff:a.b.c.d) as
// netip.Addr.As16, flow.Key and packet.Tuple store them.
type NATTuple struct {
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
}

// MakeNATTuple builds a NATTuple from netip values; for tests and the
// control plane.
func MakeNATTuple(src, dst netip.AddrPort) NATTuple {
	return NATTuple{Src: src.Addr().As16(), Dst: dst.Addr().As16(), SrcPort: src.Port(), DstPort: dst.Port()}
}

// NAT describes the full-NAT rewrite toward one backend: the packets of a
// flow leave from SNAT (with a per-flow port) to Backend, through the next
// hop L2. It is compiled once per backend, like a Tunnel.
type NAT struct {
	L2
	SNAT    netip.Addr     // the node's SNAT address: the new source
	Backend netip.AddrPort // the new destination
}

// NATTemplate is a compiled NAT: the Ethernet header, the new addresses in
// wire order and their partial checksum. Immutable, safe for concurrent use.
type NATTemplate struct {
	l2      L2Template
	v6      bool
	addrSum uint16   // one's complement sum of addr (swapped byte order)
	dport   uint16   // backend port in wire order, as a little-endian load sees it
	addr    [32]byte // src || dst: 4+4 bytes (IPv4) or 16+16 (IPv6)
	snat    netip.Addr
	backend netip.AddrPort
}

// ErrNAT is matched (errors.Is) by every error CompileNAT returns.
var ErrNAT = errors.New("encap: invalid NAT")

// natErr is a CompileNAT error: a fielderr.Error whose path is "nat." and
// the NAT field, so that the config layer can prefix the backend's path.
func natErr(field, value, reason string) error {
	return &fielderr.Error{Path: "nat." + field, Value: value, Reason: reason, Err: ErrNAT}
}

// CompileNAT validates n and builds its template. Errors are
// *fielderr.Error matching ErrNAT and naming the NAT field.
func CompileNAT(n NAT) (*NATTemplate, error) {
	src, dst := n.SNAT.WithZone(""), n.Backend.Addr().WithZone("")
	for _, a := range []struct {
		field string
		addr  netip.Addr
	}{{"SNAT", src}, {"Backend", dst}} {
		switch {
		case !a.addr.IsValid():
			return nil, natErr(a.field, "invalid IP", "address required")
		case a.addr.IsUnspecified():
			return nil, natErr(a.field, a.addr.String(), "zero address")
		case a.addr.Is4In6():
			return nil, natErr(a.field, a.addr.String(), "IPv4-mapped IPv6 address; write the IPv4 form")
		case a.addr.IsMulticast():
			return nil, natErr(a.field, a.addr.String(), "multicast address")
		}
	}
	if src.Is4() != dst.Is4() {
		return nil, natErr("Backend", dst.String(), "address family differs from SNAT "+src.String())
	}
	if n.Backend.Port() == 0 {
		return nil, natErr("Backend", n.Backend.String(), "has port 0")
	}
	t := &NATTemplate{l2: *CompileL2(n.L2), v6: dst.Is6(), snat: src, backend: netip.AddrPortFrom(dst, n.Backend.Port())}
	s, d := addrBytes(src), addrBytes(dst)
	al := 4
	if t.v6 {
		al = 16
	}
	copy(t.addr[:al], s[:al])
	copy(t.addr[al:], d[:al])
	t.addrSum = fold64(addrSumLE(t.addr[:2*al]))
	t.dport = bits.ReverseBytes16(n.Backend.Port())
	return t, nil
}

// SNAT returns the new source address.
func (t *NATTemplate) SNAT() netip.Addr { return t.snat }

// Backend returns the new destination.
func (t *NATTemplate) Backend() netip.AddrPort { return t.backend }

// Is6 reports whether the template rewrites IPv6 packets.
func (t *NATTemplate) Is6() bool { return t.v6 }

// Headroom returns how many bytes must be free before the frame when its IP
// header starts l3Off bytes into it: max(L2 length - l3Off, 0) (a VLAN tag
// the received frame did not have).
func (t *NATTemplate) Headroom(l3Off int) int { return max(t.l2.Len()-l3Off, 0) }

// Forward rewrites a packet of a flow the node forwards to the backend: the
// source becomes SNAT:sport, the destination Backend, and the Ethernet
// header the template's. The IP packet is buf[l3:end] (end is the end of
// the IP packet, e.g. packet.Parsed.L3End, not of a padded frame), its TCP or
// UDP header at l4 (proto 6 or 17); l4 == 0 marks a later fragment, whose
// addresses alone are rewritten (its ports and L4 checksum travel in the
// first fragment). Forward returns the start of the frame, l3 - L2 length;
// the frame is buf[start:end].
//
// Checksums: the IPv4 header checksum and the TCP or UDP checksum are
// updated incrementally, so a checksum that was wrong stays exactly as
// wrong. A UDP checksum of 0 (none, legal over IPv4) stays 0; a UDP checksum
// that comes out 0 is sent as 0xffff (RFC 768).
//
// Forward returns -1 and writes nothing if the packet's version is not the
// template's, the headers do not fit in buf[l3:end], proto is not TCP or
// UDP, or there is no room for the Ethernet header before l3. It does not
// allocate.
func (t *NATTemplate) Forward(buf []byte, l3, l4, end int, proto uint8, sport uint16) int {
	ports := uint32(bits.ReverseBytes16(sport)) | uint32(t.dport)<<16
	if t.v6 || l4 == 0 {
		if !natRewrite(buf, l3, l4, end, proto, int(t.l2.n), t.v6, &t.addr, t.addrSum, ports) {
			return -1
		}
		return t.l2.write(buf, l3, t.v6)
	}
	// IPv4 TCP or UDP, the common hit, written out: natRewrite's checks and
	// arithmetic with the family and the ports known.
	csOff, l4Min := 16, tcpLen
	if proto == protoUDP {
		csOff, l4Min = 6, udpLen
	} else if proto != protoTCP {
		return -1
	}
	n := int(t.l2.n)
	if l3 < n || l4 < l3+ip4Len || end > len(buf) || l4 > end-l4Min {
		return -1
	}
	ip := (*[ip4Len]byte)(buf[l3:])
	if hl := int(ip[0] & 0x0f); ip[0]>>4 != 4 || hl < 5 || l4 < l3+4*hl {
		return -1
	}
	l4b := buf[l4:end]
	le := binary.LittleEndian
	oldAddr := uint64(^le32(ip[12:])) + uint64(^le32(ip[16:]))
	le.PutUint64(ip[12:], le.Uint64(t.addr[0:]))
	hc := le.Uint16(ip[10:])
	le.PutUint16(ip[10:], ^fold64(uint64(^hc)+oldAddr+uint64(t.addrSum)))
	oldPorts := ^le32(l4b)
	le.PutUint32(l4b, ports)
	if c := le.Uint16(l4b[csOff:]); c != 0 || proto == protoTCP {
		c = ^fold64(uint64(^c) + oldAddr + uint64(oldPorts) + uint64(t.addrSum) + uint64(ports))
		if c == 0 && proto == protoUDP {
			c = 0xffff
		}
		le.PutUint16(l4b[csOff:], c)
	}
	// The Ethernet header, inline (write is not inlined).
	start, img := l3-n, &t.l2.fam[0]
	e := buf[start:l3:l3]
	le.PutUint64(e[0:], le.Uint64(img[0:]))
	le.PutUint64(e[n-8:], le.Uint64(img[n-8:]))
	if n > 16 {
		le.PutUint64(e[8:], le.Uint64(img[8:]))
	}
	return start
}

// NAT rewrites the addresses and ports of the packet buf[l3:end] to to and
// writes the Ethernet header h in front of it. It is the general form of
// NATTemplate.Forward, for the return direction (to = VIP:vp -> C:cp, from
// the flow) where nothing is known per backend; the arguments, checksums
// and failures are Forward's. The family is the packet's (version nibble);
// to's addresses must be of that family (IPv4-mapped for IPv4).
func (h *L2Template) NAT(buf []byte, l3, l4, end int, proto uint8, to *NATTuple) int {
	// TCP or UDP, the common case (every reply of a flow), written out
	// here; later fragments and anything odd go to natGeneral.
	if l4 == 0 || l3 < 0 || l3 >= end || end > len(buf) {
		return h.natGeneral(buf, l3, l4, end, proto, to)
	}
	csOff, l4Min := 16, tcpLen
	if proto == protoUDP {
		csOff, l4Min = 6, udpLen
	} else if proto != protoTCP {
		return -1
	}
	v6 := buf[l3]>>4 == 6
	ports := uint32(bits.ReverseBytes16(to.SrcPort)) | uint32(bits.ReverseBytes16(to.DstPort))<<16
	n := int(h.n)
	hl := ip6Len
	if !v6 {
		hl = ip4Len
	}
	if l3 < n || l4 < l3+hl || l4 > end-l4Min {
		return -1
	}
	le := binary.LittleEndian
	var oldAddr, newAddr uint64
	if v6 {
		ip := (*[ip6Len]byte)(buf[l3:])
		s, d := &to.Src, &to.Dst
		oldAddr = uint64(^le32(ip[8:])) + uint64(^le32(ip[12:])) + uint64(^le32(ip[16:])) + uint64(^le32(ip[20:])) +
			uint64(^le32(ip[24:])) + uint64(^le32(ip[28:])) + uint64(^le32(ip[32:])) + uint64(^le32(ip[36:]))
		newAddr = uint64(le32(s[0:])) + uint64(le32(s[4:])) + uint64(le32(s[8:])) + uint64(le32(s[12:])) +
			uint64(le32(d[0:])) + uint64(le32(d[4:])) + uint64(le32(d[8:])) + uint64(le32(d[12:]))
		le.PutUint64(ip[8:], le.Uint64(s[0:]))
		le.PutUint64(ip[16:], le.Uint64(s[8:]))
		le.PutUint64(ip[24:], le.Uint64(d[0:]))
		le.PutUint64(ip[32:], le.Uint64(d[8:]))
	} else {
		ip := (*[ip4Len]byte)(buf[l3:])
		if ihl := int(ip[0] & 0x0f); ip[0]>>4 != 4 || ihl < 5 || l4 < l3+4*ihl {
			return -1
		}
		s, d := le32(to.Src[12:]), le32(to.Dst[12:])
		oldAddr = uint64(^le32(ip[12:])) + uint64(^le32(ip[16:]))
		newAddr = uint64(s) + uint64(d)
		le.PutUint32(ip[12:], s)
		le.PutUint32(ip[16:], d)
		hc := le.Uint16(ip[10:])
		le.PutUint16(ip[10:], ^fold64(uint64(^hc)+oldAddr+newAddr))
	}
	l4b := buf[l4:end]
	oldPorts := ^le32(l4b)
	le.PutUint32(l4b, ports)
	if c := le.Uint16(l4b[csOff:]); c != 0 || proto == protoTCP {
		c = ^fold64(uint64(^c) + oldAddr + uint64(oldPorts) + newAddr + uint64(ports))
		if c == 0 && proto == protoUDP {
			c = 0xffff
		}
		le.PutUint16(l4b[csOff:], c)
	}
	return h.write(buf, l3, v6)
}

// natGeneral is NAT through natRewrite: later fragments (l4 == 0) and
// packets the fast path does not take.
func (h *L2Template) natGeneral(buf []byte, l3, l4, end int, proto uint8, to *NATTuple) int {
	if l3 < 0 || l3 >= end || end > len(buf) {
		return -1
	}
	v6 := buf[l3]>>4 == 6
	ports := uint32(bits.ReverseBytes16(to.SrcPort)) | uint32(bits.ReverseBytes16(to.DstPort))<<16
	var addr [32]byte
	al := 4
	if v6 {
		al = 16
		copy(addr[:16], to.Src[:])
		copy(addr[16:], to.Dst[:])
	} else {
		copy(addr[0:4], to.Src[12:])
		copy(addr[4:8], to.Dst[12:])
	}
	if !natRewrite(buf, l3, l4, end, proto, int(h.n), v6, &addr, fold64(addrSumLE(addr[:2*al])), ports) {
		return -1
	}
	return h.write(buf, l3, v6)
}

// addrSumLE sums b (8 or 32 bytes) as little-endian 32-bit words; fold64
// of it is the one's complement sum in swapped byte order.
func addrSumLE(b []byte) uint64 {
	var s uint64
	for len(b) >= 4 {
		s += uint64(le32(b))
		b = b[4:]
	}
	return s
}

// natRewrite checks the packet buf[l3:end] and rewrites its addresses to
// addr (src || dst, wire form, family v6) whose swapped sum is newSum, and,
// unless l4 == 0, its ports to the little-endian load ports; it patches the
// checksums. l2n is the headroom the caller will need before l3. It writes
// nothing and returns false if anything does not fit.
func natRewrite(buf []byte, l3, l4, end int, proto uint8, l2n int, v6 bool, addr *[32]byte, newSum uint16, ports uint32) bool {
	if l3 < l2n || l3 >= end || end > len(buf) {
		return false
	}
	pkt := buf[l3:end:end]
	le := binary.LittleEndian
	hl := ip4Len
	if v6 {
		hl = ip6Len
	}
	version := uint8(4)
	if v6 {
		version = 6
	}
	if len(pkt) < hl || pkt[0]>>4 != version {
		return false
	}
	if !v6 {
		hl = int(pkt[0]&0x0f) * 4
		if hl < ip4Len || hl > len(pkt) {
			return false
		}
	}
	// Where the L4 checksum is, checked before anything is written.
	var l4b []byte
	csOff := 0
	if l4 != 0 {
		o := l4 - l3
		switch proto {
		case protoTCP:
			csOff = 16
			if o < hl || o > len(pkt)-tcpLen {
				return false
			}
		case protoUDP:
			csOff = 6
			if o < hl || o > len(pkt)-udpLen {
				return false
			}
		default:
			return false
		}
		l4b = pkt[o:]
	}

	// The old words are subtracted by adding their complements: for a
	// 32-bit word w, ^w = 0xffffffff - w ≡ -w modulo 0xffff (0xffffffff =
	// 0xffff * 0x10001), and likewise for 16 bits. One fold at the end.
	var oldAddr uint64 // sum of the complements of the old address words
	if v6 {
		a := (*[ip6Len]byte)(pkt)
		oldAddr = uint64(^le32(a[8:])) + uint64(^le32(a[12:])) + uint64(^le32(a[16:])) + uint64(^le32(a[20:])) +
			uint64(^le32(a[24:])) + uint64(^le32(a[28:])) + uint64(^le32(a[32:])) + uint64(^le32(a[36:]))
		le.PutUint64(a[8:], le.Uint64(addr[0:]))
		le.PutUint64(a[16:], le.Uint64(addr[8:]))
		le.PutUint64(a[24:], le.Uint64(addr[16:]))
		le.PutUint64(a[32:], le.Uint64(addr[24:]))
	} else {
		a := (*[ip4Len]byte)(pkt)
		oldAddr = uint64(^le32(a[12:])) + uint64(^le32(a[16:]))
		le.PutUint64(a[12:], le.Uint64(addr[0:]))
		hc := le.Uint16(a[10:])
		le.PutUint16(a[10:], ^fold64(uint64(^hc)+oldAddr+uint64(newSum)))
	}
	if l4b == nil {
		return true
	}
	oldPorts := ^le32(l4b)
	le.PutUint32(l4b, ports)
	c := le.Uint16(l4b[csOff:])
	if proto == protoUDP && c == 0 {
		// No checksum (IPv4); over IPv6 a zero checksum is invalid and
		// stays so: the receiver drops it either way.
		return true
	}
	c = ^fold64(uint64(^c) + oldAddr + uint64(oldPorts) + uint64(newSum) + uint64(ports))
	if c == 0 && proto == protoUDP {
		c = 0xffff
	}
	le.PutUint16(l4b[csOff:], c)
	return true
}

const (
	protoTCP = 6
	tcpLen   = 20
)

// NATImage is a NATTemplate as a program outside Go applies it (the XDP
// offload, link/afxdp): the Ethernet header with the family's EtherType,
// the new source then destination address in wire form, the backend's
// port.
type NATImage struct {
	L2      [l2Max]byte
	L2Len   int
	Addr    [32]byte // source (SNAT) then destination (backend): 4+4 or 16+16 bytes
	AddrLen int      // 4 or 16
	Port    uint16   // the backend's port
	V6      bool
}

// Image returns the template's image.
func (t *NATTemplate) Image() NATImage {
	img := NATImage{L2: t.l2.fam[0], L2Len: int(t.l2.n), Addr: t.addr, AddrLen: 4, Port: t.backend.Port(), V6: t.v6}
	if t.v6 {
		img.L2, img.AddrLen = t.l2.fam[1], 16
	}
	return img
}
