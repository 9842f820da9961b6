package datapath_test

import (
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"slices"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/firewall"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

// chainRig is a worker with a chained service (affinity always) of three
// backends whose cluster numbers are 1000, 1001, 1002, and the worker's
// two queues to and from the node server.
type chainRig struct {
	*rig
	bes     []netip.Addr
	out     *pipeline.PublishQueue
	answers *pipeline.AnswerQueue
}

func newChainRig(t *testing.T, use pipeline.ChainUse) *chainRig {
	r := &rig{t: t, b: pipeline.NewBuilder()}
	return newChainRigLink(t, use, r, mem.Config{Sink: func(f []byte) { r.out = append(r.out, slices.Clone(f)) }})
}

func newChainRigLink(t *testing.T, use pipeline.ChainUse, r *rig, lc mem.Config) *chainRig {
	r.link = mem.New(lc)
	dp, err := datapath.New(datapath.Config{Links: []link.Link{r.link}, FlowCapacity: 4096, PublishQueue: 64})
	if err != nil {
		t.Fatal(err)
	}
	r.dp = dp
	bes := backends4(3)
	s := service(vip4, bes, nil)
	s.Chain, s.ClusterID = use, 0x77
	for i := range s.Backends {
		s.Backends[i].ClusterID = 1000 + uint32(i)
	}
	r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{s}})
	return &chainRig{rig: r, bes: bes, out: dp.PublishQueues()[0], answers: dp.AnswerQueues()[0]}
}

// records drains the worker's queue to the node server.
func (c *chainRig) records() []pipeline.Publish {
	var got []pipeline.Publish
	c.out.Drain(func(p *pipeline.Publish) { got = append(got, *p) })
	return got
}

// idle polls the worker once without traffic and returns what it sent.
func (c *chainRig) idle() [][]byte {
	c.rig.out = c.rig.out[:0]
	if _, err := c.dp.Workers()[0].Poll(); err != nil {
		c.t.Fatal(err)
	}
	return c.rig.out
}

func (c *chainRig) clusterID(be netip.Addr) uint32 {
	return 1000 + uint32(slices.Index(c.bes, be))
}

func (c *chainRig) other(be netip.Addr) netip.Addr {
	return c.bes[(slices.Index(c.bes, be)+1)%len(c.bes)]
}

// A mid-flow packet of a chained flow without an entry is held while the
// chain is asked; the answer — here another backend than the node's own
// decision — decides the flow: the held packets go there, the entry is
// created, later packets follow it without asking again.
func TestAskHoldsUntilTheChainAnswers(t *testing.T) {
	c := newChainRig(t, pipeline.ChainAlways)
	src := clients4.FlowSrc(1)
	g := c.dp.Generation()
	own := ownerOf(g, src, vip4)
	if out := c.send(tcpFrame(src, vip4, sim.ACK), tcpFrame(src, vip4, sim.ACK|sim.PSH)); len(out) != 0 {
		t.Fatalf("%d packets sent before the answer", len(out))
	}
	recs := c.records()
	key := flow.MakeKey(6, src, vip4)
	if len(recs) != 1 || !recs[0].Ask || recs[0].Key != key || recs[0].Service != 0x77 || recs[0].Backend != c.clusterID(own) {
		t.Fatalf("questions %+v, want one about %v proposing %d", recs, key, c.clusterID(own))
	}
	want := c.other(own)
	c.answers.Push(&pipeline.ChainAnswer{Key: key, Backend: c.clusterID(want), OK: true})
	out := c.idle()
	if len(out) != 2 || backendOf(t, out[0]) != want || backendOf(t, out[1]) != want {
		t.Fatalf("after the answer: %d packets, want 2 to %v", len(out), want)
	}
	if got := innerSrc(t, out[1]); got != src {
		t.Fatalf("released packet from %v, want %v", got, src)
	}
	out = c.send(tcpFrame(src, vip4, sim.ACK))
	if len(out) != 1 || backendOf(t, out[0]) != want || len(c.records()) != 0 {
		t.Fatalf("a later packet: %d sent, to %v", len(out), backendOf(t, out[0]))
	}
	ch := c.counters().Chain
	var waited uint64
	for _, n := range ch.Wait {
		waited += n
	}
	if waited != 1 {
		t.Fatalf("%d flows in the wait histogram, want 1: %v", waited, ch.Wait)
	}
	ch.Wait, ch.WaitSum = [len(datapath.AskWaitBounds) + 1]uint64{}, 0
	if ch != (datapath.ChainCounters{Asked: 1, Held: 2, Released: 2, Answered: 1, Moved: 1}) {
		t.Fatalf("counters %+v", ch)
	}
	// A flow's hold is bounded: past askPerFlow packets they are dropped
	// and counted.
	full := clients4.FlowSrc(9)
	for range 10 {
		c.send(tcpFrame(full, vip4, sim.ACK))
	}
	if got := c.counters(); got.Drops[pipeline.ReasonChainHold] != 2 || got.Chain.Held != 2+8 {
		t.Fatalf("10 packets of one flow: held %d, dropped %d; want 8 and 2", got.Chain.Held-2, got.Drops[pipeline.ReasonChainHold])
	}
	c.records()
	// A SYN starts a flow: decided here and published, never asked.
	syn := clients4.FlowSrc(2)
	if out := c.send(tcpFrame(syn, vip4, sim.SYN)); len(out) != 1 {
		t.Fatal("a SYN was held")
	}
	if recs := c.records(); len(recs) != 1 || recs[0].Ask {
		t.Fatalf("a SYN queued %+v", recs)
	}
}

