// Package scenario runs Sluice for real in the lab: the topology, a `sluice
// agent` and HTTP and UDP servers on every backend host, and `sluice lb` on
// every LB node, all as separate processes of the sluice binary in their
// namespaces. The demo and the end-to-end tests both use it.
package scenario

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/lab"
)

// Ports of the services the scenario configures on both VIPs.
const (
	HTTPPort   = 80
	UDPPort    = 7000
	StreamPort = 9000 // the stream protocol (lab.ServeStream), with Options.Streams
)

// AgentMetricsAddr is where agents serve /metrics with Options.AgentMetrics
// (in each backend's namespace).
const AgentMetricsAddr = "127.0.0.1:6091"

// Options describe a scenario.
type Options struct {
	Binary   string // the sluice binary to run in the namespaces
	Prefix   string // lab namespace prefix
	LBs      int    // default 1
	Backends int    // default 3
	// Workers is each LB node's node.workers, and the queues of its veth
	// (lab.Config.LBQueues). Default 1.
	Workers int
	IO      string // afpacket | afxdp | auto (default auto)
	XDPMode string // auto | native | generic (default auto)
	VIP4    netip.Addr
	VIP6    netip.Addr
	LogDir  string // process logs; default a temporary directory
	// BGP runs a BGP daemon on the router (Router) and makes every LB node
	// announce the VIPs to it (eBGP), instead of static ECMP routes.
	BGP bool
	// Router is the router's BGP daemon with BGP: "bird" (default) or
	// "frr" (zebra, bfdd and bgpd; lab.StartFRR).
	Router string
	// BFD turns BFD on for the BGP sessions (100 ms x 3).
	BFD bool
	// Seeds, when set, gives LB node i the hash seed Seeds[i] (default:
	// the same seed everywhere, as a cluster must run). Different seeds
	// make the nodes disagree: the control run of the failover tests.
	Seeds []uint64
	// Streams starts a stream-protocol server on every backend and a
	// "stream4" service on StreamPort of the IPv4 VIP.
	Streams bool
	// SecondChance turns second chance on for stream4 (with a drain period
	// of an hour unless DrainPeriod is set: tests move the backend states
	// themselves).
	SecondChance bool
	// DrainPeriod, when set, is stream4's drain_period (with or without
	// second chance): a filling or draining backend's change completes on
	// its own after it.
	DrainPeriod time.Duration
	// StreamStates gives backend j of stream4 the state StreamStates[j]:
	// "" or "active", "filling", "draining", or "absent" (not listed).
	// "filling" is written as active unless stream4 has a backend life
	// cycle (LifeCycle). Tests change it, then ReloadLB every node with
	// ConfigFor.
	StreamStates []string
	// AgentMetrics makes every agent serve Prometheus metrics on
	// AgentMetricsAddr in its namespace.
	AgentMetrics bool
	// AgentAcceptAnySource starts the agents with --accept-any-source
	// instead of their trust prefixes (the control run of the trust test).
	// By default every agent gets --lb-prefix Lab.LBPrefixes (the LB
	// nodes' addresses) and --hop-prefix Lab.BackendPrefixes (the
	// backends').
	AgentAcceptAnySource bool
	// QUIC starts a QUIC echo server (lab.ServeQUIC) issuing QUIC-LB
	// connection IDs on every backend and a "quic4" service on QUICPort of
	// the IPv4 VIP, routed by connection ID (see quic.go).
	QUIC bool
	// QUICByTuple leaves the quic block out of quic4's configuration: the
	// servers still issue QUIC-LB connection IDs, but the LB nodes route
	// by the 4-tuple (the control run of the QUIC tests).
	QUICByTuple bool
	// Node is added to every LB node's node section: YAML lines indented
	// by two spaces ("  too_big: drop\n").
	Node string
	// NAT runs the backends as plain servers: the HTTP server and the UDP
	// echo on each backend's own addresses, no agent and no VIP. The VIPs
	// are configured with forwarding NATForwarding (default nat), each LB
	// node with its SNAT addresses (lab.Node.SNAT4, SNAT6), and the router
	// routes those to their nodes (lab.RouteSNAT; a control run removes
	// them).
	NAT           bool
	NATForwarding string
	// Cluster makes the LB nodes one cluster (node.cluster): each binds
	// its service-segment address (ClusterBind), its peers are the other
	// LB nodes, the key is ClusterKey.
	Cluster bool
	// Offload sets node.offload: auto on every LB node (the XDP offload of
	// the flow cache); unless XDPMode is generic, the router's ends of the
	// LB nodes' veths get an XDP program that passes everything
	// (lab.RouterPassXDP), without which a veth drops its peer's XDP_TX
	// frames.
	Offload bool
	// Affinity, when set, is the affinity of the HTTP and UDP services and
	// of stream4 (always needs Cluster; quic4 keeps no flow entries).
	Affinity string
	// Streams6 adds, with Streams, a "stream6" service on StreamPort of
	// the IPv6 VIP (its servers listen there too).
	Streams6 bool
	// L2 puts the LB nodes in L2 mode (node.l2 on eth0, with L2Options
	// added to its flow mapping, e.g. "gratuitous: 0") and routes the VIP
	// prefixes on-link on the router's service bridge (lab.RouteOnLink):
	// the router asks the segment who has each VIP.
	L2        bool
	L2Options string
	// OnLink routes the VIP prefixes on-link (lab.RouteOnLink) without
	// L2 mode: something else answers for the VIPs on the segment (the
	// keepalived baseline of bench/l2).
	OnLink bool
	// NoWaitReady: the test's start helper does not wait for the VIPs to
	// answer (the caller brings up what answers for them first).
	NoWaitReady bool
	// ClusterProbe, when set, is node.cluster.probe_interval (the
	// membership failure detector's period).
	ClusterProbe time.Duration
	// Bypass gives every service of both VIPs (http4, udp4, http6, udp6
	// and, with Streams, stream4) bypass single-backend (needs BGP), and
	// the backend set of stream4: StreamStates and DrainPeriod apply to all
	// of them, so that with one backend left each VIP is announced with
	// that backend as next hop.
	Bypass bool
	// Health, when set, is the health check of every service, as inline
	// YAML ("{type: vip, interval: 200ms}").
	Health string
	// Fastpath gives every service fastpath with the client's addresses as
	// fastpath clients (node.fastpath with FastpathKey), runs `sluice agent
	// --fastpath` in the client namespace (ClientAgent) and lets the
	// backends' agents take GUE from the client.
	Fastpath bool
	// FastpathIdle is the client agent's --fastpath-idle (0: its default).
	FastpathIdle time.Duration
	// FastpathOff, with Fastpath, leaves fastpath off on the VIPs (the
	// node, the client agent and the backends' trust stay): a reload with
	// it toggled turns the redirects off and on.
	FastpathOff bool
}

