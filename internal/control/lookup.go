package control

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/maglev"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// FlowFinder reads the workers' flow tables.
type FlowFinder interface {
	// QueryFlows runs fn on each worker's flow table, read-only, between
	// batches.
	QueryFlows(fn func(worker int, t *flow.Table))
	// FlowClock returns the flow clock reading Entry.LastSeen compares with.
	FlowClock() uint32
}

// ErrInvalidQuery: a query's arguments do not make sense (an address that
// does not parse, a port the VIP does not serve...).
var ErrInvalidQuery = errors.New("invalid query")

// Why the next packet of a flow goes where it goes (FlowLookup.Reason):
// the names of pipeline.Why, the datapath's own rules.
var (
	ReasonFlowEntry    = pipeline.WhyFlowEntry.String()    // a flow entry names a backend still in the service
	ReasonMaglev       = pipeline.WhyMaglev.String()       // no usable entry: the owner of the flow's Maglev slot
	ReasonSecondChance = pipeline.WhySecondChance.String() // the owner, with the hop list [owner, previous owner]
	ReasonStateless    = pipeline.WhyStateless.String()    // stateless VIP: the owner of the slot
	ReasonQUICCID      = pipeline.WhyQUICCID.String()      // the QUIC connection ID's server ID
	ReasonQUICDCIDHash = pipeline.WhyQUICDCIDHash.String() // a QUIC long header with a DCID not ours: its hash's slot
	ReasonQUICTuple    = pipeline.WhyQUICTuple.String()    // a QUIC VIP's other packets: the 4-tuple's slot
	ReasonNoBackend    = pipeline.WhyNoBackend.String()    // an empty Maglev table: dropped
)

// FlowQuery names a flow and the packet of it to look up.
type FlowQuery struct {
	VIP string         // the VIP's name
	Src netip.AddrPort // the client's address and port
	// DstPort is the destination port; 0 means the VIP's port (required
	// for a VIP with a port range or every port).
	DstPort uint16
	// SYN asks about a TCP SYN (a new connection); otherwise a packet in
	// the middle of the flow.
	SYN bool
	// Payload is the start of the UDP payload (for a QUIC VIP: the QUIC
	// header, whose connection ID routes it); nil: none.
	Payload []byte
}

// FlowLookup is where the next packet of one flow goes, and why.
type FlowLookup struct {
	VIP                string `json:"vip"`
	Protocol           string `json:"protocol"`
	Src                string `json:"src"` // client address:port
	Dst                string `json:"dst"` // VIP address:port
	Hash               uint64 `json:"hash"`
	DatapathGeneration uint32 `json:"datapath_generation"`
	// The flow's Maglev slot, its owner and the owner it had in the
	// table before ("" for none).
	Slot           uint32 `json:"slot"`
	MaglevOwner    string `json:"maglev_owner"`
	MaglevPrevious string `json:"maglev_previous"`
	// FlowTables says whether the workers' flow tables were read; Entries
	// are the flow's entries found there (normally at most one: the flow's
	// packets reach one worker).
	FlowTables bool        `json:"flow_tables"`
	Entries    []FlowEntry `json:"entries"`
	// Backend is where the next packet goes ("" when it is dropped), for
	// Reason (the datapath's rule, pipeline.Why); Secondary the previous
	// owner its hop list names after it (second chance), if any. Detail
	// says it in words.
	Backend   string `json:"backend"`
	Secondary string `json:"secondary,omitempty"`
	Reason    string `json:"reason"`
	Detail    string `json:"detail"`
}

// FlowEntry is a flow's entry in one worker's table.
type FlowEntry struct {
	Worker     int    `json:"worker"`
	Backend    string `json:"backend"`    // "" when the backend is no longer in the service
	InService  bool   `json:"in_service"` // the backend is still one of the VIP's
	State      string `json:"state"`      // syn, established, closing, udp
	AgeMillis  uint32 `json:"age_ms"`     // since the last packet
	Expired    bool   `json:"expired"`    // idle past its timeout; steers until reaped
	Generation uint32 `json:"generation"` // datapath generation it was last confirmed in
}

