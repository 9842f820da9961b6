// Package mem is an in-memory link for tests, benchmarks and the simulator.
// It drives the datapath through exactly the same worker code as the real
// links: frames are copied into link-owned buffers with headroom, as a NIC
// would place them, and sent frames are handed to a sink function. Frames
// lent by Alloc (link.Injector) come from a separate reserve of buffers.
package mem

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/internal/link"
)

// Source produces the next received frame: it writes it into buf and returns
// its length, or 0 when it has nothing to deliver now.
type Source func(buf []byte) int

// Sink receives every transmitted frame. The slice is only valid during the
// call.
type Sink func(frame []byte)

// Config configures a Link.
type Config struct {
	BatchSize int           // frames per Recv; default 64
	Headroom  int           // bytes before each frame; default 256
	FrameSize int           // largest frame; default 2048
	Poll      time.Duration // how long Recv waits when idle; default 10ms
	Source    Source        // if nil, frames come from Inject
	Sink      Sink          // if nil, sent frames are discarded (and counted)
	// Reserve is the number of buffers that Alloc lends, apart from the
	// 2*BatchSize that Recv uses. Default 64; negative: none (Alloc always
	// reports false).
	Reserve int
}

// Link is an in-memory link.Link and link.Injector. It has 2 x BatchSize
// buffers for Recv and Config.Reserve more that only Alloc lends.
type Link struct {
	// immutable after New
	batch, headroom, frameSize int
	poll                       time.Duration
	source                     Source
	sink                       Sink
	bufs                       [][]byte // Recv's buffers, then the reserve's
	nrecv                      int      // bufs[:nrecv] are Recv's, bufs[nrecv:] Alloc's

	// owned by the worker goroutine
	free    []int // Recv's buffers not lent out (a stack)
	reserve []int // Alloc's buffers not lent out (a stack)
	allocs  uint64

	closedFlag atomic.Bool // Close has run (read without mu by Source links)

	// guarded by mu
	mu       sync.Mutex
	queue    [][]byte
	closed   bool
	wake     chan struct{}
	received uint64
	sent     uint64
	released uint64
}

var _ link.Injector = (*Link)(nil)

// New returns a link with the given configuration.
func New(c Config) *Link {
	if c.BatchSize <= 0 {
		c.BatchSize = 64
	}
	if c.Headroom <= 0 {
		c.Headroom = 256
	}
	if c.FrameSize <= 0 {
		c.FrameSize = 2048
	}
	if c.Poll <= 0 {
		c.Poll = 10 * time.Millisecond
	}
	switch {
	case c.Reserve == 0:
		c.Reserve = 64
	case c.Reserve < 0:
		c.Reserve = 0
	}
	l := &Link{
		batch: c.BatchSize, headroom: c.Headroom, frameSize: c.FrameSize,
		poll: c.Poll, source: c.Source, sink: c.Sink,
		wake: make(chan struct{}, 1),
	}
	// Two batches of buffers: one lent out while the next is received is
	// never needed by a run-to-completion worker, but it makes misuse (a
	// frame not given back) show up as ErrLeak rather than as corruption.
	// The reserve is a separate set of buffers, so that frames Alloc lends
	// never take Recv's.
	n := 2 * c.BatchSize
	l.nrecv = n
	l.bufs = make([][]byte, n+c.Reserve)
	l.free = make([]int, n)
	l.reserve = make([]int, c.Reserve)
	size := c.Headroom + c.FrameSize
	slab := make([]byte, len(l.bufs)*size)
	for i := range l.bufs {
		l.bufs[i] = slab[i*size : (i+1)*size : (i+1)*size]
	}
	for i := range l.free {
		l.free[i] = n - 1 - i
	}
	for i := range l.reserve {
		l.reserve[i] = len(l.bufs) - 1 - i
	}
	return l
}

// ErrLeak is returned by Recv when every buffer is lent out: the caller did
// not give frames back with Send or Release.
var ErrLeak = errors.New("mem: all buffers lent out; frames were not sent or released")

