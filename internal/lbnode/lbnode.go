// Package lbnode runs one Sluice LB node from its configuration: it opens a
// link per interface, resolves the next hop of every backend, builds the
// datapath generation and runs the workers; it rebuilds the generation when
// the kernel's routes or neighbours change, and reports counters.
//
// It is control-side code: it may import configuration and netlink
// packages; the datapath packages it drives may not import it.
package lbnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/health"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/stack"
	"github.com/sluicelb/sluice/internal/nexthop"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// Opener opens the link of one interface queue; vips are the destination
// addresses the link must deliver (the others stay with the kernel). It
// returns a description of what it opened (for example "afxdp native").
type Opener func(ifname string, queue int, vips []netip.Addr) (l link.Link, desc string, err error)

// Options configure a Node.
type Options struct {
	Config  *config.Config
	Open    Opener
	Log     *slog.Logger
	Refresh time.Duration // next-hop re-resolution period; default 30s
	// Announce, when set, is called with the VIP prefixes this node should
	// announce (see Node.Announcements) at start and whenever the set may
	// have changed: an apply, a health transition, a drain. It must not
	// block for long; it is called with the node's lock held, so it must
	// not call back into the node.
	Announce func([]netip.Prefix)
}

// VIPSteerer is a link that can be told which destinations to deliver
// (AF_XDP: the XDP program's VIP maps; AF_PACKET: the socket filter).
type VIPSteerer interface {
	SetVIPs([]netip.Addr) error
}

// Node is a running LB node.
type Node struct {
	log   *slog.Logger
	dp    *datapath.Datapath
	res   *nexthop.Resolver
	links []link.Link
	spill *stack.Sender // oversize packets and held fragments, through the kernel

	checks *health.Checker

	mu        sync.Mutex // guards cfg, builder, hops and checkKeys
	cfg       *config.Config
	checkKeys map[string]bool // health checks currently set
	builder   *pipeline.Builder
	hops      map[netip.Addr]string // backend -> resolved hop, or the error, as last logged
	refresh   time.Duration

	healthMu    sync.Mutex                    // guards transitions; never held while taking mu
	transitions map[string]*[numStates]uint64 // per check key, transitions counted by target state

	announce func([]netip.Prefix) // may be nil
	draining bool                 // guarded by mu: node drain, every VIP withdrawn
}

// numStates is the number of health.State values (Unknown, Up, Down).
const numStates = int(health.Down) + 1

// New opens the links and builds the first generation. Backends whose next
// hop cannot be resolved are reported (logged, and counted as no_next_hop
// when traffic reaches them) and retried on every refresh.
func New(o Options) (*Node, error) {
	if o.Config == nil || o.Open == nil {
		return nil, errors.New("lbnode: a configuration and a link opener are required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Refresh <= 0 {
		o.Refresh = 30 * time.Second
	}
	n := &Node{cfg: o.Config, log: o.Log, builder: pipeline.NewBuilder(), hops: map[netip.Addr]string{}, refresh: o.Refresh, announce: o.Announce}
	res, err := nexthop.New()
	if err != nil {
		return nil, err
	}
	n.res = res
	vips := vipAddrs(n.cfg)
	var links []link.Link
	closeAll := func() {
		for _, l := range links {
			l.Close()
		}
		res.Close()
		if n.spill != nil {
			n.spill.Close()
		}
	}
	if n.spill, err = stack.New(); err != nil {
		closeAll()
		return nil, err
	}
	for _, ifc := range n.cfg.Node.Interfaces {
		for q := range n.cfg.Node.Workers {
			l, desc, err := o.Open(ifc, q, vips)
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("interface %s queue %d: %w", ifc, q, err)
			}
			n.log.Info("link open", "interface", ifc, "queue", q, "io", desc)
			links = append(links, l)
		}
	}
	n.links = links
	n.dp, err = datapath.New(datapath.Config{Links: links, FlowCapacity: n.cfg.Node.FlowCapacity, Spill: n.spill})
	if err != nil {
		closeAll()
		return nil, err
	}
	n.checks = health.NewChecker(n.healthChanged)
	n.checkKeys = map[string]bool{}
	n.mu.Lock()
	n.setChecks()
	n.mu.Unlock()
	if err := n.rebuild(context.Background()); err != nil {
		closeAll()
		return nil, err
	}
	return n, nil
}

