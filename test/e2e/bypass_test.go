package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/scenario"
)

const (
	bypassConns    = 50               // long-lived connections opened during bypass
	bypassRequests = 200              // HTTP requests through the VIP in each phase
	bypassDrain    = 30 * time.Second // the VIP's drain_period: how long a new backend fills
)

// Backend life cycles of the bypass lab.
const (
	lifeCycleCluster      = "cluster"       // the LB nodes are a cluster, affinity on-change
	lifeCycleSecondChance = "second-chance" // stream4 has second chance, no cluster
	lifeCycleNone         = "none"          // neither: a new backend is active at once
)

// bypassLab is three LB nodes (AF_XDP) behind BIRD (ECMP, BFD) and two
// backends; every service of both VIPs (http4, udp4, stream4; http6,
// udp6) has bypass single-backend and only be1. lifeCycle says how a
// backend that joins fills. It waits until the router reaches both VIPs
// straight at be1.
func bypassLab(t *testing.T, lifeCycle, router string) *scenario.Scenario {
	t.Helper()
	cluster := lifeCycle == lifeCycleCluster
	o := scenario.Options{Backends: 2, StreamStates: []string{"", "absent"}, Bypass: true,
		Cluster: cluster, SecondChance: lifeCycle == lifeCycleSecondChance, DrainPeriod: bypassDrain,
		IO: "afxdp", LBs: 3, BGP: true, BFD: true, Streams: true, AgentMetrics: true, Router: router}
	s := start(t, o)
	if s.FRR != nil {
		// FRR resets each node's first session once at startup (BFD).
		_, d := waitFRRStable(t, s, 2*time.Second, 30*time.Second)
		t.Logf("FRR sessions stable after %v", d.Round(time.Millisecond))
	}
	be1 := s.Lab.Backends[0].Addr4
	if d, err := waitVIPVia(t.Context(), s, s.Opts.VIP4, 20*time.Second, be1); err != nil {
		out, _ := s.RouterSessions(t.Context())
		t.Fatalf("%v\nrouter:\n%s", err, out)
	} else {
		t.Logf("router: %v via be1 %v (bypass) after %v", s.Opts.VIP4, be1, d.Round(time.Millisecond))
	}
	if d, err := waitVIPVia(t.Context(), s, s.Opts.VIP6, 20*time.Second, s.Lab.Backends[0].Addr6); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("router: %v via be1 %v (bypass) after %v", s.Opts.VIP6, s.Lab.Backends[0].Addr6, d.Round(time.Millisecond))
	}
	if cluster {
		_, d := waitCluster(t, s, 20*time.Second, 3, 0, 1, 2)
		t.Logf("cluster of 3 formed and ready after %v", d.Round(time.Millisecond))
	}
	return s
}

// lbAddrs returns the addresses of the LB nodes of vip's family.
func lbAddrs(s *scenario.Scenario, vip netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, n := range s.Lab.LBs {
		if vip.Is4() {
			out = append(out, n.Addr4)
		} else {
			out = append(out, n.Addr6)
		}
	}
	return out
}

