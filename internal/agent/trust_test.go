package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/health/vipprobe"
)

// trustConfig is the source filter of the trust tests: the LB nodes in
// 198.18.30.0/27 and 2001:db8:30::/123, the other agents in
// 198.18.30.64/26 and 2001:db8:30::100/120, and 198.18.40.0/24 in both;
// fastpath client hosts in 198.18.20.0/24 and 2001:db8:20::/64, and in
// 198.18.30.96/27, inside the other agents' prefix.
var trustConfig = Config{
	LBPrefixes:      prefixes("198.18.30.0/27", "2001:db8:30::/123", "198.18.40.0/24"),
	HopPrefixes:     prefixes("198.18.30.64/26", "2001:db8:30::100/120", "198.18.40.0/24"),
	FastpathClients: prefixes("198.18.20.0/24", "2001:db8:20::/64", "198.18.30.96/27"),
}

// TestTrustDecision is the table of who may send what.
func TestTrustDecision(t *testing.T) {
	in4 := syn(client4, netip.AddrPortFrom(vip4, 80), 1)
	in6 := syn(client6, netip.AddrPortFrom(vip6, 80), 1)
	a4, b4 := netip.MustParseAddr("198.18.30.101"), netip.MustParseAddr("198.18.30.102")
	datagrams := map[string][]byte{
		"plain":          gue(4, nil, in4),
		"plain v6":       gue(41, nil, in6),
		"hops index 0":   gue(4, hopList(0, a4, b4), in4),
		"hops index 1":   gue(4, hopList(1, a4, b4), in4), // as the LB sends it
		"forwarded":      gue(4, hopList(2, a4, b4), in4), // as an agent forwards it
		"forwarded v6":   gue(41, hopList(2, netip.MustParseAddr("2001:db8:30::101"), netip.MustParseAddr("2001:db8:30::102")), in6),
		"forwarded 3":    gue(4, hopList(3, a4, b4, a4), in4),
		"probe":          probeBytes(t, 1, netip.AddrPortFrom(vip4, 80), vipprobe.ProtoTCP),
		"junk":           []byte("junk"),
		"empty":          nil,
		"other private":  gue(4, []byte{0x12, 0x34, 2, 2}, in4),
		"control hops":   append([]byte{0x21, 4, 0, 0}, hopList(2, a4)...),
		"version 1 hops": append([]byte{0x42, 4, 0, 0}, hopList(2, a4)...),
		"fastpath":       fastpathRedirectBytes(t),
		"control":        {0x20, 0x77, 0, 0},
	}
	fromLB := map[string]bool{} // what an LB-only source may send: all but the forwarded ones
	for name := range datagrams {
		fromLB[name] = true
	}
	for _, name := range []string{"forwarded", "forwarded v6", "forwarded 3"} {
		fromLB[name] = false
	}
	fromHop := map[string]bool{"forwarded": true, "forwarded v6": true, "forwarded 3": true}
	// A fastpath client host: GUE data as an LB sends it (an unknown
	// private type too: DecodeGUE drops it by its own reason); no control
	// message, nothing forwarded, nothing that is not GUE version 0.
	fromClient := map[string]bool{"plain": true, "plain v6": true, "hops index 0": true, "hops index 1": true,
		"other private": true}
	clientAndHop := map[string]bool{}
	for name := range fromClient {
		clientAndHop[name] = true
	}
	for name := range fromHop {
		clientAndHop[name] = true
	}
	all := map[string]bool{}
	for name := range datagrams {
		all[name] = true
	}
	none := map[string]bool{}

	for _, tc := range []struct {
		name string
		src  string // "" = the kernel gave no address
		any  bool   // AcceptAnySource instead of the prefixes
		want map[string]bool
	}{
		{"LB v4", "198.18.30.11", false, fromLB},
		{"LB v4, last of the prefix", "198.18.30.31", false, fromLB},
		{"LB v6", "2001:db8:30::11", false, fromLB},
		{"LB, IPv4-mapped", "::ffff:198.18.30.11", false, fromLB},
		{"hop v4", "198.18.30.65", false, fromHop},
		{"hop v6", "2001:db8:30::101", false, fromHop},
		{"hop, IPv4-mapped", "::ffff:198.18.30.65", false, fromHop},
		{"LB and hop", "198.18.40.7", false, all},
		{"client network", "198.18.10.2", false, none},
		{"spoofed", "203.0.113.7", false, none},
		{"between the prefixes", "198.18.30.32", false, none},
		{"the LB's v4 bits as IPv6", "::c612:1e0b", false, none},
		{"v6 outside", "2001:db8:30::20", false, none},
		{"no source", "", false, none},
		{"fastpath client v4", "198.18.20.7", false, fromClient},
		{"fastpath client v6", "2001:db8:20::7", false, fromClient},
		{"fastpath client, IPv4-mapped", "::ffff:198.18.20.7", false, fromClient},
		{"fastpath client and hop", "198.18.30.101", false, clientAndHop},
		{"next to the fastpath clients", "198.18.21.7", false, none},
		{"any source: spoofed", "203.0.113.7", true, all},
		{"any source: no source", "", true, all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newSourceFilter(&trustConfig)
			if tc.any {
				f = newSourceFilter(&Config{AcceptAnySource: true})
			}
			var src netip.Addr
			if tc.src != "" {
				src = netip.MustParseAddr(tc.src)
			}
			for name, d := range datagrams {
				if got := f.allows(src, d); got != tc.want[name] {
					t.Errorf("%s from %v: allowed %v, want %v", name, src, got, tc.want[name])
				}
			}
		})
	}
	var zero sourceFilter
	if zero.allows(netip.MustParseAddr("198.18.30.11"), datagrams["plain"]) {
		t.Error("the zero filter allows something")
	}
}

