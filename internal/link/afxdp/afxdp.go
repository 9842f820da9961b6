package afxdp

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/link"
)

// FrameSize is the size of a UMEM frame (chunk): every received packet
// lives in its own 4096-byte frame, headroom included.
const FrameSize = 4096

// xdpPacketHeadroom is XDP_PACKET_HEADROOM: the kernel always leaves it
// before the packet, in copy and in zero-copy mode.
const xdpPacketHeadroom = unix.XDP_PACKET_HEADROOM

// Mode selects how the XDP program is attached.
type Mode int

const (
	// Auto attaches in native (driver) mode and falls back to generic mode
	// when the driver refuses; AttachMode and NativeError tell which and why.
	Auto Mode = iota
	// Native attaches in the driver's receive path (XDP_FLAGS_DRV_MODE).
	Native
	// Generic attaches after the skb is built (XDP_FLAGS_SKB_MODE); every
	// driver supports it.
	Generic
)

func (m Mode) String() string {
	switch m {
	case Auto:
		return "auto"
	case Native:
		return "native"
	case Generic:
		return "generic"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Config configures a Link. Zero values take the defaults.
type Config struct {
	Queue     int // NIC RX queue id; default 0
	BatchSize int // largest Recv batch; default 64
	// Headroom is the total headroom before every received packet, for
	// headers the datapath prepends; default 256. The kernel always leaves
	// XDP_PACKET_HEADROOM (256) bytes; a larger value registers the rest as
	// UMEM headroom. At most 2048, so that 2048 bytes remain for the packet.
	Headroom  int
	NumFrames int           // UMEM frames of FrameSize bytes; default 4096, at least 2*BatchSize+ReserveFrames
	Mode      Mode          // Auto (native, then generic), Native or Generic
	Poll      time.Duration // Recv returns (0, nil) after this long idle; default 10ms
	// Offload loads the offload program (bpf/offload.c) instead of the
	// steering-only one: established flows installed through Offload() are
	// forwarded in the kernel. The first link of an interface decides for
	// the interface. OffloadFlows sizes its LRU flow map (default 1<<18).
	Offload      bool
	OffloadFlows int
	// ReserveFrames is the number of UMEM frames kept out of the fill ring
	// for Alloc to lend, so that frames the caller builds never take the
	// frames the kernel receives into. Default 64; negative: none (Alloc
	// always reports false).
	ReserveFrames int
}

// Frame states. Every UMEM frame is in exactly one.
const (
	stKernel  uint8 = iota // in the fill ring, inside the kernel, or on the RX ring
	stLent                 // lent to the caller by Recv or Alloc
	stTx                   // on the TX ring or transmitted and not yet completed
	stSpare                // owned by the link, waiting for room in the fill ring
	stReserve              // owned by the link, kept out of the fill ring for Alloc
	stGone                 // returned after Close
)

// Link is an AF_XDP socket on one queue of one interface, with the XDP
// program that steers the VIPs' packets to it.
type Link struct {
	// immutable after New
	ifname       string
	queue        int
	batch        int
	headroom     int
	numFrames    int
	reserveSize  int // Config.ReserveFrames
	pollTimeout  unix.Timespec
	shortTimeout unix.Timespec // while TX descriptors wait for a kick
	att          *attachment
	efd          int // eventfd that wakes a Recv blocked in ppoll at Close

	// Worker state, guarded by mu. A Link is used by one worker goroutine,
	// so mu is uncontended except when Close waits for a call in progress.
	mu          sync.Mutex
	s           *xsk   // rings and socket; fd -1 after Close
	umem        []byte // NumFrames*FrameSize bytes, anonymous mapping
	state       []uint8
	spare       []uint64 // frames waiting for room in the fill ring
	reserve     []uint64 // frames kept for Alloc (a stack), at most reserveSize
	lent, txOut int
	pollFds     [2]unix.PollFd
	pollTs      unix.Timespec // ppoll's timeout, which the kernel overwrites
	umemPending bool          // closed with frames lent out: munmap when the last comes back
	sockErr     error         // sticky: the socket failed (interface gone)
	fillTotal   uint32
	rxTotal     uint32

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	// fdMu orders Stats' getsockopt before Close's close(fd).
	fdMu    sync.RWMutex
	lastXDP unix.XDPStatistics

	// counters, written by the worker once per call, read by Stats
	ctr struct {
		rx, tx, fillEmpty, txRingFull, invalid, kicks, stalls, kickErrs atomic.Uint64
		allocs, allocEmpty                                              atomic.Uint64
		lent, txOut, spare, reserve                                     atomic.Int64
	}
}

var _ link.Injector = (*Link)(nil)

// New opens an AF_XDP link on queue c.Queue of ifname in the calling
// thread's network namespace (a caller that switched namespaces must have
// locked its OS thread). It builds and attaches the XDP program (shared
// with the other links of this process on the same interface), creates the
// socket with its UMEM and rings, and inserts it in the program's XSKMAP.
// No packet reaches the link until SetVIPs names the addresses to steer.
//
// Errors wrap ErrNoInterface, ErrUnsupported or ErrBusy when they apply.
func New(ifname string, c Config) (_ *Link, err error) {
	if err := c.defaults(); err != nil {
		return nil, err
	}
	ifc, err := netlink.LinkByName(ifname)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("afxdp: interface %q: %w", ifname, ErrNoInterface)
		}
		return nil, fmt.Errorf("afxdp: interface %q: %w", ifname, err)
	}
	if max(ifc.Attrs().NumRxQueues, 1) <= c.Queue {
		return nil, fmt.Errorf("afxdp: %s has %d RX queues, no queue %d", ifname, max(ifc.Attrs().NumRxQueues, 1), c.Queue)
	}
	att, err := acquire(ifc, c.Queue, c.Mode, progOptions{offload: c.Offload, flows: c.OffloadFlows})
	if err != nil {
		return nil, err
	}
	l := &Link{
		ifname: ifname, queue: c.Queue, batch: c.BatchSize, numFrames: c.NumFrames, reserveSize: c.ReserveFrames,
		headroom: max(c.Headroom, xdpPacketHeadroom), att: att, efd: -1,
		pollTimeout:  unix.NsecToTimespec(c.Poll.Nanoseconds()),
		shortTimeout: unix.NsecToTimespec(min(c.Poll, time.Millisecond).Nanoseconds()),
	}
	defer func() {
		if err != nil {
			l.teardown()
			att.release(c.Queue)
		}
	}()
	l.umem, err = unix.Mmap(-1, 0, c.NumFrames*FrameSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("afxdp: UMEM of %d bytes: %w", c.NumFrames*FrameSize, err)
	}
	ringSize := uint32(1) << bits.Len32(uint32(c.NumFrames-1)) // power of two >= NumFrames
	l.s, err = openXSK(l.umem, uint32(l.headroom-xdpPacketHeadroom), ringSize,
		ifc.Attrs().Index, c.Queue, att.mode == Native, c.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("%w (%s queue %d)", err, ifname, c.Queue)
	}
	l.efd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("afxdp: eventfd: %w", err)
	}
	l.pollFds = [2]unix.PollFd{{Fd: int32(l.s.fd), Events: unix.POLLIN}, {Fd: int32(l.efd), Events: unix.POLLIN}}

	// Every frame starts in the fill ring, except the last ReserveFrames,
	// which start in the reserve. The rings are at least NumFrames long, so
	// the fill ring always has room for every frame that comes back, and
	// the TX and completion rings never overflow.
	fillN := c.NumFrames - c.ReserveFrames
	l.state = make([]uint8, c.NumFrames)
	l.spare = make([]uint64, 0, c.NumFrames)
	l.reserve = make([]uint64, 0, c.ReserveFrames)
	for i := range fillN {
		l.s.fill.addrs[i] = uint64(i) * FrameSize
	}
	for i := c.NumFrames - 1; i >= fillN; i-- {
		l.state[i] = stReserve
		l.reserve = append(l.reserve, uint64(i))
	}
	l.ctr.reserve.Store(int64(len(l.reserve)))
	l.s.fill.prod = uint32(fillN)
	l.fillTotal = uint32(fillN)
	l.s.fill.publish()

	if err := att.insert(c.Queue, l.s.fd); err != nil {
		return nil, err
	}
	return l, nil
}

