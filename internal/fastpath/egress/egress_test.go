package egress

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/encap"
)

// run runs the program once on frame (BPF_PROG_TEST_RUN) and returns its
// verdict and output frame.
func run(t testing.TB, p *Program, frame []byte) (uint32, []byte) {
	t.Helper()
	opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
	ret, err := p.objs.SluiceEgress.Run(opts)
	if err != nil {
		t.Fatal(err)
	}
	return ret, opts.DataOut
}

func counters(t testing.TB, p *Program) Counters {
	t.Helper()
	c, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// goEncap returns what encap.Template.Encap writes for the frame's inner
// packet toward tgt, with the flow hash h whose SrcPort and FlowLabel tgt
// carries.
func goEncap(t testing.TB, frame []byte, client netip.Addr, tgt Target, h uint64) []byte {
	t.Helper()
	tp, err := encap.Compile(encap.Tunnel{Mode: encap.GUE, Src: client, Dst: tgt.Backend, Port: tgt.Port, UDPChecksum: tgt.UDPChecksum})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256+len(frame))
	copy(buf[128:], frame)
	ver := frame[14] >> 4
	start := tp.Encap(buf, 128+14, 128+len(frame), ver, h, nil)
	if start < 0 {
		t.Fatal("encap.Encap failed")
	}
	return buf[start : 128+len(frame)]
}

// checkOuter decodes the encapsulated frame with gopacket, independently
// of encap: the IPv4 header checksum and the outer UDP checksum (when not
// zero; IPv6 must have one) are valid, the ports and addresses are tgt's,
// the GUE header is the 4-byte one without options, and the inner packet is
// the frame's.
func checkOuter(frame, out []byte, client netip.Addr, tgt Target) error {
	pkt := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		return fmt.Errorf("gopacket: %v", el.Error())
	}
	var src, dst netip.Addr
	var nl gopacket.NetworkLayer
	if ip4, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		if err, r := ip4.VerifyChecksum(); err != nil || !r.Valid {
			return fmt.Errorf("IPv4 header checksum: %v %+v", err, r)
		}
		if ip4.TTL != 64 || ip4.Flags != layers.IPv4DontFragment || ip4.Id != 0 || ip4.TOS != frame[15] {
			return fmt.Errorf("IPv4 header: ttl %d flags %v id %d tos %#x", ip4.TTL, ip4.Flags, ip4.Id, ip4.TOS)
		}
		src, _ = netip.AddrFromSlice(ip4.SrcIP.To4())
		dst, _ = netip.AddrFromSlice(ip4.DstIP.To4())
		nl = ip4
	} else if ip6, ok := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		if ip6.HopLimit != 64 || ip6.FlowLabel != tgt.FlowLabel {
			return fmt.Errorf("IPv6 header: hop limit %d flow label %#x", ip6.HopLimit, ip6.FlowLabel)
		}
		src, _ = netip.AddrFromSlice(ip6.SrcIP)
		dst, _ = netip.AddrFromSlice(ip6.DstIP)
		nl = ip6
	} else {
		return errors.New("no outer IP header")
	}
	if src != client || dst != tgt.Backend {
		return fmt.Errorf("outer %v -> %v, want %v -> %v", src, dst, client, tgt.Backend)
	}
	udp, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if !ok {
		return errors.New("no outer UDP header")
	}
	port := tgt.Port
	if port == 0 {
		port = encap.DefaultGUEPort
	}
	if uint16(udp.SrcPort) != tgt.SrcPort || uint16(udp.DstPort) != port {
		return fmt.Errorf("outer UDP %d -> %d", udp.SrcPort, udp.DstPort)
	}
	wantCsum := src.Is6() || tgt.UDPChecksum
	if wantCsum != (udp.Checksum != 0) {
		return fmt.Errorf("outer UDP checksum %#x, want one: %v", udp.Checksum, wantCsum)
	}
	if udp.Checksum != 0 {
		udp.SetNetworkLayerForChecksum(nl)
		if err, r := udp.VerifyChecksum(); err != nil || !r.Valid {
			return fmt.Errorf("outer UDP checksum: %v %+v", err, r)
		}
	}
	pl := udp.Payload
	inner := frame[14:]
	proto := byte(4)
	if inner[0]>>4 == 6 {
		proto = 41
	}
	if len(pl) < 4 || !bytes.Equal(pl[:4], []byte{0, proto, 0, 0}) {
		return fmt.Errorf("GUE header %x", pl[:min(4, len(pl))])
	}
	if !bytes.Equal(pl[4:], inner) {
		return fmt.Errorf("inner packet changed:\n got %x\nwant %x", pl[4:], inner)
	}
	return nil
}

