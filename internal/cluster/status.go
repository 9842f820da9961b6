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
	// PublishRefreshed counts long flows published again (their entries'
	// expiry extended) and committed.
	PublishRefreshed uint64
	// Ask is the node's query path: its workers' questions about flows
	// they had no entry for.
	Ask AskCounts
}

// AskCounts counts a node's questions to the owner chains: what its
// workers asked and how the flows were decided, and what its publisher did
// with the questions.
type AskCounts struct {
	Asked     uint64 `json:"asked"`     // flows asked about
	Answered  uint64 `json:"answered"`  // decided by their chain's answer
	Moved     uint64 `json:"moved"`     // ... naming another backend than the node's own decision
	Corrected uint64 `json:"corrected"` // published entries the chain's committed answer changed
	Timeouts  uint64 `json:"timeouts"`  // decided locally: no answer in time
	Failed    uint64 `json:"failed"`    // decided locally: the chain could not answer
	Unknown   uint64 `json:"unknown"`   // decided locally: the answer named a backend the node lacks
	Busy      uint64 `json:"busy"`      // packets dropped (the sender retransmits): the worker's questions were full
	Held      uint64 `json:"held"`      // packets held while their flow was asked about
	Released  uint64 `json:"released"`  // held packets sent once decided
	Dropped   uint64 `json:"dropped"`   // packets that could not be held or sent (chain_hold)
	Submitted uint64 `json:"submitted"` // questions the publisher submitted to the member
	Rejected  uint64 `json:"rejected"`  // ... that found no running member or a full queue
	// WaitBounds and Wait: the asked flows by how long their packets were
	// held, in milliseconds: Wait[i] those that waited at most
	// WaitBounds[i], the last those that waited longer; WaitSum the sum.
	WaitBounds []uint32 `json:"wait_bounds_ms"`
	Wait       []uint64 `json:"wait"`
	WaitSum    uint64   `json:"wait_sum_ms"`
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
