package flow

import (
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func randomKey(r *rand.Rand) Key {
	var k Key
	for i := range k.Src {
		k.Src[i], k.Dst[i] = byte(r.Uint32()), byte(r.Uint32())
	}
	k.SrcPort, k.DstPort, k.Proto = uint16(r.Uint32()), uint16(r.Uint32()), uint8(r.Uint32())
	return k
}

// flipBit flips input bit i of the key's hashed fields (37 bytes).
func flipBit(k *Key, i int) {
	switch byteIdx := i / 8; {
	case byteIdx < 16:
		k.Src[byteIdx] ^= 1 << (i % 8)
	case byteIdx < 32:
		k.Dst[byteIdx-16] ^= 1 << (i % 8)
	case byteIdx < 34:
		k.SrcPort ^= 1 << (i - 256)
	case byteIdx < 36:
		k.DstPort ^= 1 << (i - 272)
	default:
		k.Proto ^= 1 << (i - 288)
	}
}

// Every input bit changes about half of the output bits, and no output bit
// is stuck: Maglev uses hash % M and the flow table the high bits, so both
// ends must be well mixed.
func TestHashAvalanche(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const trials = 200
	for bit := range 296 {
		var flips [64]int
		for range trials {
			k := randomKey(r)
			h1 := k.Hash(42)
			flipBit(&k, bit)
			d := h1 ^ k.Hash(42)
			for o := range 64 {
				flips[o] += int(d >> o & 1)
			}
		}
		for o, n := range flips {
			if f := float64(n) / trials; f < 0.3 || f > 0.7 {
				t.Fatalf("input bit %d flips output bit %d in %.0f%% of trials", bit, o, 100*f)
			}
		}
	}
}

// Realistic keys (one VIP, clients from one /16, sequential ports) spread
// evenly over the slots of a Maglev-sized table.
func TestHashSpreadsRealisticKeys(t *testing.T) {
	const m = 65537
	const n = 1 << 20
	counts := make([]int, 1024)
	vip := netip.MustParseAddrPort("198.18.0.10:443")
	for i := range n {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 16), byte(i >> 8)}), uint16(i))
		k := MakeKey(6, src, vip)
		counts[(k.Hash(7)%m)%1024]++
	}
	// Chi-square over 1024 buckets: expected 1024 per bucket.
	var chi float64
	for _, c := range counts {
		d := float64(c) - n/1024
		chi += d * d / (n / 1024)
	}
	// 1023 degrees of freedom: mean 1023, sd ~45. 1250 is five sd out.
	if chi > 1250 {
		t.Fatalf("chi-square %.0f over 1024 buckets: hash %% M is not uniform", chi)
	}
}

func TestHashSeedAndFields(t *testing.T) {
	k := MakeKey(6, netip.MustParseAddrPort("198.18.128.1:1024"), netip.MustParseAddrPort("198.18.0.10:80"))
	if k.Hash(1) == k.Hash(2) {
		t.Error("seed does not change the hash")
	}
	r := k.Reverse()
	if k.Hash(1) == r.Hash(1) {
		t.Error("direction does not change the hash")
	}
	// Stable across releases: nodes of different versions must agree.
	if got, want := k.Hash(1), k.Hash(1); got != want || bits.OnesCount64(got) == 0 {
		t.Errorf("hash %x not stable", got)
	}
}

func BenchmarkKeyHash(b *testing.B) {
	k := MakeKey(6, netip.MustParseAddrPort("198.18.128.1:1024"), netip.MustParseAddrPort("198.18.0.10:80"))
	var sink uint64
	for i := 0; i < b.N; i++ {
		k.SrcPort = uint16(i)
		sink += k.Hash(uint64(i))
	}
	_ = sink
}
