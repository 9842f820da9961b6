// Package quiclb encodes and decodes routable QUIC connection IDs as defined
// by "QUIC-LB: Generating Routable QUIC Connection IDs"
// (draft-ietf-quic-load-balancers, revisions -19 to -21), so that the load
// balancer can route a QUIC packet to the server that issued its destination
// connection ID whatever the client's address (DESIGN.md §3.6).
//
// # Format
//
// A QUIC-LB connection ID (CID) is a first octet followed by a plaintext
// block that holds the server ID and a nonce (draft §3, §5.2):
//
//	+--------+----------------------+------------------+
//	|CR |Len |  Server ID (1..15)   |  Nonce (4..18)   |
//	+--------+----------------------+------------------+
//	 3b   5b  \__ plaintext block (<= 19 octets), or its encryption __/
//
// CR, the three most significant bits, is the config rotation codepoint:
// which of up to seven configurations (0..6) produced the CID. Codepoint 7
// (0b111) is reserved: servers without a configuration issue such CIDs,
// they are never routable (ErrUnroutable) and the load balancer falls back
// to hashing.
//
// The five low bits either self-encode the length of the CID after the
// first octet (Config.LenSelfEncoded, for hardware offloads, draft §3.3) or
// are bits with no relation to earlier CIDs. (Earlier revisions of the
// draft had two rotation bits and six length bits; with three rotation bits
// five remain, enough for the 19-octet maximum.)
//
// Server ID length and nonce length are fixed per configuration and sum to
// at most 19, so that a CID fits QUIC v1's 20-octet limit.
//
// # Modes
//
// Plaintext (Config.Key nil): the server ID follows the first octet in the
// clear and the nonce must be random. Anyone can read the server mapping;
// this mode only makes CIDs routable.
//
// Encrypted, single pass: when server ID length + nonce length is exactly
// 16 the plaintext block is one AES-128-ECB block, encrypted once.
//
// Encrypted, four passes: any other length uses a four-round Feistel
// network whose round function is AES-128-ECB over expand(len, pass, half):
// the half, zero padding, the block length and the pass number in one
// 16-octet block, truncated back to the half's length. An odd-length block
// splits its middle octet between the halves by nibble. Decoding the server
// ID takes three AES operations when the server ID fits in the left half
// (server ID length <= nonce length) and four otherwise.
//
// # Contract and lifetimes
//
// A Codec is built once from a validated Config (New) and is then immutable
// and safe for concurrent use by any number of goroutines; it keeps its own
// copy of the key. Decode, DecodeServerID and DecodeFull never allocate
// (the tests prove it for every mode): the AES round buffer comes from a
// package pool, because a buffer handed to cipher.Block through its
// interface would otherwise escape to the heap on every call. Encode
// allocates only when dst lacks capacity. No method keeps a reference to
// its arguments.
//
// Decode errors are sentinel values (ErrUnroutable, ErrRotation,
// ErrShortCID, ErrLength, ErrShortBuffer) that a caller compares with == or
// errors.Is and counts; they carry no per-call data and cost nothing.
//
// A Set holds the codecs of the configurations active at once, indexed by
// their rotation codepoint, and picks the right one per CID. ServerID is a
// comparable value (a map key) for the datapath's server ID -> backend map.
//
// This package imports only the standard library; the quic-go adapter that
// lets a backend issue QUIC-LB CIDs lives in the subpackage quicgo, so the
// datapath does not link quic-go.
package quiclb
