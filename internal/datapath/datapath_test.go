package datapath_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

func TestForwardFollowsMaglevAndKeepsInnerPacket(t *testing.T) {
	for _, tc := range []struct {
		name    string
		vip     netip.AddrPort
		clients sim.Clients
		bes     []netip.Addr
	}{
		{"ipv4", vip4, clients4, backends4(3)},
		{"ipv6", vip6, clients6, []netip.Addr{netip.MustParseAddr("2001:db8:1::11"), netip.MustParseAddr("2001:db8:1::12"), netip.MustParseAddr("2001:db8:1::13")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 1024)
			g := r.apply(pipeline.Spec{Seed: 7, Services: []pipeline.ServiceSpec{service(tc.vip, tc.bes, nil)}})
			used := map[netip.Addr]int{}
			for i := range uint32(200) {
				src := tc.clients.FlowSrc(i)
				want := ownerOf(g, src, tc.vip)
				for _, flags := range []uint8{sim.SYN, sim.ACK, sim.ACK | sim.PSH, sim.FIN | sim.ACK} {
					in := tcpFrame(src, tc.vip, flags)
					out := r.send(in)
					if len(out) != 1 {
						t.Fatalf("flow %d flags %#x: %d frames out, want 1", i, flags, len(out))
					}
					d := decode(t, out[0])
					if d.outerDst != want {
						t.Fatalf("flow %d went to %v, Maglev owner is %v", i, d.outerDst, want)
					}
					if d.udpDst != 6080 || len(d.hops) != 0 {
						t.Fatalf("GUE port %d hops %v", d.udpDst, d.hops)
					}
					if !bytes.Equal(d.inner, in[14:]) {
						t.Fatalf("inner packet changed:\n got % x\nwant % x", d.inner, in[14:])
					}
				}
				used[want]++
			}
			if len(used) != len(tc.bes) {
				t.Errorf("200 flows used %d of %d backends: %v", len(used), len(tc.bes), used)
			}
			c := r.counters()
			if c.RxPackets != 800 || c.TxPackets != 800 || c.FlowMisses != 200 || c.FlowHits != 600 {
				t.Errorf("counters rx %d tx %d misses %d hits %d, want 800 800 200 600", c.RxPackets, c.TxPackets, c.FlowMisses, c.FlowHits)
			}
		})
	}
}

// A flow keeps its backend when the backend set changes and its Maglev slot
// moves, as long as its backend stays; new flows follow the new table.
func TestFlowKeepsBackendAcrossGenerations(t *testing.T) {
	r := newRig(t, 4096)
	bes := backends4(4)
	r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{service(vip4, bes[:3], nil)}})
	first := map[uint32]netip.Addr{}
	for i := range uint32(1000) {
		first[i] = backendOf(t, r.send(tcpFrame(clients4.FlowSrc(i), vip4, sim.SYN))[0])
	}
	g2 := r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{service(vip4, bes, nil)}})
	moved := 0
	for i := range uint32(1000) {
		src := clients4.FlowSrc(i)
		got := backendOf(t, r.send(tcpFrame(src, vip4, sim.ACK))[0])
		if got != first[i] {
			t.Fatalf("flow %d moved from %v to %v after a backend was added", i, first[i], got)
		}
		if ownerOf(g2, src, vip4) != first[i] {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("no flow's slot changed owner: the test proves nothing")
	}
	t.Logf("%d of 1000 flows kept their backend although their slot moved", moved)
	// New flows use the new table, including the new backend.
	usedNew := false
	for i := uint32(5000); i < 5200; i++ {
		src := clients4.FlowSrc(i)
		got := backendOf(t, r.send(tcpFrame(src, vip4, sim.SYN))[0])
		if want := ownerOf(g2, src, vip4); got != want {
			t.Fatalf("new flow %d went to %v, owner %v", i, got, want)
		}
		usedNew = usedNew || got == bes[3]
	}
	if !usedNew {
		t.Error("no new flow reached the added backend")
	}
}

