// Package config is the node configuration of `sluice lb`: one YAML
// document naming the interfaces, the I/O mode, the workers, the GUE port
// and the VIPs with their backends. Decoding is strict (unknown fields are
// errors) and validation covers the whole document, naming the path and
// the value of every problem (`vips[1].backends[2].weight: -1 is negative`).
//
// It is the seed of the full control-plane schema; docs/config.md documents
// it field by field.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluicelb/sluice/internal/fielderr"
	"github.com/sluicelb/sluice/internal/maglev"
)

// Config is a node's configuration.
type Config struct {
	Node Node `yaml:"node"`
	// Tenants share the node: each sends its traffic as VXLAN with its
	// VNI to the node's VTEP address (VXLAN) and sees only its own VIPs
	// (VIP.Tenant), which may reuse other tenants' addresses.
	Tenants []Tenant `yaml:"tenants,omitempty"`
	VXLAN   *VXLAN   `yaml:"vxlan,omitempty"`
	// Routes are the default tenant's (Tenant.Routes): what the node
	// sends to a backend in a route's prefix goes through its next hop.
	Routes []Route `yaml:"routes,omitempty"`
	VIPs   []VIP   `yaml:"vips"`
}

// Node holds the settings of this LB node.
type Node struct {
	Interfaces []string `yaml:"interfaces"` // where VIP traffic arrives and encapsulated traffic leaves
	IO         string   `yaml:"io"`         // afxdp | afpacket | auto (default auto)
	XDPMode    string   `yaml:"xdp_mode"`   // auto | native | generic (default auto)
	// Offload forwards established flows in the kernel (the XDP offload
	// of the flow cache): auto where the link is AF_XDP and the kernel
	// loads the program (otherwise the node logs why not and forwards in
	// Go), off never (the default).
	Offload      string `yaml:"offload"`
	Workers      int    `yaml:"workers"`       // workers (queues) per interface; default 1
	GUEPort      int    `yaml:"gue_port"`      // default 6080
	Seed         uint64 `yaml:"seed"`          // cluster-wide hash seed; identical on every node
	FlowCapacity int    `yaml:"flow_capacity"` // flows per worker; default 1048576
	MTU          int    `yaml:"mtu"`           // outer IP MTU toward the backends; default 1500
	// TooBig is what happens to a packet that exceeds mtu once
	// encapsulated: icmp (default) answers the client with ICMP
	// "fragmentation needed" / "packet too big" when the packet may not be
	// fragmented, and otherwise sends it with its outer packet fragmented
	// by the kernel; drop drops it.
	TooBig string `yaml:"too_big"`
	// ICMPRate caps the ICMP "too big" answers per second (the node's
	// total, shared evenly by its workers); default 1000.
	ICMPRate int `yaml:"icmp_rate"`
	// Fragments: forward (default) sends a datagram's later fragments to
	// the backend its first fragment went to; drop drops them.
	Fragments string `yaml:"fragments"`
	SourceV4  string `yaml:"source_v4"`  // outer source address; default: the interface's first IPv4 address
	SourceV6  string `yaml:"source_v6"`  // likewise for IPv6
	AdminAddr string `yaml:"admin_addr"` // admin API and /metrics; default 127.0.0.1:6090
	BGP       *BGP   `yaml:"bgp"`        // announce the VIPs to routers; none: no announcements
	// SNAT is the node's SNAT addresses, the source of what full-NAT VIPs
	// (forwarding: nat) send to their backends: at least one of each
	// family those VIPs' backends have. They belong to the datapath (not
	// assigned to an interface; routers route them to this node) and
	// must be this node's alone.
	SNAT []string `yaml:"snat,omitempty"`
	// SNATPorts is the SNAT port range, dealt to the workers in blocks of
	// 256; default 1024-65535.
	SNATPorts *PortRange `yaml:"snat_ports,omitempty"`
	// Cluster makes the node a member of a cluster of LB nodes (see
	// Cluster); none: the node runs alone.
	Cluster *Cluster `yaml:"cluster"`
	// L2 announces the VIPs on a shared Ethernet segment (ARP, IPv6
	// neighbour discovery) instead of BGP: each VIP address is answered by
	// one live node (see L2).
	L2 *L2 `yaml:"l2"`
	// Fastpath lets the node redirect the established flows of VIPs with
	// fastpath on to their client hosts' agents (see Fastpath); none: no
	// VIP may have fastpath.
	Fastpath *Fastpath `yaml:"fastpath,omitempty"`
}

