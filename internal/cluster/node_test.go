package cluster

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/flow"
)

var testKey = func() (k [32]byte) { k, _ = Keys([]byte("test cluster key")); return }()

// memCluster runs n nodes over a MemNetwork and a MemMembership.
type memCluster struct {
	t       testing.TB
	net     *MemNetwork
	members *MemMembership
	nodes   map[netip.AddrPort]*testNode
	cfg     Config
}

type testNode struct {
	*Node
	cancel context.CancelFunc
	done   chan struct{}
	tr     *MemTransport
}

func nodeAddr(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 7946)
}

func newMemCluster(t testing.TB, n int, cfg Config) *memCluster {
	c := &memCluster{t: t, net: NewMemNetwork(8192), members: NewMemMembership(), nodes: map[netip.AddrPort]*testNode{}, cfg: cfg}
	for i := 1; i <= n; i++ {
		c.start(nodeAddr(i))
	}
	t.Cleanup(func() {
		for a := range c.nodes {
			c.kill(a)
		}
	})
	return c
}

func (c *memCluster) start(a netip.AddrPort) *testNode {
	tr, err := c.net.Listen(a)
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := c.cfg
	cfg.Transport = tr
	cfg.AuthKey = testKey
	cfg.Membership = c.members.Join(a)
	nd, err := New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tn := &testNode{Node: nd, cancel: cancel, done: make(chan struct{}), tr: tr}
	go func() { defer close(tn.done); _ = nd.Run(ctx) }()
	c.nodes[a] = tn
	return tn
}

// kill stops a node abruptly: the failure detector removes it, its
// transport stops receiving.
func (c *memCluster) kill(a netip.AddrPort) {
	tn := c.nodes[a]
	if tn == nil {
		return
	}
	delete(c.nodes, a)
	c.members.Kill(a)
	tn.tr.Close()
	tn.cancel()
	<-tn.done
}

func (c *memCluster) waitReady(d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		ok := true
		for _, n := range c.nodes {
			if !n.Ready() || int(n.Stats().Members) != len(c.nodes) {
				ok = false
				break
			}
		}
		if ok {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	for a, n := range c.nodes {
		s := n.Stats()
		c.t.Logf("%v ready=%v members=%d syncPending=%d %+v", a, n.Ready(), s.Members, s.SyncPending, s)
	}
	c.t.Fatalf("cluster not ready after %v", d)
}

func (c *memCluster) node(i int) *testNode { return c.nodes[nodeAddr(i)] }

func testFlow(i int) flow.Key {
	return flow.MakeKey(6, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 16), byte(i >> 8)}), uint16(i)|1024),
		netip.MustParseAddrPort("198.51.100.1:443"))
}

func ask(t testing.TB, n *Node, op Op, k flow.Key, backend uint32) Answer {
	t.Helper()
	reply := make(chan Answer, 1)
	if !n.Submit(Request{Op: op, Key: k, Value: Value{Service: 1, Backend: backend}, Reply: reply}) {
		t.Fatal("submit queue full")
	}
	select {
	case a := <-reply:
		return a
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
	}
	return Answer{}
}

func TestQueryCommitsFirstProposal(t *testing.T) {
	for _, r := range []int{1, 2, 3} {
		t.Run(fmt.Sprint("R=", r), func(t *testing.T) {
			c := newMemCluster(t, 4, Config{Replicas: r, Shards: 256, Capacity: 1 << 12})
			c.waitReady(5 * time.Second)
			for i := 0; i < 200; i++ {
				k := testFlow(i)
				a := ask(t, c.node(1+i%4).Node, OpQuery, k, uint32(100+i))
				if a.Status != StatusOK || a.Value.Backend != uint32(100+i) {
					t.Fatalf("flow %d: first query: %v backend %d", i, a.Status, a.Value.Backend)
				}
				// Another node proposes another backend: it learns the first.
				a = ask(t, c.node(1+(i+1)%4).Node, OpQuery, k, 7)
				if a.Status != StatusOK || a.Value.Backend != uint32(100+i) {
					t.Fatalf("flow %d: second query: %v backend %d, want %d", i, a.Status, a.Value.Backend, 100+i)
				}
			}
			// Every chain member holds the entry.
			for i := 0; i < 200; i++ {
				k := testFlow(i)
				s := ShardOf(&k, 0, 256)
				ch := NewChains(0, 256, r, c.members.Live())
				for _, m := range ch.ChainAddrs(nil, s) {
					a := ask(t, c.nodes[m].Node, OpLookup, k, 0)
					if a.Status != StatusOK || a.Value.Backend != uint32(100+i) {
						t.Fatalf("flow %d: chain member %v: %v %d", i, m, a.Status, a.Value.Backend)
					}
				}
			}
		})
	}
}