func (c *Config) defaults() error {
	if c.BatchSize == 0 {
		c.BatchSize = 64
	}
	if c.Headroom == 0 {
		c.Headroom = xdpPacketHeadroom
	}
	if c.NumFrames == 0 {
		c.NumFrames = 4096
	}
	if c.Poll == 0 {
		c.Poll = 10 * time.Millisecond
	}
	switch {
	case c.ReserveFrames == 0:
		c.ReserveFrames = 64
	case c.ReserveFrames < 0:
		c.ReserveFrames = 0
	}
	if c.OffloadFlows == 0 {
		c.OffloadFlows = 1 << 18
	}
	switch {
	case c.Queue < 0:
		return fmt.Errorf("afxdp: Queue %d: must be >= 0", c.Queue)
	case c.BatchSize < 1 || c.BatchSize > 4096:
		return fmt.Errorf("afxdp: BatchSize %d: must be in 1..4096", c.BatchSize)
	case c.Headroom < 0 || c.Headroom > FrameSize/2:
		return fmt.Errorf("afxdp: Headroom %d: must be in 0..%d", c.Headroom, FrameSize/2)
	case c.NumFrames < 2*c.BatchSize+c.ReserveFrames || c.NumFrames > 1<<20:
		return fmt.Errorf("afxdp: NumFrames %d: must be in %d..%d (2*BatchSize+ReserveFrames..1M)", c.NumFrames, 2*c.BatchSize+c.ReserveFrames, 1<<20)
	case c.Poll < 0:
		return fmt.Errorf("afxdp: Poll %v: must be >= 0", c.Poll)
	case c.OffloadFlows < 1 || c.OffloadFlows > 1<<26:
		return fmt.Errorf("afxdp: OffloadFlows %d: must be in 1..%d", c.OffloadFlows, 1<<26)
	case c.Mode < Auto || c.Mode > Generic:
		return fmt.Errorf("afxdp: Mode %d: unknown", int(c.Mode))
	}
	return nil
}

