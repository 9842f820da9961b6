package quiclb

// Limits from the draft (§3.1, §5.3, Appendix A).
const (
	// MaxRotation is the largest config rotation codepoint a
	// configuration may use.
	MaxRotation = 6
	// Unroutable is the reserved config rotation codepoint 0b111.
	Unroutable = 7
	// NumRotations is the number of usable codepoints, 0..MaxRotation.
	NumRotations = MaxRotation + 1

	// MaxServerIDLen is the longest server ID, in octets.
	MaxServerIDLen = 15
	// MinNonceLen is the shortest nonce, in octets.
	MinNonceLen = 4
	// MaxBlockLen bounds server ID length + nonce length, in octets.
	MaxBlockLen = 19
	// MaxCIDLen is the longest CID this package produces: QUIC v1's limit.
	MaxCIDLen = 1 + MaxBlockLen
	// KeyLen is the length of an AES-128 key.
	KeyLen = 16

	// singlePassLen is the block length that is encrypted as one AES block.
	singlePassLen = 16
)

// Config is one QUIC-LB configuration, shared by the load balancer and the
// servers that use it (draft §5.3, Appendix A).
type Config struct {
	// Rotation is the config rotation codepoint, 0..MaxRotation, written to
	// the three most significant bits of every CID.
	Rotation uint8
	// ServerIDLen is the server ID length in octets, 1..MaxServerIDLen.
	ServerIDLen int
	// NonceLen is the nonce length in octets, at least MinNonceLen, with
	// ServerIDLen + NonceLen <= MaxBlockLen.
	NonceLen int
	// Key is the AES-128 key (KeyLen octets) of the encrypted modes; nil
	// selects plaintext mode, which leaves server IDs readable by anyone.
	Key []byte
	// LenSelfEncoded makes the five low bits of the first octet carry the
	// length of the CID after it (draft §3.3); otherwise they carry bits
	// unrelated to earlier CIDs.
	LenSelfEncoded bool
}

// Validate checks c against the draft's limits. The error is a
// *ConfigError naming the first bad field; test the reason with errors.Is.
func (c Config) Validate() error {
	switch {
	case c.Rotation > MaxRotation:
		return &ConfigError{Field: "rotation", Value: int(c.Rotation), Err: ErrRotationRange}
	case c.ServerIDLen < 1 || c.ServerIDLen > MaxServerIDLen:
		return &ConfigError{Field: "server_id_len", Value: c.ServerIDLen, Err: ErrServerIDLenRange}
	case c.NonceLen < MinNonceLen:
		return &ConfigError{Field: "nonce_len", Value: c.NonceLen, Err: ErrNonceLenRange}
	case c.ServerIDLen+c.NonceLen > MaxBlockLen:
		return &ConfigError{Field: "server_id_len+nonce_len", Value: c.ServerIDLen + c.NonceLen, Err: ErrBlockTooLong}
	case c.Key != nil && len(c.Key) != KeyLen:
		return &ConfigError{Field: "key", Value: len(c.Key), Err: ErrKeyLen}
	}
	return nil
}

// CIDLen returns the length of the CIDs of c: 1 + ServerIDLen + NonceLen.
func (c Config) CIDLen() int { return 1 + c.ServerIDLen + c.NonceLen }

// Mode returns the algorithm c selects.
func (c Config) Mode() Mode {
	switch {
	case c.Key == nil:
		return Plaintext
	case c.ServerIDLen+c.NonceLen == singlePassLen:
		return SinglePass
	default:
		return FourPass
	}
}

// Mode is the algorithm of a configuration.
type Mode uint8

// Modes, as the draft names them (§5.4).
const (
	// Plaintext: the server ID is in the clear.
	Plaintext Mode = iota
	// SinglePass: the 16-octet block is one AES-128-ECB block.
	SinglePass
	// FourPass: a four-round Feistel network over AES-128-ECB.
	FourPass
)

// String returns the mode's name, for logs and metric labels.
func (m Mode) String() string {
	switch m {
	case Plaintext:
		return "plaintext"
	case SinglePass:
		return "single-pass"
	case FourPass:
		return "four-pass"
	}
	return "invalid"
}
