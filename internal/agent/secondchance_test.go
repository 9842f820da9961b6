package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/packet"
)

// fakeKernel stands in for sock_diag: the state of each flow's socket.
type fakeKernel struct {
	socks   map[flowKey]uint8
	err     error
	queries int
}

func (k *fakeKernel) state(key *flowKey) (uint8, error) {
	k.queries++
	if k.err != nil {
		return 0, k.err
	}
	return k.socks[*key], nil
}

// sent is one datagram a test agent forwarded.
type sent struct {
	b  []byte
	to netip.AddrPort
}

// scHarness is an Agent with a second-chance decider whose kernel, clock,
// host addresses and socket are fakes, and a TUN stand-in (/dev/null).
type scHarness struct {
	a      *Agent
	kernel *fakeKernel
	now    int64
	sent   []sent
	err    error // returned by send
	addrs  []netip.Addr
	lists  int // calls of the address list
}

var (
	// lbSource is where the harness's datagrams come from, inside
	// testLBPrefixes.
	lbSource       = netip.MustParseAddrPort("198.18.30.11:41000")
	testLBPrefixes = []netip.Prefix{netip.MustParsePrefix("2001:db8:30::/123"), netip.MustParsePrefix("198.18.30.0/27")}
	self           = netip.MustParseAddr("198.18.2.2") // the harness agent's address
	peer           = netip.MustParseAddr("198.18.4.2")
	peer2          = netip.MustParseAddr("198.18.5.2")
)

func newHarness(t testing.TB, c Config) *scHarness {
	t.Helper()
	c.VIPs = []netip.Addr{vip4, vip6}
	if len(c.LBPrefixes) == 0 {
		c.AcceptAnySource = true // the decisions, not the trust (trust_test.go)
	}
	c, err := c.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { devnull.Close() })
	h := &scHarness{kernel: &fakeKernel{socks: map[flowKey]uint8{}}, now: 1, addrs: []netip.Addr{self, vip4}}
	send := func(b []byte, to netip.AddrPort) error {
		if h.err != nil {
			return h.err
		}
		h.sent = append(h.sent, sent{append([]byte(nil), b...), to})
		return nil
	}
	list := func() ([]netip.Addr, error) { h.lists++; return h.addrs, nil }
	h.a = &Agent{cfg: c, log: slog.New(slog.NewTextHandler(io.Discard, nil)), vips: testSet, tun: devnull,
		trust: newSourceFilter(&c)}
	h.a.sc = newSecondChance(&h.a.cfg, 6080, h.kernel, send, list)
	h.a.sc.clock = func() int64 { return h.now }
	return h
}

// handle runs one datagram through the agent as Run would (one batch) and
// returns the batch's counts.
func (h *scHarness) handle(d []byte) Counters {
	var b Counters
	var gh encap.GUEHeader
	h.a.sc.tick()
	h.a.handle(d, lbSource, false, &gh, &b)
	return b
}

func (h *scHarness) advance(d time.Duration) { h.now += int64(d) }

var (
	vp4 = netip.AddrPortFrom(vip4, 80)
	vp6 = netip.AddrPortFrom(vip6, 443)
)

// hops builds a GUE payload for inner with the hop list hops and next-hop
// index next.
func hops(inner []byte, next uint8, list ...netip.Addr) []byte {
	return gueOf(inner, hopList(next, list...))
}

// outcome summarises what happened to one datagram.
type outcome struct {
	local, forwarded bool
	drop             Reason // when neither
}

func (h *scHarness) outcome(t *testing.T, b Counters) outcome {
	t.Helper()
	switch {
	case b.Delivered == 1 && b.HopListLocal == 1 && b.SecondHop.Forwarded == 0 && b.Dropped() == 0:
		return outcome{local: true}
	case b.Delivered == 0 && b.SecondHop.Forwarded == 1 && b.Dropped() == 0:
		return outcome{forwarded: true}
	case b.Delivered == 0 && b.Dropped() == 1:
		for r := range NumReasons {
			if b.Drops[r] == 1 {
				return outcome{drop: r}
			}
		}
	}
	t.Fatalf("unexpected counts %+v", b)
	return outcome{}
}

var (
	local     = outcome{local: true}
	forwarded = outcome{forwarded: true}
)

