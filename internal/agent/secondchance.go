package agent

import (
	"net/netip"
	"time"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/packet"
)

// Second-chance limits (see the package documentation, "Second chance").
const (
	// OwnerCacheTTL is how long the kernel's answer "a socket here owns
	// this flow" is reused; OwnerCacheNegativeTTL the answer "none does".
	// A burst of packets of one flow costs one sock_diag query.
	OwnerCacheTTL         = time.Second
	OwnerCacheNegativeTTL = 100 * time.Millisecond
	// OwnerCacheSize bounds the cached answers; when it is full, answers
	// are not cached until sweeping frees room.
	OwnerCacheSize = 16384
	// localAddrsTTL is how long the list of this host's addresses is
	// reused before it is read again (only when a packet is about to be
	// forwarded).
	localAddrsTTL = time.Second
	// sweepSlots is how many slots of each table one hop-list packet
	// sweeps; fullSweepSlots how many a record that finds its table full
	// sweeps before it gives up.
	sweepSlots     = 4
	fullSweepSlots = 1024
)

// secondChance decides where a packet that carries a hop list goes (here,
// or the next hop) and forwards it. It is owned by the Run goroutine; the
// first group of fields is immutable after newSecondChance.
type secondChance struct {
	udpPolicy UDPPolicy
	port      uint16         // the next hops' GUE port
	allowed   []netip.Prefix // Config.HopPrefixes; empty: any
	idle      int64          // Config.FlowIdle in ns
	clock     func() int64   // monotonic ns, > 0
	kernel    sockets
	send      func(b []byte, to netip.AddrPort) error // from the GUE socket
	local     localAddrs

	now   int64     // the current batch's time; 0: not read yet
	own   flowTable // TCP flows delivered here, by last packet time
	cache flowTable // sock_diag answers (val: owned), by query time
	flow  flowInfo  // the packet being decided
	// ownAt is the slot of s.flow.key in own, found by owns and valid
	// until own changes; -1 when not looked up.
	ownAt int
}

// newSecondChance builds the decider. listAddrs lists this host's
// addresses.
func newSecondChance(c *Config, port uint16, kernel sockets, send func([]byte, netip.AddrPort) error,
	listAddrs func() ([]netip.Addr, error)) *secondChance {
	if c.HopPort != 0 {
		port = c.HopPort
	}
	epoch := time.Now()
	return &secondChance{
		udpPolicy: c.UDPPolicy,
		port:      port,
		allowed:   c.HopPrefixes,
		idle:      int64(c.FlowIdle),
		clock:     func() int64 { return int64(time.Since(epoch)) + 1 },
		kernel:    kernel,
		send:      send,
		local:     localAddrs{list: listAddrs, set: map[[16]byte]struct{}{}},
		own:       newFlowTable(c.FlowTable),
		cache:     newFlowTable(OwnerCacheSize),
		ownAt:     -1,
	}
}

// tick forgets the batch time; Run calls it once per batch.
func (s *secondChance) tick() { s.now = 0 }

func (s *secondChance) time() int64 {
	if s.now == 0 {
		s.now = s.clock()
	}
	return s.now
}

// route decides where d, a GUE datagram that vipSet.inspect accepted into
// h and inner and that carries a hop list, goes. It returns true when the
// packet is to be delivered here (the caller writes inner to the TUN
// device and counts it); otherwise it has forwarded d, whose next-hop index
// it advanced in place, or dropped it, and counted either in b.
func (s *secondChance) route(d, inner []byte, h *encap.GUEHeader, b *Counters) (local bool) {
	l := &h.Hops
	if l.Next > 1 {
		b.SecondHop.Received++
	}
	now := s.time()
	s.own.sweep(now, s.idle, s.idle, sweepSlots)
	s.cache.sweep(now, int64(OwnerCacheTTL), int64(OwnerCacheNegativeTTL), sweepSlots)

	f := &s.flow
	parseFlow(inner, f)
	s.ownAt = -1
	if l.Next >= l.N || s.owns(f, now, b) {
		s.delivered(f, now, b)
		return true
	}
	hop := l.Addr(int(l.Next))
	if (l.Next > 0 && hop == l.Addr(int(l.Next)-1)) || s.local.has(hop, now) {
		s.delivered(f, now, b) // loop guard: the next hop is this host
		return true
	}
	if !s.hopAllowed(hop) {
		b.Drops[HopNotAllowed]++
		return false
	}
	if _, ok := encap.AdvanceHop(d, h); !ok {
		// Cannot happen: h was decoded from d and Next < N.
		s.delivered(f, now, b)
		return true
	}
	// The socket computes the new UDP checksum; the GUE payload needs no
	// other change.
	if err := s.send(d, netip.AddrPortFrom(hop, s.port)); err != nil {
		b.Drops[ForwardError]++
		return false
	}
	b.SecondHop.Forwarded++
	return false
}

