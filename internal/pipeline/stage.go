package pipeline

import (
	"github.com/sluicelb/sluice/internal/firewall"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/packet"
)

// Verdict is what happens to a packet.
type Verdict uint8

const (
	Continue Verdict = iota // undecided: the next stage runs
	Forward                 // transmit Buf[Off:Off+Len]
	Pass                    // not ours (no service): leave it to the kernel
	Drop                    // discard; Reason says why
	// Reply: transmit Buf[Off:Off+Len], an answer to the sender (an ICMP
	// "too big") built in place of the packet, back out of the link.
	Reply
	// Spill: the encapsulated frame Buf[Off:Off+Len] exceeds the MTU and
	// may be fragmented; its outer UDP payload goes through the kernel's
	// IP stack (link.Spill), which fragments it.
	Spill
	// Held: a later fragment that arrived before its datagram's first
	// fragment, or a packet of a flow whose owner chain is asked
	// (Context.Ask); the worker keeps a copy until its backend is known.
	Held
)

// Reason is why a packet was dropped. Parse failures carry ReasonParse and
// the parser's own verdict in Packet.Parsed.Verdict.
type Reason uint8

const (
	ReasonNone       Reason = iota
	ReasonParse             // malformed: see packet.Verdict
	ReasonNoBackend         // the service has no backend with weight > 0
	ReasonFragment          // a later fragment that cannot follow its first (handling off, nothing held)
	ReasonICMP              // an ICMP error whose quoted packet names no flow
	ReasonNoHeadroom        // the buffer has no room for the outer headers
	ReasonTooBig            // the encapsulated packet exceeds the MTU and could be neither answered nor spilled
	ReasonNoNextHop         // the backend's next hop is not resolved
	// ReasonTooBigLimited: an ICMP "too big" answer was due but the
	// worker's ICMP rate limit was reached.
	ReasonTooBigLimited
	// ReasonFragmentTimeout: a held later fragment whose first fragment
	// did not arrive in time.
	ReasonFragmentTimeout
	// ReasonSpillLimited: a packet due to go through the kernel (to be
	// fragmented, or a held fragment) over the worker's rate for that
	// path (Generation.SpillRate).
	ReasonSpillLimited
	// ReasonSNATExhausted: a new full-NAT flow found no free SNAT port of
	// its family and protocol in the worker's share.
	ReasonSNATExhausted
	// ReasonNATNoBinding: a packet to an SNAT address that no live binding
	// of this worker names (or from another source than its backend), or a
	// full-NAT packet without a flow entry to hold its binding.
	ReasonNATNoBinding
	// ReasonFirewallDeny: the service's firewall denied the packet's flow
	// (a rule, or the default verdict).
	ReasonFirewallDeny
	// ReasonTenant: a VXLAN packet to the node's VTEP address that is
	// malformed, whose VNI names no tenant, or that comes from a source
	// outside its tenant's VTEPs.
	ReasonTenant
	// ReasonChainHold: a packet of a flow whose owner chain was asked
	// that could not be held (the flow's or the worker's hold full, or a
	// packet too long to copy), or not sent once the chain answered (no
	// frame to send it in).
	ReasonChainHold
	NumReasons
)

var reasonNames = [NumReasons]string{
	"none", "parse", "no_backend", "fragment", "icmp_unroutable", "no_headroom", "too_big", "no_next_hop",
	"too_big_rate_limited", "fragment_timeout", "kernel_tx_limited",
	"snat_exhausted", "nat_no_binding",
	"firewall_deny", "no_tenant", "chain_hold",
}

func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Packet is one packet moving through the pipeline, with what the stages
// learnt about it. Packets are owned by one worker and reused batch after
// batch; nothing in them is retained across batches except by the flow table.
type Packet struct {
	Buf    []byte // the link's buffer; the frame is Buf[Off:Off+Len]
	Off    int
	Len    int
	Parsed packet.Parsed

	// Key is the flow the packet belongs to (for ICMP errors: the quoted
	// flow; for later fragments: FragmentKey).
	Key       flow.Key
	Hash      uint64 // Key.Hash(Generation.Seed)
	ICMPError bool   // routed by the quoted flow; creates and changes no flow state

	Service   *Service // set by classify; nil for packets that skipped it (flow hits)
	Real      *Real
	Secondary *Real // previous owner, for the hop list; nil if none

	// How balance routed a packet of a QUIC service, and whether its DCID
	// named a server ID no backend has (it then took a fallback route).
	QUICRoute         QUICRoute
	QUICUnknownServer bool

	// NATAddr and NATPort are a full-NAT flow's binding (SNAT address
	// index, port), from its entry; NATPort 0 for other packets.
	NATAddr uint8
	NATPort uint16
	// What the memoised stages decided, for the flow trace: the firewall's
	// verdict and rule (-1: the default), and the rule by which balance
	// chose Real. Written by the stages that decide them and not reset
	// between packets (the packet path never reads them): meaningful only
	// on a fresh Packet, as TraceFrame uses.
	Firewall     firewall.Action
	FirewallRule int16
	Why          Why

	Verdict Verdict
	Reason  Reason
	// HadEntry says the worker found a flow entry (of any generation) for
	// the packet before the stages ran; the offload uses it to tell a UDP
	// flow's second packet from its first.
	HadEntry bool
}

