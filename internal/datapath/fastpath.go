package datapath

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/fastpath"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/offload"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// Fastpath: the node's side (package fastpath has the messages). A worker
// that forwards an established flow of a service with fastpath clients
// (pipeline.Service.Fastpath) queues the flow once on its ring (an
// offload.Op: the key, the backend's ID, the outer source port and flow
// label the worker writes) and notes it in the entry (fpMark). The
// Redirector, one goroutine, owns every redirect the node gave: it sends
// them to the client hosts' agents, sends them again until they are
// acknowledged, cancels them when their backend drains, leaves or fails,
// takes the agents' refreshes, and keeps the workers' entries of the flows
// the agents send direct from expiring, so that a cancelled flow finds its
// entry, and its backend, when its packets come back.

// fpMark is the Entry.Offload note of a flow offered to its client host's
// agent: the seen bit alone, which no offload note has. Such a flow is not
// offloaded to XDP, and is offered once.
const fpMark = offSeen

// fpDeclined is the Entry.Offload note of a flow the fastpath gave up on:
// the agent refused it, the node's table was full, its backend left, or its
// redirect was cancelled. It is not offered again, and, like a flow without
// a note, may be offloaded to XDP. offMark never takes this value.
const fpDeclined = 0x7f

// FastpathConfig configures the Redirector (Config.Fastpath).
type FastpathConfig struct {
	// Conn is the node's socket for redirects, cancels, acks and
	// refreshes; the Redirector closes it when Run ends.
	Conn *net.UDPConn
	Key  [32]byte // fastpath.Key of the shared key
	Port uint16   // the agents' UDP port
	// Idle is how long a redirect without refreshes is kept; Max bounds
	// how many are kept; Ring is each worker's queue of new flows (default
	// 4096).
	Idle time.Duration
	Max  int
	Ring int
}

// Redirect states.
const (
	rdOffered    uint8 = iota + 1 // sent, not yet acknowledged
	rdInstalled                   // the agent sends the flow direct
	rdCancelling                  // a cancel was sent, not yet acknowledged
)

// Retransmission: the first resend after fpRetry, doubling, fpTries sends
// in all (about 3 s).
const (
	fpRetry = 100 * time.Millisecond
	fpTries = 6
	fpTick  = 10 * time.Millisecond
)

type redirect struct {
	real    uint32
	service int
	backend netip.Addr
	agent   netip.AddrPort
	sport   uint16
	label   uint32
	port    uint16 // the backend's GUE port
	csum    bool
	state   uint8
	tries   uint8
	msg     uint64    // the ID of the last message that carried it
	next    time.Time // when to send it again
	since   time.Time // offered, installed or cancelled at
	seen    time.Time // the last refresh (or the install)
}

// FastpathCounters are the Redirector's counters.
type FastpathCounters struct {
	Offered       uint64 // flows offered (first sends)
	Sent          uint64 // redirect messages sent, resends included
	Installed     uint64 // flows an agent acknowledged as installed
	Refused       uint64 // flows an agent refused (by status in RefusedBy)
	RefusedBy     [8]uint64
	Unacked       uint64 // offers unanswered after fpTries sends, then cancelled (in Cancelled too)
	Cancelled     uint64 // cancels sent (flows, first sends)
	CancelAcked   uint64
	CancelUnacked uint64
	Refreshes     uint64 // refreshed flows
	Expired       uint64 // redirects forgotten without refreshes
	Orphans       uint64 // refreshed flows the node does not hold, answered with a cancel
	Declined      uint64 // flows given up on (refused, cancelled, no room, backend gone): never offered again
	Full          uint64 // flows not offered: the table was full
	RingFull      uint64 // flows not offered: a worker's ring was full
	BadSource     uint64 // datagrams from outside every fastpath client prefix
	BadAuth       uint64
	Malformed     uint64
	Stale         uint64 // outside fastpath.FreshMs
	SendErrors    uint64
	Active        uint64 // redirects installed now (a gauge)
	Pending       uint64 // offers and cancels awaiting an ack (a gauge)
}

