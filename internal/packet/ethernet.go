package packet

import "encoding/binary"

// Ethernet II header (IEEE 802.3, DIX framing), as it starts every frame:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Destination MAC address                    |
//	+                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                               |                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//	|                      Source MAC address                       |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|      EtherType or TPID        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	ethDst  = 0
	ethSrc  = 6
	ethType = 12

	// EthernetHeaderLen is the length of an untagged Ethernet II header.
	EthernetHeaderLen = 14
	// MACLen is the length of a MAC address.
	MACLen = 6
)

// EtherType values Decode knows.
const (
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeIPv6 = 0x86DD

	// EtherTypeVLAN is the 802.1Q customer VLAN tag (C-tag) TPID.
	EtherTypeVLAN = 0x8100
	// EtherTypeQinQ is the 802.1ad service VLAN tag (S-tag) TPID.
	EtherTypeQinQ = 0x88A8
	// EtherTypeQinQLegacy is the pre-802.1ad S-tag TPID some switches
	// still send.
	EtherTypeQinQLegacy = 0x9100
)

// MaxVLANs is the number of VLAN tags Decode accepts in one frame; a third
// tag is TooManyVLANs.
const MaxVLANs = 2

// Ethernet is a view of an Ethernet II header. Its accessors require
// len >= EthernetHeaderLen.
type Ethernet []byte

// Dst returns the destination MAC address.
func (b Ethernet) Dst() [MACLen]byte { return [MACLen]byte(b[ethDst : ethDst+MACLen]) }

// Src returns the source MAC address.
func (b Ethernet) Src() [MACLen]byte { return [MACLen]byte(b[ethSrc : ethSrc+MACLen]) }

// EtherType returns the EtherType field: the payload's type, or the TPID
// of a VLAN tag that follows.
func (b Ethernet) EtherType() uint16 { return binary.BigEndian.Uint16(b[ethType:]) }

// IsVLANTPID reports whether an EtherType announces a VLAN tag.
func IsVLANTPID(etherType uint16) bool {
	return etherType == EtherTypeVLAN || etherType == EtherTypeQinQ || etherType == EtherTypeQinQLegacy
}

// VLAN tag (IEEE 802.1Q), the four octets that follow a TPID; TCI is the
// tag control information, EtherType the type of what follows the tag:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	| PCP |D|        VLAN ID        |      EtherType or TPID        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	vlanTCI  = 0
	vlanType = 2

	// VLANTagLen is the length a VLAN tag adds to a frame.
	VLANTagLen = 4
)

// VLAN is a view of a VLAN tag after its TPID. Its accessors require
// len >= VLANTagLen.
type VLAN []byte

// TCI returns the tag control information (PCP, DEI and VLAN ID).
func (b VLAN) TCI() uint16 { return binary.BigEndian.Uint16(b[vlanTCI:]) }

// EtherType returns the EtherType of what follows the tag.
func (b VLAN) EtherType() uint16 { return binary.BigEndian.Uint16(b[vlanType:]) }

// VLANID returns the 12-bit VLAN identifier of a TCI.
func VLANID(tci uint16) uint16 { return tci & 0x0FFF }

// VLANPCP returns the 3-bit priority code point of a TCI.
func VLANPCP(tci uint16) uint8 { return uint8(tci >> 13) }

// VLANDEI reports the drop eligible indicator of a TCI.
func VLANDEI(tci uint16) bool { return tci&0x1000 != 0 }
