package packet

import "encoding/binary"

// QUIC headers as every version shares them (RFC 8999 §5, "Version-
// Independent Properties of QUIC"). Only the first bit of the first octet
// is invariant: the rest of it, and everything after the connection IDs,
// belongs to the version, so a load balancer must not look at it (the
// packet type of a long header included; QUIC-LB draft §4).
//
// Long header (form bit 1):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+
//	|1|X X X X X X X|
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                         Version (32)                          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	| DCID Len (8)  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|              Destination Connection ID (0..2040)            ...
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	| SCID Len (8)  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                 Source Connection ID (0..2040)              ...
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|X X X X X X X X X X X X X X X X X X X X X X X X X X X X X X  ...
//
// Short header (form bit 0); the DCID's length is not on the wire: the
// endpoint that chose the CID knows it (for the load balancer, from the
// QUIC-LB configuration):
//
//	+-+-+-+-+-+-+-+-+
//	|0|X X X X X X X|
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                 Destination Connection ID (*)               ...
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|X X X X X X X X X X X X X X X X X X X X X X X X X X X X X X  ...
const (
	quicFirst      = 0
	quicVersion    = 1
	quicLongDCIDLn = 5
	quicLongDCID   = 6

	quicFormLong = 0x80

	// QUICLongHeaderMin is the shortest long header with its DCID length
	// octet: first octet, version, DCID length.
	QUICLongHeaderMin = quicLongDCID
)

// QUIC is a view of the start of a UDP payload as a QUIC packet. Unlike the
// other views its methods check the length themselves: any payload, even
// an empty one, is safe to ask.
type QUIC []byte

// IsLong reports whether the payload starts with a long header (form bit
// set). An empty payload is not.
func (b QUIC) IsLong() bool { return len(b) > 0 && b[quicFirst]&quicFormLong != 0 }

// Version returns the version field of a long header; 0 (version
// negotiation) when b is not a long header or too short to hold one.
func (b QUIC) Version() uint32 {
	if !b.IsLong() || len(b) < quicLongDCIDLn {
		return 0
	}
	return binary.BigEndian.Uint32(b[quicVersion:])
}

// DestCID returns the packet's destination connection ID, a sub-slice of b:
// for a long header the length comes from its DCID length octet, for a
// short header it is shortLen. ok is false when b ends before the DCID (or
// is empty). It never allocates.
func (b QUIC) DestCID(shortLen int) (dcid []byte, long, ok bool) {
	if len(b) == 0 {
		return nil, false, false
	}
	if b[quicFirst]&quicFormLong == 0 {
		if shortLen < 0 || len(b) < 1+shortLen {
			return nil, false, false
		}
		return b[1 : 1+shortLen], false, true
	}
	if len(b) < QUICLongHeaderMin {
		return nil, true, false
	}
	end := quicLongDCID + int(b[quicLongDCIDLn])
	if len(b) < end {
		return nil, true, false
	}
	return b[quicLongDCID:end], true, true
}
