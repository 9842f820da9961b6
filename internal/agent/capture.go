package agent

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// Capture of what the agent delivers (the inner packets it writes to the
// TUN device) and forwards to a second-chance hop (the inner packet of the
// datagram it sends on), selected by their flow (the client's 5-tuple, or
// the flow an ICMP error quotes). The Run goroutine copies the matching
// packets into a bounded ring a reader drains; a full ring drops the
// copy (counted), never the packet. Without a capture the agent pays one
// atomic load per packet. (The kernel's taps see the same packets on the
// TUN device and the interface; this one needs no shell on the host and
// filters by the flow inside the tunnel.)

// capture is a running capture as the Run goroutine sees it.
type capture struct {
	filter               datapath.CaptureFilter
	delivered, forwarded bool
	ring                 *pipeline.Ring[datapath.CaptureRecord]
	forwardDrops         atomic.Uint64 // of the ring's drops, copies of forwarded packets
}

// Capture is a running capture of the agent (control.CaptureSource).
type Capture struct {
	a *Agent
	c *capture
}

// ErrCaptureRunning: an agent runs one capture at a time.
var ErrCaptureRunning = errors.New("agent: a capture is running")

// StartCapture starts a capture of the packets f matches that the agent
// delivers and that it forwards.
func (a *Agent) StartCapture(f datapath.CaptureFilter, delivered, forwarded bool) (*Capture, error) {
	if a.clock == nil {
		return nil, errors.New("agent: not made by New")
	}
	c := &capture{filter: f, delivered: delivered, forwarded: forwarded, ring: pipeline.NewRing[datapath.CaptureRecord](datapath.CaptureRing)}
	if !a.capture.CompareAndSwap(nil, c) {
		return nil, ErrCaptureRunning
	}
	return &Capture{a: a, c: c}, nil
}

// Drain calls fn for every record copied since the last Drain.
func (c *Capture) Drain(fn func(r *datapath.CaptureRecord)) int { return c.c.ring.Drain(fn) }

// Dropped returns the copies lost because the ring was full.
func (c *Capture) Dropped() uint64 {
	_, d := c.c.ring.Counts()
	return d
}

// DroppedEgress returns, of Dropped, the copies of forwarded packets.
func (c *Capture) DroppedEgress() uint64 { return c.c.forwardDrops.Load() }

// Time returns the wall-clock time of a record's At.
func (c *Capture) Time(at uint32) time.Time {
	return time.Now().Add(-time.Duration(c.a.clock.Now()-at) * time.Millisecond)
}

// Stop ends the capture (Drain still takes what was copied).
func (c *Capture) Stop() { c.a.capture.CompareAndSwap(c.c, nil) }

// captureInner copies inner, delivered or forwarded, if a capture wants it.
// Run goroutine only.
func (a *Agent) captureInner(inner []byte, forwarded bool) {
	c := a.capture.Load()
	if c == nil || forwarded && !c.forwarded || !forwarded && !c.delivered {
		return
	}
	f := &a.capFlow
	parseFlow(inner, f)
	k := &a.capKey
	*k = flow.Key{Src: f.key.client, Dst: f.key.vip, SrcPort: f.key.cport, DstPort: f.key.vport, Proto: f.key.proto}
	if f.class == classOther && !f.icmp {
		// Not a TCP or UDP packet the agent knows the flow of (a fragment,
		// another protocol): its addresses and protocol only.
		*k = flow.Key{}
		if inner[0]>>4 == 4 {
			putMapped(&k.Src, inner[12:16])
			putMapped(&k.Dst, inner[16:20])
			k.Proto = inner[9]
		} else {
			copy(k.Src[:], inner[8:24])
			copy(k.Dst[:], inner[24:40])
			k.Proto = inner[6]
		}
	}
	if c.filter.Match(k) && !datapath.CopyFrame(c.ring, inner, forwarded, a.clock.Now()) && forwarded {
		c.forwardDrops.Add(1)
	}
}
