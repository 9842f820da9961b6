package packet

import "encoding/binary"

// ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) share their first eight octets;
// what the second word holds depends on the type:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     Type      |     Code      |          Checksum             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|   echo: Identifier            |   echo: Sequence Number       |
//	|   ICMPv4 frag needed: unused  |   Next-Hop MTU (RFC 1191)     |
//	|   ICMPv6 packet too big: MTU (32 bits)                        |
//	|   other errors: unused (or RFC 4884 length)                   |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|   errors: as much of the invoking packet as fits, starting    |
//	|   with its IP header (ICMPv4: the header and 64 bits of data) |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	icmpType     = 0
	icmpCode     = 1
	icmpChecksum = 2
	icmpIdent    = 4
	icmpSeq      = 6
	icmpMTU4     = 6
	icmpMTU6     = 4

	// ICMPHeaderLen is the length of the ICMPv4 and ICMPv6 header; an
	// error's quoted packet starts after it.
	ICMPHeaderLen = 8
	// ICMPQuotedL4Len is how much of the invoking packet's L4 header an
	// ICMPv4 error is sure to quote (RFC 792: "64 bits of data").
	ICMPQuotedL4Len = 8
)

// ICMPv4 types and codes Decode looks at.
const (
	ICMPv4EchoReply       = 0
	ICMPv4DestUnreachable = 3
	ICMPv4EchoRequest     = 8
	ICMPv4TimeExceeded    = 11

	// ICMPv4CodeFragNeeded is the destination-unreachable code
	// "fragmentation needed and DF set" (RFC 792, RFC 1191).
	ICMPv4CodeFragNeeded = 4
)

// ICMPv6 types Decode looks at.
const (
	ICMPv6DestUnreachable = 1
	ICMPv6PacketTooBig    = 2
	ICMPv6TimeExceeded    = 3
	ICMPv6EchoRequest     = 128
	ICMPv6EchoReply       = 129
)

// ICMPv4 is a view of an ICMPv4 header. Its accessors require
// len >= ICMPHeaderLen.
type ICMPv4 []byte

// Type returns the message type.
func (b ICMPv4) Type() uint8 { return b[icmpType] }

// Code returns the message code.
func (b ICMPv4) Code() uint8 { return b[icmpCode] }

// Checksum returns the checksum field.
func (b ICMPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[icmpChecksum:]) }

// Ident returns the identifier of an echo request or reply.
func (b ICMPv4) Ident() uint16 { return binary.BigEndian.Uint16(b[icmpIdent:]) }

// Seq returns the sequence number of an echo request or reply.
func (b ICMPv4) Seq() uint16 { return binary.BigEndian.Uint16(b[icmpSeq:]) }

// NextHopMTU returns the next-hop MTU of a fragmentation-needed message.
func (b ICMPv4) NextHopMTU() uint16 { return binary.BigEndian.Uint16(b[icmpMTU4:]) }

// Quote returns what follows the header: for an error, the quoted packet.
func (b ICMPv4) Quote() []byte { return b[ICMPHeaderLen:] }

// IsError reports whether the message is an error whose quote Decode reads.
func (b ICMPv4) IsError() bool { return icmp4IsError(b.Type()) }

func icmp4IsError(t uint8) bool {
	return t == ICMPv4DestUnreachable || t == ICMPv4TimeExceeded
}

func icmp4IsEcho(t uint8) bool { return t == ICMPv4EchoRequest || t == ICMPv4EchoReply }

// ICMPv6 is a view of an ICMPv6 header. Its accessors require
// len >= ICMPHeaderLen.
type ICMPv6 []byte

// Type returns the message type.
func (b ICMPv6) Type() uint8 { return b[icmpType] }

// Code returns the message code.
func (b ICMPv6) Code() uint8 { return b[icmpCode] }

// Checksum returns the checksum field.
func (b ICMPv6) Checksum() uint16 { return binary.BigEndian.Uint16(b[icmpChecksum:]) }

// Ident returns the identifier of an echo request or reply.
func (b ICMPv6) Ident() uint16 { return binary.BigEndian.Uint16(b[icmpIdent:]) }

// Seq returns the sequence number of an echo request or reply.
func (b ICMPv6) Seq() uint16 { return binary.BigEndian.Uint16(b[icmpSeq:]) }

// MTU returns the MTU of a packet-too-big message.
func (b ICMPv6) MTU() uint32 { return binary.BigEndian.Uint32(b[icmpMTU6:]) }

// Quote returns what follows the header: for an error, the quoted packet.
func (b ICMPv6) Quote() []byte { return b[ICMPHeaderLen:] }

// IsError reports whether the message is an error whose quote Decode reads.
func (b ICMPv6) IsError() bool { return icmp6IsError(b.Type()) }

func icmp6IsError(t uint8) bool {
	return t == ICMPv6DestUnreachable || t == ICMPv6PacketTooBig || t == ICMPv6TimeExceeded
}

func icmp6IsEcho(t uint8) bool { return t == ICMPv6EchoRequest || t == ICMPv6EchoReply }
