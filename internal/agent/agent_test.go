package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/nettest"
)

// testLogger sends the agent's logs to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startAgent creates an agent inside ns and runs it; cleanup stops it,
// checks that Run returned nil on cancellation, and closes it.
func startAgent(t *testing.T, ns *nettest.NS, c Config) *Agent {
	t.Helper()
	a, stop := runAgent(t, ns, c)
	t.Cleanup(stop)
	return a
}

// runAgent creates an agent inside ns and runs it. stop (which may be
// called more than once) cancels Run, checks that it returned nil, and
// closes the agent.
func runAgent(t *testing.T, ns *nettest.NS, c Config) (a *Agent, stop func()) {
	t.Helper()
	c.Logger = testLogger(t)
	if err := ns.Do(func() (err error) { a, err = New(c); return err }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	return a, func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run after cancel: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("Run did not return after cancel")
			}
			if err := a.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

// waitCounters polls the agent's counters until cond holds or 5 s pass.
func waitCounters(t *testing.T, a *Agent, what string, cond func(c *Counters) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := a.Counters()
		if cond(&c) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: counters %+v", what, c)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// packetSocket is an AF_PACKET socket on one interface of a namespace, to
// send frames and capture what arrives.
type packetSocket struct {
	fd      int
	ifindex int
	mac     [6]byte
}

func openPacketSocket(t *testing.T, ns *nettest.NS, ifname string) *packetSocket {
	t.Helper()
	p := &packetSocket{fd: -1}
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		p.ifindex = ifc.Index
		copy(p.mac[:], ifc.HardwareAddr)
		proto := int(htons(unix.ETH_P_ALL))
		if p.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		if err := unix.Bind(p.fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: p.ifindex}); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
		return unix.SetsockoptTimeval(p.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if p.fd >= 0 {
		t.Cleanup(func() { unix.Close(p.fd) })
	}
	if err != nil {
		t.Fatalf("packet socket on %s in %s: %v", ifname, ns.Name, err)
	}
	return p
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (p *packetSocket) send(t *testing.T, frame []byte) {
	t.Helper()
	if err := unix.Sendto(p.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: p.ifindex}); err != nil {
		t.Fatalf("send frame: %v", err)
	}
}

// capture returns the first incoming frame that match accepts, failing the
// test after 5 s.
func (p *packetSocket) capture(t *testing.T, what string, match func(frame []byte) bool) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		n, from, err := unix.Recvfrom(p.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			t.Fatalf("capture: %v", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if match(buf[:n]) {
			return append([]byte(nil), buf[:n]...)
		}
	}
	t.Fatalf("no %s captured within 5 s", what)
	return nil
}

// isSynAck reports whether frame is an Ethernet frame carrying, directly
// (not encapsulated), a TCP SYN-ACK from from to to acknowledging seq.
func isSynAck(frame []byte, from, to netip.AddrPort, seq uint32) bool {
	if len(frame) < 14 {
		return false
	}
	et := binary.BigEndian.Uint16(frame[12:])
	ip := frame[14:]
	var src, dst netip.Addr
	var l4 []byte
	switch {
	case et == 0x0800 && len(ip) >= 20 && ip[0]>>4 == 4 && ip[9] == 6:
		hl := int(ip[0]&0xf) * 4
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		l4 = ip[hl:]
	case et == 0x86dd && len(ip) >= 40 && ip[6] == 6:
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		l4 = ip[40:]
	default:
		return false
	}
	if len(l4) < 20 || src != from.Addr() || dst != to.Addr() {
		return false
	}
	return binary.BigEndian.Uint16(l4[0:]) == from.Port() && binary.BigEndian.Uint16(l4[2:]) == to.Port() &&
		l4[13]&(tcpSYN|tcpACK|tcpRST) == tcpSYN|tcpACK && binary.BigEndian.Uint32(l4[8:]) == seq+1
}

func sysctl(t *testing.T, ns *nettest.NS, key string) string {
	t.Helper()
	return strings.TrimSpace(ns.Run(t, "cat", "/proc/sys/"+strings.ReplaceAll(key, ".", "/")))
}

// lbNamespace is the LBPrefixes of an agent in twoNamespaces' backend: the
// lb side's addresses.
var lbNamespace = []netip.Prefix{netip.MustParsePrefix("198.18.2.1/32"), netip.MustParsePrefix("2001:db8:2::1/128")}

// twoNamespaces builds "lb" and "backend" joined by a veth: 198.18.2.1/24
// and 2001:db8:2::1/64 on the lb side, .2 and ::2 on the backend side; the
// backend routes the client prefixes 198.18.3.0/24 and 2001:db8:3::/64 back
// over the veth, so replies to clients go straight to the lb namespace.
func twoNamespaces(t *testing.T) (lb, be *nettest.NS) {
	lb, be = nettest.New(t, "lb"), nettest.New(t, "be")
	nettest.Veth(t, lb, "eth0", "198.18.2.1/24", be, "eth0", "198.18.2.2/24")
	lb.Run(t, "ip", "-6", "addr", "add", "2001:db8:2::1/64", "dev", "eth0", "nodad")
	be.Run(t, "ip", "-6", "addr", "add", "2001:db8:2::2/64", "dev", "eth0", "nodad")
	be.Run(t, "ip", "route", "add", "198.18.3.0/24", "via", "198.18.2.1")
	be.Run(t, "ip", "-6", "route", "add", "2001:db8:3::/64", "via", "2001:db8:2::1")
	return lb, be
}

// TestE2EDecapDirectServerReturn sends real GUE frames from the lb
// namespace to an agent in the backend namespace and captures, on the lb
// side of the veth, the SYN-ACK the backend's kernel answers straight from
// the VIP to the client: proof of decapsulation, injection through the TUN
// device, local delivery on the VIP and direct server return.
func TestE2EDecapDirectServerReturn(t *testing.T) {
	nettest.RequireRoot(t)
	lb, be := twoNamespaces(t)
	// Reverse-path filtering, strict or loose, would drop every injected
	// packet; the agent must turn it off for the TUN device without making
	// eth0 less strict.
	be.Run(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")

	a := startAgent(t, be, Config{VIPs: []netip.Addr{vip4, vip6}, LBPrefixes: lbNamespace}) // default 0.0.0.0:6080, dual stack
	for key, want := range map[string]string{
		"net.ipv4.conf.all.rp_filter":     "0",
		"net.ipv4.conf.sluice0.rp_filter": "0",
		"net.ipv4.conf.eth0.rp_filter":    "1", // raised: still strict
		"net.ipv4.conf.default.rp_filter": "1",
	} {
		if got := sysctl(t, be, key); got != want {
			t.Errorf("%s = %s while the agent runs, want %s", key, got, want)
		}
	}
	err := be.Do(func() error {
		for _, addr := range []string{"198.18.0.10:80", "[2001:db8::10]:80"} {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			t.Cleanup(func() { l.Close() })
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listen on the VIPs: %v", err)
	}

	ps := openPacketSocket(t, lb, "eth0")
	var beMAC [6]byte
	if err := be.Do(func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err == nil {
			copy(beMAC[:], ifc.HardwareAddr)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lb4, be4 := netip.MustParseAddr("198.18.2.1"), netip.MustParseAddr("198.18.2.2")
	lb6, be6 := netip.MustParseAddr("2001:db8:2::1"), netip.MustParseAddr("2001:db8:2::2")

	// IPv4: outer IPv4 with the hop list [backend, 198.18.2.3] (a SYN:
	// taken locally, counted as hoplist_local).
	vipPort4 := netip.AddrPortFrom(vip4, 80)
	frame, _ := encapFrame(t, ps.mac, beMAC, lb4, be4, netip.MustParseAddr("198.18.2.3"), syn(client4, vipPort4, 1000))
	ps.send(t, frame)
	waitCounters(t, a, "IPv4 SYN delivered", func(c *Counters) bool { return c.Delivered == 1 })
	ps.capture(t, "IPv4 SYN-ACK from the VIP", func(f []byte) bool {
		if !isSynAck(f, vipPort4, client4, 1000) {
			return false
		}
		if [6]byte(f[0:6]) != ps.mac || [6]byte(f[6:12]) != beMAC {
			t.Errorf("SYN-ACK not sent over the veth from the backend: %x", f[:12])
		}
		return true
	})

	// IPv6: outer IPv6 (computed UDP checksum), no hop list.
	vipPort6 := netip.AddrPortFrom(vip6, 80)
	frame, _ = encapFrame(t, ps.mac, beMAC, lb6, be6, netip.Addr{}, syn(client6, vipPort6, 2000))
	ps.send(t, frame)
	ps.capture(t, "IPv6 SYN-ACK from the VIP", func(f []byte) bool { return isSynAck(f, vipPort6, client6, 2000) })

	waitCounters(t, a, "two delivered", func(c *Counters) bool { return c.Delivered == 2 })

	// Not for a VIP: dropped and counted, never delivered.
	other := netip.MustParseAddrPort("198.18.2.2:22") // the backend's own address
	frame, _ = encapFrame(t, ps.mac, beMAC, lb4, be4, netip.Addr{}, syn(client4, other, 3000))
	ps.send(t, frame)
	waitCounters(t, a, "inner_dst_not_vip", func(c *Counters) bool { return c.Drops[InnerDstNotVIP] == 1 })

	// Garbage UDP to the GUE port, over IPv4 and IPv6.
	err = lb.Do(func() error {
		for _, dst := range []string{"198.18.2.2:6080", "[2001:db8:2::2]:6080"} {
			c, err := net.Dial("udp", dst)
			if err != nil {
				return err
			}
			_, err = c.Write([]byte("not a GUE packet"))
			c.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitCounters(t, a, "malformed_gue", func(c *Counters) bool { return c.MalformedGUE() == 2 })

	c := a.Counters()
	want := Counters{Received: 5, Delivered: 2, HopListLocal: 1}
	want.Drops[InnerDstNotVIP] = 1
	want.Drops[GUEVersion] = 2 // 'n' = 0x6e: version 1
	want.ReceivedBytes, want.DeliveredBytes = c.ReceivedBytes, c.DeliveredBytes
	if c != want {
		t.Errorf("counters\n got %+v\nwant %+v", c, want)
	}
}

// TestCloseRemovesWhatItAdded checks that Close removes the TUN device and
// the VIPs New added to lo, leaves a VIP that was there before, restores
// all.rp_filter, stops Run and is idempotent.
func TestCloseRemovesWhatItAdded(t *testing.T) {
	nettest.RequireRoot(t)
	ns := nettest.New(t, "cl")
	ns.Run(t, "ip", "addr", "add", "198.18.0.11/32", "dev", "lo")
	ns.Run(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
	var a *Agent
	err := ns.Do(func() (err error) {
		a, err = New(Config{
			Listen:     netip.MustParseAddrPort("127.0.0.1:0"),
			TUN:        "sl-test",
			VIPs:       []netip.Addr{vip4, netip.MustParseAddr("198.18.0.11"), vip6},
			LBPrefixes: lo4,
			Logger:     testLogger(t),
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	lo := ns.Run(t, "ip", "-o", "addr", "show", "dev", "lo")
	for _, want := range []string{"198.18.0.10/32", "198.18.0.11/32", "2001:db8::10/128"} {
		if !strings.Contains(lo, want) {
			t.Errorf("lo lacks %s while the agent runs:\n%s", want, lo)
		}
	}
	if link := ns.Run(t, "ip", "-o", "link", "show", "sl-test"); !strings.Contains(link, "UP") {
		t.Errorf("TUN not up: %s", link)
	}
	if addrs := ns.Run(t, "ip", "-o", "addr", "show", "dev", "sl-test"); addrs != "" {
		t.Errorf("TUN has addresses (want none, not even link-local):\n%s", addrs)
	}
	if got := sysctl(t, ns, "net.ipv4.conf.all.rp_filter"); got != "0" {
		t.Errorf("all.rp_filter = %s, want 0", got)
	}
	if got := sysctl(t, ns, "net.ipv4.conf.lo.rp_filter"); got != "1" {
		t.Errorf("lo.rp_filter = %s, want 1 (raised to the old all value)", got)
	}
	if ap := a.LocalAddr(); ap.Addr() != netip.MustParseAddr("127.0.0.1") || ap.Port() == 0 {
		t.Errorf("LocalAddr = %v", ap)
	}

	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	time.Sleep(20 * time.Millisecond) // let Run block in the poller
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Run after Close = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := a.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run on a closed agent = %v", err)
	}

	checkClean(t, ns, "sl-test")
	if lo := ns.Run(t, "ip", "-o", "addr", "show", "dev", "lo"); !strings.Contains(lo, "198.18.0.11/32") {
		t.Errorf("Close removed a VIP it did not add:\n%s", lo)
	}
}

// checkClean checks that ns has no TUN device tun, no 198.18.0.10 or
// 2001:db8::10 on lo, all.rp_filter back at 1 and the per-device values
// back at 0.
func checkClean(t *testing.T, ns *nettest.NS, tun string) {
	t.Helper()
	lo := ns.Run(t, "ip", "-o", "addr", "show", "dev", "lo")
	for _, gone := range []string{"198.18.0.10/", "2001:db8::10/"} {
		if strings.Contains(lo, gone) {
			t.Errorf("lo still has %s:\n%s", gone, lo)
		}
	}
	if out, err := ns.Command("ip", "link", "show", tun).CombinedOutput(); err == nil {
		t.Errorf("TUN %s still exists:\n%s", tun, out)
	}
	for key, want := range map[string]string{
		"net.ipv4.conf.all.rp_filter":     "1",
		"net.ipv4.conf.default.rp_filter": "0",
		"net.ipv4.conf.lo.rp_filter":      "0",
	} {
		if got := sysctl(t, ns, key); got != want {
			t.Errorf("%s = %s after Close, want %s restored", key, got, want)
		}
	}
}

// TestNewUndoesOnFailure makes New fail at its last step (the UDP port is
// taken) and checks that the earlier steps were undone; and that a TUN name
// already in use is refused before anything changes.
func TestNewUndoesOnFailure(t *testing.T) {
	nettest.RequireRoot(t)
	ns := nettest.New(t, "un")
	ns.Run(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
	listen := netip.MustParseAddrPort("127.0.0.1:6099")
	err := ns.Do(func() error {
		busy, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(listen))
		if err != nil {
			return err
		}
		defer busy.Close()
		_, err = New(Config{Listen: listen, TUN: "sl-undo", VIPs: []netip.Addr{vip4, vip6}, LBPrefixes: lo4})
		if err == nil || !strings.Contains(err.Error(), "listen on UDP 127.0.0.1:6099") {
			t.Errorf("New with a busy port: %v", err)
		}
		_, err = New(Config{Listen: listen, TUN: "lo", VIPs: []netip.Addr{vip4}, LBPrefixes: lo4})
		if err == nil || !strings.Contains(err.Error(), `TUN "lo": a device of that name exists`) {
			t.Errorf("New with TUN lo: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, ns, "sl-undo")
}
