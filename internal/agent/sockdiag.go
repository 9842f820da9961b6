package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/packet"
)

// sockets finds the socket on this host that would receive an inner packet
// of flow k: the kernel's own lookup. The agent's is a sockDiag; tests use
// fakes.
type sockets interface {
	// state returns the state (TCP_* numbering, as sock_diag reports it)
	// of the socket the kernel finds for k, or 0 when it finds none or
	// finds one that is not for exactly k (a listener, an unconnected UDP
	// socket).
	state(k *flowKey) (uint8, error)
}

// TCP states as the kernel numbers them (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpSynSent     = 2
	tcpSynRecv     = 3
	tcpFinWait1    = 4
	tcpFinWait2    = 5
	tcpTimeWait    = 6
	tcpCloseWait   = 8
	tcpLastAck     = 9
	tcpListen      = 10
	tcpClosing     = 11
	tcpNewSynRecv  = 12
)

// ownedTCP are the TCP states in which a socket here owns its connection,
// as a bit set (1<<state): every state of a live connection, from the SYN
// (a request mini-socket, which sock_diag reports as SYN_RECV) to the last
// FIN. Not TIME_WAIT: the connection is over, and the only packet it still
// answers properly is a retransmitted FIN, whereas a new connection that
// reuses the 4-tuple and went to another backend would be reset by it. Not
// LISTEN or CLOSE: such sockets own no connection.
const ownedTCP = 1<<tcpEstablished | 1<<tcpSynSent | 1<<tcpSynRecv | 1<<tcpFinWait1 |
	1<<tcpFinWait2 | 1<<tcpCloseWait | 1<<tcpLastAck | 1<<tcpClosing | 1<<tcpNewSynRecv

// owned reports whether a socket in state st (0: none) owns a flow of
// protocol proto. A UDP socket owns a flow only when connected to it
// (ESTABLISHED); sockets reports unconnected ones as 0.
func owned(proto, st uint8) bool {
	if st == 0 || st > tcpNewSynRecv {
		return false
	}
	if proto == packet.ProtoUDP {
		return st == tcpEstablished
	}
	return ownedTCP&(1<<st) != 0
}

// Layout of the sock_diag messages (linux/inet_diag.h).
const (
	nlHdrLen      = unix.SizeofNlMsghdr // 16
	diagReqLen    = 56                  // struct inet_diag_req_v2
	diagMsgLen    = 72                  // struct inet_diag_msg
	diagIDOff     = 8                   // the inet_diag_sockid in the request
	diagMsgIDOff  = 4                   // ... and in the reply
	diagReplyBuf  = 8 << 10             // one reply, attributes included, fits easily
	diagNoCookie  = 0xffffffff          // INET_DIAG_NOCOOKIE
	diagAllStates = 0xffffffff
)

// sockDiagTimeout bounds the wait for a sock_diag reply. The kernel
// answers during the send, so it only matters if something is very wrong.
const sockDiagTimeout = 100 * time.Millisecond

// errSockDiag is matched by the errors of sockDiag.state other than the
// kernel's own errno.
var errSockDiag = errors.New("agent: sock_diag")

// sockDiag asks the kernel for one socket at a time over a
// NETLINK_SOCK_DIAG socket: a SOCK_DIAG_BY_FAMILY request without
// NLM_F_DUMP for the exact 4-tuple, which the kernel answers with its
// socket lookup (inet_diag_find_one_icsk for TCP: the established table,
// request and time-wait mini-sockets included, then the listeners;
// udp_dump_one for UDP: the socket a datagram would be delivered to), or
// ENOENT. It is owned by one goroutine and does not allocate.
type sockDiag struct {
	fd  int // bound to the namespace it was opened in
	seq uint32
	req [nlHdrLen + diagReqLen]byte
	buf [diagReplyBuf]byte
}

var _ sockets = (*sockDiag)(nil)

// openSockDiag opens the netlink socket in the calling thread's namespace.
func openSockDiag() (*sockDiag, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("agent: sock_diag socket: %w", err)
	}
	tv := unix.NsecToTimeval(int64(sockDiagTimeout))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("agent: sock_diag socket: SO_RCVTIMEO: %w", err)
	}
	return &sockDiag{fd: fd}, nil
}

func (s *sockDiag) close() error { return unix.Close(s.fd) }

