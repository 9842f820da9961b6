package control

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/lbnode"
	"github.com/sluicelb/sluice/internal/maglev"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// FlowTables is what LookupFlow needs of a node to read its workers' flow
// tables; *lbnode.Node implements it. Without it LookupFlow reports the
// Maglev decision only.
type FlowTables interface {
	// QueryFlows runs fn on each worker's flow table, read-only, between
	// batches.
	QueryFlows(fn func(worker int, t *flow.Table))
	// FlowClock returns the flow clock reading Entry.LastSeen compares with.
	FlowClock() uint32
}

var _ FlowTables = (*lbnode.Node)(nil)

// ErrInvalidQuery: a query's arguments do not make sense (an address that
// does not parse, a port the VIP does not serve...).
var ErrInvalidQuery = errors.New("invalid query")

// Why the next packet of a flow goes where it goes (FlowLookup.Reason).
const (
	ReasonFlowEntry = "flow entry" // a flow entry names a backend still in the service
	ReasonMaglev    = "maglev"     // no usable entry: the owner of the flow's Maglev slot
	ReasonNoBackend = "no backend" // no entry and an empty Maglev table: dropped
)

// FlowLookup is where the next packet of one flow goes, and why.
type FlowLookup struct {
	VIP                string `json:"vip"`
	Protocol           string `json:"protocol"`
	Src                string `json:"src"` // client address:port
	Dst                string `json:"dst"` // VIP address:port
	Hash               uint64 `json:"hash"`
	DatapathGeneration uint32 `json:"datapath_generation"`
	// The flow's Maglev slot (hash % table size), its owner and the owner
	// it had in the table before ("" for none).
	Slot           uint32 `json:"slot"`
	MaglevOwner    string `json:"maglev_owner"`
	MaglevPrevious string `json:"maglev_previous"`
	// FlowTables says whether the workers' flow tables were read; Entries
	// are the flow's entries found there (normally at most one: the flow's
	// packets reach one worker).
	FlowTables bool        `json:"flow_tables"`
	Entries    []FlowEntry `json:"entries"`
	// Backend is where the next packet goes ("" when it is dropped), for
	// Reason; Detail says it in words.
	Backend string `json:"backend"`
	Reason  string `json:"reason"`
	Detail  string `json:"detail"`
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

// LookupFlow says where the next packet from client src to the VIP vip
// goes and why. dport is the destination port; 0 means the VIP's port
// (required for a VIP with a port range or every port). It mirrors the
// datapath's decision: a flow entry whose backend is still in the service
// wins; otherwise the owner of the flow's Maglev slot. Unknown VIP:
// ErrNotFound; bad arguments: ErrInvalidQuery.
func (s *Server) LookupFlow(vip string, src netip.AddrPort, dport uint16) (FlowLookup, error) {
	g := s.node.Generation()
	var svc *pipeline.Service
	if g != nil {
		for _, sv := range g.Services {
			if sv.Name == vip {
				svc = sv
				break
			}
		}
	}
	if svc == nil {
		return FlowLookup{}, &EditError{VIP: vip, Err: ErrNotFound}
	}
	vaddr := netip.AddrFrom16(svc.Addr).Unmap()
	if !src.IsValid() || src.Addr().Is4() != vaddr.Is4() {
		return FlowLookup{}, fmt.Errorf("%w: source %v is not an address:port of the VIP's family", ErrInvalidQuery, src)
	}
	if dport == 0 {
		if svc.PortLo != svc.PortHi || svc.PortLo == 0 {
			return FlowLookup{}, fmt.Errorf("%w: vip %q serves several ports: name the destination port", ErrInvalidQuery, vip)
		}
		dport = svc.PortLo
	}
	dst := netip.AddrPortFrom(vaddr, dport)
	key := flow.MakeKey(svc.Proto, src, dst)
	if !(svc.PortLo == 0 && svc.PortHi == 0) && (dport < svc.PortLo || dport > svc.PortHi) {
		return FlowLookup{}, fmt.Errorf("%w: vip %q does not serve port %d", ErrInvalidQuery, vip, dport)
	}
	hash := key.Hash(g.Seed)
	l := FlowLookup{
		VIP: vip, Protocol: protoName(svc.Proto), Src: src.String(), Dst: dst.String(),
		Hash: hash, DatapathGeneration: g.ID, Entries: []FlowEntry{},
	}

	owner, prev := maglev.NoBackend, maglev.NoBackend
	if svc.Table != nil {
		l.Slot = uint32(hash % uint64(svc.Table.M()))
		owner, prev = svc.Table.Slot(hash)
		l.MaglevOwner, l.MaglevPrevious = backendName(svc.Table, owner), backendName(svc.Table, prev)
	}

	var entryReal *pipeline.Real
	if ft, ok := s.node.(FlowTables); ok {
		l.FlowTables = true
		ft.QueryFlows(func(worker int, t *flow.Table) {
			e := t.Lookup(&key, hash)
			if e == nil {
				return
			}
			now := ft.FlowClock()
			fe := FlowEntry{
				Worker: worker, State: e.State.String(), Generation: e.Gen,
				Expired: t.Expired(e, now),
			}
			if age := int32(now - e.LastSeen); age > 0 {
				fe.AgeMillis = uint32(age)
			}
			if r := realOf(g, svc, e.Backend); r != nil {
				fe.Backend, fe.InService = r.Name, true
				if entryReal == nil {
					entryReal = r
				}
			}
			l.Entries = append(l.Entries, fe)
		})
	}

	switch {
	case entryReal != nil:
		l.Backend, l.Reason = entryReal.Name, ReasonFlowEntry
		l.Detail = fmt.Sprintf("the flow's entry keeps it on %s", entryReal.Name)
		if l.MaglevOwner != entryReal.Name {
			l.Detail += fmt.Sprintf(" (a new flow in its slot would go to %s)", orNone(l.MaglevOwner))
		}
	case owner != maglev.NoBackend:
		l.Backend, l.Reason = l.MaglevOwner, ReasonMaglev
		switch {
		case !l.FlowTables:
			l.Detail = "owner of the flow's Maglev slot (flow tables not available)"
		case len(l.Entries) > 0:
			l.Detail = "the flow's entry names a backend no longer in the service: rescheduled to the owner of its Maglev slot"
		default:
			l.Detail = "no flow entry: a new flow goes to the owner of its Maglev slot"
		}
	default:
		l.Reason = ReasonNoBackend
		l.Detail = "no flow entry and no backend in the Maglev table: dropped (no_backend)"
	}
	if r := realByName(svc, l.Backend); r != nil && r.Template == nil {
		l.Detail += "; its next hop is unresolved: dropped (no_next_hop)"
	}
	if svc.QUIC != nil {
		l.Detail += "; but the VIP routes QUIC packets by connection ID (sluice ctl quic decode): this is where packets whose DCID is not routable go"
	}
	return l, nil
}

// realOf is the backend id of svc in g, or nil (pipeline's rule for a flow
// entry's backend).
func realOf(g *pipeline.Generation, svc *pipeline.Service, id uint32) *pipeline.Real {
	if int(id) < len(g.Reals) {
		if r := g.Reals[id]; r != nil && r.Service == svc.Index {
			return r
		}
	}
	return nil
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
