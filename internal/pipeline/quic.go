package pipeline

import (
	"errors"
	"fmt"

	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/maglev"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/quiclb"
)

// QUICRoute is how balance chose the backend of a packet of a QUIC
// service; the worker counts packets by it.
type QUICRoute uint8

const (
	// QUICNone: not a packet of a QUIC service (or one routed as an ICMP
	// error).
	QUICNone QUICRoute = iota
	// QUICByCID: the server ID in the destination connection ID names a
	// backend of the service.
	QUICByCID
	// QUICByDCIDHash: a long header whose DCID is not one of the service's
	// (a client's Initial or 0-RTT): the Maglev slot of the DCID's hash, so
	// every packet of the handshake reaches one server whatever the
	// client's address and port.
	QUICByDCIDHash
	// QUICByTuple: a short header whose DCID is not one of the service's,
	// or a payload too short for a QUIC header: the 4-tuple's Maglev slot.
	QUICByTuple
	// NumQUICRoutes is the number of routes, for counter arrays.
	NumQUICRoutes
)

var quicRouteNames = [NumQUICRoutes]string{"none", "cid", "dcid_hash", "tuple"}

// String returns the route's metric label.
func (r QUICRoute) String() string {
	if r < NumQUICRoutes {
		return quicRouteNames[r]
	}
	return "unknown"
}

// QUIC is a service's routing by QUIC connection ID (QUIC-LB, DESIGN.md
// §3.6). It is immutable once built, like the rest of a Generation.
//
// Every packet of a QUIC service is routed by its own header, and the
// service keeps no flow entries: the connection ID is the connection's
// state, and deciding from the packet alone is what lets every LB node
// route a connection the same way whatever 4-tuple it arrives with (after
// a migration or a NAT rebinding the 4-tuple is new, and ECMP may bring it
// to another node). An entry keyed by the old 4-tuple would even be wrong:
// a client that opens a second connection from the same socket sends its
// Initial with a new DCID, which must go where that DCID hashes.
type QUIC struct {
	codec   *quiclb.Codec
	cidLen  int // DCID length of short headers: the codec's CID length
	servers map[quiclb.ServerID]*Real
}

func newQUIC(ss ServiceSpec, byName map[string]*Real) (*QUIC, error) {
	if ss.Proto != packet.ProtoUDP {
		return nil, errors.New("QUIC routing needs protocol udp (17)")
	}
	q := &QUIC{codec: ss.QUIC, cidLen: ss.QUIC.CIDLen(), servers: make(map[quiclb.ServerID]*Real, len(ss.Backends))}
	for bi, bs := range ss.Backends {
		if n := bs.ServerID.Len(); n != q.codec.ServerIDLen() {
			return nil, fmt.Errorf("backends[%d]: server ID %q has %d octets; the QUIC configuration's have %d", bi, bs.ServerID, n, q.codec.ServerIDLen())
		}
		if other := q.servers[bs.ServerID]; other != nil {
			return nil, fmt.Errorf("backends[%d]: server ID %s is also backend %s's", bi, bs.ServerID, other.Name)
		}
		name := bs.Name
		if name == "" {
			name = bs.Tunnel.Dst.String()
		}
		q.servers[bs.ServerID] = byName[name]
	}
	return q, nil
}

// Codec returns the service's QUIC-LB codec.
func (q *QUIC) Codec() *quiclb.Codec { return q.codec }

// CIDLen returns the DCID length the service reads from short headers.
func (q *QUIC) CIDLen() int { return q.cidLen }

// Server returns the backend of the service that has server ID sid, or nil.
func (q *QUIC) Server(sid quiclb.ServerID) *Real { return q.servers[sid] }

// RouteQUIC returns the backend a packet of QUIC service s with this UDP
// payload goes to, and why: balance's rules, exported for the tools that
// explain the datapath's decisions. seed is the generation's, tupleHash the
// packet's flow.Key hash with it; unknownServer reports a DCID that decoded
// to a server ID no backend has. r is nil when the Maglev table is empty.
// s.QUIC must not be nil. It never allocates.
func (s *Service) RouteQUIC(seed, tupleHash uint64, payload []byte) (r *Real, route QUICRoute, unknownServer bool) {
	q := s.QUIC
	hash, route := tupleHash, QUICByTuple
	if dcid, long, ok := packet.QUIC(payload).DestCID(q.cidLen); ok {
		// A long header's DCID must be exactly one of ours: a client's
		// random Initial DCID that merely starts like one is hashed. A
		// short header's DCID is by definition the configured length.
		if !long || len(dcid) == q.cidLen {
			if sid, err := q.codec.DecodeServerID(dcid); err == nil {
				if r := q.servers[sid]; r != nil {
					return r, QUICByCID, false
				}
				unknownServer = true
			}
		}
		if long {
			hash, route = flow.HashBytes(dcid, seed), QUICByDCIDHash
		}
	}
	owner, _ := s.Table.Slot(hash)
	if owner == maglev.NoBackend {
		return nil, route, unknownServer
	}
	return s.Reals[owner], route, unknownServer
}
