package lbnode

import (
	"context"
	"net/netip"

	"github.com/sluicelb/sluice/internal/announce"
	"github.com/sluicelb/sluice/internal/config"
)

// Announcer tells routers which VIP prefixes this node serves. The BGP
// speaker (announce.Speaker) is one; New makes it from node.bgp.
type Announcer interface {
	// SetRoutes replaces the set of routes to announce (a route without
	// a next hop has the node's own; bypassed VIPs have their backend's);
	// it must not block.
	SetRoutes([]announce.Route) error
	// Run announces until ctx is done, then withdraws everything and
	// closes the sessions.
	Run(ctx context.Context) error
	// Peers reports the routing sessions.
	Peers() []announce.PeerStatus
}

var _ Announcer = (*announce.Speaker)(nil)

// BGPConfig is the speaker's configuration from node.bgp (validated).
func BGPConfig(g *config.BGP) announce.Config {
	c := announce.Config{ASN: g.ASN, RouterID: netip.MustParseAddr(g.RouterID), Communities: g.Communities}
	if g.NextHopV4 != "" {
		c.NextHop4 = netip.MustParseAddr(g.NextHopV4)
	}
	if g.NextHopV6 != "" {
		c.NextHop6 = netip.MustParseAddr(g.NextHopV6)
	}
	for _, p := range g.Peers {
		ap := announce.Peer{Address: netip.MustParseAddr(p.Address), ASN: p.ASN, Port: uint16(p.Port),
			HoldTime: p.HoldTime, KeepaliveTime: p.Keepalive, ConnectRetry: p.ConnectRetry}
		if b := p.BFD; b != nil {
			ap.BFD = &announce.BFD{MinRx: b.MinRx, MinTx: b.MinTx, Multiplier: b.Multiplier}
		}
		c.Peers = append(c.Peers, ap)
	}
	return c
}
