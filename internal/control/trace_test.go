package control

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/control/controltest"
	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/firewall"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

// traceNode is the fake node with a real datapath behind its generation and
// flow tables.
type traceNode struct {
	*controltest.Node
	dp *datapath.Datapath
}

func (n *traceNode) Generation() *pipeline.Generation { return n.dp.Generation() }
func (n *traceNode) QueryFlows(fn func(int, *flow.Table)) {
	n.dp.QueryFlows(fn)
}
func (n *traceNode) FlowClock() uint32 { return n.dp.Now() }

type traceRig struct {
	t    *testing.T
	link *mem.Link
	dp   *datapath.Datapath
	b    *pipeline.Builder
	s    *Server
	out  [][]byte
}

func newTraceRig(t *testing.T) *traceRig {
	r := &traceRig{t: t, b: pipeline.NewBuilder()}
	r.link = mem.New(mem.Config{Sink: func(f []byte) { r.out = append(r.out, slices.Clone(f)) }})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{r.link}, FlowCapacity: 4096})
	if err != nil {
		t.Fatal(err)
	}
	r.dp = dp
	r.s = New(&traceNode{Node: controltest.New(), dp: dp})
	return r
}

var (
	traceVIP  = netip.MustParseAddr("198.18.0.10")
	traceBEs  = []netip.Addr{netip.MustParseAddr("198.18.30.101"), netip.MustParseAddr("198.18.30.102"), netip.MustParseAddr("198.18.30.103")}
	traceMAC  = [6]byte{2, 0, 0, 0, 0, 1}
	traceNets = []string{"198.18.10.0/24", "198.18.11.0/24", "198.18.12.0/24"}
)

// apply builds a generation: web (tcp 80) filtered by a rule list that
// denies net deny (or nothing, deny < 0) and ports 81-82 of web-range,
// every backend but the removed one, and a stateless udp service.
func (r *traceRig) apply(deny, removed int) {
	r.t.Helper()
	svc := func(name string, proto uint8, port, end uint16) pipeline.ServiceSpec {
		s := pipeline.ServiceSpec{Name: name, Addr: traceVIP, Proto: proto, Port: port, PortEnd: end, M: 251}
		for i, b := range traceBEs {
			if i == removed {
				continue
			}
			s.Backends = append(s.Backends, pipeline.BackendSpec{Weight: 1, Tunnel: encap.Tunnel{
				Mode: encap.GUE, Src: netip.MustParseAddr("198.18.30.11"), Dst: b, SrcMAC: traceMAC, DstMAC: traceMAC, Port: 6080,
			}})
		}
		return s
	}
	web := svc("web", 6, 80, 0)
	rng := svc("web-range", 6, 81, 82)
	dns := svc("dns", 17, 53, 0)
	dns.Stateless = true
	var rules []firewall.Rule
	if deny >= 0 {
		rules = append(rules, firewall.Rule{Name: "deny-net", Action: firewall.Deny, Src: netip.MustParsePrefix(traceNets[deny])})
	}
	set, err := firewall.Compile(rules, firewall.Allow)
	if err != nil {
		r.t.Fatal(err)
	}
	web.Firewall = set
	rset, err := firewall.Compile([]firewall.Rule{{Action: firewall.Allow, Proto: 6, DstPorts: firewall.PortRange{Lo: 81, Hi: 81}}}, firewall.Deny)
	if err != nil {
		r.t.Fatal(err)
	}
	rng.Firewall = rset
	dns.Firewall = set
	// Tenant a: the same VIP and port as web, its own backends and rules.
	aWeb := svc("a-web", 6, 80, 0)
	aWeb.Tenant, aWeb.Backends = "a", aWeb.Backends[:1]
	aWeb.Firewall = set
	// Tenant v, by VLAN 30: web on the same VIP too.
	vWeb := svc("v-web", 6, 80, 0)
	vWeb.Tenant, vWeb.Backends = "v", vWeb.Backends[1:]
	g, err := r.b.Build(pipeline.Spec{Seed: 7, Services: []pipeline.ServiceSpec{web, rng, dns, aWeb, vWeb},
		Tenants: []pipeline.TenantSpec{{Name: "a", VNI: 100}, {Name: "v", VLAN: 30}}, VXLAN: netip.MustParseAddr("198.18.0.254")})
	if err != nil {
		r.t.Fatal(err)
	}
	r.dp.Apply(g)
}

// send runs one frame through the datapath and returns what became of it:
// the backend it was forwarded to, or "drop <reason>", or "pass"; and
// whether it was a flow hit.
func (r *traceRig) send(frame []byte) (string, bool) {
	r.t.Helper()
	before := r.dp.Counters()
	r.out = r.out[:0]
	r.link.Inject(frame)
	if n, err := r.dp.Workers()[0].Poll(); n != 1 || err != nil {
		r.t.Fatalf("poll: %d, %v", n, err)
	}
	after := r.dp.Counters()
	hit := after.FlowHits > before.FlowHits
	if len(r.out) == 1 {
		return netip.AddrFrom4([4]byte(r.out[0][30:34])).String(), hit
	}
	if after.Passed > before.Passed {
		return "pass", hit
	}
	for i := range after.Drops {
		if after.Drops[i] > before.Drops[i] {
			return "drop " + pipeline.Reason(i).String(), hit
		}
	}
	r.t.Fatal("the packet was neither sent, passed nor dropped")
	return "", false
}

