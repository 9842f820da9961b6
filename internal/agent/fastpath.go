package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/sluicelb/sluice/internal/fastpath"
)

// The client host's side of fastpath (see "Fastpath" in the package
// documentation). The Run goroutine only recognises a fastpath message and
// hands a copy of it to the fastpath goroutine (enqueue); that goroutine owns
// every piece of fastpath state: the codec, the egress program, the table of
// redirected flows, the tombstones of cancelled flows and the host's
// addresses. One owner, no locks. A goroutine of its own because its work
// is system calls that the Run loop must not wait for: up to 16 map updates
// per redirect, and a sweep that walks the whole map (up to Flows entries)
// every Refresh.

// egressProgram is what the agent needs of the tc egress program that
// encapsulates the redirected flows (package fastpath/egress; the adapter
// is in fastpath_egress.go). It is used by one goroutine at a time.
type egressProgram interface {
	// put installs or replaces the flow's entry (its state starts anew).
	put(f fastpath.Flow, t egressTarget) error
	// delete removes the flow's entry; an absent entry is not an error.
	delete(f fastpath.Flow) error
	// walk calls fn for each entry until fn returns false. fn must not
	// call put or delete.
	walk(fn func(fastpath.Flow, egressState) bool) error
	// counters returns the program's own counters by name (packets and
	// bytes sent direct, the reasons it let a packet pass), as they are.
	counters() (map[string]uint64, error)
	// close detaches the program: every flow goes through the LB tier
	// again.
	close() error
}

// egressTarget is how a flow is encapsulated: the fields of a redirect
// entry.
type egressTarget struct {
	Backend     netip.Addr
	Port        uint16 // GUE destination port
	SrcPort     uint16 // outer UDP source port
	FlowLabel   uint32 // outer IPv6 flow label
	UDPChecksum bool   // outer UDP checksum over IPv4 too
}

// egressState is what the program knows of a flow.
type egressState struct {
	LastUsed       time.Time // the last packet sent direct
	Packets, Bytes uint64    // sent direct since put
	Ended          bool      // a FIN or RST was seen on egress
}

// egressOptions are what the program is attached with.
type egressOptions struct {
	Interface string
	Flows     int
	Log       *slog.Logger // warnings about the uplink
}

// attachEgress attaches the egress program; tests replace it.
var attachEgress = attachEgressProgram

// Fastpath timings.
const (
	// FastpathEndedLinger is how long a flow whose FIN or RST the egress
	// program saw stays in the map after the sweep first sees it ended, so
	// that the last packets of the close (the final ACKs, a retransmitted
	// FIN) still go direct.
	FastpathEndedLinger = 2 * time.Second
	// fastpathAddrsTTL is how long the host's address list is used before
	// it is read again.
	fastpathAddrsTTL = time.Second
	// fastpathTombstoneTTL is how long a cancel is remembered: a redirect
	// older than it is refused as stale_time anyway.
	fastpathTombstoneTTL = 2 * fastpath.FreshMs * time.Millisecond
	// FastpathQueue is the number of fastpath messages waiting for the
	// fastpath goroutine; a message that finds the queue full is dropped
	// (fastpath_queue_full) and the LB node sends it again.
	FastpathQueue = 256
)