// TestSecondChanceDecisions is the decision table of DESIGN §3.4 as the
// agent implements it, packet by packet, with the counters each step
// moves.
func TestSecondChanceDecisions(t *testing.T) {
	syn4 := tcpPacket(client4, vp4, tcpSYN)
	ack4 := tcpPacket(client4, vp4, tcpACK)
	fin4 := tcpPacket(client4, vp4, tcpFIN|tcpACK)
	rst4 := tcpPacket(client4, vp4, tcpRST)
	ack6 := tcpPacket(client6, vp6, tcpACK)
	other := netip.MustParseAddrPort("198.18.3.8:40002")
	ackOther := tcpPacket(other, vp4, tcpACK)
	key4 := keyOf(packet.ProtoTCP, client4, vp4)
	keyOther := keyOf(packet.ProtoTCP, other, vp4)
	udp4 := udpPacket(client4, vp4)
	udpKey := keyOf(packet.ProtoUDP, client4, vp4)

	type step struct {
		name    string
		setup   func(h *scHarness)
		d       []byte
		want    outcome
		queries int // sock_diag queries this step makes
		check   func(t *testing.T, h *scHarness, b Counters)
	}
	tests := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{name: "SYN is local and recorded; later ACKs hit the record", steps: []step{
			{name: "SYN", d: hops(syn4, 1, self, peer), want: local},
			{name: "ACK", d: hops(ack4, 1, self, peer), want: local, check: func(t *testing.T, h *scHarness, b Counters) {
				if b.SecondHop.TableHits != 1 {
					t.Errorf("TableHits = %d", b.SecondHop.TableHits)
				}
			}},
		}},
		{name: "ACK with a kernel socket is local, then recorded", steps: []step{
			{name: "ACK", setup: func(h *scHarness) { h.kernel.socks[key4] = tcpEstablished },
				d: hops(ack4, 1, self, peer), want: local, queries: 1},
			{name: "ACK again", d: hops(ack4, 1, self, peer), want: local},
		}},
		{name: "ACK without a socket is forwarded; the answer is cached 100 ms", steps: []step{
			{name: "ACK", d: hops(ackOther, 1, self, peer), want: forwarded, queries: 1,
				check: func(t *testing.T, h *scHarness, b Counters) {
					s := h.sent[len(h.sent)-1]
					if s.to != netip.AddrPortFrom(peer, 6080) {
						t.Errorf("sent to %v", s.to)
					}
					want := hops(ackOther, 2, self, peer)
					if !bytes.Equal(s.b, want) {
						t.Errorf("forwarded\n% x\nwant\n% x", s.b, want)
					}
				}},
			{name: "ACK 50 ms later", setup: func(h *scHarness) { h.advance(50 * time.Millisecond) },
				d: hops(ackOther, 1, self, peer), want: forwarded, check: func(t *testing.T, h *scHarness, b Counters) {
					if b.SecondHop.CacheHits != 1 {
						t.Errorf("CacheHits = %d", b.SecondHop.CacheHits)
					}
				}},
			{name: "ACK 100 ms later, socket now there", setup: func(h *scHarness) {
				h.advance(50 * time.Millisecond)
				h.kernel.socks[keyOther] = tcpEstablished
			}, d: hops(ackOther, 1, self, peer), want: local, queries: 1},
		}},
		{name: "kernel states", steps: []step{
			{name: "LISTEN-only (kernel reports 0)", d: hops(ack4, 1, self, peer), want: forwarded, queries: 1},
			{name: "TIME_WAIT is not owned", setup: func(h *scHarness) {
				h.advance(time.Second)
				h.kernel.socks[key4] = tcpTimeWait
			}, d: hops(ack4, 1, self, peer), want: forwarded, queries: 1},
			{name: "SYN_RECV is owned", setup: func(h *scHarness) {
				h.advance(time.Second)
				h.kernel.socks[key4] = tcpSynRecv
			}, d: hops(ack4, 1, self, peer), want: local, queries: 1},
		}},
		{name: "last hop is always local", steps: []step{
			{name: "ACK at hop 1 of 2", d: hops(ackOther, 2, peer, self), want: local,
				check: func(t *testing.T, h *scHarness, b Counters) {
					if b.SecondHop.Received != 1 {
						t.Errorf("Received = %d", b.SecondHop.Received)
					}
				}},
			{name: "ACK with an exhausted list of 4", d: hops(ackOther, 4, peer, peer2, peer, self), want: local},
		}},
		{name: "FIN and RST remove the record", steps: []step{
			{name: "SYN", d: hops(syn4, 1, self, peer), want: local},
			{name: "FIN", d: hops(fin4, 1, self, peer), want: local},
			{name: "ACK after FIN asks the kernel", d: hops(ack4, 1, self, peer), want: forwarded, queries: 1},
			{name: "SYN again", d: hops(syn4, 1, self, peer), want: local},
			{name: "RST", d: hops(rst4, 1, self, peer), want: local},
			{name: "ACK after RST (cached: none)", d: hops(ack4, 1, self, peer), want: forwarded},
		}},
		{name: "records expire after FlowIdle", cfg: Config{FlowIdle: time.Second}, steps: []step{
			{name: "SYN", d: hops(syn4, 1, self, peer), want: local},
			{name: "ACK 0.9 s later", setup: func(h *scHarness) { h.advance(900 * time.Millisecond) },
				d: hops(ack4, 1, self, peer), want: local},
			{name: "ACK 0.9 s after that: refreshed", setup: func(h *scHarness) { h.advance(900 * time.Millisecond) },
				d: hops(ack4, 1, self, peer), want: local},
			{name: "ACK 1 s later: expired", setup: func(h *scHarness) { h.advance(time.Second) },
				d: hops(ack4, 1, self, peer), want: forwarded, queries: 1},
		}},
		{name: "UDP, policy local", steps: []step{
			{name: "datagram", d: hops(udp4, 1, self, peer), want: local},
		}},
		{name: "UDP, policy second-chance", cfg: Config{UDPPolicy: UDPSecondChance}, steps: []step{
			{name: "no connected socket", d: hops(udp4, 1, self, peer), want: forwarded, queries: 1},
			{name: "connected socket", setup: func(h *scHarness) {
				h.advance(time.Second)
				h.kernel.socks[udpKey] = tcpEstablished
			}, d: hops(udp4, 1, self, peer), want: local, queries: 1},
			{name: "cached", d: hops(udp4, 1, self, peer), want: local},
			{name: "last hop", d: hops(udpPacket(other, vp4), 2, peer, self), want: local},
		}},
		{name: "IPv6", steps: []step{
			{name: "ACK without socket", d: hops(ack6, 1, netip.MustParseAddr("2001:db8:2::2"), netip.MustParseAddr("2001:db8:4::2")),
				want: forwarded, queries: 1, check: func(t *testing.T, h *scHarness, b Counters) {
					if to := h.sent[len(h.sent)-1].to; to != netip.MustParseAddrPort("[2001:db8:4::2]:6080") {
						t.Errorf("sent to %v", to)
					}
				}},
		}},
		{name: "other protocols and fragments are local", steps: []step{
			{name: "ICMP echo", d: hops(ipPacket(client4.Addr(), vip4, packet.ProtoICMP, []byte{8, 0, 0, 0, 0, 1, 0, 1}), 1, self, peer), want: local},
		}},
		{name: "ICMP errors follow the quoted flow", steps: []step{
			{name: "PTB for an unknown flow", d: hops(icmpError(peer2, vip4, 3, tcpPacket(vp4, client4, tcpACK)), 1, self, peer),
				want: forwarded, queries: 1},
			{name: "SYN", d: hops(syn4, 1, self, peer), want: local},
			{name: "PTB for a recorded flow", d: hops(icmpError(peer2, vip4, 3, tcpPacket(vp4, client4, tcpACK)), 1, self, peer),
				want: local},
		}},
		{name: "the next hop is this host", steps: []step{
			{name: "same as the hop it was sent to", d: hops(ackOther, 1, peer2, peer2), want: local, queries: 1},
			{name: "one of the host's addresses (cached: not owned)", d: hops(ackOther, 1, peer2, self), want: local},
		}},
		{name: "HopPrefixes", cfg: Config{HopPrefixes: []netip.Prefix{netip.MustParsePrefix("198.18.4.0/24")}}, steps: []step{
			{name: "allowed", d: hops(ackOther, 1, self, peer), want: forwarded, queries: 1},
			{name: "not allowed", d: hops(ackOther, 1, self, peer2), want: outcome{drop: HopNotAllowed}},
		}},
		{name: "HopPort", cfg: Config{HopPort: 7000}, steps: []step{
			{name: "forwarded to port 7000", d: hops(ackOther, 1, self, peer), want: forwarded, queries: 1,
				check: func(t *testing.T, h *scHarness, b Counters) {
					if to := h.sent[0].to; to != netip.AddrPortFrom(peer, 7000) {
						t.Errorf("sent to %v", to)
					}
				}},
		}},
		{name: "failures", steps: []step{
			{name: "send error", setup: func(h *scHarness) { h.err = errors.New("no route") },
				d: hops(ackOther, 1, self, peer), want: outcome{drop: ForwardError}, queries: 1},
			{name: "sock_diag error: forwarded", setup: func(h *scHarness) {
				h.err = nil
				h.kernel.err = errors.New("EINVAL")
			}, d: hops(ack4, 1, self, peer), want: forwarded, queries: 1, check: func(t *testing.T, h *scHarness, b Counters) {
				if b.SecondHop.DiagErrors != 1 {
					t.Errorf("DiagErrors = %d", b.SecondHop.DiagErrors)
				}
			}},
		}},
		{name: "no hop list: untouched", steps: []step{
			{name: "ACK", d: gueOf(ackOther, nil), want: outcome{}, check: func(t *testing.T, h *scHarness, b Counters) {
				if b.Delivered != 1 || b.HopListLocal != 0 || b.SecondHop != (SecondHopCounters{}) {
					t.Errorf("counts %+v", b)
				}
			}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg)
			for _, s := range tc.steps {
				if s.setup != nil {
					s.setup(h)
				}
				q := h.kernel.queries
				b := h.handle(s.d)
				if s.want != (outcome{}) {
					if got := h.outcome(t, b); got != s.want {
						t.Errorf("%s: %+v, want %+v", s.name, got, s.want)
					}
				}
				if got := h.kernel.queries - q; got != s.queries {
					t.Errorf("%s: %d sock_diag queries, want %d", s.name, got, s.queries)
				}
				if b.SecondHop.CacheMisses != uint64(s.queries) {
					t.Errorf("%s: CacheMisses = %d", s.name, b.SecondHop.CacheMisses)
				}
				if s.check != nil {
					s.check(t, h, b)
				}
			}
		})
	}
}

