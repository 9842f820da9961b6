package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/sluicelb/sluice/internal/announce/l2"
	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/api"
	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/scenario"
)

const (
	l2Conns = 100 // long-lived connections, half on each VIP
	// The router's neighbour timers in the L2 lab (both runs): entries
	// are reachable for 1.5-4.5 s after a confirmation, the first probe
	// of a stale entry waits 1 s. Kernel defaults are 15-45 s and 5 s;
	// shorter makes the control run end in seconds. Gratuitous ARP does
	// not depend on them.
	l2ReachableMs = 3000
	// l2Probe is the cluster's failure detector period in the L2 lab: a
	// killed node is out of the views 3-5 periods later.
	l2Probe      = 100 * time.Millisecond
	l2DelayProbe = 1
)

// l2IO is the LB nodes' packet I/O in the L2 tests.
var l2IO = "afxdp"

// l2Lab starts three LB nodes (AF_XDP) in one cluster, in L2 mode with
// l2opts, the router reaching the VIPs on-link on the service segment,
// stream services on both VIPs. The IPv6 VIP is chosen so that both VIPs
// have the same owner while every node lives (one kill takes both over).
func l2Lab(t *testing.T, l2opts string) *scenario.Scenario {
	t.Helper()
	vip4 := netip.MustParseAddr("198.18.0.10")
	var members []netip.AddrPort
	for i := range 3 {
		members = append(members, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 30, byte(11 + i)}), scenario.ClusterPort))
	}
	owner := l2.Decide(l2.Input{VIP: vip4, Configured: members, Live: members}).Owner
	var vip6 netip.Addr
	for i := 0x10; i < 0x100; i++ {
		v := netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i))
		if l2.Decide(l2.Input{VIP: v, Configured: members, Live: members}).Owner == owner {
			vip6 = v
			break
		}
	}
	o := scenario.Options{IO: l2IO, LBs: 3, Streams: true, Streams6: true, Cluster: true, L2: true, L2Options: l2opts,
		VIP4: vip4, VIP6: vip6, ClusterProbe: l2Probe}
	s := start(t, o)
	_, d := waitCluster(t, s, 20*time.Second, 3, 0, 1, 2)
	t.Logf("cluster of 3 formed and ready after %v; VIPs %v and %v, expected owner %v", d.Round(time.Millisecond), vip4, vip6, owner)
	for _, k := range []string{"ipv4", "ipv6"} {
		for _, kv := range []string{fmt.Sprintf("net.%s.neigh.svc.base_reachable_time_ms=%d", k, l2ReachableMs),
			fmt.Sprintf("net.%s.neigh.svc.delay_first_probe_time=%d", k, l2DelayProbe)} {
			if out, err := s.Lab.Router.Run(t.Context(), "sysctl", "-qw", kv); err != nil {
				t.Fatalf("router: sysctl %s: %v %s", kv, err, out)
			}
		}
	}
	// Entries made before hold timers armed with the old times: resolve
	// them again.
	for _, f := range []string{"-4", "-6"} {
		if out, err := s.Lab.Router.Run(t.Context(), "ip", f, "neigh", "flush", "dev", "svc"); err != nil {
			t.Fatalf("router: neigh flush: %v %s", err, out)
		}
	}
	return s
}

