package cluster

import (
	"encoding/binary"
	"hash/fnv"
	"net/netip"
)

// MemberStatus is what a node server reports about its cluster member for the
// control plane (`sluice ctl cluster status`, /metrics).
type MemberStatus struct {
	// Configured is this member's bind address followed by its configured
	// peers' bind addresses.
	Configured []netip.AddrPort
	// Running is false while the member is stopped (the LB node is
	// drained: it left the cluster) and Report is then zero.
	Running bool
	Report  Report
	// Seed, Shards and Replicas are the chain parameters.
	Seed     uint64
	Shards   int
	Replicas int
	// Services names the service numbers of Report.ByService.
	Services map[uint16]string
	// The node's publish path (affinity always): new flows submitted to
	// the member, committed on their chain, failed (not committed after
	// every retry), rejected (no running member, or its queue full), and
	// dropped by the workers (their bounded queue full).
	Published, PublishCommitted, PublishFailed, PublishRejected, PublishDropped uint64
}

// ChainsDigest is a digest of every shard's chain for a member set: members
// that show the same digest compute the same chains.
func ChainsDigest(seed uint64, shards, replicas int, members []netip.AddrPort) uint64 {
	c := NewChains(seed, shards, replicas, members)
	h := fnv.New64a()
	var b [18]byte
	for s := 0; s < c.Shards(); s++ {
		for _, i := range c.Chain(s) {
			a := c.Member(i)
			a16 := a.Addr().As16()
			copy(b[:], a16[:])
			binary.BigEndian.PutUint16(b[16:], a.Port())
			h.Write(b[:])
		}
		h.Write([]byte{0xff})
	}
	return h.Sum64()
}
