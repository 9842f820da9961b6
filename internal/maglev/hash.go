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
// It is exported, with Permutation, for tools that explain a table (a
// simulator, a debugging command), and as the written form of the contract.
func NameHash(seed uint64, name string) uint64 {
	return fnv1a64(seedState(seed), name)
}

// seedState is the FNV-1a state after the seed, shared by all names.
func seedState(seed uint64) uint64 { return fnv1a64Word(fnvOffset64, seed) }

// Permutation returns the start slot (offset) and the step (skip) of the
// preference list of a backend called name in a table of size m (m prime,
// 2 <= m <= MaxM), exactly as Build uses them:
//
//	h      = NameHash(seed, name)
//	offset = mix64(h + golden) % m
//	skip   = mix64(h + 2*golden) % (m-1) + 1
//
// with uint64 arithmetic wrapping, mix64 the splitmix64 finalizer and
// golden = 0x9e3779b97f4a7c15: the two values are the first two outputs of
// a splitmix64 generator seeded with h. The backend's j-th preferred slot is
// (offset + j*skip) % m; since m is prime and 1 <= skip < m, j = 0..m-1
// visits every slot once.
func Permutation(seed uint64, name string, m uint32) (offset, skip uint32) {
	return permutation(NameHash(seed, name), newReducer(m), newReducer(m-1))
}

// permutation is Permutation from the name hash, with reducers for m and m-1.
func permutation(h uint64, modM, modM1 reducer) (offset, skip uint32) {
	offset = uint32(modM.mod(mix64(h + golden)))
	skip = uint32(modM1.mod(mix64(h+golden+golden))) + 1
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
// 1 <= m < 2^62 (TestReducer checks it against the % operator).
type reducer struct {
	m     uint64
	recip uint64 // floor((2^64-1) / m)
}

func newReducer(m uint32) reducer {
	return reducer{m: uint64(m), recip: ^uint64(0) / uint64(m)}
}

func (r reducer) mod(x uint64) uint64 {
	q, _ := bits.Mul64(x, r.recip)
	x -= q * r.m // in [0, 2m)
	// Subtract m once more if x >= m, without a branch: whether it is
	// needed is a coin toss, and the result indexes the table, which keeps
	// the compiler from using a conditional move.
	t := x - r.m
	return t + r.m&uint64(int64(t)>>63)
}
