package pipeline

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/nat"
	"github.com/sluicelb/sluice/internal/packet"
)

// Full-NAT forwarding (forwarding: nat, DESIGN §3.3): a flow's packets
// leave as S:sp -> B:bp (S an SNAT address of the node, sp a port of the
// worker's share, B:bp the backend and the service's port) and the
// backend's replies B:bp -> S:sp leave as VIP:vp -> C:cp.
//
//	miss:  NATReply (replies: binding -> client) | classify -> balance ->
//	       NATBind (allocate sp, insert the reply binding, record it in
//	       the flow entry) -> Encapsulate (natForward: NATTemplate.Forward)
//	hit:   Encapsulate (natForward with the entry's binding)
//
// The reply binding lives exactly as long as the flow entry: the worker
// registers NATState.Removed with flow.Table.OnRemove, which deletes the
// binding and releases the port whatever removes the entry.

// RealNAT is a full-NAT backend's rewrite: one template per SNAT address
// (nil for the addresses of the other family, and all nil while the next
// hop is unresolved), and the backend's address and port, which its
// replies must come from.
type RealNAT struct {
	Templates []*encap.NATTemplate // by SNAT address index (Spec.SNAT)
	L2        *encap.L2Template    // toward the backend: for ICMP errors sent to it
	Addr      [16]byte             // IPv4-mapped for IPv4, as flow.Key stores it
	Port      uint16
}

// checkNATService checks what a full-NAT service needs.
func checkNATService(ss *ServiceSpec, snat []netip.Addr) error {
	for _, b := range ss.Backends {
		if b.Tunnel.Dst.Is4() != ss.Addr.Is4() {
			return fmt.Errorf("full-NAT backend %s is not of the VIP's address family", b.Tunnel.Dst)
		}
	}
	switch {
	case ss.Port == 0 || ss.PortEnd != 0 && ss.PortEnd != ss.Port:
		return errors.New("full-NAT needs a single port (the backends' port)")
	case ss.Stateless || ss.QUIC != nil:
		return errors.New("full-NAT needs flow entries (not stateless, not QUIC)")
	case ss.SecondChance:
		return errors.New("full-NAT has no second chance (no hop list without a tunnel)")
	case ss.Tenant != "":
		return errors.New("full-NAT serves the default tenant only (replies do not return into a tenant's network)")
	case len(snat) == 0:
		return errors.New("full-NAT needs SNAT addresses")
	case len(snat) > nat.MaxAddrs:
		return fmt.Errorf("%d SNAT addresses, at most %d", len(snat), nat.MaxAddrs)
	}
	return nil
}

// compileRealNAT builds a full-NAT backend's templates.
func compileRealNAT(bs *BackendSpec, port uint16, snat []netip.Addr) (*RealNAT, error) {
	dst := bs.Tunnel.Dst
	l2 := encap.L2{SrcMAC: bs.Tunnel.SrcMAC, DstMAC: bs.Tunnel.DstMAC, VLAN: bs.Tunnel.VLAN}
	rn := &RealNAT{Templates: make([]*encap.NATTemplate, len(snat)), L2: encap.CompileL2(l2), Addr: dst.As16(), Port: port}
	found := false
	for i, s := range snat {
		if s.Is4() != dst.Is4() {
			continue
		}
		t, err := encap.CompileNAT(encap.NAT{L2: l2, SNAT: s, Backend: netip.AddrPortFrom(dst, port)})
		if err != nil {
			return nil, err
		}
		if !bs.NoNextHop {
			rn.Templates[i] = t
		}
		found = true
	}
	if !found {
		return nil, fmt.Errorf("%s: no SNAT address of its family", dst)
	}
	return rn, nil
}

// NATCounters count a worker's full-NAT work.
type NATCounters struct {
	Bound          uint64 // bindings made (new full-NAT flows)
	Released       uint64 // bindings removed with their flow, ports released
	Forwarded      uint64 // packets rewritten toward a backend
	Replies        uint64 // replies rewritten toward a client
	ICMPToClient   uint64 // ICMP errors about forwarded packets, translated to the client
	ICMPToBackend  uint64 // ICMP errors about replies, translated to the backend
	Exhausted      uint64 // new flows refused: no free SNAT port (also in drops, snat_exhausted)
	InUse          uint64 // bindings (ports) held at the snapshot; not summed meaningfully over time
	Capacity       uint64 // ports the worker's share holds (TCP and UDP, every address)
	BackendChanged uint64 // bindings moved to another backend when a flow was rescheduled
	// HandedOff counts replies (and ICMP errors) to an SNAT port another
	// worker owns, handed to it, and copies of ICMP errors to a VIP about
	// a flow the worker does not have, handed to each other worker;
	// HandoffDropped those it could not take (its inbox full, or no frame
	// to send them in).
	HandedOff, HandoffDropped uint64
}

