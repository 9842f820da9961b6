package datapath

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/sluicelb/sluice/internal/firewall"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/nat"
	"github.com/sluicelb/sluice/internal/offload"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// Reap budgets: slots of the flow table the reaper examines after each busy
// batch and after each idle poll.
const (
	reapBusy = 64
	reapIdle = 4096
)

// Worker forwards the packets of one link.
type Worker struct {
	// Immutable after newWorker.
	link  link.Link
	chain *pipeline.Chain
	gen   *atomic.Pointer[pipeline.Generation]
	clock *flow.Clock
	spill link.Spill    // nil: no spilling (ReasonTooBig), no held fragments
	inj   link.Injector // the link, if it lends frames for held packets

	// Owned by the worker goroutine.
	flows    *flow.Table
	frames   []link.Frame
	pkts     []pipeline.Packet
	hashes   []uint64 // of the batch's valid packets, for Prefetch
	valid    []*pipeline.Packet
	miss     []*pipeline.Packet
	hit      []*pipeline.Packet
	tx       []link.Frame
	drop     []link.Frame
	counters Counters
	ctx      pipeline.Context
	// Fragments: the backend of each recent datagram's first fragment,
	// later fragments waiting for theirs, and this batch's later
	// fragments that follow a known first one.
	frags       fragTable
	held        holdQueue
	later       []*pipeline.Packet   // this batch's later fragments
	fragHit     []*pipeline.Packet   // ... that follow a known first fragment
	spillBudget pipeline.TokenBucket // packets through the kernel
	heldPkt     pipeline.Packet      // a held fragment on its way out
	heldPkts    [1]*pipeline.Packet  // &heldPkt, for the chain
	// ask holds the packets of flows whose owner chain is asked (nil
	// without a cluster).
	ask *asker
	// Fragments across the nodes of a cluster (relay.go; owners nil
	// without one): the owners of datagrams, the node's own relay, the
	// source of what the worker sends to other nodes' relays, and a
	// decision message being sent.
	owners   FragmentOwners
	relay    *Relay
	relaySrc [16]byte
	decision [relayDecisionLen]byte
	// Full-NAT with several workers (nat.go; natPeers nil with one): every
	// worker, this one's index and the port layout, this worker's inbox of
	// replies others received for its ports, its frames on their way out.
	natPeers  []*Worker
	natIndex  int
	natLayout nat.Layout
	natIn     *natInbox
	natTx     []link.Frame
	lent      [1]link.Frame // a frame the link lends (lend)
	// capture is the running capture (capture.go; nil: none), index this
	// worker's ring in it, capMark which packets of the batch it matched.
	capture   atomic.Pointer[capture]
	index     int
	capMark   []bool
	capMarked int // how many
	// The offloaded flow cache (offload.go; off nil without one): the
	// ring of installs and deletes the Syncer takes to the kernel, and
	// how to wake it once a batch queued some.
	off       *offload.Ring
	offWake   func()
	offQueued bool
	// fp queues the flows offered to their client hosts' agents
	// (fastpath.go); nil without Config.Fastpath.
	fp       *offload.Ring
	fpWake   func()
	fpQueued bool
	// Deletes the full ring refused, queued again after each batch
	// (those lost because this was full too: Counters.Offload.DeletesLost).
	offPending  *[offPendingMax]flow.Key
	offPendingN int

	// Requests (Snapshot, Query), run between batches.
	snapMu  sync.Mutex    // serialises requesters and the worker's start
	req     chan func()   // one request at a time (snapMu)
	ack     chan struct{} // the worker ran the request
	done    chan struct{} // closed when run returns
	running atomic.Bool
}

func newWorker(l link.Link, chain *pipeline.Chain, gen *atomic.Pointer[pipeline.Generation], clock *flow.Clock, flows *flow.Table, spill link.Spill) *Worker {
	n := l.BatchSize()
	w := &Worker{
		link: l, chain: chain, gen: gen, clock: clock, flows: flows, spill: spill,
		later:   make([]*pipeline.Packet, 0, n),
		fragHit: make([]*pipeline.Packet, 0, n),
		frames:  make([]link.Frame, n),
		pkts:    make([]pipeline.Packet, n),
		hashes:  make([]uint64, 0, n),
		valid:   make([]*pipeline.Packet, 0, n),
		miss:    make([]*pipeline.Packet, 0, n),
		hit:     make([]*pipeline.Packet, 0, n),
		capMark: make([]bool, n),
		tx:      make([]link.Frame, 0, n),
		drop:    make([]link.Frame, 0, n),
		req:     make(chan func(), 1),
		ack:     make(chan struct{}),
		done:    make(chan struct{}),
	}
	w.ctx.Flows = flows
	w.ctx.CanSpill = spill != nil
	w.inj, _ = l.(link.Injector)
	w.heldPkts[0] = &w.heldPkt
	return w
}

