package pipeline

import (
	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/packet"
)

// Prepare resets p for a new frame, parses it and derives its flow key and
// hash. It reports whether the packet can go on to the flow lookup; if not,
// p.Verdict says what became of it.
func Prepare(p *Packet, g *Generation) bool {
	p.Parsed.Decode(p.Buf[p.Off : p.Off+p.Len])
	p.Service, p.Real, p.Secondary = nil, nil, nil
	p.Verdict, p.Reason, p.ICMPError = Continue, ReasonNone, false
	p.QUICRoute, p.QUICUnknownServer = QUICNone, false
	p.NATAddr, p.NATPort = 0, 0
	if p.Parsed.Verdict != packet.OK {
		p.Verdict, p.Reason = Drop, ReasonParse
		return false
	}
	var tenant uint8
	if g.tenants.on { // only then may a packet be a tenant's VXLAN
		var ok bool
		if tenant, ok = classifyTenant(p, g); !ok {
			return false
		}
	}
	t := &p.Parsed.Tuple
	if p.Parsed.Frag == packet.LaterFragment {
		// No ports to classify or hash by: unless the worker finds the
		// backend its first fragment went to (Key, Hash), it is dropped.
		FragmentKey(&p.Key, &p.Parsed)
		p.Key.Tenant = tenant
		p.Hash = p.Key.Hash(g.Seed)
		p.Verdict, p.Reason = Drop, ReasonFragment
		return false
	}
	if p.Parsed.IsICMPError() {
		// An ICMP error about a packet the backend sent from the VIP to the
		// client: the flow is the quoted one, reversed.
		if !p.Parsed.HasInner || !p.Parsed.InnerPorts {
			p.Verdict, p.Reason = Drop, ReasonICMP
			return false
		}
		in := &p.Parsed.Inner
		p.Key.Set(&in.Dst, &in.Src, in.DstPort, in.SrcPort, in.Proto)
		p.ICMPError = true
	} else {
		p.Key.Set(&t.Src, &t.Dst, t.SrcPort, t.DstPort, t.Proto)
	}
	p.Key.Tenant = tenant
	p.Hash = p.Key.Hash(g.Seed)
	return true
}

// FragmentKey sets k to the key that names the datagram a fragment belongs
// to (RFC 791, RFC 8200): source, destination, protocol and the fragment
// identification, which fills the two port fields. First and later
// fragments of one datagram have the same FragmentKey.
//
// IPv6 identifies a datagram by source, destination and ID alone (RFC 8200
// 4.5): the protocol is left out, since a later fragment names the header
// that follows the Fragment header (which may be an extension header) where
// the first one is parsed to its upper layer.
func FragmentKey(k *flow.Key, p *packet.Parsed) {
	t := &p.Tuple
	proto := t.Proto
	if t.IPVersion == 6 {
		proto = 0
	}
	k.Set(&t.Src, &t.Dst, uint16(p.FragID>>16), uint16(p.FragID), proto)
}

// Classify finds the service a packet is addressed to, among its tenant's
// (Prepare classified the tenant: a VXLAN packet to the node's VTEP
// address is its VNI's tenant's, any other the default tenant's). Its result is
// memoised through the flow entry's backend, which belongs to one service.
type Classify struct{}

func (Classify) Name() string   { return "classify" }
func (Classify) Memoised() bool { return true }

func (Classify) Process(c *Context, pkts []*Packet) {
	for _, p := range pkts {
		if p.Verdict != Continue {
			continue
		}
		p.Service = c.Gen.LookupTenant(p.Key.Tenant, p.Key.Dst, p.Key.Proto, p.Key.DstPort)
		if p.Service == nil {
			p.Verdict = Pass
		}
	}
}

// Balance picks the backend with Generation.Decide and keeps the flow
// table in step with the decision: it creates or updates the flow's entry,
// finishing with one packet's entry before it inserts the next (an insert
// may move entries: see flow.Table). ICMP errors, QUIC and stateless
// services create no entries; a mid-flow packet of a second-chance
// service gets one only when its slot has no secondary. A packet of a
// chained flow (Service.Chained) that has no entry and does not start a
// TCP connection is held while the flow's owner chain is asked
// (Context.Ask): the worker creates the entry with the chain's answer.
type Balance struct{}

