package datapath

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"

	"github.com/sluicelb/sluice/internal/nat"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// natSeed seeds the workers' reply tables. It is the node's own (replies
// come back to the worker that made the binding) and fixed, so that
// node.seed may change while bindings live.
const natSeed = 0x6e61745f72657673

// setupNAT gives every worker its full-NAT state when the node has SNAT
// addresses: worker i owns share i of the layout (dealt over all workers),
// and its flow table reports removed entries so that their bindings go
// with them.
func setupNAT(workers []*Worker, snat []netip.Addr, l nat.Layout) error {
	if len(snat) == 0 {
		return nil
	}
	if l == (nat.Layout{}) {
		l = nat.DefaultLayout(len(workers))
	}
	l.Workers = len(workers)
	if err := l.Validate(); err != nil {
		return fmt.Errorf("datapath: SNAT ports: %w", err)
	}
	for i, w := range workers {
		s, err := pipeline.NewNATState(snat, l, i, natSeed)
		if err != nil {
			return fmt.Errorf("datapath: SNAT: %w", err)
		}
		w.ctx.NAT = s
		w.flows.OnRemove(s.Removed)
		w.natTx = make([]link.Frame, 0, 1) // a held fragment's frame
		if len(workers) > 1 {
			w.natPeers, w.natIndex, w.natLayout = workers, i, l
			w.natIn = &natInbox{fill: newNATSlots(), read: newNATSlots()}
			w.natTx = make([]link.Frame, 0, natInboxSlots) // a drained inbox's frames
		}
	}
	return nil
}

// Full-NAT with several workers. A flow's binding is made by the worker its
// client's packets reach, from that worker's share of the SNAT ports; the
// backend's replies to the SNAT address may reach any worker (the NIC, or
// the veth, hashes them on their own tuple). A worker that receives a
// reply (or an ICMP error quoting the node's packet) to a port another
// worker owns (nat.Layout.Owner) copies it into the owner's inbox; the
// owner translates it at its next poll and sends it through a frame its
// link lends (link.Injector) — out of the interface the client's packets
// came in by. NIC steering by port (Layout.SteeringMask) would make the
// copy unnecessary; the inbox works on any NIC.
const (
	natInboxSlots = 256 // replies waiting per worker (two sets: one filled, one drained)
)

// natInbox is a worker's inbox of replies other workers received. Producers
// fill one set under mu; the owner swaps the sets under mu and drains the
// other without it.
type natInbox struct {
	mu   sync.Mutex
	fill natSlots
	read natSlots
}

type natSlots struct {
	bufs [][]byte // holdHeadroom + holdFrameMax each
	lens []int
	n    int
}

func newNATSlots() natSlots {
	s := natSlots{bufs: make([][]byte, natInboxSlots), lens: make([]int, natInboxSlots)}
	mem := make([]byte, natInboxSlots*(holdHeadroom+holdFrameMax))
	for i := range s.bufs {
		s.bufs[i] = mem[i*(holdHeadroom+holdFrameMax) : (i+1)*(holdHeadroom+holdFrameMax)]
	}
	return s
}

