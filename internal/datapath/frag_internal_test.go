package datapath

import (
	"testing"

	"github.com/sluicelb/sluice/internal/flow"
)

// An entry is not revived when the clock has moved 2^31 ms past its expiry,
// and the same datagram inserted twice takes one way, not two.
func TestFragTableExpiry(t *testing.T) {
	var ft fragTable
	k := flow.Key{SrcPort: 1, DstPort: 2, Proto: 17}
	const now = uint32(1000)
	ft.insert(&k, 7, fragDecision{flowHash: 99, backend: 3}, now)
	if e := ft.lookup(&k, 7, now+1); e == nil || e.backend != 3 || e.flowHash != 99 {
		t.Fatalf("lookup right after insert: %+v", e)
	}
	if e := ft.lookup(&k, 7, now+fragTimeout+1); e != nil {
		t.Fatalf("lookup after the timeout: %+v", e)
	}
	ft.insert(&k, 7, fragDecision{flowHash: 99, backend: 3}, now)
	ft.sweepSets(fragSets, now+fragTimeout+1) // a quiet worker sweeps it
	if e := ft.lookup(&k, 7, now+fragTimeout+1+1<<31); e != nil {
		t.Fatalf("entry revived 2^31 ms later: %+v", e)
	}

	ft = fragTable{}
	ft.insert(&k, 7, fragDecision{flowHash: 1, backend: 3}, now)
	other := k
	other.SrcPort = 9
	ft.insert(&other, 7, fragDecision{flowHash: 1, backend: 4}, now) // same set, another datagram
	ft.insert(&k, 7, fragDecision{flowHash: 1, backend: 5}, now+1)   // the first again: replaces its own way
	n := 0
	for _, e := range ft.sets[7%fragSets] {
		if e.expires != 0 && e.key == k {
			n++
			if e.backend != 5 {
				t.Errorf("backend %d, want 5", e.backend)
			}
		}
	}
	if n != 1 {
		t.Fatalf("datagram in %d ways, want 1", n)
	}
	if e := ft.lookup(&other, 7, now+1); e == nil || e.backend != 4 {
		t.Fatalf("the other datagram was evicted: %+v", e)
	}
}