// FastpathRedirect is one redirect the node holds (Redirector.List).
type FastpathRedirect struct {
	Flow    fastpath.Flow
	Backend netip.Addr
	Agent   netip.AddrPort
	State   string // offered, installed, cancelling
	Since   time.Time
	Seen    time.Time
}

// Redirector owns the node's redirects; see the comment at the top of the
// file.
type Redirector struct {
	cfg      FastpathConfig
	gen      *atomic.Pointer[pipeline.Generation]
	rings    []*offload.Ring
	touch    func(keys []flow.Key) // marks the workers' entries seen
	release  func(keys []flow.Key) // clears the workers' fpMark: may be offered again
	decline  func(keys []flow.Key) // turns the workers' fpMark into fpDeclined
	declined []flow.Key            // to decline at the next flushDeclined
	wake     chan struct{}
	in       chan fpIn
	reqs     chan func()
	done     chan struct{} // closed when Run returns
	now      func() time.Time
	sealer   *fastpath.Codec
	buf      []byte
	ops      []offload.Op
	table    map[flow.Key]*redirect
	pending  map[flow.Key]struct{} // offered or cancelling
	touched  []flow.Key            // refreshed since the last touch
	orphans  []fastpath.Flow       // refreshed flows the node does not hold (answer)
	lastGen  uint32
	nextID   uint64
	active   int // redirects in rdInstalled
	// agentOf is where a client's redirects go: client:Port (tests put
	// their agent elsewhere).
	agentOf func(client netip.Addr) netip.AddrPort
	retry   time.Duration // fpRetry

	mu sync.Mutex // guards c
	c  FastpathCounters
}

type fpIn struct {
	m    fastpath.Message
	from netip.AddrPort
}

func newRedirector(c FastpathConfig, gen *atomic.Pointer[pipeline.Generation], rings []*offload.Ring, touch, release, decline func([]flow.Key)) *Redirector {
	if c.Max <= 0 {
		c.Max = 262144
	}
	if c.Idle <= 0 {
		c.Idle = time.Minute
	}
	var seed [8]byte
	rand.Read(seed[:])
	return &Redirector{
		cfg: c, gen: gen, rings: rings, touch: touch, release: release, decline: decline,
		wake: make(chan struct{}, 1), in: make(chan fpIn, 1024), reqs: make(chan func()), done: make(chan struct{}),
		now: time.Now, sealer: fastpath.NewCodec(c.Key),
		table: map[flow.Key]*redirect{}, pending: map[flow.Key]struct{}{},
		nextID:  binary.BigEndian.Uint64(seed[:]),
		retry:   fpRetry,
		agentOf: func(client netip.Addr) netip.AddrPort { return netip.AddrPortFrom(client, c.Port) },
	}
}

// Wake makes Run take the workers' new flows now rather than at its next
// tick. It does not block.
func (r *Redirector) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Counters returns a snapshot of the counters.
func (r *Redirector) Counters() FastpathCounters {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.c
	for _, ring := range r.rings {
		c.RingFull += ring.Full()
	}
	return c
}

func (r *Redirector) count(fn func(c *FastpathCounters)) {
	r.mu.Lock()
	fn(&r.c)
	r.mu.Unlock()
}

// List returns the redirects the node holds, at most max (0: all), in
// flow order. It waits for Run to take the request (nil once Run has
// returned, or when ctx ends first).
func (r *Redirector) List(ctx context.Context, max int) []FastpathRedirect {
	out := make(chan []FastpathRedirect, 1)
	select {
	case r.reqs <- func() { out <- r.list(max) }:
	case <-r.done:
		return nil
	case <-ctx.Done():
		return nil
	}
	return <-out
}

func (r *Redirector) list(max int) []FastpathRedirect {
	var l []FastpathRedirect
	for k, x := range r.table {
		st := "offered"
		switch x.state {
		case rdInstalled:
			st = "installed"
		case rdCancelling:
			st = "cancelling"
		}
		l = append(l, FastpathRedirect{Flow: keyFlow(&k), Backend: x.backend, Agent: x.agent, State: st, Since: x.since, Seen: x.seen})
	}
	sort.Slice(l, func(i, j int) bool {
		a, b := l[i].Flow, l[j].Flow
		if c := a.Client.Compare(b.Client); c != 0 {
			return c < 0
		}
		return a.VIP.Compare(b.VIP) < 0
	})
	if max > 0 && len(l) > max {
		l = l[:max]
	}
	return l
}

