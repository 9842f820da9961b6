package packet

import "encoding/binary"

// IPv4 header (RFC 791, section 3.1):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version|  IHL  |Type of Service|          Total Length         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Identification        |Flags|      Fragment Offset    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Time to Live |    Protocol   |         Header Checksum       |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                       Source Address                          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Destination Address                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Options                    |    Padding    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// IHL counts the header in 32-bit words (5..15); Total Length counts the
// whole packet in octets, header included; Flags are reserved, DF, MF from
// the left; Fragment Offset counts 8-octet units.
const (
	ipv4VersIHL   = 0
	ipv4TOS       = 1
	ipv4TotalLen  = 2
	ipv4ID        = 4
	ipv4FlagsFrag = 6
	ipv4TTL       = 8
	ipv4Proto     = 9
	ipv4Checksum  = 10
	ipv4Src       = 12
	ipv4Dst       = 16

	// IPv4MinHeaderLen is the length of an IPv4 header without options.
	IPv4MinHeaderLen = 20
	// IPv4MaxHeaderLen is the longest header IHL can describe.
	IPv4MaxHeaderLen = 60
	// IPv4AddrLen is the length of an IPv4 address.
	IPv4AddrLen = 4

	ipv4FragOffMask = 0x1FFF
)

// Flags in the 16-bit flags and fragment offset word.
const (
	IPv4FlagDF = 0x4000 // don't fragment
	IPv4FlagMF = 0x2000 // more fragments
)

// IPv4 is a view of an IPv4 header. Its accessors require
// len >= IPv4MinHeaderLen; Options additionally needs len >= HeaderLen.
type IPv4 []byte

// Version returns the version nibble (4 for a real IPv4 header).
func (b IPv4) Version() uint8 { return b[ipv4VersIHL] >> 4 }

// HeaderLen returns the header length in octets (IHL*4), unchecked.
func (b IPv4) HeaderLen() int { return int(b[ipv4VersIHL]&0x0F) << 2 }

// TOS returns the type-of-service (DSCP and ECN) octet.
func (b IPv4) TOS() uint8 { return b[ipv4TOS] }

// TotalLen returns the total length field.
func (b IPv4) TotalLen() uint16 { return binary.BigEndian.Uint16(b[ipv4TotalLen:]) }

// ID returns the identification field.
func (b IPv4) ID() uint16 { return binary.BigEndian.Uint16(b[ipv4ID:]) }

// FlagsFrag returns the flags and fragment offset word as it is on the wire;
// IPv4FlagDF and IPv4FlagMF test its flags.
func (b IPv4) FlagsFrag() uint16 { return binary.BigEndian.Uint16(b[ipv4FlagsFrag:]) }

// MoreFragments reports whether the MF flag is set.
func (b IPv4) MoreFragments() bool { return b.FlagsFrag()&IPv4FlagMF != 0 }

// DontFragment reports whether the DF flag is set.
func (b IPv4) DontFragment() bool { return b.FlagsFrag()&IPv4FlagDF != 0 }

// FragmentOffset returns the fragment offset in octets.
func (b IPv4) FragmentOffset() uint16 { return (b.FlagsFrag() & ipv4FragOffMask) << 3 }

// TTL returns the time to live.
func (b IPv4) TTL() uint8 { return b[ipv4TTL] }

// Protocol returns the protocol number of the payload.
func (b IPv4) Protocol() uint8 { return b[ipv4Proto] }

// Checksum returns the header checksum field (Decode never verifies it).
func (b IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[ipv4Checksum:]) }

// Src returns the source address.
func (b IPv4) Src() [IPv4AddrLen]byte { return [IPv4AddrLen]byte(b[ipv4Src : ipv4Src+IPv4AddrLen]) }

// Dst returns the destination address.
func (b IPv4) Dst() [IPv4AddrLen]byte { return [IPv4AddrLen]byte(b[ipv4Dst : ipv4Dst+IPv4AddrLen]) }

// Options returns the options area (possibly empty). It requires
// len >= HeaderLen >= IPv4MinHeaderLen.
func (b IPv4) Options() []byte { return b[IPv4MinHeaderLen:b.HeaderLen()] }

// putMapped4 writes the IPv4 address a (4 bytes) into dst in its
// IPv4-mapped IPv6 form (::ffff:a.b.c.d), as netip.Addr.As16 gives it.
// It writes whole words: building the array byte by byte and copying it
// costs a store-forwarding stall per address.
func putMapped4(dst *[16]byte, a []byte) {
	binary.LittleEndian.PutUint64(dst[0:], 0)
	binary.LittleEndian.PutUint64(dst[8:], 0xFFFF0000|uint64(binary.LittleEndian.Uint32(a))<<32)
}
