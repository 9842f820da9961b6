package maglev

import (
	"errors"
	"math"
	"slices"
	"testing"
)

// fuzzWeights are the weights a fuzz input picks from: zero, small, equal,
// both sides of the W/8 line between credit-checked and heap-scheduled
// backends (for W = 64), and extremes.
var fuzzWeights = [8]uint32{0, 1, 3, 7, 8, 64, 1 << 31, math.MaxUint32}

// decodeBackends reads backends from data: per backend one byte whose low 3
// bits pick a weight and whose high 5 bits are the name's length, then the
// name's bytes (any bytes, empty and duplicate names included).
func decodeBackends(data []byte) []Backend {
	var bs []Backend
	for len(data) > 0 && len(bs) < 200 {
		h := data[0]
		n := min(int(h>>3), len(data)-1)
		bs = append(bs, Backend{Name: string(data[1 : 1+n]), Weight: fuzzWeights[h&7]})
		data = data[1+n:]
	}
	return bs
}

func FuzzBuild(f *testing.F) {
	enc := func(bs ...Backend) []byte {
		var out []byte
		for _, b := range bs {
			w := slices.Index(fuzzWeights[:], b.Weight)
			out = append(out, byte(len(b.Name)<<3|w))
			out = append(out, b.Name...)
		}
		return out
	}
	f.Add(enc(Backend{"198.18.1.10", 1}, Backend{"198.18.1.11", 1}, Backend{"198.18.1.12", 1}), uint64(1), uint8(9))
	f.Add(enc(Backend{"a", 64}, Backend{"b", 0}, Backend{"c", 7}, Backend{"d", 8}, Backend{"e", 64}), uint64(0), uint8(4))
	f.Add(enc(Backend{"a", 1}, Backend{"b", math.MaxUint32}), uint64(42), uint8(2))
	f.Add(enc(Backend{"x", 0}, Backend{"y", 0}), uint64(3), uint8(6))
	f.Add(enc(Backend{"a", 1}, Backend{"a", 3}), uint64(3), uint8(6))
	f.Add(enc(Backend{"a", 1}, Backend{"a\x00", 3}, Backend{"0123456789abcdef-x", 8}, Backend{"0123456789abcdef-w", 8}), uint64(5), uint8(7))
	f.Add(enc(Backend{"", 1}), uint64(3), uint8(6))
	f.Add([]byte{}, uint64(0), uint8(0))

	f.Fuzz(func(t *testing.T, data []byte, seed uint64, mSel uint8) {
		bs := decodeBackends(data)
		m := smallPrimes[int(mSel)%len(smallPrimes)]
		opts := Options{M: m, Seed: seed}
		tab, err := Build(bs, opts, nil)

		// The error, if any, must be the right one.
		names := make(map[string]bool)
		dup, empty, live := false, false, 0
		for _, b := range bs {
			dup = dup || names[b.Name]
			empty = empty || b.Name == ""
			names[b.Name] = true
			if b.Weight > 0 {
				live++
			}
		}
		switch {
		case uint32(len(bs)) >= m:
			if !errors.Is(err, ErrInvalidM) {
				t.Fatalf("%d backends, M=%d: error %v", len(bs), m, err)
			}
			return
		case empty:
			if !errors.Is(err, ErrEmptyName) {
				t.Fatalf("empty name: error %v", err)
			}
			return
		case dup:
			if !errors.Is(err, ErrDuplicateName) {
				t.Fatalf("duplicate name: error %v", err)
			}
			return
		case err != nil:
			t.Fatalf("Build(%v, M=%d): %v", bs, m, err)
		}

		// Every slot has an owner with a weight (none if no weight), and
		// the counts add up.
		counts := make([]int, tab.NumBackends())
		for s := range m {
			o := tab.Owner(s)
			if live == 0 {
				if o != NoBackend {
					t.Fatalf("all weights 0, slot %d owned by %d", s, o)
				}
				continue
			}
			if int(o) >= tab.NumBackends() || tab.Backend(o).Weight == 0 {
				t.Fatalf("slot %d owned by %d (of %d), weight 0 or unknown", s, o, tab.NumBackends())
			}
			counts[o]++
		}
		sum := 0
		for i, n := range counts {
			if tab.Count(uint16(i)) != n {
				t.Fatalf("Count(%d) = %d, owns %d", i, tab.Count(uint16(i)), n)
			}
			sum += n
		}
		if live > 0 && sum != int(m) {
			t.Fatalf("counts sum to %d, M = %d", sum, m)
		}

		// Input order does not matter.
		rev := slices.Clone(bs)
		slices.Reverse(rev)
		tab2, err := Build(rev, opts, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(tab.owner, tab2.owner) || tab.Fingerprint() != tab2.Fingerprint() {
			t.Fatal("reversing the input changes the table")
		}

		// The fast build is the model, for sizes where the model is quick.
		if m <= 1009 {
			want := refWeighted(tab.Backends(), seed, m)
			if got := ownersAsInts(tab); !slices.Equal(got, want) {
				s := firstDiff(got, want)
				t.Fatalf("slot %d: owner %d, model says %d", s, got[s], want[s])
			}
		}

		// Rebuilt from a table of half the backends (halved weights
		// rounded up, so that weights change too), previous owners
		// resolve by name.
		half := slices.Clone(bs[:len(bs)/2])
		for i := range half {
			half[i].Weight = half[i].Weight/2 + half[i].Weight%2
		}
		prev, err := Build(half, opts, nil)
		if err != nil {
			t.Fatal(err)
		}
		next, err := Build(bs, opts, prev)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(next.owner, tab.owner) {
			t.Fatal("a previous table changed the owner array")
		}
		for s := range m {
			if previousName(next, s) != ownerName(prev, s) {
				t.Fatalf("slot %d: previous %q, previous table says %q", s, previousName(next, s), ownerName(prev, s))
			}
			if ownerName(next, s) != ownerName(tab, s) {
				t.Fatalf("slot %d: owner %q with a previous table, %q without", s, ownerName(next, s), ownerName(tab, s))
			}
		}
	})
}
