package agent

import (
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxDatagram is the size of each receive slot: any UDP payload fits
// (65507 bytes over IPv4, 65527 over IPv6 without jumbograms), so MSG_TRUNC
// (counted as Oversize) cannot happen in practice. The slots are allocated
// once; pages a small datagram never touches stay untouched.
const maxDatagram = 64 << 10

// batchReader reads up to len(msgs) datagrams per recvmmsg(2) call from a
// UDP socket, waiting in the Go poller (so that a read deadline or closing
// the socket interrupts it). It is owned by one goroutine.
type batchReader struct {
	rc    syscall.RawConn
	bufs  [][]byte
	iovs  []unix.Iovec
	msgs  []unix.Mmsghdr
	names []unix.RawSockaddrInet6 // source addresses (room for AF_INET too)
}

func newBatchReader(c *net.UDPConn, n int) (*batchReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &batchReader{
		rc:    rc,
		bufs:  make([][]byte, n),
		iovs:  make([]unix.Iovec, n),
		msgs:  make([]unix.Mmsghdr, n),
		names: make([]unix.RawSockaddrInet6, n),
	}
	mem := make([]byte, n*maxDatagram)
	for i := range r.bufs {
		r.bufs[i] = mem[i*maxDatagram : (i+1)*maxDatagram : (i+1)*maxDatagram]
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(maxDatagram)
		r.msgs[i].Hdr.Iov = &r.iovs[i]
		r.msgs[i].Hdr.SetIovlen(1)
		r.msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	return r, nil
}

// read waits for at least one datagram and returns how many it received;
// datagram(i) and truncated(i) describe each, until the next read.
func (r *batchReader) read() (int, error) {
	var (
		n     int
		errno syscall.Errno
	)
	for i := range r.msgs {
		r.msgs[i].Hdr.Namelen = unix.SizeofSockaddrInet6 // the kernel overwrites it
	}
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			r1, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd,
				uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(len(r.msgs)),
				unix.MSG_DONTWAIT, 0, 0)
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // wait in the poller
			}
			n, errno = int(r1), e
			return true
		}
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

func (r *batchReader) datagram(i int) []byte { return r.bufs[i][:r.msgs[i].Len] }

func (r *batchReader) truncated(i int) bool { return r.msgs[i].Hdr.Flags&unix.MSG_TRUNC != 0 }

// source returns the sender of datagram(i) (IPv4 unmapped), or the zero
// AddrPort if the kernel gave none.
func (r *batchReader) source(i int) netip.AddrPort {
	sa := &r.names[i]
	switch {
	case sa.Family == unix.AF_INET6 && r.msgs[i].Hdr.Namelen >= unix.SizeofSockaddrInet6:
		port := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(port[0])<<8|uint16(port[1]))
	case sa.Family == unix.AF_INET && r.msgs[i].Hdr.Namelen >= unix.SizeofSockaddrInet4:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(port[0])<<8|uint16(port[1]))
	}
	return netip.AddrPort{}
}
