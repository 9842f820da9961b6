package config

import (
	"fmt"
	"net/netip"
	"time"
)

// Fastpath is node.fastpath: the node's settings for sending redirects to
// the client hosts' agents (see VIP.Fastpath and package fastpath).
type Fastpath struct {
	// Key is the key the node and the client hosts' agents share to
	// authenticate redirects, cancels, acks and refreshes (at least 16
	// characters); identical on every LB node and agent. A secret: the
	// admin API shows it redacted.
	Key string `yaml:"key"`
	// Port is the UDP port of the client hosts' agents; default 6080.
	Port int `yaml:"port"`
	// Idle is how long the node keeps a redirect whose agent sends no
	// refresh (the flow ended, or the client host went away); default 1m.
	// It must exceed the agents' idle timeout (30s by default), so that
	// the node remembers every flow an agent sends direct.
	Idle time.Duration `yaml:"idle"`
	// Max is how many redirects the node keeps; beyond, established flows
	// stay on the LB path. Default 262144.
	Max int `yaml:"max"`
}

// Defaults of Fastpath.
const (
	DefaultFastpathPort = 6080
	DefaultFastpathIdle = time.Minute
	DefaultFastpathMax  = 262144
)

func (f *Fastpath) setDefaults() {
	if f.Port == 0 {
		f.Port = DefaultFastpathPort
	}
	if f.Idle == 0 {
		f.Idle = DefaultFastpathIdle
	}
	if f.Max == 0 {
		f.Max = DefaultFastpathMax
	}
}

func validateFastpath(c *Config, bad func(path string, value any, reason string)) {
	f := c.Node.Fastpath
	if f == nil {
		return
	}
	if len(f.Key) < 16 {
		bad("node.fastpath.key", nil, "must be at least 16 characters (and identical on every LB node and fastpath agent)")
	}
	if f.Port < 1 || f.Port > 65535 {
		bad("node.fastpath.port", f.Port, "is not a port (1-65535)")
	}
	if f.Idle < time.Second || f.Idle > time.Hour {
		bad("node.fastpath.idle", f.Idle.String(), "is not between 1s and 1h (the agents refresh their flows every second)")
	}
	if f.Max < 1 || f.Max > 1<<24 {
		bad("node.fastpath.max", f.Max, "is not between 1 and 16777216")
	}
}

// FastpathClientPrefixes parses v.FastpathClients (validated).
func (v *VIP) FastpathClientPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range v.FastpathClients {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func validateFastpathVIP(c *Config, p string, v *VIP, addr netip.Addr, bad func(path string, value any, reason string)) {
	if !v.Fastpath {
		if len(v.FastpathClients) > 0 {
			bad(p+".fastpath_clients", v.FastpathClients, "is set but fastpath is not")
		}
		return
	}
	switch {
	case c.Node.Fastpath == nil:
		bad(p+".fastpath", true, "needs node.fastpath (the key shared with the client hosts' agents)")
	case v.Forwarding != ForwardingGUE:
		bad(p+".fastpath", true, "needs forwarding gue (the client host's agent writes the same GUE packets an LB node writes)")
	case v.Affinity == AffinityStateless:
		bad(p+".fastpath", true, "is not available with affinity stateless (a redirect is remembered in the flow's entry)")
	case v.QUIC != nil:
		bad(p+".fastpath", true, "is not available for a QUIC VIP (it routes by connection ID and keeps no flow entries)")
	case v.Tenant != "":
		bad(p+".fastpath", true, "is not available for a tenant's VIP (its clients send through the tenant's overlay)")
	case v.BypassOn():
		bad(p+".fastpath", true, "cannot be combined with bypass single-backend")
	}
	if len(v.FastpathClients) == 0 {
		bad(p+".fastpath_clients", nil, "must list at least one prefix: the client hosts whose agents get redirects")
	}
	for j, s := range v.FastpathClients {
		pp, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			bad(fmt.Sprintf("%s.fastpath_clients[%d]", p, j), s, "is not a prefix")
		case pp != pp.Masked() || pp.Addr().Zone() != "" || pp.Addr().Is4In6():
			bad(fmt.Sprintf("%s.fastpath_clients[%d]", p, j), s, "must be a plain prefix without host bits")
		case addr.IsValid() && pp.Addr().Is4() != addr.Is4():
			bad(fmt.Sprintf("%s.fastpath_clients[%d]", p, j), s, "differs in family from the VIP")
		}
	}
}
