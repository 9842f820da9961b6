package lbnode

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/internal/announce"
	"github.com/sluicelb/sluice/internal/announce/l2"
	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// L2 mode (node.l2): the node's announcer is an l2Announcer instead of the
// BGP speaker. Every l2Every it decides, for each VIP address in service,
// whether this node answers for it (l2.Gate over the cluster member's
// view: rendezvous owner, majority of the configured members, sync before
// takeover, settling when the VIP leaves a live node), sets the
// responder's owned set (a VIP lost is not answered from that moment) and
// announces the VIPs it took over.

// l2Every is how often the announcer re-decides; membership views change
// it, and the member's view is read, not notified.
const l2Every = 10 * time.Millisecond

// l2Hold is how long one decision lets the responder answer: five
// decisions. A paused node (a frozen VM that resumes) answers for nothing
// until it has decided again with its current view.
const l2Hold = 5 * l2Every

type l2Announcer struct {
	n          *Node
	resp       *l2.Responder
	cfg        config.L2
	only       []netip.Addr // node.l2.vips; nil: every VIP in service
	self       netip.AddrPort
	configured []netip.AddrPort

	set atomic.Pointer[[]netip.Prefix] // the VIPs in service (Set); empty while drained

	// Owned by Run's goroutine.
	gates map[netip.Addr]*l2.Gate

	mu        sync.Mutex // guards what status reads
	vips      map[netip.Addr]*l2.VIPStatus
	last      l2.Status
	takeovers atomic.Uint64
	releases  atomic.Uint64
	unsynced  atomic.Uint64
}

var _ Announcer = (*l2Announcer)(nil)

// newL2 opens the responder on node.l2.interface.
func newL2(n *Node, c *config.Config) (*l2Announcer, error) {
	lc := *c.Node.L2
	resp, err := l2.Open(lc.Interface)
	if err != nil {
		return nil, fmt.Errorf("node.l2: %w", err)
	}
	a := &l2Announcer{n: n, resp: resp, cfg: lc, gates: map[netip.Addr]*l2.Gate{}, vips: map[netip.Addr]*l2.VIPStatus{}}
	if len(lc.VIPs) > 0 {
		a.only = lc.Addrs(c)
	}
	if n.clSetup != nil {
		a.self = n.clSetup.Bind
		a.configured = append(a.configured, a.self)
		for _, p := range c.Node.Cluster.Peers {
			if ap, err := netip.ParseAddrPort(p); err == nil {
				a.configured = append(a.configured, ap)
			}
		}
	}
	empty := []netip.Prefix{}
	a.set.Store(&empty)
	return a, nil
}

// SetRoutes implements Announcer: the VIPs in service. A route's next hop
// does not apply (bypass needs BGP; L2 mode excludes it).
func (a *l2Announcer) SetRoutes(rs []announce.Route) error {
	p := make([]netip.Prefix, len(rs))
	for i, r := range rs {
		p[i] = r.Prefix
	}
	a.set.Store(&p)
	return nil
}

// Peers implements Announcer: L2 mode has no routing sessions.
func (a *l2Announcer) Peers() []announce.PeerStatus { return nil }

// Run answers and re-decides until ctx is done; then it stops answering at
// once and leaves the cluster, so that the new owners take the VIPs over
// while the datapath keeps forwarding for node.l2.shutdown_grace.
func (a *l2Announcer) Run(ctx context.Context) error {
	rctx, stop := context.WithCancel(context.Background())
	respDone := make(chan error, 1)
	go func() { respDone <- a.resp.Run(rctx) }()
	defer func() {
		stop()
		<-respDone
		a.resp.Close()
	}()
	t := time.NewTicker(l2Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.resp.SetOwned(nil)
			a.releaseAll()
			a.n.log.Info("l2: stopped answering for every VIP; leaving the cluster")
			a.n.do(context.Background(), a.n.stopCluster)
			return nil
		case err := <-respDone:
			respDone <- err
			return fmt.Errorf("l2 responder: %w", err)
		case now := <-t.C:
			a.evaluate(now)
		}
	}
}

// view returns the live members as this node sees them (nil when it is not
// a member), those its failure detector suspects, and whether its member is
// synced.
func (a *l2Announcer) view() (live, suspected []netip.AddrPort, synced bool) {
	if a.n.clSetup == nil {
		return []netip.AddrPort{{}}, nil, true
	}
	cl := a.n.clNode.Load()
	if cl == nil {
		return nil, nil, false
	}
	v := cl.View()
	if v == nil {
		return nil, nil, false
	}
	live = v.Members()
	if g := a.n.clGossip.Load(); g != nil && g.Heartbeats() {
		mutual := g.Mutual()
		for _, m := range live {
			if m != a.self && !slices.Contains(mutual, m) {
				suspected = append(suspected, m)
			}
		}
	}
	return live, suspected, cl.Ready()
}

