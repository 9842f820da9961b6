package quiclb

import (
	"bytes"
	"errors"
	"testing"
)

func TestValidate(t *testing.T) {
	key := make([]byte, KeyLen)
	tests := []struct {
		name  string
		cfg   Config
		err   error  // nil: valid
		field string // ConfigError.Field
		value int    // ConfigError.Value
		msg   string
	}{
		{name: "min plaintext", cfg: Config{ServerIDLen: 1, NonceLen: 4}},
		{name: "max block", cfg: Config{Rotation: 6, ServerIDLen: 15, NonceLen: 4, Key: key}},
		{name: "max nonce", cfg: Config{ServerIDLen: 1, NonceLen: 18, Key: key, LenSelfEncoded: true}},
		{name: "single pass", cfg: Config{ServerIDLen: 8, NonceLen: 8, Key: key}},
		{name: "rotation 7 reserved", cfg: Config{Rotation: 7, ServerIDLen: 2, NonceLen: 4},
			err: ErrRotationRange, field: "rotation", value: 7,
			msg: "quiclb: rotation = 7: config rotation must be 0..6"},
		{name: "rotation 200", cfg: Config{Rotation: 200, ServerIDLen: 2, NonceLen: 4},
			err: ErrRotationRange, field: "rotation", value: 200},
		{name: "server id 0", cfg: Config{ServerIDLen: 0, NonceLen: 4},
			err: ErrServerIDLenRange, field: "server_id_len", value: 0,
			msg: "quiclb: server_id_len = 0: server ID length must be 1..15"},
		{name: "server id negative", cfg: Config{ServerIDLen: -1, NonceLen: 4},
			err: ErrServerIDLenRange, field: "server_id_len", value: -1},
		{name: "server id 16", cfg: Config{ServerIDLen: 16, NonceLen: 3},
			err: ErrServerIDLenRange, field: "server_id_len", value: 16},
		{name: "nonce 3", cfg: Config{ServerIDLen: 2, NonceLen: 3},
			err: ErrNonceLenRange, field: "nonce_len", value: 3,
			msg: "quiclb: nonce_len = 3: nonce length must be at least 4"},
		{name: "nonce 0", cfg: Config{ServerIDLen: 2},
			err: ErrNonceLenRange, field: "nonce_len", value: 0},
		{name: "block 20", cfg: Config{ServerIDLen: 15, NonceLen: 5},
			err: ErrBlockTooLong, field: "server_id_len+nonce_len", value: 20,
			msg: "quiclb: server_id_len+nonce_len = 20: server ID and nonce lengths must sum to at most 19"},
		{name: "nonce 19", cfg: Config{ServerIDLen: 1, NonceLen: 19},
			err: ErrBlockTooLong, field: "server_id_len+nonce_len", value: 20},
		{name: "key 15", cfg: Config{ServerIDLen: 2, NonceLen: 4, Key: make([]byte, 15)},
			err: ErrKeyLen, field: "key", value: 15,
			msg: "quiclb: key = 15: key must be 16 octets, or nil for plaintext"},
		{name: "key 32", cfg: Config{ServerIDLen: 2, NonceLen: 4, Key: make([]byte, 32)},
			err: ErrKeyLen, field: "key", value: 32},
		{name: "key empty not nil", cfg: Config{ServerIDLen: 2, NonceLen: 4, Key: []byte{}},
			err: ErrKeyLen, field: "key", value: 0},
		{name: "first bad field wins", cfg: Config{Rotation: 9, ServerIDLen: 0, NonceLen: 0, Key: []byte{1}},
			err: ErrRotationRange, field: "rotation", value: 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			_, newErr := New(tc.cfg)
			if tc.err == nil {
				if err != nil || newErr != nil {
					t.Fatalf("Validate = %v, New: %v; want valid", err, newErr)
				}
				return
			}
			if !errors.Is(err, tc.err) || !errors.Is(newErr, tc.err) {
				t.Fatalf("Validate = %v, New: %v; want %v", err, newErr, tc.err)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field || ce.Value != tc.value {
				t.Fatalf("Validate = %#v, want field %q value %d", err, tc.field, tc.value)
			}
			if tc.msg != "" && err.Error() != tc.msg {
				t.Errorf("message %q, want %q", err.Error(), tc.msg)
			}
		})
	}
}

