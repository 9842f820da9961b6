package maglev

import "math/bits"

// The hashes in this file are part of the cluster-wide contract: every node
// must derive the same permutation from the same (Seed, Name), whatever its Go
// version or architecture. They are written out here, not taken from
// hash/maphash or the runtime, and TestHashVectors pins their values.

// FNV-1a 64-bit parameters (FNV specification, draft-eastlake-fnv).
const (
	fnvOffset64 = 0xcbf29ce484222325
	fnvPrime64  = 0x00000100000001b3
)

// golden is 2^64 / phi, the increment of the splitmix64 generator.
const golden = 0x9e3779b97f4a7c15

// fnv1a64 folds s into the running FNV-1a state h.
func fnv1a64(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return h
}

// fnv1a64Word folds the 8 bytes of v, least significant first, into h.
func fnv1a64Word(h, v uint64) uint64 {
	for i := 0; i < 8; i++ {
		h ^= v & 0xff
		h *= fnvPrime64
		v >>= 8
	}
	return h
}

// mix64 is the splitmix64 finalizer (Steele, Lea, Flood 2014; the variant
// "Mix13" of Stafford): a bijection on uint64 with full avalanche.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// NameHash is the seeded 64-bit hash of a backend name from which its
// permutation derives:
//
//	NameHash(seed, name) = FNV-1a-64(seed as 8 bytes little-endian || name bytes)
//
// It is exported so that other tools (a simulator, a debugging CLI) can
// reproduce a table without importing Build's internals.
func NameHash(seed uint64, name string) uint64 {
	return fnv1a64(fnv1a64Word(fnvOffset64, seed), name)
}

// Permutation returns the start slot (offset) and the step (skip) of the
// preference list of a backend called name in a table of size m (m prime,
// m >= 2), exactly as Build uses them:
//
//	h      = NameHash(seed, name)
//	offset = mix64(h + 1*golden) % m
//	skip   = mix64(h + 2*golden mod 2^64) % (m-1) + 1
//
// (mix64 is the splitmix64 finalizer and golden = 0x9e3779b97f4a7c15, so the
// two values are the first two outputs of a splitmix64 generator seeded
// with h.) The backend's j-th preferred slot is (offset + j*skip) % m; since
// m is prime and 1 <= skip < m, j = 0..m-1 visits every slot once.
func Permutation(seed uint64, name string, m uint32) (offset, skip uint32) {
	h := NameHash(seed, name)
	offset = uint32(mix64(h+golden) % uint64(m))
	skip = uint32(mix64(h+golden+golden)%uint64(m-1)) + 1
	return offset, skip
}

// nameDigest identifies a name in the fingerprint. NoBackend is given the
// digest of the empty name, which no backend can have.
func nameDigest(name string) uint64 {
	return mix64(fnv1a64(fnvOffset64, name))
}

// reducer computes x % m for a fixed m without a division instruction, by
// Barrett reduction: q = floor(x * floor((2^64-1)/m) / 2^64) is floor(x/m)
// or one less, so x - q*m lies in [0, 2m) and one conditional subtraction
// finishes the job. The result is exactly x % m for every x and every
// m >= 1 (TestReducer checks it against the % operator).
type reducer struct {
	m     uint64
	recip uint64 // floor((2^64-1) / m)
}

func newReducer(m uint32) reducer {
	return reducer{m: uint64(m), recip: ^uint64(0) / uint64(m)}
}

func (r reducer) mod(x uint64) uint64 {
	q, _ := bits.Mul64(x, r.recip)
	x -= q * r.m
	if x >= r.m {
		x -= r.m
	}
	return x
}