// forwardedByAgent agrees with encap.DecodeGUE on every header DecodeGUE
// accepts, whatever the bytes around it.
func TestForwardedByAgentAgreesWithDecodeGUE(t *testing.T) {
	in4 := syn(client4, netip.AddrPortFrom(vip4, 80), 1)
	a, b := netip.MustParseAddr("198.18.30.101"), netip.MustParseAddr("198.18.30.102")
	a6 := netip.MustParseAddr("2001:db8:30::101")
	var cases [][]byte
	for next := range uint8(4) {
		cases = append(cases, gue(4, hopList(next, a, b, a), in4), gue(41, hopList(next, a6, a6), in4))
	}
	cases = append(cases, seedPayloads(t, vip4, vip6)...)
	checked := 0
	for _, c := range cases {
		for i := range min(len(c), 12) { // every variant of the header bytes
			for _, v := range []byte{0, 1, 2, 3, 0x20, 0x43, 0x53, 0xff} {
				d := bytes.Clone(c)
				d[i] = v
				var h encap.GUEHeader
				if _, err := encap.DecodeGUE(d, &h); err != nil {
					continue
				}
				checked++
				if want := h.HasHops && h.Hops.Next >= 2; forwardedByAgent(d) != want {
					t.Fatalf("% x: forwardedByAgent %v, DecodeGUE says %v (%+v)", d[:min(len(d), 16)], !want, want, h.Hops)
				}
			}
		}
	}
	if checked < 100 {
		t.Fatalf("only %d headers checked", checked)
	}
}

// The check on the receive path allocates nothing, accepted or rejected,
// and neither does counting a rejection.
func TestTrustAllocs(t *testing.T) {
	f := newSourceFilter(&trustConfig)
	in4 := syn(client4, netip.AddrPortFrom(vip4, 80), 1)
	plain, fwd := gue(4, nil, in4), gue(4, hopList(2, vip4, vip4), in4)
	srcs := []netip.Addr{netip.MustParseAddr("198.18.30.11"), netip.MustParseAddr("2001:db8:30::101"),
		netip.MustParseAddr("::ffff:198.18.30.101"), netip.MustParseAddr("203.0.113.7")}
	a := &Agent{vips: testSet, trust: f}
	var (
		b Counters
		h encap.GUEHeader
	)
	spoofed := netip.MustParseAddrPort("203.0.113.7:6080")
	n := testing.AllocsPerRun(1000, func() {
		for _, s := range srcs {
			f.allows(s, plain)
			f.allows(s, fwd)
		}
		a.handle(plain, spoofed, false, &h, &b)
	})
	if n != 0 {
		t.Errorf("%v allocations per run", n)
	}
	if b.Drops[RejectedSource] == 0 || b.Delivered != 0 {
		t.Errorf("counters %+v", b)
	}
}

