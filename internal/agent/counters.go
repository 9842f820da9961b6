package agent

import (
	"errors"
	"sync/atomic"

	"github.com/sluicelb/sluice/internal/encap"
)

// Reason is why the agent dropped a datagram. The values are dense from 0 to
// NumReasons-1 so that they index Counters.Drops.
type Reason uint8

const (
	// GUE header rejected by encap.DecodeGUE, one reason per sentinel.
	GUETruncated Reason = iota // encap.ErrTruncated: shorter than 4 bytes
	GUEVersion                 // encap.ErrVersion: not variant 0
	GUEControl                 // encap.ErrControl: a control message
	GUEHLen                    // encap.ErrHLen: Hlen runs past the datagram
	GUEFlags                   // encap.ErrFlags: extension fields
	GUEPrivate                 // encap.ErrPrivate: private data is not a Sluice hop list
	GUEOther                   // any other DecodeGUE error (none today)
	// NotIP: the GUE Proto/ctype is neither 4 (IPv4) nor 41 (IPv6).
	NotIP
	// VersionMismatch: the inner version nibble disagrees with the GUE
	// Proto/ctype.
	VersionMismatch
	// InnerTooShort: the inner packet ends before its fixed header, its
	// IPv4 options, or the length its header claims.
	InnerTooShort
	// InnerBadHeader: IPv4 IHL < 5 or total length < header length; IPv6
	// payload length 0 (jumbograms are not carried).
	InnerBadHeader
	// InnerBadChecksum: the inner IPv4 header checksum is wrong (the kernel
	// would drop it silently).
	InnerBadChecksum
	// InnerDstNotVIP: the inner destination is not a configured VIP. The
	// agent never relays anything else into the host.
	InnerDstNotVIP
	// TUNWriteError: the write to the TUN device failed.
	TUNWriteError
	// Oversize: the datagram did not fit the receive buffer (MSG_TRUNC).
	Oversize
	// ForwardError: second chance: sending the packet on to the next hop
	// failed (e.g. no route, or a hop of the family the socket lacks).
	ForwardError
	// HopNotAllowed: second chance: the next hop lies outside
	// Config.HopPrefixes.
	HopNotAllowed
	// RejectedSource: the outer source may not send this datagram: it is
	// in no LB prefix, or only in a hop prefix and the datagram is not a
	// packet forwarded by another agent (see "Trust" in the package
	// documentation). Dropped before anything parses it.
	RejectedSource
	// ClientSpoofed: a datagram from a fastpath client host (allowed only
	// by Config.FastpathClients) that is not what that host's egress
	// program writes for a redirected flow: its inner source is not the
	// outer source, it carries a hop list, or it is a fragment or neither
	// TCP nor UDP (see "Trust" in the package documentation).
	ClientSpoofed
	// NumReasons is the number of reasons, for counter arrays.
	NumReasons
)

var reasonNames = [NumReasons]string{
	GUETruncated:     "malformed_gue_truncated",
	GUEVersion:       "malformed_gue_version",
	GUEControl:       "malformed_gue_control",
	GUEHLen:          "malformed_gue_hlen",
	GUEFlags:         "malformed_gue_flags",
	GUEPrivate:       "malformed_gue_private",
	GUEOther:         "malformed_gue_other",
	NotIP:            "not_ip",
	VersionMismatch:  "version_mismatch",
	InnerTooShort:    "inner_too_short",
	InnerBadHeader:   "inner_bad_header",
	InnerBadChecksum: "inner_bad_checksum",
	InnerDstNotVIP:   "inner_dst_not_vip",
	TUNWriteError:    "tun_write_error",
	Oversize:         "oversize",
	ForwardError:     "forward_error",
	HopNotAllowed:    "hop_not_allowed",
	RejectedSource:   "rejected_source",
	ClientSpoofed:    "client_spoofed",
}

