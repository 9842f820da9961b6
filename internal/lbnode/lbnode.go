// Package lbnode is the LB node server: it opens a link per interface
// queue, resolves the next hop of every backend, builds the datapath
// generation, runs the workers, the health checks and the announcer, and
// applies every change of its state — a new configuration, a health
// transition, a route or neighbour change, a drain — on one goroutine.
//
// Like GoBGP's BgpServer, the node's mutable state (the running
// configuration, the generation builder, the next hops, the health
// transition counts, the drain state) belongs to that goroutine alone
// (serve): the public methods send it an operation and wait for the
// answer, and the health checker and the next-hop watch send theirs the
// same way. Nothing takes a lock around that state. The datapath reads only
// the immutable generation the node stores through its atomic pointer.
//
// It is control-side code: it may import configuration, netlink and BGP
// packages; the datapath packages it drives may not import it.
package lbnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/internal/announce"
	"github.com/sluicelb/sluice/internal/bypass"
	"github.com/sluicelb/sluice/internal/cluster"
	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/fastpath"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/health"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/stack"
	"github.com/sluicelb/sluice/internal/nexthop"
	"github.com/sluicelb/sluice/internal/offload"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// Options configure a Node.
type Options struct {
	Config *config.Config // validated (config.Load, config.Parse)
	Log    *slog.Logger
	// Open opens the links; nil: LinkOpener(Config.Node), AF_XDP or
	// AF_PACKET as node.io says.
	Open    Opener
	Refresh time.Duration // next-hop re-resolution period; default 30s
	// Announcer, when set, is told the VIP prefixes this node should
	// announce (see Node.Announcements) whenever the set may have changed.
	// nil: a BGP speaker from node.bgp, or none without it.
	Announcer Announcer
}

// ErrNeedsRestart wraps Apply's refusal of changes that only a restart can
// make (config.RestartRules).
var ErrNeedsRestart = config.ErrNeedsRestart

// ErrStopped is returned by operations sent to a node that has stopped.
var ErrStopped = errors.New("lbnode: the node has stopped")

// Node is an LB node server.
type Node struct {
	// Immutable after New; safe for any goroutine.
	log       *slog.Logger
	dp        *datapath.Datapath // its generation is swapped only by serve
	res       *nexthop.Resolver
	links     []link.Link
	spill     *stack.Sender // oversize packets and held fragments, through the kernel
	checks    *health.Checker
	announcer Announcer     // nil: none
	grace     time.Duration // node.bgp.shutdown_grace (a restart rule: never changes)
	refresh   time.Duration
	clSetup   *cluster.Setup // node.cluster (a restart rule: never changes); nil: the node runs alone
	// ifaces lists the host's interfaces for the bypass subnet check; nil
	// (tests): not checked.
	ifaces func() ([]bypass.Interface, error)

	// The publish path: serve stores the running member (nil alone or
	// while drained); the publisher reads it and counts.
	clNode atomic.Pointer[cluster.Node]
	// clGossip is the running member's membership (L2 mode reads which
	// members it suspects); nil with clNode.
	clGossip atomic.Pointer[cluster.Gossip]
	// relayConn receives other members' fragments and decisions
	// (relay.go); nil without a cluster.
	relayConn *net.UDPConn
	// fpConn is the fastpath redirector's socket (node.fastpath); the
	// datapath closes it when it stops.
	fpConn *net.UDPConn
	// clLeaving is held while a member leaves the cluster (stopCluster),
	// off the serve goroutine.
	clLeaving                 sync.Mutex
	pubSubmitted, pubRejected atomic.Uint64
	// The workers' questions to the owner chains: submitted to the member,
	// answered, not answered (no member reachable in time, or the chain
	// not ready), rejected (no running member, or its queue full).
	askSubmitted, askAnswered, askFailed, askRejected atomic.Uint64
	// chainWork is what the publisher is to do for on-change services
	// (chainChanges): publish the entries of a change that started, drop
	// the chain entries of one that completed.
	chainWork               chainWork
	pubCommitted, pubFailed atomic.Uint64
	// askWake: a worker queued a question (Config.AskNotify); the
	// publisher takes it at once.
	askWake      chan struct{}
	pubRefreshed atomic.Uint64 // long flows published again (refreshFlows) and committed

	ops     chan op       // operations for serve
	quit    chan struct{} // closed to stop serve
	stopped chan struct{} // closed when serve has returned

	// st is owned by the serve goroutine: nothing else reads or writes it
	// while serve runs (New fills it before serve starts).
	st state
}

