package pipeline

import (
	"fmt"
	"net/netip"
)

// The route stage chooses the next hop of what the node sends for a
// backend: the longest prefix of the backend's tenant's routes that holds
// the backend's address (RouteSpec, from the configuration), else the
// next hop the kernel's main table gives. A backend belongs to one service
// of one tenant, and everything the node sends for it goes to its
// address, so the route is a function of the backend: the control plane
// chooses it with LookupRoute when it builds the spec (it resolves the
// next hop's link-layer address, which the datapath cannot), the
// generation keeps it with the backend (Real.Route), and a flow's entry
// memoises it through its backend like the service. The stage itself
// drops, on a flow's first packet, what goes to a backend whose next hop
// is unresolved.

// RouteSpec is one route of a tenant: what the node sends to an address in
// Prefix goes through the neighbour Via.
type RouteSpec struct {
	Prefix netip.Prefix
	Via    netip.Addr
}

// LookupRoute returns the longest prefix among routes that holds a; ok is
// false when none does (the kernel's main table decides). Ties (the same
// prefix twice) go to the first.
func LookupRoute(routes []RouteSpec, a netip.Addr) (r RouteSpec, ok bool) {
	a = a.Unmap()
	for _, rt := range routes {
		if rt.Prefix.Contains(a) && (!ok || rt.Prefix.Bits() > r.Prefix.Bits()) {
			r, ok = rt, true
		}
	}
	return r, ok
}

// String is "PREFIX via VIA".
func (r RouteSpec) String() string { return fmt.Sprintf("%s via %s", r.Prefix, r.Via) }

// Route is the route stage: a packet whose backend has no resolved next
// hop is dropped (no_next_hop). Memoised: it runs on a flow's first packet
// (the encapsulation of later ones still finds no template and drops).
type Route struct{}

func (Route) Name() string   { return "route" }
func (Route) Memoised() bool { return true }

func (Route) Process(c *Context, pkts []*Packet) {
	for _, p := range pkts {
		if p.Verdict != Continue || p.Real == nil {
			continue
		}
		if p.Real.NoNextHop {
			p.Verdict, p.Reason = Drop, ReasonNoNextHop
		}
	}
}