// put copies frame into the inbox; false when it is full or the frame too
// long.
func (in *natInbox) put(frame []byte) bool {
	if len(frame) > holdFrameMax {
		return false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	s := &in.fill
	if s.n == natInboxSlots {
		return false
	}
	s.lens[s.n] = copy(s.bufs[s.n][holdHeadroom:], frame)
	s.n++
	return true
}

// take swaps the sets and returns the one to drain (n replies), or nil.
func (in *natInbox) take() *natSlots {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.fill.n == 0 {
		return nil
	}
	in.fill, in.read = in.read, in.fill
	in.fill.n = 0
	return &in.read
}

// natPeer returns the worker that owns the SNAT port a packet to an SNAT
// address names (p.Key.DstPort: a reply's destination port, or the source
// port of the packet an ICMP error quotes), when it is another worker.
func (w *Worker) natPeer(p *pipeline.Packet) *Worker {
	if w.natPeers == nil {
		return nil
	}
	o := w.natLayout.Owner(p.Key.DstPort)
	if o < 0 || o == w.natIndex {
		return nil
	}
	return w.natPeers[o]
}

// serveNATInbox translates and sends the replies other workers handed to
// this one. It runs at every poll, before the batch.
func (w *Worker) serveNATInbox(g *pipeline.Generation, now uint32) {
	s := w.natIn.take()
	if s == nil {
		return
	}
	w.ctx.Gen, w.ctx.Now = g, now
	c := &w.counters
	q := &w.heldPkt
	for i := range s.n {
		q.Buf, q.Off, q.Len = s.bufs[i], holdHeadroom, s.lens[i]
		if pipeline.Prepare(q, g) {
			pipeline.NATReply{}.Process(&w.ctx, w.heldPkts[:])
			if q.Verdict == pipeline.Forward && q.Parsed.Frag == packet.FirstFragment && !q.ICMPError && g.Fragments {
				w.firstReplyFragment(q, g, now) // its later fragments follow it here
			}
			if q.Verdict == pipeline.Continue && q.ICMPError {
				// An error about a flow's packet to its client, handed to
				// every worker: the one with the flow sends it on.
				e := w.flows.Lookup(&q.Key, q.Hash)
				if e == nil {
					continue // another worker's flow, or no one's
				}
				if pipeline.Hit(q, e, g) {
					q.NATAddr, q.NATPort = e.NATAddr, e.NATPort
					w.chain.RunCached(&w.ctx, w.heldPkts[:])
				} else {
					w.chain.Run(&w.ctx, w.heldPkts[:])
				}
			}
		} else if q.Reason == pipeline.ReasonFragment && g.Fragments {
			w.laterReplyFragment(q, now, false) // after its first fragment
		} else {
			c.Drops[q.Reason]++
			continue
		}
		switch {
		case q.Verdict != pipeline.Forward:
			c.Drops[q.Reason]++
		case !w.lend(q, &w.natTx):
			w.ctx.NAT.Counters.HandoffDropped++
		}
	}
	s.n = 0
	if len(w.natTx) > 0 {
		sent, _ := w.link.Send(w.natTx)
		c.TxPackets += uint64(sent)
		c.TxErrors += uint64(len(w.natTx) - sent)
		w.natTx = w.natTx[:0]
	}
}

// lend copies the finished frame q into a frame the link lends and appends
// it to tx for Send; false when the link lends none (or is no Injector).
func (w *Worker) lend(q *pipeline.Packet, tx *[]link.Frame) bool {
	if w.inj == nil {
		return false
	}
	f := &w.lent[0]
	if !w.inj.Alloc(f) {
		return false
	}
	if q.Len > len(f.Buf) {
		w.link.Release(w.lent[:])
		return false
	}
	f.Off, f.Len = 0, copy(f.Buf, q.Buf[q.Off:q.Off+q.Len])
	*tx = append(*tx, *f)
	w.counters.TxBytes += uint64(q.Len)
	if q.Real != nil {
		rc := &w.counters.Reals[q.Real.ID]
		rc.Packets++
		rc.Bytes += uint64(q.Len)
	}
	return true
}

// Fragments of full-NAT replies. The first fragment carries the ports and
// is translated by its binding like any reply; the worker remembers, per
// datagram, which binding that was, and translates the later fragments
// (addresses only) by it. With several workers, a worker that hands a
// first fragment off to its port's owner remembers that, and hands the
// datagram's later fragments it receives to the same owner (after the
// first, in its inbox). Later fragments that arrive before their first,
// or at a worker that saw neither translation nor hand-off of it, are
// dropped (fragment).

// firstReplyFragment remembers the binding of the full-NAT reply p (a
// first fragment, translated): its destination was S:sp.
func (w *Worker) firstReplyFragment(p *pipeline.Packet, g *pipeline.Generation, now uint32) {
	s := w.ctx.NAT
	addr := -1
	for i := range s.Pool.NumAddrs() {
		if *s.Pool.Addr(i) == p.Key.Dst {
			addr = i
		}
	}
	if addr < 0 {
		return
	}
	var k flow.Key
	pipeline.FragmentKey(&k, &p.Parsed)
	w.frags.insert(&k, k.Hash(g.Seed), fragDecision{reply: true, natAddr: uint8(addr), natPort: p.Key.DstPort, proto: p.Key.Proto}, now)
}

// icmpToPeers hands the batch's ICMP errors to a full-NAT VIP that quote a
// flow this worker has no entry for (NATBind dropped them: icmp) to every
// other worker: the flow's client packets reach the worker whose hash they
// have, the error the worker whose hash its outer addresses have, and
// nothing in it names the worker with the flow (unlike a reply's SNAT
// port).
func (w *Worker) icmpToPeers() {
	s := &w.ctx.NAT.Counters
	for _, p := range w.miss {
		if !p.ICMPError || p.Verdict != pipeline.Drop || p.Reason != pipeline.ReasonICMP ||
			p.Real == nil || p.Real.NAT == nil || w.flows.Lookup(&p.Key, p.Hash) != nil {
			continue
		}
		p.Verdict, p.Reason = pipeline.Held, pipeline.ReasonNone // copied, or dropped
		for _, o := range w.natPeers {
			if o == w {
				continue
			}
			if o.natIn.put(p.Buf[p.Off : p.Off+p.Len]) {
				s.HandedOff++
			} else {
				s.HandoffDropped++
			}
		}
	}
}

// handedOffFirst remembers that the first fragment p of a full-NAT reply
// was handed off to worker o, for its later fragments to follow.
func (w *Worker) handedOffFirst(p *pipeline.Packet, o *Worker, g *pipeline.Generation, now uint32) {
	var k flow.Key
	pipeline.FragmentKey(&k, &p.Parsed)
	w.frags.insert(&k, k.Hash(g.Seed), fragDecision{reply: true, handoff: true, backend: uint32(o.natIndex)}, now)
}

// laterReplyFragment translates p, a later fragment to an SNAT address, by
// the binding its first fragment was translated by, or, when its first
// fragment was handed off (and handOff), hands it to the same worker.
func (w *Worker) laterReplyFragment(p *pipeline.Packet, now uint32, handOff bool) {
	e := w.frags.lookup(&p.Key, p.Hash, now)
	if e == nil || !e.reply || e.handoff && !handOff {
		p.Verdict, p.Reason = pipeline.Drop, pipeline.ReasonFragment
		return
	}
	if e.handoff {
		p.Verdict, p.Reason = pipeline.Held, pipeline.ReasonNone // copied, or dropped
		if w.natPeers[e.backend].natIn.put(p.Buf[p.Off : p.Off+p.Len]) {
			w.ctx.NAT.Counters.HandedOff++
		} else {
			w.ctx.NAT.Counters.HandoffDropped++
		}
		return
	}
	p.Verdict, p.Reason = pipeline.Continue, pipeline.ReasonNone
	pipeline.NATReplyFragment(&w.ctx, p, e.natAddr, e.natPort, e.proto)
	if p.Verdict == pipeline.Forward {
		w.counters.FragmentsFollowed++
	}
}