// state is the node's mutable state, owned by the serve goroutine.
type state struct {
	cfg         *config.Config
	builder     *pipeline.Builder
	hops        map[netip.Addr]string         // backend -> resolved hop, or the error, as last logged
	checkKeys   map[string]bool               // health checks currently set
	transitions map[string]*[numStates]uint64 // per check key, transitions counted by target state
	draining    bool                          // node drain: every VIP withdrawn
	cl          *cluster.Started              // the running cluster member; nil alone or while drained
	// changing: the on-change services (by cluster number) with a backend
	// change in flight, and the fingerprint of their Maglev owners
	// (chainChanges).
	changing map[uint16]uint64
	bp       bypassState // bypass single-backend (bypass.go)
}

// numStates is the number of health.State values (Unknown, Up, Down).
const numStates = int(health.Down) + 1

// op is one operation for the serve goroutine: it runs f and closes done.
type op struct {
	f    func()
	done chan struct{}
}

// New opens the links, builds the first generation and starts the node's
// serve goroutine; Run then forwards. Backends whose next hop cannot be
// resolved are reported (logged, and counted as no_next_hop when traffic
// reaches them) and retried on every refresh.
func New(o Options) (*Node, error) {
	if o.Config == nil {
		return nil, errors.New("lbnode: a configuration is required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Refresh <= 0 {
		o.Refresh = 30 * time.Second
	}
	if o.Open == nil {
		o.Open = LinkOpener(o.Config.Node, o.Log)
	}
	n := &Node{
		log: o.Log, refresh: o.Refresh, announcer: o.Announcer, ifaces: systemInterfaces,
		ops: make(chan op), quit: make(chan struct{}), stopped: make(chan struct{}),
		st: state{cfg: o.Config, builder: pipeline.NewBuilder(), hops: map[netip.Addr]string{},
			checkKeys: map[string]bool{}, transitions: map[string]*[numStates]uint64{}},
	}
	if err := n.checkBypassSubnets(o.Config); err != nil {
		return nil, err
	}
	if n.announcer == nil && o.Config.Node.BGP != nil {
		spk, err := announce.New(BGPConfig(o.Config.Node.BGP), o.Log)
		if err != nil {
			return nil, fmt.Errorf("node.bgp: %w", err)
		}
		n.announcer = spk
	}
	if b := o.Config.Node.BGP; b != nil {
		n.grace = b.ShutdownGrace
	}
	res, err := nexthop.New()
	if err != nil {
		return nil, err
	}
	n.res = res
	closeAll := func() {
		for _, l := range n.links {
			l.Close()
		}
		res.Close()
		if n.spill != nil {
			n.spill.Close()
		}
		if n.relayConn != nil {
			n.relayConn.Close()
		}
		if n.fpConn != nil {
			n.fpConn.Close()
		}
		if a, ok := n.announcer.(*l2Announcer); ok {
			a.resp.Close()
		}
	}
	if n.spill, err = stack.New(); err != nil {
		closeAll()
		return nil, err
	}
	vips := vipAddrs(o.Config)
	for _, ifc := range o.Config.Node.Interfaces {
		for q := range o.Config.Node.Workers {
			l, desc, err := o.Open(ifc, q, vips)
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("interface %s queue %d: %w", ifc, q, err)
			}
			n.log.Info("link open", "interface", ifc, "queue", q, "io", desc)
			n.links = append(n.links, l)
		}
	}
	if n.clSetup, err = ClusterSetup(&o.Config.Node, o.Log); err != nil {
		closeAll()
		return nil, err
	}
	if l := o.Config.Node.L2; l != nil && n.announcer == nil {
		a, err := newL2(n, o.Config)
		if err != nil {
			closeAll()
			return nil, err
		}
		n.announcer, n.grace = a, l.ShutdownGrace
		n.log.Info("l2: answering on the segment", "interface", l.Interface, "mac", a.resp.MAC())
	}
	dpc := datapath.Config{
		Links: n.links, FlowCapacity: o.Config.Node.FlowCapacity, Spill: n.spill,
		SNAT: o.Config.Node.SNATAddrs(), SNATLayout: o.Config.Node.SNATLayout(len(n.links)),
	}
	if ks := Offloads(n.links); len(ks) > 0 {
		dpc.Offload = offload.Join(ks...)
		n.log.Info("offload on: established flows are forwarded in the kernel", "interfaces", len(ks))
	}
	if n.clSetup != nil {
		if n.relayConn, err = openRelay(n.clSetup.Bind); err != nil {
			closeAll()
			return nil, fmt.Errorf("node.cluster: fragment relay: %w", err)
		}
		dpc.FragmentOwners = &fragOwners{n: n, self: n.clSetup.Bind, seed: n.clSetup.Seed}
		dpc.RelaySource = n.clSetup.Bind.Addr()
		dpc.PublishQueue = publishQueue
		dpc.AskTimeout = o.Config.Node.Cluster.AskTimeout
		n.askWake = make(chan struct{}, 1)
		dpc.AskNotify = func() {
			select {
			case n.askWake <- struct{}{}:
			default:
			}
		}
	}
	if f := o.Config.Node.Fastpath; f != nil {
		// One dual-stack socket on a port of the kernel's choice: the
		// agents answer to the address and port a redirect came from.
		if n.fpConn, err = net.ListenUDP("udp", &net.UDPAddr{}); err != nil {
			closeAll()
			return nil, fmt.Errorf("node.fastpath: %w", err)
		}
		dpc.Fastpath = &datapath.FastpathConfig{Conn: n.fpConn, Key: fastpath.Key([]byte(f.Key)),
			Port: uint16(f.Port), Idle: f.Idle, Max: f.Max}
		n.log.Info("fastpath on: established flows of fastpath VIPs are redirected to their client hosts' agents",
			"socket", n.fpConn.LocalAddr().String(), "agent_port", f.Port)
	}
	n.dp, err = datapath.New(dpc)
	if err != nil {
		closeAll()
		return nil, err
	}
	n.checks = health.NewChecker(n.healthChanged)
	n.setChecks()
	if err := n.rebuild(context.Background()); err != nil {
		closeAll()
		return nil, err
	}
	if err := n.startCluster(); err != nil {
		closeAll()
		return nil, err
	}
	go n.serve()
	return n, nil
}

