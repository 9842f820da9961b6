package agent

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/nettest"
	"github.com/sluicelb/sluice/internal/packet"
)

// tcpFrame reads a TCP segment carried directly (not encapsulated) in an
// Ethernet frame.
func tcpFrame(frame []byte) (src, dst netip.AddrPort, flags uint8, seq, ack uint32, ok bool) {
	if len(frame) < 14 {
		return
	}
	ip := frame[14:]
	var s, d netip.Addr
	var l4 []byte
	switch et := binary.BigEndian.Uint16(frame[12:]); {
	case et == 0x0800 && len(ip) >= 20 && ip[0]>>4 == 4 && ip[9] == packet.ProtoTCP:
		s, d = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		l4 = ip[int(ip[0]&0xf)*4:]
	case et == 0x86dd && len(ip) >= 40 && ip[6] == packet.ProtoTCP:
		s, d = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		l4 = ip[40:]
	default:
		return
	}
	if len(l4) < 20 {
		return
	}
	t := packet.TCP(l4)
	return netip.AddrPortFrom(s, t.SrcPort()), netip.AddrPortFrom(d, t.DstPort()), t.Flags(), t.Seq(), t.Ack(), true
}

// segment builds a TCP segment with an acknowledgement number and payload.
func segment(src, dst netip.AddrPort, seq, ack uint32, flags uint8, payload string) []byte {
	h := tcpSeg(src.Port(), dst.Port(), seq, flags)
	binary.BigEndian.PutUint32(h[8:], ack)
	return ipPacket(src.Addr(), dst.Addr(), packet.ProtoTCP, append(h, payload...))
}

// backendLink is the lb side of the veth to one backend: a packet socket to
// send GUE frames from and capture the backend's replies on.
type backendLink struct {
	ps       *packetSocket
	peerMAC  [6]byte
	lb, addr netip.Addr // lb and backend addresses on the link (IPv4)
	lb6, a6  netip.Addr // ... and IPv6
}

