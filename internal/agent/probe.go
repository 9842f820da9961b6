package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/health/vipprobe"
)

// VIP probe limits (see the package documentation, "VIP probes").
const (
	// ProbeCacheTTL is how long the result of a local check answers later
	// probes for the same VIP, protocol and port.
	ProbeCacheTTL = 250 * time.Millisecond
	// ProbeConnectTimeout bounds the local TCP connect of a check.
	ProbeConnectTimeout = 200 * time.Millisecond
	// ProbeWorkers is the number of goroutines (each on its own OS thread in
	// the agent's network namespace) that run local checks: at most this
	// many checks are in progress at once.
	ProbeWorkers = 4
	// ProbeQueue is the number of requests waiting for a worker; a request
	// that finds the queue full is answered "overloaded".
	ProbeQueue = 256
	// ProbeMaxKeys bounds the distinct (VIP, protocol, port) results kept
	// and so the checks started per ProbeCacheTTL; a request for a new key
	// beyond it, once the expired results are swept, is answered
	// "overloaded".
	ProbeMaxKeys = 1024
	// probeMaxWaiters bounds the requests waiting for one check in flight.
	probeMaxWaiters = 64
)

// ProbeCounters counts the VIP probes an agent received and answered.
type ProbeCounters struct {
	// Requests are well-formed probe requests received.
	Requests uint64
	// Malformed are GUE control messages of type vipprobe.CType that are not
	// a valid request (or carry no source address); dropped, not answered.
	Malformed uint64
	// Up, Down, NotConfigured and Overloaded count the replies sent, by
	// status.
	Up, Down, NotConfigured, Overloaded uint64
	// Checks are the local checks made (TCP connects, UDP socket lookups).
	// Requests answered from the cache, or by a check already in progress,
	// make none.
	Checks uint64
	// ReplyErrors are replies the socket did not take.
	ReplyErrors uint64
}

// Indices of the probe counters in counters.probes and fields().
const (
	probeRequests = iota
	probeMalformed
	probeUp
	probeDown
	probeNotConfigured
	probeOverloaded
	probeChecks
	probeReplyErrors
	numProbeCounters
)

var probeNames = [numProbeCounters]string{
	"probe_requests", "probe_malformed", "probe_up", "probe_down", "probe_not_configured",
	"probe_overloaded", "probe_checks", "probe_reply_errors",
}

func (c *ProbeCounters) fields() [numProbeCounters]*uint64 {
	return [...]*uint64{&c.Requests, &c.Malformed, &c.Up, &c.Down, &c.NotConfigured,
		&c.Overloaded, &c.Checks, &c.ReplyErrors}
}

// Each calls f with each probe counter's name and value in a fixed order:
// probe_requests, probe_malformed, probe_up, probe_down,
// probe_not_configured, probe_overloaded, probe_checks, probe_reply_errors.
func (c *ProbeCounters) Each(f func(name string, v uint64)) {
	for i, p := range c.fields() {
		f(probeNames[i], *p)
	}
}

// statusCounter is the reply counter of st.
func statusCounter(st vipprobe.Status) int {
	switch st {
	case vipprobe.StatusUp:
		return probeUp
	case vipprobe.StatusDown:
		return probeDown
	case vipprobe.StatusNotConfigured:
		return probeNotConfigured
	}
	return probeOverloaded
}

// has reports whether a is a configured VIP.
func (s *vipSet) has(a netip.Addr) bool {
	if a.Is4() {
		_, ok := s.v4[a.As4()]
		return ok
	}
	_, ok := s.v6[a.As16()]
	return ok
}

// probeKey names what a local check checks.
type probeKey struct {
	vip   netip.AddrPort
	proto uint8 // vipprobe.ProtoTCP or ProtoUDP
}

// probeJob is a request waiting for a worker.
type probeJob struct {
	m  vipprobe.Message
	to netip.AddrPort // the request's source
}

// probeEntry is the last result for one key, or the check in progress.
type probeEntry struct {
	status  vipprobe.Status
	at      time.Time // when the check finished
	busy    bool      // a worker is checking now; waiters get its result
	waiters []probeJob
}

// prober answers VIP probes. The Run goroutine calls receive; ProbeWorkers
// worker goroutines, each locked to an OS thread in the agent's namespace,
// run the local checks and reply.
type prober struct {
	// Immutable after newProber.
	send  func(b []byte, to netip.AddrPort) error // from the GUE socket; any goroutine
	check func(k probeKey) vipprobe.Status        // on a worker thread
	stats *counters
	now   func() time.Time // time.Now; tests replace it before any request
	jobs  chan probeJob
	quit  chan struct{}
	wg    sync.WaitGroup

	rbuf []byte // the Run goroutine's reply buffer

	mu    sync.Mutex // guards cache and the entries in it
	cache map[probeKey]*probeEntry
}

