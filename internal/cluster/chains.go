package cluster

import (
	"math/bits"
	"net/netip"
	"slices"
	"time"

	"github.com/sluicelb/sluice/internal/flow"
)

// Defaults for the shard count and the chain length.
const (
	DefaultShards   = 4096
	DefaultReplicas = 2
	// DefaultTTL is how long an entry lives after its last insert
	// (Config.TTL): a flow that outlives it is published again (an insert
	// of an existing entry extends its expiry).
	DefaultTTL = 120 * time.Second
	// MaxMembers bounds the members a view may hold (chain entries are
	// uint16 member indexes).
	MaxMembers = 1 << 15
	// MaxReplicas bounds the chain length.
	MaxReplicas = 16
)

// shardSalt decorrelates the shard from the Maglev slot, which hashes the
// same key with the same cluster seed.
const shardSalt = 0x636c7573746572 // "cluster"

// ShardOf returns the shard of a flow key: the flow hash mapped onto
// [0, shards) by a multiply-shift, so that shard order is hash order (the
// table relies on this to find a shard's entries in one slot range).
func ShardOf(k *flow.Key, seed uint64, shards int) int {
	return shardOfHash(k.Hash(seed^shardSalt), shards)
}

func shardOfHash(h uint64, shards int) int {
	hi, _ := bits.Mul64(h, uint64(shards))
	return int(hi)
}

// Chains maps every shard to its chain: R member indexes, head first, tail
// last, chosen by rendezvous (highest random weight) hashing of the shard over
// the members. It is a pure function of (seed, shards, replicas, member set):
// every node computes the same value from the same membership. A Chains is
// immutable once built and may be shared between goroutines.
type Chains struct {
	shards, replicas int
	members          []netip.AddrPort // sorted, unique
	chain            []uint16         // shards x r, member indexes
	r                int              // effective chain length: min(replicas, len(members))
}

// memberHash hashes a member's identity with the seed.
func memberHash(seed uint64, m netip.AddrPort) uint64 {
	a := m.Addr().As16()
	k := flow.Key{Src: a, SrcPort: m.Port()}
	return k.Hash(seed ^ 0x72656e64657a766f) // "rendezvo"
}

// weight is the rendezvous weight of member hash mh for shard s.
func weight(mh uint64, s int) uint64 {
	x := mh ^ (uint64(s)+1)*0x9e3779b97f4a7c15
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// NewChains computes the chains of every shard over members (any order;
// duplicates are ignored). With fewer members than replicas the chains are
// as long as the member count; with none, every chain is empty.
func NewChains(seed uint64, shards, replicas int, members []netip.AddrPort) *Chains {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b netip.AddrPort) int { return a.Compare(b) })
	ms = slices.Compact(ms)
	if len(ms) > MaxMembers {
		ms = ms[:MaxMembers]
	}
	r := min(replicas, len(ms), MaxReplicas)
	c := &Chains{shards: shards, replicas: replicas, members: ms, r: r, chain: make([]uint16, shards*r)}
	if r == 0 {
		return c
	}
	mh := make([]uint64, len(ms))
	for i, m := range ms {
		mh[i] = memberHash(seed, m)
	}
	var topW [16]uint64
	var topI [16]uint16
	for s := 0; s < shards; s++ {
		n := 0
		for i := range ms {
			w := weight(mh[i], s)
			// insert into the descending top-r list
			j := n
			if j == r {
				if w <= topW[r-1] {
					continue
				}
				j = r - 1
			} else {
				n++
			}
			for j > 0 && topW[j-1] < w {
				topW[j], topI[j] = topW[j-1], topI[j-1]
				j--
			}
			topW[j], topI[j] = w, uint16(i)
		}
		copy(c.chain[s*r:s*r+r], topI[:r])
	}
	return c
}

// Shards returns the shard count.
func (c *Chains) Shards() int { return c.shards }

// Len returns the chain length: min(replicas, members).
func (c *Chains) Len() int { return c.r }

// Members returns the sorted member set. The caller must not modify it.
func (c *Chains) Members() []netip.AddrPort { return c.members }

// Chain returns shard s's chain as member indexes, head first. The caller
// must not modify it.
func (c *Chains) Chain(s int) []uint16 { return c.chain[s*c.r : s*c.r+c.r] }

// Member returns the address of member index i.
func (c *Chains) Member(i uint16) netip.AddrPort { return c.members[i] }

// Head returns shard s's head; ok is false with no members.
func (c *Chains) Head(s int) (netip.AddrPort, bool) {
	if c.r == 0 {
		return netip.AddrPort{}, false
	}
	return c.members[c.chain[s*c.r]], true
}

// Tail returns shard s's tail; ok is false with no members.
func (c *Chains) Tail(s int) (netip.AddrPort, bool) {
	if c.r == 0 {
		return netip.AddrPort{}, false
	}
	return c.members[c.chain[s*c.r+c.r-1]], true
}

// Index returns m's member index, or -1.
func (c *Chains) Index(m netip.AddrPort) int {
	i, ok := slices.BinarySearchFunc(c.members, m, func(a, b netip.AddrPort) int { return a.Compare(b) })
	if !ok {
		return -1
	}
	return i
}

// Position returns member index i's position in shard s's chain (0 = head),
// or -1 when it is not in the chain.
func (c *Chains) Position(s int, i int) int {
	if i < 0 {
		return -1
	}
	for p, m := range c.Chain(s) {
		if int(m) == i {
			return p
		}
	}
	return -1
}

// ChainAddrs appends shard s's chain addresses to dst.
func (c *Chains) ChainAddrs(dst []netip.AddrPort, s int) []netip.AddrPort {
	for _, m := range c.Chain(s) {
		dst = append(dst, c.members[m])
	}
	return dst
}

// FragmentOwner returns the member that handles the fragments of the IP
// datagram k names (pipeline.FragmentKey: source, destination, protocol,
// and the identification in the port fields — what every fragment
// carries, where only the first has the ports): the head of the
// datagram's shard, hashed apart from flow shards. The node that decides a
// datagram's first fragment tells it the decision, and a node with later
// fragments it cannot match sends them to it. ok is false with no members.
func (c *Chains) FragmentOwner(k *flow.Key, seed uint64) (netip.AddrPort, bool) {
	return c.Head(shardOfHash(k.Hash(seed^0x6672616773), c.shards)) // "frags"
}