// healthKey names the check of one backend of one VIP.
func healthKey(vip, backend string) string { return vip + " " + backend }

// healthSpec is the check of backend b of VIP v, per v.Health.
func (n *Node) healthSpec(v config.VIP, b netip.Addr) health.Spec {
	h := v.Health
	port := h.Port
	if port == 0 {
		port = v.Port
	}
	s := health.Spec{
		Target:   netip.AddrPortFrom(b, uint16(port)),
		Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall,
	}
	switch h.Type {
	case "vip":
		s.Kind = health.VIP
		s.Target = netip.AddrPortFrom(b, uint16(n.cfg.Node.GUEPort))
		s.VIP = netip.AddrPortFrom(netip.MustParseAddr(v.Address), uint16(v.Port))
		s.Proto = v.Protocol
	case "tcp":
		s.Kind = health.TCP
	case "http", "https":
		s.Kind = health.HTTP
		if h.Type == "https" {
			s.Kind = health.HTTPS
		}
		s.Path, s.ExpectStatus = h.Path, h.ExpectStatus
	case "udp":
		s.Kind = health.UDP
		s.Send, s.Expect = []byte(h.Send), []byte(h.Expect)
	}
	return s
}

// setChecks makes the checker run exactly the checks of n.cfg. Called with
// n.mu held.
func (n *Node) setChecks() {
	want := map[string]bool{}
	for _, v := range n.cfg.VIPs {
		if v.Health == nil {
			continue
		}
		for _, b := range v.Backends {
			key := healthKey(v.Name, b.Address)
			want[key] = true
			n.checks.Set(key, n.healthSpec(v, netip.MustParseAddr(b.Address)))
		}
	}
	for key := range n.checkKeys {
		if !want[key] {
			n.checks.Remove(key)
		}
	}
	n.checkKeys = want
	// Forget the transition counts of removed checks (a check added again
	// starts from zero, which Prometheus reads as a counter reset).
	n.healthMu.Lock()
	for key := range n.transitions {
		if !want[key] {
			delete(n.transitions, key)
		}
	}
	n.healthMu.Unlock()
}

// down reports whether backend b of VIP v failed its health check. A
// backend whose check has not decided yet (Unknown) counts as up, so that
// a starting node serves at once.
func (n *Node) down(v config.VIP, b string) bool {
	if v.Health == nil || n.checks == nil {
		return false
	}
	st, _ := n.checks.State(healthKey(v.Name, b))
	return st == health.Down
}

// healthChanged rebuilds the generation when a backend goes down or comes
// back: a down backend leaves its service's Maglev table; when it comes
// back, its slots return to it and flows that started elsewhere meanwhile
// keep their backend (the flow tables hold that choice).
func (n *Node) healthChanged(tr health.Transition) {
	n.countTransition(tr)
	n.log.Info("health", "check", tr.Key, "from", tr.From.String(), "to", tr.To.String(), "err", tr.Err)
	if tr.To == health.Up && tr.From == health.Unknown {
		return // it was already counted as up
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.apply(context.Background()); err != nil {
		n.log.Error("rebuild after a health change", "err", err)
	}
}

// Datapath returns the node's datapath.
func (n *Node) Datapath() *datapath.Datapath { return n.dp }

// Run forwards until ctx is done, re-resolving next hops on changes.
func (n *Node) Run(ctx context.Context) error {
	defer n.res.Close()
	defer n.spill.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go n.checks.Run(ctx)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- n.res.Watch(ctx, n.refresh, func() {
			if err := n.rebuild(ctx); err != nil {
				n.log.Error("rebuild after a route or neighbour change", "err", err)
			}
		})
	}()
	err := n.dp.Run(ctx)
	cancel()
	if werr := <-watchDone; werr != nil {
		n.log.Warn("next-hop watch", "err", werr)
	}
	return err
}