func TestModeOfConfig(t *testing.T) {
	key := make([]byte, KeyLen)
	for _, tc := range []struct {
		cfg  Config
		want Mode
	}{
		{Config{ServerIDLen: 8, NonceLen: 8}, Plaintext},
		{Config{ServerIDLen: 8, NonceLen: 8, Key: key}, SinglePass},
		{Config{ServerIDLen: 4, NonceLen: 12, Key: key}, SinglePass},
		{Config{ServerIDLen: 8, NonceLen: 7, Key: key}, FourPass},
		{Config{ServerIDLen: 8, NonceLen: 9, Key: key}, FourPass},
	} {
		if got := tc.cfg.Mode(); got != tc.want {
			t.Errorf("%+v: Mode = %v, want %v", tc.cfg, got, tc.want)
		}
	}
	if Mode(9).String() != "invalid" {
		t.Errorf("Mode(9) = %q", Mode(9).String())
	}
}

func TestNewCopiesKey(t *testing.T) {
	key := bytes.Repeat([]byte{7}, KeyLen)
	c, err := New(Config{ServerIDLen: 2, NonceLen: 5, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := c.Encode(nil, []byte{1, 2}, []byte{3, 4, 5, 6, 7})
	key[0] = 99
	c.Config().Key[1] = 98
	after, _ := c.Encode(nil, []byte{1, 2}, []byte{3, 4, 5, 6, 7})
	if !bytes.Equal(before, after) {
		t.Fatal("changing the caller's key or Config().Key changed the codec")
	}
}

func TestEncodeErrors(t *testing.T) {
	c, err := New(Config{ServerIDLen: 2, NonceLen: 4})
	if err != nil {
		t.Fatal(err)
	}
	dst := []byte{9}
	if got, err := c.Encode(dst, []byte{1}, []byte{1, 2, 3, 4}); err != ErrServerIDSize || !bytes.Equal(got, dst) {
		t.Errorf("short server ID: %x, %v", got, err)
	}
	if got, err := c.Encode(dst, []byte{1, 2}, []byte{1, 2, 3, 4, 5}); err != ErrNonceSize || !bytes.Equal(got, dst) {
		t.Errorf("long nonce: %x, %v", got, err)
	}
}

// TestDecodeErrors covers each error of the decoders, in the documented
// order of precedence, for each mode.
func TestDecodeErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Rotation: 2, ServerIDLen: 3, NonceLen: 5, LenSelfEncoded: true},
		{Rotation: 2, ServerIDLen: 4, NonceLen: 12, Key: appendixBKey, LenSelfEncoded: true},
		{Rotation: 2, ServerIDLen: 3, NonceLen: 4, Key: appendixBKey, LenSelfEncoded: true},
	} {
		t.Run(cfg.Mode().String(), func(t *testing.T) {
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			good, err := c.Encode(nil, make([]byte, cfg.ServerIDLen), make([]byte, cfg.NonceLen))
			if err != nil {
				t.Fatal(err)
			}
			with := func(first byte) []byte { return append([]byte{first}, good[1:]...) }
			plen := byte(cfg.ServerIDLen + cfg.NonceLen)
			tests := []struct {
				name   string
				cid    []byte
				sidBuf int
				err    error
			}{
				{"ok", good, MaxServerIDLen, nil},
				{"ok, exact buffer", good, cfg.ServerIDLen, nil},
				{"ok, trailing packet bytes", append(append([]byte(nil), good...), 1, 2, 3), MaxServerIDLen, nil},
				{"ok, longer self-encoded length", append(with(2<<5|(plen+2)), 0, 0), MaxServerIDLen, nil},
				{"short buffer first", nil, cfg.ServerIDLen - 1, ErrShortBuffer},
				{"empty", nil, MaxServerIDLen, ErrShortCID},
				{"unroutable", with(7<<5 | plen), MaxServerIDLen, ErrUnroutable},
				{"unroutable, one octet", []byte{0xff}, MaxServerIDLen, ErrUnroutable},
				{"other rotation", with(1<<5 | plen), MaxServerIDLen, ErrRotation},
				{"other rotation, one octet", []byte{3 << 5}, MaxServerIDLen, ErrRotation},
				{"one octet", good[:1], MaxServerIDLen, ErrShortCID},
				{"one short", good[:len(good)-1], MaxServerIDLen, ErrShortCID},
				{"self-encoded too short", with(2<<5 | (plen - 1)), MaxServerIDLen, ErrLength},
				{"self-encoded zero", with(2 << 5), MaxServerIDLen, ErrLength},
				{"self-encoded past the data", with(2<<5 | (plen + 1)), MaxServerIDLen, ErrLength},
				{"self-encoded above 19", append(with(2<<5|20), make([]byte, 20)...), MaxServerIDLen, ErrLength},
			}
			for _, tc := range tests {
				sid := make([]byte, tc.sidBuf)
				n, err := c.Decode(tc.cid, sid)
				if err != tc.err {
					t.Errorf("%s: Decode(%x) = %d, %v; want %v", tc.name, tc.cid, n, err, tc.err)
				}
				if err == nil && n != cfg.ServerIDLen || err != nil && n != 0 {
					t.Errorf("%s: Decode returned n = %d with err %v", tc.name, n, err)
				}
				if tc.err == ErrShortBuffer {
					continue
				}
				if _, err := c.DecodeServerID(tc.cid); err != tc.err {
					t.Errorf("%s: DecodeServerID = %v; want %v", tc.name, err, tc.err)
				}
				var nonce [MaxBlockLen]byte
				if err := c.DecodeFull(tc.cid, sid, nonce[:]); err != tc.err {
					t.Errorf("%s: DecodeFull = %v; want %v", tc.name, err, tc.err)
				}
			}
			var sid [MaxServerIDLen]byte
			if err := c.DecodeFull(good, sid[:], make([]byte, cfg.NonceLen-1)); err != ErrShortBuffer {
				t.Errorf("DecodeFull with a short nonce buffer = %v", err)
			}
		})
	}
}

