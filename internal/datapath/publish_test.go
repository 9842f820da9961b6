package datapath_test

import (
	"testing"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

// A service that publishes its flows queues each new flow once, with the
// cluster numbers of the service and of the backend it went to; later
// packets of the flow and other services queue nothing; a full queue drops
// and counts.
func TestPublishNewFlows(t *testing.T) {
	r := &rig{t: t, b: pipeline.NewBuilder()}
	r.link = mem.New(mem.Config{Sink: func(f []byte) { r.out = append(r.out, append([]byte(nil), f...)) }})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{r.link}, FlowCapacity: 4096, PublishQueue: 8})
	if err != nil {
		t.Fatal(err)
	}
	r.dp = dp
	q := dp.PublishQueues()
	if len(q) != 1 {
		t.Fatalf("%d queues for 1 worker", len(q))
	}
	bes := backends4(3)
	pub := service(vip4, bes, nil)
	pub.Chain, pub.ClusterID = pipeline.ChainAlways, 0x1234
	for i := range pub.Backends {
		pub.Backends[i].ClusterID = 1000 + uint32(i)
	}
	plain := service(vip6, nil, nil)
	plain.Backends = pub.Backends // IPv4 backends behind an IPv6 VIP: fine for the table
	r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{pub, plain}})

	for i := range uint32(5) {
		out := r.send(tcpFrame(clients4.FlowSrc(i), vip4, sim.SYN))
		be := backendOf(t, out[0])
		r.send(tcpFrame(clients4.FlowSrc(i), vip4, sim.ACK))
		var got []pipeline.Publish
		q[0].Drain(func(p *pipeline.Publish) { got = append(got, *p) })
		if len(got) != 1 {
			t.Fatalf("flow %d: %d records", i, len(got))
		}
		want := flow.MakeKey(6, clients4.FlowSrc(i), vip4)
		idx := -1
		for j, b := range bes {
			if b == be {
				idx = j
			}
		}
		if got[0].Key != want || got[0].Service != 0x1234 || got[0].Backend != 1000+uint32(idx) {
			t.Fatalf("flow %d to %v: record %+v", i, be, got[0])
		}
	}
	r.send(tcpFrame(clients6.FlowSrc(1), vip6, sim.SYN))
	if n := q[0].Drain(func(*pipeline.Publish) {}); n != 0 {
		t.Fatalf("a service that does not publish queued %d records", n)
	}
	for i := range uint32(20) {
		r.send(tcpFrame(clients4.FlowSrc(100+i), vip4, sim.SYN))
	}
	if pushed, dropped := q[0].Counts(); pushed != 5+8 || dropped != 12 {
		t.Fatalf("pushed %d dropped %d", pushed, dropped)
	}
}
