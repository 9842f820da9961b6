package afxdp

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	ebpflink "github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/bpfgen"
	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/nettest"
	"github.com/sluicelb/sluice/internal/offload"
	"github.com/sluicelb/sluice/internal/packet"
)

const xdpTx = 3

// l4Frame builds an Ethernet/IPv4 or IPv6 frame carrying TCP (flags) or UDP
// with correct checksums and the traffic class tos.
func l4Frame(proto uint8, src, dst netip.Addr, sport, dport uint16, flags uint8, tos uint8, payload []byte) []byte {
	var l4 []byte
	if proto == unix.IPPROTO_TCP {
		l4 = make([]byte, 20+len(payload))
		binary.BigEndian.PutUint32(l4[4:], 12345)
		binary.BigEndian.PutUint32(l4[8:], 678)
		l4[12] = 5 << 4
		l4[13] = flags
		binary.BigEndian.PutUint16(l4[14:], 65535)
		copy(l4[20:], payload)
	} else {
		l4 = make([]byte, 8+len(payload))
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], payload)
	}
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	ck := 16
	if proto == unix.IPPROTO_UDP {
		ck = 6
	}
	b := append(append([]byte{}, macB...), macA...)
	var pseudo []byte
	if src.Is4() {
		b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IP)
		ip := make([]byte, 20)
		ip[0], ip[1] = 0x45, tos
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		ip[8], ip[9] = 64, proto
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ^csum(0, ip))
		pseudo = append(append(append([]byte{}, s[:]...), d[:]...), 0, proto, byte(len(l4)>>8), byte(len(l4)))
		b = append(b, ip...)
	} else {
		b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IPV6)
		ip := make([]byte, 40)
		binary.BigEndian.PutUint32(ip[0:], 6<<28|uint32(tos)<<20|0x12345)
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		ip[6], ip[7] = proto, 64
		s, d := src.As16(), dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		pseudo = append(append(append([]byte{}, s[:]...), d[:]...), 0, 0, byte(len(l4)>>8), byte(len(l4)), 0, 0, 0, proto)
		b = append(b, ip...)
	}
	c := ^csum(csum(0, pseudo), l4)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[ck:], c)
	return append(b, l4...)
}

// frameKey is the flow key of a frame built by l4Frame.
func frameKey(proto uint8, src, dst netip.Addr, sport, dport uint16) flow.Key {
	return flow.MakeKey(proto, netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport))
}

func newOffloadObjectsT(t *testing.T) (*objects, *kernel) {
	t.Helper()
	nettest.RequireRoot(t)
	o, err := newObjects(1, xdpDrop, progOptions{offload: true, flows: 1024})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.close)
	if err := o.setVIPs([]netip.Addr{vip4, vip6}); err != nil {
		t.Fatal(err)
	}
	return o, o.off
}

var testTunnels = []struct {
	name string
	tun  encap.Tunnel
}{
	{"gue4", encap.Tunnel{Mode: encap.GUE, Src: lbAddr4, Dst: netip.MustParseAddr("198.18.9.1")}},
	{"gue4 checksum", encap.Tunnel{Mode: encap.GUE, Src: lbAddr4, Dst: netip.MustParseAddr("198.18.9.2"), UDPChecksum: true, Port: 7000}},
	{"gue4 vlan", encap.Tunnel{Mode: encap.GUE, Src: lbAddr4, Dst: netip.MustParseAddr("198.18.9.3"), VLAN: 42, TTL: 9}},
	{"gue6", encap.Tunnel{Mode: encap.GUE, Src: lbAddr6, Dst: netip.MustParseAddr("2001:db8:9::1")}},
	{"gue6 zero checksum", encap.Tunnel{Mode: encap.GUE, Src: lbAddr6, Dst: netip.MustParseAddr("2001:db8:9::2"), ZeroUDP6Checksum: true}},
	{"gue6 vlan", encap.Tunnel{Mode: encap.GUE, Src: lbAddr6, Dst: netip.MustParseAddr("2001:db8:9::3"), VLAN: 7}},
	{"ipip", encap.Tunnel{Mode: encap.IPIP, Src: lbAddr4, Dst: netip.MustParseAddr("198.18.9.4")}},
	{"ipip vlan", encap.Tunnel{Mode: encap.IPIP, Src: lbAddr4, Dst: netip.MustParseAddr("198.18.9.5"), VLAN: 3}},
	{"ip6ip6", encap.Tunnel{Mode: encap.IPIP, Src: lbAddr6, Dst: netip.MustParseAddr("2001:db8:9::4")}},
}