// rejectLog writes at most one line per second, naming the first source
// rejected since the last line and how many it stands for.
func TestRejectLog(t *testing.T) {
	var out bytes.Buffer
	now := time.Unix(1000, 0)
	r := rejectLog{log: slog.New(slog.NewJSONHandler(&out, nil)), now: func() time.Time { return now }}
	lines := func() []map[string]any {
		var ls []map[string]any
		dec := json.NewDecoder(bytes.NewReader(out.Bytes()))
		for {
			var m map[string]any
			if err := dec.Decode(&m); err == io.EOF {
				return ls
			} else if err != nil {
				t.Fatal(err)
			}
			ls = append(ls, m)
		}
	}
	a, b := netip.MustParseAddrPort("203.0.113.7:6080"), netip.MustParseAddrPort("198.18.10.2:40000")
	r.flush() // nothing pending: nothing logged
	r.note(a)
	r.note(b)
	r.note(b)
	r.flush()
	for range 5 {
		now = now.Add(100 * time.Millisecond)
		r.note(b)
		r.flush() // within the second: suppressed
	}
	if n := len(lines()); n != 1 {
		t.Fatalf("%d lines within a second, want 1:\n%s", n, out.String())
	}
	now = now.Add(600 * time.Millisecond) // 1.1 s after the first line
	r.note(a)
	r.flush()
	ls := lines()
	if len(ls) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(ls), out.String())
	}
	for i, want := range []struct {
		src             string
		rejected, suppr float64
	}{{a.String(), 3, 2}, {b.String(), 6, 5}} {
		if l := ls[i]; l["src"] != want.src || l["rejected"] != want.rejected || l["suppressed"] != want.suppr || l["level"] != "WARN" {
			t.Errorf("line %d: %v, want source %s rejected %v suppressed %v", i, l, want.src, want.rejected, want.suppr)
		}
	}
	// The zero value (no logger) only counts, and does not panic.
	var z rejectLog
	z.note(a)
	z.flush()
}

// TestRunRejectsUntrustedSource drives Run over a real socket: the agent
// trusts 127.0.0.1 only; a GUE SYN and a VIP probe from 127.0.0.2 are
// counted as rejected_source, never reach the TUN stand-in and get no
// reply; the same from 127.0.0.1 are delivered and answered.
func TestRunRejectsUntrustedSource(t *testing.T) {
	a, tunOut := loopbackAgent(t, 8)
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

	in := syn(client4, netip.AddrPortFrom(vip4, 80), 1)
	probe := probeBytes(t, 7, netip.AddrPortFrom(vip4, 80), vipprobe.ProtoTCP)
	send := func(from string, ds ...[]byte) *net.UDPConn {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(from+":0")))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		for _, d := range ds {
			if _, err := c.WriteToUDPAddrPort(d, a.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	stranger := send("127.0.0.2", gue(4, nil, in), probe, gue(4, hopList(2, vip4, vip4), in))
	waitCounters(t, a, "rejected", func(c *Counters) bool { return c.Received == 3 })
	if c := a.Counters(); c.Drops[RejectedSource] != 3 || c.Dropped() != 3 || c.Delivered != 0 || c.Probes.Requests != 0 {
		t.Errorf("after the untrusted datagrams: %+v", c)
	}
	lb := send("127.0.0.1", gue(4, nil, in), probe)
	waitCounters(t, a, "trusted", func(c *Counters) bool { return c.Delivered == 1 && c.Probes.Up == 1 })
	got := make([]byte, len(in)+1)
	tunOut.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := tunOut.Read(got); err != nil || !bytes.Equal(got[:n], in) {
		t.Errorf("TUN stand-in: %x %v, want only the trusted packet", got[:n], err)
	}
	buf := make([]byte, 100)
	lb.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := lb.Read(buf); err != nil {
		t.Errorf("no probe reply to the trusted source: %v", err)
	}
	stranger.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := stranger.Read(buf); err == nil {
		t.Errorf("the untrusted source got a reply: %x", buf[:n])
	}
	if c := a.Counters(); c.Drops[RejectedSource] != 3 {
		t.Errorf("rejected_source %d, want 3", c.Drops[RejectedSource])
	}
}

// BenchmarkSourceFilter measures the trust check of one datagram: an LB
// node's, another agent's forwarded one, and a rejected one.
func BenchmarkSourceFilter(b *testing.B) {
	f := newSourceFilter(&trustConfig)
	in4 := syn(client4, netip.AddrPortFrom(vip4, 80), 1)
	for _, bc := range []struct {
		name string
		src  netip.Addr
		d    []byte
		want bool
	}{
		{"lb", netip.MustParseAddr("198.18.30.11"), gue(4, nil, in4), true},
		{"hop_forwarded", netip.MustParseAddr("2001:db8:30::101"), gue(4, hopList(2, vip4, vip4), in4), true},
		{"rejected", netip.MustParseAddr("203.0.113.7"), gue(4, nil, in4), false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if f.allows(bc.src, bc.d) != bc.want {
					b.Fatal("wrong decision")
				}
			}
		})
	}
}