// Removing a backend reschedules only its flows; draining (weight 0) keeps
// them and sends it no new flows.
func TestRemoveAndDrain(t *testing.T) {
	bes := backends4(3)
	for _, mode := range []string{"remove", "drain"} {
		t.Run(mode, func(t *testing.T) {
			r := newRig(t, 4096)
			r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{service(vip4, bes, nil)}})
			first := map[uint32]netip.Addr{}
			for i := range uint32(600) {
				first[i] = backendOf(t, r.send(tcpFrame(clients4.FlowSrc(i), vip4, sim.SYN))[0])
			}
			spec := service(vip4, bes, map[netip.Addr]uint32{bes[1]: 0})
			if mode == "remove" {
				spec = service(vip4, []netip.Addr{bes[0], bes[2]}, nil)
			}
			r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{spec}})
			var onVictim int
			for i := range uint32(600) {
				got := backendOf(t, r.send(tcpFrame(clients4.FlowSrc(i), vip4, sim.ACK))[0])
				switch {
				case first[i] == bes[1] && mode == "drain":
					onVictim++
					if got != bes[1] {
						t.Fatalf("flow %d left draining backend for %v", i, got)
					}
				case first[i] == bes[1]:
					onVictim++
					if got == bes[1] {
						t.Fatalf("flow %d still sent to removed backend", i)
					}
				case got != first[i]:
					t.Fatalf("flow %d of surviving backend %v moved to %v", i, first[i], got)
				}
			}
			if onVictim == 0 {
				t.Fatal("no flow was on the changed backend")
			}
			for i := uint32(10000); i < 10300; i++ {
				if got := backendOf(t, r.send(tcpFrame(clients4.FlowSrc(i), vip4, sim.SYN))[0]); got == bes[1] {
					t.Fatalf("new flow %d sent to %s backend", i, mode)
				}
			}
		})
	}
}

func TestDropsAndPasses(t *testing.T) {
	r := newRig(t, 64)
	r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{service(vip4, backends4(2), nil)}})
	src := clients4.FlowSrc(1)

	notVIP := tcpFrame(src, netip.MustParseAddrPort("198.18.0.99:80"), sim.SYN)
	otherPort := tcpFrame(src, netip.AddrPortFrom(vip4.Addr(), 81), sim.SYN)
	truncated := tcpFrame(src, vip4, sim.SYN)[:30]
	arp := append(make([]byte, 12), 0x08, 0x06, 0, 1)
	later := tcpFrame(src, vip4, sim.ACK)
	later[14+6] = 0x00 // fragment offset 8 bytes: a later fragment
	later[14+7] = 0x01
	out := r.send(notVIP, otherPort, truncated, arp, later)
	if len(out) != 0 {
		t.Fatalf("%d frames forwarded, want none", len(out))
	}
	c := r.counters()
	if c.Passed != 2 {
		t.Errorf("passed %d, want 2", c.Passed)
	}
	if c.Parse[packet.Truncated] != 1 || c.Parse[packet.UnsupportedEtherType] != 1 {
		t.Errorf("parse drops %v", c.Parse)
	}
	if c.Drops[pipeline.ReasonParse] != 2 || c.Drops[pipeline.ReasonFragment] != 1 {
		t.Errorf("drops %v", c.Drops)
	}
	if c.RxPackets != 5 || c.TxPackets != 0 {
		t.Errorf("rx %d tx %d", c.RxPackets, c.TxPackets)
	}
}

