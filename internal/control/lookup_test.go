package control

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/control/controltest"
	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

// dpNode is a Node over a real datapath whose generations the test builds.
type dpNode struct {
	*controltest.Node // configuration and drain: not used
	dp                *datapath.Datapath
}

func newDPNode(dp *datapath.Datapath) *dpNode { return &dpNode{controltest.New(), dp} }

func (n *dpNode) Counters() datapath.Counters                   { return n.dp.Counters() }
func (n *dpNode) Generation() *pipeline.Generation              { return n.dp.Generation() }
func (n *dpNode) QueryFlows(fn func(worker int, t *flow.Table)) { n.dp.QueryFlows(fn) }
func (n *dpNode) FlowClock() uint32                             { return n.dp.Now() }

var (
	lkVIP  = netip.MustParseAddrPort("198.18.0.10:80")
	lkA    = netip.MustParseAddr("198.18.1.11")
	lkB    = netip.MustParseAddr("198.18.1.12")
	lkC    = netip.MustParseAddr("198.18.1.13")
	lkMAC1 = [6]byte{2, 0, 0, 0, 0, 1}
	lkMAC2 = [6]byte{2, 0, 0, 0, 0, 2}
)

func lkSpec(backends ...netip.Addr) pipeline.Spec {
	s := pipeline.ServiceSpec{Name: "web", Addr: lkVIP.Addr(), Proto: packet.ProtoTCP, Port: lkVIP.Port()}
	for _, b := range backends {
		s.Backends = append(s.Backends, pipeline.BackendSpec{Weight: 1, Tunnel: encap.Tunnel{
			Mode: encap.GUE, Src: netip.MustParseAddr("198.18.0.2"), Dst: b, SrcMAC: lkMAC2, DstMAC: lkMAC1,
		}})
	}
	return pipeline.Spec{Seed: 42, Services: []pipeline.ServiceSpec{s}}
}

func owner(g *pipeline.Generation, src netip.AddrPort) string {
	k := flow.MakeKey(packet.ProtoTCP, src, lkVIP)
	t := g.Services[0].Table
	return t.Backend(t.Lookup(k.Hash(g.Seed))).Name
}

