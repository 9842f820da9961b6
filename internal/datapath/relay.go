package datapath

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/sluicelb/sluice/internal/firewall"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// Fragments across the nodes of a cluster. A router that hashes a
// datagram's first fragment by its ports and its later fragments (which
// have none) by addresses only may send them to different LB nodes. Every
// datagram — (source, destination, protocol, identification): its
// pipeline.FragmentKey — has an owner node, which FragmentOwners names
// (in Sluice the head of the datagram's shard in the cluster's chains).
//
//   - The node that decides a first fragment remembers the decision, as
//     without a cluster, and sends it to the owner: a decision message.
//   - A node with a later fragment it has no first fragment for sends the
//     fragment to the owner, GUE-encapsulated, instead of holding it.
//   - The owner's Relay keeps the decisions it is told and sends each later
//     fragment it is given to its first fragment's backend, holding the
//     ones that come before their decision, as a worker does.
//
// Both go to the owner's relay address (UDP, the node's cluster address,
// port + 2) through the kernel (link.Spill), or straight to the node's own
// Relay when it is the owner. The relay takes datagrams from the cluster's
// members only (the node server checks the source). Nothing is forwarded
// twice: the relay never sends a fragment on to another node. Tenants'
// fragments (VXLAN, VLAN) stay on the node that received them, as without
// a cluster: the forwarded packet would lose its tenant. So do fragments to
// an address with a full-NAT service: only this node can rewrite them to
// its SNAT address (and it sends no decision of a full-NAT flow).
//
// The relay's messages (UDP payloads), after a 4-byte GUE header (version
// 0, no optional fields, flags 0):
//
//	fragment: GUE data, protocol 4 or 41, then the later fragment's IP
//	          packet as received
//	decision: GUE control (C set), type RelayDecisionType, then
//	          0  source address    [16]byte (IPv4-mapped for IPv4)
//	          16 destination       [16]byte
//	          32 identification    uint32
//	          36 key protocol      uint8 (0 for IPv6: pipeline.FragmentKey)
//	          37 flow protocol     uint8 (the first fragment's upper layer)
//	          38 destination port  uint16 (the first fragment's)
//	          40 backend           uint32 (pipeline.Real.ClusterID)
//	          44 flow hash         uint64 (the outer source port's source)
//	          52 source port       uint16 (the first fragment's)
//
// all big-endian. The owner's firewall decides the later fragments again
// if its generation changes before they come.

// FragmentOwners names the owner of a datagram's fragments.
type FragmentOwners interface {
	// FragmentOwner returns the relay address of the node that owns the
	// datagram k names (pipeline.FragmentKey of the default tenant), and
	// whether that node is this one; ok false when no owner is known (the
	// node is not in a cluster view now): the worker then handles the
	// datagram's fragments alone. It must not block nor allocate.
	FragmentOwner(k *flow.Key) (relay netip.AddrPort, local, ok bool)
}

// RelayDecisionType is the GUE control type of a first fragment's decision.
const RelayDecisionType = 0x53 // 'S'

const (
	gueHeaderLen     = 4
	relayDecisionLen = gueHeaderLen + 54
	protoIPv6        = 41
	protoIPv4        = 4
)

// putDecision writes the decision message for the first fragment p (its
// FragmentKey k) into b (relayDecisionLen bytes).
func putDecision(b []byte, k *flow.Key, p *pipeline.Packet) {
	b[0], b[1], b[2], b[3] = 0x20, RelayDecisionType, 0, 0 // version 0, C, hlen 0
	m := b[gueHeaderLen:]
	copy(m[0:16], k.Src[:])
	copy(m[16:32], k.Dst[:])
	binary.BigEndian.PutUint16(m[32:], k.SrcPort) // identification, high half
	binary.BigEndian.PutUint16(m[34:], k.DstPort)
	m[36] = k.Proto
	m[37] = p.Key.Proto
	binary.BigEndian.PutUint16(m[38:], p.Key.DstPort)
	binary.BigEndian.PutUint32(m[40:], p.Real.ClusterID)
	binary.BigEndian.PutUint64(m[44:], p.Hash)
	binary.BigEndian.PutUint16(m[52:], p.Key.SrcPort)
}