// An ICMP fragmentation-needed about a reply the backend sent from the VIP
// reaches that flow's backend, and creates no flow entry.
func TestICMPErrorFollowsFlow(t *testing.T) {
	r := newRig(t, 1024)
	r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{service(vip4, backends4(5), nil)}})
	for i := range uint32(50) {
		src := clients4.FlowSrc(i)
		want := backendOf(t, r.send(tcpFrame(src, vip4, sim.SYN))[0])
		reply := tcpFrame(vip4, src, sim.SYN|sim.ACK)[14:]
		icmp := icmpFragNeeded(netip.MustParseAddr("198.18.0.1"), vip4.Addr(), reply)
		out := r.send(icmp)
		if len(out) != 1 {
			t.Fatalf("ICMP error: %d frames out", len(out))
		}
		if got := backendOf(t, out[0]); got != want {
			t.Fatalf("flow %d: ICMP error went to %v, flow is on %v", i, got, want)
		}
	}
	if n := r.dp.Workers()[0].Flows().Len(); n != 50 {
		t.Errorf("flow table has %d entries, want 50 (ICMP errors must not create flows)", n)
	}
}

// icmpFragNeeded builds an ICMPv4 type 3 code 4 from router to dst quoting
// the first 28 bytes of quoted.
func icmpFragNeeded(router, dst netip.Addr, quoted []byte) []byte {
	q := quoted[:28]
	b := make([]byte, 14+20+8+len(q))
	copy(b[0:6], lbMAC[:])
	copy(b[6:12], hopMAC[:])
	b[12], b[13] = 0x08, 0x00
	ip := b[14:34]
	ip[0] = 0x45
	ip[2], ip[3] = byte((20+8+len(q))>>8), byte(20+8+len(q))
	ip[8], ip[9] = 64, 1
	s, d := router.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	ic := b[34:]
	ic[0], ic[1] = 3, 4
	ic[6], ic[7] = 0x05, 0xdc // MTU 1500
	copy(ic[8:], q)
	return b
}

// Two LB nodes given the same backends in different orders send every flow
// to the same backend.
func TestNodesAgree(t *testing.T) {
	bes := backends4(20)
	shuffled := append([]netip.Addr(nil), bes...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	a, b := newRig(t, 4096), newRig(t, 4096)
	ga := a.apply(pipeline.Spec{Seed: 99, Services: []pipeline.ServiceSpec{service(vip4, bes, nil)}})
	gb := b.apply(pipeline.Spec{Seed: 99, Services: []pipeline.ServiceSpec{service(vip4, shuffled, nil)}})
	if fa, fb := ga.Services[0].Table.Fingerprint(), gb.Services[0].Table.Fingerprint(); fa != fb {
		t.Fatalf("fingerprints differ: %x vs %x", fa, fb)
	}
	for i := range uint32(2000) {
		f := tcpFrame(clients4.FlowSrc(i), vip4, sim.ACK)
		if x, y := backendOf(t, a.send(f)[0]), backendOf(t, b.send(f)[0]); x != y {
			t.Fatalf("flow %d: node a chose %v, node b %v", i, x, y)
		}
	}
}

// A mid-flow packet without an entry whose slot changed owner carries the
// hop list [owner, previous owner]; a SYN carries none.
func TestSecondChanceHopList(t *testing.T) {
	bes := backends4(4)
	svc := func(b []netip.Addr, filling bool) pipeline.ServiceSpec {
		s := service(vip4, b, nil)
		s.SecondChance = true
		if filling {
			s.Backends[len(s.Backends)-1].State = pipeline.BackendFilling
		}
		return s
	}
	r := newRig(t, 4096)
	g1 := r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{svc(bes[:3], false)}})
	// be4 is added filling: it owns its new slots, their previous owners
	// are the secondaries.
	g2 := r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{svc(bes, true)}})
	// A node that never saw the old table (restarted) builds the same.
	fresh := newRig(t, 4096)
	if gf := fresh.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{svc(bes, true)}}); gf.Services[0].Table.Fingerprint() != g2.Services[0].Table.Fingerprint() {
		t.Fatal("a fresh node builds another table than a node that lived through the change")
	}
	checked := 0
	for i := range uint32(500) {
		src := clients4.FlowSrc(i)
		was, now := ownerOf(g1, src, vip4), ownerOf(g2, src, vip4)
		for _, rr := range []*rig{r, fresh} {
			for range 2 { // no entry is made: every packet carries the list
				d := decode(t, rr.send(tcpFrame(src, vip4, sim.ACK))[0])
				if was == now {
					if len(d.hops) != 0 {
						t.Fatalf("flow %d: hops %v on an unchanged slot", i, d.hops)
					}
					continue
				}
				if len(d.hops) != 2 || d.hops[0] != now || d.hops[1] != was || d.outerDst != now {
					t.Fatalf("flow %d: dst %v hops %v, want [%v %v]", i, d.outerDst, d.hops, now, was)
				}
			}
		}
		if was != now {
			checked++
		}
	}
	if checked == 0 {
		t.Fatal("no slot changed: the test proves nothing")
	}
	if got := r.counters().HopList; got != uint64(2*checked) {
		t.Fatalf("hop-list counter %d, want %d", got, 2*checked)
	}
	// SYNs of new flows never carry hops, and make entries.
	for i := uint32(9000); i < 9300; i++ {
		if d := decode(t, r.send(tcpFrame(clients4.FlowSrc(i), vip4, sim.SYN))[0]); len(d.hops) != 0 {
			t.Fatalf("SYN with hops %v", d.hops)
		}
	}
	// be4 active: the owners do not change, so the node keeps the
	// secondaries of the change it saw: connections it moved keep their
	// second chance.
	r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{svc(bes, false)}})
	for i := range uint32(500) {
		src := clients4.FlowSrc(i)
		d := decode(t, r.send(tcpFrame(src, vip4, sim.ACK))[0])
		if was, now := ownerOf(g1, src, vip4), ownerOf(g2, src, vip4); was != now && len(d.hops) != 2 {
			t.Fatalf("flow %d: hops %v after the change completed", i, d.hops)
		}
	}
	// A node that starts after the change completed has no secondaries:
	// mid-flow packets make entries and carry only their backend.
	late := newRig(t, 4096)
	late.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{svc(bes, false)}})
	for i := range uint32(500) {
		if d := decode(t, late.send(tcpFrame(clients4.FlowSrc(i), vip4, sim.ACK))[0]); len(d.hops) != 0 {
			t.Fatalf("flow %d: hops %v on a node without a change", i, d.hops)
		}
	}
	if st := late.counters().Flows; st.Inserts != 500 {
		t.Fatalf("%d entries, want 500", st.Inserts)
	}
}

