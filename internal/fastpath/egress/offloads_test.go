package egress

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/encap"
)

// TestEndToEndOffloads sends through the program with the uplink's
// offloads on (transmit checksum offload, TSO, GSO), as on a real client
// host, but UDP tunnel segmentation off, so that the kernel segments the
// encapsulated GSO packets in software before the veth:
//
//   - UDP over IPv4 with the outer checksum, and over IPv6: the inner
//     checksum may be partial (left to the device); the outer checksum,
//     computed from headers only, must be the one of the packet once the
//     inner checksum is filled in;
//   - a TCP/IPv4 bulk transfer without the outer checksum is sent as GSO
//     packets: they are encapsulated, and every segment that reaches the
//     backend fits the MTU and carries its share of the data;
//   - a TCP/IPv6 bulk transfer's GSO packets (outer checksum needed) are
//     left to the LB way (GSOCsum) and their data reaches the server.
func TestEndToEndOffloads(t *testing.T) {
	n := newE2ENet(t)
	n.client.Run(t, "ethtool", "-K", "up0", "tx", "on", "sg", "on", "tso", "on", "gso", "on",
		"tx-udp_tnl-segmentation", "off", "tx-udp_tnl-csum-segmentation", "off")
	var p *Program
	if err := n.client.Do(func() (err error) { p, err = Attach(Options{Interface: "up0"}); return err }); err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	// UDP: capture on the peer's interface and check the outer checksum
	// against the packet with its inner checksum completed.
	for _, fam := range []struct{ client, vip, back netip.Addr }{{client4, vip4, back4}, {client6, vip6, back6}} {
		ps := openCapture(t, n, "dn0")
		cl := listenUDP(t, n.client, netip.AddrPortFrom(fam.client, 5001))
		f := flowOf(unix.IPPROTO_UDP, fam.client, fam.vip, 5001, 7001)
		h := uint64(99)
		tgt := Target{Backend: fam.back, SrcPort: encap.SrcPort(h), FlowLabel: encap.FlowLabel(h), UDPChecksum: true}
		if err := p.Put(f, tgt); err != nil {
			t.Fatal(err)
		}
		msg := bytes.Repeat([]byte("partial checksum "), 20)
		if _, err := cl.WriteToUDPAddrPort(msg, netip.AddrPortFrom(fam.vip, 7001)); err != nil {
			t.Fatal(err)
		}
		frame := ps.next(t, func(b []byte) bool { return isGUE(b) })
		if frame == nil {
			t.Fatalf("%v: no GUE frame captured (counters %+v)", fam.client, counters(t, p))
		}
		partial := fixInnerChecksum(frame)
		t.Logf("%v: inner checksum was partial: %v", fam.client, partial)
		pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
		udp, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !ok || udp.Checksum == 0 {
			t.Fatalf("%v: no outer UDP checksum: %x", fam.client, frame)
		}
		udp.SetNetworkLayerForChecksum(pkt.NetworkLayer())
		if err, r := udp.VerifyChecksum(); err != nil || !r.Valid {
			t.Errorf("%v: outer UDP checksum with the inner one completed: %v %+v", fam.client, err, r)
		}
		ps.close()
	}

	// TCP bulk transfers.
	for _, fam := range []struct{ client, vip, back netip.Addr }{{client4, vip4, back4}, {client6, vip6, back6}} {
		any := netip.IPv4Unspecified()
		if fam.client.Is6() {
			any = netip.IPv6Unspecified()
		}
		gue := listenUDP(t, n.peer, netip.AddrPortFrom(any, encap.DefaultGUEPort))
		ln := listenTCP(t, n.peer, netip.AddrPortFrom(fam.vip, 8080))
		accepted := make(chan net.Conn, 1)
		go func() {
			c, _ := ln.Accept()
			accepted <- c
		}()
		var conn net.Conn
		if err := n.client.Do(func() (err error) {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(fam.client, 5002)), Timeout: 2 * time.Second}
			conn, err = d.Dial("tcp", netip.AddrPortFrom(fam.vip, 8080).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		srv := <-accepted
		if srv == nil {
			t.Fatal("no connection accepted")
		}
		tf := flowOf(unix.IPPROTO_TCP, fam.client, fam.vip, 5002, 8080)
		if err := p.Put(tf, Target{Backend: fam.back, SrcPort: 50123}); err != nil {
			t.Fatal(err)
		}
		before := counters(t, p)
		data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16)
		go conn.Write(data)
		if fam.client.Is6() {
			// The GSO packets are left to the LB way (here: straight to
			// the server, which has the VIP): their data reaches it. A
			// segment the stack sends without GSO (the tail, a
			// retransmission; more of them on a loaded machine) is
			// encapsulated to the backend's GUE port instead, where no
			// one decapsulates it here: the server may see only a prefix.
			srv.SetReadDeadline(time.Now().Add(3 * time.Second))
			got := make([]byte, 0, len(data))
			buf := make([]byte, 65536)
			var rerr error
			for len(got) < len(data) && rerr == nil {
				var k int
				k, rerr = srv.Read(buf)
				got = append(got, buf[:k]...)
			}
			t.Logf("IPv6 bulk: %d of %d bytes reached the server (%v)", len(got), len(data), rerr)
			if len(got) < 16<<10 || !bytes.Equal(got, data[:len(got)]) {
				t.Errorf("IPv6 bulk: %d bytes of the GSO packets' data reached the server intact, want at least 16 KiB", len(got))
			}
			if c := counters(t, p); c.GSOCsum == before.GSOCsum {
				t.Errorf("IPv6 bulk: no GSO packet left untouched: %+v", c)
			}
		} else {
			// Direct: segments of at most the MTU, the data inside.
			seen := map[uint32]int{} // TCP sequence -> payload length
			total, largest := 0, 0
			for total < len(data) {
				pl, _ := recv(gue, 2*time.Second)
				if pl == nil {
					t.Fatalf("IPv4 bulk: %d of %d bytes arrived direct (counters %+v)", total, len(data), counters(t, p))
				}
				if len(pl)+20+8 > 1500 {
					t.Fatalf("IPv4 bulk: a segment of %d bytes exceeds the MTU", len(pl)+28)
				}
				inner := gopacket.NewPacket(pl[4:], layers.LayerTypeIPv4, gopacket.Default)
				tcp, ok := inner.Layer(layers.LayerTypeTCP).(*layers.TCP)
				if !ok {
					t.Fatalf("IPv4 bulk: not TCP inside: %x", pl)
				}
				if _, dup := seen[tcp.Seq]; !dup && len(tcp.Payload) > 0 {
					seen[tcp.Seq] = len(tcp.Payload)
					total += len(tcp.Payload)
					largest = max(largest, len(pl)+28)
				}
			}
			c := counters(t, p)
			if c.Direct == before.Direct || c.GSOCsum != before.GSOCsum {
				t.Errorf("IPv4 bulk counters: %+v", c)
			}
			t.Logf("IPv4 bulk: %d segments direct (largest outer packet %d bytes); program: %d direct, %d too big",
				len(seen), largest, c.Direct-before.Direct, c.TooBig-before.TooBig)
			// Full-size segments could only come from GSO packets whose
			// segment size the helper lowered: a packet of the
			// connection's MSS is too big once encapsulated.
			if largest < 1400 {
				t.Errorf("IPv4 bulk: no full-size segment (largest %d): GSO not exercised", largest)
			}
		}
		conn.Close()
		srv.Close()
		gue.Close()
	}
}

