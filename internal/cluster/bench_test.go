package cluster

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/flow"
)

// Benchmarks of the replicated table. Run them short, one at a time:
//
//	go test -run XXX -bench 'Inserts|RoundTrip|Memory' -benchtime 200000x ./internal/cluster/
//
// Each reports its baseline from the same run: the local table insert for
// the replicated inserts, a bare UDP echo for the query round trip.

// benchCluster starts n nodes (chains of r) over transports made by listen.
func benchCluster(b *testing.B, n, r int, listen func(i int) Transport) []*Node {
	b.Helper()
	mm := NewMemMembership()
	var nodes []*Node
	ctx, cancel := context.WithCancel(context.Background())
	var done []chan struct{}
	for i := 1; i <= n; i++ {
		tr := listen(i)
		nd, err := New(Config{Transport: tr, Membership: mm.Join(tr.LocalAddr()), AuthKey: testKey, Replicas: r,
			Capacity: 1 << 21, Shards: 4096, Outstanding: 1 << 16, Queue: 1 << 15, QueryTimeout: 100 * time.Millisecond, TTL: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		d := make(chan struct{})
		done = append(done, d)
		go func() { defer close(d); _ = nd.Run(ctx) }()
		nodes = append(nodes, nd)
	}
	b.Cleanup(func() {
		cancel()
		for _, d := range done {
			<-d
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for _, nd := range nodes {
		for !nd.Ready() || int(nd.Stats().Members) != n {
			if time.Now().After(deadline) {
				b.Fatal("cluster not ready")
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nodes
}

func benchKey(i int) flow.Key {
	return flow.MakeKey(6, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%30000)),
		netip.MustParseAddrPort("198.18.0.10:443"))
}

// pump submits count requests spread over the nodes with window in flight
// and returns the answers that were not StatusOK.
func pump(b *testing.B, nodes []*Node, op Op, start, count, window int) int {
	reply := make(chan Answer, window)
	bad, inflight := 0, 0
	recv := func() {
		if a := <-reply; a.Status != StatusOK {
			bad++
		}
		inflight--
	}
	for i := 0; i < count; i++ {
		for inflight >= window {
			recv()
		}
		r := Request{Op: op, Key: benchKey(start + i), Value: Value{Service: 1, Backend: uint32(i) | 1}, Reply: reply}
		for !nodes[i%len(nodes)].Submit(r) {
			recv()
		}
		inflight++
	}
	for inflight > 0 {
		recv()
	}
	return bad
}

func benchInserts(b *testing.B, listen func(i int) Transport) {
	const n, r = 3, 3
	nodes := benchCluster(b, n, r, listen)
	// Baseline: the same inserts into one local table.
	t := NewTable(b.N+1, 0)
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		k := benchKey(i)
		t.Insert(&k, Value{Backend: 1, Expire: 1})
	}
	local := float64(b.N) / time.Since(t0).Seconds()
	b.ResetTimer()
	t0 = time.Now()
	bad := pump(b, nodes, OpPublish, 0, b.N, 8192)
	el := time.Since(t0)
	b.StopTimer()
	committed := float64(b.N-bad) / el.Seconds()
	// Every node stores every entry (R = N): each committed insert is one
	// replicated insert on each node.
	perNode := committed * r / n
	b.ReportMetric(perNode, "inserts/s/node")
	b.ReportMetric(perNode/125000, "x_goal_125k")
	b.ReportMetric(local, "local_inserts/s")
	b.ReportMetric(perNode/local, "ratio_to_local")
	b.ReportMetric(float64(bad), "fallbacks")
}

// BenchmarkInsertsMem: inserts replicated along chains of 3 over the
// in-memory transport; all three nodes share the machine's cores.
func BenchmarkInsertsMem(b *testing.B) {
	mn := NewMemNetwork(1 << 14)
	benchInserts(b, func(i int) Transport {
		tr, err := mn.Listen(nodeAddr(i))
		if err != nil {
			b.Fatal(err)
		}
		return tr
	})
}

func listenLoopback(b *testing.B) Transport {
	tr, err := ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), 1<<14)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tr.Close() })
	return tr
}

// BenchmarkInsertsUDP: the same over real UDP sockets on loopback.
func BenchmarkInsertsUDP(b *testing.B) {
	benchInserts(b, func(int) Transport { return listenLoopback(b) })
}

// BenchmarkRoundTripUDP: one query at a time from a node to the tail (on
// another node) of a flow that has an entry, over loopback UDP; p50 and
// p99 in microseconds, beside a bare UDP echo between two sockets. Also
// the publish round trip: a new flow's insert until every chain member
// (R = 2) has it and the tail answered.
func BenchmarkRoundTripUDP(b *testing.B) {
	nodes := benchCluster(b, 3, 2, func(int) Transport { return listenLoopback(b) })
	asker := nodes[0]
	// Flows whose tail is another node.
	var keys []flow.Key
	ch := NewChains(0, 4096, 2, []netip.AddrPort{nodes[0].Addr(), nodes[1].Addr(), nodes[2].Addr()})
	for i := 0; len(keys) < 4096; i++ {
		k := benchKey(i)
		if tail, _ := ch.Tail(ShardOf(&k, 0, 4096)); tail != asker.Addr() {
			keys = append(keys, k)
		}
	}
	reply := make(chan Answer, 1)
	one := func(op Op, k flow.Key) time.Duration {
		t0 := time.Now()
		asker.Submit(Request{Op: op, Key: k, Value: Value{Service: 1, Backend: 7}, Reply: reply})
		if a := <-reply; a.Status != StatusOK {
			b.Fatalf("status %v", a.Status)
		}
		return time.Since(t0)
	}
	publish := make([]time.Duration, 0, len(keys))
	for _, k := range keys {
		publish = append(publish, one(OpPublish, k))
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lat = append(lat, one(OpQuery, keys[i%len(keys)]))
	}
	b.StopTimer()
	echo := udpEcho(b, min(b.N, 20000))
	q := func(v []time.Duration, p float64) float64 {
		slices.Sort(v)
		return float64(v[int(float64(len(v)-1)*p)].Nanoseconds()) / 1e3
	}
	b.ReportMetric(q(lat, 0.5), "query_p50_us")
	b.ReportMetric(q(lat, 0.99), "query_p99_us")
	b.ReportMetric(q(publish, 0.5), "publish_p50_us")
	b.ReportMetric(q(publish, 0.99), "publish_p99_us")
	b.ReportMetric(q(echo, 0.5), "udp_echo_p50_us")
	b.ReportMetric(q(echo, 0.99), "udp_echo_p99_us")
	b.ReportMetric(q(lat, 0.99)/q(echo, 0.99), "ratio_p99_to_echo")
}

// udpEcho measures n round trips of a 72-byte datagram between two
// loopback sockets with a goroutine echoing: the floor under a query.
func udpEcho(b *testing.B, n int) []time.Duration {
	srv, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	cli, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			srv.WriteToUDPAddrPort(buf[:k], from)
		}
	}()
	buf := make([]byte, 2048)
	msg := make([]byte, 72)
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		cli.Write(msg)
		cli.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := cli.Read(buf); err != nil {
			b.Fatal(err)
		}
		out = append(out, time.Since(t0))
	}
	return out
}

// BenchmarkMemoryPerEntry: heap bytes per replicated entry on a node at
// its capacity (runtime.MemStats), beside a Go map of the same entries. It
// measures once per call, whatever b.N.
func BenchmarkMemoryPerEntry(b *testing.B) {
	const n = 500000
	{
		var m0, m1, m2 runtime.MemStats
		readMem(&m0)
		t := NewTable(n, 0)
		for i := 0; i < n; i++ {
			k := benchKey(i)
			t.Insert(&k, Value{Backend: 1, Expire: 1})
		}
		readMem(&m1)
		mp := make(map[flow.Key]Value)
		for i := 0; i < n; i++ {
			mp[benchKey(i)] = Value{Backend: 1, Expire: 1}
		}
		readMem(&m2)
		b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/n, "bytes/entry")
		b.ReportMetric(float64(m2.HeapAlloc-m1.HeapAlloc)/n, "map_bytes/entry")
		runtime.KeepAlive(t)
		runtime.KeepAlive(mp)
	}
}

func readMem(m *runtime.MemStats) {
	runtime.GC()
	runtime.ReadMemStats(m)
}
