package datapath_test

import (
	"math/rand/v2"
	"testing"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

// benchRig is one worker forwarding to 100 backends of vip4, fed by src.
func benchRig(tb testing.TB, capacity int, src mem.Source) (*datapath.Datapath, *datapath.Worker) {
	return benchRigChain(tb, capacity, src, pipeline.ChainNever)
}

// benchRigChain is benchRig with the service's flows using the cluster's
// owner chains as use says (and the worker's queues to the node server).
func benchRigChain(tb testing.TB, capacity int, src mem.Source, use pipeline.ChainUse) (*datapath.Datapath, *datapath.Worker) {
	tb.Helper()
	l := mem.New(mem.Config{Source: src, BatchSize: 64})
	dc := datapath.Config{Links: []link.Link{l}, FlowCapacity: capacity}
	svc := service(vip4, backends4(100), nil)
	if use != pipeline.ChainNever {
		dc.PublishQueue = 4096
		svc.Chain, svc.ClusterID = use, 1
		for i := range svc.Backends {
			svc.Backends[i].ClusterID = uint32(i)
		}
	}
	dp, err := datapath.New(dc)
	if err != nil {
		tb.Fatal(err)
	}
	g, err := pipeline.NewBuilder().Build(pipeline.Spec{Seed: 1, MTU: 1500, Services: []pipeline.ServiceSpec{svc}})
	if err != nil {
		tb.Fatal(err)
	}
	dp.Apply(g)
	return dp, dp.Workers()[0]
}

// run polls until n packets went through and checks they were all sent.
func run(b *testing.B, w *datapath.Worker, n int) {
	before := w.Snapshot()
	for done := 0; done < n; {
		k, err := w.Poll()
		if err != nil || k == 0 {
			b.Fatalf("poll: %d, %v", k, err)
		}
		done += k
	}
	after := w.Snapshot()
	if rx, tx := after.RxPackets-before.RxPackets, after.TxPackets-before.TxPackets; rx != tx {
		b.Fatalf("rx %d but tx %d: %v", rx, tx, after.Drops)
	}
}

const benchFlows = 1 << 20

// BenchmarkForwardEstablished: one established TCP packet (64-byte payload)
// through parse -> flow table hit -> GUE encapsulation -> transmit, with 1M
// flows in the table visited in random order (so the table does not sit in
// the CPU cache). The in-memory link stamps each frame from a template, as a
// NIC would place it in the buffer.
func BenchmarkForwardEstablished(b *testing.B) {
	benchEstablished(b, benchFlows)
}

// BenchmarkForwardEstablishedHot is the same with 1024 flows: the table
// stays in cache, so the difference with BenchmarkForwardEstablished is the
// cost of the cache misses.
func BenchmarkForwardEstablishedHot(b *testing.B) {
	benchEstablished(b, 1024)
}

// BenchmarkForwardEstablishedChained is BenchmarkForwardEstablished on a
// node in a cluster, the service's flows in their owner chains (affinity
// always): an established flow's packets hit its entry and never reach
// the cluster, so it costs what BenchmarkForwardEstablished costs.
func BenchmarkForwardEstablishedChained(b *testing.B) {
	benchEstablishedChain(b, benchFlows, pipeline.ChainAlways)
}

func benchEstablished(b *testing.B, flows int) {
	benchEstablishedChain(b, flows, pipeline.ChainNever)
}

func benchEstablishedChain(b *testing.B, flows int, use pipeline.ChainUse) {
	order := rand.New(rand.NewPCG(3, 4)).Perm(flows)
	p := sim.NewPatcher(sim.Frame{Dst: vip4, Proto: 6, TCPFlags: sim.ACK, Payload: 64}, clients4)
	var k int
	flags := uint8(sim.ACK) // one packet per flow creates its entry
	if use != pipeline.ChainNever {
		flags = sim.SYN // a chained flow's ACK without an entry would ask its chain
	}
	_, w := benchRigChain(b, flows, func(buf []byte) int {
		i := order[k]
		k++
		if k == len(order) {
			k = 0
		}
		return p.Write(buf, uint32(i), flags)
	}, use)
	run(b, w, flows) // one packet per flow creates every entry
	if flags == sim.SYN {
		flags = sim.ACK
		run(b, w, flows) // and its ACK establishes it
	}
	if n := w.Flows().Len(); n != flows {
		b.Fatalf("table holds %d flows, want %d", n, flows)
	}
	b.ReportAllocs()
	b.ResetTimer()
	run(b, w, b.N)
	b.StopTimer()
	c := w.Snapshot()
	if c.FlowMisses != uint64(flows) {
		b.Fatalf("%d misses during the run, want only the %d of the warm-up", c.FlowMisses-uint64(flows), flows)
	}
}

// BenchmarkForwardSYN: the SYN of a new flow: parse -> flow table miss ->
// classify -> Maglev lookup -> flow insert -> GUE encapsulation, with 1M
// established flows already in the table.
func BenchmarkForwardSYN(b *testing.B) {
	p := sim.NewPatcher(sim.Frame{Dst: vip4, Proto: 6, TCPFlags: sim.SYN}, clients4)
	var next uint32
	dp, w := benchRig(b, benchFlows+b.N+64, func(buf []byte) int {
		next++
		return p.Write(buf, next, sim.SYN)
	})
	_ = dp
	// Occupy the table with 1M established flows of other clients.
	fill := flow.MakeKey(6, vip4, vip4)
	for i := range benchFlows {
		fill.SrcPort, fill.Src[0] = uint16(i), byte(i>>16)
		e := w.Flows().Insert(&fill, fill.Hash(1), 0)
		e.State = flow.StateEstablished
	}
	b.ReportAllocs()
	b.ResetTimer()
	run(b, w, b.N)
	b.StopTimer()
	if c := w.Snapshot(); c.FlowHits != 0 {
		b.Fatalf("%d SYNs hit an entry", c.FlowHits)
	}
}

// BenchmarkBaselineLink is the floor every benchmark above stands on: the
// in-memory link stamping a frame and taking it back, with no processing.
// bench/datapath.sh reports the forwarding costs as ratios to it.
func BenchmarkBaselineLink(b *testing.B) {
	p := sim.NewPatcher(sim.Frame{Dst: vip4, Proto: 6, TCPFlags: sim.ACK, Payload: 64}, clients4)
	var next uint32
	l := mem.New(mem.Config{BatchSize: 64, Source: func(buf []byte) int {
		next++
		return p.Write(buf, next&(benchFlows-1), sim.ACK)
	}})
	frames := make([]link.Frame, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n, _ := l.Recv(frames)
		l.Send(frames[:n])
		done += n
	}
}
