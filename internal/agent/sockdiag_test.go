package agent

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/nettest"
	"github.com/sluicelb/sluice/internal/packet"
)

// keyOf returns the flow key of packets from client to vip.
func keyOf(proto uint8, client, vip netip.AddrPort) flowKey {
	return flowKey{client: client.Addr().As16(), vip: vip.Addr().As16(),
		cport: client.Port(), vport: vip.Port(), proto: proto, v6: vip.Addr().Is6()}
}

func TestOwned(t *testing.T) {
	for st := range uint8(14) {
		want := st != 0 && st != tcpTimeWait && st != 7 && st != tcpListen && st <= tcpNewSynRecv
		if got := owned(packet.ProtoTCP, st); got != want {
			t.Errorf("owned(TCP, %d) = %v", st, got)
		}
		if got := owned(packet.ProtoUDP, st); got != (st == tcpEstablished) {
			t.Errorf("owned(UDP, %d) = %v", st, got)
		}
	}
}

// TestSockDiag asks the kernel about real sockets in every state that
// matters, over IPv4, IPv6 and dual-stack sockets, TCP and UDP.
func TestSockDiag(t *testing.T) {
	nettest.RequireRoot(t)
	ns := nettest.New(t, "sd")
	for _, a := range []string{"198.18.0.10/32", "198.18.3.7/32"} {
		ns.Run(t, "ip", "addr", "add", a, "dev", "lo")
	}
	for _, a := range []string{"2001:db8::10/128", "2001:db8:3::7/128"} {
		ns.Run(t, "ip", "addr", "add", a, "dev", "lo", "nodad")
	}
	cl4, cl6 := netip.MustParseAddr("198.18.3.7"), netip.MustParseAddr("2001:db8:3::7")

	var d *sockDiag
	if err := ns.Do(func() (err error) { d, err = openSockDiag(); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.close() })
	check := func(what string, k flowKey, want uint8) {
		t.Helper()
		got, err := d.state(&k)
		if err != nil {
			t.Errorf("%s: %v", what, err)
		} else if got != want {
			t.Errorf("%s: state %d, want %d", what, got, want)
		}
	}

	// connect opens a TCP connection from client (port 0: any) to the
	// listener l (on vip4 if l listens on all addresses) and returns both
	// ends.
	connect := func(l net.Listener, client netip.Addr) (c, s net.Conn) {
		t.Helper()
		to := netip.MustParseAddrPort(l.Addr().String())
		if to.Addr().IsUnspecified() {
			to = netip.AddrPortFrom(vip4, to.Port())
		}
		err := ns.Do(func() (err error) {
			dl := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(client, 0))}
			c, err = dl.Dial("tcp", to.String())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		s, err = l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); s.Close() })
		return c, s
	}
	listen := func(network, addr string) net.Listener {
		t.Helper()
		var l net.Listener
		if err := ns.Do(func() (err error) { l, err = net.Listen(network, addr); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	tcpKey := func(s net.Conn) flowKey {
		return keyOf(packet.ProtoTCP, netip.MustParseAddrPort(s.RemoteAddr().String()),
			netip.MustParseAddrPort(s.LocalAddr().String()))
	}
	waitState := func(what string, k flowKey, want uint8) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for {
			got, err := d.state(&k)
			if err == nil && got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: state %d (%v), want %d", what, got, err, want)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	l4 := listen("tcp4", "198.18.0.10:80")
	_, s := connect(l4, cl4)
	k := tcpKey(s)
	check("IPv4 established", k, tcpEstablished)
	other := k
	other.cport++
	check("IPv4 other client port: the listener, not counted", other, 0)
	other = k
	other.vport = 99
	check("IPv4 nothing on the port", other, 0)
	udpK := k
	udpK.proto = packet.ProtoUDP
	check("UDP lookup of a TCP flow", udpK, 0)

	l46 := listen("tcp", "[::]:81") // dual stack
	_, s = connect(l46, cl4)
	check("IPv4 on a dual-stack socket", tcpKey(s), tcpEstablished)

	l6 := listen("tcp6", "[2001:db8::10]:82")
	_, s = connect(l6, cl6)
	check("IPv6 established", tcpKey(s), tcpEstablished)

	// The client closes, the server does not: CLOSE_WAIT at the server.
	c, s := connect(l4, cl4)
	c.Close()
	waitState("CLOSE_WAIT", tcpKey(s), tcpCloseWait)
	// The server closes, the client does not: FIN_WAIT2.
	c, s = connect(l6, cl6)
	k = tcpKey(s)
	s.Close()
	waitState("FIN_WAIT2", k, tcpFinWait2)
	// ... then the client closes too: TIME_WAIT at the server.
	c.Close()
	waitState("TIME_WAIT", k, tcpTimeWait)

	// A request mini-socket: a SYN from an address whose SYN-ACK goes
	// nowhere (routed to lo, dropped there), so the handshake stays half
	// open. (With no route at all the listener would drop the SYN.)
	ghost := netip.MustParseAddrPort("198.18.9.9:5555")
	ns.Run(t, "ip", "route", "add", "198.18.9.0/24", "dev", "lo")
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, syn(ghost, netip.MustParseAddrPort("198.18.0.10:80"), 77), 0,
			&unix.SockaddrInet4{Addr: [4]byte{198, 18, 0, 10}})
	})
	if err != nil {
		t.Fatal(err)
	}
	waitState("SYN_RECV", keyOf(packet.ProtoTCP, ghost, netip.MustParseAddrPort("198.18.0.10:80")), tcpSynRecv)

	// UDP: connected sockets own their flow; unconnected ones do not.
	udp := func(network string, local, remote netip.AddrPort) {
		t.Helper()
		err := ns.Do(func() error {
			var c *net.UDPConn
			var err error
			if remote.IsValid() {
				c, err = net.DialUDP(network, net.UDPAddrFromAddrPort(local), net.UDPAddrFromAddrPort(remote))
			} else {
				c, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(local))
			}
			if err == nil {
				t.Cleanup(func() { c.Close() })
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	peer4, peer6 := netip.AddrPortFrom(cl4, 5353), netip.AddrPortFrom(cl6, 5353)
	udp("udp4", netip.MustParseAddrPort("198.18.0.10:53"), peer4)
	udp("udp4", netip.MustParseAddrPort("198.18.0.10:54"), netip.AddrPort{})
	udp("udp6", netip.MustParseAddrPort("[2001:db8::10]:53"), peer6)
	// An AF_INET6 socket bound to the IPv4-mapped VIP and connected to the
	// IPv4-mapped client (Go's net package would open an AF_INET one).
	err = ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet6{Port: 56, Addr: vip4.As16()}); err != nil {
			return err
		}
		return unix.Connect(fd, &unix.SockaddrInet6{Port: 5353, Addr: cl4.As16()})
	})
	if err != nil {
		t.Fatal(err)
	}
	vipPort := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	check("UDP connected", keyOf(packet.ProtoUDP, peer4, vipPort("198.18.0.10:53")), tcpEstablished)
	check("UDP connected, other client port", keyOf(packet.ProtoUDP, netip.AddrPortFrom(cl4, 5354), vipPort("198.18.0.10:53")), 0)
	check("UDP unconnected", keyOf(packet.ProtoUDP, peer4, vipPort("198.18.0.10:54")), 0)
	check("UDP nothing", keyOf(packet.ProtoUDP, peer4, vipPort("198.18.0.10:55")), 0)
	check("UDP IPv6 connected", keyOf(packet.ProtoUDP, peer6, vipPort("[2001:db8::10]:53")), tcpEstablished)
	check("UDP connected dual-stack", keyOf(packet.ProtoUDP, peer4, vipPort("198.18.0.10:56")), tcpEstablished)
}

