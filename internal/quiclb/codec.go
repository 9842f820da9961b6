package quiclb

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"sync"
)

var le = binary.LittleEndian

// Codec encodes and decodes the CIDs of one Config. It is immutable after
// New and safe for concurrent use.
type Codec struct {
	cfg   Config       // Key is the Codec's own copy
	block cipher.Block // AES-128; nil in plaintext mode
	mode  Mode

	sidLen int // server ID length
	plen   int // plaintext block length: server ID + nonce
	half   int // four-pass half length: plen/2 rounded up
	// Four-pass masks for the nibble-split middle octet of an odd plen:
	// lmask clears the last four bits of the left half, rmask the first
	// four of the right. Both are 0xff when plen is even.
	lmask, rmask byte
	// intoLeft and intoRight select, as two little-endian words, the bits
	// of a round output that a pass XORs into the left or right half: the
	// first half octets, less the cleared nibble. The rest stay zero.
	intoLeft, intoRight [2]uint64
	// sidInLeft: the server ID lies wholly in the left half (sidLen <=
	// plen/2), so decoding it needs three AES passes instead of four.
	sidInLeft bool
}

// New validates cfg and builds its Codec, expanding the AES key once.
func New(cfg Config) (*Codec, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Codec{
		cfg:    cfg,
		mode:   cfg.Mode(),
		sidLen: cfg.ServerIDLen,
		plen:   cfg.ServerIDLen + cfg.NonceLen,
		lmask:  0xff,
		rmask:  0xff,
	}
	c.half = (c.plen + 1) / 2
	if c.plen%2 == 1 {
		c.lmask, c.rmask = 0xf0, 0x0f
	}
	c.sidInLeft = c.sidLen <= c.plen/2
	var lm, rm [16]byte
	for i := range c.half {
		lm[i], rm[i] = 0xff, 0xff
	}
	lm[c.half-1] &= c.lmask
	rm[0] &= c.rmask
	c.intoLeft = [2]uint64{le.Uint64(lm[:8]), le.Uint64(lm[8:])}
	c.intoRight = [2]uint64{le.Uint64(rm[:8]), le.Uint64(rm[8:])}
	if cfg.Key != nil {
		c.cfg.Key = append([]byte(nil), cfg.Key...)
		block, err := aes.NewCipher(c.cfg.Key)
		if err != nil { // unreachable: Validate checked the length
			return nil, &ConfigError{Field: "key", Value: len(cfg.Key), Err: ErrKeyLen}
		}
		c.block = block
	}
	return c, nil
}

// Config returns the codec's configuration, with a copy of its key.
func (c *Codec) Config() Config {
	cfg := c.cfg
	if cfg.Key != nil {
		cfg.Key = append([]byte(nil), cfg.Key...)
	}
	return cfg
}

// Mode returns the codec's algorithm.
func (c *Codec) Mode() Mode { return c.mode }

// Rotation returns the codec's config rotation codepoint.
func (c *Codec) Rotation() uint8 { return c.cfg.Rotation }

// ServerIDLen returns the configured server ID length in octets.
func (c *Codec) ServerIDLen() int { return c.sidLen }

// NonceLen returns the configured nonce length in octets.
func (c *Codec) NonceLen() int { return c.plen - c.sidLen }

// CIDLen returns the length of the codec's CIDs: 1 + server ID length +
// nonce length.
func (c *Codec) CIDLen() int { return 1 + c.plen }

// Rotation returns the config rotation codepoint of cid: its three most
// significant bits. An empty cid yields Unroutable.
func Rotation(cid []byte) uint8 {
	if len(cid) == 0 {
		return Unroutable
	}
	return cid[0] >> 5
}

