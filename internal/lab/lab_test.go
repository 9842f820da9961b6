package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/nettest"
)

// requireLab skips with -short and without root, and fails as root when
// one of the tools the test drives is missing (make deps installs them).
func requireLab(tb testing.TB, tools ...string) {
	tb.Helper()
	nettest.RequireRoot(tb)
	nettest.RequireTools(tb, tools...)
}

var prefixSeq atomic.Uint32

// testPrefix returns a namespace prefix no other test on the machine
// uses now (PID and a counter), so labs of concurrent tests never meet.
func testPrefix() string {
	return fmt.Sprintf("lt%d-%d-", os.Getpid()%100000, prefixSeq.Add(1))
}

// upLab builds a lab with a fresh prefix; t.Cleanup removes it.
func upLab(tb testing.TB, c Config) *Lab {
	tb.Helper()
	if c.Prefix == "" {
		c.Prefix = testPrefix()
	}
	t0 := time.Now()
	l, err := Up(context.Background(), c)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Logf("Up %s (%d LB nodes, %d backends) took %v", l.Cfg.Prefix, len(l.LBs), len(l.Backends), time.Since(t0))
	tb.Cleanup(func() {
		if err := l.Down(); err != nil {
			tb.Error(err)
		}
	})
	return l
}

// run runs a command in n and fails the test if it fails.
func run(tb testing.TB, n *Node, name string, args ...string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := n.Run(ctx, name, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// ping pings addr once from n and returns the TTL / hop limit of the reply.
func ping(tb testing.TB, n *Node, addr netip.Addr) string {
	tb.Helper()
	ttl, err := pingTTL(n, addr)
	if err != nil {
		tb.Fatal(err)
	}
	return ttl
}

func pingTTL(n *Node, addr netip.Addr) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := n.Run(ctx, "ping", "-n", "-c1", "-W2", addr.String())
	if err != nil {
		return "", err
	}
	i := strings.Index(out, "ttl=")
	if i < 0 {
		return "", fmt.Errorf("%s: ping %v: no reply in\n%s", n, addr, out)
	}
	return strings.Fields(out[i:])[0], nil
}

// pingCase is one ping of checkPings: from, to, the TTL the reply must have.
type pingCase struct {
	from *Node
	to   netip.Addr
	ttl  string
	what string
}

// checkPings runs the pings a few at a time (each is a fork or two).
func checkPings(t *testing.T, cases []pingCase) {
	t.Helper()
	errs := make([]error, len(cases))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ttl, err := pingTTL(c.from, c.to)
			if err == nil && ttl != c.ttl {
				err = fmt.Errorf("%s -> %v: %s, want %s (%s)", c.from, c.to, ttl, c.ttl, c.what)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// existing lists the namespaces of the prefix, without the prefix.
func existing(tb testing.TB, prefix string) []string {
	tb.Helper()
	names, err := listNS(prefix)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range names {
		names[i] = strings.TrimPrefix(names[i], prefix)
	}
	return names
}

func wantNames(lbs, backends int) []string {
	names := []string{"client", "router"}
	for i := 1; i <= lbs; i++ {
		names = append(names, fmt.Sprintf("lb%d", i))
	}
	for i := 1; i <= backends; i++ {
		names = append(names, fmt.Sprintf("be%d", i))
	}
	slices.Sort(names)
	return names
}

func TestUp(t *testing.T) {
	requireLab(t, "ping", "ethtool")
	for _, lbs := range []int{1, 3} {
		t.Run(fmt.Sprintf("lbs=%d", lbs), func(t *testing.T) {
			l := upLab(t, Config{LBs: lbs})
			if got, want := existing(t, l.Cfg.Prefix), wantNames(lbs, 3); !slices.Equal(got, want) {
				t.Fatalf("namespaces %v, want %v", got, want)
			}
			checkReachability(t, l)
			checkCaptureInterfaces(t, l)
			checkVIPRoutes(t, l, l.LBs)
			checkVIPsReachLBs(t, l)
			if lbs > 1 {
				checkECMPSpread(t, l)
			}
		})
	}
}

// checkReachability pings, in both families, the router from the client,
// each backend from the client (one hop: through the router) and each
// backend from each LB node (on-link).
func checkReachability(t *testing.T, l *Lab) {
	t.Helper()
	var cases []pingCase
	for _, p := range l.Router.Iface(routerClientIf).Addrs {
		cases = append(cases, pingCase{l.Client, p.Addr(), "ttl=64", "the router"})
	}
	for _, be := range l.Backends {
		for _, a := range []netip.Addr{be.Addr4, be.Addr6} {
			cases = append(cases, pingCase{l.Client, a, "ttl=63", "through the router"})
			for _, lb := range l.LBs {
				cases = append(cases, pingCase{lb, a, "ttl=64", "same segment"})
			}
		}
	}
	checkPings(t, cases)
}

// checkCaptureInterfaces reads the LB nodes' eth0 settings with ethtool
// and ip, the tools the design names, not with the code under test.
func checkCaptureInterfaces(t *testing.T, l *Lab) {
	t.Helper()
	for _, lb := range l.LBs {
		k := run(t, lb, "ethtool", "-k", lb.Ifname)
		for _, f := range []string{"tx-checksumming", "tcp-segmentation-offload", "generic-segmentation-offload", "generic-receive-offload"} {
			if !strings.Contains(k, "\n"+f+": off") {
				t.Errorf("%s %s: %s is not off:\n%s", lb, lb.Ifname, f, k)
			}
		}
		d := run(t, lb, "ip", "-d", "link", "show", "dev", lb.Ifname)
		if !strings.Contains(d, "numtxqueues 1 numrxqueues 1") {
			t.Errorf("%s %s: want one TX and one RX queue:\n%s", lb, lb.Ifname, d)
		}
		if !strings.Contains(d, "link/ether "+lb.MAC.String()) {
			t.Errorf("%s %s: want MAC %s:\n%s", lb, lb.Ifname, lb.MAC, d)
		}
		// The router's end feeds the capture interface: no GSO packets from it.
		port := strings.TrimPrefix(lb.Name, l.Cfg.Prefix)
		k = run(t, l.Router, "ethtool", "-k", port)
		if !strings.Contains(k, "\ngeneric-segmentation-offload: off") || !strings.Contains(k, "\ntcp-segmentation-offload: off") {
			t.Errorf("%s %s: segmentation offload is on:\n%s", l.Router, port, k)
		}
	}
}

// checkVIPRoutes checks the router's routes for the default VIP prefixes
// point at exactly lbs.
func checkVIPRoutes(t *testing.T, l *Lab, lbs []*Node) {
	t.Helper()
	for _, fam := range []struct {
		flag, vip string
		addr      func(*Node) netip.Addr
	}{
		{"-4", "198.18.0.0/24", func(n *Node) netip.Addr { return n.Addr4 }},
		{"-6", "2001:db8::/64", func(n *Node) netip.Addr { return n.Addr6 }},
	} {
		out := run(t, l.Router, "ip", fam.flag, "route", "show", fam.vip)
		var via []string
		for _, f := range strings.Split(strings.ReplaceAll(out, "\n", " "), "via ")[1:] {
			via = append(via, strings.Fields(f)[0])
		}
		var want []string
		for _, lb := range lbs {
			want = append(want, fam.addr(lb).String())
		}
		if !slices.Equal(via, want) {
			t.Errorf("router: route %s via %v, want via %v:\n%s", fam.vip, via, want, out)
		}
	}
}

// checkVIPsReachLBs puts a VIP on every LB node's lo and pings it from the
// client: the router must deliver it to an LB node.
func checkVIPsReachLBs(t *testing.T, l *Lab) {
	t.Helper()
	vip4, vip6 := netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("2001:db8::10")
	for _, lb := range l.LBs {
		run(t, lb, "ip", "addr", "add", vip4.String()+"/32", "dev", "lo")
		run(t, lb, "ip", "addr", "add", vip6.String()+"/128", "dev", "lo")
	}
	checkPings(t, []pingCase{{l.Client, vip4, "ttl=63", "VIP on an LB node"}, {l.Client, vip6, "ttl=63", "VIP on an LB node"}})
	for _, lb := range l.LBs {
		run(t, lb, "ip", "addr", "del", vip4.String()+"/32", "dev", "lo")
		run(t, lb, "ip", "addr", "del", vip6.String()+"/128", "dev", "lo")
	}
}

// checkECMPSpread asks the router where it would forward TCP flows from
// the client to a VIP with different source ports: with
// fib_multipath_hash_policy=1 they spread over every LB node.
func checkECMPSpread(t *testing.T, l *Lab) {
	t.Helper()
	for _, key := range []string{"net.ipv4.fib_multipath_hash_policy", "net.ipv6.fib_multipath_hash_policy", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if v := strings.TrimSpace(run(t, l.Router, "sysctl", "-n", key)); v != "1" {
			t.Errorf("router: %s = %s, want 1", key, v)
		}
	}
	for _, fam := range []struct{ vip, src string }{{"198.18.0.10", l.Client.Addr4.String()}, {"2001:db8::10", l.Client.Addr6.String()}} {
		var batch strings.Builder
		for sport := 40000; sport < 40032; sport++ {
			fmt.Fprintf(&batch, "route get %s from %s iif %s ipproto tcp sport %d dport 80\n", fam.vip, fam.src, routerClientIf, sport)
		}
		cmd := l.Router.Command(context.Background(), "ip", "-batch", "-")
		cmd.Stdin = strings.NewReader(batch.String())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ip route get: %v\n%s", err, out)
		}
		seen, flows := map[string]int{}, 0
		for _, f := range strings.Split(string(out), "via ")[1:] {
			seen[strings.Fields(f)[0]]++
			flows++
		}
		if flows != 32 || len(seen) != len(l.LBs) {
			t.Errorf("router: %d of 32 flows to %s routed, to %v; want all, spread over all %d LB nodes", flows, fam.vip, seen, len(l.LBs))
		}
	}
}

func TestVIPRouting(t *testing.T) {
	requireLab(t)
	for _, tc := range []struct {
		routing VIPRouting
		want    func(l *Lab) []*Node
	}{
		{RouteFirstLB, func(l *Lab) []*Node { return l.LBs[:1] }},
		{RouteNone, func(l *Lab) []*Node { return nil }},
	} {
		t.Run(tc.routing.String(), func(t *testing.T) {
			l := upLab(t, Config{LBs: 2, Backends: 1, VIPRouting: tc.routing})
			checkVIPRoutes(t, l, tc.want(l))
		})
	}
	t.Run("RouteVIPs", func(t *testing.T) {
		l := upLab(t, Config{LBs: 3, Backends: 1})
		for _, lbs := range [][]*Node{l.LBs[1:2], nil, l.LBs[1:], l.LBs} {
			if err := l.RouteVIPs(lbs...); err != nil {
				t.Fatal(err)
			}
			checkVIPRoutes(t, l, lbs)
		}
	})
}

// TestDirectServerReturn sends from a backend with a VIP source address
// to the client: the router must carry it (no reverse-path drop).
func TestDirectServerReturn(t *testing.T) {
	requireLab(t)
	l := upLab(t, Config{})
	be := l.Backends[0]
	for _, key := range []string{"net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce"} {
		if v := strings.TrimSpace(run(t, be, "sysctl", "-n", key)); v == "0" {
			t.Errorf("%s: %s = 0: the backend would answer ARP for its VIPs", be, key)
		}
	}
	for _, tc := range []struct{ vip, client netip.Addr }{
		{netip.MustParseAddr("198.18.0.10"), l.Client.Addr4},
		{netip.MustParseAddr("2001:db8::10"), l.Client.Addr6},
	} {
		run(t, be, "ip", "addr", "add", netip.PrefixFrom(tc.vip, tc.vip.BitLen()).String(), "dev", "lo")
		var srv *net.UDPConn
		err := l.Client.Do(func() (err error) {
			srv, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tc.client, 9999)))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		err = be.Do(func() error {
			c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tc.vip, 80)),
				net.UDPAddrFromAddrPort(netip.AddrPortFrom(tc.client, 9999)))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("dsr"))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		srv.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 16)
		n, from, err := srv.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("client: nothing from %s with source %v: %v", be, tc.vip, err)
		}
		if string(buf[:n]) != "dsr" || from.Addr().Unmap() != tc.vip {
			t.Errorf("client got %q from %v, want \"dsr\" from %v", buf[:n], from, tc.vip)
		}
	}
}

