package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/fastpath"
	"github.com/sluicelb/sluice/internal/flow"
)

// ErrClosed is returned by Run when the agent is (or gets) closed.
var ErrClosed = errors.New("agent: closed")

// Agent receives GUE datagrams, validates them and injects the inner
// packets into the host through a TUN device, or forwards those with a hop
// list that another host owns to the next hop. See the package
// documentation for the contract.
type Agent struct {
	// Immutable after New.
	cfg   Config
	log   *slog.Logger
	vips  vipSet
	trust sourceFilter // who may send what (trust.go)
	udp   *net.UDPConn
	rd    *batchReader // owned by the Run goroutine
	tun   *os.File     // written by the Run goroutine only; closed by Close
	nl    *netlink.Handle
	// undo holds New's reversible steps, run backwards by Close.
	undo []undoStep

	stats counters // written by Run once per batch, read by anyone
	// rejects logs the rejected sources; owned by the Run goroutine.
	rejects rejectLog
	// probes answers VIP probes (probe.go); nil when the Agent was not made
	// by New, and then control messages are dropped as GUEControl.
	probes *prober
	// sc decides and forwards packets with a hop list (secondchance.go);
	// owned by the Run goroutine. nil when the Agent was not made by New,
	// and then every such packet is delivered locally.
	sc *secondChance
	// fp is the client host's side of fastpath (fastpath.go); nil without
	// Config.Fastpath. Run only hands it messages (enqueue).
	fp *fastpathAgent
	// capture is the running capture (capture.go; nil: none); capFlow and
	// capKey are the Run goroutine's scratch space for it, clock its
	// records' time.
	capture atomic.Pointer[capture]
	capFlow flowInfo
	capKey  flow.Key
	clock   *flow.Clock

	mu      sync.Mutex // guards the fields below
	closed  bool
	running bool
	ran     sync.WaitGroup // one count while Run executes
}

type undoStep struct {
	what string
	fn   func() error
}

// New sets the host up for the agent and opens its socket; see the package
// documentation for every step and the capabilities they need. It runs in
// the caller's network namespace (that of the calling OS thread); the
// objects it creates stay bound to that namespace, so Run and Close may run
// on any thread. On error everything New did is undone.
func New(c Config) (*Agent, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: c, log: slog.New(slog.NewTextHandler(io.Discard, nil)), vips: newVIPSet(c.VIPs), clock: flow.NewClock(),
		trust: newSourceFilter(&c)}
	if c.Logger != nil {
		a.log = c.Logger
	}
	a.rejects.log = a.log
	if err := a.setup(); err != nil {
		if uerr := a.teardown(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("agent: undoing setup: %w", uerr))
		}
		return nil, err
	}
	return a, nil
}

func (a *Agent) setup() error {
	c := &a.cfg
	var err error
	if a.nl, err = netlink.NewHandle(); err != nil {
		return fmt.Errorf("agent: netlink: %w", err)
	}
	lo, err := a.nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("agent: find lo: %w", err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		return errors.New("agent: lo is down: the VIPs on it would not be local")
	}

	if len(c.VIPs) > 0 {
		if err := a.setupHost(lo); err != nil {
			return err
		}
	}

	// The GUE socket.
	laddr := net.UDPAddrFromAddrPort(c.Listen)
	if a.udp, err = net.ListenUDP("udp", laddr); err != nil {
		return fmt.Errorf("agent: listen on UDP %s: %w", c.Listen, err)
	}
	a.push("close UDP socket", func() error {
		if err := a.udp.Close(); !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})
	if err := a.udp.SetReadBuffer(socketBuffer); err != nil {
		a.log.Warn("could not raise the UDP receive buffer", "bytes", socketBuffer, "err", err)
	}
	if a.rd, err = newBatchReader(a.udp, c.Batch); err != nil {
		return fmt.Errorf("agent: UDP socket %s: %w", c.Listen, err)
	}
	if err := a.setupSecondChance(); err != nil {
		return err
	}
	if err := a.startProber(); err != nil {
		return err
	}
	if c.Fastpath != nil {
		if err := a.startFastpath(); err != nil {
			return err
		}
	}
	switch {
	case c.AcceptAnySource:
		a.log.Warn("accepting GUE and VIP probes from any source (AcceptAnySource): for labs only; " +
			"whoever reaches the GUE port can inject packets with any source address into the VIPs' services")
	case len(c.HopPrefixes) == 0:
		a.log.Info("no hop prefixes: packets forwarded by other agents (second chance) are dropped as rejected_source")
	}
	tun := c.TUN
	if a.tun == nil {
		tun = "" // a fastpath client only
	}
	a.log.Info("agent ready", "listen", a.LocalAddr(), "tun", tun, "vips", c.VIPs, "batch", c.Batch,
		"lb_prefixes", c.LBPrefixes, "accept_any_source", c.AcceptAnySource,
		"udp_policy", c.UDPPolicy, "hop_port", a.sc.port, "hop_prefixes", c.HopPrefixes,
		"flow_table", c.FlowTable, "flow_idle", c.FlowIdle, "fastpath_clients", c.FastpathClients,
		"fastpath", c.Fastpath != nil)
	return nil
}

