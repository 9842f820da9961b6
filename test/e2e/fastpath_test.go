package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/fastpath"
	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/scenario"
)

const fastpathConns = 50

// clientAgentMetrics returns the client agent's /metrics series (name with
// labels -> value).
func clientAgentMetrics(t *testing.T, s *scenario.Scenario) map[string]float64 {
	t.Helper()
	out, err := s.Lab.Client.Run(context.Background(), "curl", "-sS", "--max-time", "3", "http://"+scenario.ClientAgentMetricsAddr+"/metrics")
	if err != nil {
		t.Fatalf("client agent metrics: %v\n%s", err, out)
	}
	m := map[string]float64{}
	for _, l := range regexp.MustCompile(`(?m)^(sluice_agent_fastpath_\S+) (\S+)$`).FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(l[2], 64)
		m[l[1]] = v
	}
	return m
}

// sumMetric adds the series of m whose name (with labels) starts with
// prefix and contains every one of has.
func sumMetric(m map[string]float64, prefix string, has ...string) float64 {
	var sum float64
next:
	for k, v := range m {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		for _, h := range has {
			if !strings.Contains(k, h) {
				continue next
			}
		}
		sum += v
	}
	return sum
}

// lbPackets returns the VIP packets the LB nodes received, summed.
func lbPackets(t *testing.T, s *scenario.Scenario) uint64 {
	t.Helper()
	var n uint64
	for i := range s.LBs {
		n += lbStats(t, s, i).RxPackets
	}
	return n
}

// fastpathActive returns the redirects the LB nodes hold installed.
func fastpathActive(t *testing.T, s *scenario.Scenario) (active uint64) {
	t.Helper()
	for i := range s.LBs {
		st, err := admin(s, i).Fastpath(context.Background(), 1)
		if err != nil {
			t.Fatalf("lb%d fastpath: %v", i+1, err)
		}
		active += st.Counters.Active
	}
	return active
}

// perConn measures the LB nodes' VIP packets per stream over d.
func perConn(t *testing.T, s *scenario.Scenario, d time.Duration) float64 {
	t.Helper()
	a := lbPackets(t, s)
	time.Sleep(d)
	b := lbPackets(t, s)
	return float64(b-a) / fastpathConns
}

// TestE2EFastpath: the client host runs `sluice agent --fastpath`. 50
// long-lived connections through three LB nodes are redirected once
// established: the LB nodes then see fewer than 10 packets per connection
// while every connection keeps exchanging a message each way every 100 ms;
// SIGKILLing every LB node breaks none of them for 10 s, while new
// connections fail. The control run without fastpath: the LB nodes see
// every packet, and killing them breaks all 50.
func TestE2EFastpath(t *testing.T) {
	for _, on := range []bool{true, false} {
		name := "fastpath"
		if !on {
			name = "control"
		}
		t.Run(name, func(t *testing.T) {
			s := start(t, scenario.Options{LBs: 3, Backends: 3, Streams: true, Fastpath: on, AgentMetrics: true})
			st := openStreams(t, s, fastpathConns, 5*time.Second)
			time.Sleep(2 * time.Second) // redirects acknowledged
			active := fastpathActive(t, s)
			per := perConn(t, s, 5*time.Second)
			t.Logf("redirects installed %d; LB packets per connection in 5 s: %.1f", active, per)
			if on {
				m := clientAgentMetrics(t, s)
				t.Logf("client agent: %v", m)
				// The LB nodes also hold the redirects of WaitReady's
				// closed connections until they idle out, and the client's
				// map holds a closed connection whose redirect arrived after
				// its FIN until it idles out.
				if active < fastpathConns || m["sluice_agent_fastpath_flows"] < fastpathConns {
					t.Errorf("%d redirects installed on the LB nodes, %v flows in the client's map; want %d",
						active, m["sluice_agent_fastpath_flows"], fastpathConns)
				}
				if per >= 10 {
					t.Errorf("%.1f packets per connection reached the LB nodes in 5 s, want fewer than 10", per)
				}
			} else if per < 50 {
				t.Errorf("control: %.1f packets per connection reached the LB nodes in 5 s: the streams are not running", per)
			}
			backends := map[int]string{}
			for i, r := range st.Snapshot() {
				if r.Err != nil {
					t.Fatalf("stream %d broke before the kill: %v", i, r.Err)
				}
				backends[i] = r.Backend
			}

			// SIGKILL every LB node.
			for i, p := range s.LBs {
				if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatalf("kill lb%d: %v", i+1, err)
				}
			}
			before := make([]uint64, fastpathConns)
			for i, r := range st.Snapshot() {
				before[i] = r.Sent
			}
			time.Sleep(10 * time.Second)
			broken, moved, stalled := 0, 0, 0
			for i, r := range st.Snapshot() {
				switch {
				case r.Err != nil:
					broken++
				case r.Backend != backends[i]:
					moved++
				case r.Sent < before[i]+50: // 100 messages in 10 s
					stalled++
				}
			}
			newOK := curlOK(s, s.Opts.VIP4)
			t.Logf("10 s after killing every LB node: %d of %d connections broken, %d moved, %d stalled; a new connection %s",
				broken, fastpathConns, moved, stalled, map[bool]string{true: "works", false: "fails"}[newOK])
			if newOK {
				t.Error("a new connection works with every LB node dead")
			}
			if on && broken+moved+stalled > 0 {
				t.Errorf("fastpath: %d broken, %d moved, %d stalled after the LB tier died; want 0", broken, moved, stalled)
			}
			if !on && broken != fastpathConns {
				t.Errorf("control: %d of %d connections broken after the LB tier died, want all", broken, fastpathConns)
			}
		})
	}
}

