package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/scenario"
)

// Spoofed inner sources: addresses no lab namespace has. The router
// blackholes them, so that what the backend answers to a delivered SYN is
// dropped silently instead of coming back as an ICMP error through the LB.
var (
	spoofed4 = netip.MustParseAddrPort("203.0.113.7:40000")
	spoofed6 = netip.MustParseAddrPort("[2001:db8:7::7]:40000")
)

// trustCase is one kind of datagram sent straight to be1's GUE port.
type trustCase struct {
	name string
	from func(s *scenario.Scenario) *lab.Node
	v6   bool
	hops bool // a hop list [be2, be1] with index 2: forwarded by an agent
	// Whether be1's agent delivers it with the trust prefixes (the
	// default) and with --accept-any-source.
	trusted, anySource bool
}

var trustCases = []trustCase{
	// A host on the client network (routed to the service segment by the
	// router, so its source is 198.18.10.2) sends GUE carrying a SYN from
	// a spoofed source to the VIP.
	{name: "client, GUE over IPv4", from: client, trusted: false, anySource: true},
	{name: "client, GUE over IPv6", from: client, v6: true, trusted: false, anySource: true},
	// The same dressed up as a packet another agent forwarded.
	{name: "client, forwarded", from: client, hops: true, trusted: false, anySource: true},
	// Another backend (in --hop-prefix, not in --lb-prefix): what it
	// forwards is accepted, what only an LB may send is not.
	{name: "be2, forwarded", from: be2, hops: true, trusted: true, anySource: true},
	{name: "be2, as an LB", from: be2, trusted: false, anySource: true},
}

func client(s *scenario.Scenario) *lab.Node { return s.Lab.Client }
func be2(s *scenario.Scenario) *lab.Node    { return s.Lab.Backends[1] }

// TestE2EAgentTrust sends GUE datagrams straight to be1's agent (UDP
// 6080 on its eth0 address) from the client and from be2, each carrying a
// TCP SYN from a spoofed source to the VIP, and measures be1's agent
// counters (its /metrics) and the packets its TUN device received (the
// kernel's interface statistics). With the scenario's trust prefixes
// (--lb-prefix the LB node, --hop-prefix the backends) only what be2
// forwards is delivered, everything else is counted as rejected_source;
// the control run, with --accept-any-source, delivers all of it. HTTP
// through the LB works throughout.
func TestE2EAgentTrust(t *testing.T) {
	const n = 20 // datagrams per case
	for _, anySource := range []bool{false, true} {
		name := "lb-prefix"
		if anySource {
			name = "accept-any-source"
		}
		t.Run(name, func(t *testing.T) {
			s := start(t, scenario.Options{IO: "afpacket", Backends: 2, AgentMetrics: true, AgentAcceptAnySource: anySource})
			t.Logf("agent trust flags: %v", s.AgentTrustArgs())
			ctx := t.Context()
			for _, args := range [][]string{{"route", "add", "blackhole", "203.0.113.0/24"}, {"-6", "route", "add", "blackhole", "2001:db8:7::/64"}} {
				if _, err := s.Lab.Router.Run(ctx, "ip", args...); err != nil {
					t.Fatal(err)
				}
			}
			be1 := s.Lab.Backends[0]
			for _, tc := range trustCases {
				before := settledAgent(t, be1)
				sendGUE(t, s, tc, n)
				after := agentAfter(t, be1, before.received+n)
				d := after.minus(before)
				want := tc.trusted
				if anySource {
					want = tc.anySource
				}
				t.Logf("%-22s received %d delivered %d rejected_source %d dropped %d TUN rx %d",
					tc.name, d.received, d.delivered, d.rejected, d.dropped, d.tunRx)
				var delivered, rejected uint64 = 0, n
				if want {
					delivered, rejected = n, 0
				}
				if d.received != n || d.delivered != delivered || d.rejected != rejected || d.dropped != rejected || d.tunRx != delivered {
					t.Errorf("%s: received %d, delivered %d, rejected_source %d, dropped %d, TUN rx %d; want %d, %d, %d, %d, %d",
						tc.name, d.received, d.delivered, d.rejected, d.dropped, d.tunRx, n, delivered, rejected, rejected, delivered)
				}
			}
			// The rejections are logged with the sender's address.
			if !anySource {
				re := regexp.MustCompile(`level=WARN msg=.*rejected_source.* src=` + regexp.QuoteMeta(s.Lab.Client.Addr4.String()) + `:\d+ `)
				if out := s.Agents[0].Output(); !re.MatchString(out) {
					t.Errorf("be1's agent did not log the rejected source %s:\n%s", s.Lab.Client.Addr4, out)
				}
			}
			for _, vip := range s.VIPs() {
				if _, err := s.Curl(ctx, vip, 10); err != nil {
					t.Errorf("HTTP through the LB after the test: %v", err)
				}
			}
		})
	}
}

