package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// udpNode is a node over the real stack: UDP transport and memberlist, both
// on loopback.
type udpNode struct {
	*Node
	g      *Gossip
	tr     *UDPTransport
	cancel context.CancelFunc
	done   chan struct{}
}

func startUDPNode(t *testing.T, key []byte, peers []string, cfg Config) (*udpNode, string) {
	return startUDPNodeAt(t, 0, key, peers, cfg)
}

// startUDPNodeAt starts a node with its cluster socket at port and gossip at
// port+1; port 0 picks a random free pair.
func startUDPNodeAt(t *testing.T, fixed int, key []byte, peers []string, cfg Config) (*udpNode, string) {
	t.Helper()
	var lastErr error
	for try := 0; try < 20; try++ {
		port := 20000 + rand.IntN(30000)
		if fixed != 0 {
			port = fixed
		}
		tr, err := ListenUDP(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)), 4096)
		if err != nil {
			lastErr = err
			continue
		}
		gossipAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port+1))
		g, err := NewGossip(GossipConfig{Bind: gossipAddr, Cluster: tr.LocalAddr(), Peers: peers, ClusterKey: key})
		if err != nil {
			tr.Close()
			lastErr = err
			continue
		}
		auth, _ := Keys(key)
		cfg.Transport, cfg.Membership, cfg.AuthKey = tr, g, auth
		nd, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		u := &udpNode{Node: nd, g: g, tr: tr, cancel: cancel, done: make(chan struct{})}
		go func() { defer close(u.done); _ = nd.Run(ctx) }()
		t.Cleanup(u.stop)
		return u, gossipAddr.String()
	}
	t.Fatalf("no free port: %v", lastErr)
	return nil, ""
}

// stop leaves gracefully (Run's Leave) and closes the socket.
func (u *udpNode) stop() {
	u.cancel()
	<-u.done
	u.tr.Close()
}

// crash stops without leaving: the others must detect the failure.
func (u *udpNode) crash() {
	_ = u.g.Shutdown()
	u.tr.Close()
	u.cancel()
	<-u.done
}

func waitMembers(t *testing.T, want int, d time.Duration, nodes ...*udpNode) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		ok := true
		for _, n := range nodes {
			if int(n.Stats().Members) != want || !n.Ready() {
				ok = false
			}
		}
		if ok {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, n := range nodes {
		t.Logf("%v: members %d ready %v", n.Addr(), n.Stats().Members, n.Ready())
	}
	t.Fatalf("members did not reach %d in %v", want, d)
	return 0
}

// Three nodes over UDP and memberlist on loopback: queries commit, a crashed
// node is detected within about a second, its entries survive (R=2), and a
// graceful leave is seen at once.
func TestGossipUDPCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("memberlist timers: seconds")
	}
	key := []byte("gossip test key")
	cfg := Config{Replicas: 2, Shards: 256, Capacity: 1 << 12}
	a, peer := startUDPNode(t, key, nil, cfg)
	b, _ := startUDPNode(t, key, []string{peer}, cfg)
	c, _ := startUDPNode(t, key, []string{peer}, cfg)
	waitMembers(t, 3, 5*time.Second, a, b, c)
	for i := 0; i < 300; i++ {
		if ans := ask(t, []*udpNode{a, b, c}[i%3].Node, OpQuery, testFlow(i), uint32(i)); ans.Status != StatusOK || ans.Value.Backend != uint32(i) {
			t.Fatalf("flow %d: %v %d", i, ans.Status, ans.Value.Backend)
		}
	}
	cPort := int(c.Addr().Port())
	c.crash()
	took := waitMembers(t, 2, 5*time.Second, a, b)
	t.Logf("crash detected and chains re-formed in %v", took)
	for i := 0; i < 300; i++ {
		if ans := ask(t, a.Node, OpQuery, testFlow(i), 999); ans.Status != StatusOK || ans.Value.Backend != uint32(i) {
			t.Fatalf("after crash, flow %d: %v %d", i, ans.Status, ans.Value.Backend)
		}
	}
	// The crashed node restarts at the same addresses, rejoins, syncs.
	c, _ = startUDPNodeAt(t, cPort, key, []string{peer}, cfg)
	took = waitMembers(t, 3, 10*time.Second, a, b, c)
	t.Logf("restarted node rejoined and synced in %v (%d entries)", took, c.Stats().SyncEntriesIn)
	if c.Stats().SyncEntriesIn == 0 {
		t.Fatal("the restarted node synced nothing")
	}
	for i := 0; i < 300; i++ {
		if ans := ask(t, c.Node, OpQuery, testFlow(i), 999); ans.Status != StatusOK || ans.Value.Backend != uint32(i) {
			t.Fatalf("after restart, flow %d: %v %d", i, ans.Status, ans.Value.Backend)
		}
	}
	c.stop()
	b.stop()
	took = waitMembers(t, 1, 2*time.Second, a)
	t.Logf("graceful leave seen in %v", took)
}