func TestZeroAllocsEstablished(t *testing.T) {
	const flows = 4096
	p := sim.NewPatcher(sim.Frame{Dst: vip4, Proto: 6, TCPFlags: sim.ACK, Payload: 64}, clients4)
	var next uint32
	dp, w := benchRig(t, flows, func(b []byte) int {
		next++
		return p.Write(b, next%flows, sim.ACK)
	})
	_ = dp
	for range flows / 64 * 2 {
		w.Poll()
	}
	if n := testing.AllocsPerRun(200, func() { w.Poll() }); n != 0 {
		t.Fatalf("Poll allocates %.1f times per batch", n)
	}
	if c := w.Snapshot(); c.TxPackets != c.RxPackets || c.FlowHits == 0 {
		t.Fatalf("rx %d tx %d hits %d", c.RxPackets, c.TxPackets, c.FlowHits)
	}
}

var _ = datapath.Counters{}

// Within one batch, inserting new flows moves entries of the table (Robin
// Hood shifts). Flows of an older generation handled in the same batch must
// still have their own entries updated: afterwards every flow keeps its
// backend and every packet of the next round hits a current entry.
func TestBatchMixingOldAndNewFlows(t *testing.T) {
	r := newRig(t, 512)
	bes := backends4(4)
	r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{service(vip4, bes[:3], nil)}})
	const old, fresh = 200, 200
	var frames [][]byte
	for i := range uint32(old) {
		frames = append(frames, tcpFrame(clients4.FlowSrc(i), vip4, sim.SYN))
	}
	first := map[uint32]netip.Addr{}
	for i, o := range r.send(frames...) {
		first[uint32(i)] = backendOf(t, o)
	}
	g2 := r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{service(vip4, bes, nil)}})

	// Interleave: old flow, new flow, old flow, ...
	frames = frames[:0]
	want := []netip.Addr{}
	for i := range uint32(old) {
		frames = append(frames, tcpFrame(clients4.FlowSrc(i), vip4, sim.ACK))
		want = append(want, first[i])
		src := clients4.FlowSrc(100000 + i)
		frames = append(frames, tcpFrame(src, vip4, sim.SYN))
		want = append(want, ownerOf(g2, src, vip4))
	}
	check := func(round string) {
		out := r.send(frames...)
		if len(out) != len(want) {
			t.Fatalf("%s: %d frames out, want %d", round, len(out), len(want))
		}
		for i, o := range out {
			if got := backendOf(t, o); got != want[i] {
				t.Fatalf("%s: packet %d went to %v, want %v", round, i, got, want[i])
			}
		}
	}
	check("mixed batch")
	before := r.counters()
	check("second round")
	after := r.counters()
	if hits := after.FlowHits - before.FlowHits; hits != uint64(len(frames)) {
		t.Fatalf("second round: %d of %d packets hit a current entry", hits, len(frames))
	}
	if n := r.dp.Workers()[0].Flows().Len(); n != old+fresh {
		t.Fatalf("table holds %d flows, want %d", n, old+fresh)
	}
}

