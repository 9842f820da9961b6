//go:build linux

package afpacket

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/link"
)

// Config configures a Link. Zero values select the defaults.
type Config struct {
	// Filter, when not nil, is the destination filter (as SetFilter) that
	// the socket has from the start: it is attached before the socket is
	// bound, so no other frame is ever queued. An empty non-nil slice
	// accepts nothing. Nil: the link receives every frame until SetFilter.
	Filter []netip.Addr
	// BatchSize is the largest number of frames one Recv returns and one
	// sendmmsg call transmits. Default 64.
	BatchSize int
	// Headroom is the number of bytes before every received frame that the
	// caller may write into (Frame.Off >= Headroom). Default 256.
	Headroom int
	// FrameSize is the largest frame Recv delivers, counted as the kernel
	// hands it over: from the destination MAC address to the end of the
	// payload, without the FCS and without a VLAN tag the kernel moved into
	// metadata. Longer frames are dropped and counted in Stats.Oversize.
	// Default 2048.
	FrameSize int
	// Poll is how long Recv waits for a packet before it returns (0, nil),
	// and how long Send waits for room in a full socket send buffer before it
	// gives up on the remaining frames. Default 10ms.
	Poll time.Duration
	// SocketBuffer is the size asked for the socket's receive and send
	// buffers (SO_RCVBUFFORCE / SO_SNDBUFFORCE, falling back to the limited
	// SO_RCVBUF / SO_SNDBUF without CAP_NET_ADMIN). Default 4 MiB.
	SocketBuffer int
	// QdiscBypass sends frames straight to the driver (PACKET_QDISC_BYPASS):
	// no queueing discipline, no traffic control, and frames the driver
	// cannot take are dropped and counted in Stats.SendErrors instead of
	// being queued. Off by default.
	QdiscBypass bool
	// Reserve is the number of buffers that only Alloc lends, in addition
	// to Recv's 2 x BatchSize, so that frames the caller builds never take
	// the buffers Recv needs. Default 64; negative: none (Alloc always
	// reports false).
	Reserve int
}

// Stats are a link's counters since New. They only grow.
type Stats struct {
	Received   uint64 // frames lent out by Recv
	Sent       uint64 // frames the kernel accepted for transmission
	SendErrors uint64 // frames given to Send that were not transmitted
	Released   uint64 // frames given back by Release
	Allocs     uint64 // empty frames lent by Alloc (they are counted in Sent or Released too)
	AllocEmpty uint64 // Alloc calls that found every reserve buffer lent out
	// Oversize counts received frames longer than Config.FrameSize; they
	// are dropped (the kernel truncates them to the buffer; Recv does not
	// deliver truncated frames).
	Oversize uint64
	// PartialChecksum counts received frames whose transport checksum the
	// sender left to checksum offload (TP_STATUS_CSUMNOTREADY): their
	// checksum field holds only the pseudo-header sum. They are delivered as
	// they are. On veth this happens unless tx checksum offload is off on the
	// peer.
	PartialChecksum uint64
	// KernelDrops counts frames that passed the filter but found the
	// socket's receive buffer full (PACKET_STATISTICS tp_drops).
	KernelDrops uint64
}

// ErrLeak is returned by Recv when every buffer is lent out: the caller did
// not give frames back with Send or Release.
var ErrLeak = errors.New("afpacket: all buffers lent out; frames were not sent or released")

// vlanRoom is kept free in front of the bytes the kernel fills, so that a
// VLAN tag the kernel moved into metadata can be put back into the frame
// without eating into the caller's headroom.
const vlanRoom = 4

// ctlSize is the control-message space per received frame: one
// PACKET_AUXDATA message.
var ctlSize = unix.CmsgSpace(sizeofAuxdata)

const sizeofAuxdata = int(unsafe.Sizeof(unix.TpacketAuxdata{}))

