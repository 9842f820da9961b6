// Package sim generates synthetic client traffic for the in-memory link: the
// simulator (`sluice sim`), the datapath benchmarks and tests. Frames are
// written straight into the link's buffers, as a NIC would place them, with
// valid IPv4/IPv6 and TCP/UDP headers and checksums.
package sim

import (
	"encoding/binary"
	"net/netip"

	"github.com/sluicelb/sluice/internal/encap"
)

// TCP flags.
const (
	FIN = 0x01
	SYN = 0x02
	RST = 0x04
	PSH = 0x08
	ACK = 0x10
)

// Frame describes one synthetic packet.
type Frame struct {
	SrcMAC, DstMAC [6]byte
	Src, Dst       netip.AddrPort
	Proto          uint8 // 6 (TCP) or 17 (UDP)
	TCPFlags       uint8
	Seq, Ack       uint32
	Payload        int // bytes of zero payload
}

// Len returns the length of the encoded frame.
func (f *Frame) Len() int {
	n := 14 + 20
	if f.Src.Addr().Is6() && !f.Src.Addr().Is4In6() {
		n = 14 + 40
	}
	if f.Proto == 6 {
		return n + 20 + f.Payload
	}
	return n + 8 + f.Payload
}

// Encode writes the frame into b and returns its length, or 0 if b is too
// short or the addresses are of different families.
func (f *Frame) Encode(b []byte) int {
	n := f.Len()
	if len(b) < n || f.Src.Addr().Is4() != f.Dst.Addr().Is4() {
		return 0
	}
	copy(b[0:6], f.DstMAC[:])
	copy(b[6:12], f.SrcMAC[:])
	l4len := n - 14
	var l3 []byte
	var sum uint32
	if f.Src.Addr().Is4() {
		binary.BigEndian.PutUint16(b[12:], 0x0800)
		l3 = b[14:34]
		l4len -= 20
		l3[0], l3[1] = 0x45, 0
		binary.BigEndian.PutUint16(l3[2:], uint16(20+l4len))
		binary.BigEndian.PutUint32(l3[4:], 0x00004000) // ID 0, DF
		l3[8], l3[9] = 64, f.Proto
		l3[10], l3[11] = 0, 0
		s, d := f.Src.Addr().As4(), f.Dst.Addr().As4()
		copy(l3[12:16], s[:])
		copy(l3[16:20], d[:])
		binary.BigEndian.PutUint16(l3[10:], encap.Checksum(l3, 0))
		sum = onesSum(l3[12:20])
	} else {
		binary.BigEndian.PutUint16(b[12:], 0x86DD)
		l3 = b[14:54]
		l4len -= 40
		binary.BigEndian.PutUint32(l3[0:], 6<<28)
		binary.BigEndian.PutUint16(l3[4:], uint16(l4len))
		l3[6], l3[7] = f.Proto, 64
		s, d := f.Src.Addr().As16(), f.Dst.Addr().As16()
		copy(l3[8:24], s[:])
		copy(l3[24:40], d[:])
		sum = onesSum(l3[8:40])
	}
	l4 := b[14+len(l3) : n]
	clear(l4)
	binary.BigEndian.PutUint16(l4[0:], f.Src.Port())
	binary.BigEndian.PutUint16(l4[2:], f.Dst.Port())
	sum += uint32(f.Proto) + uint32(l4len)
	if f.Proto == 6 {
		binary.BigEndian.PutUint32(l4[4:], f.Seq)
		binary.BigEndian.PutUint32(l4[8:], f.Ack)
		l4[12] = 5 << 4
		l4[13] = f.TCPFlags
		binary.BigEndian.PutUint16(l4[14:], 65535)
		binary.BigEndian.PutUint16(l4[16:], encap.Checksum(l4, sum))
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(l4len))
		c := encap.Checksum(l4, sum)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
	}
	return n
}

// onesSum is the folded one's complement sum of b, for a pseudo-header
// partial sum to pass to encap.Checksum.
func onesSum(b []byte) uint32 { return uint32(^encap.Checksum(b, 0)) }