// owns reports whether this host owns f's flow (the next hop is not the
// last resort: the caller checked).
func (s *secondChance) owns(f *flowInfo, now int64, b *Counters) bool {
	switch f.class {
	case classTCPSYN, classOther:
		return true
	case classUDP:
		return s.udpPolicy != UDPSecondChance || s.kernelOwns(&f.key, now, b)
	}
	// TCP: the agent's record first, then the kernel.
	if i := s.own.find(&f.key); i >= 0 {
		if now-s.own.at(i).t < s.idle {
			s.ownAt = i
			b.SecondHop.TableHits++
			return true
		}
		s.own.removeAt(i)
	}
	return s.kernelOwns(&f.key, now, b)
}

// kernelOwns reports whether a socket here owns flow k, from the cache or
// from one sock_diag query. A failed query counts as "not owned" and is
// cached as such, so that a failing kernel costs one query per
// OwnerCacheNegativeTTL per flow, like an absent socket.
func (s *secondChance) kernelOwns(k *flowKey, now int64, b *Counters) bool {
	if i := s.cache.find(k); i >= 0 {
		e := s.cache.at(i)
		ttl := int64(OwnerCacheNegativeTTL)
		if e.val {
			ttl = int64(OwnerCacheTTL)
		}
		if now-e.t < ttl {
			b.SecondHop.CacheHits++
			return e.val
		}
	}
	b.SecondHop.CacheMisses++
	st, err := s.kernel.state(k)
	if err != nil {
		b.SecondHop.DiagErrors++
	}
	own := err == nil && owned(k.proto, st)
	if !s.cache.put(k, now, own) && s.cache.sweep(now, int64(OwnerCacheTTL), int64(OwnerCacheNegativeTTL), fullSweepSlots) > 0 {
		s.cache.put(k, now, own)
	}
	return own
}

// delivered updates the agent's record for a packet of f delivered here: a
// TCP segment (not an ICMP error about one) refreshes or creates its flow's
// record, or removes it if it carries FIN or RST.
func (s *secondChance) delivered(f *flowInfo, now int64, b *Counters) {
	if (f.class != classTCP && f.class != classTCPSYN) || f.icmp {
		return
	}
	i := s.ownAt
	if i < 0 {
		i = s.own.find(&f.key)
	}
	switch {
	case f.flags&(packet.TCPFlagFIN|packet.TCPFlagRST) != 0:
		if i >= 0 {
			s.own.removeAt(i)
		}
	case i >= 0:
		s.own.at(i).t = now
	case !s.own.put(&f.key, now, true):
		if s.own.sweep(now, s.idle, s.idle, fullSweepSlots) == 0 || !s.own.put(&f.key, now, true) {
			b.SecondHop.TableFull++
		}
	}
}

func (s *secondChance) hopAllowed(hop netip.Addr) bool {
	if len(s.allowed) == 0 {
		return true
	}
	for _, p := range s.allowed {
		if p.Contains(hop) {
			return true
		}
	}
	return false
}

// localAddrs is the set of this host's addresses, read at most once per
// localAddrsTTL, and only when asked.
type localAddrs struct {
	list func() ([]netip.Addr, error)
	set  map[[16]byte]struct{} // As16 of each address
	at   int64                 // when set was read; 0: never
}

// has reports whether a is an address of this host. If the host's
// addresses cannot be read, the last set read stays in use.
func (l *localAddrs) has(a netip.Addr, now int64) bool {
	if l.at == 0 || now-l.at >= int64(localAddrsTTL) {
		l.at = now
		if addrs, err := l.list(); err == nil {
			clear(l.set)
			for _, x := range addrs {
				l.set[x.As16()] = struct{}{}
			}
		}
	}
	_, ok := l.set[a.As16()]
	return ok
}
