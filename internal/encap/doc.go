// Package encap writes the outer headers that carry a packet from an LB node
// to a backend, in place, into the headroom in front of the inner IP packet,
// and decodes the GUE header on the backend side (for `sluice agent`).
//
// # Contract and lifetimes
//
// Compile validates a Tunnel (one per backend, at config time) and returns a
// *Template: a pre-built header image per shape and the partial checksums
// over its constant words. A Template is immutable; any number of workers
// may use it at once. A config change compiles new Templates and swaps them
// in; nothing is ever written to a Template after Compile returns.
//
// Template.Encap is the datapath call. It reads only the Template(s) and the
// inner packet buf[l3:end], writes only buf[start:l3] with start = l3 -
// Overhead(withHops), does not allocate, keeps no reference to buf, and
// reports failure as -1 without writing anything. A worker that receives a
// frame at l3Off bytes into its buffer needs Headroom(l3Off, withHops) free
// bytes in front of it (the received Ethernet header is overwritten). The
// caller checks the MTU with L3Overhead.
//
// DecodeGUE fills a caller-owned GUEHeader, returns sentinel errors and does
// not allocate. AdvanceHop rewrites one byte of the header in place.
//
// # Outer headers
//
// Ethernet (SrcMAC, DstMAC), an optional 802.1Q tag, then:
//
//   - IPv4 outer: IHL 5, TOS = inner DSCP+ECN, DF set, ID 0, TTL from the
//     Tunnel (default 64), header checksum always correct, computed
//     incrementally from the Template's precomputed sum plus TOS and total
//     length. DF and ID 0: Sluice never fragments an outer packet; RFC 6864
//     lets an atomic datagram (DF=1, MF=0, offset 0) carry any ID, and DF
//     makes a too-small path MTU surface as ICMP instead of reassembly load
//     on the backends. The caller keeps packets within the MTU.
//   - IPv6 outer: traffic class = inner DSCP+ECN, flow label from the inner
//     flow hash (FlowLabel, RFC 6438), hop limit from the Tunnel.
//
// The inner DSCP and ECN are copied unchanged (RFC 6040 normal mode).
//
// IPIP stops there: protocol / next header 4 (IPv4 inner) or 41 (IPv6 inner)
// whatever the outer family (IPIP, 6in4, 4in6, IP6IP6).
//
// GUE continues with UDP: source port from the inner flow hash (SrcPort:
// 0xC000 | (hash * 0x9E3779B97F4A7C15) >> 50, stable per flow, spread over
// 49152..65535 for ECMP and RSS), destination port Tunnel.Port (default
// 6080). The UDP checksum is zero for an IPv4 outer header unless
// Tunnel.UDPChecksum, and always computed for IPv6 unless
// Tunnel.ZeroUDP6Checksum (RFC 6935/6936); when computed it covers the
// pseudo-header, UDP, GUE, the hop list and the whole inner packet.
//
// # GUE header and the Sluice hop list
//
// GUE variant 0 (draft-ietf-intarea-gue), with the Sluice hop list as
// private data. The flags are always 0, so no extension fields are present
// and the private data starts right after the first 32-bit word and runs to
// the end of the Hlen-covered header:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+\
//	|          Source port          |       Destination port        | |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ UDP
//	|            Length             |           Checksum            | |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+/
//	| 0 |0|  Hlen   |  Proto/ctype  |           Flags (0)           | GUE
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+\
//	|  Private data type (0x5343)   |  Next hop idx |   Hop count   | |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ |
//	|                                                               | |
//	~             Hop 0: the primary (outer destination)            ~ hop
//	|                                                               | list
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ |
//	|                                                               | |
//	~             Hop 1: the secondary (second chance)              ~ |
//	|                                                               | |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+/
//	|                  Inner IPv4 or IPv6 packet ...                |
//
// Version (2 bits) is 0 and C (control) is 0. Hlen (5 bits) is the length of
// the GUE header beyond its first 4 bytes in 32-bit words: 0 without a hop
// list, 1 + Hop count for IPv4 hops, 1 + 4 x Hop count for IPv6 hops.
// Proto/ctype is 4 for an IPv4 inner packet, 41 for IPv6.
//
// The hop list (present only when Hlen > 0):
//
//   - Private data type, 16 bits: 0x5343 ("SC", second chance). A decoder
//     rejects any other type (ErrPrivate); in particular GLB Director's type
//     0, whose layout this one follows, is not accepted.
//   - Next hop idx, 8 bits: index of the hop to try next. Hop 0 is the
//     backend the packet is addressed to, so the LB writes 1. Next hop idx ==
//     Hop count means the list is exhausted.
//   - Hop count, 8 bits: number of addresses, at most MaxHops (4). The LB
//     writes 2: [primary, secondary].
//   - Hops: the addresses, 4 octets each under an IPv4 outer header, 16
//     under IPv6 (the outer family; Hlen tells them apart since the length
//     must be exactly 4 + count x 4 or 4 + count x 16 bytes).
//
// A backend agent that does not own the packet's connection (not a SYN, no
// local socket) and finds Next hop idx < Hop count forwards it: AdvanceHop
// increments the index and returns the hop; the agent makes its own address
// the outer source and the hop the outer destination, patches a nonzero UDP
// checksum (UpdateChecksum) and sends it on. If the list is exhausted, or the
// hop is the agent's own address, it takes the packet locally. Linux fou in
// GUE mode ignores the private data and so can decapsulate these packets
// directly (it does not forward).
//
// DecodeGUE accepts exactly this: variant 0 data messages, flags 0, and
// private data that is empty or a well-formed hop list. Control messages,
// flags (extension fields) and variant 1 are rejected with sentinel errors.
package encap
