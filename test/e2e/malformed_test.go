package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/scenario"
)

// Malformed packets to the VIP (bad TCP data offset, bad UDP length, later
// fragments, ICMP errors quoting nothing usable) and packets to the LB
// node's own address, sent with a raw socket from the client, are dropped
// and counted by reason or left to the kernel; HTTP through the VIP keeps
// working throughout.
func TestE2EHTTPMalformedTraffic(t *testing.T) {
	for _, io := range ioModes {
		t.Run(io, func(t *testing.T) {
			s := start(t, scenario.Options{IO: io})
			vip := s.Opts.VIP4
			client := s.Lab.Client.Addr4
			lb := s.Lab.LBs[0].Addr4
			const each = 50
			var pkts [][]byte
			for i := range each {
				pkts = append(pkts,
					ipv4(client, vip, 6, 0, tcpHeader(uint16(20000+i), 80, 2)),       // data offset 2 words
					ipv4(client, vip, 17, 0, udpHeader(uint16(20000+i), 7000, 3)),    // UDP length 3
					ipv4(client, vip, 6, 100, make([]byte, 16)),                      // a later fragment
					ipv4(client, vip, 1, 0, []byte{3, 4, 0, 0, 0, 0, 5, 0xdc, 0x45}), // frag-needed quoting 1 byte
					ipv4(client, lb, 17, 0, udpHeader(uint16(30000+i), 9, 8)),        // not a VIP
				)
			}
			ctx := context.Background()
			done := make(chan error, 1)
			go func() {
				_, err := s.Curl(ctx, vip, 100)
				done <- err
			}()
			err := s.Lab.Client.Do(func() error {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
				if err != nil {
					return err
				}
				defer unix.Close(fd)
				for _, p := range pkts {
					var dst [4]byte
					copy(dst[:], p[16:20])
					if err := unix.Sendto(fd, p, 0, &unix.SockaddrInet4{Addr: dst}); err != nil {
						return fmt.Errorf("sendto: %w", err)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("HTTP during the malformed traffic: %v", err)
			}
			if _, err := s.Curl(ctx, vip, 30); err != nil {
				t.Fatalf("HTTP after the malformed traffic: %v", err)
			}
			rep := lbReport(s)
			for _, want := range []struct {
				line string
				n    int
			}{
				{"drop parse/bad_tcp_offset", each},
				{"drop parse/bad_udp_length", each},
				// A later fragment whose first never comes is held, then
				// dropped when its wait ends (node.fragments: forward).
				{"drop fragment_timeout", each},
			} {
				if got := counter(rep, want.line); got != want.n {
					t.Errorf("%s = %d, want %d\n%s", want.line, got, want.n, rep)
				}
			}
			if got := counter(rep, "drop icmp_unroutable") + counter(rep, "drop parse/bad_icmp"); got != each {
				t.Errorf("unusable ICMP errors counted %d times, want %d\n%s", got, each, rep)
			}
			if got := counter(rep, "passed"); got != 0 {
				t.Errorf("%d packets not for a VIP reached the datapath (the link should keep them out)\n%s", got, rep)
			}
		})
	}
}

// counter reads "<name>: N" or "<name> N" from an LB report.
func counter(rep, name string) int {
	m := regexp.MustCompile(regexp.QuoteMeta(name) + `:? (\d+)`).FindStringSubmatch(rep)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// ipv4 builds an IPv4 packet; fragOff is in 8-byte units.
func ipv4(src, dst netip.Addr, proto uint8, fragOff uint16, payload []byte) []byte {
	p := make([]byte, 20+len(payload))
	p[0], p[8], p[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[6:], fragOff)
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], ^csum(p[:20]))
	copy(p[20:], payload)
	return p
}

func tcpHeader(sport, dport uint16, dataOffset uint8) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	h[12] = dataOffset << 4
	h[13] = 0x10
	return h
}

func udpHeader(sport, dport, length uint16) []byte {
	h := make([]byte, 8)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], length)
	return h
}
