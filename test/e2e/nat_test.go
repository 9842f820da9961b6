package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/scenario"
)

// Full-NAT (forwarding: nat): the backends run plain servers on their own
// addresses, with no agent and no VIP. Through AF_PACKET and AF_XDP, over
// IPv4 and IPv6: 300 connections through the VIP are answered by every
// backend, each of which sees the LB node's SNAT address as the client; a
// 2 MB upload goes through (nothing is added to the packets, so nothing
// outgrows the MTU). Control run: without the router's routes to the SNAT
// addresses the replies never reach the node and connections fail; with
// them back they succeed again. After a reload that removes a backend,
// long-lived connections to the others keep working.
func TestE2EFullNAT(t *testing.T) {
	for _, io := range ioModes {
		t.Run(io, func(t *testing.T) {
			s := start(t, scenario.Options{IO: io, NAT: true})
			ctx := t.Context()
			lb := s.Lab.LBs[0]
			snat := map[bool]netip.Addr{true: lb.SNAT4(), false: lb.SNAT6()}
			upload := filepath.Join(t.TempDir(), "upload")
			if err := os.WriteFile(upload, bytes.Repeat([]byte("sluice full-NAT "), 2<<20/16), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, vip := range s.VIPs() {
				const n = 300
				names, err := s.Curl(ctx, vip, n)
				if err != nil {
					t.Fatal(err)
				}
				count := map[string]int{}
				for _, name := range names {
					count[name]++
				}
				t.Logf("%s: %d connections: %v", vip, n, count)
				for _, be := range []string{"be1", "be2", "be3"} {
					if count[be] == 0 {
						t.Errorf("%s: backend %s served none of %d connections: %v", vip, be, n, count)
					}
				}
				// What the backend saw: the SNAT address, a port of the layout.
				url := "http://" + netip.AddrPortFrom(vip, scenario.HTTPPort).String() + "/"
				out, err := s.Lab.Client.Run(ctx, "curl", "-sS", "--max-time", "3", "-D", "-", "-o", "/dev/null", url)
				if err != nil {
					t.Fatalf("curl %s: %v: %s", url, err, out)
				}
				m := regexp.MustCompile(`(?i)X-Remote-Addr: (\S+)`).FindStringSubmatch(out)
				if m == nil {
					t.Fatalf("no X-Remote-Addr in the answer:\n%s", out)
				}
				seen, err := netip.ParseAddrPort(m[1])
				if err != nil || seen.Addr() != snat[vip.Is4()] || seen.Port() < 1024 {
					t.Fatalf("the backend saw the client as %s, want %s:1024-65535", m[1], snat[vip.Is4()])
				}
				t.Logf("%s: the backend saw %s", vip, seen)
				// A 2 MB upload.
				out, err = s.Lab.Client.Run(ctx, "curl", "-sS", "--max-time", "10", "--data-binary", "@"+upload, url)
				if err != nil {
					t.Fatalf("upload to %s: %v: %s", url, err, out)
				}
				if f := strings.Fields(out); len(f) != 2 || f[1] != fmt.Sprint(2<<20) {
					t.Fatalf("upload to %s: answer %q, want \"beN %d\"", url, out, 2<<20)
				}
			}

			// UDP: each flow stays on one backend, replies come from the VIP.
			for _, vip := range s.VIPs() {
				dst := netip.AddrPortFrom(vip, scenario.UDPPort)
				seen := map[string]int{}
				err := s.Lab.Client.Do(func() error {
					for flow := range 20 {
						c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
						if err != nil {
							return err
						}
						var first string
						for i := range 3 {
							name, from, err := exchange(c, fmt.Sprintf("flow%d-%d", flow, i))
							if err != nil || from.Addr().Unmap() != vip || from.Port() != scenario.UDPPort || i > 0 && name != first {
								c.Close()
								return fmt.Errorf("flow %d: %q from %v, first %q: %v", flow, name, from, first, err)
							}
							first = name
						}
						seen[first]++
						c.Close()
					}
					return nil
				})
				if err != nil {
					t.Fatalf("UDP %s: %v", dst, err)
				}
				t.Logf("UDP %s: 20 flows: %v", dst, seen)
			}

			// Control run: without the router's routes to the SNAT
			// addresses the backends' replies go nowhere.
			if err := s.Lab.RouteSNAT(false); err != nil {
				t.Fatal(err)
			}
			for _, vip := range s.VIPs() {
				if names, err := s.Curl(ctx, vip, 3); err == nil {
					t.Fatalf("control: %s answered without routes to the SNAT addresses: %v", vip, names)
				}
			}
			if err := s.Lab.RouteSNAT(true); err != nil {
				t.Fatal(err)
			}
			for _, vip := range s.VIPs() {
				if _, err := s.Curl(ctx, vip, 30); err != nil {
					t.Fatalf("with the routes back: %v", err)
				}
			}

			// A reload that removes be3 from both HTTP services: long-lived
			// connections to be1 and be2 keep working.
			var conns []*keepAlive
			for _, vip := range s.VIPs() {
				conns = append(conns, openKeepAlive(t, s, vip, 20)...)
			}
			cfg := s.Config()
			be3 := s.Lab.Backends[2]
			removed := strings.ReplaceAll(cfg, fmt.Sprintf("      - address: %q\n", be3.Addr4), "")
			removed = strings.ReplaceAll(removed, fmt.Sprintf("      - address: %q\n", be3.Addr6), "")
			if removed == cfg {
				t.Fatal("be3 not found in the configuration")
			}
			if err := s.ReloadLB(0, removed); err != nil {
				t.Fatal(err)
			}
			waitLog(t, s, "reload applied")
			kept := 0
			for i, k := range conns {
				if k.backend == "be3" {
					continue
				}
				for range 3 {
					if b, err := k.get(); err != nil || b != k.backend {
						t.Fatalf("after removing be3, conn %d on %s: got %q, %v", i, k.backend, b, err)
					}
				}
				kept++
			}
			for _, k := range conns {
				k.c.Close()
			}
			if kept == 0 {
				t.Fatal("no long-lived connection on be1 or be2")
			}
			for _, vip := range s.VIPs() {
				names, err := s.Curl(ctx, vip, 30)
				if err != nil {
					t.Fatal(err)
				}
				for _, n := range names {
					if n == "be3" {
						t.Fatalf("%s: a new connection reached the removed backend", vip)
					}
				}
			}
			t.Logf("%d long-lived connections to be1 and be2 kept working across the reload", kept)

			rep := lbReport(s)
			t.Logf("LB report:\n%s", rep)
			if !strings.Contains(rep, "tx errors 0") {
				t.Errorf("LB report:\n%s", rep)
			}
		})
	}
}

// Full-NAT and path MTU: a router between the LB node and the backends
// has an MTU of 1400 toward them (a route of the default tenant sends the
// node's packets to the backends through it). The client's full-size
// segments of a 2 MB upload, rewritten to the backend with DF, are too big
// there: the router answers the SNAT address with ICMP "fragmentation
// needed" / "packet too big", the node translates the error back to the
// client about the client's own packet, the client lowers its path MTU and
// the upload completes. Control run: the router's errors dropped, the
// upload stalls (a path MTU black hole).
func TestE2EFullNATPathMTU(t *testing.T) {
	s := start(t, scenario.Options{IO: "afxdp", NAT: true})
	ctx := t.Context()
	lb, gw := s.Lab.LBs[0], s.Lab.LBs[0].Gateway4
	gw6 := lb.Gateway6
	nets := []string{"198.18.30.100/30", "2001:db8:30::100/126"} // be1..be3
	cfg := strings.Replace(s.Config(), "vips:\n", fmt.Sprintf("routes:\n  - {prefix: %s, via: %s}\n  - {prefix: %q, via: %q}\nvips:\n", nets[0], gw, nets[1], gw6), 1)
	if err := s.ReloadLB(0, cfg); err != nil {
		t.Fatal(err)
	}
	waitLog(t, s, "reload applied")
	for _, n := range nets {
		if out, err := s.Lab.Router.Run(ctx, "ip", "route", "add", n, "dev", "svc", "mtu", "1400"); err != nil {
			t.Fatalf("router: %v\n%s", err, out)
		}
	}
	upload := filepath.Join(t.TempDir(), "upload")
	if err := os.WriteFile(upload, bytes.Repeat([]byte("sluice path MTU "), 2<<20/16), 0o644); err != nil {
		t.Fatal(err)
	}
	post := func(vip netip.Addr, maxTime string) error {
		url := "http://" + netip.AddrPortFrom(vip, scenario.HTTPPort).String() + "/"
		out, err := s.Lab.Client.Run(ctx, "curl", "-sS", "--max-time", maxTime, "--data-binary", "@"+upload, url)
		if f := strings.Fields(out); err == nil && (len(f) != 2 || f[1] != fmt.Sprint(2<<20)) {
			err = fmt.Errorf("answer %q, want \"beN %d\"", out, 2<<20)
		}
		return err
	}

	// Control: the router's errors to the SNAT addresses dropped.
	drop := fmt.Sprintf("table inet sluicetest {\n chain out {\n  type filter hook output priority 0; policy accept;\n  ip daddr %s icmp type destination-unreachable counter drop\n  ip6 daddr %s icmpv6 type packet-too-big counter drop\n }\n}\n", lb.SNAT4(), lb.SNAT6())
	if out, err := s.Lab.Router.Run(ctx, "sh", "-c", "printf '%s' \"$0\" | nft -f -", drop); err != nil {
		t.Fatalf("router nft: %v\n%s", err, out)
	}
	for _, vip := range s.VIPs() {
		if err := post(vip, "3"); err == nil {
			t.Fatalf("control: %s: the upload went through with the router's errors dropped", vip)
		}
	}
	out, _ := s.Lab.Router.Run(ctx, "nft", "list", "table", "inet", "sluicetest")
	dropped := regexp.MustCompile(`counter packets (\d+)`).FindAllStringSubmatch(out, -1)
	if len(dropped) != 2 || dropped[0][1] == "0" || dropped[1][1] == "0" {
		t.Fatalf("control: the router sent no errors to drop:\n%s", out)
	}
	t.Logf("control: both uploads stalled; the router's errors dropped (IPv4 %s, IPv6 %s)", dropped[0][1], dropped[1][1])
	if out, err := s.Lab.Router.Run(ctx, "nft", "delete", "table", "inet", "sluicetest"); err != nil {
		t.Fatalf("router nft: %v\n%s", err, out)
	}

	before := lbStats(t, s, 0).NAT.ICMPToClient
	for _, vip := range s.VIPs() {
		if err := post(vip, "20"); err != nil {
			t.Fatalf("%s: upload through a 1400-byte hop: %v", vip, err)
		}
	}
	st := lbStats(t, s, 0)
	t.Logf("uploads through the 1400-byte hop: ICMP errors translated to the client %d, to backends %d; drops %v",
		st.NAT.ICMPToClient-before, st.NAT.ICMPToBackend, st.Drops)
	if st.NAT.ICMPToClient-before < 2 {
		t.Errorf("%d ICMP errors translated to the client, want one per family at least", st.NAT.ICMPToClient-before)
	}
}

// Full-NAT with two workers: the LB node's veth has two queues, over which
// the router spreads packets by their hash, so a backend's replies often
// reach the worker that did not bind the flow's SNAT port. That worker
// hands them to the owner, which translates and sends them: every
// connection and UDP exchange is answered. The handed-off count shows the
// replies that one worker alone would have dropped (nat_no_binding).
func TestE2EFullNATWorkers(t *testing.T) {
	s := start(t, scenario.Options{IO: "afxdp", NAT: true, Workers: 2})
	ctx := t.Context()
	const n = 200
	for _, vip := range s.VIPs() {
		names, err := s.Curl(ctx, vip, n)
		if err != nil {
			t.Fatalf("%s: %v", vip, err)
		}
		if len(names) != n {
			t.Fatalf("%s: %d of %d connections answered", vip, len(names), n)
		}
		dst := netip.AddrPortFrom(vip, scenario.UDPPort)
		err = s.Lab.Client.Do(func() error {
			for flow := range 20 {
				c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
				if err != nil {
					return err
				}
				_, from, err := exchange(c, fmt.Sprintf("flow%d", flow))
				c.Close()
				if err != nil || from.Addr().Unmap() != vip {
					return fmt.Errorf("flow %d: from %v: %v", flow, from, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("UDP %s: %v", dst, err)
		}
	}
	st := lbStats(t, s, 0)
	t.Logf("2 workers: %d connections and 20 UDP flows per family answered; NAT %+v; nat_no_binding drops %d",
		n, st.NAT, st.Drops["nat_no_binding"])
	if st.NAT.HandedOff == 0 {
		t.Error("no reply reached the worker that does not own its port: the test did not exercise the hand-off")
	}
	// A reply may come after its flow's entry (and binding) went, at the
	// end of a connection (a retransmitted FIN): nat_no_binding, with one
	// worker too. Replies the hand-off loses are the failure.
	if st.NAT.HandoffDropped != 0 || st.Drops["nat_no_binding"] > st.NAT.Replies/100 {
		t.Errorf("replies lost: hand-off dropped %d, nat_no_binding %d of %d", st.NAT.HandoffDropped, st.Drops["nat_no_binding"], st.NAT.Replies)
	}
}

// Full-NAT and fragments: 8000-byte UDP datagrams to the VIP, fragmented
// by the client, reach the backend with every fragment rewritten, and the
// backend's echoes, fragmented by its kernel, reach the client translated
// back (IPv4, IPv6). Control run: with node.fragments: drop none is echoed.
func TestE2EFullNATFragments(t *testing.T) {
	for _, tc := range []struct {
		name, node string
		on         bool
		n, tries   int
		wait       time.Duration
	}{
		{"forward", "", true, 30, 2, time.Second},
		{"control-drop", "  fragments: drop\n", false, 10, 1, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, scenario.Options{IO: "afxdp", NAT: true, Node: tc.node})
			for _, vip := range s.VIPs() {
				first, total := fragRun(t, s, vip, tc.n, 8000, tc.tries, tc.wait)
				t.Logf("%s: %d of %d datagrams of 8000 bytes echoed through full-NAT (%d at the first try)", vip, total, tc.n, first)
				switch {
				case tc.on && (total != tc.n || first < tc.n*9/10):
					t.Errorf("%s: %d of %d echoed (%d at the first try)", vip, total, tc.n, first)
				case !tc.on && total != 0:
					t.Errorf("control: %s: %d of %d echoed with fragments dropped", vip, total, tc.n)
				}
			}
			st := lbStats(t, s, 0)
			t.Logf("fragments followed %d held %d released %d; NAT translated %d replies %d; drops fragment %d fragment_timeout %d nat_no_binding %d",
				st.Fragments.Followed, st.Fragments.Held, st.Fragments.Released, st.NAT.Translated, st.NAT.Replies,
				st.Drops["fragment"], st.Drops["fragment_timeout"], st.Drops["nat_no_binding"])
		})
	}
}
