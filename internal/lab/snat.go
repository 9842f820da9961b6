package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The SNAT addresses of full-NAT scenarios: LB node n sources its
// full-NAT packets from 198.18.40.h and 2001:db8:40::h (h its host number
// on the service segment). They are assigned to no interface: the router
// routes each to its LB node (RouteSNAT), as a production router routes a
// node's SNAT prefix to it, so nobody needs to answer ARP or neighbour
// solicitations for them.
var (
	snatNet4 = netip.MustParsePrefix("198.18.40.0/24")
	snatNet6 = netip.MustParsePrefix("2001:db8:40::/64")
)

// SNAT4 returns LB node n's IPv4 SNAT address.
func (n *Node) SNAT4() netip.Addr {
	a := n.Addr4.As4()
	return addr4(snatNet4, int(a[3]))
}

// SNAT6 returns LB node n's IPv6 SNAT address.
func (n *Node) SNAT6() netip.Addr {
	a := n.Addr4.As4()
	return addr6(snatNet6, int(a[3]))
}

// RouteSNAT adds (on) or deletes the router's host routes of every LB
// node's SNAT addresses, each via that node's service-segment address.
func (l *Lab) RouteSNAT(on bool) error {
	var h *netlink.Handle
	err := l.Router.Do(func() error {
		var err error
		h, err = netlink.NewHandle()
		return err
	})
	if err != nil {
		return fmt.Errorf("lab: %s: netlink: %w", l.Router.Name, err)
	}
	defer h.Close()
	for _, n := range l.LBs {
		for _, r := range []struct{ dst, gw netip.Addr }{{n.SNAT4(), n.Addr4}, {n.SNAT6(), n.Addr6}} {
			rt := &netlink.Route{Dst: &net.IPNet{IP: r.dst.AsSlice(), Mask: net.CIDRMask(r.dst.BitLen(), r.dst.BitLen())}, Gw: r.gw.AsSlice()}
			if !on {
				if err := h.RouteDel(rt); err != nil && !errors.Is(err, unix.ESRCH) {
					return fmt.Errorf("lab: delete route %v: %w", r.dst, err)
				}
				continue
			}
			if err := h.RouteReplace(rt); err != nil {
				return fmt.Errorf("lab: route %v via %v: %w", r.dst, r.gw, err)
			}
		}
	}
	return nil
}