// TestSecondChanceTableFull: with a full record, new flows are counted and
// decided by the kernel alone; expired records make room again.
func TestSecondChanceTableFull(t *testing.T) {
	h := newHarness(t, Config{FlowTable: 2, FlowIdle: time.Second})
	for i := range 3 {
		c := netip.AddrPortFrom(client4.Addr(), uint16(1000+i))
		b := h.handle(hops(tcpPacket(c, vp4, tcpSYN), 1, self, peer))
		if b.Delivered != 1 || b.SecondHop.TableFull != uint64(i/2) {
			t.Errorf("SYN %d: %+v", i, b)
		}
	}
	c := netip.AddrPortFrom(client4.Addr(), 1002)
	if b := h.handle(hops(tcpPacket(c, vp4, tcpACK), 1, self, peer)); b.SecondHop.Forwarded != 1 {
		t.Errorf("ACK of the unrecorded flow: %+v", b)
	}
	h.advance(2 * time.Second)
	if b := h.handle(hops(tcpPacket(c, vp4, tcpSYN), 1, self, peer)); b.SecondHop.TableFull != 0 {
		t.Errorf("SYN after expiry: %+v", b)
	}
	if k := keyOf(packet.ProtoTCP, c, vp4); h.a.sc.own.find(&k) < 0 {
		t.Error("flow not recorded after expiry made room")
	}
}