// Without an answer in time, or with one that is not an answer, the worker
// decides locally, sends the held packets there and publishes its
// decision.
func TestAskFallsBackLocally(t *testing.T) {
	c := newChainRig(t, pipeline.ChainAlways)
	g := c.dp.Generation()
	late, failed := clients4.FlowSrc(3), clients4.FlowSrc(4)
	c.send(tcpFrame(late, vip4, sim.ACK), tcpFrame(failed, vip4, sim.ACK))
	if n := len(c.records()); n != 2 {
		t.Fatalf("%d questions", n)
	}
	c.answers.Push(&pipeline.ChainAnswer{Key: flow.MakeKey(6, failed, vip4)})
	out := c.idle()
	if len(out) != 1 || backendOf(t, out[0]) != ownerOf(g, failed, vip4) {
		t.Fatalf("after a failed answer: %d sent", len(out))
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(out) == 0 || innerSrc(t, out[0]) != late {
		if time.Now().After(deadline) {
			t.Fatal("the unanswered flow was never decided")
		}
		time.Sleep(5 * time.Millisecond)
		out = c.idle()
	}
	if backendOf(t, out[0]) != ownerOf(g, late, vip4) {
		t.Fatal("the timed-out flow did not go to its slot's owner")
	}
	recs := c.records()
	if len(recs) != 2 || recs[0].Ask || recs[1].Ask {
		t.Fatalf("local decisions published: %+v", recs)
	}
	ch := c.counters().Chain
	if ch.Failed != 1 || ch.Timeouts != 1 || ch.Released != 2 || ch.Answered != 0 {
		t.Fatalf("counters %+v", ch)
	}
}

// The chain's committed answer to a flow this node published (another node
// inserted it first) corrects the flow's entry.
func TestAskCorrectsPublishedEntry(t *testing.T) {
	c := newChainRig(t, pipeline.ChainAlways)
	src := clients4.FlowSrc(5)
	out := c.send(tcpFrame(src, vip4, sim.SYN))
	own := backendOf(t, out[0])
	c.records()
	want := c.other(own)
	c.answers.Push(&pipeline.ChainAnswer{Key: flow.MakeKey(6, src, vip4), Backend: c.clusterID(want), OK: true})
	c.idle()
	if out := c.send(tcpFrame(src, vip4, sim.ACK)); backendOf(t, out[0]) != want {
		t.Fatalf("after the correction the flow goes to %v, want %v", backendOf(t, out[0]), want)
	}
	if ch := c.counters().Chain; ch.Corrected != 1 || ch.Asked != 0 {
		t.Fatalf("counters %+v", ch)
	}
}

// On-change: only while a backend change is in flight, and only the flows
// of slots whose owner it changes, are chained; other flows are decided at
// once.
func TestAskOnlyChangedSlots(t *testing.T) {
	c := newChainRig(t, pipeline.ChainChanged)
	for i := range uint32(50) {
		if out := c.send(tcpFrame(clients4.FlowSrc(100+i), vip4, sim.ACK)); len(out) != 1 {
			t.Fatal("a packet was held with no backend change")
		}
	}
	if n := len(c.records()); n != 0 {
		t.Fatalf("%d records without a change", n)
	}
	// A fourth backend fills: the slots it takes changed owner.
	bes := backends4(4)
	s := service(vip4, bes, nil)
	s.Chain, s.ClusterID = pipeline.ChainChanged, 0x77
	for i := range s.Backends {
		s.Backends[i].ClusterID = 1000 + uint32(i)
	}
	s.Backends[3].State = pipeline.BackendFilling
	g := c.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{s}})
	held, sent := 0, 0
	for i := range uint32(200) {
		src := clients4.FlowSrc(1000 + i)
		out := c.send(tcpFrame(src, vip4, sim.ACK))
		k := flow.MakeKey(6, src, vip4)
		changed := g.Services[0].Chained(k.Hash(g.Seed))
		if changed != (len(out) == 0) {
			t.Fatalf("flow %d: chained %v, sent %d", i, changed, len(out))
		}
		if changed {
			held++
		} else {
			sent++
		}
	}
	if held == 0 || sent == 0 {
		t.Fatalf("held %d sent %d: want both", held, sent)
	}
	recs := c.records()
	if len(recs) != held {
		t.Fatalf("%d questions for %d held flows", len(recs), held)
	}
	// A mid-flow packet most likely belongs to a flow from before the
	// change: the question proposes the slot's previous owner.
	svc := g.Services[0]
	for _, r := range recs {
		_, prev := svc.Table.Slot(r.Key.Hash(g.Seed))
		if want := svc.Reals[prev].ClusterID; r.Backend != want || !r.Ask {
			t.Fatalf("question %+v, want the previous owner %d proposed", r, want)
		}
	}
	// The change completes: nothing is chained any more.
	s.Backends[3].State = pipeline.BackendActive
	c.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{s}})
	for i := range uint32(200) {
		src := clients4.FlowSrc(5000 + i)
		// (The questions above may time out meanwhile, on a slow run, and
		// their packets leave with this one.)
		out := c.send(tcpFrame(src, vip4, sim.ACK))
		if !slices.ContainsFunc(out, func(f []byte) bool { return innerSrc(t, f) == src }) {
			t.Fatal("a packet was held after the change completed")
		}
	}
}

