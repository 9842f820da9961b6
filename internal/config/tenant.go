package config

import (
	"fmt"
	"net/netip"

	"github.com/sluicelb/sluice/internal/packet"
)

// Tenant is one tenant: its traffic arrives as VXLAN with VNI to the
// VTEP address, or tagged with VLAN (the outermost 802.1Q tag); at least
// one of the two.
type Tenant struct {
	Name string `yaml:"name"`
	VNI  uint32 `yaml:"vni,omitempty"`  // 1..16777215
	VLAN int    `yaml:"vlan,omitempty"` // 1..4094
	// VTEPs are the addresses or prefixes the tenant's VXLAN may come
	// from (outer source); a packet with its VNI from elsewhere is
	// dropped. Empty: any source (the underlay must filter).
	VTEPs []string `yaml:"vteps,omitempty"`
	// Routes choose the next hop of what the node sends for the tenant's
	// VIPs (to their backends) by longest prefix; a backend no route
	// holds is reached as the kernel's main table says.
	Routes []Route `yaml:"routes,omitempty"`
}

// Route sends what the node sends to an address in Prefix through the
// next hop Via (a neighbour on one of node.interfaces), whatever the
// kernel's main table says.
type Route struct {
	Prefix string `yaml:"prefix"`
	Via    string `yaml:"via"`
}

// ParsePrefixOrAddr parses a prefix ("198.18.20.0/24") or an address,
// which is its own /32 or /128.
func ParsePrefixOrAddr(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: not an IPv4 or IPv6 prefix", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Is4In6() || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q: not an address or a prefix", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParsedRoute is a validated Route.
type ParsedRoute struct {
	Prefix netip.Prefix
	Via    netip.Addr
}

// Parse returns the route's prefix (masked) and next hop; Validate has
// checked them.
func (r Route) Parse() ParsedRoute {
	return ParsedRoute{netip.MustParsePrefix(r.Prefix).Masked(), netip.MustParseAddr(r.Via)}
}

// validateRoutes checks the routes of one tenant (path: their field).
func validateRoutes(path string, routes []Route, bad func(path string, value any, reason string)) {
	seen := map[netip.Prefix]int{}
	for i, r := range routes {
		p := fmt.Sprintf("%s[%d]", path, i)
		pfx, err := netip.ParsePrefix(r.Prefix)
		if err != nil || pfx.Addr().Is4In6() || pfx.Addr().Zone() != "" {
			bad(p+".prefix", fmt.Sprintf("%q", r.Prefix), "is not an IP prefix (address/length)")
			continue
		}
		pfx = pfx.Masked()
		if j, dup := seen[pfx]; dup {
			bad(p+".prefix", r.Prefix, fmt.Sprintf("is also the prefix of %s[%d]", path, j))
		}
		seen[pfx] = i
		via, err := netip.ParseAddr(r.Via)
		switch {
		case err != nil || via.Is4In6() || via.IsUnspecified() || via.IsMulticast():
			bad(p+".via", fmt.Sprintf("%q", r.Via), "is not a unicast IP address")
		case via.Is4() != pfx.Addr().Is4():
			bad(p+".via", r.Via, "is not of the prefix's address family (the next hop of "+pfx.String()+")")
		case via.Is6() && via.IsLinkLocalUnicast() && via.Zone() == "":
			bad(p+".via", r.Via, "is a link-local address without its zone")
		}
	}
}

// TenantRoutes returns the routes of the tenant named name ("": the
// default tenant's, Config.Routes), parsed.
func (c *Config) TenantRoutes(name string) []ParsedRoute {
	rs := c.Routes
	if name != "" {
		rs = nil
		for _, t := range c.Tenants {
			if t.Name == name {
				rs = t.Routes
			}
		}
	}
	out := make([]ParsedRoute, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Parse())
	}
	return out
}

// VXLAN is where tenants send their VXLAN traffic: the node's VTEP
// address, which the routers must route to the LB nodes like a VIP (the
// node steers it to its datapath as it steers the VIPs), and the port.
type VXLAN struct {
	Address string `yaml:"address"`
	Port    int    `yaml:"port"` // default 4789
}

// MaxTenants bounds tenants[] (a tenant is one byte of the flow key).
const MaxTenants = 255

// validateTenants checks tenants[] and vxlan, and returns the tenant names.
func validateTenants(c *Config, bad func(path string, value any, reason string)) map[string]bool {
	names := map[string]bool{}
	vnis := map[uint32]int{}
	vlans := map[int]int{}
	if len(c.Tenants) > MaxTenants {
		bad("tenants", len(c.Tenants), fmt.Sprintf("tenants; at most %d", MaxTenants))
	}
	for i, t := range c.Tenants {
		p := fmt.Sprintf("tenants[%d]", i)
		switch {
		case t.Name == "":
			bad(p+".name", nil, "is required")
		case names[t.Name]:
			bad(p+".name", t.Name, "is repeated")
		}
		names[t.Name] = true
		validateRoutes(p+".routes", t.Routes, bad)
		for j, v := range t.VTEPs {
			if _, err := ParsePrefixOrAddr(v); err != nil {
				bad(fmt.Sprintf("%s.vteps[%d]", p, j), fmt.Sprintf("%q", v), "is not an address or a prefix")
			}
		}
		if len(t.VTEPs) > 0 && t.VNI == 0 {
			bad(p+".vteps", t.VTEPs, "needs a vni (they say where the tenant's VXLAN may come from)")
		}
		switch {
		case t.VNI == 0 && t.VLAN == 0:
			bad(p+".vni", nil, "or vlan is required (how the tenant's packets are recognised)")
		case t.VNI >= 1<<24:
			bad(p+".vni", t.VNI, "is not between 1 and 16777215")
		case t.VNI == 0:
		default:
			if j, dup := vnis[t.VNI]; dup {
				bad(p+".vni", t.VNI, fmt.Sprintf("is also the VNI of tenants[%d]", j))
			}
			vnis[t.VNI] = i
		}
		switch {
		case t.VLAN < 0 || t.VLAN > 4094:
			bad(p+".vlan", t.VLAN, "is not between 1 and 4094")
		case t.VLAN == 0:
		default:
			if j, dup := vlans[t.VLAN]; dup {
				bad(p+".vlan", t.VLAN, fmt.Sprintf("is also the VLAN of tenants[%d]", j))
			}
			vlans[t.VLAN] = i
		}
	}
	validateRoutes("routes", c.Routes, bad)
	switch x := c.VXLAN; {
	case x == nil && len(vnis) > 0:
		bad("vxlan.address", nil, "is required with tenants that have a vni (the VTEP address they send VXLAN to)")
	case x != nil:
		a, err := netip.ParseAddr(x.Address)
		if err != nil || a.Is4In6() || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			bad("vxlan.address", fmt.Sprintf("%q", x.Address), "is not a unicast IP address")
		}
		if x.Port < 1 || x.Port > 65535 {
			bad("vxlan.port", x.Port, "is not a port (1-65535)")
		}
		for i, v := range c.VIPs {
			if va, err := netip.ParseAddr(v.Address); err == nil && va == a {
				bad("vxlan.address", x.Address, fmt.Sprintf("is also the address of vips[%d]", i))
			}
		}
	}
	return names
}

// setVXLANDefaults fills in the VXLAN port.
func setVXLANDefaults(c *Config) {
	if c.VXLAN != nil && c.VXLAN.Port == 0 {
		c.VXLAN.Port = packet.VXLANPort
	}
}
