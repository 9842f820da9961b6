// Package packet parses Ethernet frames for the datapath without allocating.
//
// Two layers live here.
//
// Header views (Ethernet, VLAN, IPv4, IPv6, IPv6Ext, IPv6Fragment, TCP, UDP,
// ICMPv4, ICMPv6) are named []byte types over one header in a frame, in the
// manner of gVisor's pkg/tcpip/header: the RFC layout is drawn next to the
// type, field offsets are constants, and the accessors index the slice
// without checking its length. A view's accessors may only run once the
// slice is known to hold the header's minimum length (the *Len constants);
// Decode establishes that before it uses them, and other callers must too.
//
// Parsed.Decode fills a caller-owned Parsed from one frame, in the manner of
// Tailscale's net/packet Parsed.Decode: it never returns an error, never
// panics and never allocates. Bad input is marked in Parsed.Verdict; a
// Verdict other than OK names the first rule the frame broke, and is meant
// to be counted (Verdict.String is the metric label) and the frame dropped.
//
// What Decode accepts:
//
//   - Ethernet II with up to two VLAN tags (TPID 0x8100, 0x88A8 or 0x9100).
//   - IPv4: options skipped by IHL, checksum not verified, total length at
//     least the header and at most the rest of the frame (Ethernet padding
//     after the packet is allowed and excluded by L3End).
//   - IPv6: payload length within the frame; hop-by-hop (first only),
//     routing, destination options and fragment extension headers walked,
//     at most MaxExtHeaders of them; any other next header ends the walk and
//     becomes the protocol (ESP, AH, 59 "no next header", ...). A payload
//     length of 0 (a jumbogram) is BadLength unless the next header is 59.
//   - Fragments: the first fragment (offset 0, more-fragments set) is parsed
//     like a whole packet except that a UDP length may exceed it; a later
//     fragment (offset > 0) has no L4 header: L4Off is 0, ports are 0.
//   - TCP, UDP: ports; TCP flags, options offset and data offset.
//   - ICMPv4 over IPv4 and ICMPv6 over IPv6: type and code; the echo
//     identifier stands in for both ports; destination unreachable, time
//     exceeded and packet too big carry the quoted packet's tuple in Inner.
//
// Verdicts follow one rule of thumb: Truncated means the frame ends before
// the Ethernet header, a VLAN tag or the fixed IP header; once the IP length
// is known, everything inside the IP packet is judged against the IP packet
// and a header that does not fit in it gets that header's own verdict
// (BadExtHeader, BadTCPOffset, BadUDPLength, BadICMP).
//
// Lifetimes: a Parsed holds no reference to the frame. Addresses are copied
// into it; everything else that points into the frame is an offset (L3Off,
// L4Off, PayloadOff, L3End, TCPOptOff), valid for the frame that was passed
// to the Decode that produced them. A Parsed is owned by one goroutine; the
// worker keeps one per packet slot and reuses it.
//
// When Verdict is not OK, the other fields hold whatever had been decoded
// before the fault and must not be used.
package packet