// FastpathKey is the key the scenario's LB nodes and fastpath agents share.
const FastpathKey = "sluice-lab-fastpath-key"

// ClientAgentMetricsAddr is where the client's fastpath agent serves
// /metrics (Options.Fastpath), in the client namespace.
const ClientAgentMetricsAddr = "127.0.0.1:6092"

// Scenario is a running lab with its processes.
type Scenario struct {
	Lab     *lab.Lab
	Opts    Options
	LBs     []*lab.Process
	Agents  []*lab.Process
	Servers []*lab.Process
	BIRD    *lab.BIRD // with Options.BGP and Router "bird"
	// ClientAgent is `sluice agent --fastpath` in the client namespace
	// (Options.Fastpath).
	ClientAgent *lab.Process
	FRR         *lab.FRR // with Options.BGP and Router "frr"
	cfgDir      string
}

// Start brings up the lab and every process. On error it tears down what it
// started.
func Start(ctx context.Context, o Options) (s *Scenario, err error) {
	if o.Binary == "" {
		return nil, errors.New("scenario: no sluice binary")
	}
	if o.IO == "" {
		o.IO = "auto"
	}
	if o.XDPMode == "" {
		o.XDPMode = "auto"
	}
	switch o.Router {
	case "":
		o.Router = "bird"
	case "bird", "frr":
	default:
		return nil, fmt.Errorf("scenario: router %q: want bird or frr", o.Router)
	}
	if !o.VIP4.IsValid() {
		o.VIP4 = netip.MustParseAddr("198.18.0.10")
	}
	if !o.VIP6.IsValid() {
		o.VIP6 = netip.MustParseAddr("2001:db8::10")
	}
	if err := lab.LookTools(o.Tools()...); err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	dir, err := os.MkdirTemp("", "sluice-scenario-")
	if err != nil {
		return nil, err
	}
	if o.LogDir == "" {
		o.LogDir = dir
	}
	routing := lab.RouteECMP
	if o.BGP {
		routing = lab.RouteNone
	}
	if o.L2 || o.OnLink {
		routing = lab.RouteOnLink
	}
	l, err := lab.Up(ctx, lab.Config{Prefix: o.Prefix, LBs: o.LBs, LBQueues: o.Workers, Backends: o.Backends, LogDir: o.LogDir, VIPRouting: routing})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s = &Scenario{Lab: l, Opts: o, cfgDir: dir}
	started, ok := s, false
	defer func() { // on an error return (s is nil then) and on a panic
		if !ok {
			started.Stop()
		}
	}()
	vip4, vip6 := o.VIP4.String(), o.VIP6.String()
	for _, be := range l.Backends {
		if o.NAT {
			if err := s.startPlain(ctx, be); err != nil {
				return nil, err
			}
			continue
		}
		args := append([]string{"agent", "--vip", vip4, "--vip", vip6, "--listen", ":6080"}, s.AgentTrustArgs()...)
		if o.Fastpath {
			for _, p := range l.ClientPrefixes() {
				args = append(args, "--fastpath-client-prefix", p.String())
			}
		}
		if o.AgentMetrics {
			args = append(args, "--metrics-addr", AgentMetricsAddr)
		}
		p, err := be.Start(ctx, o.Binary, args...)
		if err != nil {
			return nil, fmt.Errorf("agent on %s: %w", be.Name, err)
		}
		s.Agents = append(s.Agents, p)
		name := fmt.Sprintf("be%d", be.Index)
		p, err = be.Start(ctx, o.Binary, "lab", "http-serve", "--name", name,
			"--listen", netip.AddrPortFrom(o.VIP4, HTTPPort).String(), "--listen", netip.AddrPortFrom(o.VIP6, HTTPPort).String())
		if err != nil {
			return nil, fmt.Errorf("http server on %s: %w", be.Name, err)
		}
		s.Servers = append(s.Servers, p)
		p, err = be.Start(ctx, o.Binary, "lab", "udp-echo", "--name", name,
			"--listen", netip.AddrPortFrom(o.VIP4, UDPPort).String(), "--listen", netip.AddrPortFrom(o.VIP6, UDPPort).String())
		if err != nil {
			return nil, fmt.Errorf("udp echo on %s: %w", be.Name, err)
		}
		s.Servers = append(s.Servers, p)
		if o.Streams {
			args := []string{"lab", "stream-serve", "--name", name, "--listen", netip.AddrPortFrom(o.VIP4, StreamPort).String()}
			if o.Streams6 {
				args = append(args, "--listen", netip.AddrPortFrom(o.VIP6, StreamPort).String())
			}
			p, err = be.Start(ctx, o.Binary, args...)
			if err != nil {
				return nil, fmt.Errorf("stream server on %s: %w", be.Name, err)
			}
			s.Servers = append(s.Servers, p)
		}
		if o.QUIC {
			if err := s.startQUIC(ctx, be); err != nil {
				return nil, err
			}
		}
	}
	switch {
	case o.BGP && o.Router == "frr":
		if s.FRR, err = l.StartFRR(ctx, lab.FRROptions{Dir: dir, BFD: o.BFD}); err != nil {
			return nil, err
		}
	case o.BGP:
		if s.BIRD, err = l.StartBIRD(ctx, lab.BIRDOptions{Dir: dir, BFD: o.BFD}); err != nil {
			return nil, err
		}
	}
	if o.NAT {
		if err := l.RouteSNAT(true); err != nil {
			return nil, err
		}
	}
	if o.Offload && o.XDPMode != "generic" {
		for _, lb := range l.LBs {
			if err := l.RouterPassXDP(lb); err != nil {
				return nil, err
			}
		}
	}
	if o.Fastpath {
		if err := s.startClientAgent(ctx); err != nil {
			return nil, err
		}
	}
	for _, lb := range l.LBs {
		p, err := s.startLB(ctx, lb)
		if err != nil {
			return nil, fmt.Errorf("lb on %s: %w", lb.Name, err)
		}
		s.LBs = append(s.LBs, p)
	}
	ok = true
	return s, nil
}