// l2Status runs `sluice ctl -o json l2 status` on LB node i.
func l2Status(ctx context.Context, s *scenario.Scenario, i int) (control.L2Status, error) {
	var st control.L2Status
	out, err := s.Lab.LBs[i].Command(ctx, sluiceBin, "ctl", "-o", "json", "--timeout", "2s", "l2", "status").Output()
	if err != nil {
		return st, fmt.Errorf("lb%d: ctl l2 status: %w", i+1, err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("lb%d: ctl l2 status: %w\n%s", i+1, err, out)
	}
	return st, nil
}

// answering returns which of the LB nodes lbs answer for vip.
func answering(t *testing.T, s *scenario.Scenario, vip netip.Addr, lbs ...int) []int {
	t.Helper()
	var out []int
	for _, i := range lbs {
		st, err := l2Status(t.Context(), s, i)
		if err != nil {
			continue // a node being killed or restarted
		}
		for _, v := range st.VIPs {
			if v.Address == vip.String() && v.Answering {
				out = append(out, i)
			}
		}
	}
	return out
}

// waitOwner waits until exactly LB node want (of lbs) answers for both
// VIPs, and returns how long that took.
func waitOwner(t *testing.T, s *scenario.Scenario, timeout time.Duration, want int, lbs ...int) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		a4, a6 := answering(t, s, s.Opts.VIP4, lbs...), answering(t, s, s.Opts.VIP6, lbs...)
		if len(a4) == 1 && a4[0] == want && len(a6) == 1 && a6[0] == want {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("after %v: %v answered by LB nodes %v, %v by %v; want only lb%d", timeout, s.Opts.VIP4, a4, s.Opts.VIP6, a6, want+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ownerOf returns the LB node answering for both VIPs (-1 if none or not
// the same).
func ownerOf(t *testing.T, s *scenario.Scenario, lbs ...int) int {
	a4, a6 := answering(t, s, s.Opts.VIP4, lbs...), answering(t, s, s.Opts.VIP6, lbs...)
	if len(a4) == 1 && len(a6) == 1 && a4[0] == a6[0] {
		return a4[0]
	}
	return -1
}

// l2Streams opens l2Conns long-lived connections, half to each VIP.
func l2Streams(t *testing.T, s *scenario.Scenario) *lab.Streams {
	t.Helper()
	var n sync.Mutex
	k := 0
	dial := func(ctx context.Context) (net.Conn, error) {
		n.Lock()
		vip := s.VIPs()[k%2]
		k++
		n.Unlock()
		var c net.Conn
		err := s.Lab.Client.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp", netip.AddrPortFrom(vip, scenario.StreamPort).String(), 5*time.Second)
			return err
		})
		return c, err
	}
	st := lab.RunStreams(t.Context(), lab.StreamOptions{Dial: dial, Conns: l2Conns, Interval: failoverInterval, Timeout: 15 * time.Second})
	t.Cleanup(func() { st.Stop() })
	for i, r := range st.Snapshot() {
		if r.Err != nil {
			t.Fatalf("stream %d: %v", i, r.Err)
		}
	}
	t.Logf("%d streams open (%d per VIP)", l2Conns, l2Conns/2)
	return st
}

// admin returns an API client of LB node i's admin API, dialled in its
// namespace.
func admin(s *scenario.Scenario, i int) *api.Client {
	n := s.Lab.LBs[i]
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := n.Do(func() error {
			var err error
			c, err = (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	return &api.Client{Base: "http://127.0.0.1:6090", HTTP: &http.Client{Transport: tr, Timeout: time.Second}}
}

// firstForward polls LB nodes lbs' datapath counters every 5 ms from
// start and returns, for each, when it first forwarded a packet (its
// tx_packets above what it was at start; zero if not within timeout).
func firstForward(t *testing.T, s *scenario.Scenario, timeout time.Duration, lbs ...int) func() []time.Time {
	t.Helper()
	out := make([]time.Time, len(lbs))
	var wg sync.WaitGroup
	for k, i := range lbs {
		c := admin(s, i)
		st0, err := c.Stats(t.Context())
		if err != nil {
			t.Fatalf("lb%d: stats: %v", i+1, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			end := time.Now().Add(timeout)
			for time.Now().Before(end) {
				st, err := c.Stats(context.Background())
				if err == nil && st.TxPackets > st0.TxPackets {
					out[k] = time.Now()
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return func() []time.Time { wg.Wait(); return out }
}

// routerNeighbour returns the MAC of the router's neighbour entry for vip
// on the service bridge and its state.
func routerNeighbour(s *scenario.Scenario, vip netip.Addr) (mac string, state string) {
	s.Lab.Router.Do(func() error {
		l, err := netlink.LinkByName("svc")
		if err != nil {
			return err
		}
		fam := netlink.FAMILY_V4
		if vip.Is6() {
			fam = netlink.FAMILY_V6
		}
		ns, err := netlink.NeighList(l.Attrs().Index, fam)
		if err != nil {
			return err
		}
		for _, n := range ns {
			if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == vip {
				mac, state = n.HardwareAddr.String(), neighState(n.State)
			}
		}
		return nil
	})
	return mac, state
}

func neighState(s int) string {
	for _, x := range []struct {
		v int
		n string
	}{{netlink.NUD_REACHABLE, "REACHABLE"}, {netlink.NUD_STALE, "STALE"}, {netlink.NUD_DELAY, "DELAY"}, {netlink.NUD_PROBE, "PROBE"},
		{netlink.NUD_FAILED, "FAILED"}, {netlink.NUD_INCOMPLETE, "INCOMPLETE"}, {netlink.NUD_PERMANENT, "PERMANENT"}} {
		if s&x.v != 0 {
			return x.n
		}
	}
	return fmt.Sprint(s)
}

// checkHandover checks that LB node from let each VIP go before LB node
// to took it (the nodes' own clocks: one machine), and logs the gap.
func checkHandover(t *testing.T, s *scenario.Scenario, from, to int) {
	t.Helper()
	fs, err1 := l2Status(t.Context(), s, from)
	ts, err2 := l2Status(t.Context(), s, to)
	if err1 != nil || err2 != nil {
		t.Fatalf("status: %v %v", err1, err2)
	}
	for _, vip := range s.VIPs() {
		var rel, took time.Time
		for _, v := range fs.VIPs {
			if v.Address == vip.String() {
				rel = v.Released
			}
		}
		for _, v := range ts.VIPs {
			if v.Address == vip.String() {
				took = v.Since
			}
		}
		t.Logf("%v: lb%d let it go, lb%d took it %v later", vip, from+1, to+1, took.Sub(rel).Round(time.Millisecond))
		if rel.IsZero() || took.IsZero() || took.Before(rel) {
			t.Errorf("%v: two owners at once: lb%d released it at %v, lb%d took it at %v", vip, from+1, rel, to+1, took)
		}
	}
}

// probeUDP sends a datagram from the client to each of vips' UDP echo
// service every 10 ms until the test ends: unlike the streams' TCP, whose
// retransmissions back off after a loss (0.2, 0.4, 0.8 s...), it shows
// when the path works again to within 10 ms.
func probeUDP(t *testing.T, s *scenario.Scenario, vips ...netip.Addr) {
	t.Helper()
	var conns []net.Conn
	for _, vip := range vips {
		var c net.Conn
		if err := s.Lab.Client.Do(func() error {
			var err error
			c, err = net.Dial("udp", netip.AddrPortFrom(vip, scenario.UDPPort).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		defer close(done)
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			for _, c := range conns {
				c.Write([]byte("l2 probe"))
			}
		}
	}()
}

// l2KillResult is what l2Kill measured.
type l2KillResult struct {
	owner, next int
	// first: from the kill to the first packet forwarded by the new owner
	// (zero: none within the wait); gap: the streams' longest silence.
	first, gap time.Duration
	broken     int
}

// l2Kill SIGKILLs the owner of both VIPs while the streams run and
// measures the takeover.
func l2Kill(t *testing.T, s *scenario.Scenario, st *lab.Streams, wait time.Duration) l2KillResult {
	t.Helper()
	r := l2KillResult{owner: ownerOf(t, s, 0, 1, 2)}
	if r.owner < 0 {
		t.Fatal("no single owner of both VIPs")
	}
	var rest []int
	for i := range 3 {
		if i != r.owner {
			rest = append(rest, i)
		}
	}
	mac4, _ := routerNeighbour(s, s.Opts.VIP4)
	t.Logf("lb%d owns both VIPs (router's entry for %v: %s); killing it", r.owner+1, s.Opts.VIP4, mac4)
	phase(t, st, "steady state", 0)
	probeUDP(t, s, s.VIPs()...)
	time.Sleep(100 * time.Millisecond)
	poll := firstForward(t, s, wait, rest...)
	killed := time.Now()
	if err := s.Signal(r.owner, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	firsts := poll()
	r.next = -1
	for k, f := range firsts {
		if !f.IsZero() && (r.first == 0 || f.Sub(killed) < r.first) {
			r.first, r.next = f.Sub(killed), rest[k]
		}
	}
	if r.next >= 0 {
		if ns, err := l2Status(t.Context(), s, r.next); err == nil {
			for _, v := range ns.VIPs {
				t.Logf("%s: lb%d took it over %v after the kill (view %v; its takeovers of it %d, releases of any %d)",
					v.Address, r.next+1, v.Since.Sub(killed).Round(time.Millisecond), ns.Live, v.Takeovers, ns.Releases)
			}
		}
	}
	time.Sleep(2 * time.Second)
	r.broken, r.gap = phase(t, st, "owner killed", 0)
	m4, s4 := routerNeighbour(s, s.Opts.VIP4)
	m6, s6 := routerNeighbour(s, s.Opts.VIP6)
	t.Logf("kill -> first packet forwarded by the new owner (lb%d): %v; longest stream gap %v; router's entries now %v %s %s, %v %s %s",
		r.next+1, r.first.Round(time.Millisecond), r.gap.Round(time.Millisecond), s.Opts.VIP4, m4, s4, s.Opts.VIP6, m6, s6)
	return r
}

// Three LB nodes in L2 mode, IPv4 and IPv6 VIPs owned by one node, 100
// long-lived connections. The owner is SIGKILLed: the survivor the
// rendezvous hash names takes both VIPs over with gratuitous ARP and
// unsolicited neighbour advertisements, the router moves its neighbour
// entries, and no connection breaks. The killed node restarts and takes
// its VIPs back (after settling). Then its cluster traffic is dropped
// (nftables): alone it sees no majority and stops answering, and the
// majority side takes the VIPs over.
func TestE2EL2Failover(t *testing.T) {
	s := l2Lab(t, "")
	ctx := t.Context()
	waitOwner(t, s, 10*time.Second, ownerOf(t, s, 0, 1, 2), 0, 1, 2)
	st := l2Streams(t, s)
	time.Sleep(time.Second)

	// (1) The owner is killed.
	r := l2Kill(t, s, st, 5*time.Second)
	if r.first == 0 {
		t.Fatalf("no survivor forwarded a packet within 5 s of the kill")
	}
	if o := ownerOf(t, s, r.next); o != r.next {
		t.Errorf("lb%d forwarded but does not answer for both VIPs", r.next+1)
	}

	// (2) It restarts and takes the VIPs back once it settled.
	restarted := time.Now()
	if err := s.RestartLB(ctx, r.owner, l2IO); err != nil {
		t.Fatal(err)
	}
	waitCluster(t, s, 20*time.Second, 3, 0, 1, 2)
	waitOwner(t, s, 10*time.Second, r.owner, 0, 1, 2)
	t.Logf("lb%d restarted: answers for both VIPs again %v after the restart began", r.owner+1, (time.Since(restarted)).Round(time.Millisecond))
	checkHandover(t, s, r.next, r.owner)
	time.Sleep(2 * time.Second)
	broken2, gap2 := phase(t, st, "owner restarted", 0)

	// (2') SIGTERM: the owner stops answering, leaves the cluster and
	// forwards for shutdown_grace while the next owner takes over; then
	// it starts again and takes its VIPs back.
	var rest []int
	for i := range 3 {
		if i != r.owner {
			rest = append(rest, i)
		}
	}
	poll := firstForward(t, s, 5*time.Second, rest...)
	termed := time.Now()
	if err := s.Signal(r.owner, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var termFirst time.Duration
	for _, f := range poll() {
		if !f.IsZero() && (termFirst == 0 || f.Sub(termed) < termFirst) {
			termFirst = f.Sub(termed)
		}
	}
	time.Sleep(time.Second)
	brokenT, gapT := phase(t, st, "owner SIGTERM", 0)
	t.Logf("SIGTERM -> first packet forwarded by the next owner: %v", termFirst.Round(time.Millisecond))
	if termFirst == 0 {
		t.Error("no node forwarded within 5 s of the owner's SIGTERM")
	}
	if err := s.RestartLB(ctx, r.owner, l2IO); err != nil {
		t.Fatal(err)
	}
	waitCluster(t, s, 20*time.Second, 3, 0, 1, 2)
	waitOwner(t, s, 10*time.Second, r.owner, 0, 1, 2)
	time.Sleep(time.Second)
	phase(t, st, "owner back", 0)

	// (3) The owner is partitioned: its cluster traffic dropped both ways.
	p := r.owner
	before, err := l2Status(ctx, s, p)
	if err != nil {
		t.Fatal(err)
	}
	nft := fmt.Sprintf(`table inet l2test {
  chain in { type filter hook input priority 0; udp dport %[1]d-%[2]d drop; tcp dport %[1]d-%[2]d drop; }
  chain out { type filter hook output priority 0; udp dport %[1]d-%[2]d drop; tcp dport %[1]d-%[2]d drop; }
}`, scenario.ClusterPort, scenario.ClusterPort+2)
	partitioned := time.Now()
	cmd := s.Lab.LBs[p].Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nft)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	var stopped time.Duration
	for {
		a4, a6 := answering(t, s, s.Opts.VIP4, p), answering(t, s, s.Opts.VIP6, p)
		if len(a4) == 0 && len(a6) == 0 {
			stopped = time.Since(partitioned)
			break
		}
		if time.Since(partitioned) > 10*time.Second {
			t.Fatalf("lb%d still answers 10 s after its partition", p+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var others []int
	for i := range 3 {
		if i != p {
			others = append(others, i)
		}
	}
	newOwner := -1
	for time.Since(partitioned) < 10*time.Second {
		if newOwner = ownerOf(t, s, others...); newOwner >= 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(partitioned)
	ps, _ := l2Status(ctx, s, p)
	t.Logf("lb%d partitioned: stopped answering after %v (view %v, majority %d: %v); lb%d answers for both VIPs after %v (polled)",
		p+1, stopped.Round(time.Millisecond), ps.Live, ps.Need, ps.Quorum, newOwner+1, took.Round(time.Millisecond))
	if newOwner < 0 {
		t.Fatal("no node of the majority took the VIPs over")
	}
	// Never two owners: the partitioned node let each VIP go before the
	// new owner took it (the nodes' own clocks: one machine).
	ns, _ := l2Status(ctx, s, newOwner)
	for _, vip := range s.VIPs() {
		var rel, took time.Time
		for _, v := range ps.VIPs {
			if v.Address == vip.String() {
				rel = v.Released
			}
		}
		for _, v := range ns.VIPs {
			if v.Address == vip.String() {
				took = v.Since
			}
		}
		t.Logf("%v: partitioned lb%d released it %v after the partition, lb%d took it over %v after: %v without an owner",
			vip, p+1, rel.Sub(partitioned).Round(time.Millisecond), newOwner+1, took.Sub(partitioned).Round(time.Millisecond), took.Sub(rel).Round(time.Millisecond))
		if rel.IsZero() || took.IsZero() || took.Before(rel) {
			t.Errorf("%v: two owners at once: released at %v, taken over at %v", vip, rel, took)
		}
	}
	// The router asks again: only the new owner answers.
	s.Lab.Router.Run(ctx, "ip", "neigh", "flush", "dev", "svc", "to", s.Opts.VIP4.String())
	s.Lab.Router.Run(ctx, "ip", "-6", "neigh", "flush", "dev", "svc", "to", s.Opts.VIP6.String())
	time.Sleep(2 * time.Second)
	after, err := l2Status(ctx, s, p)
	if err != nil {
		t.Fatal(err)
	}
	m4, _ := routerNeighbour(s, s.Opts.VIP4)
	m6, _ := routerNeighbour(s, s.Opts.VIP6)
	want := s.Lab.LBs[newOwner].Iface("eth0").MAC.String()
	t.Logf("router re-resolved: %v at %s, %v at %s (new owner lb%d %s); partitioned lb%d answered %d ARP / %d NS, ignored %d requests for VIPs it does not own",
		s.Opts.VIP4, m4, s.Opts.VIP6, m6, newOwner+1, want, p+1,
		after.Counters.ARPAnswered-before.Counters.ARPAnswered, after.Counters.NSAnswered-before.Counters.NSAnswered,
		after.Counters.IgnoredNotOwner-before.Counters.IgnoredNotOwner)
	if m4 != want || m6 != want {
		t.Errorf("router's entries %s %s, want the new owner's %s", m4, m6, want)
	}
	if after.Counters.ARPAnswered != before.Counters.ARPAnswered || after.Counters.NSAnswered != before.Counters.NSAnswered {
		t.Errorf("the partitioned node answered requests")
	}
	broken3, gap3 := phase(t, st, "owner partitioned", 0)

	// (4) The partition heals: the node rejoins (memberlist gossips to
	// members it declared dead for a while) and takes its VIPs back.
	healed := time.Now()
	if out, err := s.Lab.LBs[p].Command(ctx, "nft", "delete", "table", "inet", "l2test").CombinedOutput(); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	waitCluster(t, s, 40*time.Second, 3, 0, 1, 2)
	rejoined := time.Since(healed)
	waitOwner(t, s, 10*time.Second, p, 0, 1, 2)
	t.Logf("partition healed: lb%d back in every view after %v, answers for both VIPs again after %v",
		p+1, rejoined.Round(time.Millisecond), time.Since(healed).Round(time.Millisecond))
	checkHandover(t, s, newOwner, p)
	time.Sleep(time.Second)
	phase(t, st, "partition healed", 0)

	n := 0
	for i, res := range st.Stop() {
		if res.Err != nil {
			if n++; n <= 5 {
				t.Logf("stream %d on %s broke: %v", i, res.Backend, res.Err)
			}
		}
	}
	t.Logf("RESULT l2 failover: kill -> first forwarded packet on the new owner %v, SIGTERM -> %v; stream gaps: kill %v, restart %v, SIGTERM %v, partition %v; broken (cumulative) %d, %d, %d, %d of %d",
		r.first.Round(time.Millisecond), termFirst.Round(time.Millisecond), r.gap.Round(time.Millisecond), gap2.Round(time.Millisecond), gapT.Round(time.Millisecond), gap3.Round(time.Millisecond),
		r.broken, broken2, brokenT, broken3, l2Conns)
	if n != 0 {
		t.Errorf("%d of %d connections broke", n, l2Conns)
	}
	if r.first > time.Second {
		t.Errorf("kill -> first forwarded packet on the new owner took %v, goal under 1 s", r.first)
	}
}

// The control run: the same kill with gratuitous: 0. The survivor claims
// the VIPs but announces nothing: the router keeps sending to the dead
// node's MAC until its neighbour entry goes stale and the probes fail, so
// traffic stalls for seconds (what TestE2EL2Failover's announcements save).
func TestE2EL2FailoverControlNoGratuitous(t *testing.T) {
	s := l2Lab(t, "gratuitous: 0")
	waitOwner(t, s, 10*time.Second, ownerOf(t, s, 0, 1, 2), 0, 1, 2)
	st := l2Streams(t, s)
	time.Sleep(time.Second)
	r := l2Kill(t, s, st, 20*time.Second)
	t.Logf("RESULT l2 control (no gratuitous ARP/NA): kill -> first forwarded packet on the new owner %v; longest stream gap %v; broken %d of %d",
		r.first.Round(time.Millisecond), r.gap.Round(time.Millisecond), r.broken, l2Conns)
	if r.first != 0 && r.first < 1500*time.Millisecond {
		t.Fatalf("traffic reached the new owner %v after the kill without announcements: the L2 test could not fail", r.first)
	}
}
