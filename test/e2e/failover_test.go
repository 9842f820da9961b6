package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/scenario"
)

const (
	failoverConns    = 300
	failoverInterval = 100 * time.Millisecond // between messages on one connection
)

// bgpLab starts the scenario o with three LB nodes (afxdp) announcing the
// VIPs over BGP (with BFD) to the router (BIRD, or o.Router) and stream
// servers on the backends, and waits until the router spreads both VIPs
// over all three nodes.
func bgpLab(t *testing.T, o scenario.Options) *scenario.Scenario {
	t.Helper()
	o.IO, o.LBs, o.BGP, o.BFD, o.Streams = "afxdp", 3, true, true, true
	s := start(t, o)
	for _, vip := range s.VIPs() {
		if d, err := s.WaitNextHops(t.Context(), vip, 20*time.Second, 0, 1, 2); err != nil {
			out, _ := s.RouterSessions(t.Context())
			t.Fatalf("%v\nrouter (%s):\n%s", err, s.Opts.Router, out)
		} else {
			t.Logf("router: %v via 3 LB nodes after %v", vip, d.Round(time.Millisecond))
		}
	}
	return s
}

// newConns makes a new HTTP connection through the VIP every 50 ms until
// stopped, and counts those that fail.
type newConns struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startNewConns(s *scenario.Scenario) *newConns {
	n := &newConns{stop: make(chan struct{})}
	dst := netip.AddrPortFrom(s.Opts.VIP4, scenario.HTTPPort).String()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-n.stop:
				return
			case <-t.C:
			}
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				err := s.Lab.Client.Do(func() error {
					c, err := net.DialTimeout("tcp", dst, 5*time.Second)
					if err != nil {
						return err
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
						return err
					}
					buf := make([]byte, 512)
					_, err = c.Read(buf)
					return err
				})
				if err != nil {
					n.failed.Add(1)
					n.firstErr.CompareAndSwap(nil, err.Error())
				} else {
					n.ok.Add(1)
				}
			}()
		}
	}()
	return n
}

func (n *newConns) Stop() (ok, failed int64, first any) {
	close(n.stop)
	n.wg.Wait()
	return n.ok.Load(), n.failed.Load(), n.firstErr.Load()
}

// phase reports the streams' state since the last phase and resets the gaps.
func phase(t *testing.T, st *lab.Streams, name string, converge time.Duration) (broken int, gap time.Duration) {
	t.Helper()
	for _, r := range st.Snapshot() {
		if r.Err != nil {
			broken++
		}
		gap = max(gap, r.MaxGap)
	}
	st.ResetGaps()
	t.Logf("%-28s route converged in %-8v longest stream gap %-8v broken so far %d",
		name, converge.Round(time.Millisecond), gap.Round(time.Millisecond), broken)
	return broken, gap
}

// Three LB nodes behind BIRD (ECMP, BFD) carry 300 long-lived streams, each
// exchanging a sequence-checked message both ways every 100 ms. One node is
// killed (and restarted), another frozen (and thawed), the third drained
// (and returned): the router moves their flows to the others, which pick
// the same backend, so no connection breaks; new connections keep working.
func TestE2EFailover(t *testing.T) {
	failover(t, bgpLab(t, scenario.Options{}))
}

// failoverResult is what failover measured.
type failoverResult struct {
	killed, frozen time.Duration // until the router withdrew the node
	broken         int           // streams broken over the whole run
	newFailed      int64         // new connections that failed
}

