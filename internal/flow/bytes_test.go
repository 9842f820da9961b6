package flow

import (
	"math/bits"
	"math/rand/v2"
	"testing"
)

// Every input bit of a connection-ID-sized input changes about half of the
// output bits; the seed and the length matter.
func TestHashBytesAvalanche(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 8, 9, 16, 20, 40} {
		b := make([]byte, n)
		total, flips := 0, 0
		for range 100 {
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			h := HashBytes(b, 7)
			for bit := range 8 * n {
				b[bit/8] ^= 1 << (bit % 8)
				total += bits.OnesCount64(h ^ HashBytes(b, 7))
				b[bit/8] ^= 1 << (bit % 8)
				flips++
			}
		}
		if avg := float64(total) / float64(flips); avg < 30 || avg > 34 {
			t.Errorf("%d octets: a flipped input bit changes %.1f output bits on average, want about 32", n, avg)
		}
	}
	b := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	if HashBytes(b, 1) == HashBytes(b, 2) {
		t.Error("the seed does not matter")
	}
	if HashBytes(b, 1) == HashBytes(append(b, 0), 1) {
		t.Error("trailing zeros do not matter")
	}
	if HashBytes(nil, 1) == HashBytes([]byte{0}, 1) {
		t.Error("empty and one zero octet collide")
	}
}

func TestHashBytesZeroAllocs(t *testing.T) {
	b := make([]byte, 20)
	var sink uint64
	if n := testing.AllocsPerRun(100, func() { sink += HashBytes(b, 1) + HashBytes(b[:9], 2) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
	_ = sink
}

func BenchmarkHashBytes(b *testing.B) {
	cid := []byte{0x41, 1, 2, 3, 4, 5, 6, 7, 8}
	var sink uint64
	for i := 0; i < b.N; i++ {
		cid[1] = byte(i)
		sink += HashBytes(cid, 1)
	}
	_ = sink
}