// LookupFlow says where the next packet of q's flow goes and why. It asks
// the datapath's own decision, pipeline.Generation.Decide, with the live
// generation and the flow's entry in the workers' tables, so its answer is
// what the packet meets. Unknown VIP: ErrNotFound; bad arguments:
// ErrInvalidQuery.
func (s *Server) LookupFlow(q FlowQuery) (FlowLookup, error) {
	g := s.node.Generation()
	var svc *pipeline.Service
	if g != nil {
		for _, sv := range g.Services {
			if sv.Name == q.VIP {
				svc = sv
				break
			}
		}
	}
	if svc == nil {
		return FlowLookup{}, &EditError{VIP: q.VIP, Err: ErrNotFound}
	}
	src, dport := q.Src, q.DstPort
	vaddr := netip.AddrFrom16(svc.Addr).Unmap()
	if !src.IsValid() || src.Addr().Is4() != vaddr.Is4() {
		return FlowLookup{}, fmt.Errorf("%w: source %v is not an address:port of the VIP's family", ErrInvalidQuery, src)
	}
	if dport == 0 {
		if svc.PortLo != svc.PortHi || svc.PortLo == 0 {
			return FlowLookup{}, fmt.Errorf("%w: vip %q serves several ports: name the destination port", ErrInvalidQuery, q.VIP)
		}
		dport = svc.PortLo
	}
	if q.SYN && svc.Proto != packet.ProtoTCP {
		return FlowLookup{}, fmt.Errorf("%w: vip %q is not TCP: no SYN", ErrInvalidQuery, q.VIP)
	}
	dst := netip.AddrPortFrom(vaddr, dport)
	key := flow.MakeKey(svc.Proto, src, dst)
	key.Tenant = svc.Tenant // the VIP's tenant's flow
	if !(svc.PortLo == 0 && svc.PortHi == 0) && (dport < svc.PortLo || dport > svc.PortHi) {
		return FlowLookup{}, fmt.Errorf("%w: vip %q does not serve port %d", ErrInvalidQuery, q.VIP, dport)
	}
	hash := key.Hash(g.Seed)
	l := FlowLookup{
		VIP: q.VIP, Protocol: protoName(svc.Proto), Src: src.String(), Dst: dst.String(),
		Hash: hash, DatapathGeneration: g.ID, Entries: []FlowEntry{}, FlowTables: true,
	}
	if svc.Table != nil {
		l.Slot = svc.Table.SlotIndex(hash)
		owner, prev := svc.Table.Slot(hash)
		l.MaglevOwner, l.MaglevPrevious = backendName(svc.Table, owner), backendName(svc.Table, prev)
	}

	// The entry the datapath would find: the worker's table holds at most
	// one per flow; of several workers', the first whose backend is still
	// in the service.
	var entry *flow.Entry
	var entryCopy flow.Entry
	now := s.node.FlowClock()
	s.node.QueryFlows(func(worker int, t *flow.Table) {
		e := t.Lookup(&key, hash)
		if e == nil {
			return
		}
		fe := FlowEntry{Worker: worker, State: e.State.String(), Generation: e.Gen, Expired: t.Expired(e, now)}
		if age := int32(now - e.LastSeen); age > 0 {
			fe.AgeMillis = uint32(age)
		}
		if r := g.Real(e.Backend, svc); r != nil {
			fe.Backend, fe.InService = r.Name, true
		}
		if entry == nil || fe.InService && g.Real(entryCopy.Backend, svc) == nil {
			entryCopy = *e // copied: the pointer is only valid inside fn
			entry = &entryCopy
		}
		l.Entries = append(l.Entries, fe)
	})
	pq := pipeline.Query{Hash: hash, SYN: q.SYN, Payload: q.Payload}
	d := g.Decide(svc, &pq, entry)
	l.Reason = d.Why.String()
	if d.Real != nil {
		l.Backend = d.Real.Name
	}
	if d.Secondary != nil {
		l.Secondary = d.Secondary.Name
	}
	switch d.Why {
	case pipeline.WhyFlowEntry:
		l.Detail = fmt.Sprintf("the flow's entry keeps it on %s", l.Backend)
		if l.MaglevOwner != l.Backend {
			l.Detail += fmt.Sprintf(" (a new flow in its slot would go to %s)", orNone(l.MaglevOwner))
		}
	case pipeline.WhyMaglev:
		switch {
		case d.Rescheduled:
			l.Detail = "the flow's entry names a backend no longer in the service: rescheduled to the owner of its Maglev slot"
		case q.SYN:
			l.Detail = "a new connection goes to the owner of its Maglev slot"
		default:
			l.Detail = "no flow entry: the owner of the flow's Maglev slot"
		}
	case pipeline.WhySecondChance:
		l.Detail = fmt.Sprintf("no flow entry and the slot changed owner: sent to %s with the hop list [%s, %s]; the owner's agent hands it to %s unless it has the connection",
			l.Backend, l.Backend, l.Secondary, l.Secondary)
	case pipeline.WhyStateless:
		l.Detail = "stateless VIP: every packet goes to the owner of its Maglev slot"
	case pipeline.WhyQUICCID:
		l.Detail = "the QUIC destination connection ID names this backend's server ID"
	case pipeline.WhyQUICDCIDHash:
		l.Detail = "a QUIC long header whose connection ID is not the VIP's: the owner of the DCID hash's Maglev slot"
	case pipeline.WhyQUICTuple:
		l.Detail = "a QUIC VIP's packet without a routable connection ID: the owner of the 4-tuple's Maglev slot (sluice ctl quic decode explains a connection ID)"
	default:
		l.Detail = "no backend in the Maglev table: dropped (no_backend)"
	}
	if r := realByName(svc, l.Backend); r != nil && !r.Resolved() {
		l.Detail += "; its next hop is unresolved: dropped (no_next_hop)"
	}
	return l, nil
}

func realByName(svc *pipeline.Service, name string) *pipeline.Real {
	for _, r := range svc.Reals {
		if r != nil && name != "" && r.Name == name {
			return r
		}
	}
	return nil
}

func backendName(t *maglev.Table, i uint16) string {
	if i == maglev.NoBackend || int(i) >= t.NumBackends() {
		return ""
	}
	return t.Backend(i).Name
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