// sendGUE sends n GUE datagrams of case tc to be1's GUE port.
func sendGUE(t *testing.T, s *scenario.Scenario, tc trustCase, n int) {
	t.Helper()
	be1, be2 := s.Lab.Backends[0], s.Lab.Backends[1]
	dst, hop1, hop2, src, vip := be1.Addr4, be2.Addr4, be1.Addr4, spoofed4, s.Opts.VIP4
	if tc.v6 {
		dst, hop1, hop2, src, vip = be1.Addr6, be2.Addr6, be1.Addr6, spoofed6, s.Opts.VIP6
	}
	var hops []netip.Addr
	if tc.hops {
		hops = []netip.Addr{hop1, hop2}
	}
	err := tc.from(s).Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 6080)))
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range n {
			syn := tcpSYN(netip.AddrPortFrom(src.Addr(), src.Port()+uint16(i)), netip.AddrPortFrom(vip, scenario.HTTPPort))
			if _, err := c.Write(gueData(syn, hops)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: send: %v", tc.name, err)
	}
}

// gueData builds a GUE data message (variant 0) around an inner IP packet,
// with a Sluice hop list whose next-hop index is len(hops) (all hops
// visited: the last one delivers) when hops is not empty.
func gueData(inner []byte, hops []netip.Addr) []byte {
	proto := byte(4)
	if inner[0]>>4 == 6 {
		proto = 41
	}
	var priv []byte
	if len(hops) > 0 {
		priv = []byte{0x53, 0x43, byte(len(hops)), byte(len(hops))} // "SC", next, count
		for _, h := range hops {
			priv = append(priv, h.AsSlice()...)
		}
	}
	b := []byte{byte(len(priv) / 4), proto, 0, 0}
	return append(append(b, priv...), inner...)
}

// tcpSYN builds an IPv4 or IPv6 packet carrying a TCP SYN with valid
// checksums.
func tcpSYN(src, dst netip.AddrPort) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], 1000)
	tcp[12], tcp[13] = 5<<4, 0x02
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	var pseudo []byte
	pseudo = append(pseudo, src.Addr().AsSlice()...)
	pseudo = append(pseudo, dst.Addr().AsSlice()...)
	pseudo = append(pseudo, 0, 6, 0, byte(len(tcp)))
	binary.BigEndian.PutUint16(tcp[16:], ^csum(append(pseudo, tcp...)))
	if src.Addr().Is4() {
		return ipv4(src.Addr(), dst.Addr(), 6, 0, tcp)
	}
	p := make([]byte, 40, 40+len(tcp))
	p[0], p[6], p[7] = 0x60, 6, 64
	binary.BigEndian.PutUint16(p[4:], uint16(len(tcp)))
	s, d := src.Addr().As16(), dst.Addr().As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	return append(p, tcp...)
}

// agentSample is what be1 counted: its agent's counters and the packets
// its TUN device received.
type agentSample struct {
	received, delivered, rejected, dropped, tunRx uint64
}

func (a agentSample) minus(b agentSample) agentSample {
	return agentSample{a.received - b.received, a.delivered - b.delivered, a.rejected - b.rejected,
		a.dropped - b.dropped, a.tunRx - b.tunRx}
}

func sampleAgent(t *testing.T, be *lab.Node) agentSample {
	t.Helper()
	out, err := be.Run(context.Background(), "curl", "-sS", "--max-time", "3", "http://"+scenario.AgentMetricsAddr+"/metrics")
	if err != nil {
		t.Fatalf("%s: metrics: %v", be.Name, err)
	}
	metric := func(name string) uint64 {
		m := regexp.MustCompile(`(?m)^sluice_agent_` + name + `_total (\S+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s: no %s in\n%s", be.Name, name, out)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return uint64(v)
	}
	var s agentSample
	s.received, s.delivered, s.rejected = metric("received"), metric("delivered"), metric("drop_rejected_source")
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "sluice_agent_drop_") {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			s.dropped += uint64(v)
		}
	}
	js, err := be.Run(context.Background(), "ip", "-j", "-s", "link", "show", "dev", "sluice0")
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Stats struct {
			RX struct{ Packets uint64 } `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(js), &links); err != nil || len(links) != 1 {
		t.Fatalf("%s: ip -j -s link show sluice0: %v\n%s", be.Name, err, js)
	}
	s.tunRx = links[0].Stats.RX.Packets
	return s
}

// settledAgent waits until be's counters stop moving (the last packets of
// earlier traffic through the LB have arrived) and returns them.
func settledAgent(t *testing.T, be *lab.Node) agentSample {
	t.Helper()
	prev := sampleAgent(t, be)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(300 * time.Millisecond)
		cur := sampleAgent(t, be)
		if cur == prev {
			return cur
		}
		prev = cur
	}
	t.Fatalf("%s: the agent's counters never settled: %+v", be.Name, prev)
	return prev
}

// agentAfter waits until be's agent has received at least received
// datagrams in all, then for its counters to settle, and returns them.
func agentAfter(t *testing.T, be *lab.Node, received uint64) agentSample {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if s := sampleAgent(t, be); s.received >= received {
			return settledAgent(t, be)
		}
	}
	s := sampleAgent(t, be)
	t.Fatalf("%s: the agent received %d datagrams in all, want %d: %s", be.Name, s.received, received, fmt.Sprint(s))
	return s
}
