package pipeline

import (
	"fmt"

	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/packet"
)

// TraceStep is one step of a packet's trace: what the step saw and what it
// decided.
type TraceStep struct {
	Stage    string `json:"stage"` // "parse", "flow lookup", or a Stage's Name
	Input    string `json:"input"`
	Decision string `json:"decision"`
	Reason   string `json:"reason,omitempty"`
}

// Trace is what the pipeline did with one packet.
type Trace struct {
	Steps []TraceStep
	// Entry: the flow table held an entry for the packet's flow; Hit: it
	// was current, so its memoised results short-cut the memoised stages.
	Entry, Hit bool
	// Packet is the packet after the last step: Verdict, Reason, Service
	// (nil on a hit), Real, Secondary, Why, Firewall, FirewallRule.
	Packet Packet
}

// TraceHeadroom is the room TraceFrame leaves before the frame for the
// outer headers encapsulate writes.
const TraceHeadroom = 256

// TraceFrame runs one Ethernet frame through chain as a worker runs a
// packet — Prepare, the flow lookup and Hit, then on a miss every stage
// (Chain.Run) and on a hit the per-packet ones (Chain.RunCached) — one
// stage at a time, recording what each saw and decided. The stages are
// the datapath's own, on a scratch Context: a scratch flow table holding a
// copy of live (the flow's entry in a worker's table, nil if none), fresh
// rate limits and rule counters. Nothing live is read but g and live, and
// nothing live is written. canSpill is Context.CanSpill.
func TraceFrame(chain *Chain, g *Generation, frame []byte, live *flow.Entry, now uint32, canSpill bool) *Trace {
	tr := &Trace{}
	p := &tr.Packet
	p.Buf = make([]byte, TraceHeadroom+len(frame))
	p.Off, p.Len = TraceHeadroom, len(frame)
	copy(p.Buf[TraceHeadroom:], frame)
	step := func(stage, input, decision, reason string) {
		tr.Steps = append(tr.Steps, TraceStep{Stage: stage, Input: input, Decision: decision, Reason: reason})
	}

	ok := Prepare(p, g)
	t := &p.Parsed.Tuple
	if !ok {
		reason := p.Reason.String()
		if p.Reason == ReasonParse {
			reason += ": " + p.Parsed.Verdict.String()
		}
		step("parse", fmt.Sprintf("%d-byte frame", len(frame)), verdictName(p.Verdict), reason)
		return tr
	}
	step("parse", fmt.Sprintf("%d-byte frame", len(frame)), "continue",
		fmt.Sprintf("%s %s -> %s, flow hash %016x", protoLabel(t.Proto), addrPort(t.SrcAddr(), t.SrcPort), addrPort(t.DstAddr(), t.DstPort), p.Hash))

	ctx := &Context{Gen: g, Flows: flow.NewTable(16, flow.DefaultTimeouts()), Now: now, CanSpill: canSpill}
	var e *flow.Entry
	if live != nil {
		tr.Entry = true
		e = ctx.Flows.Insert(&p.Key, p.Hash, now)
		e.State, e.Backend, e.Gen, e.LastSeen = live.State, live.Backend, live.Gen, live.LastSeen
		e.NATAddr, e.NATPort = live.NATAddr, live.NATPort
	}
	stages := chain.all
	switch {
	case e == nil:
		step("flow lookup", "flow table", "miss", "no entry: every stage runs")
	case Hit(p, e, g):
		tr.Hit = true
		stages = chain.perPacket
		what := "backend " + realName(p.Real)
		if e.Backend == Denied {
			what = "denied by the firewall"
		}
		step("flow lookup", "flow table", "hit",
			fmt.Sprintf("entry current in generation %d (%s): %s; classify, firewall and balance are skipped", e.Gen, e.State, what))
	default:
		was := "backend " + realName(g.RealByID(e.Backend))
		if e.Backend == Denied {
			was = "denied by the firewall"
		}
		step("flow lookup", "flow table", "miss",
			fmt.Sprintf("entry of generation %d (%s), now %d: every stage runs again (it was: %s)", e.Gen, e.State, g.ID, was))
	}
	for _, s := range stages {
		if p.Verdict != Continue {
			step(s.Name(), "-", "skipped", "the packet is "+verdictName(p.Verdict))
			continue
		}
		input := stageInput(s, p)
		n := p.Len
		s.Process(ctx, []*Packet{p})
		step(s.Name(), input, verdictName(p.Verdict), stageReason(s, p, n))
	}
	return tr
}

