package flow

import "encoding/binary"

// HashBytes returns a seeded 64-bit hash of b, from the same family as
// Key.Hash (wyhash's multipliers and 128-bit mixing), so that a value that
// is not a 5-tuple — a QUIC destination connection ID — picks a Maglev slot
// as evenly, and identically on every node with the cluster seed. Like
// wyhash it reads the tail as words that may overlap the octets before it,
// and mixes in the length, so b and b followed by zeros differ. It does not
// allocate and is not cryptographic.
func HashBytes(b []byte, seed uint64) uint64 {
	le := binary.LittleEndian
	n := len(b)
	s := seed ^ p0 ^ uint64(n)*p2
	var a, c uint64
	switch {
	case n > 16:
		for i := 0; n-i > 16; i += 16 {
			s = mix(le.Uint64(b[i:])^p1, le.Uint64(b[i+8:])^s)
		}
		a, c = le.Uint64(b[n-16:]), le.Uint64(b[n-8:])
	case n >= 8:
		a, c = le.Uint64(b), le.Uint64(b[n-8:])
	case n >= 4:
		a, c = uint64(le.Uint32(b)), uint64(le.Uint32(b[n-4:]))
	case n > 0:
		a = uint64(b[0])<<16 | uint64(b[n>>1])<<8 | uint64(b[n-1])
	}
	s = mix(a^p3, c^s)
	return mix(s^37, p0^seed)
}
