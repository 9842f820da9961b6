package datapath

import (
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// Asking the owner chains. A packet of a chained flow (pipeline.Service
// Chained) that has no entry in the worker's table and does not start a
// TCP connection may belong to a connection another LB node decided: the
// router moved the flow here (a node died, joined, or the router rehashed)
// while the service's backends changed. Balance hands it to the worker's
// asker, which copies it into a small hold and queues a question for the
// node's cluster member (a pipeline.Publish with Ask) naming the flow and
// this node's own decision. The node server asks the flow's chain, whose
// tail answers the flow's backend (or commits the proposal if the flow is
// new to the cluster), and queues the answer on the worker's AnswerQueue.
// At its next poll the worker creates the flow's entry with the answered
// backend and sends the held packets; later packets are flow-table hits.
// Without an answer within AskTimeout the worker decides locally, as
// without a cluster, and publishes that decision.
//
// Nothing blocks: a packet of a flow that cannot be asked about now (the
// table of flows being asked, or the queue, full: busy) or that cannot be
// held is dropped (ReasonChainHold); its sender retransmits it, and asks
// again once questions were answered. (A local decision would break the
// moved connections a burst of questions is made of.)
const (
	askWays     = 4
	askSets     = 1024 // askWays x askSets flows asked about at once per worker
	askHeldMax  = 256  // packets held per worker
	askPerFlow  = 8    // packets held per flow
	askFrameMax = 2048 // longer packets are not held (dropped; the sender retransmits)
	askSeed     = 0x9e3779b97f4a7c15
	// AskTimeout is how long, in milliseconds, a worker waits for a
	// chain's answer before it decides locally, unless Config.AskTimeout
	// says otherwise (the cluster member's own attempts, walking up the
	// chain when the tail does not answer, fit in it).
	AskTimeout = 100
)

// askFlow is a flow whose chain was asked, with the packets held for it.
type askFlow struct {
	key  flow.Key
	gen  uint32 // the generation whose stages (the firewall) let the packets through
	at   uint32 // flow clock when asked
	live bool
	n    uint8              // packets held
	held [askPerFlow]uint16 // indexes into asker.bufs
}

// asker is a worker's pipeline.Asker and the state of its questions. It is
// owned by the worker goroutine; only the two queues are shared with the
// node server.
type asker struct {
	w       *Worker
	out     *pipeline.PublishQueue
	answers *pipeline.AnswerQueue
	timeout uint32 // ms
	notify  func() // Config.AskNotify; nil: none

	sets    [askSets][askWays]askFlow
	bufs    [][]byte // askHeldMax copies: holdHeadroom + askFrameMax bytes each
	lens    []int
	free    []uint16 // indexes of free bufs
	pending int      // live askFlows
	sweep   int
	pkt     pipeline.Packet // a held packet on its way out
	pkts    [1]*pipeline.Packet
	tx      []link.Frame // frames lent by the link for released packets
}

func newAsker(w *Worker, out *pipeline.PublishQueue, answers *pipeline.AnswerQueue) *asker {
	a := &asker{w: w, out: out, answers: answers, timeout: AskTimeout,
		bufs: make([][]byte, askHeldMax), lens: make([]int, askHeldMax), free: make([]uint16, askHeldMax),
		tx: make([]link.Frame, 0, askHeldMax)}
	mem := make([]byte, askHeldMax*(holdHeadroom+askFrameMax))
	for i := range a.bufs {
		a.bufs[i] = mem[i*(holdHeadroom+askFrameMax) : (i+1)*(holdHeadroom+askFrameMax)]
		a.free[i] = uint16(askHeldMax - 1 - i)
	}
	a.pkts[0] = &a.pkt
	return a
}

func (a *asker) set(k *flow.Key) *[askWays]askFlow {
	return &a.sets[k.Hash(askSeed)%askSets]
}

// find returns the live askFlow of k, or nil.
func (a *asker) find(k *flow.Key) *askFlow {
	s := a.set(k)
	for i := range s {
		if f := &s[i]; f.live && f.key == *k {
			return f
		}
	}
	return nil
}

// Ask implements pipeline.Asker. It sets p's verdict when it takes the
// packet: Held, or Drop (ReasonChainHold) when the flow is being asked
// about but the packet cannot be held.
func (a *asker) Ask(p *pipeline.Packet, svc *pipeline.Service, proposal *pipeline.Real) bool {
	c := &a.w.counters.Chain
	f := a.find(&p.Key)
	if f == nil {
		s := a.set(&p.Key)
		for i := range s {
			if !s[i].live {
				f = &s[i]
				break
			}
		}
		if f == nil || !a.out.Push(&pipeline.Publish{Key: p.Key, Service: svc.ClusterID, Ask: true, Backend: proposal.ClusterID}) {
			// No room to ask now (a burst of moved flows): the packet is
			// dropped, not decided locally — a local decision would break a
			// moved connection — and its sender's retransmission asks
			// again once questions were answered.
			c.Busy++
			p.Verdict, p.Reason = pipeline.Drop, pipeline.ReasonChainHold
			return true
		}
		f.key, f.gen, f.at, f.live, f.n = p.Key, a.w.ctx.Gen.ID, a.w.ctx.Now, true, 0
		a.pending++
		c.Asked++
		if a.notify != nil {
			a.notify()
		}
	}
	if f.n == askPerFlow || len(a.free) == 0 || p.Len > askFrameMax {
		p.Verdict, p.Reason = pipeline.Drop, pipeline.ReasonChainHold
		return true
	}
	i := a.free[len(a.free)-1]
	a.free = a.free[:len(a.free)-1]
	a.lens[i] = copy(a.bufs[i][holdHeadroom:], p.Buf[p.Off:p.Off+p.Len])
	f.held[f.n] = i
	f.n++
	c.Held++
	p.Verdict = pipeline.Held
	return true
}

// serve takes the answers the node server queued, decides the flows whose
// answers are overdue, and sends their held packets. It runs at every poll,
// before the batch.
func (a *asker) serve(g *pipeline.Generation, now uint32) {
	w := a.w
	w.ctx.Gen, w.ctx.Now = g, now
	if len(w.counters.Reals) < len(g.Reals) {
		w.counters.Reals = append(w.counters.Reals, make([]RealCounters, len(g.Reals)-len(w.counters.Reals))...)
	}
	if a.answers.Len() > 0 {
		a.answers.Drain(func(r *pipeline.ChainAnswer) { a.answer(r, g, now) })
	}
	if a.pending > 0 {
		for range askSets { // 4096 small records, while any is pending
			s := &a.sets[a.sweep]
			for i := range s {
				if f := &s[i]; f.live && now-f.at >= a.timeout {
					w.counters.Chain.Timeouts++
					a.decide(f, nil, g, now)
				}
			}
			a.sweep = (a.sweep + 1) % askSets
		}
	}
	if len(a.tx) > 0 {
		sent, _ := w.link.Send(a.tx)
		w.counters.TxPackets += uint64(sent)
		w.counters.TxErrors += uint64(len(a.tx) - sent)
		a.tx = a.tx[:0]
	}
}

// answer handles the chain's answer about r.Key: it decides the flow if
// this worker asked about it, or corrects the entry of a flow it published
// if the chain committed another backend (another node inserted it first).
func (a *asker) answer(r *pipeline.ChainAnswer, g *pipeline.Generation, now uint32) {
	w := a.w
	if f := a.find(&r.Key); f != nil {
		a.decide(f, r, g, now)
		return
	}
	if !r.OK {
		return
	}
	e := w.flows.Lookup(&r.Key, r.Key.Hash(g.Seed))
	if e == nil {
		return
	}
	had := g.RealByID(e.Backend)
	if had == nil {
		return
	}
	svc := g.Services[had.Service]
	if real := svc.RealByClusterID(r.Backend); real != nil && real.ID != e.Backend {
		e.Backend = real.ID
		w.counters.Chain.Corrected++
	}
}

// decide gives f's flow its backend — the chain's answer r, or (r nil or
// not usable) this node's own decision, which is then published — creates
// its entry, and sends the packets held for it.
func (a *asker) decide(f *askFlow, r *pipeline.ChainAnswer, g *pipeline.Generation, now uint32) {
	w := a.w
	c := &w.counters.Chain
	svc := g.LookupTenant(f.key.Tenant, f.key.Dst, f.key.Proto, f.key.DstPort)
	var real, secondary *pipeline.Real
	if svc != nil {
		hash := f.key.Hash(g.Seed)
		local := true
		switch {
		case r == nil: // counted as a timeout by the caller
		case !r.OK:
			c.Failed++
		default:
			if real = svc.RealByClusterID(r.Backend); real != nil {
				local = false
				c.Answered++
			} else {
				c.Unknown++
			}
		}
		var d pipeline.Decision
		if svc.Table != nil {
			d = g.Decide(svc, &pipeline.Query{Hash: hash}, nil)
		}
		if !local && d.Real != real {
			c.Moved++
		}
		if local {
			real = svc.ChainProposal(hash, d.Real) // what the chain would have committed
		}
		if local && real != nil && real == d.Real && d.Why == pipeline.WhySecondChance {
			// Decided here: the slot's owner, which second chance covers:
			// the hop list, and no entry while the slot has a secondary (as
			// balance). An answer is the chain's: it makes the entry.
			secondary = d.Secondary
		}
		if real != nil && secondary == nil && !svc.Stateless {
			if e, found := w.flows.LookupOrInsert(&f.key, hash, now); e != nil {
				if !found {
					e.State = flow.StateUDP
					if f.key.Proto == packet.ProtoTCP {
						e.State = flow.StateEstablished
					}
				}
				// The entry is current only if the generation that let the
				// packets through still is: otherwise the flow's next packet
				// runs every stage (the firewall of g) and finds the entry.
				e.Backend, e.Gen, e.LastSeen = real.ID, f.gen, now
				if local && svc.Chained(hash) && w.ctx.Publish != nil {
					w.ctx.Publish.Push(&pipeline.Publish{Key: f.key, Service: svc.ClusterID, Backend: real.ClusterID})
				}
			}
		}
	}
	wait := now - f.at
	b := 0
	for b < len(AskWaitBounds) && wait > AskWaitBounds[b] {
		b++
	}
	c.Wait[b]++
	c.WaitSum += uint64(wait)
	stale := f.gen != g.ID // the held packets passed an older generation's stages
	for _, i := range f.held[:f.n] {
		if real != nil {
			a.release(i, real, secondary, g, now, stale)
		} else {
			w.counters.Drops[pipeline.ReasonNoBackend]++
		}
		a.free = append(a.free, i)
	}
	f.live, f.n = false, 0
	a.pending--
}

// release sends held packet i to real (with the hop list [real, secondary]
// if secondary is set): through a frame the link lends (link.Injector), or
// through the kernel (link.Spill) for GUE.
func (a *asker) release(i uint16, real, secondary *pipeline.Real, g *pipeline.Generation, now uint32, stale bool) {
	w := a.w
	q := &a.pkt
	q.Buf, q.Off, q.Len = a.bufs[i], holdHeadroom, a.lens[i]
	if !pipeline.Prepare(q, g) {
		w.counters.Drops[q.Reason]++
		return
	}
	if stale {
		// A generation applied while the packet was held may deny it: its
		// firewall decides before the packet leaves.
		if q.Service = g.LookupTenant(q.Key.Tenant, q.Key.Dst, q.Key.Proto, q.Key.DstPort); q.Service != nil {
			pipeline.Firewall{}.Process(&w.ctx, a.pkts[:])
		}
		if q.Verdict != pipeline.Continue {
			w.counters.Drops[q.Reason]++
			return
		}
	}
	q.Real, q.Secondary = real, secondary
	if e := w.flows.Lookup(&q.Key, q.Hash); e != nil && e.Backend == real.ID {
		e.Observe(q.Parsed.TCPFlags, now)
	}
	w.chain.RunCached(&w.ctx, a.pkts[:])
	switch q.Verdict {
	case pipeline.Forward:
		if !a.inject(q) && !a.spill(q, g, now) {
			return
		}
	case pipeline.Spill:
		if !a.spill(q, g, now) {
			return
		}
	case pipeline.Reply:
		if !a.inject(q) {
			w.counters.Drops[pipeline.ReasonChainHold]++
			return
		}
		w.counters.TooBigAnswered++
		return
	default:
		w.counters.Drops[q.Reason]++
		return
	}
	w.counters.Chain.Released++
}

// spill sends the finished frame q through the kernel (GUE only); false
// when it could not (counted).
func (a *asker) spill(q *pipeline.Packet, g *pipeline.Generation, now uint32) bool {
	if a.w.spill == nil {
		a.w.counters.Drops[pipeline.ReasonChainHold]++
		return false
	}
	return a.w.sendSpill(q, g, now)
}

// inject copies the finished frame q into a frame the link lends and
// queues it for Send; false when the link lends none (or is no Injector).
func (a *asker) inject(q *pipeline.Packet) bool { return a.w.lend(q, &a.tx) }
