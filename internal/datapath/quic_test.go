package datapath_test

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/quiclb"
	"github.com/sluicelb/sluice/internal/sim"
)

var (
	quicVIP = netip.MustParseAddrPort("198.18.0.10:443")
	quicKey = []byte("sluice-quiclb-k!")
	// quicCfg is the tests' QUIC-LB configuration: encrypted (four
	// passes), 2-octet server IDs, 9-octet CIDs.
	quicCfg = quiclb.Config{Rotation: 1, ServerIDLen: 2, NonceLen: 6, Key: quicKey}
)

func mustCodec(tb testing.TB, cfg quiclb.Config) *quiclb.Codec {
	tb.Helper()
	c, err := quiclb.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// serverID is backend i's server ID: 0x0a00 + i.
func serverID(i int) quiclb.ServerID {
	s, _ := quiclb.ServerIDFromUint64(0x0a00+uint64(i), 2)
	return s
}

// quicService is a UDP service on quicVIP routed by codec, backend i with
// serverID(i).
func quicService(codec *quiclb.Codec, bes []netip.Addr) pipeline.ServiceSpec {
	s := service(quicVIP, bes, nil)
	s.Proto = 17
	s.QUIC = codec
	for i := range s.Backends {
		s.Backends[i].ServerID = serverID(i)
	}
	return s
}

// cidFor returns a fresh CID of codec carrying sid.
func cidFor(tb testing.TB, codec *quiclb.Codec, sid quiclb.ServerID, r *rand.Rand) []byte {
	tb.Helper()
	nonce := make([]byte, codec.NonceLen())
	for i := range nonce {
		nonce[i] = byte(r.Uint32())
	}
	cid, err := codec.Encode(nil, sid.Bytes(), nonce)
	if err != nil {
		tb.Fatal(err)
	}
	return cid
}

// shortHeader is a 1-RTT packet to dcid: first octet, DCID, some payload.
func shortHeader(dcid []byte) []byte {
	return append(append([]byte{0x43}, dcid...), bytes.Repeat([]byte{0xaa}, 30)...)
}

// longHeader is a QUIC v1 Initial-like packet to dcid from an 8-octet SCID.
func longHeader(dcid []byte) []byte {
	b := append([]byte{0xc3, 0, 0, 0, 1, byte(len(dcid))}, dcid...)
	b = append(b, 8, 1, 2, 3, 4, 5, 6, 7, 8)
	return append(b, bytes.Repeat([]byte{0xbb}, 40)...)
}

// udpFrame is a UDP frame from src to dst carrying payload (the UDP
// checksum is not updated: the datapath does not check it).
func udpFrame(src, dst netip.AddrPort, payload []byte) []byte {
	f := sim.Frame{SrcMAC: hopMAC, DstMAC: lbMAC, Src: src, Dst: dst, Proto: 17, Payload: len(payload)}
	b := make([]byte, f.Len())
	f.Encode(b)
	copy(b[len(b)-len(payload):], payload)
	return b
}

// randomSrc is a client address and port drawn from r: the 4-tuple of a
// migrated or rebound client.
func randomSrc(r *rand.Rand) netip.AddrPort {
	return clients4.FlowSrc(r.Uint32() % (1 << 20))
}

// tupleOwner is the Maglev owner of the UDP 4-tuple src -> dst in g.
func tupleOwner(g *pipeline.Generation, src, dst netip.AddrPort) netip.Addr {
	k := flow.MakeKey(17, src, dst)
	svc := g.Lookup(k.Dst, 17, dst.Port())
	return netip.MustParseAddr(svc.Reals[svc.Table.Lookup(k.Hash(g.Seed))].Name)
}

// dcidOwner is the Maglev owner of DCID dcid's hash in g's QUIC service.
func dcidOwner(g *pipeline.Generation, dcid []byte) netip.Addr {
	k := flow.MakeKey(17, quicVIP, quicVIP)
	svc := g.Lookup(k.Dst, 17, quicVIP.Port())
	return netip.MustParseAddr(svc.Reals[svc.Table.Lookup(flow.HashBytes(dcid, g.Seed))].Name)
}

// Packets whose DCID carries a backend's server ID reach that backend from
// any 4-tuple, short and long headers alike, and make no flow entry.
func TestQUICRoutesByConnectionID(t *testing.T) {
	codec := mustCodec(t, quicCfg)
	bes := backends4(5)
	r := newRig(t, 1024)
	r.apply(pipeline.Spec{Seed: 3, Services: []pipeline.ServiceSpec{quicService(codec, bes)}})
	rng := rand.New(rand.NewPCG(1, 2))
	sent := 0
	for bi, be := range bes {
		for range 40 {
			cid := cidFor(t, codec, serverID(bi), rng)
			for _, payload := range [][]byte{shortHeader(cid), longHeader(cid)} {
				// The same connection from three 4-tuples: migrated,
				// rebound, on another address.
				for range 3 {
					in := udpFrame(randomSrc(rng), quicVIP, payload)
					out := r.send(in)
					if len(out) != 1 {
						t.Fatalf("%d frames out", len(out))
					}
					d := decode(t, out[0])
					if d.outerDst != be {
						t.Fatalf("CID %x of server %v went to %v, want %v", cid, serverID(bi), d.outerDst, be)
					}
					if !bytes.Equal(d.inner, in[14:]) {
						t.Fatal("inner packet changed")
					}
					sent++
				}
			}
		}
	}
	c := r.counters()
	if c.QUIC[pipeline.QUICByCID] != uint64(sent) || c.QUIC[pipeline.QUICByDCIDHash]+c.QUIC[pipeline.QUICByTuple] != 0 {
		t.Errorf("QUIC counters %v, want all %d by CID", c.QUIC, sent)
	}
	if c.Flows.Inserts != 0 || c.FlowHits != 0 {
		t.Errorf("QUIC service made %d flow entries, %d hits; want none", c.Flows.Inserts, c.FlowHits)
	}
}

// A client's Initial, with a DCID it chose, goes to the Maglev owner of the
// DCID's hash: the same server for every packet of the handshake whatever
// the client's port, and handshakes spread over the backends.
func TestQUICInitialByDCIDHash(t *testing.T) {
	codec := mustCodec(t, quicCfg)
	bes := backends4(4)
	r := newRig(t, 1024)
	g := r.apply(pipeline.Spec{Seed: 9, Services: []pipeline.ServiceSpec{quicService(codec, bes)}})
	rng := rand.New(rand.NewPCG(3, 4))
	used := map[netip.Addr]int{}
	for i := range 300 {
		// quic-go's Initial DCIDs: 8 to 20 random octets; a few happen to
		// carry our rotation codepoint and decode to a server ID no
		// backend has (or, 9 octets long, to one it has: still a pure
		// function of the DCID).
		dcid := make([]byte, 8+i%13)
		for j := range dcid {
			dcid[j] = byte(rng.Uint32())
		}
		want := dcidOwner(g, dcid)
		if len(dcid) == codec.CIDLen() {
			if sid, err := codec.DecodeServerID(dcid); err == nil && sid.Len() == 2 {
				if v, _ := sid.Uint64(); v >= 0x0a00 && v < 0x0a04 {
					want = bes[v-0x0a00]
				}
			}
		}
		for range 3 {
			d := decode(t, r.send(udpFrame(randomSrc(rng), quicVIP, longHeader(dcid)))[0])
			if d.outerDst != want {
				t.Fatalf("Initial to DCID %x went to %v, want %v", dcid, d.outerDst, want)
			}
		}
		used[want]++
	}
	if len(used) != len(bes) {
		t.Errorf("300 handshakes reached %d of %d backends: %v", len(used), len(bes), used)
	}
	if c := r.counters(); c.QUIC[pipeline.QUICByDCIDHash] < 800 || c.Flows.Inserts != 0 {
		t.Errorf("QUIC counters %v, %d flow entries", c.QUIC, c.Flows.Inserts)
	}
}

// Short headers whose DCID is not ours, and datagrams too short for a QUIC
// header, follow the 4-tuple; a DCID naming a server ID no backend has
// takes the fallback of its header form and is counted.
func TestQUICFallbacks(t *testing.T) {
	codec := mustCodec(t, quicCfg)
	bes := backends4(3)
	r := newRig(t, 1024)
	g := r.apply(pipeline.Spec{Seed: 5, Services: []pipeline.ServiceSpec{quicService(codec, bes)}})
	rng := rand.New(rand.NewPCG(5, 6))
	stranger := cidFor(t, codec, serverID(7), rng) // decodes, no such backend
	unroutable := []byte{0xe0, 1, 2, 3, 4, 5, 6, 7, 8}
	otherRotation := append([]byte{0x00}, stranger[1:]...)
	for _, tc := range []struct {
		name    string
		payload []byte
		route   pipeline.QUICRoute
		unknown bool
	}{
		{"short unroutable", shortHeader(unroutable), pipeline.QUICByTuple, false},
		{"short other rotation", shortHeader(otherRotation), pipeline.QUICByTuple, false},
		{"short unknown server", shortHeader(stranger), pipeline.QUICByTuple, true},
		{"short truncated", shortHeader(stranger)[:5], pipeline.QUICByTuple, false},
		{"empty datagram", nil, pipeline.QUICByTuple, false},
		{"long truncated", longHeader(stranger)[:8], pipeline.QUICByTuple, false},
		{"long unknown server", longHeader(stranger), pipeline.QUICByDCIDHash, true},
		{"long unroutable", longHeader(unroutable), pipeline.QUICByDCIDHash, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := r.counters()
			for range 50 {
				src := randomSrc(rng)
				want := tupleOwner(g, src, quicVIP)
				if tc.route == pipeline.QUICByDCIDHash {
					dcid, _, _ := packetDCID(tc.payload)
					want = dcidOwner(g, dcid)
				}
				if got := backendOf(t, r.send(udpFrame(src, quicVIP, tc.payload))[0]); got != want {
					t.Fatalf("from %v: went to %v, want %v", src, got, want)
				}
			}
			c := r.counters()
			if n := c.QUIC[tc.route] - before.QUIC[tc.route]; n != 50 {
				t.Errorf("%d of 50 counted as %v", n, tc.route)
			}
			unknown := c.QUICUnknownServer - before.QUICUnknownServer
			if tc.unknown && unknown != 50 || !tc.unknown && unknown != 0 {
				t.Errorf("%d counted with an unknown server ID", unknown)
			}
		})
	}
}

