package control

import (
	"net/netip"

	"github.com/sluicelb/sluice/internal/announce"
	"github.com/sluicelb/sluice/internal/bypass"
)

// Drainer is what the server needs for node drain and the node's routing
// state.
type Drainer interface {
	// SetDraining drains the node or returns it to service, and reports
	// whether that changed anything.
	SetDraining(bool) bool
	// Draining reports whether the node is drained.
	Draining() bool
	// Announcements returns the VIP prefixes the node announces now.
	Announcements() []netip.Prefix
	// Peers returns the routing peers' sessions; none without BGP.
	Peers() []announce.PeerStatus
	// Bypass returns the state of the VIP addresses with bypass
	// single-backend (bypass.Decide on the node's configuration and health)
	// and the backends filling after their address left bypass.
	Bypass() bypass.View
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
	// NextHops gives, for each announced prefix that is not announced
	// with the node's own next hop (a VIP bypassed to its backend), the
	// next hop it is announced with.
	NextHops map[string]string `json:"next_hops,omitempty"`
	// Peers are the routing peers; empty without BGP.
	Peers []PeerStatus `json:"peers"`
}

// NodeStatus returns the node's service state.
func (s *Server) NodeStatus() NodeStatus {
	st := NodeStatus{Announced: []string{}, Peers: []PeerStatus{}, Draining: s.node.Draining()}
	bv := s.node.Bypass()
	for _, p := range s.node.Announcements() {
		st.Announced = append(st.Announced, p.String())
		for _, b := range bv.VIPs {
			if b.Bypassed && b.Addr == p.Addr() {
				if st.NextHops == nil {
					st.NextHops = map[string]string{}
				}
				st.NextHops[p.String()] = b.NextHop.String()
			}
		}
	}
	for _, p := range s.node.Peers() {
		st.Peers = append(st.Peers, PeerStatus{
			Address: p.Address.String(), ASN: p.ASN, State: p.State, Uptime: p.Uptime.Seconds(),
			Resets: p.Resets, Advertised: int(p.Advertised), BFD: p.BFD != "", BFDState: p.BFD,
		})
	}
	return st
}

// DrainNode drains the node (drain true) or returns it to service. A
// drained node withdraws its VIP announcements so routers move new flows
// to the other nodes, and keeps forwarding what still arrives.
func (s *Server) DrainNode(drain bool) (NodeStatus, error) {
	s.node.SetDraining(drain)
	return s.NodeStatus(), nil
}