// innerSrc returns the source of the TCP packet an encapsulated frame
// carries (decoded with gopacket).
func innerSrc(t *testing.T, frame []byte) netip.AddrPort {
	t.Helper()
	pkt := gopacket.NewPacket(decode(t, frame).inner, layers.LayerTypeIPv4, gopacket.Default)
	ip, ok1 := pkt.NetworkLayer().(*layers.IPv4)
	tcp, ok2 := pkt.TransportLayer().(*layers.TCP)
	if !ok1 || !ok2 {
		t.Fatalf("inner packet is not TCP/IPv4: %v", pkt)
	}
	a, _ := netip.AddrFromSlice(ip.SrcIP.To4())
	return netip.AddrPortFrom(a, uint16(tcp.SrcPort))
}

// Holding a packet, asking, and sending it on the answer allocate nothing.
func TestAskAllocs(t *testing.T) {
	const runs = 20
	sent, next, due := 0, 0, false
	frames := make([][]byte, runs+2)
	keys := make([]flow.Key, runs+2)
	for k := range keys {
		src := clients4.FlowSrc(uint32(10000 + k))
		keys[k] = flow.MakeKey(6, src, vip4)
		frames[k] = tcpFrame(src, vip4, sim.ACK)
	}
	// One new flow's packet per poll.
	source := func(b []byte) int {
		if !due {
			return 0
		}
		due = false
		next++
		return copy(b, frames[next-1])
	}
	c := newChainRigLink(t, pipeline.ChainAlways, &rig{t: t, b: pipeline.NewBuilder()},
		mem.Config{Source: source, Sink: func([]byte) { sent++ }})
	w := c.dp.Workers()[0]
	noop := func(*pipeline.Publish) {}
	i := 0
	allocs := testing.AllocsPerRun(runs, func() {
		due = true
		w.Poll() // releases flow i-1 (answered below), holds flow i
		c.out.Drain(noop)
		c.answers.Push(&pipeline.ChainAnswer{Key: keys[i], Backend: 1001, OK: true})
		i++
	})
	if allocs > 0 {
		t.Errorf("%v allocations per held, asked and released packet", allocs)
	}
	if ch := c.counters().Chain; ch.Asked != runs+1 || ch.Released < runs || sent < runs {
		t.Fatalf("counters %+v, %d sent", ch, sent)
	}
}

// A generation applied while a flow's packets are held may deny the flow:
// its firewall judges the held packets before they leave, and the flow's
// entry stays stale, so that its next packet runs every stage.
func TestAskHeldPacketsMeetTheNewFirewall(t *testing.T) {
	c := newChainRig(t, pipeline.ChainAlways)
	spec := func(def firewall.Action) pipeline.Spec {
		s := service(vip4, c.bes, nil)
		s.Chain, s.ClusterID = pipeline.ChainAlways, 0x77
		for i := range s.Backends {
			s.Backends[i].ClusterID = 1000 + uint32(i)
		}
		s.Firewall = mustSet(t, def)
		return pipeline.Spec{Services: []pipeline.ServiceSpec{s}}
	}
	c.apply(spec(firewall.Allow))
	src := clients4.FlowSrc(21)
	if out := c.send(tcpFrame(src, vip4, sim.ACK)); len(out) != 0 {
		t.Fatal("not held")
	}
	c.records()
	c.apply(spec(firewall.Deny))
	c.answers.Push(&pipeline.ChainAnswer{Key: flow.MakeKey(6, src, vip4), Backend: 1000, OK: true})
	if out := c.idle(); len(out) != 0 {
		t.Fatalf("%d held packets left after the new firewall denied their flow", len(out))
	}
	if got := c.counters(); got.Drops[pipeline.ReasonFirewallDeny] != 1 || got.Chain.Released != 0 {
		t.Fatalf("drops %v released %d", got.Drops, got.Chain.Released)
	}
	if out := c.send(tcpFrame(src, vip4, sim.ACK)); len(out) != 0 {
		t.Fatal("the flow's next packet got through the new firewall")
	}
}