func (Balance) Name() string   { return "balance" }
func (Balance) Memoised() bool { return true }

func (Balance) Process(c *Context, pkts []*Packet) {
	for _, p := range pkts {
		if p.Verdict != Continue {
			continue
		}
		svc := p.Service
		flags := p.Parsed.TCPFlags
		q := Query{Hash: p.Hash, ICMPError: p.ICMPError, SYN: p.Key.Proto == packet.ProtoTCP && p.Parsed.IsTCPSYN()}
		// A packet in the middle of a flow this node has no entry for may
		// belong to a connection its slot's previous owner holds: with
		// second chance its entry is only created once the slot has no
		// secondary.
		midFlow := svc.SecondChance && !q.SYN
		// A packet of a chained flow without an entry here, unless it
		// starts a TCP connection, asks the flow's owner chain (which may
		// know the flow from another node) before an entry is created.
		// (Not a first fragment: its later fragments follow the decision
		// it takes now, in this batch.)
		ask := c.Ask != nil && !q.SYN && !p.ICMPError && p.Parsed.Frag == packet.NotFragment && svc.Chained(p.Hash)
		var e *flow.Entry // the flow's entry: found, or inserted here
		found := false
		switch {
		case p.ICMPError, (midFlow || ask) && svc.QUIC == nil && !svc.Stateless:
			e = c.Flows.Lookup(&p.Key, p.Hash)
			found = e != nil
		case svc.QUIC != nil:
			q.Payload = p.Buf[p.Off+p.Parsed.PayloadOff : p.Off+p.Parsed.L3End]
		case svc.Stateless:
		default:
			e, found = c.Flows.LookupOrInsert(&p.Key, p.Hash, c.Now)
		}
		if found && e.Backend == Denied {
			// The firewall denied the flow in an earlier generation and
			// allows it now: a flow without a backend yet.
			found = false
			if (midFlow || ask) && !p.ICMPError {
				// Looked up, not inserted: balance inserts it if it should.
				c.Flows.Delete(&p.Key, p.Hash)
				e = nil
			}
		}
		known := e
		if !found {
			known = nil
		}
		d := c.Gen.Decide(svc, &q, known)
		p.Real, p.Secondary, p.Why = d.Real, d.Secondary, d.Why
		p.QUICRoute, p.QUICUnknownServer = d.QUICRoute, d.QUICUnknownServer
		if p.ICMPError {
			e = nil // routed like the flow it quotes, creating no state
		}
		if d.Real == nil {
			p.Verdict, p.Reason = Drop, ReasonNoBackend
			if e != nil {
				c.Flows.Delete(&p.Key, p.Hash)
			}
			continue
		}
		if d.Why == WhyFlowEntry && e != nil {
			e.Gen = c.Gen.ID
			e.Observe(flags, c.Now)
			continue
		}
		if !found && ask && c.Ask.Ask(p, svc, svc.ChainProposal(p.Hash, d.Real)) {
			continue // held (the worker sends it once the chain answers), or dropped
		}
		if !found && (midFlow || ask) && svc.QUIC == nil && !svc.Stateless && !p.ICMPError {
			if d.Why == WhySecondChance {
				// Undecided here: the owner's agent keeps the packet if it
				// has the connection, else hands it to the previous owner.
				// No entry, so every packet of the flow carries the hop list
				// while the slot has a secondary.
				continue
			}
			e = c.Flows.Insert(&p.Key, p.Hash, c.Now)
		}
		if e == nil {
			continue // no state kept, or table full and nothing evictable
		}
		if !found {
			switch {
			case p.Key.Proto != packet.ProtoTCP:
				e.State = flow.StateUDP
			case q.SYN:
				e.State = flow.StateSYN
			default:
				e.State = flow.StateEstablished
			}
		}
		e.Backend = p.Real.ID
		e.Gen = c.Gen.ID
		e.Observe(flags, c.Now)
		if !found && c.Publish != nil && svc.Chained(p.Hash) {
			c.Publish.Push(&Publish{Key: p.Key, Service: svc.ClusterID, Backend: p.Real.ClusterID})
		}
	}
}

