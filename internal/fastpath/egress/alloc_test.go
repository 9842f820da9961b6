package egress

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestAllocs: the calls the agent makes per flow (Put, Delete, Lookup) do
// not allocate; only the error of a Delete of a missing flow does (it is
// cilium/ebpf's, wrapped). Walk and Counters may.
func TestAllocs(t *testing.T) {
	p := loadT(t)
	f := flowOf(unix.IPPROTO_TCP, client4, vip4, 1, 80)
	tgt := Target{Backend: back4, SrcPort: 50000}
	for _, tc := range []struct {
		name string
		max  float64
		fn   func()
	}{
		{"Put", 0, func() { p.Put(f, tgt) }},
		{"Lookup", 0, func() { p.Lookup(f) }},
		{"Put and Delete", 0, func() { p.Put(f, tgt); p.Delete(f) }},
		{"Delete missing", 3, func() { p.Delete(f) }},
	} {
		if got := testing.AllocsPerRun(100, tc.fn); got > tc.max {
			t.Errorf("%s: %.1f allocations, want at most %.0f", tc.name, got, tc.max)
		}
	}
}