func keyFlow(k *flow.Key) fastpath.Flow {
	return fastpath.Flow{Proto: k.Proto,
		Client: netip.AddrPortFrom(netip.AddrFrom16(k.Src).Unmap(), k.SrcPort),
		VIP:    netip.AddrPortFrom(netip.AddrFrom16(k.Dst).Unmap(), k.DstPort)}
}

func flowKey(f *fastpath.Flow) flow.Key { return flow.MakeKey(f.Proto, f.Client, f.VIP) }

// Run sends, resends and cancels redirects and takes the agents' answers
// until ctx is done; it then closes the socket.
func (r *Redirector) Run(ctx context.Context) {
	defer close(r.done)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.receive(ctx)
	}()
	stop := context.AfterFunc(ctx, func() { r.cfg.Conn.Close() })
	defer func() {
		stop()
		r.cfg.Conn.Close()
		wg.Wait()
	}()
	tick := time.NewTicker(fpTick)
	defer tick.Stop()
	second := time.NewTicker(time.Second)
	defer second.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
			r.take()
		case in := <-r.in:
			r.answer(&in)
		case fn := <-r.reqs:
			fn()
		case <-tick.C:
			r.take()
			r.rebase()
			r.resend()
		case <-second.C:
			r.expire()
			r.flushDeclined()
			if len(r.touched) > 0 {
				r.touch(r.touched)
				r.touched = r.touched[:0]
			}
		}
	}
}

// receive reads the agents' datagrams: it checks their source, tag and
// time and hands them to Run.
func (r *Redirector) receive(ctx context.Context) {
	codec := fastpath.NewCodec(r.cfg.Key)
	buf := make([]byte, 2048)
	for {
		n, from, err := r.cfg.Conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if !r.fromClient(from.Addr()) {
			r.count(func(c *FastpathCounters) { c.BadSource++ })
			continue
		}
		var in fpIn
		in.from = from
		switch err := codec.Open(buf[:n], &in.m); {
		case errors.Is(err, fastpath.ErrAuth):
			r.count(func(c *FastpathCounters) { c.BadAuth++ })
			continue
		case err != nil:
			r.count(func(c *FastpathCounters) { c.Malformed++ })
			continue
		}
		if !fastpath.Fresh(in.m.TimeMs, uint64(time.Now().UnixMilli())) {
			r.count(func(c *FastpathCounters) { c.Stale++ })
			continue
		}
		if in.m.Type != fastpath.Ack && in.m.Type != fastpath.Refresh {
			r.count(func(c *FastpathCounters) { c.Malformed++ })
			continue
		}
		select {
		case r.in <- in:
		case <-ctx.Done():
			return
		}
	}
}

// fromClient reports whether a may send acks and refreshes: it is in a
// fastpath client prefix of a service of the current generation.
func (r *Redirector) fromClient(a netip.Addr) bool {
	g := r.gen.Load()
	if g == nil {
		return false
	}
	for _, s := range g.Services {
		for _, p := range s.Fastpath {
			if p.Contains(a) {
				return true
			}
		}
	}
	return false
}

// take drains the workers' rings into new offers and sends them.
func (r *Redirector) take() {
	g := r.gen.Load()
	if g == nil {
		return
	}
	now := r.now()
	var fresh []flow.Key
	for _, ring := range r.rings {
		r.ops = ring.Drain(r.ops[:0])
		for i := range r.ops {
			op := &r.ops[i]
			if op.Del {
				continue
			}
			if _, ok := r.table[op.Key]; ok {
				continue
			}
			if len(r.table) >= r.cfg.Max {
				r.count(func(c *FastpathCounters) { c.Full++ })
				r.declined = append(r.declined, op.Key)
				continue
			}
			x := r.offer(g, op)
			if x == nil || !r.valid(g, &op.Key, x) {
				// E.g. its backend drains since the worker queued it.
				r.declined = append(r.declined, op.Key)
				continue
			}
			x.since, x.seen = now, now
			r.table[op.Key] = x
			fresh = append(fresh, op.Key)
		}
	}
	if len(fresh) > 0 {
		r.count(func(c *FastpathCounters) { c.Offered += uint64(len(fresh)) })
		r.send(fastpath.Redirect, fresh, now)
	}
}

