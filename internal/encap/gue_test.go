package encap

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// gueHeaderBytes builds a GUE header by hand (test-local encoder).
func gueHeaderBytes(ctl bool, proto byte, flags uint16, priv []byte) []byte {
	b0 := byte(len(priv) / 4)
	if ctl {
		b0 |= 0x20
	}
	return append([]byte{b0, proto, byte(flags >> 8), byte(flags)}, priv...)
}

func hopBytes(next, cnt byte, addrs ...netip.Addr) []byte {
	p := []byte{0x53, 0x43, next, cnt}
	for _, a := range addrs {
		p = append(p, a.AsSlice()...)
	}
	return p
}

func TestDecodeGUE(t *testing.T) {
	inner := []byte{0x45, 1, 2, 3}
	for _, tc := range []struct {
		name     string
		in       []byte
		err      error
		off      int
		hops     []netip.Addr
		next     uint8
		alen     uint8
		noHopHdr bool
	}{
		{name: "plain", in: append(gueHeaderBytes(false, 4, 0, nil), inner...), off: 4, noHopHdr: true},
		{name: "plain, empty inner", in: gueHeaderBytes(false, 41, 0, nil), off: 4, noHopHdr: true},
		{name: "v4 hops", in: append(gueHeaderBytes(false, 4, 0, hopBytes(1, 2, be4, be4b)), inner...),
			off: 16, hops: []netip.Addr{be4, be4b}, next: 1, alen: 4},
		{name: "v6 hops", in: append(gueHeaderBytes(false, 41, 0, hopBytes(0, 2, be6, be6b)), inner...),
			off: 40, hops: []netip.Addr{be6, be6b}, next: 0, alen: 16},
		{name: "4 hops exhausted", in: gueHeaderBytes(false, 4, 0, hopBytes(4, 4, be4, be4b, lb4, be4)),
			off: 24, hops: []netip.Addr{be4, be4b, lb4, be4}, next: 4, alen: 4},
		{name: "empty hop list", in: gueHeaderBytes(false, 4, 0, hopBytes(0, 0)), off: 8},
		{name: "1 v6 hop = 4 v4 hops by length, count decides", in: gueHeaderBytes(false, 4, 0,
			hopBytes(0, 1, be6)), off: 24, hops: []netip.Addr{be6}, alen: 16},
		{name: "empty", in: nil, err: ErrTruncated},
		{name: "3 bytes", in: []byte{0, 4, 0}, err: ErrTruncated},
		{name: "version 1", in: []byte{0x45, 0, 0, 20}, err: ErrVersion},
		{name: "version 2", in: []byte{0x80, 4, 0, 0}, err: ErrVersion},
		{name: "control", in: gueHeaderBytes(true, 1, 0, nil), err: ErrControl},
		{name: "hlen past end", in: []byte{0x01, 4, 0, 0, 0x53, 0x43, 0}, err: ErrHLen},
		{name: "hlen 31 short", in: append([]byte{0x1f, 4, 0, 0}, make([]byte, 123)...), err: ErrHLen},
		{name: "flags", in: gueHeaderBytes(false, 4, 0x8000, nil), err: ErrFlags},
		{name: "linux P flag", in: gueHeaderBytes(false, 4, 1, []byte{0, 0, 0, 0}), err: ErrFlags},
		{name: "GLB type 0", in: gueHeaderBytes(false, 4, 0, []byte{0, 0, 0, 1, 10, 0, 0, 1}), err: ErrPrivate},
		{name: "count 5", in: gueHeaderBytes(false, 4, 0, append(hopBytes(0, 5), make([]byte, 20)...)), err: ErrPrivate},
		{name: "next past count", in: gueHeaderBytes(false, 4, 0, hopBytes(3, 2, be4, be4b)), err: ErrPrivate},
		{name: "length mismatch", in: gueHeaderBytes(false, 4, 0, hopBytes(0, 2, be4, be4b, be4)), err: ErrPrivate},
		{name: "count 0 with data", in: gueHeaderBytes(false, 4, 0, hopBytes(0, 0, be4)), err: ErrPrivate},
	} {
		var h GUEHeader
		h.Hops.Addrs[3][0] = 0xaa // stale data must be cleared
		off, err := DecodeGUE(tc.in, &h)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		if off != tc.off || off != 4+h.HLen {
			t.Errorf("%s: off %d HLen %d, want off %d", tc.name, off, h.HLen, tc.off)
		}
		if h.Proto != tc.in[1] || h.Version != 0 || h.Control || h.Flags != 0 {
			t.Errorf("%s: header %+v", tc.name, h)
		}
		if h.HasHops == tc.noHopHdr {
			t.Errorf("%s: HasHops %v", tc.name, h.HasHops)
		}
		l := h.Hops
		if int(l.N) != len(tc.hops) || l.Next != tc.next || l.AddrLen != tc.alen {
			t.Errorf("%s: hops N %d Next %d AddrLen %d, want %d %d %d", tc.name, l.N, l.Next, l.AddrLen,
				len(tc.hops), tc.next, tc.alen)
			continue
		}
		for i, a := range tc.hops {
			if got := l.Addr(i); got != a || l.Addrs[i] != a.As16() {
				t.Errorf("%s: hop %d = %v, want %v", tc.name, i, got, a)
			}
		}
		for i := len(tc.hops); i < MaxHops; i++ {
			if l.Addrs[i] != [16]byte{} {
				t.Errorf("%s: hop slot %d not cleared: %x", tc.name, i, l.Addrs[i])
			}
		}
	}
}

