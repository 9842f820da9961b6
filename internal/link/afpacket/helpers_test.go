//go:build linux

package afpacket

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/nettest"
)

// The test network: namespace a (the link's side) and b (the peer), joined
// by a veth afa <-> afb.
const (
	ifA = "afa"
	ifB = "afb"
)

var (
	addrA = netip.MustParseAddr("198.18.0.1")
	addrB = netip.MustParseAddr("198.18.0.2")
	vip4  = netip.MustParseAddr("198.18.1.10")
	vip4b = netip.MustParseAddr("198.18.1.11")
	vip6  = netip.MustParseAddr("2001:db8::10")
	vip6b = netip.MustParseAddr("2001:db8::11")
	// Test frames go to a MAC address nobody owns: both kernels drop them
	// (PACKET_OTHERHOST) without answering, packet sockets still see them.
	macNobody = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	macSender = [6]byte{0x02, 0, 0, 0, 0, 0x02}
)

type pair struct{ a, b *nettest.NS }

func newPair(tb testing.TB) pair {
	tb.Helper()
	nettest.RequireRoot(tb)
	p := pair{a: nettest.New(tb, "afpa"), b: nettest.New(tb, "afpb")}
	nettest.Veth(tb, p.a, ifA, addrA.String()+"/24", p.b, ifB, addrB.String()+"/24")
	return p
}

