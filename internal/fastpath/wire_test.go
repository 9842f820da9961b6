package fastpath

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

var codec = NewCodec(Key([]byte("fastpath-test-key-0123")))

func redirect4() Message {
	m := Message{Type: Redirect, ID: 42, TimeMs: 1_700_000_000_000, Count: 2}
	m.Entries[0] = Entry{
		Flow:    Flow{Proto: 6, Client: netip.MustParseAddrPort("198.18.10.2:40000"), VIP: netip.MustParseAddrPort("198.18.0.10:80")},
		Backend: netip.MustParseAddr("198.18.30.101"), Port: 6080, SrcPort: 51234, Flags: FlagUDPChecksum,
	}
	m.Entries[1] = Entry{
		Flow:    Flow{Proto: 17, Client: netip.MustParseAddrPort("[2001:db8:10::2]:5353"), VIP: netip.MustParseAddrPort("[2001:db8::10]:53")},
		Backend: netip.MustParseAddr("2001:db8:30::102"), Port: 6080, SrcPort: 60001, FlowLabel: 0xabcde,
	}
	return m
}

func TestRoundTrip(t *testing.T) {
	ack := Message{Type: Ack, ID: 42, TimeMs: 5, Count: 1}
	ack.Entries[0] = Entry{Flow: redirect4().Entries[0].Flow, Status: StatusBackend}
	cancel := Message{Type: Cancel, ID: 7, TimeMs: 6, Count: 1}
	cancel.Entries[0] = Entry{Flow: redirect4().Entries[1].Flow}
	refresh := cancel
	refresh.Type = Refresh
	for _, m := range []Message{redirect4(), ack, cancel, refresh} {
		b, err := codec.Seal([]byte{0xee}, &m)
		if err != nil {
			t.Fatalf("%s: %v", m.Type, err)
		}
		if b[0] != 0xee || len(b) != 1+headerLen+m.Count*entryLen+tagLen {
			t.Fatalf("%s: length %d", m.Type, len(b))
		}
		var got Message
		if err := codec.Open(b[1:], &got); err != nil {
			t.Fatalf("%s: open: %v", m.Type, err)
		}
		if got != m {
			t.Fatalf("%s: got %+v, want %+v", m.Type, got, m)
		}
	}
}

func TestOpenRefuses(t *testing.T) {
	m := redirect4()
	good, err := codec.Seal(nil, &m)
	if err != nil {
		t.Fatal(err)
	}
	reseal := func(mut func(b []byte)) []byte {
		b := bytes.Clone(good[:len(good)-tagLen])
		mut(b)
		return append(b, codec.tag(b)...)
	}
	other := NewCodec(Key([]byte("another-key-0123456789")))
	otherSealed, _ := other.Seal(nil, &m)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrNotFastpath},
		{"data GUE", []byte{0x00, 4, 0, 0, 0x45}, ErrNotFastpath},
		{"probe ctype", append([]byte{0x20, 0xD3, 0, 0}, good[4:]...), ErrNotFastpath},
		{"wrong key", otherSealed, ErrAuth},
		{"flipped bit", func() []byte { b := bytes.Clone(good); b[30] ^= 1; return b }(), ErrAuth},
		{"truncated", good[:len(good)-1], ErrAuth},
		{"too short", good[:headerLen+tagLen], ErrMalformed},
		{"version", reseal(func(b []byte) { b[4] = 2 }), ErrMalformed},
		{"type", reseal(func(b []byte) { b[5] = 9 }), ErrMalformed},
		{"count zero", reseal(func(b []byte) { b[6] = 0 }), ErrMalformed},
		{"count long", reseal(func(b []byte) { b[6] = 3 }), ErrMalformed},
		{"reserved", reseal(func(b []byte) { b[7] = 1 }), ErrMalformed},
		{"proto", reseal(func(b []byte) { b[headerLen+52] = 1 }), ErrMalformed},
		{"status in redirect", reseal(func(b []byte) { b[headerLen+53] = 1 }), ErrMalformed},
		{"unknown flag", reseal(func(b []byte) { b[headerLen+54] = 2 }), ErrMalformed},
		{"zero port", reseal(func(b []byte) { b[headerLen+48], b[headerLen+49] = 0, 0 }), ErrMalformed},
		{"zero GUE port", reseal(func(b []byte) { b[headerLen+56], b[headerLen+57] = 0, 0 }), ErrMalformed},
		{"mixed families", reseal(func(b []byte) { copy(b[headerLen+16:], netip.MustParseAddr("2001:db8::1").AsSlice()) }), ErrMalformed},
		{"no backend", reseal(func(b []byte) { clear(b[headerLen+32 : headerLen+48]) }), ErrMalformed},
		{"big label", reseal(func(b []byte) { b[headerLen+60] = 1 }), ErrMalformed},
		{"backend in cancel", reseal(func(b []byte) { b[5] = byte(Cancel) }), ErrMalformed},
	}
	for _, tc := range tests {
		var got Message
		if err := codec.Open(tc.in, &got); !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
		if got.Count != 0 {
			t.Errorf("%s: count %d after an error", tc.name, got.Count)
		}
	}
}

func TestSealRefuses(t *testing.T) {
	for name, mut := range map[string]func(*Message){
		"no entries":    func(m *Message) { m.Count = 0 },
		"too many":      func(m *Message) { m.Count = MaxEntries + 1 },
		"type":          func(m *Message) { m.Type = 0 },
		"no backend":    func(m *Message) { m.Entries[0].Backend = netip.Addr{} },
		"ack no status": func(m *Message) { m.Type = Ack },
		"bad proto":     func(m *Message) { m.Entries[1].Flow.Proto = 1 },
	} {
		m := redirect4()
		mut(&m)
		b, err := codec.Seal([]byte{1}, &m)
		if !errors.Is(err, ErrInvalid) || len(b) != 1 {
			t.Errorf("%s: err %v, len %d", name, err, len(b))
		}
	}
}

func TestFresh(t *testing.T) {
	const now = 1_000_000
	for _, tc := range []struct {
		at   uint64
		want bool
	}{{now, true}, {now - FreshMs, true}, {now - FreshMs - 1, false}, {now + FreshMs, true}, {now + FreshMs + 1, false}} {
		if Fresh(tc.at, now) != tc.want {
			t.Errorf("Fresh(%d, %d) = %v", tc.at, now, !tc.want)
		}
	}
}

func TestOpenDoesNotAllocate(t *testing.T) {
	m := redirect4()
	b, _ := codec.Seal(nil, &m)
	var got Message
	if n := testing.AllocsPerRun(100, func() { codec.Open(b, &got) }); n != 0 {
		t.Fatalf("Open allocates %v times", n)
	}
}

func FuzzOpen(f *testing.F) {
	m := redirect4()
	b, _ := codec.Seal(nil, &m)
	f.Add(b)
	f.Add([]byte{0x20, CType, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		// Authentic mutations: reseal whatever the fuzzer made so that
		// Open reaches the decoder.
		if len(in) > tagLen {
			in = append(bytes.Clone(in[:len(in)-tagLen]), codec.tag(in[:len(in)-tagLen])...)
		}
		var got Message
		if err := codec.Open(in, &got); err != nil {
			return
		}
		out, err := codec.Seal(nil, &got)
		if err != nil {
			t.Fatalf("opened message does not seal: %v", err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("reseal differs:\n%x\n%x", out, in)
		}
	})
}
