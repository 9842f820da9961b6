package agent

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/sluicelb/sluice/internal/encap"
)

var (
	vip4    = netip.MustParseAddr("198.18.0.10")
	vip6    = netip.MustParseAddr("2001:db8::10")
	client4 = netip.MustParseAddrPort("198.18.3.7:40001")
	client6 = netip.MustParseAddrPort("[2001:db8:3::7]:40001")
	testSet = newVIPSet([]netip.Addr{vip4, vip6})
)

// set returns a copy of b with b[i] = v.
func set(b []byte, i int, v byte) []byte {
	c := append([]byte(nil), b...)
	c[i] = v
	return c
}

func TestInspect(t *testing.T) {
	in4 := syn(client4, netip.AddrPortFrom(vip4, 80), 1000)
	in6 := syn(client6, netip.AddrPortFrom(vip6, 80), 1000)
	other4 := syn(client4, netip.MustParseAddrPort("198.18.0.99:80"), 1)
	other6 := syn(client6, netip.MustParseAddrPort("[2001:db8::99]:80"), 1)
	// An IPv6 packet to the IPv4-mapped form of the IPv4 VIP.
	mapped := syn(client6, netip.AddrPortFrom(netip.AddrFrom16(vip4.As16()), 80), 1)
	hops4 := hopList(1, netip.MustParseAddr("198.18.2.2"), netip.MustParseAddr("198.18.2.3"))
	hops6 := hopList(2, netip.MustParseAddr("2001:db8:2::2"), netip.MustParseAddr("2001:db8:2::3"))

	// IPv4 with a corrupt header checksum; IHL 4; IHL 6 in a 20-byte
	// packet; total length below the header; total length past the end.
	badSum := set(in4, 10, in4[10]^0xff)
	ihl4 := set(in4, 0, 0x44)
	ihl6 := set(in4[:20], 0, 0x46)
	totShort := set(set(in4, 2, 0), 3, 19)
	totLong := set(in4, 3, in4[3]+1)
	// IPv6 with payload length 0, and one byte more than present.
	plen0 := set(set(in6, 4, 0), 5, 0)
	plenLong := set(in6, 5, in6[5]+1)

	tests := []struct {
		name    string
		payload []byte
		want    Reason // ignored when ok
		ok      bool
		inner   []byte // expected inner packet when ok
		hops    bool
	}{
		{name: "ipv4", payload: gue(4, nil, in4), ok: true, inner: in4},
		{name: "ipv6", payload: gue(41, nil, in6), ok: true, inner: in6},
		{name: "ipv4 with hop list", payload: gue(4, hops4, in4), ok: true, inner: in4, hops: true},
		{name: "ipv6 with v6 hop list", payload: gue(41, hops6, in6), ok: true, inner: in6, hops: true},
		{name: "ipv4 trailing bytes trimmed", payload: gue(4, nil, append(append([]byte(nil), in4...), 0, 0, 0)), ok: true, inner: in4},
		{name: "ipv6 trailing bytes trimmed", payload: gue(41, nil, append(append([]byte(nil), in6...), 1)), ok: true, inner: in6},

		{name: "empty", payload: nil, want: GUETruncated},
		{name: "3 bytes", payload: []byte{0, 4, 0}, want: GUETruncated},
		{name: "variant 1", payload: set(gue(4, nil, in4), 0, 0x40), want: GUEVersion},
		{name: "garbage text", payload: []byte("hello, agent"), want: GUEVersion},
		{name: "control message", payload: set(gue(4, nil, in4), 0, 0x20), want: GUEControl},
		{name: "hlen past end", payload: []byte{0x1f, 4, 0, 0, 1, 2, 3, 4}, want: GUEHLen},
		{name: "flags", payload: set(gue(4, nil, in4), 2, 0x80), want: GUEFlags},
		{name: "private type 0 (GLB)", payload: gue(4, []byte{0, 0, 1, 1, 198, 18, 2, 2}, in4), want: GUEPrivate},
		{name: "hop next past count", payload: gue(4, hopList(3, vip4, vip4), in4), want: GUEPrivate},

		{name: "proto udp", payload: gue(17, nil, in4), want: NotIP},
		{name: "proto 0", payload: gue(0, nil, in4), want: NotIP},
		{name: "proto 4, inner v6", payload: gue(4, nil, in6), want: VersionMismatch},
		{name: "proto 41, inner v4", payload: gue(41, nil, in4), want: VersionMismatch},
		{name: "proto 4, inner version 5", payload: gue(4, nil, set(in4, 0, 0x55)), want: VersionMismatch},

		{name: "proto 4, no inner", payload: gue(4, nil, nil), want: InnerTooShort},
		{name: "proto 41, no inner", payload: gue(41, hops6, nil), want: InnerTooShort},
		{name: "ipv4 19 bytes", payload: gue(4, nil, in4[:19]), want: InnerTooShort},
		{name: "ipv4 options past end", payload: gue(4, nil, ihl6), want: InnerTooShort},
		{name: "ipv4 total length past end", payload: gue(4, nil, totLong), want: InnerTooShort},
		{name: "ipv4 cut short", payload: gue(4, nil, in4[:30]), want: InnerTooShort},
		{name: "ipv6 39 bytes", payload: gue(41, nil, in6[:39]), want: InnerTooShort},
		{name: "ipv6 payload length past end", payload: gue(41, nil, plenLong), want: InnerTooShort},

		{name: "ipv4 ihl 4", payload: gue(4, nil, ihl4), want: InnerBadHeader},
		{name: "ipv4 total length < header", payload: gue(4, nil, totShort), want: InnerBadHeader},
		{name: "ipv6 payload length 0", payload: gue(41, nil, plen0), want: InnerBadHeader},
		{name: "ipv4 bad checksum", payload: gue(4, nil, badSum), want: InnerBadChecksum},

		{name: "ipv4 dst not a VIP", payload: gue(4, nil, other4), want: InnerDstNotVIP},
		{name: "ipv6 dst not a VIP", payload: gue(41, nil, other6), want: InnerDstNotVIP},
		{name: "ipv6 dst mapped ipv4 VIP", payload: gue(41, nil, mapped), want: InnerDstNotVIP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := append([]byte(nil), tt.payload...)
			var h encap.GUEHeader
			inner, r, ok := testSet.inspect(tt.payload, &h)
			if !bytes.Equal(orig, tt.payload) {
				t.Error("inspect modified the payload")
			}
			if ok != tt.ok {
				t.Fatalf("ok = %v (reason %v), want %v (reason %v)", ok, r, tt.ok, tt.want)
			}
			if !ok {
				if r != tt.want {
					t.Errorf("reason = %v, want %v", r, tt.want)
				}
				return
			}
			if !bytes.Equal(inner, tt.inner) {
				t.Errorf("inner = %x\nwant    %x", inner, tt.inner)
			}
			if h.HasHops != tt.hops {
				t.Errorf("HasHops = %v, want %v", h.HasHops, tt.hops)
			}
		})
	}
}

