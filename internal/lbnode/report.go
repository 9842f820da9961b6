package lbnode

import (
	"fmt"
	"io"
	"net/netip"
	"text/tabwriter"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/offload"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// Report writes the counters: per VIP and backend, flows, drops by reason.
func (n *Node) Report(w io.Writer) {
	c := n.dp.Counters()
	g := n.dp.Generation()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VIP\tBACKEND\tPACKETS\tBYTES\tNEXT HOP")
	if g != nil {
		for _, s := range g.Services {
			vip := fmt.Sprintf("%s %s", s.Name, netip.AddrPortFrom(netip.AddrFrom16(s.Addr).Unmap(), s.PortLo))
			for _, r := range s.Reals {
				if r == nil {
					continue
				}
				var rc datapath.RealCounters
				if int(r.ID) < len(c.Reals) {
					rc = c.Reals[r.ID]
				}
				hop := "resolved"
				if !r.Resolved() {
					hop = "UNRESOLVED"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", vip, r.Name, rc.Packets, rc.Bytes, hop)
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "rx %d  tx %d  tx errors %d  passed %d  flow hits %d  misses %d  reaped %d\n",
		c.RxPackets, c.TxPackets, c.TxErrors, c.Passed, c.FlowHits, c.FlowMisses, c.Reaped)
	if c.Offloaded {
		o := &c.Offload
		fmt.Fprintf(w, "offload: forwarded in the kernel %d  installed %d  deleted %d  ring full %d  errors %d\n",
			o.Forwarded, o.Installed, o.Deleted, o.RingFull, o.Errors)
		fmt.Fprint(w, "offload: to the workers:")
		for r, v := range o.Passed {
			if v > 0 {
				fmt.Fprintf(w, "  %s %d", offload.Reason(r), v)
			}
		}
		fmt.Fprintln(w)
	}
	if r := n.dp.Redirector(); r != nil {
		f := r.Counters()
		fmt.Fprintf(w, "fastpath: redirects active %d  offered %d  installed %d  refused %d  unacked %d  cancelled %d  refreshed %d  expired %d\n",
			f.Active, f.Offered, f.Installed, f.Refused, f.Unacked, f.Cancelled, f.Refreshes, f.Expired)
	}
	if c.TooBigAnswered+c.Spilled+c.SpillErrors > 0 {
		fmt.Fprintf(w, "icmp too big sent %d  kernel tx %d  kernel tx errors %d\n", c.TooBigAnswered, c.Spilled, c.SpillErrors)
	}
	if c.FragmentsFollowed+c.FragmentsHeld > 0 {
		fmt.Fprintf(w, "fragments followed %d  held %d  released %d\n", c.FragmentsFollowed, c.FragmentsHeld, c.FragmentsReleased)
	}
	if c.FragmentsToOwner+c.FragmentDecisions+c.RelayFragments+c.RelayDecisions+c.RelayRejected > 0 {
		fmt.Fprintf(w, "fragments to owner %d  decisions sent %d  relay in: fragments %d  decisions %d  rejected %d\n",
			c.FragmentsToOwner, c.FragmentDecisions, c.RelayFragments, c.RelayDecisions, c.RelayRejected)
	}
	if a := c.NAT; a.Capacity > 0 {
		fmt.Fprintf(w, "nat translated %d  replies %d  icmp to client %d  to backend %d  ports in use %d of %d  exhausted %d\n",
			a.Forwarded, a.Replies, a.ICMPToClient, a.ICMPToBackend, a.InUse, a.Capacity, a.Exhausted)
	}
	for _, b := range n.Bypass().VIPs {
		via := "the LB nodes"
		if b.Bypassed {
			via = b.NextHop.String() + " (bypass)"
		}
		fmt.Fprintf(w, "bypass %s via %s  entered %d  left %d\n", b.Addr, via, b.Entered, b.Left)
	}
	if q := c.QUIC; q != [pipeline.NumQUICRoutes]uint64{} {
		fmt.Fprintf(w, "quic routed by cid %d  dcid_hash %d  tuple %d  unknown server id %d\n",
			q[pipeline.QUICByCID], q[pipeline.QUICByDCIDHash], q[pipeline.QUICByTuple], c.QUICUnknownServer)
	}
	for i, v := range c.Drops {
		if v > 0 && pipeline.Reason(i) != pipeline.ReasonParse {
			fmt.Fprintf(w, "drop %s: %d\n", pipeline.Reason(i), v)
		}
	}
	for i, v := range c.Parse {
		if v > 0 {
			fmt.Fprintf(w, "drop parse/%s: %d\n", packet.Verdict(i), v)
		}
	}
}