// AgentTrustArgs returns the trust flags the scenario's agents run with:
// --lb-prefix for each of Lab.LBPrefixes and --hop-prefix for each of
// Lab.BackendPrefixes, or --accept-any-source with
// Options.AgentAcceptAnySource.
func (s *Scenario) AgentTrustArgs() []string {
	if s.Opts.AgentAcceptAnySource {
		return []string{"--accept-any-source"}
	}
	var args []string
	for _, p := range s.Lab.LBPrefixes() {
		args = append(args, "--lb-prefix", p.String())
	}
	for _, p := range s.Lab.BackendPrefixes() {
		args = append(args, "--hop-prefix", p.String())
	}
	return args
}

// startClientAgent starts the client's fastpath agent (Options.Fastpath):
// redirects from the LB nodes only, toward the backends only.
func (s *Scenario) startClientAgent(ctx context.Context) error {
	key := filepath.Join(s.cfgDir, "fastpath.key")
	if err := os.WriteFile(key, []byte(FastpathKey+"\n"), 0o600); err != nil {
		return err
	}
	c := s.Lab.Client
	// The egress program's fib lookups answer only on an interface that
	// forwards (as on hosts that route containers).
	if out, err := c.Run(ctx, "sysctl", "-qw", "net.ipv4.conf."+c.Ifname+".forwarding=1",
		"net.ipv6.conf."+c.Ifname+".forwarding=1"); err != nil {
		return fmt.Errorf("forwarding on %s/%s: %v: %s", c.Name, c.Ifname, err, out)
	}
	args := []string{"agent", "--listen", ":6080", "--fastpath", c.Ifname, "--fastpath-key-file", key,
		"--metrics-addr", ClientAgentMetricsAddr}
	for _, p := range s.Lab.LBPrefixes() {
		args = append(args, "--lb-prefix", p.String())
	}
	for _, p := range s.Lab.BackendPrefixes() {
		args = append(args, "--fastpath-backend-prefix", p.String())
	}
	if s.Opts.FastpathIdle > 0 {
		args = append(args, "--fastpath-idle", s.Opts.FastpathIdle.String())
	}
	p, err := c.Start(ctx, s.Opts.Binary, args...)
	if err != nil {
		return fmt.Errorf("fastpath agent on %s: %w", c.Name, err)
	}
	s.ClientAgent = p
	return nil
}