// flushDeclined turns the workers' fpMark of the flows given up on since
// the last call into fpDeclined; once a second, as it stops the workers
// for a moment. Meanwhile their fpMark keeps them from being offered again.
func (r *Redirector) flushDeclined() {
	if n := uint64(len(r.declined)); n > 0 {
		r.decline(r.declined)
		r.declined = r.declined[:0]
		r.count(func(c *FastpathCounters) { c.Declined += n })
	}
}

// offer makes the redirect of a worker's op, or nil when its backend is
// gone or is not one a client may reach directly.
func (r *Redirector) offer(g *pipeline.Generation, op *offload.Op) *redirect {
	if int(op.Real) >= len(g.Reals) || g.Reals[op.Real] == nil {
		return nil
	}
	real := g.Reals[op.Real]
	t := real.Template
	if t == nil || t.Mode() != encap.GUE || real.Service >= len(g.Services) {
		return nil
	}
	client := netip.AddrFrom16(op.Key.Src).Unmap()
	return &redirect{
		real: op.Real, service: real.Service, backend: t.Dst(),
		agent: r.agentOf(client),
		sport: op.Sport, label: op.Label, port: t.Port(), csum: t.UDPChecksum(),
	}
}

// send sends keys' redirects (or cancels) in messages of up to
// fastpath.MaxEntries flows per agent, and schedules their resends.
func (r *Redirector) send(t fastpath.Type, keys []flow.Key, now time.Time) {
	sort.Slice(keys, func(i, j int) bool {
		return r.table[keys[i]].agent.Compare(r.table[keys[j]].agent) < 0
	})
	var m fastpath.Message
	var to netip.AddrPort
	flush := func() {
		if m.Count == 0 {
			return
		}
		r.transmit(&m, t, to)
		for i := 0; i < m.Count; i++ {
			x := r.table[flowKey(&m.Entries[i].Flow)]
			x.msg = m.ID
		}
		m.Count = 0
	}
	for _, k := range keys {
		x := r.table[k]
		if x.agent != to || m.Count == fastpath.MaxEntries {
			flush()
			to = x.agent
		}
		e := &m.Entries[m.Count]
		*e = fastpath.Entry{Flow: keyFlow(&k)}
		if t == fastpath.Redirect {
			e.Backend, e.Port, e.SrcPort, e.FlowLabel = x.backend, x.port, x.sport, x.label
			if x.csum {
				e.Flags = fastpath.FlagUDPChecksum
			}
			x.state = rdOffered
		} else {
			x.state = rdCancelling
		}
		x.tries++
		x.next = now.Add(r.retry << (x.tries - 1))
		r.pending[k] = struct{}{}
		m.Count++
	}
	flush()
}

// resend sends again the offers and cancels that are due, and gives up on
// those sent fpTries times.
func (r *Redirector) resend() {
	if len(r.pending) == 0 {
		return
	}
	now := r.now()
	var offers, cancels []flow.Key
	for k := range r.pending {
		x := r.table[k]
		if x == nil {
			delete(r.pending, k)
			continue
		}
		if now.Before(x.next) {
			continue
		}
		if x.tries >= fpTries && x.state == rdOffered {
			// No ack came, but the agent may have installed the flow
			// all the same (only its acks were lost): cancel it, so that
			// no client sends direct a flow this node no longer follows.
			x.tries, x.since = 0, now
			cancels = append(cancels, k)
			r.count(func(c *FastpathCounters) { c.Unacked++; c.Cancelled++ })
			continue
		}
		if x.tries >= fpTries {
			delete(r.pending, k)
			delete(r.table, k)
			r.declined = append(r.declined, k)
			r.count(func(c *FastpathCounters) { c.CancelUnacked++ })
			continue
		}
		if x.state == rdOffered {
			offers = append(offers, k)
		} else {
			cancels = append(cancels, k)
		}
	}
	if len(offers) > 0 {
		r.send(fastpath.Redirect, offers, now)
	}
	if len(cancels) > 0 {
		r.send(fastpath.Cancel, cancels, now)
	}
}

