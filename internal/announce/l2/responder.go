package l2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Responder answers ARP requests and IPv6 neighbour solicitations for the
// VIPs it owns, on one interface, from two packet sockets (ARP frames, and
// ICMPv6 neighbour solicitations selected by a socket filter). The VIPs
// are not configured on the node, so its kernel ignores these requests;
// the kernel still gets every frame (a packet socket is a tap), and sees
// nothing the responder sends.
type Responder struct {
	ifname  string
	ifindex int
	mac     net.HardwareAddr
	src6    netip.Addr // source of advertisements: the link-local address, or the VIP

	arpFD, ndFD, mcFD int
	owned             atomic.Pointer[map[netip.Addr]bool]
	until             atomic.Int64                        // owned holds until this time (Unix nanoseconds); 0: no limit
	known             atomic.Pointer[map[netip.Addr]bool] // every VIP announced in L2 mode, owned or not

	mu     sync.Mutex // guards joined
	joined map[netip.Addr]bool

	closeOnce sync.Once
	counters  Counters
}

// Counters are the responder's counts.
type Counters struct {
	ARPRequests, ARPAnswered       atomic.Uint64 // requests for any address seen; answered (owned VIP)
	NSRequests, NSAnswered         atomic.Uint64
	GratuitousARP, UnsolicitedNA   atomic.Uint64 // announcements sent
	SendErrors                     atomic.Uint64
	IgnoredNotOwner, IgnoredOthers atomic.Uint64 // requests for a VIP this node does not own; gratuitous requests of others for an owned VIP
}

// CounterValues is a snapshot of Counters.
type CounterValues struct {
	ARPRequests, ARPAnswered, NSRequests, NSAnswered uint64
	GratuitousARP, UnsolicitedNA, SendErrors         uint64
	IgnoredNotOwner, Conflicts                       uint64
}

// Open opens the responder's sockets on ifname.
func Open(ifname string) (*Responder, error) {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("l2: interface %s: %w", ifname, err)
	}
	if len(ifc.HardwareAddr) != 6 {
		return nil, fmt.Errorf("l2: interface %s has no Ethernet address", ifname)
	}
	r := &Responder{ifname: ifname, ifindex: ifc.Index, mac: ifc.HardwareAddr, arpFD: -1, ndFD: -1, mcFD: -1, joined: map[netip.Addr]bool{}}
	if addrs, err := ifc.Addrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() {
				r.src6 = p.Addr()
				break
			}
		}
	}
	empty := map[netip.Addr]bool{}
	r.owned.Store(&empty)
	if r.arpFD, err = r.packetSocket(unix.ETH_P_ARP, nil); err != nil {
		r.Close()
		return nil, err
	}
	// ICMPv6 (next header 58 at 20) neighbour solicitations (type 135 at
	// 54): the socket sees nothing else of the node's IPv6 traffic.
	nsFilter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 20},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 3, K: icmp6},
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 54},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: typeNS},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffff},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
	if r.ndFD, err = r.packetSocket(unix.ETH_P_IPV6, nsFilter); err != nil {
		r.Close()
		return nil, err
	}
	// Joining the VIPs' solicited-node groups on a UDP socket makes the
	// kernel accept their multicast MAC and send MLD reports, so switches
	// that snoop MLD forward the solicitations here.
	if r.mcFD, err = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
		r.mcFD = -1 // IPv6 off on the node: no IPv6 VIPs can be announced
	}
	return r, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (r *Responder) packetSocket(proto uint16, filter []unix.SockFilter) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(proto)))
	if err != nil {
		return -1, fmt.Errorf("l2: packet socket: %w", err)
	}
	if filter != nil {
		prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("l2: socket filter: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: r.ifindex}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("l2: bind to %s: %w", r.ifname, err)
	}
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// MAC returns the interface's Ethernet address, the one the responder
// announces.
func (r *Responder) MAC() net.HardwareAddr { return r.mac }

// Interface returns the interface name.
func (r *Responder) Interface() string { return r.ifname }

// SetOwned replaces the set of VIPs the responder answers for, with no
// time limit; it takes effect for the next request (a VIP removed is not
// answered any more).
func (r *Responder) SetOwned(vips []netip.Addr) {
	m := make(map[netip.Addr]bool, len(vips))
	for _, v := range vips {
		m[v.Unmap()] = true
	}
	r.owned.Store(&m)
	r.until.Store(0)
}

// SetOwnedUntil is SetOwned for a limited time: after until the responder
// answers for nothing until the next call. The announcer renews it on
// every decision, so a node whose decisions stop (a paused process, a
// frozen VM that resumes) does not answer on the strength of an old one.
func (r *Responder) SetOwnedUntil(vips []netip.Addr, until time.Time) {
	r.SetOwned(vips)
	r.until.Store(until.UnixNano())
}

// Owns reports whether the responder answers for vip now.
func (r *Responder) Owns(vip netip.Addr) bool {
	if u := r.until.Load(); u != 0 && time.Now().UnixNano() > u {
		return false
	}
	return (*r.owned.Load())[vip.Unmap()]
}

// Join makes the interface listen to the solicited-node groups of the
// IPv6 addresses in vips (once each; joins are kept until Close).
func (r *Responder) Join(vips []netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, v := range vips {
		if !v.Is6() || v.Is4In6() {
			continue
		}
		g := SolicitedNode(v)
		if r.joined[g] || r.mcFD < 0 {
			continue
		}
		mr := &unix.IPv6Mreq{Multiaddr: g.As16(), Interface: uint32(r.ifindex)}
		if err := unix.SetsockoptIPv6Mreq(r.mcFD, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, mr); err != nil {
			errs = append(errs, fmt.Errorf("l2: join %v on %s: %w", g, r.ifname, err))
			continue
		}
		r.joined[g] = true
	}
	return errors.Join(errs...)
}

// Announce sends one gratuitous ARP (IPv4 vip) or unsolicited neighbour
// advertisement (IPv6 vip) saying vip is at this interface's MAC.
func (r *Responder) Announce(vip netip.Addr) error {
	vip = vip.Unmap()
	if vip.Is4() {
		if err := r.send(r.arpFD, unix.ETH_P_ARP, GratuitousARP(r.mac, vip)); err != nil {
			return err
		}
		r.counters.GratuitousARP.Add(1)
		return nil
	}
	if err := r.send(r.ndFD, unix.ETH_P_IPV6, UnsolicitedNA(r.mac, r.source6(vip), vip)); err != nil {
		return err
	}
	r.counters.UnsolicitedNA.Add(1)
	return nil
}

func (r *Responder) source6(vip netip.Addr) netip.Addr {
	if r.src6.IsValid() {
		return r.src6
	}
	return vip
}

func (r *Responder) send(fd int, proto uint16, f []byte) error {
	err := unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: r.ifindex, Halen: 6,
		Addr: [8]byte{f[0], f[1], f[2], f[3], f[4], f[5]}})
	if err != nil {
		r.counters.SendErrors.Add(1)
		return fmt.Errorf("l2: send on %s: %w", r.ifname, err)
	}
	return nil
}

