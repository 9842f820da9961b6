package lbnode

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/afpacket"
	"github.com/sluicelb/sluice/internal/link/afxdp"
	"github.com/sluicelb/sluice/internal/offload"
)

// Opener opens the link of one interface queue; vips are the destination
// addresses the link must deliver (the others stay with the kernel). It
// returns a description of what it opened (for example "afxdp native").
type Opener func(ifname string, queue int, vips []netip.Addr) (l link.Link, desc string, err error)

// VIPSteerer is a link that can be told which destinations to deliver
// (AF_XDP: the XDP program's VIP maps; AF_PACKET: the socket filter).
type VIPSteerer interface {
	SetVIPs([]netip.Addr) error
}

// LinkOpener opens links as node.io says: afxdp, afpacket, or auto
// (AF_XDP, falling back to AF_PACKET with the reason logged). It is the
// Opener New uses when Options.Open is nil.
func LinkOpener(n config.Node, log *slog.Logger) Opener {
	return func(ifname string, queue int, vips []netip.Addr) (link.Link, string, error) {
		switch n.IO {
		case "afxdp":
			return openXDPOffload(ifname, queue, vips, n, log)
		case "auto":
			l, desc, err := openXDPOffload(ifname, queue, vips, n, log)
			if err == nil {
				return l, desc, nil
			}
			log.Warn("AF_XDP unavailable, falling back to AF_PACKET", "interface", ifname, "reason", err)
		}
		if queue > 0 {
			return nil, "", fmt.Errorf("afpacket runs one worker per interface (node.workers is %d)", n.Workers)
		}
		// The VIP filter is in place before the socket is bound: no other
		// frame reaches the datapath.
		l, err := afpacket.New(ifname, afpacket.Config{Filter: vips})
		if err != nil {
			return nil, "", err
		}
		if n.Offload == "auto" {
			log.Warn("offload unavailable: the link is AF_PACKET, not AF_XDP", "interface", ifname)
		}
		return l, "afpacket", nil
	}
}

// openXDPOffload opens an AF_XDP link with the offload program when
// node.offload is auto, and falls back to the steering-only program (with
// the reason logged) when the kernel refuses it.
func openXDPOffload(ifname string, queue int, vips []netip.Addr, n config.Node, log *slog.Logger) (link.Link, string, error) {
	if n.Offload != "auto" {
		return openXDP(ifname, queue, vips, n.XDPMode, 0)
	}
	flows := min(max(n.FlowCapacity*n.Workers, 1024), 1<<22)
	l, desc, err := openXDP(ifname, queue, vips, n.XDPMode, flows)
	if err == nil {
		return l, desc + " offload", nil
	}
	if errors.Is(err, afxdp.ErrNoInterface) || errors.Is(err, afxdp.ErrBusy) {
		return nil, "", err
	}
	log.Warn("offload unavailable, forwarding in user space", "interface", ifname, "reason", err)
	return openXDP(ifname, queue, vips, n.XDPMode, 0)
}

// Offloads returns the kernel halves of the offloaded flow cache of links
// (one per interface), nil if none offloads.
func Offloads(links []link.Link) []offload.Kernel {
	var ks []offload.Kernel
	for _, l := range links {
		o, ok := l.(interface{ Offload() offload.Kernel })
		if !ok {
			continue
		}
		if k := o.Offload(); k != nil && !slices.Contains(ks, k) {
			ks = append(ks, k)
		}
	}
	return ks
}

// openXDP opens an AF_XDP link on one queue and steers the VIPs to it;
// offloadFlows > 0 loads the offload program with a flow map that large.
func openXDP(ifname string, queue int, vips []netip.Addr, mode string, offloadFlows int) (link.Link, string, error) {
	c := afxdp.Config{Queue: queue, Offload: offloadFlows > 0, OffloadFlows: offloadFlows}
	switch mode {
	case "native":
		c.Mode = afxdp.Native
	case "generic":
		c.Mode = afxdp.Generic
	default:
		c.Mode = afxdp.Auto
	}
	l, err := afxdp.New(ifname, c)
	if err != nil {
		return nil, "", err
	}
	if err := l.SetVIPs(vips); err != nil {
		l.Close()
		return nil, "", err
	}
	desc := "afxdp " + l.AttachMode()
	if c.Mode == afxdp.Auto && l.NativeError() != nil {
		desc += fmt.Sprintf(" (native unavailable: %v)", l.NativeError())
	}
	return l, desc, nil
}
