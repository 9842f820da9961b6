package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Lab is a running lab: its nodes, in the order Up builds them.
type Lab struct {
	Cfg      Config // with the defaults applied
	Client   *Node
	Router   *Node
	LBs      []*Node
	Backends []*Node
}

// ErrNotFound is returned by Attach when no namespace of the lab exists.
var ErrNotFound = errors.New("lab: not found")

// Nodes returns every node: client, router, LB nodes, backends.
func (l *Lab) Nodes() []*Node {
	return append(append([]*Node{l.Client, l.Router}, l.LBs...), l.Backends...)
}

// Node returns the node whose namespace is name, or nil.
func (l *Lab) Node(name string) *Node {
	for _, n := range l.Nodes() {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// testHookStep, when set, runs before each build step (tests use it to
// cancel or fail Up at a chosen point).
var testHookStep func(step string) error

// Up builds the lab described by c. It first removes whatever an earlier
// run with the same prefix left behind (a crash, a kill -9), then builds.
// If anything fails, or ctx is cancelled while it builds, Up removes
// everything it made before it returns the error.
func Up(ctx context.Context, c Config) (l *Lab, err error) {
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	if _, err := Remove(c.Prefix); err != nil {
		return nil, fmt.Errorf("lab: removing leftovers of %s: %w", c.Prefix, err)
	}
	l = layout(c)
	built := false
	defer func() { // also runs when build panics
		if !built {
			if _, rerr := Remove(c.Prefix); rerr != nil {
				err = errors.Join(err, fmt.Errorf("lab %s: teardown: %w", c.Prefix, rerr))
			}
		}
	}()
	if err := build(ctx, l); err != nil {
		return nil, fmt.Errorf("lab %s: up: %w", c.Prefix, err)
	}
	built = true
	return l, nil
}

// Down stops the processes started on the nodes, then removes every
// namespace with the lab's prefix (also ones this Lab does not describe,
// such as lb3 of an earlier, bigger lab), which removes their interfaces.
// It is idempotent and works on a Lab from Attach.
func (l *Lab) Down() error {
	var errs []error
	for _, n := range l.Nodes() {
		if n != nil {
			errs = append(errs, n.stopAll())
		}
	}
	_, err := Remove(l.Cfg.Prefix)
	return errors.Join(append(errs, err)...)
}

// Remove deletes every namespace of the lab with this prefix, stopping
// the processes that still run in them (SIGTERM, SIGKILL after a second),
// and returns the names it removed. Nothing to remove is not an error.
func Remove(prefix string) ([]string, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	names, err := listNS(prefix)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, name := range names {
		errs = append(errs, deleteNS(name))
	}
	return names, errors.Join(errs...)
}

// Attach describes the existing lab with c's prefix, for a process other
// than the one that ran Up (`sluice lab down`, `sluice lab status`). The
// numbers of LB nodes and backends are taken from the namespaces that
// exist when c leaves them zero. VIPs are c's (or the defaults): they are
// not read back from the router. It returns ErrNotFound when no namespace
// of the lab exists, and an error naming what is missing for a partial lab
// (Remove still cleans that up).
func Attach(c Config) (*Lab, error) {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if err := checkPrefix(c.Prefix); err != nil {
		return nil, err
	}
	names, err := listNS(c.Prefix)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: no namespace %s*", ErrNotFound, c.Prefix)
	}
	count := func(short string) int {
		n := 0
		for slices.Contains(names, fmt.Sprintf("%s%s%d", c.Prefix, short, n+1)) {
			n++
		}
		return n
	}
	if c.LBs == 0 {
		c.LBs = count("lb")
	}
	if c.Backends == 0 {
		c.Backends = count("be")
	}
	if c.LBs == 0 || c.Backends == 0 {
		return nil, fmt.Errorf("lab %s: incomplete (namespaces %s): run down, then up", c.Prefix, strings.Join(names, " "))
	}
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	l := layout(c)
	for _, n := range l.Nodes() {
		if !slices.Contains(names, n.Name) {
			return nil, fmt.Errorf("lab %s: incomplete: namespace %s is missing: run down, then up", c.Prefix, n.Name)
		}
		err := n.Do(func() error {
			for i := range n.Ifaces {
				link, err := netlink.LinkByName(n.Ifaces[i].Name)
				if err != nil {
					return fmt.Errorf("interface %s: %w", n.Ifaces[i].Name, err)
				}
				n.Ifaces[i].MAC = link.Attrs().HardwareAddr
				if n.Ifaces[i].Name == n.Ifname {
					n.MAC = link.Attrs().HardwareAddr
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("lab %s: incomplete: %s: %w: run down, then up", c.Prefix, n.Name, err)
		}
	}
	return l, nil
}

// builder holds the state of one Up.
type builder struct {
	ctx     context.Context
	l       *Lab
	handles map[*Node]*netlink.Handle
	fds     map[*Node]netns.NsHandle
}

func (b *builder) step(name string) error {
	if err := b.ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if testHookStep != nil {
		if err := testHookStep(name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func build(ctx context.Context, l *Lab) error {
	b := &builder{ctx: ctx, l: l, handles: map[*Node]*netlink.Handle{}, fds: map[*Node]netns.NsHandle{}}
	defer func() {
		for _, h := range b.handles {
			h.Close()
		}
		for _, fd := range b.fds {
			fd.Close()
		}
	}()
	// Namespaces first, with the sysctls that must precede the interfaces
	// (new interfaces copy the namespace's "default" settings).
	for _, n := range l.Nodes() {
		if err := b.step("namespace " + n.Name); err != nil {
			return err
		}
		if err := b.namespace(n); err != nil {
			return err
		}
	}
	if err := b.step("router interfaces"); err != nil {
		return err
	}
	if err := b.router(); err != nil {
		return err
	}
	for _, n := range append(append([]*Node{l.Client}, l.LBs...), l.Backends...) {
		if err := b.step("link " + n.Name); err != nil {
			return err
		}
		if err := b.leaf(n); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	if err := b.step("vip routes"); err != nil {
		return err
	}
	if l.Cfg.VIPRouting == RouteOnLink {
		return l.routeVIPsOnLink(b.handles[l.Router])
	}
	return l.routeVIPs(b.handles[l.Router], l.initialVIPHops())
}

// routeVIPsOnLink routes every VIP prefix on-link on the router's service
// bridge (L2 mode: the router asks the segment who has each VIP).
func (l *Lab) routeVIPsOnLink(h *netlink.Handle) error {
	br, err := h.LinkByName(routerSvcIf)
	if err != nil {
		return fmt.Errorf("lab: %s: %w", routerSvcIf, err)
	}
	for _, v := range append(slices.Clone(l.Cfg.VIPs4), l.Cfg.VIPs6...) {
		dst := &net.IPNet{IP: v.Addr().AsSlice(), Mask: net.CIDRMask(v.Bits(), v.Addr().BitLen())}
		rt := &netlink.Route{Dst: dst, LinkIndex: br.Attrs().Index, Scope: netlink.SCOPE_LINK}
		if err := h.RouteReplace(rt); err != nil {
			return fmt.Errorf("lab: route %v on-link on %s: %w", v, routerSvcIf, err)
		}
	}
	return nil
}

// namespace creates n's namespace, sets its sysctls and brings lo up.
func (b *builder) namespace(n *Node) error {
	if err := createNS(n.Name); err != nil {
		return err
	}
	fd, err := netns.GetFromPath(filepath.Join(netnsDir, n.Name))
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	b.fds[n] = fd
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return fmt.Errorf("%s: netlink: %w", n.Name, err)
	}
	b.handles[n] = h
	sysctls := [][2]string{
		// Addresses are usable at once: no duplicate address detection
		// (without it the link-local address stays tentative for a second
		// or two and neighbour solicitation cannot start).
		{"net.ipv6.conf.all.accept_dad", "0"},
		{"net.ipv6.conf.default.accept_dad", "0"},
		{"net.ipv6.conf.all.accept_ra", "0"},
		{"net.ipv6.conf.default.accept_ra", "0"},
	}
	switch n.Role {
	case RoleRouter:
		sysctls = append(sysctls,
			[2]string{"net.ipv4.ip_forward", "1"},
			[2]string{"net.ipv6.conf.all.forwarding", "1"},
			[2]string{"net.ipv4.fib_multipath_hash_policy", "1"},
			[2]string{"net.ipv6.fib_multipath_hash_policy", "1"},
			// An LB may send encapsulated packets to the router for a
			// backend on the same segment; no redirects for that.
			[2]string{"net.ipv4.conf.all.send_redirects", "0"},
			[2]string{"net.ipv4.conf.default.send_redirects", "0"},
		)
	case RoleBackend:
		// Direct server return: the VIPs the agent puts on lo must not be
		// answered for, or used as source, in ARP on eth0.
		sysctls = append(sysctls,
			[2]string{"net.ipv4.conf.all.arp_ignore", "1"},
			[2]string{"net.ipv4.conf.all.arp_announce", "2"},
		)
	}
	err = n.Do(func() error {
		for _, s := range sysctls {
			if err := sysctl(s[0], s[1]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("%s: lo up: %w", n.Name, err)
	}
	return nil
}

// router makes the service bridge and the veth to the client, with their
// addresses, in the router namespace.
func (b *builder) router() error {
	r := b.l.Router
	h := b.handles[r]
	snoop := false
	svc := r.Iface(routerSvcIf)
	br := &netlink.Bridge{
		LinkAttrs: netlink.LinkAttrs{Name: svc.Name, HardwareAddr: svc.MAC},
		// Without a querier the bridge floods multicast anyway; off makes
		// that independent of MLD reports (IPv6 neighbour discovery).
		MulticastSnooping: &snoop,
	}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("%s: bridge %s: %w", r.Name, svc.Name, err)
	}
	if err := b.addrsUp(r, svc); err != nil {
		return err
	}
	ci := r.Iface(routerClientIf)
	if err := b.veth(r, ci, b.l.Client, 0); err != nil {
		return err
	}
	return b.addrsUp(r, ci)
}

// leaf connects n to the router: the client with its own veth, LB nodes
// and backends with a veth whose router end is a port of the bridge.
func (b *builder) leaf(n *Node) error {
	r := b.l.Router
	if n.Role != RoleClient {
		port := r.Iface(strings.TrimPrefix(n.Name, b.l.Cfg.Prefix))
		br, err := b.handles[r].LinkByName(routerSvcIf)
		if err != nil {
			return err
		}
		if err := b.veth(r, port, n, br.Attrs().Index); err != nil {
			return err
		}
		if err := b.addrsUp(r, port); err != nil {
			return err
		}
	}
	if err := b.addrsUp(n, n.Iface(n.Ifname)); err != nil {
		return err
	}
	h := b.handles[n]
	for _, gw := range []netip.Addr{n.Gateway4, n.Gateway6} {
		if err := h.RouteAdd(&netlink.Route{Gw: gw.AsSlice()}); err != nil {
			return fmt.Errorf("default route via %v: %w", gw, err)
		}
	}
	return nil
}

// veth creates a veth pair from the router interface ri to n's main
// interface, one RX and one TX queue on each end (Config.LBQueues for an
// LB node), MACs from the plan.
func (b *builder) veth(r *Node, ri *Iface, n *Node, master int) error {
	q := 1
	if n.Role == RoleLB && b.l.Cfg.LBQueues > 1 {
		q = b.l.Cfg.LBQueues
	}
	v := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name: ri.Name, HardwareAddr: ri.MAC, MasterIndex: master,
			NumTxQueues: q, NumRxQueues: q,
		},
		PeerName:         n.Ifname,
		PeerHardwareAddr: n.MAC,
		PeerNamespace:    netlink.NsFd(b.fds[n]),
		PeerNumTxQueues:  uint32(q),
		PeerNumRxQueues:  uint32(q),
	}
	if err := b.handles[r].LinkAdd(v); err != nil {
		return fmt.Errorf("veth %s/%s - %s/%s: %w", r.Name, ri.Name, n.Name, n.Ifname, err)
	}
	return nil
}

// addrsUp turns offloads off on a veth end, adds ifc's addresses and sets
// it up, in n's namespace.
func (b *builder) addrsUp(n *Node, ifc *Iface) error {
	h := b.handles[n]
	link, err := h.LinkByName(ifc.Name)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", n.Name, ifc.Name, err)
	}
	if link.Type() == "veth" {
		if err := n.Do(func() error { return offloadsOff(ifc.Name) }); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	for _, p := range ifc.Addrs {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, a); err != nil {
			return fmt.Errorf("%s: %s: address %v: %w", n.Name, ifc.Name, p, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("%s: %s up: %w", n.Name, ifc.Name, err)
	}
	return nil
}

// initialVIPHops returns the LB nodes the router's VIP routes point at
// according to Cfg.VIPRouting.
func (l *Lab) initialVIPHops() []*Node {
	switch l.Cfg.VIPRouting {
	case RouteFirstLB:
		return l.LBs[:1]
	case RouteNone, RouteOnLink:
		return nil
	}
	return l.LBs
}

// RouteVIPs replaces the router's static routes for every VIP prefix with
// one toward lbs (a multipath route when there are several); with no lbs
// it deletes them. E2E tests use it to move traffic between LB nodes
// without BGP.
func (l *Lab) RouteVIPs(lbs ...*Node) error {
	var h *netlink.Handle
	err := l.Router.Do(func() error {
		var err error
		h, err = netlink.NewHandle()
		return err
	})
	if err != nil {
		return fmt.Errorf("lab: %s: netlink: %w", l.Router.Name, err)
	}
	defer h.Close()
	return l.routeVIPs(h, lbs)
}

func (l *Lab) routeVIPs(h *netlink.Handle, lbs []*Node) error {
	for _, v := range append(slices.Clone(l.Cfg.VIPs4), l.Cfg.VIPs6...) {
		dst := &net.IPNet{IP: v.Addr().AsSlice(), Mask: net.CIDRMask(v.Bits(), v.Addr().BitLen())}
		gw := func(n *Node) net.IP {
			if v.Addr().Is4() {
				return n.Addr4.AsSlice()
			}
			return n.Addr6.AsSlice()
		}
		rt := &netlink.Route{Dst: dst}
		switch len(lbs) {
		case 0:
			if err := h.RouteDel(rt); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("lab: delete route %v: %w", v, err)
			}
			continue
		case 1:
			rt.Gw = gw(lbs[0])
		default:
			for _, n := range lbs {
				rt.MultiPath = append(rt.MultiPath, &netlink.NexthopInfo{Gw: gw(n)})
			}
		}
		if v.Addr().Is6() {
			// IPv6 keeps multipath routes as sibling routes, and replace
			// does not always swap the whole set: delete first.
			for range 2 * MaxLBs {
				if h.RouteDel(&netlink.Route{Dst: dst}) != nil {
					break
				}
			}
		}
		if err := h.RouteReplace(rt); err != nil {
			return fmt.Errorf("lab: route %v via %v: %w", v, lbs, err)
		}
	}
	return nil
}