func TestAdvanceHop(t *testing.T) {
	for _, fam := range []struct {
		name string
		a    []netip.Addr
	}{{"v4", []netip.Addr{be4, be4b, lb4}}, {"v6", []netip.Addr{be6, be6b, lb6}}} {
		pl := append(gueHeaderBytes(false, 4, 0, hopBytes(1, 3, fam.a...)), 0x45)
		var h GUEHeader
		if _, err := DecodeGUE(pl, &h); err != nil {
			t.Fatalf("%s: %v", fam.name, err)
		}
		sum := Checksum(pl, 0)
		for want := 1; want < 3; want++ {
			before := bytes.Clone(pl)
			hop, ok := AdvanceHop(pl, &h)
			if !ok || hop != fam.a[want] || h.Hops.Next != uint8(want+1) || pl[HopNextOffset] != uint8(want+1) {
				t.Fatalf("%s: AdvanceHop = %v %v, next %d/%d, want %v", fam.name, hop, ok, h.Hops.Next, pl[HopNextOffset], fam.a[want])
			}
			// Only the next-hop byte changed, and UpdateChecksum follows it.
			before[HopNextOffset] = pl[HopNextOffset]
			if !bytes.Equal(before, pl) {
				t.Fatalf("%s: AdvanceHop changed more than the next-hop index", fam.name)
			}
			sum = UpdateChecksum(sum, uint16(want)<<8|3, uint16(want+1)<<8|3)
			if sum != Checksum(pl, 0) {
				t.Fatalf("%s: incremental checksum %#04x, recomputed %#04x", fam.name, sum, Checksum(pl, 0))
			}
			var h2 GUEHeader
			if _, err := DecodeGUE(pl, &h2); err != nil || h2 != h {
				t.Fatalf("%s: re-decode %v: %+v, want %+v", fam.name, err, h2, h)
			}
		}
		before := bytes.Clone(pl)
		if hop, ok := AdvanceHop(pl, &h); ok || !bytes.Equal(before, pl) {
			t.Fatalf("%s: exhausted list: AdvanceHop = %v %v, or payload changed", fam.name, hop, ok)
		}
	}
	// A header without hops, or a payload that no longer matches h.
	var h GUEHeader
	pl := gueHeaderBytes(false, 4, 0, nil)
	if _, err := DecodeGUE(pl, &h); err != nil {
		t.Fatal(err)
	}
	if _, ok := AdvanceHop(pl, &h); ok {
		t.Errorf("AdvanceHop on a header without hops succeeded")
	}
	pl = gueHeaderBytes(false, 4, 0, hopBytes(0, 2, be4, be4b))
	if _, err := DecodeGUE(pl, &h); err != nil {
		t.Fatal(err)
	}
	pl[HopNextOffset] = 1
	if _, ok := AdvanceHop(pl, &h); ok || pl[HopNextOffset] != 1 {
		t.Errorf("AdvanceHop with a stale header succeeded")
	}
}