// SetVIPs replaces the set of destination addresses whose packets the XDP
// program steers to the sockets; every other packet goes to the kernel. The
// set belongs to the interface: links of this process on other queues of
// the same interface share it. IPv4-mapped IPv6 addresses count as IPv4.
// Safe to call from any goroutine.
func (l *Link) SetVIPs(addrs []netip.Addr) error {
	if l.closed.Load() {
		return link.ErrClosed
	}
	l.att.vipMu.Lock()
	defer l.att.vipMu.Unlock()
	return l.att.obj.setVIPs(addrs)
}

// AttachMode returns "native" or "generic": how the XDP program was
// actually attached.
func (l *Link) AttachMode() string { return l.att.mode.String() }

// NativeError returns why Auto mode fell back to generic mode, or nil.
func (l *Link) NativeError() error { return l.att.nativeErr }

// ZeroCopy reports whether the kernel bound the socket in zero-copy mode
// (never on veth, which only has copy mode).
func (l *Link) ZeroCopy() bool { return l.s.zeroCopy }

// ProgramID returns the kernel's id of the attached XDP program.
func (l *Link) ProgramID() (uint32, error) { return l.att.progID() }

// BatchSize implements link.Link.
func (l *Link) BatchSize() int { return l.batch }

// Headroom implements link.Link: every received frame has Off == Headroom().
func (l *Link) Headroom() int { return l.headroom }

// Recv implements link.Link. It lends up to BatchSize frames; each Frame's
// Buf is the whole FrameSize UMEM frame, the packet is Buf[Off:Off+Len] and
// Handle is the frame's UMEM address. When nothing is ready it waits in
// ppoll(2) for at most the poll interval, so it never busy-spins.
func (l *Link) Recv(frames []link.Frame) (int, error) {
	want := uint32(min(len(frames), l.batch))
	l.mu.Lock()
	defer l.mu.Unlock()
	for waited := false; ; waited = true {
		if l.closed.Load() {
			return 0, link.ErrClosed
		}
		l.service()
		if n := l.receive(frames[:want]); n > 0 || want == 0 {
			return n, nil
		}
		if l.sockErr != nil {
			return 0, l.sockErr
		}
		if waited {
			l.checkSocket()
			return 0, nil
		}
		if l.s.fill.queued() == 0 {
			l.ctr.fillEmpty.Add(1)
		}
		l.wait()
	}
}