func vipAddrs(c *config.Config) []netip.Addr {
	var vips []netip.Addr
	for _, v := range c.VIPs {
		a := netip.MustParseAddr(v.Address)
		if !slices.Contains(vips, a) {
			vips = append(vips, a)
		}
	}
	return vips
}

// ErrNeedsRestart wraps Apply's refusal of changes that only a restart can
// make (config.RestartRules).
var ErrNeedsRestart = config.ErrNeedsRestart

// Apply makes cfg (already validated, as config.Load and config.Parse
// return it) the running configuration: it builds the new generation and
// swaps it in while the workers run. Flows keep their backend if it stays in
// its service. If anything fails — a change only a restart can make, a spec
// the builder rejects, a link that cannot be steered — the running
// configuration stays in force, unchanged, and the error says why.
func (n *Node) Apply(ctx context.Context, cfg *config.Config) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	old := n.cfg
	a, b := old.Node, cfg.Node
	if err := config.NeedsRestart(&a, &b); err != nil {
		return err
	}
	if a.Seed != b.Seed {
		n.log.Warn("node.seed changed: new flows hash differently from LB nodes still on the old seed", "old", a.Seed, "new", b.Seed)
	}
	n.cfg = cfg
	n.setChecks()
	spec, hops := n.spec(ctx)
	// Steer the union of old and new VIPs while the generation changes, so
	// that neither a removed nor an added VIP loses packets in between.
	oldVIPs, newVIPs := vipAddrs(old), vipAddrs(cfg)
	union := append(slices.Clone(oldVIPs), newVIPs...)
	if err := n.steer(union); err != nil {
		n.cfg = old
		n.steer(oldVIPs)
		return err
	}
	if err := n.swap(spec, hops); err != nil {
		n.cfg = old
		n.setChecks()
		n.steer(oldVIPs)
		return err
	}
	if err := n.steer(newVIPs); err != nil {
		n.log.Error("steering the new VIP set", "err", err) // the union stays: traffic still flows
	}
	return nil
}

// apply builds a generation from n.cfg, the next hops and the health
// states, and swaps it in. Called with n.mu held.
func (n *Node) apply(ctx context.Context) error {
	spec, hops := n.spec(ctx)
	return n.swap(spec, hops)
}

// swap builds the generation of spec and makes it current, logging the next
// hops that changed. A spec the builder rejects changes nothing. Called with
// n.mu held.
func (n *Node) swap(spec pipeline.Spec, hops map[netip.Addr]string) error {
	g, err := n.builder.Build(spec)
	if err != nil {
		return err
	}
	for be, h := range hops {
		if n.hops[be] != h {
			n.log.Info("next hop", "backend", be, "hop", h)
		}
	}
	n.hops = hops
	n.dp.Apply(g)
	n.log.Info("generation applied", "generation", g.ID, "services", len(g.Services))
	n.announceLocked()
	return nil
}

// announceLocked hands the current announcement set to the announcer.
// Called with n.mu held.
func (n *Node) announceLocked() {
	if n.announce != nil {
		n.announce(n.announcements())
	}
}

// Announcements returns the VIP host prefixes (/32, /128) this node should
// announce: every VIP address with at least one backend that is in service
// (not failed by its health check, not draining, weight above 0), none
// while the node is drained.
func (n *Node) Announcements() []netip.Prefix {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.announcements()
}