// Concurrent proposals for one flow from every node: all learn one backend.
func TestConcurrentProposalsAgree(t *testing.T) {
	c := newMemCluster(t, 5, Config{Replicas: 3, Shards: 64, Capacity: 1 << 12})
	c.waitReady(5 * time.Second)
	for i := 0; i < 100; i++ {
		k := testFlow(i)
		var wg sync.WaitGroup
		got := make([]Answer, 5)
		for j := 1; j <= 5; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[j-1] = ask(t, c.node(j).Node, OpQuery, k, uint32(j))
			}()
		}
		wg.Wait()
		for j := range got {
			if got[j].Status != StatusOK || got[j].Value.Backend != got[0].Value.Backend {
				t.Fatalf("flow %d: answers differ: %+v", i, got)
			}
		}
	}
}

// A node fails: its chains re-form, the entries survive (R=2), and a node
// that restarts syncs before it serves.
func TestFailureAndRestartKeepEntries(t *testing.T) {
	c := newMemCluster(t, 5, Config{Replicas: 2, Shards: 128, Capacity: 1 << 14})
	c.waitReady(5 * time.Second)
	const flows = 2000
	for i := 0; i < flows; i++ {
		if a := ask(t, c.node(1+i%5).Node, OpQuery, testFlow(i), uint32(i)); a.Status != StatusOK {
			t.Fatal(a.Status)
		}
	}
	check := func(phase string, from int) {
		t.Helper()
		changed := 0
		for i := 0; i < flows; i++ {
			a := ask(t, c.node(from).Node, OpQuery, testFlow(i), 999999)
			if a.Status != StatusOK || a.Value.Backend != uint32(i) {
				changed++
			}
		}
		if changed != 0 {
			t.Fatalf("%s: %d of %d flows changed backend", phase, changed, flows)
		}
	}
	c.kill(nodeAddr(3))
	c.waitReady(5 * time.Second)
	check("after kill", 1)
	c.start(nodeAddr(3))
	c.waitReady(5 * time.Second)
	if c.node(3).Stats().SyncEntriesIn == 0 {
		t.Fatal("restarted node synced no entries")
	}
	c.kill(nodeAddr(1))
	c.waitReady(5 * time.Second)
	check("after restart and second kill", 2)
}

// A restarted node syncs before it serves: while its (rate-limited) sync
// runs it is not ready, answers no query as tail from its empty table, and
// every answer is still the committed backend.
func TestSyncBeforeServing(t *testing.T) {
	c := newMemCluster(t, 3, Config{Replicas: 3, Shards: 64, Capacity: 1 << 13})
	c.waitReady(5 * time.Second)
	const flows = 1500
	for i := 0; i < flows; i++ {
		if a := ask(t, c.node(1+i%3).Node, OpQuery, testFlow(i), uint32(i+1)); a.Status != StatusOK {
			t.Fatal(a.Status)
		}
	}
	c.kill(nodeAddr(3))
	c.waitReady(5 * time.Second)
	c.cfg.SyncRate = 3000 // entries/s: about half a second for this shard set
	n3 := c.start(nodeAddr(3))
	time.Sleep(20 * time.Millisecond)
	if n3.Ready() {
		t.Fatal("restarted node ready before its sync")
	}
	for i := 0; i < flows; i += 7 {
		a := ask(t, n3.Node, OpQuery, testFlow(i), 999999)
		if a.Status != StatusOK || a.Value.Backend != uint32(i+1) {
			t.Fatalf("flow %d during sync: %v %d", i, a.Status, a.Value.Backend)
		}
	}
	time.Sleep(5 * time.Millisecond) // a tick publishes the stats
	if n3.Stats().RetryAnswers == 0 {
		t.Fatal("node 3, not synced, never refused to answer as tail")
	}
	c.waitReady(5 * time.Second)
	if got := n3.Stats().SyncEntriesIn; got < flows {
		t.Fatalf("synced %d entries, want %d", got, flows)
	}
	// Now it serves from its own table.
	for i := 0; i < flows; i++ {
		if a := ask(t, n3.Node, OpLookup, testFlow(i), 0); a.Status != StatusOK || a.Value.Backend != uint32(i+1) {
			t.Fatalf("flow %d after sync: %v %d", i, a.Status, a.Value.Backend)
		}
	}
}