// FastpathCounters count the client host's side of fastpath.
type FastpathCounters struct {
	// Redirects and Cancels are the authentic, fresh redirect and cancel
	// messages received from an LB prefix.
	Redirects, Cancels uint64
	// Installed are redirect entries installed (or installed again);
	// Refused those refused, by status (indexed by fastpath.Status, from
	// StatusNotLocal to StatusUnavailable).
	Installed uint64
	Refused   [fastpath.StatusUnavailable + 1]uint64
	// Cancelled are cancel entries handled (the flow removed, or absent).
	Cancelled uint64
	// StaleCancels are cancel entries ignored: the flow's redirect was
	// sent after the cancel (the two crossed on the way).
	StaleCancels uint64
	// AcksSent and RefreshesSent are the messages sent; SendErrors those
	// the socket did not take.
	AcksSent, RefreshesSent, SendErrors uint64
	// Dropped messages: AuthFailures (wrong tag: another key), Malformed
	// (fastpath.Open refused it, or longer than fastpath.MaxLen),
	// StaleTime (send time outside fastpath.FreshMs of this host's
	// clock), Untrusted (from outside the LB prefixes), Unexpected (an ack
	// or refresh: only LB nodes receive those), QueueFull (the fastpath
	// goroutine's queue was full). Untrusted also counts the fastpath
	// messages the trust check dropped (as rejected_source) before the
	// fastpath goroutine saw them.
	AuthFailures, Malformed, StaleTime, Untrusted, Unexpected, QueueFull uint64
	// Flows removed by the sweep: Expired (idle for FastpathConfig.Idle),
	// Ended (FIN or RST seen, after FastpathEndedLinger), Unknown (in the
	// map but not redirected by this agent, e.g. before a restart).
	Expired, Ended, Unknown uint64
	// MapErrors are failed walks and deletes of the egress map;
	// TombstonesFull cancels not remembered one by one because too many
	// are (every redirect sent before them is refused as stale);
	// AddrErrors failed reads of the host's addresses.
	MapErrors, TombstonesFull, AddrErrors uint64
	// Flows is a gauge: the flows in the egress map after the last sweep
	// (fastpath_flows).
	Flows uint64
}

// Indices of the fastpath counters in counters.fastpath and fields().
const (
	fpRedirects = iota
	fpCancels
	fpInstalled
	fpRefusedNotLocal
	fpRefusedBackend
	fpRefusedFamily
	fpRefusedFull
	fpRefusedStale
	fpRefusedUnavailable
	fpCancelled
	fpAcksSent
	fpRefreshesSent
	fpSendErrors
	fpAuthFailures
	fpMalformed
	fpStaleTime
	fpUntrusted
	fpUnexpected
	fpQueueFull
	fpExpired
	fpEnded
	fpUnknown
	fpMapErrors
	fpTombstonesFull
	fpAddrErrors
	fpStaleCancels
	numFastpathCounters
)

var fastpathNames = [numFastpathCounters]string{
	"fastpath_redirects", "fastpath_cancels", "fastpath_redirects_installed",
	"fastpath_redirects_refused_not_local", "fastpath_redirects_refused_backend_not_allowed",
	"fastpath_redirects_refused_family", "fastpath_redirects_refused_full", "fastpath_redirects_refused_stale",
	"fastpath_redirects_refused_unavailable",
	"fastpath_cancelled", "fastpath_acks_sent", "fastpath_refreshes_sent", "fastpath_send_errors",
	"fastpath_auth_failures", "fastpath_malformed", "fastpath_stale_time", "fastpath_untrusted_source",
	"fastpath_unexpected_type", "fastpath_queue_full", "fastpath_expired", "fastpath_ended",
	"fastpath_unknown_removed", "fastpath_map_errors", "fastpath_tombstones_full", "fastpath_host_addr_errors",
	"fastpath_cancels_stale",
}

func (c *FastpathCounters) fields() [numFastpathCounters]*uint64 {
	r := &c.Refused
	return [...]*uint64{&c.Redirects, &c.Cancels, &c.Installed,
		&r[fastpath.StatusNotLocal], &r[fastpath.StatusBackend], &r[fastpath.StatusFamily],
		&r[fastpath.StatusFull], &r[fastpath.StatusStale], &r[fastpath.StatusUnavailable],
		&c.Cancelled, &c.AcksSent, &c.RefreshesSent, &c.SendErrors,
		&c.AuthFailures, &c.Malformed, &c.StaleTime, &c.Untrusted, &c.Unexpected, &c.QueueFull,
		&c.Expired, &c.Ended, &c.Unknown, &c.MapErrors, &c.TombstonesFull, &c.AddrErrors,
		&c.StaleCancels}
}

// Each calls f with each fastpath counter's name and value in a fixed
// order (fastpath_redirects ... fastpath_cancels_stale); not the Flows
// gauge.
func (c *FastpathCounters) Each(f func(name string, v uint64)) {
	for i, p := range c.fields() {
		f(fastpathNames[i], *p)
	}
}

