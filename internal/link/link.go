// Package link is batch packet I/O for the datapath: one small interface that
// the AF_XDP, AF_PACKET and in-memory (internal/link/mem) links implement.
//
// A link owns its buffers. Recv lends frames to the caller; the caller gives
// every frame back exactly once, either by Send (transmit it, possibly after
// rewriting it in place and moving its start into the headroom) or by Release
// (drop it). This is the shape AF_XDP needs (frames live in the UMEM and go
// from the RX ring to the TX ring without a copy), and it costs the other
// links nothing. A link that also implements Injector lends empty frames
// (Alloc) under the same rule, for packets the caller builds itself.
package link

import "errors"

// ErrClosed is returned by Recv and Send once the link is closed.
var ErrClosed = errors.New("link: closed")

// Frame is one packet in a link-owned buffer. The packet is
// Buf[Off : Off+Len]; Buf[:Off] is headroom the caller may write into when
// it prepends headers (it then lowers Off and raises Len).
type Frame struct {
	Buf []byte
	Off int
	Len int
	// Handle is private to the link that produced the frame (for example the
	// UMEM address of the buffer). Callers must not change it.
	Handle uint64
}

// Bytes returns the packet.
func (f *Frame) Bytes() []byte { return f.Buf[f.Off : f.Off+f.Len] }

// Link is a batch packet interface. A Link is used by one worker goroutine;
// only Close may be called from another goroutine.
type Link interface {
	// BatchSize is the largest number of frames Recv fills at once; callers
	// pass slices of at least this length.
	BatchSize() int
	// Headroom is the number of bytes before every received frame that the
	// caller may use to prepend headers (Frame.Off >= Headroom()).
	Headroom() int
	// Recv fills frames[:n] with received packets and returns n. It waits at
	// most until the link's poll interval has passed, so it may return 0 with
	// a nil error; the caller uses those returns for housekeeping. It returns
	// ErrClosed after Close.
	Recv(frames []Frame) (n int, err error)
	// Send transmits frames and takes all of them back, including those it
	// could not transmit; it returns how many were transmitted.
	Send(frames []Frame) (sent int, err error)
	// Release takes back frames that will not be transmitted.
	Release(frames []Frame)
	// Close stops the link; pending and later Recv calls return ErrClosed.
	Close() error
}

// Injector is a Link that can also lend an empty frame, for a packet the
// caller builds itself (typically a copy of a packet it took out of an
// earlier frame and held back).
//
// Alloc fills *f with a free buffer of the link: f.Off is Headroom(), f.Len
// is 0 and f.Buf extends at least to the largest packet the link receives
// (len(f.Buf)-f.Off bytes may be written). It reports false, leaving *f
// unchanged, when no buffer is free for Alloc or the link is closed. Alloc
// lends from a small reserve of buffers (its size is part of the link's
// configuration) that is kept apart from the buffers Recv receives into, so
// building packets never leaves Recv without buffers: whenever every frame
// lent out (by Recv or Alloc) has been given back, Recv can fill a whole
// batch, and Alloc can lend the whole reserve.
//
// The caller writes the packet into f.Buf[f.Off:], sets f.Len (and may lower
// f.Off into the headroom, as for a received frame) and gives the frame back
// exactly once, by Send or Release, like a frame lent by Recv; Handle must
// not be changed. Alloc is called by the worker goroutine that uses the Link;
// it never blocks and never allocates.
type Injector interface {
	Link
	// Alloc lends an empty frame; see Injector.
	Alloc(f *Frame) bool
}

// Spill sends datagrams through the kernel's IP stack: what the datapath
// must transmit but a link cannot, because it is larger than the link's MTU
// and must be fragmented (the kernel does that), or because it is not in a
// link-owned buffer. A Spill may be shared by every worker and must not
// allocate.
type Spill interface {
	// SendUDP sends payload as one UDP datagram from src (an address of
	// this host) to dst:port, fragmenting it if it exceeds the path MTU.
	SendUDP(payload []byte, src, dst [16]byte, v6 bool, port uint16) error
}