func realName(r *Real) string {
	if r == nil {
		return "none"
	}
	return r.Name
}

func protoLabel(p uint8) string {
	switch p {
	case packet.ProtoTCP:
		return "tcp"
	case packet.ProtoUDP:
		return "udp"
	}
	return fmt.Sprintf("proto %d", p)
}

func addrPort(a interface{ String() string }, port uint16) string {
	return fmt.Sprintf("%s port %d", a, port)
}

// String returns the verdict's name: continue, forward, pass, drop,
// reply, spill, held.
func (v Verdict) String() string { return verdictName(v) }

func verdictName(v Verdict) string {
	switch v {
	case Continue:
		return "continue"
	case Forward:
		return "forward"
	case Pass:
		return "pass"
	case Drop:
		return "drop"
	case Reply:
		return "reply"
	case Spill:
		return "spill"
	case Held:
		return "held"
	}
	return fmt.Sprintf("verdict(%d)", v)
}

func stageInput(s Stage, p *Packet) string {
	switch s.(type) {
	case NATReply:
		return "destination " + p.Key.DstAddr().String()
	case NATBind:
		return "service " + p.Service.Name
	case Classify:
		return fmt.Sprintf("destination %s %s", protoLabel(p.Key.Proto), addrPort(p.Key.DstAddr(), p.Key.DstPort))
	case Firewall:
		fw := p.Service.Firewall
		if fw == nil {
			return "service " + p.Service.Name + ": no rule list"
		}
		return fmt.Sprintf("service %s: %d rules, default %s; source %s", p.Service.Name, fw.Len(), fw.Default(), addrPort(p.Key.SrcAddr(), p.Key.SrcPort))
	case Balance:
		return fmt.Sprintf("service %s, flow hash %016x", p.Service.Name, p.Hash)
	case Route:
		return "backend " + realName(p.Real)
	case Encapsulate:
		return "backend " + realName(p.Real)
	}
	return ""
}

func stageReason(s Stage, p *Packet, n int) string {
	if _, fw := s.(Firewall); fw && p.Firewall != 0 {
		r := fmt.Sprintf("%s by rule %s", p.Firewall, RuleLabel(p.Service.Firewall, int(p.FirewallRule)))
		if p.Verdict == Drop {
			r += " (" + p.Reason.String() + ")"
		}
		return r
	}
	if p.Verdict == Drop || p.Verdict == Pass && p.Reason != ReasonNone {
		return p.Reason.String()
	}
	switch s.(type) {
	case NATReply:
		if p.Verdict == Continue {
			return "not an SNAT address: no full-NAT reply"
		}
		return "full-NAT reply, back to the client"
	case NATBind:
		if !p.Service.NAT {
			return "not a full-NAT service"
		}
		return fmt.Sprintf("SNAT port %d", p.NATPort)
	case Classify:
		if p.Service == nil {
			return "no service: left to the kernel"
		}
		return "service " + p.Service.Name
	case Firewall:
		return "allowed: no rule list"
	case Balance:
		r := fmt.Sprintf("backend %s (%s)", realName(p.Real), p.Why)
		if p.Secondary != nil {
			r += ", hop list [" + p.Real.Name + ", " + p.Secondary.Name + "]"
		}
		return r
	case Route:
		if p.Real.Route.Prefix.IsValid() {
			return "next hop by route " + p.Real.Route.String()
		}
		return "next hop by the kernel's main table"
	case Encapsulate:
		switch {
		case p.Verdict == Forward && p.Real.NAT != nil:
			return fmt.Sprintf("full-NAT rewrite to %s from SNAT port %d: %d-byte frame", p.Real.Name, p.NATPort, p.Len)
		case p.Verdict == Forward:
			return fmt.Sprintf("%s to %s: %d-byte frame (was %d)", p.Real.Template.Mode(), p.Real.Name, p.Len, n)
		case p.Verdict == Reply:
			return "too big once encapsulated: answered with an ICMP too big"
		case p.Verdict == Spill:
			return "too big once encapsulated: fragmented by the kernel"
		}
	}
	return ""
}