// The trace of a packet says what the datapath then does with the same
// packet: random flows (repeating, so that entries are met), flags and
// ports, and configuration changes (rules and backends) between them.
func TestTraceAgreesWithDatapath(t *testing.T) {
	r := newTraceRig(t)
	rng := rand.New(rand.NewPCG(3, 4))
	r.apply(0, -1)
	kinds := map[string]int{}
	for i := range 3000 {
		if i%300 == 299 {
			r.apply(rng.IntN(4)-1, rng.IntN(4)-1)
		}
		net := netip.MustParsePrefix(traceNets[rng.IntN(len(traceNets))])
		a := net.Addr().As4()
		a[3] = byte(1 + rng.IntN(4))
		src := netip.AddrPortFrom(netip.AddrFrom4(a), uint16(40000+rng.IntN(4)))
		q := TraceQuery{Proto: "tcp", Src: src, Dst: netip.AddrPortFrom(traceVIP, uint16(79+rng.IntN(4)))}
		q.TCPFlags = []string{"syn", "ack", "ack", "ack", "fin", "rst"}[rng.IntN(6)]
		if rng.IntN(5) == 0 {
			q.Proto, q.TCPFlags = "udp", ""
			q.Dst = netip.AddrPortFrom(traceVIP, uint16(52+rng.IntN(2)))
		}
		q.Tenant = []string{"", "", "a", "v"}[rng.IntN(4)]
		tr, err := r.s.TraceFlow(q)
		if err != nil {
			t.Fatal(err)
		}
		f := sim.Frame{Src: q.Src, Dst: q.Dst, Proto: 6, TCPFlags: traceFlags[q.TCPFlags]}
		if q.Proto == "udp" {
			f.Proto = 17
		}
		frame := make([]byte, f.Len())
		f.Encode(frame)
		switch q.Tenant {
		case "a":
			if frame, err = vxlanFrame(r.dp.Generation(), 1, frame); err != nil {
				t.Fatal(err)
			}
		case "v": // an 802.1Q tag with VLAN 30, written independently
			frame = append(frame[:12:12], append([]byte{0x81, 0x00, 0, 30}, frame[12:]...)...)
		}
		got, hit := r.send(frame)
		want := tr.Verdict
		switch tr.Verdict {
		case "forward":
			want = tr.Backend
		case "drop":
			want = "drop " + tr.Reason
		}
		kinds[tr.Verdict+" "+tr.Reason]++
		if q.Tenant != "" {
			kinds["tenant "+tr.VIP+" "+tr.Verdict]++
		}
		if got != want || hit != tr.ShortCut {
			t.Fatalf("packet %d %+v: datapath %q (flow hit %v), trace %q (short cut %v)\n%+v", i, q, got, hit, want, tr.ShortCut, tr.Steps)
		}
	}
	t.Logf("outcomes: %v", kinds)
	for _, k := range []string{"forward ", "drop firewall_deny", "pass ", "tenant a-web forward", "tenant a-web drop", "tenant v-web forward"} {
		if kinds[k] == 0 {
			t.Errorf("no packet had outcome %q: %v", k, kinds)
		}
	}
}

// A trace names every stage and its decision, and a current entry's short
// cut.
func TestTraceSteps(t *testing.T) {
	r := newTraceRig(t)
	r.apply(0, -1)
	denied := netip.MustParseAddrPort("198.18.10.7:40000")
	q := TraceQuery{Proto: "tcp", Src: denied, Dst: netip.AddrPortFrom(traceVIP, 80)}
	tr, err := r.s.TraceFlow(q)
	if err != nil {
		t.Fatal(err)
	}
	var stages []string
	for _, s := range tr.Steps {
		stages = append(stages, s.Stage+"="+s.Decision)
	}
	if got := strings.Join(stages, " "); got != "parse=continue flow lookup=miss nat_reply=continue classify=continue firewall=drop balance=skipped nat_bind=skipped route=skipped encapsulate=skipped" {
		t.Fatalf("steps: %s", got)
	}
	if fw := tr.Steps[4]; fw.Reason != "deny by rule deny-net (firewall_deny)" || !strings.Contains(fw.Input, "1 rules, default allow") {
		t.Fatalf("firewall step %+v", fw)
	}
	if tr.Verdict != "drop" || tr.Reason != "firewall_deny" || tr.VIP != "web" || len(tr.Entries) != 0 {
		t.Fatalf("trace %+v", tr)
	}
	f := sim.Frame{Src: q.Src, Dst: q.Dst, Proto: 6, TCPFlags: sim.SYN}
	frame := make([]byte, f.Len())
	f.Encode(frame)
	r.send(frame)
	// The denied flow now has an entry that short-cuts the stages.
	q.TCPFlags = "ack"
	tr, err = r.s.TraceFlow(q)
	if err != nil {
		t.Fatal(err)
	}
	if !tr.ShortCut || len(tr.Entries) != 1 || tr.Entries[0].Backend != "(denied)" || tr.Steps[1].Decision != "hit" || tr.Verdict != "drop" {
		t.Fatalf("trace after the first packet: %+v", tr)
	}
	// An allowed flow: forwarded by GUE to its Maglev owner.
	q.Src = netip.MustParseAddrPort("198.18.11.7:40000")
	tr, err = r.s.TraceFlow(q)
	if err != nil {
		t.Fatal(err)
	}
	last := tr.Steps[len(tr.Steps)-1]
	if tr.Verdict != "forward" || tr.Backend == "" || last.Stage != "encapsulate" || !strings.HasPrefix(last.Reason, "gue to "+tr.Backend) {
		t.Fatalf("allowed flow: %+v", tr)
	}
	if bal := tr.Steps[5]; bal.Stage != "balance" || bal.Reason != "backend "+tr.Backend+" (maglev)" {
		t.Fatalf("balance step %+v", bal)
	}
	if _, err := r.s.TraceFlow(TraceQuery{Proto: "icmp", Src: q.Src, Dst: q.Dst}); err == nil {
		t.Fatal("icmp accepted")
	}
}
