package datapath

import (
	"maps"

	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/offload"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// Counters are a worker's packet counters. A snapshot is a copy; Add sums
// snapshots of several workers.
type Counters struct {
	RxPackets, RxBytes uint64
	TxPackets, TxBytes uint64
	TxErrors           uint64 // frames the link did not transmit
	Passed             uint64 // not addressed to a service
	FlowHits           uint64 // current entry: memoised stages skipped
	FlowMisses         uint64 // no entry, or one from an older generation
	Reaped             uint64 // expired entries removed by the reaper
	HopList            uint64 // forwarded with a second-chance hop list [owner, previous owner]
	// TooBigAnswered counts ICMP "too big" answers sent to clients;
	// Spilled the encapsulated packets sent through the kernel (which
	// fragments them), SpillErrors those it refused.
	TooBigAnswered, Spilled, SpillErrors uint64
	// Later fragments: sent after their datagram's first fragment
	// (Followed), held until it came (Held), then sent (Released).
	FragmentsFollowed, FragmentsHeld, FragmentsReleased uint64
	// Fragments across the nodes of a cluster (zero without one): later
	// fragments without a local first fragment handed to their datagram's
	// owner node (FragmentsToOwner, this node included), first fragments'
	// decisions sent to it (FragmentDecisions); and what the node's
	// relay, the owner's side, received: later fragments, decisions, and
	// datagrams from sources that are not members (RelayRejected).
	FragmentsToOwner, FragmentDecisions           uint64
	RelayFragments, RelayDecisions, RelayRejected uint64
	Parse                                         [packet.NumVerdicts]uint64
	Drops                                         [pipeline.NumReasons]uint64
	Reals                                         []RealCounters // by pipeline.Real.ID
	// Flows is the worker's flow table: size and lifetime counters (new
	// flows are Flows.Inserts), read on the worker goroutine with the rest.
	Flows flow.Stats

	// QUIC counts the packets of QUIC services by how balance routed them
	// (QUIC[pipeline.QUICNone] stays 0); QUICUnknownServer those whose
	// DCID decoded to a server ID no backend of the service has (they took
	// a fallback route, counted in QUIC too).
	QUIC              [pipeline.NumQUICRoutes]uint64
	QUICUnknownServer uint64

	// Chain counts the flows this worker asked the cluster's owner chains
	// about (zero without a cluster).
	Chain ChainCounters

	// NAT counts full-NAT bindings and translations (zero without SNAT
	// addresses).
	NAT pipeline.NATCounters
	// Firewall counts the firewall's evaluations by the rule that decided
	// (a flow's first packet in each generation; every packet of services
	// without flow entries), summed over generations. Filled by Snapshot.
	Firewall map[pipeline.RuleKey]uint64

	// Offload is the kernel half of the flow cache (Datapath.Counters
	// fills it with the Offload; Offloaded says so): what it forwarded is
	// also in RxPackets, TxPackets, TxBytes and Reals.
	Offload   offload.Counters
	Offloaded bool
}

// ChainCounters count a worker's questions to the owner chains: flows
// asked about, packets held meanwhile and sent once answered, and how the
// flows were decided.
type ChainCounters struct {
	Asked    uint64 // flows asked about (queries queued for the cluster member)
	Held     uint64 // packets held while their flow's chain was asked
	Released uint64 // held packets sent once their flow was decided
	Answered uint64 // flows decided by their chain's answer
	// Moved counts answers naming another backend than this node's own
	// decision (the flow was known elsewhere): connections that a local
	// decision would have broken.
	Moved uint64
	// Corrected counts entries this worker created (a new flow it
	// published) that the chain's committed answer changed: another node
	// had inserted the flow first.
	Corrected uint64
	// Timeouts counts flows decided locally because no answer came in
	// time; Failed because the chain could not answer (no member, no
	// reachable tail); Unknown because the answer named a backend this
	// node does not have in the service.
	Timeouts, Failed, Unknown uint64
	// Busy counts packets decided locally because the worker could not
	// ask (its table of flows being asked about, or its queue, full).
	Busy uint64
	// Wait counts the asked flows by how long their packets were held
	// (from the question to the decision, in flow-clock milliseconds):
	// Wait[i] those that waited at most AskWaitBounds[i] ms, the last
	// those that waited longer; WaitSum is the sum of the waits in ms.
	Wait    [len(AskWaitBounds) + 1]uint64
	WaitSum uint64
}

// AskWaitBounds are the upper bounds, in milliseconds, of the buckets of
// ChainCounters.Wait.
var AskWaitBounds = [...]uint32{0, 1, 2, 5, 10, 25, 50, 100}

// Add adds o to c.
func (c *ChainCounters) Add(o *ChainCounters) {
	c.Asked += o.Asked
	c.Held += o.Held
	c.Released += o.Released
	c.Answered += o.Answered
	c.Moved += o.Moved
	c.Corrected += o.Corrected
	c.Timeouts += o.Timeouts
	c.Failed += o.Failed
	c.Unknown += o.Unknown
	c.Busy += o.Busy
	for i := range c.Wait {
		c.Wait[i] += o.Wait[i]
	}
	c.WaitSum += o.WaitSum
}

// RealCounters count what a worker sent to one backend of one service.
type RealCounters struct {
	Packets, Bytes uint64
}

// Dropped returns all drops, parse failures included.
func (c *Counters) Dropped() uint64 {
	var n uint64
	for _, v := range c.Drops {
		n += v
	}
	return n
}

// Add adds o to c.
func (c *Counters) Add(o *Counters) {
	c.RxPackets += o.RxPackets
	c.RxBytes += o.RxBytes
	c.TxPackets += o.TxPackets
	c.TxBytes += o.TxBytes
	c.TxErrors += o.TxErrors
	c.Passed += o.Passed
	c.FlowHits += o.FlowHits
	c.FlowMisses += o.FlowMisses
	c.Reaped += o.Reaped
	c.HopList += o.HopList
	c.Offload.Add(&o.Offload)
	c.Offloaded = c.Offloaded || o.Offloaded
	c.TooBigAnswered += o.TooBigAnswered
	c.Spilled += o.Spilled
	c.SpillErrors += o.SpillErrors
	c.FragmentsFollowed += o.FragmentsFollowed
	c.FragmentsHeld += o.FragmentsHeld
	c.FragmentsReleased += o.FragmentsReleased
	c.FragmentsToOwner += o.FragmentsToOwner
	c.FragmentDecisions += o.FragmentDecisions
	c.RelayFragments += o.RelayFragments
	c.RelayDecisions += o.RelayDecisions
	c.RelayRejected += o.RelayRejected
	for i := range c.QUIC {
		c.QUIC[i] += o.QUIC[i]
	}
	c.QUICUnknownServer += o.QUICUnknownServer
	c.NAT.Add(&o.NAT)
	c.Chain.Add(&o.Chain)
	for i := range c.Parse {
		c.Parse[i] += o.Parse[i]
	}
	for i := range c.Drops {
		c.Drops[i] += o.Drops[i]
	}
	f, of := &c.Flows, &o.Flows
	f.Len += of.Len
	f.Capacity += of.Capacity
	f.Slots += of.Slots
	f.Inserts += of.Inserts
	f.Deletes += of.Deletes
	f.Expired += of.Expired
	f.EvictedHalfOpen += of.EvictedHalfOpen
	f.EvictedIdle += of.EvictedIdle
	f.EvictedEstablished += of.EvictedEstablished
	f.InsertFailed += of.InsertFailed
	if len(o.Firewall) > 0 && c.Firewall == nil {
		c.Firewall = make(map[pipeline.RuleKey]uint64, len(o.Firewall))
	}
	for k, n := range o.Firewall {
		c.Firewall[k] += n
	}
	if len(o.Reals) > len(c.Reals) {
		c.Reals = append(c.Reals, make([]RealCounters, len(o.Reals)-len(c.Reals))...)
	}
	for i, r := range o.Reals {
		c.Reals[i].Packets += r.Packets
		c.Reals[i].Bytes += r.Bytes
	}
}

func (c *Counters) clone() Counters {
	d := *c
	d.Reals = append([]RealCounters(nil), c.Reals...)
	d.Firewall = maps.Clone(c.Firewall)
	return d
}