// serve applies the operations, one at a time, until quit is closed.
func (n *Node) serve() {
	defer close(n.stopped)
	for {
		select {
		case o := <-n.ops:
			o.f()
			close(o.done)
		case <-n.quit:
			return
		}
	}
}

// do runs f on the serve goroutine and waits until it has run. It returns
// ErrStopped, without running f, once the node has stopped, and ctx's error
// if ctx ends before serve takes f.
func (n *Node) do(ctx context.Context, f func()) error {
	o := op{f: f, done: make(chan struct{})}
	select {
	case n.ops <- o:
	case <-n.stopped:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	<-o.done
	return nil
}

// Run forwards until ctx is done: it runs the workers, the health checks,
// the next-hop watch and the announcer. Without an announcer the datapath
// stops when ctx is done. With one, it withdraws the routes first and the
// datapath keeps forwarding for node.bgp.shutdown_grace while the routers
// move the flows to other nodes; an announcer that fails stops the node.
// When Run returns, the node has stopped: its operations return ErrStopped
// (or zero values) and only Report, Counters and the datapath still answer.
// Run may be called once.
func (n *Node) Run(ctx context.Context) error {
	defer n.res.Close()
	defer n.spill.Close()
	defer func() { close(n.quit); <-n.stopped }()

	dpCtx, stopDP := context.WithCancel(context.Background())
	defer stopDP()
	var announceErr error
	announceDone := make(chan struct{})
	if n.announcer == nil {
		context.AfterFunc(ctx, stopDP)
		close(announceDone)
	} else {
		go func() {
			defer close(announceDone)
			announceErr = n.announce(ctx, dpCtx)
			stopDP()
		}()
	}
	go n.checks.Run(dpCtx)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- n.res.Watch(dpCtx, n.refresh, func() {
			var err error
			if n.do(dpCtx, func() { err = n.rebuild(dpCtx) }) == nil && err != nil {
				n.log.Error("rebuild after a route or neighbour change", "err", err)
			}
		})
	}()
	n.startRelay(dpCtx)
	publishDone := make(chan struct{})
	if len(n.dp.PublishQueues()) > 0 {
		go func() { defer close(publishDone); n.publishFlows(dpCtx) }()
	} else {
		close(publishDone)
	}
	if cfg := n.Config(); cfg != nil {
		n.log.Info("forwarding", "vips", len(cfg.VIPs), "interfaces", cfg.Node.Interfaces)
	}
	err := n.dp.Run(dpCtx)
	stopDP()
	if werr := <-watchDone; werr != nil {
		n.log.Warn("next-hop watch", "err", werr)
	}
	<-announceDone
	<-publishDone
	n.do(context.Background(), n.stopCluster) // leave the cluster gracefully
	n.waitLeft()
	if announceErr != nil {
		err = errors.Join(err, fmt.Errorf("bgp: %w", announceErr))
	}
	return err
}