// Add adds o to c.
func (c *NATCounters) Add(o *NATCounters) {
	c.Bound += o.Bound
	c.Released += o.Released
	c.Forwarded += o.Forwarded
	c.Replies += o.Replies
	c.ICMPToClient += o.ICMPToClient
	c.ICMPToBackend += o.ICMPToBackend
	c.HandedOff += o.HandedOff
	c.HandoffDropped += o.HandoffDropped
	c.Exhausted += o.Exhausted
	c.InUse += o.InUse
	c.Capacity += o.Capacity
	c.BackendChanged += o.BackendChanged
}

// NATState is one worker's full-NAT state: its SNAT ports and the reply
// bindings of its flows. Owned by the worker goroutine.
type NATState struct {
	Pool     *nat.Pool
	Rev      *nat.Reverse
	Counters NATCounters
	seed     uint64 // the reply table's hash seed (its own: node.seed may change live)
	l2       *encap.L2Template
}

// NewNATState returns worker w's full-NAT state over the SNAT addresses
// addrs with the port layout l.
func NewNATState(addrs []netip.Addr, l nat.Layout, w int, seed uint64) (*NATState, error) {
	pool, err := nat.NewPool(addrs, l, w)
	if err != nil {
		return nil, err
	}
	s := &NATState{Pool: pool, Rev: nat.NewReverse(pool.Cap()), seed: seed, l2: encap.CompileL2(encap.L2{})}
	s.Counters.Capacity = uint64(pool.Cap())
	return s, nil
}

// replyKey returns the reverse table's key of a binding: the SNAT address
// and port and the protocol. The backend is left out (a port is the
// flow's alone, whatever its backend), so that a rescheduled flow keeps
// its binding and a removed entry finds it from its own fields.
func (s *NATState) replyKey(k *flow.Key, proto uint8, addr uint8, port uint16) uint64 {
	*k = flow.Key{Dst: *s.Pool.Addr(int(addr)), DstPort: port, Proto: proto}
	return k.Hash(s.seed)
}

// IsSNAT reports whether a is one of the SNAT addresses: a packet to it
// is a full-NAT reply (or an ICMP error about a packet the node sent).
func (s *NATState) IsSNAT(a *[16]byte) bool { return s.addrIndex(a) >= 0 }

// addrIndex returns the index of SNAT address a, or -1.
func (s *NATState) addrIndex(a *[16]byte) int {
	for i := range s.Pool.NumAddrs() {
		if *s.Pool.Addr(i) == *a {
			return i
		}
	}
	return -1
}

// Removed is the flow table's removal hook (flow.Table.OnRemove): it
// deletes a full-NAT entry's binding and releases its port.
func (s *NATState) Removed(e *flow.Entry) {
	if e.NATPort == 0 {
		return
	}
	var k flow.Key
	h := s.replyKey(&k, e.Key.Proto, e.NATAddr, e.NATPort)
	deleted := s.Rev.Delete(&k, h)
	// The port goes back whatever the reverse table said: a binding that
	// was missing must not leak its port too.
	if s.Pool.Release(e.Key.Proto, int(e.NATAddr), e.NATPort) && deleted {
		s.Counters.Released++
	}
}

// Snapshot returns the counters with InUse filled in.
func (s *NATState) Snapshot() NATCounters {
	c := s.Counters
	c.InUse = uint64(s.Rev.Len())
	return c
}

// NATReply translates what backends send to the SNAT addresses: replies
// of full-NAT flows (B:bp -> S:sp becomes VIP:vp -> C:cp) and ICMP errors
// quoting the node's packets to them. It runs on misses only (replies
// have no forward entry) and before classify.
type NATReply struct{}

func (NATReply) Name() string   { return "nat_reply" }
func (NATReply) Memoised() bool { return true }

func (NATReply) Process(c *Context, pkts []*Packet) {
	s := c.NAT
	if s == nil {
		return
	}
	for _, p := range pkts {
		// Full-NAT serves the default tenant only: a tenant's packet to an
		// SNAT address is not a reply of any binding.
		if p.Verdict != Continue || p.Key.Tenant != 0 || s.addrIndex(&p.Key.Dst) < 0 {
			continue
		}
		natReply(c, s, p)
	}
}

func natReply(c *Context, s *NATState, p *Packet) {
	// p.Key is B:bp -> S:sp, for an ICMP error the quoted packet reversed:
	// the same tuple.
	var k flow.Key
	k.Dst, k.DstPort, k.Proto = p.Key.Dst, p.Key.DstPort, p.Key.Proto
	b := s.Rev.Lookup(&k, k.Hash(s.seed))
	if b == nil {
		p.Verdict, p.Reason = Drop, ReasonNATNoBinding
		return
	}
	if b.BackendAddr != p.Key.Src || b.BackendPort != p.Key.SrcPort {
		// Not from the backend the binding was made for (recorded in the
		// binding: a backend that left the generation is checked too).
		p.Verdict, p.Reason = Drop, ReasonNATNoBinding
		return
	}
	natReplyRewrite(c, s, p, b)
}