// TestLenBitsIgnoredWithoutSelfEncoding: without LenSelfEncoded the low
// five bits are not checked, and Encode fills them from the block.
func TestLenBitsIgnoredWithoutSelfEncoding(t *testing.T) {
	c, err := New(Config{Rotation: 4, ServerIDLen: 3, NonceLen: 4, Key: appendixBKey})
	if err != nil {
		t.Fatal(err)
	}
	sid := []byte{1, 2, 3}
	lows := map[byte]bool{}
	for i := range 64 {
		cid, err := c.Encode(nil, sid, []byte{byte(i), 0, 0, 9})
		if err != nil {
			t.Fatal(err)
		}
		lows[cid[0]&0x1f] = true
		for low := range byte(32) {
			cid[0] = 4<<5 | low
			s, err := c.DecodeServerID(cid)
			if err != nil || !bytes.Equal(s.Bytes(), sid) {
				t.Fatalf("low bits %d: %v, %v", low, s, err)
			}
		}
	}
	if len(lows) < 16 {
		t.Errorf("64 CIDs used only %d distinct low-bit values", len(lows))
	}
}

func TestRotation(t *testing.T) {
	for _, tc := range []struct {
		cid  []byte
		want uint8
	}{
		{nil, Unroutable},
		{[]byte{}, Unroutable},
		{[]byte{0x1f}, 0},
		{[]byte{0x20, 1, 2}, 1},
		{[]byte{0xdf}, 6},
		{[]byte{0xe0}, 7},
	} {
		if got := Rotation(tc.cid); got != tc.want {
			t.Errorf("Rotation(%x) = %d, want %d", tc.cid, got, tc.want)
		}
	}
}

