package quiclb

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

var writeCorpus = flag.Bool("write-corpus", false, "write the seed corpus of FuzzDecode to testdata/fuzz")

// fuzzConfigs are the configurations FuzzDecode picks from with its first
// argument: the draft's vector configurations, each mode without length
// self-encoding, and the longest and shortest blocks.
func fuzzConfigs() []Config {
	var cfgs []Config
	for _, v := range draftVectors() {
		cfgs = append(cfgs, v.cfg)
	}
	return append(cfgs,
		Config{Rotation: 5, ServerIDLen: 2, NonceLen: 4},
		Config{Rotation: 5, ServerIDLen: 6, NonceLen: 10, Key: appendixBKey},
		Config{Rotation: 5, ServerIDLen: 5, NonceLen: 6, Key: appendixBKey},
		Config{Rotation: 6, ServerIDLen: 15, NonceLen: 4, Key: exampleKey, LenSelfEncoded: true},
		Config{Rotation: 6, ServerIDLen: 1, NonceLen: 4, Key: exampleKey},
	)
}

// fuzzSeeds returns (config index, CID) pairs: every draft vector under
// its own configuration, and CIDs that fail each check.
func fuzzSeeds() []struct {
	name string
	cfg  uint8
	cid  []byte
} {
	type seed = struct {
		name string
		cfg  uint8
		cid  []byte
	}
	var seeds []seed
	for i, v := range draftVectors() {
		seeds = append(seeds, seed{fmt.Sprintf("vector-%d", i), uint8(i), mustHex(v.cid)})
	}
	cid := mustHex(draftVectors()[2].cid)
	seeds = append(seeds,
		seed{"empty", 2, nil},
		seed{"unroutable", 2, append([]byte{0xe7}, cid[1:]...)},
		seed{"other-rotation", 2, append([]byte{0x27}, cid[1:]...)},
		seed{"short", 2, cid[:len(cid)-1]},
		seed{"bad-length", 2, append([]byte{0x03}, cid[1:]...)},
		seed{"trailing", 2, append(append([]byte(nil), cid...), 0x40, 0x41)},
		seed{"no-self-encoding", 9, append([]byte{0xbf}, bytes.Repeat([]byte{0x5a}, 16)...)},
	)
	return seeds
}

// FuzzDecode feeds arbitrary CIDs to the decoders of one of fuzzConfigs.
// Besides not panicking: the decoders and a Set agree; an error is the one
// the routability rules predict; and a CID that decodes re-encodes, from
// its server ID and nonce, to the same octets (and the same first octet
// when that octet is fully determined).
func FuzzDecode(f *testing.F) {
	var codecs []*Codec
	for _, cfg := range fuzzConfigs() {
		c, err := New(cfg)
		if err != nil {
			f.Fatal(err)
		}
		codecs = append(codecs, c)
	}
	for _, s := range fuzzSeeds() {
		f.Add(s.cfg, s.cid)
	}
	f.Fuzz(func(t *testing.T, which uint8, cid []byte) {
		c := codecs[int(which)%len(codecs)]
		cfg := c.Config()
		plen := cfg.ServerIDLen + cfg.NonceLen

		var want error
		switch {
		case len(cid) == 0:
			want = ErrShortCID
		case cid[0]>>5 == 7:
			want = ErrUnroutable
		case cid[0]>>5 != cfg.Rotation:
			want = ErrRotation
		case len(cid) < 1+plen:
			want = ErrShortCID
		case cfg.LenSelfEncoded && (int(cid[0]&0x1f) < plen || int(cid[0]&0x1f) > MaxBlockLen || int(cid[0]&0x1f) >= len(cid)):
			want = ErrLength
		}

		var sid [MaxServerIDLen]byte
		n, err := c.Decode(cid, sid[:])
		if err != want {
			t.Fatalf("Decode(%x) under %+v = %v, want %v", cid, cfg, err, want)
		}
		s, err2 := c.DecodeServerID(cid)
		set, _ := NewSet(c)
		s2, err3 := set.DecodeServerID(cid)
		if err2 != err || err3 != err || s != s2 || !bytes.Equal(s.Bytes(), sid[:n]) {
			t.Fatalf("decoders disagree on %x: Decode %x %v, DecodeServerID %v %v, Set %v %v",
				cid, sid[:n], err, s, err2, s2, err3)
		}
		if err != nil {
			return
		}

		var fullSID [MaxServerIDLen]byte
		var nonce [MaxBlockLen]byte
		if err := c.DecodeFull(cid, fullSID[:], nonce[:]); err != nil {
			t.Fatalf("DecodeFull(%x) = %v after Decode succeeded", cid, err)
		}
		if !bytes.Equal(fullSID[:n], sid[:n]) {
			t.Fatalf("DecodeFull server ID %x, Decode %x", fullSID[:n], sid[:n])
		}
		again, err := c.Encode(nil, sid[:n], nonce[:cfg.NonceLen])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again[1:], cid[1:1+plen]) || Rotation(again) != Rotation(cid) {
			t.Fatalf("%x decodes to %x/%x, which encodes to %x", cid, sid[:n], nonce[:cfg.NonceLen], again)
		}
		if cfg.LenSelfEncoded && int(cid[0]&0x1f) == plen && again[0] != cid[0] {
			t.Fatalf("first octet %#x re-encodes to %#x", cid[0], again[0])
		}
	})
}

// TestWriteCorpus regenerates testdata/fuzz/FuzzDecode from fuzzSeeds.
func TestWriteCorpus(t *testing.T) {
	if !*writeCorpus {
		t.Skip("run with -write-corpus to regenerate testdata/fuzz")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range fuzzSeeds() {
		body := fmt.Sprintf("go test fuzz v1\nbyte(%s)\n[]byte(%s)\n",
			strconv.QuoteRune(rune(s.cfg)), strconv.Quote(string(s.cid)))
		if err := os.WriteFile(filepath.Join(dir, "seed-"+s.name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