func (n *Node) announcements() []netip.Prefix {
	if n.draining {
		return nil
	}
	var out []netip.Prefix
	for _, v := range n.cfg.VIPs {
		a := netip.MustParseAddr(v.Address)
		p := netip.PrefixFrom(a, a.BitLen())
		if slices.Contains(out, p) {
			continue
		}
		for _, b := range v.Backends {
			if b.EffectiveWeight() > 0 && !n.down(v, b.Address) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// SetDraining drains the node (true) or returns it to service: a drained
// node withdraws every VIP announcement, so routers stop sending it new
// flows, and keeps forwarding what still arrives, so connections that
// routers have not moved yet continue. It reports whether the state
// changed.
func (n *Node) SetDraining(d bool) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.draining == d {
		return false
	}
	n.draining = d
	n.log.Info("node drain", "draining", d)
	n.announceLocked()
	return true
}

// Draining reports whether the node is drained.
func (n *Node) Draining() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.draining
}

func (n *Node) steer(vips []netip.Addr) error {
	for _, l := range n.links {
		if s, ok := l.(VIPSteerer); ok {
			if err := s.SetVIPs(vips); err != nil {
				return fmt.Errorf("steering VIPs %v: %w", vips, err)
			}
		}
	}
	return nil
}

// rebuild resolves every backend and applies a new generation if anything
// changed. A spec the builder rejects leaves the running generation alone.
func (n *Node) rebuild(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	spec, hops := n.spec(ctx)
	if n.builder.Current() != nil && maps.Equal(hops, n.hops) {
		return nil
	}
	return n.swap(spec, hops)
}

// spec turns the configuration and the resolved next hops into a datapath
// spec. hops describes each backend's resolution, for change detection and
// logs.
func (n *Node) spec(ctx context.Context) (pipeline.Spec, map[netip.Addr]string) {
	c := n.cfg
	spec := pipeline.Spec{
		Seed:      c.Node.Seed,
		MTU:       c.Node.MTU,
		ICMPRate:  max(c.Node.ICMPRate/max(len(n.links), 1), 1),
		Fragments: c.Node.Fragments == config.FragmentsForward,
	}
	if c.Node.TooBig == config.TooBigDrop {
		spec.TooBig = pipeline.TooBigDrop
	}
	hops := map[netip.Addr]string{}
	resolved := map[netip.Addr]nexthop.Hop{}
	for _, v := range c.VIPs {
		for _, b := range v.Backends {
			a := netip.MustParseAddr(b.Address)
			if _, done := hops[a]; done {
				continue
			}
			if n.res == nil { // Check: no network to resolve in
				hops[a] = "unresolved: not checked"
				continue
			}
			h, err := n.res.Resolve(ctx, a)
			switch {
			case err != nil:
				hops[a] = "unresolved: " + err.Error()
			case !slices.Contains(c.Node.Interfaces, h.Ifname):
				hops[a] = fmt.Sprintf("unresolved: the route leaves through %s, which is not a configured interface", h.Ifname)
			default:
				hops[a] = h.String()
				resolved[a] = h
			}
			if _, ok := resolved[a]; !ok {
				n.log.Warn("backend next hop unresolved; its packets are dropped (no_next_hop)", "backend", a, "reason", hops[a])
			}
		}
	}
	for _, v := range c.VIPs {
		vip := netip.MustParseAddr(v.Address)
		proto := uint8(packet.ProtoTCP)
		if v.Protocol == "udp" {
			proto = packet.ProtoUDP
		}
		s := pipeline.ServiceSpec{
			Name: v.Name, Addr: vip, Proto: proto, Port: uint16(v.Port), PortEnd: uint16(v.PortEnd),
			M: v.MaglevSize, SecondChance: v.SecondChance,
			Stateless: v.Affinity == config.AffinityStateless,
		}
		mode := encap.GUE
		if v.Encap == "ipip" {
			mode = encap.IPIP
		}
		for _, b := range v.Backends {
			if n.down(v, b.Address) {
				continue // failed its health check: out of the table
			}
			a := netip.MustParseAddr(b.Address)
			h, ok := resolved[a]
			t := encap.Tunnel{Mode: mode, Dst: a, Port: uint16(c.Node.GUEPort), Src: n.source(a, h)}
			if ok {
				copy(t.SrcMAC[:], h.SrcMAC)
				copy(t.DstMAC[:], h.DstMAC)
			}
			if !t.Src.IsValid() {
				ok = false
				t.Src = a // placeholder so the tunnel compiles; the backend is unresolved
			}
			s.Backends = append(s.Backends, pipeline.BackendSpec{Weight: uint32(*b.Weight), Tunnel: t, NoNextHop: !ok, State: backendState(b.State)})
		}
		if v.QUIC != nil {
			n.quicSpec(&v, &s)
		}
		spec.Services = append(spec.Services, s)
	}
	return spec, hops
}

// backendState is the pipeline's view of a configured backend state.
func backendState(s string) pipeline.BackendState {
	switch s {
	case config.StateFilling:
		return pipeline.BackendFilling
	case config.StateDraining:
		return pipeline.BackendDraining
	}
	return pipeline.BackendActive
}

// source returns the outer source address toward backend a.
func (n *Node) source(a netip.Addr, h nexthop.Hop) netip.Addr {
	cfg := n.cfg.Node.SourceV6
	if a.Is4() {
		cfg = n.cfg.Node.SourceV4
	}
	if cfg != "" {
		return netip.MustParseAddr(cfg)
	}
	return h.Src
}

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
				if r.Template == nil {
					hop = "UNRESOLVED"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", vip, r.Name, rc.Packets, rc.Bytes, hop)
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "rx %d  tx %d  tx errors %d  passed %d  flow hits %d  misses %d  reaped %d\n",
		c.RxPackets, c.TxPackets, c.TxErrors, c.Passed, c.FlowHits, c.FlowMisses, c.Reaped)
	if c.TooBigAnswered+c.Spilled+c.SpillErrors > 0 {
		fmt.Fprintf(w, "icmp too big sent %d  kernel tx %d  kernel tx errors %d\n", c.TooBigAnswered, c.Spilled, c.SpillErrors)
	}
	if c.FragmentsFollowed+c.FragmentsHeld > 0 {
		fmt.Fprintf(w, "fragments followed %d  held %d  released %d\n", c.FragmentsFollowed, c.FragmentsHeld, c.FragmentsReleased)
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

// Config returns the running configuration; the caller must not modify it.
// (Added for the control server.)
func (n *Node) Config() *config.Config {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cfg
}

// Counters returns the datapath counters summed over the workers.
func (n *Node) Counters() datapath.Counters { return n.dp.Counters() }

// Generation returns the running datapath generation.
func (n *Node) Generation() *pipeline.Generation { return n.dp.Generation() }

// countTransition counts tr for Health.
func (n *Node) countTransition(tr health.Transition) {
	if int(tr.To) >= numStates {
		return
	}
	n.healthMu.Lock()
	defer n.healthMu.Unlock()
	if n.transitions == nil {
		n.transitions = map[string]*[numStates]uint64{}
	}
	c := n.transitions[tr.Key]
	if c == nil {
		c = new([numStates]uint64)
		n.transitions[tr.Key] = c
	}
	c[tr.To]++
}

// Health returns the state and transition counts of every backend that has
// a health check (VIPs with a health section), in configuration order.
// (Added for the control server's metrics.)
func (n *Node) Health() []health.Backend {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []health.Backend
	for _, v := range n.cfg.VIPs {
		if v.Health == nil {
			continue
		}
		for _, b := range v.Backends {
			key := healthKey(v.Name, b.Address)
			st, _ := n.checks.State(key)
			h := health.Backend{VIP: v.Name, Backend: b.Address, State: st}
			n.healthMu.Lock()
			if c := n.transitions[key]; c != nil {
				h.Up, h.Down = c[health.Up], c[health.Down]
			}
			n.healthMu.Unlock()
			out = append(out, h)
		}
	}
	return out
}

// QueryFlows runs fn on each worker's flow table, read-only, between
// batches (datapath.Datapath.QueryFlows).
func (n *Node) QueryFlows(fn func(worker int, t *flow.Table)) { n.dp.QueryFlows(fn) }

// FlowClock returns the flow clock reading flow.Entry.LastSeen compares with.
func (n *Node) FlowClock() uint32 { return n.dp.Now() }