// Tools returns the programs a scenario with options o runs besides the
// sluice binary (Start checks them first).
func (o Options) Tools() []string {
	tools := []string{"ip", "curl"}
	switch {
	case o.BGP && o.Router == "frr":
		tools = append(tools, "vtysh") // the daemons: lab.FRRMissing
	case o.BGP:
		tools = append(tools, "bird", "birdc")
	}
	if o.L2 {
		tools = append(tools, "nft", "sysctl") // partitions, the router's neighbour timers
	}
	return tools
}

// startLB writes LB node n's configuration and starts `sluice lb` there.
func (s *Scenario) startLB(ctx context.Context, n *lab.Node) (*lab.Process, error) {
	path := filepath.Join(s.cfgDir, n.Name+".yaml")
	if err := os.WriteFile(path, []byte(s.ConfigFor(n.Index-1)), 0o644); err != nil {
		return nil, err
	}
	return n.Start(ctx, s.Opts.Binary, "lb", "--config", path)
}

// Config returns LB node 1's configuration (ConfigFor(0)).
func (s *Scenario) Config() string { return s.ConfigFor(0) }

// ConfigFor returns LB node i's configuration (from 0): an HTTP and a UDP
// service on each VIP (and the stream service with Options.Streams), with
// every backend host; with Options.BGP, a BGP session to the router.
func (s *Scenario) ConfigFor(i int) string {
	var b strings.Builder
	var seed uint64
	if i < len(s.Opts.Seeds) {
		seed = s.Opts.Seeds[i]
	}
	fmt.Fprintf(&b, "node:\n  interfaces: [eth0]\n  io: %s\n  xdp_mode: %s\n  flow_capacity: 65536\n  seed: %d\n", s.Opts.IO, s.Opts.XDPMode, seed)
	if s.Opts.Workers > 1 {
		fmt.Fprintf(&b, "  workers: %d\n", s.Opts.Workers)
	}
	if s.Opts.Offload {
		b.WriteString("  offload: auto\n")
	}
	b.WriteString(s.Opts.Node)
	if s.Opts.NAT {
		n := s.Lab.LBs[i]
		fmt.Fprintf(&b, "  snat: [%q, %q]\n", n.SNAT4(), n.SNAT6())
	}
	s.clusterConfig(&b, i)
	if s.Opts.Fastpath {
		fmt.Fprintf(&b, "  fastpath: {key: %s}\n", FastpathKey)
	}
	if s.Opts.L2 {
		opts := "interface: eth0"
		if s.Opts.L2Options != "" {
			opts += ", " + s.Opts.L2Options
		}
		fmt.Fprintf(&b, "  l2: {%s}\n", opts)
	}
	if s.Opts.BGP {
		n := s.Lab.LBs[i]
		fmt.Fprintf(&b, "  bgp:\n    asn: %d\n    router_id: %s\n    next_hop_v6: %q\n    shutdown_grace: 1s\n", lab.LBASN, n.Addr4, n.Addr6)
		fmt.Fprintf(&b, "    peers:\n      - address: %s\n        asn: %d\n        hold_time: 9s\n        connect_retry: 1s\n", n.Gateway4, lab.RouterASN)
		if s.Opts.BFD {
			b.WriteString("        bfd: {min_rx: 100ms, min_tx: 100ms, multiplier: 3}\n")
		}
	}
	b.WriteString("vips:\n")
	type svc struct {
		name  string
		vip   netip.Addr
		proto string
		port  int
	}
	svcs := []svc{
		{"http4", s.Opts.VIP4, "tcp", HTTPPort},
		{"http6", s.Opts.VIP6, "tcp", HTTPPort},
		{"udp4", s.Opts.VIP4, "udp", UDPPort},
		{"udp6", s.Opts.VIP6, "udp", UDPPort},
	}
	if s.Opts.Streams {
		svcs = append(svcs, svc{"stream4", s.Opts.VIP4, "tcp", StreamPort})
		if s.Opts.Streams6 {
			svcs = append(svcs, svc{"stream6", s.Opts.VIP6, "tcp", StreamPort})
		}
	}
	for _, svc := range svcs {
		fmt.Fprintf(&b, "  - name: %s\n    address: %q\n    protocol: %s\n    port: %d\n", svc.name, svc.vip, svc.proto, svc.port)
		// stream: the service follows StreamStates (and DrainPeriod).
		stream := svc.name == "stream4" || s.Opts.Bypass
		if s.Opts.Bypass {
			b.WriteString("    bypass: single-backend\n")
		}
		if s.Opts.Health != "" {
			fmt.Fprintf(&b, "    health: %s\n", s.Opts.Health)
		}
		if s.Opts.Fastpath && !s.Opts.FastpathOff {
			var clients []string
			for _, p := range s.Lab.ClientPrefixes() {
				if p.Addr().Is4() == svc.vip.Is4() {
					clients = append(clients, fmt.Sprintf("%q", p))
				}
			}
			fmt.Fprintf(&b, "    fastpath: true\n    fastpath_clients: [%s]\n", strings.Join(clients, ", "))
		}
		if s.Opts.NAT {
			fw := s.Opts.NATForwarding
			if fw == "" {
				fw = "nat"
			}
			fmt.Fprintf(&b, "    forwarding: %s\n", fw)
		}
		if s.Opts.Affinity != "" {
			fmt.Fprintf(&b, "    affinity: %s\n", s.Opts.Affinity)
		}
		if svc.name == "stream4" && s.Opts.SecondChance {
			b.WriteString("    second_chance: true\n")
		}
		if d := s.Opts.DrainPeriod; stream && d > 0 {
			fmt.Fprintf(&b, "    drain_period: %s\n", d)
		} else if svc.name == "stream4" && s.Opts.SecondChance {
			b.WriteString("    drain_period: 1h\n")
		}
		b.WriteString("    backends:\n")
		for j, be := range s.Lab.Backends {
			a := be.Addr4
			if svc.vip.Is6() {
				a = be.Addr6
			}
			state := ""
			if stream && j < len(s.Opts.StreamStates) {
				state = s.Opts.StreamStates[j]
			}
			switch {
			case state == "absent":
				continue
			case state == "filling" && !s.LifeCycle():
				state = "" // without a life cycle a new backend is active at once
			}
			if state != "" {
				fmt.Fprintf(&b, "      - {address: %q, state: %s}\n", a, state)
			} else {
				fmt.Fprintf(&b, "      - address: %q\n", a)
			}
		}
	}
	if s.Opts.QUIC {
		s.quicConfig(&b)
	}
	return b.String()
}