// Link is an AF_PACKET link.Link on one network interface.
//
// Frames are received with recvmmsg(2) into link-owned buffers and
// transmitted with sendmmsg(2) straight from them. Every buffer is
// Headroom + 4 + FrameSize bytes; the kernel writes a received frame at
// offset Headroom+4, and the 4 spare bytes take a VLAN tag that Recv puts
// back. There are 2 x BatchSize buffers for Recv, so a caller may hold one
// batch while it receives the next, and Config.Reserve more that only Alloc
// lends.
type Link struct {
	// immutable after New
	ifname                     string
	ifindex                    int
	batch, headroom, frameSize int
	poll                       time.Duration
	file                       *os.File        // the socket, non-blocking, in Go's netpoller
	rc                         syscall.RawConn // file's
	bufs                       [][]byte        // one per buffer, all in one slab: Recv's, then the reserve
	nrecv                      int             // bufs[:nrecv] are Recv's, bufs[nrecv:] Alloc's
	recvFn, sendFn             func(fd uintptr) bool

	// owned by the goroutine that calls Recv, Send and Release
	free    []int32 // indexes of Recv's buffers not lent out (a stack)
	reserve []int32 // indexes of Alloc's buffers not lent out (a stack)
	lent    []bool  // by buffer index: lent out by Recv or Alloc, not yet given back
	cand    []int32 // buffers offered to the current recvmmsg, by message
	rxMsgs  []unix.Mmsghdr
	rxIov   []unix.Iovec
	rxCtl   []byte // ctlSize bytes per message
	rxWant  int
	rxGot   int
	rxErr   unix.Errno
	rxWait  bool // recvFn lets the netpoller wait on EAGAIN
	txMsgs  []unix.Mmsghdr
	txIov   []unix.Iovec
	txNext  int // next message to transmit
	txEnd   int
	txSent  int
	txFail  int
	txErr   unix.Errno // first error of this Send
	txWait  bool       // sendFn lets the netpoller wait on EAGAIN

	// written by the worker goroutine, read by Stats from any goroutine
	received, sent, sendErrors, released, oversize, partialCsum atomic.Uint64
	allocs, allocEmpty                                          atomic.Uint64

	closed atomic.Bool

	// guarded by statsMu: PACKET_STATISTICS resets the kernel's counters
	// on every read, so reads are serialised and summed here.
	statsMu     sync.Mutex
	kernelDrops uint64

	filterMu sync.Mutex // serialises SetFilter and ClearFilter
}

var _ link.Injector = (*Link)(nil)