// String returns the reason in snake_case, as used for a metric label. It
// does not allocate.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// MalformedGUE reports whether r is one of the DecodeGUE reasons.
func (r Reason) MalformedGUE() bool { return r <= GUEOther }

// gueReason maps a DecodeGUE error to its Reason.
func gueReason(err error) Reason {
	switch err {
	case encap.ErrTruncated:
		return GUETruncated
	case encap.ErrVersion:
		return GUEVersion
	case encap.ErrControl:
		return GUEControl
	case encap.ErrHLen:
		return GUEHLen
	case encap.ErrFlags:
		return GUEFlags
	case encap.ErrPrivate:
		return GUEPrivate
	}
	for r, s := range [...]error{encap.ErrTruncated, encap.ErrVersion, encap.ErrControl,
		encap.ErrHLen, encap.ErrFlags, encap.ErrPrivate} {
		if errors.Is(err, s) {
			return Reason(r)
		}
	}
	return GUEOther
}

// Counters is a snapshot of the agent's counters. It is a plain value with
// a fixed layout (no maps, no pointers); Agent.Counters returns a fresh copy.
type Counters struct {
	Received       uint64 // datagrams read from the UDP socket
	ReceivedBytes  uint64 // their UDP payload bytes
	Delivered      uint64 // inner packets written to the TUN device
	DeliveredBytes uint64 // their bytes (inner IP packets)
	// HopListLocal counts delivered packets that carried a hop list (part
	// of Delivered).
	HopListLocal uint64
	// SecondHop counts the second-chance decisions and forwarding.
	SecondHop SecondHopCounters
	Drops     [NumReasons]uint64 // by Reason
	// Probes counts the VIP probes (GUE control messages of type
	// vipprobe.CType); they are part of Received but never of Drops.
	// Each does not list them: see ProbeCounters.Each.
	Probes ProbeCounters
	// Fastpath counts the client host's side of fastpath (fastpath.go);
	// Each does not list them: see FastpathCounters.Each.
	Fastpath FastpathCounters
}

// SecondHopCounters count what the agent did with packets that carry a hop
// list (see "Second chance" in the package documentation).
type SecondHopCounters struct {
	// Forwarded are the packets sent on to the next hop (second_hop_forwarded).
	Forwarded uint64
	// Received are the packets that another agent forwarded here: their
	// next-hop index was 2 or more on arrival (the LB sends index 1 to hop
	// 0) (second_hop_received).
	Received uint64
	// TableHits are TCP packets found local by the agent's own flow record
	// (owner_table_hits).
	TableHits uint64
	// TableFull are flows not recorded because the record was full
	// (owner_table_full).
	TableFull uint64
	// CacheHits are ownership questions answered by a cached sock_diag
	// answer (owner_cache_hits); CacheMisses are those that asked the
	// kernel, one sock_diag query each (sock_diag_queries).
	CacheHits, CacheMisses uint64
	// DiagErrors are sock_diag queries that failed (sock_diag_errors); the
	// flow then counts as not owned here.
	DiagErrors uint64
}

// Indices of the second-hop counters in counters.secondHop and fields().
const (
	secondHopForwarded = iota
	secondHopReceived
	secondHopTableHits
	secondHopTableFull
	secondHopCacheHits
	secondHopCacheMisses
	secondHopDiagErrors
	numSecondHopCounters
)

var secondHopNames = [numSecondHopCounters]string{
	"second_hop_forwarded", "second_hop_received", "owner_table_hits", "owner_table_full",
	"owner_cache_hits", "sock_diag_queries", "sock_diag_errors",
}

func (c *SecondHopCounters) fields() [numSecondHopCounters]*uint64 {
	return [...]*uint64{&c.Forwarded, &c.Received, &c.TableHits, &c.TableFull,
		&c.CacheHits, &c.CacheMisses, &c.DiagErrors}
}

// Dropped returns the sum of all drops.
func (c *Counters) Dropped() uint64 {
	var n uint64
	for _, v := range c.Drops {
		n += v
	}
	return n
}

