package datapath_test

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/fastpath"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/offload"
	"github.com/sluicelb/sluice/internal/pipeline"
)

var fpKey = fastpath.Key([]byte("fastpath-key-0123456789"))

// fakeAgent is a client host's agent on loopback: it reads what the node
// sends and answers with what the test says.
type fakeAgent struct {
	t     *testing.T
	conn  *net.UDPConn
	codec *fastpath.Codec
}

func (a *fakeAgent) read(wait time.Duration) (fastpath.Message, netip.AddrPort, bool) {
	a.t.Helper()
	buf := make([]byte, 2048)
	a.conn.SetReadDeadline(time.Now().Add(wait))
	for {
		n, from, err := a.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return fastpath.Message{}, netip.AddrPort{}, false
		}
		var m fastpath.Message
		if err := a.codec.Open(buf[:n], &m); err != nil {
			a.t.Fatalf("the node sent something the agent cannot open: %v", err)
		}
		return m, from, true
	}
}

func (a *fakeAgent) reply(to netip.AddrPort, t fastpath.Type, id uint64, st fastpath.Status, flows ...fastpath.Flow) {
	a.t.Helper()
	m := fastpath.Message{Type: t, ID: id, TimeMs: uint64(time.Now().UnixMilli()), Count: len(flows)}
	for i, f := range flows {
		m.Entries[i] = fastpath.Entry{Flow: f, Status: st}
	}
	b, err := a.codec.Seal(nil, &m)
	if err != nil {
		a.t.Fatal(err)
	}
	if _, err := a.conn.WriteToUDPAddrPort(b, to); err != nil {
		a.t.Fatal(err)
	}
}

func newFastpathRig(t *testing.T, retry time.Duration) (*rig, *fakeAgent) {
	return newFastpathRigIdle(t, retry, time.Minute)
}

func newFastpathRigIdle(t *testing.T, retry, idle time.Duration) (*rig, *fakeAgent) {
	r, a, start := newFastpathRigPaused(t, retry, idle)
	start()
	return r, a
}

// newFastpathRigPaused is newFastpathRigIdle with the Redirector started
// only by start: the workers queue flows meanwhile.
func newFastpathRigPaused(t *testing.T, retry, idle time.Duration) (*rig, *fakeAgent, func()) {
	return newFastpathRigConfig(t, retry, idle, func(*datapath.Config) {})
}

// newFastpathRigConfig is newFastpathRigPaused with the datapath's config
// amended by with.
func newFastpathRigConfig(t *testing.T, retry, idle time.Duration, with func(*datapath.Config)) (*rig, *fakeAgent, func()) {
	node, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ac, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ac.Close(); node.Close() })
	r := &rig{t: t, b: pipeline.NewBuilder()}
	r.link = mem.New(mem.Config{Sink: func(f []byte) { r.out = append(r.out, slices.Clone(f)) }})
	cfg := datapath.Config{Links: []link.Link{r.link}, FlowCapacity: 1024, Fastpath: &datapath.FastpathConfig{
		Conn: node, Key: fpKey, Port: uint16(ac.LocalAddr().(*net.UDPAddr).Port), Idle: idle,
	}}
	with(&cfg)
	dp, err := datapath.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.dp = dp
	dp.Redirector().SetAgentAddr(ac.LocalAddr().(*net.UDPAddr).AddrPort())
	if retry != 0 {
		dp.Redirector().SetRetry(retry)
	}
	start := func() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { dp.Redirector().Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	return r, &fakeAgent{t: t, conn: ac, codec: fastpath.NewCodec(fpKey)}, start
}

// fastpathSpec is a spec of one TCP service on vip4 with n backends whose
// fastpath clients are 198.18.100.0/24 and loopback (the fake agent).
func fastpathSpec(n int) pipeline.Spec {
	spec := pipeline.Spec{Seed: 1, Services: []pipeline.ServiceSpec{service(vip4, backends4(n), nil)}}
	spec.Services[0].Fastpath = []netip.Prefix{netip.MustParsePrefix("198.18.100.0/24"), netip.MustParsePrefix("127.0.0.0/8")}
	return spec
}