// TestOffloadEncapMatchesGo runs the offload program (BPF_PROG_TEST_RUN) on
// TCP and UDP, IPv4 and IPv6 packets of installed flows toward every kind of
// template and requires XDP_TX and exactly the frame encap.Template.Encap
// writes.
func TestOffloadEncapMatchesGo(t *testing.T) {
	o, k := newOffloadObjectsT(t)
	var tmpls []offload.Template
	var tps []*encap.Template
	for _, tc := range testTunnels {
		tc.tun.SrcMAC, tc.tun.DstMAC = [6]byte{2, 0, 0, 0, 1, 1}, [6]byte{2, 0, 0, 0, 2, 2}
		tp, err := encap.Compile(tc.tun)
		if err != nil {
			t.Fatal(err)
		}
		tps = append(tps, tp)
		tmpls = append(tmpls, offload.TemplateOf(tp, 1500))
	}
	const gen = 7
	if err := k.SetGeneration(gen, tmpls); err != nil {
		t.Fatal(err)
	}
	port := uint16(1000)
	payloads := [][]byte{nil, []byte("x"), []byte("hello, offload"), bytes.Repeat([]byte{0xfe}, 1001)}
	for i, tc := range testTunnels {
		for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			for _, fam := range []struct{ src, dst netip.Addr }{{clAddr4, vip4}, {clAddr6, vip6}} {
				for pi, pl := range payloads {
					port++
					tos := uint8(pi * 0x25)
					frame := l4Frame(proto, fam.src, fam.dst, port, 80, 0x10, tos, pl)
					h := uint64(port) * 0x9e3779b97f4a7c15
					key := frameKey(proto, fam.src, fam.dst, port, 80)
					if err := k.Update([]offload.Op{{Key: key, Gen: gen, Real: uint32(i), Sport: encap.SrcPort(h), Label: encap.FlowLabel(h)}}); err != nil {
						t.Fatal(err)
					}
					buf := make([]byte, 256+len(frame))
					copy(buf[128:], frame)
					ver := uint8(4)
					if fam.src.Is6() {
						ver = 6
					}
					start := tps[i].Encap(buf, 128+14, 128+len(frame), ver, h, nil)
					if start < 0 {
						t.Fatalf("%s: Encap failed", tc.name)
					}
					want := buf[start : 128+len(frame)]
					out := make([]byte, len(frame)+256)
					ret, err := o.prog.Run(&ebpf.RunOptions{Data: frame, DataOut: out})
					if err != nil {
						t.Fatal(err)
					}
					if ret != xdpTx {
						t.Fatalf("%s proto %d %v payload %d: verdict %d, want XDP_TX", tc.name, proto, fam.src, len(pl), ret)
					}
					if got := out[:len(want)]; !bytes.Equal(got, want) {
						t.Fatalf("%s proto %d %v payload %d:\n got %x\nwant %x", tc.name, proto, fam.src, len(pl), got, want)
					}
				}
			}
		}
	}
	c, err := k.Counters()
	if err != nil {
		t.Fatal(err)
	}
	wantN := uint64(len(testTunnels) * 2 * 2 * len(payloads))
	if c.Forwarded != wantN {
		t.Errorf("forwarded %d, want %d", c.Forwarded, wantN)
	}
	for i := range testTunnels {
		if c.Reals[i].Packets != 16 {
			t.Errorf("backend %d: %d packets, want 16", i, c.Reals[i].Packets)
		}
	}
	// Every flow forwarded is active (the worker's refresh keeps its entry).
	keys, err := k.Active(nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != int(wantN) || c.Entries != int(wantN) {
		t.Errorf("%d active flows, %d entries; want %d", len(keys), c.Entries, wantN)
	}
	if err := k.Update([]offload.Op{{Key: keys[0], Gen: gen}}); err != nil {
		t.Fatal(err)
	}
	if keys, _ := k.Active(keys[:0], time.Minute); len(keys) != int(wantN)-1 {
		t.Errorf("a reinstalled flow not yet forwarded counts as active (%d of %d)", len(keys), wantN)
	}
}

