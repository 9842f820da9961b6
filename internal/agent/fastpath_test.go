package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/fastpath"
)

// The fastpath tests: this host is client4's and client6's; the LB nodes are
// in trustConfig's LB prefixes; the backends in 198.18.50.0/24 and
// 2001:db8:50::/64.
var (
	fpKey      = []byte("a fastpath key of 32 bytes, test")
	fpLB       = netip.MustParseAddrPort("198.18.30.11:6080")
	fpLB2      = netip.MustParseAddrPort("198.18.30.12:6080")
	fpBackend4 = netip.MustParseAddr("198.18.50.7")
	fpBackend6 = netip.MustParseAddr("2001:db8:50::7")
	fpConfig   = FastpathConfig{Interface: "eth0", Key: fpKey,
		BackendPrefixes: prefixes("198.18.50.0/24", "2001:db8:50::/64"),
		Idle:            30 * time.Second, Refresh: time.Second, Flows: 64}
)

// fakeEgress stands in for the egress program. Safe for concurrent use, so
// that a test may change a flow's state while the fastpath goroutine runs.
type fakeEgress struct {
	mu      sync.Mutex
	m       map[fastpath.Flow]*fakeEntry
	putErr  error
	walkErr error
	puts    int
	deletes []fastpath.Flow
	closed  bool
}

type fakeEntry struct {
	t egressTarget
	s egressState
}

func newFakeEgress() *fakeEgress { return &fakeEgress{m: map[fastpath.Flow]*fakeEntry{}} }

func (e *fakeEgress) put(f fastpath.Flow, t egressTarget) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.putErr != nil {
		return e.putErr
	}
	e.puts++
	e.m[f] = &fakeEntry{t: t}
	return nil
}

func (e *fakeEgress) delete(f fastpath.Flow) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.deletes = append(e.deletes, f)
	delete(e.m, f)
	return nil
}

func (e *fakeEgress) walk(fn func(fastpath.Flow, egressState) bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for f, x := range e.m {
		if !fn(f, x.s) {
			break
		}
	}
	return e.walkErr
}

func (e *fakeEgress) counters() (map[string]uint64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var pkts uint64
	for _, x := range e.m {
		pkts += x.s.Packets
	}
	return map[string]uint64{"tx_packets": pkts, "pass_no_flow": 3}, nil
}

func (e *fakeEgress) close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	return nil
}

// has reports whether f is in the map, with its target.
func (e *fakeEgress) has(f fastpath.Flow) (egressTarget, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[f]
	if !ok {
		return egressTarget{}, false
	}
	return x.t, true
}

// set changes f's state.
func (e *fakeEgress) set(f fastpath.Flow, fn func(*egressState)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fn(&e.m[f].s)
}

func (e *fakeEgress) len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.m)
}

// sentMsg is a message the agent sent, as the LB node opens it.
type sentMsg struct {
	to netip.AddrPort
	m  fastpath.Message
}

// fpHarness is a fastpathAgent driven by hand (no goroutine) on a fake
// clock, with the fake program, and a send that records what it sends.
type fpHarness struct {
	t     *testing.T
	p     *fastpathAgent
	prog  *fakeEgress
	stats *counters
	now   time.Time
	codec *fastpath.Codec // the LB node's
	sent  []sentMsg
	id    uint64
}

func newFPHarness(t *testing.T, cfg FastpathConfig) *fpHarness {
	t.Helper()
	h := &fpHarness{t: t, prog: newFakeEgress(), stats: &counters{}, now: time.UnixMilli(1_700_000_000_000),
		codec: fastpath.NewCodec(fastpath.Key(fpKey))}
	send := func(b []byte, to netip.AddrPort) error {
		var m fastpath.Message
		if err := h.codec.Open(b, &m); err != nil {
			t.Errorf("the agent sent a message the LB cannot open: %v", err)
		}
		h.sent = append(h.sent, sentMsg{to, m})
		return nil
	}
	addrs := func() ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), client4.Addr(), client6.Addr()}, nil
	}
	h.p = newFastpath(&cfg, trustConfig.LBPrefixes, h.prog, send, addrs, h.stats,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	h.p.now = func() time.Time { return h.now }
	return h
}

// counters flushes and returns the fastpath counters.
func (h *fpHarness) counters() FastpathCounters {
	h.p.stats.flushFastpath(&h.p.b)
	c := h.stats.load()
	return c.Fastpath
}

