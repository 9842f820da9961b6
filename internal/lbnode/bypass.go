package lbnode

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/sluicelb/sluice/internal/announce"
	"github.com/sluicelb/sluice/internal/bypass"
	"github.com/sluicelb/sluice/internal/config"
)

// Bypass single-backend (package bypass): the serve goroutine decides, with
// bypass.Decide, which VIP addresses bypass the LB tier every time it builds
// a spec (a configuration applied, a health transition, a fill ended), and
// commits the decision when the generation built from it is swapped in:
//
//   - a bypassed address is announced with its backend as next hop, and its
//     services keep no flow entries (they are stateless in the generation:
//     packets that still reach the node on the way go to the one backend);
//   - an address that leaves bypass is announced with the node as next hop
//     again, and every other backend in service of its services that has a
//     backend life cycle is treated as filling (bypass.Fills) for the VIP's
//     drain_period: the flows that began during bypass, all on the bypass
//     backend and known to no LB node, keep it through the owner chains
//     (on-change) or second chance.
//
// The state below is owned by serve (it is part of state).
type bypassState struct {
	status []bypass.Status        // committed: what the announcer was told
	fills  map[string]bypass.Fill // by healthKey(vip, backend)
	timer  *time.Timer            // the next fill's end; nil: none
	next   *bypassPlan            // planned by spec, committed by swap
}

// bypassPlan is what spec decided, to be committed when its generation is
// swapped in.
type bypassPlan struct {
	status []bypass.Status
	fills  map[string]bypass.Fill
	logs   []func()
}

// planBypass decides bypass for the running configuration and health
// states at now, and returns the statuses and fills the next generation is
// built with (kept in bp.next; committed by commitBypass after the swap).
func (n *Node) planBypass(now time.Time) *bypassPlan {
	c := n.st.cfg
	byName := make(map[string]*config.VIP, len(c.VIPs))
	for i := range c.VIPs {
		byName[c.VIPs[i].Name] = &c.VIPs[i]
	}
	isDown := func(vip, backend string) bool {
		v := byName[vip]
		return v != nil && n.down(*v, backend)
	}
	ds := bypass.Decide(c, isDown)
	p := &bypassPlan{fills: map[string]bypass.Fill{}}
	// Fills that still apply: the backend is still configured active in
	// its VIP, and the VIP's address has not gone back to bypass.
	for k, f := range n.st.bp.fills {
		if now.Before(f.Until) && configuredActive(c, f.VIP, f.Backend) {
			p.fills[k] = f
		}
	}
	for _, d := range ds {
		st := bypass.Status{Decision: d, Since: now}
		o, had := findStatus(n.st.bp.status, d.Addr)
		if had {
			st.Entered, st.Left = o.Entered, o.Left
			if o.Bypassed == d.Bypassed && o.NextHop == d.NextHop {
				st.Since = o.Since
			}
		}
		switch {
		case d.Bypassed && (!had || !o.Bypassed):
			st.Entered++
			p.logs = append(p.logs, func() {
				n.log.Info("bypass: VIP announced with its backend as next hop; no flow state kept", "vip", d.Addr, "next_hop", d.NextHop, "why", d.Reason)
			})
		case d.Bypassed && o.NextHop != d.NextHop:
			p.logs = append(p.logs, func() {
				n.log.Info("bypass: VIP's next hop changed", "vip", d.Addr, "next_hop", d.NextHop, "was", o.NextHop, "why", d.Reason)
			})
		case !d.Bypassed && had && o.Bypassed:
			st.Left++
			fills := bypass.Fills(c, o.Decision, now)
			for _, f := range fills {
				p.fills[healthKey(f.VIP, f.Backend)] = f
			}
			p.logs = append(p.logs, func() {
				n.log.Info("bypass: VIP announced through the LB nodes again", "vip", d.Addr, "was_next_hop", o.NextHop, "why", d.Reason)
				for _, f := range fills {
					n.log.Info("bypass: backend fills: the flows begun during bypass keep their backend", "vip", f.VIP, "backend", f.Backend, "bypass_backend", o.NextHop, "until", f.Until.Format(time.RFC3339))
				}
				for _, name := range o.Services {
					// (A QUIC VIP routes by connection ID: its connections
					// keep their backend without a life cycle.)
					if v := byName[name]; v != nil && !c.LifeCycle(v) && v.QUIC == nil {
						n.log.Warn("bypass: the VIP has no backend life cycle (node.cluster with affinity on-change, or second_chance): its new backends are active at once, and flows begun during bypass in the slots they take break", "vip", name)
					}
				}
			})
		}
		if d.Bypassed {
			for k, f := range p.fills {
				if slices.Contains(d.Services, f.VIP) {
					delete(p.fills, k)
				}
			}
		}
		p.status = append(p.status, st)
	}
	n.st.bp.next = p
	return p
}

