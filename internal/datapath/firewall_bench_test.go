package datapath_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/firewall"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

// benchRules is a rule list of n rules that deny TCP port 80 from
// 10.x.y.0/24 prefixes no client is in (the default allows).
func benchRules(tb testing.TB, n int) *firewall.Set {
	var rules []firewall.Rule
	for i := range n {
		rules = append(rules, firewall.Rule{Action: firewall.Deny, Proto: 6,
			Src: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24), DstPorts: firewall.PortRange{Lo: 80, Hi: 80}})
	}
	set, err := firewall.Compile(rules, firewall.Allow)
	if err != nil {
		tb.Fatal(err)
	}
	return set
}

// BenchmarkForwardSYNFirewall is BenchmarkForwardSYN (a new flow's SYN,
// 1M established flows in the table) with a rule list of 0 (no firewall),
// 10 and 100 rules on the VIP, none of which matches the clients (the
// default allows): the difference is the firewall stage's cost on a miss.
// Established packets do not run it (BenchmarkForwardEstablished).
func BenchmarkForwardSYNFirewall(b *testing.B) {
	for _, n := range []int{0, 10, 100} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			svc := service(vip4, backends4(100), nil)
			if n > 0 {
				svc.Firewall = benchRules(b, n)
			}
			p := sim.NewPatcher(sim.Frame{Dst: vip4, Proto: 6, TCPFlags: sim.SYN}, clients4)
			var next uint32
			l := mem.New(mem.Config{BatchSize: 64, Source: func(buf []byte) int {
				next++
				return p.Write(buf, next, sim.SYN)
			}})
			dp, err := datapath.New(datapath.Config{Links: []link.Link{l}, FlowCapacity: benchFlows + b.N + 64})
			if err != nil {
				b.Fatal(err)
			}
			g, err := pipeline.NewBuilder().Build(pipeline.Spec{Seed: 1, MTU: 1500, Services: []pipeline.ServiceSpec{svc}})
			if err != nil {
				b.Fatal(err)
			}
			dp.Apply(g)
			w := dp.Workers()[0]
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
			if c := w.Snapshot(); n > 0 && c.Firewall[pipeline.RuleKey{VIP: svc.Name, Rule: "default"}] == 0 {
				b.Fatalf("the firewall did not run: %v", c.Firewall)
			}
		})
	}
}