// seal returns a message of type typ with entries es, sent at sentMs
// (0: now) under key.
func (h *fpHarness) seal(key []byte, typ fastpath.Type, sentMs uint64, es ...fastpath.Entry) []byte {
	h.t.Helper()
	h.id++
	m := fastpath.Message{Type: typ, ID: h.id, TimeMs: sentMs, Count: len(es)}
	if sentMs == 0 {
		m.TimeMs = unixMs(h.now)
	}
	copy(m.Entries[:], es)
	b, err := fastpath.NewCodec(fastpath.Key(key)).Seal(nil, &m)
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

// deliver passes a message from src to the agent and returns what it sent
// in answer.
func (h *fpHarness) deliver(d []byte, src netip.AddrPort) []sentMsg {
	h.sent = nil
	h.p.receive(d, src)
	return h.sent
}

// flowN is a distinct TCP flow of this host to the VIP.
func flowN(i int) fastpath.Flow {
	return fastpath.Flow{Proto: 6, Client: netip.AddrPortFrom(client4.Addr(), uint16(10000+i)), VIP: netip.AddrPortFrom(vip4, 443)}
}

var (
	fpFlow4 = fastpath.Flow{Proto: 6, Client: client4, VIP: netip.AddrPortFrom(vip4, 443)}
	fpFlow6 = fastpath.Flow{Proto: 17, Client: client6, VIP: netip.AddrPortFrom(vip6, 443)}
)

func redirectTo(f fastpath.Flow, backend netip.Addr) fastpath.Entry {
	return fastpath.Entry{Flow: f, Backend: backend, Port: 6080, SrcPort: 51234, FlowLabel: 0x12345}
}

// fastpathRedirectBytes is a sealed redirect (for the trust table).
func fastpathRedirectBytes(t *testing.T) []byte {
	return newFPHarness(t, fpConfig).seal(fpKey, fastpath.Redirect, 0, redirectTo(fpFlow4, fpBackend4))
}

// wantAck checks that sent is one ack of message id to to, with the
// statuses want by flow.
func wantAck(t *testing.T, sent []sentMsg, to netip.AddrPort, id uint64, want map[fastpath.Flow]fastpath.Status) {
	t.Helper()
	if len(sent) != 1 {
		t.Fatalf("sent %d messages, want one ack", len(sent))
	}
	s := sent[0]
	if s.to != to || s.m.Type != fastpath.Ack || s.m.ID != id || s.m.Count != len(want) {
		t.Fatalf("sent %s ID %d with %d entries to %s, want an ack of %d with %d entries to %s",
			s.m.Type, s.m.ID, s.m.Count, s.to, id, len(want), to)
	}
	for _, e := range s.m.Entries[:s.m.Count] {
		if w, ok := want[e.Flow]; !ok || e.Status != w {
			t.Errorf("ack of %s: %s, want %s", e.Flow, e.Status, w)
		}
	}
}

// A redirect from an LB node is installed with exactly its fields and
// acknowledged to the sender's address and port, entry by entry.
func TestFastpathRedirectInstalled(t *testing.T) {
	h := newFPHarness(t, fpConfig)
	e4, e6 := redirectTo(fpFlow4, fpBackend4), redirectTo(fpFlow6, fpBackend6)
	e4.Flags = fastpath.FlagUDPChecksum
	sent := h.deliver(h.seal(fpKey, fastpath.Redirect, 0, e4, e6), fpLB)
	wantAck(t, sent, fpLB, h.id, map[fastpath.Flow]fastpath.Status{fpFlow4: fastpath.StatusInstalled, fpFlow6: fastpath.StatusInstalled})
	for _, tc := range []struct {
		f    fastpath.Flow
		want egressTarget
	}{
		{fpFlow4, egressTarget{Backend: fpBackend4, Port: 6080, SrcPort: 51234, FlowLabel: 0x12345, UDPChecksum: true}},
		{fpFlow6, egressTarget{Backend: fpBackend6, Port: 6080, SrcPort: 51234, FlowLabel: 0x12345}},
	} {
		if got, ok := h.prog.has(tc.f); !ok || got != tc.want {
			t.Errorf("%s in the map: %v %+v, want %+v", tc.f, ok, got, tc.want)
		}
	}
	if x := h.p.flows[fpFlow4]; x == nil || x.lb != fpLB || !x.at.Equal(h.now) {
		t.Errorf("table entry of %s: %+v, want redirected by %s at %v", fpFlow4, x, fpLB, h.now)
	}
	if c := h.counters(); c.Redirects != 1 || c.Installed != 2 || c.AcksSent != 1 || c.Refused != [8]uint64{} {
		t.Errorf("counters %+v", c)
	}
}

// Each refusal: the flow is not installed, the ack says why, the refusal
// is counted by status.
func TestFastpathRedirectRefused(t *testing.T) {
	other4 := fastpath.Flow{Proto: 6, Client: netip.MustParseAddrPort("198.18.3.8:40001"), VIP: netip.AddrPortFrom(vip4, 443)}
	for _, tc := range []struct {
		name  string
		setup func(h *fpHarness)
		entry fastpath.Entry
		want  fastpath.Status
	}{
		{"client of another host", nil, redirectTo(other4, fpBackend4), fastpath.StatusNotLocal},
		{"backend outside the prefixes", nil, redirectTo(fpFlow4, netip.MustParseAddr("198.18.51.7")), fastpath.StatusBackend},
		{"backend v6, flow v4", nil, redirectTo(fpFlow4, fpBackend6), fastpath.StatusFamily},
		{"backend v4, flow v6", nil, redirectTo(fpFlow6, fpBackend4), fastpath.StatusFamily},
		{"table full", func(h *fpHarness) {
			h.p.cfg.Flows = 1
			h.deliver(h.seal(fpKey, fastpath.Redirect, 0, redirectTo(fpFlow6, fpBackend6)), fpLB)
		}, redirectTo(fpFlow4, fpBackend4), fastpath.StatusFull},
		{"put fails", func(h *fpHarness) { h.prog.putErr = errors.New("no space") }, redirectTo(fpFlow4, fpBackend4), fastpath.StatusFull},
		{"cancelled later", func(h *fpHarness) {
			h.deliver(h.seal(fpKey, fastpath.Cancel, unixMs(h.now)+5, fastpath.Entry{Flow: fpFlow4}), fpLB2)
		}, redirectTo(fpFlow4, fpBackend4), fastpath.StatusStale},
		{"cancelled at the same time", func(h *fpHarness) {
			h.deliver(h.seal(fpKey, fastpath.Cancel, 0, fastpath.Entry{Flow: fpFlow4}), fpLB)
		}, redirectTo(fpFlow4, fpBackend4), fastpath.StatusStale},
		{"no program", func(h *fpHarness) { h.p.prog = nil }, redirectTo(fpFlow4, fpBackend4), fastpath.StatusUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFPHarness(t, fpConfig)
			if tc.setup != nil {
				tc.setup(h)
			}
			before := h.counters()
			sent := h.deliver(h.seal(fpKey, fastpath.Redirect, 0, tc.entry), fpLB)
			wantAck(t, sent, fpLB, h.id, map[fastpath.Flow]fastpath.Status{tc.entry.Flow: tc.want})
			if _, ok := h.prog.has(tc.entry.Flow); ok {
				t.Errorf("%s installed", tc.entry.Flow)
			}
			if _, ok := h.p.flows[tc.entry.Flow]; ok {
				t.Errorf("%s in the table", tc.entry.Flow)
			}
			c := h.counters()
			if c.Refused[tc.want]-before.Refused[tc.want] != 1 || c.Installed != before.Installed {
				t.Errorf("refused %v, installed %d (before: %v, %d)", c.Refused, c.Installed, before.Refused, before.Installed)
			}
		})
	}
}

