package encap

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// PrivateTypeHops is the GUE private data type of the Sluice hop list ("SC",
// second chance).
const PrivateTypeHops = 0x5343

// MaxHops is the largest hop count DecodeGUE accepts. Encap writes 2.
const MaxHops = 4

// HopNextOffset is the offset, from the start of the GUE header (the UDP
// payload), of the 8-bit next-hop index that AdvanceHop increments. With the
// hop count that follows it forms one 16-bit checksum word.
const HopNextOffset = gueBaseLen + 2

// Errors returned by DecodeGUE. They are sentinels: compare with errors.Is
// (or ==); none allocates.
var (
	ErrTruncated = errors.New("encap: GUE header truncated")
	ErrVersion   = errors.New("encap: GUE version is not 0")
	ErrControl   = errors.New("encap: GUE control message")
	ErrHLen      = errors.New("encap: GUE Hlen runs past the payload")
	ErrFlags     = errors.New("encap: GUE flags set (extension fields are not supported)")
	ErrPrivate   = errors.New("encap: GUE private data is not a valid Sluice hop list")
)

// HopList is a decoded Sluice hop list.
type HopList struct {
	N    uint8 // number of hops, <= MaxHops
	Next uint8 // index of the next hop to try, <= N (N: exhausted)
	// AddrLen is the size of each address on the wire: 4 when the list
	// holds IPv4 addresses, 16 for IPv6, 0 when N is 0.
	AddrLen uint8
	// Addrs[:N] are the hops in 16-byte form, IPv4-mapped for IPv4
	// (netip.Addr.As16); entries past N are zero.
	Addrs [MaxHops][16]byte
}

// Addr returns hop i as a netip.Addr (unmapped for IPv4). i must be < N.
func (l *HopList) Addr(i int) netip.Addr {
	a := netip.AddrFrom16(l.Addrs[i])
	if l.AddrLen == 4 {
		return a.Unmap()
	}
	return a
}

// GUEHeader is a decoded GUE variant 0 header.
type GUEHeader struct {
	Version uint8  // always 0 when DecodeGUE succeeds
	Control bool   // C bit
	HLen    int    // the Hlen field in bytes: header length beyond the first 4 bytes
	Proto   uint8  // Proto/ctype: IP protocol of the inner packet (4, 41)
	Flags   uint16 // always 0 when DecodeGUE succeeds
	Hops    HopList
	HasHops bool // the header carries a Sluice hop list
}

// DecodeGUE parses the GUE header at the start of a UDP payload into h, which
// it overwrites completely, and returns the offset of the inner packet
// (4 + h.HLen, at most len(payload)).
//
// It accepts data messages of variant 0 with no flags set, whose private data
// is empty or a well-formed Sluice hop list. Otherwise it returns one of:
// ErrTruncated (shorter than 4 bytes), ErrVersion, ErrControl, ErrHLen,
// ErrFlags (extension fields, which Sluice neither sends nor parses), or
// ErrPrivate (another private data type, a hop count over MaxHops, a length
// that is not 4 + count*4 or 4 + count*16 bytes, or a next-hop index past the
// count). The fields read before the error are set in h.
//
// DecodeGUE does not allocate. It does not check Proto, the UDP checksum or
// the inner packet.
func DecodeGUE(payload []byte, h *GUEHeader) (innerOff int, err error) {
	*h = GUEHeader{}
	if len(payload) < gueBaseLen {
		return 0, ErrTruncated
	}
	b0 := payload[0]
	h.Version = b0 >> 6
	h.Control = b0&0x20 != 0
	h.HLen = int(b0&0x1f) * 4
	h.Proto = payload[1]
	h.Flags = binary.BigEndian.Uint16(payload[2:])
	if h.Version != 0 {
		return 0, ErrVersion
	}
	off := gueBaseLen + h.HLen
	if off > len(payload) {
		return 0, ErrHLen
	}
	if h.Control {
		return 0, ErrControl
	}
	if h.Flags != 0 {
		return 0, ErrFlags
	}
	if h.HLen == 0 {
		return off, nil
	}
	// Private data: type, next, count, addresses. Hlen >= 1 word, so the
	// 4-byte prefix is present.
	p := payload[gueBaseLen:off]
	if binary.BigEndian.Uint16(p) != PrivateTypeHops {
		return 0, ErrPrivate
	}
	next, cnt := p[2], p[3]
	rest := p[hopsHdrLen:]
	var alen int
	switch {
	case cnt > MaxHops || next > cnt:
		return 0, ErrPrivate
	case cnt == 0:
		if len(rest) != 0 {
			return 0, ErrPrivate
		}
	case len(rest) == int(cnt)*4:
		alen = 4
	case len(rest) == int(cnt)*16:
		alen = 16
	default:
		return 0, ErrPrivate
	}
	l := &h.Hops
	l.N, l.Next, l.AddrLen = cnt, next, uint8(alen)
	for i := 0; i < int(cnt); i++ {
		a := rest[i*alen : (i+1)*alen]
		if alen == 4 {
			l.Addrs[i][10], l.Addrs[i][11] = 0xff, 0xff
			copy(l.Addrs[i][12:], a)
		} else {
			copy(l.Addrs[i][:], a)
		}
	}
	h.HasHops = true
	return off, nil
}

// AdvanceHop takes the next hop from the hop list of the GUE header at the
// start of payload, which DecodeGUE has just parsed into h: it increments the
// next-hop index in payload (at HopNextOffset) and in h and returns the hop.
// ok is false, and nothing changes, when there is no hop list, the list is
// exhausted, or payload no longer matches h.
//
// The forwarding agent then rewrites the outer addresses (source = its own
// address, destination = hop). If the outer UDP checksum is nonzero it must be
// patched, e.g. with UpdateChecksum for the 16-bit word at HopNextOffset
// (old (Next-1)<<8|N, new Next<<8|N) and for each changed address word. As a
// guard against loops, an agent should take a packet locally when hop is its
// own address.
func AdvanceHop(payload []byte, h *GUEHeader) (hop netip.Addr, ok bool) {
	l := &h.Hops
	if !h.HasHops || l.Next >= l.N || len(payload) <= HopNextOffset+1 ||
		payload[HopNextOffset] != l.Next || payload[HopNextOffset+1] != l.N {
		return netip.Addr{}, false
	}
	hop = l.Addr(int(l.Next))
	l.Next++
	payload[HopNextOffset] = l.Next
	return hop, true
}