// New opens an AF_PACKET socket bound to the Ethernet interface ifname in the
// calling thread's network namespace (lock the goroutine to its thread when
// that matters, as nettest.NS.Do does). The socket stays in that namespace;
// the Link may then be used from any goroutine.
//
// Until SetFilter is called the link receives every frame that arrives on the
// interface (but never the frames this host sends on it, its own included).
// The kernel keeps receiving every frame too: a packet socket gets a copy.
func New(ifname string, c Config) (*Link, error) {
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
	if c.SocketBuffer <= 0 {
		c.SocketBuffer = 4 << 20
	}
	switch {
	case c.Reserve == 0:
		c.Reserve = 64
	case c.Reserve < 0:
		c.Reserve = 0
	}
	if c.FrameSize < 14 {
		return nil, fmt.Errorf("afpacket: FrameSize %d is smaller than an Ethernet header", c.FrameSize)
	}

	// Protocol 0: the socket receives nothing until bind names the
	// interface, so no frame of another interface slips in.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("afpacket: socket: %w", err)
	}
	fail := func(what string, err error) (*Link, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("afpacket: %s: %s: %w", ifname, what, err)
	}
	ifr, err := unix.NewIfreq(ifname)
	if err != nil {
		return fail("interface name", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return fail("interface index", err)
	}
	ifindex := int(ifr.Uint32())
	for _, o := range []struct {
		name       string
		level, opt int
	}{
		{"PACKET_IGNORE_OUTGOING", unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING},
		{"PACKET_AUXDATA", unix.SOL_PACKET, unix.PACKET_AUXDATA},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, 1); err != nil {
			return fail(o.name, err)
		}
	}
	if c.QdiscBypass {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return fail("PACKET_QDISC_BYPASS", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, c.SocketBuffer); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, c.SocketBuffer); err != nil {
			return fail("SO_RCVBUF", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, c.SocketBuffer); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, c.SocketBuffer); err != nil {
			return fail("SO_SNDBUF", err)
		}
	}
	if c.Filter != nil {
		prog, err := filterProgram(c.Filter)
		if err != nil {
			return fail("filter", err)
		}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
			return fail("SO_ATTACH_FILTER", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		return fail("bind", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	if ll, ok := sa.(*unix.SockaddrLinklayer); !ok || ll.Hatype != unix.ARPHRD_ETHER {
		return fail("link type", fmt.Errorf("not an Ethernet interface (%+v)", sa))
	}

	file := os.NewFile(uintptr(fd), "afpacket:"+ifname)
	// A deadline can only be set on a file in the netpoller; Recv and Send
	// rely on that to wait without blocking a thread and to be woken by
	// Close.
	if err := file.SetReadDeadline(time.Time{}); err != nil {
		file.Close()
		return nil, fmt.Errorf("afpacket: %s: socket not pollable: %w", ifname, err)
	}
	rc, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("afpacket: %s: %w", ifname, err)
	}

	n := 2 * c.BatchSize
	total := n + c.Reserve
	size := c.Headroom + vlanRoom + c.FrameSize
	l := &Link{
		ifname: ifname, ifindex: ifindex,
		batch: c.BatchSize, headroom: c.Headroom, frameSize: c.FrameSize, poll: c.Poll,
		file: file, rc: rc,
		bufs:    make([][]byte, total),
		nrecv:   n,
		free:    make([]int32, n),
		reserve: make([]int32, c.Reserve),
		lent:    make([]bool, total),
		cand:    make([]int32, c.BatchSize),
		rxMsgs:  make([]unix.Mmsghdr, c.BatchSize),
		rxIov:   make([]unix.Iovec, c.BatchSize),
		rxCtl:   make([]byte, c.BatchSize*ctlSize),
		txMsgs:  make([]unix.Mmsghdr, c.BatchSize),
		txIov:   make([]unix.Iovec, c.BatchSize),
	}
	slab := make([]byte, total*size)
	for i := range l.bufs {
		l.bufs[i] = slab[i*size : (i+1)*size : (i+1)*size]
	}
	for i := range l.free {
		l.free[i] = int32(n - 1 - i)
	}
	for i := range l.reserve {
		l.reserve[i] = int32(total - 1 - i)
	}
	for i := range l.rxMsgs {
		l.rxIov[i].SetLen(c.FrameSize)
		h := &l.rxMsgs[i].Hdr
		h.Iov = &l.rxIov[i]
		h.SetIovlen(1)
		h.Control = &l.rxCtl[i*ctlSize]
		h.SetControllen(ctlSize)
		l.txMsgs[i].Hdr.Iov = &l.txIov[i]
		l.txMsgs[i].Hdr.SetIovlen(1)
	}
	l.recvFn = l.recvmmsg
	l.sendFn = l.sendmmsg
	return l, nil
}

// BatchSize implements link.Link.
func (l *Link) BatchSize() int { return l.batch }

// Headroom implements link.Link.
func (l *Link) Headroom() int { return l.headroom }

// Recv implements link.Link. It fills frames[:n] with up to
// min(len(frames), BatchSize()) received frames. Each frame starts with its
// Ethernet header; a frame whose outer VLAN tag the kernel moved into
// metadata gets the tag back (with its TPID, 802.1Q or 802.1ad), so frames
// read as they were on the wire. Frame.Off is Headroom()+4 for a frame whose
// tag was not moved and Headroom() for one whose tag Recv put back; Frame.Len
// is at most FrameSize (FrameSize+4 with a restored tag); the buffer extends
// to len(Frame.Buf) behind the frame. Frames longer than FrameSize are
// dropped and counted in Stats.Oversize, so Recv may return (0, nil) even
// though frames arrived.
//
// Recv waits up to the configured Poll for the first frame, then returns
// (0, nil). It returns ErrClosed once Close was called, also when Close is
// called while it waits, and ErrLeak when every buffer is lent out.
func (l *Link) Recv(frames []link.Frame) (int, error) {
	if l.closed.Load() {
		return 0, link.ErrClosed
	}
	want := min(len(frames), l.batch, len(l.free))
	if want == 0 {
		if len(frames) == 0 {
			return 0, nil
		}
		return 0, ErrLeak
	}
	top := len(l.free) - want
	for i := 0; i < want; i++ {
		idx := l.free[top+i]
		l.cand[i] = idx
		l.rxIov[i].Base = &l.bufs[idx][l.headroom+vlanRoom]
		l.rxMsgs[i].Hdr.SetControllen(ctlSize)
	}
	l.free = l.free[:top]

	l.rxWant, l.rxWait = want, false
	err := l.rc.Read(l.recvFn)
	if err == nil && l.rxErr == unix.EAGAIN {
		// Nothing queued: let the netpoller wait, bounded by Poll.
		l.file.SetReadDeadline(time.Now().Add(l.poll))
		l.rxWait = true
		err = l.rc.Read(l.recvFn)
		l.file.SetReadDeadline(time.Time{})
	}
	n := 0
	if err == nil && l.rxErr == 0 {
		n = l.collect(frames)
	}
	for i := want - 1; i >= 0; i-- { // the buffers not lent out go back
		if idx := l.cand[i]; idx >= 0 {
			l.free = append(l.free, idx)
		}
	}
	switch {
	case l.closed.Load():
		l.Release(frames[:n]) // the frames of a closed link are no use
		return 0, link.ErrClosed
	case errors.Is(err, os.ErrDeadlineExceeded):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("afpacket: %s: recv: %w", l.ifname, err)
	case l.rxErr != 0:
		return 0, os.NewSyscallError("recvmmsg", l.rxErr)
	}
	l.received.Add(uint64(n))
	return n, nil
}

// recvmmsg is the syscall.RawConn read function of Recv. With rxWait set it
// returns false on EAGAIN, so that the netpoller waits for the socket to
// become readable.
func (l *Link) recvmmsg(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&l.rxMsgs[0])), uintptr(l.rxWant), 0, 0, 0)
		switch e {
		case 0:
			l.rxGot, l.rxErr = int(r), 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			l.rxGot, l.rxErr = 0, e
			return !l.rxWait
		default:
			l.rxGot, l.rxErr = 0, e
			return true
		}
	}
}

