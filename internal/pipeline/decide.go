package pipeline

import (
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/maglev"
)

// Why is the rule that chose a packet's backend (Decision.Why).
type Why uint8

const (
	// WhyNoBackend: no rule found one (an empty Maglev table); the packet
	// is dropped (ReasonNoBackend).
	WhyNoBackend Why = iota
	// WhyFlowEntry: the flow's entry names a backend still in the service
	// (the backend choice is connection state).
	WhyFlowEntry
	// WhyMaglev: the owner of the flow's Maglev slot: a new flow, or one
	// whose entry names a backend that left the service.
	WhyMaglev
	// WhySecondChance: a mid-flow packet without an entry whose slot
	// changed owner: the owner, with the hop list [owner, previous owner]
	// (Decision.Secondary).
	WhySecondChance
	// WhyStateless: a service without flow entries (affinity stateless):
	// the owner of the slot.
	WhyStateless
	// WhyQUICCID: the server ID in the QUIC destination connection ID
	// names a backend of the service.
	WhyQUICCID
	// WhyQUICDCIDHash: a QUIC long header whose DCID is not the service's:
	// the owner of the DCID hash's slot.
	WhyQUICDCIDHash
	// WhyQUICTuple: any other packet of a QUIC service: the owner of the
	// 4-tuple's slot, without a flow entry.
	WhyQUICTuple
	// NumWhys is the number of rules, for arrays.
	NumWhys
)

var whyNames = [NumWhys]string{
	"no_backend", "flow_entry", "maglev", "second_chance", "stateless", "quic_cid", "quic_dcid_hash", "quic_tuple",
}

// String returns the rule's name.
func (w Why) String() string {
	if w < NumWhys {
		return whyNames[w]
	}
	return "unknown"
}

// Query is what Decide reads of a packet besides its service and its flow
// entry.
type Query struct {
	Hash      uint64 // the flow key's hash with the generation's seed
	SYN       bool   // a TCP SYN (without ACK)
	ICMPError bool   // an ICMP error: Hash is that of the flow it quotes
	// Payload is the UDP payload, read only for a QUIC service's packets
	// (nil: no QUIC header, the 4-tuple rule).
	Payload []byte
}

// Decision is the backend a packet goes to and why.
type Decision struct {
	Real *Real // nil: dropped (WhyNoBackend)
	// Secondary is the previous owner the hop list names after Real
	// (WhySecondChance); nil otherwise.
	Secondary *Real
	Why       Why
	// Rescheduled: the flow entry Decide was given names a backend no
	// longer in the service.
	Rescheduled bool
	// QUICRoute and QUICUnknownServer are the QUIC route's counters
	// (QUICNone for other services and ICMP errors).
	QUICRoute         QUICRoute
	QUICUnknownServer bool
}

// Decide is the datapath's choice of a backend for a packet of svc in g:
// balance calls it for every packet it decides, and tools that explain
// the datapath (`sluice ctl flow lookup`) call it with the live flow
// tables, so both always agree. e is the flow's entry in the worker's
// table, nil if it has none; Decide ignores it where balance does not look
// (stateless and QUIC services). It only reads: what balance then does to
// the flow table follows from the Decision. It never allocates.
//
// The rules, in order:
//  1. An ICMP error: the quoted flow's entry if its backend is in the
//     service, else the owner of its slot; never a hop list.
//  2. A QUIC service: RouteQUIC (connection ID, DCID hash, 4-tuple).
//  3. An entry whose backend is still in the service: that backend.
//  4. The owner of the flow's Maglev slot. With second chance, a packet
//     that is not a SYN, has no entry, and whose slot changed owner to
//     the previous owner that is still in the generation carries the
//     hop list [owner, previous owner].
func (g *Generation) Decide(svc *Service, q *Query, e *flow.Entry) Decision {
	var d Decision
	if q.ICMPError {
		if e != nil {
			if r := g.real(e.Backend, svc); r != nil {
				return Decision{Real: r, Why: WhyFlowEntry}
			}
		}
		if owner, _ := svc.Table.Slot(q.Hash); owner != maglev.NoBackend {
			d.Real, d.Why = svc.Reals[owner], WhyMaglev
		}
		return d
	}
	if svc.QUIC != nil {
		r, route, unknown := svc.RouteQUIC(g.Seed, q.Hash, q.Payload)
		d.QUICRoute, d.QUICUnknownServer = route, unknown
		if r != nil {
			d.Real = r
			switch route {
			case QUICByCID:
				d.Why = WhyQUICCID
			case QUICByDCIDHash:
				d.Why = WhyQUICDCIDHash
			default:
				d.Why = WhyQUICTuple
			}
		}
		return d
	}
	if svc.Stateless {
		e = nil
	}
	if e != nil {
		if r := g.real(e.Backend, svc); r != nil {
			return Decision{Real: r, Why: WhyFlowEntry}
		}
		d.Rescheduled = true
	}
	owner, prev := svc.Table.Slot(q.Hash)
	if owner == maglev.NoBackend {
		return d
	}
	d.Real, d.Why = svc.Reals[owner], WhyMaglev
	if svc.Stateless {
		d.Why = WhyStateless
	}
	if e == nil && svc.SecondChance && !q.SYN && prev != owner && prev != maglev.NoBackend {
		if sec := svc.Reals[prev]; sec != nil { // nil if the previous owner has left
			d.Secondary, d.Why = sec, WhySecondChance
		}
	}
	return d
}