// packetDCID is a long header's DCID.
func packetDCID(b []byte) ([]byte, bool, bool) {
	if len(b) < 6 || len(b) < 6+int(b[5]) {
		return nil, true, false
	}
	return b[6 : 6+int(b[5])], true, true
}

// Connection IDs keep routing to a draining backend (weight 0: no new
// handshakes) and to a backend whose Maglev slots all moved; once a backend
// leaves the service its CIDs fall back to the 4-tuple.
func TestQUICDrainAndRemove(t *testing.T) {
	codec := mustCodec(t, quicCfg)
	bes := backends4(3)
	r := newRig(t, 1024)
	spec := pipeline.Spec{Seed: 1, Services: []pipeline.ServiceSpec{quicService(codec, bes)}}
	spec.Services[0].Backends[2].Weight = 0
	g := r.apply(spec)
	rng := rand.New(rand.NewPCG(7, 8))
	cid := cidFor(t, codec, serverID(2), rng)
	for range 20 {
		if got := backendOf(t, r.send(udpFrame(randomSrc(rng), quicVIP, shortHeader(cid)))[0]); got != bes[2] {
			t.Fatalf("draining backend's CID went to %v", got)
		}
	}
	for i := range 200 {
		dcid := []byte{0xe0, byte(i), byte(i >> 8), 3, 4, 5, 6, 7}
		if got := backendOf(t, r.send(udpFrame(randomSrc(rng), quicVIP, longHeader(dcid)))[0]); got == bes[2] {
			t.Fatalf("a new handshake reached the draining backend")
		}
	}
	// Remove it: its CIDs are anybody's now (the 4-tuple decides).
	spec.Services[0].Backends = spec.Services[0].Backends[:2]
	g = r.apply(spec)
	for range 20 {
		src := randomSrc(rng)
		if got, want := backendOf(t, r.send(udpFrame(src, quicVIP, shortHeader(cid)))[0]), tupleOwner(g, src, quicVIP); got != want {
			t.Fatalf("removed backend's CID went to %v, want the 4-tuple owner %v", got, want)
		}
	}
	if c := r.counters(); c.QUICUnknownServer != 20 {
		t.Errorf("%d unknown server IDs counted, want 20", c.QUICUnknownServer)
	}
}