// Relay is the owner's side: the decisions it was told and the later
// fragments waiting for theirs. Receive may be called from any goroutine
// (the node server's relay socket, and workers when the node is the
// owner); a mutex serialises them: the relay carries fragments only.
type Relay struct {
	mu  sync.Mutex
	w   *Worker // without a link: its fragment table, hold queue, stages and counters are the relay's
	buf []byte  // holdHeadroom + holdFrameMax: the fragment being relayed
}

func newRelay(chain *pipeline.Chain, gen *atomic.Pointer[pipeline.Generation], clock *flow.Clock, spill link.Spill) *Relay {
	w := &Worker{chain: chain, gen: gen, clock: clock, spill: spill, flows: flow.NewTable(1024, flow.DefaultTimeouts())}
	w.ctx.Flows = w.flows
	w.ctx.CanSpill = true
	w.heldPkts[0] = &w.heldPkt
	return &Relay{w: w, buf: make([]byte, holdHeadroom+holdFrameMax)}
}

// Receive takes one relay message (a UDP payload) from a member.
func (r *Relay) Receive(msg []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.w
	g := w.gen.Load()
	if g == nil {
		return
	}
	now := w.clock.Now()
	r.begin(g, now)
	c := &w.counters
	if !g.Fragments { // node.fragments: drop here, whatever the sender does
		c.Drops[pipeline.ReasonFragment]++
		return
	}
	if len(msg) < gueHeaderLen || msg[0]>>6 != 0 || msg[0]&0x1f != 0 || msg[2] != 0 || msg[3] != 0 {
		c.Drops[pipeline.ReasonParse]++
		return
	}
	if msg[0]&0x20 != 0 {
		if msg[1] != RelayDecisionType || len(msg) != relayDecisionLen {
			c.Drops[pipeline.ReasonParse]++
			return
		}
		c.RelayDecisions++
		r.decision(msg[gueHeaderLen:], g, now)
		return
	}
	inner := msg[gueHeaderLen:]
	var et uint16
	switch msg[1] {
	case protoIPv4:
		et = 0x0800
	case protoIPv6:
		et = 0x86dd
	default:
		c.Drops[pipeline.ReasonParse]++
		return
	}
	if 14+len(inner) > holdFrameMax {
		c.Drops[pipeline.ReasonParse]++
		return
	}
	// The fragment as a frame (the worker's stages start at Ethernet),
	// with room in front for the outer headers.
	f := r.buf[holdHeadroom:]
	clear(f[:12])
	binary.BigEndian.PutUint16(f[12:], et)
	n := 14 + copy(f[14:], inner)
	q := &w.heldPkt
	q.Buf, q.Off, q.Len = r.buf, holdHeadroom, n
	if pipeline.Prepare(q, g) || q.Reason != pipeline.ReasonFragment || q.Key.Tenant != 0 {
		// Only later fragments of the default tenant are relayed.
		c.Drops[pipeline.ReasonParse]++
		return
	}
	c.RelayFragments++
	w.laterFragment(q, g, now)
	switch q.Verdict {
	case pipeline.Continue: // its first fragment's backend is known
		w.chain.RunCached(&w.ctx, w.heldPkts[:])
		w.sendOut(q, g, now)
	case pipeline.Held:
	case pipeline.Pass: // not to a service of this node's generation
		c.Drops[pipeline.ReasonFragment]++
	default:
		c.Drops[q.Reason]++
	}
}

// begin readies the relay's worker for generation g.
func (r *Relay) begin(g *pipeline.Generation, now uint32) {
	w := r.w
	if len(w.counters.Reals) < len(g.Reals) {
		w.counters.Reals = append(w.counters.Reals, make([]RealCounters, len(g.Reals)-len(w.counters.Reals))...)
	}
	w.ctx.Gen, w.ctx.Now = g, now
	w.fragHit = w.fragHit[:0]
	if w.held.n > 0 {
		w.counters.Drops[pipeline.ReasonFragmentTimeout] += uint64(w.held.expire(now))
	}
	w.frags.sweepSets(fragSweep, now)
}