// TestEncapMatchesGo runs the program on TCP and UDP, IPv4 and IPv6
// packets of installed flows of several sizes, with and without the IPv4
// outer checksum, and requires exactly the bytes encap.Template.Encap
// writes after the Ethernet header (which, without fib lookups, stays as
// it was), and a packet gopacket decodes with valid checksums.
func TestEncapMatchesGo(t *testing.T) {
	p := loadT(t)
	port := uint16(1000)
	n := uint64(0)
	var bytesSent uint64
	for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		for _, fam := range []struct{ client, vip, back netip.Addr }{{client4, vip4, back4}, {client6, vip6, back6}} {
			over := 32
			if fam.client.Is6() {
				over = 52
			}
			hdr := 20 + 8
			if fam.client.Is6() {
				hdr = 40 + 8
			}
			if proto == unix.IPPROTO_TCP {
				hdr += 12
			}
			for _, size := range []int{0, 1, 2, 3, 100, 1001, 1500 - over - hdr} {
				for _, ck := range []bool{false, true} {
					port++
					tos := uint8(port) * 0x25
					payload := bytes.Repeat([]byte{byte(size)}, size)
					for i := range payload {
						payload[i] = byte(i * 7)
					}
					frame := l4Frame(proto, fam.client, fam.vip, port, 443, tcpACK, tos, payload)
					h := uint64(port) * 0x9e3779b97f4a7c15
					tgt := Target{Backend: fam.back, SrcPort: encap.SrcPort(h), FlowLabel: encap.FlowLabel(h), UDPChecksum: ck}
					if port%3 == 0 {
						tgt.Port = 7000
					}
					if err := p.Put(flowOf(proto, fam.client, fam.vip, port, 443), tgt); err != nil {
						t.Fatal(err)
					}
					name := fmt.Sprintf("proto %d %v size %d csum %v", proto, fam.client, size, ck)
					ret, out := run(t, p, frame)
					if ret != tcActOK {
						t.Fatalf("%s: verdict %d", name, ret)
					}
					want := goEncap(t, frame, fam.client, tgt, h)
					if len(out) != len(want) || !bytes.Equal(out[14:], want[14:]) {
						t.Fatalf("%s:\n got %x\nwant %x", name, out, want)
					}
					if !bytes.Equal(out[:14], frame[:14]) {
						t.Fatalf("%s: Ethernet header changed without fib lookup: %x", name, out[:14])
					}
					if err := checkOuter(frame, out, fam.client, tgt); err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					n++
					bytesSent += uint64(len(out))
					s, ok, err := p.Lookup(flowOf(proto, fam.client, fam.vip, port, 443))
					if err != nil || !ok || s.Packets != 1 || s.Bytes != uint64(len(out)) || s.Ended || s.LastUsed.IsZero() || s.Target != withPort(tgt) {
						t.Fatalf("%s: state %+v %v %v", name, s, ok, err)
					}
				}
			}
		}
	}
	c := counters(t, p)
	if c.Direct != n || c.DirectBytes != bytesSent || c.Miss != 0 || c.Parse != 0 {
		t.Errorf("counters %+v, want %d direct, %d bytes", c, n, bytesSent)
	}
}

func withPort(t Target) Target {
	if t.Port == 0 {
		t.Port = encap.DefaultGUEPort
	}
	return t
}

// vlanTag inserts an 802.1Q tag into an Ethernet frame.
func vlanTag(f []byte, vid uint16) []byte {
	out := append([]byte{}, f[:12]...)
	out = binary.BigEndian.AppendUint16(out, 0x8100)
	out = binary.BigEndian.AppendUint16(out, vid)
	return append(out, f[12:]...)
}

// withIPv4Options gives an IPv4 frame 4 bytes of options (NOPs), lengths
// and checksums fixed.
func withIPv4Options(f []byte) []byte {
	out := append([]byte{}, f[:14+20]...)
	out = append(out, 1, 1, 1, 1)
	out = append(out, f[14+20:]...)
	ip := out[14:]
	ip[0] = 0x46
	binary.BigEndian.PutUint16(ip[2:], binary.BigEndian.Uint16(ip[2:])+4)
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ^csum(0, ip[:24]))
	return out
}