// collect turns the messages recvmmsg filled into frames, restoring VLAN
// tags and dropping truncated frames. Lent candidates are marked -1.
func (l *Link) collect(frames []link.Frame) int {
	n := 0
	var oversize, partial uint64
	for i := 0; i < l.rxGot; i++ {
		m := &l.rxMsgs[i]
		if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
			oversize++
			continue
		}
		idx := l.cand[i]
		buf := l.bufs[idx]
		off := l.headroom + vlanRoom
		size := int(m.Len)
		if aux := l.auxdata(i); aux != nil {
			if aux.Status&unix.TP_STATUS_CSUMNOTREADY != 0 {
				partial++
			}
			if aux.Status&unix.TP_STATUS_VLAN_VALID != 0 && size >= 12 {
				tpid := uint16(unix.ETH_P_8021Q)
				if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 && aux.Vlan_tpid != 0 {
					tpid = aux.Vlan_tpid
				}
				copy(buf[off-vlanRoom:off-vlanRoom+12], buf[off:off+12])
				buf[off+8], buf[off+9] = byte(tpid>>8), byte(tpid)
				buf[off+10], buf[off+11] = byte(aux.Vlan_tci>>8), byte(aux.Vlan_tci)
				off -= vlanRoom
				size += vlanRoom
			}
		}
		frames[n] = link.Frame{Buf: buf, Off: off, Len: size, Handle: uint64(idx)}
		l.lent[idx] = true
		l.cand[i] = -1
		n++
	}
	if oversize > 0 {
		l.oversize.Add(oversize)
	}
	if partial > 0 {
		l.partialCsum.Add(partial)
	}
	return n
}