// Messages the agent must not act on are counted and get no answer.
func TestFastpathDropped(t *testing.T) {
	e := redirectTo(fpFlow4, fpBackend4)
	for _, tc := range []struct {
		name  string
		msg   func(h *fpHarness) []byte
		src   netip.AddrPort
		count func(c *FastpathCounters) uint64
	}{
		{"wrong key", func(h *fpHarness) []byte {
			return h.seal([]byte("another key of 32 bytes, testing"), fastpath.Redirect, 0, e)
		}, fpLB, func(c *FastpathCounters) uint64 { return c.AuthFailures }},
		{"wrong key, cancel", func(h *fpHarness) []byte {
			return h.seal([]byte("another key of 32 bytes, testing"), fastpath.Cancel, 0, fastpath.Entry{Flow: fpFlow4})
		}, fpLB, func(c *FastpathCounters) uint64 { return c.AuthFailures }},
		{"from a fastpath client", func(h *fpHarness) []byte { return h.seal(fpKey, fastpath.Redirect, 0, e) },
			netip.MustParseAddrPort("198.18.20.7:6080"), func(c *FastpathCounters) uint64 { return c.Untrusted }},
		{"from a backend", func(h *fpHarness) []byte { return h.seal(fpKey, fastpath.Cancel, 0, fastpath.Entry{Flow: fpFlow4}) },
			netip.MustParseAddrPort("198.18.30.65:6080"), func(c *FastpathCounters) uint64 { return c.Untrusted }},
		{"no source", func(h *fpHarness) []byte { return h.seal(fpKey, fastpath.Redirect, 0, e) },
			netip.AddrPort{}, func(c *FastpathCounters) uint64 { return c.Untrusted }},
		{"sent 31 s ago", func(h *fpHarness) []byte {
			return h.seal(fpKey, fastpath.Redirect, unixMs(h.now)-fastpath.FreshMs-1000, e)
		}, fpLB, func(c *FastpathCounters) uint64 { return c.StaleTime }},
		{"sent 31 s ahead", func(h *fpHarness) []byte {
			return h.seal(fpKey, fastpath.Redirect, unixMs(h.now)+fastpath.FreshMs+1000, e)
		}, fpLB, func(c *FastpathCounters) uint64 { return c.StaleTime }},
		{"truncated", func(h *fpHarness) []byte { return h.seal(fpKey, fastpath.Redirect, 0, e)[:100] },
			fpLB, func(c *FastpathCounters) uint64 { return c.Malformed }},
		{"an ack", func(h *fpHarness) []byte {
			return h.seal(fpKey, fastpath.Ack, 0, fastpath.Entry{Flow: fpFlow4, Status: fastpath.StatusInstalled})
		}, fpLB, func(c *FastpathCounters) uint64 { return c.Unexpected }},
		{"a refresh", func(h *fpHarness) []byte { return h.seal(fpKey, fastpath.Refresh, 0, fastpath.Entry{Flow: fpFlow4}) },
			fpLB, func(c *FastpathCounters) uint64 { return c.Unexpected }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFPHarness(t, fpConfig)
			// The flow is installed first, so that a cancel that were
			// taken would show.
			h.deliver(h.seal(fpKey, fastpath.Redirect, 0, e), fpLB)
			h.now = h.now.Add(time.Millisecond)
			if sent := h.deliver(tc.msg(h), tc.src); len(sent) != 0 {
				t.Errorf("answered with %s", sent[0].m.Type)
			}
			c := h.counters()
			if got := tc.count(&c); got != 1 {
				t.Errorf("counted %d times, want once: %+v", got, c)
			}
			if c.Redirects != 1 || c.Cancels != 0 || c.Installed != 1 || c.AcksSent != 1 || h.prog.puts != 1 {
				t.Errorf("acted on: %+v, %d puts", c, h.prog.puts)
			}
			if _, ok := h.prog.has(fpFlow4); !ok {
				t.Error("the installed flow was removed")
			}
		})
	}
}

