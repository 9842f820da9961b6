package agent

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/health/vipprobe"
	"github.com/sluicelb/sluice/internal/nettest"
)

// TestHostChecks runs the agent's local checks against real sockets in a
// namespace: what counts as a service answering on a VIP.
func TestHostChecks(t *testing.T) {
	nettest.RequireRoot(t)
	ns := nettest.New(t, "hc")
	ns.Run(t, "ip", "addr", "add", "198.18.0.10/32", "dev", "lo")
	ns.Run(t, "ip", "addr", "add", "2001:db8::10/128", "dev", "lo", "nodad")
	ns.Run(t, "ip", "addr", "add", "198.18.2.2/32", "dev", "lo") // the host's own address

	udpOn := func(network, addr string, dev string) net.PacketConn {
		t.Helper()
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				if dev != "" {
					serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev)
				}
			})
			if err != nil {
				return err
			}
			return serr
		}}
		c, err := lc.ListenPacket(context.Background(), network, addr)
		if err != nil {
			t.Fatalf("listen udp %s: %v", addr, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	tcpOn := func(addr string) net.Listener {
		t.Helper()
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listen tcp %s: %v", addr, err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}

	err := ns.Do(func() error {
		diag, err := netlink.NewHandle(unix.NETLINK_INET_DIAG)
		if err != nil {
			return err
		}
		defer diag.Close()
		h := &hostChecks{diag: diag, tunIndex: 999}

		udpOn("udp", "198.18.0.10:7000", "")
		udpOn("udp4", "0.0.0.0:7001", "") // AF_INET ("udp" would open a dual-stack socket)
		udpOn("udp", "[::]:7002", "")
		udpOn("udp", "198.18.2.2:7003", "")
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(198, 18, 0, 10), Port: 7004},
			&net.UDPAddr{IP: net.IPv4(198, 18, 2, 2), Port: 9}) // connected: takes one peer only
		if err != nil {
			return err
		}
		defer c.Close()
		udpOn("udp", "198.18.0.10:7006", "lo") // bound to a device the injected packets do not arrive on
		udpOn("udp", "[2001:db8::10]:7007", "")

		tcpOn("198.18.0.10:80")
		tcpOn("0.0.0.0:81")
		tcpOn("198.18.2.2:82")
		tcpOn("[::]:83")
		gone := tcpOn("198.18.0.10:84")
		gone.Close()

		up, down := vipprobe.StatusUp, vipprobe.StatusDown
		for _, k := range []struct {
			vip   string
			proto uint8
			want  vipprobe.Status
		}{
			{"198.18.0.10:7000", vipprobe.ProtoUDP, up},
			{"198.18.0.10:7001", vipprobe.ProtoUDP, up},      // IPv4 wildcard
			{"198.18.0.10:7002", vipprobe.ProtoUDP, up},      // dual-stack wildcard
			{"[2001:db8::10]:7002", vipprobe.ProtoUDP, up},   // dual-stack wildcard, IPv6 VIP
			{"[2001:db8::10]:7001", vipprobe.ProtoUDP, down}, // IPv4 wildcard does not take IPv6
			{"198.18.0.10:7003", vipprobe.ProtoUDP, down},    // the host address only
			{"198.18.0.10:7004", vipprobe.ProtoUDP, down},    // connected
			{"198.18.0.10:7005", vipprobe.ProtoUDP, down},    // nothing
			{"198.18.0.10:7006", vipprobe.ProtoUDP, down},    // bound to lo
			{"[2001:db8::10]:7007", vipprobe.ProtoUDP, up},
			{"198.18.0.10:80", vipprobe.ProtoUDP, down}, // TCP is not UDP
			{"198.18.0.10:80", vipprobe.ProtoTCP, up},
			{"198.18.0.10:81", vipprobe.ProtoTCP, up},
			{"198.18.0.10:82", vipprobe.ProtoTCP, down}, // the host address only
			{"198.18.0.10:83", vipprobe.ProtoTCP, up},
			{"[2001:db8::10]:83", vipprobe.ProtoTCP, up},
			{"198.18.0.10:84", vipprobe.ProtoTCP, down}, // closed
			{"198.18.0.10:7000", vipprobe.ProtoTCP, down},
		} {
			key := probeKey{netip.MustParseAddrPort(k.vip), k.proto}
			if got := h.check(key); got != k.want {
				t.Errorf("%s proto %d: %v, want %v", k.vip, k.proto, got, k.want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
