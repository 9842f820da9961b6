package bypass

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/fielderr"
)

// Decision is the bypass state of one VIP address with bypass
// single-backend.
type Decision struct {
	Addr netip.Addr
	// Services are the names of the VIPs (services) on the address, in
	// configuration order.
	Services []string
	// Bypassed: the address is announced with NextHop, the one backend of
	// all its services, as BGP next hop.
	Bypassed bool
	NextHop  netip.Addr // valid when Bypassed
	// Reason says why the address is bypassed or why not, for logs and
	// `vip list`.
	Reason string
}

// Down reports whether backend (an address as configured) of the VIP named
// vip failed its health check. nil: every backend is up.
type Down func(vip, backend string) bool

// Decide returns the decision for every VIP address of c with bypass
// single-backend, in the order of the addresses' first VIP. An address is
// bypassed when each of its services has exactly one backend in service
// (listed and not failed by its health check), the same backend for all,
// and that backend is active with a weight above 0. A draining backend, or
// one with weight 0, still has flows through the LB nodes, and a filling
// one is a change in flight: both keep the address on the LB nodes until
// they leave the configuration (or become active).
func Decide(c *config.Config, down Down) []Decision {
	if down == nil {
		down = func(string, string) bool { return false }
	}
	var out []Decision
	idx := map[netip.Addr]int{}
	for i := range c.VIPs {
		v := &c.VIPs[i]
		if !v.BypassOn() || v.Tenant != "" {
			continue
		}
		a, err := netip.ParseAddr(v.Address)
		if err != nil {
			continue
		}
		k, ok := idx[a]
		if !ok {
			k = len(out)
			idx[a] = k
			out = append(out, Decision{Addr: a, Bypassed: true})
		}
		d := &out[k]
		d.Services = append(d.Services, v.Name)
		if !d.Bypassed {
			continue // the first reason stands
		}
		var in []config.Backend
		for _, b := range v.Backends {
			if !down(v.Name, b.Address) {
				in = append(in, b)
			}
		}
		switch {
		case len(in) == 0:
			d.no(fmt.Sprintf("%s has no backend in service", v.Name))
			continue
		case len(in) > 1:
			names := make([]string, len(in))
			for j, b := range in {
				names[j] = b.Address + stateNote(b)
			}
			d.no(fmt.Sprintf("%s has %d backends in service (%s)", v.Name, len(in), strings.Join(names, ", ")))
			continue
		}
		b := in[0]
		switch {
		case b.State == config.StateFilling:
			d.no(fmt.Sprintf("%s: backend %s is filling (a change is in flight)", v.Name, b.Address))
			continue
		case b.State == config.StateDraining:
			d.no(fmt.Sprintf("%s: backend %s is draining", v.Name, b.Address))
			continue
		case b.Weight != nil && *b.Weight == 0:
			d.no(fmt.Sprintf("%s: backend %s has weight 0", v.Name, b.Address))
			continue
		}
		ba, err := netip.ParseAddr(b.Address)
		if err != nil {
			d.no(fmt.Sprintf("%s: backend %q is not an address", v.Name, b.Address))
			continue
		}
		switch {
		case !d.NextHop.IsValid():
			d.NextHop = ba
		case d.NextHop != ba:
			d.no(fmt.Sprintf("%s has backend %s, %s has %s", d.Services[0], d.NextHop, v.Name, ba))
		}
	}
	for i := range out {
		if d := &out[i]; d.Bypassed {
			d.Reason = fmt.Sprintf("one backend in service (%s) for %s", d.NextHop, strings.Join(d.Services, ", "))
		}
	}
	return out
}

// no marks d not bypassed for reason.
func (d *Decision) no(reason string) {
	d.Bypassed, d.NextHop, d.Reason = false, netip.Addr{}, reason
}

func stateNote(b config.Backend) string {
	if b.State != "" && b.State != config.StateActive {
		return " " + b.State
	}
	return ""
}

// Find returns the decision for addr in ds, if any.
func Find(ds []Decision, addr netip.Addr) (Decision, bool) {
	i := slices.IndexFunc(ds, func(d Decision) bool { return d.Addr == addr })
	if i < 0 {
		return Decision{}, false
	}
	return ds[i], true
}

// Fill is a backend the node treats as filling although its configured
// state is active: it came into service on an address that left bypass,
// and the flows that began during bypass (all on the bypass backend, known
// to no LB node) must keep their backend. It ends at Until (the VIP's
// drain_period after the address left bypass), when the backend becomes
// active as configured.
type Fill struct {
	VIP     string // the service's name
	Backend string // the backend's address as configured
	Until   time.Time
}