// PortRange is an inclusive range of ports.
type PortRange struct {
	Lo int `yaml:"lo"`
	Hi int `yaml:"hi"`
}

// Forwarding modes of a VIP.
const (
	ForwardingGUE  = "gue"  // encapsulated in GUE to the backend's agent
	ForwardingIPIP = "ipip" // encapsulated in IPIP (IPv4 or IPv6 in IPv6)
	ForwardingNAT  = "nat"  // full-NAT: rewritten to the backend, from a node.snat address
)

// BGP configures the node's BGP speaker: it announces each VIP as a host
// route (/32, /128) with the node as next hop while the node is in service
// and the VIP has a backend in service.
type BGP struct {
	ASN         uint32    `yaml:"asn"`       // this node's AS
	RouterID    string    `yaml:"router_id"` // the BGP identifier: an IPv4 address unique among the peers' neighbours
	Communities []string  `yaml:"communities"`
	NextHopV4   string    `yaml:"next_hop_v4"` // default: the session's local address
	NextHopV6   string    `yaml:"next_hop_v6"` // required to announce IPv6 VIPs over IPv4 sessions
	Peers       []BGPPeer `yaml:"peers"`
	// ShutdownGrace is how long a node that stops keeps forwarding after
	// it withdrew its routes, so that routers move flows to the other
	// nodes before it stops. Default 2s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
}

// BGPPeer is one router.
type BGPPeer struct {
	Address      string        `yaml:"address"`
	ASN          uint32        `yaml:"asn"`
	Port         int           `yaml:"port"`          // default 179
	HoldTime     time.Duration `yaml:"hold_time"`     // default 9s
	Keepalive    time.Duration `yaml:"keepalive"`     // default hold_time/3
	ConnectRetry time.Duration `yaml:"connect_retry"` // default 5s
	BFD          *BFD          `yaml:"bfd"`
}

// BFD enables BFD on a BGP session.
type BFD struct {
	MinRx      time.Duration `yaml:"min_rx"` // default 300ms
	MinTx      time.Duration `yaml:"min_tx"` // default 300ms
	Multiplier int           `yaml:"multiplier"`
}

// VIP is a virtual service.
type VIP struct {
	Name       string `yaml:"name"`
	Address    string `yaml:"address"`
	Protocol   string `yaml:"protocol"` // tcp | udp
	Port       int    `yaml:"port"`     // 0 with port_end 0: every port
	PortEnd    int    `yaml:"port_end"` // optional end of a port range
	MaglevSize uint32 `yaml:"maglev_size"`
	// Forwarding is how packets reach the backends: gue (default), ipip
	// or nat (full-NAT: any server, no agent). Encap is its old name,
	// still read: one alone sets both; both must agree.
	Forwarding   string `yaml:"forwarding"`
	Encap        string `yaml:"encap"` // gue | ipip; the old name of forwarding
	encapOnly    bool   // the document set encap and not forwarding (for error paths)
	Affinity     string `yaml:"affinity"` // on-change (default) | stateless
	SecondChance bool   `yaml:"second_chance"`
	// DrainPeriod is how long a filling or draining backend of a second
	// chance VIP keeps the previous owners of its slots as secondaries
	// before the change completes on its own (filling -> active, draining
	// -> removed from the configuration). 1s to 24h; default 60s.
	DrainPeriod time.Duration `yaml:"drain_period"`
	Health      *Health       `yaml:"health"` // none: backends are always in the table
	Backends    []Backend     `yaml:"backends"`
	// QUIC routes the VIP's QUIC packets by connection ID (UDP only); the
	// backends' server IDs are Backend.ServerID.
	QUIC *QUIC `yaml:"quic,omitempty"`
	// Tenant is the name of the tenant the VIP belongs to (Config.Tenants);
	// empty: the default tenant (traffic that is not a tenant's VXLAN).
	Tenant string `yaml:"tenant,omitempty"`
	// Firewall filters the VIP's flows by ordered allow/deny rules; none:
	// every flow is allowed.
	Firewall *Firewall `yaml:"firewall,omitempty"`
	// Bypass: off (default, also "") or single-backend: while every
	// service on the VIP's address has exactly one backend in service, and
	// it is the same one, the LB nodes announce the address with that
	// backend as BGP next hop and keep no flow state for it (package
	// bypass decides). Every service on one address must say the same.
	Bypass string `yaml:"bypass,omitempty"`
	// Fastpath: once a flow from one of FastpathClients is established,
	// the node forwarding it tells the client host's agent its backend,
	// and the client host sends the flow's packets straight there (needs
	// node.fastpath; GUE only).
	Fastpath        bool     `yaml:"fastpath,omitempty"`
	FastpathClients []string `yaml:"fastpath_clients,omitempty"`
}

