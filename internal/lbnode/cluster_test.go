package lbnode

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/cluster"
	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/health"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
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

// The publish path: new flows of an affinity-always VIP go from the worker's
// publish queue, through the node's publisher, to the head of their owner
// chain, and every chain member holds them (here three members over the
// in-memory transport, R = 2: the third member must not).
func TestPublishAlwaysReachesTheChain(t *testing.T) {
	cfg := mustParse(t, clusterDoc("10.0.0.1:7946")+`
  - {name: always, address: 198.18.0.12, protocol: tcp, port: 80, affinity: always,
     backends: [{address: 198.18.30.101}, {address: 198.18.30.102}, {address: 198.18.30.103}]}
`)
	const seed, shards, replicas = 7, 256, 2
	l := mem.New(mem.Config{})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{l}, FlowCapacity: 1024, PublishQueue: 64})
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{log: slog.New(slog.DiscardHandler), dp: dp,
		ops: make(chan op), quit: make(chan struct{}), stopped: make(chan struct{}),
		st: state{cfg: cfg, builder: pipeline.NewBuilder(), hops: map[netip.Addr]string{},
			checkKeys: map[string]bool{}, transitions: map[string]*[numStates]uint64{}}}
	if n.clSetup, err = ClusterSetup(&cfg.Node, nil); err != nil {
		t.Fatal(err)
	}
	n.checks = health.NewChecker(n.healthChanged)
	n.setChecks()
	if err := n.rebuild(context.Background()); err != nil {
		t.Fatal(err)
	}
	svcs := dp.Generation().Services
	if svcs[2].Chain != pipeline.ChainAlways || svcs[0].Chain == pipeline.ChainAlways || svcs[2].ClusterID != config.ServiceID("always") {
		t.Fatalf("chain use %v %v, id %#x", svcs[0].Chain, svcs[2].Chain, svcs[2].ClusterID)
	}

	// Three cluster members over the in-memory transport.
	auth, _ := cluster.Keys([]byte(cfg.Node.Cluster.Key))
	network, members := cluster.NewMemNetwork(1024), cluster.NewMemMembership()
	ctx, cancel := context.WithCancel(context.Background())
	var nodes []*cluster.Node
	var addrs []netip.AddrPort
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i := 1; i <= 3; i++ {
		addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 7946)
		tr, _ := network.Listen(addr)
		cn, err := cluster.New(cluster.Config{Transport: tr, Membership: members.Join(addr), AuthKey: auth, Seed: seed, Replicas: replicas, Shards: shards, Capacity: 1024})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); cn.Run(ctx) }()
		nodes, addrs = append(nodes, cn), append(addrs, addr)
	}
	for _, cn := range nodes {
		for !cn.Ready() || cn.Stats().Members != 3 {
			time.Sleep(time.Millisecond)
		}
	}

	// Without a running member the records are counted as rejected.
	vip := netip.MustParseAddrPort("198.18.0.12:80")
	clients := sim.Clients{Prefix: netip.MustParsePrefix("198.18.128.0/17")}
	send := func(from, to uint32) {
		for i := from; i < to; i++ {
			f := sim.Frame{Src: clients.FlowSrc(i), Dst: vip, Proto: 6, TCPFlags: sim.SYN}
			b := make([]byte, f.Len())
			f.Encode(b)
			l.Inject(b)
			if _, err := dp.Workers()[0].Poll(); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := n.newPublisher()
	send(0, 5)
	p.step(time.Now())
	if sub, _, _, rej, drop := n.publishCounts(); sub != 0 || rej != 5 || drop != 0 {
		t.Fatalf("without a member: submitted %d rejected %d dropped %d", sub, rej, drop)
	}

	n.clNode.Store(nodes[0])
	const flows = 40
	send(100, 100+flows)
	p.step(time.Now())
	if sub, _, _, _, _ := n.publishCounts(); sub != flows {
		t.Fatalf("submitted %d of %d new flows", sub, flows)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		p.step(time.Now())
		if _, com, failed, _, _ := n.publishCounts(); com == flows && failed == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("committed %d of %d, failed %d", com, flows, failed)
		}
		time.Sleep(time.Millisecond)
	}
	chains := cluster.NewChains(seed, shards, replicas, addrs)
	backends := map[uint32]bool{}
	for _, b := range []string{"198.18.30.101", "198.18.30.102", "198.18.30.103"} {
		backends[config.BackendID("always", b)] = true
	}
	deadline := time.Now().Add(5 * time.Second)
	for i := uint32(100); i < 100+flows; i++ {
		k := flow.MakeKey(6, clients.FlowSrc(i), vip)
		chain := chains.ChainAddrs(nil, cluster.ShardOf(&k, seed, shards))
		for m, cn := range nodes {
			inChain := slices.Contains(chain, addrs[m])
			for {
				var v cluster.Value
				var ok bool
				cn.Inspect(func(tb *cluster.Table) { v, ok = tb.Get(&k) })
				if ok != inChain && inChain && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
					continue
				}
				if ok != inChain {
					t.Fatalf("flow %d: member %v holds it: %v, in its chain %v: %v", i, addrs[m], ok, chain, inChain)
				}
				if ok && (v.Service != config.ServiceID("always") || !backends[v.Backend]) {
					t.Fatalf("flow %d on %v: %+v", i, addrs[m], v)
				}
				break
			}
		}
	}
	// A flow's later packets publish nothing more.
	f := sim.Frame{Src: clients.FlowSrc(100), Dst: vip, Proto: 6, TCPFlags: sim.ACK}
	b := make([]byte, f.Len())
	f.Encode(b)
	l.Inject(b)
	dp.Workers()[0].Poll()
	p.step(time.Now())
	if sub, _, _, _, _ := n.publishCounts(); sub != flows {
		t.Fatalf("a mid-flow packet was published: %d", sub)
	}

	// A publish the cluster could not commit is submitted again after a
	// delay (here it then commits); one that failed every retry is counted.
	k := flow.MakeKey(6, clients.FlowSrc(999), vip)
	v := cluster.Value{Service: config.ServiceID("always"), Backend: config.BackendID("always", "198.18.30.101")}
	now := time.Now()
	p.reply <- cluster.Answer{Key: k, Value: v, Status: cluster.StatusTimeout}
	p.reply <- cluster.Answer{Key: k, Value: v, Tag: publishRetries, Status: cluster.StatusTimeout}
	p.step(now)
	if _, com, failed, _, _ := n.publishCounts(); com != flows || failed != 1 || len(p.retry) != 1 {
		t.Fatalf("after a timeout: committed %d failed %d retries %d", com, failed, len(p.retry))
	}
	p.step(now.Add(publishRetryDelay / 2))
	if len(p.retry) != 1 {
		t.Fatal("resubmitted before its delay")
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		p.step(now.Add(publishRetryDelay))
		if _, com, _, _, _ := n.publishCounts(); com == flows+1 && len(p.retry) == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the retry did not commit: committed %d, retries %d", com, len(p.retry))
		}
		time.Sleep(time.Millisecond)
	}
	chain := chains.ChainAddrs(nil, cluster.ShardOf(&k, seed, shards))
	var ok bool
	nodes[slices.Index(addrs, chain[len(chain)-1])].Inspect(func(tb *cluster.Table) { _, ok = tb.Get(&k) })
	if !ok {
		t.Fatal("the retried flow is not on its tail")
	}

	// Refresh: one walk over every slice of the table queues each live
	// flow of the VIP (the 5 + 40 above) to be published again, and the
	// chain commits them without counting them as new flows.
	p.backlog = p.backlog[:0]
	for range int(n.refreshPeriod()/refreshEvery) + 1 {
		p.refreshFlows()
	}
	seen := map[flow.Key]bool{}
	for _, b := range p.backlog {
		if !b.refresh || b.rec.Service != config.ServiceID("always") {
			t.Fatalf("refresh record %+v", b)
		}
		seen[b.rec.Key] = true
	}
	if len(seen) != 5+flows {
		t.Fatalf("the refresh walk queued %d flows, want %d", len(seen), 5+flows)
	}
	sub, _, _, _, _ := n.publishCounts()
	for deadline := time.Now().Add(5 * time.Second); n.pubRefreshed.Load() < uint64(5+flows); {
		if time.Now().After(deadline) {
			t.Fatalf("%d refreshes committed, want %d", n.pubRefreshed.Load(), 5+flows)
		}
		p.lastRefresh = time.Now() // no new walk
		p.step(time.Now())
		time.Sleep(time.Millisecond)
	}
	if sub2, _, _, _, _ := n.publishCounts(); sub2 != sub {
		t.Fatalf("refreshes counted as new flows: %d -> %d", sub, sub2)
	}
}
