package config

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// L2 announces VIPs on the node's Ethernet segment, for sites whose
// routers reach the VIPs on-link (no BGP): each VIP address is owned by
// one live member of the cluster (rendezvous hashing over the live
// members' cluster addresses; the node alone without node.cluster), which
// answers ARP requests and IPv6 neighbour solicitations for it and, when it
// takes it over, sends gratuitous ARP / unsolicited neighbour
// advertisements. A node answers only while it sees a majority of the
// configured members (node.cluster.bind and peers).
type L2 struct {
	// Interface is where the routers' requests arrive and the answers
	// leave; default: node.interfaces when it names one.
	Interface string `yaml:"interface"`
	// VIPs are the addresses announced this way; default: every VIP
	// address of the configuration.
	VIPs []string `yaml:"vips"`
	// Gratuitous is how many gratuitous ARP / unsolicited neighbour
	// advertisements a node sends when it takes a VIP over (default 3;
	// 0 sends none: routers then find the new owner only when their
	// neighbour entry expires), GratuitousInterval the time between them
	// (default 100ms).
	Gratuitous         *int          `yaml:"gratuitous"`
	GratuitousInterval time.Duration `yaml:"gratuitous_interval"`
	// SyncWait bounds how long a new owner of a VIP whose flows use the
	// owner chains (affinity always, or on-change while a backend change
	// is in flight) waits for its cluster member to be synced before it
	// claims the VIP anyway (and logs so). Default 2s.
	SyncWait time.Duration `yaml:"sync_wait"`
	// Settle is how long a node waits before it takes a VIP from a member
	// that is still alive (a member joining or coming back), so that the
	// member lets it go first. Default 500ms.
	Settle time.Duration `yaml:"settle"`
	// ShutdownGrace is how long a node that stops keeps forwarding after it
	// stopped answering and left the cluster, while the new owners take its
	// VIPs over. Default 1s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
}

// L2 defaults.
const (
	DefaultL2Gratuitous         = 3
	DefaultL2GratuitousInterval = 100 * time.Millisecond
	DefaultL2SyncWait           = 2 * time.Second
	DefaultL2Settle             = 500 * time.Millisecond
	DefaultL2ShutdownGrace      = time.Second
)

func (l *L2) setDefaults(n *Node) {
	if l.Interface == "" && len(n.Interfaces) == 1 {
		l.Interface = n.Interfaces[0]
	}
	if len(l.VIPs) == 0 {
		l.VIPs = nil
	}
	if l.Gratuitous == nil {
		g := DefaultL2Gratuitous
		l.Gratuitous = &g
	}
	if l.GratuitousInterval == 0 {
		l.GratuitousInterval = DefaultL2GratuitousInterval
	}
	if l.SyncWait == 0 {
		l.SyncWait = DefaultL2SyncWait
	}
	if l.Settle == 0 {
		l.Settle = DefaultL2Settle
	}
	if l.ShutdownGrace == 0 {
		l.ShutdownGrace = DefaultL2ShutdownGrace
	}
}

// Addrs returns the VIP addresses announced in L2 mode: L2.VIPs, or every
// VIP address of c (each once).
func (l *L2) Addrs(c *Config) []netip.Addr {
	var out []netip.Addr
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil && !slices.Contains(out, a.Unmap()) {
			out = append(out, a.Unmap())
		}
	}
	if len(l.VIPs) > 0 {
		for _, v := range l.VIPs {
			add(v)
		}
		return out
	}
	for _, v := range c.VIPs {
		add(v.Address)
	}
	return out
}

func validateL2(c *Config, bad func(path string, value any, reason string)) {
	l := c.Node.L2
	if l == nil {
		return
	}
	if l.Interface == "" {
		bad("node.l2.interface", nil, "is required (the interface on the routers' segment) when node.interfaces does not name exactly one")
	}
	if c.Node.BGP != nil {
		bad("node.l2", "set", "excludes node.bgp: a VIP is announced either by BGP or on the segment")
	}
	addrs := map[netip.Addr]bool{}
	for _, v := range c.VIPs {
		if a, err := netip.ParseAddr(v.Address); err == nil {
			addrs[a.Unmap()] = true
		}
	}
	if c.Node.Offload == "auto" {
		for _, a := range l.Addrs(c) {
			if a.Is6() {
				bad("node.offload", "auto", "with node.l2 and an IPv6 VIP ("+a.String()+"): the offload program does not yet pass a router's neighbour solicitations to a VIP to the L2 responder; use off")
				break
			}
		}
	}
	for i, v := range l.VIPs {
		a, err := netip.ParseAddr(v)
		switch {
		case err != nil:
			bad(fmt.Sprintf("node.l2.vips[%d]", i), fmt.Sprintf("%q", v), "is not an IP address")
		case !addrs[a.Unmap()]:
			bad(fmt.Sprintf("node.l2.vips[%d]", i), v, "is the address of no VIP")
		}
	}
	if g := l.Gratuitous; g != nil && (*g < 0 || *g > 100) {
		bad("node.l2.gratuitous", *g, "is not between 0 and 100")
	}
	if d := l.GratuitousInterval; d < time.Millisecond || d > 10*time.Second {
		bad("node.l2.gratuitous_interval", d, "is not between 1ms and 10s")
	}
	if d := l.SyncWait; d < 0 || d > time.Minute {
		bad("node.l2.sync_wait", d, "is not between 0 and 1m")
	}
	if d := l.Settle; d < 0 || d > time.Minute {
		bad("node.l2.settle", d, "is not between 0 and 1m")
	}
	if d := l.ShutdownGrace; d < 0 || d > time.Minute {
		bad("node.l2.shutdown_grace", d, "is not between 0 and 1m")
	}
}