// setupHost creates the TUN device, sets the sysctls, and adds the VIPs to
// lo: what a backend needs and a fastpath client without VIPs does not.
func (a *Agent) setupHost(lo netlink.Link) error {
	c := &a.cfg
	var err error
	// The TUN device. Closing its only file descriptor deletes it.
	if _, err := a.nl.LinkByName(c.TUN); err == nil {
		return fmt.Errorf("agent: create TUN %q: a device of that name exists", c.TUN)
	}
	if a.tun, err = openTUN(c.TUN); err != nil {
		return err
	}
	a.push("delete TUN "+c.TUN, a.tun.Close)
	link, err := a.nl.LinkByName(c.TUN)
	if err != nil {
		return fmt.Errorf("agent: find TUN %q: %w", c.TUN, err)
	}

	// Sysctls, before the device is up and before any VIP exists.
	if err := a.sysctls(); err != nil {
		return err
	}
	if err := a.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("agent: set TUN %q up: %w", c.TUN, err)
	}

	// VIPs on lo. An address that is already there stays there at Close.
	for i, v := range c.VIPs {
		bits := v.BitLen()
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: v.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
		if v.Is6() {
			addr.Flags = unix.IFA_F_NODAD // usable at once (lo does no DAD anyway)
		}
		switch err := a.nl.AddrAdd(lo, addr); {
		case errors.Is(err, os.ErrExist):
			a.log.Info("VIP already on lo; left in place at exit", "vip", v)
		case err != nil:
			return fmt.Errorf("agent: add VIPs[%d] %s/%d to lo: %w", i, v, bits, err)
		default:
			a.log.Info("VIP added to lo", "vip", v)
			a.push(fmt.Sprintf("remove VIP %s/%d from lo", v, bits), func() error {
				err := a.nl.AddrDel(lo, addr)
				if errors.Is(err, os.ErrNotExist) || errors.Is(err, errAddrNotAvail) {
					return nil // someone removed it already
				}
				return err
			})
		}
	}

	return nil
}

// socketBuffer is the UDP receive buffer New asks for (capped by
// net.core.rmem_max).
const socketBuffer = 4 << 20

func (a *Agent) push(what string, fn func() error) {
	a.undo = append(a.undo, undoStep{what, fn})
}

// teardown runs the undo steps backwards and closes the netlink handle.
func (a *Agent) teardown() error {
	var errs []error
	for i := len(a.undo) - 1; i >= 0; i-- {
		s := a.undo[i]
		if err := s.fn(); err != nil {
			errs = append(errs, fmt.Errorf("agent: %s: %w", s.what, err))
		}
	}
	a.undo = nil
	if a.nl != nil {
		a.nl.Close()
	}
	return errors.Join(errs...)
}

// LocalAddr returns the address the GUE socket is bound to (with the port
// the kernel picked if Config.Listen had port 0).
func (a *Agent) LocalAddr() netip.AddrPort {
	ap := a.udp.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Counters returns a snapshot of the counters. Safe for concurrent use; the
// counts of the batch being processed appear once it is done.
func (a *Agent) Counters() Counters { return a.stats.load() }

// Run receives and delivers GUE datagrams until ctx is done (it then returns
// nil) or the agent is closed (ErrClosed). It returns any other socket error.
// Only one Run may execute at a time.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	switch {
	case a.closed:
		a.mu.Unlock()
		return ErrClosed
	case a.running:
		a.mu.Unlock()
		return errors.New("agent: Run is already running")
	}
	a.running = true
	a.ran.Add(1)
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.running = false
		a.mu.Unlock()
		a.ran.Done()
	}()

	if err := a.udp.SetReadDeadline(time.Time{}); err != nil {
		return a.runErr(ctx, err)
	}
	stop := context.AfterFunc(ctx, func() { a.udp.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	var (
		b Counters // this batch's counts
		h encap.GUEHeader
	)
	for {
		n, err := a.rd.read()
		if err != nil {
			return a.runErr(ctx, err)
		}
		if a.sc != nil {
			a.sc.tick()
		}
		for i := 0; i < n; i++ {
			d, src := a.rd.datagram(i), a.rd.source(i)
			if a.handle(d, src, a.rd.truncated(i), &h, &b) {
				a.control(d, src, &b)
			}
		}
		a.stats.flush(&b)
		a.rejects.flush()
	}
}

func (a *Agent) runErr(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return nil
	case errors.Is(err, net.ErrClosed):
		return ErrClosed
	}
	return fmt.Errorf("agent: receive on %s: %w", a.cfg.Listen, err)
}