// Context is what stages share within one batch.
type Context struct {
	Gen   *Generation
	Flows *flow.Table // the worker's own table
	Now   uint32      // flow.Clock reading for the batch
	// CanSpill says the worker can send Spill packets (it has a
	// link.Spill); without it they are dropped as ReasonTooBig.
	CanSpill bool
	// NAT is the worker's full-NAT state (SNAT ports, reply bindings);
	// nil on a node without SNAT addresses.
	NAT *NATState
	// FirewallHits counts the firewall's verdicts by rule (the worker's).
	FirewallHits FirewallHits
	// Publish receives the new flows of services whose flows use the
	// cluster's owner chains (Service.Chained); nil: none are queued.
	Publish *PublishQueue
	// Ask holds the packets of chained flows this worker has no entry for
	// while their chain is asked; nil: such packets are decided locally.
	Ask Asker

	icmp TokenBucket // ICMP "too big" answers
}

// Asker holds the packets of flows a worker asks the cluster about.
type Asker interface {
	// Ask holds a copy of p, a packet of svc whose flow has no entry here
	// and uses the owner chain, until the chain answers which backend the
	// flow has (proposal: this node's own decision, which the chain
	// commits if it has none). It reports false when it cannot (its
	// queues are full): the caller then decides locally. When it takes the
	// packet it sets its verdict: Held, or Drop when the flow is being
	// asked about but the packet cannot be held.
	Ask(p *Packet, svc *Service, proposal *Real) bool
}

// TokenBucket allows rate events per second in bursts of rate/10+1. It
// counts in thousandths of an event and is refilled from the flow clock
// (milliseconds; readings may wrap). The zero value is full. Owned by one
// worker.
type TokenBucket struct {
	milli uint64 // tokens x 1000
	last  uint32 // clock reading of the last refill
	init  bool
}

// Allow takes one token at clock reading now, refilling at rate per second;
// it reports whether there was one.
func (b *TokenBucket) Allow(now uint32, rate int) bool {
	burst := uint64(rate/10+1) * 1000
	if !b.init {
		b.milli, b.last, b.init = burst, now, true
	}
	b.milli = min(b.milli+uint64(now-b.last)*uint64(rate), burst)
	b.last = now
	if b.milli < 1000 {
		return false
	}
	b.milli -= 1000
	return true
}

// Stage is one step of the pipeline. Process handles the packets of a batch
// whose Verdict is Continue and leaves the others alone.
type Stage interface {
	Name() string
	// Memoised reports whether the stage's result is recorded in the flow
	// entry, so that later packets of a flow with a current entry skip it.
	Memoised() bool
	Process(c *Context, pkts []*Packet)
}

// Chain is the ordered list of stages, built once.
type Chain struct {
	all       []Stage
	perPacket []Stage
}

// NewChain returns a chain running stages in order.
func NewChain(stages ...Stage) *Chain {
	c := &Chain{all: stages}
	for _, s := range stages {
		if !s.Memoised() {
			c.perPacket = append(c.perPacket, s)
		}
	}
	return c
}

// DefaultChain is NAT replies -> classify -> firewall -> load balance ->
// NAT binding -> encapsulate (or full-NAT rewrite): the one place the
// stages are ordered.
func DefaultChain() *Chain {
	return NewChain(NATReply{}, Classify{}, Firewall{}, Balance{}, NATBind{}, Route{}, Encapsulate{})
}

// Stages returns the stages in order.
func (c *Chain) Stages() []Stage { return c.all }

// Run runs every stage over pkts (packets without a current flow entry).
func (c *Chain) Run(ctx *Context, pkts []*Packet) {
	for _, s := range c.all {
		s.Process(ctx, pkts)
	}
}

// RunCached runs only the per-packet stages, for packets whose memoised
// results were taken from a current flow entry.
func (c *Chain) RunCached(ctx *Context, pkts []*Packet) {
	for _, s := range c.perPacket {
		s.Process(ctx, pkts)
	}
}