// Encode appends to dst the CID that carries serverID (ServerIDLen octets)
// and nonce (NonceLen octets), and returns the extended slice. It does not
// allocate when dst has CIDLen() spare capacity.
//
// The nonce is the caller's to choose: in plaintext mode it must be random
// (it is visible); in the encrypted modes it must never repeat under one
// key (draft §9.6). Without LenSelfEncoded the five low bits of the first
// octet are a fold of the octets after it, so they reveal nothing those
// octets do not and relate to earlier CIDs only as much as they do.
func (c *Codec) Encode(dst, serverID, nonce []byte) ([]byte, error) {
	if len(serverID) != c.sidLen {
		return dst, ErrServerIDSize
	}
	if len(nonce) != c.plen-c.sidLen {
		return dst, ErrNonceSize
	}
	n := len(dst)
	dst = append(dst, make([]byte, 1+c.plen)...) // the compiler grows dst in place: no temporary
	cid := dst[n:]
	out := cid[1:]
	copy(out, serverID)
	copy(out[c.sidLen:], nonce)
	switch c.mode {
	case SinglePass:
		buf := getBlock()
		copy(buf[:], out)
		c.block.Encrypt(buf[:], buf[:])
		copy(out, buf[:])
		putBlock(buf)
	case FourPass:
		c.encryptFourPass(out)
	}
	low := byte(c.plen)
	if !c.cfg.LenSelfEncoded {
		low = 0
		for _, b := range out {
			low ^= b ^ b>>5
		}
	}
	cid[0] = c.cfg.Rotation<<5 | low&0x1f
	return dst, nil
}

// Decode writes the server ID that cid carries to serverID[:ServerIDLen()]
// and returns ServerIDLen(). It never allocates.
//
// cid may run past the CID, as the rest of a short-header packet does:
// only the first CIDLen() octets are read. Errors, checked in this order:
// ErrShortBuffer (serverID too short), ErrShortCID (cid empty),
// ErrUnroutable (rotation 0b111), ErrRotation (another rotation),
// ErrShortCID (cid shorter than CIDLen()), ErrLength (self-encoded length
// wrong, with LenSelfEncoded). A server ID decodes from any long enough
// CID of the codec's rotation; whether it names a live server is for the
// caller to decide.
func (c *Codec) Decode(cid, serverID []byte) (int, error) {
	if len(serverID) < c.sidLen {
		return 0, ErrShortBuffer
	}
	if err := c.check(cid); err != nil {
		return 0, err
	}
	c.open(cid[1:1+c.plen], serverID[:c.sidLen], false)
	return c.sidLen, nil
}

// DecodeServerID is Decode returning the server ID by value. It never
// allocates.
func (c *Codec) DecodeServerID(cid []byte) (ServerID, error) {
	var s ServerID
	if err := c.check(cid); err != nil {
		return s, err
	}
	c.open(cid[1:1+c.plen], s.b[:c.sidLen], false)
	s.n = uint8(c.sidLen)
	return s, nil
}

// DecodeFull is Decode that also recovers the nonce into
// nonce[:NonceLen()]; in the four-pass mode it always takes four AES
// passes. Encode(nil, serverID, nonce) then reproduces cid[1:CIDLen()].
// It never allocates.
func (c *Codec) DecodeFull(cid, serverID, nonce []byte) error {
	if len(serverID) < c.sidLen || len(nonce) < c.plen-c.sidLen {
		return ErrShortBuffer
	}
	if err := c.check(cid); err != nil {
		return err
	}
	var pt [MaxBlockLen]byte
	c.open(cid[1:1+c.plen], pt[:c.plen], true)
	copy(serverID, pt[:c.sidLen])
	copy(nonce, pt[c.sidLen:c.plen])
	return nil
}

// check applies the routability rules of draft §4.1 to cid.
func (c *Codec) check(cid []byte) error {
	if len(cid) == 0 {
		return ErrShortCID
	}
	switch r := cid[0] >> 5; {
	case r == Unroutable:
		return ErrUnroutable
	case r != c.cfg.Rotation:
		return ErrRotation
	}
	if len(cid) < 1+c.plen {
		return ErrShortCID
	}
	if c.cfg.LenSelfEncoded {
		l := int(cid[0] & 0x1f)
		if l < c.plen || l > MaxBlockLen || 1+l > len(cid) {
			return ErrLength
		}
	}
	return nil
}

