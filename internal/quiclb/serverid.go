package quiclb

import (
	"encoding/hex"
	"strings"
)

// ServerID is a server ID of 1..MaxServerIDLen octets held by value. It is
// comparable, so it can key the datapath's server ID -> backend map, and
// the zero value (length 0) is no server ID. Two ServerIDs are equal when
// their lengths and octets are.
type ServerID struct {
	n uint8
	b [MaxServerIDLen]byte
}

// NewServerID copies b, which must be 1..MaxServerIDLen octets long
// (ErrServerIDSize otherwise).
func NewServerID(b []byte) (ServerID, error) {
	var s ServerID
	if len(b) < 1 || len(b) > MaxServerIDLen {
		return s, ErrServerIDSize
	}
	s.n = uint8(copy(s.b[:], b))
	return s, nil
}

// ServerIDFromUint64 returns v as a big-endian server ID of length octets
// (1..8). It fails with ErrServerIDSize when length is out of range or v
// does not fit in it.
func ServerIDFromUint64(v uint64, length int) (ServerID, error) {
	var s ServerID
	if length < 1 || length > 8 || (length < 8 && v>>(8*length) != 0) {
		return s, ErrServerIDSize
	}
	for i := length - 1; i >= 0; i-- {
		s.b[i] = byte(v)
		v >>= 8
	}
	s.n = uint8(length)
	return s, nil
}

// ParseServerID parses hex digits, optionally with colons between octets as
// the draft's YANG model writes them ("31:44:1a" or "31441a").
func ParseServerID(text string) (ServerID, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(text, ":", ""))
	if err != nil {
		return ServerID{}, err
	}
	return NewServerID(b)
}

// Len returns the length in octets; 0 for the zero value.
func (s ServerID) Len() int { return int(s.n) }

// AppendTo appends the octets to dst.
func (s ServerID) AppendTo(dst []byte) []byte { return append(dst, s.b[:s.n]...) }

// Bytes returns a new copy of the octets.
func (s ServerID) Bytes() []byte { return s.AppendTo(nil) }

// Uint64 returns the octets as a big-endian integer, and false (with 0)
// when the server ID is longer than 8 octets.
func (s ServerID) Uint64() (uint64, bool) {
	if s.n > 8 {
		return 0, false
	}
	var v uint64
	for _, c := range s.b[:s.n] {
		v = v<<8 | uint64(c)
	}
	return v, true
}

// String returns the octets in lower-case hex, without separators.
func (s ServerID) String() string { return hex.EncodeToString(s.b[:s.n]) }
