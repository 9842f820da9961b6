package control

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/quiclb"
	"github.com/sluicelb/sluice/internal/sim"
)

// propService is one service of the property test.
type propService struct {
	name  string
	vip   netip.AddrPort
	proto uint8
	codec *quiclb.Codec
}

// propSpec is the property test's configuration in one of its variants:
// variant 1 removes a backend of the on-change and stateless services
// (their flows are rescheduled) and adds one to the QUIC services. The
// second-chance service is always mid-change: backend .4 is filling.
func propSpec(svcs []propService, variant int) pipeline.Spec {
	spec := pipeline.Spec{Seed: 7}
	be := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}) }
	for _, ps := range svcs {
		s := pipeline.ServiceSpec{Name: ps.name, Addr: ps.vip.Addr(), Proto: ps.proto, Port: ps.vip.Port(), M: 251, QUIC: ps.codec}
		n := 4
		switch ps.name {
		case "stateless":
			s.Stateless = true
		case "second-chance":
			s.SecondChance = true
			n = 5
		}
		for i := 1; i <= n; i++ {
			if variant == 1 && i == 2 && (ps.name == "on-change" || ps.name == "stateless") {
				continue
			}
			b := pipeline.BackendSpec{Weight: 1, Tunnel: encap.Tunnel{Mode: encap.GUE, Src: netip.MustParseAddr("198.18.0.2"),
				Dst: be(i), Port: 6080, SrcMAC: lkMAC2, DstMAC: lkMAC1}}
			if ps.name == "second-chance" && i == 5 {
				b.State = pipeline.BackendFilling
			}
			if ps.codec != nil {
				b.ServerID, _ = quiclb.ServerIDFromUint64(uint64(0x0a00+i), 2)
			}
			s.Backends = append(s.Backends, b)
		}
		if ps.codec != nil && variant == 1 {
			b := s.Backends[0]
			b.Tunnel.Dst = be(9)
			b.ServerID, _ = quiclb.ServerIDFromUint64(0x0a09, 2)
			s.Backends = append(s.Backends, b)
		}
		spec.Services = append(spec.Services, s)
	}
	return spec
}