// answer takes an agent's ack or refresh.
func (r *Redirector) answer(in *fpIn) {
	now := r.now()
	m := &in.m
	var installed, refused, cancelAcked, refreshed uint64
	var refusedBy [8]uint64
	for i := 0; i < m.Count; i++ {
		e := &m.Entries[i]
		k := flowKey(&e.Flow)
		x := r.table[k]
		if x == nil {
			if m.Type == fastpath.Refresh {
				// The agent sends direct a flow this node does not
				// hold (it gave up on it, or restarted): cancel it, so
				// that it comes back to the LB path, where it keeps its
				// backend (and is offered again, unless declined).
				r.orphans = append(r.orphans, e.Flow)
			}
			continue
		}
		if m.Type == fastpath.Refresh {
			if x.state == rdOffered {
				// The ack was lost; the agent refreshes what it installed.
				delete(r.pending, k)
				x.state, x.since, x.tries = rdInstalled, now, 0
				r.active++
				installed++
			}
			if x.state == rdInstalled {
				x.seen = now
				r.touched = append(r.touched, k)
				refreshed++
			}
			continue
		}
		if x.msg != m.ID {
			continue // the ack of an earlier send
		}
		switch x.state {
		case rdOffered:
			delete(r.pending, k)
			if e.Status == fastpath.StatusInstalled {
				x.state, x.since, x.seen, x.tries = rdInstalled, now, now, 0
				r.active++
				installed++
				continue
			}
			delete(r.table, k)
			r.declined = append(r.declined, k)
			refused++
			refusedBy[min(int(e.Status), len(refusedBy)-1)]++
		case rdCancelling:
			delete(r.pending, k)
			delete(r.table, k)
			r.declined = append(r.declined, k)
			cancelAcked++
		}
	}
	orphans := r.cancelOrphans(in.from)
	r.count(func(c *FastpathCounters) {
		c.Orphans += orphans
		c.Installed += installed
		c.Refused += refused
		for i, n := range refusedBy {
			c.RefusedBy[i] += n
		}
		c.CancelAcked += cancelAcked
		c.Refreshes += refreshed
	})
	r.gauges()
}

// cancelOrphans sends to agent, once, a cancel of the flows in r.orphans
// (refreshed flows the node does not hold) and returns how many. The agent
// refreshes such a flow again a second later, which brings another cancel
// if this one was lost, so it keeps no state for them.
func (r *Redirector) cancelOrphans(agent netip.AddrPort) uint64 {
	n := uint64(len(r.orphans))
	for i := 0; i < len(r.orphans); {
		var m fastpath.Message
		for ; m.Count < fastpath.MaxEntries && i < len(r.orphans); i++ {
			m.Entries[m.Count] = fastpath.Entry{Flow: r.orphans[i]}
			m.Count++
		}
		r.transmit(&m, fastpath.Cancel, agent)
	}
	r.orphans = r.orphans[:0]
	return n
}

// transmit stamps m as a message of type t under a new ID, seals it and
// sends it to agent.
func (r *Redirector) transmit(m *fastpath.Message, t fastpath.Type, agent netip.AddrPort) {
	r.nextID++
	m.Type, m.ID, m.TimeMs = t, r.nextID, uint64(time.Now().UnixMilli())
	var err error
	if r.buf, err = r.sealer.Seal(r.buf[:0], m); err == nil {
		_, err = r.cfg.Conn.WriteToUDPAddrPort(r.buf, agent)
	}
	r.count(func(c *FastpathCounters) {
		c.Sent++
		if err != nil {
			c.SendErrors++
		}
	})
}