// state implements sockets.
func (s *sockDiag) state(k *flowKey) (uint8, error) {
	s.seq++
	ne, be := binary.NativeEndian, binary.BigEndian
	r := s.req[:]
	ne.PutUint32(r[0:], uint32(len(r)))
	ne.PutUint16(r[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(r[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(r[8:], s.seq)
	ne.PutUint32(r[12:], 0)
	q := r[nlHdrLen:]
	q[0] = unix.AF_INET
	if k.v6 {
		q[0] = unix.AF_INET6
	}
	q[1], q[2], q[3] = k.proto, 0, 0
	ne.PutUint32(q[4:], diagAllStates)
	// The TCP lookup takes src as the local end (the VIP), as replies
	// report it; the UDP lookup takes src as the remote end (udp_dump_one:
	// "src and dst are swapped for historical reasons").
	src, sport, dst, dport := &k.vip, k.vport, &k.client, k.cport
	if k.proto == packet.ProtoUDP {
		src, sport, dst, dport = dst, dport, src, sport
	}
	id := q[diagIDOff:]
	be.PutUint16(id[0:], sport)
	be.PutUint16(id[2:], dport)
	putDiagAddr(id[4:20], src, k.v6)
	putDiagAddr(id[20:36], dst, k.v6)
	ne.PutUint32(id[36:], 0) // any interface
	ne.PutUint32(id[40:], diagNoCookie)
	ne.PutUint32(id[44:], diagNoCookie)

	for {
		if _, err := unix.Write(s.fd, r); err != unix.EINTR {
			if err != nil {
				return 0, err
			}
			break
		}
	}
	// Read until the answer to this request; older answers (of a request
	// whose read timed out) are skipped.
	for range 8 {
		n, err := unix.Read(s.fd, s.buf[:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, fmt.Errorf("%w: no reply within %v", errSockDiag, sockDiagTimeout)
		case err != nil:
			return 0, err
		}
		for b := s.buf[:n]; len(b) >= nlHdrLen; {
			l := int(ne.Uint32(b))
			if l < nlHdrLen || l > len(b) {
				return 0, fmt.Errorf("%w: bad netlink message length %d", errSockDiag, l)
			}
			m := b[:l]
			b = b[min(nlAlign(l), len(b)):]
			if ne.Uint32(m[8:]) != s.seq {
				continue
			}
			switch ne.Uint16(m[4:]) {
			case unix.NLMSG_ERROR:
				if len(m) < nlHdrLen+4 {
					return 0, fmt.Errorf("%w: short error message", errSockDiag)
				}
				switch e := unix.Errno(-int32(ne.Uint32(m[nlHdrLen:]))); e {
				case unix.ENOENT:
					return 0, nil
				case 0:
					return 0, fmt.Errorf("%w: acknowledgement without an answer", errSockDiag)
				default:
					return 0, e
				}
			case unix.SOCK_DIAG_BY_FAMILY:
				return diagState(m[nlHdrLen:], k)
			}
		}
	}
	return 0, fmt.Errorf("%w: no reply to request %d", errSockDiag, s.seq)
}

// diagState returns the state in an inet_diag_msg if it describes a socket
// of exactly flow k (local end the VIP, remote end the client), 0 if it
// describes another (a listener, an unconnected UDP socket).
func diagState(m []byte, k *flowKey) (uint8, error) {
	if len(m) < diagMsgLen {
		return 0, fmt.Errorf("%w: short inet_diag_msg (%d bytes)", errSockDiag, len(m))
	}
	be := binary.BigEndian
	id := m[diagMsgIDOff:]
	if be.Uint16(id[0:]) != k.vport || be.Uint16(id[2:]) != k.cport ||
		!diagAddrIs(m[0], id[4:20], &k.vip, k.v6) || !diagAddrIs(m[0], id[20:36], &k.client, k.v6) {
		return 0, nil
	}
	return m[1], nil
}

// putDiagAddr writes a into a 16-byte inet_diag address field: IPv4 in the
// first 4 bytes, the rest zero.
func putDiagAddr(f []byte, a *[16]byte, v6 bool) {
	if v6 {
		copy(f, a[:])
		return
	}
	copy(f, a[12:])
	clear(f[4:16])
}

// diagAddrIs reports whether the inet_diag address field f of a reply of
// family fam is a. A dual-stack IPv6 socket reports an IPv4 peer
// IPv4-mapped.
func diagAddrIs(fam uint8, f []byte, a *[16]byte, v6 bool) bool {
	switch {
	case fam == unix.AF_INET:
		return !v6 && [4]byte(f[:4]) == [4]byte(a[12:])
	case fam == unix.AF_INET6:
		return [16]byte(f[:16]) == *a // a is IPv4-mapped when !v6
	}
	return false
}

func nlAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