// A node with another cluster key never joins: memberlist's encryption
// refuses it.
func TestGossipWrongKey(t *testing.T) {
	if testing.Short() {
		t.Skip("memberlist timers")
	}
	a, peer := startUDPNode(t, []byte("key one"), nil, Config{Shards: 64})
	_, _, err := func() (*udpNode, string, error) {
		tr, err := ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), 16)
		if err != nil {
			return nil, "", err
		}
		defer tr.Close()
		port := 20000 + rand.IntN(30000)
		g, err := NewGossip(GossipConfig{Bind: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)), Cluster: tr.LocalAddr(), Peers: []string{peer}, ClusterKey: []byte("key two")})
		if err == nil {
			g.Shutdown()
			return nil, "", fmt.Errorf("joined")
		}
		return nil, "", nil
	}()
	if err != nil {
		t.Fatal("a node with the wrong key joined")
	}
	time.Sleep(300 * time.Millisecond)
	if n := a.g.NumMembers(); n != 1 {
		t.Fatalf("members = %d, want 1", n)
	}
}

// Start wires a node as the node server will: UDP, memberlist, Run.
func TestStart(t *testing.T) {
	if testing.Short() {
		t.Skip("memberlist timers")
	}
	if _, err := Start(Setup{Bind: netip.MustParseAddrPort("0.0.0.0:7000"), Key: []byte("k")}); err == nil {
		t.Fatal("a wildcard bind was accepted")
	}
	if _, err := Start(Setup{Bind: netip.MustParseAddrPort("127.0.0.1:0")}); err == nil {
		t.Fatal("no key was accepted")
	}
	var nodes []*Started
	for i := 0; i < 2; i++ {
		var peers []string
		if i > 0 {
			peers = []string{nodes[0].Gossip.ml.LocalNode().Address()}
		}
		var s *Started
		var err error
		for try := 0; try < 20; try++ {
			port := 20000 + rand.IntN(30000)
			s, err = Start(Setup{Bind: netip.AddrPortFrom(netip.MustParseAddrPort("127.0.0.1:0").Addr(), uint16(port)), Peers: peers, Key: []byte("start key"), Shards: 64, Capacity: 1024})
			if err == nil {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, s)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !(nodes[0].Ready() && nodes[1].Ready() && nodes[0].Stats().Members == 2 && nodes[1].Stats().Members == 2) {
		if time.Now().After(deadline) {
			t.Fatal("not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if a := ask(t, nodes[1].Node, OpQuery, testFlow(1), 42); a.Status != StatusOK || a.Value.Backend != 42 {
		t.Fatalf("%v %d", a.Status, a.Value.Backend)
	}
	if err := nodes[1].Stop(); err != nil {
		t.Fatal(err)
	}
	for nodes[0].Stats().Members != 1 {
		if time.Now().After(deadline) {
			t.Fatal("leave not seen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := nodes[0].Stop(); err != nil {
		t.Fatal(err)
	}
}

// With JoinRetry a member whose peers are not up yet starts alone and joins
// them once one answers; without it Start fails.
func TestStartJoinRetry(t *testing.T) {
	if testing.Short() {
		t.Skip("memberlist timers")
	}
	lo := netip.MustParseAddr("127.0.0.1")
	portA := uint16(20000 + rand.IntN(30000))
	peerA := netip.AddrPortFrom(lo, portA+1).String() // A's gossip address, nobody there yet
	setup := func(port uint16, peers []string, retry time.Duration) Setup {
		return Setup{Bind: netip.AddrPortFrom(lo, port), Peers: peers, Key: []byte("retry key"), Shards: 64, Capacity: 1024, JoinRetry: retry}
	}
	if s, err := Start(setup(portA+10, []string{peerA}, 0)); err == nil {
		s.Stop()
		t.Fatal("started without any peer answering and no JoinRetry")
	}
	b, err := Start(setup(portA+10, []string{peerA}, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	time.Sleep(200 * time.Millisecond)
	if m := b.Gossip.NumMembers(); m != 1 {
		t.Fatalf("members before A starts = %d", m)
	}
	a, err := Start(setup(portA, nil, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for !(a.Ready() && b.Ready() && a.Stats().Members == 2 && b.Stats().Members == 2) {
		if time.Now().After(deadline) {
			t.Fatalf("not joined: members %d %d", a.Stats().Members, b.Stats().Members)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
