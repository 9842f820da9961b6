package afxdp

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// bindBusyTimeout is how long openXSK retries a bind that finds the queue
// busy.
var bindBusyTimeout = 2 * time.Second

// xsk is an AF_XDP socket with its own UMEM and its four rings.
type xsk struct {
	fd         int
	fill, comp addrRing
	rx, tx     descRing
	zeroCopy   bool
}

// openXSK creates the socket, registers umem, sizes and maps the rings and
// binds to ifindex/queue. Copy mode is forced unless native is set (then the
// kernel picks zero-copy when the driver supports it, copy otherwise).
func openXSK(umem []byte, umemHeadroom uint32, ringSize uint32, ifindex, queue int, native bool, txBudget int) (_ *xsk, err error) {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EPROTONOSUPPORT) {
			return nil, fmt.Errorf("afxdp: socket(AF_XDP): %w (%w)", ErrUnsupported, err)
		}
		return nil, fmt.Errorf("afxdp: socket(AF_XDP): %w", err)
	}
	s := &xsk{fd: fd}
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	reg := unix.XDPUmemReg{
		Addr:     uint64(uintptr(unsafe.Pointer(&umem[0]))),
		Len:      uint64(len(umem)),
		Size:     FrameSize,
		Headroom: umemHeadroom,
	}
	if err := setsockopt(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("afxdp: register UMEM of %d bytes: %w (RLIMIT_MEMLOCK or CAP_IPC_LOCK)", len(umem), err)
		}
		return nil, fmt.Errorf("afxdp: register UMEM: %w", err)
	}
	for _, opt := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING, unix.XDP_TX_RING} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, opt, int(ringSize)); err != nil {
			return nil, fmt.Errorf("afxdp: ring size %d (option %d): %w", ringSize, opt, err)
		}
	}
	var off unix.XDPMmapOffsets
	if err := getsockopt(fd, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off)); err != nil {
		return nil, fmt.Errorf("afxdp: XDP_MMAP_OFFSETS: %w", err)
	}
	if s.fill, err = mapAddrRing(fd, unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, ringSize); err != nil {
		return nil, err
	}
	if s.comp, err = mapAddrRing(fd, unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, ringSize); err != nil {
		return nil, err
	}
	if s.rx, err = mapDescRing(fd, unix.XDP_PGOFF_RX_RING, off.Rx, ringSize); err != nil {
		return nil, err
	}
	if s.tx, err = mapDescRing(fd, unix.XDP_PGOFF_TX_RING, off.Tx, ringSize); err != nil {
		return nil, err
	}
	// Copy mode transmits at most max_tx_budget descriptors per kick (32 by
	// default); kernels since 6.17 let it be raised. Older ones refuse the
	// option, and the kick loop copes either way.
	if txBudget > 32 {
		unix.SetsockoptInt(fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, min(txBudget, int(ringSize)))
	}

	flags := uint16(unix.XDP_USE_NEED_WAKEUP)
	if !native {
		flags |= unix.XDP_COPY
	}
	// A socket of a process that just died releases its queue from
	// deferred kernel work (after its bpf_link, XSKMAP and socket are freed),
	// so EBUSY is retried for a while before it is reported.
	sa := &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(ifindex), QueueID: uint32(queue)}
	err = unix.Bind(fd, sa)
	for wait, deadline := time.Millisecond, time.Now().Add(bindBusyTimeout); errors.Is(err, unix.EBUSY) && time.Now().Before(deadline); wait = min(2*wait, 100*time.Millisecond) {
		time.Sleep(wait)
		err = unix.Bind(fd, sa)
	}
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("afxdp: bind queue %d: %w: another AF_XDP socket holds the queue (%w)", queue, ErrBusy, err)
		}
		if errors.Is(err, unix.EOPNOTSUPP) {
			return nil, fmt.Errorf("afxdp: bind queue %d: %w (%w)", queue, ErrUnsupported, err)
		}
		return nil, fmt.Errorf("afxdp: bind queue %d: %w", queue, err)
	}
	if opts, err := unix.GetsockoptInt(fd, unix.SOL_XDP, unix.XDP_OPTIONS); err == nil {
		s.zeroCopy = opts&unix.XDP_OPTIONS_ZEROCOPY != 0
	}
	return s, nil
}

func (s *xsk) close() {
	s.fill.unmap()
	s.comp.unmap()
	s.rx.unmap()
	s.tx.unmap()
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

func (s *xsk) statistics() (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	err := getsockopt(s.fd, unix.XDP_STATISTICS, unsafe.Pointer(&st), unsafe.Sizeof(st))
	return st, err
}

// kick asks the kernel to transmit what the TX ring holds (sendto with
// MSG_DONTWAIT and no data). It does not allocate.
func (s *xsk) kick() unix.Errno {
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return e
}

// wakeRX asks a zero-copy driver to refill from the fill ring.
func (s *xsk) wakeRX() {
	unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
}

func setsockopt(fd, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), size, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getsockopt(fd, opt int, p unsafe.Pointer, size uintptr) error {
	n := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return e
	}
	return nil
}