// Values of VIP.Bypass.
const (
	BypassOff           = "off"
	BypassSingleBackend = "single-backend"
)

// BypassOn reports whether v has bypass single-backend.
func (v *VIP) BypassOn() bool { return v.Bypass == BypassSingleBackend }

// Health is a VIP's health check, run against each of its backends. A
// backend that fails it leaves the Maglev table until it passes again.
type Health struct {
	// Type: vip (a GUE probe the backend's agent answers after checking the
	// service on the VIP itself — what the traffic needs), tcp, http,
	// https (connect to / GET the backend's own address), or udp.
	Type         string        `yaml:"type"`
	Port         int           `yaml:"port"`          // tcp/http/https/udp: backend port; default the VIP's port
	Path         string        `yaml:"path"`          // http/https; default /
	ExpectStatus int           `yaml:"expect_status"` // http/https; default 200
	Send         string        `yaml:"send"`          // udp: the request (required for udp)
	Expect       string        `yaml:"expect"`        // udp: the prefix the reply must start with
	Interval     time.Duration `yaml:"interval"`      // default 2s
	Timeout      time.Duration `yaml:"timeout"`       // default 1s (half the interval when it is 1s or less)
	Rise         int           `yaml:"rise"`          // consecutive successes to come back; default 2
	Fall         int           `yaml:"fall"`          // consecutive failures to leave; default 3
}

// Backend is a real server of a VIP.
type Backend struct {
	Address string `yaml:"address"`
	Weight  *int   `yaml:"weight"` // default 1; 0 = no new flows, like draining
	// State: active (default); draining: keeps its flows, receives no new
	// ones; filling: newly added with second chance, its slots' previous
	// owners keep their connections (see VIP.DrainPeriod).
	State string `yaml:"state"`
	// ServerID is the backend's QUIC-LB server ID in hex, for a VIP with
	// quic; empty: the last quic.server_id_len octets of its address.
	ServerID string `yaml:"server_id,omitempty"`
}

// Backend states.
const (
	StateActive   = "active"
	StateDraining = "draining"
	StateFilling  = "filling"
)

// Affinity modes of a VIP.
const (
	// AffinityOnChange keeps a per-node flow table: a flow stays on its
	// backend while the backend set changes, on the node that saw it.
	AffinityOnChange = "on-change"
	// AffinityStateless keeps no flow state: every packet goes to the
	// Maglev owner of its slot, so a change of the backend set moves the
	// flows of the changed slots.
	AffinityStateless = "stateless"
	// AffinityAlways inserts every new flow into its owner chain in the
	// cluster (node.cluster required), so that any member can later learn
	// the flow's backend.
	AffinityAlways = "always"
)

// LifeCycle reports whether v's backends may fill and drain (states
// filling and draining, completed on their own after v.DrainPeriod): their
// slots' previous owners keep their connections, through second chance, or
// through the cluster's owner chains (node.cluster with affinity
// on-change publishes the flows of the slots that change owner).
func (c *Config) LifeCycle(v *VIP) bool {
	// (Full-NAT and QUIC VIPs keep no chain state: see pipeline.ChainUse.)
	return v.SecondChance || (c.Node.Cluster != nil && v.Affinity == AffinityOnChange && v.Forwarding != ForwardingNAT && v.QUIC == nil)
}

