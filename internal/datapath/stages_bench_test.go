package datapath_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

// natBenchFlows fit the ports of two SNAT addresses (64512 each).
const natBenchFlows = 1 << 16

// forwardingModes are the ways a service's packets reach its backends.
var forwardingModes = []string{"gue", "ipip", "nat"}

// modeWorker is one worker over an in-memory link fed by src, forwarding
// to 100 backends of vip4 in mode (a VIP whose firewall has 10 rules that
// match no client), through chain.
func modeWorker(tb testing.TB, mode string, chain *pipeline.Chain, capacity int, src mem.Source) *datapath.Worker {
	tb.Helper()
	l := mem.New(mem.Config{BatchSize: 64, Source: src})
	c := datapath.Config{Links: []link.Link{l}, FlowCapacity: capacity, Chain: chain}
	svc := service(vip4, backends4(100), nil)
	svc.Firewall = benchRules(tb, 10)
	spec := pipeline.Spec{Seed: 1, MTU: 1500}
	switch mode {
	case "ipip":
		for i := range svc.Backends {
			svc.Backends[i].Tunnel.Mode = encap.IPIP
		}
	case "nat":
		snat := []netip.Addr{snat4, netip.MustParseAddr("198.18.40.12")}
		c.SNAT, spec.SNAT = snat, snat
		svc.NAT = true
	}
	spec.Services = []pipeline.ServiceSpec{svc}
	dp, err := datapath.New(c)
	if err != nil {
		tb.Fatal(err)
	}
	g, err := pipeline.NewBuilder().Build(spec)
	if err != nil {
		tb.Fatal(err)
	}
	dp.Apply(g)
	return dp.Workers()[0]
}

// poll runs w until n frames went through, whatever became of them.
func poll(tb testing.TB, w *datapath.Worker, n int) {
	for done := 0; done < n; {
		k, err := w.Poll()
		if err != nil || k == 0 {
			tb.Fatalf("poll: %d, %v", k, err)
		}
		done += k
	}
}

// alternate runs the workers over n frames each in alternating rounds, so
// that all see the same machine state, and returns each one's time per
// frame in nanoseconds (a worker takes whole batches: a few more than n).
func alternate(tb testing.TB, n int, ws ...*datapath.Worker) []float64 {
	const round = 64 * 64
	t := make([]time.Duration, len(ws))
	rx := make([]uint64, len(ws))
	for i, w := range ws {
		rx[i] = w.Snapshot().RxPackets
	}
	for done := 0; done < n; done += round {
		k := min(round, n-done)
		for i, w := range ws {
			t0 := time.Now()
			poll(tb, w, k)
			t[i] += time.Since(t0)
		}
	}
	ns := make([]float64, len(ws))
	for i, w := range ws {
		ns[i] = float64(t[i].Nanoseconds()) / float64(w.Snapshot().RxPackets-rx[i])
	}
	return ns
}

// BenchmarkStages is the cost of each stage of the pipeline on a new flow's
// first packet (a SYN: the flow-table miss that runs every stage), for
// each forwarding mode: one worker per prefix of the chain — none, then
// nat_reply, classify, firewall (10 rules), balance (Maglev, flow insert),
// nat_bind, route, encapsulate — run in alternating rounds of one run; a
// stage's cost is the difference between the prefixes that end before and
// after it. Reported as <stage>-ns per packet; "parse+link-ns" is the
// empty chain's (receive, parse, flow lookup, release). ns/op covers every
// worker. At most 60,000 flows per worker (b.N): the SNAT ports of two
// addresses hold them.
func BenchmarkStages(b *testing.B) {
	stages := pipeline.DefaultChain().Stages()
	for _, mode := range forwardingModes {
		b.Run(mode, func(b *testing.B) {
			if b.N > 60000 {
				b.Skipf("%d flows per worker: more than the SNAT ports hold (use -benchtime 50000x)", b.N)
			}
			ws := make([]*datapath.Worker, len(stages)+1)
			for k := range ws {
				p := sim.NewPatcher(sim.Frame{Dst: vip4, Proto: 6, TCPFlags: sim.SYN}, clients4)
				var next uint32
				ws[k] = modeWorker(b, mode, pipeline.NewChain(stages[:k]...), b.N+64, func(buf []byte) int {
					next++
					return p.Write(buf, next, sim.SYN)
				})
			}
			b.ReportAllocs()
			b.ResetTimer()
			t := alternate(b, b.N, ws...)
			b.StopTimer()
			last := ws[len(ws)-1].Snapshot()
			if last.TxPackets != last.RxPackets || last.FlowHits != 0 {
				b.Fatalf("%s: %d of %d SYNs forwarded, %d hit an entry: %v", mode, last.TxPackets, last.RxPackets, last.FlowHits, last.Drops)
			}
			b.ReportMetric(t[0], "parse+link-ns")
			for k, s := range stages {
				b.ReportMetric(t[k+1]-t[k], s.Name()+"-ns")
			}
			b.ReportMetric(t[len(t)-1], "miss-ns")
		})
	}
}

// BenchmarkHitModes is an established packet (64-byte payload, a flow-table
// hit: only the per-packet stages run) of each forwarding mode, 65536 flows
// in random order per worker, in alternating rounds of one run: <mode>-ns
// per packet, and each mode's ratio to GUE (goal: nat/gue <= 1.2).
func BenchmarkHitModes(b *testing.B) {
	order := rand.New(rand.NewPCG(5, 6)).Perm(natBenchFlows)
	ws := make([]*datapath.Worker, len(forwardingModes))
	for i, mode := range forwardingModes {
		p := sim.NewPatcher(sim.Frame{Dst: vip4, Proto: 6, TCPFlags: sim.ACK, Payload: 64}, clients4)
		var k int
		flags := uint8(sim.SYN) // full-NAT binds on a SYN: the first round makes the entries
		ws[i] = modeWorker(b, mode, nil, natBenchFlows, func(buf []byte) int {
			j, f := order[k], flags
			if k++; k == len(order) {
				k, flags = 0, sim.ACK
			}
			return p.Write(buf, uint32(j), f)
		})
		poll(b, ws[i], natBenchFlows)
		if n := ws[i].Flows().Len(); n != natBenchFlows {
			b.Fatalf("%s: table holds %d flows, want %d", mode, n, natBenchFlows)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	t := alternate(b, b.N, ws...)
	b.StopTimer()
	for i, mode := range forwardingModes {
		c := ws[i].Snapshot()
		if c.FlowMisses != natBenchFlows || c.TxPackets != c.RxPackets {
			b.Fatalf("%s: %d misses, %d of %d sent: want only the warm-up's misses and every packet sent (%v)", mode, c.FlowMisses, c.TxPackets, c.RxPackets, c.Drops)
		}
		b.ReportMetric(t[i], mode+"-ns")
		if i > 0 {
			b.ReportMetric(t[i]/t[0], mode+"/gue")
		}
	}
}