// announce runs the announcer until ctx (the node's) is done or the
// datapath stopped (dpCtx), then the shutdown sequence: the announcer
// withdraws every route and closes its sessions, and the datapath forwards
// for the shutdown grace while routers move the flows. It returns the
// announcer's error if it failed on its own.
func (n *Node) announce(ctx, dpCtx context.Context) error {
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- n.announcer.Run(runCtx) }()
	select {
	case <-ctx.Done():
		stop()
		<-done
		n.log.Info("announcements withdrawn; forwarding until the routers moved the flows", "grace", n.grace)
		select {
		case <-time.After(n.grace):
		case <-dpCtx.Done():
		}
		return nil
	case err := <-done:
		return err
	case <-dpCtx.Done():
		stop()
		<-done
		return nil
	}
}

// Datapath returns the node's datapath.
func (n *Node) Datapath() *datapath.Datapath { return n.dp }

// Counters returns the datapath counters summed over the workers.
func (n *Node) Counters() datapath.Counters { return n.dp.Counters() }

// Generation returns the running datapath generation.
func (n *Node) Generation() *pipeline.Generation { return n.dp.Generation() }

// StartCapture starts a capture in the datapath (control.Capturer).
func (n *Node) StartCapture(f datapath.CaptureFilter, ingress, egress bool) (*datapath.Capture, error) {
	return n.dp.StartCapture(f, ingress, egress)
}

// QueryFlows runs fn on each worker's flow table, read-only, between
// batches (datapath.Datapath.QueryFlows).
func (n *Node) QueryFlows(fn func(worker int, t *flow.Table)) { n.dp.QueryFlows(fn) }

// FlowClock returns the flow clock reading flow.Entry.LastSeen compares with.
func (n *Node) FlowClock() uint32 { return n.dp.Now() }

// Peers returns the announcer's routing sessions; none without one.
func (n *Node) Peers() []announce.PeerStatus {
	if n.announcer == nil {
		return nil
	}
	return n.announcer.Peers()
}

// The operations. Each public method below sends one to serve; the
// lower-case method it runs there may touch n.st.

// Apply makes cfg (already validated, as config.Load and config.Parse
// return it) the running configuration: it builds the new generation and
// swaps it in while the workers run. Flows keep their backend if it stays in
// its service. If anything fails — a change only a restart can make, a spec
// the builder rejects, a link that cannot be steered — the running
// configuration stays in force, unchanged, and the error says why.
func (n *Node) Apply(ctx context.Context, cfg *config.Config) (err error) {
	if derr := n.do(ctx, func() { err = n.apply(ctx, cfg) }); derr != nil {
		return derr
	}
	return err
}

