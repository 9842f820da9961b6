package sim

import (
	"encoding/binary"
	"net/netip"
)

// Clients maps a flow index to a distinct client address and port: flow i
// comes from host (i >> 14) of the client prefix, port 1024 + (i & 0x3fff).
type Clients struct {
	Prefix netip.Prefix // e.g. 198.18.128.0/17 or 2001:db8:c::/64
}

// FlowSrc returns the source of flow i.
func (c Clients) FlowSrc(i uint32) netip.AddrPort {
	a := c.Prefix.Masked().Addr().As16()
	host := binary.BigEndian.Uint32(a[12:]) + 1 + i>>14
	binary.BigEndian.PutUint32(a[12:], host)
	addr := netip.AddrFrom16(a)
	if c.Prefix.Addr().Is4() {
		addr = addr.Unmap()
	}
	return netip.AddrPortFrom(addr, uint16(1024+i&0x3fff))
}

// Patcher stamps frames of many flows from one template without re-encoding
// them: it copies the template and rewrites the source address, the source
// port and the TCP flags, adjusting the checksums incrementally (RFC 1624).
// It is fast enough (a few ns) not to hide the cost of the code it feeds.
type Patcher struct {
	tmpl    []byte
	clients Clients
	v4      bool
	srcOff  int // offset of the low 32 bits of the source address
	portOff int // offset of the L4 source port
	ipCsum  int // IPv4 header checksum offset, 0 for IPv6
	l4Csum  int
	tcp     bool
	base    uint32 // low 32 bits of the template's source address
	port    uint16
	flags   uint8
}

// NewPatcher encodes f as the template; the flows it stamps come from
// clients.
func NewPatcher(f Frame, clients Clients) *Patcher {
	f.Src = clients.FlowSrc(0)
	p := &Patcher{clients: clients, tmpl: make([]byte, f.Len()), tcp: f.Proto == 6, flags: f.TCPFlags}
	f.Encode(p.tmpl)
	p.v4 = f.Src.Addr().Is4()
	l4 := 14 + 40
	p.srcOff = 14 + 8 + 12
	if p.v4 {
		l4 = 14 + 20
		p.srcOff = 14 + 12
		p.ipCsum = 14 + 10
	}
	p.portOff = l4
	p.l4Csum = l4 + 6
	if p.tcp {
		p.l4Csum = l4 + 16
	}
	p.base = binary.BigEndian.Uint32(p.tmpl[p.srcOff:])
	p.port = binary.BigEndian.Uint16(p.tmpl[p.portOff:])
	return p
}

// Len returns the frame length.
func (p *Patcher) Len() int { return len(p.tmpl) }

// Write stamps the frame of flow i into b with the given TCP flags (ignored
// for UDP) and returns its length (0 if b is too short).
func (p *Patcher) Write(b []byte, i uint32, flags uint8) int {
	if len(b) < len(p.tmpl) {
		return 0
	}
	copy(b, p.tmpl)
	src := p.base + i>>14
	port := uint16(1024 + i&0x3fff)
	binary.BigEndian.PutUint32(b[p.srcOff:], src)
	binary.BigEndian.PutUint16(b[p.portOff:], port)
	// Checksum deltas (one's complement): old words out, new words in.
	var d uint32
	d += uint32(^uint16(p.base>>16)) + uint32(^uint16(p.base)) + src>>16 + src&0xffff
	if p.ipCsum != 0 {
		binary.BigEndian.PutUint16(b[p.ipCsum:], adjust(binary.BigEndian.Uint16(b[p.ipCsum:]), d))
	}
	d += uint32(^p.port) + uint32(port)
	if p.tcp {
		b[p.portOff+13] = flags
		d += uint32(^uint16(p.flags)) + uint32(flags) // flags share a word with the data offset
	}
	c := adjust(binary.BigEndian.Uint16(b[p.l4Csum:]), d)
	if !p.tcp && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(b[p.l4Csum:], c)
	return len(p.tmpl)
}

// adjust applies a one's complement delta to a checksum field: HC' =
// ~(~HC + delta) (RFC 1624, eqn. 3).
func adjust(csum uint16, delta uint32) uint16 {
	s := uint32(^csum) + delta
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}