// Flows returns the worker's flow table; only for the worker goroutine, or
// once the worker has stopped.
func (w *Worker) Flows() *flow.Table { return w.flows }

// Poll receives one batch and forwards it. It returns how many frames were
// received. It is the whole packet path; Run calls it in a loop.
func (w *Worker) Poll() (int, error) {
	n, err := w.link.Recv(w.frames)
	now := w.clock.Now()
	if w.held.n > 0 {
		w.counters.Drops[pipeline.ReasonFragmentTimeout] += uint64(w.held.expire(now))
	}
	w.frags.sweepSets(fragSweep, now)
	if w.ask != nil {
		if g := w.gen.Load(); g != nil {
			w.ask.serve(g, now)
		}
	}
	if w.natIn != nil {
		if g := w.gen.Load(); g != nil {
			w.serveNATInbox(g, now)
		}
	}
	if n == 0 {
		w.counters.Reaped += uint64(w.flows.Reap(now, reapIdle))
		if w.off != nil {
			w.offFlush()
		}
		return 0, err
	}
	w.process(n, now)
	w.counters.Reaped += uint64(w.flows.Reap(now, reapBusy))
	if w.off != nil {
		w.offFlush() // the reaper's deletes
	}
	return n, err
}

func (w *Worker) process(n int, now uint32) {
	g := w.gen.Load()
	if g == nil {
		w.link.Release(w.frames[:n])
		w.counters.Passed += uint64(n)
		return
	}
	if len(w.counters.Reals) < len(g.Reals) {
		w.counters.Reals = append(w.counters.Reals, make([]RealCounters, len(g.Reals)-len(w.counters.Reals))...)
	}
	c := &w.counters
	w.ctx.Gen, w.ctx.Now = g, now
	w.miss, w.hit = w.miss[:0], w.hit[:0]

	// Parse every frame first, then look the flows up in chunks: the table
	// prefetches a chunk's slots before any key is compared, so the cache
	// misses of a chunk overlap instead of following one another.
	w.hashes, w.valid, w.later, w.fragHit = w.hashes[:0], w.valid[:0], w.later[:0], w.fragHit[:0]
	for i := 0; i < n; i++ {
		f := &w.frames[i]
		p := &w.pkts[i]
		p.Buf, p.Off, p.Len = f.Buf, f.Off, f.Len
		c.RxPackets++
		c.RxBytes += uint64(f.Len)
		p.HadEntry = false
		if pipeline.Prepare(p, g) {
			w.hashes = append(w.hashes, p.Hash)
			w.valid = append(w.valid, p)
		} else if p.Reason == pipeline.ReasonFragment && g.Fragments {
			w.later = append(w.later, p) // after this batch's first fragments
		}
	}
	capt := w.capture.Load()
	if capt != nil {
		w.captureIngress(capt, n, now)
	}
	natReplies := 0
	for j := 0; j < len(w.valid); j += flow.PrefetchChunk {
		chunk := w.valid[j:min(j+flow.PrefetchChunk, len(w.valid))]
		w.flows.Prefetch(w.hashes[j : j+len(chunk)])
		// The entry pointers are used here, before any insert of this
		// batch can move them, and not kept.
		for _, p := range chunk {
			if w.ctx.NAT != nil && p.Key.Tenant == 0 && w.ctx.NAT.IsSNAT(&p.Key.Dst) {
				// A full-NAT reply (or an ICMP error about a packet the
				// node sent): it has no forward entry; nat_reply takes it,
				// here or in the worker that owns its port.
				if o := w.natPeer(p); o != nil {
					p.Verdict, p.Reason = pipeline.Held, pipeline.ReasonNone // copied, or dropped
					if o.natIn.put(p.Buf[p.Off : p.Off+p.Len]) {
						w.ctx.NAT.Counters.HandedOff++
						if g.Fragments && p.Parsed.Frag == packet.FirstFragment && !p.ICMPError {
							w.handedOffFirst(p, o, g, now)
						}
					} else {
						w.ctx.NAT.Counters.HandoffDropped++
					}
					continue
				}
				w.miss = append(w.miss, p)
				natReplies++
				continue
			}
			e := w.flows.Lookup(&p.Key, p.Hash)
			p.HadEntry = e != nil
			if e != nil && pipeline.Hit(p, e, g) {
				// Current entry: its memoised results stand.
				// (Service stays nil: only per-packet stages run now.)
				switch {
				case p.ICMPError:
				case p.Verdict == pipeline.Drop: // denied: stays short-lived
					e.LastSeen = now
				default:
					e.Observe(p.Parsed.TCPFlags, now)
				}
				w.hit = append(w.hit, p)
			} else {
				w.miss = append(w.miss, p)
			}
		}
	}
	c.FlowHits += uint64(len(w.hit))
	c.FlowMisses += uint64(len(w.miss) - natReplies)

	if len(w.miss) > 0 {
		w.chain.Run(&w.ctx, w.miss)
		if w.natPeers != nil {
			w.icmpToPeers()
		}
	}
	if len(w.hit) > 0 {
		w.chain.RunCached(&w.ctx, w.hit)
	}
	if g.Fragments {
		// First fragments decided in this batch first, so that later
		// fragments of the same batch follow them.
		for _, p := range w.valid {
			if p.Parsed.Frag != packet.FirstFragment || p.ICMPError {
				continue
			}
			switch {
			case p.Real != nil && (p.Verdict == pipeline.Forward || p.Verdict == pipeline.Spill):
				w.firstFragment(p, g, now)
			case p.Real == nil && p.Verdict == pipeline.Forward && w.ctx.NAT != nil:
				w.firstReplyFragment(p, g, now)
			}
		}
		for _, p := range w.later {
			w.laterFragment(p, g, now)
		}
		if len(w.fragHit) > 0 {
			w.chain.RunCached(&w.ctx, w.fragHit)
		}
	}

	w.tx, w.drop = w.tx[:0], w.drop[:0]
	for i := 0; i < n; i++ {
		p := &w.pkts[i]
		f := w.frames[i]
		if p.QUICRoute != pipeline.QUICNone {
			c.QUIC[p.QUICRoute]++
			if p.QUICUnknownServer {
				c.QUICUnknownServer++
			}
		}
		switch p.Verdict {
		case pipeline.Forward:
			f.Off, f.Len = p.Off, p.Len
			w.tx = append(w.tx, f)
			c.TxBytes += uint64(p.Len)
			if p.Real == nil { // a full-NAT reply, toward a client
				break
			}
			rc := &c.Reals[p.Real.ID]
			rc.Packets++
			rc.Bytes += uint64(p.Len)
			if p.Secondary != nil && p.Secondary.Template != nil {
				c.HopList++
			}
			if w.fp != nil && w.fastpathFlow(p, g) {
				break
			}
			if w.off != nil {
				w.offloadFlow(p, g)
			}
		case pipeline.Reply:
			f.Off, f.Len = p.Off, p.Len
			w.tx = append(w.tx, f)
			c.TxBytes += uint64(p.Len)
			c.TooBigAnswered++
		case pipeline.Spill:
			w.sendSpill(p, g, now)
			w.drop = append(w.drop, f)
		case pipeline.Held:
			w.drop = append(w.drop, f) // copied
		case pipeline.Pass:
			c.Passed++
			w.drop = append(w.drop, f)
		default:
			if p.Reason == pipeline.ReasonParse {
				c.Parse[p.Parsed.Verdict]++
			}
			c.Drops[p.Reason]++
			w.drop = append(w.drop, f)
		}
	}
	if capt != nil && capt.egress {
		w.captureEgress(capt, n, now)
	}
	if len(w.drop) > 0 {
		w.link.Release(w.drop)
	}
	if len(w.tx) > 0 {
		sent, _ := w.link.Send(w.tx)
		c.TxPackets += uint64(sent)
		c.TxErrors += uint64(len(w.tx) - sent)
	}
	if w.off != nil {
		w.offFlush()
	}
	if w.fpQueued {
		w.fpQueued = false
		w.fpWake()
	}
}