// Fills returns the backends that must fill because the address of prev,
// a bypassed decision, left bypass in c: on each service of the address
// with a backend life cycle (config.LifeCycle), every backend other than
// prev.NextHop that is configured active with a weight above 0, in service
// or not. A backend that is down now fills when it passes its check within
// the period: a backend coming back passes the checks of the address's
// services one at a time, and the first one ends bypass for all of them.
// Without a life cycle none: the new backends are active at once, and the
// flows of the slots they take, begun during bypass, break. now is when
// the address left bypass.
func Fills(c *config.Config, prev Decision, now time.Time) []Fill {
	var out []Fill
	for i := range c.VIPs {
		v := &c.VIPs[i]
		if !slices.Contains(prev.Services, v.Name) || !c.LifeCycle(v) {
			continue
		}
		for _, b := range v.Backends {
			ba, err := netip.ParseAddr(b.Address)
			if err != nil || ba == prev.NextHop {
				continue
			}
			if b.State != config.StateActive || b.Weight == nil || *b.Weight == 0 {
				continue
			}
			out = append(out, Fill{VIP: v.Name, Backend: b.Address, Until: now.Add(v.DrainPeriod)})
		}
	}
	return out
}

// Status is a node's view of one bypass-enabled address: the decision, when
// it took its current value and how often the address entered and left
// bypass on this node.
type Status struct {
	Decision
	Since         time.Time
	Entered, Left uint64
}

// View is what a node reports of bypass: every bypass-enabled address and
// the backends it treats as filling after a scale-out.
type View struct {
	VIPs    []Status
	Filling []Fill
}

// ErrSubnet is matched (errors.Is) by the errors of CheckSubnets.
var ErrSubnet = errors.New("bypass: backend not on a peering subnet")

// Interface is one of the node's interfaces with the prefixes of its
// addresses (address and mask length, as `ip addr` shows them).
type Interface struct {
	Name     string
	Prefixes []netip.Prefix
}

// CheckSubnets refuses the backends of bypass VIPs that routers cannot use
// as next hop: a router accepts a third-party next hop only on a subnet it
// shares with the speaker (eBGP), so each backend must be in a prefix of an
// interface of this node whose prefixes also hold a BGP peer. Each refusal
// is a *fielderr.Error on vips[i].backends[j].address matching ErrSubnet.
func CheckSubnets(c *config.Config, ifaces []Interface) error {
	if c.Node.BGP == nil {
		return nil // config validation refuses bypass without BGP
	}
	var peering []Interface
	var peers []string
	for _, p := range c.Node.BGP.Peers {
		pa, err := netip.ParseAddr(p.Address)
		if err != nil {
			continue
		}
		peers = append(peers, p.Address)
		for _, ifc := range ifaces {
			if slices.ContainsFunc(ifc.Prefixes, func(q netip.Prefix) bool { return q.Contains(pa) }) &&
				!slices.ContainsFunc(peering, func(o Interface) bool { return o.Name == ifc.Name }) {
				peering = append(peering, ifc)
			}
		}
	}
	var errs []error
	for i := range c.VIPs {
		v := &c.VIPs[i]
		if !v.BypassOn() {
			continue
		}
		for j, b := range v.Backends {
			ba, err := netip.ParseAddr(b.Address)
			if err != nil {
				continue
			}
			ok := slices.ContainsFunc(peering, func(ifc Interface) bool {
				return slices.ContainsFunc(ifc.Prefixes, func(q netip.Prefix) bool { return q.Contains(ba) && q.Addr() != ba })
			})
			if ok {
				continue
			}
			var subnets []string
			for _, ifc := range peering {
				for _, q := range ifc.Prefixes {
					if q.Addr().Is4() == ba.Is4() {
						subnets = append(subnets, ifc.Name+" "+q.Masked().String())
					}
				}
			}
			reason := fmt.Sprintf("is not on a subnet this node shares with its BGP peers %s", strings.Join(peers, ", "))
			if len(subnets) > 0 {
				reason += fmt.Sprintf(" (%s)", strings.Join(subnets, ", "))
			}
			reason += ": with bypass single-backend the routers must reach the backend directly, as the next hop of the VIP's route"
			errs = append(errs, &fielderr.Error{Path: fmt.Sprintf("vips[%d].backends[%d].address", i, j), Value: b.Address, Reason: reason, Err: ErrSubnet})
		}
	}
	return errors.Join(errs...)
}
