package packet

import "encoding/binary"

// The inputs of tenant classification (DESIGN §3.8): the VLAN ID of a
// frame's outermost tag, or the VNI of a VXLAN packet addressed to the node,
// whose inner Ethernet frame is then parsed like any received frame.

// VXLAN header (RFC 7348), the payload of a UDP datagram to port 4789:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|R|R|R|R|I|R|R|R|                  Reserved                     |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|            VXLAN Network Identifier (VNI)     |   Reserved    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// I set means the VNI is valid; a receiver ignores the reserved bits (RFC
// 7348 §5), so the Group Policy and other extensions that use them pass.
const (
	vxlanFlags = 0
	vxlanVNI   = 4

	// VXLANHeaderLen is the length of the VXLAN header.
	VXLANHeaderLen = 8
	// VXLANPort is the IANA UDP port of VXLAN.
	VXLANPort = 4789
	// VXLANFlagI is the "VNI valid" flag in the first octet.
	VXLANFlagI = 0x08
)

// VXLAN is a view of a VXLAN header. Its accessors require len >=
// VXLANHeaderLen.
type VXLAN []byte

// Flags returns the first octet (I is VXLANFlagI).
func (b VXLAN) Flags() uint8 { return b[vxlanFlags] }

// VNI returns the 24-bit VXLAN network identifier.
func (b VXLAN) VNI() uint32 { return binary.BigEndian.Uint32(b[vxlanVNI:]) >> 8 }

// VXLANVerdict is the outcome of Parsed.VXLAN; dense from 0 for counter
// arrays.
type VXLANVerdict uint8

const (
	// NotVXLAN: not a sound UDP datagram to the VXLAN port (the caller
	// handles the frame as it would without VXLAN).
	NotVXLAN VXLANVerdict = iota
	// VXLANOK: the VNI and the inner frame's bounds are set.
	VXLANOK
	// VXLANFragment: the outer packet is a fragment (Sluice does not
	// reassemble; a VXLAN sender keeps its packets within the MTU).
	VXLANFragment
	// VXLANTruncated: the UDP payload is shorter than the VXLAN header and
	// an inner Ethernet header.
	VXLANTruncated
	// VXLANNoVNI: the I flag is clear.
	VXLANNoVNI
	// NumVXLANVerdicts is the number of verdicts.
	NumVXLANVerdicts
)

var vxlanVerdictNames = [NumVXLANVerdicts]string{"not_vxlan", "ok", "fragment", "truncated", "no_vni"}

// String returns the verdict in snake_case for a metric label.
func (v VXLANVerdict) String() string {
	if v < NumVXLANVerdicts {
		return vxlanVerdictNames[v]
	}
	return "unknown"
}

// VXLAN reads the VXLAN header of frame, which p holds the OK Decode of:
// if it is a UDP datagram to port (VXLANPort unless the node uses another),
// it returns the VNI and the inner Ethernet frame, frame[inner:end] (end is
// where the UDP datagram ends, so outer padding is excluded). Parse the
// inner frame with another Parsed: its offsets are then relative to
// frame[inner:]. Whether the outer destination is the node's VTEP address
// is the caller's check (p.Tuple.Dst). It does not allocate.
func (p *Parsed) VXLAN(frame []byte, port uint16) (vni uint32, inner, end int, v VXLANVerdict) {
	if p.Verdict != OK || p.Tuple.Proto != ProtoUDP || p.L4Off == 0 || p.Tuple.DstPort != port ||
		p.L3End > len(frame) {
		return 0, 0, 0, NotVXLAN
	}
	if p.Frag != NotFragment {
		return 0, 0, 0, VXLANFragment
	}
	end = p.L4Off + int(UDP(frame[p.L4Off:]).Length())
	if end > p.L3End { // Decode checked it; a caller's Parsed may be stale
		return 0, 0, 0, NotVXLAN
	}
	inner = p.PayloadOff + VXLANHeaderLen
	if end-inner < EthernetHeaderLen {
		return 0, 0, 0, VXLANTruncated
	}
	h := VXLAN(frame[p.PayloadOff:])
	if h.Flags()&VXLANFlagI == 0 {
		return 0, 0, 0, VXLANNoVNI
	}
	return h.VNI(), inner, end, VXLANOK
}

// OuterVLAN returns the VLAN ID of the frame's outermost tag (VLANs[0])
// and whether it had one. ID 0 is a priority tag (802.1p): the frame
// belongs to no VLAN, which the caller may treat as untagged.
func (p *Parsed) OuterVLAN() (vid uint16, ok bool) {
	if p.NumVLANs == 0 {
		return 0, false
	}
	return VLANID(p.VLANs[0]), true
}