// TestOffloadPasses checks what the program hands to the socket (the
// fallback, XDP_DROP here) and why, and what it leaves to the kernel.
func TestOffloadPasses(t *testing.T) {
	o, k := newOffloadObjectsT(t)
	mk := func(tun encap.Tunnel) offload.Template {
		tp, err := encap.Compile(tun)
		if err != nil {
			t.Fatal(err)
		}
		return offload.TemplateOf(tp, 1500)
	}
	small := mk(testTunnels[0].tun)
	small.MTU = 60
	tmpls := []offload.Template{mk(testTunnels[0].tun), mk(testTunnels[1].tun), small, {}}
	if err := k.SetGeneration(2, tmpls); err != nil {
		t.Fatal(err)
	}
	install := func(key flow.Key, gen, real uint32) {
		if err := k.Update([]offload.Op{{Key: key, Gen: gen, Real: real, Sport: 50000}}); err != nil {
			t.Fatal(err)
		}
	}
	tcp := func(sport uint16, flags uint8) []byte {
		return l4Frame(unix.IPPROTO_TCP, clAddr4, vip4, sport, 80, flags, 0, []byte("data"))
	}
	for p := uint16(1); p <= 12; p++ {
		install(frameKey(unix.IPPROTO_TCP, clAddr4, vip4, p, 80), 2, 0)
	}
	install(frameKey(unix.IPPROTO_TCP, clAddr4, vip4, 20, 80), 1, 0)    // stale
	install(frameKey(unix.IPPROTO_TCP, clAddr4, vip4, 21, 80), 2, 2)    // MTU 200
	install(frameKey(unix.IPPROTO_TCP, clAddr4, vip4, 22, 80), 2, 3)    // no template
	install(frameKey(unix.IPPROTO_UDP, clAddr4, vip4, 23, 53), 2, 1)    // checksummed template
	install(frameKey(unix.IPPROTO_TCP, clAddr4, vip4, 24, 80), 2, 4000) // beyond the templates

	frag := tcp(5, 0x10)
	binary.BigEndian.PutUint16(frag[14+6:], 0x2000) // MF
	opts := tcp(6, 0x10)
	opts[14] = 0x46
	udp0 := l4Frame(unix.IPPROTO_UDP, clAddr4, vip4, 23, 53, 0, 0, []byte("q"))
	udp0[14+20+6], udp0[14+20+7] = 0, 0
	icmp := tcp(7, 0x10)
	icmp[14+9] = unix.IPPROTO_ICMP
	tests := []struct {
		name   string
		pkt    []byte
		want   uint32
		reason offload.Reason
	}{
		{"established", tcp(1, 0x10), xdpTx, 0},
		{"syn", tcp(2, 0x02), xdpDrop, offload.ReasonTCPFlags},
		{"fin", tcp(3, 0x11), xdpDrop, offload.ReasonTCPFlags},
		{"rst", tcp(4, 0x04), xdpDrop, offload.ReasonTCPFlags},
		{"fragment", frag, xdpDrop, offload.ReasonFragment},
		{"ip options", opts, xdpDrop, offload.ReasonIPOptions},
		{"icmp", icmp, xdpDrop, offload.ReasonProto},
		{"no entry", tcp(99, 0x10), xdpDrop, offload.ReasonNoEntry},
		{"stale", tcp(20, 0x10), xdpDrop, offload.ReasonStale},
		{"too big", tcp(21, 0x10), xdpDrop, offload.ReasonTooBig},
		{"no template", tcp(22, 0x10), xdpDrop, offload.ReasonNoTemplate},
		{"udp no checksum", udp0, xdpDrop, offload.ReasonNoChecksum},
		{"backend beyond", tcp(24, 0x10), xdpDrop, offload.ReasonNoTemplate},
		{"vlan", vlanTag(tcp(1, 0x10), 0x8100, 5), xdpDrop, offload.ReasonVLAN},
		{"truncated", tcp(1, 0x10)[:14+20+10], xdpDrop, offload.ReasonMalformed},
		{"not a vip", l4Frame(unix.IPPROTO_TCP, clAddr4, lbAddr4, 1, 80, 0x10, 0, nil), xdpPass, 0},
		{"arp", arpFrame(), xdpPass, 0},
		{"ipv6 extension header", func() []byte {
			f := l4Frame(unix.IPPROTO_TCP, clAddr6, vip6, 1, 80, 0x10, 0, nil)
			f[14+6] = 0 // hop-by-hop
			return f
		}(), xdpDrop, offload.ReasonProto},
	}
	for _, tc := range tests {
		before, err := k.Counters()
		if err != nil {
			t.Fatal(err)
		}
		got, err := o.prog.Run(&ebpf.RunOptions{Data: tc.pkt})
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, got, tc.want)
		}
		after, _ := k.Counters()
		if tc.want == xdpDrop && after.Passed[tc.reason] != before.Passed[tc.reason]+1 {
			t.Errorf("%s: reason %s not counted: %v -> %v", tc.name, tc.reason, before.Passed, after.Passed)
		}
	}
	// A new generation: every entry of the old one is stale, without a flush.
	if err := k.SetGeneration(3, tmpls); err != nil {
		t.Fatal(err)
	}
	if got, _ := o.prog.Run(&ebpf.RunOptions{Data: tcp(1, 0x10)}); got != xdpDrop {
		t.Errorf("after a new generation: verdict %d, want the socket", got)
	}
	// Reinstalled in the new generation, it is forwarded again; deleted, not.
	install(frameKey(unix.IPPROTO_TCP, clAddr4, vip4, 1, 80), 3, 0)
	if got, _ := o.prog.Run(&ebpf.RunOptions{Data: tcp(1, 0x10)}); got != xdpTx {
		t.Errorf("reinstalled: verdict %d, want XDP_TX", got)
	}
	if err := k.Update([]offload.Op{{Key: frameKey(unix.IPPROTO_TCP, clAddr4, vip4, 1, 80), Del: true}, {Key: frameKey(unix.IPPROTO_TCP, clAddr4, vip4, 999, 80), Del: true}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := o.prog.Run(&ebpf.RunOptions{Data: tcp(1, 0x10)}); got != xdpDrop {
		t.Errorf("deleted: verdict %d, want the socket", got)
	}
}

// TestOffloadSteering: the offload program steers like the steering-only
// program (TestProgramVerdicts' cases).
func TestOffloadSteering(t *testing.T) {
	o, _ := newOffloadObjectsT(t)
	if err := o.setVIPs([]netip.Addr{netip.MustParseAddr("198.18.0.100"), netip.MustParseAddr("2001:db8::100")}); err != nil {
		t.Fatal(err)
	}
	v4, v6 := netip.MustParseAddr("198.18.0.100"), netip.MustParseAddr("2001:db8::100")
	for _, tc := range []struct {
		name string
		pkt  []byte
		want uint32
	}{
		{"ipv4 vip", udpFrame(macA, macB, clAddr4, v4, 1, 2, []byte("x")), xdpDrop},
		{"ipv6 vip", udpFrame(macA, macB, clAddr6, v6, 1, 2, []byte("x")), xdpDrop},
		{"ipv4 other", udpFrame(macA, macB, clAddr4, lbAddr4, 1, 2, []byte("x")), xdpPass},
		{"ipv6 other", udpFrame(macA, macB, clAddr6, lbAddr6, 1, 2, []byte("x")), xdpPass},
		{"ipv4 just the header", udpFrame(macA, macB, clAddr4, v4, 1, 2, nil)[:14+20], xdpDrop},
		{"ipv4 truncated header", udpFrame(macA, macB, clAddr4, v4, 1, 2, nil)[:14+19], xdpPass},
		{"802.1ad vip", vlanTag(udpFrame(macA, macB, clAddr4, v4, 1, 2, nil), 0x88a8, 3), xdpDrop},
		{"802.1Q other", vlanTag(udpFrame(macA, macB, clAddr4, lbAddr4, 1, 2, nil), 0x8100, 3), xdpPass},
		{"ethernet only", make([]byte, 14), xdpPass},
	} {
		got, err := o.prog.Run(&ebpf.RunOptions{Data: tc.pkt})
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestOffloadAttach: the verifier accepts the program and it attaches in
// native and generic mode on a veth; an installed flow is forwarded out of
// the interface (XDP_TX) and arrives encapsulated at the peer.
func TestOffloadAttach(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			tb := newTestbed(t)
			l := tb.open(t, Config{Mode: m, Offload: true, OffloadFlows: 4096})
			if l.AttachMode() != m.String() {
				t.Fatalf("attached %s, want %s", l.AttachMode(), m)
			}
			k := l.Offload()
			if k == nil {
				t.Fatal("Offload() is nil with Config.Offload")
			}
			if err := l.SetVIPs([]netip.Addr{vip4}); err != nil {
				t.Fatal(err)
			}
			// XDP_TX on a veth in native mode needs an XDP program on the
			// peer (GRO on is not enough on this kernel).
			passOn(t, tb, "cl0")
			tun := encap.Tunnel{Mode: encap.GUE, Src: lbAddr4, Dst: clAddr4, Port: 6080}
			copy(tun.SrcMAC[:], tb.lbMAC)
			copy(tun.DstMAC[:], tb.clMAC)
			tp, err := encap.Compile(tun)
			if err != nil {
				t.Fatal(err)
			}
			if err := k.SetGeneration(1, []offload.Template{offload.TemplateOf(tp, 1500)}); err != nil {
				t.Fatal(err)
			}
			key := frameKey(unix.IPPROTO_UDP, clAddr4, vip4, 4000, 53)
			if err := k.Update([]offload.Op{{Key: key, Gen: 1, Real: 0, Sport: 50001}}); err != nil {
				t.Fatal(err)
			}
			ps := openPacket(t, tb.cl, tb.clIndex, unix.ETH_P_IP)
			frame := l4Frame(unix.IPPROTO_UDP, clAddr4, vip4, 4000, 53, 0, 0, []byte("through the kernel"))
			copy(frame[0:6], tb.lbMAC)
			copy(frame[6:12], tb.clMAC)
			const n = 20
			for range n {
				ps.send(t, frame)
			}
			got := 0
			buf := make([]byte, 4096)
			for range 4 * n {
				f := ps.recv(buf)
				if f == nil {
					break
				}
				if len(f) == len(frame)+32 && binary.BigEndian.Uint16(f[14+20+2:]) == 6080 &&
					bytes.Equal(f[14+20+12:], frame[14:]) {
					got++
				}
			}
			if got != n {
				t.Errorf("received %d of %d encapsulated packets back", got, n)
			}
			c, err := k.Counters()
			if err != nil {
				t.Fatal(err)
			}
			if c.Forwarded != n || c.Reals[0].Packets != n || c.Entries != 1 {
				t.Errorf("counters: forwarded %d, backend 0 %d packets, %d entries; want %d, %d, 1", c.Forwarded, c.Reals[0].Packets, c.Entries, n, n)
			}
		})
	}
}

