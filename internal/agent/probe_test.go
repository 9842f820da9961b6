package agent

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/health/vipprobe"
)

// sentReply is a reply a test prober sent.
type sentReply struct {
	m  vipprobe.Message
	to netip.AddrPort
}

// fakeChecks stands in for the host: it counts checks per key and answers
// status, optionally waiting for gate first.
type fakeChecks struct {
	mu      sync.Mutex
	calls   map[probeKey]int
	status  vipprobe.Status
	gate    chan struct{}
	entered chan probeKey
}

func (f *fakeChecks) check(k probeKey) vipprobe.Status {
	f.mu.Lock()
	f.calls[k]++
	gate, st := f.gate, f.status
	f.mu.Unlock()
	if f.entered != nil {
		select {
		case f.entered <- k:
		default:
		}
	}
	if gate != nil {
		<-gate
	}
	return st
}

func (f *fakeChecks) count(k probeKey) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[k]
}

// testProber starts a prober whose replies land in the returned channel.
func testProber(t *testing.T, f *fakeChecks) (*prober, *counters, chan sentReply) {
	t.Helper()
	if f.calls == nil {
		f.calls = map[probeKey]int{}
	}
	replies := make(chan sentReply, 4096)
	send := func(b []byte, to netip.AddrPort) error {
		var m vipprobe.Message
		if err := vipprobe.Parse(b, &m); err != nil {
			t.Errorf("prober sent an invalid reply %x: %v", b, err)
		}
		replies <- sentReply{m, to}
		return nil
	}
	stats := new(counters)
	p, err := newProber(send, f.check, stats, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p, stats, replies
}

var lbAddr = netip.MustParseAddrPort("198.18.2.1:50000")

func probeBytes(t testing.TB, id uint64, vip netip.AddrPort, proto uint8) []byte {
	b, err := vipprobe.Append(nil, &vipprobe.Message{Type: vipprobe.Request, Proto: proto, ID: id, VIP: vip})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func nextReply(t *testing.T, replies chan sentReply) sentReply {
	t.Helper()
	select {
	case r := <-replies:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no reply within 5 s")
	}
	panic("unreachable")
}

// TestProbeReceive: what the Run goroutine does with each kind of control
// message.
func TestProbeReceive(t *testing.T) {
	f := &fakeChecks{status: vipprobe.StatusUp}
	p, stats, replies := testProber(t, f)
	var b Counters
	vipTCP := netip.AddrPortFrom(vip4, 80)

	// A VIP the agent does not serve: answered at once, no check.
	p.receive(probeBytes(t, 1, netip.MustParseAddrPort("198.18.0.99:80"), vipprobe.ProtoTCP), lbAddr, &testSet, &b)
	if r := nextReply(t, replies); r.m.Status != vipprobe.StatusNotConfigured || r.m.ID != 1 || r.to != lbAddr {
		t.Errorf("unconfigured VIP: %+v", r)
	}

	// Another control type: a GUEControl drop, as before probes existed.
	other := probeBytes(t, 2, vipTCP, vipprobe.ProtoTCP)
	other[1] = 0x80
	p.receive(other, lbAddr, &testSet, &b)
	// Malformed probes and replies sent to the agent: counted, unanswered.
	bad := probeBytes(t, 3, vipTCP, vipprobe.ProtoTCP)
	bad[4] = 9 // version
	p.receive(bad, lbAddr, &testSet, &b)
	rep, _ := vipprobe.Append(nil, &vipprobe.Message{Type: vipprobe.Reply, Status: vipprobe.StatusUp,
		Proto: vipprobe.ProtoTCP, ID: 4, VIP: vipTCP})
	p.receive(rep, lbAddr, &testSet, &b)
	p.receive(probeBytes(t, 5, vipTCP, vipprobe.ProtoTCP), netip.AddrPort{}, &testSet, &b)

	// A configured VIP: checked by a worker (IPv4 and IPv6).
	p.receive(probeBytes(t, 6, vipTCP, vipprobe.ProtoTCP), lbAddr, &testSet, &b)
	if r := nextReply(t, replies); r.m.Status != vipprobe.StatusUp || r.m.ID != 6 || r.m.VIP != vipTCP ||
		r.m.Type != vipprobe.Reply || r.m.Proto != vipprobe.ProtoTCP {
		t.Errorf("configured VIP: %+v", r)
	}
	f.mu.Lock()
	f.status = vipprobe.StatusDown
	f.mu.Unlock()
	vip6UDP := netip.AddrPortFrom(vip6, 7000)
	p.receive(probeBytes(t, 7, vip6UDP, vipprobe.ProtoUDP), lbAddr, &testSet, &b)
	if r := nextReply(t, replies); r.m.Status != vipprobe.StatusDown || r.m.ID != 7 || r.m.VIP != vip6UDP {
		t.Errorf("IPv6 UDP VIP: %+v", r)
	}
	select {
	case r := <-replies:
		t.Errorf("unexpected reply %+v", r)
	case <-time.After(20 * time.Millisecond):
	}

	stats.flush(&b)
	want := ProbeCounters{Requests: 3, Malformed: 3, Up: 1, Down: 1, NotConfigured: 1, Checks: 2}
	if got := stats.load(); got.Probes != want || got.Drops[GUEControl] != 1 || got.Dropped() != 1 {
		t.Errorf("counters %+v\nwant probes %+v and one GUEControl drop", got, want)
	}
}

// TestProbeCache: one local check answers the probes for the same VIP,
// protocol and port for ProbeCacheTTL; other keys are checked on their own.
func TestProbeCache(t *testing.T) {
	f := &fakeChecks{status: vipprobe.StatusUp}
	p, stats, replies := testProber(t, f)
	var clock atomic.Int64
	p.now = func() time.Time { return time.Unix(0, clock.Load()) }
	var b Counters
	k := probeKey{netip.AddrPortFrom(vip4, 80), vipprobe.ProtoTCP}
	send := func(vip netip.AddrPort, proto uint8) vipprobe.Status {
		p.receive(probeBytes(t, 1, vip, proto), lbAddr, &testSet, &b)
		return nextReply(t, replies).m.Status
	}
	for range 5 {
		send(k.vip, k.proto)
	}
	if n := f.count(k); n != 1 {
		t.Errorf("5 probes within the TTL made %d checks, want 1", n)
	}
	send(k.vip, vipprobe.ProtoUDP)
	send(netip.AddrPortFrom(vip4, 81), k.proto)
	if f.count(probeKey{k.vip, vipprobe.ProtoUDP}) != 1 || f.count(probeKey{netip.AddrPortFrom(vip4, 81), k.proto}) != 1 {
		t.Error("other protocol or port not checked separately")
	}

	clock.Add(int64(ProbeCacheTTL - time.Millisecond))
	send(k.vip, k.proto)
	if n := f.count(k); n != 1 {
		t.Errorf("just before the TTL: %d checks", n)
	}
	f.mu.Lock()
	f.status = vipprobe.StatusDown
	f.mu.Unlock()
	clock.Add(int64(time.Millisecond))
	if st := send(k.vip, k.proto); st != vipprobe.StatusDown || f.count(k) != 2 {
		t.Errorf("after the TTL: %v, %d checks; want a new check saying down", st, f.count(k))
	}
	if c := stats.load(); c.Probes.Checks != 4 {
		t.Errorf("Checks = %d, want 4", c.Probes.Checks)
	}
}

// TestProbeCoalesce: probes that arrive while their key is being checked
// wait for that check instead of starting their own.
func TestProbeCoalesce(t *testing.T) {
	f := &fakeChecks{status: vipprobe.StatusUp, gate: make(chan struct{}), entered: make(chan probeKey, 1)}
	p, _, replies := testProber(t, f)
	var b Counters
	vip := netip.AddrPortFrom(vip4, 80)
	for i := range 10 {
		p.receive(probeBytes(t, uint64(i), vip, vipprobe.ProtoTCP), lbAddr, &testSet, &b)
	}
	<-f.entered
	for len(p.jobs) > 0 { // the other workers take the rest while the check runs
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond)
	close(f.gate)
	seen := map[uint64]bool{}
	for range 10 {
		r := nextReply(t, replies)
		if r.m.Status != vipprobe.StatusUp {
			t.Errorf("reply %+v", r)
		}
		seen[r.m.ID] = true
	}
	if n := f.count(probeKey{vip, vipprobe.ProtoTCP}); n != 1 || len(seen) != 10 {
		t.Errorf("%d checks for 10 concurrent probes (want 1), %d distinct replies", n, len(seen))
	}
}

// TestProbeOverload: with every worker busy and the queue full, a probe is
// answered "overloaded" at once; and no more than ProbeMaxKeys distinct keys
// are checked per ProbeCacheTTL.
func TestProbeOverload(t *testing.T) {
	f := &fakeChecks{status: vipprobe.StatusUp, gate: make(chan struct{}), entered: make(chan probeKey, ProbeWorkers)}
	p, _, replies := testProber(t, f)
	var b Counters
	for i := range ProbeWorkers {
		p.receive(probeBytes(t, 0, netip.AddrPortFrom(vip4, uint16(100+i)), vipprobe.ProtoTCP), lbAddr, &testSet, &b)
	}
	for range ProbeWorkers {
		<-f.entered // every worker is blocked in a check
	}
	for i := range ProbeQueue + 10 {
		p.receive(probeBytes(t, 1, netip.AddrPortFrom(vip4, uint16(200+i)), vipprobe.ProtoTCP), lbAddr, &testSet, &b)
	}
	for range 10 {
		if r := nextReply(t, replies); r.m.Status != vipprobe.StatusOverloaded {
			t.Fatalf("queue full: %+v", r)
		}
	}
	if b.Probes.Overloaded != 10 {
		t.Errorf("Overloaded = %d, want 10", b.Probes.Overloaded)
	}
	close(f.gate)
	for range ProbeWorkers + ProbeQueue {
		if r := nextReply(t, replies); r.m.Status != vipprobe.StatusUp {
			t.Fatalf("queued probe: %+v", r)
		}
	}

	// Distinct keys: at most ProbeMaxKeys within one TTL.
	f2 := &fakeChecks{status: vipprobe.StatusUp}
	p2, stats2, replies2 := testProber(t, f2)
	var clock atomic.Int64
	p2.now = func() time.Time { return time.Unix(0, clock.Load()) }
	var b2 Counters
	over := 0
	for i := range ProbeMaxKeys + 20 {
		p2.receive(probeBytes(t, 0, netip.AddrPortFrom(vip4, uint16(1+i)), vipprobe.ProtoTCP), lbAddr, &testSet, &b2)
		if nextReply(t, replies2).m.Status == vipprobe.StatusOverloaded {
			over++
		}
	}
	if c := stats2.load(); over != 20 || c.Probes.Checks != ProbeMaxKeys {
		t.Errorf("%d overloaded, %d checks; want 20, %d", over, c.Probes.Checks, ProbeMaxKeys)
	}
	clock.Add(int64(ProbeCacheTTL)) // the results expire: room again
	p2.receive(probeBytes(t, 0, netip.AddrPortFrom(vip4, 60000), vipprobe.ProtoTCP), lbAddr, &testSet, &b2)
	if r := nextReply(t, replies2); r.m.Status != vipprobe.StatusUp {
		t.Errorf("after the TTL: %+v", r)
	}
}

// TestRunAnswersProbes sends probes over a real socket to a running agent
// (loopback, no root): the reply comes back to the sender's address and
// port, from the agent's socket, and the counters add up.
func TestRunAnswersProbes(t *testing.T) {
	a, _ := loopbackAgent(t, 8)
	f := &fakeChecks{status: vipprobe.StatusUp, calls: map[probeKey]int{}}
	p, err := newProber(func(b []byte, to netip.AddrPort) error {
		_, err := a.udp.WriteToUDPAddrPort(b, to)
		return err
	}, f.check, &a.stats, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	a.probes = p
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	agentAddr := a.LocalAddr()
	vip := netip.AddrPortFrom(vip4, 80)
	other := probeBytes(t, 9, vip, vipprobe.ProtoTCP)
	other[1] = 0x81
	for i, d := range [][]byte{
		probeBytes(t, 7, vip, vipprobe.ProtoTCP),
		probeBytes(t, 8, netip.MustParseAddrPort("198.18.0.99:80"), vipprobe.ProtoTCP),
		other,
	} {
		if _, err := c.WriteToUDPAddrPort(d, agentAddr); err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			break
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
		var m vipprobe.Message
		if err := vipprobe.Parse(buf[:n], &m); err != nil || m.Type != vipprobe.Reply || from != agentAddr {
			t.Fatalf("reply %x from %v: %v", buf[:n], from, err)
		}
		if want := []vipprobe.Status{vipprobe.StatusUp, vipprobe.StatusNotConfigured}[i]; m.Status != want || m.ID != uint64(7+i) {
			t.Errorf("probe %d: %+v, want status %v", i, m, want)
		}
	}
	waitCounters(t, a, "probe counters", func(c *Counters) bool {
		return c.Received == 3 && c.Drops[GUEControl] == 1 && c.Probes.Requests == 2
	})
	want := ProbeCounters{Requests: 2, Up: 1, NotConfigured: 1, Checks: 1}
	if c := a.Counters(); c.Probes != want || c.Delivered != 0 || c.Dropped() != 1 {
		t.Errorf("counters %+v", c)
	}
}

func TestProbeCountersEach(t *testing.T) {
	c := ProbeCounters{Requests: 1, Malformed: 2, Up: 3, Down: 4, NotConfigured: 5, Overloaded: 6, Checks: 7, ReplyErrors: 8}
	var names []string
	var sum uint64
	c.Each(func(name string, v uint64) {
		names = append(names, name)
		sum += v
	})
	if len(names) != numProbeCounters || names[0] != "probe_requests" || names[7] != "probe_reply_errors" || sum != 36 {
		t.Errorf("names %v, sum %d", names, sum)
	}
}