// receive lends the frames on the RX ring.
func (l *Link) receive(frames []link.Frame) int {
	rx := &l.s.rx
	n := rx.available(uint32(len(frames)))
	if n == 0 {
		return 0
	}
	k := 0
	for i := range n {
		d := &rx.descs[(rx.cons+i)&rx.mask]
		base := d.Addr &^ (FrameSize - 1)
		idx := base / FrameSize
		if idx >= uint64(l.numFrames) || l.state[idx] != stKernel {
			l.ctr.invalid.Add(1) // cannot happen unless the kernel misbehaves
			continue
		}
		l.state[idx] = stLent
		frames[k] = link.Frame{
			Buf:    l.umem[base : base+FrameSize : base+FrameSize],
			Off:    int(d.Addr - base),
			Len:    int(d.Len),
			Handle: base,
		}
		k++
	}
	rx.release(n)
	l.rxTotal += uint32(k)
	l.lent += k
	l.ctr.rx.Add(uint64(k))
	l.ctr.lent.Store(int64(l.lent))
	return k
}

// checkSocket records the socket's pending error (ENETDOWN when the
// interface goes away), so that Recv and Send report it from then on. It
// runs when Recv has been idle for a poll interval; a kick that fails with
// an unexpected error records that error the same way.
func (l *Link) checkSocket() {
	if e, err := unix.GetsockoptInt(l.s.fd, unix.SOL_SOCKET, unix.SO_ERROR); err == nil && e != 0 {
		l.sockErr = fmt.Errorf("afxdp: %s queue %d: %w", l.ifname, l.queue, unix.Errno(e))
	}
}

// wait blocks in ppoll until the socket has packets, Close signals, or the
// poll interval passes. In copy mode the kernel also transmits from the TX
// ring on every poll.
func (l *Link) wait() {
	// The raw ppoll writes the time left into its timespec: pass a copy.
	l.pollTs = l.pollTimeout
	if l.txOut > 0 && l.s.tx.queued() > 0 {
		l.pollTs = l.shortTimeout // retry stalled transmissions soon
	}
	l.pollFds[0].Revents, l.pollFds[1].Revents = 0, 0
	for {
		_, _, e := unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&l.pollFds[0])), 2, uintptr(unsafe.Pointer(&l.pollTs)), 0, 0, 0)
		// A signal (the Go runtime's preemption) interrupts ppoll, which
		// has then written the time left: wait for the rest of it.
		if e != unix.EINTR || l.closed.Load() {
			return
		}
	}
}

// service reclaims completed transmissions (into the reserve while it is
// short, otherwise the fill ring), retries frames waiting for room in the
// fill ring, and kicks descriptors still on the TX ring.
func (l *Link) service() {
	l.reclaim()
	if l.txOut > 0 && l.s.tx.queued() > 0 {
		l.kick()
	}
}

// reclaim moves completed TX frames to the reserve (while it is short) or
// the fill ring.
func (l *Link) reclaim() {
	comp := &l.s.comp
	n := comp.available(comp.size)
	for i := range n {
		base := comp.addrs[(comp.cons+i)&comp.mask] &^ (FrameSize - 1)
		idx := base / FrameSize
		if idx >= uint64(l.numFrames) || l.state[idx] != stTx {
			l.ctr.invalid.Add(1)
			continue
		}
		l.txOut--
		l.recycle(idx)
	}
	if n > 0 {
		comp.release(n)
		l.ctr.txOut.Store(int64(l.txOut))
	}
	if len(l.spare) > 0 {
		l.refillSpare()
	}
	l.publishFill()
}

