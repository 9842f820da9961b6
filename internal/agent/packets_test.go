package agent

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/encap"
)

// Hand-built packets for the tests: inner IPv4/IPv6 TCP segments with
// correct checksums, GUE payloads around them, and whole encapsulated
// frames from the real encoder.

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// tcpSeg builds a TCP header (MSS option on a SYN) with a zero checksum.
func tcpSeg(sport, dport uint16, seq uint32, flags uint8) []byte {
	hl := 20
	if flags&tcpSYN != 0 {
		hl = 24
	}
	b := make([]byte, hl)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], seq)
	b[12] = byte(hl/4) << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 64240)
	if hl == 24 {
		copy(b[20:], []byte{2, 4, 0x05, 0xb4}) // MSS 1460
	}
	return b
}

// pseudoSum returns the one's complement sum of an IPv4/IPv6 pseudo-header
// as an uint32 to pass to encap.Checksum.
func pseudoSum(src, dst netip.Addr, proto uint8, l4len int) uint32 {
	var s uint32
	for _, a := range []netip.Addr{src, dst} {
		b := a.AsSlice()
		for i := 0; i < len(b); i += 2 {
			s += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	return s + uint32(proto) + uint32(l4len)
}

// ipPacket wraps an L4 segment (TCP if proto is 6, whose checksum it fills)
// in an IPv4 or IPv6 header, by the family of src and dst.
func ipPacket(src, dst netip.Addr, proto uint8, l4 []byte) []byte {
	l4 = append([]byte(nil), l4...)
	if proto == 6 {
		binary.BigEndian.PutUint16(l4[16:], 0)
		binary.BigEndian.PutUint16(l4[16:], encap.Checksum(l4, pseudoSum(src, dst, proto, len(l4))))
	}
	if src.Is4() {
		h := make([]byte, 20, 20+len(l4))
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(h[6:], 0x4000)
		h[8], h[9] = 64, proto
		s4, d4 := src.As4(), dst.As4()
		copy(h[12:], s4[:])
		copy(h[16:], d4[:])
		binary.BigEndian.PutUint16(h[10:], encap.Checksum(h, 0))
		return append(h, l4...)
	}
	h := make([]byte, 40, 40+len(l4))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	h[6], h[7] = proto, 64
	s6, d6 := src.As16(), dst.As16()
	copy(h[8:], s6[:])
	copy(h[24:], d6[:])
	return append(h, l4...)
}

// syn builds a TCP SYN from src:sport to dst:dport.
func syn(src netip.AddrPort, dst netip.AddrPort, seq uint32) []byte {
	return ipPacket(src.Addr(), dst.Addr(), 6, tcpSeg(src.Port(), dst.Port(), seq, tcpSYN))
}

// gue builds a GUE payload by hand: the 4-byte base header with proto and
// an optional raw private-data block, then inner.
func gue(proto uint8, private, inner []byte) []byte {
	if len(private)%4 != 0 {
		panic("private data must be whole words")
	}
	b := []byte{byte(len(private) / 4), proto, 0, 0}
	b = append(b, private...)
	return append(b, inner...)
}

// hopList builds the Sluice hop list private data.
func hopList(next uint8, hops ...netip.Addr) []byte {
	b := []byte{0x53, 0x43, next, uint8(len(hops))}
	for _, h := range hops {
		b = append(b, h.AsSlice()...)
	}
	return b
}

// encapFrame encapsulates inner with the real encoder (encap.Compile,
// Template.Encap) for a GUE tunnel from src to dst, MAC addresses included,
// with a hop list [dst, secondary] if secondary is valid. It returns the
// Ethernet frame and the offset of the UDP payload (the GUE header) in it.
func encapFrame(tb testing.TB, srcMAC, dstMAC [6]byte, src, dst, secondary netip.Addr, inner []byte) (frame []byte, gueOff int) {
	tb.Helper()
	t, err := encap.Compile(encap.Tunnel{Mode: encap.GUE, SrcMAC: srcMAC, DstMAC: dstMAC, Src: src, Dst: dst})
	if err != nil {
		tb.Fatal(err)
	}
	var sec *encap.Template
	if secondary.IsValid() {
		if sec, err = encap.Compile(encap.Tunnel{Mode: encap.GUE, Src: src, Dst: secondary}); err != nil {
			tb.Fatal(err)
		}
	}
	const l3Off = 14 // as if received in an Ethernet frame
	head := t.Headroom(l3Off, sec != nil)
	buf := make([]byte, head+l3Off+len(inner))
	l3 := head + l3Off
	copy(buf[l3:], inner)
	start := t.Encap(buf, l3, len(buf), inner[0]>>4, 0x5eed, sec)
	if start < 0 {
		tb.Fatal("Encap failed")
	}
	ipLen := 20
	if dst.Is6() {
		ipLen = 40
	}
	return buf[start:], 14 + ipLen + 8
}