// newProber starts the workers; each calls enter on its locked thread first
// (to join the agent's namespace) and newProber fails if one fails.
func newProber(send func([]byte, netip.AddrPort) error, check func(probeKey) vipprobe.Status,
	stats *counters, enter func() error) (*prober, error) {
	p := &prober{
		send: send, check: check, stats: stats, now: time.Now,
		jobs:  make(chan probeJob, ProbeQueue),
		quit:  make(chan struct{}),
		rbuf:  make([]byte, 0, vipprobe.MaxLen),
		cache: map[probeKey]*probeEntry{},
	}
	ready := make(chan error, ProbeWorkers)
	for range ProbeWorkers {
		p.wg.Add(1)
		go p.worker(enter, ready)
	}
	var errs []error
	for range ProbeWorkers {
		if err := <-ready; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		p.close()
		return nil, fmt.Errorf("agent: start VIP probe workers: %w", errors.Join(errs...))
	}
	return p, nil
}

// close stops the workers and waits for them (a check in progress finishes
// first, within ProbeConnectTimeout). Requests still queued are not
// answered.
func (p *prober) close() {
	close(p.quit)
	p.wg.Wait()
}

func (p *prober) worker(enter func() error, ready chan<- error) {
	defer p.wg.Done()
	// Locked for good: the thread may have joined another namespace, so it
	// must never run another goroutine; it exits with this one.
	runtime.LockOSThread()
	if err := enter(); err != nil {
		ready <- err
		return
	}
	ready <- nil
	buf := make([]byte, 0, vipprobe.MaxLen)
	for {
		select {
		case <-p.quit:
			return
		case j := <-p.jobs:
			p.serve(j, &buf)
		}
	}
}

// receive handles the GUE control message d from src on the Run goroutine,
// counting in b: a probe request for a configured VIP goes to a worker (or
// is answered "overloaded" if the queue is full), one for another VIP is
// answered "not configured" at once; another control message is dropped as
// GUEControl and a malformed probe as Probes.Malformed.
func (p *prober) receive(d []byte, src netip.AddrPort, vips *vipSet, b *Counters) {
	var m vipprobe.Message
	switch err := vipprobe.Parse(d, &m); {
	case err == vipprobe.ErrNotProbe:
		b.Drops[GUEControl]++
		return
	case err != nil || m.Type != vipprobe.Request || !src.IsValid():
		b.Probes.Malformed++
		return
	}
	b.Probes.Requests++
	if !vips.has(m.VIP.Addr()) {
		p.replyRun(&m, src, vipprobe.StatusNotConfigured, b)
		return
	}
	select {
	case p.jobs <- probeJob{m: m, to: src}:
	default:
		p.replyRun(&m, src, vipprobe.StatusOverloaded, b)
	}
}

// replyRun sends a reply from the Run goroutine.
func (p *prober) replyRun(m *vipprobe.Message, to netip.AddrPort, st vipprobe.Status, b *Counters) {
	r := m.ReplyTo(st)
	p.rbuf, _ = vipprobe.Append(p.rbuf[:0], &r) // r came from Parse: valid
	if err := p.send(p.rbuf, to); err != nil {
		b.Probes.ReplyErrors++
		return
	}
	*b.Probes.fields()[statusCounter(st)]++
}

// reply sends a reply from a worker.
func (p *prober) reply(j *probeJob, st vipprobe.Status, buf *[]byte) {
	r := j.m.ReplyTo(st)
	*buf, _ = vipprobe.Append((*buf)[:0], &r)
	if err := p.send(*buf, j.to); err != nil {
		p.stats.probes[probeReplyErrors].Add(1)
		return
	}
	p.stats.probes[statusCounter(st)].Add(1)
}

