package agent

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/packet"
)

// gueOf wraps an inner packet in a GUE header of the right Proto, with
// the hop list private data hops (nil: none).
func gueOf(inner, hops []byte) []byte {
	proto := uint8(protoIPv4)
	if len(inner) > 0 && inner[0]>>4 == 6 {
		proto = protoIPv6
	}
	return gue(proto, hops, inner)
}

// tcpPacket builds a TCP segment from src to dst with the given flags.
func tcpPacket(src, dst netip.AddrPort, flags uint8) []byte {
	return ipPacket(src.Addr(), dst.Addr(), packet.ProtoTCP, tcpSeg(src.Port(), dst.Port(), 1, flags))
}

// udpPacket builds a UDP datagram (zero checksum) from src to dst.
func udpPacket(src, dst netip.AddrPort) []byte {
	u := make([]byte, 12)
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	return ipPacket(src.Addr(), dst.Addr(), packet.ProtoUDP, u)
}

// icmpError builds an ICMP error (type typ) from router to the client
// quoting quote, a packet the VIP sent, cut to its IP header + 8 bytes.
func icmpError(router netip.Addr, to netip.Addr, typ uint8, quote []byte) []byte {
	hl := 40
	proto := uint8(packet.ProtoICMPv6)
	if quote[0]>>4 == 4 {
		hl = int(quote[0]&0xf) * 4
		proto = packet.ProtoICMP
	}
	b := append([]byte{typ, 0, 0, 0, 0, 0, 0x05, 0xdc}, quote[:hl+8]...)
	return ipPacket(router, to, proto, b)
}

func TestParseFlow(t *testing.T) {
	vp4, vp6 := netip.AddrPortFrom(vip4, 80), netip.AddrPortFrom(vip6, 443)
	router4, router6 := netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("2001:db8:1::1")
	frag := func(p []byte, v uint16) []byte {
		p = append([]byte(nil), p...)
		binary.BigEndian.PutUint16(p[6:], v)
		binary.BigEndian.PutUint16(p[10:], 0)
		return p // checksum not fixed: parseFlow does not check it
	}
	tcpKey4 := keyOf(packet.ProtoTCP, client4, vp4)
	tcpKey6 := keyOf(packet.ProtoTCP, client6, vp6)
	udpKey4 := keyOf(packet.ProtoUDP, client4, vp4)
	udpKey6 := keyOf(packet.ProtoUDP, client6, vp6)
	ext6 := tcpPacket(client6, vp6, tcpACK)
	ext6[6] = packet.ProtoDestOpts
	fromOther := tcpPacket(netip.MustParseAddrPort("198.18.0.99:80"), client4, tcpACK)

	for _, tc := range []struct {
		name  string
		pkt   []byte
		class flowClass
		key   flowKey
		flags uint8
		icmp  bool
	}{
		{"v4 SYN", tcpPacket(client4, vp4, tcpSYN), classTCPSYN, tcpKey4, tcpSYN, false},
		{"v4 SYN-ACK", tcpPacket(client4, vp4, tcpSYN|tcpACK), classTCP, tcpKey4, tcpSYN | tcpACK, false},
		{"v4 ACK", tcpPacket(client4, vp4, tcpACK), classTCP, tcpKey4, tcpACK, false},
		{"v6 FIN", tcpPacket(client6, vp6, tcpFIN|tcpACK), classTCP, tcpKey6, tcpFIN | tcpACK, false},
		{"v6 SYN", tcpPacket(client6, vp6, tcpSYN), classTCPSYN, tcpKey6, tcpSYN, false},
		{"v4 UDP", udpPacket(client4, vp4), classUDP, udpKey4, 0, false},
		{"v6 UDP", udpPacket(client6, vp6), classUDP, udpKey6, 0, false},
		{"v4 first fragment", frag(tcpPacket(client4, vp4, tcpACK), 0x2000), classOther, flowKey{}, 0, false},
		{"v4 later fragment", frag(tcpPacket(client4, vp4, tcpACK), 0x0010), classOther, flowKey{}, 0, false},
		{"v4 DF is fine", frag(tcpPacket(client4, vp4, tcpACK), 0x4000), classTCP, tcpKey4, tcpACK, false},
		{"v6 extension header", ext6, classOther, flowKey{}, 0, false},
		{"v4 TCP cut short", ipPacket(client4.Addr(), vip4, packet.ProtoTCP, make([]byte, 19)), classOther, flowKey{}, 0, false},
		{"v4 UDP cut short", ipPacket(client4.Addr(), vip4, packet.ProtoUDP, make([]byte, 7)), classOther, flowKey{}, 0, false},
		{"v4 GRE", ipPacket(client4.Addr(), vip4, 47, make([]byte, 8)), classOther, flowKey{}, 0, false},
		{"v4 frag needed, TCP", icmpError(router4, vip4, 3, tcpPacket(vp4, client4, tcpACK)), classTCP, tcpKey4, 0, true},
		{"v4 time exceeded, UDP", icmpError(router4, vip4, 11, udpPacket(vp4, client4)), classUDP, udpKey4, 0, true},
		{"v6 packet too big, TCP", icmpError(router6, vip6, 2, tcpPacket(vp6, client6, tcpACK)), classTCP, tcpKey6, 0, true},
		{"v6 unreachable, UDP", icmpError(router6, vip6, 1, udpPacket(vp6, client6)), classUDP, udpKey6, 0, true},
		{"v4 error quoting another source", icmpError(router4, vip4, 3, fromOther), classOther, flowKey{}, 0, false},
		{"v4 echo request", ipPacket(client4.Addr(), vip4, packet.ProtoICMP, []byte{8, 0, 0, 0, 0, 1, 0, 1}), classOther, flowKey{}, 0, false},
		{"v4 error quote cut short", ipPacket(router4, vip4, packet.ProtoICMP, append([]byte{3, 4, 0, 0, 0, 0, 5, 0}, tcpPacket(vp4, client4, tcpACK)[:27]...)), classOther, flowKey{}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f flowInfo
			if _, r, ok := testSet.inspect(gueOf(tc.pkt, nil), new(encap.GUEHeader)); !ok && r != InnerBadChecksum {
				t.Fatalf("test packet rejected: %v", r)
			}
			parseFlow(tc.pkt, &f)
			if f.class != tc.class {
				t.Fatalf("class = %d, want %d", f.class, tc.class)
			}
			if tc.class == classOther {
				return
			}
			if f.key != tc.key || f.flags != tc.flags || f.icmp != tc.icmp {
				t.Errorf("got %+v\nwant key %+v flags %#x icmp %v", f, tc.key, tc.flags, tc.icmp)
			}
		})
	}
}

