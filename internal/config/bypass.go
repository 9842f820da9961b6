package config

import (
	"fmt"
	"net/netip"
)

// validateBypass checks vips[i].bypass: what the configuration alone shows
// cannot work. Whether each backend shares a subnet with a BGP peer
// depends on the node's interfaces and is checked by the node (package
// bypass, CheckSubnets).
func validateBypass(c *Config, i int, addr netip.Addr, bad func(path string, value any, reason string)) {
	v := &c.VIPs[i]
	p := fmt.Sprintf("vips[%d].bypass", i)
	switch v.Bypass {
	case "", BypassOff:
	case BypassSingleBackend:
		if c.Node.BGP == nil {
			bad(p, v.Bypass, "needs node.bgp (the VIP is announced with its backend as BGP next hop)")
		}
		if v.Forwarding == ForwardingNAT {
			bad(p, v.Bypass, "needs forwarding gue or ipip (a full-NAT backend does not hold the VIP, so it cannot take the VIP's packets as they are)")
		}
		if v.Tenant != "" {
			bad(p, v.Bypass, "is not available for a tenant's VIP (its packets arrive in the tenant's overlay, which a BGP next hop cannot bypass)")
		}
		for j, b := range v.Backends {
			if ba, err := netip.ParseAddr(b.Address); err == nil && addr.IsValid() && ba.Is4() != addr.Is4() {
				bad(fmt.Sprintf("vips[%d].backends[%d].address", i, j), b.Address,
					"differs in family from the VIP: with bypass the backend is the next hop of the VIP's route, which must be of the VIP's family")
			}
		}
	default:
		bad(p, fmt.Sprintf("%q", v.Bypass), "is not off or single-backend")
		return
	}
	if !addr.IsValid() {
		return
	}
	// Every service on one address agrees: the address is announced (and
	// bypassed) as a whole.
	for j := range i {
		o := &c.VIPs[j]
		oa, err := netip.ParseAddr(o.Address)
		if err != nil || oa != addr || o.Tenant != v.Tenant {
			continue
		}
		if o.BypassOn() != v.BypassOn() {
			bad(p, bypassName(v.Bypass), fmt.Sprintf("differs from vips[%d] (%s) on the same address, which has bypass %s: every service on an address must set the same", j, o.Name, bypassName(o.Bypass)))
		}
		break
	}
}

func bypassName(s string) string {
	if s == "" {
		return BypassOff
	}
	return s
}
