package datapath

import (
	"errors"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// Packet capture from inside the datapath. A packet that AF_XDP takes never
// reaches the kernel's taps, so the workers copy what a capture asks for
// into a bounded ring each, which the capture's reader drains:
//
//   - A packet matches when its flow key (pipeline.Packet.Key: the inner
//     packet of a tenant's VXLAN, the quoted flow of an ICMP error) passes
//     the CaptureFilter; it is decided once, as the packet arrives.
//   - Ingress copies are the frame as received (before any stage rewrites
//     it); egress copies the frame as sent (encapsulated, or rewritten by
//     full-NAT), of the packets that matched as they arrived.
//   - No capture costs one atomic load and a branch per batch. A capture
//     costs a key comparison per packet and a copy per match; a ring that
//     is full drops the copy (counted, reported to the reader), never the
//     packet.
//
// Not copied: packets sent outside the batch (held fragments, packets held
// while an owner chain is asked, relayed fragments).

// CaptureFilter selects packets by their flow key; zero fields match
// anything.
type CaptureFilter struct {
	Proto  uint8        // packet.ProtoTCP, ProtoUDP, ...
	Tenant int          // a tenant's ID; -1: any
	Host   netip.Prefix // the source or the destination address
	Port   uint16       // the source or the destination port
	// Dst and DstPort select a service: its address and port (DstPort 0:
	// any).
	Dst     netip.Addr
	DstPort uint16
}

// Match reports whether k passes the filter.
func (f *CaptureFilter) Match(k *flow.Key) bool {
	if f.Proto != 0 && k.Proto != f.Proto || f.Tenant >= 0 && int(k.Tenant) != f.Tenant {
		return false
	}
	if f.Port != 0 && k.SrcPort != f.Port && k.DstPort != f.Port {
		return false
	}
	if f.Dst.IsValid() && (k.Dst != f.Dst.As16() || f.DstPort != 0 && k.DstPort != f.DstPort) {
		return false
	}
	if f.Host.IsValid() && !f.Host.Contains(k.SrcAddr()) && !f.Host.Contains(k.DstAddr()) {
		return false
	}
	return true
}

// CaptureSnap is the most bytes of a frame a capture keeps.
const CaptureSnap = 2048

// CaptureRing is the records a worker's ring holds.
const CaptureRing = 1024

// CaptureRecord is one copied frame.
type CaptureRecord struct {
	At     uint32 // the flow clock (flow.Clock) when copied, in ms
	Egress bool   // the frame as sent; false: as received
	Len    int    // the frame's length
	N      int    // bytes kept in Data (Len, or CaptureSnap)
	Data   [CaptureSnap]byte
}

// capture is a running capture as the workers see it.
type capture struct {
	filter          CaptureFilter
	ingress, egress bool
	rings           []*pipeline.Ring[CaptureRecord] // by worker
	egressDrops     []atomic.Uint64                 // by worker: the rings' drops that were egress copies
}

// Capture is a running capture: its reader drains the workers' rings
// (Drain) until it stops it (Stop).
type Capture struct {
	d *Datapath
	c *capture
}

// ErrCaptureRunning: a datapath runs one capture at a time.
var ErrCaptureRunning = errors.New("datapath: a capture is running")

// StartCapture starts a capture of the packets f matches, as they arrive
// (ingress) and as they leave (egress).
func (d *Datapath) StartCapture(f CaptureFilter, ingress, egress bool) (*Capture, error) {
	c := &capture{filter: f, ingress: ingress, egress: egress, egressDrops: make([]atomic.Uint64, len(d.workers))}
	for range d.workers {
		c.rings = append(c.rings, pipeline.NewRing[CaptureRecord](CaptureRing))
	}
	if !d.capturing.CompareAndSwap(nil, c) {
		return nil, ErrCaptureRunning
	}
	for _, w := range d.workers {
		w.capture.Store(c)
	}
	// The offloaded flows' packets must reach the workers to be captured.
	d.offloadCapture()
	return &Capture{d: d, c: c}, nil
}

// Capturing reports whether a capture runs.
func (d *Datapath) Capturing() bool { return d.capturing.Load() != nil }

// Drain calls fn for every record the workers copied since the last Drain
// (it must not keep r), and returns how many.
func (c *Capture) Drain(fn func(r *CaptureRecord)) int {
	n := 0
	for _, r := range c.c.rings {
		n += r.Drain(fn)
	}
	return n
}

// Dropped returns the copies lost because a ring was full.
func (c *Capture) Dropped() uint64 {
	var n uint64
	for _, r := range c.c.rings {
		_, d := r.Counts()
		n += d
	}
	return n
}

// DroppedEgress returns how many of the copies Dropped counts were copies
// of packets as sent (the others: as received).
func (c *Capture) DroppedEgress() uint64 {
	var n uint64
	for i := range c.c.egressDrops {
		n += c.c.egressDrops[i].Load()
	}
	return n
}

// Time returns the wall-clock time of a record's At.
func (c *Capture) Time(at uint32) time.Time {
	return time.Now().Add(-time.Duration(c.d.clock.Now()-at) * time.Millisecond)
}

// Stop ends the capture: the workers copy nothing after their current
// batch (Drain still takes what they copied).
func (c *Capture) Stop() {
	for _, w := range c.d.workers {
		w.capture.CompareAndSwap(c.c, nil)
	}
	if c.d.capturing.CompareAndSwap(c.c, nil) {
		c.d.offloadCapture()
	}
}

// CopyFrame copies frame into ring, if it has room (false: dropped, and
// counted by the ring).
func CopyFrame(ring *pipeline.Ring[CaptureRecord], frame []byte, egress bool, now uint32) bool {
	r := ring.Reserve()
	if r == nil {
		return false
	}
	r.At, r.Egress, r.Len = now, egress, len(frame)
	r.N = copy(r.Data[:], frame)
	ring.Commit()
	return true
}

// captureIngress marks the batch's packets the capture matches and copies
// them as received (before any stage rewrites them).
func (w *Worker) captureIngress(c *capture, n int, now uint32) {
	ring := c.rings[w.index]
	w.capMarked = 0
	for i := range n {
		p := &w.pkts[i]
		// Only a packet Prepare gave a key (a valid one, or a later
		// fragment): another keeps the key of the slot's earlier packet.
		m := (p.Verdict == pipeline.Continue || p.Reason == pipeline.ReasonFragment && p.Parsed.Verdict == packet.OK) &&
			c.filter.Match(&p.Key)
		w.capMark[i] = m
		if m {
			w.capMarked++
			if c.ingress { // the frame, not p's view of it (a tenant's VXLAN: the inner frame)
				f := &w.frames[i]
				CopyFrame(ring, f.Buf[f.Off:f.Off+f.Len], false, now)
			}
		}
	}
}

// captureEgress copies the marked packets as they leave: the frames sent,
// answered or handed to the kernel.
func (w *Worker) captureEgress(c *capture, n int, now uint32) {
	if w.capMarked == 0 {
		return
	}
	ring := c.rings[w.index]
	for i := range n {
		p := &w.pkts[i]
		if !w.capMark[i] {
			continue
		}
		switch p.Verdict {
		case pipeline.Forward, pipeline.Reply, pipeline.Spill:
			if !CopyFrame(ring, p.Buf[p.Off:p.Off+p.Len], true, now) {
				c.egressDrops[w.index].Add(1)
			}
		}
	}
}
