package quiclb

import (
	"errors"
	"fmt"
)

// Errors of Config.Validate and New, each wrapped in a *ConfigError that
// names the field and its value. Test with errors.Is.
var (
	// ErrRotationRange: Config.Rotation is not in 0..MaxRotation (7 is the
	// reserved unroutable codepoint).
	ErrRotationRange = errors.New("config rotation must be 0..6")
	// ErrServerIDLenRange: Config.ServerIDLen is not in 1..MaxServerIDLen.
	ErrServerIDLenRange = errors.New("server ID length must be 1..15")
	// ErrNonceLenRange: Config.NonceLen is below MinNonceLen.
	ErrNonceLenRange = errors.New("nonce length must be at least 4")
	// ErrBlockTooLong: server ID length + nonce length exceeds
	// MaxBlockLen, so the CID would exceed QUIC v1's 20 octets.
	ErrBlockTooLong = errors.New("server ID and nonce lengths must sum to at most 19")
	// ErrKeyLen: Config.Key is not nil and not KeyLen octets long.
	ErrKeyLen = errors.New("key must be 16 octets, or nil for plaintext")
)

// Errors of Encode and of the ServerID constructors.
var (
	// ErrServerIDSize: a server ID has the wrong length (for Encode, other
	// than Config.ServerIDLen; for a ServerID, outside 1..15 octets).
	ErrServerIDSize = errors.New("server ID has the wrong length")
	// ErrNonceSize: the nonce given to Encode is not Config.NonceLen long.
	ErrNonceSize = errors.New("nonce has the wrong length")
)

// Errors of the decoders. They are plain sentinels so that the datapath can
// count them by reason without allocating.
var (
	// ErrUnroutable: the CID's config rotation bits are 0b111, the
	// codepoint of servers without a configuration (draft §3.2).
	ErrUnroutable = errors.New("unroutable connection ID (config rotation 0b111)")
	// ErrRotation: the CID's config rotation codepoint is not the codec's
	// (or, for a Set, has no codec).
	ErrRotation = errors.New("connection ID of another config rotation")
	// ErrShortCID: the CID is shorter than 1 + server ID length + nonce
	// length (an empty CID included).
	ErrShortCID = errors.New("connection ID too short")
	// ErrLength: with Config.LenSelfEncoded, the length in the first octet
	// is shorter than the configured block, longer than 19, or longer than
	// the bytes given.
	ErrLength = errors.New("self-encoded connection ID length does not fit")
	// ErrShortBuffer: the server ID (or nonce) buffer given to a decoder is
	// shorter than the configured length.
	ErrShortBuffer = errors.New("buffer too short")
	// ErrDuplicateRotation: NewSet got two codecs of one rotation codepoint.
	ErrDuplicateRotation = errors.New("two configurations share a config rotation codepoint")
)

// ConfigError reports a bad Config field.
type ConfigError struct {
	Field string // rotation, server_id_len, nonce_len, server_id_len+nonce_len or key
	Value int    // the field's value (the key's length for key)
	Err   error  // one of the Err*Range, ErrBlockTooLong, ErrKeyLen sentinels
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("quiclb: %s = %d: %v", e.Field, e.Value, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }
