package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/sluicelb/sluice/internal/fastpath"
	"github.com/sluicelb/sluice/internal/fielderr"
)

// Defaults applied by New to the zero fields of a Config.
const (
	// DefaultPort is the GUE UDP port (encap.DefaultGUEPort).
	DefaultPort = 6080
	// DefaultTUN is the name of the TUN device the agent creates.
	DefaultTUN = "sluice0"
	// DefaultBatch is the number of datagrams read per recvmmsg call.
	DefaultBatch = 64
	// MaxBatch bounds Config.Batch; each slot owns a 64 KiB buffer.
	MaxBatch = 1024
	// DefaultFlowTable is the default Config.FlowTable: about 7 MiB of
	// table (56-byte slots, two per record).
	DefaultFlowTable = 65536
	// MaxFlowTable bounds Config.FlowTable.
	MaxFlowTable = 1 << 24
	// DefaultFlowIdle is the default Config.FlowIdle.
	DefaultFlowIdle = time.Minute

	// DefaultFastpathIdle is the default FastpathConfig.Idle.
	DefaultFastpathIdle = 30 * time.Second
	// DefaultFastpathRefresh is the default FastpathConfig.Refresh.
	DefaultFastpathRefresh = time.Second
	// DefaultFastpathFlows is the default FastpathConfig.Flows.
	DefaultFastpathFlows = 65536
	// MaxFastpathFlows bounds FastpathConfig.Flows.
	MaxFastpathFlows = 1 << 22
)

// UDPPolicy says which UDP packets carrying a hop list the agent delivers
// locally; see "Second chance" in the package documentation.
type UDPPolicy string

const (
	// UDPLocal delivers every UDP packet locally (the default).
	UDPLocal UDPPolicy = "local"
	// UDPSecondChance delivers a UDP packet locally only if a connected UDP
	// socket on this host matches its 4-tuple, and otherwise forwards it
	// to the next hop. For UDP services whose server connects a socket per
	// client (QUIC servers often do); an unconnected server socket owns no
	// flow, so with this policy its packets go to the last hop.
	UDPSecondChance UDPPolicy = "second-chance"
)

// DefaultListen is 0.0.0.0:6080. The socket New opens on an unspecified
// address is dual stack: it receives GUE over IPv4 and IPv6 alike (so does
// [::]:6080).
var DefaultListen = netip.AddrPortFrom(netip.IPv4Unspecified(), DefaultPort)

// Config is the agent's configuration. The zero value of every field but
// VIPs and LBPrefixes selects its default.
type Config struct {
	// Listen is the local UDP address GUE arrives on (DefaultListen when
	// invalid, i.e. the zero AddrPort). An unspecified address (0.0.0.0
	// or ::) opens one dual-stack socket; a specific address opens a socket
	// of its family only. Port 0 picks a free port (see Agent.LocalAddr).
	Listen netip.AddrPort
	// TUN is the name of the TUN device (DefaultTUN when empty). New fails
	// if a device of that name exists.
	TUN string
	// VIPs are the service addresses this backend serves, IPv4 and/or
	// IPv6. New adds each one to lo (/32, /128) unless it is there already,
	// so that the kernel accepts packets to it and replies from it. Only
	// inner packets addressed to one of them are delivered. At least one is
	// required, unless Fastpath is set: an agent with Fastpath and no VIPs
	// is a fastpath client only; it creates no TUN device, adds no address
	// and changes no sysctl, and every GUE data message it receives is
	// dropped (inner_dst_not_vip).
	VIPs []netip.Addr
	// Batch is the number of datagrams read per system call (DefaultBatch
	// when 0, at most MaxBatch).
	Batch int
	// AcceptLocal lets inner packets whose source is an address of this
	// host in (sysctl accept_local=1 on the TUN device). Off by default: a
	// client never shares an address with its backend, except in a lab
	// where both live in one namespace, and a spoofed local source is a
	// way to reach services that trust the host's own addresses.
	AcceptLocal bool
	// LBPrefixes are the outer source addresses allowed to send GUE
	// packets and VIP probes to the agent: the LB nodes (their addresses
	// on the network toward the backends). Anything else, except what
	// HopPrefixes admit, is dropped before it is parsed (rejected_source).
	// At least one is required unless AcceptAnySource is set. See "Trust"
	// in the package documentation.
	LBPrefixes []netip.Prefix
	// AcceptAnySource turns the source check off: GUE and VIP probes are
	// accepted from any address, and so is a forwarded packet. For labs
	// only: whoever can reach the UDP port can then inject packets with any
	// inner source address into the VIPs' services. New logs a warning.
	// It cannot be combined with LBPrefixes.
	AcceptAnySource bool
	// Logger receives the setup and teardown steps (nil: discard). The
	// receive loop never logs per packet; it counts.
	Logger *slog.Logger

	// Second chance: what happens to a packet that carries a GUE hop list
	// (see "Second chance" in the package documentation).

	// UDPPolicy is UDPLocal (the default, when empty) or UDPSecondChance.
	UDPPolicy UDPPolicy
	// HopPort is the UDP port the agents of the other hops listen on; a
	// forwarded packet goes to next hop:HopPort. 0 selects the port of this
	// agent's own socket (Agent.LocalAddr): all agents on one port.
	HopPort uint16
	// HopPrefixes are the other agents' addresses (the backend
	// network(s)). They have two uses. (1) Trust: a packet that another
	// agent forwarded (its hop list's next-hop index is 2 or more on
	// arrival) is accepted only from an outer source inside one of them
	// (see "Trust" in the package documentation); empty: from no one
	// (unless AcceptAnySource), so what other agents forward here is
	// dropped as rejected_source. (2) Forwarding: when not
	// empty they are the only addresses the agent forwards to, and a packet
	// whose next hop lies outside all of them is dropped (hop_not_allowed);
	// empty allows any hop the LB's hop list names. An address may be in
	// both HopPrefixes and LBPrefixes.
	HopPrefixes []netip.Prefix
	// FastpathClients are the client hosts whose agents send their flows
	// straight to this backend (fastpath, the backend's side): GUE data
	// messages as an LB sends them (no hop list, or one with next-hop
	// index 0 or 1) are also accepted from an outer source inside one of
	// them; control messages (VIP probes, fastpath messages) and packets
	// forwarded by agents are not. Empty: no fastpath client may send
	// anything. With AcceptAnySource it changes nothing. See "Trust" and "Fastpath" in the package documentation.
	FastpathClients []netip.Prefix
	// FlowTable is the number of TCP flows the agent remembers having
	// delivered locally (DefaultFlowTable when 0, at most MaxFlowTable).
	// When it is full a new flow is not recorded, and its packets are
	// decided by the kernel's socket table alone (counted as
	// owner_table_full).
	FlowTable int
	// FlowIdle is how long a recorded flow without packets is remembered
	// (DefaultFlowIdle when 0). It must outlast a TCP handshake: a
	// connection that completes with SYN cookies has no kernel socket until
	// the handshake's last ACK, and only the record keeps that ACK here.
	FlowIdle time.Duration

	// Fastpath, when set, makes this agent the fastpath agent of a client
	// host (see "Fastpath" in the package documentation): it takes
	// redirects and cancels from the LB nodes (LBPrefixes, which it
	// requires; it cannot be combined with AcceptAnySource) and has its
	// tc egress program encapsulate the redirected flows straight to
	// their backends.
	Fastpath *FastpathConfig
}

// FastpathConfig is the client host's side of fastpath.
type FastpathConfig struct {
	// Interface is the uplink the egress program is attached to (tc
	// egress): the interface the client host's packets to the VIPs leave
	// by. Required.
	Interface string
	// Key is the secret the LB nodes and the agents share (their
	// fastpath key); at least fastpath.MinKeyLen bytes. Required.
	Key []byte
	// BackendPrefixes are the only addresses a redirect may point to (the
	// backends' network). A redirect to a backend outside them is refused
	// (StatusBackend). At least one is required.
	BackendPrefixes []netip.Prefix
	// Idle: a redirected flow that sent nothing for this long is removed
	// and goes through the LB tier again (DefaultFastpathIdle when 0).
	Idle time.Duration
	// Refresh is the interval of the sweep: ended and idle flows are
	// removed, and the LB nodes are told which of their flows sent
	// packets since the last sweep (DefaultFastpathRefresh when 0; at most
	// Idle).
	Refresh time.Duration
	// Flows is the number of flows the egress program's map holds
	// (DefaultFastpathFlows when 0, at most MaxFastpathFlows). A redirect
	// beyond it is refused (StatusFull).
	Flows int
}

// ErrConfig is matched (errors.Is) by every *ConfigError New returns.
var ErrConfig = errors.New("agent: invalid config")

// ConfigError is a validation error from New (fielderr.Error, matching
// ErrConfig): its path is "config." and the Config field, e.g.
// "config.VIPs[2]", its value the offending value.
type ConfigError = fielderr.Error

func configErr(field, value, reason string) *ConfigError {
	return &fielderr.Error{Path: "config." + field, Value: value, Reason: reason, Err: ErrConfig}
}

// withDefaults returns c with its defaults applied, or the first problem.
func (c Config) withDefaults() (Config, error) {
	if !c.Listen.IsValid() {
		c.Listen = DefaultListen
	}
	if a := c.Listen.Addr(); a.Zone() != "" || a.Is4In6() {
		return c, configErr("Listen", c.Listen.String(), "must be a plain IPv4 or IPv6 address (no zone, no IPv4-mapped form)")
	}
	if c.TUN == "" {
		c.TUN = DefaultTUN
	}
	if len(c.TUN) > 15 || strings.ContainsAny(c.TUN, "/: \t\n%") || c.TUN == "." || c.TUN == ".." {
		return c, configErr("TUN", fmt.Sprintf("%q", c.TUN), "not a valid interface name (at most 15 bytes, no '/', ':', '%' or spaces)")
	}
	switch {
	case c.Batch == 0:
		c.Batch = DefaultBatch
	case c.Batch < 0 || c.Batch > MaxBatch:
		return c, configErr("Batch", fmt.Sprint(c.Batch), fmt.Sprintf("must be between 1 and %d", MaxBatch))
	}
	switch c.UDPPolicy {
	case "":
		c.UDPPolicy = UDPLocal
	case UDPLocal, UDPSecondChance:
	default:
		return c, configErr("UDPPolicy", fmt.Sprintf("%q", c.UDPPolicy), fmt.Sprintf("must be %q or %q", UDPLocal, UDPSecondChance))
	}
	switch {
	case c.FlowTable == 0:
		c.FlowTable = DefaultFlowTable
	case c.FlowTable < 0 || c.FlowTable > MaxFlowTable:
		return c, configErr("FlowTable", fmt.Sprint(c.FlowTable), fmt.Sprintf("must be between 1 and %d", MaxFlowTable))
	}
	switch {
	case c.FlowIdle == 0:
		c.FlowIdle = DefaultFlowIdle
	case c.FlowIdle < 0:
		return c, configErr("FlowIdle", c.FlowIdle.String(), "must be positive")
	}
	if err := checkPrefixes("HopPrefixes", c.HopPrefixes); err != nil {
		return c, err
	}
	c.HopPrefixes = append([]netip.Prefix(nil), c.HopPrefixes...)
	if err := checkPrefixes("LBPrefixes", c.LBPrefixes); err != nil {
		return c, err
	}
	c.LBPrefixes = append([]netip.Prefix(nil), c.LBPrefixes...)
	if err := checkPrefixes("FastpathClients", c.FastpathClients); err != nil {
		return c, err
	}
	c.FastpathClients = append([]netip.Prefix(nil), c.FastpathClients...)
	if c.Fastpath != nil {
		fp, err := c.Fastpath.withDefaults()
		if err != nil {
			return c, err
		}
		c.Fastpath = &fp
		if c.AcceptAnySource {
			return c, configErr("AcceptAnySource", "true", "cannot be combined with Fastpath: redirects are taken only from the LB prefixes, which LBPrefixes must list")
		}
	}
	if len(c.VIPs) == 0 && c.Fastpath == nil {
		return c, configErr("VIPs", "[]", "at least one VIP is required (every packet would be dropped), unless Fastpath is set")
	}
	seen := make(map[netip.Addr]int, len(c.VIPs))
	for i, v := range c.VIPs {
		field := fmt.Sprintf("VIPs[%d]", i)
		switch {
		case !v.IsValid():
			return c, configErr(field, "invalid", "not an address")
		case v.Zone() != "" || v.Is4In6():
			return c, configErr(field, v.String(), "must be a plain IPv4 or IPv6 address (no zone, no IPv4-mapped form)")
		case v.IsUnspecified() || v.IsLoopback() || v.IsMulticast() ||
			v.IsLinkLocalUnicast() || v == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return c, configErr(field, v.String(), "must be a unicast address that is not loopback or link-local")
		}
		if j, dup := seen[v]; dup {
			return c, configErr(field, v.String(), fmt.Sprintf("duplicate of VIPs[%d]", j))
		}
		seen[v] = i
	}
	c.VIPs = append([]netip.Addr(nil), c.VIPs...)
	switch {
	case c.AcceptAnySource && len(c.LBPrefixes) > 0:
		return c, configErr("AcceptAnySource", "true", "cannot be combined with LBPrefixes: either the LB nodes' prefixes are listed, or any source is accepted")
	case !c.AcceptAnySource && len(c.LBPrefixes) == 0:
		return c, configErr("LBPrefixes", "[]", "at least one LB prefix is required (the outer sources allowed to send GUE); AcceptAnySource turns the check off, for labs only")
	}
	return c, nil
}

