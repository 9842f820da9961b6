package config

import (
	"fmt"
	"net/netip"

	"github.com/sluicelb/sluice/internal/nat"
)

// DefaultSNATPorts is node.snat_ports when it is not set.
var DefaultSNATPorts = PortRange{Lo: 1024, Hi: 65535}

// SNATAddrs returns node.snat parsed (the configuration is valid).
func (n *Node) SNATAddrs() []netip.Addr {
	var out []netip.Addr
	for _, s := range n.SNAT {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// SNATLayout returns the SNAT port layout for workers workers.
func (n *Node) SNATLayout(workers int) nat.Layout {
	r := DefaultSNATPorts
	if n.SNATPorts != nil {
		r = *n.SNATPorts
	}
	l := nat.DefaultLayout(workers)
	l.Lo, l.Hi = uint16(r.Lo), uint16(r.Hi)
	return l
}

// validateSNAT checks node.snat and node.snat_ports and returns which
// families the SNAT addresses cover.
func validateSNAT(c *Config, bad func(path string, value any, reason string)) (families [2]bool) {
	n := &c.Node
	if len(n.SNAT) > nat.MaxAddrs {
		bad("node.snat", len(n.SNAT), fmt.Sprintf("addresses: at most %d", nat.MaxAddrs))
	}
	vips := map[netip.Addr]bool{}
	for _, v := range c.VIPs {
		if a, err := netip.ParseAddr(v.Address); err == nil {
			vips[a] = true
		}
	}
	seen := map[netip.Addr]int{}
	for i, s := range n.SNAT {
		p := fmt.Sprintf("node.snat[%d]", i)
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil || a.Is4In6() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.Zone() != "":
			bad(p, fmt.Sprintf("%q", s), "is not a unicast IP address")
			continue
		case vips[a]:
			bad(p, s, "is a VIP address")
		}
		if j, dup := seen[a]; dup {
			bad(p, s, fmt.Sprintf("is also node.snat[%d]", j))
		}
		seen[a] = i
		if a.Is4() {
			families[0] = true
		} else {
			families[1] = true
		}
	}
	if r := n.SNATPorts; r != nil {
		switch {
		case r.Lo < 1 || r.Lo > 65535:
			bad("node.snat_ports.lo", r.Lo, "is not a port (1-65535)")
		case r.Hi < r.Lo || r.Hi > 65535:
			bad("node.snat_ports.hi", r.Hi, fmt.Sprintf("is not between lo (%d) and 65535", r.Lo))
		default:
			workers := max(n.Workers, 1) * max(len(n.Interfaces), 1)
			if err := n.SNATLayout(workers).Validate(); err != nil {
				bad("node.snat_ports", fmt.Sprintf("%d-%d", r.Lo, r.Hi), fmt.Sprintf("cannot give each of %d workers a block of 256 ports", workers))
			}
		}
	}
	return families
}

// validateNATVIP checks what a full-NAT VIP needs.
func validateNATVIP(c *Config, p string, v *VIP, families [2]bool, bad func(path string, value any, reason string)) {
	if v.Port == 0 || v.PortEnd != 0 && v.PortEnd != v.Port {
		bad(p+".forwarding", v.Forwarding, "needs a VIP with one port (the backends' port)")
	}
	if v.Affinity == AffinityStateless {
		bad(p+".forwarding", v.Forwarding, "needs affinity on-change (a flow's SNAT port lives in its flow entry)")
	}
	if v.QUIC != nil {
		bad(p+".forwarding", v.Forwarding, "cannot route by QUIC connection ID (no flow entries)")
	}
	if h := v.Health; h != nil && h.Type == "vip" {
		bad(p+".health.type", h.Type, "needs a backend agent; with forwarding nat check the backends' own address (tcp, http, https, udp)")
	}
	if len(v.Backends) == 0 {
		return
	}
	a, err := netip.ParseAddr(v.Backends[0].Address)
	if err != nil {
		return
	}
	fam, name := 0, "IPv4"
	if !a.Is4() {
		fam, name = 1, "IPv6"
	}
	if vip, err := netip.ParseAddr(v.Address); err == nil && vip.Is4() != a.Is4() {
		bad(p+".forwarding", v.Forwarding, fmt.Sprintf("needs backends of the VIP's address family (the VIP is %s, backends are %s)", vip, name))
	}
	if v.Tenant != "" {
		bad(p+".forwarding", v.Forwarding, "serves the default tenant only (replies do not return into a tenant's network)")
	}
	if !families[fam] {
		bad("node.snat", c.Node.SNAT, fmt.Sprintf("has no %s address for %s (forwarding nat to %s backends)", name, p, name))
	}
}
