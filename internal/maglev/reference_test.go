package maglev

import (
	"encoding/binary"
	"hash/fnv"
	"slices"
	"strings"
	"testing"
)

// This file holds slow, obviously correct models of the table, written
// straight from the definitions, for the fast Build to be compared with.

// refMix64 is the splitmix64 finalizer, written out again.
func refMix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// refPermutation derives offset and skip with the standard library's FNV-1a.
func refPermutation(seed uint64, name string, m uint32) (offset, skip uint64) {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	h.Write(b[:])
	h.Write([]byte(name))
	x := h.Sum64()
	g := uint64(0x9e3779b97f4a7c15)
	offset = refMix64(x+g) % uint64(m)
	skip = refMix64(x+2*g) % uint64(m-1)
	return offset, skip + 1
}

// refPaper is Pseudocode 1 of the Maglev paper, unweighted: names must be
// sorted (the order in which backends take turns).
func refPaper(names []string, seed uint64, m uint32) []int {
	n := len(names)
	M := int(m)
	permutation := func(i, j int) int {
		off, skip := refPermutation(seed, names[i], m)
		return int((off + uint64(j)*skip) % uint64(M))
	}
	next := make([]int, n)
	entry := make([]int, M)
	for j := range entry {
		entry[j] = -1
	}
	if n == 0 {
		return entry
	}
	filled := 0
	for {
		for i := 0; i < n; i++ {
			c := permutation(i, next[i])
			for entry[c] >= 0 {
				next[i]++
				c = permutation(i, next[i])
			}
			entry[c] = i
			next[i]++
			filled++
			if filled == M {
				return entry
			}
		}
	}
}

// refWeighted is the weighted population exactly as documented on populate,
// done the slow way: a credit counter per backend and a sweep over all of
// them every round; drained backends (weight 0) play at the largest weight
// until the table is full, then their slots are emptied and the sweep goes on
// without them. backends must be sorted by Name.
func refWeighted(backends []Backend, seed uint64, m uint32) []int {
	M := int(m)
	entry := make([]int, M)
	for j := range entry {
		entry[j] = -1
	}
	var maxW uint64
	for _, b := range backends {
		maxW = max(maxW, uint64(b.Weight))
	}
	if maxW == 0 {
		return entry
	}
	weight := func(i int, draining bool) uint64 {
		if backends[i].Weight == 0 && draining {
			return maxW
		}
		return uint64(backends[i].Weight)
	}
	credit := make([]uint64, len(backends))
	next := make([]int, len(backends))
	empty := M
	draining := true
	for {
		for i := range backends {
			w := weight(i, draining)
			if w == 0 {
				continue
			}
			credit[i] += w
			if credit[i] < maxW {
				continue
			}
			credit[i] -= maxW
			off, skip := refPermutation(seed, backends[i].Name, m)
			for {
				c := int((off + uint64(next[i])*skip) % uint64(M))
				next[i]++
				if entry[c] < 0 {
					entry[c] = i
					break
				}
			}
			empty--
			if empty > 0 {
				continue
			}
			if !draining {
				return entry
			}
			draining = false
			for c, o := range entry {
				if backends[o].Weight == 0 {
					entry[c] = -1
					empty++
				}
			}
			if empty == 0 {
				return entry
			}
		}
	}
}

// ownersAsInts converts a table's owners for comparison with a model
// (NoBackend becomes -1).
func ownersAsInts(t *Table) []int {
	out := make([]int, t.M())
	for s := range out {
		o := t.Owner(uint32(s))
		if o == NoBackend {
			out[s] = -1
		} else {
			out[s] = int(o)
		}
	}
	return out
}

func firstDiff(a, b []int) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func TestReferencePaper(t *testing.T) {
	for _, tc := range []struct {
		n int
		m uint32
	}{
		{0, 7}, {1, 2}, {1, 7}, {2, 3}, {3, 7}, {5, 11}, {10, 101}, {10, 1009},
		{50, 251}, {100, 65537}, {1000, 65537}, {7, 65537}, {999, 1009},
	} {
		names := testNames(tc.n)
		slices.Sort(names)
		want := refPaper(names, 42, tc.m)
		tab, err := Build(equalWeights(names, 3), Options{M: tc.m, Seed: 42}, nil)
		if err != nil {
			t.Fatalf("N=%d M=%d: %v", tc.n, tc.m, err)
		}
		if got := ownersAsInts(tab); !slices.Equal(got, want) {
			s := firstDiff(got, want)
			t.Errorf("N=%d M=%d: slot %d: owner %d, paper says %d", tc.n, tc.m, s, got[s], want[s])
		}
	}
}

func TestReferenceWeighted(t *testing.T) {
	rng := newRand(7)
	for iter := range 60 {
		n := 1 + rng.IntN(60)
		m := smallPrimes[rng.IntN(len(smallPrimes))]
		if uint32(n) >= m {
			m = 1009
		}
		bs := make([]Backend, n)
		for i, name := range testNames(n) {
			// Weights on both sides of W/8 (for W = 100), and huge ones.
			w := []uint32{0, 1, 3, 10, 12, 13, 50, 99, 100, 100, uint32(rng.Uint64())}[rng.IntN(11)]
			bs[i] = Backend{Name: name, Weight: w}
		}
		slices.SortFunc(bs, func(a, b Backend) int { return strings.Compare(a.Name, b.Name) })
		seed := rng.Uint64()
		want := refWeighted(bs, seed, m)
		tab, err := Build(bs, Options{M: m, Seed: seed}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := ownersAsInts(tab); !slices.Equal(got, want) {
			s := firstDiff(got, want)
			t.Fatalf("iter %d N=%d M=%d: slot %d: owner %d, model says %d (backends %v)", iter, n, m, s, got[s], want[s], bs)
		}
		counts := make([]int, n)
		for _, o := range want {
			if o >= 0 {
				counts[o]++
			}
		}
		for i, c := range counts {
			if tab.Count(uint16(i)) != c {
				t.Fatalf("iter %d: Count(%d) = %d, owns %d", iter, i, tab.Count(uint16(i)), c)
			}
		}
	}
}

func TestReferenceModelsAgree(t *testing.T) {
	// The weighted model with equal weights is the paper's algorithm.
	names := testNames(37)
	slices.Sort(names)
	a := refPaper(names, 1, 1009)
	b := refWeighted(equalWeights(names, 5), 1, 1009)
	if !slices.Equal(a, b) {
		t.Fatal("weighted model with equal weights differs from the paper")
	}
}
