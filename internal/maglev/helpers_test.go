package maglev

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// testNames returns n distinct backend names shaped like addresses, in an
// order that is not sorted by Name.
func testNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		if i%3 == 2 {
			names[i] = fmt.Sprintf("[2001:db8::%x]:6080", i)
		} else {
			names[i] = fmt.Sprintf("198.18.%d.%d", i/250, 1+i%250)
		}
	}
	return names
}

func equalWeights(names []string, w uint32) []Backend {
	bs := make([]Backend, len(names))
	for i, n := range names {
		bs[i] = Backend{Name: n, Weight: w}
	}
	return bs
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }

// smallPrimes are table sizes for tests that want many small tables.
var smallPrimes = []uint32{2, 3, 5, 7, 11, 13, 17, 31, 61, 101, 127, 251, 509, 1009, 2039, 4099}

func mustBuild(tb testing.TB, bs []Backend, opts Options, prev *Table) *Table {
	tb.Helper()
	t, err := Build(bs, opts, prev)
	if err != nil {
		tb.Fatalf("Build: %v", err)
	}
	return t
}
