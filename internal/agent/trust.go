package agent

import (
	"encoding/binary"
	"log/slog"
	"net/netip"
	"time"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/packet"
)

// prefixSet is a list of prefixes split by family, so that a lookup only
// walks the prefixes of the address's family.
type prefixSet struct{ v4, v6 []netip.Prefix }

func newPrefixSet(ps []netip.Prefix) prefixSet {
	var s prefixSet
	for _, p := range ps {
		if p.Addr().Is4() {
			s.v4 = append(s.v4, p)
		} else {
			s.v6 = append(s.v6, p)
		}
	}
	return s
}

// contains reports whether a (plain, not IPv4-mapped) lies in one of the
// prefixes. It does not allocate.
func (s *prefixSet) contains(a netip.Addr) bool {
	ps := s.v6
	if a.Is4() {
		ps = s.v4
	}
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// sourceFilter is the trust decision (see "Trust" in the package
// documentation): which outer source may send which datagram. It is built
// once by New and only read afterwards. The zero value accepts nothing.
type sourceFilter struct {
	any    bool      // Config.AcceptAnySource
	lb     prefixSet // Config.LBPrefixes
	hop    prefixSet // Config.HopPrefixes
	client prefixSet // Config.FastpathClients
}

func newSourceFilter(c *Config) sourceFilter {
	return sourceFilter{any: c.AcceptAnySource, lb: newPrefixSet(c.LBPrefixes), hop: newPrefixSet(c.HopPrefixes),
		client: newPrefixSet(c.FastpathClients)}
}

// allows reports whether datagram d (a UDP payload) from src may be looked
// at any further: a datagram forwarded by another agent (forwardedByAgent)
// only from a hop prefix; a GUE data message as an LB sends it (lbData) from
// an LB prefix or a fastpath client prefix; anything else (VIP probes,
// fastpath messages and other control messages, malformed datagrams) only
// from an LB prefix. An address in both an LB and a hop prefix may send
// anything. An invalid src (the kernel gave none) is allowed only with
// AcceptAnySource. allows reads at most the first bytes of the GUE header,
// never the inner packet, and does not allocate.
func (f *sourceFilter) allows(src netip.Addr, d []byte) bool {
	ok, _ := f.verdict(src, d)
	return ok
}

// verdict is allows, and also reports whether only the fastpath client rule
// allowed d: the caller then also checks what the header bytes cannot tell
// (clientData).
func (f *sourceFilter) verdict(src netip.Addr, d []byte) (ok, asClient bool) {
	if f.any {
		return true, false
	}
	src = src.Unmap()
	lb, hop := f.lb.contains(src), f.hop.contains(src)
	switch fwd := forwardedByAgent(d); {
	case lb && hop:
		return true, false
	case lb && !fwd, hop && fwd:
		return true, false
	}
	if f.client.contains(src) && lbData(d) {
		return true, true
	}
	return false, false
}

// clientData reports whether a decapsulated packet allowed only as a
// fastpath client's (verdict's asClient) is one that client host's egress
// program could have encapsulated for a redirected flow:
//   - no hop list (the egress program never writes one, and a hop list would
//     make second chance relay it);
//   - the inner source is the outer source (the program encapsulates a
//     flow's packets with the flow's client address as outer source);
//   - TCP or UDP right after the IP header, and not a fragment (the
//     program encapsulates nothing else).
//
// Without it any process on a client host could inject packets from any
// source address past the LB nodes. A TCP SYN is let through: the program
// encapsulates a new connection on the 5-tuple of a redirected flow (a
// reused port) until the agent removes the old one. It does not allocate.
func clientData(src netip.Addr, inner []byte, h *encap.GUEHeader) bool {
	if h.HasHops {
		return false
	}
	src = src.Unmap()
	var proto uint8
	var l4 []byte
	switch {
	case src.Is4():
		ip := packet.IPv4(inner)
		if h.Proto != protoIPv4 || len(inner) < packet.IPv4MinHeaderLen || ip.Src() != src.As4() {
			return false
		}
		hl := ip.HeaderLen()
		if hl < packet.IPv4MinHeaderLen || hl > len(inner) || ip.MoreFragments() || ip.FragmentOffset() != 0 {
			return false
		}
		proto, l4 = ip.Protocol(), inner[hl:]
	default:
		ip := packet.IPv6(inner)
		if h.Proto != protoIPv6 || len(inner) < packet.IPv6HeaderLen || ip.Src() != src.As16() {
			return false
		}
		proto, l4 = ip.NextHeader(), inner[packet.IPv6HeaderLen:]
	}
	switch proto {
	case packet.ProtoUDP:
		return len(l4) >= packet.UDPHeaderLen
	case packet.ProtoTCP:
		return len(l4) >= packet.TCPMinHeaderLen
	}
	return false
}

// lbData reports whether d looks like a GUE data message an LB node could
// have sent: GUE version 0, the C bit clear, and not forwarded by an agent
// (forwardedByAgent). A fastpath client host encapsulates its own packets
// exactly as the LB would, so this is what Config.FastpathClients may send.
// Like forwardedByAgent it reads only the fixed header bytes.
func lbData(d []byte) bool {
	return len(d) >= 4 && d[0]>>6 == 0 && d[0]&0x20 == 0 && !forwardedByAgent(d)
}

// forwardedByAgent reports whether d looks like a GUE data message that another
// agent forwarded: it carries a Sluice hop list whose next-hop index is 2 or
// more (the LB sends index 0 or 1; every agent that forwards the packet
// increments it, see encap.AdvanceHop). It reads only the fixed bytes that
// say so; encap.DecodeGUE validates the header afterwards.
func forwardedByAgent(d []byte) bool {
	const (
		hopTypeOffset = encap.HopNextOffset - 2 // the private data type
		minLen        = encap.HopNextOffset + 2 // through the hop count
	)
	if len(d) < minLen {
		return false
	}
	b0 := d[0]
	if b0>>6 != 0 || b0&0x20 != 0 || b0&0x1f == 0 { // version 0, data, private data present
		return false
	}
	return binary.BigEndian.Uint16(d[hopTypeOffset:]) == encap.PrivateTypeHops && d[encap.HopNextOffset] >= 2
}

// rejectLogEvery is the shortest interval between two log lines about
// rejected sources.
const rejectLogEvery = time.Second

// rejectLog logs datagrams from sources the agent does not trust, at most
// one line per rejectLogEvery: the first source rejected since the last
// line and how many rejections that line stands for. It is owned by the
// Run goroutine; the zero value (nil log) only counts.
type rejectLog struct {
	log     *slog.Logger
	now     func() time.Time // time.Now when nil
	last    time.Time        // when the last line was logged
	first   netip.AddrPort   // the first source rejected since then
	pending uint64           // rejections since then not logged
}

// note records one rejected datagram from src. It does not allocate.
func (r *rejectLog) note(src netip.AddrPort) {
	if r.pending == 0 {
		r.first = src
	}
	r.pending++
}

// flush logs a line if rejections are pending and the last line is at least
// rejectLogEvery old. Run calls it once per batch.
func (r *rejectLog) flush() {
	if r.pending == 0 || r.log == nil {
		return
	}
	now := time.Now()
	if r.now != nil {
		now = r.now()
	}
	if !r.last.IsZero() && now.Sub(r.last) < rejectLogEvery {
		return
	}
	r.log.Warn("dropped a datagram its source may not send (rejected_source): not an LB prefix, nor a hop prefix sending a forwarded packet",
		"src", r.first, "rejected", r.pending, "suppressed", r.pending-1)
	r.last, r.pending, r.first = now, 0, netip.AddrPort{}
}