// auxdata returns message i's PACKET_AUXDATA, or nil.
func (l *Link) auxdata(i int) *unix.TpacketAuxdata {
	h := &l.rxMsgs[i].Hdr
	if h.Controllen < uint64(unix.CmsgLen(sizeofAuxdata)) {
		return nil
	}
	ctl := l.rxCtl[i*ctlSize : (i+1)*ctlSize]
	cm := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
	if cm.Level != unix.SOL_PACKET || cm.Type != unix.PACKET_AUXDATA {
		return nil
	}
	return (*unix.TpacketAuxdata)(unsafe.Pointer(&ctl[unix.CmsgLen(0)]))
}

// Alloc implements link.Injector: it lends an empty buffer of the reserve
// (Config.Reserve buffers that Recv never uses) as f, with Off ==
// Headroom(), Len 0 and FrameSize+4 bytes of room behind Off. The caller
// writes a complete Ethernet frame there, as Send expects, and gives the
// frame back by Send or Release. Alloc reports false, leaving f unchanged,
// when every reserve buffer is lent out (counted in Stats.AllocEmpty) or the
// link is closed. It belongs to the worker goroutine, like Recv.
func (l *Link) Alloc(f *link.Frame) bool {
	if l.closed.Load() {
		return false
	}
	if len(l.reserve) == 0 {
		l.allocEmpty.Add(1)
		return false
	}
	idx := l.reserve[len(l.reserve)-1]
	l.reserve = l.reserve[:len(l.reserve)-1]
	l.lent[idx] = true
	*f = link.Frame{Buf: l.bufs[idx], Off: l.headroom, Len: 0, Handle: uint64(idx)}
	l.allocs.Add(1)
	return true
}

// Send implements link.Link. It transmits each frame's Bytes() as one
// Ethernet frame, as is: the frame must start with the destination MAC
// address, must not include an FCS, and may be at most the interface's MTU
// plus 14 bytes (plus 4 when it carries a VLAN tag) long; the kernel pads
// short frames. Frames are sent in order, BatchSize at a time.
//
// Send takes all frames back, also those it could not transmit, and returns
// how many the kernel accepted. When some were not transmitted it returns an
// error describing the first failure; the others are still attempted. A
// frame is not transmitted when its Off/Len do not lie inside its Buf or Len
// is 0, when the kernel rejects it (EMSGSIZE for a frame over the MTU,
// ENETDOWN, ENOBUFS when a driver queue is full with QdiscBypass), or when the
// socket's send buffer stays full for Poll. After Close it transmits nothing
// and returns ErrClosed.
//
// Send panics when a frame was not lent by this link's Recv or Alloc or was
// already given back: two owners of one buffer would corrupt packets silently.
func (l *Link) Send(frames []link.Frame) (int, error) {
	if l.closed.Load() {
		for i := range frames {
			l.giveBack(&frames[i])
		}
		l.sendErrors.Add(uint64(len(frames)))
		return 0, link.ErrClosed
	}
	var sent, failed int
	var first error
	for len(frames) > 0 {
		chunk := frames[:min(len(frames), l.batch)]
		frames = frames[len(chunk):]
		k := 0
		for i := range chunk {
			f := &chunk[i]
			l.giveBack(f) // the buffer is not reused before Send returns
			if f.Len <= 0 || f.Off < 0 || f.Off+f.Len > len(f.Buf) {
				failed++
				if first == nil {
					first = fmt.Errorf("afpacket: %s: send: frame Off %d Len %d outside its %d-byte buffer", l.ifname, f.Off, f.Len, len(f.Buf))
				}
				continue
			}
			l.txIov[k].Base = &f.Buf[f.Off]
			l.txIov[k].SetLen(f.Len)
			k++
		}
		if k == 0 {
			continue
		}
		err := l.transmit(k)
		sent += l.txSent
		failed += l.txFail + (l.txEnd - l.txNext) // rejected + never attempted
		if first == nil {
			switch {
			case l.closed.Load():
				first = link.ErrClosed
			case err != nil && !errors.Is(err, os.ErrDeadlineExceeded):
				first = fmt.Errorf("afpacket: %s: send: %w", l.ifname, err)
			case l.txErr != 0:
				first = fmt.Errorf("afpacket: %s: %w", l.ifname, os.NewSyscallError("sendmmsg", l.txErr))
			case l.txNext < l.txEnd:
				first = fmt.Errorf("afpacket: %s: send: socket send buffer full for %v", l.ifname, l.poll)
			}
		}
	}
	l.sent.Add(uint64(sent))
	if failed > 0 {
		l.sendErrors.Add(uint64(failed))
	}
	return sent, first
}