// A redirect sent twice is acknowledged twice but written to the map once
// (the entry, its counters and its end mark stay); the second from another
// LB node takes over the refreshes; one to another backend rewrites it.
func TestFastpathDuplicateRedirect(t *testing.T) {
	h := newFPHarness(t, fpConfig)
	d := h.seal(fpKey, fastpath.Redirect, 0, redirectTo(fpFlow4, fpBackend4))
	id := h.id
	for i := range 2 {
		wantAck(t, h.deliver(d, fpLB), fpLB, id, map[fastpath.Flow]fastpath.Status{fpFlow4: fastpath.StatusInstalled})
		if h.prog.len() != 1 || h.prog.puts != 1 || len(h.p.flows) != 1 {
			t.Fatalf("after %d: %d in the map, %d puts, %d in the table", i+1, h.prog.len(), h.prog.puts, len(h.p.flows))
		}
	}
	other := redirectTo(fpFlow4, fpBackend4)
	other.SrcPort++
	wantAck(t, h.deliver(h.seal(fpKey, fastpath.Redirect, 0, other), fpLB), fpLB, h.id,
		map[fastpath.Flow]fastpath.Status{fpFlow4: fastpath.StatusInstalled})
	if h.prog.puts != 2 {
		t.Fatalf("%d puts after a redirect to another target, want 2", h.prog.puts)
	}
	wantAck(t, h.deliver(h.seal(fpKey, fastpath.Redirect, 0, redirectTo(fpFlow4, fpBackend4)), fpLB2), fpLB2, h.id,
		map[fastpath.Flow]fastpath.Status{fpFlow4: fastpath.StatusInstalled})
	if x := h.p.flows[fpFlow4]; x.lb != fpLB2 {
		t.Errorf("refreshes go to %s, want %s", x.lb, fpLB2)
	}
	if c := h.counters(); c.Installed != 4 || c.AcksSent != 4 {
		t.Errorf("counters %+v", c)
	}
}

// Cancels beyond the tombstone table are not remembered one by one: every
// redirect sent before them is refused as stale instead, and a later one
// is installed.
func TestFastpathTombstonesFull(t *testing.T) {
	cfg := fpConfig
	cfg.Flows = 1 // 2 tombstones
	h := newFPHarness(t, cfg)
	before := unixMs(h.now)
	h.now = h.now.Add(10 * time.Millisecond)
	f3 := fpFlow4
	f3.Client = netip.AddrPortFrom(client4.Addr(), client4.Port()+1)
	h.deliver(h.seal(fpKey, fastpath.Cancel, 0, fastpath.Entry{Flow: fpFlow6}, fastpath.Entry{Flow: f3},
		fastpath.Entry{Flow: fpFlow4}), fpLB)
	if c := h.counters(); c.TombstonesFull != 1 || len(h.p.tombs) != 2 {
		t.Fatalf("tombstones %d, full %d; want 2, 1", len(h.p.tombs), c.TombstonesFull)
	}
	wantAck(t, h.deliver(h.seal(fpKey, fastpath.Redirect, before, redirectTo(fpFlow4, fpBackend4)), fpLB), fpLB, h.id,
		map[fastpath.Flow]fastpath.Status{fpFlow4: fastpath.StatusStale})
	h.now = h.now.Add(10 * time.Millisecond)
	wantAck(t, h.deliver(h.seal(fpKey, fastpath.Redirect, 0, redirectTo(fpFlow4, fpBackend4)), fpLB), fpLB, h.id,
		map[fastpath.Flow]fastpath.Status{fpFlow4: fastpath.StatusInstalled})
}