// laterFragment finds the backend of a later fragment's datagram: the one
// its first fragment went to. A fragment that follows one joins fragHit (it
// is encapsulated with the batch's flow hits); one that arrived first is
// held; otherwise it stays dropped (ReasonFragment).
func (w *Worker) laterFragment(p *pipeline.Packet, g *pipeline.Generation, now uint32) {
	if w.ctx.NAT != nil && p.Key.Tenant == 0 && w.ctx.NAT.IsSNAT(&p.Key.Dst) {
		w.laterReplyFragment(p, now, true)
		return
	}
	if !g.IsServiceAddr(p.Key.Dst) {
		p.Verdict, p.Reason = pipeline.Pass, pipeline.ReasonNone
		return
	}
	if e := w.frags.lookup(&p.Key, p.Hash, now); e != nil && !e.reply && int(e.backend) < len(g.Reals) && g.Reals[e.backend] != nil {
		if e.gen != g.ID && !stillAllowed(&e.fragDecision, g) {
			p.Verdict, p.Reason = pipeline.Drop, pipeline.ReasonFirewallDeny
			return
		}
		p.Real = g.Reals[e.backend]
		p.Hash = e.flowHash // the outer source port of the first fragment
		p.NATAddr, p.NATPort = e.natAddr, e.natPort
		p.Verdict, p.Reason = pipeline.Continue, pipeline.ReasonNone
		w.fragHit = append(w.fragHit, p)
		w.counters.FragmentsFollowed++
		return
	}
	// A full-NAT flow's fragments stay on the node (another node cannot
	// rewrite them to this one's SNAT address, and no decision of such a
	// flow goes to the owner): a later fragment to an address with a
	// full-NAT service is held here, as alone.
	if w.relayed(p) && !g.IsNATAddr(p.Key.Dst) && w.toOwner(p, g, now) {
		return
	}
	// Held fragments leave through the kernel (GUE, IPIP) or a frame the
	// link lends (full-NAT): without either they cannot be held.
	if (w.spill != nil || w.inj != nil) && w.held.put(p.Buf[p.Off:p.Off+p.Len], &p.Key, p.Hash, now) {
		p.Verdict, p.Reason = pipeline.Held, pipeline.ReasonNone
		w.counters.FragmentsHeld++
	}
}

