package e2e

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/scenario"
)

// An ICMP fragmentation-needed (IPv4) or packet-too-big (IPv6) aimed at the
// VIP, quoting a reply the backend sent from the VIP to the client, reaches
// the backend that owns that connection, and only that one.
func TestE2EICMP(t *testing.T) {
	for _, io := range ioModes {
		t.Run(io, func(t *testing.T) {
			s := start(t, scenario.Options{IO: io})
			for _, vip := range s.VIPs() {
				for conn := range 4 {
					owner, local := openConn(t, s, vip)
					caps := captureICMP(t, s)
					sendTooBig(t, s, vip, local)
					got := map[string]bool{}
					select {
					case <-caps[owner]:
						got[owner] = true
					case <-time.After(2 * time.Second):
					}
					time.Sleep(200 * time.Millisecond) // time for a wrong delivery to show
					for name, ch := range caps {
						select {
						case <-ch:
							got[name] = true
						default:
						}
					}
					if !got[owner] || len(got) != 1 {
						t.Fatalf("%s conn %d owned by %s (client port %d): ICMP seen on %v", vip, conn, owner, local.Port(), got)
					}
				}
			}
		})
	}
}

// openConn makes an HTTP request on a keep-alive connection from the client
// and returns the backend that answered and the client's address and port.
func openConn(t *testing.T, s *scenario.Scenario, vip netip.Addr) (string, netip.AddrPort) {
	t.Helper()
	var c net.Conn
	err := s.Lab.Client.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", netip.AddrPortFrom(vip, scenario.HTTPPort).String(), 3*time.Second)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
	r := bufio.NewReader(c)
	var body string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading reply: %v (so far %q)", err, body)
		}
		if line == "\r\n" {
			b, _ := r.ReadString('\n')
			body = strings.TrimSpace(b)
			break
		}
	}
	return body, netip.MustParseAddrPort(c.LocalAddr().String())
}

// captureICMP opens a packet socket on every backend's TUN; each channel
// gets a value when an ICMPv4 type 3 code 4 or ICMPv6 type 2 arrives there.
func captureICMP(t *testing.T, s *scenario.Scenario) map[string]chan struct{} {
	t.Helper()
	out := map[string]chan struct{}{}
	for _, be := range s.Lab.Backends {
		var fd int
		err := be.Do(func() error {
			ifi, err := net.InterfaceByName("sluice0")
			if err != nil {
				return err
			}
			fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_ALL)))
			if err != nil {
				return err
			}
			return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
		})
		if err != nil {
			t.Fatalf("%s: %v", be.Name, err)
		}
		tv := unix.NsecToTimeval(int64(2500 * time.Millisecond))
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		ch := make(chan struct{}, 1)
		out[fmt.Sprintf("be%d", be.Index)] = ch
		go func() {
			defer unix.Close(fd)
			buf := make([]byte, 2048)
			for {
				n, _, err := unix.Recvfrom(fd, buf, 0)
				if err != nil {
					return
				}
				p := buf[:n]
				if n > 21 && p[0]>>4 == 4 && p[9] == 1 && p[(p[0]&15)*4] == 3 && p[(p[0]&15)*4+1] == 4 ||
					n > 41 && p[0]>>4 == 6 && p[6] == 58 && p[40] == 2 {
					ch <- struct{}{}
					return
				}
			}
		}()
	}
	return out
}

// sendTooBig sends, from the client namespace, the ICMP error a router on
// the return path would send: about a TCP segment from VIP:80 to client.
func sendTooBig(t *testing.T, s *scenario.Scenario, vip netip.Addr, client netip.AddrPort) {
	t.Helper()
	// The quoted segment: the IP header and the first 8 bytes of TCP.
	var quote []byte
	if vip.Is4() {
		q := make([]byte, 28)
		q[0], q[8], q[9] = 0x45, 63, 6
		binary.BigEndian.PutUint16(q[2:], 1500)
		a, b := vip.As4(), client.Addr().As4()
		copy(q[12:], a[:])
		copy(q[16:], b[:])
		binary.BigEndian.PutUint16(q[10:], ^csum(q[:20]))
		binary.BigEndian.PutUint16(q[20:], scenario.HTTPPort)
		binary.BigEndian.PutUint16(q[22:], client.Port())
		quote = q
	} else {
		q := make([]byte, 48)
		q[0], q[6], q[7] = 0x60, 6, 63
		binary.BigEndian.PutUint16(q[4:], 1440)
		a, b := vip.As16(), client.Addr().As16()
		copy(q[8:], a[:])
		copy(q[24:], b[:])
		binary.BigEndian.PutUint16(q[40:], scenario.HTTPPort)
		binary.BigEndian.PutUint16(q[42:], client.Port())
		quote = q
	}
	msg := make([]byte, 8+len(quote))
	copy(msg[8:], quote)
	family, proto := unix.AF_INET, unix.IPPROTO_ICMP
	if vip.Is4() {
		msg[0], msg[1] = 3, 4 // destination unreachable, fragmentation needed
		binary.BigEndian.PutUint16(msg[6:], 1400)
		binary.BigEndian.PutUint16(msg[2:], ^csum(msg))
	} else {
		family, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
		msg[0] = 2 // packet too big; the kernel fills in the checksum
		binary.BigEndian.PutUint32(msg[4:], 1280)
	}
	err := s.Lab.Client.Do(func() error {
		fd, err := unix.Socket(family, unix.SOCK_RAW, proto)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		var sa unix.Sockaddr
		if vip.Is4() {
			sa = &unix.SockaddrInet4{Addr: vip.As4()}
		} else {
			sa = &unix.SockaddrInet6{Addr: vip.As16()}
		}
		return unix.Sendto(fd, msg, 0, sa)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func csum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