// TestE2EFastpathDrain: a backend drained while its connections go
// straight to it: the LB node cancels their redirects, their packets come
// back to it, and they keep their backend (none breaks). Forged redirects,
// with the wrong key or from outside the LB prefixes, are refused and
// counted, and change nothing.
func TestE2EFastpathDrain(t *testing.T) {
	s := start(t, scenario.Options{LBs: 1, Backends: 3, Streams: true, Fastpath: true, SecondChance: true, AgentMetrics: true})
	st := openStreams(t, s, fastpathConns, 5*time.Second)
	time.Sleep(2 * time.Second)
	if a := fastpathActive(t, s); a < fastpathConns {
		t.Fatalf("%d redirects installed, want %d", a, fastpathConns)
	}
	backends := map[int]string{}
	onBE1 := 0
	for i, r := range st.Snapshot() {
		backends[i] = r.Backend
		if r.Backend == "be1" {
			onBE1++
		}
	}
	if onBE1 == 0 {
		t.Fatal("no stream on be1")
	}

	// Forged redirects for stream 0's flow (its client port is unknown
	// here, so any flow of the client: the agent must refuse before it
	// looks at the flow).
	forged := fastpath.Message{Type: fastpath.Redirect, ID: 1, TimeMs: uint64(time.Now().UnixMilli()), Count: 1}
	forged.Entries[0] = fastpath.Entry{
		Flow:    fastpath.Flow{Proto: 6, Client: netip.AddrPortFrom(s.Lab.Client.Addr4, 40000), VIP: netip.AddrPortFrom(s.Opts.VIP4, scenario.StreamPort)},
		Backend: s.Lab.Backends[1].Addr4, Port: 6080, SrcPort: 1234,
	}
	agent := net.UDPAddrFromAddrPort(netip.AddrPortFrom(s.Lab.Client.Addr4, 6080))
	send := func(n *lab.Node, key string) {
		t.Helper()
		b, err := fastpath.NewCodec(fastpath.Key([]byte(key))).Seal(nil, &forged)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Do(func() error {
			c, err := net.DialUDP("udp4", nil, agent)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(b)
			return err
		}); err != nil {
			t.Fatalf("forged redirect from %s: %v", n.Name, err)
		}
	}
	m0 := clientAgentMetrics(t, s)
	send(s.Lab.LBs[0], "the-wrong-key-0123456789") // an LB address, the wrong key
	send(s.Lab.Router, scenario.FastpathKey)       // the right key from outside the LB prefixes
	time.Sleep(500 * time.Millisecond)
	m1 := clientAgentMetrics(t, s)
	auth := sumMetric(m1, "sluice_agent_fastpath", "auth") - sumMetric(m0, "sluice_agent_fastpath", "auth")
	untrusted := sumMetric(m1, "sluice_agent_fastpath", "source") - sumMetric(m0, "sluice_agent_fastpath", "source")
	installed := sumMetric(m1, "sluice_agent_fastpath_redirects", "installed") - sumMetric(m0, "sluice_agent_fastpath_redirects", "installed")
	t.Logf("forged redirects: counted bad auth %v, untrusted source %v; installed %v", auth, untrusted, installed)
	if auth != 1 || untrusted != 1 || installed != 0 {
		t.Errorf("forged redirects: bad auth %v, untrusted source %v, installed %v; want 1, 1, 0", auth, untrusted, installed)
	}

	// Drain be1.
	p1 := perConn(t, s, 3*time.Second)
	gen := lbStats(t, s, 0).DatapathGeneration
	s.Opts.StreamStates = []string{"draining", "", ""}
	reload(t, s, gen)
	time.Sleep(time.Second)
	fp, err := admin(s, 0).Fastpath(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	p2 := perConn(t, s, 3*time.Second)
	t.Logf("drain be1 (%d streams): cancelled %d, acked %d; redirects left %d; LB packets per connection in 3 s: %.1f before, %.1f after",
		onBE1, fp.Counters.Cancelled, fp.Counters.CancelAcked, fp.Counters.Active, p1, p2)
	if int(fp.Counters.Cancelled) < onBE1 || fp.Counters.CancelAcked != fp.Counters.Cancelled {
		t.Errorf("cancelled %d, acked %d; want %d (the streams on be1)", fp.Counters.Cancelled, fp.Counters.CancelAcked, onBE1)
	}
	// The client's map holds the other streams, and may hold a closed
	// WaitReady connection whose redirect came after its FIN; never more
	// than the redirects the LB node still holds (be1's are cancelled).
	if m := clientAgentMetrics(t, s); int(m["sluice_agent_fastpath_flows"]) < fastpathConns-onBE1 ||
		uint64(m["sluice_agent_fastpath_flows"]) > fp.Counters.Active {
		t.Errorf("%v flows left in the client's map, want from %d to %d", m["sluice_agent_fastpath_flows"],
			fastpathConns-onBE1, fp.Counters.Active)
	}
	// be1's streams send ~20 packets a second each through the LB again.
	if min := float64(onBE1) * 30 / fastpathConns; p2 < min {
		t.Errorf("%.1f packets per connection after the drain, want at least %.1f (be1's streams back on the LB path)", p2, min)
	}
	time.Sleep(3 * time.Second)
	for i, r := range st.Snapshot() {
		if r.Err != nil {
			t.Errorf("stream %d (%s) broke: %v", i, backends[i], r.Err)
		} else if r.Backend != backends[i] {
			t.Errorf("stream %d moved from %s to %s", i, backends[i], r.Backend)
		}
	}
	if t.Failed() {
		fmt.Println(s.ClientAgent.Output())
	}
}