// handle processes one datagram from src and counts the outcome in b. It
// returns true, without counting a drop, for a GUE control message when the
// agent answers VIP probes or takes fastpath messages: the caller passes it
// to control. A datagram its source may not send is dropped first, before
// anything parses it.
func (a *Agent) handle(d []byte, src netip.AddrPort, truncated bool, h *encap.GUEHeader, b *Counters) (control bool) {
	b.Received++
	b.ReceivedBytes += uint64(len(d))
	allowed, asClient := a.trust.verdict(src.Addr(), d)
	if !allowed {
		b.Drops[RejectedSource]++
		a.rejects.note(src)
		if a.fp != nil && fastpath.IsFastpath(d) {
			b.Fastpath.Untrusted++ // also a fastpath counter, for the client role's dashboards
		}
		return false
	}
	if truncated {
		b.Drops[Oversize]++
		return false
	}
	inner, r, ok := a.vips.inspect(d, h)
	if !ok {
		if r == GUEControl && (a.probes != nil || a.fp != nil) {
			return true
		}
		b.Drops[r]++
		return false
	}
	if asClient && !clientData(src.Addr(), inner, h) {
		b.Drops[ClientSpoofed]++
		return false
	}
	if h.HasHops && a.sc != nil {
		fwd := b.SecondHop.Forwarded
		if !a.sc.route(d, inner, h, b) {
			if b.SecondHop.Forwarded != fwd {
				a.captureInner(inner, true)
			}
			return false // forwarded or dropped
		}
	}
	if _, err := a.tun.Write(inner); err != nil {
		b.Drops[TUNWriteError]++
		return false
	}
	a.captureInner(inner, false)
	b.Delivered++
	b.DeliveredBytes += uint64(len(inner))
	if h.HasHops {
		b.HopListLocal++
	}
	return false
}

// control dispatches the GUE control message d from src, on the Run
// goroutine: a fastpath message to the fastpath goroutine (when the agent
// has Config.Fastpath), anything else to the VIP probes, and without those
// it is dropped as GUEControl.
func (a *Agent) control(d []byte, src netip.AddrPort, b *Counters) {
	switch {
	case a.fp != nil && fastpath.IsFastpath(d):
		a.fp.enqueue(d, src, b)
	case a.probes != nil:
		a.probes.receive(d, src, &a.vips, b)
	default:
		b.Drops[GUEControl]++
	}
}

// setupSecondChance opens the sock_diag socket the ownership checks use (in
// the calling thread's namespace) and builds the decider.
func (a *Agent) setupSecondChance() error {
	diag, err := openSockDiag()
	if err != nil {
		return err
	}
	a.push("close the ownership sock_diag socket", diag.close)
	// One query for a flow nobody has: the kernel must answer "none". If
	// it cannot, every ownership check will fail (counted); say so now.
	probe := flowKey{proto: unix.IPPROTO_TCP, client: netip.IPv4Unspecified().As16(), vip: netip.IPv4Unspecified().As16()}
	if _, err := diag.state(&probe); err != nil {
		a.log.Warn("sock_diag lookups fail: packets with a hop list will be forwarded unless recorded", "err", err)
	}
	send := func(b []byte, to netip.AddrPort) error {
		_, err := a.udp.WriteToUDPAddrPort(b, to)
		return err
	}
	list := func() ([]netip.Addr, error) {
		addrs, err := a.nl.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return nil, err
		}
		out := make([]netip.Addr, 0, len(addrs))
		for _, x := range addrs {
			if ip, ok := netip.AddrFromSlice(x.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
		return out, nil
	}
	a.sc = newSecondChance(&a.cfg, a.LocalAddr().Port(), diag, send, list)
	return nil
}

// Close stops Run, waits for it to return, deletes the TUN device, removes
// the VIPs New added to lo and restores the sysctls New changed. It may be
// called from any goroutine and thread; calls after the first return nil.
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	a.udp.Close() // unblocks Run; the undo step below then reports nothing
	a.ran.Wait()
	err := a.teardown()
	if err == nil {
		a.log.Info("agent closed", "tun", a.cfg.TUN)
	}
	return err
}