// failover runs the phases of TestE2EFailover on a bgpLab and fails the
// test unless every stream survives.
func failover(t *testing.T, s *scenario.Scenario) failoverResult {
	var res failoverResult
	ctx := t.Context()
	checkFingerprints(t, s)
	st := openStreams(t, s, failoverConns, 15*time.Second)
	nc := startNewConns(s)
	vip := s.Opts.VIP4
	time.Sleep(time.Second)
	phase(t, st, "steady state", 0)

	// converge waits until the router's route to the VIP goes through lbs,
	// lets the streams run for 2 s, and reports the phase.
	converge := func(name string, timeout time.Duration, lbs ...int) (broken int, took time.Duration) {
		t.Helper()
		took, err := s.WaitNextHops(ctx, vip, timeout, lbs...)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		broken, _ = phase(t, st, name, took)
		return broken, took
	}
	ctlNode := func(verb string) {
		t.Helper()
		if out, err := s.Lab.LBs[2].Run(ctx, sluiceBin, "ctl", "node", verb); err != nil {
			t.Fatalf("node %s: %v\n%s", verb, err, out)
		}
	}

	// (a) SIGKILL LB 1: the kernel closes its BGP session at once.
	if err := s.Signal(0, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, res.killed = converge("(a) lb1 killed", 5*time.Second, 1, 2)
	if err := s.RestartLB(ctx, 0, s.Opts.IO); err != nil {
		t.Fatal(err)
	}
	converge("(a') lb1 restarted", 20*time.Second, 0, 1, 2)

	// (b) SIGSTOP LB 2: only BFD notices (100 ms x 3).
	if err := s.Signal(1, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Signal(1, syscall.SIGCONT) }) // if the test stops while it is frozen
	if _, res.frozen = converge("(b) lb2 frozen", 5*time.Second, 0, 2); res.frozen > 2*time.Second {
		// BFD takes about 0.3 s; the BGP hold timer (9 s) would mean BFD
		// did not work. The bound is loose: the machine is shared.
		t.Errorf("withdraw of a frozen node took %v; BFD (100 ms x 3) should take about 0.3 s", res.frozen)
	}
	if err := s.Signal(1, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	converge("(b') lb2 thawed", 30*time.Second, 0, 1, 2)

	// (c) Drain LB 3, then return it.
	ctlNode("drain")
	converge("(c) lb3 drained", 5*time.Second, 0, 1)
	ctlNode("undrain")
	broken, _ := converge("(c') lb3 undrained", 10*time.Second, 0, 1, 2)

	ok, failed, first := nc.Stop()
	t.Logf("new connections during the run: %d ok, %d failed (first error: %v)", ok, failed, first)
	results := st.Stop()
	var msgs uint64
	for i, r := range results {
		msgs += r.Sent
		if r.Err != nil && broken < 5 {
			t.Logf("stream %d (%s): %v", i, r.Backend, r.Err)
		}
	}
	t.Logf("%d streams, %d messages answered, %d broken", len(results), msgs, broken)
	if broken != 0 {
		t.Errorf("%d of %d connections broke", broken, len(results))
	}
	if failed != 0 {
		t.Errorf("%d new connections failed (first: %v)", failed, first)
	}
	checkFingerprints(t, s)
	res.broken, res.newFailed = broken, failed
	return res
}

// The control run: the same three nodes with a different hash seed each, so
// that they do not agree on the backend of a flow. Killing one node moves
// its flows to nodes that send them elsewhere: connections break. This is
// what proves TestE2EFailover can fail.
func TestE2EFailoverControlDisagreeingNodes(t *testing.T) {
	s := bgpLab(t, scenario.Options{Seeds: []uint64{1, 2, 3}})
	fps := fingerprints(t, s)
	if fps[0]["stream4"] == fps[1]["stream4"] {
		t.Fatalf("nodes with different seeds show the same table fingerprint %s", fps[0]["stream4"])
	}
	st := openStreams(t, s, failoverConns, 15*time.Second)
	time.Sleep(time.Second)
	if err := s.Signal(0, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d, err := s.WaitNextHops(t.Context(), s.Opts.VIP4, 5*time.Second, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	broken, gap := phase(t, st, "lb1 killed (seeds differ)", d)
	t.Logf("control run: %d of %d connections broke (longest gap %v)", broken, failoverConns, gap.Round(time.Millisecond))
	if broken == 0 {
		t.Fatal("no connection broke although the nodes disagree: the failover test could not fail")
	}
}

// fingerprints returns each LB node's table fingerprint per VIP.
func fingerprints(t *testing.T, s *scenario.Scenario) []map[string]string {
	t.Helper()
	var out []map[string]string
	for i, lb := range s.Lab.LBs {
		j, err := lb.Run(t.Context(), sluiceBin, "ctl", "vip", "list", "-o", "json")
		if err != nil {
			t.Fatalf("lb%d: vip list: %v\n%s", i+1, err, j)
		}
		var vips []control.VIPStatus
		if err := json.Unmarshal([]byte(j), &vips); err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, v := range vips {
			m[v.Name] = v.Fingerprint
		}
		out = append(out, m)
	}
	return out
}

// checkFingerprints fails unless every node shows the same table
// fingerprints.
func checkFingerprints(t *testing.T, s *scenario.Scenario) {
	t.Helper()
	fps := fingerprints(t, s)
	for i := 1; i < len(fps); i++ {
		for vip, fp := range fps[0] {
			if fps[i][vip] != fp {
				t.Errorf("vip %s: lb1 table %s, lb%d %s", vip, fp, i+1, fps[i][vip])
			}
		}
	}
	if !t.Failed() {
		t.Logf("all %d nodes agree: stream4 table %s", len(fps), fps[0]["stream4"])
	}
}