// A flow keeps its backend through a change that moves its Maglev slot to
// another: the lookup says the flow entry sends it to the old backend while
// the slot's owner is the new one, and the datapath does send it there.
func TestLookupFlowRealDatapath(t *testing.T) {
	// A client whose slot moves from A or B to C when C joins.
	scratch := pipeline.NewBuilder()
	g1, _ := scratch.Build(lkSpec(lkA, lkB))
	g2, _ := scratch.Build(lkSpec(lkA, lkB, lkC))
	clients := sim.Clients{Prefix: netip.MustParsePrefix("198.18.128.0/17")}
	var src netip.AddrPort
	for i := uint32(0); ; i++ {
		src = clients.FlowSrc(i)
		if owner(g2, src) == lkC.String() {
			break
		}
	}
	old := owner(g1, src)

	var mu sync.Mutex
	var sent []netip.Addr // outer destinations
	ml := mem.New(mem.Config{Poll: time.Millisecond, Sink: func(f []byte) {
		var p packet.Parsed
		p.Decode(f)
		mu.Lock()
		sent = append(sent, netip.AddrFrom16(p.Tuple.Dst).Unmap())
		mu.Unlock()
	}})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{ml}, FlowCapacity: 1024})
	if err != nil {
		t.Fatal(err)
	}
	b := pipeline.NewBuilder()
	build := func(spec pipeline.Spec) *pipeline.Generation {
		g, err := b.Build(spec)
		if err != nil {
			t.Fatal(err)
		}
		dp.Apply(g)
		return g
	}
	gen1 := build(lkSpec(lkA, lkB))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dp.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	s := New(newDPNode(dp))

	send := func(flags uint8) netip.Addr {
		t.Helper()
		f := sim.Frame{SrcMAC: lkMAC1, DstMAC: lkMAC2, Src: src, Dst: lkVIP, Proto: packet.ProtoTCP, TCPFlags: flags, Payload: 20}
		buf := make([]byte, f.Len())
		f.Encode(buf)
		mu.Lock()
		n := len(sent)
		mu.Unlock()
		ml.Inject(buf)
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			mu.Lock()
			if len(sent) > n {
				a := sent[n]
				mu.Unlock()
				return a
			}
			mu.Unlock()
		}
		t.Fatal("nothing sent in 5 s")
		return netip.Addr{}
	}

	// Before any packet: no entry, the Maglev owner.
	l, err := s.LookupFlow(FlowQuery{VIP: "web", Src: src, DstPort: 0})
	if err != nil {
		t.Fatal(err)
	}
	if l.Reason != ReasonMaglev || l.Backend != old || l.MaglevOwner != old || len(l.Entries) != 0 || !l.FlowTables ||
		l.Dst != lkVIP.String() || l.Src != src.String() || l.Protocol != "tcp" {
		t.Fatalf("before: %+v", l)
	}
	if to := send(sim.SYN); to.String() != old {
		t.Fatalf("SYN went to %v, want %s", to, old)
	}

	// C joins, filling: the slot is C's, its previous owner the flow's
	// backend, and the flow stays on its backend.
	spec := lkSpec(lkA, lkB, lkC)
	spec.Services[0].Backends[2].State = pipeline.BackendFilling
	gen2 := build(spec)
	l, err = s.LookupFlow(FlowQuery{VIP: "web", Src: src, DstPort: 80})
	if err != nil {
		t.Fatal(err)
	}
	if l.Reason != ReasonFlowEntry || l.Backend != old || l.MaglevOwner != lkC.String() || l.MaglevPrevious != old ||
		l.DatapathGeneration != gen2.ID {
		t.Fatalf("after C joined: %+v", l)
	}
	want := FlowEntry{Worker: 0, Backend: old, InService: true, State: "syn", Generation: gen1.ID}
	if len(l.Entries) != 1 {
		t.Fatalf("entries %+v", l.Entries)
	}
	got := l.Entries[0]
	got.AgeMillis = 0
	if got != want || l.Entries[0].AgeMillis > 5000 {
		t.Fatalf("entry %+v, want %+v", l.Entries[0], want)
	}
	if l.Hash != func() uint64 { k := flow.MakeKey(6, src, lkVIP); return k.Hash(42) }() {
		t.Fatal("hash")
	}
	// ... and the datapath agrees.
	if to := send(sim.ACK); to.String() != old {
		t.Fatalf("ACK went to %v, want %s (the flow's backend)", to, old)
	}
	l, _ = s.LookupFlow(FlowQuery{VIP: "web", Src: src, DstPort: 0})
	if len(l.Entries) != 1 || l.Entries[0].State != "established" || l.Entries[0].Generation != gen2.ID {
		t.Fatalf("after ACK: %+v", l.Entries)
	}

	// The flow's backend leaves: rescheduled by Maglev.
	var rest []netip.Addr
	for _, a := range []netip.Addr{lkA, lkB, lkC} {
		if a.String() != old {
			rest = append(rest, a)
		}
	}
	build(lkSpec(rest...))
	l, _ = s.LookupFlow(FlowQuery{VIP: "web", Src: src, DstPort: 0})
	if l.Reason != ReasonMaglev || l.Backend != lkC.String() || len(l.Entries) != 1 || l.Entries[0].InService || l.Entries[0].Backend != "" {
		t.Fatalf("after %s left: %+v", old, l)
	}
	if to := send(sim.ACK); to != lkC {
		t.Fatalf("ACK went to %v, want %v", to, lkC)
	}
}

func TestLookupFlowRefusals(t *testing.T) {
	s, _ := newServer(t) // the fake: no workers
	src := netip.MustParseAddrPort("192.0.2.1:4000")
	if _, err := s.LookupFlow(FlowQuery{VIP: "nope", Src: src, DstPort: 0}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown vip: %v", err)
	}
	if _, err := s.LookupFlow(FlowQuery{VIP: "web", Src: netip.MustParseAddrPort("[2001:db8::1]:4000"), DstPort: 0}); !errors.Is(err, ErrInvalidQuery) {
		t.Fatalf("wrong family: %v", err)
	}
	if _, err := s.LookupFlow(FlowQuery{VIP: "web", Src: src, DstPort: 81}); !errors.Is(err, ErrInvalidQuery) {
		t.Fatalf("wrong port: %v", err)
	}
	l, err := s.LookupFlow(FlowQuery{VIP: "dns", Src: src, DstPort: 0})
	if err != nil || l.Reason != ReasonMaglev || l.Backend != "10.1.0.3" || l.Protocol != "udp" || l.Dst != "10.0.0.2:53" {
		t.Fatalf("%+v %v", l, err)
	}
	if _, err := s.LookupFlow(FlowQuery{VIP: "dns", Src: src, SYN: true}); !errors.Is(err, ErrInvalidQuery) {
		t.Fatalf("SYN to a UDP VIP: %v", err)
	}
}