// A cancel removes its flows (present or not) and acknowledges each; a
// redirect older than the cancel is refused as stale, a newer one
// installed; the cancel is forgotten after twice the freshness window.
func TestFastpathCancel(t *testing.T) {
	h := newFPHarness(t, fpConfig)
	redirectedAt := unixMs(h.now)
	h.deliver(h.seal(fpKey, fastpath.Redirect, 0, redirectTo(fpFlow4, fpBackend4)), fpLB)
	h.now = h.now.Add(10 * time.Millisecond)
	sent := h.deliver(h.seal(fpKey, fastpath.Cancel, 0, fastpath.Entry{Flow: fpFlow4}, fastpath.Entry{Flow: fpFlow6}), fpLB2)
	wantAck(t, sent, fpLB2, h.id, map[fastpath.Flow]fastpath.Status{fpFlow4: fastpath.StatusInstalled, fpFlow6: fastpath.StatusInstalled})
	if _, ok := h.prog.has(fpFlow4); ok || len(h.p.flows) != 0 {
		t.Fatalf("the cancelled flow remains")
	}
	if c := h.counters(); c.Cancels != 1 || c.Cancelled != 2 || c.AcksSent != 2 {
		t.Errorf("counters %+v", c)
	}
	// The redirect again, late (e.g. a retransmission): stale.
	wantAck(t, h.deliver(h.seal(fpKey, fastpath.Redirect, redirectedAt, redirectTo(fpFlow4, fpBackend4)), fpLB), fpLB, h.id,
		map[fastpath.Flow]fastpath.Status{fpFlow4: fastpath.StatusStale})
	// A newer redirect: installed.
	h.now = h.now.Add(10 * time.Millisecond)
	wantAck(t, h.deliver(h.seal(fpKey, fastpath.Redirect, 0, redirectTo(fpFlow4, fpBackend4)), fpLB), fpLB, h.id,
		map[fastpath.Flow]fastpath.Status{fpFlow4: fastpath.StatusInstalled})
	// The tombstone outlives the freshness window, then goes.
	h.now = h.now.Add(fastpath.FreshMs * time.Millisecond)
	h.p.sweep()
	if len(h.p.tombs) != 2 {
		t.Errorf("%d tombstones after %d ms, want 2", len(h.p.tombs), fastpath.FreshMs)
	}
	h.now = h.now.Add(fastpath.FreshMs * time.Millisecond)
	h.p.sweep()
	if len(h.p.tombs) != 0 {
		t.Errorf("%d tombstones after twice the freshness window", len(h.p.tombs))
	}
}

// The sweep removes ended flows after the linger, idle flows and flows the
// agent did not install; it sends each LB node one refresh per 16 of its
// flows that sent packets since the last sweep, and no other.
func TestFastpathSweep(t *testing.T) {
	h := newFPHarness(t, fpConfig)
	t0 := h.now
	// LB 1 redirects flows 0..19, LB 2 flows 20..22.
	var es []fastpath.Entry
	for i := range 20 {
		es = append(es, redirectTo(flowN(i), fpBackend4))
		if len(es) == fastpath.MaxEntries || i == 19 {
			h.deliver(h.seal(fpKey, fastpath.Redirect, 0, es...), fpLB)
			es = es[:0]
		}
	}
	h.deliver(h.seal(fpKey, fastpath.Redirect, 0, redirectTo(flowN(20), fpBackend4), redirectTo(flowN(21), fpBackend4),
		redirectTo(flowN(22), fpBackend4)), fpLB2)
	unknown := flowN(99)
	h.prog.put(unknown, egressTarget{Backend: fpBackend4, Port: 6080})
	if h.prog.len() != 24 {
		t.Fatalf("%d flows in the map", h.prog.len())
	}
	// All of LB 1's but flow 3 sent packets, and flows 20, 21 of LB 2's.
	// Flow 0 ended, flow 21 too; flow 22 sent nothing (it will idle out).
	send := func(i int, n uint64) {
		h.prog.set(flowN(i), func(s *egressState) { s.Packets += n; s.LastUsed = h.now })
	}
	h.now = t0.Add(time.Second)
	for i := range 21 {
		if i != 3 {
			send(i, 5)
		}
	}
	h.prog.set(flowN(0), func(s *egressState) { s.Ended = true })
	h.prog.set(flowN(21), func(s *egressState) { s.Ended = true })
	h.sent = nil
	h.p.sweep()
	c := h.counters()
	if c.Unknown != 1 || c.Ended != 0 || c.Expired != 0 {
		t.Errorf("first sweep removed: %+v", c)
	}
	if _, ok := h.prog.has(unknown); ok {
		t.Error("the unknown flow is still in the map")
	}
	if _, ok := h.prog.has(flowN(0)); !ok {
		t.Error("the ended flow was removed at once, not after the linger")
	}
	got := refreshed(t, h.sent)
	want := map[netip.AddrPort][]fastpath.Flow{fpLB2: {flowN(20)}}
	for i := range 20 {
		if i != 3 {
			want[fpLB] = append(want[fpLB], flowN(i))
		}
	}
	checkRefreshed(t, "first sweep", got, want)
	if n := len(h.sent); n != 3 { // 19 flows: 16 + 3; and 1
		t.Errorf("%d refreshes, want 3", n)
	}
	if c := h.stats.load(); c.Fastpath.Flows != 23 {
		t.Errorf("flows gauge %d, want 23", c.Fastpath.Flows)
	}
	if eg := h.p.egress.Load(); eg == nil || len(*eg) != 2 || (*eg)[1] != (EgressCounter{"tx_packets", 19*5 + 5}) {
		t.Errorf("egress counters %v", eg)
	}

	// A second later: no packets but from flow 1; the linger of the ended
	// flows is not over yet.
	h.now = t0.Add(2 * time.Second)
	send(1, 1)
	h.sent = nil
	h.p.sweep()
	checkRefreshed(t, "second sweep", refreshed(t, h.sent), map[netip.AddrPort][]fastpath.Flow{fpLB: {flowN(1)}})
	if c := h.counters(); c.Ended != 0 {
		t.Errorf("ended flows removed within the linger: %+v", c)
	}
	// Past the linger: the ended flows go.
	h.now = t0.Add(3 * time.Second)
	h.sent = nil
	h.p.sweep()
	if len(h.sent) != 0 {
		t.Errorf("%d refreshes without packets", len(h.sent))
	}
	if c := h.counters(); c.Ended != 2 || c.Expired != 0 {
		t.Errorf("past the linger: %+v", c)
	}
	for _, i := range []int{0, 21} {
		if _, ok := h.prog.has(flowN(i)); ok || h.p.flows[flowN(i)] != nil {
			t.Errorf("ended flow %d remains", i)
		}
	}
	// Idle: flow 22 (no packet since it was installed at t0) and flow 3
	// go at t0+Idle; the others, last used at t0+1s, a second later.
	h.now = t0.Add(fpConfig.Idle)
	h.p.sweep()
	if c := h.counters(); c.Expired != 2 {
		t.Errorf("at Idle: %d expired, want 2", c.Expired)
	}
	h.now = t0.Add(fpConfig.Idle + 2*time.Second)
	h.p.sweep()
	if c := h.counters(); c.Expired != 2+19 || h.prog.len() != 0 || len(h.p.flows) != 0 {
		t.Errorf("after Idle: %d expired, %d in the map, %d in the table", c.Expired, h.prog.len(), len(h.p.flows))
	}
	if c := h.stats.load(); c.Fastpath.Flows != 0 {
		t.Errorf("flows gauge %d, want 0", c.Fastpath.Flows)
	}
}

