package agent

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/encap"
)

// FuzzInspect feeds arbitrary GUE payloads to the agent's validation: it
// never panics, and whatever it accepts is an IP packet of the version the
// GUE header announced, lying within the payload, whose length field matches
// and whose destination is a configured VIP — the agent is never a relay to
// any other address.
func FuzzInspect(f *testing.F) {
	vip4, vip6 := netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("2001:db8::10")
	set := newVIPSet([]netip.Addr{vip4, vip6})
	for _, p := range seedPayloads(f, vip4, vip6) {
		f.Add(p)
	}
	f.Add([]byte{})
	f.Add([]byte{0x00, 0x04, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, payload []byte) {
		var h encap.GUEHeader
		inner, _, ok := set.inspect(payload, &h)
		if !ok {
			return
		}
		if len(inner) == 0 || len(inner) > len(payload) {
			t.Fatalf("inner of %d bytes from a %d-byte payload", len(inner), len(payload))
		}
		switch inner[0] >> 4 {
		case 4:
			if h.Proto != protoIPv4 || len(inner) < 20 || int(binary.BigEndian.Uint16(inner[2:])) != len(inner) {
				t.Fatalf("accepted IPv4 packet: proto %d, % x", h.Proto, inner[:min(len(inner), 20)])
			}
			if d, _ := netip.AddrFromSlice(inner[16:20]); d != vip4 {
				t.Fatalf("accepted IPv4 packet to %v", d)
			}
		case 6:
			if h.Proto != protoIPv6 || len(inner) < 40 || int(binary.BigEndian.Uint16(inner[4:]))+40 != len(inner) {
				t.Fatalf("accepted IPv6 packet: proto %d, % x", h.Proto, inner[:min(len(inner), 40)])
			}
			if d, _ := netip.AddrFromSlice(inner[24:40]); d != vip6 {
				t.Fatalf("accepted IPv6 packet to %v", d)
			}
		default:
			t.Fatalf("accepted a packet of IP version %d", inner[0]>>4)
		}
	})
}

// seedPayloads are GUE payloads the real encoder produces: IPv4 and IPv6,
// with and without a hop list.
func seedPayloads(tb testing.TB, vip4, vip6 netip.Addr) [][]byte {
	var out [][]byte
	for _, c := range []struct {
		src, dst, cl netip.Addr
		vip          netip.Addr
		hops         bool
	}{
		{netip.MustParseAddr("198.18.30.11"), netip.MustParseAddr("198.18.30.101"), netip.MustParseAddr("198.18.10.2"), vip4, false},
		{netip.MustParseAddr("198.18.30.11"), netip.MustParseAddr("198.18.30.101"), netip.MustParseAddr("198.18.10.2"), vip4, true},
		{netip.MustParseAddr("2001:db8:30::11"), netip.MustParseAddr("2001:db8:30::101"), netip.MustParseAddr("2001:db8:10::2"), vip6, false},
	} {
		t1, err := encap.Compile(encap.Tunnel{Mode: encap.GUE, Src: c.src, Dst: c.dst})
		if err != nil {
			tb.Fatal(err)
		}
		var sec *encap.Template
		if c.hops {
			if sec, err = encap.Compile(encap.Tunnel{Mode: encap.GUE, Src: c.src, Dst: netip.MustParseAddr("198.18.30.102")}); err != nil {
				tb.Fatal(err)
			}
		}
		udp := make([]byte, 8)
		binary.BigEndian.PutUint16(udp[4:], 8)
		inner := ipPacket(c.cl, c.vip, 17, udp)
		buf := make([]byte, 256+len(inner))
		copy(buf[256:], inner)
		ver := uint8(4)
		if c.vip.Is6() {
			ver = 6
		}
		start := t1.Encap(buf, 256, len(buf), ver, 12345, sec)
		if start < 0 {
			tb.Fatal("encap failed")
		}
		// The GUE payload starts after Ethernet, outer IP and UDP.
		ipLen := 20
		if c.dst.Is6() {
			ipLen = 40
		}
		out = append(out, append([]byte(nil), buf[start+14+ipLen+8:]...))
	}
	return out
}

// FuzzSecondChance feeds arbitrary GUE payloads to an agent that owns no
// flow: whatever it forwards is the datagram it received with the next-hop
// index incremented by one and nothing else changed, sent to the hop that
// index named, and still a valid GUE packet to a VIP.
func FuzzSecondChance(f *testing.F) {
	ack := tcpPacket(client4, netip.AddrPortFrom(vip4, 80), tcpACK)
	f.Add(hops(ack, 1, self, peer))
	f.Add(hops(udpPacket(client6, netip.AddrPortFrom(vip6, 53)), 1, netip.MustParseAddr("2001:db8:2::2"), netip.MustParseAddr("2001:db8:4::2")))
	f.Add(hops(ack, 2, peer, peer2, peer, self))
	f.Add(hops(icmpError(peer2, vip4, 3, tcpPacket(netip.AddrPortFrom(vip4, 80), client4, tcpACK)), 1, self, peer))
	h := newHarness(f, Config{UDPPolicy: UDPSecondChance})
	f.Fuzz(func(t *testing.T, payload []byte) {
		orig := append([]byte(nil), payload...)
		var gh encap.GUEHeader
		if _, _, ok := testSet.inspect(orig, &gh); !ok {
			return
		}
		h.sent = h.sent[:0]
		h.advance(time.Second) // no cached answers
		b := h.handle(payload)
		if b.SecondHop.Forwarded == 0 {
			if !bytes.Equal(payload, orig) {
				t.Fatal("a datagram not forwarded was modified")
			}
			return
		}
		if len(h.sent) != 1 {
			t.Fatalf("%d datagrams sent", len(h.sent))
		}
		s := h.sent[0]
		want := append([]byte(nil), orig...)
		want[encap.HopNextOffset]++
		if !bytes.Equal(s.b, want) {
			t.Fatalf("forwarded\n% x\nwant\n% x", s.b, want)
		}
		if s.to != netip.AddrPortFrom(gh.Hops.Addr(int(gh.Hops.Next)), 6080) || gh.Hops.Next >= gh.Hops.N {
			t.Fatalf("forwarded to %v, hop list %+v", s.to, gh.Hops)
		}
		var g2 encap.GUEHeader
		if _, r, ok := testSet.inspect(s.b, &g2); !ok {
			t.Fatalf("forwarded datagram invalid: %v", r)
		}
	})
}