// decision records a first fragment's decision and sends the later
// fragments held for it.
func (r *Relay) decision(m []byte, g *pipeline.Generation, now uint32) {
	w := r.w
	var k flow.Key
	copy(k.Src[:], m[0:16])
	copy(k.Dst[:], m[16:32])
	k.SrcPort = binary.BigEndian.Uint16(m[32:])
	k.DstPort = binary.BigEndian.Uint16(m[34:])
	k.Proto = m[36]
	svc := g.LookupTenant(0, k.Dst, m[37], binary.BigEndian.Uint16(m[38:]))
	var real *pipeline.Real
	if svc != nil {
		real = svc.RealByClusterID(binary.BigEndian.Uint32(m[40:]))
	}
	if real == nil {
		// A backend this node's generation does not have (yet): its later
		// fragments time out.
		w.counters.Drops[pipeline.ReasonNoBackend]++
		return
	}
	d := fragDecision{flowHash: binary.BigEndian.Uint64(m[44:]), backend: real.ID, gen: g.ID}
	d.flow.Set(&k.Src, &k.Dst, binary.BigEndian.Uint16(m[52:]), binary.BigEndian.Uint16(m[38:]), m[37])
	if a, _ := g.Filter(svc, &d.flow); a != firewall.Allow {
		// This node's firewall denies the flow (the sender's generation
		// differed): its later fragments are not sent.
		w.counters.Drops[pipeline.ReasonFirewallDeny]++
		return
	}
	w.recordFirst(&k, d, real, g, now)
}

// Expire drops the held fragments whose decision did not come in time;
// the node server calls it now and then, since the relay runs only when a
// message comes.
func (r *Relay) Expire() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w.held.n > 0 {
		r.w.counters.Drops[pipeline.ReasonFragmentTimeout] += uint64(r.w.held.expire(r.w.clock.Now()))
	}
}

// Reject counts a message from a source that is not a member.
func (r *Relay) Reject() {
	r.mu.Lock()
	r.w.counters.RelayRejected++
	r.mu.Unlock()
}

// Snapshot returns a copy of the relay's counters.
func (r *Relay) Snapshot() Counters {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.w.counters.clone()
}

// toOwner sends later fragment p, which has no first fragment here, to its
// datagram's owner; false when it has none known (the worker holds it).
func (w *Worker) toOwner(p *pipeline.Packet, g *pipeline.Generation, now uint32) bool {
	relay, local, ok := w.owners.FragmentOwner(&p.Key)
	if !ok {
		return false
	}
	// The GUE header goes in front of the IP header, over the end of the
	// frame's link header, which is not needed any more.
	l3 := p.Off + p.Parsed.L3Off
	b := p.Buf[l3-gueHeaderLen : p.Off+p.Parsed.L3End]
	b[0], b[2], b[3] = 0, 0, 0
	b[1] = protoIPv4
	if p.Parsed.Tuple.IPVersion == 6 {
		b[1] = protoIPv6
	}
	p.Verdict, p.Reason = pipeline.Held, pipeline.ReasonNone // the frame is done with either way
	if w.sendRelay(b, relay, local, g, now) {
		w.counters.FragmentsToOwner++
	}
	return true
}

// sendDecision tells the owner of first fragment p's datagram (k) where it
// went.
func (w *Worker) sendDecision(k *flow.Key, p *pipeline.Packet, g *pipeline.Generation, now uint32) {
	relay, local, ok := w.owners.FragmentOwner(k)
	if !ok {
		return
	}
	putDecision(w.decision[:], k, p)
	if w.sendRelay(w.decision[:], relay, local, g, now) {
		w.counters.FragmentDecisions++
	}
}

// sendRelay sends a relay message to the owner's relay: the node's own
// Relay, or another node's through the kernel within the worker's rate for
// that path.
func (w *Worker) sendRelay(b []byte, relay netip.AddrPort, local bool, g *pipeline.Generation, now uint32) bool {
	c := &w.counters
	if local {
		w.relay.Receive(b)
		return true
	}
	if !w.spillBudget.Allow(now, g.SpillRate) {
		c.Drops[pipeline.ReasonSpillLimited]++
		return false
	}
	a := relay.Addr()
	if err := w.spill.SendUDP(b, w.relaySrc, a.As16(), !a.Is4() && !a.Is4In6(), relay.Port()); err != nil {
		c.SpillErrors++
		return false
	}
	c.Spilled++
	c.TxBytes += uint64(len(b))
	return true
}

// relayed reports whether p's fragments are handled across the nodes: in
// a cluster, for the default tenant. (Later fragments to an address with a
// full-NAT service stay on the node: laterFragment.)
func (w *Worker) relayed(p *pipeline.Packet) bool {
	return w.owners != nil && p.Key.Tenant == 0
}