func TestDropServiceAndDelete(t *testing.T) {
	c := newMemCluster(t, 3, Config{Replicas: 2, Shards: 64, Capacity: 1 << 12})
	c.waitReady(5 * time.Second)
	for i := 0; i < 100; i++ {
		r := make(chan Answer, 1)
		c.node(1).Submit(Request{Op: OpPublish, Key: testFlow(i), Value: Value{Service: uint16(1 + i%2), Backend: 5}, Reply: r})
		if a := <-r; a.Status != StatusOK {
			t.Fatal(a.Status)
		}
	}
	count := func() (n int) {
		for _, nd := range c.nodes {
			nd.Inspect(func(t *Table) { n += t.Len() })
		}
		return n
	}
	if got := count(); got != 200 {
		t.Fatalf("%d copies, want 200 (100 flows x R=2)", got)
	}
	// Reports: every shard has one head and one tail among the nodes,
	// entries per service add up.
	var heads, tails, svc1, svc2 int
	for _, nd := range c.nodes {
		r, ok := nd.Report()
		if !ok || !r.Ready || len(r.Members) != 3 || r.Middles != 0 {
			t.Fatalf("report %+v", r)
		}
		heads, tails = heads+r.Heads, tails+r.Tails
		svc1, svc2 = svc1+r.ByService[1], svc2+r.ByService[2]
	}
	if heads != 64 || tails != 64 || svc1 != 100 || svc2 != 100 {
		t.Fatalf("heads %d tails %d (want 64 each), service copies %d %d (want 100 each)", heads, tails, svc1, svc2)
	}
	for _, nd := range c.nodes {
		nd.Submit(Request{Op: OpDropService, Value: Value{Service: 2}})
	}
	nd := c.node(2)
	nd.Submit(Request{Op: OpDelete, Key: testFlow(0)}) // service 1
	deadline := time.Now().Add(2 * time.Second)
	for count() != 98 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := count(); got != 98 {
		t.Fatalf("%d copies after dropping service 2 and deleting one flow, want 98", got)
	}
	// Alone, with no members, a query answers at once.
	tr, _ := NewMemNetwork(4).Listen(nodeAddr(99))
	alone, _ := New(Config{Transport: tr, Membership: noMembers{}, AuthKey: testKey})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go alone.Run(ctx)
	for alone.Stats().Views == 0 {
		time.Sleep(time.Millisecond)
	}
	if a := ask(t, alone, OpQuery, testFlow(1), 1); a.Status != StatusNoMember {
		t.Fatalf("alone: %v", a.Status)
	}
}

// noMembers is a membership whose only view is empty.
type noMembers struct{}

func (noMembers) Views() <-chan []netip.AddrPort {
	ch := make(chan []netip.AddrPort, 1)
	ch <- nil
	return ch
}
func (noMembers) Leave(time.Duration) error { return nil }
func (noMembers) Shutdown() error           { return nil }

