// Package stack sends the datapath's oversize datagrams through the kernel's
// IP stack (link.Spill): one unconnected UDP socket per address family with
// path MTU discovery off, so that the kernel fragments what exceeds the
// interface's MTU (RFC 791 fragmentation of an IPv4 datagram without DF;
// source fragmentation of IPv6, which a tunnel entry point may do for its
// own outer packets, RFC 2473 section 7). The source address is set per
// datagram (IP_PKTINFO / IPV6_PKTINFO), so spilled packets carry the same
// outer source as the ones the link sends. Only the UDP source port differs:
// it is the socket's.
package stack

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/link"
)

// Sender is a link.Spill over two kernel UDP sockets. It is safe for
// concurrent use and allocates nothing per datagram.
type Sender struct {
	fd4, fd6 int // -1 when the family is unavailable
}

var _ link.Spill = (*Sender)(nil)

// ErrFamily is returned by SendUDP for a family whose socket could not be
// opened.
var ErrFamily = errors.New("stack: address family unavailable")

// New opens the sockets in the calling thread's network namespace. It fails
// only if neither family works.
func New() (*Sender, error) {
	s := &Sender{fd4: -1, fd6: -1}
	var errs []error
	fd, err := open(unix.AF_INET)
	if err == nil {
		s.fd4 = fd
	} else {
		errs = append(errs, fmt.Errorf("IPv4: %w", err))
	}
	if fd, err = open(unix.AF_INET6); err == nil {
		s.fd6 = fd
	} else {
		errs = append(errs, fmt.Errorf("IPv6: %w", err))
	}
	if s.fd4 < 0 && s.fd6 < 0 {
		return nil, fmt.Errorf("stack: %w", errors.Join(errs...))
	}
	return s, nil
}

func open(family int) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, err
	}
	opts := []struct{ level, opt, v int }{
		{unix.SOL_SOCKET, unix.SO_SNDBUF, 4 << 20},
		{unix.SOL_SOCKET, unix.SO_RCVBUF, 0}, // nothing is read: keep no queue
	}
	if family == unix.AF_INET {
		opts = append(opts, struct{ level, opt, v int }{unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT})
	} else {
		opts = append(opts,
			struct{ level, opt, v int }{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1},
			struct{ level, opt, v int }{unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT})
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.v); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("setsockopt %d/%d: %w", o.level, o.opt, err)
		}
	}
	// Best effort, with CAP_NET_ADMIN: a send buffer above
	// net.core.wmem_max, and an outer source address (node.source_v4/v6)
	// that is not assigned to this host, as the link may send.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
	if family == unix.AF_INET {
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TRANSPARENT, 1)
	} else {
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT, 1)
	}
	return fd, nil
}

// Control-message buffers: a cmsghdr followed by the pktinfo structure.
type cmsg4 struct {
	h    unix.Cmsghdr
	info unix.Inet4Pktinfo
}

type cmsg6 struct {
	h    unix.Cmsghdr
	info unix.Inet6Pktinfo
}

// SendUDP implements link.Spill. Addresses are 16 bytes, IPv4-mapped for
// IPv4. It does not wait: a full socket buffer is an error (EAGAIN).
func (s *Sender) SendUDP(payload []byte, src, dst [16]byte, v6 bool, port uint16) error {
	if len(payload) == 0 {
		return errors.New("stack: empty datagram")
	}
	var (
		msg unix.Msghdr
		iov unix.Iovec
		fd  int
	)
	iov.Base = &payload[0]
	iov.SetLen(len(payload))
	msg.Iov = &iov
	msg.SetIovlen(1)
	pb := [2]byte{byte(port >> 8), byte(port)}
	var (
		sa4 unix.RawSockaddrInet4
		sa6 unix.RawSockaddrInet6
		c4  cmsg4
		c6  cmsg6
	)
	if v6 {
		if fd = s.fd6; fd < 0 {
			return ErrFamily
		}
		sa6.Family = unix.AF_INET6
		sa6.Port = *(*uint16)(unsafe.Pointer(&pb))
		sa6.Addr = dst
		msg.Name = (*byte)(unsafe.Pointer(&sa6))
		msg.Namelen = unix.SizeofSockaddrInet6
		c6.h.Level, c6.h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
		c6.h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
		c6.info.Addr = src
		msg.Control = (*byte)(unsafe.Pointer(&c6))
		msg.SetControllen(unix.CmsgSpace(unix.SizeofInet6Pktinfo))
	} else {
		if fd = s.fd4; fd < 0 {
			return ErrFamily
		}
		sa4.Family = unix.AF_INET
		sa4.Port = *(*uint16)(unsafe.Pointer(&pb))
		copy(sa4.Addr[:], dst[12:])
		msg.Name = (*byte)(unsafe.Pointer(&sa4))
		msg.Namelen = unix.SizeofSockaddrInet4
		c4.h.Level, c4.h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		c4.h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		copy(c4.info.Spec_dst[:], src[12:])
		msg.Control = (*byte)(unsafe.Pointer(&c4))
		msg.SetControllen(unix.CmsgSpace(unix.SizeofInet4Pktinfo))
	}
	for {
		_, _, e := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT)
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return e
	}
}

// Close closes the sockets.
func (s *Sender) Close() error {
	var errs []error
	for _, fd := range []*int{&s.fd4, &s.fd6} {
		if *fd >= 0 {
			errs = append(errs, unix.Close(*fd))
			*fd = -1
		}
	}
	return errors.Join(errs...)
}
