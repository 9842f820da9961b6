package lab

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
)

// VIPRouting says how the router reaches the VIP prefixes.
type VIPRouting int

const (
	// RouteECMP installs one static route per VIP prefix with every LB
	// node as a next hop (a plain route when there is one LB node). With
	// fib_multipath_hash_policy=1 the router spreads flows by L4 hash.
	RouteECMP VIPRouting = iota
	// RouteFirstLB installs one static route per VIP prefix via LB node 1.
	RouteFirstLB
	// RouteNone installs no VIP route: something else (a BGP speaker in
	// the router namespace, or Lab.RouteVIPs) provides them.
	RouteNone
	// RouteOnLink routes the VIP prefixes on-link on the service bridge:
	// the router resolves each VIP by ARP / neighbour discovery on the
	// segment, and the LB nodes answer for them in L2 mode (node.l2).
	RouteOnLink
)

func (r VIPRouting) String() string {
	switch r {
	case RouteECMP:
		return "ecmp"
	case RouteFirstLB:
		return "first-lb"
	case RouteNone:
		return "none"
	case RouteOnLink:
		return "on-link"
	}
	return fmt.Sprintf("VIPRouting(%d)", int(r))
}

// ParseVIPRouting parses the String form of a VIPRouting.
func ParseVIPRouting(s string) (VIPRouting, error) {
	for _, r := range []VIPRouting{RouteECMP, RouteFirstLB, RouteNone, RouteOnLink} {
		if r.String() == s {
			return r, nil
		}
	}
	return 0, fmt.Errorf("vip routing %q: want ecmp, first-lb, none or on-link", s)
}

// Config describes a lab. The zero value is valid: it means the defaults.
type Config struct {
	// Prefix starts the name of every namespace of the lab ("sl-" gives
	// sl-client, sl-router, sl-lb1.., sl-be1..). Two labs with different
	// prefixes never touch each other, so tests running at the same time
	// each use their own. Letters, digits, '.', '_' and '-' only, at most
	// 32 bytes. Default "sl-".
	Prefix string
	// LBs is the number of LB nodes, 1..MaxLBs. Default 1.
	LBs int
	// LBQueues is the number of RX and TX queues of each LB node's veth
	// (both ends), 1..8: the router's end spreads flows over them by
	// their hash, and a node runs a worker per queue (node.workers).
	// Default 1.
	LBQueues int
	// Backends is the number of backend hosts, 1..MaxBackends. Default 3.
	Backends int
	// VIPs4 and VIPs6 are routed by the router toward the LB tier. They
	// must lie in 198.18.0.0/15 and 2001:db8::/32 and not overlap the lab's
	// segments. Defaults 198.18.0.0/24 and 2001:db8::/64.
	VIPs4, VIPs6 []netip.Prefix
	// VIPRouting says how the router routes the VIPs. Default RouteECMP.
	VIPRouting VIPRouting
	// LogDir, when set, receives one log file per process started with
	// Node.Start, in addition to the in-memory capture.
	LogDir string
}

// Limits of a lab (the address plan numbers hosts by these ranges).
const (
	MaxLBs      = 9
	MaxBackends = 99
)

// DefaultPrefix is the namespace name prefix used when Config.Prefix is empty.
const DefaultPrefix = "sl-"