// A backend whose next hop is unresolved keeps its Maglev slots (so all
// nodes agree) but its packets are dropped and counted, not sent to a bogus
// address; the other backends are unaffected.
func TestUnresolvedNextHop(t *testing.T) {
	bes := backends4(3)
	spec := service(vip4, bes, nil)
	spec.Backends[1].NoNextHop = true
	r := newRig(t, 1024)
	g := r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{spec}})
	dropped := 0
	for i := range uint32(300) {
		src := clients4.FlowSrc(i)
		out := r.send(tcpFrame(src, vip4, sim.SYN))
		if ownerOf(g, src, vip4) == bes[1] {
			dropped++
			if len(out) != 0 {
				t.Fatalf("flow %d to the unresolved backend was sent", i)
			}
			continue
		}
		if len(out) != 1 {
			t.Fatalf("flow %d: %d frames out", i, len(out))
		}
	}
	if c := r.counters(); dropped == 0 || c.Drops[pipeline.ReasonNoNextHop] != uint64(dropped) {
		t.Fatalf("%d flows owned by the unresolved backend, %d counted no_next_hop", dropped, c.Drops[pipeline.ReasonNoNextHop])
	}
}

// An ICMP error whose quote names no flow is dropped as icmp_unroutable,
// not treated as an ICMP packet for the VIP.
func TestICMPErrorWithoutQuote(t *testing.T) {
	r := newRig(t, 64)
	r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{service(vip4, backends4(2), nil)}})
	f := icmpFragNeeded(netip.MustParseAddr("198.18.0.1"), vip4.Addr(), tcpFrame(vip4, clients4.FlowSrc(1), sim.ACK)[14:])
	f = f[:14+20+8+1] // the quote is one byte
	f[16], f[17] = 0, 29
	if out := r.send(f); len(out) != 0 {
		t.Fatal("forwarded")
	}
	if c := r.counters(); c.Drops[pipeline.ReasonICMP] != 1 || c.Passed != 0 {
		t.Fatalf("drops %v passed %d", c.Drops, c.Passed)
	}
}

// Snapshots taken while workers start, run and stop never race with the
// workers (run with -race).
func TestSnapshotWhileRunning(t *testing.T) {
	p := sim.NewPatcher(sim.Frame{Dst: vip4, Proto: 6, TCPFlags: sim.ACK, Payload: 64}, clients4)
	var next uint32
	dp, _ := benchRig(t, 1024, func(b []byte) int {
		next++
		return p.Write(b, next%1024, sim.ACK)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dp.Run(ctx) }()
	var last uint64
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < 50 || last == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no packet processed in 5 s")
		}
		c := dp.Counters()
		if c.RxPackets < last {
			t.Fatalf("rx went back from %d to %d", last, c.RxPackets)
		}
		last = c.RxPackets
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c := dp.Counters(); c.RxPackets < last || c.RxPackets == 0 {
		t.Fatalf("final rx %d, last seen %d", c.RxPackets, last)
	}
}