func TestSet(t *testing.T) {
	old, err := New(Config{Rotation: 0, ServerIDLen: 2, NonceLen: 4})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := New(Config{Rotation: 1, ServerIDLen: 3, NonceLen: 5, Key: appendixBKey, LenSelfEncoded: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewSet(old, cur, old); err != ErrDuplicateRotation {
		t.Fatalf("duplicate rotation: %v", err)
	}
	s, err := NewSet(old, nil, cur)
	if err != nil {
		t.Fatal(err)
	}
	if s.Codec(0) != old || s.Codec(1) != cur || s.Codec(2) != nil || s.Codec(200) != nil {
		t.Fatal("Codec returns the wrong codecs")
	}
	a, _ := old.Encode(nil, []byte{0xaa, 0xbb}, []byte{1, 2, 3, 4})
	b, _ := cur.Encode(nil, []byte{0xcc, 0xdd, 0xee}, []byte{1, 2, 3, 4, 5})
	for _, tc := range []struct {
		cid  []byte
		want string
		err  error
	}{
		{a, "aabb", nil},
		{b, "ccddee", nil},
		{nil, "", ErrShortCID},
		{[]byte{0xe5, 1, 2, 3, 4, 5, 6}, "", ErrUnroutable},
		{[]byte{0x45, 1, 2, 3, 4, 5, 6}, "", ErrRotation},
		{a[:3], "", ErrShortCID},
	} {
		got, err := s.DecodeServerID(tc.cid)
		if err != tc.err || got.String() != tc.want {
			t.Errorf("DecodeServerID(%x) = %v, %v; want %s, %v", tc.cid, got, err, tc.want, tc.err)
		}
	}
	var zero Set
	if _, err := zero.DecodeServerID(a); err != ErrRotation {
		t.Errorf("zero Set: %v", err)
	}
}

func TestServerID(t *testing.T) {
	a, err := NewServerID([]byte{0x31, 0x44, 0x1a})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseServerID("31:44:1a")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ServerIDFromUint64(0x31441a, 3)
	if err != nil {
		t.Fatal(err)
	}
	if a != b || a != c || a.String() != "31441a" || a.Len() != 3 {
		t.Fatalf("%v %v %v", a, b, c)
	}
	if v, ok := a.Uint64(); !ok || v != 0x31441a {
		t.Errorf("Uint64 = %#x, %v", v, ok)
	}
	// Equal octets of different lengths are different server IDs.
	long, _ := NewServerID([]byte{0x31, 0x44, 0x1a, 0})
	if long == a {
		t.Error("31441a == 31441a00")
	}
	m := map[ServerID]int{a: 1, long: 2}
	if m[b] != 1 || len(m) != 2 {
		t.Error("ServerID does not work as a map key")
	}
	if got := a.AppendTo([]byte{9}); !bytes.Equal(got, []byte{9, 0x31, 0x44, 0x1a}) {
		t.Errorf("AppendTo = %x", got)
	}
	max, _ := NewServerID(bytes.Repeat([]byte{0xff}, MaxServerIDLen))
	if _, ok := max.Uint64(); ok {
		t.Error("Uint64 of a 15-octet server ID reported ok")
	}
	u8, _ := ServerIDFromUint64(^uint64(0), 8)
	if v, ok := u8.Uint64(); !ok || v != ^uint64(0) || u8.Len() != 8 {
		t.Errorf("8-octet round trip: %#x %v", v, ok)
	}

	for _, bad := range [][]byte{nil, {}, make([]byte, 16)} {
		if _, err := NewServerID(bad); err != ErrServerIDSize {
			t.Errorf("NewServerID(%d octets) = %v", len(bad), err)
		}
	}
	for _, tc := range []struct {
		v uint64
		n int
	}{{1, 0}, {1, 9}, {0x100, 1}, {0x1_0000_0000, 4}} {
		if _, err := ServerIDFromUint64(tc.v, tc.n); err != ErrServerIDSize {
			t.Errorf("ServerIDFromUint64(%#x, %d) = %v", tc.v, tc.n, err)
		}
	}
	if _, err := ParseServerID("zz"); err == nil {
		t.Error("ParseServerID(zz) succeeded")
	}
	var zero ServerID
	if zero.Len() != 0 || zero.String() != "" {
		t.Error("zero ServerID is not empty")
	}
}
