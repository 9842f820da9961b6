package agent

import (
	"net/netip"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/packet"
)

// GUE Proto/ctype values of the inner packets the agent accepts.
const (
	protoIPv4 = 4  // IPPROTO_IPIP
	protoIPv6 = 41 // IPPROTO_IPV6
)

// vipSet is the set of configured VIPs, split by family so that an IPv6
// packet to an IPv4-mapped address never matches an IPv4 VIP. It is built
// once by New and only read afterwards.
type vipSet struct {
	v4 map[[4]byte]struct{}
	v6 map[[16]byte]struct{}
}

func newVIPSet(vips []netip.Addr) vipSet {
	s := vipSet{v4: map[[4]byte]struct{}{}, v6: map[[16]byte]struct{}{}}
	for _, v := range vips {
		if v.Is4() {
			s.v4[v.As4()] = struct{}{}
		} else {
			s.v6[v.As16()] = struct{}{}
		}
	}
	return s
}

// inspect validates one GUE datagram (the UDP payload) and returns the inner
// IP packet to inject, trimmed to the length its header states. When the
// datagram must be dropped, ok is false and r says why. h receives the
// decoded GUE header either way (see encap.DecodeGUE).
//
// The rules, in order:
//   - encap.DecodeGUE accepts the header (else one of the GUE* reasons);
//   - Proto/ctype is 4 or 41 (NotIP);
//   - the inner version nibble is 4 for Proto 4 and 6 for Proto 41
//     (VersionMismatch; an empty inner packet is InnerTooShort);
//   - IPv4: at least 20 bytes, 5 <= IHL, IHL*4 <= total length <= bytes
//     present, header checksum correct; IPv6: at least 40 bytes, 0 <
//     payload length <= bytes present - 40 (InnerTooShort, InnerBadHeader,
//     InnerBadChecksum);
//   - the destination is a VIP of the inner packet's family (InnerDstNotVIP).
//
// Bytes after the stated length are dropped from inner (the kernel would
// trim them too). inspect does not allocate and does not modify payload.
func (s *vipSet) inspect(payload []byte, h *encap.GUEHeader) (inner []byte, r Reason, ok bool) {
	off, err := encap.DecodeGUE(payload, h)
	if err != nil {
		return nil, gueReason(err), false
	}
	inner = payload[off:]
	switch h.Proto {
	case protoIPv4, protoIPv6:
	default:
		return nil, NotIP, false
	}
	if len(inner) == 0 {
		return nil, InnerTooShort, false
	}
	ver := inner[0] >> 4
	if h.Proto == protoIPv4 {
		if ver != 4 {
			return nil, VersionMismatch, false
		}
		return s.inspect4(inner)
	}
	if ver != 6 {
		return nil, VersionMismatch, false
	}
	return s.inspect6(inner)
}

func (s *vipSet) inspect4(b []byte) ([]byte, Reason, bool) {
	if len(b) < packet.IPv4MinHeaderLen {
		return nil, InnerTooShort, false
	}
	ip := packet.IPv4(b)
	hl, tl := ip.HeaderLen(), int(ip.TotalLen())
	switch {
	case hl < packet.IPv4MinHeaderLen:
		return nil, InnerBadHeader, false
	case hl > len(b):
		return nil, InnerTooShort, false
	case tl < hl:
		return nil, InnerBadHeader, false
	case tl > len(b):
		return nil, InnerTooShort, false
	case encap.Checksum(b[:hl], 0) != 0:
		return nil, InnerBadChecksum, false
	}
	if _, ok := s.v4[ip.Dst()]; !ok {
		return nil, InnerDstNotVIP, false
	}
	return b[:tl], 0, true
}

func (s *vipSet) inspect6(b []byte) ([]byte, Reason, bool) {
	if len(b) < packet.IPv6HeaderLen {
		return nil, InnerTooShort, false
	}
	ip := packet.IPv6(b)
	pl := int(ip.PayloadLen())
	switch {
	case pl == 0:
		return nil, InnerBadHeader, false
	case pl > len(b)-packet.IPv6HeaderLen:
		return nil, InnerTooShort, false
	}
	if _, ok := s.v6[ip.Dst()]; !ok {
		return nil, InnerDstNotVIP, false
	}
	return b[:packet.IPv6HeaderLen+pl], 0, true
}
