package datapath

import (
	"context"
	"time"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/maglev"
	"github.com/sluicelb/sluice/internal/offload"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// The offloaded flow cache, the worker's side. After the stages ran, a
// forwarded packet whose flow may be offloaded has its entry installed in
// the kernel (an Op on the worker's ring): a TCP flow once established, a
// UDP flow from its second packet. A closing TCP flow, and an entry that
// leaves the table (reaped, evicted, deleted), is removed. What is never
// offloaded: full-NAT flows' replies (their client's direction is, with
// the flow's binding), hop lists and the flows of the slots a
// second-chance service's change in flight gives another owner, services
// without flow entries (stateless, QUIC by connection ID), flows that use
// the cluster's owner chains (affinity always; on-change: the slots that
// change owner while the change is in flight), ICMP errors, fragments,
// tagged or tenant (VXLAN) frames.

// offMark is the Entry.Offload note of an install in generation gen:
// 1..126 (127 is fpDeclined).
func offMark(gen uint32) uint8 { return uint8(gen%126) + 1 }

// offInKernel reports whether the Entry.Offload note o says the flow was
// queued for the kernel (not none, fpMark or fpDeclined).
func offInKernel(o uint8) bool { return o != 0 && o != fpMark && o != fpDeclined }

const offSeen = 0x80 // Entry.Offload: a packet reached the worker since the install

// offloadFlow installs or removes p's flow in the kernel as its entry says.
// It does not allocate and makes no system call.
func (w *Worker) offloadFlow(p *pipeline.Packet, g *pipeline.Generation) {
	r := p.Real
	if (r.Template == nil && r.NAT == nil) || p.Secondary != nil || p.ICMPError || p.Key.Tenant != 0 ||
		p.Parsed.Frag != packet.NotFragment || p.Parsed.L3Off != packet.EthernetHeaderLen || r.ID >= offload.MaxReals ||
		r.Service >= len(g.Services) {
		return
	}
	s := g.Services[r.Service]
	if s.QUIC != nil || s.Stateless || s.Chained(p.Hash) {
		return
	}
	if s.SecondChance && s.InFlight {
		// A slot whose owner the change in flight moves: its flows stay
		// in Go while the change lasts.
		if owner, prev := s.Table.Slot(p.Hash); prev != owner && prev != maglev.NoBackend {
			return
		}
	}
	e := w.flows.Lookup(&p.Key, p.Hash)
	if e == nil || e.Gen != g.ID || e.Backend != r.ID || e.Offload == fpMark {
		return
	}
	switch e.State {
	case flow.StateEstablished:
	case flow.StateUDP:
		if !p.HadEntry { // a UDP flow's first packet
			return
		}
	case flow.StateClosing:
		if offInKernel(e.Offload) && w.offDelete(e) {
			e.Offload = 0
		}
		return
	default:
		return
	}
	if w.capture.Load() != nil {
		return // a capture pauses the offload (Datapath.offloadCapture)
	}
	mark := offMark(g.ID)
	if e.Offload&^offSeen == mark && e.Offload&offSeen == 0 {
		// Installed: this packet was on its way before the install landed
		// (or the kernel's LRU dropped the entry: the next one reinstalls).
		e.Offload |= offSeen
		return
	}
	op := offload.Op{Key: p.Key, Gen: g.ID, Real: r.ID, Sport: encap.SrcPort(p.Hash), Label: encap.FlowLabel(p.Hash)}
	if r.NAT != nil {
		// Full-NAT: the client's direction is rewritten in the kernel with
		// the flow's binding; the backend's replies still come to Go.
		if e.NATPort == 0 || e.NATAddr >= offload.MaxSNAT || int(e.NATAddr) >= len(r.NAT.Templates) ||
			r.NAT.Templates[e.NATAddr] == nil {
			return
		}
		op.NAT, op.NATAddr, op.Sport, op.Label = true, e.NATAddr, e.NATPort, 0
	}
	if w.off.Push(&op) {
		e.Offload = mark
		w.offQueued = true
	}
}

// offPendingMax bounds the deletes a worker keeps when its ring is full.
const offPendingMax = 256

// offDelete queues the removal of e's flow from the kernel. A delete the
// full ring refuses is kept (up to offPendingMax) and queued again after
// the next batch: a flow the worker forgot must not stay in the kernel,
// where a new connection on the same 5-tuple would meet it. It reports
// whether the delete was queued or kept.
func (w *Worker) offDelete(e *flow.Entry) bool {
	op := offload.Op{Key: e.Key, Del: true}
	if w.offPendingN == 0 && w.off.Push(&op) {
		w.offQueued = true
		return true
	}
	if w.offPendingN == offPendingMax {
		w.counters.Offload.DeletesLost++
		return false
	}
	w.offPending[w.offPendingN] = e.Key
	w.offPendingN++
	return true
}

// offFlush queues again the deletes the ring refused and wakes the syncer
// if the worker queued anything; after every batch and idle poll.
func (w *Worker) offFlush() {
	if w.offPendingN > 0 {
		w.offRetry()
	}
	if w.offQueued {
		w.offQueued = false
		w.offWake()
	}
}

// offRetry queues the deletes the ring refused before, in order.
func (w *Worker) offRetry() {
	i := 0
	for ; i < w.offPendingN; i++ {
		op := offload.Op{Key: w.offPending[i], Del: true}
		if !w.off.Push(&op) {
			break
		}
		w.offQueued = true
	}
	n := copy(w.offPending[:], w.offPending[i:w.offPendingN])
	w.offPendingN = n
}

// offRemoved is the flow table's removal hook with the offload: the flow's
// kernel entry goes with it.
func (w *Worker) offRemoved(e *flow.Entry) {
	if offInKernel(e.Offload) {
		w.offDelete(e)
	}
}

// refreshChunk is how many flows one request to a worker refreshes: the
// worker stops forwarding while it runs (a few hundred microseconds).
const refreshChunk = 4096

// refreshLoop marks, every d.refresh, the workers' entries of the flows the
// kernel forwarded since as seen, so that the reaper keeps them.
func (d *Datapath) refreshLoop(ctx context.Context) {
	t := time.NewTicker(d.refresh)
	defer t.Stop()
	var keys []flow.Key
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		keys = d.RefreshOffloaded(keys[:0])
	}
}