// waitVIPVia waits until the router's route to vip has exactly the next
// hops want (as a set: BIRD may list one gateway several times), and
// returns how long that took.
func waitVIPVia(ctx context.Context, s *scenario.Scenario, vip netip.Addr, timeout time.Duration, want ...netip.Addr) (time.Duration, error) {
	start := time.Now()
	for {
		got, err := s.Lab.VIPNextHops(ctx, vip)
		if err != nil {
			return 0, err
		}
		if sameSet(got, want) {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("route to %v via %v after %v, want via %v", vip, got, timeout, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sameSet reports whether a and b hold the same addresses, ignoring
// repetitions.
func sameSet(a, b []netip.Addr) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			return false
		}
	}
	return len(a) > 0 || len(b) == 0
}

// routeChange reloads every LB node with its configuration for the
// scenario's current options and measures, from the first reload, the
// time until the router's route to vip first shows any of want (first)
// and until it is exactly want (all).
func routeChange(t *testing.T, s *scenario.Scenario, vip netip.Addr, want ...netip.Addr) (first, all time.Duration) {
	t.Helper()
	start := time.Now()
	for i := range s.LBs {
		if err := s.ReloadLB(i, s.ConfigFor(i)); err != nil {
			t.Fatal(err)
		}
	}
	for {
		got, err := s.Lab.VIPNextHops(t.Context(), vip)
		if err != nil {
			t.Fatal(err)
		}
		if first == 0 && slices.ContainsFunc(got, func(a netip.Addr) bool { return slices.Contains(want, a) }) {
			first = time.Since(start)
		}
		if sameSet(got, want) {
			return first, time.Since(start)
		}
		if time.Since(start) > 15*time.Second {
			out, _ := s.RouterSessions(t.Context())
			t.Fatalf("route to %v via %v 15s after the reloads, want %v\nrouter:\n%s", vip, got, want, out)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// vipPackets returns the packets the LB nodes sent to the backends of the
// bypass VIPs' services (http4, udp4, stream4, http6, udp6), summed over
// the nodes.
func vipPackets(t *testing.T, s *scenario.Scenario) uint64 {
	t.Helper()
	var sum uint64
	for i := range s.LBs {
		for _, name := range []string{"http4", "udp4", "stream4", "http6", "udp6"} {
			sum += vipStatus(t, s, i, name).Packets
		}
	}
	return sum
}

// brokenBy counts the broken streams by the backend they were on.
func brokenBy(st *lab.Streams) (per map[string]int, total int) {
	per = map[string]int{}
	for _, r := range st.Snapshot() {
		if r.Err != nil {
			per[r.Backend]++
			total++
		}
	}
	return per, total
}

// bypassResult is what a bypass run measured.
type bypassResult struct {
	toLB, toLBAll         time.Duration // scale-out: reload -> first LB next hop, all three
	toBackend, toBEAll    time.Duration // back to one backend: reload -> be1 first, be1 only
	toLB6, toBackend6     time.Duration // the same for the IPv6 VIP: reload -> all three, be1 only
	brokenScaleOut        int           // of the 50 streams, broken by the scale-out
	brokenScaleOutPer     map[string]int
	brokenBE1             int // streams on be1 broken by the end
	stalled               int // unbroken streams that answered nothing for a second at the end
	newPer                map[string]int
	lbPacketsDuringBypass uint64
}

// bypassRun: bypass, 200 requests and 50 streams straight to be1; be2
// added (active in the configuration) on every node; then be2 drained and
// removed.
func bypassRun(t *testing.T, s *scenario.Scenario) bypassResult {
	var res bypassResult
	ctx := t.Context()
	vip, vip6 := s.Opts.VIP4, s.Opts.VIP6
	be1, be1v6 := s.Lab.Backends[0].Addr4, s.Lab.Backends[0].Addr6

	// Bypass: the router sends the VIP to be1; the LB nodes see none of it.
	for i := range s.LBs {
		b := vipStatus(t, s, i, "http4").Bypass
		if b == nil || b.State != control.BypassBypassed || b.NextHop != be1.String() {
			t.Fatalf("lb%d: http4 bypass %+v, want bypassed via %v", i+1, b, be1)
		}
		if i == 0 {
			t.Logf("lb1: %+v", *b)
		}
	}
	for _, args := range [][]string{{"ctl", "vip", "list"}, {"ctl", "node", "status"}} {
		out, err := s.Lab.LBs[0].Run(ctx, sluiceBin, args...)
		if err != nil || !strings.Contains(out, be1.String()) || !strings.Contains(out, "bypass") {
			t.Errorf("lb1: sluice %s: %v; want the bypass and %v in\n%s", strings.Join(args, " "), err, be1, out)
		} else {
			t.Logf("lb1: sluice %s:\n%s", strings.Join(args, " "), out)
		}
	}
	hops, _ := s.Lab.VIPNextHops(ctx, vip)
	if s.BIRD != nil {
		out, _ := s.BIRD.Command(ctx, "show", "route", "all", netip.PrefixFrom(vip, 32).String())
		t.Logf("bypass: router's kernel route via %v; BIRD:\n%s", hops, out)
	}
	before := vipPackets(t, s)
	names, err := s.Curl(ctx, vip, bypassRequests)
	if err != nil {
		t.Fatalf("bypass: %v", err)
	}
	names6, err := s.Curl(ctx, vip6, bypassRequests)
	if err != nil {
		t.Fatalf("bypass, IPv6: %v", err)
	}
	st := openStreams(t, s, bypassConns, 15*time.Second)
	time.Sleep(time.Second) // the streams exchange ten messages each
	res.lbPacketsDuringBypass = vipPackets(t, s) - before
	t.Logf("bypass: %d requests answered by %v, %d over IPv6 by %v; the LB nodes sent %d packets of the VIPs meanwhile",
		len(names), count(names), len(names6), count(names6), res.lbPacketsDuringBypass)
	if c, c6 := count(names), count(names6); c["be1"] != bypassRequests || c6["be1"] != bypassRequests {
		t.Errorf("bypass: answers %v and %v (IPv6), want all %d from be1", c, c6, bypassRequests)
	}
	if res.lbPacketsDuringBypass != 0 {
		t.Errorf("bypass: the LB nodes forwarded %d packets of the VIPs, want 0", res.lbPacketsDuringBypass)
	}
	phase(t, st, "bypass", 0)

	// Scale out: be2 joins every service of the VIP, active.
	s.Opts.StreamStates = []string{"", ""}
	start := time.Now()
	res.toLB, res.toLBAll = routeChange(t, s, vip, lbAddrs(s, vip)...)
	if _, err := waitVIPVia(ctx, s, vip6, 5*time.Second, lbAddrs(s, vip6)...); err != nil {
		t.Error(err)
	}
	res.toLB6 = time.Since(start)
	t.Logf("scale-out: route via an LB node %v after the first reload, via all three %v (IPv6 by %v)",
		res.toLB.Round(time.Millisecond), res.toLBAll.Round(time.Millisecond), res.toLB6.Round(time.Millisecond))
	for i := range s.LBs {
		v := vipStatus(t, s, i, "stream4")
		states := map[string]string{}
		for _, b := range v.Backends {
			states[b.Address] = b.State
		}
		t.Logf("lb%d: stream4 bypass %s (%s), backends %v", i+1, v.Bypass.State, v.Bypass.Reason, states)
	}
	time.Sleep(3 * time.Second) // the streams cross the LB nodes
	res.brokenScaleOutPer, res.brokenScaleOut = brokenBy(st)
	phase(t, st, "scale-out", res.toLBAll)
	if s.Opts.Cluster {
		logClusterCounters(t, s, "scale-out", 0, 1, 2)
	}
	names, err = s.Curl(ctx, vip, bypassRequests)
	if err != nil {
		t.Errorf("after scale-out: %v", err)
	}
	res.newPer = count(names)
	t.Logf("after scale-out: %d new connections answered by %v", len(names), res.newPer)

	// Back to one backend: be2 drains, then leaves the configuration.
	s.Opts.StreamStates = []string{"", "draining"}
	for i := range s.LBs {
		if err := s.ReloadLB(i, s.ConfigFor(i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * time.Second)
	if got, _ := s.Lab.VIPNextHops(ctx, vip); !sameSet(got, lbAddrs(s, vip)) {
		t.Errorf("be2 draining: route via %v, want the LB nodes (bypass waits for the drain)", got)
	}
	s.Opts.StreamStates = []string{"", "absent"}
	start = time.Now()
	res.toBackend, res.toBEAll = routeChange(t, s, vip, be1)
	if _, err := waitVIPVia(ctx, s, vip6, 5*time.Second, be1v6); err != nil {
		t.Error(err)
	}
	res.toBackend6 = time.Since(start)
	t.Logf("be2 removed: route via be1 %v after the first reload, via be1 only %v (IPv6 by %v)",
		res.toBackend.Round(time.Millisecond), res.toBEAll.Round(time.Millisecond), res.toBackend6.Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	phase(t, st, "bypass again", res.toBEAll)
	per, _ := brokenBy(st)
	res.brokenBE1 = per["be1"]
	// A stream whose packets are lost without a reset breaks only at its
	// 15 s answer timeout: count those that answered nothing for a second.
	snap := st.Snapshot()
	time.Sleep(time.Second)
	for i, r := range st.Snapshot() {
		if r.Err == nil && r.Sent == snap[i].Sent {
			res.stalled++
		}
	}
	before = vipPackets(t, s)
	names, err = s.Curl(ctx, vip, bypassRequests/4)
	if err != nil {
		t.Errorf("bypass again: %v", err)
	}
	if d := vipPackets(t, s) - before; d != 0 || count(names)["be1"] != bypassRequests/4 {
		t.Errorf("bypass again: answers %v, LB nodes forwarded %d packets of the VIP; want all from be1 and 0", count(names), d)
	}
	for i := range s.LBs {
		if b := vipStatus(t, s, i, "http4").Bypass; b == nil || b.State != control.BypassBypassed || b.Entered != 2 || b.Left != 1 {
			t.Errorf("lb%d: bypass %+v, want bypassed, entered 2, left 1", i+1, b)
		}
	}
	// The logs say why, each way (lb1; 2 VIPs).
	waitLogRe(t, s, `bypass: VIP announced with its backend as next hop; no flow state kept" vip=198\.18\.0\.10 next_hop=198\.18\.30\.101 why="one backend in service`, 2)
	waitLogRe(t, s, `bypass: VIP announced through the LB nodes again" vip=198\.18\.0\.10 was_next_hop=198\.18\.30\.101 why="http4 has 2 backends in service`, 1)
	if s.Opts.Cluster || s.Opts.SecondChance {
		waitLogRe(t, s, `bypass: backend fills: the flows begun during bypass keep their backend" vip=stream4 backend=198\.18\.30\.102`, 1)
	}
	// A bypass VIP whose backend the router cannot reach directly is
	// refused, with the field and why.
	out, err := s.Lab.LBs[0].Run(ctx, sluiceBin, "ctl", "vip", "add", "pet", "--address", "198.18.0.20", "--protocol", "tcp",
		"--port", "80", "--bypass", "single-backend", "--backend", "198.18.40.5")
	if err == nil || !strings.Contains(out, "198.18.40.5 is not on a subnet this node shares with its BGP peers") {
		t.Errorf("lb1: a bypass VIP with a backend off the peering subnet: %v\n%s", err, out)
	} else {
		t.Logf("lb1: refused as it should: %s", strings.TrimSpace(out))
	}
	if e, l := metric(t, s, `sluice_vip_bypass_transitions_total{address="198.18.0.10",direction="entered"}`),
		metric(t, s, `sluice_vip_bypass_transitions_total{address="198.18.0.10",direction="left"}`); e != 2 || l != 1 {
		t.Errorf("lb1 metrics: entered %v left %v, want 2 and 1", e, l)
	}
	return res
}

// TestE2ESingleBackendBypass: a VIP with one backend is announced with that
// backend as next hop, so 200 requests and 50 long-lived connections go
// straight to it and the LB nodes forward none of their packets. A second
// backend is added: the nodes announce the VIP themselves again and the new
// backend fills (the LB nodes are a cluster, affinity on-change): the 50
// connections, which no LB node ever saw, cross the nodes and none breaks
// (their mid-flow packets in the slots the new backend takes ask the owner
// chains, which commit the slots' previous owner, be1); new connections go
// to both. The second backend drains and is removed: bypass again, and no
// connection to be1 breaks. The control run is
// TestE2ESingleBackendBypassControlNoFill.
func TestE2ESingleBackendBypass(t *testing.T) {
	s := bypassLab(t, lifeCycleCluster, "bird")
	res := bypassRun(t, s)
	checkBypassRun(t, res)
}

// checkBypassRun requires what a bypass run with a backend life cycle
// must show.
func checkBypassRun(t *testing.T, res bypassResult) {
	t.Helper()
	if res.brokenScaleOut != 0 {
		t.Errorf("scale-out: %d of %d connections broke (%v), want 0", res.brokenScaleOut, bypassConns, res.brokenScaleOutPer)
	}
	if res.newPer["be1"] == 0 || res.newPer["be2"] == 0 {
		t.Errorf("after scale-out: new connections %v, want both backends", res.newPer)
	}
	if res.brokenBE1 != 0 || res.stalled != 0 {
		t.Errorf("%d connections to be1 broke and %d stalled, want 0", res.brokenBE1, res.stalled)
	}
	t.Logf("summary: config change to route change: to the LB nodes %v (first) / %v (all three; IPv6 %v); back to the backend %v / %v (IPv6 %v); broken at scale-out %d of %d; broken on be1 by the end %d, stalled %d; LB packets during bypass %d",
		res.toLB.Round(time.Millisecond), res.toLBAll.Round(time.Millisecond), res.toLB6.Round(time.Millisecond),
		res.toBackend.Round(time.Millisecond), res.toBEAll.Round(time.Millisecond), res.toBackend6.Round(time.Millisecond),
		res.brokenScaleOut, bypassConns, res.brokenBE1, res.stalled, res.lbPacketsDuringBypass)
}

// TestE2ESingleBackendBypassControlNoFill is the control run: the same
// schedule without a backend life cycle (no cluster, no second chance), so
// the second backend is active at once, without the filling change; the
// connections begun during bypass in the slots it takes reach it and
// break.
func TestE2ESingleBackendBypassControlNoFill(t *testing.T) {
	s := bypassLab(t, lifeCycleNone, "bird")
	res := bypassRun(t, s)
	t.Logf("control: %d of %d connections begun during bypass broke when be2 was added active at once (%v); route change to the LB nodes %v / %v, back %v / %v",
		res.brokenScaleOut, bypassConns, res.brokenScaleOutPer, res.toLB.Round(time.Millisecond), res.toLBAll.Round(time.Millisecond),
		res.toBackend.Round(time.Millisecond), res.toBEAll.Round(time.Millisecond))
	if res.brokenScaleOut == 0 {
		t.Errorf("control: no connection broke when be2 was added active at once; the test cannot tell the filling change from nothing")
	}
}

// TestE2ESingleBackendBypassSecondChance is TestE2ESingleBackendBypass
// without a cluster: stream4 has second chance, so while be2 fills, a
// mid-flow packet without an entry in a slot be2 takes goes to be2 with
// the hop list [be2, be1], and be2's agent, which does not own the
// connection, hands it to be1.
func TestE2ESingleBackendBypassSecondChance(t *testing.T) {
	s := bypassLab(t, lifeCycleSecondChance, "bird")
	res := bypassRun(t, s)
	forwarded, per := agentCounter(t, s, "second_hop_forwarded")
	t.Logf("agents forwarded %d packets to the next hop of their hop list (per backend %v)", forwarded, per)
	checkBypassRun(t, res)
	if forwarded == 0 {
		t.Errorf("no packet took second chance: the test did not exercise it")
	}
}

// TestE2ESingleBackendBypassFRR is TestE2ESingleBackendBypass with FRR
// (zebra, bfdd, bgpd) as the router instead of BIRD: FRR takes the
// backend as next hop of the eBGP route too.
func TestE2ESingleBackendBypassFRR(t *testing.T) {
	s := bypassLab(t, lifeCycleCluster, "frr")
	checkBypassRun(t, bypassRun(t, s))
}

// TestE2ESingleBackendBypassHealth: both backends are configured and every
// service has a VIP health check. be2's servers stop: be2 fails its checks
// on every service, so be1 is the VIP's one backend in service and the
// nodes announce it as next hop; 50 long-lived connections open, straight
// to be1. be2's servers come back: it passes its checks, the nodes take the
// route back and be2 fills (as if it had been added), so none of the 50
// breaks.
func TestE2ESingleBackendBypassHealth(t *testing.T) {
	o := scenario.Options{Backends: 2, StreamStates: []string{"", ""}, Bypass: true, Cluster: true,
		DrainPeriod: bypassDrain, Health: "{type: vip, interval: 200ms, timeout: 100ms, rise: 2, fall: 2}",
		IO: "afxdp", LBs: 3, BGP: true, BFD: true, Streams: true}
	s := start(t, o)
	ctx := t.Context()
	vip, vip6 := s.Opts.VIP4, s.Opts.VIP6
	be1, be2 := s.Lab.Backends[0], s.Lab.Backends[1]
	for _, v := range s.VIPs() {
		if _, err := waitVIPVia(ctx, s, v, 20*time.Second, lbAddrs(s, v)...); err != nil {
			t.Fatal(err)
		}
	}
	_, d := waitCluster(t, s, 20*time.Second, 3, 0, 1, 2)
	t.Logf("two backends in service: both VIPs via the LB nodes; cluster ready after %v", d.Round(time.Millisecond))

	// be2's servers stop.
	var stopped [][]string
	for _, p := range s.Servers {
		args := p.Cmd.Args
		i := slices.Index(args, sluiceBin)
		if i < 0 || !slices.Contains(args, "be2") {
			continue
		}
		stopped = append(stopped, slices.Clone(args[i+1:]))
		p.Stop()
	}
	if len(stopped) != 3 {
		t.Fatalf("stopped %d servers on be2, want 3 (http, udp, stream)", len(stopped))
	}
	start := time.Now()
	if _, err := waitVIPVia(ctx, s, vip, 10*time.Second, be1.Addr4); err != nil {
		t.Fatal(err)
	}
	down := time.Since(start)
	if _, err := waitVIPVia(ctx, s, vip6, 5*time.Second, be1.Addr6); err != nil {
		t.Fatal(err)
	}
	t.Logf("be2's servers stopped: route via be1 after %v (health checks: 2 failures 200 ms apart)", down.Round(time.Millisecond))
	b := vipStatus(t, s, 0, "stream4").Bypass
	if b == nil || b.State != control.BypassBypassed || !strings.Contains(b.Reason, "one backend in service") {
		t.Fatalf("lb1: stream4 bypass %+v", b)
	}
	before := vipPackets(t, s)
	names, err := s.Curl(ctx, vip, bypassRequests)
	if err != nil {
		t.Fatal(err)
	}
	st := openStreams(t, s, bypassConns, 15*time.Second)
	time.Sleep(time.Second)
	lbPackets := vipPackets(t, s) - before
	t.Logf("bypass: %d requests answered by %v; the LB nodes sent %d packets of the VIPs meanwhile", len(names), count(names), lbPackets)
	if lbPackets != 0 || count(names)["be1"] != bypassRequests {
		t.Errorf("bypass: answers %v, LB packets %d; want all from be1 and 0", count(names), lbPackets)
	}

	// be2's servers come back.
	start = time.Now()
	for _, args := range stopped {
		p, err := be2.Start(ctx, sluiceBin, args...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Stop() })
	}
	if _, err := waitVIPVia(ctx, s, vip, 10*time.Second, lbAddrs(s, vip)...); err != nil {
		t.Fatal(err)
	}
	up := time.Since(start)
	t.Logf("be2's servers back: route via the LB nodes after %v (health checks: 2 successes 200 ms apart)", up.Round(time.Millisecond))
	// Each node's check of each service passes on its own: be2 fills on
	// every service as it comes back, also after the first ended bypass.
	for i := range s.LBs {
		deadline := time.Now().Add(5 * time.Second)
		for {
			states := map[string]string{}
			for _, b := range vipStatus(t, s, i, "stream4").Backends {
				states[b.Address] = b.State
			}
			if states[be2.Addr4.String()] == control.StateFilling {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("lb%d: stream4 backends %v, want be2 filling", i+1, states)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(3 * time.Second)
	per, broken := brokenBy(st)
	phase(t, st, "be2 healthy again", up)
	logClusterCounters(t, s, "be2 healthy again", 0, 1, 2)
	names, err = s.Curl(ctx, vip, bypassRequests)
	if err != nil {
		t.Error(err)
	}
	snap, stalled := st.Snapshot(), 0
	time.Sleep(time.Second)
	for i, r := range st.Snapshot() {
		if r.Err == nil && r.Sent == snap[i].Sent {
			stalled++
		}
	}
	t.Logf("summary: be2 down -> route via be1 %v; be2 up -> route via the LB nodes %v; %d of %d connections begun during bypass broke (%v), %d stalled; new connections %v",
		down.Round(time.Millisecond), up.Round(time.Millisecond), broken, bypassConns, per, stalled, count(names))
	if broken != 0 || stalled != 0 {
		t.Errorf("%d of %d connections broke and %d stalled when be2 came back, want 0", broken, bypassConns, stalled)
	}
	if c := count(names); c["be1"] == 0 || c["be2"] == 0 {
		t.Errorf("new connections %v, want both backends", c)
	}
}
