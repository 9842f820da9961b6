package pipeline

import (
	"maps"
	"strconv"

	"github.com/sluicelb/sluice/internal/firewall"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/packet"
)

// Denied is the Backend of a flow entry whose flow the firewall denied in
// the entry's generation: a memoised verdict, cache state like every
// verdict (a packet meeting it in a later generation runs the stages
// again). No backend has this ID (Builder hands IDs out from 0 up).
const Denied = ^uint32(0)

// Filter is the firewall's verdict on the flow k of svc, and the index of
// the rule that gave it (-1: the default verdict, or no rule list, which
// allows everything). k is the flow as the client sends it (for an ICMP
// error, the flow it quotes, reversed). The firewall stage calls it for
// every packet it decides, and the flow trace for its hypothetical ones.
// It does not allocate.
func (g *Generation) Filter(svc *Service, k *flow.Key) (firewall.Action, int) {
	if svc.Firewall == nil {
		return firewall.Allow, -1
	}
	t := packet.Tuple{Src: k.Src, Dst: k.Dst, SrcPort: k.SrcPort, DstPort: k.DstPort, Proto: k.Proto, IPVersion: 6}
	if isV4Mapped(&k.Dst) {
		t.IPVersion = 4
	}
	return svc.Firewall.Match(&t)
}

func isV4Mapped(a *[16]byte) bool {
	return a[10] == 0xff && a[11] == 0xff && [10]byte(a[:10]) == [10]byte{}
}

// Firewall applies the service's rule list to the packets of flows without
// a current entry: first match wins, else the service's default. It is
// memoised: an allowed flow's entry (made by balance) stands for its
// verdict; a denied flow gets an entry whose Backend is Denied, so its
// later packets are dropped by the flow lookup without running the stages.
// Both are valid for the entry's generation only: a new generation (rules
// changed, or anything else) re-evaluates the flow on its next packet.
// Overwriting an allowed flow's entry with a denial gives up its backend.
//
// Services that keep no flow entries (stateless, QUIC) and ICMP errors are
// filtered packet by packet; an ICMP error is judged as the flow it
// quotes. The rule that decided is counted (Context.FirewallHits) once per
// evaluation: on a flow's first packet in each generation.
type Firewall struct{}

func (Firewall) Name() string   { return "firewall" }
func (Firewall) Memoised() bool { return true }

func (Firewall) Process(c *Context, pkts []*Packet) {
	for _, p := range pkts {
		if p.Verdict != Continue || p.Service.Firewall == nil {
			continue
		}
		svc := p.Service
		action, rule := c.Gen.Filter(svc, &p.Key)
		c.FirewallHits.Hit(c.Gen, svc, rule)
		p.Firewall, p.FirewallRule = action, int16(rule)
		if action == firewall.Allow {
			continue
		}
		p.Verdict, p.Reason = Drop, ReasonFirewallDeny
		if p.ICMPError || svc.Stateless || svc.QUIC != nil {
			continue
		}
		e, _ := c.Flows.LookupOrInsert(&p.Key, p.Hash, c.Now)
		if e == nil {
			continue // table full and nothing evictable: judged again next time
		}
		// Short-lived whatever the packet: a denied flow's entry must not
		// hold the table as an established connection would.
		e.State = flow.StateSYN
		if p.Key.Proto != packet.ProtoTCP {
			e.State = flow.StateUDP
		}
		if e.NATPort != 0 && c.NAT != nil {
			// A full-NAT flow now denied: its binding and port go, so the
			// backend's replies are no longer translated to the client.
			c.NAT.Removed(e)
			e.NATAddr, e.NATPort = 0, 0
		}
		e.Backend, e.Gen, e.LastSeen = Denied, c.Gen.ID, c.Now
	}
}

// RuleKey names a firewall rule's hit counter: the service (VIP) and the
// rule's label (RuleLabel).
type RuleKey struct{ VIP, Rule string }

// RuleLabel is the name of rule i of s in counters and traces: its Name,
// else its index; "default" for -1.
func RuleLabel(s *firewall.Set, i int) string {
	if i < 0 {
		return "default"
	}
	if n := s.Rule(i).Name; n != "" {
		return n
	}
	return strconv.Itoa(i)
}

// FirewallHits are one worker's firewall rule hit counts: per service of
// the current generation (firewall.Counters, plain increments), and the
// sums of earlier generations by RuleKey, so that counts survive reloads.
// Owned by the worker; read through its snapshot.
type FirewallHits struct {
	gen  *Generation
	cur  []*firewall.Counters // by Service.Index; nil: no rule list
	past map[RuleKey]uint64
}

// Hit counts an evaluation of svc's rule list in g that rule decided
// (-1: the default). The first hit in a new generation moves the counts
// of the previous one to the sums (and allocates).
func (h *FirewallHits) Hit(g *Generation, svc *Service, rule int) {
	if h.gen != g {
		h.rotate(g)
	}
	h.cur[svc.Index].Hit(rule)
}

func (h *FirewallHits) rotate(g *Generation) {
	if h.past == nil {
		h.past = make(map[RuleKey]uint64)
	}
	h.addTo(h.past)
	h.gen = g
	h.cur = make([]*firewall.Counters, len(g.Services))
	for i, s := range g.Services {
		if s.Firewall != nil {
			h.cur[i] = s.Firewall.NewCounters()
		}
	}
}

func (h *FirewallHits) addTo(m map[RuleKey]uint64) {
	for i, c := range h.cur {
		if c == nil {
			continue
		}
		s := h.gen.Services[i]
		for r := -1; r < s.Firewall.Len(); r++ {
			if n := c.Rule(r); n > 0 {
				m[RuleKey{s.Name, RuleLabel(s.Firewall, r)}] += n
			}
		}
	}
}

// Snapshot returns every count so far (rules never hit are absent).
func (h *FirewallHits) Snapshot() map[RuleKey]uint64 {
	m := maps.Clone(h.past)
	if m == nil {
		m = make(map[RuleKey]uint64)
	}
	h.addTo(m)
	return m
}

// Hit applies the memoised results of a flow's entry e to p if e is current
// in g (computed for this generation) and reports whether it was: the
// memoised stages are then skipped (Chain.RunCached). A denied flow's
// packet is dropped (ReasonFirewallDeny); otherwise p goes to the entry's
// backend. The caller then refreshes the entry with the packet, unless it
// is an ICMP error: a denied flow's entry only takes the time (it stays
// short-lived), any other observes the TCP flags (Entry.Observe). Small
// enough to be inlined in the worker.
func Hit(p *Packet, e *flow.Entry, g *Generation) bool {
	if e.Gen != g.ID {
		return false
	}
	if e.Backend == Denied {
		p.Verdict, p.Reason = Drop, ReasonFirewallDeny
		return true
	}
	p.Real, p.Why = g.Reals[e.Backend], WhyFlowEntry
	p.NATAddr, p.NATPort = e.NATAddr, e.NATPort // a full-NAT flow's binding
	return true
}