// RefreshOffloaded marks the workers' entries of the flows the kernel
// forwarded a packet of within the last refresh period as seen now. It
// uses keys as its buffer and returns it. Run calls it periodically.
func (d *Datapath) RefreshOffloaded(keys []flow.Key) []flow.Key {
	g := d.gen.Load()
	if d.syncer == nil || g == nil {
		return keys
	}
	keys, err := d.syncer.Kernel().Active(keys, d.refresh)
	if err != nil {
		d.offErr.Store(&err)
	}
	d.touch(keys, func(e *flow.Entry) bool { return e.Offload != 0 })
	return keys
}

// touch marks the workers' entries of keys for which ok holds as seen now,
// refreshChunk keys per request to a worker.
func (d *Datapath) touch(keys []flow.Key, ok func(*flow.Entry) bool) {
	d.each(keys, func(w *Worker, e *flow.Entry) {
		if ok(e) {
			e.LastSeen = w.clock.Now()
		}
	})
}

// each calls fn on the workers' entries of keys, on each worker's own
// goroutine, refreshChunk keys per request to a worker.
func (d *Datapath) each(keys []flow.Key, fn func(w *Worker, e *flow.Entry)) {
	g := d.gen.Load()
	if g == nil {
		return
	}
	for i := 0; i < len(keys); i += refreshChunk {
		chunk := keys[i:min(i+refreshChunk, len(keys))]
		for _, w := range d.workers {
			w.do(func() {
				for j := range chunk {
					k := &chunk[j]
					if e := w.flows.Lookup(k, k.Hash(g.Seed)); e != nil {
						fn(w, e)
					}
				}
			})
		}
	}
}
