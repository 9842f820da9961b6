package cluster_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/sluicelb/sluice/internal/cluster"
	"github.com/sluicelb/sluice/internal/flow"
)

// Three nodes over the in-memory transport: two LB nodes propose different
// backends for one flow; both learn the first one committed.
func Example() {
	auth, _ := cluster.Keys([]byte("cluster key"))
	network := cluster.NewMemNetwork(1024)
	members := cluster.NewMemMembership()
	ctx, cancel := context.WithCancel(context.Background())
	var nodes []*cluster.Node
	var done []chan struct{}
	for i := 1; i <= 3; i++ {
		addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 7946)
		tr, _ := network.Listen(addr)
		n, err := cluster.New(cluster.Config{Transport: tr, Membership: members.Join(addr), AuthKey: auth, Replicas: 2, Shards: 64})
		if err != nil {
			panic(err)
		}
		d := make(chan struct{})
		go func() { defer close(d); n.Run(ctx) }()
		nodes, done = append(nodes, n), append(done, d)
	}
	for _, n := range nodes {
		for !n.Ready() || n.Stats().Members != 3 {
			time.Sleep(time.Millisecond)
		}
	}
	key := flow.MakeKey(6, netip.MustParseAddrPort("198.18.0.1:40000"), netip.MustParseAddrPort("198.18.0.10:443"))
	reply := make(chan cluster.Answer, 2)
	nodes[0].Submit(cluster.Request{Op: cluster.OpQuery, Key: key, Value: cluster.Value{Service: 1, Backend: 11}, Reply: reply})
	a := <-reply
	fmt.Println(a.Status, a.Value.Backend)
	nodes[1].Submit(cluster.Request{Op: cluster.OpQuery, Key: key, Value: cluster.Value{Service: 1, Backend: 12}, Reply: reply})
	a = <-reply
	fmt.Println(a.Status, a.Value.Backend)
	cancel()
	for _, d := range done {
		<-d
	}
	// Output:
	// ok 11
	// ok 11
}
