package control

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

// TraceQuery is a hypothetical packet for TraceFlow.
type TraceQuery struct {
	Tenant string // "" : the default tenant (the only one until tenants are configured)
	Proto  string // tcp | udp
	Src    netip.AddrPort
	Dst    netip.AddrPort
	// TCPFlags: syn (default), ack, fin or rst, for a TCP packet.
	TCPFlags string
}

// FlowTrace is what the datapath does with a packet, stage by stage.
type FlowTrace struct {
	Protocol           string `json:"protocol"`
	Src                string `json:"src"`
	Dst                string `json:"dst"`
	TCPFlags           string `json:"tcp_flags,omitempty"`
	Tenant             string `json:"tenant,omitempty"`
	DatapathGeneration uint32 `json:"datapath_generation"`
	// Entries are the flow's entries in the workers' tables; ShortCut
	// says the one the packet meets is current: its memoised results
	// stand in for classify, firewall and balance.
	Entries  []FlowEntry          `json:"entries"`
	ShortCut bool                 `json:"short_cut"`
	Steps    []pipeline.TraceStep `json:"steps"`
	// The outcome: the verdict (forward, drop, pass, reply, spill), the
	// drop reason, the VIP and backend.
	Verdict   string `json:"verdict"`
	Reason    string `json:"reason,omitempty"`
	VIP       string `json:"vip,omitempty"`
	Backend   string `json:"backend,omitempty"`
	Secondary string `json:"secondary,omitempty"`
}

var traceFlags = map[string]uint8{"syn": sim.SYN, "ack": sim.ACK, "fin": sim.FIN | sim.ACK, "rst": sim.RST}