// TestOffloadLayout: the Go view of the program's maps matches the object.
func TestOffloadLayout(t *testing.T) {
	spec, err := loadOffload()
	if err != nil {
		t.Fatal(err)
	}
	if got := spec.Maps[offloadMapSluiceTmpl].MaxEntries; got != 2*offloadMaxReals {
		t.Errorf("template map: %d entries, want %d", got, 2*offloadMaxReals)
	}
	if got := spec.Maps[offloadMapSluiceRealCtr].MaxEntries; got != offloadMaxReals {
		t.Errorf("backend counters: %d entries, want %d", got, offloadMaxReals)
	}
	if int(offloadCtrCTR_NAT_TX)-1 != int(offload.NumReasons) || offloadCtrCTR_NUM != offloadCtrCTR_NAT_TX+1 {
		t.Errorf("program has %d pass reasons, offload.Reason %d", offloadCtrCTR_NAT_TX-1, offload.NumReasons)
	}
	if got := spec.Maps[offloadMapSluiceFlows].KeySize; got != 40 {
		t.Errorf("flow key: %d bytes, want 40", got)
	}
	var tm offloadTmpl
	if len(tm.Hdr) != offloadHdrMax {
		t.Errorf("template header: %d bytes, want %d", len(tm.Hdr), offloadHdrMax)
	}
}