// TestSecondChanceLocalAddrs: the host's addresses are read only when a
// packet is about to be forwarded, at most once per second.
func TestSecondChanceLocalAddrs(t *testing.T) {
	h := newHarness(t, Config{})
	h.handle(hops(tcpPacket(client4, vp4, tcpSYN), 1, self, peer))
	if h.lists != 0 {
		t.Errorf("addresses read %d times for a local packet", h.lists)
	}
	ack := tcpPacket(client4, vp4, tcpACK)
	for range 3 {
		h.handle(hops(ack, 1, peer2, peer)) // record hit: local
	}
	if h.lists != 0 {
		t.Errorf("addresses read for recorded flows")
	}
	ackOther := tcpPacket(netip.MustParseAddrPort("198.18.3.9:1"), vp4, tcpACK)
	for range 3 {
		h.handle(hops(ackOther, 1, self, peer))
	}
	if h.lists != 1 {
		t.Errorf("addresses read %d times, want 1", h.lists)
	}
	h.addrs = append(h.addrs, peer)
	h.advance(time.Second)
	if b := h.handle(hops(ackOther, 1, self, peer)); b.Delivered != 1 || h.lists != 2 {
		t.Errorf("peer became local: %+v, %d reads", b, h.lists)
	}
}

// TestSecondChanceNoLoops passes a packet from agent to agent along hop
// lists of every length up to encap.MaxHops, repeated addresses and cycles
// included, where no agent owns the flow: each hop advances the index, so
// a list of N hops that the LB sends with index 1 visits at most N agents
// (N - next + 1 from index next), and the last one delivers it.
func TestSecondChanceNoLoops(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("198.18.2.11"), netip.MustParseAddr("198.18.2.12"), netip.MustParseAddr("198.18.2.13")}
	agents := map[netip.Addr]*scHarness{}
	for _, a := range addrs {
		h := newHarness(t, Config{})
		h.addrs = []netip.Addr{a}
		agents[a] = h
	}
	ack := tcpPacket(client4, vp4, tcpACK)
	lists := [][]netip.Addr{}
	var gen func(prefix []netip.Addr)
	gen = func(prefix []netip.Addr) {
		if len(prefix) > 0 {
			lists = append(lists, append([]netip.Addr(nil), prefix...))
		}
		if len(prefix) == encap.MaxHops {
			return
		}
		for _, a := range addrs {
			gen(append(prefix, a))
		}
	}
	gen(nil)
	for _, list := range lists {
		for next := uint8(0); next <= uint8(len(list)); next++ {
			// The LB sends to hop next-1 (hop 0 for index 0).
			at := list[max(int(next)-1, 0)]
			d := hops(ack, next, list...)
			visits := 0
			for {
				visits++
				if visits > len(list)+1 {
					t.Fatalf("%v from index %d: more than %d visits", list, next, len(list)+1)
				}
				h := agents[at]
				h.sent = h.sent[:0]
				h.advance(time.Second) // no cached answers
				b := h.handle(d)
				if b.Delivered == 1 {
					break
				}
				if b.SecondHop.Forwarded != 1 || len(h.sent) != 1 {
					t.Fatalf("%v: neither delivered nor forwarded: %+v", list, b)
				}
				d, at = h.sent[0].b, h.sent[0].to.Addr()
			}
			limit := len(list) - int(next) + 1
			if next == 0 {
				limit = len(list)
			}
			if visits > limit {
				t.Errorf("%v from index %d: %d visits, want at most %d", list, next, visits, limit)
			}
		}
	}
	t.Logf("%d hop lists", len(lists))
}

