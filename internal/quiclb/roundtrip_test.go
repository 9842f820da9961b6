package quiclb

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// legalLengths returns every legal (server ID length, nonce length) pair.
func legalLengths() [][2]int {
	var ls [][2]int
	for sid := 1; sid <= MaxServerIDLen; sid++ {
		for nonce := MinNonceLen; sid+nonce <= MaxBlockLen; nonce++ {
			ls = append(ls, [2]int{sid, nonce})
		}
	}
	return ls
}

func fill(rng *rand.Rand, b []byte) []byte {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestRoundTrip encodes random server IDs and nonces for every legal pair
// of lengths, in plaintext and encrypted mode, with and without length
// self-encoding, and checks the CID's layout, that the encrypted block
// equals the reference model's, and that every decoder returns what went
// in.
func TestRoundTrip(t *testing.T) {
	const perConfig = 16
	rng := rand.New(rand.NewChaCha8([32]byte{'q', 'u', 'i', 'c', '-', 'l', 'b'}))
	lengths := legalLengths()
	if len(lengths) != 120 {
		t.Fatalf("%d legal length pairs, want 120", len(lengths))
	}
	for _, l := range lengths {
		for _, encrypted := range []bool{false, true} {
			cfg := Config{
				Rotation:       uint8(rng.IntN(NumRotations)),
				ServerIDLen:    l[0],
				NonceLen:       l[1],
				LenSelfEncoded: rng.IntN(2) == 0,
			}
			if encrypted {
				cfg.Key = fill(rng, make([]byte, KeyLen))
			}
			c, err := New(cfg)
			if err != nil {
				t.Fatalf("%+v: %v", cfg, err)
			}
			for range perConfig {
				roundTrip(t, rng, c)
			}
		}
	}
}

func roundTrip(t *testing.T, rng *rand.Rand, c *Codec) {
	t.Helper()
	cfg := c.Config()
	sid := fill(rng, make([]byte, cfg.ServerIDLen))
	nonce := fill(rng, make([]byte, cfg.NonceLen))
	prefix := []byte{0xaa, 0xbb}
	cid, err := c.Encode(prefix, sid, nonce)
	if err != nil {
		t.Fatalf("%+v: Encode: %v", cfg, err)
	}
	if !bytes.Equal(cid[:2], []byte{0xaa, 0xbb}) {
		t.Fatalf("%+v: Encode overwrote dst's prefix", cfg)
	}
	cid = cid[2:]
	if len(cid) != cfg.CIDLen() || len(cid) != c.CIDLen() {
		t.Fatalf("%+v: len %d, want %d", cfg, len(cid), cfg.CIDLen())
	}
	if Rotation(cid) != cfg.Rotation {
		t.Fatalf("%+v: rotation %d", cfg, Rotation(cid))
	}
	if cfg.LenSelfEncoded && int(cid[0]&0x1f) != cfg.ServerIDLen+cfg.NonceLen {
		t.Fatalf("%+v: first octet %#x does not encode the length", cfg, cid[0])
	}
	pt := append(append([]byte(nil), sid...), nonce...)
	want := pt
	if cfg.Key != nil {
		want = refEncrypt(cfg.Key, pt)
	}
	if !bytes.Equal(cid[1:], want) {
		t.Fatalf("%+v: sid %x nonce %x: block %x, reference model %x", cfg, sid, nonce, cid[1:], want)
	}

	var got [MaxServerIDLen]byte
	n, err := c.Decode(cid, got[:])
	if err != nil || !bytes.Equal(got[:n], sid) {
		t.Fatalf("%+v: Decode(%x) = %x, %v; want %x", cfg, cid, got[:n], err, sid)
	}
	// A longer slice (the rest of a short-header packet) decodes the same.
	n, err = c.Decode(append(append([]byte(nil), cid...), 0x01, 0x02), got[:])
	if err != nil || !bytes.Equal(got[:n], sid) {
		t.Fatalf("%+v: Decode with trailing bytes = %x, %v", cfg, got[:n], err)
	}
	s, err := c.DecodeServerID(cid)
	if err != nil || !bytes.Equal(s.Bytes(), sid) {
		t.Fatalf("%+v: DecodeServerID = %v, %v; want %x", cfg, s, err, sid)
	}
	var gotNonce [MaxBlockLen]byte
	if err := c.DecodeFull(cid, got[:], gotNonce[:]); err != nil ||
		!bytes.Equal(got[:len(sid)], sid) || !bytes.Equal(gotNonce[:len(nonce)], nonce) {
		t.Fatalf("%+v: DecodeFull = %x %x, %v; want %x %x", cfg, got[:len(sid)], gotNonce[:len(nonce)], err, sid, nonce)
	}
	again, err := c.Encode(nil, sid, nonce)
	if err != nil || !bytes.Equal(again, cid) {
		t.Fatalf("%+v: Encode is not deterministic: %x then %x", cfg, cid, again)
	}
}

// TestFourPassIsPermutation decrypts random blocks and encrypts them back,
// for every four-pass length: the network (nibble split included) must be
// a bijection, or a decoded CID would not re-encode to itself.
func TestFourPassIsPermutation(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{'p'}))
	for _, l := range legalLengths() {
		if l[0]+l[1] == singlePassLen {
			continue
		}
		c, err := New(Config{ServerIDLen: l[0], NonceLen: l[1], Key: fill(rng, make([]byte, KeyLen))})
		if err != nil {
			t.Fatal(err)
		}
		for range 8 {
			ct := fill(rng, make([]byte, c.plen))
			pt := make([]byte, c.plen)
			c.decryptFourPass(ct, pt, true)
			back := append([]byte(nil), pt...)
			c.encryptFourPass(back)
			if !bytes.Equal(back, ct) {
				t.Fatalf("sid %d nonce %d: %x decrypts to %x, which encrypts to %x", l[0], l[1], ct, pt, back)
			}
		}
	}
}