// transmit sends txMsgs[:k]. Afterwards txNext < txEnd when it stopped early
// (send buffer full for Poll, or the link closed).
func (l *Link) transmit(k int) error {
	l.txNext, l.txEnd, l.txSent, l.txFail, l.txErr, l.txWait = 0, k, 0, 0, 0, false
	err := l.rc.Write(l.sendFn)
	if err == nil && l.txNext < l.txEnd {
		// The socket's send buffer is full: wait for room, bounded by Poll.
		l.file.SetWriteDeadline(time.Now().Add(l.poll))
		l.txWait = true
		err = l.rc.Write(l.sendFn)
		l.file.SetWriteDeadline(time.Time{})
	}
	return err
}

// sendmmsg is the syscall.RawConn write function of Send. A message the
// kernel rejects is counted and skipped; on EAGAIN it stops, and with txWait
// set it returns false so that the netpoller waits for room.
func (l *Link) sendmmsg(fd uintptr) bool {
	for l.txNext < l.txEnd {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&l.txMsgs[l.txNext])), uintptr(l.txEnd-l.txNext), 0, 0, 0)
		switch e {
		case 0:
			l.txNext += int(r)
			l.txSent += int(r)
		case unix.EINTR:
		case unix.EAGAIN:
			return !l.txWait
		default:
			// sendmmsg fails on the first message of the call: skip it.
			if l.txErr == 0 {
				l.txErr = e
			}
			l.txFail++
			l.txNext++
		}
	}
	return true
}

// Release implements link.Link. It panics when a frame was not lent by this
// link's Recv or Alloc or was already given back.
func (l *Link) Release(frames []link.Frame) {
	for i := range frames {
		l.giveBack(&frames[i])
	}
	l.released.Add(uint64(len(frames)))
}

// giveBack returns the frame's buffer to the stack it came from: Recv's
// free stack or the reserve.
func (l *Link) giveBack(f *link.Frame) {
	idx := f.Handle
	if idx >= uint64(len(l.bufs)) || !l.lent[idx] {
		panic(fmt.Sprintf("afpacket: frame with handle %d given back twice or not lent by this link", idx))
	}
	l.lent[idx] = false
	if idx >= uint64(l.nrecv) {
		l.reserve = append(l.reserve, int32(idx))
	} else {
		l.free = append(l.free, int32(idx))
	}
}

