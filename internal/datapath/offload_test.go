package datapath_test

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/offload"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// fakeKernel is an offload.Kernel that keeps the map in Go.
type fakeKernel struct {
	mu      sync.Mutex
	flows   map[flow.Key]offload.Op
	gen     uint32
	tmpls   []offload.Template
	updates int
}

func (k *fakeKernel) Update(ops []offload.Op) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.updates++
	for _, op := range ops {
		if op.Del {
			delete(k.flows, op.Key)
		} else {
			k.flows[op.Key] = op
		}
	}
	return nil
}

func (k *fakeKernel) SetGeneration(id uint32, t []offload.Template) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gen, k.tmpls = id, slices.Clone(t)
	return nil
}

func (k *fakeKernel) Counters() (offload.Counters, error) {
	return offload.Counters{Forwarded: 5, Reals: []offload.RealCounters{{Packets: 5, Bytes: 500}}}, nil
}

// Active reports every installed flow as active.
func (k *fakeKernel) Active(keys []flow.Key, _ time.Duration) ([]flow.Key, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for key := range k.flows {
		keys = append(keys, key)
	}
	return keys, nil
}

func (k *fakeKernel) entry(key flow.Key) (offload.Op, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	op, ok := k.flows[key]
	return op, ok
}

func newOffloadRig(t *testing.T, timeouts flow.Timeouts) (*rig, *fakeKernel, *offload.Syncer) {
	k := &fakeKernel{flows: make(map[flow.Key]offload.Op)}
	r := &rig{t: t, b: pipeline.NewBuilder()}
	r.link = mem.New(mem.Config{Sink: func(f []byte) { r.out = append(r.out, slices.Clone(f)) }})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{r.link}, FlowCapacity: 1024, Offload: k, Timeouts: timeouts})
	if err != nil {
		t.Fatal(err)
	}
	r.dp = dp
	return r, k, dp.Syncer()
}

// The worker installs a TCP flow once established and a UDP flow at its
// second packet, removes a flow on FIN, and a new generation gives the
// kernel its templates and makes the flow's next packet reinstall it.
func TestOffloadInstallRemove(t *testing.T) {
	r, k, s := newOffloadRig(t, flow.Timeouts{})
	udpVIP := netip.MustParseAddrPort("198.18.0.10:53")
	spec := pipeline.Spec{Seed: 1, Services: []pipeline.ServiceSpec{service(vip4, backends4(3), nil)}}
	us := service(udpVIP, backends4(3), nil)
	us.Proto = 17
	spec.Services = append(spec.Services, us)
	g := r.apply(spec)
	if k.gen != g.ID || len(k.tmpls) != len(g.Reals) || !k.tmpls[0].Valid || !k.tmpls[0].GUE {
		t.Fatalf("kernel generation %d with %d templates; want %d with %d", k.gen, len(k.tmpls), g.ID, len(g.Reals))
	}
	cl := netip.MustParseAddrPort("198.18.200.1:40000")
	key := flow.MakeKey(6, cl, vip4)

	r.send(tcpFrame(cl, vip4, 0x02)) // SYN
	s.Sync()
	if _, ok := k.entry(key); ok {
		t.Fatal("installed after the SYN")
	}
	r.send(tcpFrame(cl, vip4, 0x10)) // the handshake's ACK
	s.Sync()
	op, ok := k.entry(key)
	if !ok || op.Gen != g.ID {
		t.Fatalf("not installed once established: %+v %v", op, ok)
	}
	var e flow.Entry
	r.dp.QueryFlows(func(_ int, t *flow.Table) { e = *t.Lookup(&key, key.Hash(g.Seed)) })
	if op.Real != e.Backend {
		t.Errorf("installed backend %d, entry's %d", op.Real, e.Backend)
	}
	// A packet in flight before the install landed does not queue another.
	r.send(tcpFrame(cl, vip4, 0x10))
	before := k.updates
	s.Sync()
	if k.updates != before {
		t.Error("a packet in flight queued a second install")
	}

	// UDP: the first packet is not installed, the second is.
	ucl := netip.MustParseAddrPort("198.18.200.2:5000")
	ukey := flow.MakeKey(17, ucl, udpVIP)
	r.send(udpFrame(ucl, udpVIP, []byte("query")))
	s.Sync()
	if _, ok := k.entry(ukey); ok {
		t.Fatal("UDP installed at its first packet")
	}
	r.send(udpFrame(ucl, udpVIP, []byte("query")))
	s.Sync()
	if _, ok := k.entry(ukey); !ok {
		t.Fatal("UDP not installed at its second packet")
	}

	// A new generation: the templates go first, the flow is reinstalled in
	// it by its next packet, with the same backend.
	g2 := r.apply(spec)
	if k.gen != g2.ID {
		t.Fatalf("kernel generation %d, want %d", k.gen, g2.ID)
	}
	r.send(tcpFrame(cl, vip4, 0x10))
	s.Sync()
	if op2, ok := k.entry(key); !ok || op2.Gen != g2.ID || op2.Real != op.Real {
		t.Fatalf("after a new generation: %+v %v; want generation %d backend %d", op2, ok, g2.ID, op.Real)
	}

	// FIN removes it.
	r.send(tcpFrame(cl, vip4, 0x11))
	s.Sync()
	if _, ok := k.entry(key); ok {
		t.Fatal("still installed after FIN")
	}

	c := r.counters()
	if !c.Offloaded || c.Offload.Forwarded != 5 || c.Offload.Installed != 3 || c.Offload.Deleted != 1 {
		t.Errorf("offload counters %+v", c.Offload)
	}
}