// withHopByHop gives an IPv6 frame an empty hop-by-hop options header.
func withHopByHop(f []byte) []byte {
	out := append([]byte{}, f[:14+40]...)
	out = append(out, f[14+6], 0, 1, 4, 0, 0, 0, 0) // next header, len 0, PadN
	out = append(out, f[14+40:]...)
	ip := out[14:]
	ip[6] = 0
	binary.BigEndian.PutUint16(ip[4:], binary.BigEndian.Uint16(ip[4:])+8)
	return out
}

// TestPassesUntouched: what the program must not send direct comes out
// byte for byte as it went in, with TC_ACT_OK, counted by reason.
func TestPassesUntouched(t *testing.T) {
	p := loadT(t)
	put := func(proto uint8, c, v netip.Addr, sport uint16, tgt Target) {
		t.Helper()
		if err := p.Put(flowOf(proto, c, v, sport, 80), tgt); err != nil {
			t.Fatal(err)
		}
	}
	tcp4 := func(sport uint16, pl []byte) []byte {
		return l4Frame(unix.IPPROTO_TCP, client4, vip4, sport, 80, tcpACK, 0, pl)
	}
	for sport := uint16(1); sport <= 10; sport++ {
		put(unix.IPPROTO_TCP, client4, vip4, sport, Target{Backend: back4, SrcPort: 50000})
		put(unix.IPPROTO_TCP, client6, vip6, sport, Target{Backend: back6, SrcPort: 50000})
		put(unix.IPPROTO_UDP, client4, vip4, sport, Target{Backend: back4, SrcPort: 50000, UDPChecksum: true})
		put(unix.IPPROTO_UDP, client6, vip6, sport, Target{Backend: back6, SrcPort: 50000})
	}
	// A value of the other family (Put refuses it; the program checks
	// too): written directly.
	k, err := flowKey(flowOf(unix.IPPROTO_TCP, client4, vip4, 20, 80))
	if err != nil {
		t.Fatal(err)
	}
	v := egressFlowValue{Backend: back6.As16(), Flags: flagV6, Port: 6080}
	if err := p.objs.SluiceEgressFlows.Put(&k, &v); err != nil {
		t.Fatal(err)
	}
	if err := p.Put(flowOf(unix.IPPROTO_TCP, client4, vip4, 21, 80), Target{Backend: back6}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Put of a backend of the other family: %v, want ErrInvalid", err)
	}

	frag := tcp4(2, []byte("data"))
	binary.BigEndian.PutUint16(frag[14+6:], 0x2000) // MF
	frag[14+10], frag[14+11] = 0, 0
	binary.BigEndian.PutUint16(frag[14+10:], ^csum(0, frag[14:14+20]))
	udp4zero := l4Frame(unix.IPPROTO_UDP, client4, vip4, 3, 80, 0, 0, []byte("q"))
	udp4zero[14+20+6], udp4zero[14+20+7] = 0, 0
	udp6zero := l4Frame(unix.IPPROTO_UDP, client6, vip6, 3, 80, 0, 0, []byte("q"))
	udp6zero[14+40+6], udp6zero[14+40+7] = 0, 0
	arp := append(append(append([]byte{}, macB...), macA...), 0x08, 0x06)
	arp = append(arp, make([]byte, 28)...)
	icmp := tcp4(4, nil)
	icmp[14+9] = unix.IPPROTO_ICMP

	tests := []struct {
		name  string
		frame []byte
		field func(*Counters) *uint64
	}{
		{"miss", tcp4(99, []byte("x")), func(c *Counters) *uint64 { return &c.Miss }},
		{"miss ipv6", l4Frame(unix.IPPROTO_TCP, client6, vip6, 99, 80, tcpACK, 0, nil), func(c *Counters) *uint64 { return &c.Miss }},
		{"miss other port", l4Frame(unix.IPPROTO_TCP, client4, vip4, 1, 81, tcpACK, 0, nil), func(c *Counters) *uint64 { return &c.Miss }},
		{"arp", arp, func(c *Counters) *uint64 { return &c.Parse }},
		{"vlan", vlanTag(tcp4(1, nil), 5), func(c *Counters) *uint64 { return &c.Parse }},
		{"ipv4 options", withIPv4Options(tcp4(1, []byte("x"))), func(c *Counters) *uint64 { return &c.Parse }},
		{"ipv6 hop-by-hop", withHopByHop(l4Frame(unix.IPPROTO_TCP, client6, vip6, 1, 80, tcpACK, 0, nil)), func(c *Counters) *uint64 { return &c.Parse }},
		{"fragment", frag, func(c *Counters) *uint64 { return &c.Parse }},
		{"icmp", icmp, func(c *Counters) *uint64 { return &c.Parse }},
		{"truncated", tcp4(1, []byte("data"))[:14+20+10], func(c *Counters) *uint64 { return &c.Parse }},
		{"trailing bytes", append(tcp4(1, []byte("data")), 0, 0, 0), func(c *Counters) *uint64 { return &c.Parse }},
		{"family", tcp4(20, nil), func(c *Counters) *uint64 { return &c.Family }},
		{"too big", tcp4(5, make([]byte, 1500-20-20-32+1)), func(c *Counters) *uint64 { return &c.TooBig }},
		{"too big ipv6", l4Frame(unix.IPPROTO_UDP, client6, vip6, 5, 80, 0, 0, make([]byte, 1500-40-8-52+1)), func(c *Counters) *uint64 { return &c.TooBig }},
		{"udp4 checksum 0, outer checksum", udp4zero, func(c *Counters) *uint64 { return &c.NoCsum }},
		{"udp6 checksum 0", udp6zero, func(c *Counters) *uint64 { return &c.NoCsum }},
	}
	for _, tc := range tests {
		before := counters(t, p)
		ret, out := run(t, p, tc.frame)
		if ret != tcActOK {
			t.Errorf("%s: verdict %d, want TC_ACT_OK", tc.name, ret)
		}
		if !bytes.Equal(out, tc.frame) {
			t.Errorf("%s: changed:\n got %x\nwant %x", tc.name, out, tc.frame)
		}
		after := counters(t, p)
		if *tc.field(&after) != *tc.field(&before)+1 {
			t.Errorf("%s: reason not counted: %+v -> %+v", tc.name, before, after)
		}
		if after.Direct != before.Direct {
			t.Errorf("%s: counted as direct", tc.name)
		}
	}
	// The largest packets that fit are sent direct.
	for _, f := range [][]byte{
		tcp4(5, make([]byte, 1500-20-20-32)),
		l4Frame(unix.IPPROTO_UDP, client6, vip6, 5, 80, 0, 0, make([]byte, 1500-40-8-52)),
	} {
		if _, out := run(t, p, f); len(out) == len(f) {
			t.Errorf("a packet that fits the MTU was not sent direct (%d bytes)", len(f))
		}
	}
}