// EffectiveWeight is the weight the Maglev table uses: 0 while draining.
func (b *Backend) EffectiveWeight() int {
	if b.State == StateDraining || b.Weight == nil {
		return 0
	}
	return *b.Weight
}

// Values of node.too_big and node.fragments.
const (
	TooBigICMP       = "icmp"
	TooBigDrop       = "drop"
	FragmentsForward = "forward"
	FragmentsDrop    = "drop"
)

// Defaults.
const (
	DefaultGUEPort      = 6080
	DefaultFlowCapacity = 1 << 20
	DefaultMTU          = 1500
	DefaultICMPRate     = 1000
	DefaultAdminAddr    = "127.0.0.1:6090"
	DefaultDrainPeriod  = 60 * time.Second
)

// Load reads and validates a file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes and validates a document, filling in defaults. A document
// whose secrets are the placeholder Redacted is rejected (naming each such
// field): a file or a document of the operator's holds its real secrets.
func Parse(b []byte) (*Config, error) { return ParseRestoring(b, nil) }

// ParseRestoring is Parse for a document that may hold the placeholder
// Redacted in place of secrets, such as the redacted running configuration
// read from the admin API and edited: each placeholder takes the secret of
// the same field in running (Config.RestoreSecrets) before validation. A
// placeholder with no running secret to keep is a problem of the document,
// listed with the others.
func ParseRestoring(b []byte, running *Config) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty configuration")
		}
		return nil, err
	}
	if err := dec.Decode(new(any)); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	c.setDefaults()
	rerr := c.RestoreSecrets(running)
	verr := c.Validate()
	if rerr == nil && verr == nil {
		return &c, nil
	}
	// Every problem, the placeholders first; a field holding one is not
	// reported again as a malformed key.
	var errs Errors
	if rerr != nil {
		errs = append(errs, rerr.(Errors)...)
	}
	flagged := c.placeholders()
	if ve, ok := verr.(Errors); ok {
		for _, e := range ve {
			if fe, ok := e.(*FieldError); ok && flagged[fe.Path] {
				continue
			}
			errs = append(errs, e)
		}
	} else if verr != nil {
		errs = append(errs, verr)
	}
	return nil, errs
}

func (c *Config) setDefaults() {
	n := &c.Node
	if n.IO == "" {
		n.IO = "auto"
	}
	if n.XDPMode == "" {
		n.XDPMode = "auto"
	}
	if n.Offload == "" {
		n.Offload = "off"
	}
	if n.Workers == 0 {
		n.Workers = 1
	}
	if n.GUEPort == 0 {
		n.GUEPort = DefaultGUEPort
	}
	if n.FlowCapacity == 0 {
		n.FlowCapacity = DefaultFlowCapacity
	}
	if n.MTU == 0 {
		n.MTU = DefaultMTU
	}
	if n.TooBig == "" {
		n.TooBig = TooBigICMP
	}
	if n.ICMPRate == 0 {
		n.ICMPRate = DefaultICMPRate
	}
	if n.Fragments == "" {
		n.Fragments = FragmentsForward
	}
	if n.AdminAddr == "" {
		n.AdminAddr = DefaultAdminAddr
	}
	if g := n.BGP; g != nil && g.ShutdownGrace == 0 {
		g.ShutdownGrace = 2 * time.Second
	}
	setVXLANDefaults(c)
	if n.Cluster != nil {
		n.Cluster.setDefaults()
	}
	if n.L2 != nil {
		n.L2.setDefaults(n)
	}
	if n.Fastpath != nil {
		n.Fastpath.setDefaults()
	}
	for i := range c.VIPs {
		v := &c.VIPs[i]
		if v.Forwarding == "" && v.Encap != "" {
			v.Forwarding, v.encapOnly = v.Encap, true
		}
		if v.Forwarding == "" {
			v.Forwarding = ForwardingGUE
		}
		if v.Encap == "" {
			v.Encap = v.Forwarding
		}
		if v.Affinity == "" {
			v.Affinity = AffinityOnChange
		}
		if v.DrainPeriod == 0 {
			v.DrainPeriod = DefaultDrainPeriod
		}
		setQUICDefaults(v)
		if v.Firewall != nil && v.Firewall.Default == "" {
			v.Firewall.Default = FirewallAllow
		}
		for j := range v.Backends {
			b := &v.Backends[j]
			if b.Weight == nil {
				one := 1
				b.Weight = &one
			}
			if b.State == "" {
				b.State = StateActive
			}
		}
	}
}