// LifeCycle reports whether stream4's backends may be filling or draining
// (config.Config.LifeCycle): with second chance, or in a cluster with
// affinity on-change (the default), whose owner chains keep the
// connections of the slots that change owner.
func (s *Scenario) LifeCycle() bool {
	on := s.Opts.Affinity == "" || s.Opts.Affinity == config.AffinityOnChange
	return s.Opts.SecondChance || (s.Opts.Cluster && on)
}

// RouterSessions returns the router's BGP sessions as its daemon shows
// them (birdc show protocols, vtysh show bgp summary); "" without BGP.
func (s *Scenario) RouterSessions(ctx context.Context) (string, error) {
	switch {
	case s.FRR != nil:
		return s.FRR.Command(ctx, "show", "bgp", "summary")
	case s.BIRD != nil:
		return s.BIRD.Command(ctx, "show", "protocols")
	}
	return "", nil
}

// VIPs returns the IPv4 and the IPv6 VIP.
func (s *Scenario) VIPs() []netip.Addr { return []netip.Addr{s.Opts.VIP4, s.Opts.VIP6} }

// WaitReady waits until the client gets an HTTP answer through the VIP on
// both families, or ctx ends; it also fails early if an LB process exits.
func (s *Scenario) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for _, vip := range s.VIPs() {
		for {
			for i, p := range s.LBs {
				select {
				case <-p.Done():
					return fmt.Errorf("lb %d exited: %v\n%s", i+1, p.Wait(), p.Output())
				default:
				}
			}
			_, err := s.Curl(ctx, vip, 1)
			if err == nil {
				break
			}
			last = err
			select {
			case <-ctx.Done():
				return fmt.Errorf("no answer through %s: %v (last: %v)", vip, ctx.Err(), last)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// Curl makes n HTTP requests from the client to the VIP with curl, each on
// a new connection, and returns the names of the backends that answered.
func (s *Scenario) Curl(ctx context.Context, vip netip.Addr, n int) ([]string, error) {
	url := "http://" + netip.AddrPortFrom(vip, HTTPPort).String() + "/"
	args := []string{"-sS", "--max-time", "3", "-H", "Connection: close"}
	for range n {
		args = append(args, url)
	}
	out, err := s.Lab.Client.Run(ctx, "curl", args...)
	if err != nil {
		return nil, fmt.Errorf("curl %s: %v: %s", url, err, out)
	}
	names := strings.Fields(out)
	if len(names) != n {
		return names, fmt.Errorf("curl %s: %d answers to %d requests: %q", url, len(names), n, out)
	}
	return names, nil
}

// StopLBs stops the LB processes (they print their counters at exit) and
// returns their output.
func (s *Scenario) StopLBs() []string {
	var outs []string
	for _, p := range s.LBs {
		p.Stop()
		outs = append(outs, p.Output())
	}
	return outs
}

// RestartLB restarts `sluice lb` on LB node i (from 0) with I/O mode io,
// which becomes the scenario's (Opts.IO): it stops the node's LB process
// if it still runs, rewrites the node's configuration and starts the
// process again. If the start fails, LBs keeps the stopped process.
func (s *Scenario) RestartLB(ctx context.Context, i int, io string) error {
	if i < 0 || i >= len(s.LBs) {
		return fmt.Errorf("scenario: no LB node %d (there are %d)", i, len(s.LBs))
	}
	s.LBs[i].Stop()
	s.Opts.IO = io
	p, err := s.startLB(ctx, s.Lab.LBs[i])
	if err != nil {
		return err
	}
	s.LBs[i] = p
	return nil
}

// ReloadLB writes cfg as LB node i's configuration file and sends the node
// SIGHUP, which makes it re-read and apply the file.
func (s *Scenario) ReloadLB(i int, cfg string) error {
	if i < 0 || i >= len(s.LBs) {
		return fmt.Errorf("scenario: no LB node %d", i)
	}
	path := filepath.Join(s.cfgDir, s.Lab.LBs[i].Name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	return syscall.Kill(s.LBs[i].Pid(), syscall.SIGHUP)
}

// Stop stops every process and removes the lab.
func (s *Scenario) Stop() error {
	agents := s.Agents
	if s.ClientAgent != nil {
		agents = append(slices.Clone(agents), s.ClientAgent)
	}
	for _, group := range [][]*lab.Process{s.LBs, s.Servers, agents} {
		for _, p := range group {
			p.Stop()
		}
	}
	err := s.Lab.Down()
	if s.cfgDir != "" {
		os.RemoveAll(s.cfgDir)
	}
	return err
}

// Signal sends sig to LB node i's process.
func (s *Scenario) Signal(i int, sig syscall.Signal) error {
	if i < 0 || i >= len(s.LBs) {
		return fmt.Errorf("scenario: no LB node %d", i)
	}
	return syscall.Kill(s.LBs[i].Pid(), sig)
}

// WaitNextHops waits until the router's route to vip goes through exactly
// the LB nodes lbs (indexes from 0; none: no route), and returns how long
// that took.
func (s *Scenario) WaitNextHops(ctx context.Context, vip netip.Addr, timeout time.Duration, lbs ...int) (time.Duration, error) {
	want := map[netip.Addr]bool{}
	for _, i := range lbs {
		n := s.Lab.LBs[i]
		if vip.Is4() {
			want[n.Addr4] = true
		} else {
			want[n.Addr6] = true
		}
	}
	start := time.Now()
	var got []netip.Addr
	for {
		var err error
		got, err = s.Lab.VIPNextHops(ctx, vip)
		if err != nil {
			return 0, err
		}
		match := len(got) == len(want)
		for _, a := range got {
			match = match && want[a]
		}
		if match {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("scenario: route to %v via %v after %v, want LB nodes %v", vip, got, timeout, lbs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startPlain starts the HTTP server and the UDP echo on a backend's own
// addresses (full-NAT backends: no agent, no VIP).
func (s *Scenario) startPlain(ctx context.Context, be *lab.Node) error {
	// Replies to the SNAT addresses go through the router, always: a
	// redirect straight to the LB node would outlive the router's route
	// (and hide its removal from a control run).
	for _, k := range []string{"net.ipv4.conf.all.accept_redirects", "net.ipv4.conf.default.accept_redirects",
		"net.ipv4.conf." + be.Ifname + ".accept_redirects", "net.ipv6.conf.all.accept_redirects",
		"net.ipv6.conf." + be.Ifname + ".accept_redirects"} {
		if out, err := be.Run(ctx, "sysctl", "-qw", k+"=0"); err != nil {
			return fmt.Errorf("%s: sysctl %s: %v: %s", be.Name, k, err, out)
		}
	}
	name := fmt.Sprintf("be%d", be.Index)
	p, err := be.Start(ctx, s.Opts.Binary, "lab", "http-serve", "--name", name,
		"--listen", netip.AddrPortFrom(be.Addr4, HTTPPort).String(), "--listen", netip.AddrPortFrom(be.Addr6, HTTPPort).String())
	if err != nil {
		return fmt.Errorf("http server on %s: %w", be.Name, err)
	}
	s.Servers = append(s.Servers, p)
	p, err = be.Start(ctx, s.Opts.Binary, "lab", "udp-echo", "--name", name,
		"--listen", netip.AddrPortFrom(be.Addr4, UDPPort).String(), "--listen", netip.AddrPortFrom(be.Addr6, UDPPort).String())
	if err != nil {
		return fmt.Errorf("udp echo on %s: %w", be.Name, err)
	}
	s.Servers = append(s.Servers, p)
	return nil
}