// TestOffloadObjectFresh fails when the committed object is stale (bpfgen.CheckFresh).
func TestOffloadObjectFresh(t *testing.T) {
	bpfgen.CheckFresh(t, "offload", "afxdp")
}

// passOn attaches an XDP program that passes everything to ifname in the
// traffic namespace, natively: a veth transmits XDP_TX frames of its peer
// only then.
func passOn(t *testing.T, tb *testbed, ifname string) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.XDP, License: "Dual MIT/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	ifc, err := tb.clHandle.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	var l ebpflink.Link
	if err := tb.cl.Do(func() (err error) {
		l, err = ebpflink.AttachXDP(ebpflink.XDPOptions{Program: prog, Interface: ifc.Attrs().Index, Flags: ebpflink.XDPDriverMode})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
}

// TestOffloadRandomFrames runs the program on frames of installed flows
// mutated at random (truncated, bytes flipped, lengths and flags changed):
// it never aborts, and what it forwards is exactly what Go writes for the
// same frame.
func TestOffloadRandomFrames(t *testing.T) {
	o, k := newOffloadObjectsT(t)
	var tmpls []offload.Template
	var tps []*encap.Template
	for _, tc := range testTunnels {
		tp, err := encap.Compile(tc.tun)
		if err != nil {
			t.Fatal(err)
		}
		tps = append(tps, tp)
		tmpls = append(tmpls, offload.TemplateOf(tp, 1500))
	}
	// Backends 9 and 10 are full-NAT (IPv4, IPv6).
	var nats []*encap.NATTemplate
	for _, c := range []struct {
		snat    string
		backend string
	}{{"198.18.40.11", "198.18.30.101:8080"}, {"2001:db8:40::11", "[2001:db8:30::101]:8080"}} {
		nt, err := encap.CompileNAT(encap.NAT{SNAT: netip.MustParseAddr(c.snat), Backend: netip.MustParseAddrPort(c.backend)})
		if err != nil {
			t.Fatal(err)
		}
		nats = append(nats, nt)
		var tm offload.Template
		tm.NAT[0] = offload.NATTemplate{Image: nt.Image(), Valid: true}
		tmpls = append(tmpls, tm)
	}
	if err := k.SetGeneration(1, tmpls); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var bases [][]byte
	installed := map[flow.Key]int{} // flow -> backend
	for i := range 48 {
		if i >= 32 { // full-NAT flows
			proto := uint8(unix.IPPROTO_TCP)
			if i%2 == 1 {
				proto = unix.IPPROTO_UDP
			}
			src, dst, real := clAddr4, vip4, 9
			if i%4 >= 2 {
				src, dst, real = clAddr6, vip6, 10
			}
			port := uint16(2000 + i)
			key := frameKey(proto, src, dst, port, 80)
			if err := k.Update([]offload.Op{{Key: key, Gen: 1, Real: uint32(real), Sport: 50000 + port, NAT: true}}); err != nil {
				t.Fatal(err)
			}
			bases = append(bases, l4Frame(proto, src, dst, port, 80, 0x10, 0, make([]byte, rng.IntN(200))))
			installed[key] = real
			continue
		}
		proto := uint8(unix.IPPROTO_TCP)
		if i%2 == 1 {
			proto = unix.IPPROTO_UDP
		}
		src, dst := clAddr4, vip4
		if i%4 >= 2 {
			src, dst = clAddr6, vip6
		}
		port := uint16(2000 + i)
		real := i % len(testTunnels)
		h := uint64(port) * 0x9e3779b97f4a7c15
		if err := k.Update([]offload.Op{{Key: frameKey(proto, src, dst, port, 80), Gen: 1, Real: uint32(real), Sport: encap.SrcPort(h), Label: encap.FlowLabel(h)}}); err != nil {
			t.Fatal(err)
		}
		bases = append(bases, l4Frame(proto, src, dst, port, 80, 0x10, 0, make([]byte, rng.IntN(200))))
		installed[frameKey(proto, src, dst, port, 80)] = real
	}
	counts := map[uint32]int{}
	for range 20000 {
		i := rng.IntN(len(bases))
		f := slices.Clone(bases[i])
		switch rng.IntN(4) {
		case 0: // truncate
			f = f[:rng.IntN(len(f)+1)]
		case 1: // flip bytes in the headers
			for range 1 + rng.IntN(3) {
				f[rng.IntN(min(len(f), 14+40+20))] ^= byte(1 + rng.IntN(255))
			}
		case 2: // trailing bytes
			f = append(f, make([]byte, 1+rng.IntN(20))...)
		}
		out := make([]byte, len(f)+256)
		ret, err := o.prog.Run(&ebpf.RunOptions{Data: f, DataOut: out})
		if err != nil {
			if len(f) < 14 { // the kernel refuses frames shorter than Ethernet
				continue
			}
			t.Fatal(err)
		}
		counts[ret]++
		switch ret {
		case xdpPass, xdpDrop:
		case xdpTx:
			// Forwarded: only a frame whose flow key is installed, which
			// Go would encapsulate the same way (the inner packet as its
			// IP length says).
			// (A mutation may have made it another installed flow's.) The
			// worker's parser would have taken it too.
			var pp packet.Parsed
			if pp.Decode(f); pp.Verdict != packet.OK {
				t.Fatalf("forwarded a frame the parser refuses (%v): %x", pp.Verdict, f)
			}
			ver := f[14] >> 4
			var key flow.Key
			l3len, l4 := 40+int(binary.BigEndian.Uint16(f[14+4:])), 14+40
			if ver == 4 {
				l3len, l4 = int(binary.BigEndian.Uint16(f[14+2:])), 14+20
				a, _ := netip.AddrFromSlice(f[14+12 : 14+16])
				b, _ := netip.AddrFromSlice(f[14+16 : 14+20])
				key = frameKey(f[14+9], a, b, binary.BigEndian.Uint16(f[l4:]), binary.BigEndian.Uint16(f[l4+2:]))
			} else {
				a, _ := netip.AddrFromSlice(f[14+8 : 14+24])
				b, _ := netip.AddrFromSlice(f[14+24 : 14+40])
				key = frameKey(f[14+6], a, b, binary.BigEndian.Uint16(f[l4:]), binary.BigEndian.Uint16(f[l4+2:]))
			}
			real, ok := installed[key]
			if !ok {
				t.Fatalf("forwarded a frame of no installed flow: %x", f)
			}
			h := uint64(key.SrcPort) * 0x9e3779b97f4a7c15
			buf := make([]byte, 256+len(f))
			copy(buf[128:], f)
			if real >= 9 {
				start := nats[real-9].Forward(buf, 128+14, 128+l4, 128+14+l3len, key.Proto, 50000+key.SrcPort)
				if start < 0 {
					t.Fatalf("rewrote a frame Go's NAT refuses: %x", f)
				}
				want := buf[start : 128+14+l3len]
				if got := out[:len(want)]; !bytes.Equal(got, want) {
					t.Fatalf("NAT frame %x:\n got %x\nwant %x", f, got, want)
				}
				continue
			}
			start := tps[real].Encap(buf, 128+14, 128+14+l3len, ver, h, nil)
			if start < 0 {
				t.Fatalf("forwarded a frame Go cannot encapsulate: %x", f)
			}
			want := buf[start : 128+14+l3len]
			got := out[:len(want)]
			if tmpls[real].Csum && !l4ChecksumOK(f[14:14+l3len]) {
				// A corrupt segment: the program's outer checksum is
				// derived from the inner one, so it is wrong too (and the
				// backend's kernel drops the packet, as its TCP or UDP
				// would); the rest is the same.
				o := tmpls[real].Image.L2Len + 40 + 6
				if !tmpls[real].V6 {
					o = tmpls[real].Image.L2Len + 20 + 6
				}
				got, want = slices.Clone(got), slices.Clone(want)
				got[o], got[o+1], want[o], want[o+1] = 0, 0, 0, 0
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("frame %x:\n got %x\nwant %x", f, got, want)
			}
		default:
			t.Fatalf("verdict %d for %x", ret, f)
		}
	}
	t.Logf("verdicts: %v", counts)
}

// l4ChecksumOK reports whether the TCP or UDP checksum of the IP packet p
// (no options, no extension headers) is right.
func l4ChecksumOK(p []byte) bool {
	var pseudo []byte
	var l4 []byte
	if p[0]>>4 == 4 {
		l4 = p[20:]
		pseudo = append(append([]byte{}, p[12:20]...), 0, p[9], byte(len(l4)>>8), byte(len(l4)))
	} else {
		l4 = p[40:]
		pseudo = append(append([]byte{}, p[8:40]...), 0, 0, byte(len(l4)>>8), byte(len(l4)), 0, 0, 0, p[6])
	}
	return csum(csum(0, pseudo), l4) == 0xffff
}

// TestOffloadNATMatchesGo: full-NAT flows (the client's direction) are
// rewritten by the program exactly as encap.NATTemplate.Forward does — TCP
// and UDP (with and without checksum), IPv4 and IPv6, with and without a
// VLAN tag, two SNAT addresses — and sent with XDP_TX; a flow whose SNAT
// address has no template goes to the socket.
func TestOffloadNATMatchesGo(t *testing.T) {
	o, k := newOffloadObjectsT(t)
	type natCase struct {
		snat    netip.Addr
		backend netip.AddrPort
		vlan    uint16
	}
	// Backend i has SNAT address 0 and 1 of its family.
	cases := []natCase{
		{netip.MustParseAddr("198.18.40.11"), netip.MustParseAddrPort("198.18.30.101:8080"), 0},
		{netip.MustParseAddr("198.18.40.12"), netip.MustParseAddrPort("198.18.30.102:80"), 9},
		{netip.MustParseAddr("2001:db8:40::11"), netip.MustParseAddrPort("[2001:db8:30::101]:8443"), 0},
		{netip.MustParseAddr("2001:db8:40::12"), netip.MustParseAddrPort("[2001:db8:30::102]:80"), 9},
	}
	tmpls := make([]offload.Template, len(cases))
	nts := make([][2]*encap.NATTemplate, len(cases))
	for i, c := range cases {
		for a := range 2 {
			snat := c.snat
			if a == 1 {
				snat = snat.Next()
			}
			nt, err := encap.CompileNAT(encap.NAT{L2: encap.L2{SrcMAC: [6]byte{2, 0, 0, 0, 3, 3}, DstMAC: [6]byte{2, 0, 0, 0, 4, byte(i)}, VLAN: c.vlan},
				SNAT: snat, Backend: c.backend})
			if err != nil {
				t.Fatal(err)
			}
			nts[i][a] = nt
			tmpls[i].NAT[a] = offload.NATTemplate{Image: nt.Image(), Valid: true}
		}
	}
	if err := k.SetGeneration(3, tmpls); err != nil {
		t.Fatal(err)
	}
	port := uint16(3000)
	n := 0
	for i, c := range cases {
		src, dst := clAddr4, vip4
		if c.snat.Is6() {
			src, dst = clAddr6, vip6
		}
		for a := range 2 {
			for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
				for _, pl := range [][]byte{nil, []byte("hello"), bytes.Repeat([]byte{7}, 333)} {
					for _, zero := range []bool{false, true} {
						if zero && (proto != unix.IPPROTO_UDP || src.Is6()) {
							continue
						}
						port++
						frame := l4Frame(proto, src, dst, port, 80, 0x18, 0, pl)
						if zero {
							frame[14+20+6], frame[14+20+7] = 0, 0
						}
						snatPort := 40000 + port
						op := offload.Op{Key: frameKey(proto, src, dst, port, 80), Gen: 3, Real: uint32(i), Sport: snatPort, NAT: true, NATAddr: uint8(a)}
						if err := k.Update([]offload.Op{op}); err != nil {
							t.Fatal(err)
						}
						buf := make([]byte, 256+len(frame))
						copy(buf[128:], frame)
						l4 := 128 + 14 + 20
						if src.Is6() {
							l4 = 128 + 14 + 40
						}
						start := nts[i][a].Forward(buf, 128+14, l4, 128+len(frame), proto, snatPort)
						if start < 0 {
							t.Fatal("Forward failed")
						}
						want := buf[start : 128+len(frame)]
						out := make([]byte, len(frame)+256)
						ret, err := o.prog.Run(&ebpf.RunOptions{Data: frame, DataOut: out})
						if err != nil {
							t.Fatal(err)
						}
						if ret != xdpTx {
							t.Fatalf("backend %d snat %d proto %d: verdict %d, want XDP_TX", i, a, proto, ret)
						}
						if got := out[:len(want)]; !bytes.Equal(got, want) {
							t.Fatalf("backend %d snat %d proto %d zero %v payload %d:\n got %x\nwant %x", i, a, proto, zero, len(pl), got, want)
						}
						n++
					}
				}
			}
		}
	}
	// No template for SNAT address 2: the socket.
	port++
	frame := l4Frame(unix.IPPROTO_TCP, clAddr4, vip4, port, 80, 0x10, 0, nil)
	if err := k.Update([]offload.Op{{Key: frameKey(unix.IPPROTO_TCP, clAddr4, vip4, port, 80), Gen: 3, Real: 0, Sport: 1, NAT: true, NATAddr: 2}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := o.prog.Run(&ebpf.RunOptions{Data: frame}); got != xdpDrop {
		t.Errorf("no NAT template: verdict %d, want the socket", got)
	}
	c, _ := k.Counters()
	if c.Forwarded != uint64(n) || c.NATForwarded != uint64(n) {
		t.Errorf("forwarded %d, of which full-NAT %d; want %d", c.Forwarded, c.NATForwarded, n)
	}
}
