package quiclb

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// The test vectors of draft-ietf-quic-load-balancers (revisions -19 to
// -21), Appendix B "Load Balancer Test Vectors", and the worked example of
// §5.4.2 ("Encryption Example"). In Appendix B every server self-encodes
// the CID length.
//
// Two rows of Appendix B are misprinted in the draft and are checked as
// the draft's own rules fix them:
//
//   - Unencrypted row 2 (cr_bits 1, sid 350d28b420) prints the nonce as
//     "3487d970b", nine hex digits, and the CID as "20a350d28b4203487d970b",
//     whose first octet 0x20 says length 0. With a 5-octet server ID and a
//     5-octet nonce the first octet is 1<<5 | 10 = 0x2a; the lost nonce
//     digit is taken as a 0 before the last one (3487d9700b).
//   - Encrypted row 4 (cr_bits 3, 9 + 9 octets) prints first octet 0x12,
//     which is rotation 0; rotation 3 with length 18 is 0x72. The 18
//     encrypted octets after it are as printed.
type vector struct {
	name      string
	cfg       Config
	sid, nonc string // hex
	cid       string // hex
}

var (
	appendixBKey = mustHex("8f95f09245765f80256934e50c66207f")
	exampleKey   = mustHex("fdf726a9893ec05c0632d3956680baf0") // §5.4.2 example
)

func draftVectors() []vector {
	cfg := func(rot uint8, sidLen, nonceLen int, key []byte) Config {
		return Config{Rotation: rot, ServerIDLen: sidLen, NonceLen: nonceLen, Key: key, LenSelfEncoded: true}
	}
	return []vector{
		// Appendix B.1, unencrypted CIDs.
		{"B.1/cr0", cfg(0, 3, 4, nil), "c4605e", "4504cc4f", "07c4605e4504cc4f"},
		{"B.1/cr1-erratum", cfg(1, 5, 5, nil), "350d28b420", "3487d9700b", "2a350d28b4203487d9700b"},
		// Appendix B.2, encrypted CIDs.
		{"B.2/cr0-four-pass-odd", cfg(0, 3, 4, appendixBKey), "ed793a", "ee080dbf", "0720b1d07b359d3c"},
		{"B.2/cr1-four-pass-sid-longer", cfg(1, 10, 5, appendixBKey), "ed793a51d49b8f5fab65", "ee080dbf48",
			"2fcc381bc74cb4fbad2823a3d1f8fed2"},
		{"B.2/cr2-single-pass", cfg(2, 8, 8, appendixBKey), "ed793a51d49b8f5f", "ee080dbf48c0d1e5",
			"504dd2d05a7b0de9b2b9907afb5ecf8cc3"},
		{"B.2/cr3-four-pass-even-erratum", cfg(3, 9, 9, appendixBKey), "ed793a51d49b8f5fab", "ee080dbf48c0d1e55d",
			"725779c9cc86beb3a3a4a3ca96fce4bfe0cdbc"},
		// §5.4.2, the four-pass encryption example.
		{"5.4.2/example", cfg(0, 3, 4, exampleKey), "31441a", "9c69c275", "0767947d29be054a"},
	}
}

func TestDraftVectors(t *testing.T) {
	for _, v := range draftVectors() {
		t.Run(v.name, func(t *testing.T) {
			c, err := New(v.cfg)
			if err != nil {
				t.Fatal(err)
			}
			sid, nonce, want := mustHex(v.sid), mustHex(v.nonc), mustHex(v.cid)
			got, err := c.Encode(nil, sid, nonce)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Encode = %x, want %x", got, want)
			}
			if r := Rotation(got); r != v.cfg.Rotation {
				t.Errorf("Rotation = %d, want %d", r, v.cfg.Rotation)
			}
			var out [MaxServerIDLen]byte
			n, err := c.Decode(want, out[:])
			if err != nil || !bytes.Equal(out[:n], sid) {
				t.Errorf("Decode = %x, %v; want %x", out[:n], err, sid)
			}
			var gotNonce [MaxBlockLen]byte
			if err := c.DecodeFull(want, out[:], gotNonce[:]); err != nil ||
				!bytes.Equal(out[:len(sid)], sid) || !bytes.Equal(gotNonce[:len(nonce)], nonce) {
				t.Errorf("DecodeFull = %x, %x, %v; want %x, %x", out[:len(sid)], gotNonce[:len(nonce)], err, sid, nonce)
			}
		})
	}
}