// An offloaded entry that leaves the worker's table (reaped) leaves the
// kernel's too.
func TestOffloadReapRemoves(t *testing.T) {
	r, k, s := newOffloadRig(t, flow.Timeouts{Established: 50 * time.Millisecond})
	r.apply(pipeline.Spec{Seed: 1, Services: []pipeline.ServiceSpec{service(vip4, backends4(2), nil)}})
	cl := netip.MustParseAddrPort("198.18.200.1:40001")
	key := flow.MakeKey(6, cl, vip4)
	r.send(tcpFrame(cl, vip4, 0x02), tcpFrame(cl, vip4, 0x10))
	s.Sync()
	if _, ok := k.entry(key); !ok {
		t.Fatal("not installed")
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		r.dp.Workers()[0].Poll() // idle polls reap
		s.Sync()
		if _, ok := k.entry(key); !ok {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("still installed after the entry expired")
}

// A flow the kernel forwards (Active) is kept in the worker's table by the
// refresh, however long its packets do not reach the worker.
func TestOffloadRefreshKeeps(t *testing.T) {
	r, k, s := newOffloadRig(t, flow.Timeouts{Established: 90 * time.Millisecond})
	r.apply(pipeline.Spec{Seed: 1, Services: []pipeline.ServiceSpec{service(vip4, backends4(2), nil)}})
	cl := netip.MustParseAddrPort("198.18.200.1:40003")
	key := flow.MakeKey(6, cl, vip4)
	r.send(tcpFrame(cl, vip4, 0x02), tcpFrame(cl, vip4, 0x10))
	s.Sync()
	for range 20 { // 400 ms, four times the timeout
		r.dp.RefreshOffloaded(nil)
		r.dp.Workers()[0].Poll()
		s.Sync()
		time.Sleep(20 * time.Millisecond)
	}
	if _, ok := k.entry(key); !ok {
		t.Fatal("an active offloaded flow expired")
	}
}

// What is never offloaded: flows through a second-chance hop list, and
// services without flow entries.
func TestOffloadExclusions(t *testing.T) {
	r, k, s := newOffloadRig(t, flow.Timeouts{})
	st := service(vip4, backends4(2), nil)
	st.Stateless = true
	r.apply(pipeline.Spec{Seed: 1, Services: []pipeline.ServiceSpec{st}})
	cl := netip.MustParseAddrPort("198.18.200.1:40002")
	r.send(tcpFrame(cl, vip4, 0x02), tcpFrame(cl, vip4, 0x10), tcpFrame(cl, vip4, 0x10))
	s.Sync()
	if len(k.flows) != 0 {
		t.Errorf("stateless service offloaded: %v", k.flows)
	}

	// Second chance with a backend filling: the flows of the slots it
	// takes stay in Go, the others are offloaded.
	sc := service(vip4, backends4(4), nil)
	sc.SecondChance = true
	sc.Backends[3].State = pipeline.BackendFilling
	g := r.apply(pipeline.Spec{Seed: 1, Services: []pipeline.ServiceSpec{sc}})
	svc := g.Services[0]
	moved, kept := 0, 0
	for i := range 200 {
		cl := netip.AddrPortFrom(netip.MustParseAddr("198.18.201.1"), uint16(20000+i))
		key := flow.MakeKey(6, cl, vip4)
		owner, prev := svc.Table.Slot(key.Hash(g.Seed))
		r.send(tcpFrame(cl, vip4, 0x02), tcpFrame(cl, vip4, 0x10))
		s.Sync()
		_, ok := k.entry(key)
		if owner != prev {
			moved++
			if ok {
				t.Fatalf("flow %v of a slot moving to the filling backend offloaded", cl)
			}
		} else {
			kept++
			if !ok {
				t.Fatalf("flow %v of a slot that keeps its owner not offloaded", cl)
			}
		}
	}
	if moved == 0 || kept == 0 {
		t.Fatalf("moved %d kept %d: the test proves nothing", moved, kept)
	}
}

// The worker's side of the offload allocates nothing: a batch costs the
// allocations of the in-memory rig (Inject's copies, the sink's clones),
// with and without the offload.
func TestOffloadZeroAlloc(t *testing.T) {
	spec := pipeline.Spec{Seed: 1, Services: []pipeline.ServiceSpec{service(vip4, backends4(2), nil)}}
	frames := make([][]byte, 0, 64)
	for i := range 32 {
		cl := netip.AddrPortFrom(netip.MustParseAddr("198.18.200.1"), uint16(30000+i))
		frames = append(frames, tcpFrame(cl, vip4, 0x10))
	}
	measure := func(r *rig, s *offload.Syncer) float64 {
		r.apply(spec)
		w := r.dp.Workers()[0]
		r.out = make([][]byte, 0, 4096)
		return testing.AllocsPerRun(50, func() {
			for _, f := range frames {
				r.link.Inject(f)
			}
			w.Poll()
			if s != nil {
				s.Sync()
			}
			r.out = r.out[:0]
		})
	}
	base := measure(newRig(t, 1024), nil)
	r, _, s := newOffloadRig(t, flow.Timeouts{})
	if got := measure(r, s); got > base {
		t.Errorf("%.0f allocations per batch with the offload, %.0f without", got, base)
	}
}

// A capture pauses the offload: the kernel's generation is one no entry
// has (every packet reaches the workers and the capture), nothing is
// installed meanwhile, and stopping it resumes the current generation.
func TestOffloadPausedByCapture(t *testing.T) {
	r, k, s := newOffloadRig(t, flow.Timeouts{})
	g := r.apply(pipeline.Spec{Seed: 1, Services: []pipeline.ServiceSpec{service(vip4, backends4(2), nil)}})
	c, err := r.dp.StartCapture(datapath.CaptureFilter{}, true, true)
	if err != nil {
		t.Fatal(err)
	}
	if k.gen == g.ID {
		t.Fatal("the kernel's generation is still the current one while capturing")
	}
	cl := netip.MustParseAddrPort("198.18.200.1:40009")
	r.send(tcpFrame(cl, vip4, 0x02), tcpFrame(cl, vip4, 0x10))
	s.Sync()
	if len(k.flows) != 0 {
		t.Fatalf("installed while capturing: %v", k.flows)
	}
	c.Stop()
	if k.gen != g.ID {
		t.Fatalf("after the capture: kernel generation %d, want %d", k.gen, g.ID)
	}
	r.send(tcpFrame(cl, vip4, 0x10))
	s.Sync()
	if _, ok := k.entry(flow.MakeKey(6, cl, vip4)); !ok {
		t.Fatal("not installed after the capture")
	}
}

// The offload running for real: workers, syncer and refresh goroutines
// (Datapath.Run), flows opened and closed while they run, a new
// generation and a capture meanwhile; run with -race. Every flow ends up
// installed and then removed.
func TestOffloadRun(t *testing.T) {
	k := &fakeKernel{flows: make(map[flow.Key]offload.Op)}
	l := mem.New(mem.Config{Sink: func([]byte) {}})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{l}, FlowCapacity: 1024, Offload: k, OffloadRefresh: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b := pipeline.NewBuilder()
	spec := pipeline.Spec{Seed: 1, Services: []pipeline.ServiceSpec{service(vip4, backends4(3), nil)}}
	g, err := b.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	dp.Apply(g)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- dp.Run(ctx) }()
	const n = 50
	cls := make([]netip.AddrPort, n)
	for i := range cls {
		cls[i] = netip.AddrPortFrom(netip.MustParseAddr("198.18.202.1"), uint16(10000+i))
		l.Inject(tcpFrame(cls[i], vip4, 0x02))
		l.Inject(tcpFrame(cls[i], vip4, 0x10))
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	count := func() int { k.mu.Lock(); defer k.mu.Unlock(); return len(k.flows) }
	waitFor("every flow installed", func() bool { return count() == n })
	c, err := dp.StartCapture(datapath.CaptureFilter{Tenant: -1}, true, false)
	if err != nil {
		t.Fatal(err)
	}
	c.Stop()
	g2, err := b.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	dp.Apply(g2)
	for _, cl := range cls {
		l.Inject(tcpFrame(cl, vip4, 0x10))
	}
	waitFor("every flow reinstalled in the new generation", func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		for _, op := range k.flows {
			if op.Gen != g2.ID {
				return false
			}
		}
		return len(k.flows) == n
	})
	time.Sleep(50 * time.Millisecond) // a few refreshes
	for _, cl := range cls {
		l.Inject(tcpFrame(cl, vip4, 0x11))
	}
	waitFor("every flow removed", func() bool { return count() == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A delete the full ring refuses is kept and queued again: no flow the
// worker forgot stays in the kernel.
func TestOffloadDeleteRetried(t *testing.T) {
	k := &fakeKernel{flows: make(map[flow.Key]offload.Op)}
	r := &rig{t: t, b: pipeline.NewBuilder()}
	r.link = mem.New(mem.Config{Sink: func([]byte) {}})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{r.link}, FlowCapacity: 1024, Offload: k, OffloadRing: 2})
	if err != nil {
		t.Fatal(err)
	}
	r.dp = dp
	s := dp.Syncer()
	r.apply(pipeline.Spec{Seed: 1, Services: []pipeline.ServiceSpec{service(vip4, backends4(2), nil)}})
	var cls []netip.AddrPort
	for i := range 6 {
		cl := netip.AddrPortFrom(netip.MustParseAddr("198.18.203.1"), uint16(30000+i))
		cls = append(cls, cl)
		r.send(tcpFrame(cl, vip4, 0x02), tcpFrame(cl, vip4, 0x10))
		s.Sync()
	}
	if len(k.flows) != 6 {
		t.Fatalf("%d installed, want 6", len(k.flows))
	}
	for _, cl := range cls { // six FINs into a ring of two, no sync between
		r.send(tcpFrame(cl, vip4, 0x11))
	}
	for range 4 {
		s.Sync()
		r.dp.Workers()[0].Poll() // idle: the kept deletes go
	}
	s.Sync()
	if len(k.flows) != 0 {
		t.Fatalf("%d flows left in the kernel after their FINs", len(k.flows))
	}
	c := r.counters()
	if c.Offload.RingFull == 0 || c.Offload.DeletesLost != 0 {
		t.Errorf("ring full %d (want > 0), deletes lost %d", c.Offload.RingFull, c.Offload.DeletesLost)
	}
}

// A full-NAT flow is installed with its binding (SNAT address index and
// port) once established, and the kernel gets the backends' NAT templates.
func TestOffloadNATInstall(t *testing.T) {
	k := &fakeKernel{flows: make(map[flow.Key]offload.Op)}
	r := &rig{t: t, b: pipeline.NewBuilder()}
	r.link = mem.New(mem.Config{Sink: func([]byte) {}})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{r.link}, FlowCapacity: 1024, Offload: k,
		SNAT: []netip.Addr{snat4, snat6}})
	if err != nil {
		t.Fatal(err)
	}
	r.dp = dp
	g := r.apply(pipeline.Spec{Seed: 1, SNAT: []netip.Addr{snat4, snat6}, Services: []pipeline.ServiceSpec{natService(vip4, backends4(2), nil)}})
	if !k.tmpls[0].NAT[0].Valid || k.tmpls[0].Valid {
		t.Fatalf("backend 0's templates: %+v", k.tmpls[0])
	}
	cl := netip.MustParseAddrPort("198.18.204.1:41000")
	key := flow.MakeKey(6, cl, vip4)
	r.send(tcpFrame(cl, vip4, 0x02), tcpFrame(cl, vip4, 0x10))
	dp.Syncer().Sync()
	op, ok := k.entry(key)
	if !ok || !op.NAT {
		t.Fatalf("full-NAT flow not installed as one: %+v %v", op, ok)
	}
	var e flow.Entry
	dp.QueryFlows(func(_ int, t *flow.Table) { e = *t.Lookup(&key, key.Hash(g.Seed)) })
	if op.Sport != e.NATPort || op.NATAddr != e.NATAddr || op.Real != e.Backend || e.NATPort == 0 {
		t.Errorf("installed %+v, entry port %d address %d backend %d", op, e.NATPort, e.NATAddr, e.Backend)
	}
	r.send(tcpFrame(cl, vip4, 0x11))
	dp.Syncer().Sync()
	if _, ok := k.entry(key); ok {
		t.Error("full-NAT flow still installed after its FIN")
	}
}
