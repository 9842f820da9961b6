package egress

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/nettest"
)

// e2eNet is a client namespace whose uplink (up0, the program's interface)
// leads to a peer namespace that holds the VIPs and the backend addresses
// (on lo) and listens on the GUE port.
type e2eNet struct {
	client, peer *nettest.NS
}

func newE2ENet(t *testing.T) *e2eNet {
	nettest.RequireRoot(t)
	nettest.RequireTools(t, "ethtool", "sysctl")
	n := &e2eNet{client: nettest.New(t, "eec"), peer: nettest.New(t, "eep")}
	nettest.Veth(t, n.client, "up0", "198.18.1.10/24", n.peer, "dn0", "198.18.1.1/24")
	n.client.Run(t, "ip", "addr", "add", "2001:db8:1::10/64", "dev", "up0", "nodad")
	n.peer.Run(t, "ip", "addr", "add", "2001:db8:1::1/64", "dev", "dn0", "nodad")
	for _, a := range []string{"198.18.100.1/32", "198.18.50.7/32", "2001:db8:100::1/128", "2001:db8:50::7/128"} {
		n.peer.Run(t, "ip", "addr", "add", a, "dev", "lo")
	}
	for _, c := range [][]string{
		{"ip", "route", "add", "198.18.100.0/24", "via", "198.18.1.1"},
		{"ip", "route", "add", "198.18.50.0/24", "via", "198.18.1.1"},
		{"ip", "-6", "route", "add", "2001:db8:100::/64", "via", "2001:db8:1::1"},
		{"ip", "-6", "route", "add", "2001:db8:50::/64", "via", "2001:db8:1::1"},
		// bpf_fib_lookup refuses an interface without forwarding.
		{"sysctl", "-qw", "net.ipv4.conf.up0.forwarding=1", "net.ipv6.conf.up0.forwarding=1"},
	} {
		n.client.Run(t, c...)
	}
	return n
}