// TestSecondChanceAllocs: deciding and forwarding allocate nothing in
// steady state.
func TestSecondChanceAllocs(t *testing.T) {
	h := newHarness(t, Config{LBPrefixes: testLBPrefixes})
	h.a.sc.send = func([]byte, netip.AddrPort) error { return nil }
	syn := hops(tcpPacket(client4, vp4, tcpSYN), 1, self, peer)
	ack := hops(tcpPacket(client4, vp4, tcpACK), 1, self, peer)
	fwd := hops(tcpPacket(netip.MustParseAddrPort("198.18.3.9:1"), vp4, tcpACK), 1, self, peer)
	h.handle(syn)
	h.handle(fwd)
	n := testing.AllocsPerRun(1000, func() {
		h.handle(ack)
		fwd[encap.HopNextOffset] = 1
		h.handle(fwd)
	})
	if n != 0 {
		t.Errorf("%v allocations per run", n)
	}
}

// loopbackForward returns a harness whose agent forwards over a real UDP
// socket on 127.0.0.1 to a sink socket, and the sink.
func loopbackForward(tb testing.TB) (*scHarness, *net.UDPConn) {
	h := newHarness(tb, Config{LBPrefixes: testLBPrefixes})
	src, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { src.Close(); sink.Close() })
	h.a.sc.port = uint16(sink.LocalAddr().(*net.UDPAddr).Port)
	h.a.sc.send = func(b []byte, to netip.AddrPort) error {
		_, err := src.WriteToUDPAddrPort(b, to)
		return err
	}
	return h, sink
}