// addrs returns the VIP addresses to decide about: those in service
// (filtered by node.l2.vips).
func (a *l2Announcer) addrs() []netip.Addr {
	var out []netip.Addr
	for _, p := range *a.set.Load() {
		v := p.Addr().Unmap()
		if (a.only == nil || slices.Contains(a.only, v)) && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// needSync reports whether flows of a service at vip use the owner chains
// now: affinity always, or on-change while a backend change is in flight.
func needSync(g *pipeline.Generation, vip netip.Addr) bool {
	if g == nil {
		return false
	}
	a := vip.As16() // IPv4 as IPv4-mapped, as Service.Addr holds it
	for _, s := range g.Services {
		if s.Addr != a {
			continue
		}
		if s.Chain == pipeline.ChainAlways || (s.Chain == pipeline.ChainChanged && s.InFlight) {
			return true
		}
	}
	return false
}

func (a *l2Announcer) evaluate(now time.Time) {
	g := a.n.dp.Generation()
	var seed uint64
	if g != nil {
		seed = g.Seed
	}
	live, suspected, synced := a.view()
	vips := a.addrs()
	a.resp.SetKnown(vips)
	if err := a.resp.Join(vips); err != nil {
		a.n.log.Warn("l2: joining solicited-node groups", "err", err)
	}
	owned := make([]netip.Addr, 0, len(vips))
	var taken []netip.Addr
	st := l2.Status{Interface: a.resp.Interface(), MAC: a.resp.MAC().String(), Synced: synced}
	if a.self.IsValid() {
		st.Self = a.self.String()
		for _, m := range a.configured {
			st.Configured = append(st.Configured, m.String())
		}
		for _, m := range live {
			st.Live = append(st.Live, m.String())
		}
		for _, m := range suspected {
			st.Suspected = append(st.Suspected, m.String())
		}
	} else if live != nil {
		st.Live = []string{"self"}
	}
	a.mu.Lock()
	for _, vip := range vips {
		gt := a.gates[vip]
		if gt == nil {
			gt = &l2.Gate{Timing: l2.Timing{SyncWait: a.cfg.SyncWait, Settle: a.cfg.Settle}}
			a.gates[vip] = gt
			a.vips[vip] = &l2.VIPStatus{Address: vip.String()}
		}
		in := l2.Input{VIP: vip, Seed: seed, Self: a.self, Configured: a.configured, Live: live, Suspected: suspected}
		if !a.self.IsValid() {
			in = l2.Alone(vip, seed, live != nil)
		}
		was := gt.Answering()
		s := gt.Step(now, in, synced, needSync(g, vip))
		vs := a.vips[vip]
		vs.Mine, vs.Answering, vs.Waiting = s.Decision.Mine, s.Answer, s.Waiting
		vs.Owner = ""
		if s.Decision.Live > 0 {
			vs.Owner = s.Decision.Owner.String()
			if !a.self.IsValid() {
				vs.Owner = "self"
			}
		}
		st.Need, st.Quorum = s.Decision.Need, s.Decision.Quorum
		if s.Answer {
			owned = append(owned, vip)
		}
		switch {
		case s.Takeover:
			taken = append(taken, vip)
			vs.Since = now
			vs.Takeovers++
			a.takeovers.Add(1)
			if s.Unsynced {
				a.unsynced.Add(1)
				a.n.log.Warn("l2: took the VIP over before the cluster member was synced", "vip", vip, "sync_wait", a.cfg.SyncWait)
			}
		case was && !s.Answer:
			vs.Since, vs.Released = time.Time{}, now
			a.releases.Add(1)
			a.n.log.Info("l2: stopped answering", "vip", vip, "owner", vs.Owner, "quorum", s.Decision.Quorum, "live", s.Decision.Live)
		}
	}
	for vip, gt := range a.gates {
		if !slices.Contains(vips, vip) {
			if gt.Answering() {
				a.releases.Add(1)
				a.n.log.Info("l2: stopped answering (VIP out of service)", "vip", vip)
			}
			delete(a.gates, vip)
			delete(a.vips, vip)
		}
	}
	// Before announcing (requests after the announcement are answered),
	// and only until a few decisions later: a node whose decisions stop
	// stops answering.
	a.resp.SetOwnedUntil(owned, now.Add(l2Hold))
	for _, vip := range vips {
		st.VIPs = append(st.VIPs, *a.vips[vip])
	}
	if len(vips) == 0 {
		st.Need, st.Quorum = l2.Decide(l2.Input{Self: a.self, Configured: a.configured, Live: live}).Need, false
	}
	a.last = st
	a.mu.Unlock()
	for _, vip := range taken {
		a.n.log.Info("l2: took the VIP over", "vip", vip, "mac", a.resp.MAC(), "gratuitous", *a.cfg.Gratuitous)
		go a.announce(vip)
	}
}

// announce sends node.l2.gratuitous announcements of vip, while it is
// still answered.
func (a *l2Announcer) announce(vip netip.Addr) {
	for i := range *a.cfg.Gratuitous {
		if i > 0 {
			time.Sleep(a.cfg.GratuitousInterval)
		}
		if !a.resp.Owns(vip) {
			return
		}
		if err := a.resp.Announce(vip); err != nil {
			a.n.log.Warn("l2: announcement", "vip", vip, "err", err)
		}
	}
}

func (a *l2Announcer) releaseAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for vip, gt := range a.gates {
		if gt.Answering() {
			a.releases.Add(1)
		}
		delete(a.gates, vip)
		if vs := a.vips[vip]; vs != nil {
			vs.Answering, vs.Since, vs.Released = false, time.Time{}, time.Now()
		}
	}
	for i := range a.last.VIPs {
		if a.last.VIPs[i].Answering {
			a.last.VIPs[i].Answering, a.last.VIPs[i].Since, a.last.VIPs[i].Released = false, time.Time{}, time.Now()
		}
	}
}

func (a *l2Announcer) status() l2.Status {
	a.mu.Lock()
	st := a.last
	st.VIPs = slices.Clone(st.VIPs)
	a.mu.Unlock()
	st.Takeovers, st.Releases, st.Unsynced = a.takeovers.Load(), a.releases.Load(), a.unsynced.Load()
	st.Counters = a.resp.Counters()
	return st
}

// L2Status returns the node's L2 state; ok is false without node.l2.
func (n *Node) L2Status() (st l2.Status, ok bool) {
	a, ok := n.announcer.(*l2Announcer)
	if !ok {
		return st, false
	}
	return a.status(), true
}