// NATReplyFragment translates a later fragment of a full-NAT reply, which
// carries no ports: its datagram's first fragment named the binding (SNAT
// address index addr, port, the flow's protocol proto). Only its addresses change
// (B -> S becomes VIP -> C), for the first fragment's checksum covers the
// whole datagram. It must come from the binding's backend.
func NATReplyFragment(c *Context, p *Packet, addr uint8, port uint16, proto uint8) {
	s := c.NAT
	var k flow.Key
	k.Dst, k.DstPort, k.Proto = *s.Pool.Addr(int(addr)), port, proto
	b := s.Rev.Lookup(&k, k.Hash(s.seed))
	if b == nil || b.BackendAddr != p.Key.Src {
		p.Verdict, p.Reason = Drop, ReasonNATNoBinding
		return
	}
	natReplyRewrite(c, s, p, b)
}

// natReplyRewrite rewrites p, a reply (or an ICMP error) of binding b,
// toward the client.
func natReplyRewrite(c *Context, s *NATState, p *Packet, b *nat.Binding) {
	cl := &b.Client
	if !p.ICMPError {
		// The backend's FIN or RST closes the flow too; a half-open flow's
		// retransmitted SYN-ACKs do not keep it alive.
		if e := c.Flows.Lookup(cl, cl.Hash(c.Gen.Seed)); e != nil && e.State != flow.StateSYN {
			e.Observe(p.Parsed.TCPFlags, c.Now)
		}
	}
	buf := p.Buf
	l3, end := p.Off+p.Parsed.L3Off, p.Off+p.Parsed.L3End
	l4 := 0
	if p.Parsed.L4Off != 0 && p.Parsed.Frag != packet.LaterFragment {
		l4 = p.Off + p.Parsed.L4Off
	}
	var self [6]byte // the node's MAC: where the reply was sent to
	copy(self[:], buf[p.Off:p.Off+6])
	start := -1
	if p.ICMPError {
		// An error about S:sp -> B:bp reaches the client as VIP -> C about
		// C:cp -> VIP:vp.
		q := encap.NATTuple{Src: cl.Src, Dst: cl.Dst, SrcPort: cl.SrcPort, DstPort: cl.DstPort}
		start = s.l2.NATICMPError(buf, l3, l4, end, &cl.Dst, &cl.Src, &q)
		if start >= 0 {
			s.Counters.ICMPToClient++
		}
	} else {
		to := encap.NATTuple{Src: cl.Dst, Dst: cl.Src, SrcPort: cl.DstPort, DstPort: cl.SrcPort}
		start = s.l2.NAT(buf, l3, l4, end, cl.Proto, &to)
		if start >= 0 {
			s.Counters.Replies++
		}
	}
	if start < 0 {
		p.Verdict, p.Reason = Drop, ReasonNoHeadroom
		if p.ICMPError {
			p.Reason = ReasonICMP
		}
		return
	}
	le := binary.LittleEndian
	le.PutUint32(buf[start:], le.Uint32(b.Return[0:]))
	le.PutUint16(buf[start+4:], le.Uint16(b.Return[4:]))
	copy(buf[start+6:start+12], self[:])
	p.Off, p.Len = start, end-start
	p.Verdict = Forward
}

// NATBind gives a full-NAT service's new flow its binding: an SNAT port
// from the worker's pool (none free: dropped, snat_exhausted, and the
// entry removed so that a later packet tries again), the reply binding
// and the port in the flow entry. A flow that has one keeps it (a new
// generation may have moved it to another backend: the binding follows).
// It runs after balance, on misses, and inserts nothing into the flow
// table, so the entries it looks up stay put.
type NATBind struct{}

func (NATBind) Name() string   { return "nat_bind" }
func (NATBind) Memoised() bool { return true }