// A flow the program lost (not in the map any more) is forgotten; a walk
// that fails forgets nothing.
func TestFastpathSweepForgetsLostFlows(t *testing.T) {
	h := newFPHarness(t, fpConfig)
	h.deliver(h.seal(fpKey, fastpath.Redirect, 0, redirectTo(fpFlow4, fpBackend4)), fpLB)
	h.prog.delete(fpFlow4)
	h.prog.walkErr = errors.New("walk failed")
	h.p.sweep()
	if len(h.p.flows) != 1 || h.counters().MapErrors != 1 {
		t.Errorf("after a failed walk: %d in the table, counters %+v", len(h.p.flows), h.counters())
	}
	h.prog.walkErr = nil
	h.p.sweep()
	if len(h.p.flows) != 0 {
		t.Error("the lost flow is still in the table")
	}
}

// refreshed checks that every message is a refresh of at most MaxEntries
// flows and returns the flows refreshed by destination.
func refreshed(t *testing.T, sent []sentMsg) map[netip.AddrPort][]fastpath.Flow {
	t.Helper()
	got := map[netip.AddrPort][]fastpath.Flow{}
	ids := map[uint64]bool{}
	for _, s := range sent {
		if s.m.Type != fastpath.Refresh || s.m.Count < 1 || s.m.Count > fastpath.MaxEntries || ids[s.m.ID] {
			t.Errorf("sent %s ID %d with %d entries (IDs so far %v)", s.m.Type, s.m.ID, s.m.Count, ids)
		}
		ids[s.m.ID] = true
		for _, e := range s.m.Entries[:s.m.Count] {
			got[s.to] = append(got[s.to], e.Flow)
		}
	}
	return got
}

func checkRefreshed(t *testing.T, what string, got, want map[netip.AddrPort][]fastpath.Flow) {
	t.Helper()
	key := func(f fastpath.Flow) string { return f.String() }
	norm := func(m map[netip.AddrPort][]fastpath.Flow) string {
		s := ""
		for _, lb := range slices.SortedFunc(maps.Keys(m), func(a, b netip.AddrPort) int { return a.Compare(b) }) {
			fs := slices.Clone(m[lb])
			slices.SortFunc(fs, func(a, b fastpath.Flow) int { return a.Client.Compare(b.Client) })
			s += lb.String() + ":"
			for _, f := range fs {
				s += " " + key(f)
			}
			s += "\n"
		}
		return s
	}
	if g, w := norm(got), norm(want); g != w {
		t.Errorf("%s: refreshed\n%s\nwant\n%s", what, g, w)
	}
}

