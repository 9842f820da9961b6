package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/scenario"
)

const offloadConns = 100

// TestE2EXDPOffload: 100 long-lived connections through one LB node with
// node.offload: auto. Once their handshakes are done, at least 90 % of their
// packets are forwarded by the XDP program (its counters); they keep their
// backend across a backend addition and a reload (new generations: the
// kernel's entries go stale and are reinstalled by the worker); closing
// them (FIN) removes their entries. The control run with offload off
// forwards nothing in the kernel, and fails the 90 % check.
func TestE2EXDPOffload(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mode    string
		offload bool
		workers int
	}{
		{"native", "native", true, 1},
		{"generic", "generic", true, 1},
		{"native two workers", "native", true, 2},
		{"off", "native", false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, scenario.Options{
				IO: "afxdp", XDPMode: tc.mode, Offload: tc.offload, LBs: 1, Backends: 4, Workers: tc.workers,
				Streams: true, StreamStates: []string{"", "", "", "absent"},
			})
			st0 := lbStats(t, s, 0)
			if st0.Offload.Enabled != tc.offload {
				t.Fatalf("offload enabled %v, want %v", st0.Offload.Enabled, tc.offload)
			}
			streams := openStreams(t, s, offloadConns, 15*time.Second)
			backends := map[int]string{}
			for i, r := range streams.Snapshot() {
				backends[i] = r.Backend
			}

			// Established: what share of their packets the kernel forwards.
			ratio := func(what string) float64 {
				t.Helper()
				time.Sleep(500 * time.Millisecond) // installs land; in-flight packets pass
				a := lbStats(t, s, 0)
				time.Sleep(3 * time.Second)
				b := lbStats(t, s, 0)
				fwd := b.Offload.Forwarded - a.Offload.Forwarded
				rx := b.RxPackets - a.RxPackets
				r := float64(fwd) / float64(max(rx, 1))
				t.Logf("%s: %d packets to the VIPs, %d forwarded by XDP (%.1f %%), entries %d, passed %v",
					what, rx, fwd, 100*r, b.Offload.Entries, nonZero(b.Offload.Passed))
				if rx < offloadConns*10 {
					t.Errorf("%s: only %d packets in 3 s: the streams are not running", what, rx)
				}
				return r
			}
			check := func(what string) {
				t.Helper()
				r := ratio(what)
				if tc.offload && r < 0.9 {
					t.Errorf("%s: %.1f %% forwarded by XDP, want at least 90 %%", what, 100*r)
				}
				if !tc.offload && r != 0 {
					t.Errorf("%s: offload off, yet %.1f %% forwarded by XDP", what, 100*r)
				}
				for i, res := range streams.Snapshot() {
					if res.Err != nil {
						t.Fatalf("%s: stream %d (%s) broke: %v", what, i, backends[i], res.Err)
					}
					if res.Backend != backends[i] {
						t.Fatalf("%s: stream %d moved from %s to %s", what, i, backends[i], res.Backend)
					}
				}
			}
			check("established")

			// A backend added: a new generation; every connection keeps its backend.
			gen := lbStats(t, s, 0).DatapathGeneration
			s.Opts.StreamStates = []string{"", "", "", ""}
			reload(t, s, gen)
			check("after adding be4")

			// A reload with another generation setting.
			gen = lbStats(t, s, 0).DatapathGeneration
			s.Opts.Node = "  icmp_rate: 999\n"
			reload(t, s, gen)
			check("after a reload")

			// Closing the connections (FIN) removes their entries.
			before := lbStats(t, s, 0)
			streams.Stop()
			deadline := time.Now().Add(5 * time.Second)
			var after control.Stats
			for {
				after = lbStats(t, s, 0)
				if after.Offload.Entries == 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			t.Logf("closed: entries %d -> %d, deleted %d, installed %d in all",
				before.Offload.Entries, after.Offload.Entries, after.Offload.Deleted-before.Offload.Deleted, after.Offload.Installed)
			if tc.offload {
				if before.Offload.Entries < offloadConns {
					t.Errorf("%d entries in the kernel with %d connections open", before.Offload.Entries, offloadConns)
				}
				if after.Offload.Entries != 0 {
					t.Errorf("%d entries left in the kernel after every connection closed", after.Offload.Entries)
				}
			} else if after.Offload.Forwarded != 0 || after.Offload.Installed != 0 {
				t.Errorf("offload off: forwarded %d, installed %d", after.Offload.Forwarded, after.Offload.Installed)
			}

			// UDP over IPv6: GUE over IPv6 carries a UDP checksum the
			// program computes (the agent's kernel checks it). From the
			// second datagram on the flow is the kernel's.
			const n = 200
			before = lbStats(t, s, 0)
			echoed := udpEcho(t, s, netip.AddrPortFrom(s.Opts.VIP6, scenario.UDPPort), n)
			after = lbStats(t, s, 0)
			fwd := after.Offload.Forwarded - before.Offload.Forwarded
			t.Logf("udp6: %d of %d datagrams echoed, %d forwarded by XDP", echoed, n, fwd)
			if echoed < n-5 {
				t.Errorf("udp6: %d of %d datagrams echoed", echoed, n)
			}
			if tc.offload && fwd < n-10 {
				t.Errorf("udp6: %d of %d datagrams forwarded by XDP, want all but the first two", fwd, n)
			}
			if !tc.offload && fwd != 0 {
				t.Errorf("udp6: offload off, yet %d forwarded by XDP", fwd)
			}
		})
	}
}