// Encapsulate writes the outer headers toward the chosen backend. It runs for
// every packet: what is memoised is the backend, and with it the template.
//
// A packet that would exceed Generation.MTU once encapsulated is handled as
// a router handles a packet too big for its next link (TooBigAnswer): an
// IPv4 packet with DF, or an IPv6 packet, is answered with an ICMP "too big"
// naming the largest inner packet that fits (Reply); what may be fragmented
// (IPv4 without DF, fragments, ICMP errors) is encapsulated and spilled to
// the kernel, which fragments the outer packet (Spill).
type Encapsulate struct{}

func (Encapsulate) Name() string   { return "encapsulate" }
func (Encapsulate) Memoised() bool { return false }

func (Encapsulate) Process(c *Context, pkts []*Packet) {
	for _, p := range pkts {
		if p.Verdict != Continue {
			continue
		}
		if p.Real.NAT != nil {
			natForward(c, p)
			continue
		}
		t := p.Real.Template
		if t == nil {
			p.Verdict, p.Reason = Drop, ReasonNoNextHop
			continue
		}
		var secT *encap.Template
		if p.Secondary != nil {
			secT = p.Secondary.Template // nil (no hop list) if unresolved
		}
		l3 := p.Off + p.Parsed.L3Off
		end := p.Off + p.Parsed.L3End
		verdict := Forward
		if mtu := c.Gen.MTU; mtu > 0 && end-l3+t.L3Overhead(secT != nil) > mtu {
			if verdict = tooBig(c, p, t, mtu); verdict != Spill {
				continue
			}
		}
		start := t.Encap(p.Buf, l3, end, p.Parsed.Tuple.IPVersion, p.Hash, secT)
		if start < 0 {
			p.Verdict, p.Reason = Drop, ReasonNoHeadroom
			continue
		}
		p.Off, p.Len = start, end-start
		p.Verdict = verdict
	}
}

// unicastSource reports whether a packet's source may be sent an ICMP error.
func unicastSource(t *packet.Tuple) bool {
	a := t.SrcAddr()
	return a.IsGlobalUnicast() || a.IsPrivate() ||
		(a.Is6() && a.IsLinkLocalUnicast()) // a client on the LB's own link
}

// Smallest MTUs a "too big" answer may announce (RFC 791, RFC 8200).
const (
	minMTU4 = 68
	minMTU6 = 1280
)

// tooBig decides what becomes of p, which exceeds mtu once encapsulated
// with t: it answers it (Reply, the frame rewritten into the ICMP error),
// returns Spill for the caller to encapsulate it, or drops it.
func tooBig(c *Context, p *Packet, t *encap.Template, mtu int) Verdict {
	g := c.Gen
	if g.TooBig == TooBigDrop {
		p.Verdict, p.Reason = Drop, ReasonTooBig
		return Drop
	}
	// The largest inner packet that fits with every header Encap may add
	// (the hop list included), so that a flow's later packets fit too.
	room := mtu - t.L3Overhead(true)
	v6 := p.Parsed.Tuple.IPVersion == 6
	l3 := p.Off + p.Parsed.L3Off
	// Never answer a fragment, an ICMP error, or a source that cannot be
	// one host's (RFC 1812 4.3.2.7, RFC 4443 2.4(e)).
	whole := p.Parsed.Frag == packet.NotFragment && !p.ICMPError && unicastSource(&p.Parsed.Tuple)
	answer := false
	switch {
	case !whole: // fragments and ICMP errors: never answered
	case v6:
		answer = room >= minMTU6
	default:
		answer = room >= minMTU4 && packet.IPv4(p.Buf[l3:]).DontFragment()
	}
	if answer {
		if !c.icmp.Allow(c.Now, g.ICMPRate) {
			p.Verdict, p.Reason = Drop, ReasonTooBigLimited
			return Drop
		}
		start, n := encap.TooBig(p.Buf, p.Off, l3, p.Off+p.Parsed.L3End, v6, uint32(room))
		if start < 0 {
			p.Verdict, p.Reason = Drop, ReasonNoHeadroom
			return Drop
		}
		p.Off, p.Len = start, n
		p.Verdict = Reply
		return Reply
	}
	if !c.CanSpill || t.Mode() != encap.GUE {
		p.Verdict, p.Reason = Drop, ReasonTooBig
		return Drop
	}
	return Spill
}