var (
	defaultVIP4 = netip.MustParsePrefix("198.18.0.0/24")
	defaultVIP6 = netip.MustParsePrefix("2001:db8::/64")

	labRange4 = netip.MustParsePrefix("198.18.0.0/15")
	labRange6 = netip.MustParsePrefix("2001:db8::/32")

	// The two segments of the address plan (see doc.go).
	clientNet4 = netip.MustParsePrefix("198.18.10.0/24")
	clientNet6 = netip.MustParsePrefix("2001:db8:10::/64")
	svcNet4    = netip.MustParsePrefix("198.18.30.0/24")
	svcNet6    = netip.MustParsePrefix("2001:db8:30::/64")

	prefixRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,32}$`)
)

// withDefaults returns c with the zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.LBs == 0 {
		c.LBs = 1
	}
	if c.Backends == 0 {
		c.Backends = 3
	}
	if c.VIPs4 == nil {
		c.VIPs4 = []netip.Prefix{defaultVIP4}
	}
	if c.VIPs6 == nil {
		c.VIPs6 = []netip.Prefix{defaultVIP6}
	}
	return c
}

// validate checks a config that has its defaults applied.
func (c Config) validate() error {
	if err := checkPrefix(c.Prefix); err != nil {
		return err
	}
	if c.LBs < 1 || c.LBs > MaxLBs {
		return fmt.Errorf("lab: lbs: %d is not in 1..%d", c.LBs, MaxLBs)
	}
	if c.LBQueues < 0 || c.LBQueues > 8 {
		return fmt.Errorf("lab: lb queues: %d is not in 1..8", c.LBQueues)
	}
	if c.Backends < 1 || c.Backends > MaxBackends {
		return fmt.Errorf("lab: backends: %d is not in 1..%d", c.Backends, MaxBackends)
	}
	if c.VIPRouting < RouteECMP || c.VIPRouting > RouteOnLink {
		return fmt.Errorf("lab: vip routing: %v is unknown", c.VIPRouting)
	}
	check := func(field string, ps []netip.Prefix, want netip.Prefix, segs ...netip.Prefix) error {
		for i, p := range ps {
			if !p.IsValid() || p.Addr().Is4In6() || p.Addr().BitLen() != want.Addr().BitLen() {
				return fmt.Errorf("lab: %s[%d]: %v is not an IPv%d prefix", field, i, p, map[int]int{32: 4, 128: 6}[want.Addr().BitLen()])
			}
			if p.Masked() != p {
				return fmt.Errorf("lab: %s[%d]: %v has host bits set (want %v)", field, i, p, p.Masked())
			}
			if !want.Contains(p.Addr()) || p.Bits() < want.Bits() {
				return fmt.Errorf("lab: %s[%d]: %v is not inside %v", field, i, p, want)
			}
			for _, s := range segs {
				if p.Overlaps(s) {
					return fmt.Errorf("lab: %s[%d]: %v overlaps the lab segment %v", field, i, p, s)
				}
			}
		}
		return nil
	}
	if err := check("vips4", c.VIPs4, labRange4, clientNet4, svcNet4); err != nil {
		return err
	}
	return check("vips6", c.VIPs6, labRange6, clientNet6, svcNet6)
}

func checkPrefix(p string) error {
	if !prefixRE.MatchString(p) {
		return fmt.Errorf("lab: prefix %q: want 1..32 of [A-Za-z0-9._-]", p)
	}
	return nil
}

// Role is what a node is in the lab.
type Role string

// The roles of the nodes.
const (
	RoleClient  Role = "client"
	RoleRouter  Role = "router"
	RoleLB      Role = "lb"
	RoleBackend Role = "backend"
)

// The interface names. Every interface is created inside its namespace,
// so the names only need to be unique there (never in the root namespace).
const (
	leafIf         = "eth0"   // the one interface of client, LB and backend nodes
	routerClientIf = "client" // router side of the client's veth
	routerSvcIf    = "svc"    // the service-segment bridge in the router
)

// host byte (IPv4 last octet, IPv6 last group written in decimal digits)
// of each node on its segment.
func lbHost(i int) int      { return 10 + i }  // lb1 = .11
func backendHost(i int) int { return 100 + i } // be1 = .101

func addr4(seg netip.Prefix, host int) netip.Addr {
	b := seg.Addr().As4()
	b[3] = byte(host)
	return netip.AddrFrom4(b)
}

// addr6 writes host in decimal digits into the last group, so that
// be1 = 198.18.30.101 = 2001:db8:30::101, as people read it.
func addr6(seg netip.Prefix, host int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("%s%d", seg.Addr().String(), host))
}

// mac returns the lab's deterministic MAC address: 02:73:6c ("sl", locally
// administered), the segment's third IPv4 octet, the side (0 the node's end,
// 1 the router's bridge port) and the host byte.
func mac(seg netip.Prefix, side, host int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x73, 0x6c, seg.Addr().As4()[2], byte(side), byte(host)}
}

// Iface is one interface of a node.
type Iface struct {
	Name   string
	MAC    net.HardwareAddr
	Addrs  []netip.Prefix // addresses with their on-link prefix length
	Master string         // the bridge it is a port of, if any
	Peer   string         // "node/ifname" at the other end of the veth; "" for a bridge
}

// layout computes the lab's nodes from a config with defaults applied,
// without touching the system.
func layout(c Config) *Lab {
	l := &Lab{Cfg: c}
	pfx := func(a netip.Addr, seg netip.Prefix) netip.Prefix { return netip.PrefixFrom(a, seg.Bits()) }
	leaf := func(role Role, name string, idx int, seg4, seg6 netip.Prefix, host int, gw4, gw6 netip.Addr) *Node {
		a4, a6 := addr4(seg4, host), addr6(seg6, host)
		n := &Node{
			Name: c.Prefix + name, Role: role, Index: idx, Ifname: leafIf,
			Addr4: a4, Addr6: a6, MAC: mac(seg4, 0, host), Gateway4: gw4, Gateway6: gw6,
			lab: l,
		}
		n.Ifaces = []Iface{{Name: leafIf, MAC: n.MAC, Addrs: []netip.Prefix{pfx(a4, seg4), pfx(a6, seg6)}}}
		return n
	}
	rc4, rc6 := addr4(clientNet4, 1), addr6(clientNet6, 1)
	rs4, rs6 := addr4(svcNet4, 1), addr6(svcNet6, 1)

	l.Client = leaf(RoleClient, "client", 0, clientNet4, clientNet6, 2, rc4, rc6)
	l.Router = &Node{
		Name: c.Prefix + "router", Role: RoleRouter, Ifname: routerSvcIf,
		Addr4: rs4, Addr6: rs6, MAC: mac(svcNet4, 0, 1), lab: l,
	}
	l.Router.Ifaces = []Iface{
		{Name: routerClientIf, MAC: mac(clientNet4, 0, 1), Addrs: []netip.Prefix{pfx(rc4, clientNet4), pfx(rc6, clientNet6)},
			Peer: l.Client.Name + "/" + leafIf},
		{Name: routerSvcIf, MAC: l.Router.MAC, Addrs: []netip.Prefix{pfx(rs4, svcNet4), pfx(rs6, svcNet6)}},
	}
	l.Client.Ifaces[0].Peer = l.Router.Name + "/" + routerClientIf
	add := func(role Role, short string, idx, host int) *Node {
		name := fmt.Sprintf("%s%d", short, idx)
		n := leaf(role, name, idx, svcNet4, svcNet6, host, rs4, rs6)
		n.Ifaces[0].Peer = l.Router.Name + "/" + name
		l.Router.Ifaces = append(l.Router.Ifaces, Iface{
			Name: name, MAC: mac(svcNet4, 1, host), Master: routerSvcIf, Peer: n.Name + "/" + leafIf,
		})
		return n
	}
	for i := 1; i <= c.LBs; i++ {
		l.LBs = append(l.LBs, add(RoleLB, "lb", i, lbHost(i)))
	}
	for i := 1; i <= c.Backends; i++ {
		l.Backends = append(l.Backends, add(RoleBackend, "be", i, backendHost(i)))
	}
	return l
}