func newBackendLink(t *testing.T, lb, be *nettest.NS, lbIf string, lb4, be4, lb6, be6 string) *backendLink {
	t.Helper()
	l := &backendLink{ps: openPacketSocket(t, lb, lbIf), lb: netip.MustParseAddr(lb4), addr: netip.MustParseAddr(be4),
		lb6: netip.MustParseAddr(lb6), a6: netip.MustParseAddr(be6)}
	if err := be.Do(func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err == nil {
			copy(l.peerMAC[:], ifc.HardwareAddr)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return l
}

// send sends inner GUE-encapsulated over the link to the backend with the
// hop list [backend, secondary] (next index 1), as the LB does; over IPv6
// when secondary is.
func (l *backendLink) send(t *testing.T, secondary netip.Addr, inner []byte) {
	t.Helper()
	src, dst := l.lb, l.addr
	if secondary.Is6() {
		src, dst = l.lb6, l.a6
	}
	frame, _ := encapFrame(t, l.ps.mac, l.peerMAC, src, dst, secondary, inner)
	l.ps.send(t, frame)
}

// sendPlain sends inner GUE-encapsulated without a hop list.
func (l *backendLink) sendPlain(t *testing.T, inner []byte) {
	t.Helper()
	frame, _ := encapFrame(t, l.ps.mac, l.peerMAC, l.lb, l.addr, netip.Addr{}, inner)
	l.ps.send(t, frame)
}

// reply captures the next segment from vip to client with the flags want
// (among SYN, ACK, RST, FIN) and returns its sequence number.
func (l *backendLink) reply(t *testing.T, what string, vip, client netip.AddrPort, want uint8) uint32 {
	t.Helper()
	var seq uint32
	l.ps.capture(t, what, func(f []byte) bool {
		s, d, flags, sq, _, ok := tcpFrame(f)
		if !ok || s != vip || d != client || flags&(tcpSYN|tcpACK|tcpRST|tcpFIN) != want {
			return false
		}
		seq = sq
		return true
	})
	return seq
}

// secondChanceLab builds "lb" routing between two backends, "a" and "b",
// each on its own veth (198.18.2.0/24 and 2001:db8:2::/64 to a,
// 198.18.4.0/24 and 2001:db8:4::/64 to b; .1 / ::1 is lb). The backends
// reach each other and send replies to clients (198.18.3.0/24,
// 2001:db8:3::/64) through lb, which drops those (a blackhole route: there
// is no client; the tests capture the replies on lb's side of the veth).
// The VIPs are on lo in both backends before any agent starts.
func secondChanceLab(t *testing.T) (toA, toB *backendLink, a, b *nettest.NS) {
	lb := nettest.New(t, "sclb")
	a, b = nettest.New(t, "sca"), nettest.New(t, "scb")
	nettest.Veth(t, lb, "eth0", "198.18.2.1/24", a, "eth0", "198.18.2.2/24")
	nettest.Veth(t, lb, "eth1", "198.18.4.1/24", b, "eth0", "198.18.4.2/24")
	lb.Run(t, "ip", "-6", "addr", "add", "2001:db8:2::1/64", "dev", "eth0", "nodad")
	lb.Run(t, "ip", "-6", "addr", "add", "2001:db8:4::1/64", "dev", "eth1", "nodad")
	lb.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	lb.Run(t, "ip", "route", "add", "blackhole", "198.18.3.0/24")
	lb.Run(t, "ip", "-6", "route", "add", "blackhole", "2001:db8:3::/64")
	for _, be := range []struct {
		ns        *nettest.NS
		me6       string
		gw4, gw6  string
		other, o6 string
	}{
		{a, "2001:db8:2::2/64", "198.18.2.1", "2001:db8:2::1", "198.18.4.0/24", "2001:db8:4::/64"},
		{b, "2001:db8:4::2/64", "198.18.4.1", "2001:db8:4::1", "198.18.2.0/24", "2001:db8:2::/64"},
	} {
		be.ns.Run(t, "ip", "-6", "addr", "add", be.me6, "dev", "eth0", "nodad")
		for _, dst := range []string{"198.18.3.0/24", be.other} {
			be.ns.Run(t, "ip", "route", "add", dst, "via", be.gw4)
		}
		for _, dst := range []string{"2001:db8:3::/64", be.o6} {
			be.ns.Run(t, "ip", "-6", "route", "add", dst, "via", be.gw6)
		}
		be.ns.Run(t, "ip", "addr", "add", vip4.String()+"/32", "dev", "lo")
		be.ns.Run(t, "ip", "addr", "add", vip6.String()+"/128", "dev", "lo", "nodad")
	}
	toA = newBackendLink(t, lb, a, "eth0", "198.18.2.1", "198.18.2.2", "2001:db8:2::1", "2001:db8:2::2")
	toB = newBackendLink(t, lb, b, "eth1", "198.18.4.1", "198.18.4.2", "2001:db8:4::1", "2001:db8:4::2")
	return toA, toB, a, b
}

// listenIn opens a TCP listener inside ns.
func listenIn(t *testing.T, ns *nettest.NS, addr netip.AddrPort) *net.TCPListener {
	t.Helper()
	var l *net.TCPListener
	if err := ns.Do(func() (err error) {
		l, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func accept(t *testing.T, l *net.TCPListener) *net.TCPConn {
	t.Helper()
	l.SetDeadline(time.Now().Add(5 * time.Second))
	c, err := l.AcceptTCP()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readString(t *testing.T, c net.Conn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
		t.Fatalf("read %q (%v), want %q", buf, err, want)
	}
}

// conn is the client's side of a hand-made TCP connection.
type conn struct {
	client, vip netip.AddrPort
	seq, ack    uint32 // next sequence number to send, acknowledgement to send
}

func (c *conn) data(s string) []byte {
	p := segment(c.client, c.vip, c.seq, c.ack, tcpACK|0x08, s)
	c.seq += uint32(len(s))
	return p
}

// handshake opens a connection from client to vip on the backend behind
// l: a SYN with the hop list [backend, secondary] (without hop list if
// plainSYN), the SYN-ACK captured, the handshake's ACK with the hop list.
func handshake(t *testing.T, l *backendLink, secondary netip.Addr, plainSYN bool, client, vip netip.AddrPort) *conn {
	t.Helper()
	c := &conn{client: client, vip: vip, seq: 1000}
	s := syn(client, vip, c.seq-1)
	if plainSYN {
		l.sendPlain(t, s)
	} else {
		l.send(t, secondary, s)
	}
	c.ack = l.reply(t, "SYN-ACK", vip, client, tcpSYN|tcpACK) + 1
	l.send(t, secondary, segment(client, vip, c.seq, c.ack, tcpACK, ""))
	return c
}

// TestE2ESecondChance runs two backends with agents and the same VIP and
// service, and sends them hand-made GUE packets with hop lists as an LB
// would while the backend set changes: a connection that lives on A
// reaches it through B; A keeps what it owns; an unknown connection is
// delivered (and reset) at the last hop; a connection A's agent never saw
// is found in A's kernel by sock_diag, established or half open; and the
// same over IPv6.
func TestE2ESecondChance(t *testing.T) {
	nettest.RequireRoot(t)
	toA, toB, nsA, nsB := secondChanceLab(t)
	vp := netip.AddrPortFrom(vip4, 80)
	lA := listenIn(t, nsA, vp)
	listenIn(t, nsB, vp) // B serves the VIP too: its listener must not claim A's flows
	// The lb namespace sends GUE; the agents forward to each other (routed
	// through lb, with their own addresses as the source).
	cfg := Config{VIPs: []netip.Addr{vip4, vip6}, TUN: "sluice0",
		LBPrefixes:  prefixes("198.18.2.1/32", "198.18.4.1/32", "2001:db8:2::1/128", "2001:db8:4::1/128"),
		HopPrefixes: prefixes("198.18.2.2/32", "198.18.4.2/32", "2001:db8:2::2/128", "2001:db8:4::2/128")}
	a1, stopA := runAgent(t, nsA, cfg)
	t.Cleanup(stopA)
	b := startAgent(t, nsB, cfg)

	// A owns a connection (opened with the hop list [A, B]).
	c := handshake(t, toA, toB.addr, false, client4, vp)
	srv := accept(t, lA)
	waitCounters(t, a1, "handshake on A", func(c *Counters) bool { return c.HopListLocal == 2 })
	if got := a1.Counters().SecondHop; got.TableHits != 1 || got.CacheMisses != 0 {
		t.Errorf("handshake's ACK: %+v, want one record hit and no sock_diag query", got)
	}

	// The LB now maps the flow to B, with A as the previous owner: [B, A].
	// B owns nothing of it (only a listener) and forwards to A, the last
	// hop, which delivers.
	toB.send(t, toA.addr, c.data("hello"))
	readString(t, srv, "hello")
	waitCounters(t, b, "B forwarded", func(c *Counters) bool { return c.SecondHop.Forwarded == 1 })
	waitCounters(t, a1, "A received from B", func(c *Counters) bool { return c.SecondHop.Received == 1 })
	if got := b.Counters(); got.Delivered != 0 || got.SecondHop.CacheMisses != 1 {
		t.Errorf("B: %+v, want one sock_diag query and nothing delivered", got)
	}

	// [A, B]: A owns it and keeps it.
	toA.send(t, toB.addr, c.data("world"))
	readString(t, srv, "world")
	// The batch's counts land after its TUN writes: wait for them.
	waitCounters(t, a1, "A's record hit", func(c *Counters) bool { return c.SecondHop.TableHits >= 2 })
	if got := a1.Counters(); got.SecondHop.Forwarded != 0 || got.SecondHop.TableHits != 2 {
		t.Errorf("A: %+v, want no forwarding and a record hit", got.SecondHop)
	}

	// An unknown connection at [B, A]: B forwards, A delivers as the last
	// hop, and A's kernel resets it.
	ghost := netip.MustParseAddrPort("198.18.3.7:40099")
	toB.send(t, toA.addr, segment(ghost, vp, 5000, 7000, tcpACK, ""))
	if seq := toA.reply(t, "RST from A", vp, ghost, tcpRST); seq != 7000 {
		t.Errorf("RST seq %d, want 7000", seq)
	}
	waitCounters(t, b, "B forwarded the unknown flow", func(c *Counters) bool { return c.SecondHop.Forwarded == 2 })

	// A restarted agent has no record of the connection: sock_diag finds
	// the kernel's socket, and the flow is recorded from then on.
	stopA()
	a2 := startAgent(t, nsA, cfg)
	toA.send(t, toB.addr, c.data("again"))
	readString(t, srv, "again")
	toA.send(t, toB.addr, c.data("and again"))
	readString(t, srv, "and again")
	waitCounters(t, a2, "after restart", func(c *Counters) bool { return c.HopListLocal == 2 })
	if got := a2.Counters().SecondHop; got.CacheMisses != 1 || got.TableHits != 1 || got.Forwarded != 0 {
		t.Errorf("restarted A: %+v, want one sock_diag query, then a record hit", got)
	}

	// A half-open connection (SYN without hop list, so not recorded): the
	// handshake's ACK with the hop list [A, B] finds the request
	// mini-socket (SYN_RECV) and completes the handshake on A.
	handshake(t, toA, toB.addr, true, netip.MustParseAddrPort("198.18.3.7:40050"), vp)
	accept(t, lA)
	waitCounters(t, a2, "half-open", func(c *Counters) bool { return c.SecondHop.CacheMisses == 2 })
	if got := a2.Counters().SecondHop; got.Forwarded != 0 {
		t.Errorf("handshake ACK forwarded: %+v", got)
	}

	// IPv6 (outer and inner): a connection on A reached through B.
	vp6 := netip.AddrPortFrom(vip6, 80)
	l6 := listenIn(t, nsA, vp6)
	listenIn(t, nsB, vp6)
	c6 := handshake(t, toA, toB.a6, false, client6, vp6)
	srv6 := accept(t, l6)
	toB.send(t, toA.a6, c6.data("over v6"))
	readString(t, srv6, "over v6")
	waitCounters(t, b, "B forwarded over IPv6", func(c *Counters) bool { return c.SecondHop.Forwarded == 3 })
	if got := b.Counters(); got.Delivered != 0 || got.Dropped() != 0 {
		t.Errorf("B: %+v, want nothing delivered or dropped", got)
	}
	// A accepted what B forwarded (from B's address, in HopPrefixes).
	waitCounters(t, a2, "A received from B", func(c *Counters) bool { return c.SecondHop.Received >= 1 })
	if got := a2.Counters(); got.Drops[RejectedSource] != 0 {
		t.Errorf("A rejected %d datagrams: %+v", got.Drops[RejectedSource], got)
	}
}

func prefixes(s ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, x := range s {
		ps = append(ps, netip.MustParsePrefix(x))
	}
	return ps
}