// listenUDP opens a UDP socket in the namespace.
func listenUDP(t *testing.T, ns *nettest.NS, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	netw := "udp4"
	if addr.Addr().Is6() {
		netw = "udp6"
	}
	if err := ns.Do(func() (err error) { c, err = net.ListenUDP(netw, net.UDPAddrFromAddrPort(addr)); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recv reads a datagram within d; nil when none came.
func recv(c *net.UDPConn, d time.Duration) ([]byte, netip.AddrPort) {
	buf := make([]byte, 65536)
	c.SetReadDeadline(time.Now().Add(d))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, netip.AddrPort{}
	}
	return buf[:n], from
}

// checkInner decodes a GUE payload received on the GUE socket (what the
// backend's agent gets): the 4-byte GUE header, then the client's packet of
// the flow with a valid transport checksum, carrying want.
func checkInner(pl []byte, f Flow, want []byte) error {
	proto := byte(4)
	first := layers.LayerTypeIPv4
	if f.Client.Addr().Is6() {
		proto, first = 41, layers.LayerTypeIPv6
	}
	if len(pl) < 4 || !bytes.Equal(pl[:4], []byte{0, proto, 0, 0}) {
		return fmt.Errorf("GUE header %x", pl[:min(len(pl), 4)])
	}
	pkt := gopacket.NewPacket(pl[4:], first, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		return fmt.Errorf("inner packet: %v", el.Error())
	}
	nl := pkt.NetworkLayer()
	src, _ := netip.AddrFromSlice(nl.NetworkFlow().Src().Raw())
	dst, _ := netip.AddrFromSlice(nl.NetworkFlow().Dst().Raw())
	var sport, dport uint16
	var payload []byte
	switch tl := pkt.TransportLayer().(type) {
	case *layers.UDP:
		if f.Proto != unix.IPPROTO_UDP {
			return errors.New("inner UDP, want TCP")
		}
		tl.SetNetworkLayerForChecksum(nl)
		if err, r := tl.VerifyChecksum(); err != nil || !r.Valid {
			return fmt.Errorf("inner UDP checksum: %v %+v", err, r)
		}
		sport, dport, payload = uint16(tl.SrcPort), uint16(tl.DstPort), tl.Payload
	case *layers.TCP:
		if f.Proto != unix.IPPROTO_TCP {
			return errors.New("inner TCP, want UDP")
		}
		tl.SetNetworkLayerForChecksum(nl)
		if err, r := tl.VerifyChecksum(); err != nil || !r.Valid {
			return fmt.Errorf("inner TCP checksum: %v %+v", err, r)
		}
		sport, dport, payload = uint16(tl.SrcPort), uint16(tl.DstPort), tl.Payload
	default:
		return fmt.Errorf("inner transport %T", tl)
	}
	if got := flowOf(f.Proto, src, dst, sport, dport); got != f {
		return fmt.Errorf("inner flow %+v, want %+v", got, f)
	}
	if !bytes.Contains(payload, want) {
		return fmt.Errorf("inner payload %q does not carry %q", payload, want)
	}
	return nil
}

// TestEndToEnd attaches the program to a real interface and sends real
// traffic: UDP datagrams of an installed flow, and the data and FIN of an
// established TCP connection once its flow is installed, arrive at the
// backend's GUE socket encapsulated (the kernel there checked the outer
// headers and checksums), with the client's packet inside intact; the
// same traffic without an entry arrives as it was sent. Both families.
func TestEndToEnd(t *testing.T) {
	n := newE2ENet(t)
	var p *Program
	if err := n.client.Do(func() (err error) { p, err = Attach(Options{Interface: "up0", Flows: 128}); return err }); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := n.client.Do(func() error {
		v4, v6, err := p.Forwarding()
		if err == nil && (!v4 || !v6) {
			err = fmt.Errorf("forwarding %v %v, want on for both", v4, v6)
		}
		return err
	}); err != nil {
		t.Error(err)
	}
	if p.Interface() != "up0" {
		t.Errorf("Interface() = %q", p.Interface())
	}
	// A second program on the interface is refused.
	if err := n.client.Do(func() error {
		p2, err := Attach(Options{Interface: "up0"})
		if err == nil {
			p2.Close()
			return errors.New("attached twice")
		}
		if !errors.Is(err, ErrBusy) {
			return fmt.Errorf("second Attach: %v, want ErrBusy", err)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	for _, fam := range []struct {
		name              string
		client, vip, back netip.Addr
	}{{"ipv4", client4, vip4, back4}, {"ipv6", client6, vip6, back6}} {
		t.Run(fam.name, func(t *testing.T) {
			any := netip.IPv4Unspecified()
			if fam.client.Is6() {
				any = netip.IPv6Unspecified()
			}
			gue := listenUDP(t, n.peer, netip.AddrPortFrom(any, encap.DefaultGUEPort))
			vipUDP := listenUDP(t, n.peer, netip.AddrPortFrom(fam.vip, 7001))

			// Control: no entry, the datagram reaches the VIP as sent.
			cl := listenUDP(t, n.client, netip.AddrPortFrom(fam.client, 4001))
			msg := []byte("the LB way")
			if _, err := cl.WriteToUDPAddrPort(msg, netip.AddrPortFrom(fam.vip, 7001)); err != nil {
				t.Fatal(err)
			}
			if got, from := recv(vipUDP, 2*time.Second); !bytes.Equal(got, msg) || from != netip.AddrPortFrom(fam.client, 4001) {
				t.Fatalf("control datagram: %q from %v", got, from)
			}

			// UDP with an entry: GUE to the backend.
			f := flowOf(unix.IPPROTO_UDP, fam.client, fam.vip, 4001, 7001)
			h := uint64(0x1234)
			tgt := Target{Backend: fam.back, SrcPort: encap.SrcPort(h), FlowLabel: encap.FlowLabel(h), UDPChecksum: true}
			if err := p.Put(f, tgt); err != nil {
				t.Fatal(err)
			}
			const count = 5
			for i := range count {
				msg := []byte(fmt.Sprintf("direct %d", i))
				if _, err := cl.WriteToUDPAddrPort(msg, netip.AddrPortFrom(fam.vip, 7001)); err != nil {
					t.Fatal(err)
				}
				pl, from := recv(gue, 2*time.Second)
				if pl == nil {
					t.Fatalf("datagram %d: nothing on the GUE port (counters %+v)", i, counters(t, p))
				}
				if from != netip.AddrPortFrom(fam.client, tgt.SrcPort) {
					t.Errorf("GUE from %v, want %v:%d", from, fam.client, tgt.SrcPort)
				}
				if err := checkInner(pl, f, msg); err != nil {
					t.Fatal(err)
				}
			}
			if got, _ := recv(vipUDP, 100*time.Millisecond); got != nil {
				t.Errorf("the VIP got %q with an entry", got)
			}
			if s, ok, err := p.Lookup(f); err != nil || !ok || s.Packets != count || s.LastUsed.IsZero() || time.Since(s.LastUsed) > 5*time.Second {
				t.Errorf("UDP flow state %+v %v %v", s, ok, err)
			}

			// TCP: established the LB way, then installed.
			ln := listenTCP(t, n.peer, netip.AddrPortFrom(fam.vip, 80))
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err == nil {
					accepted <- c
				}
				close(accepted)
			}()
			var conn net.Conn
			if err := n.client.Do(func() (err error) {
				d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(fam.client, 4002)), Timeout: 2 * time.Second}
				conn, err = d.Dial("tcp", netip.AddrPortFrom(fam.vip, 80).String())
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			srv := <-accepted
			if srv == nil {
				t.Fatal("no connection accepted")
			}
			defer srv.Close()
			// Control: data reaches the server the LB way.
			if _, err := conn.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 16)
			srv.SetReadDeadline(time.Now().Add(2 * time.Second))
			if k, err := srv.Read(buf); err != nil || string(buf[:k]) != "ping" {
				t.Fatalf("control data: %q %v", buf[:k], err)
			}
			tf := flowOf(unix.IPPROTO_TCP, fam.client, fam.vip, 4002, 80)
			if err := p.Put(tf, Target{Backend: fam.back, SrcPort: encap.SrcPort(h + 1), FlowLabel: encap.FlowLabel(h + 1)}); err != nil {
				t.Fatal(err)
			}
			data := []byte("over the fastpath")
			if _, err := conn.Write(data); err != nil {
				t.Fatal(err)
			}
			pl, _ := recv(gue, 2*time.Second)
			if pl == nil {
				t.Fatalf("TCP data: nothing on the GUE port (counters %+v)", counters(t, p))
			}
			if err := checkInner(pl, tf, data); err != nil {
				t.Fatal(err)
			}
			// The FIN goes direct too, and marks the flow ended.
			conn.Close()
			deadline := time.Now().Add(3 * time.Second)
			for {
				s, ok, err := p.Lookup(tf)
				if err != nil || !ok {
					t.Fatalf("TCP flow: %v %v", ok, err)
				}
				if s.Ended {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no FIN seen: %+v", s)
				}
				time.Sleep(20 * time.Millisecond)
			}
			c := counters(t, p)
			if c.Direct < count+2 || c.Ended < 1 {
				t.Errorf("counters %+v", c)
			}
		})
	}
	// Close detaches: an installed flow's packets go the LB way again.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	vipUDP := listenUDP(t, n.peer, netip.AddrPortFrom(vip4, 7001))
	cl := listenUDP(t, n.client, netip.AddrPortFrom(client4, 4001))
	if _, err := cl.WriteToUDPAddrPort([]byte("after"), netip.AddrPortFrom(vip4, 7001)); err != nil {
		t.Fatal(err)
	}
	if got, _ := recv(vipUDP, 2*time.Second); string(got) != "after" {
		t.Errorf("after Close: the VIP got %q", got)
	}
	// And the interface is free again.
	if err := n.client.Do(func() error {
		p2, err := Attach(Options{Interface: "up0"})
		if err == nil {
			p2.Close()
		}
		return err
	}); err != nil {
		t.Errorf("Attach after Close: %v", err)
	}
}

// listenTCP opens a TCP listener in the namespace.
func listenTCP(t *testing.T, ns *nettest.NS, addr netip.AddrPort) net.Listener {
	t.Helper()
	var l net.Listener
	if err := ns.Do(func() (err error) { l, err = net.Listen("tcp", addr.String()); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