// TestFastpathRunLoopback drives the message exchange over real sockets:
// an LB node's socket on 127.0.0.1 sends a sealed redirect to the agent's
// Run loop and gets the ack; a redirect under another key gets nothing;
// once the flow sends packets the LB node gets a refresh, and a cancel
// removes the flow. Close detaches the program.
func TestFastpathRunLoopback(t *testing.T) {
	a, _ := loopbackAgent(t, 8)
	prog := newFakeEgress()
	cfg := fpConfig
	cfg.Refresh = 20 * time.Millisecond
	send := func(b []byte, to netip.AddrPort) error {
		_, err := a.udp.WriteToUDPAddrPort(b, to)
		return err
	}
	addrs := func() ([]netip.Addr, error) { return []netip.Addr{client4.Addr()}, nil }
	a.fp = newFastpath(&cfg, prefixes("127.0.0.1/32"), prog, send, addrs, &a.stats, a.log)
	a.fp.start()
	a.push("stop fastpath", func() error { return a.fp.stop(true) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()

	lb, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	codec := fastpath.NewCodec(fastpath.Key(fpKey))
	var id uint64
	lbSend := func(key []byte, typ fastpath.Type, es ...fastpath.Entry) {
		t.Helper()
		id++
		m := fastpath.Message{Type: typ, ID: id, TimeMs: unixMs(time.Now()), Count: len(es)}
		copy(m.Entries[:], es)
		b, err := fastpath.NewCodec(fastpath.Key(key)).Seal(nil, &m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lb.WriteToUDPAddrPort(b, a.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 2000)
	lbRecv := func(wait time.Duration) (fastpath.Message, error) {
		var m fastpath.Message
		lb.SetReadDeadline(time.Now().Add(wait))
		n, from, err := lb.ReadFromUDPAddrPort(buf)
		if err != nil {
			return m, err
		}
		if from.Port() != a.LocalAddr().Port() {
			return m, fmt.Errorf("message from %s, not the agent's socket", from)
		}
		return m, codec.Open(buf[:n], &m)
	}

	lbSend([]byte("another key of 32 bytes, testing"), fastpath.Redirect, redirectTo(fpFlow4, fpBackend4))
	lbSend(fpKey, fastpath.Redirect, redirectTo(fpFlow4, fpBackend4))
	m, err := lbRecv(5 * time.Second)
	if err != nil || m.Type != fastpath.Ack || m.ID != 2 || m.Count != 1 || m.Entries[0].Flow != fpFlow4 ||
		m.Entries[0].Status != fastpath.StatusInstalled {
		t.Fatalf("LB node received %+v (%v), want the ack of message 2", m.Entries[0], err)
	}
	if _, ok := prog.has(fpFlow4); !ok {
		t.Fatal("not installed")
	}
	waitCounters(t, a, "auth failure", func(c *Counters) bool { return c.Fastpath.AuthFailures == 1 })

	prog.set(fpFlow4, func(s *egressState) { s.Packets, s.LastUsed = 3, time.Now() })
	if m, err = lbRecv(5 * time.Second); err != nil || m.Type != fastpath.Refresh || m.Count != 1 || m.Entries[0].Flow != fpFlow4 {
		t.Fatalf("LB node received %s with %d entries (%v), want a refresh of the flow", m.Type, m.Count, err)
	}

	lbSend(fpKey, fastpath.Cancel, fastpath.Entry{Flow: fpFlow4})
	for {
		if m, err = lbRecv(5 * time.Second); err != nil || m.Type != fastpath.Refresh {
			break // a refresh may still be on its way
		}
	}
	if err != nil || m.Type != fastpath.Ack || m.ID != id {
		t.Fatalf("LB node received %s %d (%v), want the ack of the cancel", m.Type, m.ID, err)
	}
	if _, ok := prog.has(fpFlow4); ok {
		t.Error("the cancelled flow remains")
	}
	// A redirect from outside the LB prefixes: dropped by the trust
	// check, counted by it and as a fastpath counter.
	stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	m = fastpath.Message{Type: fastpath.Redirect, ID: 77, TimeMs: unixMs(time.Now()), Count: 1}
	m.Entries[0] = redirectTo(fpFlow4, fpBackend4)
	b, _ := codec.Seal(nil, &m)
	if _, err := stranger.WriteToUDPAddrPort(b, a.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	waitCounters(t, a, "untrusted", func(c *Counters) bool { return c.Fastpath.Untrusted == 1 })
	c := a.Counters()
	if c.Fastpath.Redirects != 1 || c.Fastpath.Cancels != 1 || c.Fastpath.AcksSent != 2 ||
		c.Dropped() != 1 || c.Drops[RejectedSource] != 1 {
		t.Errorf("counters %+v", c)
	}
	if eg := a.FastpathEgress(); len(eg) != 2 {
		t.Errorf("egress counters %v", eg)
	}
	cancel()
	<-done
	stopped = true
	a.Close() // loopbackAgent's undo closes the socket Close closed: an error
	if !prog.closed {
		t.Error("Close left the program attached")
	}
}

// An agent with fastpath and no VIPs is a fastpath client only: it adds
// nothing to the host, drops GUE data as for an unknown VIP, answers
// redirects, and detaches the program at Close.
func TestFastpathClientOnlyNew(t *testing.T) {
	prog := newFakeEgress()
	var opts egressOptions
	defer func(f func(egressOptions) (egressProgram, error)) { attachEgress = f }(attachEgress)
	attachEgress = func(o egressOptions) (egressProgram, error) { opts = o; return prog, nil }
	cfg := fpConfig
	cfg.Flows = 0
	a, err := New(Config{Listen: netip.MustParseAddrPort("127.0.0.1:0"), TUN: "sl-fpclient",
		LBPrefixes: prefixes("127.0.0.1/32"), Fastpath: &cfg, Logger: testLogger(t)})
	if err != nil {
		t.Skipf("New: %v (needs netlink)", err)
	}
	defer a.Close()
	if a.tun != nil {
		t.Error("a fastpath client made a TUN device")
	}
	if opts.Interface != "eth0" || opts.Flows != DefaultFastpathFlows || opts.Log == nil {
		t.Errorf("attached with %+v", opts)
	}
	if _, err := net.InterfaceByName("sl-fpclient"); err == nil {
		t.Error("the TUN device exists")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	c, err := net.Dial("udp4", a.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(gue(4, nil, syn(client4, netip.AddrPortFrom(vip4, 80), 1)))
	// A redirect for a client address that is not this host's: refused.
	m := fastpath.Message{Type: fastpath.Redirect, ID: 9, TimeMs: unixMs(time.Now()), Count: 1}
	m.Entries[0] = redirectTo(fastpath.Flow{Proto: 6, Client: netip.MustParseAddrPort("203.0.113.9:4000"),
		VIP: netip.AddrPortFrom(vip4, 443)}, fpBackend4)
	codec := fastpath.NewCodec(fastpath.Key(fpKey))
	b, _ := codec.Seal(nil, &m)
	c.Write(b)
	buf := make([]byte, 2000)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := codec.Open(buf[:n], &m); err != nil || m.Type != fastpath.Ack || m.Entries[0].Status != fastpath.StatusNotLocal {
		t.Errorf("answer %s %s (%v), want an ack with not_local", m.Type, m.Entries[0].Status, err)
	}
	waitCounters(t, a, "data dropped", func(c *Counters) bool { return c.Drops[InnerDstNotVIP] == 1 })
	cancel()
	<-done
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if !prog.closed {
		t.Error("Close left the program attached")
	}
}

// When the egress program cannot be attached (no such interface, or no
// privileges) New fails, names the interface, and undoes what it did.
func TestFastpathNewWithoutProgram(t *testing.T) {
	cfg := fpConfig
	cfg.Interface = "sl-nosuch0"
	a, err := New(Config{Listen: netip.MustParseAddrPort("127.0.0.1:0"), LBPrefixes: prefixes("127.0.0.1/32"), Fastpath: &cfg})
	if err == nil {
		a.Close()
		t.Fatal("New attached to a missing interface")
	}
	if !strings.Contains(err.Error(), `"sl-nosuch0"`) {
		t.Errorf("New: %v, want the interface named", err)
	}
}

// The Run loop hands fastpath messages over without waiting: a full queue
// drops (counted), an oversize message is malformed.
func TestFastpathEnqueue(t *testing.T) {
	p := newFastpath(&fpConfig, trustConfig.LBPrefixes, nil, nil, nil, &counters{}, nil)
	var b Counters
	d := make([]byte, 100)
	for range FastpathQueue + 3 {
		p.enqueue(d, fpLB, &b)
	}
	p.enqueue(make([]byte, fastpath.MaxLen+1), fpLB, &b)
	if b.Fastpath.QueueFull != 3 || b.Fastpath.Malformed != 1 || len(p.jobs) != FastpathQueue {
		t.Errorf("counts %+v, %d queued", b.Fastpath, len(p.jobs))
	}
	j := <-p.jobs
	if j.n != 100 || j.src != fpLB {
		t.Errorf("job %d bytes from %s", j.n, j.src)
	}
}

// A cancel the node sent before its installed redirect of the flow (a
// node's cancel of a flow it forgot and its new redirect of it crossed on
// the way) is acknowledged and ignored, and a later one removes the flow;
// send times compare only from one node, so another node's cancel sent
// "before" by its clock removes the flow.
func TestFastpathCrossedCancel(t *testing.T) {
	for _, tc := range []struct {
		name string
		from netip.AddrPort
		kept bool
	}{{"same node", fpLB, true}, {"another node", fpLB2, false}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFPHarness(t, fpConfig)
			before := unixMs(h.now)
			h.now = h.now.Add(10 * time.Millisecond)
			wantAck(t, h.deliver(h.seal(fpKey, fastpath.Redirect, 0, redirectTo(fpFlow4, fpBackend4)), fpLB), fpLB, h.id,
				map[fastpath.Flow]fastpath.Status{fpFlow4: fastpath.StatusInstalled})
			wantAck(t, h.deliver(h.seal(fpKey, fastpath.Cancel, before, fastpath.Entry{Flow: fpFlow4}), tc.from), tc.from, h.id,
				map[fastpath.Flow]fastpath.Status{fpFlow4: fastpath.StatusInstalled})
			c := h.counters()
			if !tc.kept {
				if c.StaleCancels != 0 || c.Cancelled != 1 || h.prog.len() != 0 {
					t.Fatalf("%+v, %d in the map; want the flow removed", c, h.prog.len())
				}
				return
			}
			if c.StaleCancels != 1 || c.Cancelled != 0 || h.prog.len() != 1 || len(h.p.flows) != 1 {
				t.Fatalf("after the crossed cancel: %+v, %d in the map; want the flow kept", c, h.prog.len())
			}
			h.now = h.now.Add(10 * time.Millisecond)
			wantAck(t, h.deliver(h.seal(fpKey, fastpath.Cancel, 0, fastpath.Entry{Flow: fpFlow4}), fpLB), fpLB, h.id,
				map[fastpath.Flow]fastpath.Status{fpFlow4: fastpath.StatusInstalled})
			if c := h.counters(); c.Cancelled != 1 || h.prog.len() != 0 || len(h.p.flows) != 0 {
				t.Fatalf("after a later cancel: %+v, %d in the map; want the flow removed", c, h.prog.len())
			}
		})
	}
}
