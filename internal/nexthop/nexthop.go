// Package nexthop resolves the Ethernet next hop toward each backend from
// the kernel's routing and neighbour tables (netlink), so that encapsulated
// packets leave the LB with correct addresses, and tells its user when those
// tables change.
//
// The datapath bypasses the kernel, so the kernel never refreshes neighbour
// entries for the backends by itself: Resolve prompts a resolution (a UDP
// datagram to the discard port of the next hop) when the entry is missing or
// failed, and Watch re-resolves periodically as well as on every route or
// neighbour change.
package nexthop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Hop is how to reach one backend.
type Hop struct {
	Dst     netip.Addr // the backend
	Via     netip.Addr // the gateway, or Dst when the backend is on-link
	Src     netip.Addr // the kernel's preferred source address for Dst
	Ifindex int
	Ifname  string
	SrcMAC  net.HardwareAddr // the outgoing interface's address
	DstMAC  net.HardwareAddr // the next hop's address
}

func (h Hop) String() string {
	return fmt.Sprintf("%s via %s dev %s lladdr %s", h.Dst, h.Via, h.Ifname, h.DstMAC)
}

// ErrUnresolved is wrapped by every Resolve error.
var ErrUnresolved = errors.New("next hop unresolved")

// Resolver resolves next hops in the network namespace of the goroutine
// that created it (its netlink handle stays there).
type Resolver struct {
	h       *netlink.Handle
	ns      netns.NsHandle // the namespace New ran in, for Watch
	Timeout time.Duration  // how long Resolve waits for a neighbour; default 1s
}

// New returns a resolver for the current network namespace.
func New() (*Resolver, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("nexthop: current namespace: %w", err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("nexthop: netlink: %w", err)
	}
	return &Resolver{h: h, ns: ns, Timeout: time.Second}, nil
}

// Close releases the netlink handle.
func (r *Resolver) Close() {
	r.h.Close()
	r.ns.Close()
}

// Resolve finds the route to dst and the link-layer address of its next hop,
// prompting the kernel to resolve it if needed.
func (r *Resolver) Resolve(ctx context.Context, dst netip.Addr) (Hop, error) {
	hop := Hop{Dst: dst}
	routes, err := r.h.RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		return hop, fmt.Errorf("%w: %s: no route: %v", ErrUnresolved, dst, err)
	}
	rt := routes[0]
	if rt.Type != unix.RTN_UNICAST && rt.Type != 0 {
		return hop, fmt.Errorf("%w: %s: route type %d is not unicast", ErrUnresolved, dst, rt.Type)
	}
	hop.Via = dst
	if gw, ok := netip.AddrFromSlice(rt.Gw); ok && rt.Gw != nil {
		hop.Via = gw.Unmap()
	}
	if src, ok := netip.AddrFromSlice(rt.Src); ok && rt.Src != nil {
		hop.Src = src.Unmap()
	}
	l, err := r.h.LinkByIndex(rt.LinkIndex)
	if err != nil {
		return hop, fmt.Errorf("%w: %s: interface %d: %v", ErrUnresolved, dst, rt.LinkIndex, err)
	}
	a := l.Attrs()
	hop.Ifindex, hop.Ifname, hop.SrcMAC = a.Index, a.Name, a.HardwareAddr
	if len(hop.SrcMAC) != 6 {
		return hop, fmt.Errorf("%w: %s: interface %s has no Ethernet address", ErrUnresolved, dst, a.Name)
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	deadline := time.Now().Add(timeout)
	prompted := false
	for {
		if mac, ok := r.neighbour(hop.Ifindex, hop.Via); ok {
			hop.DstMAC = mac
			return hop, nil
		}
		if !prompted {
			r.prompt(hop.Via)
			prompted = true
		}
		if time.Now().After(deadline) {
			return hop, fmt.Errorf("%w: %s: no neighbour entry for %s on %s after %v", ErrUnresolved, dst, hop.Via, hop.Ifname, timeout)
		}
		select {
		case <-ctx.Done():
			return hop, fmt.Errorf("%w: %s: %v", ErrUnresolved, dst, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

const usable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP

func (r *Resolver) neighbour(ifindex int, ip netip.Addr) (net.HardwareAddr, bool) {
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := r.h.NeighList(ifindex, family)
	if err != nil {
		return nil, false
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip && n.State&usable != 0 && len(n.HardwareAddr) == 6 {
			return n.HardwareAddr, true
		}
	}
	return nil, false
}

// prompt makes the kernel of the resolver's namespace resolve ip: a
// datagram to its discard port. The socket is opened in that namespace
// whatever thread calls (the node resolves from its own goroutine), on a
// thread of its own that is never returned to the scheduler.
func (r *Resolver) prompt(ip netip.Addr) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		cur, err := netns.Get()
		if err != nil {
			return
		}
		defer cur.Close()
		if !cur.Equal(r.ns) {
			if err := netns.Set(r.ns); err != nil {
				return
			}
		}
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 9)))
		if err != nil {
			return
		}
		c.Write([]byte{0})
		c.Close()
	}()
	<-done
}

// Watch calls changed after routes or neighbours change (coalescing bursts
// within 100 ms) and every refresh interval, until ctx is done. It watches
// the namespace the resolver was created in, from any goroutine.
func (r *Resolver) Watch(ctx context.Context, refresh time.Duration, changed func()) error {
	done := make(chan struct{})
	defer close(done)
	routes := make(chan netlink.RouteUpdate, 64)
	neighs := make(chan netlink.NeighUpdate, 64)
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &r.ns}); err != nil {
		return fmt.Errorf("nexthop: route subscribe: %w", err)
	}
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{Namespace: &r.ns}); err != nil {
		return fmt.Errorf("nexthop: neighbour subscribe: %w", err)
	}
	tick := time.NewTicker(refresh)
	defer tick.Stop()
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-routes:
			settle = time.After(100 * time.Millisecond)
		case <-neighs:
			settle = time.After(100 * time.Millisecond)
		case <-settle:
			settle = nil
			changed()
		case <-tick.C:
			changed()
		}
	}
}