// commitBypass makes the plan of the generation just swapped in the
// node's bypass state, logs the transitions and arms the timer of the
// next fill's end.
func (n *Node) commitBypass() {
	p := n.st.bp.next
	if p == nil {
		return
	}
	n.st.bp.next = nil
	n.st.bp.status, n.st.bp.fills = p.status, p.fills
	for _, l := range p.logs {
		l()
	}
	if n.st.bp.timer != nil {
		n.st.bp.timer.Stop()
		n.st.bp.timer = nil
	}
	var first time.Time
	for _, f := range p.fills {
		if first.IsZero() || f.Until.Before(first) {
			first = f.Until
		}
	}
	if !first.IsZero() {
		n.st.bp.timer = time.AfterFunc(time.Until(first), func() {
			n.do(context.Background(), n.fillsEnded)
		})
	}
}

// fillsEnded rebuilds the generation once fills have ended (on serve).
func (n *Node) fillsEnded() {
	now := time.Now()
	ended := false
	for k, f := range n.st.bp.fills {
		if !now.Before(f.Until) {
			ended = true
			n.log.Info("bypass: fill completed: backend active", "vip", f.VIP, "backend", f.Backend)
			delete(n.st.bp.fills, k)
		}
	}
	if !ended {
		n.commitTimer()
		return
	}
	spec, hops := n.spec(context.Background())
	if err := n.swap(spec, hops); err != nil {
		n.log.Error("rebuild after a fill ended", "err", err)
	}
}

// commitTimer re-arms the fill timer for the current fills.
func (n *Node) commitTimer() {
	n.st.bp.next = &bypassPlan{status: n.st.bp.status, fills: n.st.bp.fills}
	n.commitBypass()
}

// filling reports whether backend b of VIP v is treated as filling after
// its address left bypass, in the plan being built.
func (p *bypassPlan) filling(v, b string) bool {
	if p == nil {
		return false
	}
	_, ok := p.fills[healthKey(v, b)]
	return ok
}

// bypassed returns the planned decision that bypasses address a, if any.
func (p *bypassPlan) bypassed(a netip.Addr) bool {
	if p == nil {
		return false
	}
	st, ok := findStatus(p.status, a)
	return ok && st.Bypassed
}

// Bypass returns the node's bypass state: every address with bypass
// single-backend and the backends filling after their address left bypass.
func (n *Node) Bypass() (v bypass.View) {
	get := func() {
		v.VIPs = slices.Clone(n.st.bp.status)
		for _, f := range n.st.bp.fills {
			v.Filling = append(v.Filling, f)
		}
		slices.SortFunc(v.Filling, func(a, b bypass.Fill) int {
			return cmp.Or(strings.Compare(a.VIP, b.VIP), strings.Compare(a.Backend, b.Backend))
		})
	}
	if n.do(context.Background(), get) != nil {
		<-n.stopped
		get()
	}
	return v
}

// routes returns the routes to announce for prefixes: the node's own next
// hop, or the backend's for a bypassed address.
func (n *Node) routes(prefixes []netip.Prefix) []announce.Route {
	out := make([]announce.Route, len(prefixes))
	for i, p := range prefixes {
		out[i] = announce.Route{Prefix: p}
		if st, ok := findStatus(n.st.bp.status, p.Addr()); ok && st.Bypassed {
			out[i].NextHop = st.NextHop
		}
	}
	return out
}

// checkBypassSubnets refuses a configuration whose bypass VIPs have a
// backend that no router could use as next hop (bypass.CheckSubnets over
// the node's interfaces). Without an interface lister (tests) it checks
// nothing.
func (n *Node) checkBypassSubnets(c *config.Config) error {
	if n.ifaces == nil || !slices.ContainsFunc(c.VIPs, func(v config.VIP) bool { return v.BypassOn() }) {
		return nil
	}
	ifs, err := n.ifaces()
	if err != nil {
		return fmt.Errorf("bypass: listing the interfaces: %w", err)
	}
	return bypass.CheckSubnets(c, ifs)
}

// systemInterfaces lists the host's interfaces with their prefixes.
func systemInterfaces() ([]bypass.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []bypass.Interface
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, err
		}
		bi := bypass.Interface{Name: ifc.Name}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ones, _ := ipn.Mask.Size()
			ip = ip.Unmap()
			if ip.Is4() && ones > 32 {
				ones -= 96
			}
			bi.Prefixes = append(bi.Prefixes, netip.PrefixFrom(ip, ones))
		}
		out = append(out, bi)
	}
	return out, nil
}

func findStatus(ss []bypass.Status, a netip.Addr) (bypass.Status, bool) {
	i := slices.IndexFunc(ss, func(s bypass.Status) bool { return s.Addr == a })
	if i < 0 {
		return bypass.Status{}, false
	}
	return ss[i], true
}

func findVIP(c *config.Config, name string) *config.VIP {
	for i := range c.VIPs {
		if c.VIPs[i].Name == name {
			return &c.VIPs[i]
		}
	}
	return nil
}

// configuredActive reports whether backend b of VIP v is in c, active.
func configuredActive(c *config.Config, v, b string) bool {
	cv := findVIP(c, v)
	if cv == nil {
		return false
	}
	i := slices.IndexFunc(cv.Backends, func(cb config.Backend) bool { return cb.Address == b })
	return i >= 0 && cv.Backends[i].State == config.StateActive
}
