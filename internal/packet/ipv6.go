package packet

import "encoding/binary"

// IPv6 fixed header (RFC 8200, section 3):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version| Traffic Class |           Flow Label                  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Payload Length        |  Next Header  |   Hop Limit   |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                                                               |
//	+                                                               +
//	|                                                               |
//	+                         Source Address                        +
//	|                                                               |
//	+                                                               +
//	|                                                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                                                               |
//	+                                                               +
//	|                                                               |
//	+                      Destination Address                      +
//	|                                                               |
//	+                                                               +
//	|                                                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Payload Length counts everything after the fixed header, extension
// headers included.
const (
	ipv6VersTCFlow = 0
	ipv6PayloadLen = 4
	ipv6NextHeader = 6
	ipv6HopLimit   = 7
	ipv6Src        = 8
	ipv6Dst        = 24

	// IPv6HeaderLen is the length of the fixed IPv6 header.
	IPv6HeaderLen = 40
	// IPv6AddrLen is the length of an IPv6 address.
	IPv6AddrLen = 16
)

// IPv6 is a view of the fixed IPv6 header. Its accessors require
// len >= IPv6HeaderLen.
type IPv6 []byte

// Version returns the version nibble (6 for a real IPv6 header).
func (b IPv6) Version() uint8 { return b[ipv6VersTCFlow] >> 4 }

// TrafficClass returns the traffic class (DSCP and ECN).
func (b IPv6) TrafficClass() uint8 {
	return uint8(binary.BigEndian.Uint16(b[ipv6VersTCFlow:]) >> 4)
}

// FlowLabel returns the 20-bit flow label.
func (b IPv6) FlowLabel() uint32 {
	return binary.BigEndian.Uint32(b[ipv6VersTCFlow:]) & 0x000FFFFF
}

// PayloadLen returns the payload length field.
func (b IPv6) PayloadLen() uint16 { return binary.BigEndian.Uint16(b[ipv6PayloadLen:]) }

// NextHeader returns the type of the header after the fixed header.
func (b IPv6) NextHeader() uint8 { return b[ipv6NextHeader] }

// HopLimit returns the hop limit.
func (b IPv6) HopLimit() uint8 { return b[ipv6HopLimit] }

// Src returns the source address.
func (b IPv6) Src() [IPv6AddrLen]byte { return [IPv6AddrLen]byte(b[ipv6Src : ipv6Src+IPv6AddrLen]) }

// Dst returns the destination address.
func (b IPv6) Dst() [IPv6AddrLen]byte { return [IPv6AddrLen]byte(b[ipv6Dst : ipv6Dst+IPv6AddrLen]) }

// Hop-by-hop options, routing and destination options headers share their
// first two octets (RFC 8200, sections 4.3-4.6):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Next Header  |  Hdr Ext Len  |                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//	.                 options or routing data                       .
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Hdr Ext Len counts 8-octet units after the first 8 octets.
const (
	ipv6ExtNextHeader = 0
	ipv6ExtLen        = 1

	// IPv6ExtMinLen is the length of the shortest extension header.
	IPv6ExtMinLen = 8
)

// MaxExtHeaders is the number of IPv6 extension headers Decode walks; a
// longer chain is TooManyExtHeaders.
const MaxExtHeaders = 8

// IPv6Ext is a view of a hop-by-hop, routing or destination options
// header. Its accessors require len >= 2.
type IPv6Ext []byte

// NextHeader returns the type of the header after this one.
func (b IPv6Ext) NextHeader() uint8 { return b[ipv6ExtNextHeader] }

// Len returns the length of this header in octets.
func (b IPv6Ext) Len() int { return (int(b[ipv6ExtLen]) + 1) << 3 }

// Fragment header (RFC 8200, section 4.5):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Next Header  |   Reserved    |      Fragment Offset    |Res|M|
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                         Identification                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	ipv6FragNextHeader = 0
	ipv6FragOffFlags   = 2
	ipv6FragID         = 4

	// IPv6FragmentLen is the length of the fragment header.
	IPv6FragmentLen = 8
)

// IPv6Fragment is a view of an IPv6 fragment header. Its accessors require
// len >= IPv6FragmentLen.
type IPv6Fragment []byte

// NextHeader returns the type of the fragmented packet's next header.
func (b IPv6Fragment) NextHeader() uint8 { return b[ipv6FragNextHeader] }

// FragmentOffset returns the fragment offset in octets.
func (b IPv6Fragment) FragmentOffset() uint16 {
	return binary.BigEndian.Uint16(b[ipv6FragOffFlags:]) &^ 7
}

// More reports whether the M (more fragments) flag is set.
func (b IPv6Fragment) More() bool { return b[ipv6FragOffFlags+1]&1 != 0 }

// ID returns the identification field.
func (b IPv6Fragment) ID() uint32 { return binary.BigEndian.Uint32(b[ipv6FragID:]) }