// serve answers one request on a worker: from a result younger than
// ProbeCacheTTL, by joining a check in progress for the same key, or by
// running a check.
func (p *prober) serve(j probeJob, buf *[]byte) {
	k := probeKey{j.m.VIP, j.m.Proto}
	now := p.now()
	p.mu.Lock()
	e := p.cache[k]
	switch {
	case e != nil && e.busy:
		if len(e.waiters) < probeMaxWaiters {
			e.waiters = append(e.waiters, j)
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		p.reply(&j, vipprobe.StatusOverloaded, buf)
		return
	case e != nil && now.Sub(e.at) < ProbeCacheTTL:
		st := e.status
		p.mu.Unlock()
		p.reply(&j, st, buf)
		return
	case e == nil:
		if len(p.cache) >= ProbeMaxKeys {
			p.sweep(now)
		}
		if len(p.cache) >= ProbeMaxKeys {
			p.mu.Unlock()
			p.reply(&j, vipprobe.StatusOverloaded, buf)
			return
		}
		e = &probeEntry{}
		p.cache[k] = e
	}
	e.busy = true
	p.mu.Unlock()

	st := p.check(k)
	p.stats.probes[probeChecks].Add(1)

	p.mu.Lock()
	e.status, e.at, e.busy = st, p.now(), false
	waiters := e.waiters
	e.waiters = nil
	p.mu.Unlock()
	p.reply(&j, st, buf)
	for i := range waiters {
		p.reply(&waiters[i], st, buf)
	}
}

// sweep drops the expired results. p.mu is held.
func (p *prober) sweep(now time.Time) {
	for k, e := range p.cache {
		if !e.busy && now.Sub(e.at) >= ProbeCacheTTL {
			delete(p.cache, k)
		}
	}
}

// startProber is New's last step: it opens a NETLINK_SOCK_DIAG socket and a
// handle on the namespace (both of the calling thread) and starts the probe
// workers in that namespace.
func (a *Agent) startProber() error {
	diag, err := netlink.NewHandle(unix.NETLINK_INET_DIAG)
	if err != nil {
		return fmt.Errorf("agent: sock_diag netlink socket: %w", err)
	}
	a.push("close sock_diag socket", func() error { diag.Close(); return nil })
	ns, err := netns.Get()
	if err != nil {
		return fmt.Errorf("agent: open the network namespace: %w", err)
	}
	a.push("close the network namespace handle", ns.Close)
	h := &hostChecks{diag: diag}
	if a.tun != nil { // a fastpath client without VIPs has none (and answers every probe "not configured")
		tun, err := a.nl.LinkByName(a.cfg.TUN)
		if err != nil {
			return fmt.Errorf("agent: find TUN %q: %w", a.cfg.TUN, err)
		}
		h.tunIndex = uint32(tun.Attrs().Index)
	}
	send := func(b []byte, to netip.AddrPort) error {
		_, err := a.udp.WriteToUDPAddrPort(b, to)
		return err
	}
	p, err := newProber(send, h.check, &a.stats, func() error { return enterNamespace(ns) })
	if err != nil {
		return err
	}
	a.push("stop the VIP probe workers", func() error { p.close(); return nil })
	a.probes = p
	return nil
}

// enterNamespace moves the calling (locked) thread into ns unless it is
// there already. Moving needs CAP_SYS_ADMIN; it happens only when New ran
// on a thread switched into another namespace than the process's, which
// needed that capability too.
func enterNamespace(ns netns.NsHandle) error {
	cur, err := netns.Get()
	if err != nil {
		return err
	}
	defer cur.Close()
	if cur.Equal(ns) {
		return nil
	}
	return netns.Set(ns)
}

// hostChecks are the local checks, run on worker threads in the agent's
// namespace.
type hostChecks struct {
	diag     *netlink.Handle // NETLINK_SOCK_DIAG, in the agent's namespace
	tunIndex uint32
}

func (h *hostChecks) check(k probeKey) vipprobe.Status {
	if k.proto == vipprobe.ProtoUDP {
		return h.udpBound(k.vip)
	}
	return tcpAnswers(k.vip)
}

// tcpAnswers connects from this host to vip, within ProbeConnectTimeout,
// and closes the connection at once (an orderly close: the service sees a
// client that said nothing).
func tcpAnswers(vip netip.AddrPort) vipprobe.Status {
	d := net.Dialer{Timeout: ProbeConnectTimeout}
	c, err := d.Dial("tcp", vip.String())
	if err != nil {
		return vipprobe.StatusDown
	}
	c.Close()
	return vipprobe.StatusUp
}

// tcpClose is the state of an unconnected UDP socket in sock_diag
// (TCP_CLOSE).
const tcpClose = 7

// udpBound reports whether an unconnected UDP socket would receive
// datagrams for vip: bound to its port and to its address or the wildcard
// address (an IPv6 wildcard socket is taken to be dual stack, as it is
// unless IPV6_V6ONLY or net.ipv6.bindv6only), and not bound to a device
// other than the TUN device. It asks NETLINK_SOCK_DIAG for the UDP sockets
// of the VIP's family and, for an IPv4 VIP, also of IPv6.
func (h *hostChecks) udpBound(vip netip.AddrPort) vipprobe.Status {
	fams := []uint8{unix.AF_INET6}
	if vip.Addr().Is4() {
		fams = []uint8{unix.AF_INET, unix.AF_INET6}
	}
	for _, fam := range fams {
		socks, err := h.diag.SocketDiagUDP(fam)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		for _, s := range socks {
			if s.ID.SourcePort != vip.Port() || s.State != tcpClose ||
				(s.ID.Interface != 0 && s.ID.Interface != h.tunIndex) {
				continue
			}
			a, ok := netip.AddrFromSlice(s.ID.Source)
			if a = a.Unmap(); ok && (a == vip.Addr() || a.IsUnspecified()) {
				return vipprobe.StatusUp
			}
		}
	}
	return vipprobe.StatusDown
}