// MalformedGUE returns the sum of the DecodeGUE drops.
func (c *Counters) MalformedGUE() uint64 {
	var n uint64
	for r := GUETruncated; r <= GUEOther; r++ {
		n += c.Drops[r]
	}
	return n
}

// Each calls f with each counter's name and value in a fixed order:
// received, received_bytes, delivered, delivered_bytes, hoplist_local,
// second_hop_forwarded, second_hop_received, owner_table_hits,
// owner_table_full, owner_cache_hits, sock_diag_queries, sock_diag_errors,
// then drop_<reason> for every Reason.
func (c *Counters) Each(f func(name string, v uint64)) {
	f("received", c.Received)
	f("received_bytes", c.ReceivedBytes)
	f("delivered", c.Delivered)
	f("delivered_bytes", c.DeliveredBytes)
	f("hoplist_local", c.HopListLocal)
	for i, p := range c.SecondHop.fields() {
		f(secondHopNames[i], *p)
	}
	for r := Reason(0); r < NumReasons; r++ {
		f(dropNames[r], c.Drops[r])
	}
}

var dropNames = func() (n [NumReasons]string) {
	for r := range n {
		n[r] = "drop_" + reasonNames[r]
	}
	return n
}()

// counters is the live, shared form of Counters. Only the Run goroutine
// adds, once per batch (flush), except the probe counters, which the probe
// workers also add to directly, and the fastpath counters, which the
// fastpath goroutine also adds to once per message and sweep
// (flushFastpath); any goroutine may load.
type counters struct {
	received, receivedBytes   atomic.Uint64
	delivered, deliveredBytes atomic.Uint64
	hopListLocal              atomic.Uint64
	secondHop                 [numSecondHopCounters]atomic.Uint64
	drops                     [NumReasons]atomic.Uint64
	probes                    [numProbeCounters]atomic.Uint64
	fastpath                  [numFastpathCounters]atomic.Uint64
	fastpathFlows             atomic.Uint64 // a gauge, stored by the sweep
}

// flush adds the batch's counts b to the shared counters and zeroes b.
func (s *counters) flush(b *Counters) {
	add := func(a *atomic.Uint64, v uint64) {
		if v != 0 {
			a.Add(v)
		}
	}
	add(&s.received, b.Received)
	add(&s.receivedBytes, b.ReceivedBytes)
	add(&s.delivered, b.Delivered)
	add(&s.deliveredBytes, b.DeliveredBytes)
	add(&s.hopListLocal, b.HopListLocal)
	for i, p := range b.SecondHop.fields() {
		add(&s.secondHop[i], *p)
	}
	for i := range b.Drops {
		add(&s.drops[i], b.Drops[i])
	}
	for i, p := range b.Probes.fields() {
		add(&s.probes[i], *p)
	}
	s.flushFastpath(&b.Fastpath)
	*b = Counters{}
}

// flushFastpath adds the fastpath counts b (not the Flows gauge) to the
// shared counters and zeroes b.
func (s *counters) flushFastpath(b *FastpathCounters) {
	for i, p := range b.fields() {
		if *p != 0 {
			s.fastpath[i].Add(*p)
		}
	}
	*b = FastpathCounters{}
}

func (s *counters) load() (c Counters) {
	c.Received = s.received.Load()
	c.ReceivedBytes = s.receivedBytes.Load()
	c.Delivered = s.delivered.Load()
	c.DeliveredBytes = s.deliveredBytes.Load()
	c.HopListLocal = s.hopListLocal.Load()
	for i, p := range c.SecondHop.fields() {
		*p = s.secondHop[i].Load()
	}
	for i := range c.Drops {
		c.Drops[i] = s.drops[i].Load()
	}
	for i, p := range c.Probes.fields() {
		*p = s.probes[i].Load()
	}
	for i, p := range c.Fastpath.fields() {
		*p = s.fastpath[i].Load()
	}
	c.Fastpath.Flows = s.fastpathFlows.Load()
	return c
}