// Config returns the running configuration; the caller must not modify it.
// Once the node has stopped it is the last one that ran.
func (n *Node) Config() (c *config.Config) {
	if n.do(context.Background(), func() { c = n.st.cfg }) != nil {
		<-n.stopped
		c = n.st.cfg // serve has returned: nothing writes it any more
	}
	return c
}

// Announcements returns the VIP host prefixes (/32, /128) this node should
// announce: every VIP address with at least one backend that is in service
// (not failed by its health check, not draining, weight above 0), none
// while the node is drained.
func (n *Node) Announcements() (p []netip.Prefix) {
	n.do(context.Background(), func() { p = n.announcements() })
	return p
}

// SetDraining drains the node (true) or returns it to service: a drained
// node withdraws every VIP announcement, so routers stop sending it new
// flows, and keeps forwarding what still arrives, so connections that
// routers have not moved yet continue. It reports whether the state
// changed.
func (n *Node) SetDraining(d bool) (changed bool) {
	n.do(context.Background(), func() { changed = n.setDraining(d) })
	return changed
}

// Draining reports whether the node is drained.
func (n *Node) Draining() (d bool) {
	n.do(context.Background(), func() { d = n.st.draining })
	return d
}

// Health returns the state and transition counts of every backend that has
// a health check (VIPs with a health section), in configuration order.
func (n *Node) Health() (h []health.Backend) {
	n.do(context.Background(), func() { h = n.health() })
	return h
}

// healthChanged is the checker's callback (on the check's goroutine): the
// transition is applied by serve.
func (n *Node) healthChanged(tr health.Transition) {
	n.do(context.Background(), func() { n.applyTransition(tr) })
}

// What serve runs.

func (n *Node) apply(ctx context.Context, cfg *config.Config) error {
	old := n.st.cfg
	if err := config.NeedsRestart(&old.Node, &cfg.Node); err != nil {
		return err
	}
	if err := n.checkBypassSubnets(cfg); err != nil {
		return err
	}
	if old.Node.Seed != cfg.Node.Seed {
		n.log.Warn("node.seed changed: new flows hash differently from LB nodes still on the old seed", "old", old.Node.Seed, "new", cfg.Node.Seed)
	}
	n.st.cfg = cfg
	n.setChecks()
	spec, hops := n.spec(ctx)
	// Steer the union of old and new VIPs while the generation changes, so
	// that neither a removed nor an added VIP loses packets in between.
	oldVIPs, newVIPs := vipAddrs(old), vipAddrs(cfg)
	union := append(slices.Clone(oldVIPs), newVIPs...)
	if err := n.steer(union); err != nil {
		n.st.cfg = old
		n.setChecks()
		n.steer(oldVIPs)
		return err
	}
	if err := n.swap(spec, hops); err != nil {
		n.st.cfg = old
		n.setChecks()
		n.steer(oldVIPs)
		return err
	}
	if err := n.steer(newVIPs); err != nil {
		n.log.Error("steering the new VIP set", "err", err) // the union stays: traffic still flows
	}
	return nil
}

// applyTransition counts tr and rebuilds the generation when a backend
// goes down or comes back: a down backend leaves its service's Maglev
// table; when it comes back, its slots return to it and flows that started
// elsewhere meanwhile keep their backend (the flow tables hold that
// choice).
func (n *Node) applyTransition(tr health.Transition) {
	n.log.Info("health", "check", tr.Key, "from", tr.From.String(), "to", tr.To.String(), "err", tr.Err)
	if !n.st.checkKeys[tr.Key] {
		return // a check removed meanwhile
	}
	if int(tr.To) < numStates {
		c := n.st.transitions[tr.Key]
		if c == nil {
			c = new([numStates]uint64)
			n.st.transitions[tr.Key] = c
		}
		c[tr.To]++
	}
	if tr.To == health.Up && tr.From == health.Unknown {
		return // it was already counted as up
	}
	spec, hops := n.spec(context.Background())
	if err := n.swap(spec, hops); err != nil {
		n.log.Error("rebuild after a health change", "err", err)
	}
}