// Close implements link.Link. It may be called from any goroutine: a Recv
// waiting for frames returns ErrClosed at once, later Recv and Send calls
// return ErrClosed. Frames still lent out may be given back with Release
// after Close. Close returns nil when called again.
func (l *Link) Close() error {
	l.statsMu.Lock()
	if l.closed.Swap(true) {
		l.statsMu.Unlock()
		return nil
	}
	l.readKernelStats()
	l.statsMu.Unlock()
	return l.file.Close() // wakes waiting Recv/Send; closes fd after them
}

// SetFilter attaches a classic BPF socket filter so that the link receives
// only IPv4 and IPv6 frames whose destination address is one of dsts:
// untagged frames, frames with one VLAN tag (802.1Q or 802.1ad), and frames
// with two tags of which the kernel moved the outer one into metadata (as it
// does for every received tagged frame). IPv4-mapped IPv6 addresses count as
// IPv4; zones are ignored. An empty dsts accepts nothing: a node without VIPs
// has nothing to forward. Everything else (ARP, BGP, ssh, neighbour
// discovery) stays with the kernel alone, which still receives its own copy
// of every frame, the accepted ones included.
//
// SetFilter may be called at any time and from any goroutine; it replaces
// the previous filter atomically. Frames already queued on the socket when
// the filter changes are still delivered. At most about 2000 IPv4 or 450
// IPv6 addresses fit in one program (BPF_MAXINSNS).
func (l *Link) SetFilter(dsts []netip.Addr) error {
	prog, err := filterProgram(dsts)
	if err != nil {
		return err
	}
	return l.setsockopt("SO_ATTACH_FILTER", func(fd int) error {
		return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	})
}

// SetVIPs is SetFilter: the link receives frames to these addresses only.
// (It gives AF_PACKET and AF_XDP links one method to steer VIP traffic.)
func (l *Link) SetVIPs(dsts []netip.Addr) error { return l.SetFilter(dsts) }

// ClearFilter removes the filter: the link receives every frame that
// arrives on the interface again, as after New.
func (l *Link) ClearFilter() error {
	err := l.setsockopt("SO_DETACH_FILTER", func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
	})
	if errors.Is(err, unix.ENOENT) { // there was none
		return nil
	}
	return err
}

func (l *Link) setsockopt(name string, set func(fd int) error) error {
	l.filterMu.Lock()
	defer l.filterMu.Unlock()
	var serr error
	if err := l.rc.Control(func(fd uintptr) { serr = set(int(fd)) }); err != nil {
		if l.closed.Load() {
			return link.ErrClosed
		}
		return fmt.Errorf("afpacket: %s: %s: %w", l.ifname, name, err)
	}
	if serr != nil {
		return fmt.Errorf("afpacket: %s: %s: %w", l.ifname, name, serr)
	}
	return nil
}

// Stats returns the link's counters. It may be called from any goroutine,
// also after Close. The frame counters are updated once per batch.
func (l *Link) Stats() Stats {
	l.statsMu.Lock()
	if !l.closed.Load() {
		l.readKernelStats()
	}
	drops := l.kernelDrops
	l.statsMu.Unlock()
	return Stats{
		Received:        l.received.Load(),
		Sent:            l.sent.Load(),
		SendErrors:      l.sendErrors.Load(),
		Released:        l.released.Load(),
		Allocs:          l.allocs.Load(),
		AllocEmpty:      l.allocEmpty.Load(),
		Oversize:        l.oversize.Load(),
		PartialChecksum: l.partialCsum.Load(),
		KernelDrops:     drops,
	}
}

// readKernelStats adds the kernel's counters (reset by reading them) to the
// totals. statsMu must be held.
func (l *Link) readKernelStats() {
	l.rc.Control(func(fd uintptr) {
		st, err := unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if err == nil {
			l.kernelDrops += uint64(st.Drops)
		}
	})
}

// String names the link.
func (l *Link) String() string { return "afpacket:" + l.ifname }

func htons(v uint16) uint16 { return v<<8 | v>>8 }
