package stack

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// TestSendUDP sends a datagram larger than any Ethernet MTU over loopback in
// each family and checks what arrives: payload, source address and that it
// went to the right port.
func TestSendUDP(t *testing.T) {
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, addr := range []string{"127.0.0.1", "::1"} {
		a := netip.MustParseAddr(addr)
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
		if err != nil {
			t.Skipf("%s: %v", addr, err)
		}
		defer c.Close()
		port := c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		payload := bytes.Repeat([]byte("sluice"), 1500) // 9000 bytes
		if err := s.SendUDP(payload, a.As16(), a.As16(), a.Is6(), port); err != nil {
			t.Fatalf("%s: SendUDP: %v", addr, err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 65536)
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if !bytes.Equal(buf[:n], payload) {
			t.Errorf("%s: received %d bytes, want the %d sent", addr, n, len(payload))
		}
		if from.Addr().Unmap() != a {
			t.Errorf("%s: source %v", addr, from)
		}
	}
}

func TestSendUDPAllocs(t *testing.T) {
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Skip(err)
	}
	defer c.Close()
	port := c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	lo := netip.MustParseAddr("127.0.0.1").As16()
	payload := make([]byte, 100)
	if n := testing.AllocsPerRun(50, func() { s.SendUDP(payload, lo, lo, false, port) }); n != 0 {
		t.Fatalf("SendUDP allocates %v times per datagram", n)
	}
}

// With CAP_NET_ADMIN a source address this host does not have is accepted
// (node.source_v4 may name one the link uses as is).
func TestSendUDPForeignSource(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs CAP_NET_ADMIN (IP_TRANSPARENT)")
	}
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Skip(err)
	}
	defer c.Close()
	port := c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	foreign := netip.MustParseAddr("198.18.77.1").As16()
	lo := netip.MustParseAddr("127.0.0.1").As16()
	if err := s.SendUDP([]byte("x"), foreign, lo, false, port); err != nil {
		t.Fatalf("foreign source refused: %v", err)
	}
}
