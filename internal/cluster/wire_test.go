package cluster

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"net/netip"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

func sampleMsgs() []Msg {
	k := testFlow(0x010203)
	e := MakeEntry(k, Value{Service: 0x0a0b, Backend: 0x11223344, Expire: 0x55667788})
	return []Msg{
		{Type: MsgQuery, ReqID: 1, Entry: e},
		{Type: MsgAnswer, Status: StatusRetry, ReqID: 2, Entry: e},
		{Type: MsgInsert, Aux: FlagRepair, ReqID: 3, Entry: e, Origin: netip.MustParseAddrPort("10.0.0.9:7946")},
		{Type: MsgInsert, ReqID: 4, Entry: e},
		{Type: MsgAck, ReqID: 5, Entry: e},
		{Type: MsgDelete, ReqID: 6, Entry: e},
		{Type: MsgSyncReq, Aux: 4095, ReqID: 7, Cursor: 123456, Count: 24},
		{Type: MsgSyncEntry, Aux: 4095, ReqID: 7, Entry: e},
		{Type: MsgSyncDone, Aux: 4095, ReqID: 7, Cursor: SyncDoneCursor, Count: 1},
	}
}

// testTo is the receiver the test datagrams are sealed for.
var testTo = netip.MustParseAddrPort("198.18.30.12:7947")

func sealed(c *Codec, msgs []Msg) []byte {
	var w Writer
	w.Begin(0xdeadbeef, 42, 1_700_000_000_000)
	for i := range msgs {
		if !w.Add(&msgs[i]) {
			panic("does not fit")
		}
	}
	return w.Seal(c, testTo)
}