// recycle takes back frame idx, which came back from the caller or from
// transmission: it refills the reserve while that is below its size, and
// otherwise goes to the fill ring.
func (l *Link) recycle(idx uint64) {
	if len(l.reserve) < l.reserveSize {
		l.state[idx] = stReserve
		l.reserve = append(l.reserve, idx)
		l.ctr.reserve.Store(int64(len(l.reserve)))
		return
	}
	l.toFill(idx)
}

// toFill gives frame idx back to the kernel for receiving.
func (l *Link) toFill(idx uint64) {
	fill := &l.s.fill
	if fill.free() == 0 {
		l.state[idx] = stSpare
		l.spare = append(l.spare, idx)
		l.ctr.spare.Store(int64(len(l.spare)))
		return
	}
	l.state[idx] = stKernel
	fill.addrs[fill.prod&fill.mask] = idx * FrameSize
	fill.prod++
	l.fillTotal++
}

func (l *Link) refillSpare() {
	fill := &l.s.fill
	for len(l.spare) > 0 && fill.free() > 0 {
		idx := l.spare[len(l.spare)-1]
		l.spare = l.spare[:len(l.spare)-1]
		l.toFill(idx)
	}
	l.ctr.spare.Store(int64(len(l.spare)))
}

func (l *Link) publishFill() {
	fill := &l.s.fill
	if atomic.LoadUint32(fill.producer) == fill.prod {
		return
	}
	fill.publish()
	if l.s.zeroCopy && fill.needWakeup() {
		l.s.wakeRX()
	}
}

// take checks that f is a frame this link lent and takes it back: it
// returns the frame's index, or false (and counts it) for a frame that is
// not lent out (a stranger, or one given back twice).
func (l *Link) take(f *link.Frame) (uint64, bool) {
	idx := f.Handle / FrameSize
	if f.Handle%FrameSize != 0 || idx >= uint64(l.numFrames) || l.state[idx] != stLent {
		l.ctr.invalid.Add(1)
		return 0, false
	}
	l.lent--
	return idx, true
}

// Send implements link.Link. Each frame goes on the TX ring as the
// descriptor (Handle+Off, Len): Off may be lower than Recv or Alloc set it
// (headers prepended into the headroom) and Off+Len must not pass
// FrameSize. The kernel is kicked (sendto) while the TX ring holds
// descriptors; copy mode transmits a bounded number per kick. Frames come
// back to the reserve (while it is short) or the fill ring when the kernel
// reports their completion. Frames that are invalid or find
// the TX ring full are dropped (counted in Stats) and not counted in sent.
func (l *Link) Send(frames []link.Frame) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed.Load() {
		l.returnAfterClose(frames)
		return 0, link.ErrClosed
	}
	l.reclaim()
	tx := &l.s.tx
	free := tx.free()
	sent := uint32(0)
	for i := range frames {
		f := &frames[i]
		idx, ok := l.take(f)
		if !ok {
			continue
		}
		if f.Off < 0 || f.Len <= 0 || f.Off+f.Len > FrameSize {
			l.ctr.invalid.Add(1)
			l.recycle(idx)
			continue
		}
		if sent == free {
			l.ctr.txRingFull.Add(1)
			l.recycle(idx)
			continue
		}
		d := &tx.descs[tx.prod&tx.mask]
		d.Addr = idx*FrameSize + uint64(f.Off)
		d.Len = uint32(f.Len)
		d.Options = 0
		tx.prod++
		l.state[idx] = stTx
		sent++
	}
	l.txOut += int(sent)
	l.ctr.tx.Add(uint64(sent))
	l.ctr.lent.Store(int64(l.lent))
	l.ctr.txOut.Store(int64(l.txOut))
	l.publishFill()
	if sent > 0 {
		tx.publish()
		l.kick()
	}
	return int(sent), l.sockErr
}