// TestRunFastpathClientSpoof drives Run over a real socket: 127.0.0.3 is a
// fastpath client host. Its own packets (inner source 127.0.0.3, no hop
// list) are delivered; a packet with another inner source, or with a hop
// list, is what its egress program never writes and is dropped as
// client_spoofed. The control: the LB node (127.0.0.1) may send both.
func TestRunFastpathClientSpoof(t *testing.T) {
	a, tunOut := loopbackAgent(t, 8)
	a.trust = newSourceFilter(&Config{
		LBPrefixes:      []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		FastpathClients: []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	ownAddr := netip.MustParseAddrPort("127.0.0.3:40000")
	own := ipPacket(ownAddr.Addr(), vip4, 6, tcpSeg(ownAddr.Port(), 80, 1, tcpACK))
	spoofed := ipPacket(client4.Addr(), vip4, 6, tcpSeg(client4.Port(), 80, 2, tcpACK))
	// What the egress program never writes: a fragment, another protocol.
	// A SYN it may (a new connection on a redirected flow's 5-tuple).
	ownSYN := syn(ownAddr, netip.AddrPortFrom(vip4, 80), 3)
	frag := ipPacket(ownAddr.Addr(), vip4, 6, tcpSeg(ownAddr.Port(), 80, 4, tcpACK))
	frag[6] |= 0x20 // more fragments
	binary.BigEndian.PutUint16(frag[10:], 0)
	binary.BigEndian.PutUint16(frag[10:], encap.Checksum(frag[:20], 0))
	icmp := ipPacket(ownAddr.Addr(), vip4, 1, make([]byte, 8))
	send := func(from string, ds ...[]byte) {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(from+":0")))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, d := range ds {
			if _, err := c.WriteToUDPAddrPort(d, a.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
	}
	read := func(want []byte) {
		t.Helper()
		got := make([]byte, len(want)) // the pipe is a byte stream
		tunOut.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := io.ReadFull(tunOut, got); err != nil || !bytes.Equal(got[:n], want) {
			t.Errorf("TUN stand-in: %x %v, want %x", got[:n], err, want)
		}
	}
	send("127.0.0.3", gue(4, nil, spoofed), gue(4, hopList(1, vip4, vip4), own), gue(4, nil, frag), gue(4, nil, icmp), gue(4, nil, own), gue(4, nil, ownSYN))
	waitCounters(t, a, "client", func(c *Counters) bool { return c.Received == 6 })
	if c := a.Counters(); c.Drops[ClientSpoofed] != 4 || c.Dropped() != 4 || c.Delivered != 2 {
		t.Errorf("from the fastpath client: %+v; want 4 client_spoofed, 2 delivered", c)
	}
	read(own)
	read(ownSYN)
	send("127.0.0.1", gue(4, nil, spoofed), gue(4, hopList(1, vip4, vip4), own), gue(4, nil, frag))
	waitCounters(t, a, "lb", func(c *Counters) bool { return c.Received == 9 })
	if c := a.Counters(); c.Drops[ClientSpoofed] != 4 || c.Delivered != 5 {
		t.Errorf("from the LB node: %+v; want all delivered", c)
	}
	read(spoofed)
	read(own)
	read(frag)
}