// FuzzParseFlow: parseFlow never panics on an inner packet inspect accepts.
func FuzzParseFlow(f *testing.F) {
	f.Add(tcpPacket(client4, netip.AddrPortFrom(vip4, 80), tcpSYN))
	f.Add(icmpError(netip.MustParseAddr("2001:db8:1::1"), vip6, 2, tcpPacket(netip.AddrPortFrom(vip6, 443), client6, tcpACK)))
	f.Add(icmpError(netip.MustParseAddr("198.18.1.1"), vip4, 3, udpPacket(netip.AddrPortFrom(vip4, 53), client4)))
	f.Fuzz(func(t *testing.T, inner []byte) {
		if len(inner) == 0 {
			return
		}
		var h encap.GUEHeader
		in, _, ok := testSet.inspect(gueOf(inner, nil), &h)
		if !ok {
			return
		}
		var fi flowInfo
		parseFlow(in, &fi)
	})
}

func TestFlowTableModel(t *testing.T) {
	const max = 200
	tbl := newFlowTable(max)
	model := map[flowKey]flowSlot{}
	r := rand.New(rand.NewPCG(1, 2))
	keys := make([]flowKey, 600)
	for i := range keys {
		keys[i] = keyOf(packet.ProtoTCP, netip.AddrPortFrom(client4.Addr(), uint16(r.IntN(500))),
			netip.AddrPortFrom(vip4, uint16(80+r.IntN(2))))
	}
	now := int64(1)
	for step := range 200000 {
		now += int64(r.IntN(3))
		k := &keys[r.IntN(len(keys))]
		switch op := r.IntN(10); {
		case op < 5:
			val := r.IntN(2) == 0
			ok := tbl.put(k, now, val)
			_, had := model[*k]
			if want := had || len(model) < max; ok != want {
				t.Fatalf("step %d: put = %v, want %v (len %d)", step, ok, want, len(model))
			}
			if ok {
				model[*k] = flowSlot{t: now, val: val}
			}
		case op < 7:
			tbl.remove(k)
			delete(model, *k)
		default:
			tbl.sweep(now, 300, 100, 1+r.IntN(40))
			// The model drops what sweep dropped, which must have expired.
			for mk, e := range model {
				if tbl.find(&mk) < 0 {
					ttl := int64(100)
					if e.val {
						ttl = 300
					}
					if now-e.t < ttl {
						t.Fatalf("step %d: sweep removed a live entry", step)
					}
					delete(model, mk)
				}
			}
		}
		if tbl.len() != len(model) {
			t.Fatalf("step %d: len %d, model %d", step, tbl.len(), len(model))
		}
		if step%1000 == 0 {
			for mk, e := range model {
				i := tbl.find(&mk)
				if i < 0 || tbl.at(i).t != e.t || tbl.at(i).val != e.val {
					t.Fatalf("step %d: %+v lost or wrong", step, mk)
				}
			}
		}
	}
}

func TestFlowTableSweepAll(t *testing.T) {
	tbl := newFlowTable(1000)
	for p := range uint16(1000) {
		k := keyOf(packet.ProtoTCP, netip.AddrPortFrom(client4.Addr(), p), netip.AddrPortFrom(vip4, 80))
		if !tbl.put(&k, int64(1+p%2), p%3 == 0) {
			t.Fatal("put failed before max")
		}
	}
	k := keyOf(packet.ProtoUDP, client4, netip.AddrPortFrom(vip4, 80))
	if tbl.put(&k, 5, true) {
		t.Fatal("put past max succeeded")
	}
	if n := tbl.sweep(10, 100, 100, len(tbl.slots)); n != 0 || tbl.len() != 1000 {
		t.Fatalf("sweep removed %d live entries", n)
	}
	if n := tbl.sweep(1000, 100, 100, 2*len(tbl.slots)); n != 1000 || tbl.len() != 0 {
		t.Fatalf("sweep removed %d of 1000 expired entries, %d left", n, tbl.len())
	}
	for i := range tbl.slots {
		if tbl.slots[i].t != 0 {
			t.Fatalf("slot %d not empty", i)
		}
	}
}

func TestFlowTableAllocs(t *testing.T) {
	tbl := newFlowTable(64)
	k := keyOf(packet.ProtoTCP, client4, netip.AddrPortFrom(vip4, 80))
	n := testing.AllocsPerRun(100, func() {
		tbl.put(&k, 1, true)
		tbl.find(&k)
		tbl.sweep(2, 1, 1, 8)
		tbl.remove(&k)
	})
	if n != 0 {
		t.Errorf("%v allocations", n)
	}
}