// Two LB nodes given the same configuration route every QUIC packet alike,
// whatever arrived at them before.
func TestQUICNodesAgree(t *testing.T) {
	codec := mustCodec(t, quicCfg)
	bes := backends4(4)
	spec := pipeline.Spec{Seed: 11, Services: []pipeline.ServiceSpec{quicService(codec, bes)}}
	a, b := newRig(t, 1024), newRig(t, 1024)
	a.apply(spec)
	b.apply(spec)
	rng := rand.New(rand.NewPCG(9, 10))
	var frames [][]byte
	for i := range 300 {
		var payload []byte
		switch i % 3 {
		case 0:
			payload = shortHeader(cidFor(t, codec, serverID(i%4), rng))
		case 1:
			payload = longHeader([]byte{byte(rng.Uint32()), byte(i), 2, 3, 4, 5, 6, byte(i >> 8)})
		default:
			payload = shortHeader([]byte{0xff, byte(i), 2, 3, 4, 5, 6, 7, 8})
		}
		frames = append(frames, udpFrame(randomSrc(rng), quicVIP, payload))
	}
	for i := range frames { // b has seen them all before, in reverse
		b.send(frames[len(frames)-1-i])
	}
	for i, f := range frames {
		if ga, gb := backendOf(t, a.send(f)[0]), backendOf(t, b.send(f)[0]); ga != gb {
			t.Fatalf("frame %d: node a sent it to %v, node b to %v", i, ga, gb)
		}
	}
}

