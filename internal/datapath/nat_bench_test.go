package datapath_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

// natBenchFlows fit the ports of two SNAT addresses (64512 each).
const natBenchFlows = 1 << 16

// BenchmarkForwardEstablishedNATvsGUE times an established TCP packet
// (64-byte payload) through parse -> flow table hit -> GUE encapsulation
// and through parse -> flow table hit -> full-NAT rewrite, each over its
// own worker with 65536 flows visited in random order, in alternating
// rounds of one run so that both see the same machine state. It reports
// ns/packet of each and their ratio (goal: nat/gue <= 1.2). ns/op is the
// pair.
func BenchmarkForwardEstablishedNATvsGUE(b *testing.B) {
	order := rand.New(rand.NewPCG(5, 6)).Perm(natBenchFlows)
	worker := func(nat bool) *datapath.Worker {
		p := sim.NewPatcher(sim.Frame{Dst: vip4, Proto: 6, TCPFlags: sim.ACK, Payload: 64}, clients4)
		var k int
		l := mem.New(mem.Config{BatchSize: 64, Source: func(buf []byte) int {
			i := order[k]
			if k++; k == len(order) {
				k = 0
			}
			return p.Write(buf, uint32(i), sim.ACK)
		}})
		c := datapath.Config{Links: []link.Link{l}, FlowCapacity: natBenchFlows}
		svc := service(vip4, backends4(100), nil)
		spec := pipeline.Spec{Seed: 1, MTU: 1500}
		if nat {
			snat := []netip.Addr{snat4, netip.MustParseAddr("198.18.40.12")}
			c.SNAT, spec.SNAT = snat, snat
			svc.NAT = true
		}
		spec.Services = []pipeline.ServiceSpec{svc}
		dp, err := datapath.New(c)
		if err != nil {
			b.Fatal(err)
		}
		g, err := pipeline.NewBuilder().Build(spec)
		if err != nil {
			b.Fatal(err)
		}
		dp.Apply(g)
		w := dp.Workers()[0]
		run(b, w, natBenchFlows) // one packet per flow creates every entry
		if n := w.Flows().Len(); n != natBenchFlows {
			b.Fatalf("table holds %d flows, want %d", n, natBenchFlows)
		}
		return w
	}
	gue, nat := worker(false), worker(true)
	const round = 64 * 256
	var tg, tn time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += round {
		n := min(round, b.N-done)
		t0 := time.Now()
		run(b, gue, n)
		t1 := time.Now()
		run(b, nat, n)
		tg += t1.Sub(t0)
		tn += time.Since(t1)
	}
	b.StopTimer()
	for _, w := range []*datapath.Worker{gue, nat} {
		if c := w.Snapshot(); c.FlowMisses != natBenchFlows {
			b.Fatalf("%d misses during the run, want only the %d of the warm-up", c.FlowMisses-natBenchFlows, natBenchFlows)
		}
	}
	if c := nat.Snapshot(); c.NAT.Forwarded < uint64(b.N) {
		b.Fatalf("%d packets rewritten by full-NAT, want %d", c.NAT.Forwarded, b.N)
	}
	b.ReportMetric(float64(tg.Nanoseconds())/float64(b.N), "gue-ns/pkt")
	b.ReportMetric(float64(tn.Nanoseconds())/float64(b.N), "nat-ns/pkt")
	b.ReportMetric(float64(tn)/float64(tg), "nat/gue")
}