func (NATBind) Process(c *Context, pkts []*Packet) {
	for _, p := range pkts {
		if p.Verdict != Continue || p.Real == nil || p.Real.NAT == nil {
			continue
		}
		s := c.NAT
		e := c.Flows.Lookup(&p.Key, p.Hash)
		switch {
		case s == nil || e == nil:
			// No SNAT state, or no entry (table full, or an ICMP error
			// about a flow this worker does not have).
			p.Verdict, p.Reason = Drop, ReasonNATNoBinding
			if p.ICMPError {
				p.Reason = ReasonICMP
			}
			continue
		case e.NATPort != 0:
			p.NATAddr, p.NATPort = e.NATAddr, e.NATPort
			if !p.ICMPError {
				var k flow.Key
				if b := s.Rev.Lookup(&k, s.replyKey(&k, p.Key.Proto, e.NATAddr, e.NATPort)); b != nil && b.Backend != e.Backend {
					b.Backend = e.Backend
					b.BackendAddr, b.BackendPort = p.Real.NAT.Addr, p.Real.NAT.Port
					s.Counters.BackendChanged++
				}
			}
			continue
		case p.ICMPError:
			p.Verdict, p.Reason = Drop, ReasonICMP
			continue
		case p.Key.Proto == packet.ProtoTCP && !p.Parsed.IsTCPSYN():
			// Only a SYN starts a connection the backend can know: a
			// mid-flow packet without a binding (or a spoofed ACK) gets no
			// port.
			c.Flows.Delete(&p.Key, p.Hash)
			p.Verdict, p.Reason = Drop, ReasonNATNoBinding
			continue
		}
		ai, port, ok := s.Pool.AllocateFamily(p.Key.Proto, p.Parsed.Tuple.IPVersion == 6)
		if !ok {
			s.Counters.Exhausted++
			c.Flows.Delete(&p.Key, p.Hash)
			p.Verdict, p.Reason = Drop, ReasonSNATExhausted
			continue
		}
		var k flow.Key
		h := s.replyKey(&k, p.Key.Proto, uint8(ai), port)
		b := nat.Binding{Client: p.Key, Backend: e.Backend, BackendAddr: p.Real.NAT.Addr, BackendPort: p.Real.NAT.Port}
		copy(b.Return[:], p.Buf[p.Off+6:p.Off+12])
		if !s.Rev.Insert(&k, h, b) {
			// Cannot happen with a table of Pool.Cap: a bug, refused cleanly.
			s.Pool.Release(p.Key.Proto, ai, port)
			c.Flows.Delete(&p.Key, p.Hash)
			p.Verdict, p.Reason = Drop, ReasonNATNoBinding
			continue
		}
		e.NATAddr, e.NATPort = uint8(ai), port
		p.NATAddr, p.NATPort = uint8(ai), port
		s.Counters.Bound++
	}
}

// natForward rewrites a full-NAT packet toward its backend (Encapsulate's
// counterpart): C:cp -> VIP:vp becomes S:sp -> B:bp; an ICMP error about a
// reply (VIP:vp -> C:cp) goes to the backend as S -> B about B:bp -> S:sp.
// Nothing is added, so nothing outgrows the MTU. Later fragments carry no
// ports and are dropped (fragment): the flow's port is in its entry, which
// they cannot name.
func natForward(c *Context, p *Packet) {
	rn := p.Real.NAT
	if p.NATPort == 0 {
		p.Verdict, p.Reason = Drop, ReasonNATNoBinding
		if p.Parsed.Frag == packet.LaterFragment { // its first fragment's binding is unknown
			p.Reason = ReasonFragment
		}
		return
	}
	if int(p.NATAddr) >= len(rn.Templates) || rn.Templates[p.NATAddr] == nil {
		p.Verdict, p.Reason = Drop, ReasonNoNextHop
		return
	}
	t := rn.Templates[p.NATAddr]
	l3, end := p.Off+p.Parsed.L3Off, p.Off+p.Parsed.L3End
	l4 := p.Off + p.Parsed.L4Off
	var start int
	if p.ICMPError {
		s := c.NAT
		if s == nil {
			p.Verdict, p.Reason = Drop, ReasonICMP
			return
		}
		snat := s.Pool.Addr(int(p.NATAddr))
		q := encap.NATTuple{Src: rn.Addr, Dst: *snat, SrcPort: rn.Port, DstPort: p.NATPort}
		start = rn.L2.NATICMPError(p.Buf, l3, l4, end, snat, &rn.Addr, &q)
		if start < 0 {
			p.Verdict, p.Reason = Drop, ReasonICMP
			return
		}
		s.Counters.ICMPToBackend++
	} else {
		if p.Parsed.Frag == packet.LaterFragment {
			// Its first fragment's binding (from the worker's fragment
			// table): only the addresses change; the first fragment's
			// checksum covers the whole datagram.
			l4 = 0
		}
		start = t.Forward(p.Buf, l3, l4, end, p.Parsed.Tuple.Proto, p.NATPort)
		if start < 0 {
			p.Verdict, p.Reason = Drop, ReasonNoHeadroom
			return
		}
		if c.NAT != nil {
			c.NAT.Counters.Forwarded++
		}
	}
	p.Off, p.Len = start, end-start
	p.Verdict = Forward
}

// Resolved reports whether the backend's packets can leave: its next hop
// is resolved (a tunnel template, or full-NAT templates).
func (r *Real) Resolved() bool {
	if r.NAT != nil {
		for _, t := range r.NAT.Templates {
			if t != nil {
				return true
			}
		}
		return false
	}
	return r.Template != nil
}
