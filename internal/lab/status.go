package lab

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// WritePlan writes the lab's address plan (from the layout, not from the
// system): one line per interface.
func (l *Lab) WritePlan(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tROLE\tIFACE\tMAC\tADDRESSES\tPEER")
	for _, n := range l.Nodes() {
		for _, ifc := range n.Ifaces {
			addrs := make([]string, len(ifc.Addrs))
			for i, a := range ifc.Addrs {
				addrs[i] = a.String()
			}
			peer := ifc.Peer
			if ifc.Master != "" {
				peer += " (port of " + ifc.Master + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.Role, ifc.Name, ifc.MAC, strings.Join(addrs, " "), peer)
		}
	}
	fmt.Fprintf(tw, "VIPs\t%s\t\t\t%s\t\n", l.Cfg.VIPRouting, strings.Trim(fmt.Sprint(append(append([]netip.Prefix{}, l.Cfg.VIPs4...), l.Cfg.VIPs6...)), "[]"))
	return tw.Flush()
}

// WriteStatus writes what the system has now in each namespace of the
// lab: interfaces with state, MAC, queues and addresses, and the routes
// that are not connected routes.
func (l *Lab) WriteStatus(w io.Writer) error {
	for _, n := range l.Nodes() {
		var b strings.Builder
		err := n.Do(func() error { return writeNodeStatus(&b, n) })
		if err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		if _, err := io.WriteString(w, b.String()); err != nil {
			return err
		}
	}
	return nil
}

func writeNodeStatus(w io.Writer, n *Node) error {
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	idx := map[int]string{}
	for _, lk := range links {
		idx[lk.Attrs().Index] = lk.Attrs().Name
	}
	fmt.Fprintf(w, "%s (%s)\n", n.Name, n.Role)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, lk := range links {
		a := lk.Attrs()
		if a.Name == "lo" {
			continue
		}
		state := "down"
		if a.Flags&net.FlagUp != 0 {
			state = "up"
			if a.OperState == netlink.OperDown || a.OperState == netlink.OperLowerLayerDown {
				state = "no-carrier"
			}
		}
		var addrs []string
		as, err := netlink.AddrList(lk, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, ad := range as {
			if ad.Scope == unix.RT_SCOPE_UNIVERSE {
				addrs = append(addrs, ad.IPNet.String())
			}
		}
		extra := lk.Type()
		if a.MasterIndex != 0 {
			extra += " master " + idx[a.MasterIndex]
		}
		if lk.Type() == "veth" {
			extra += fmt.Sprintf(" rxq %d txq %d", a.NumRxQueues, a.NumTxQueues)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", a.Name, state, a.HardwareAddr, strings.Join(addrs, " "), extra)
	}
	tw.Flush()
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rts, err := netlink.RouteList(nil, fam)
		if err != nil {
			return err
		}
		for _, rt := range rts {
			if rt.Protocol == unix.RTPROT_KERNEL || (rt.Dst != nil && rt.Dst.IP.IsLinkLocalUnicast()) || rt.Type != unix.RTN_UNICAST {
				continue
			}
			fmt.Fprintf(w, "  route %s\n", routeString(rt, idx))
		}
	}
	return nil
}

func routeString(rt netlink.Route, idx map[int]string) string {
	dst := "default"
	if rt.Dst != nil {
		if ones, bits := rt.Dst.Mask.Size(); ones != 0 || bits == 0 {
			dst = rt.Dst.String()
		}
	}
	var b strings.Builder
	b.WriteString(dst)
	hop := func(gw net.IP, ifindex int) {
		if gw != nil {
			fmt.Fprintf(&b, " via %s", gw)
		}
		if ifindex != 0 {
			fmt.Fprintf(&b, " dev %s", idx[ifindex])
		}
	}
	if len(rt.MultiPath) > 0 {
		for _, nh := range rt.MultiPath {
			b.WriteString(" nexthop")
			hop(nh.Gw, nh.LinkIndex)
		}
	} else {
		hop(rt.Gw, rt.LinkIndex)
	}
	return b.String()
}