// TestEncapDecodeRoundTrip decodes Encap's output with DecodeGUE.
func TestEncapDecodeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 12))
	for _, c := range goldenCases() {
		if c.mode != GUE {
			continue
		}
		primT, secT := c.tunnels()
		prim, sec := mustCompile(t, primT), mustCompile(t, secT)
		var secondary *Template
		if c.hops {
			secondary = sec
		}
		inner := buildInner(t, c.inner, 33, r)
		buf, l3, end := receivedFrame(prim, inner, false, c.hops, 0)
		start := prim.Encap(buf, l3, end, c.inner, r.Uint64(), secondary)
		ipLen := map[bool]int{false: 20, true: 40}[c.outer6]
		payload := buf[start+int(prim.l2Len)+ipLen+8 : end]
		var h GUEHeader
		off, err := DecodeGUE(payload, &h)
		if err != nil {
			t.Fatalf("%v: DecodeGUE: %v", c, err)
		}
		if !bytes.Equal(payload[off:], inner) || h.Proto != map[uint8]uint8{4: 4, 6: 41}[c.inner] || h.HasHops != c.hops {
			t.Fatalf("%v: decoded %+v off %d", c, h, off)
		}
		if c.hops {
			if h.Hops.N != 2 || h.Hops.Next != 1 || h.Hops.Addr(0) != prim.Dst() || h.Hops.Addr(1) != sec.Dst() ||
				h.Hops.Addrs[0] != prim.Dst16() {
				t.Fatalf("%v: hops %+v", c, h.Hops)
			}
			if hop, ok := AdvanceHop(payload, &h); !ok || hop != sec.Dst() {
				t.Fatalf("%v: AdvanceHop = %v %v, want %v", c, hop, ok, sec.Dst())
			}
		}
	}
}