// The builder refuses a QUIC service that is not UDP, and backends without
// a server ID of the configured length or sharing one.
func TestQUICSpecErrors(t *testing.T) {
	codec := mustCodec(t, quicCfg)
	for _, tc := range []struct {
		name string
		edit func(*pipeline.ServiceSpec)
	}{
		{"tcp", func(s *pipeline.ServiceSpec) { s.Proto = 6 }},
		{"missing server ID", func(s *pipeline.ServiceSpec) { s.Backends[1].ServerID = quiclb.ServerID{} }},
		{"long server ID", func(s *pipeline.ServiceSpec) { s.Backends[1].ServerID, _ = quiclb.ServerIDFromUint64(1, 3) }},
		{"shared server ID", func(s *pipeline.ServiceSpec) { s.Backends[2].ServerID = s.Backends[0].ServerID }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := quicService(codec, backends4(3))
			tc.edit(&s)
			if _, err := pipeline.NewBuilder().Build(pipeline.Spec{Services: []pipeline.ServiceSpec{s}}); err == nil {
				t.Fatal("accepted")
			} else {
				t.Log(err)
			}
		})
	}
}

// quicRig is one worker over an in-memory link fed by src, forwarding
// spec's services.
func quicRig(tb testing.TB, capacity int, src mem.Source, spec pipeline.Spec) *datapath.Worker {
	tb.Helper()
	l := mem.New(mem.Config{Source: src, BatchSize: 64})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{l}, FlowCapacity: capacity})
	if err != nil {
		tb.Fatal(err)
	}
	g, err := pipeline.NewBuilder().Build(spec)
	if err != nil {
		tb.Fatal(err)
	}
	dp.Apply(g)
	return dp.Workers()[0]
}

