package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var (
	testVIP4 = netip.MustParseAddr("198.18.0.10")
	testVIP6 = netip.MustParseAddr("2001:db8::10")
)

// serveIn runs serve inside n until the test ends; serve must return nil
// once its context is cancelled.
func serveIn(t *testing.T, n *Node, serve func(ctx context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Do(func() error { return serve(ctx) }) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: server: %v", n, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s: server did not return after cancel", n)
		}
	}
	t.Cleanup(stop)
	return stop
}

// curl fetches url from n, retrying while the server starts.
func curl(t *testing.T, n *Node, url string) string {
	t.Helper()
	var out string
	var err error
	for range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		out, err = n.Run(ctx, "curl", "-sS", "-m", "2", url)
		cancel()
		if err == nil {
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: curl %s: %v", n, url, err)
	return ""
}

func addVIPs(t *testing.T, n *Node) {
	t.Helper()
	run(t, n, "ip", "addr", "add", testVIP4.String()+"/32", "dev", "lo")
	run(t, n, "ip", "addr", "add", testVIP6.String()+"/128", "dev", "lo")
}

func TestServeHTTP(t *testing.T) {
	requireLab(t, "curl")
	l := upLab(t, Config{Backends: 2})
	be := l.Backends[1]
	addrs := []string{
		// The VIPs are not configured yet: IP_FREEBIND lets it bind them.
		netip.AddrPortFrom(testVIP4, 80).String(), netip.AddrPortFrom(testVIP6, 80).String(),
		netip.AddrPortFrom(be.Addr4, 80).String(), netip.AddrPortFrom(be.Addr6, 80).String(),
	}
	stop := serveIn(t, be, func(ctx context.Context) error { return ServeHTTP(ctx, addrs, "be2") })
	// From the client, through the router, over real TCP connections.
	for _, url := range []string{"http://198.18.30.102/", "http://[2001:db8:30::102]/x?y"} {
		if got := curl(t, l.Client, url); got != "be2\n" {
			t.Errorf("client: GET %s = %q, want \"be2\\n\"", url, got)
		}
	}
	// On the VIPs once they exist (as the agent would configure them).
	addVIPs(t, be)
	for _, url := range []string{"http://198.18.0.10/", "http://[2001:db8::10]/"} {
		if got := curl(t, be, url); got != "be2\n" {
			t.Errorf("%s: GET %s = %q, want \"be2\\n\"", be, url, got)
		}
	}
	if got := run(t, l.Client, "curl", "-sS", "-D", "-", "-o", "/dev/null", "http://198.18.30.102/"); !strings.Contains(got, "X-Backend: be2") {
		t.Errorf("response headers lack X-Backend: be2:\n%s", got)
	}
	stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if out, err := l.Client.Run(ctx, "curl", "-sS", "-m", "1", "http://198.18.30.102/"); err == nil {
		t.Errorf("server still answers after cancel: %q", out)
	}
}

// udpAsk sends msg from n to addr and returns the reply and its source.
func udpAsk(t *testing.T, n *Node, addr netip.AddrPort, msg string) (string, netip.AddrPort) {
	t.Helper()
	var c *net.UDPConn
	if err := n.Do(func() (err error) { c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr)); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1500)
	var err error
	for range 20 { // the first datagrams may race the server's start
		if _, err = c.Write([]byte(msg)); err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		var k int
		var from netip.AddrPort
		if k, from, err = c.ReadFromUDPAddrPort(buf); err == nil {
			return string(buf[:k]), from
		}
	}
	t.Fatalf("%s: no UDP reply from %v: %v", n, addr, err)
	return "", netip.AddrPort{}
}

func TestServeUDPEcho(t *testing.T) {
	requireLab(t)
	l := upLab(t, Config{Backends: 1})
	be := l.Backends[0]
	targets := []netip.AddrPort{
		netip.AddrPortFrom(be.Addr4, 7), netip.AddrPortFrom(be.Addr6, 7),
		netip.AddrPortFrom(testVIP4, 7), netip.AddrPortFrom(testVIP6, 7),
	}
	var addrs []string
	for _, a := range targets {
		addrs = append(addrs, a.String())
	}
	serveIn(t, be, func(ctx context.Context) error { return ServeUDPEcho(ctx, addrs, "be1") })
	for i, a := range targets[:2] {
		msg := fmt.Sprintf("hello %d", i)
		got, from := udpAsk(t, l.Client, a, msg)
		if got != "be1:"+msg || from.Addr().Unmap() != a.Addr() {
			t.Errorf("client -> %v: %q from %v, want %q from %v", a, got, from, "be1:"+msg, a.Addr())
		}
	}
	addVIPs(t, be)
	for _, a := range targets[2:] {
		if got, from := udpAsk(t, be, a, "vip"); got != "be1:vip" || from.Addr().Unmap() != a.Addr() {
			t.Errorf("%s -> %v: %q from %v, want \"be1:vip\" from the VIP", be, a, got, from)
		}
	}
}

func TestServeErrors(t *testing.T) {
	ctx := context.Background()
	if err := ServeHTTP(ctx, nil, "x"); err == nil {
		t.Error("ServeHTTP with no address succeeded")
	}
	if err := ServeHTTP(ctx, []string{"not an address"}, "x"); err == nil {
		t.Error("ServeHTTP on a bad address succeeded")
	}
	if err := ServeUDPEcho(ctx, nil, "x"); err == nil {
		t.Error("ServeUDPEcho with no address succeeded")
	}
	if err := ServeUDPEcho(ctx, []string{"127.0.0.1:99999"}, "x"); err == nil {
		t.Error("ServeUDPEcho on a bad port succeeded")
	}
}