// TestInspectRealEncoder feeds inspect the UDP payload of frames built by
// the LB's encoder, IPv4 and IPv6 outer, with and without a hop list.
func TestInspectRealEncoder(t *testing.T) {
	mac := [6]byte{2, 0, 0, 0, 0, 1}
	for _, tc := range []struct {
		name     string
		src, dst netip.Addr
		sec      netip.Addr
		inner    []byte
	}{
		{"v4 in v4", netip.MustParseAddr("198.18.2.1"), netip.MustParseAddr("198.18.2.2"), netip.Addr{},
			syn(client4, netip.AddrPortFrom(vip4, 80), 7)},
		{"v4 in v4, hops", netip.MustParseAddr("198.18.2.1"), netip.MustParseAddr("198.18.2.2"), netip.MustParseAddr("198.18.2.3"),
			syn(client4, netip.AddrPortFrom(vip4, 80), 7)},
		{"v6 in v6, hops", netip.MustParseAddr("2001:db8:2::1"), netip.MustParseAddr("2001:db8:2::2"), netip.MustParseAddr("2001:db8:2::3"),
			syn(client6, netip.AddrPortFrom(vip6, 443), 7)},
		{"v6 in v4", netip.MustParseAddr("198.18.2.1"), netip.MustParseAddr("198.18.2.2"), netip.Addr{},
			syn(client6, netip.AddrPortFrom(vip6, 443), 7)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frame, off := encapFrame(t, mac, mac, tc.src, tc.dst, tc.sec, tc.inner)
			var h encap.GUEHeader
			inner, r, ok := testSet.inspect(frame[off:], &h)
			if !ok {
				t.Fatalf("dropped: %v", r)
			}
			if !bytes.Equal(inner, tc.inner) {
				t.Errorf("inner differs")
			}
			if h.HasHops != tc.sec.IsValid() {
				t.Errorf("HasHops = %v", h.HasHops)
			}
			if h.HasHops && (h.Hops.N != 2 || h.Hops.Next != 1 || h.Hops.Addr(1) != tc.sec) {
				t.Errorf("hop list = %+v", h.Hops)
			}
		})
	}
}

func TestGUEReason(t *testing.T) {
	for want, err := range map[Reason]error{
		GUETruncated: encap.ErrTruncated,
		GUEVersion:   encap.ErrVersion,
		GUEControl:   encap.ErrControl,
		GUEHLen:      encap.ErrHLen,
		GUEFlags:     encap.ErrFlags,
		GUEPrivate:   fmt.Errorf("wrapped: %w", encap.ErrPrivate),
		GUEOther:     errors.New("something new"),
	} {
		if got := gueReason(err); got != want {
			t.Errorf("gueReason(%v) = %v, want %v", err, got, want)
		}
		if !want.MalformedGUE() {
			t.Errorf("%v.MalformedGUE() = false", want)
		}
	}
	if NotIP.MalformedGUE() {
		t.Error("NotIP.MalformedGUE() = true")
	}
}