// openLink opens a Link on ifname inside ns; t.Cleanup closes it.
func openLink(tb testing.TB, ns *nettest.NS, ifname string, c Config) *Link {
	tb.Helper()
	var l *Link
	err := ns.Do(func() (err error) {
		l, err = New(ifname, c)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

// setFilter sets the filter and drains the frames queued before it took
// effect.
func setFilter(tb testing.TB, l *Link, dsts ...netip.Addr) {
	tb.Helper()
	if err := l.SetFilter(dsts); err != nil {
		tb.Fatal(err)
	}
	frames := make([]link.Frame, l.BatchSize())
	for {
		n, err := l.Recv(frames)
		if err != nil {
			tb.Fatal(err)
		}
		if n == 0 {
			return
		}
		l.Release(frames[:n])
	}
}

// rawSock is an independent AF_PACKET socket for the other end of a test:
// it writes whole frames and, when opened to receive, reads every frame that
// arrives on its interface (not its own).
type rawSock struct{ fd int }

func openRaw(tb testing.TB, ns *nettest.NS, ifname string, receive bool) *rawSock {
	tb.Helper()
	var fd int
	err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(ifname)
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			return err
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20)
		proto := uint16(0) // receives nothing
		if receive {
			proto = htons(unix.ETH_P_ALL)
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: int(ifr.Uint32())})
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	return &rawSock{fd: fd}
}

func (r *rawSock) write(tb testing.TB, frame []byte) {
	tb.Helper()
	for {
		_, err := unix.Write(r.fd, frame)
		if err == unix.ENOBUFS || err == unix.EAGAIN {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			tb.Fatalf("raw write of %d bytes: %v", len(frame), err)
		}
		return
	}
}

// read returns the next frame, or nil after timeout.
func (r *rawSock) read(tb testing.TB, timeout time.Duration) []byte {
	tb.Helper()
	fds := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, int(timeout/time.Millisecond))
	if err == unix.EINTR {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	if n == 0 {
		return nil
	}
	buf := make([]byte, 1<<16)
	m, err := unix.Read(r.fd, buf)
	if err != nil {
		tb.Fatal(err)
	}
	return buf[:m]
}

// expectFrames reads frames until every frame in want arrived or timeout passed,
// then keeps reading for linger to catch extra frames. Frames that are in
// neither want nor unwanted are ignored (the kernels' own traffic). It
// reports missing and duplicate wanted frames and any unwanted frame.
func expectFrames(tb testing.TB, next func(time.Duration) [][]byte, want, unwanted [][]byte, timeout, linger time.Duration) {
	tb.Helper()
	seen := make([]int, len(want))
	missing := len(want)
	deadline := time.Now().Add(timeout)
	var lingerUntil time.Time
	for {
		now := time.Now()
		if missing == 0 && lingerUntil.IsZero() {
			lingerUntil = now.Add(linger)
		}
		if (!lingerUntil.IsZero() && now.After(lingerUntil)) || now.After(deadline) {
			break
		}
		for _, f := range next(20 * time.Millisecond) {
			for i, w := range want {
				if bytes.Equal(f, w) {
					if seen[i] == 0 {
						missing--
					}
					seen[i]++
				}
			}
			for _, u := range unwanted {
				if bytes.Equal(f, u) {
					tb.Errorf("unwanted frame delivered: %x", f)
				}
			}
		}
	}
	for i, n := range seen {
		switch {
		case n == 0:
			tb.Errorf("frame %d not delivered: %x", i, want[i])
		case n > 1:
			tb.Errorf("frame %d delivered %d times", i, n)
		}
	}
}

// linkFrames adapts a Link to expectFrames: it receives, copies and releases.
func linkFrames(tb testing.TB, l *Link) func(time.Duration) [][]byte {
	frames := make([]link.Frame, l.BatchSize())
	return func(time.Duration) [][]byte {
		n, err := l.Recv(frames)
		if err != nil {
			tb.Fatalf("Recv: %v", err)
		}
		out := make([][]byte, n)
		for i := range n {
			out[i] = bytes.Clone(frames[i].Bytes())
		}
		l.Release(frames[:n])
		return out
	}
}

func rawFrames(tb testing.TB, r *rawSock) func(time.Duration) [][]byte {
	return func(d time.Duration) [][]byte {
		if f := r.read(tb, d); f != nil {
			return [][]byte{f}
		}
		return nil
	}
}

// marker starts the payload of every numbered test frame.
const marker = "sluice-afpacket!"

// udpFrame builds an Ethernet frame with an IPv4 or IPv6 UDP packet from
// src to dst whose payload is the marker, seq, and pad filler bytes.
func udpFrame(src, dst netip.Addr, seq uint32, pad int) []byte {
	payload := append([]byte(marker), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(payload[len(marker):], seq)
	for i := range pad {
		payload = append(payload, byte(seq)+byte(i))
	}
	f := append(macNobody[:], macSender[:]...)
	udpLen := 8 + len(payload)
	if dst.Is4() {
		f = binary.BigEndian.AppendUint16(f, 0x0800)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+udpLen))
		ip[8], ip[9] = 64, unix.IPPROTO_UDP
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
		f = append(f, ip...)
	} else {
		f = binary.BigEndian.AppendUint16(f, 0x86dd)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(udpLen))
		ip[6], ip[7] = unix.IPPROTO_UDP, 64
		s, d := src.As16(), dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		f = append(f, ip...)
	}
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], 40000+uint16(seq%1000))
	binary.BigEndian.PutUint16(udp[2:], 9) // discard
	binary.BigEndian.PutUint16(udp[4:], uint16(udpLen))
	f = append(f, udp...)
	return append(f, payload...)
}

// seqOf returns the sequence number of a frame built by udpFrame (untagged
// IPv4), or -1.
func seqOf(f []byte) int {
	const off = 14 + 20 + 8
	if len(f) < off+len(marker)+4 || string(f[off:off+len(marker)]) != marker {
		return -1
	}
	return int(binary.BigEndian.Uint32(f[off+len(marker):]))
}

// tagged inserts a VLAN tag after the MAC addresses.
func tagged(f []byte, tpid, tci uint16) []byte {
	out := append([]byte(nil), f[:12]...)
	out = binary.BigEndian.AppendUint16(out, tpid)
	out = binary.BigEndian.AppendUint16(out, tci)
	return append(out, f[12:]...)
}

// arpFrame is an ARP request for ip, to nobody's MAC.
func arpFrame(ip netip.Addr) []byte {
	f := append(macNobody[:], macSender[:]...)
	f = binary.BigEndian.AppendUint16(f, 0x0806)
	f = append(f, 0, 1, 0x08, 0, 6, 4, 0, 1)
	f = append(f, macSender[:]...)
	s := addrB.As4()
	f = append(f, s[:]...)
	f = append(f, make([]byte, 6)...)
	d := ip.As4()
	return append(f, d[:]...)
}

func ipChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}
