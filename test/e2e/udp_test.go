package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/scenario"
)

// A UDP VIP answers request/response from the client, the reply comes from
// the VIP itself (direct server return), and flows from different source
// ports spread over the backends while each flow stays on one backend.
func TestE2EUDP(t *testing.T) {
	for _, io := range ioModes {
		t.Run(io, func(t *testing.T) {
			s := start(t, scenario.Options{IO: io})
			for _, vip := range s.VIPs() {
				dst := netip.AddrPortFrom(vip, scenario.UDPPort)
				seen := map[string]int{}
				err := s.Lab.Client.Do(func() error {
					for flow := range 40 {
						c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
						if err != nil {
							return err
						}
						var first string
						for i := range 3 {
							msg := fmt.Sprintf("flow%d-%d", flow, i)
							name, from, err := exchange(c, msg)
							if err != nil {
								c.Close()
								return fmt.Errorf("flow %d: %v", flow, err)
							}
							if from.Addr().Unmap() != vip || from.Port() != scenario.UDPPort {
								c.Close()
								return fmt.Errorf("reply from %v, want %v", from, dst)
							}
							if i == 0 {
								first = name
							} else if name != first {
								c.Close()
								return fmt.Errorf("flow %d moved from %s to %s", flow, first, name)
							}
						}
						seen[first]++
						c.Close()
					}
					return nil
				})
				if err != nil {
					t.Fatalf("%s: %v", vip, err)
				}
				t.Logf("%s: %v", dst, seen)
				if len(seen) != 3 {
					t.Errorf("%s: 40 flows reached %d of 3 backends: %v", dst, len(seen), seen)
				}
			}
		})
	}
}

// exchange sends msg and waits for "<backend>:<msg>", retrying a lost
// datagram twice.
func exchange(c *net.UDPConn, msg string) (string, netip.AddrPort, error) {
	buf := make([]byte, 512)
	for range 3 {
		if _, err := c.Write([]byte(msg)); err != nil {
			return "", netip.AddrPort{}, err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			continue
		}
		name, payload, ok := strings.Cut(string(buf[:n]), ":")
		if !ok || payload != msg {
			return "", from, fmt.Errorf("reply %q to %q", buf[:n], msg)
		}
		return name, from, nil
	}
	return "", netip.AddrPort{}, fmt.Errorf("no reply to %q", msg)
}