func TestDecodeGUEZeroAlloc(t *testing.T) {
	inputs := [][]byte{
		gueHeaderBytes(false, 4, 0, nil),
		gueHeaderBytes(false, 4, 0, hopBytes(1, 2, be4, be4b)),
		gueHeaderBytes(false, 41, 0, hopBytes(1, 2, be6, be6b)),
		{0x80, 0, 0, 0}, // error path
		gueHeaderBytes(false, 4, 0, hopBytes(3, 2, be4, be4b)),
	}
	var h GUEHeader
	allocs := testing.AllocsPerRun(500, func() {
		for _, in := range inputs {
			DecodeGUE(in, &h)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per DecodeGUE round, want 0", allocs)
	}
}

// refDecodeGUE is a slow model of DecodeGUE written from the wire format
// description in doc.go, field by field, with no shared code.
func refDecodeGUE(p []byte) (off int, hops []netip.Addr, next uint8, ok bool) {
	if len(p) < 4 {
		return 0, nil, 0, false
	}
	version := int(p[0]) / 64
	control := (int(p[0]) / 32) % 2
	hlenBytes := (int(p[0]) % 32) * 4
	flags := int(p[2])*256 + int(p[3])
	if version != 0 || 4+hlenBytes > len(p) || control != 0 || flags != 0 {
		return 0, nil, 0, false
	}
	if hlenBytes == 0 {
		return 4, nil, 0, true
	}
	priv := p[4 : 4+hlenBytes]
	if int(priv[0])*256+int(priv[1]) != 0x5343 {
		return 0, nil, 0, false
	}
	next, count := priv[2], int(priv[3])
	if count > 4 || int(next) > count {
		return 0, nil, 0, false
	}
	body := priv[4:]
	for _, size := range []int{4, 16} {
		if len(body) == count*size {
			for i := 0; i < count; i++ {
				a, _ := netip.AddrFromSlice(body[i*size : (i+1)*size])
				hops = append(hops, a)
			}
			return 4 + hlenBytes, hops, next, true
		}
	}
	return 0, nil, 0, false
}

// FuzzDecodeGUE checks that DecodeGUE never panics, agrees with the slow
// model, keeps innerOff in bounds, decodes only canonical encodings (the
// accepted header re-encodes to the same bytes), that AdvanceHop behaves, and
// that headers written by Encap from fuzzed addresses decode back to the same
// hop list.
func FuzzDecodeGUE(f *testing.F) {
	f.Add(gueHeaderBytes(false, 4, 0, nil))
	f.Add(append(gueHeaderBytes(false, 4, 0, hopBytes(1, 2, be4, be4b)), 0x45, 0))
	f.Add(gueHeaderBytes(false, 41, 0, hopBytes(0, 2, be6, be6b)))
	f.Add(gueHeaderBytes(false, 41, 0, hopBytes(4, 4, be4, be4, be4, be4)))
	f.Add(gueHeaderBytes(true, 0, 0, nil))
	f.Add([]byte{0x1f, 4, 0, 0})
	f.Add(gueHeaderBytes(false, 4, 1, []byte{0, 0, 0, 0}))
	f.Add(gueHeaderBytes(false, 4, 0, []byte{0, 0, 0, 1, 10, 0, 0, 1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		var h GUEHeader
		off, err := DecodeGUE(data, &h)
		roff, rhops, rnext, rok := refDecodeGUE(data)
		if (err == nil) != rok {
			t.Fatalf("DecodeGUE err %v, model ok %v", err, rok)
		}
		if err == nil {
			if off < 4 || off > len(data) || off != 4+h.HLen || off != roff {
				t.Fatalf("innerOff %d (HLen %d, len %d), model %d", off, h.HLen, len(data), roff)
			}
			l := h.Hops
			if l.N > MaxHops || l.Next > l.N || int(l.N) != len(rhops) || (h.HasHops && l.Next != rnext) {
				t.Fatalf("hop list %+v, model %v next %d", l, rhops, rnext)
			}
			for i, a := range rhops {
				if l.Addr(i) != a {
					t.Fatalf("hop %d = %v, model %v", i, l.Addr(i), a)
				}
			}
			// Canonical: re-encode and compare.
			var priv []byte
			if h.HasHops {
				priv = []byte{0x53, 0x43, l.Next, l.N}
				for i := 0; i < int(l.N); i++ {
					priv = append(priv, l.Addrs[i][16-int(l.AddrLen):]...)
				}
			}
			if re := gueHeaderBytes(false, h.Proto, 0, priv); !bytes.Equal(re, data[:off]) {
				t.Fatalf("re-encoded % x, input % x", re, data[:off])
			}
			// AdvanceHop on a copy.
			cp := bytes.Clone(data)
			h2 := h
			hop, ok := AdvanceHop(cp, &h2)
			if ok != (h.HasHops && l.Next < l.N) {
				t.Fatalf("AdvanceHop ok = %v for %+v", ok, l)
			}
			if ok {
				if hop != rhops[l.Next] || cp[HopNextOffset] != l.Next+1 || h2.Hops.Next != l.Next+1 {
					t.Fatalf("AdvanceHop = %v, next %d", hop, cp[HopNextOffset])
				}
			} else if !bytes.Equal(cp, data) {
				t.Fatalf("failed AdvanceHop changed the payload")
			}
		}
		fuzzEncapRoundTrip(t, data)
	})
}

// fuzzEncapRoundTrip builds primary and secondary tunnels from the fuzz
// input's bytes, encapsulates a packet with a hop list and decodes it.
func fuzzEncapRoundTrip(t *testing.T, data []byte) {
	var raw [34]byte
	copy(raw[:], data)
	v6 := raw[0]&1 == 1
	var p, s netip.Addr
	if v6 {
		p, s = netip.AddrFrom16([16]byte(raw[2:18])), netip.AddrFrom16([16]byte(raw[18:34]))
	} else {
		p, s = netip.AddrFrom4([4]byte(raw[2:6])), netip.AddrFrom4([4]byte(raw[6:10]))
	}
	src := lb4
	if v6 {
		src = lb6
	}
	prim, err1 := Compile(Tunnel{Mode: GUE, Src: src, Dst: p, VLAN: uint16(raw[1]) & 1, UDPChecksum: raw[1]&2 != 0})
	sec, err2 := Compile(Tunnel{Mode: GUE, Src: src, Dst: s})
	if err1 != nil || err2 != nil {
		return // unspecified, multicast or IPv4-mapped addresses
	}
	inner := make([]byte, 40+int(raw[1]>>2))
	inner[0] = 0x60
	buf := make([]byte, 128+len(inner))
	copy(buf[128:], inner)
	start := prim.Encap(buf, 128, len(buf), 6, uint64(len(data)), sec)
	if start != 128-prim.Overhead(true) {
		t.Fatalf("Encap = %d", start)
	}
	ipLen := 20
	if v6 {
		ipLen = 40
	}
	payload := buf[start+int(prim.l2Len)+ipLen+8:]
	var h GUEHeader
	off, err := DecodeGUE(payload, &h)
	if err != nil || !bytes.Equal(payload[off:], inner) || !h.HasHops || h.Hops.N != 2 || h.Hops.Next != 1 ||
		h.Hops.Addr(0) != p || h.Hops.Addr(1) != s {
		t.Fatalf("round trip [%v %v]: err %v, %+v", p, s, err, h)
	}
}