// Run answers requests until ctx is done or the responder is closed.
func (r *Responder) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- r.loop(ctx, r.arpFD, r.onARP) }()
	go func() { errc <- r.loop(ctx, r.ndFD, r.onNS) }()
	return errors.Join(<-errc, <-errc)
}

func (r *Responder) loop(ctx context.Context, fd int, on func([]byte)) error {
	buf := make([]byte, 2048)
	for ctx.Err() == nil {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EBADF):
			return nil // closed
		case err != nil:
			return fmt.Errorf("l2: receive on %s: %w", r.ifname, err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue // our own, or the kernel's
		}
		on(buf[:n])
	}
	return nil
}

func (r *Responder) onARP(f []byte) {
	req, ok := ParseARPRequest(f)
	if !ok {
		return
	}
	r.counters.ARPRequests.Add(1)
	if !r.Owns(req.TargetIP) {
		if r.isVIPRequest(req.TargetIP) {
			r.counters.IgnoredNotOwner.Add(1)
		}
		return
	}
	if req.SenderIP == req.TargetIP {
		// Another node announcing an owned VIP (a conflict: counted,
		// never answered, so announcements do not ping-pong).
		r.counters.IgnoredOthers.Add(1)
		return
	}
	if r.send(r.arpFD, unix.ETH_P_ARP, ARPReply(r.mac, req.TargetIP, req.SenderMAC, req.SenderIP)) == nil {
		r.counters.ARPAnswered.Add(1)
	}
}

func (r *Responder) onNS(f []byte) {
	ns, ok := ParseNS(f)
	if !ok {
		return
	}
	r.counters.NSRequests.Add(1)
	if !r.Owns(ns.Target) {
		if r.isVIPRequest(ns.Target) {
			r.counters.IgnoredNotOwner.Add(1)
		}
		return
	}
	if r.send(r.ndFD, unix.ETH_P_IPV6, SolicitedNA(r.mac, r.source6(ns.Target), ns)) == nil {
		r.counters.NSAnswered.Add(1)
	}
}

func (r *Responder) isVIPRequest(a netip.Addr) bool {
	m := r.known.Load()
	return m != nil && (*m)[a.Unmap()]
}

// SetKnown sets the VIPs this node announces in L2 mode (owned or not),
// so that requests for them that it does not answer are counted.
func (r *Responder) SetKnown(vips []netip.Addr) {
	m := make(map[netip.Addr]bool, len(vips))
	for _, v := range vips {
		m[v.Unmap()] = true
	}
	r.known.Store(&m)
}

// Counters returns the responder's counts.
func (r *Responder) Counters() CounterValues {
	c := &r.counters
	return CounterValues{ARPRequests: c.ARPRequests.Load(), ARPAnswered: c.ARPAnswered.Load(),
		NSRequests: c.NSRequests.Load(), NSAnswered: c.NSAnswered.Load(),
		GratuitousARP: c.GratuitousARP.Load(), UnsolicitedNA: c.UnsolicitedNA.Load(), SendErrors: c.SendErrors.Load(),
		IgnoredNotOwner: c.IgnoredNotOwner.Load(), Conflicts: c.IgnoredOthers.Load()}
}

// Close stops answering and closes the sockets (leaving the groups).
func (r *Responder) Close() error {
	r.SetOwned(nil)
	r.closeOnce.Do(func() {
		for _, fd := range []*int{&r.arpFD, &r.ndFD, &r.mcFD} {
			if *fd >= 0 {
				unix.Close(*fd)
			}
		}
	})
	return nil
}