// Errors is every problem found in a document.
type Errors []error

func (e Errors) Error() string {
	s := make([]string, len(e))
	for i, err := range e {
		s[i] = err.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap lets errors.Is and errors.As look at each problem.
func (e Errors) Unwrap() []error { return e }

// FieldError is one problem: the path of the field, its value and what is
// wrong with it (the shared shape, fielderr.Error).
type FieldError = fielderr.Error

// Validate checks the whole document and returns every problem (as Errors).
func (c *Config) Validate() error {
	var errs Errors
	bad := func(path string, value any, reason string) {
		errs = append(errs, fielderr.New(path, value, reason))
	}
	n := &c.Node
	if len(n.Interfaces) == 0 {
		bad("node.interfaces", nil, "at least one interface is required")
	}
	seen := map[string]bool{}
	for i, ifc := range n.Interfaces {
		if ifc == "" || len(ifc) > 15 || strings.ContainsAny(ifc, "/ \t") {
			bad(fmt.Sprintf("node.interfaces[%d]", i), fmt.Sprintf("%q", ifc), "is not an interface name")
		}
		if seen[ifc] {
			bad(fmt.Sprintf("node.interfaces[%d]", i), ifc, "is listed twice")
		}
		seen[ifc] = true
	}
	switch n.IO {
	case "auto", "afxdp", "afpacket":
	default:
		bad("node.io", n.IO, "is not afxdp, afpacket or auto")
	}
	switch n.XDPMode {
	case "auto", "native", "generic":
	default:
		bad("node.xdp_mode", n.XDPMode, "is not native, generic or auto")
	}
	switch n.Offload {
	case "auto", "off":
	default:
		bad("node.offload", n.Offload, "is not auto or off")
	}
	if n.Workers < 1 || n.Workers > 64 {
		bad("node.workers", n.Workers, "is not between 1 and 64")
	}
	if n.GUEPort < 1 || n.GUEPort > 65535 {
		bad("node.gue_port", n.GUEPort, "is not a port (1-65535)")
	}
	if n.FlowCapacity < 1 || n.FlowCapacity > 1<<28 {
		bad("node.flow_capacity", n.FlowCapacity, "is not between 1 and 268435456")
	}
	if n.MTU < 1280 || n.MTU > 9216 {
		bad("node.mtu", n.MTU, "is not between 1280 and 9216")
	}
	if n.TooBig != TooBigICMP && n.TooBig != TooBigDrop {
		bad("node.too_big", n.TooBig, "is not icmp or drop")
	}
	if n.ICMPRate < 1 || n.ICMPRate > 1000000 {
		bad("node.icmp_rate", n.ICMPRate, "is not between 1 and 1000000")
	}
	if n.Fragments != FragmentsForward && n.Fragments != FragmentsDrop {
		bad("node.fragments", n.Fragments, "is not forward or drop")
	}
	for _, s := range []struct {
		path, v string
		v4      bool
	}{{"node.source_v4", n.SourceV4, true}, {"node.source_v6", n.SourceV6, false}} {
		if s.v == "" {
			continue
		}
		a, err := netip.ParseAddr(s.v)
		if err != nil || a.Is4() != s.v4 || a.Is4In6() {
			bad(s.path, s.v, "is not an IPv"+map[bool]string{true: "4", false: "6"}[s.v4]+" address")
		}
	}

	if _, err := netip.ParseAddrPort(n.AdminAddr); err != nil {
		bad("node.admin_addr", fmt.Sprintf("%q", n.AdminAddr), "is not IP:port")
	}
	if g := n.BGP; g != nil {
		validateBGP(g, bad)
	}
	validateCluster(c, bad)
	validateL2(c, bad)
	validateFastpath(c, bad)

	snatFamilies := validateSNAT(c, bad)

	if len(c.VIPs) == 0 {
		bad("vips", nil, "at least one VIP is required")
	}
	names := map[string]int{}
	type svcKey struct {
		addr   netip.Addr
		proto  string
		tenant string
	}
	tenants := validateTenants(c, bad)
	ports := map[svcKey][][3]int{} // lo, hi, index
	inFlight := map[int]int{}      // VIP index -> its filling or draining backend (second chance)
	for i, v := range c.VIPs {
		p := fmt.Sprintf("vips[%d]", i)
		if v.Name == "" {
			bad(p+".name", nil, "is required")
		} else if j, dup := names[v.Name]; dup {
			bad(p+".name", v.Name, fmt.Sprintf("is also the name of vips[%d]", j))
		} else {
			names[v.Name] = i
		}
		addr, err := netip.ParseAddr(v.Address)
		if err != nil || addr.Is4In6() || addr.IsUnspecified() || addr.IsMulticast() || addr.Zone() != "" {
			bad(p+".address", fmt.Sprintf("%q", v.Address), "is not a unicast IP address")
			addr = netip.Addr{}
		}
		if v.Protocol != "tcp" && v.Protocol != "udp" {
			bad(p+".protocol", fmt.Sprintf("%q", v.Protocol), "is not tcp or udp")
		}
		if v.Port < 0 || v.Port > 65535 {
			bad(p+".port", v.Port, "is not a port (0-65535)")
		}
		lo, hi := v.Port, v.PortEnd
		if v.PortEnd != 0 {
			if v.PortEnd < v.Port || v.PortEnd > 65535 {
				bad(p+".port_end", v.PortEnd, fmt.Sprintf("is not between port (%d) and 65535", v.Port))
			}
		} else {
			hi = lo
		}
		if addr.IsValid() {
			k := svcKey{addr, v.Protocol, v.Tenant}
			for _, o := range ports[k] {
				if lo <= o[1] && o[0] <= hi || lo == 0 && hi == 0 || o[0] == 0 && o[1] == 0 {
					bad(p+".port", v.Port, fmt.Sprintf("overlaps vips[%d] (%s %s)", o[2], v.Address, v.Protocol))
				}
			}
			ports[k] = append(ports[k], [3]int{lo, hi, i})
		}
		if v.MaglevSize != 0 && (v.MaglevSize < 101 || !maglev.IsPrime(v.MaglevSize)) {
			bad(p+".maglev_size", v.MaglevSize, "is not a prime >= 101")
		}
		switch {
		case v.encapOnly && v.Encap != ForwardingGUE && v.Encap != ForwardingIPIP:
			bad(p+".encap", v.Encap, "is not gue or ipip")
		case v.Forwarding != ForwardingGUE && v.Forwarding != ForwardingIPIP && v.Forwarding != ForwardingNAT:
			bad(p+".forwarding", v.Forwarding, "is not gue, ipip or nat")
		case v.Encap != v.Forwarding:
			bad(p+".encap", v.Encap, fmt.Sprintf("differs from forwarding %s (encap is its old name: set one)", v.Forwarding))
		}
		if v.Forwarding == ForwardingNAT {
			validateNATVIP(c, p, &v, snatFamilies, bad)
		}
		switch v.Affinity {
		case AffinityOnChange, AffinityStateless:
		case AffinityAlways:
			if n.Cluster == nil {
				bad(p+".affinity", v.Affinity, "needs node.cluster (every new flow is inserted into its owner chain in the cluster)")
			}
			if v.QUIC != nil {
				bad(p+".affinity", v.Affinity, "is not available for a QUIC VIP (it routes by connection ID and keeps no flow entries)")
			}
		default:
			bad(p+".affinity", fmt.Sprintf("%q", v.Affinity), "is not on-change, stateless or always")
		}
		if v.SecondChance && v.Forwarding != ForwardingGUE {
			bad(p+".second_chance", true, "needs forwarding gue (the hop list travels in the GUE header)")
		}
		validateQUIC(p, &v, bad)
		validateFirewall(p, &v, bad)
		validateBypass(c, i, addr, bad)
		validateFastpathVIP(c, p, &v, addr, bad)
		if v.Tenant != "" && !tenants[v.Tenant] {
			bad(p+".tenant", v.Tenant, "is not one of tenants[].name")
		}
		if h := v.Health; h != nil {
			hp := p + ".health"
			switch h.Type {
			case "vip", "tcp", "http", "https", "udp":
			default:
				bad(hp+".type", fmt.Sprintf("%q", h.Type), "is not vip, tcp, http, https or udp")
			}
			if h.Port < 0 || h.Port > 65535 {
				bad(hp+".port", h.Port, "is not a port (0-65535)")
			}
			if h.Port == 0 && v.Port == 0 && h.Type != "vip" {
				bad(hp+".port", 0, "must be set for a VIP serving every port")
			}
			if h.Type == "udp" && h.Send == "" {
				bad(hp+".send", nil, "is required for udp checks")
			}
			if h.Type == "vip" && v.Port == 0 {
				bad(hp+".type", "vip", "needs a VIP with a port")
			}
			if h.Interval < 0 || h.Timeout < 0 || h.Interval > 0 && h.Timeout >= h.Interval {
				bad(hp+".timeout", h.Timeout, fmt.Sprintf("must be positive and below the interval (%v)", h.Interval))
			}
			if h.Rise < 0 || h.Rise > 100 {
				bad(hp+".rise", h.Rise, "is not between 1 and 100")
			}
			if h.Fall < 0 || h.Fall > 100 {
				bad(hp+".fall", h.Fall, "is not between 1 and 100")
			}
			if h.ExpectStatus != 0 && (h.ExpectStatus < 100 || h.ExpectStatus > 599) {
				bad(hp+".expect_status", h.ExpectStatus, "is not an HTTP status")
			}
		}
		if len(v.Backends) == 0 {
			bad(p+".backends", nil, "at least one backend is required")
		}
		if v.MaglevSize != 0 && len(v.Backends) > 0 && uint32(len(v.Backends))*100 > v.MaglevSize {
			bad(p+".maglev_size", v.MaglevSize, fmt.Sprintf("is below 100 x %d backends: the table cannot balance", len(v.Backends)))
		}
		if v.DrainPeriod < time.Second || v.DrainPeriod > 24*time.Hour {
			bad(p+".drain_period", v.DrainPeriod, "is not between 1s and 24h")
		}
		seenBE := map[netip.Addr]int{}
		for j, b := range v.Backends {
			bp := fmt.Sprintf("%s.backends[%d]", p, j)
			ba, err := netip.ParseAddr(b.Address)
			if err != nil || ba.Is4In6() || ba.IsUnspecified() || ba.IsMulticast() || ba.Zone() != "" {
				bad(bp+".address", fmt.Sprintf("%q", b.Address), "is not a unicast IP address")
			} else {
				if k, dup := seenBE[ba]; dup {
					bad(bp+".address", b.Address, fmt.Sprintf("is also backends[%d]", k))
				}
				seenBE[ba] = j
				if j > 0 {
					if first, err := netip.ParseAddr(v.Backends[0].Address); err == nil && first.Is4() != ba.Is4() {
						bad(bp+".address", b.Address, "differs in family from backends[0] (one outer family per VIP)")
					}
				}
			}
			switch b.State {
			case StateActive, StateDraining:
			case StateFilling:
				// The previous owners keep their connections through second
				// chance, or through the cluster's owner chains (on-change
				// publishes the flows of the slots that change owner).
				if !c.LifeCycle(&v) {
					bad(bp+".state", b.State, "needs second_chance, or node.cluster with affinity on-change (a filling backend's slots keep their connections on their previous owners)")
				}
			default:
				bad(bp+".state", fmt.Sprintf("%q", b.State), "is not active, draining or filling")
			}
			if b.State != StateActive && v.SecondChance {
				if k, busy := inFlight[i]; busy {
					bad(bp+".state", b.State, fmt.Sprintf("backends[%d] is %s: one change at a time per second-chance VIP (second chance covers one change per slot); wait until it completes", k, v.Backends[k].State))
				} else {
					inFlight[i] = j
				}
			}
			if w := *b.Weight; w < 0 {
				bad(bp+".weight", w, "is negative")
			} else if w > 1000000 {
				bad(bp+".weight", w, "is above 1000000")
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func validateBGP(g *BGP, bad func(path string, value any, reason string)) {
	if g.ASN == 0 {
		bad("node.bgp.asn", nil, "is required (1-4294967295)")
	}
	if a, err := netip.ParseAddr(g.RouterID); err != nil || !a.Is4() || a.IsUnspecified() {
		bad("node.bgp.router_id", fmt.Sprintf("%q", g.RouterID), "is not an IPv4 address (the BGP identifier)")
	}
	for i, c := range g.Communities {
		hi, lo, ok := strings.Cut(c, ":")
		if !ok || !isUint16(hi) || !isUint16(lo) {
			bad(fmt.Sprintf("node.bgp.communities[%d]", i), fmt.Sprintf("%q", c), "is not ASN:value (each 0-65535)")
		}
	}
	for _, nh := range []struct {
		path, v string
		v4      bool
	}{{"node.bgp.next_hop_v4", g.NextHopV4, true}, {"node.bgp.next_hop_v6", g.NextHopV6, false}} {
		if nh.v == "" {
			continue
		}
		if a, err := netip.ParseAddr(nh.v); err != nil || a.Is4() != nh.v4 || a.Is4In6() || a.IsUnspecified() {
			bad(nh.path, fmt.Sprintf("%q", nh.v), "is not a unicast address of its family")
		}
	}
	if g.ShutdownGrace < 0 || g.ShutdownGrace > time.Minute {
		bad("node.bgp.shutdown_grace", g.ShutdownGrace, "is not between 0 and 1m")
	}
	if len(g.Peers) == 0 {
		bad("node.bgp.peers", nil, "at least one peer is required")
	}
	seen := map[netip.Addr]int{}
	for i, p := range g.Peers {
		pp := fmt.Sprintf("node.bgp.peers[%d]", i)
		a, err := netip.ParseAddr(p.Address)
		if err != nil || a.Is4In6() || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
			bad(pp+".address", fmt.Sprintf("%q", p.Address), "is not a unicast IP address")
		} else if j, dup := seen[a]; dup {
			bad(pp+".address", p.Address, fmt.Sprintf("is also peers[%d]", j))
		} else {
			seen[a] = i
		}
		if p.ASN == 0 {
			bad(pp+".asn", nil, "is required")
		}
		if p.Port < 0 || p.Port > 65535 {
			bad(pp+".port", p.Port, "is not a port")
		}
		if p.HoldTime != 0 && (p.HoldTime < 3*time.Second || p.HoldTime%time.Second != 0 || p.HoldTime > 65535*time.Second) {
			bad(pp+".hold_time", p.HoldTime, "is not whole seconds between 3s and 65535s")
		}
		hold := p.HoldTime
		if hold == 0 {
			hold = 9 * time.Second
		}
		if p.Keepalive != 0 && (p.Keepalive < time.Second || p.Keepalive%time.Second != 0 || p.Keepalive >= hold) {
			bad(pp+".keepalive", p.Keepalive, fmt.Sprintf("is not whole seconds, at least 1s and below the hold time (%v)", hold))
		}
		if p.ConnectRetry < 0 || p.ConnectRetry%time.Second != 0 {
			bad(pp+".connect_retry", p.ConnectRetry, "is not whole seconds")
		}
		if b := p.BFD; b != nil {
			for _, iv := range []struct {
				path string
				v    time.Duration
			}{{".bfd.min_rx", b.MinRx}, {".bfd.min_tx", b.MinTx}} {
				if iv.v != 0 && (iv.v < 10*time.Millisecond || iv.v > time.Hour) {
					bad(pp+iv.path, iv.v, "is not between 10ms and 1h")
				}
			}
			if b.Multiplier < 0 || b.Multiplier > 255 {
				bad(pp+".bfd.multiplier", b.Multiplier, "is not between 1 and 255")
			}
		}
	}
}

func isUint16(s string) bool {
	n, err := strconv.ParseUint(s, 10, 16)
	return err == nil && n <= 65535
}