func TestSockDiagAllocs(t *testing.T) {
	nettest.RequireRoot(t)
	ns := nettest.New(t, "sa")
	var d *sockDiag
	if err := ns.Do(func() (err error) { d, err = openSockDiag(); return err }); err != nil {
		t.Fatal(err)
	}
	defer d.close()
	k := keyOf(packet.ProtoTCP, client4, netip.AddrPortFrom(vip4, 80))
	if n := testing.AllocsPerRun(100, func() { d.state(&k) }); n != 0 {
		t.Errorf("state allocates %v times", n)
	}
}

// BenchmarkSockDiag measures one exact sock_diag lookup (what an ownership
// cache miss costs): a flow with an established socket, and one with only
// a listener.
func BenchmarkSockDiag(b *testing.B) {
	nettest.RequireRoot(b)
	ns := nettest.New(b, "sb")
	ns.Run(b, "ip", "addr", "add", "198.18.0.10/32", "dev", "lo")
	var d *sockDiag
	var srv net.Conn
	err := ns.Do(func() (err error) {
		if d, err = openSockDiag(); err != nil {
			return err
		}
		l, err := net.Listen("tcp4", "198.18.0.10:80")
		if err != nil {
			return err
		}
		b.Cleanup(func() { l.Close() })
		c, err := net.Dial("tcp4", "198.18.0.10:80")
		if err != nil {
			return err
		}
		b.Cleanup(func() { c.Close() })
		srv, err = l.Accept()
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close(); d.close() })
	est := keyOf(packet.ProtoTCP, netip.MustParseAddrPort(srv.RemoteAddr().String()), netip.MustParseAddrPort(srv.LocalAddr().String()))
	lis := est
	lis.cport++
	for _, bc := range []struct {
		name string
		k    flowKey
		want uint8
	}{{"established", est, tcpEstablished}, {"listener_only", lis, 0}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if st, err := d.state(&bc.k); err != nil || st != bc.want {
					b.Fatalf("state %d, %v", st, err)
				}
			}
		})
	}
}