// A flow queued by its worker whose backend starts draining before the
// Redirector takes it is not offered (no redirect could be cancelled
// later); the control, without the drain, is.
func TestFastpathDrainingNotOffered(t *testing.T) {
	for _, drain := range []bool{false, true} {
		r, agent, start := newFastpathRigPaused(t, 0, time.Minute)
		spec := fastpathSpec(1)
		r.apply(spec)
		cl := netip.MustParseAddrPort("198.18.100.1:40004")
		r.send(tcpFrame(cl, vip4, 0x02), tcpFrame(cl, vip4, 0x10))
		if drain {
			spec.Services[0].Backends[0].Weight = 0
			r.apply(spec)
		}
		start()
		m, _, ok := agent.read(500 * time.Millisecond)
		if drain && ok {
			t.Errorf("a flow of a draining backend offered: %+v", m)
		}
		if !drain && (!ok || m.Type != fastpath.Redirect) {
			t.Errorf("control: not offered: %v %+v", ok, m)
		}
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(3 * time.Second); !ok(); {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// An established flow from a fastpath client is offered to its agent once,
// with the backend and outer source port the node itself writes; the offer
// is sent again until acknowledged; a refresh is taken; draining the
// backend cancels the redirect. A flow from another client is not offered.
func TestFastpathRedirect(t *testing.T) {
	r, agent := newFastpathRig(t, 0)
	spec := fastpathSpec(3)
	r.apply(spec)
	fp := r.dp.Redirector()

	cl := netip.MustParseAddrPort("198.18.100.1:40000")
	want := fastpath.Flow{Proto: 6, Client: cl, VIP: vip4}
	r.send(tcpFrame(cl, vip4, 0x02))
	if _, _, ok := agent.read(150 * time.Millisecond); ok {
		t.Fatal("offered at the SYN")
	}
	out := r.send(tcpFrame(cl, vip4, 0x10))
	if len(out) != 1 {
		t.Fatalf("%d frames out", len(out))
	}
	d := decode(t, out[0])
	sport := binary.BigEndian.Uint16(out[0][14+20:]) // outer UDP source port

	m, from, ok := agent.read(time.Second)
	if !ok || m.Type != fastpath.Redirect || m.Count != 1 {
		t.Fatalf("no redirect: %v %+v", ok, m)
	}
	e := m.Entries[0]
	if e.Flow != want || e.Backend != d.outerDst || e.Port != 6080 || e.SrcPort != sport {
		t.Fatalf("redirect %+v; want flow %v backend %v port 6080 source port %d", e, want, d.outerDst, sport)
	}
	// Not acknowledged: sent again, under a new ID.
	m2, _, ok := agent.read(time.Second)
	if !ok || m2.Type != fastpath.Redirect || m2.ID == m.ID || m2.Entries[0].Flow != want {
		t.Fatalf("no resend: %v %+v", ok, m2)
	}
	// An ack of the first send is stale; of the last, taken.
	agent.reply(from, fastpath.Ack, m.ID, fastpath.StatusInstalled, want)
	agent.reply(from, fastpath.Ack, m2.ID, fastpath.StatusInstalled, want)
	waitFor(t, "the install", func() bool { c := fp.Counters(); return c.Installed == 1 && c.Active == 1 && c.Pending == 0 })
	if l := fp.List(context.Background(), 0); len(l) != 1 || l[0].State != "installed" || l[0].Backend != d.outerDst {
		t.Fatalf("list %+v", l)
	}
	// The flow's later packets are still forwarded, and not offered again.
	if out := r.send(tcpFrame(cl, vip4, 0x10)); len(out) != 1 || backendOf(t, out[0]) != d.outerDst {
		t.Fatal("later packet not forwarded to the same backend")
	}
	if m, _, ok := agent.read(300 * time.Millisecond); ok {
		t.Fatalf("sent again after the ack: %+v", m)
	}
	agent.reply(from, fastpath.Refresh, 99, fastpath.StatusNone, want)
	waitFor(t, "the refresh", func() bool { return fp.Counters().Refreshes == 1 })

	// A client outside the prefixes is not offered.
	other := netip.MustParseAddrPort("198.18.200.1:40000")
	r.send(tcpFrame(other, vip4, 0x02), tcpFrame(other, vip4, 0x10))
	if m, _, ok := agent.read(200 * time.Millisecond); ok {
		t.Fatalf("offered a flow from outside the prefixes: %+v", m)
	}

	// A forged ack is refused.
	forger := &fakeAgent{t: t, conn: agent.conn, codec: fastpath.NewCodec(fastpath.Key([]byte("not-the-key-0123456789")))}
	forger.reply(from, fastpath.Ack, m2.ID, fastpath.StatusInstalled, want)
	waitFor(t, "the forged ack's count", func() bool { return fp.Counters().BadAuth == 1 })

	// Draining the backend cancels the redirect.
	spec.Services[0].Backends = slices.DeleteFunc(spec.Services[0].Backends, func(b pipeline.BackendSpec) bool { return b.Tunnel.Dst == d.outerDst })
	r.apply(spec)
	c, _, ok := agent.read(time.Second)
	if !ok || c.Type != fastpath.Cancel || c.Count != 1 || c.Entries[0].Flow != want {
		t.Fatalf("no cancel: %v %+v", ok, c)
	}
	agent.reply(from, fastpath.Ack, c.ID, fastpath.StatusInstalled, want)
	waitFor(t, "the cancel's ack", func() bool { c := fp.Counters(); return c.CancelAcked == 1 && c.Active == 0 })
	if l := fp.List(context.Background(), 0); len(l) != 0 {
		t.Fatalf("still held after the cancel: %+v", l)
	}
	if c := fp.Counters(); c.Offered != 1 || c.Cancelled != 1 || c.Sent != 3 {
		t.Errorf("counters %+v", c)
	}
}

// A refused redirect is forgotten and counted by status; an unanswered
// one is cancelled after its resends; a refresh of a flow the node does not
// hold is answered with a cancel.
func TestFastpathRefusedAndUnacked(t *testing.T) {
	r, agent := newFastpathRig(t, 20*time.Millisecond)
	spec := fastpathSpec(2)
	fp := r.dp.Redirector()
	r.apply(spec)
	a := netip.MustParseAddrPort("198.18.100.1:40001")
	b := netip.MustParseAddrPort("198.18.100.1:40002")
	r.send(tcpFrame(a, vip4, 0x02), tcpFrame(a, vip4, 0x10))
	m, from, ok := agent.read(time.Second)
	if !ok {
		t.Fatal("no redirect")
	}
	agent.reply(from, fastpath.Ack, m.ID, fastpath.StatusBackend, m.Entries[0].Flow)
	waitFor(t, "the refusal", func() bool {
		c := fp.Counters()
		return c.Refused == 1 && c.RefusedBy[fastpath.StatusBackend] == 1 && c.Pending == 0
	})
	// Unanswered: sent 6 times, then cancelled (the agent may have
	// installed it and lost only the acks).
	r.send(tcpFrame(b, vip4, 0x02), tcpFrame(b, vip4, 0x10))
	sends := 0
	var cancel fastpath.Message
	for {
		m, _, ok := agent.read(time.Second)
		if !ok {
			t.Fatalf("no cancel after %d sends of an unanswered redirect", sends)
		}
		if m.Entries[0].Flow.Client != b {
			continue
		}
		if m.Type == fastpath.Cancel {
			cancel = m
			break
		}
		sends++
	}
	if sends != 6 {
		t.Errorf("%d sends of an unanswered redirect, want 6", sends)
	}
	agent.reply(from, fastpath.Ack, cancel.ID, fastpath.StatusInstalled, cancel.Entries[0].Flow)
	waitFor(t, "the cancel of the unanswered redirect", func() bool {
		c := fp.Counters()
		return c.Unacked == 1 && c.Cancelled == 1 && c.CancelAcked == 1 && c.Pending == 0
	})
	if l := fp.List(context.Background(), 0); len(l) != 0 {
		t.Fatalf("held: %+v", l)
	}

	// A refresh of a flow the node does not hold (given up above, or
	// from before a restart) is answered with a cancel, every time.
	for i := range 2 {
		agent.reply(from, fastpath.Refresh, uint64(100+i), fastpath.StatusNone, cancel.Entries[0].Flow)
		m, _, ok := agent.read(time.Second)
		if !ok || m.Type != fastpath.Cancel || m.Count != 1 || m.Entries[0].Flow != cancel.Entries[0].Flow {
			t.Fatalf("refresh %d of an unknown flow: %v %+v, want its cancel", i, ok, m)
		}
	}
	waitFor(t, "the orphans' count", func() bool { c := fp.Counters(); return c.Orphans == 2 && c.Pending == 0 })
}

// A redirect no refresh keeps (the agent restarted, and lost its map) is
// forgotten after node.fastpath.idle, and the flow, whose packets come
// through the node again, is offered again.
func TestFastpathExpiredOfferedAgain(t *testing.T) {
	r, agent := newFastpathRigIdle(t, 0, 500*time.Millisecond)
	spec := fastpathSpec(2)
	r.apply(spec)
	fp := r.dp.Redirector()
	cl := netip.MustParseAddrPort("198.18.100.1:40003")
	r.send(tcpFrame(cl, vip4, 0x02), tcpFrame(cl, vip4, 0x10))
	m, from, ok := agent.read(time.Second)
	if !ok || m.Type != fastpath.Redirect {
		t.Fatalf("no redirect: %v %+v", ok, m)
	}
	agent.reply(from, fastpath.Ack, m.ID, fastpath.StatusInstalled, m.Entries[0].Flow)
	waitFor(t, "the install", func() bool { return fp.Counters().Active == 1 })
	waitFor(t, "the expiry", func() bool { c := fp.Counters(); return c.Expired == 1 && c.Active == 0 })
	r.send(tcpFrame(cl, vip4, 0x10))
	m2, _, ok := agent.read(time.Second)
	if !ok || m2.Type != fastpath.Redirect || m2.Entries[0].Flow != m.Entries[0].Flow || m2.Entries[0].Backend != m.Entries[0].Backend {
		t.Fatalf("the expired flow's next packet: %v %+v, want it offered again to the same backend", ok, m2)
	}
	if c := fp.Counters(); c.Offered != 2 {
		t.Errorf("offered %d, want 2", c.Offered)
	}
}

// The workers' side of the fastpath allocates nothing: a batch of
// established flows from fastpath clients, offered (queued once) and then
// forwarded while marked, costs what the same batch costs without it.
func TestFastpathZeroAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	spec := pipeline.Spec{Seed: 1, Services: []pipeline.ServiceSpec{service(vip4, backends4(2), nil)}}
	frames := make([][]byte, 0, 64)
	for i := range 32 {
		cl := netip.AddrPortFrom(netip.MustParseAddr("198.18.100.1"), uint16(30000+i))
		frames = append(frames, tcpFrame(cl, vip4, 0x02), tcpFrame(cl, vip4, 0x10))
	}
	measure := func(r *rig) float64 {
		r.apply(spec)
		w := r.dp.Workers()[0]
		r.out = make([][]byte, 0, 4096)
		return testing.AllocsPerRun(50, func() {
			for _, f := range frames {
				r.link.Inject(f)
			}
			for n := 0; n < len(frames); {
				k, _ := w.Poll()
				if k == 0 {
					break
				}
				n += k
			}
			r.out = r.out[:0]
		})
	}
	base := measure(newRig(t, 1024))
	r, _ := newFastpathRig(t, 0)
	spec.Services[0].Fastpath = []netip.Prefix{netip.MustParsePrefix("198.18.100.0/24")}
	if got := measure(r); got > base {
		t.Errorf("%.0f allocations per batch with the fastpath, %.0f without", got, base)
	}
	waitFor(t, "the offers", func() bool { return r.dp.Redirector().Counters().Offered == 32 })
}

// List does not wait for a Redirector that stopped.
func TestFastpathListAfterStop(t *testing.T) {
	node, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, b: pipeline.NewBuilder()}
	r.link = mem.New(mem.Config{})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{r.link}, FlowCapacity: 64, Fastpath: &datapath.FastpathConfig{Conn: node, Key: fpKey, Port: 6080}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { dp.Redirector().Run(ctx); close(done) }()
	if l := dp.Redirector().List(context.Background(), 0); len(l) != 0 {
		t.Fatalf("list %+v", l)
	}
	cancel()
	<-done
	got := make(chan []datapath.FastpathRedirect)
	go func() { got <- dp.Redirector().List(context.Background(), 0) }()
	select {
	case <-got:
	case <-time.After(2 * time.Second):
		t.Fatal("List waits for a stopped Redirector")
	}
}

// A reload that leaves a redirected flow's backend without a resolved next
// hop keeps the redirect (the client reaches the backend by its own route);
// one that moves the backend's GUE port cancels it (the client would send
// to a closed port).
func TestFastpathReloadTemplate(t *testing.T) {
	r, agent := newFastpathRig(t, 0)
	spec := fastpathSpec(1)
	r.apply(spec)
	fp := r.dp.Redirector()
	cl := netip.MustParseAddrPort("198.18.100.1:40004")
	r.send(tcpFrame(cl, vip4, 0x02), tcpFrame(cl, vip4, 0x10))
	m, from, ok := agent.read(time.Second)
	if !ok || m.Type != fastpath.Redirect || m.Entries[0].Port != 6080 {
		t.Fatalf("no redirect to port 6080: %v %+v", ok, m)
	}
	agent.reply(from, fastpath.Ack, m.ID, fastpath.StatusInstalled, m.Entries[0].Flow)
	waitFor(t, "the install", func() bool { return fp.Counters().Active == 1 })

	spec.Services[0].Backends[0].NoNextHop = true
	r.apply(spec)
	if c, _, ok := agent.read(300 * time.Millisecond); ok {
		t.Fatalf("the backend's next hop unresolved on the node: %+v sent, want the redirect kept", c)
	}
	if c := fp.Counters(); c.Active != 1 || c.Cancelled != 0 {
		t.Fatalf("counters %+v, want the redirect kept", c)
	}

	spec.Services[0].Backends[0].NoNextHop = false
	spec.Services[0].Backends[0].Tunnel.Port = 6081
	r.apply(spec)
	c, _, ok := agent.read(time.Second)
	if !ok || c.Type != fastpath.Cancel || c.Entries[0].Flow != m.Entries[0].Flow {
		t.Fatalf("the backend's GUE port moved: %v %+v, want a cancel", ok, c)
	}
}

// A flow the fastpath gives up on (here: the agent refuses it) is not
// offered again, and is offloaded to XDP like any other flow; one the agent
// installed is not.
func TestFastpathDeclinedOffloaded(t *testing.T) {
	k := &fakeKernel{flows: make(map[flow.Key]offload.Op)}
	r, agent, start := newFastpathRigConfig(t, 0, time.Minute, func(c *datapath.Config) { c.Offload = k })
	start()
	spec := fastpathSpec(2)
	r.apply(spec)
	fp, s := r.dp.Redirector(), r.dp.Syncer()
	refused := netip.MustParseAddrPort("198.18.100.1:40005")
	direct := netip.MustParseAddrPort("198.18.100.1:40006")
	for i, cl := range []netip.AddrPort{refused, direct} {
		r.send(tcpFrame(cl, vip4, 0x02), tcpFrame(cl, vip4, 0x10))
		m, from, ok := agent.read(time.Second)
		if !ok || m.Type != fastpath.Redirect {
			t.Fatalf("no redirect: %v %+v", ok, m)
		}
		st := fastpath.StatusFull
		if i == 1 {
			st = fastpath.StatusInstalled
		}
		agent.reply(from, fastpath.Ack, m.ID, st, m.Entries[0].Flow)
	}
	waitFor(t, "the answers", func() bool { c := fp.Counters(); return c.Refused == 1 && c.Installed == 1 })
	waitFor(t, "the decline", func() bool { return fp.Counters().Declined == 1 })
	for _, cl := range []netip.AddrPort{refused, direct} {
		if out := r.send(tcpFrame(cl, vip4, 0x10)); len(out) != 1 {
			t.Fatalf("%v: %d frames out", cl, len(out))
		}
	}
	s.Sync()
	if _, ok := k.entry(flow.MakeKey(6, refused, vip4)); !ok {
		t.Error("the refused flow is not offloaded")
	}
	if _, ok := k.entry(flow.MakeKey(6, direct, vip4)); ok {
		t.Error("the installed flow is offloaded")
	}
	if m, _, ok := agent.read(300 * time.Millisecond); ok {
		t.Fatalf("offered again: %+v", m)
	}
	if c := fp.Counters(); c.Offered != 2 {
		t.Errorf("offered %d, want 2", c.Offered)
	}
}