// isGUE reports whether the Ethernet frame is IPv4 or IPv6 UDP to the GUE
// port.
func isGUE(b []byte) bool {
	if len(b) < 14+40+8 {
		return false
	}
	switch binary.BigEndian.Uint16(b[12:]) {
	case unix.ETH_P_IP:
		return b[14+9] == unix.IPPROTO_UDP && binary.BigEndian.Uint16(b[14+20+2:]) == encap.DefaultGUEPort
	case unix.ETH_P_IPV6:
		return b[14+6] == unix.IPPROTO_UDP && binary.BigEndian.Uint16(b[14+40+2:]) == encap.DefaultGUEPort
	}
	return false
}

// fixInnerChecksum computes the inner UDP or TCP checksum of a GUE frame
// in place (as the device would have) and reports whether it changed.
func fixInnerChecksum(b []byte) bool {
	ip := 14 + 20
	if binary.BigEndian.Uint16(b[12:]) == unix.ETH_P_IPV6 {
		ip = 14 + 40
	}
	inner := b[ip+8+4:]
	var pseudo, l4 []byte
	var proto byte
	if inner[0]>>4 == 4 {
		l4, proto = inner[20:], inner[9]
		pseudo = append(append([]byte{}, inner[12:20]...), 0, proto, byte(len(l4)>>8), byte(len(l4)))
	} else {
		l4, proto = inner[40:], inner[6]
		pseudo = append(append([]byte{}, inner[8:40]...), 0, 0, byte(len(l4)>>8), byte(len(l4)), 0, 0, 0, proto)
	}
	off := 6
	if proto == unix.IPPROTO_TCP {
		off = 16
	}
	old := binary.BigEndian.Uint16(l4[off:])
	l4[off], l4[off+1] = 0, 0
	c := ^csum(uint32(csum(0, pseudo)), l4)
	if c == 0 && proto == unix.IPPROTO_UDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[off:], c)
	return c != old
}

// capture is a packet socket on an interface of the peer namespace.
type capture struct{ fd int }

func openCapture(t *testing.T, n *e2eNet, ifname string) *capture {
	t.Helper()
	ifc := ifaceIn(t, n.peer, ifname)
	var fd int
	if err := n.peer.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index})
	}); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	c := &capture{fd: fd}
	t.Cleanup(c.close)
	return c
}

// next returns the next frame that match accepts, within 2 s.
func (c *capture) next(t *testing.T, match func([]byte) bool) []byte {
	buf := make([]byte, 65536)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		k, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue
		}
		if match(buf[:k]) {
			return append([]byte{}, buf[:k]...)
		}
	}
	return nil
}

func (c *capture) close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