// The datapath and flow lookup make one decision: random flows of every
// kind of service (on-change, stateless, second chance mid-change, QUIC in
// plaintext and encrypted mode), with SYNs, mid-flow packets, QUIC long
// and short headers with routable, unknown and random connection IDs, and
// configuration changes in between, are looked up and then sent through a
// real datapath; the backend and hop list the packet leaves with must be
// the ones the lookup named.
func TestLookupFlowAgreesWithDatapath(t *testing.T) {
	plain, err := quiclb.New(quiclb.Config{Rotation: 0, ServerIDLen: 2, NonceLen: 6})
	if err != nil {
		t.Fatal(err)
	}
	encrypted, err := quiclb.New(quiclb.Config{Rotation: 1, ServerIDLen: 2, NonceLen: 6, Key: []byte("sluice-quiclb-k!")})
	if err != nil {
		t.Fatal(err)
	}
	svcs := []propService{
		{name: "on-change", vip: netip.MustParseAddrPort("198.18.0.10:80"), proto: packet.ProtoTCP},
		{name: "stateless", vip: netip.MustParseAddrPort("198.18.0.11:80"), proto: packet.ProtoTCP},
		{name: "second-chance", vip: netip.MustParseAddrPort("198.18.0.12:80"), proto: packet.ProtoTCP},
		{name: "quic-plain", vip: netip.MustParseAddrPort("198.18.0.13:443"), proto: packet.ProtoUDP, codec: plain},
		{name: "quic-encrypted", vip: netip.MustParseAddrPort("198.18.0.14:443"), proto: packet.ProtoUDP, codec: encrypted},
	}

	type out struct {
		dst  netip.Addr
		hops []netip.Addr
	}
	var mu sync.Mutex
	var sent []out
	ml := mem.New(mem.Config{Poll: time.Millisecond, Sink: func(f []byte) {
		var p packet.Parsed
		p.Decode(f)
		o := out{dst: netip.AddrFrom16(p.Tuple.Dst).Unmap()}
		var h encap.GUEHeader
		if _, err := encap.DecodeGUE(f[p.PayloadOff:p.L3End], &h); err == nil && h.HasHops {
			for i := range int(h.Hops.N) {
				o.hops = append(o.hops, h.Hops.Addr(i))
			}
		}
		mu.Lock()
		sent = append(sent, o)
		mu.Unlock()
	}})
	dp, err := datapath.New(datapath.Config{Links: []link.Link{ml}, FlowCapacity: 4096})
	if err != nil {
		t.Fatal(err)
	}
	b := pipeline.NewBuilder()
	apply := func(variant int) {
		g, err := b.Build(propSpec(svcs, variant))
		if err != nil {
			t.Fatal(err)
		}
		dp.Apply(g)
	}
	apply(0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dp.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	s := New(newDPNode(dp))

	rng := rand.New(rand.NewPCG(12, 1))
	clients := sim.Clients{Prefix: netip.MustParsePrefix("198.18.128.0/17")}
	var whys [pipeline.NumWhys]int
	steps := 1500
	if testing.Short() {
		steps = 400
	}
	variant := 0
	for step := range steps {
		if rng.IntN(100) < 3 {
			variant = 1 - variant
			apply(variant)
		}
		ps := svcs[rng.IntN(len(svcs))]
		src := clients.FlowSrc(uint32(rng.IntN(24))) // few flows: they come back
		q := FlowQuery{VIP: ps.name, Src: src}
		var frame []byte
		if ps.codec == nil {
			flags := uint8(sim.ACK)
			if rng.IntN(3) == 0 {
				flags, q.SYN = sim.SYN, true
			}
			f := sim.Frame{SrcMAC: lkMAC1, DstMAC: lkMAC2, Src: src, Dst: ps.vip, Proto: packet.ProtoTCP, TCPFlags: flags, Payload: 20}
			frame = make([]byte, f.Len())
			f.Encode(frame)
		} else {
			q.Payload = quicPayload(t, ps.codec, rng)
			f := sim.Frame{SrcMAC: lkMAC1, DstMAC: lkMAC2, Src: src, Dst: ps.vip, Proto: packet.ProtoUDP, Payload: len(q.Payload)}
			frame = make([]byte, f.Len())
			f.Encode(frame)
			copy(frame[len(frame)-len(q.Payload):], q.Payload)
		}
		l, err := s.LookupFlow(q)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		n := len(sent)
		mu.Unlock()
		ml.Inject(frame)
		var got out
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Microsecond) {
			mu.Lock()
			if len(sent) > n {
				got = sent[n]
			}
			mu.Unlock()
			if got.dst.IsValid() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("step %d: %s %v: nothing sent; lookup said %s (%s)", step, ps.name, src, l.Backend, l.Reason)
			}
		}
		var want []netip.Addr
		if l.Secondary != "" {
			want = []netip.Addr{netip.MustParseAddr(l.Backend), netip.MustParseAddr(l.Secondary)}
		}
		if got.dst.String() != l.Backend || fmt.Sprint(got.hops) != fmt.Sprint(want) {
			t.Fatalf("step %d: %s %v syn %v payload %x: datapath sent to %v hops %v; lookup said %s hops %v (%s: %s)",
				step, ps.name, src, q.SYN, q.Payload, got.dst, got.hops, l.Backend, want, l.Reason, l.Detail)
		}
		for w := range pipeline.NumWhys {
			if w.String() == l.Reason {
				whys[w]++
			}
		}
	}
	// Every rule was met.
	for w := pipeline.Why(1); w < pipeline.NumWhys; w++ {
		if whys[w] == 0 {
			t.Errorf("no packet decided by %s (%v)", w, whys)
		}
	}
	t.Logf("decisions by rule: %v", whys)
}

// quicPayload is a random QUIC packet's start for codec: a short or long
// header whose DCID carries a backend's server ID, an unknown server ID, or
// random octets; or no QUIC header at all.
func quicPayload(t *testing.T, codec *quiclb.Codec, rng *rand.Rand) []byte {
	cid := func(sid uint64) []byte {
		s, _ := quiclb.ServerIDFromUint64(sid, 2)
		nonce := make([]byte, codec.NonceLen())
		for i := range nonce {
			nonce[i] = byte(rng.Uint32())
		}
		c, err := codec.Encode(nil, s.Bytes(), nonce)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var dcid []byte
	switch rng.IntN(3) {
	case 0:
		dcid = cid(uint64(0x0a01 + rng.IntN(5))) // .5 has none (variant 0)
	case 1:
		dcid = cid(0x0bff) // nobody's
	default:
		dcid = make([]byte, 8+rng.IntN(13))
		for i := range dcid {
			dcid[i] = byte(rng.Uint32())
		}
	}
	switch rng.IntN(5) {
	case 0, 1:
		return append(append([]byte{0x43}, dcid...), bytes.Repeat([]byte{0xaa}, 20)...)
	case 2, 3:
		b := append([]byte{0xc3, 0, 0, 0, 1, byte(len(dcid))}, dcid...)
		return append(append(b, 8, 1, 2, 3, 4, 5, 6, 7, 8), bytes.Repeat([]byte{0xbb}, 20)...)
	}
	return []byte{0x40}
}