// TestEndedWalkDelete: FIN and RST set Ended (and are still sent direct);
// Walk returns every entry with its counters; Delete removes one (and a
// missing one is not an error); Put again starts over.
func TestEndedWalkDelete(t *testing.T) {
	p := loadT(t)
	flows := map[Flow]Target{}
	for i, fam := range []struct{ c, v, b netip.Addr }{{client4, vip4, back4}, {client6, vip6, back6}} {
		for sport := uint16(1); sport <= 4; sport++ {
			f := flowOf(unix.IPPROTO_TCP, fam.c, fam.v, sport, 443)
			tgt := Target{Backend: fam.b, Port: 6080, SrcPort: 50000 + sport, FlowLabel: uint32(i)*0x10000 + uint32(sport)}
			if err := p.Put(f, tgt); err != nil {
				t.Fatal(err)
			}
			flows[f] = tgt
		}
	}
	// sport 1: 3 packets, no FIN; 2: FIN; 3: RST; 4: nothing.
	sent := map[Flow]uint64{}
	for _, fam := range []struct{ c, v netip.Addr }{{client4, vip4}, {client6, vip6}} {
		for _, pk := range []struct {
			sport uint16
			flags uint8
		}{{1, tcpACK}, {1, tcpACK}, {1, tcpACK}, {2, tcpACK}, {2, tcpFIN | tcpACK}, {3, tcpRST}} {
			f := l4Frame(unix.IPPROTO_TCP, fam.c, fam.v, pk.sport, 443, pk.flags, 0, []byte("hello"))
			_, out := run(t, p, f)
			if len(out) == len(f) {
				t.Fatalf("flags %#x: not sent direct", pk.flags)
			}
			sent[flowOf(unix.IPPROTO_TCP, fam.c, fam.v, pk.sport, 443)] += uint64(len(out))
		}
	}
	seen := 0
	if err := p.Walk(func(f Flow, s State) bool {
		seen++
		tgt, ok := flows[f]
		if !ok {
			t.Errorf("Walk: unknown flow %+v", f)
			return true
		}
		if s.Target != tgt {
			t.Errorf("%v: target %+v, want %+v", f, s.Target, tgt)
		}
		wantPk := map[uint16]uint64{1: 3, 2: 2, 3: 1, 4: 0}[f.Client.Port()]
		wantEnded := f.Client.Port() == 2 || f.Client.Port() == 3
		if s.Packets != wantPk || s.Bytes != sent[f] || s.Ended != wantEnded || s.LastUsed.IsZero() != (wantPk == 0) {
			t.Errorf("%v: %+v; want %d packets, %d bytes, ended %v", f, s, wantPk, sent[f], wantEnded)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if seen != len(flows) {
		t.Errorf("Walk saw %d flows, want %d", seen, len(flows))
	}
	if c := counters(t, p); c.Ended != 4 || c.Direct != 12 {
		t.Errorf("counters %+v: want 4 ended of 12 direct", c)
	}
	// Walk stops when told.
	seen = 0
	p.Walk(func(Flow, State) bool { seen++; return false })
	if seen != 1 {
		t.Errorf("Walk went on after false: %d calls", seen)
	}
	// Delete.
	f := flowOf(unix.IPPROTO_TCP, client4, vip4, 1, 443)
	if err := p.Delete(f); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(f); err != nil {
		t.Errorf("Delete of a missing flow: %v", err)
	}
	if _, ok, _ := p.Lookup(f); ok {
		t.Error("deleted flow still there")
	}
	frame := l4Frame(unix.IPPROTO_TCP, client4, vip4, 1, 443, tcpACK, 0, nil)
	if _, out := run(t, p, frame); !bytes.Equal(out, frame) {
		t.Error("deleted flow still sent direct")
	}
	// Put again over an ended flow: starts over.
	f = flowOf(unix.IPPROTO_TCP, client4, vip4, 2, 443)
	if err := p.Put(f, flows[f]); err != nil {
		t.Fatal(err)
	}
	if s, ok, _ := p.Lookup(f); !ok || s.Ended || s.Packets != 0 || !s.LastUsed.IsZero() {
		t.Errorf("replaced entry: %+v", s)
	}
	if err := p.Put(Flow{Proto: unix.IPPROTO_ICMP, Client: f.Client, VIP: f.VIP}, flows[f]); !errors.Is(err, ErrInvalid) {
		t.Errorf("Put of ICMP: %v", err)
	}
	if err := p.Put(Flow{Proto: unix.IPPROTO_TCP, Client: f.Client, VIP: netip.AddrPortFrom(vip6, 1)}, flows[f]); !errors.Is(err, ErrInvalid) {
		t.Errorf("Put of mixed families: %v", err)
	}
}

// TestAttachNoInterface: a missing interface is a clear error, before any
// BPF.
func TestAttachNoInterface(t *testing.T) {
	p, err := Attach(Options{Interface: "sluice-none0"})
	if err == nil {
		p.Close()
		t.Fatal("attached to a missing interface")
	}
	if !errors.Is(err, ErrNoInterface) {
		t.Errorf("error %v, want ErrNoInterface", err)
	}
}

// TestCloseTwice: Close of a loaded program is idempotent.
func TestCloseTwice(t *testing.T) {
	p := loadT(t)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, _, err := p.Forwarding(); err == nil {
		t.Error("Forwarding of a program not attached: no error")
	}
}

// The flow map evicts nothing: with Flows entries installed, a new flow is
// refused and every installed one stays (an LRU map would drop some, behind
// the agent's back, even before it is full).
func TestFlowMapFullEvictsNothing(t *testing.T) {
	p := loadT(t) // 1024 flows
	flow := func(i int) Flow {
		return Flow{Proto: unix.IPPROTO_TCP, Client: netip.AddrPortFrom(client4, uint16(10000+i)), VIP: netip.AddrPortFrom(vip4, 80)}
	}
	tgt := Target{Backend: back4, SrcPort: 50000}
	for i := range 1024 {
		if err := p.Put(flow(i), tgt); err != nil {
			t.Fatalf("flow %d of 1024: %v", i, err)
		}
	}
	if err := p.Put(flow(1024), tgt); err == nil {
		t.Error("a flow beyond the map's size installed")
	}
	for i := range 1024 {
		if _, ok, err := p.Lookup(flow(i)); !ok || err != nil {
			t.Fatalf("flow %d evicted: %v %v", i, ok, err)
		}
	}
	if err := p.Put(flow(7), Target{Backend: back4, SrcPort: 50001}); err != nil {
		t.Errorf("replacing an installed flow in a full map: %v", err)
	}
}