// Inject queues a copy of frame for a later Recv. It is safe to call from any
// goroutine.
func (l *Link) Inject(frame []byte) {
	c := append([]byte(nil), frame...)
	l.mu.Lock()
	l.queue = append(l.queue, c)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// BatchSize implements link.Link.
func (l *Link) BatchSize() int { return l.batch }

// Headroom implements link.Link.
func (l *Link) Headroom() int { return l.headroom }

// Recv implements link.Link.
func (l *Link) Recv(frames []link.Frame) (int, error) {
	max := min(len(frames), l.batch)
	if l.source != nil {
		if l.closedFlag.Load() {
			return 0, link.ErrClosed
		}
		return l.recvSource(frames[:max])
	}
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return 0, link.ErrClosed
		}
		n := 0
		for n < max && len(l.queue) > 0 && len(l.free) > 0 {
			pkt := l.queue[0]
			l.queue[0] = nil
			l.queue = l.queue[1:]
			if len(pkt) > l.frameSize {
				pkt = pkt[:l.frameSize] // as a NIC would truncate to its buffer
			}
			l.lend(&frames[n], copy(l.bufs[l.free[len(l.free)-1]][l.headroom:], pkt))
			n++
		}
		l.received += uint64(n)
		l.mu.Unlock()
		if n > 0 {
			return n, nil
		}
		if len(l.free) == 0 {
			return 0, ErrLeak
		}
		select {
		case <-l.wake:
		case <-time.After(l.poll):
			return 0, nil
		}
	}
}

func (l *Link) recvSource(frames []link.Frame) (int, error) {
	n := 0
	for n < len(frames) && len(l.free) > 0 {
		idx := l.free[len(l.free)-1]
		size := l.source(l.bufs[idx][l.headroom:])
		if size <= 0 {
			break
		}
		l.lend(&frames[n], size)
		n++
	}
	if n == 0 && len(l.free) == 0 {
		return 0, ErrLeak
	}
	l.received += uint64(n)
	return n, nil
}

// lend hands the buffer on top of the free stack out as f.
func (l *Link) lend(f *link.Frame, size int) {
	idx := l.free[len(l.free)-1]
	l.free = l.free[:len(l.free)-1]
	*f = link.Frame{Buf: l.bufs[idx], Off: l.headroom, Len: size, Handle: uint64(idx)}
}

// Alloc implements link.Injector: it lends an empty frame from the
// reserve (Config.Reserve buffers), with Off == Headroom(), Len 0 and room
// for FrameSize bytes behind Off. It reports false when every reserve buffer
// is lent out or the link is closed.
func (l *Link) Alloc(f *link.Frame) bool {
	if len(l.reserve) == 0 || l.closedFlag.Load() {
		return false
	}
	idx := l.reserve[len(l.reserve)-1]
	l.reserve = l.reserve[:len(l.reserve)-1]
	*f = link.Frame{Buf: l.bufs[idx], Off: l.headroom, Len: 0, Handle: uint64(idx)}
	l.allocs++
	return true
}

// giveBack returns the frame's buffer to the stack it came from.
func (l *Link) giveBack(f *link.Frame) {
	if idx := int(f.Handle); idx >= l.nrecv {
		l.reserve = append(l.reserve, idx)
	} else {
		l.free = append(l.free, idx)
	}
}

// Send implements link.Link.
func (l *Link) Send(frames []link.Frame) (int, error) {
	for i := range frames {
		if l.sink != nil {
			l.sink(frames[i].Bytes())
		}
		l.giveBack(&frames[i])
	}
	l.sent += uint64(len(frames))
	return len(frames), nil
}

// Release implements link.Link.
func (l *Link) Release(frames []link.Frame) {
	for i := range frames {
		l.giveBack(&frames[i])
	}
	l.released += uint64(len(frames))
}

// Close implements link.Link.
func (l *Link) Close() error {
	l.closedFlag.Store(true)
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

// Counts returns how many frames were received, sent and released. It is for
// the goroutine that uses the link, or after it stopped.
func (l *Link) Counts() (received, sent, released uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.received, l.sent, l.released
}

// Allocs returns how many frames Alloc lent. Like Counts, it is for the
// goroutine that uses the link, or after it stopped.
func (l *Link) Allocs() uint64 { return l.allocs }