// EgressCounter is one of the egress program's own counters, named as the
// program names it.
type EgressCounter struct {
	Name  string
	Value uint64
}

// fastpathJob is a fastpath message waiting for the fastpath goroutine.
type fastpathJob struct {
	src netip.AddrPort
	n   int
	buf [fastpath.MaxLen]byte
}

// fastpathFlow is what the agent remembers of a flow it installed.
type fastpathFlow struct {
	lb      netip.AddrPort // who redirected it (last): refreshes go there
	at      time.Time      // when it was (last) installed
	packets uint64         // the program's packet count at the last sweep
	endedAt time.Time      // when a sweep first saw it ended
	seen    uint64         // the last sweep that found it in the map
	target  egressTarget   // what the map entry says
	sentMs  uint64         // the newest redirect's send time (lb's clock)
}

// tombstone remembers a cancel.
type tombstone struct {
	sentMs uint64    // the newest cancel's send time
	at     time.Time // when it arrived (local clock)
}

// sweepRemoval is a flow the sweep removes, and why (a counter index).
type sweepRemoval struct {
	f   fastpath.Flow
	why int
}

// fastpathAgent is the client host's side of fastpath. Its methods but
// enqueue run on the fastpath goroutine (or a test's).
type fastpathAgent struct {
	// Immutable after newFastpath.
	cfg      FastpathConfig
	lb       prefixSet // who may send redirects and cancels
	backends prefixSet // where a redirect may point
	send     func(b []byte, to netip.AddrPort) error
	addrs    func() ([]netip.Addr, error) // the host's addresses
	now      func() time.Time
	stats    *counters
	log      *slog.Logger
	jobs     chan fastpathJob
	quit     chan struct{}
	done     chan struct{}
	egress   atomic.Pointer[[]EgressCounter] // the last snapshot of the program's counters

	// Owned by the fastpath goroutine.
	prog  egressProgram // nil: none, every redirect is refused (StatusUnavailable)
	codec *fastpath.Codec
	msg   fastpath.Message
	out   fastpath.Message
	buf   []byte
	flows map[fastpath.Flow]*fastpathFlow
	tombs map[fastpath.Flow]tombstone
	// tombFloor is the newest cancel's send time not in tombs (the table
	// was full): redirects sent up to then are stale.
	tombFloor uint64
	local     map[netip.Addr]struct{}
	localAt   time.Time
	id        uint64 // the last refresh ID
	gen       uint64 // sweeps so far
	b         FastpathCounters
	removes   []sweepRemoval
	refresh   map[netip.AddrPort][]fastpath.Flow
}

func newFastpath(cfg *FastpathConfig, lb []netip.Prefix, prog egressProgram, send func([]byte, netip.AddrPort) error,
	addrs func() ([]netip.Addr, error), stats *counters, log *slog.Logger) *fastpathAgent {
	return &fastpathAgent{
		cfg: *cfg, lb: newPrefixSet(lb), backends: newPrefixSet(cfg.BackendPrefixes),
		send: send, addrs: addrs, now: time.Now, stats: stats, log: log,
		jobs: make(chan fastpathJob, FastpathQueue), quit: make(chan struct{}), done: make(chan struct{}),
		prog: prog, codec: fastpath.NewCodec(fastpath.Key(cfg.Key)), buf: make([]byte, 0, fastpath.MaxLen),
		flows: map[fastpath.Flow]*fastpathFlow{}, tombs: map[fastpath.Flow]tombstone{},
		refresh: map[netip.AddrPort][]fastpath.Flow{},
		id:      uint64(time.Now().UnixNano()),
	}
}

// enqueue hands the fastpath message d from src to the fastpath goroutine,
// on the Run goroutine, counting in b. It never waits.
func (p *fastpathAgent) enqueue(d []byte, src netip.AddrPort, b *Counters) {
	if len(d) > fastpath.MaxLen {
		b.Fastpath.Malformed++
		return
	}
	j := fastpathJob{src: src, n: len(d)}
	copy(j.buf[:], d)
	select {
	case p.jobs <- j:
	default:
		b.Fastpath.QueueFull++
	}
}

