package datapath_test

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

var (
	vip4     = netip.MustParseAddrPort("198.18.0.10:80")
	vip6     = netip.MustParseAddrPort("[2001:db8::10]:443")
	lb4      = netip.MustParseAddr("198.18.0.2")
	lb6      = netip.MustParseAddr("2001:db8::2")
	clients4 = sim.Clients{Prefix: netip.MustParsePrefix("198.18.128.0/17")}
	clients6 = sim.Clients{Prefix: netip.MustParsePrefix("2001:db8:c::/64")}
	lbMAC    = [6]byte{0x02, 0, 0, 0, 0, 2}
	hopMAC   = [6]byte{0x02, 0, 0, 0, 0, 1}
)

func backends4(n int) []netip.Addr {
	var out []netip.Addr
	for i := range n {
		out = append(out, netip.AddrFrom4([4]byte{198, 18, 1, byte(11 + i)}))
	}
	return out
}

func service(vip netip.AddrPort, backends []netip.Addr, weights map[netip.Addr]uint32) pipeline.ServiceSpec {
	s := pipeline.ServiceSpec{Name: vip.String(), Addr: vip.Addr(), Proto: 6, Port: vip.Port()}
	src := lb4
	if vip.Addr().Is6() {
		src = lb6
	}
	for _, b := range backends {
		w, ok := weights[b]
		if !ok {
			w = 1
		}
		s.Backends = append(s.Backends, pipeline.BackendSpec{Weight: w, Tunnel: encap.Tunnel{
			Mode: encap.GUE, Src: src, Dst: b, SrcMAC: lbMAC, DstMAC: hopMAC,
		}})
	}
	return s
}

// rig is one worker over an in-memory link whose sent frames are kept.
type rig struct {
	t    testing.TB
	link *mem.Link
	dp   *datapath.Datapath
	b    *pipeline.Builder
	out  [][]byte
}

func newRig(t testing.TB, capacity int) *rig {
	r := &rig{t: t, b: pipeline.NewBuilder()}
	r.link = mem.New(mem.Config{Sink: func(f []byte) { r.out = append(r.out, slices.Clone(f)) }})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{r.link}, FlowCapacity: capacity})
	if err != nil {
		t.Fatal(err)
	}
	r.dp = dp
	return r
}

func (r *rig) apply(spec pipeline.Spec) *pipeline.Generation {
	r.t.Helper()
	g, err := r.b.Build(spec)
	if err != nil {
		r.t.Fatal(err)
	}
	r.dp.Apply(g)
	return g
}

// send injects frames and polls until they are all processed; it returns
// the frames sent out.
func (r *rig) send(frames ...[]byte) [][]byte {
	r.t.Helper()
	r.out = r.out[:0]
	for _, f := range frames {
		r.link.Inject(f)
	}
	w := r.dp.Workers()[0]
	for done := 0; done < len(frames); {
		n, err := w.Poll()
		if err != nil {
			r.t.Fatal(err)
		}
		if n == 0 {
			r.t.Fatalf("link returned no frames after %d of %d", done, len(frames))
		}
		done += n
	}
	return r.out
}

func (r *rig) counters() datapath.Counters { return r.dp.Counters() }

// sendAccounted sends one frame and fails t unless it is counted once: as
// received, and as exactly one of transmitted (each frame sent out),
// passed or dropped. It returns the frames sent out.
func (r *rig) sendAccounted(t *testing.T, frame []byte) [][]byte {
	t.Helper()
	before := r.counters()
	out := r.send(frame)
	after := r.counters()
	rx := after.RxPackets - before.RxPackets
	tx := after.TxPackets - before.TxPackets
	passed := after.Passed - before.Passed
	dropped := after.Dropped() - before.Dropped()
	if rx != 1 || tx+passed+dropped != 1 || int(tx) != len(out) {
		t.Fatalf("rx %d tx %d passed %d dropped %d out %d", rx, tx, passed, dropped, len(out))
	}
	return out
}

func tcpFrame(src, dst netip.AddrPort, flags uint8) []byte {
	f := sim.Frame{SrcMAC: hopMAC, DstMAC: lbMAC, Src: src, Dst: dst, Proto: 6, TCPFlags: flags, Payload: 20}
	b := make([]byte, f.Len())
	f.Encode(b)
	return b
}

// decoded is an encapsulated frame as gopacket and a few independent lines
// of GUE decoding see it.
type decoded struct {
	outerSrc, outerDst netip.Addr
	udpDst             uint16
	hops               []netip.Addr
	inner              []byte // the inner IP packet
}

func decode(t testing.TB, frame []byte) decoded {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	var d decoded
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		d.outerSrc, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		d.outerDst, _ = netip.AddrFromSlice(ip.DstIP.To4())
	case *layers.IPv6:
		d.outerSrc, _ = netip.AddrFromSlice(ip.SrcIP)
		d.outerDst, _ = netip.AddrFromSlice(ip.DstIP)
	default:
		t.Fatalf("no outer IP layer in % x", frame)
	}
	udp, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if !ok {
		t.Fatalf("no outer UDP layer")
	}
	d.udpDst = uint16(udp.DstPort)
	g := udp.Payload
	if len(g) < 4 || g[0]>>6 != 0 {
		t.Fatalf("bad GUE header % x", g[:min(4, len(g))])
	}
	hlen := 4 * int(g[0]&0x1f)
	if hlen > 0 { // private data: type, next, count, then addresses
		n := int(g[7])
		alen := (hlen - 4) / max(n, 1)
		for i := range n {
			a, _ := netip.AddrFromSlice(g[8+i*alen : 8+(i+1)*alen])
			d.hops = append(d.hops, a)
		}
	}
	d.inner = g[4+hlen:]
	return d
}

// backendOf returns the backend a frame was sent to.
func backendOf(t testing.TB, frame []byte) netip.Addr { return decode(t, frame).outerDst }

// ownerOf returns the Maglev owner of a flow in generation g.
func ownerOf(g *pipeline.Generation, src, dst netip.AddrPort) netip.Addr {
	k := flow.MakeKey(6, src, dst)
	svc := g.Lookup(k.Dst, 6, dst.Port())
	owner := svc.Table.Lookup(k.Hash(g.Seed))
	return netip.MustParseAddr(svc.Reals[owner].Name)
}

func u16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
