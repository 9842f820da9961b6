package lbnode

import (
	"net/netip"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/quiclb"
)

// quicSpec makes s, the spec of VIP v (which has a QUIC block), route by
// connection ID: v's QUIC-LB codec, and each backend's server ID (explicit
// or derived from its address, see config.VIP.ServerID).
func (n *Node) quicSpec(v *config.VIP, s *pipeline.ServiceSpec) {
	cfg, err := v.QUIC.LB()
	var codec *quiclb.Codec
	if err == nil {
		codec, err = quiclb.New(cfg)
	}
	if err != nil { // unreachable: the configuration was validated
		n.log.Error("QUIC VIP routed by 4-tuple: bad QUIC-LB configuration", "vip", v.Name, "err", err)
		return
	}
	sids := make(map[netip.Addr]quiclb.ServerID, len(v.Backends))
	for j, b := range v.Backends {
		if sid, _, err := v.ServerID(j); err == nil {
			sids[netip.MustParseAddr(b.Address)] = sid
		}
	}
	s.QUIC = codec
	for i := range s.Backends {
		s.Backends[i].ServerID = sids[s.Backends[i].Tunnel.Dst]
	}
}