// kick drives transmission of the TX ring. A zero-copy driver that does not
// ask for a wakeup sends on its own. In copy mode the kernel sends up to its
// budget per sendto, synchronously, so kick repeats until the ring is drained
// or a kick makes no progress (then service retries on the next call).
// An unexpected sendto error (ENETDOWN, ENXIO) becomes the sticky socket
// error.
func (l *Link) kick() {
	tx := &l.s.tx
	for {
		before := tx.queued()
		if before == 0 || !tx.needWakeup() {
			return
		}
		e := l.s.kick()
		l.ctr.kicks.Add(1)
		switch e {
		case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS:
			// EAGAIN: budget spent or no skb memory; EBUSY: the driver
			// dropped one (it is completed all the same).
		default:
			l.ctr.kickErrs.Add(1)
			if l.sockErr == nil {
				l.sockErr = fmt.Errorf("afxdp: %s queue %d: sendto: %w", l.ifname, l.queue, e)
			}
			return
		}
		l.reclaim()
		if tx.queued() >= before {
			l.ctr.stalls.Add(1)
			return
		}
	}
}

// Release implements link.Link: the frames go back to the reserve (while it
// is short) or the fill ring.
func (l *Link) Release(frames []link.Frame) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed.Load() {
		l.returnAfterClose(frames)
		return
	}
	for i := range frames {
		if idx, ok := l.take(&frames[i]); ok {
			l.recycle(idx)
		}
	}
	l.ctr.lent.Store(int64(l.lent))
	l.publishFill()
}

// Alloc implements link.Injector: it lends an empty frame of the reserve
// (Config.ReserveFrames frames kept out of the fill ring): Buf is the whole
// FrameSize UMEM frame, Off == Headroom(), Len 0 and Handle the frame's UMEM
// address, exactly as for a received frame. The caller writes a complete
// Ethernet frame at Off (it may prepend into the headroom) and gives the
// frame back by Send or Release. Frames that come back, whether from Alloc
// or Recv, refill the reserve first while it is short, then the fill ring.
//
// When the reserve is empty, Alloc first reclaims completed transmissions;
// it reports false, leaving f unchanged, when the reserve is still empty
// (counted in Stats.AllocEmpty) or the link is closed.
func (l *Link) Alloc(f *link.Frame) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed.Load() {
		return false
	}
	if len(l.reserve) == 0 && l.txOut > 0 && l.reserveSize > 0 {
		l.reclaim()
	}
	if len(l.reserve) == 0 {
		l.ctr.allocEmpty.Add(1)
		return false
	}
	idx := l.reserve[len(l.reserve)-1]
	l.reserve = l.reserve[:len(l.reserve)-1]
	l.state[idx] = stLent
	l.lent++
	base := idx * FrameSize
	*f = link.Frame{
		Buf:    l.umem[base : base+FrameSize : base+FrameSize],
		Off:    l.headroom,
		Len:    0,
		Handle: base,
	}
	l.ctr.allocs.Add(1)
	l.ctr.lent.Store(int64(l.lent))
	l.ctr.reserve.Store(int64(len(l.reserve)))
	return true
}

// returnAfterClose takes back frames after Close; the UMEM is unmapped when
// the last lent frame is back.
func (l *Link) returnAfterClose(frames []link.Frame) {
	for i := range frames {
		if idx, ok := l.take(&frames[i]); ok {
			l.state[idx] = stGone
		}
	}
	l.ctr.lent.Store(int64(l.lent))
	if l.lent == 0 && l.umemPending {
		unix.Munmap(l.umem)
		l.umem, l.umemPending = nil, false
	}
}

// Close detaches the XDP program (when this is the last link of the process
// on the interface; otherwise it only removes its socket from the XSKMAP),
// closes the socket and wakes a Recv blocked in another goroutine, which
// returns link.ErrClosed. It waits for a Recv, Send or Release in progress
// to return. Frames still lent out stay valid memory until they are given
// back with Send or Release (which then return without transmitting).
// Close is idempotent.
func (l *Link) Close() error {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		if l.efd >= 0 {
			var one = [8]byte{1}
			unix.Write(l.efd, one[:])
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		l.closeErr = l.att.release(l.queue)
		if st, err := l.s.statistics(); err == nil {
			l.fdMu.Lock()
			l.lastXDP = st
			l.fdMu.Unlock()
		}
		l.teardown()
	})
	return l.closeErr
}