// TestForwardLoopback forwards over a real socket and reads the datagram.
func TestForwardLoopback(t *testing.T) {
	h, sink := loopbackForward(t)
	inner := tcpPacket(client4, vp4, tcpACK)
	d := hops(inner, 1, self, netip.MustParseAddr("127.0.0.2"))
	b := h.handle(d)
	if b.SecondHop.Forwarded != 1 {
		t.Fatalf("not forwarded: %+v", b)
	}
	buf := make([]byte, 2048)
	sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := sink.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var gh encap.GUEHeader
	got, r, ok := testSet.inspect(buf[:n], &gh)
	if !ok || !bytes.Equal(got, inner) || gh.Hops.Next != 2 || gh.Hops.N != 2 {
		t.Errorf("received %v %v, hops %+v", r, ok, gh.Hops)
	}
}

// BenchmarkOwnerDecision measures one ownership decision for a TCP ACK with
// a hop list, from the parsed GUE header to the verdict.
func BenchmarkOwnerDecision(b *testing.B) {
	for _, bc := range []struct {
		name string
		flow netip.AddrPort
	}{
		{"own_table_hit", client4},
		{"sock_diag_cache_hit", netip.MustParseAddrPort("198.18.3.9:1")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := newHarness(b, Config{})
			h.handle(hops(tcpPacket(client4, vp4, tcpSYN), 1, self, peer))
			inner := tcpPacket(bc.flow, vp4, tcpACK)
			d := hops(inner, 1, self, peer)
			var gh encap.GUEHeader
			testSet.inspect(d, &gh)
			var c Counters
			sc := h.a.sc
			sc.tick()
			for b.Loop() {
				parseFlow(inner, &sc.flow)
				if sc.owns(&sc.flow, h.now, &c) != (bc.flow == client4) {
					b.Fatal("wrong decision")
				}
			}
			if bc.flow != client4 && h.kernel.queries != 1 {
				b.Fatalf("%d queries", h.kernel.queries)
			}
		})
	}
}

// BenchmarkForward measures the whole handling of a datagram with a hop
// list that this agent does not own (GUE and inner validation, ownership
// from the sock_diag cache, hop advance) and its sendto over loopback, and,
// for comparison, of a datagram without hop list (delivered to a TUN
// stand-in, /dev/null).
func BenchmarkForward(b *testing.B) {
	b.Run("forward", func(b *testing.B) {
		h, _ := loopbackForward(b)
		d := hops(tcpPacket(netip.MustParseAddrPort("198.18.3.9:1"), vp4, tcpACK), 1, self, netip.MustParseAddr("127.0.0.2"))
		var gh encap.GUEHeader
		var c Counters
		b.SetBytes(int64(len(d)))
		for b.Loop() {
			d[encap.HopNextOffset] = 1
			h.a.sc.tick()
			h.a.handle(d, lbSource, false, &gh, &c)
		}
		if c.SecondHop.Forwarded != uint64(b.N) {
			b.Fatalf("forwarded %d of %d", c.SecondHop.Forwarded, b.N)
		}
	})
	for _, bc := range []struct {
		name string
		d    []byte
	}{
		{"local_no_hops", gueOf(tcpPacket(client4, vp4, tcpACK), nil)},
		{"local_own_table_hit", hops(tcpPacket(client4, vp4, tcpACK), 1, self, peer)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := newHarness(b, Config{LBPrefixes: testLBPrefixes})
			h.handle(hops(tcpPacket(client4, vp4, tcpSYN), 1, self, peer))
			var gh encap.GUEHeader
			var c Counters
			b.SetBytes(int64(len(bc.d)))
			for b.Loop() {
				h.a.sc.tick()
				h.a.handle(bc.d, lbSource, false, &gh, &c)
			}
			if c.Delivered != uint64(b.N) {
				b.Fatal(fmt.Sprintf("delivered %d of %d", c.Delivered, b.N))
			}
		})
	}
}
