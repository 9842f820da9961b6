package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/scenario"
)

// The L2 failover benchmark (bench/l2/run.sh; SLUICE_BENCH_L2=1, else it
// skips): the same lab and kill as TestE2EL2Failover, IPv4 only, with the
// VIP owned either by Sluice's L2 mode or by keepalived's VRRP (each LB
// node runs keepalived beside `sluice lb`, which forwards what reaches it;
// keepalived puts the VIP on the master's eth0, so its kernel answers ARP).
// The owner node dies (its processes SIGKILLed, the VIP gone from its
// interface, as with a crashed host); measured: from the kill to the
// first packet the new owner forwards, the streams' longest gap and
// connections broken.
func TestE2EL2BenchFailover(t *testing.T) {
	if os.Getenv("SLUICE_BENCH_L2") == "" {
		t.Skip("benchmark: set SLUICE_BENCH_L2=1 (bench/l2/run.sh)")
	}
	for _, v := range []struct {
		name   string
		advert string // keepalived advert_int; "" for Sluice
	}{{"sluice-l2", ""}, {"keepalived-default", "1"}, {"keepalived-tuned", "0.1"}} {
		t.Run(v.name, func(t *testing.T) {
			r := l2Bench(t, v.advert)
			t.Logf("BENCH l2 %-20s kill -> first forwarded packet %8v  longest stream gap %8v  broken %d of %d",
				v.name, r.first.Round(time.Millisecond), r.gap.Round(time.Millisecond), r.broken, l2Conns)
		})
	}
}

func l2Bench(t *testing.T, advert string) l2KillResult {
	vip := netip.MustParseAddr("198.18.0.10")
	var s *scenario.Scenario
	var kas []*lab.Process
	owner := 2 // keepalived: lb3 has the highest priority
	if advert == "" {
		s = l2Lab(t, "")
		owner = ownerOf(t, s, 0, 1, 2)
	} else {
		o := scenario.Options{IO: "afxdp", LBs: 3, Streams: true, OnLink: true, VIP4: vip, NoWaitReady: true}
		s = start(t, o)
		dir := t.TempDir()
		version := "" // keepalived's default: VRRPv2, whole seconds
		if advert != "1" {
			version = "\n  vrrp_version 3" // sub-second adverts
		}
		for i, n := range s.Lab.LBs {
			prio := 100 + 10*i
			cfg := fmt.Sprintf(`global_defs {
  router_id %s%s
}
vrrp_instance VIP4 {
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority %d
  advert_int %s
  virtual_ipaddress {
    %s/32 dev eth0
  }
}
`, n.Name, version, prio, advert, vip)
			path := filepath.Join(dir, n.Name+".conf")
			if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			p, err := n.Start(t.Context(), "keepalived", "-n", "-l", "-D", "--vrrp", "-f", path,
				"-p", filepath.Join(dir, n.Name+".pid"), "-r", filepath.Join(dir, n.Name+"-vrrp.pid"))
			if err != nil {
				t.Fatal(err)
			}
			kas = append(kas, p)
			t.Cleanup(func() {
				p.Stop()
				if t.Failed() {
					t.Logf("keepalived %s:\n%s", n.Name, p.Output())
				}
			})
		}
		// The router reaches the VIP through the master once it holds it.
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, _ := s.Lab.LBs[owner].Run(t.Context(), "ip", "-o", "addr", "show", "dev", "eth0")
			if slices.Contains(strings.Fields(out), vip.String()+"/32") && curlOK(s, vip) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("lb%d did not become keepalived's master: %s", owner+1, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, k := range []string{"ipv4"} {
		for _, kv := range []string{fmt.Sprintf("net.%s.neigh.svc.base_reachable_time_ms=%d", k, l2ReachableMs),
			fmt.Sprintf("net.%s.neigh.svc.delay_first_probe_time=%d", k, l2DelayProbe)} {
			s.Lab.Router.Run(t.Context(), "sysctl", "-qw", kv)
		}
	}
	s.Lab.Router.Run(t.Context(), "ip", "-4", "neigh", "flush", "dev", "svc")
	st := l2Streams4(t, s, vip)
	time.Sleep(time.Second)

	var rest []int
	for i := range 3 {
		if i != owner {
			rest = append(rest, i)
		}
	}
	phase(t, st, "steady state", 0)
	probeUDP(t, s, vip)
	time.Sleep(100 * time.Millisecond)
	poll := firstForward(t, s, 15*time.Second, rest...)
	// The node dies: every process of its (keepalived and the LB, each a
	// process group) and the VIP keepalived put on its interface. The VIP
	// goes before the LB: a kernel holding the VIP without the LB in
	// front would reset the connections, which a dead host does not.
	if advert != "" {
		syscall.Kill(-kas[owner].Pid(), syscall.SIGKILL) // keepalived and its VRRP child: the group we started
		s.Lab.LBs[owner].Run(context.Background(), "ip", "addr", "del", vip.String()+"/32", "dev", "eth0")
	}
	oldMAC, _ := routerNeighbour(s, vip)
	moved := make(chan time.Time, 1) // when the router's entry for the VIP left the dead node's MAC
	go func() {
		end := time.Now().Add(15 * time.Second)
		for time.Now().Before(end) {
			if m, _ := routerNeighbour(s, vip); m != "" && m != oldMAC {
				moved <- time.Now()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		moved <- time.Time{}
	}()
	killed := time.Now()
	if err := syscall.Kill(-s.LBs[owner].Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := l2KillResult{owner: owner, next: -1}
	for k, f := range poll() {
		if !f.IsZero() && (r.first == 0 || f.Sub(killed) < r.first) {
			r.first, r.next = f.Sub(killed), rest[k]
		}
	}
	if m := <-moved; !m.IsZero() {
		t.Logf("the router's entry for %v moved off the dead node's MAC %v after the kill", vip, m.Sub(killed).Round(time.Millisecond))
	}
	time.Sleep(2 * time.Second)
	r.broken, r.gap = phase(t, st, "owner killed", 0)
	for i, res := range st.Stop() {
		if res.Err != nil {
			t.Logf("stream %d broke: %v (and %d others)", i, res.Err, r.broken-1)
			break
		}
	}
	return r
}

// l2Streams4 opens l2Conns long-lived connections to vip.
func l2Streams4(t *testing.T, s *scenario.Scenario, vip netip.Addr) *lab.Streams {
	t.Helper()
	dial := func(ctx context.Context) (net.Conn, error) {
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
	return st
}

// curlOK reports whether the client gets an HTTP answer through vip.
func curlOK(s *scenario.Scenario, vip netip.Addr) bool {
	_, err := s.Curl(context.Background(), vip, 1)
	return err == nil
}