// open decrypts the plaintext block ct (plen octets) into out: the server
// ID when len(out) == sidLen and full is false, the whole block when full.
func (c *Codec) open(ct, out []byte, full bool) {
	switch c.mode {
	case Plaintext:
		copy(out, ct)
	case SinglePass:
		buf := getBlock()
		copy(buf[:], ct)
		c.block.Decrypt(buf[:], buf[:])
		copy(out, buf[:])
		putBlock(buf)
	case FourPass:
		c.decryptFourPass(ct, out, full)
	}
}

// The four-pass network keeps each half in a [16]byte whose octets past
// the half are zero, so that the half is its own expand() input once the
// length and pass octets are set, and a round XORs whole words under a
// mask. The first and last four bits of the middle octet of an odd block
// are kept zero in the left and right half respectively, as the draft's
// "clear bits" steps do.

// encryptFourPass encrypts the plaintext block b in place (draft §5.4.2).
func (c *Codec) encryptFourPass(b []byte) {
	var l, r [16]byte
	c.split(b, &l, &r)
	buf := getBlock()
	c.round(buf, 1, &l, &r, &c.intoRight)
	c.round(buf, 2, &r, &l, &c.intoLeft)
	c.round(buf, 3, &l, &r, &c.intoRight)
	c.round(buf, 4, &r, &l, &c.intoLeft)
	putBlock(buf)
	c.join(b, &l, &r)
}

// decryptFourPass decrypts ct into out (see open), running the passes in
// reverse and skipping the last when the server ID is all in the left half.
func (c *Codec) decryptFourPass(ct, out []byte, full bool) {
	var l, r [16]byte
	c.split(ct, &l, &r)
	buf := getBlock()
	c.round(buf, 4, &r, &l, &c.intoLeft)
	c.round(buf, 3, &l, &r, &c.intoRight)
	c.round(buf, 2, &r, &l, &c.intoLeft)
	if !full && c.sidInLeft {
		putBlock(buf)
		copy(out, l[:c.sidLen])
		return
	}
	c.round(buf, 1, &l, &r, &c.intoRight)
	putBlock(buf)

	if full {
		c.join(out, &l, &r)
		return
	}
	var pt [MaxBlockLen]byte
	c.join(pt[:c.plen], &l, &r)
	copy(out, pt[:c.sidLen])
}

// split copies the plen-octet block b into its halves. For an odd plen the
// middle octet's high nibble goes to the left half, its low one to the
// right.
func (c *Codec) split(b []byte, l, r *[16]byte) {
	h := c.half
	copy(l[:h], b[:h])
	copy(r[:h], b[c.plen-h:])
	l[h-1] &= c.lmask
	r[0] &= c.rmask
}

// round is one Feistel pass: dst ^= truncate(AES(expand(plen, pass, src)),
// half), the cleared nibble and the octets past the half masked out by
// into. buf is the AES scratch block.
func (c *Codec) round(buf *[16]byte, pass byte, src, dst *[16]byte, into *[2]uint64) {
	le.PutUint64(buf[:8], le.Uint64(src[:8]))
	le.PutUint64(buf[8:], le.Uint64(src[8:])|uint64(c.plen)<<48|uint64(pass)<<56)
	c.block.Encrypt(buf[:], buf[:])
	le.PutUint64(dst[:8], le.Uint64(dst[:8])^le.Uint64(buf[:8])&into[0])
	le.PutUint64(dst[8:], le.Uint64(dst[8:])^le.Uint64(buf[8:])&into[1])
}

// join writes the halves back as one plen-octet block. For an odd plen the
// middle octet is the left half's high nibble and the right half's low one.
func (c *Codec) join(out []byte, l, r *[16]byte) {
	h := c.half
	copy(out[:h], l[:h])
	if c.plen%2 == 1 {
		out[h-1] |= r[0]
		copy(out[h:c.plen], r[1:h])
	} else {
		copy(out[h:c.plen], r[:h])
	}
}

// blockPool holds the AES scratch blocks. A block passed to cipher.Block's
// methods escapes (the call is through an interface), so a stack array
// would be a heap allocation on every call; pooled blocks are not.
var blockPool = sync.Pool{New: func() any { return new([16]byte) }}

func getBlock() *[16]byte  { return blockPool.Get().(*[16]byte) }
func putBlock(b *[16]byte) { blockPool.Put(b) }