// start runs the fastpath goroutine until stop.
func (p *fastpathAgent) start() {
	go func() {
		defer close(p.done)
		t := time.NewTicker(p.cfg.Refresh)
		defer t.Stop()
		for {
			select {
			case <-p.quit:
				return
			case j := <-p.jobs:
				p.receive(j.buf[:j.n], j.src)
			case <-t.C:
				p.sweep()
			}
			p.stats.flushFastpath(&p.b)
		}
	}()
}

// stop stops the fastpath goroutine (if started) and detaches the program.
// Queued messages are not handled.
func (p *fastpathAgent) stop(started bool) error {
	if started {
		close(p.quit)
		<-p.done
	}
	if p.prog == nil {
		return nil
	}
	err := p.prog.close()
	p.prog = nil
	return err
}

func unixMs(t time.Time) uint64 { return uint64(t.UnixMilli()) }

// receive handles one fastpath message: a redirect or cancel from an LB
// prefix is applied and acknowledged; anything else is counted and dropped.
func (p *fastpathAgent) receive(d []byte, src netip.AddrPort) {
	now := p.now()
	if !p.lb.contains(src.Addr().Unmap()) {
		p.b.Untrusted++
		return
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	switch err := p.codec.Open(d, &p.msg); {
	case errors.Is(err, fastpath.ErrAuth):
		p.b.AuthFailures++
		return
	case err != nil:
		p.b.Malformed++
		return
	}
	if !fastpath.Fresh(p.msg.TimeMs, unixMs(now)) {
		p.b.StaleTime++
		return
	}
	switch p.msg.Type {
	case fastpath.Redirect:
		p.b.Redirects++
		p.redirect(src, now)
	case fastpath.Cancel:
		p.b.Cancels++
		p.cancel(src, now)
	default:
		p.b.Unexpected++
	}
}

// redirect installs each entry it may and acknowledges the message.
func (p *fastpathAgent) redirect(src netip.AddrPort, now time.Time) {
	m, r := &p.msg, &p.out
	r.Type, r.ID, r.Count = fastpath.Ack, m.ID, m.Count
	for i := 0; i < m.Count; i++ {
		st := p.install(&m.Entries[i], m.TimeMs, src, now)
		r.Entries[i] = fastpath.Entry{Flow: m.Entries[i].Flow, Status: st}
		if st == fastpath.StatusInstalled {
			p.b.Installed++
		} else {
			p.b.Refused[st]++
		}
	}
	p.sendMsg(r, src, now, &p.b.AcksSent)
}

// install decides one redirect entry sent at sentMs by src and installs it.
func (p *fastpathAgent) install(e *fastpath.Entry, sentMs uint64, src netip.AddrPort, now time.Time) fastpath.Status {
	f := e.Flow
	switch {
	case !p.isLocal(f.Client.Addr(), now):
		return fastpath.StatusNotLocal
	case !p.backends.contains(e.Backend):
		return fastpath.StatusBackend
	case e.Backend.Is4() != f.Client.Addr().Is4():
		return fastpath.StatusFamily
	}
	if t, ok := p.tombs[f]; (ok && t.sentMs >= sentMs) || sentMs <= p.tombFloor {
		return fastpath.StatusStale
	}
	if p.prog == nil {
		return fastpath.StatusUnavailable
	}
	x := p.flows[f]
	if x == nil && len(p.flows) >= p.cfg.Flows {
		return fastpath.StatusFull
	}
	t := egressTarget{Backend: e.Backend, Port: e.Port, SrcPort: e.SrcPort, FlowLabel: e.FlowLabel,
		UDPChecksum: e.Flags&fastpath.FlagUDPChecksum != 0}
	if x != nil && x.target == t {
		// A resend (its ack was lost) or another node's redirect to the
		// same place: the map entry, its counters and its end mark stay.
		if x.lb != src || sentMs > x.sentMs { // another node: another clock
			x.sentMs = sentMs
		}
		x.lb, x.at = src, now
		return fastpath.StatusInstalled
	}
	if err := p.prog.put(f, t); err != nil {
		return fastpath.StatusFull
	}
	if x == nil {
		x = &fastpathFlow{}
		p.flows[f] = x
	}
	*x = fastpathFlow{lb: src, at: now, seen: p.gen, target: t, sentMs: sentMs}
	return fastpath.StatusInstalled
}

// cancel removes each entry's flow, remembers the cancel and acknowledges
// the message.
func (p *fastpathAgent) cancel(src netip.AddrPort, now time.Time) {
	m, r := &p.msg, &p.out
	r.Type, r.ID, r.Count = fastpath.Ack, m.ID, m.Count
	for i := 0; i < m.Count; i++ {
		f := m.Entries[i].Flow
		r.Entries[i] = fastpath.Entry{Flow: f, Status: fastpath.StatusInstalled}
		if x := p.flows[f]; x != nil && x.lb == src && x.sentMs > m.TimeMs {
			// The same node sent the flow's redirect after this cancel
			// (the two crossed on the way): the cancel is about an
			// earlier redirect. Send times compare only from one node:
			// clocks differ.
			p.b.StaleCancels++
			continue
		}
		if p.prog != nil {
			if err := p.prog.delete(f); err != nil {
				p.b.MapErrors++
			}
		}
		delete(p.flows, f)
		p.remember(f, m.TimeMs, now)
		p.b.Cancelled++
	}
	p.sendMsg(r, src, now, &p.b.AcksSent)
}

// remember keeps the newest cancel of f for fastpathTombstoneTTL. At most
// 2*Flows cancels are remembered.
func (p *fastpathAgent) remember(f fastpath.Flow, sentMs uint64, now time.Time) {
	t, ok := p.tombs[f]
	if !ok && len(p.tombs) >= 2*p.cfg.Flows {
		p.pruneTombstones(now)
		if len(p.tombs) >= 2*p.cfg.Flows {
			// Not remembered: refuse every redirect sent before it
			// instead, so that none outlives its cancel.
			p.b.TombstonesFull++
			p.tombFloor = max(p.tombFloor, sentMs)
			return
		}
	}
	p.tombs[f] = tombstone{sentMs: max(t.sentMs, sentMs), at: now}
}

func (p *fastpathAgent) pruneTombstones(now time.Time) {
	for f, t := range p.tombs {
		if now.Sub(t.at) >= fastpathTombstoneTTL {
			delete(p.tombs, f)
		}
	}
}

// isLocal reports whether a is one of the host's addresses, read again when
// the list is older than fastpathAddrsTTL.
func (p *fastpathAgent) isLocal(a netip.Addr, now time.Time) bool {
	if p.local == nil || now.Sub(p.localAt) >= fastpathAddrsTTL || now.Before(p.localAt) {
		p.localAt = now
		if as, err := p.addrs(); err != nil {
			p.b.AddrErrors++
		} else {
			p.local = make(map[netip.Addr]struct{}, len(as))
			for _, x := range as {
				p.local[x.Unmap().WithZone("")] = struct{}{}
			}
		}
	}
	_, ok := p.local[a]
	return ok
}

// sendMsg seals m (its send time now) and sends it to to, counting it in
// *sent or as a send error.
func (p *fastpathAgent) sendMsg(m *fastpath.Message, to netip.AddrPort, now time.Time, sent *uint64) {
	m.TimeMs = unixMs(now)
	var err error
	if p.buf, err = p.codec.Seal(p.buf[:0], m); err == nil {
		err = p.send(p.buf, to)
	}
	if err != nil {
		p.b.SendErrors++
		return
	}
	*sent++
}

// sweep removes the ended, idle and unknown flows from the map, forgets the
// flows the map lost, sends each LB node a refresh of its flows that sent
// packets since the last sweep, and reads the program's counters.
func (p *fastpathAgent) sweep() {
	now := p.now()
	p.pruneTombstones(now)
	if p.prog == nil {
		return
	}
	p.gen++
	p.removes = p.removes[:0]
	clear(p.refresh)
	inMap := uint64(0)
	err := p.prog.walk(func(f fastpath.Flow, s egressState) bool {
		inMap++
		x := p.flows[f]
		if x == nil {
			p.removes = append(p.removes, sweepRemoval{f, fpUnknown})
			return true
		}
		x.seen = p.gen
		if s.Ended {
			if x.endedAt.IsZero() {
				x.endedAt = now
			}
			if now.Sub(x.endedAt) >= FastpathEndedLinger {
				p.removes = append(p.removes, sweepRemoval{f, fpEnded})
				return true
			}
		}
		last := s.LastUsed
		if last.Before(x.at) {
			last = x.at
		}
		if now.Sub(last) >= p.cfg.Idle {
			p.removes = append(p.removes, sweepRemoval{f, fpExpired})
			return true
		}
		if s.Packets != x.packets {
			x.packets = s.Packets
			p.refresh[x.lb] = append(p.refresh[x.lb], f)
		}
		return true
	})
	if err != nil {
		p.b.MapErrors++
	}
	counts := p.b.fields()
	for _, r := range p.removes {
		if err := p.prog.delete(r.f); err != nil {
			p.b.MapErrors++
			continue
		}
		delete(p.flows, r.f)
		*counts[r.why]++
		inMap--
	}
	if err == nil {
		for f, x := range p.flows {
			if x.seen != p.gen { // not in the map: the program lost it
				delete(p.flows, f)
			}
		}
	}
	p.stats.fastpathFlows.Store(inMap)
	for lb, fs := range p.refresh {
		for len(fs) > 0 {
			n := min(len(fs), fastpath.MaxEntries)
			p.id++
			p.out.Type, p.out.ID, p.out.Count = fastpath.Refresh, p.id, n
			for i := range n {
				p.out.Entries[i] = fastpath.Entry{Flow: fs[i]}
			}
			p.sendMsg(&p.out, lb, now, &p.b.RefreshesSent)
			fs = fs[n:]
		}
	}
	if cs, err := p.prog.counters(); err == nil {
		snap := make([]EgressCounter, 0, len(cs))
		for name, v := range cs {
			snap = append(snap, EgressCounter{name, v})
		}
		slices.SortFunc(snap, func(a, b EgressCounter) int { return strings.Compare(a.Name, b.Name) })
		p.egress.Store(&snap)
	}
}

// startFastpath is New's fastpath step: a netlink handle for the host's
// addresses, the egress program on Config.Fastpath.Interface, and the
// fastpath goroutine.
func (a *Agent) startFastpath() error {
	c := a.cfg.Fastpath
	nl, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("agent: fastpath: netlink: %w", err)
	}
	a.push("close the fastpath netlink socket", func() error { nl.Close(); return nil })
	prog, err := attachEgress(egressOptions{Interface: c.Interface, Flows: c.Flows, Log: a.log})
	if err != nil {
		return fmt.Errorf("agent: fastpath: attach the egress program to %q: %w", c.Interface, err)
	}
	send := func(b []byte, to netip.AddrPort) error {
		_, err := a.udp.WriteToUDPAddrPort(b, to)
		return err
	}
	addrs := func() ([]netip.Addr, error) {
		list, err := nl.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return nil, err
		}
		out := make([]netip.Addr, 0, len(list))
		for _, x := range list {
			if ip, ok := netip.AddrFromSlice(x.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
		return out, nil
	}
	p := newFastpath(c, a.cfg.LBPrefixes, prog, send, addrs, &a.stats, a.log)
	p.start()
	a.push("stop fastpath and detach the egress program from "+c.Interface, func() error { return p.stop(true) })
	a.fp = p
	a.log.Info("fastpath egress program attached", "interface", c.Interface, "flows", c.Flows,
		"backend_prefixes", c.BackendPrefixes, "idle", c.Idle, "refresh", c.Refresh)
	return nil
}

// FastpathEgress returns the egress program's own counters as of the last
// sweep, sorted by name (nil without fastpath).
func (a *Agent) FastpathEgress() []EgressCounter {
	if a.fp == nil {
		return nil
	}
	if s := a.fp.egress.Load(); s != nil {
		return *s
	}
	return nil
}
