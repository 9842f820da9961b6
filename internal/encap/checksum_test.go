package encap

import (
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"testing"
)

// naiveChecksum is the obviously correct RFC 1071 reference: add big-endian
// 16-bit words into a wide accumulator, fold, complement.
func naiveChecksum(b []byte, initial uint32) uint16 {
	s := uint64(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(b[i])<<8 | uint64(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint64(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func TestChecksumKnownVectors(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want uint16
	}{
		// RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
		{"rfc1071", []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, ^uint16(0xddf2)},
		// A textbook IPv4 header (checksum field zero) with checksum b861.
		{"ipv4", []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
			0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}, 0xb861},
		{"empty", nil, 0xffff},
		{"odd", []byte{0x12}, ^uint16(0x1200)},
		{"zeros", make([]byte, 33), 0xffff},
		{"ones", []byte{0xff, 0xff, 0xff, 0xff}, 0},
	} {
		if got := Checksum(tc.b, 0); got != tc.want {
			t.Errorf("%s: Checksum = %#04x, want %#04x", tc.name, got, tc.want)
		}
		if got := naiveChecksum(tc.b, 0); got != tc.want {
			t.Errorf("%s: naive reference = %#04x, want %#04x (bad test)", tc.name, got, tc.want)
		}
	}
}

// TestChecksumMatchesNaive covers every length 0..300 at every alignment
// 0..7, plus the carry-heavy all-0xff patterns, and large initial values.
func TestChecksumMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	backing := make([]byte, 320)
	for length := 0; length <= 300; length++ {
		for align := 0; align < 8; align++ {
			for _, fill := range []string{"rand", "ff"} {
				b := backing[align : align+length]
				for i := range b {
					if fill == "ff" {
						b[i] = 0xff
					} else {
						b[i] = byte(r.Uint32())
					}
				}
				initial := r.Uint32()
				if got, want := Checksum(b, initial), naiveChecksum(b, initial); got != want {
					t.Fatalf("len %d align %d %s: Checksum = %#04x, naive = %#04x", length, align, fill, got, want)
				}
			}
		}
	}
}

func TestChecksumVerifiesToZero(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		b := make([]byte, 2+2*r.IntN(100))
		for i := 2; i < len(b); i++ {
			b[i] = byte(r.Uint32())
		}
		binary.BigEndian.PutUint16(b, Checksum(b, 0))
		if got := Checksum(b, 0); got != 0 {
			t.Fatalf("checksum over data with its checksum = %#04x, want 0", got)
		}
	}
}

func TestUpdateChecksum(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 10000 {
		b := make([]byte, 2*(1+r.IntN(40)))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if r.IntN(4) == 0 { // force the old word to be the one's complement zero
			b[0], b[1] = 0xff, 0xff
		}
		before := Checksum(b, 0)
		w := 2 * r.IntN(len(b)/2)
		old := binary.BigEndian.Uint16(b[w:])
		nw := uint16(r.Uint32())
		binary.BigEndian.PutUint16(b[w:], nw)
		got := UpdateChecksum(before, old, nw)
		want := Checksum(b, 0)
		// (The two differ only if the new data is all zeros: RFC 1624's
		// equation then gives 0x0000 for 0xffff. Random data never is.)
		if got != want {
			t.Fatalf("UpdateChecksum(%#04x, %#04x, %#04x) = %#04x, recomputed %#04x", before, old, nw, got, want)
		}
	}
}

// FuzzChecksum compares the fast checksum with the naive reference.
func FuzzChecksum(f *testing.F) {
	f.Add([]byte{}, uint32(0), uint8(0))
	f.Add([]byte{0xff}, uint32(0xffffffff), uint8(1))
	f.Add(make([]byte, 67), uint32(0x1234), uint8(3))
	f.Fuzz(func(t *testing.T, b []byte, initial uint32, skip uint8) {
		if s := int(skip % 8); s <= len(b) {
			b = b[s:] // vary alignment
		}
		if got, want := Checksum(b, initial), naiveChecksum(b, initial); got != want {
			t.Fatalf("Checksum(% x, %#x) = %#04x, naive = %#04x", b, initial, got, want)
		}
	})
}

func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{20, 64, 1500} {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				Checksum(buf, 0)
			}
		})
	}
}
