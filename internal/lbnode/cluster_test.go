package lbnode

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/config"
)

func clusterDoc(bind string, peers ...string) string {
	ps := ""
	for _, p := range peers {
		ps += p + ", "
	}
	return fmt.Sprintf(`
node:
  interfaces: [eth0]
  seed: 7
  cluster: {bind: %q, peers: [%s], key: 0123456789abcdef, shards: 256}
vips:
  - {name: web, address: 198.18.0.10, protocol: tcp, port: 80, backends: [{address: 198.18.30.101}]}
  - {name: dns, address: 198.18.0.11, protocol: udp, port: 53, backends: [{address: 198.18.30.102}]}
`, bind, ps)
}

func TestClusterSetup(t *testing.T) {
	cfg := mustParse(t, clusterDoc("127.0.0.1:7946", "127.0.0.2:7946", "127.0.0.3:8000"))
	s, err := ClusterSetup(&cfg.Node, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Bind.String() != "127.0.0.1:7946" || s.GossipBind.String() != "127.0.0.1:7947" || s.Seed != 7 || s.Shards != 256 || s.Replicas != 2 {
		t.Errorf("setup %+v", s)
	}
	if len(s.Peers) != 2 || s.Peers[0] != "127.0.0.2:7947" || s.Peers[1] != "127.0.0.3:8001" {
		t.Errorf("peers (memberlist addresses) %v", s.Peers)
	}
	alone := mustParse(t, "node: {interfaces: [eth0]}\nvips: [{name: web, address: 198.18.0.10, protocol: tcp, port: 80, backends: [{address: 198.18.30.101}]}]\n")
	if s, err := ClusterSetup(&alone.Node, nil); s != nil || err != nil {
		t.Errorf("without node.cluster: %v %v", s, err)
	}
	n := testNode(t, alone, nil)
	if _, ok := n.ClusterStatus(); ok {
		t.Error("a node without node.cluster reports a cluster")
	}
}

// clusterNode is a testNode with the cluster member of cfg started.
func clusterNode(t *testing.T, cfg *config.Config) *Node {
	t.Helper()
	n := testNode(t, cfg, nil)
	s, err := ClusterSetup(&cfg.Node, nil)
	if err != nil {
		t.Fatal(err)
	}
	n.clSetup = s
	if derr := n.do(context.Background(), func() { err = n.startCluster() }); derr != nil || err != nil {
		t.Fatal(derr, err)
	}
	t.Cleanup(func() { n.do(context.Background(), n.stopCluster) })
	return n
}

// Two nodes form a cluster; the drained one leaves (the other sees it at
// once) and rejoins when it returns to service.
func TestClusterDrainLeavesAndRejoins(t *testing.T) {
	if testing.Short() {
		t.Skip("memberlist timers")
	}
	port := 20000 + 2*rand.IntN(15000)
	a := fmt.Sprintf("127.0.0.1:%d", port)
	b := fmt.Sprintf("127.0.0.1:%d", port+10)
	na := clusterNode(t, mustParse(t, clusterDoc(a, b)))
	nb := clusterNode(t, mustParse(t, clusterDoc(b, a)))
	wait := func(what string, f func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !f() {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	members := func(n *Node) int {
		st, ok := n.ClusterStatus()
		if !ok || !st.Running {
			return -1
		}
		return len(st.Report.Members)
	}
	wait("two members", func() bool { return members(na) == 2 && members(nb) == 2 })
	st, _ := na.ClusterStatus()
	if !st.Report.Ready || st.Report.Heads+st.Report.Middles+st.Report.Tails == 0 || st.Services[config.ServiceID("web")] != "web" || len(st.Configured) != 2 {
		t.Errorf("status %+v", st)
	}
	nb.SetDraining(true)
	if st, ok := nb.ClusterStatus(); !ok || st.Running {
		t.Errorf("drained node: ok %v running %v", ok, st.Running)
	}
	start := time.Now()
	wait("leave seen", func() bool { return members(na) == 1 })
	if d := time.Since(start); d > time.Second {
		t.Errorf("a graceful leave took %v to be seen", d)
	}
	nb.SetDraining(false)
	wait("rejoined", func() bool {
		st, _ := nb.ClusterStatus()
		return members(na) == 2 && members(nb) == 2 && st.Report.Ready
	})
}
