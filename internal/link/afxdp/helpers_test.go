package afxdp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/nettest"
)

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xa}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xb}
)

// Test addresses: the link's side is "lb", the traffic side is "cl".
var (
	lbAddr4 = netip.MustParseAddr("198.18.7.1")
	clAddr4 = netip.MustParseAddr("198.18.7.2")
	vip4    = netip.MustParseAddr("198.18.7.100")
	lbAddr6 = netip.MustParseAddr("2001:db8:7::1")
	clAddr6 = netip.MustParseAddr("2001:db8:7::2")
	vip6    = netip.MustParseAddr("2001:db8:7::100")
)

// udpFrame builds an Ethernet/IPv4 or IPv6/UDP frame with correct checksums.
func udpFrame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	var b []byte
	b = append(b, dstMAC...)
	b = append(b, srcMAC...)
	udpLen := 8 + len(payload)
	udp := make([]byte, udpLen)
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(udpLen))
	copy(udp[8:], payload)
	if src.Is4() {
		b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IP)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+udpLen))
		ip[8] = 64
		ip[9] = unix.IPPROTO_UDP
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ^csum(0, ip))
		pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, unix.IPPROTO_UDP, byte(udpLen>>8), byte(udpLen))
		binary.BigEndian.PutUint16(udp[6:], ^csum(csum(0, pseudo), udp))
		b = append(b, ip...)
	} else {
		b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IPV6)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(udpLen))
		ip[6] = unix.IPPROTO_UDP
		ip[7] = 64
		s, d := src.As16(), dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, 0, byte(udpLen>>8), byte(udpLen), 0, 0, 0, unix.IPPROTO_UDP)
		binary.BigEndian.PutUint16(udp[6:], ^csum(csum(0, pseudo), udp))
		b = append(b, ip...)
	}
	return append(b, udp...)
}

// csum is the ones' complement sum of b added to sum, folded.
func csum(sum uint16, b []byte) uint16 {
	s := uint32(sum)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// vlanTag inserts one VLAN tag with the given TPID after the MAC addresses.
func vlanTag(frame []byte, tpid, vid uint16) []byte {
	out := append([]byte{}, frame[:12]...)
	out = binary.BigEndian.AppendUint16(out, tpid)
	out = binary.BigEndian.AppendUint16(out, vid)
	return append(out, frame[12:]...)
}

func arpFrame() []byte {
	b := append(append([]byte{}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), macB...)
	b = binary.BigEndian.AppendUint16(b, unix.ETH_P_ARP)
	b = append(b, 0, 1, 8, 0, 6, 4, 0, 1)
	b = append(b, macB...)
	b = append(b, 198, 18, 7, 2, 0, 0, 0, 0, 0, 0, 198, 18, 7, 1)
	return b
}

// testbed is two namespaces joined by a veth: the link side "lb" (interface
// lb0) and the traffic side "cl" (interface cl0).
type testbed struct {
	lb, cl             *nettest.NS
	lbMAC, clMAC       net.HardwareAddr
	lbIfindex, clIndex int
	lbHandle, clHandle *netlink.Handle
}

func newTestbed(t testing.TB) *testbed {
	t.Helper()
	nettest.RequireRoot(t)
	tb := &testbed{lb: nettest.New(t, "xlb"), cl: nettest.New(t, "xcl")}
	nettest.Veth(t, tb.lb, "lb0", lbAddr4.String()+"/24", tb.cl, "cl0", clAddr4.String()+"/24")
	tb.lb.Run(t, "ip", "addr", "add", lbAddr6.String()+"/64", "dev", "lb0", "nodad")
	tb.cl.Run(t, "ip", "addr", "add", clAddr6.String()+"/64", "dev", "cl0", "nodad")
	var err error
	if tb.lbHandle, err = netlink.NewHandleAt(tb.lb.Handle(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tb.lbHandle.Close)
	if tb.clHandle, err = netlink.NewHandleAt(tb.cl.Handle(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tb.clHandle.Close)
	lb, err := tb.lbHandle.LinkByName("lb0")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := tb.clHandle.LinkByName("cl0")
	if err != nil {
		t.Fatal(err)
	}
	tb.lbMAC, tb.lbIfindex = lb.Attrs().HardwareAddr, lb.Attrs().Index
	tb.clMAC, tb.clIndex = cl.Attrs().HardwareAddr, cl.Attrs().Index
	return tb
}

// open creates a link on lb0 inside the lb namespace; t.Cleanup closes it.
func (tb *testbed) open(t testing.TB, c Config) *Link {
	t.Helper()
	var l *Link
	if err := tb.lb.Do(func() (err error) { l, err = New("lb0", c); return err }); err != nil {
		t.Fatalf("New(%v): %v", c.Mode, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// xdpAttached returns the XDP attachment of lb0 as netlink reports it.
func (tb *testbed) xdpAttached(t testing.TB) *netlink.LinkXdp {
	t.Helper()
	l, err := tb.lbHandle.LinkByName("lb0")
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		return x
	}
	return nil
}

// clFrame is a UDP frame from the traffic side to dst, with seq in its
// payload and its source port.
func (tb *testbed) clFrame(dst netip.Addr, seq uint32, size int) []byte {
	src := clAddr4
	if dst.Is6() {
		src = clAddr6
	}
	payload := make([]byte, max(size, 8))
	binary.BigEndian.PutUint32(payload, seq)
	for i := 4; i < len(payload); i++ {
		payload[i] = byte(seq) + byte(i)
	}
	return udpFrame(tb.lbMAC, tb.clMAC, src, dst, 10000+uint16(seq%5000), 9999, payload)
}

// packetSocket is an AF_PACKET socket bound to one interface and EtherType.
type packetSocket struct{ fd int }

// openPacket opens a packet socket in ns on ifindex for EtherType proto
// (ETH_P_ALL for all); it ignores frames the namespace sends itself.
func openPacket(t testing.TB, ns *nettest.NS, ifindex int, proto uint16) *packetSocket {
	t.Helper()
	var fd int
	err := ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(proto)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifindex}); err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return &packetSocket{fd: fd}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (p *packetSocket) send(t testing.TB, frame []byte) {
	t.Helper()
	for {
		_, err := unix.Write(p.fd, frame)
		if err == unix.ENOBUFS || err == unix.EAGAIN {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		if err != nil {
			t.Fatalf("packet send: %v", err)
		}
		return
	}
}

// recv returns the next frame, or nil after the socket's 50ms timeout.
func (p *packetSocket) recv(buf []byte) []byte {
	n, _, err := unix.Recvfrom(p.fd, buf, 0)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// sendBatch sends frames with one sendmmsg call per up to len(frames).
func (p *packetSocket) sendBatch(frames [][]byte, msgs []unix.Mmsghdr, iovs []unix.Iovec) (int, error) {
	for i, f := range frames {
		iovs[i].Base = &f[0]
		iovs[i].SetLen(len(f))
		msgs[i] = unix.Mmsghdr{}
		msgs[i].Hdr.Iov = &iovs[i]
		msgs[i].Hdr.SetIovlen(1)
	}
	n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(p.fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(frames)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