// Trust (DESIGN §3.11): a replayed datagram, one sealed with another key,
// an altered one and one from an address outside the view are dropped and
// counted, and none of them changes an entry.
func TestNodeDropsReplayForgeryAndStrangers(t *testing.T) {
	c := &memCluster{t: t, net: NewMemNetwork(1024), members: NewMemMembership(), nodes: map[netip.AddrPort]*testNode{}, cfg: Config{Replicas: 2, Shards: 16}}
	var mu sync.Mutex
	var captured [][]byte
	c.net.Tap = func(from, to netip.AddrPort, b []byte) {
		mu.Lock()
		defer mu.Unlock()
		if from == nodeAddr(1) && to == nodeAddr(2) && len(captured) < 50 {
			captured = append(captured, append([]byte(nil), b...))
		}
	}
	for i := 1; i <= 2; i++ {
		c.start(nodeAddr(i))
	}
	t.Cleanup(func() {
		for a := range c.nodes {
			c.kill(a)
		}
	})
	c.waitReady(5 * time.Second)
	for i := 0; i < 20; i++ {
		ask(t, c.node(1).Node, OpPublish, testFlow(i), 5)
	}
	n2 := c.node(2)
	before := n2.Stats()
	inject := func(from netip.AddrPort, b []byte) { n2.tr.rx <- Datagram{From: from, Data: b} }
	mu.Lock()
	old := captured
	mu.Unlock()
	if len(old) == 0 {
		t.Fatal("nothing captured")
	}
	for _, b := range old {
		inject(nodeAddr(1), b) // replays
	}
	// Another key: a node that does not know the cluster key.
	var w Writer
	w.Begin(1, 1, uint64(time.Now().UnixMilli()))
	w.Add(&Msg{Type: MsgInsert, Aux: FlagRepair, Entry: MakeEntry(testFlow(0), Value{Service: 1, Backend: 666, Expire: 4e9})})
	inject(nodeAddr(1), bytes.Clone(w.Seal(NewCodec([32]byte{9}), n2.Addr())))
	// The right key but other chain parameters (replicas 3): refused too.
	w.Begin(1, 2, uint64(time.Now().UnixMilli()))
	w.Add(&Msg{Type: MsgInsert, Aux: FlagRepair, Entry: MakeEntry(testFlow(0), Value{Service: 1, Backend: 666, Expire: 4e9})})
	inject(nodeAddr(1), bytes.Clone(w.Seal(NewCodec(paramKey(Config{AuthKey: testKey, Shards: 16, Replicas: 3})), n2.Addr())))
	// Altered: a captured datagram with one byte changed.
	alt := bytes.Clone(old[len(old)-1])
	alt[headerLen+10] ^= 0xff
	inject(nodeAddr(1), alt)
	// A stranger with the right key (a configured key but not a member).
	w.Begin(2, 1, uint64(time.Now().UnixMilli()))
	w.Add(&Msg{Type: MsgInsert, Aux: FlagRepair, Entry: MakeEntry(testFlow(0), Value{Service: 1, Backend: 666, Expire: 4e9})})
	inject(netip.MustParseAddrPort("10.9.9.9:7946"), bytes.Clone(w.Seal(NewCodec(paramKey(Config{AuthKey: testKey, Shards: 16, Replicas: 2})), n2.Addr())))
	deadline := time.Now().Add(2 * time.Second)
	var after Stats
	for time.Now().Before(deadline) {
		after = n2.Stats()
		if after.DropReplay-before.DropReplay == uint64(len(old)) && after.DropAuth-before.DropAuth == 3 && after.DropNotMember-before.DropNotMember == 1 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := after.DropReplay - before.DropReplay; d != uint64(len(old)) {
		t.Errorf("replays dropped: %d of %d", d, len(old))
	}
	if d := after.DropAuth - before.DropAuth; d != 3 {
		t.Errorf("bad tags dropped: %d, want 3", d)
	}
	if d := after.DropNotMember - before.DropNotMember; d != 1 {
		t.Errorf("strangers dropped: %d, want 1", d)
	}
	if a := ask(t, n2.Node, OpLookup, testFlow(0), 0); a.Value.Backend != 5 {
		t.Errorf("entry changed to %d", a.Value.Backend)
	}
}