// teardown closes the socket and the eventfd and unmaps what is unused.
func (l *Link) teardown() {
	l.fdMu.Lock()
	if l.s != nil {
		l.s.close()
	}
	if l.efd >= 0 {
		unix.Close(l.efd)
		l.efd = -1
	}
	l.fdMu.Unlock()
	if l.umem != nil {
		if l.lent == 0 {
			unix.Munmap(l.umem)
			l.umem = nil
		} else {
			l.umemPending = true
		}
	}
}

// Stats are a link's counters. Frame counts are a snapshot.
type Stats struct {
	RxFrames      uint64 // frames Recv lent out
	TxFrames      uint64 // frames Send put on the TX ring
	FillRingEmpty uint64 // idle Recv calls that found the fill ring empty: the kernel had no frame to receive into
	TxRingFull    uint64 // frames Send dropped because the TX ring was full
	Invalid       uint64 // frames given to Send or Release that were not lent out, or with Off/Len outside the frame
	Allocs        uint64 // empty frames Alloc lent (they are counted in TxFrames when sent)
	AllocEmpty    uint64 // Alloc calls that found the reserve empty
	Kicks         uint64 // sendto calls that drove transmission
	TxStalls      uint64 // kicks after which the TX ring did not shrink (retried on the next call)
	KickErrors    uint64 // kicks that failed with an unexpected error
	XDP           XDPStatistics
	Frames        FrameCounts
}

// XDPStatistics is the socket's XDP_STATISTICS.
type XDPStatistics struct {
	RxDropped            uint64 // packets dropped by the kernel (for example, larger than a frame)
	RxInvalidDescs       uint64
	TxInvalidDescs       uint64
	RxRingFull           uint64 // packets dropped because the RX ring was full
	RxFillRingEmptyDescs uint64 // times the kernel found the fill ring empty
	TxRingEmptyDescs     uint64
}

// FrameCounts says where the UMEM frames are. Kernel + Lent + TxInFlight +
// Spare + Reserve == Total at all times.
type FrameCounts struct {
	Total      int
	Kernel     int // in the fill ring, being received, or on the RX ring
	Lent       int // lent to the caller by Recv or Alloc
	TxInFlight int // given to Send and not yet completed
	Spare      int // waiting for room in the fill ring
	Reserve    int // kept out of the fill ring for Alloc
}

// Stats returns the counters. Safe to call from any goroutine, also after
// Close (XDP statistics are then those read at Close).
func (l *Link) Stats() Stats {
	s := Stats{
		RxFrames:      l.ctr.rx.Load(),
		TxFrames:      l.ctr.tx.Load(),
		FillRingEmpty: l.ctr.fillEmpty.Load(),
		TxRingFull:    l.ctr.txRingFull.Load(),
		Invalid:       l.ctr.invalid.Load(),
		Kicks:         l.ctr.kicks.Load(),
		TxStalls:      l.ctr.stalls.Load(),
		KickErrors:    l.ctr.kickErrs.Load(),
		Allocs:        l.ctr.allocs.Load(),
		AllocEmpty:    l.ctr.allocEmpty.Load(),
	}
	s.Frames.Total = l.numFrames
	s.Frames.Lent = int(l.ctr.lent.Load())
	s.Frames.TxInFlight = int(l.ctr.txOut.Load())
	s.Frames.Spare = int(l.ctr.spare.Load())
	s.Frames.Reserve = int(l.ctr.reserve.Load())
	s.Frames.Kernel = s.Frames.Total - s.Frames.Lent - s.Frames.TxInFlight - s.Frames.Spare - s.Frames.Reserve
	l.fdMu.RLock()
	st := l.lastXDP
	if !l.closed.Load() && l.s.fd >= 0 {
		if cur, err := l.s.statistics(); err == nil {
			st = cur
		}
	}
	l.fdMu.RUnlock()
	s.XDP = XDPStatistics{st.Rx_dropped, st.Rx_invalid_descs, st.Tx_invalid_descs,
		st.Rx_ring_full, st.Rx_fill_ring_empty_descs, st.Tx_ring_empty_descs}
	return s
}
