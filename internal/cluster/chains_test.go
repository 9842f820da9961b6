package cluster

import (
	"github.com/sluicelb/sluice/internal/flow"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func members(n int) []netip.AddrPort {
	v := make([]netip.AddrPort, n)
	for i := range v {
		v[i] = nodeAddr(i + 1)
	}
	return v
}

func TestChainsDeterministic(t *testing.T) {
	ms := members(16)
	a := NewChains(42, 4096, 3, ms)
	shuffled := slices.Clone(ms)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	shuffled = append(shuffled, ms[3]) // a duplicate changes nothing
	b := NewChains(42, 4096, 3, shuffled)
	for s := 0; s < 4096; s++ {
		if !slices.Equal(a.ChainAddrs(nil, s), b.ChainAddrs(nil, s)) {
			t.Fatalf("shard %d: %v vs %v", s, a.ChainAddrs(nil, s), b.ChainAddrs(nil, s))
		}
		ch := a.ChainAddrs(nil, s)
		if len(ch) != 3 || ch[0] == ch[1] || ch[1] == ch[2] || ch[0] == ch[2] {
			t.Fatalf("shard %d: chain %v", s, ch)
		}
	}
	// Another seed gives other chains.
	c := NewChains(43, 4096, 3, ms)
	same := 0
	for s := 0; s < 4096; s++ {
		if slices.Equal(a.ChainAddrs(nil, s), c.ChainAddrs(nil, s)) {
			same++
		}
	}
	if same > 4096/10 {
		t.Fatalf("seed barely matters: %d of 4096 chains equal", same)
	}
}

// Minimal movement: when a member leaves, exactly the shards whose chain
// contained it change, and in them the survivors keep their order; when one
// joins, only the shards whose new chain contains it change.
func TestChainsMinimalMovement(t *testing.T) {
	const S, R, N = 4096, 3, 32
	ms := members(N)
	before := NewChains(7, S, R, ms)
	gone := ms[5]
	after := NewChains(7, S, R, slices.Delete(slices.Clone(ms), 5, 6))
	moved := 0
	for s := 0; s < S; s++ {
		b, a := before.ChainAddrs(nil, s), after.ChainAddrs(nil, s)
		if !slices.Contains(b, gone) {
			if !slices.Equal(a, b) {
				t.Fatalf("shard %d changed without the member: %v -> %v", s, b, a)
			}
			continue
		}
		moved++
		survivors := slices.DeleteFunc(slices.Clone(b), func(x netip.AddrPort) bool { return x == gone })
		if !slices.Equal(a[:len(survivors)], survivors) {
			t.Fatalf("shard %d: survivors reordered: %v -> %v", s, b, a)
		}
	}
	want := S * R / N
	t.Logf("leave: %d of %d shards changed chain (expected about %d = S*R/N)", moved, S, want)
	if moved < want*7/10 || moved > want*13/10 {
		t.Fatalf("leave moved %d shards, want about %d", moved, want)
	}
	// Join: the member comes back.
	joined := 0
	for s := 0; s < S; s++ {
		a, b := after.ChainAddrs(nil, s), before.ChainAddrs(nil, s)
		if !slices.Equal(a, b) {
			joined++
			if !slices.Contains(b, gone) {
				t.Fatalf("shard %d changed on join without the joiner", s)
			}
		}
	}
	if joined != moved {
		t.Fatalf("join changed %d shards, leave %d", joined, moved)
	}
}

// Heads (and chain memberships) spread evenly over the members.
func TestChainsBalance(t *testing.T) {
	for _, n := range []int{3, 8, 64} {
		c := NewChains(1, 4096, 3, members(n))
		heads := make([]int, n)
		in := make([]int, n)
		for s := 0; s < 4096; s++ {
			ch := c.Chain(s)
			heads[ch[0]]++
			for _, m := range ch {
				in[m]++
			}
		}
		mean := 4096.0 / float64(n)
		hmax := float64(slices.Max(heads)) / mean
		imax := float64(slices.Max(in)) / (mean * 3)
		t.Logf("N=%d: heads max/mean %.3f, chain slots max/mean %.3f", n, hmax, imax)
		if hmax > 1.35 || imax > 1.25 {
			t.Fatalf("N=%d: imbalance: heads %.3f, slots %.3f", n, hmax, imax)
		}
	}
}

func TestChainsSmall(t *testing.T) {
	c := NewChains(1, 16, 3, nil)
	if _, ok := c.Head(0); ok || c.Len() != 0 {
		t.Fatal("empty view has a head")
	}
	c = NewChains(1, 16, 3, members(2))
	if c.Len() != 2 {
		t.Fatalf("len %d, want 2 (fewer members than replicas)", c.Len())
	}
}

func BenchmarkNewChains64(b *testing.B) {
	ms := members(64)
	for b.Loop() {
		NewChains(1, 4096, 3, ms)
	}
}

func TestFragmentOwner(t *testing.T) {
	ms := members(8)
	c := NewChains(5, 4096, 2, ms)
	src := netip.MustParseAddr("198.18.0.1").As16()
	dst := netip.MustParseAddr("198.18.0.10").As16()
	key := func(id uint32) *flow.Key {
		return &flow.Key{Src: src, Dst: dst, SrcPort: uint16(id >> 16), DstPort: uint16(id), Proto: 17}
	}
	a, ok := c.FragmentOwner(key(0x1234), 5)
	if b, _ := NewChains(5, 4096, 2, ms).FragmentOwner(key(0x1234), 5); !ok || a != b {
		t.Fatal("not a pure function of the membership")
	}
	per := map[netip.AddrPort]int{}
	for id := uint32(0); id < 8000; id++ {
		o, _ := c.FragmentOwner(key(id), 5)
		per[o]++
	}
	// The IDs of one address pair spread over every member.
	for _, m := range ms {
		if per[m] < 700 || per[m] > 1300 {
			t.Fatalf("owners of 8000 datagrams over 8 members: %v", per)
		}
	}
	if _, ok := NewChains(5, 4096, 2, nil).FragmentOwner(key(1), 5); ok {
		t.Fatal("an owner without members")
	}
}

func TestChainsDigest(t *testing.T) {
	m := func(s ...string) []netip.AddrPort {
		var out []netip.AddrPort
		for _, a := range s {
			out = append(out, netip.MustParseAddrPort(a))
		}
		return out
	}
	a := ChainsDigest(1, 64, 2, m("10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.3:7946"))
	if b := ChainsDigest(1, 64, 2, m("10.0.0.3:7946", "10.0.0.1:7946", "10.0.0.2:7946")); a != b {
		t.Errorf("order changes the digest: %x %x", a, b)
	}
	for _, d := range []uint64{
		ChainsDigest(2, 64, 2, m("10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.3:7946")),
		ChainsDigest(1, 128, 2, m("10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.3:7946")),
		ChainsDigest(1, 64, 3, m("10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.3:7946")),
		ChainsDigest(1, 64, 2, m("10.0.0.1:7946", "10.0.0.2:7946")),
	} {
		if d == a {
			t.Errorf("different chains, same digest %x", d)
		}
	}
}
