package vipprobe

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/encap"
)

var (
	req4 = Message{Type: Request, Proto: ProtoTCP, ID: 0x0102030405060708,
		VIP: netip.MustParseAddrPort("198.18.0.10:80")}
	rep6 = Message{Type: Reply, Status: StatusNotConfigured, Proto: ProtoUDP, ID: 42,
		VIP: netip.MustParseAddrPort("[2001:db8::10]:7000")}
)

// TestWireFormat pins the bytes of both shapes against the drawing in the
// health package documentation.
func TestWireFormat(t *testing.T) {
	for _, c := range []struct {
		m    Message
		want string
	}{
		{req4, "20d30000" + "01010006" + "0102030405060708" + "00500400" + "c612000a"},
		{rep6, "20d30000" + "01020311" + "000000000000002a" + "1b581000" + "20010db8000000000000000000000010"},
	} {
		b, err := Append([]byte{0xee}, &c.m)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(b[1:]); got != c.want || b[0] != 0xee {
			t.Errorf("Append(%+v) =\n %s\nwant\n %s", c.m, got, c.want)
		}
		var m Message
		if err := Parse(b[1:], &m); err != nil || m != c.m {
			t.Errorf("Parse = %+v, %v; want %+v", m, err, c.m)
		}
		// A GUE data-path decoder sees a control message and stops.
		var h encap.GUEHeader
		if _, err := encap.DecodeGUE(b[1:], &h); err != encap.ErrControl || h.Proto != CType {
			t.Errorf("DecodeGUE = %v, ctype %#x", err, h.Proto)
		}
	}
	if Len4 != 24 || Len6 != 36 {
		t.Errorf("Len4, Len6 = %d, %d", Len4, Len6)
	}
}

func TestParseRejects(t *testing.T) {
	good, _ := Append(nil, &req4)
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrNotProbe},
		{"data message", mut(func(b []byte) []byte { b[0] = 0; return b }), ErrNotProbe},
		{"other ctype", mut(func(b []byte) []byte { b[1] = 0x80; return b }), ErrNotProbe},
		{"GUE version 1", mut(func(b []byte) []byte { b[0] = 0x60; return b }), ErrNotProbe},
		{"Hlen", mut(func(b []byte) []byte { b[0] |= 1; return b }), ErrMalformed},
		{"flags", mut(func(b []byte) []byte { b[3] = 1; return b }), ErrMalformed},
		{"version", mut(func(b []byte) []byte { b[4] = 2; return b }), ErrMalformed},
		{"type", mut(func(b []byte) []byte { b[5] = 3; return b }), ErrMalformed},
		{"request with status", mut(func(b []byte) []byte { b[6] = 1; return b }), ErrMalformed},
		{"protocol", mut(func(b []byte) []byte { b[7] = 1; return b }), ErrMalformed},
		{"port 0", mut(func(b []byte) []byte { b[16], b[17] = 0, 0; return b }), ErrMalformed},
		{"address length", mut(func(b []byte) []byte { b[18] = 16; return b }), ErrMalformed},
		{"short", good[:Len4-1], ErrMalformed},
		{"long", mut(func(b []byte) []byte { return append(b, 0) }), ErrMalformed},
		{"unspecified", mut(func(b []byte) []byte { copy(b[20:], []byte{0, 0, 0, 0}); return b }), ErrMalformed},
		{"mapped", func() []byte {
			b, _ := Append(nil, &rep6)
			copy(b[20:], netip.MustParseAddr("::ffff:198.18.0.10").AsSlice())
			return b
		}(), ErrMalformed},
	} {
		var m Message
		if err := Parse(c.b, &m); err != c.want || m != (Message{}) {
			t.Errorf("%s: Parse = %v, %+v; want %v and a zero message", c.name, err, m, c.want)
		}
	}
	// The reserved byte is ignored.
	var m Message
	if err := Parse(mut(func(b []byte) []byte { b[19] = 0xff; return b }), &m); err != nil || m != req4 {
		t.Errorf("reserved byte set: %v, %+v", err, m)
	}
}

func TestAppendRejects(t *testing.T) {
	for _, m := range []Message{
		{Type: 0, Proto: ProtoTCP, VIP: req4.VIP},
		{Type: Request, Status: StatusUp, Proto: ProtoTCP, VIP: req4.VIP},
		{Type: Request, Proto: 1, VIP: req4.VIP},
		{Type: Request, Proto: ProtoTCP},
		{Type: Request, Proto: ProtoTCP, VIP: netip.MustParseAddrPort("198.18.0.10:0")},
		{Type: Request, Proto: ProtoTCP, VIP: netip.MustParseAddrPort("0.0.0.0:80")},
		{Type: Request, Proto: ProtoTCP, VIP: netip.MustParseAddrPort("[::ffff:198.18.0.10]:80")},
	} {
		b, err := Append([]byte{1}, &m)
		if !errors.Is(err, ErrInvalid) || !bytes.Equal(b, []byte{1}) {
			t.Errorf("Append(%+v) = %x, %v", m, b, err)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	buf := make([]byte, 0, MaxLen)
	b, _ := Append(nil, &rep6)
	var m Message
	if n := testing.AllocsPerRun(100, func() {
		buf, _ = Append(buf[:0], &req4)
		if Parse(b, &m) != nil {
			t.Fatal("parse")
		}
	}); n != 0 {
		t.Errorf("%v allocations per Append+Parse", n)
	}
}

// FuzzParse: whatever Parse accepts re-encodes to the same bytes (but for
// the ignored reserved byte).
func FuzzParse(f *testing.F) {
	for _, m := range []Message{req4, rep6} {
		b, _ := Append(nil, &m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		if Parse(b, &m) != nil {
			return
		}
		out, err := Append(nil, &m)
		if err != nil {
			t.Fatalf("Parse accepted %x as %+v, which Append rejects: %v", b, m, err)
		}
		in := append([]byte(nil), b...)
		in[19] = 0
		if !bytes.Equal(out, in) {
			t.Fatalf("re-encoded\n %x\nfrom\n %x", out, b)
		}
	})
}
