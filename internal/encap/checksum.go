package encap

import (
	"encoding/binary"
	"math/bits"
)

// The Internet checksum (RFC 1071) is the one's complement of the one's
// complement sum of the data taken as big-endian 16-bit words. The sum is
// commutative and does not care about byte order as long as every byte keeps
// its parity (RFC 1071 §2(B)): bytes at even offsets are the high halves of
// the words, bytes at odd offsets the low halves. sum16 therefore loads the
// data as native little-endian 64-bit words (a plain load on amd64/arm64),
// adds them with end-around carry, folds the result to 16 bits and swaps the
// two bytes once at the end.

// sum16 returns the one's complement sum of b read as big-endian 16-bit words
// (an odd final byte is padded with a zero byte), folded to 16 bits and not
// complemented. It is 0 only when b is all zeros (or empty).
func sum16(b []byte) uint16 {
	var acc, c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[0:8]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[8:16]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[16:24]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[24:32]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[0:8]), c)
		b = b[8:]
	}
	// At most 7 bytes remain; every load below starts at an even offset, so
	// each byte keeps its parity.
	var tail uint64
	if len(b) >= 4 {
		tail = uint64(binary.LittleEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		tail += uint64(binary.LittleEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		tail += uint64(b[0])
	}
	acc, c = bits.Add64(acc, tail, c)
	acc += c // cannot overflow: after a carry out, acc < tail+1 < 2^34
	return bits.ReverseBytes16(fold64(acc))
}

// fold64 folds a one's complement accumulator to 16 bits (end-around carry);
// 2^16 ≡ 1 modulo 0xffff, so the 32- and 16-bit halves can simply be added.
func fold64(s uint64) uint16 {
	s = s>>32 + s&0xffffffff // <= 2^33 - 2
	s = s>>32 + s&0xffffffff // <= 2^32 - 1
	s = s>>16 + s&0xffff     // <= 0x1fffe
	s = s>>16 + s&0xffff     // <= 0xffff
	return uint16(s)
}

// Checksum returns the Internet checksum of b: the complement of the one's
// complement sum of initial and b taken as big-endian 16-bit words (a final
// odd byte is padded with zero). initial carries a partial sum computed
// separately, such as a pseudo-header's words added as plain integers; any
// uint32 works, it is folded. Store the result big-endian in the checksum
// field (zeroed while summing). A UDP sender must send 0xffff instead of a
// computed 0; Checksum does not do that.
//
// To verify a received header or segment, sum it with its checksum field in
// place: the result is 0 when the checksum is correct.
func Checksum(b []byte, initial uint32) uint16 {
	return ^fold64(uint64(initial) + uint64(sum16(b)))
}

// UpdateChecksum returns checksum csum after one 16-bit word of the data it
// covers changed from old to new, without touching the rest of the data
// (RFC 1624, equation 3: HC' = ~(~HC + ~m + m')). The agent uses it after
// AdvanceHop to patch a nonzero outer UDP checksum; a UDP checksum that
// comes out 0 must then be sent as 0xffff.
func UpdateChecksum(csum, old, new uint16) uint16 {
	return ^fold64(uint64(^csum) + uint64(^old) + uint64(new))
}