// The encoding of one datagram of every message type is fixed: a change to
// the layout must be deliberate (go test -run Golden -update).
func TestWireGolden(t *testing.T) {
	c := NewCodec(testKey)
	b := sealed(c, sampleMsgs())
	path := "testdata/datagram-v1.hex"
	got := hex.EncodeToString(b)
	if *update {
		os.WriteFile(path, []byte(got+"\n"), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != strings.TrimSpace(string(want)) {
		t.Fatalf("encoding changed:\n got %s\nwant %s", got, want)
	}
	// Decode it back.
	h, msgs, err := c.Open(b, testTo)
	if err != nil {
		t.Fatal(err)
	}
	if h.Count != 9 || h.Boot != 0xdeadbeef || h.Seq != 42 || h.TimeMs != 1_700_000_000_000 {
		t.Fatalf("header %+v", h)
	}
	for i, want := range sampleMsgs() {
		var m Msg
		if msgs, err = Next(msgs, &m); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m != want {
			t.Fatalf("message %d:\n got %+v\nwant %+v", i, m, want)
		}
	}
	if len(msgs) != 0 {
		t.Fatalf("%d bytes left", len(msgs))
	}
}

// Fields sit at the documented offsets.
func TestWireOffsets(t *testing.T) {
	m := sampleMsgs()[2] // insert
	b := AppendMsg(nil, &m)
	be := binary.BigEndian
	if len(b) != 80 || b[0] != byte(MsgInsert) || be.Uint16(b[2:]) != FlagRepair || be.Uint32(b[4:]) != 3 {
		t.Fatalf("head % x", b[:8])
	}
	e := b[8:56]
	if be.Uint16(e[38:]) != 0x0a0b || be.Uint32(e[40:]) != 0x11223344 || be.Uint32(e[44:]) != 0x55667788 || e[36] != 6 {
		t.Fatalf("entry % x", e)
	}
	if !bytes.Equal(b[56:72], netip.MustParseAddr("::ffff:10.0.0.9").AsSlice()) || be.Uint16(b[72:]) != 7946 {
		t.Fatalf("origin % x", b[56:74])
	}
}

func TestWireRejects(t *testing.T) {
	c := NewCodec(testKey)
	good := sealed(c, sampleMsgs()[:2])
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 1; return b }
	cases := map[string]struct {
		b    []byte
		want error
	}{
		"short":       {good[:30], ErrShort},
		"version":     {flip(0), ErrVersion},
		"tag":         {flip(len(good) - 1), ErrAuth},
		"body":        {flip(30), ErrAuth},
		"other key":   {sealed(NewCodec([32]byte{1}), sampleMsgs()[:1]), ErrAuth},
		"too large":   {make([]byte, MaxPayload+1), ErrTooLarge},
		"no messages": {sealed(c, nil), nil},
	}
	for name, tc := range cases {
		_, _, err := c.Open(tc.b, testTo)
		if err != tc.want {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	// Malformed messages inside an authentic datagram.
	var m Msg
	if _, err := Next([]byte{99, 0, 0, 0, 0, 0, 0, 0}, &m); err != ErrMessage {
		t.Error("unknown type accepted")
	}
	q := AppendMsg(nil, &sampleMsgs()[0])
	if _, err := Next(q[:55], &m); err != ErrMessage {
		t.Error("short query accepted")
	}
	q[8+37] = 1
	if _, err := Next(q, &m); err != ErrMessage {
		t.Error("non-zero padding accepted")
	}
}

func TestReplay(t *testing.T) {
	var r Replay
	now := uint64(1_000_000)
	h := func(boot uint32, seq, ms uint64) *Header { return &Header{Boot: boot, Seq: seq, TimeMs: ms} }
	steps := []struct {
		h    *Header
		now  uint64
		want bool
	}{
		{h(1, 10, now), now, true},
		{h(1, 10, now), now, false},        // duplicate
		{h(1, 12, now), now, true},         // gap
		{h(1, 11, now), now, true},         // late, in the window
		{h(1, 11, now), now, false},        // late duplicate
		{h(1, 200, now), now, true},        // jump
		{h(1, 100, now), now, false},       // below the window
		{h(1, 201, now-20000), now, false}, // stale clock
		{h(2, 1, now-10), now, false},      // an older boot's datagram
		{h(2, 1, now+5), now, true},        // a restart
		{h(1, 202, now+1), now, false},     // the previous boot again
	}
	for i, s := range steps {
		if got := r.Check(s.h, s.now); got != s.want {
			t.Fatalf("step %d: %v, want %v", i, got, s.want)
		}
	}
}

// FuzzMessages decodes arbitrary message bytes inside an authentic datagram;
// whatever decodes must re-encode to the same bytes.
func FuzzMessages(f *testing.F) {
	for _, m := range sampleMsgs() {
		f.Add(AppendMsg(nil, &m))
	}
	all := []byte{}
	for _, m := range sampleMsgs() {
		all = AppendMsg(all, &m)
	}
	f.Add(all)
	f.Add([]byte{})
	f.Add([]byte{3, 0, 0})
	c := NewCodec(testKey)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > MaxPayload-headerLen-tagLen {
			return
		}
		var w Writer
		w.Begin(1, 1, 1)
		w.buf = append(w.buf, in...)
		d := w.Seal(c, testTo)
		_, msgs, err := c.Open(d, testTo)
		if err != nil {
			t.Fatal(err)
		}
		var out []byte
		var m Msg
		for len(msgs) > 0 {
			if msgs, err = Next(msgs, &m); err != nil {
				return
			}
			out = AppendMsg(out, &m)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("re-encoding differs:\n in % x\nout % x", in, out)
		}
	})
}

// FuzzOpen feeds raw datagrams to the decoder: it must never panic.
func FuzzOpen(f *testing.F) {
	c := NewCodec(testKey)
	f.Add(sealed(c, sampleMsgs()))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, in []byte) {
		_, msgs, err := c.Open(in, testTo)
		if err != nil {
			return
		}
		var m Msg
		for len(msgs) > 0 {
			if msgs, err = Next(msgs, &m); err != nil {
				return
			}
		}
	})
}

func BenchmarkSealOpen(b *testing.B) {
	c := NewCodec(testKey)
	msgs := make([]Msg, 24)
	for i := range msgs {
		msgs[i] = sampleMsgs()[0]
	}
	b.SetBytes(int64(24 * msgSize[MsgQuery]))
	for b.Loop() {
		d := sealed(c, msgs)
		if _, _, err := c.Open(d, testTo); err != nil {
			b.Fatal(err)
		}
	}
}

// A datagram sealed for one member fails authentication at another, and a
// replay window made anew refuses what was sent well before it.
func TestSealedForOneReceiver(t *testing.T) {
	c := NewCodec(testKey)
	b := sealed(c, sampleMsgs())
	if _, _, err := c.Open(b, testTo); err != nil {
		t.Fatal(err)
	}
	other := netip.MustParseAddrPort("198.18.30.13:7947")
	if _, _, err := c.Open(b, other); !errors.Is(err, ErrAuth) {
		t.Fatalf("opened at another member: %v", err)
	}
	h := Header{Boot: 1, Seq: 5, TimeMs: 1_700_000_000_000}
	r := NewReplay(h.TimeMs + 5000) // made 5 s after h was sent
	if r.Check(&h, h.TimeMs+5000) {
		t.Fatal("a new window accepted a datagram sent 5 s before it was made")
	}
	h2 := Header{Boot: 1, Seq: 6, TimeMs: h.TimeMs + 4500}
	if !r.Check(&h2, h.TimeMs+5000) {
		t.Fatal("a new window refused a datagram sent just before it was made")
	}
}