// TraceFlow runs a hypothetical packet through the live generation's
// stages: it builds the frame, reads the flow's entry from the workers'
// tables and calls pipeline.TraceFrame, which runs the datapath's own
// stages (pipeline.DefaultChain, the worker's chain) on a scratch copy, so
// its answer is what the packet meets. Nothing live changes. Bad
// arguments: ErrInvalidQuery.
func (s *Server) TraceFlow(q TraceQuery) (tr FlowTrace, err error) {
	var proto uint8
	switch q.Proto {
	case "tcp":
		proto = packet.ProtoTCP
	case "udp":
		proto = packet.ProtoUDP
	default:
		return FlowTrace{}, fmt.Errorf("%w: protocol %q is not tcp or udp", ErrInvalidQuery, q.Proto)
	}
	src, dst := unmapAP(q.Src), unmapAP(q.Dst)
	if !src.IsValid() || !dst.IsValid() || src.Addr().Is4() != dst.Addr().Is4() {
		return FlowTrace{}, fmt.Errorf("%w: %v -> %v: two address:port of one family are needed", ErrInvalidQuery, q.Src, q.Dst)
	}
	f := sim.Frame{Src: src, Dst: dst, Proto: proto}
	tr = FlowTrace{Protocol: q.Proto, Src: src.String(), Dst: dst.String(), Entries: []FlowEntry{}, Steps: []pipeline.TraceStep{}}
	if proto == packet.ProtoTCP {
		if q.TCPFlags == "" {
			q.TCPFlags = "syn"
		}
		flags, ok := traceFlags[strings.ToLower(q.TCPFlags)]
		if !ok {
			return FlowTrace{}, fmt.Errorf("%w: tcp flags %q are not syn, ack, fin or rst", ErrInvalidQuery, q.TCPFlags)
		}
		f.TCPFlags, tr.TCPFlags = flags, strings.ToLower(q.TCPFlags)
	}
	frame := make([]byte, f.Len())
	f.Encode(frame)

	g := s.node.Generation()
	if g == nil {
		tr.Verdict, tr.Reason = "pass", "no configuration applied yet"
		return tr, nil
	}
	tr.DatapathGeneration = g.ID
	tenant, ok := g.TenantByName(q.Tenant)
	if !ok {
		return FlowTrace{}, fmt.Errorf("%w: tenant %q is not configured", ErrInvalidQuery, q.Tenant)
	}
	switch {
	case tenant == 0:
	case g.TenantVNI(tenant) != 0:
		// The tenant's packet as it arrives: VXLAN with its VNI to the
		// node's VTEP address, which the datapath decapsulates.
		if frame, err = vxlanFrame(g, tenant, frame); err != nil {
			return FlowTrace{}, err
		}
		tr.Tenant = q.Tenant
	default:
		// Tagged with the tenant's VLAN.
		vid := g.TenantVLAN(tenant)
		frame = append(frame[:12:12], append([]byte{0x81, 0x00, byte(vid >> 8), byte(vid)}, frame[12:]...)...)
		tr.Tenant = q.Tenant
	}
	key := flow.MakeKey(proto, src, dst)
	key.Tenant = tenant
	hash := key.Hash(g.Seed)
	now := s.node.FlowClock()
	// The entry the worker would meet: of several workers' (a flow's
	// packets reach one), the current one first.
	var entry *flow.Entry
	var entryCopy flow.Entry
	s.node.QueryFlows(func(worker int, t *flow.Table) {
		e := t.Lookup(&key, hash)
		if e == nil {
			return
		}
		fe := FlowEntry{Worker: worker, State: e.State.String(), Generation: e.Gen, Expired: t.Expired(e, now)}
		if age := int32(now - e.LastSeen); age > 0 {
			fe.AgeMillis = uint32(age)
		}
		switch {
		case e.Backend == pipeline.Denied:
			fe.Backend = "(denied)"
		case int(e.Backend) < len(g.Reals) && g.Reals[e.Backend] != nil:
			fe.Backend, fe.InService = g.Reals[e.Backend].Name, true
		}
		if entry == nil || e.Gen == g.ID && entryCopy.Gen != g.ID {
			entryCopy = *e // copied: the pointer is only valid inside fn
			entry = &entryCopy
		}
		tr.Entries = append(tr.Entries, fe)
	})
	t := pipeline.TraceFrame(pipeline.DefaultChain(), g, frame, entry, now, true)
	tr.Steps, tr.ShortCut = t.Steps, t.Hit
	p := &t.Packet
	tr.Verdict = p.Verdict.String()
	if p.Verdict == pipeline.Drop {
		tr.Reason = p.Reason.String()
	}
	if svc := g.LookupTenant(tenant, key.Dst, proto, dst.Port()); svc != nil {
		tr.VIP = svc.Name
	}
	if p.Real != nil {
		tr.Backend = p.Real.Name
	}
	if p.Secondary != nil {
		tr.Secondary = p.Secondary.Name
	}
	return tr, nil
}

func unmapAP(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// vxlanFrame wraps an Ethernet frame in VXLAN with tenant's VNI toward the
// node's VTEP address (from a documentation source address: the trace's
// packet is hypothetical).
func vxlanFrame(g *pipeline.Generation, tenant uint8, inner []byte) ([]byte, error) {
	vtep, port, _ := g.VTEP()
	if !vtep.Is4() {
		return nil, fmt.Errorf("%w: tracing a tenant's packet to an IPv6 VTEP address is not supported", ErrInvalidQuery)
	}
	const hdr = 14 + 20 + 8 + 8
	b := make([]byte, hdr+len(inner))
	be := binary.BigEndian
	be.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, packet.ProtoUDP
	be.PutUint16(ip[2:], uint16(20+8+8+len(inner)))
	copy(ip[12:16], []byte{192, 0, 2, 1})
	a := vtep.As4()
	copy(ip[16:20], a[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(be.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	be.PutUint16(ip[10:], ^uint16(sum))
	be.PutUint16(b[34:], 49152)
	be.PutUint16(b[36:], port)
	be.PutUint16(b[38:], uint16(8+8+len(inner)))
	b[42] = packet.VXLANFlagI
	be.PutUint32(b[46:], g.TenantVNI(tenant)<<8)
	copy(b[hdr:], inner)
	return b, nil
}