// checkPrefixes validates a list of source or hop prefixes.
func checkPrefixes(field string, ps []netip.Prefix) error {
	for i, p := range ps {
		if !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() || p != p.Masked() {
			return configErr(fmt.Sprintf("%s[%d]", field, i), p.String(), "must be a plain IPv4 or IPv6 prefix without host bits (no zone, no IPv4-mapped form)")
		}
	}
	return nil
}

// withDefaults returns f with its defaults applied (and its slices copied),
// or the first problem.
func (f FastpathConfig) withDefaults() (FastpathConfig, error) {
	switch {
	case f.Interface == "":
		return f, configErr("Fastpath.Interface", `""`, "required: the uplink the egress program is attached to")
	case len(f.Interface) > 15 || strings.ContainsAny(f.Interface, "/: \t\n%") || f.Interface == "." || f.Interface == "..":
		return f, configErr("Fastpath.Interface", fmt.Sprintf("%q", f.Interface), "not a valid interface name (at most 15 bytes, no '/', ':', '%' or spaces)")
	case len(f.Key) < fastpath.MinKeyLen:
		return f, configErr("Fastpath.Key", fmt.Sprintf("%d bytes", len(f.Key)), fmt.Sprintf("at least %d bytes are required", fastpath.MinKeyLen))
	case len(f.BackendPrefixes) == 0:
		return f, configErr("Fastpath.BackendPrefixes", "[]", "at least one backend prefix is required: a redirect may only point inside them")
	}
	if err := checkPrefixes("Fastpath.BackendPrefixes", f.BackendPrefixes); err != nil {
		return f, err
	}
	f.BackendPrefixes = append([]netip.Prefix(nil), f.BackendPrefixes...)
	f.Key = append([]byte(nil), f.Key...)
	switch {
	case f.Idle == 0:
		f.Idle = DefaultFastpathIdle
	case f.Idle < 0:
		return f, configErr("Fastpath.Idle", f.Idle.String(), "must be positive")
	}
	switch {
	case f.Refresh == 0:
		f.Refresh = min(DefaultFastpathRefresh, f.Idle)
	case f.Refresh < 0 || f.Refresh > f.Idle:
		return f, configErr("Fastpath.Refresh", f.Refresh.String(), fmt.Sprintf("must be positive and at most Idle (%s)", f.Idle))
	}
	switch {
	case f.Flows == 0:
		f.Flows = DefaultFastpathFlows
	case f.Flows < 0 || f.Flows > MaxFastpathFlows:
		return f, configErr("Fastpath.Flows", fmt.Sprint(f.Flows), fmt.Sprintf("must be between 1 and %d", MaxFastpathFlows))
	}
	return f, nil
}
