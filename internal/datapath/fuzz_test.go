package datapath_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

// FuzzWorker feeds arbitrary frames through a worker: it must never panic,
// and every frame must be accounted for exactly once (sent, passed or
// dropped), with every sent frame carrying a valid GUE header toward a
// configured backend.
func FuzzWorker(f *testing.F) {
	src := clients4.FlowSrc(3)
	f.Add(tcpFrame(src, vip4, sim.SYN))
	f.Add(tcpFrame(src, vip4, sim.ACK))
	f.Add(tcpFrame(clients6.FlowSrc(3), vip6, sim.ACK))
	f.Add(icmpFragNeeded(netip.MustParseAddr("198.18.0.1"), vip4.Addr(), tcpFrame(vip4, src, sim.ACK)[14:]))
	f.Add([]byte{})
	bes := backends4(3)
	v6 := []netip.Addr{netip.MustParseAddr("2001:db8:1::11"), netip.MustParseAddr("2001:db8:1::12")}
	r := newRig(f, 256)
	// And a QUIC service (UDP 443 on the IPv4 VIP), routed by connection ID.
	codec := mustCodec(f, quicCfg)
	f.Add(udpFrame(src, quicVIP, shortHeader(cidFor(f, codec, serverID(1), rand.New(rand.NewPCG(1, 1))))))
	f.Add(udpFrame(src, quicVIP, longHeader([]byte{0xe0, 1, 2, 3, 4, 5, 6, 7})))
	f.Add(udpFrame(src, quicVIP, []byte{0x80, 0, 0, 0, 1, 200}))
	r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{service(vip4, bes, nil), service(vip6, v6, nil), quicService(codec, bes)}})
	valid := map[netip.Addr]bool{}
	for _, b := range append(bes, v6...) {
		valid[b] = true
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		r.t = t
		out := r.sendAccounted(t, frame)
		for _, o := range out {
			d := decode(t, o)
			if !valid[d.outerDst] || d.udpDst != 6080 {
				t.Fatalf("sent to %v port %d", d.outerDst, d.udpDst)
			}
		}
	})
}