// udpEcho sends n datagrams from one socket (one flow) to dst, 2 ms apart,
// and returns how many echoes came back.
func udpEcho(t *testing.T, s *scenario.Scenario, dst netip.AddrPort, n int) int {
	t.Helper()
	got := 0
	err := s.Lab.Client.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		done := make(chan int)
		go func() {
			buf := make([]byte, 2048)
			k := 0
			for {
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Read(buf); err != nil {
					done <- k
					return
				}
				k++
			}
		}()
		for i := range n {
			if _, err := c.Write([]byte(fmt.Sprintf("offload %d", i))); err != nil {
				return err
			}
			time.Sleep(2 * time.Millisecond)
		}
		got = <-done
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// reload rewrites LB node 1's configuration from the scenario's options,
// reloads it and waits for a datapath generation after gen.
func reload(t *testing.T, s *scenario.Scenario, gen uint32) {
	t.Helper()
	if err := s.ReloadLB(0, s.ConfigFor(0)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for lbStats(t, s, 0).DatapathGeneration == gen {
		if time.Now().After(deadline) {
			t.Fatalf("no new generation after the reload (still %d)", gen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v > 0 {
			out[k] = v
		}
	}
	return out
}

// TestE2EXDPOffloadNAT: with forwarding: nat, the client's direction of an
// established flow is rewritten in the kernel (SNAT address and port,
// backend address and port, checksums) while the backend's replies are
// translated in Go. 20 keep-alive HTTP connections per VIP family, 20
// requests each, keep their backend and are answered; then UDP over IPv6
// from one socket. The control run with offload off forwards nothing in
// the kernel.
func TestE2EXDPOffloadNAT(t *testing.T) {
	for _, off := range []bool{true, false} {
		t.Run(fmt.Sprintf("offload=%v", off), func(t *testing.T) {
			s := start(t, scenario.Options{IO: "afxdp", XDPMode: "native", NAT: true, Offload: off, LBs: 1})
			var conns []*keepAlive
			for _, vip := range s.VIPs() {
				conns = append(conns, openKeepAlive(t, s, vip, 20)...)
			}
			time.Sleep(300 * time.Millisecond) // the installs land
			a := lbStats(t, s, 0)
			for round := range 20 {
				for i, k := range conns {
					if b, err := k.get(); err != nil || b != k.backend {
						t.Fatalf("round %d, conn %d on %s: got %q, %v", round, i, k.backend, b, err)
					}
				}
			}
			b := lbStats(t, s, 0)
			fwd, rx := b.Offload.Forwarded-a.Offload.Forwarded, b.RxPackets-a.RxPackets
			t.Logf("%d requests on %d connections: %d packets to the node, %d forwarded by XDP (%.1f %%), %d NAT replies in Go; passed %v",
				20*len(conns), len(conns), rx, fwd, 100*float64(fwd)/float64(max(rx, 1)), b.NAT.Replies-a.NAT.Replies, nonZero(b.Offload.Passed))
			if off && fwd < (rx-fwd)/2 {
				t.Errorf("%d of %d packets forwarded by XDP: the clients' direction is not offloaded", fwd, rx)
			}
			if !off && fwd != 0 {
				t.Errorf("offload off, yet %d forwarded by XDP", fwd)
			}
			// The node's NAT counter counts the kernel's rewrites too.
			if tr := b.NAT.Translated - a.NAT.Translated; tr < rx-(b.NAT.Replies-a.NAT.Replies) {
				t.Errorf("nat translated %d, want every client packet (%d)", tr, rx-(b.NAT.Replies-a.NAT.Replies))
			}
			echoed := udpEcho(t, s, netip.AddrPortFrom(s.Opts.VIP6, scenario.UDPPort), 200)
			c := lbStats(t, s, 0)
			t.Logf("udp6: %d of 200 echoed, %d forwarded by XDP", echoed, c.Offload.Forwarded-b.Offload.Forwarded)
			if echoed < 195 {
				t.Errorf("udp6: %d of 200 datagrams echoed", echoed)
			}
			if off && c.Offload.Forwarded-b.Offload.Forwarded < 190 {
				t.Errorf("udp6: %d of 200 forwarded by XDP", c.Offload.Forwarded-b.Offload.Forwarded)
			}
		})
	}
}
