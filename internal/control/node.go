package control

import (
	"errors"
	"net/netip"
)

// Drainer is what a node offers for node drain; *lbnode.Node implements it.
// A node without it cannot be drained (ErrNotSupported).
type Drainer interface {
	// SetDraining drains the node or returns it to service, and reports
	// whether that changed anything.
	SetDraining(bool) bool
	// Draining reports whether the node is drained.
	Draining() bool
	// Announcements returns the VIP prefixes the node announces now.
	Announcements() []netip.Prefix
}

// PeerReporter is a node that announces its VIPs to routing peers.
type PeerReporter interface {
	Peers() []PeerStatus
}

// PeerStatus is one routing (BGP) peer of the node.
type PeerStatus struct {
	Address string `json:"address"`
	ASN     uint32 `json:"asn"`
	State   string `json:"state"` // idle, connect, active, opensent, openconfirm, established
	// Uptime is the time the session has been established, in seconds.
	Uptime float64 `json:"uptime_seconds"`
	// Resets counts the times the session left Established.
	Resets uint64 `json:"resets"`
	// Advertised is the number of prefixes announced to the peer.
	Advertised int  `json:"advertised"`
	BFD        bool `json:"bfd"`
	// BFDState is the BFD session's state when BFD is on (up, down, init).
	BFDState string `json:"bfd_state,omitempty"`
}

// NodeStatus is the node's service state.
type NodeStatus struct {
	// Draining: the node withdrew its VIP announcements (node drain) and
	// forwards only what still reaches it.
	Draining bool `json:"draining"`
	// Announced lists the VIP prefixes the node announces: VIPs with at
	// least one backend in service, none while draining.
	Announced []string `json:"announced"`
	// Peers are the routing peers; empty without BGP.
	Peers []PeerStatus `json:"peers"`
}

// ErrNotSupported is returned for a verb the node does not offer.
var ErrNotSupported = errors.New("not supported by this node")

// NodeStatus returns the node's service state.
func (s *Server) NodeStatus() NodeStatus {
	st := NodeStatus{Announced: []string{}, Peers: []PeerStatus{}}
	if d, ok := s.node.(Drainer); ok {
		st.Draining = d.Draining()
		for _, p := range d.Announcements() {
			st.Announced = append(st.Announced, p.String())
		}
	}
	if pr, ok := s.node.(PeerReporter); ok {
		st.Peers = append(st.Peers, pr.Peers()...)
	}
	return st
}

// DrainNode drains the node (drain true) or returns it to service. A
// drained node withdraws its VIP announcements so routers move new flows
// to the other nodes, and keeps forwarding what still arrives.
func (s *Server) DrainNode(drain bool) (NodeStatus, error) {
	d, ok := s.node.(Drainer)
	if !ok {
		return NodeStatus{}, ErrNotSupported
	}
	d.SetDraining(drain)
	return s.NodeStatus(), nil
}