// Query reads the flow tables of running workers between batches (the
// race detector checks it), and directly once they have stopped.
func TestQueryWhileRunning(t *testing.T) {
	p := sim.NewPatcher(sim.Frame{Dst: vip4, Proto: 6, TCPFlags: sim.ACK, Payload: 64}, clients4)
	var next uint32
	dp, _ := benchRig(t, 1024, func(b []byte) int {
		next++
		return p.Write(b, next%1024, sim.ACK)
	})
	flows := func() int {
		n := 0
		dp.QueryFlows(func(i int, ft *flow.Table) {
			if i != 0 {
				t.Errorf("worker %d", i)
			}
			n += ft.Len()
		})
		return n
	}
	if n := flows(); n != 0 {
		t.Fatalf("%d flows before start", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dp.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	n := 0
	for i := 0; i < 50 || n == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no flow in 5 s")
		}
		n = flows()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if m := flows(); m < n {
		t.Fatalf("%d flows after stop, %d seen", m, n)
	}
}

// Counters carry the flow table's size and lifetime counters, summed over
// workers: one insert per new flow, none for later packets.
func TestCountersFlowTable(t *testing.T) {
	r := newRig(t, 1024)
	r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{service(vip4, backends4(3), nil)}})
	for i := range uint32(20) {
		r.send(tcpFrame(clients4.FlowSrc(i), vip4, sim.SYN))
		r.send(tcpFrame(clients4.FlowSrc(i), vip4, sim.ACK))
	}
	c := r.counters()
	if c.Flows.Len != 20 || c.Flows.Inserts != 20 || c.Flows.Capacity != 1024 {
		t.Fatalf("flow stats %+v, want 20 entries from 20 inserts, capacity 1024", c.Flows)
	}
}

// A stateless service (affinity: stateless) keeps no flow entries: after a
// backend is added, a flow whose slot moved follows the new owner, where an
// on-change service keeps it on its backend.
func TestStatelessFollowsTable(t *testing.T) {
	bes := backends4(4)
	for _, stateless := range []bool{false, true} {
		r := newRig(t, 4096)
		svc := func(b []netip.Addr) pipeline.ServiceSpec {
			s := service(vip4, b, nil)
			s.Stateless = stateless
			s.SecondChance = stateless // a stateless service makes no entry even for second chance
			return s
		}
		r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{svc(bes[:3])}})
		first := map[uint32]netip.Addr{}
		for i := range uint32(500) {
			first[i] = backendOf(t, r.send(tcpFrame(clients4.FlowSrc(i), vip4, sim.SYN))[0])
		}
		if st := r.counters().Flows; stateless && st.Inserts != 0 {
			t.Fatalf("stateless service inserted %d flows", st.Inserts)
		}
		g2 := r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{svc(bes)}})
		moved, followed := 0, 0
		for i := range uint32(500) {
			src := clients4.FlowSrc(i)
			got := backendOf(t, r.send(tcpFrame(src, vip4, sim.ACK))[0])
			owner := ownerOf(g2, src, vip4)
			if owner != first[i] {
				moved++
				if got == owner {
					followed++
				}
			}
			if want := map[bool]netip.Addr{false: first[i], true: owner}[stateless]; got != want {
				t.Fatalf("stateless=%v: flow %d went to %v, want %v", stateless, i, got, want)
			}
		}
		if moved == 0 {
			t.Fatal("no slot moved: the test proves nothing")
		}
		if st := r.counters().Flows; stateless && st.Inserts != 0 {
			t.Fatalf("stateless service inserted %d flows", st.Inserts)
		}
		t.Logf("stateless=%v: %d slots moved, %d flows followed them", stateless, moved, followed)
	}
}