// rebuild resolves every backend and applies a new generation if anything
// changed. A spec the builder rejects leaves the running generation alone.
func (n *Node) rebuild(ctx context.Context) error {
	spec, hops := n.spec(ctx)
	if n.st.builder.Current() != nil && maps.Equal(hops, n.st.hops) {
		return nil
	}
	return n.swap(spec, hops)
}

// swap builds the generation of spec and makes it current, logging the next
// hops that changed, and tells the announcer. A spec the builder rejects
// changes nothing.
func (n *Node) swap(spec pipeline.Spec, hops map[netip.Addr]string) error {
	g, err := n.st.builder.Build(spec)
	if err != nil {
		return err
	}
	for be, h := range hops {
		if n.st.hops[be] != h {
			n.log.Info("next hop", "backend", be, "hop", h)
		}
	}
	n.st.hops = hops
	n.dp.Apply(g)
	n.commitBypass()
	n.chainChanges(g)
	n.log.Info("generation applied", "generation", g.ID, "services", len(g.Services))
	n.announceSet()
	return nil
}

// announceSet hands the current announcement set to the announcer.
func (n *Node) announceSet() {
	if n.announcer == nil {
		return
	}
	if err := n.announcer.SetRoutes(n.routes(n.announcements())); err != nil {
		n.log.Error("bgp: announcement set refused", "err", err)
	}
}

func (n *Node) announcements() []netip.Prefix {
	if n.st.draining {
		return nil
	}
	var out []netip.Prefix
	for _, v := range n.st.cfg.VIPs {
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

func (n *Node) setDraining(d bool) bool {
	if n.st.draining == d {
		return false
	}
	n.st.draining = d
	n.log.Info("node drain", "draining", d)
	n.announceSet()
	if d {
		n.stopCluster() // leave: the others re-form the chains without this node
	} else if err := n.startCluster(); err != nil {
		n.log.Error("cluster: rejoin after undrain", "err", err)
	}
	return true
}

// setChecks makes the checker run exactly the checks of the running
// configuration, and forgets the transition counts of removed checks (a
// check added again starts from zero, which Prometheus reads as a counter
// reset).
func (n *Node) setChecks() {
	want := map[string]bool{}
	for _, v := range n.st.cfg.VIPs {
		if v.Health == nil {
			continue
		}
		for _, b := range v.Backends {
			key := healthKey(v.Name, b.Address)
			want[key] = true
			n.checks.Set(key, n.healthSpec(v, netip.MustParseAddr(b.Address)))
		}
	}
	for key := range n.st.checkKeys {
		if !want[key] {
			n.checks.Remove(key)
		}
	}
	n.st.checkKeys = want
	for key := range n.st.transitions {
		if !want[key] {
			delete(n.st.transitions, key)
		}
	}
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

func (n *Node) health() []health.Backend {
	var out []health.Backend
	for _, v := range n.st.cfg.VIPs {
		if v.Health == nil {
			continue
		}
		for _, b := range v.Backends {
			key := healthKey(v.Name, b.Address)
			st, _ := n.checks.State(key)
			h := health.Backend{VIP: v.Name, Backend: b.Address, State: st}
			if c := n.st.transitions[key]; c != nil {
				h.Up, h.Down = c[health.Up], c[health.Down]
			}
			out = append(out, h)
		}
	}
	return out
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

// vipAddrs returns the destinations the links must deliver to the
// datapath: the VIPs of every tenant, the SNAT addresses (full-NAT
// replies) and, with tenants, the VTEP address their VXLAN arrives at.
func vipAddrs(c *config.Config) []netip.Addr {
	var vips []netip.Addr
	for _, v := range c.VIPs {
		a := netip.MustParseAddr(v.Address)
		if !slices.Contains(vips, a) {
			vips = append(vips, a)
		}
	}
	for _, a := range c.Node.SNATAddrs() {
		if !slices.Contains(vips, a) {
			vips = append(vips, a)
		}
	}
	if c.VXLAN != nil && len(c.Tenants) > 0 {
		vips = append(vips, netip.MustParseAddr(c.VXLAN.Address))
	}
	return vips
}
