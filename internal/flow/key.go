package flow

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Key is the 5-tuple of a flow, packed without pointers so that it can be
// compared with == and stored inline in the table. Addresses are 16 bytes;
// IPv4 addresses are stored in their IPv4-mapped IPv6 form (::ffff:a.b.c.d),
// as netip.Addr.As16 returns them, so one key type serves both families.
//
// For ICMP echo the identifier stands in for both ports; for protocols without
// ports they are zero.
//
// Tenant names the tenant the flow belongs to (0: the default tenant; see
// pipeline.Generation's tenants): tenants may use the same addresses, and a
// tenant never meets another's flows. One byte that was padding: a key is
// 38 bytes, the table's entry stays 52.
type Key struct {
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
	Proto            uint8
	Tenant           uint8
}

// MakeKey builds a key from netip values; it is for tests and the control
// plane, not the datapath.
func MakeKey(proto uint8, src, dst netip.AddrPort) Key {
	return Key{
		Src:     src.Addr().As16(),
		Dst:     dst.Addr().As16(),
		SrcPort: src.Port(),
		DstPort: dst.Port(),
		Proto:   proto,
	}
}

// Set fills k, in the default tenant (Tenant 0). It moves the addresses as 8-byte words, the width the
// packet parser writes them with and Hash reads them with, so the CPU
// forwards the stores to the loads instead of stalling on a wider load that
// straddles two recent stores.
func (k *Key) Set(src, dst *[16]byte, srcPort, dstPort uint16, proto uint8) {
	le := binary.LittleEndian
	le.PutUint64(k.Src[0:], le.Uint64(src[0:]))
	le.PutUint64(k.Src[8:], le.Uint64(src[8:]))
	le.PutUint64(k.Dst[0:], le.Uint64(dst[0:]))
	le.PutUint64(k.Dst[8:], le.Uint64(dst[8:]))
	k.SrcPort, k.DstPort, k.Proto, k.Tenant = srcPort, dstPort, proto, 0
}

// SrcAddr returns the source address, unmapped for IPv4.
func (k *Key) SrcAddr() netip.Addr { return netip.AddrFrom16(k.Src).Unmap() }

// DstAddr returns the destination address, unmapped for IPv4.
func (k *Key) DstAddr() netip.Addr { return netip.AddrFrom16(k.Dst).Unmap() }

// Reverse returns the key of the opposite direction.
func (k Key) Reverse() Key {
	k.Src, k.Dst = k.Dst, k.Src
	k.SrcPort, k.DstPort = k.DstPort, k.SrcPort
	return k
}

// Hash constants: the multipliers of wyhash (public domain), which mixes
// 64-bit words through full 128-bit products.
const (
	p0 = 0xa0761d6478bd642f
	p1 = 0xe7037ed1a0b428db
	p2 = 0x8ebc6af09c88c6e3
	p3 = 0x589965cc75374cc3
)

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// Hash returns a seeded 64-bit hash of the key. It is a pure function of the
// key and the seed: every LB node configured with the same cluster seed
// computes the same value for the same packet, which is what makes Maglev
// decisions identical across nodes. It does not allocate and is not
// cryptographic.
func (k *Key) Hash(seed uint64) uint64 {
	a := binary.LittleEndian.Uint64(k.Src[0:8])
	b := binary.LittleEndian.Uint64(k.Src[8:16])
	c := binary.LittleEndian.Uint64(k.Dst[0:8])
	d := binary.LittleEndian.Uint64(k.Dst[8:16])
	e := uint64(k.SrcPort) | uint64(k.DstPort)<<16 | uint64(k.Proto)<<32 | uint64(k.Tenant)<<40
	s := seed ^ p0
	s = mix(a^p1, b^s)
	s = mix(c^p2, d^s)
	s = mix(e^p3, s^p1)
	return mix(s^37, p0^seed)
}