func TestInspectAllocs(t *testing.T) {
	p4 := gue(4, hopList(1, vip4, vip4), syn(client4, netip.AddrPortFrom(vip4, 80), 1))
	p6 := gue(41, nil, syn(client6, netip.AddrPortFrom(vip6, 80), 1))
	bad := gue(4, nil, syn(client4, netip.MustParseAddrPort("192.0.2.1:80"), 1))
	var h encap.GUEHeader
	n := testing.AllocsPerRun(100, func() {
		testSet.inspect(p4, &h)
		testSet.inspect(p6, &h)
		testSet.inspect(bad, &h)
		testSet.inspect(p4[:3], &h)
	})
	if n != 0 {
		t.Errorf("inspect allocates %v times per run", n)
	}
}

// TestHandleCounts drives handle (the per-datagram step of Run) with a pipe
// standing in for the TUN device: each outcome lands in its counter,
// including the write error and an oversize datagram.
func TestHandleCounts(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a := &Agent{vips: testSet, tun: w, trust: newSourceFilter(&Config{LBPrefixes: testLBPrefixes})}
	in4 := syn(client4, netip.AddrPortFrom(vip4, 80), 1)
	var (
		b Counters
		h encap.GUEHeader
	)
	stranger := netip.MustParseAddrPort("198.18.10.2:6080")
	a.handle(gue(4, nil, in4), lbSource, false, &h, &b)
	a.handle(gue(4, hopList(1, vip4, vip4), in4), lbSource, false, &h, &b)
	a.handle([]byte("junk"), lbSource, false, &h, &b)
	a.handle(gue(4, nil, in4), lbSource, true, &h, &b)
	a.handle(gue(4, nil, in4), stranger, false, &h, &b)
	a.handle(gue(4, nil, in4), stranger, true, &h, &b) // rejected before it is looked at
	got := make([]byte, 2*len(in4))
	if _, err := r.Read(got); err != nil || !bytes.Equal(got[:len(in4)], in4) {
		t.Fatalf("TUN stand-in got %x, %v", got, err)
	}
	w.Close()
	a.handle(gue(4, nil, in4), lbSource, false, &h, &b)

	want := Counters{Received: 7, Delivered: 2, HopListLocal: 1}
	want.Drops[GUEVersion] = 1 // 'j' = 0x6a: version 1
	want.Drops[Oversize] = 1
	want.Drops[TUNWriteError] = 1
	want.Drops[RejectedSource] = 2
	want.ReceivedBytes, want.DeliveredBytes = b.ReceivedBytes, uint64(2*len(in4))
	if b != want {
		t.Errorf("counters\n got %+v\nwant %+v", b, want)
	}

	// flush moves the batch into the shared counters and clears it.
	a.stats.flush(&b)
	a.stats.flush(&b)
	if got := a.Counters(); got != want {
		t.Errorf("after flush\n got %+v\nwant %+v", got, want)
	}
	if b != (Counters{}) {
		t.Error("flush did not clear the batch")
	}
}

func TestCountersEach(t *testing.T) {
	var c Counters
	c.Received, c.Delivered, c.HopListLocal = 3, 2, 1
	c.SecondHop.Forwarded, c.SecondHop.CacheMisses = 6, 7
	c.Drops[InnerDstNotVIP] = 1
	c.Drops[GUEFlags] = 4
	seen := map[string]uint64{}
	var order []string
	c.Each(func(name string, v uint64) {
		if _, dup := seen[name]; dup {
			t.Errorf("duplicate counter name %q", name)
		}
		seen[name] = v
		order = append(order, name)
	})
	if len(order) != 5+numSecondHopCounters+int(NumReasons) || order[0] != "received" {
		t.Errorf("names = %v", order)
	}
	for name, want := range map[string]uint64{
		"received": 3, "delivered": 2, "hoplist_local": 1,
		"drop_inner_dst_not_vip": 1, "drop_malformed_gue_flags": 4, "drop_not_ip": 0,
		"drop_tun_write_error": 0, "second_hop_forwarded": 6, "sock_diag_queries": 7,
		"second_hop_received": 0, "drop_forward_error": 0, "drop_rejected_source": 0,
	} {
		if got, ok := seen[name]; !ok || got != want {
			t.Errorf("%s = %d (present %v), want %d", name, got, ok, want)
		}
	}
	if c.Dropped() != 5 || c.MalformedGUE() != 4 {
		t.Errorf("Dropped = %d, MalformedGUE = %d", c.Dropped(), c.MalformedGUE())
	}
	for r := Reason(0); r < NumReasons; r++ {
		if r.String() == "" || r.String() == "unknown" {
			t.Errorf("Reason(%d) has no name", r)
		}
	}
	if NumReasons.String() != "unknown" {
		t.Error("NumReasons has a name")
	}
}

func BenchmarkInspect(b *testing.B) {
	p := gue(4, hopList(1, vip4, vip4), syn(client4, netip.AddrPortFrom(vip4, 80), 1))
	var h encap.GUEHeader
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, _, ok := testSet.inspect(p, &h); !ok {
			b.Fatal("dropped")
		}
	}
}