// quicSource stamps UDP frames (64-byte payload) to vip from clients4's
// first len(payloads) flows in turn, flow i carrying payloads[i].
func quicSource(vip netip.AddrPort, payloads [][]byte) mem.Source {
	p := sim.NewPatcher(sim.Frame{Dst: vip, Proto: 17, Payload: 64}, clients4)
	off := p.Len() - 64
	var next uint32
	return func(buf []byte) int {
		i := next % uint32(len(payloads))
		next++
		n := p.Write(buf, i, 0)
		copy(buf[off:n], payloads[i])
		return n
	}
}

func TestZeroAllocsQUIC(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop buffers")
	}
	codec := mustCodec(t, quicCfg)
	rng := rand.New(rand.NewPCG(1, 1))
	var payloads [][]byte
	for i := range 256 {
		switch i % 4 {
		case 0, 1:
			payloads = append(payloads, shortHeader(cidFor(t, codec, serverID(i%3), rng)))
		case 2:
			payloads = append(payloads, longHeader([]byte{0xe1, byte(i), 2, 3, 4, 5, 6, 7}))
		default:
			payloads = append(payloads, shortHeader([]byte{0xff, byte(i), 2, 3, 4, 5, 6, 7, 8}))
		}
	}
	w := quicRig(t, 4096, quicSource(quicVIP, payloads), pipeline.Spec{Seed: 1, Services: []pipeline.ServiceSpec{quicService(codec, backends4(3))}})
	for range 8 {
		w.Poll()
	}
	if n := testing.AllocsPerRun(200, func() { w.Poll() }); n != 0 {
		t.Fatalf("Poll allocates %.1f times per batch", n)
	}
	c := w.Snapshot()
	if c.TxPackets != c.RxPackets || c.QUIC[pipeline.QUICByCID] == 0 || c.QUIC[pipeline.QUICByDCIDHash] == 0 || c.QUIC[pipeline.QUICByTuple] == 0 {
		t.Fatalf("rx %d tx %d, QUIC routes %v: want every packet sent, by every route", c.RxPackets, c.TxPackets, c.QUIC)
	}
}

// IPv6 QUIC VIPs route the same way: the UDP payload is found past the
// IPv6 header.
func TestQUICIPv6(t *testing.T) {
	codec := mustCodec(t, quicCfg)
	vip := netip.MustParseAddrPort("[2001:db8::10]:443")
	var bes []netip.Addr
	for i := range 3 {
		bes = append(bes, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: byte(0x11 + i)}))
	}
	s := service(vip, bes, nil)
	s.Proto, s.QUIC = 17, codec
	for i := range s.Backends {
		s.Backends[i].ServerID = serverID(i)
	}
	r := newRig(t, 1024)
	r.apply(pipeline.Spec{Seed: 2, Services: []pipeline.ServiceSpec{s}})
	rng := rand.New(rand.NewPCG(11, 12))
	for i := range 60 {
		cid := cidFor(t, codec, serverID(i%3), rng)
		src := clients6.FlowSrc(rng.Uint32() % (1 << 20))
		if got := backendOf(t, r.send(udpFrame(src, vip, shortHeader(cid)))[0]); got != bes[i%3] {
			t.Fatalf("CID of server %v went to %v, want %v", serverID(i%3), got, bes[i%3])
		}
	}
	if c := r.counters(); c.QUIC[pipeline.QUICByCID] != 60 {
		t.Fatalf("QUIC counters %v", c.QUIC)
	}
}