// stillAllowed reports whether generation g lets the rest of a datagram
// whose first fragment an earlier generation let through (d) go on to the
// same backend: the flow's service is still there, with that backend, and
// its firewall allows the flow. It records g in d when so.
func stillAllowed(d *fragDecision, g *pipeline.Generation) bool {
	svc := g.LookupTenant(d.flow.Tenant, d.flow.Dst, d.flow.Proto, d.flow.DstPort)
	if svc == nil || g.Real(d.backend, svc) == nil {
		return false
	}
	if a, _ := g.Filter(svc, &d.flow); a != firewall.Allow {
		return false
	}
	d.gen = g.ID
	return true
}

// firstFragment remembers where a datagram's first fragment went, sends
// the datagram's held later fragments there and, in a cluster, tells the
// datagram's owner.
func (w *Worker) firstFragment(p *pipeline.Packet, g *pipeline.Generation, now uint32) {
	var k flow.Key
	pipeline.FragmentKey(&k, &p.Parsed)
	k.Tenant = p.Key.Tenant
	w.recordFirst(&k, fragDecision{flowHash: p.Hash, backend: p.Real.ID, natAddr: p.NATAddr, natPort: p.NATPort, flow: p.Key, gen: g.ID}, p.Real, g, now)
	// Not for an address with a full-NAT service: its later fragments stay
	// on their node (laterFragment), and another node could not rewrite
	// them to this one's SNAT address.
	if w.relayed(p) && !g.IsNATAddr(p.Key.Dst) {
		w.sendDecision(&k, p, g, now)
	}
}

// recordFirst remembers that datagram k's first fragment went to real (d)
// and sends the later fragments held for it.
func (w *Worker) recordFirst(k *flow.Key, d fragDecision, real *pipeline.Real, g *pipeline.Generation, now uint32) {
	w.frags.insert(k, k.Hash(g.Seed), d, now)
	if w.held.n == 0 {
		return
	}
	for i := range w.held.slots {
		hf := &w.held.slots[i]
		if hf.n == 0 || hf.key != *k { // (not the hash: the seed may have changed)
			continue
		}
		q := &w.heldPkt
		q.Buf, q.Off, q.Len = hf.buf, holdHeadroom, hf.n
		hf.n = 0
		w.held.n--
		pipeline.Prepare(q, g) // a later fragment: parsed, not classified
		q.Real, q.Hash = real, d.flowHash
		q.NATAddr, q.NATPort = d.natAddr, d.natPort
		q.Verdict, q.Reason = pipeline.Continue, pipeline.ReasonNone
		w.chain.RunCached(&w.ctx, w.heldPkts[:])
		if w.sendOut(q, g, now) {
			w.counters.FragmentsReleased++
		}
	}
}