// TestVectorModes makes sure the vectors cover every mode, both parities
// of the four-pass block, and both four-pass server ID decoders (three
// passes when the server ID fits in the left half, four otherwise).
func TestVectorModes(t *testing.T) {
	seen := map[string]bool{}
	for _, v := range draftVectors() {
		c, err := New(v.cfg)
		if err != nil {
			t.Fatal(err)
		}
		seen[c.Mode().String()] = true
		if c.Mode() == FourPass {
			seen[map[bool]string{true: "four-pass/odd", false: "four-pass/even"}[c.plen%2 == 1]] = true
			seen[map[bool]string{true: "four-pass/3-pass-decode", false: "four-pass/4-pass-decode"}[c.sidInLeft]] = true
		}
	}
	for _, k := range []string{"plaintext", "single-pass", "four-pass/odd", "four-pass/even",
		"four-pass/3-pass-decode", "four-pass/4-pass-decode"} {
		if !seen[k] {
			t.Errorf("no vector for %s (have %v)", k, seen)
		}
	}
}

// TestFourPassExampleSteps follows the §5.4.2 example pass by pass: each
// AES input is expand(7, pass, half) and the halves after each pass, with
// the middle nibble cleared, are the draft's left_1, right_1, ... values.
func TestFourPassExampleSteps(t *testing.T) {
	c, err := New(Config{ServerIDLen: 3, NonceLen: 4, Key: exampleKey, LenSelfEncoded: true})
	if err != nil {
		t.Fatal(err)
	}
	var l, r [16]byte
	copy(l[:], mustHex("31441a90")) // left_0
	copy(r[:], mustHex("0c69c275")) // right_0
	steps := []struct {
		pass      byte
		aesInput  string
		aesOutput string
		left      bool // the pass updates the left half
		after     string
	}{
		{1, "31441a90000000000000000000000701", "a255dd8cdacf01948d3a848c3c7fee23", false, "0e3c1ff9"},
		{2, "0e3c1ff9000000000000000000000702", "e5e452cb9e1bedb0b2bf830506bf4c4e", true, "d4a04850"},
		{3, "d4a04850000000000000000000000703", "b7821ab3024fed0913b6a04d18e3216f", false, "09be054a"},
		{4, "09be054a000000000000000000000704", "b334357cfdf81e3fafe180154eaf7378", true, "67947d20"},
	}
	buf := new([16]byte)
	for _, s := range steps {
		src, dst := &l, &r
		if s.left {
			src, dst = &r, &l
		}
		// Check the expanded input and its encryption independently of round.
		var in [16]byte
		copy(in[:], src[:c.half])
		in[14], in[15] = byte(c.plen), s.pass
		if got := hex.EncodeToString(in[:]); got != s.aesInput {
			t.Fatalf("pass %d: expand = %s, want %s", s.pass, got, s.aesInput)
		}
		var enc [16]byte
		c.block.Encrypt(enc[:], in[:])
		if got := hex.EncodeToString(enc[:]); got != s.aesOutput {
			t.Fatalf("pass %d: AES = %s, want %s", s.pass, got, s.aesOutput)
		}
		into := &c.intoRight
		if s.left {
			into = &c.intoLeft
		}
		c.round(buf, s.pass, src, dst, into)
		if got := hex.EncodeToString(dst[:c.half]); got != s.after {
			t.Fatalf("pass %d: half = %s, want %s", s.pass, got, s.after)
		}
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}