// startIn starts a command in n with Command and returns once it runs
// there (ip netns exec has switched namespace and exec'd it).
func startIn(t *testing.T, n *Node, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := n.Command(context.Background(), name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(comm)) == filepath.Base(name) && sameNetns(t, pid, n) {
			return cmd
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("%s: %s did not start", n, name)
		}
	}
}

func TestDown(t *testing.T) {
	requireLab(t)
	l := upLab(t, Config{LBs: 2})
	// A process the lab did not start (Command, not Start) still runs in
	// a namespace: Down must end it, or it would keep the namespace alive.
	cmd := startIn(t, l.Backends[0], "sleep", "60")
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	t0 := time.Now()
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Down took %v (one process to stop)", time.Since(t0))
	if got := existing(t, l.Cfg.Prefix); len(got) != 0 {
		t.Fatalf("after Down: namespaces %v remain", got)
	}
	for _, n := range l.Nodes() {
		if _, err := os.Stat(filepath.Join(netnsDir, n.Name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it gone", n.Name, err)
		}
	}
	select {
	case err := <-waited:
		if err == nil {
			t.Errorf("sleep 60 in a removed namespace exited cleanly, want killed")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a process in the lab survived Down")
	}
	if err := l.Down(); err != nil {
		t.Fatalf("second Down: %v", err)
	}
	if names, err := Remove(l.Cfg.Prefix); err != nil || len(names) != 0 {
		t.Fatalf("Remove after Down: %v, %v; want nothing", names, err)
	}
}

// TestUpAfterCrash builds a bigger lab, forgets it (as a crashed process
// would), and builds a smaller one with the same prefix: exactly the new
// set of namespaces must exist, and it must work.
func TestUpAfterCrash(t *testing.T) {
	requireLab(t, "ping")
	prefix := testPrefix()
	old, err := Up(context.Background(), Config{Prefix: prefix, LBs: 3, Backends: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Remove(prefix) })
	cmd := startIn(t, old.LBs[2], "sleep", "60")
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	l := upLab(t, Config{Prefix: prefix, LBs: 1})
	if got, want := existing(t, prefix), wantNames(1, 3); !slices.Equal(got, want) {
		t.Fatalf("namespaces %v, want exactly %v", got, want)
	}
	if running(cmd.Process.Pid) {
		t.Errorf("a process of the crashed lab still runs")
	}
	ping(t, l.Client, l.Backends[2].Addr4)
	ping(t, l.LBs[0], l.Backends[2].Addr6)
	checkVIPRoutes(t, l, l.LBs)
}

// TestUpFailureTearsDown makes Up fail, and cancels it, at chosen steps:
// nothing may remain either way.
func TestUpFailureTearsDown(t *testing.T) {
	requireLab(t)
	boom := errors.New("injected failure")
	for _, tc := range []struct {
		at     string
		cancel bool
		want   error
	}{
		{at: "namespace %slb2", want: boom},
		{at: "link %sbe1", cancel: true, want: context.Canceled},
		{at: "vip routes", want: boom},
	} {
		prefix := testPrefix()
		at := tc.at
		if strings.Contains(at, "%s") {
			at = fmt.Sprintf(at, prefix)
		}
		t.Run(at, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			reached := false
			testHookStep = func(step string) error {
				if step != at {
					return nil
				}
				reached = true
				if tc.cancel {
					cancel()
					return ctx.Err()
				}
				return boom
			}
			defer func() { testHookStep = nil }()
			l, err := Up(ctx, Config{Prefix: prefix, LBs: 2})
			t.Cleanup(func() { Remove(prefix) })
			if !reached {
				t.Fatalf("step %q never ran", at)
			}
			if !errors.Is(err, tc.want) || l != nil {
				t.Fatalf("Up = %v, %v; want nil, %v", l, err, tc.want)
			}
			if got := existing(t, prefix); len(got) != 0 {
				t.Fatalf("after a failed Up: namespaces %v remain", got)
			}
		})
	}
}

func TestAttach(t *testing.T) {
	requireLab(t)
	if _, err := Attach(Config{Prefix: testPrefix()}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Attach of nothing: %v, want ErrNotFound", err)
	}
	l := upLab(t, Config{LBs: 2, Backends: 2})
	a, err := Attach(Config{Prefix: l.Cfg.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.LBs) != 2 || len(a.Backends) != 2 {
		t.Fatalf("Attach: %d LB nodes, %d backends; want 2, 2", len(a.LBs), len(a.Backends))
	}
	for i, n := range a.Nodes() {
		o := l.Nodes()[i]
		if n.Name != o.Name || n.Addr4 != o.Addr4 || n.Addr6 != o.Addr6 || n.MAC.String() != o.MAC.String() {
			t.Errorf("Attach: %s %v %v %s, want %s %v %v %s", n.Name, n.Addr4, n.Addr6, n.MAC, o.Name, o.Addr4, o.Addr6, o.MAC)
		}
	}
	var b strings.Builder
	if err := a.WriteStatus(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{l.Backends[1].Name + " (backend)", "198.18.30.102/24", "2001:db8:30::12/64", "nexthop via 198.18.30.12", "rxq 1 txq 1"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
	// A partial lab (a crash during Up) is reported, and Down still works.
	if err := deleteNS(l.LBs[1].Name); err != nil {
		t.Fatal(err)
	}
	if _, err := Attach(Config{Prefix: l.Cfg.Prefix, LBs: 2}); err == nil {
		t.Fatal("Attach of a lab without lb2 succeeded")
	}
	if err := a.Down(); err != nil {
		t.Fatal(err)
	}
	if got := existing(t, l.Cfg.Prefix); len(got) != 0 {
		t.Fatalf("after Down of an attached lab: %v remain", got)
	}
}

func TestConfigValidate(t *testing.T) {
	p := func(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{Prefix: "a/b"}, "prefix"},
		{Config{Prefix: strings.Repeat("x", 33)}, "prefix"},
		{Config{LBs: MaxLBs + 1}, "lbs"},
		{Config{LBs: -1}, "lbs"},
		{Config{Backends: MaxBackends + 1}, "backends"},
		{Config{VIPs4: p("10.0.0.0/24")}, "vips4[0]: 10.0.0.0/24 is not inside 198.18.0.0/15"},
		{Config{VIPs4: p("198.18.30.0/28")}, "overlaps the lab segment 198.18.30.0/24"},
		{Config{VIPs4: p("198.18.0.1/24")}, "host bits"},
		{Config{VIPs4: p("2001:db8::/64")}, "not an IPv4 prefix"},
		{Config{VIPs6: p("2001:db8:10::/48")}, "overlaps the lab segment 2001:db8:10::/64"},
		{Config{VIPs6: p("fd00::/64")}, "not inside 2001:db8::/32"},
		{Config{VIPRouting: 7}, "vip routing"},
	} {
		err := tc.c.withDefaults().validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error with %q", tc.c, err, tc.want)
		}
		// Up rejects it before touching the system.
		if _, err := Up(context.Background(), tc.c); err == nil {
			t.Errorf("Up(%+v) succeeded", tc.c)
		}
	}
	for _, c := range []Config{{}, {LBs: MaxLBs, Backends: MaxBackends}, {VIPs4: p("198.19.0.0/16"), VIPs6: p("2001:db8:ffff::/48")}} {
		if err := c.withDefaults().validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

func TestLayout(t *testing.T) {
	l := layout(Config{Prefix: "x-", LBs: 3, Backends: 12}.withDefaults())
	for _, tc := range []struct {
		n          *Node
		name       string
		addr4      string
		addr6, mac string
	}{
		{l.Client, "x-client", "198.18.10.2", "2001:db8:10::2", "02:73:6c:0a:00:02"},
		{l.Router, "x-router", "198.18.30.1", "2001:db8:30::1", "02:73:6c:1e:00:01"},
		{l.LBs[2], "x-lb3", "198.18.30.13", "2001:db8:30::13", "02:73:6c:1e:00:0d"},
		{l.Backends[11], "x-be12", "198.18.30.112", "2001:db8:30::112", "02:73:6c:1e:00:70"},
	} {
		if tc.n.Name != tc.name || tc.n.Addr4.String() != tc.addr4 || tc.n.Addr6.String() != tc.addr6 || tc.n.MAC.String() != tc.mac {
			t.Errorf("got %s %v %v %s, want %s %s %s %s", tc.n.Name, tc.n.Addr4, tc.n.Addr6, tc.n.MAC, tc.name, tc.addr4, tc.addr6, tc.mac)
		}
	}
	// Every address and MAC in the plan is unique and inside the lab ranges.
	seen := map[string]string{}
	for _, n := range l.Nodes() {
		for _, ifc := range n.Ifaces {
			keys := []string{ifc.MAC.String()}
			for _, a := range ifc.Addrs {
				keys = append(keys, a.Addr().String())
				if !labRange4.Contains(a.Addr()) && !labRange6.Contains(a.Addr()) {
					t.Errorf("%s %s: %v is outside the lab ranges", n, ifc.Name, a)
				}
			}
			for _, k := range keys {
				if prev, dup := seen[k]; dup {
					t.Errorf("%s on %s %s and %s", k, n, ifc.Name, prev)
				}
				seen[k] = n.Name + " " + ifc.Name
			}
		}
	}
}

// The trust prefixes hold every address of their role's nodes and no
// other address of the lab (router, client, the other role), and are the
// fewest that do.
func TestTrustPrefixes(t *testing.T) {
	for _, tc := range []struct {
		lbs, backends int
		lbWant        string
		beWant        string
	}{
		{1, 3, "198.18.30.11/32 2001:db8:30::11/128",
			"198.18.30.101/32 198.18.30.102/31 2001:db8:30::101/128 2001:db8:30::102/127"},
		{3, 4, "198.18.30.11/32 198.18.30.12/31 2001:db8:30::11/128 2001:db8:30::12/127",
			"198.18.30.101/32 198.18.30.102/31 198.18.30.104/32 2001:db8:30::101/128 2001:db8:30::102/127 2001:db8:30::104/128"},
		{9, 28, "198.18.30.11/32 198.18.30.12/30 198.18.30.16/30 2001:db8:30::11/128 2001:db8:30::12/127 2001:db8:30::14/126 2001:db8:30::18/127",
			// IPv6 hosts are decimal digits: ::101..::109, ::110..::119, ::120..::128.
			"198.18.30.101/32 198.18.30.102/31 198.18.30.104/29 198.18.30.112/28 198.18.30.128/32 " +
				"2001:db8:30::101/128 2001:db8:30::102/127 2001:db8:30::104/126 2001:db8:30::108/127 " +
				"2001:db8:30::110/125 2001:db8:30::118/127 2001:db8:30::120/125 2001:db8:30::128/128"},
	} {
		l := layout(Config{LBs: tc.lbs, Backends: tc.backends}.withDefaults())
		str := func(ps []netip.Prefix) string {
			var s []string
			for _, p := range ps {
				s = append(s, p.String())
			}
			return strings.Join(s, " ")
		}
		lbp, bep := l.LBPrefixes(), l.BackendPrefixes()
		if got := str(lbp); got != tc.lbWant {
			t.Errorf("%d LBs: LBPrefixes %s, want %s", tc.lbs, got, tc.lbWant)
		}
		if got := str(bep); got != tc.beWant {
			t.Errorf("%d backends: BackendPrefixes %s, want %s", tc.backends, got, tc.beWant)
		}
		in := func(ps []netip.Prefix, a netip.Addr) bool {
			for _, p := range ps {
				if p.Contains(a) {
					return true
				}
			}
			return false
		}
		for _, n := range l.Nodes() {
			for _, a := range []netip.Addr{n.Addr4, n.Addr6} {
				if got, want := in(lbp, a), n.Role == RoleLB; got != want {
					t.Errorf("%s %v in LBPrefixes: %v", n, a, got)
				}
				if got, want := in(bep, a), n.Role == RoleBackend; got != want {
					t.Errorf("%s %v in BackendPrefixes: %v", n, a, got)
				}
			}
		}
		for _, a := range []string{"198.18.10.2", "198.18.30.10", "198.18.30.100", "2001:db8:30::10a", "203.0.113.7"} {
			if x := netip.MustParseAddr(a); in(lbp, x) || in(bep, x) {
				t.Errorf("%s is in a trust prefix", a)
			}
		}
	}
}

func TestCoverRange(t *testing.T) {
	for _, tc := range []struct{ first, last, want string }{
		{"10.0.0.0", "10.0.0.255", "[10.0.0.0/24]"},
		{"0.0.0.0", "255.255.255.255", "[0.0.0.0/0]"},
		{"10.0.0.1", "10.0.0.1", "[10.0.0.1/32]"},
		{"10.0.0.255", "10.0.1.0", "[10.0.0.255/32 10.0.1.0/32]"},
		{"2001:db8::ff", "2001:db8::100", "[2001:db8::ff/128 2001:db8::100/128]"},
		{"2001:db8::", "2001:db8::ffff:ffff", "[2001:db8::/96]"},
	} {
		if got := fmt.Sprint(coverRange(netip.MustParseAddr(tc.first), netip.MustParseAddr(tc.last))); got != tc.want {
			t.Errorf("%s-%s: %s, want %s", tc.first, tc.last, got, tc.want)
		}
	}
}