// sendOut sends q, a fragment that is not in a link buffer, as the stages
// left it: through the kernel either way. It reports whether it went.
func (w *Worker) sendOut(q *pipeline.Packet, g *pipeline.Generation, now uint32) bool {
	switch {
	case q.Verdict == pipeline.Forward && q.Real.NAT != nil:
		// Rewritten in place, not encapsulated: a frame the link lends.
		if !w.lend(q, &w.natTx) {
			w.counters.Drops[pipeline.ReasonFragment]++
			return false
		}
		sent, _ := w.link.Send(w.natTx)
		w.counters.TxPackets += uint64(sent)
		w.counters.TxErrors += uint64(len(w.natTx) - sent)
		w.natTx = w.natTx[:0]
		return sent == 1
	case q.Verdict == pipeline.Forward || q.Verdict == pipeline.Spill:
		return w.sendSpill(q, g, now)
	default:
		w.counters.Drops[q.Reason]++
		return false
	}
}

// sendSpill sends an encapsulated packet's outer UDP payload through the
// kernel (which fragments it as needed), within the worker's rate for that
// path, and counts it as sent to its backend. It reports whether the kernel
// took it.
func (w *Worker) sendSpill(p *pipeline.Packet, g *pipeline.Generation, now uint32) bool {
	c := &w.counters
	t := p.Real.Template
	off := t.UDPPayloadOffset()
	switch {
	case w.spill == nil || off < 0: // IPIP has no UDP payload to hand over
		c.Drops[pipeline.ReasonTooBig]++
		return false
	case !w.spillBudget.Allow(now, g.SpillRate):
		c.Drops[pipeline.ReasonSpillLimited]++
		return false
	}
	var src, dst [16]byte = t.Src().As16(), t.Dst().As16()
	if err := w.spill.SendUDP(p.Buf[p.Off+off:p.Off+p.Len], src, dst, t.Is6(), t.Port()); err != nil {
		c.SpillErrors++
		return false
	}
	c.Spilled++
	c.TxBytes += uint64(p.Len)
	rc := &c.Reals[p.Real.ID]
	rc.Packets++
	rc.Bytes += uint64(p.Len)
	return true
}

// run polls until the link closes, answering snapshot requests between
// batches.
func (w *Worker) run() error {
	// Under snapMu, so that a Snapshot reading the counters directly
	// (worker not started) finishes before the first batch writes them.
	w.snapMu.Lock()
	w.running.Store(true)
	w.snapMu.Unlock()
	defer close(w.done)
	for {
		_, err := w.Poll()
		select {
		case fn := <-w.req:
			fn()
			w.ack <- struct{}{}
		default:
		}
		if err != nil {
			if errors.Is(err, link.ErrClosed) {
				return nil
			}
			return err
		}
	}
}

// Snapshot returns a copy of the worker's counters. While the worker runs it
// answers between two batches (within one link poll interval); once it has
// stopped the counters are read directly.
func (w *Worker) Snapshot() Counters {
	var c Counters
	w.do(func() {
		c = w.counters.clone()
		c.Flows = w.flows.Stats()
		if w.ctx.NAT != nil {
			c.NAT = w.ctx.NAT.Snapshot()
		}
		c.Firewall = w.ctx.FirewallHits.Snapshot()
	})
	return c
}

// Query runs fn on the worker's flow table, read-only: fn must not change
// the table or keep a pointer into it. While the worker runs fn runs on its
// goroutine between two batches (within one link poll interval), delaying
// the next batch by as long as fn takes; when it has not started or has
// stopped fn runs directly on the caller's.
func (w *Worker) Query(fn func(*flow.Table)) {
	w.do(func() { fn(w.flows) })
}

// do runs fn where the worker's state may be read: on the worker goroutine
// between batches while it runs, directly otherwise. It returns once fn
// has run, exactly once.
func (w *Worker) do(fn func()) {
	w.snapMu.Lock()
	defer w.snapMu.Unlock()
	if !w.running.Load() {
		fn() // never started
		return
	}
	select {
	case w.req <- fn:
	case <-w.done:
		fn()
		return
	}
	select {
	case <-w.ack:
	case <-w.done:
		// Stopped before taking the request (a request it takes is
		// acknowledged before done is closed): it never ran.
		fn()
	}
}