// rebase cancels, when the generation changed, the redirects whose backend
// drains, left or failed, or whose service no longer redirects the client.
func (r *Redirector) rebase() {
	g := r.gen.Load()
	if g == nil || g.ID == r.lastGen {
		return
	}
	r.lastGen = g.ID
	now := r.now()
	var cancels []flow.Key
	for k, x := range r.table {
		if x.state == rdCancelling || r.valid(g, &k, x) {
			continue
		}
		if x.state == rdInstalled {
			r.active--
		}
		x.tries, x.since = 0, now
		cancels = append(cancels, k)
	}
	if len(cancels) > 0 {
		r.count(func(c *FastpathCounters) { c.Cancelled += uint64(len(cancels)) })
		r.send(fastpath.Cancel, cancels, now)
	}
	r.gauges()
}

// valid reports whether x's flow may still go straight to its backend in g:
// the backend is in its service's table with a weight, at the same
// address, GUE port and checksum setting (a reload may change them), and
// the service still redirects the client. A backend whose next hop this
// node cannot resolve for the moment (no template) stays valid: the client
// host reaches it by its own route, and the LB path would drop the flow.
func (r *Redirector) valid(g *pipeline.Generation, k *flow.Key, x *redirect) bool {
	if int(x.real) >= len(g.Reals) {
		return false
	}
	real := g.Reals[x.real]
	if real == nil || real.Weight == 0 || real.Service >= len(g.Services) {
		return false
	}
	if t := real.Template; t != nil {
		if t.Mode() != encap.GUE || t.Dst() != x.backend || t.Port() != x.port || t.UDPChecksum() != x.csum {
			return false
		}
	} else if !real.NoNextHop || real.NAT != nil {
		return false // not encapsulated (full NAT)
	}
	return g.Services[real.Service].FastpathClient(&k.Src)
}

// expire forgets the installed redirects no refresh kept: the agent
// forgot them (the flow idled, or the agent restarted). Their workers'
// entries lose fpMark, so that a flow that still sends (through this node
// again) is offered again.
func (r *Redirector) expire() {
	now := r.now()
	var gone []flow.Key
	for k, x := range r.table {
		if x.state == rdInstalled && now.Sub(x.seen) > r.cfg.Idle {
			delete(r.table, k)
			r.active--
			gone = append(gone, k)
		}
	}
	if len(gone) > 0 {
		r.release(gone)
		r.count(func(c *FastpathCounters) { c.Expired += uint64(len(gone)) })
	}
	r.gauges()
}

func (r *Redirector) gauges() {
	active, pending := uint64(r.active), uint64(len(r.pending))
	r.count(func(c *FastpathCounters) { c.Active, c.Pending = active, pending })
}

// fastpathFlow offers p's flow to its client host's agent when its service
// redirects the client and the flow is established in this generation. It
// reports whether the flow is (or was) offered: such a flow is not
// offloaded to XDP. It does not allocate and makes no system call.
func (w *Worker) fastpathFlow(p *pipeline.Packet, g *pipeline.Generation) bool {
	r := p.Real
	if r.Template == nil || r.Service >= len(g.Services) {
		return false
	}
	s := g.Services[r.Service]
	if s.Fastpath == nil || p.Secondary != nil || p.ICMPError || p.Key.Tenant != 0 ||
		p.Parsed.Frag != packet.NotFragment || r.Template.Mode() != encap.GUE {
		return false
	}
	e := w.flows.Lookup(&p.Key, p.Hash)
	if e == nil {
		return false
	}
	if e.Offload == fpMark {
		return true
	}
	if e.Offload != 0 || e.Gen != g.ID || e.Backend != r.ID || s.Chained(p.Hash) {
		return false
	}
	switch e.State {
	case flow.StateEstablished:
	case flow.StateUDP:
		if !p.HadEntry {
			return false
		}
	default:
		return false
	}
	if !s.FastpathClient(&p.Key.Src) {
		return false
	}
	op := offload.Op{Key: p.Key, Gen: g.ID, Real: r.ID, Sport: encap.SrcPort(p.Hash), Label: encap.FlowLabel(p.Hash)}
	if !w.fp.Push(&op) {
		return false
	}
	e.Offload = fpMark
	w.fpQueued = true
	return true
}
