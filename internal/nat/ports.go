package nat

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/sluicelb/sluice/internal/fielderr"
)

// Layout divides the SNAT port range among a node's workers. The range
// Lo..Hi (inclusive) is dealt in blocks of 1<<Shift ports: the block of a
// port is port>>Shift, and block b belongs to worker b % Workers. The same
// Layout holds for every SNAT address and for TCP and UDP alike.
type Layout struct {
	Lo, Hi  uint16
	Workers int
	Shift   uint8
}

// DefaultLayout is the range 1024..65535 in blocks of 256 ports for the
// given number of workers.
func DefaultLayout(workers int) Layout {
	return Layout{Lo: 1024, Hi: 65535, Workers: workers, Shift: 8}
}

// ErrLayout is matched (errors.Is) by every error of this package: a
// *fielderr.Error whose path is "layout." and the Layout field, or
// "worker" or "addrs[i]" for the arguments given with it.
var ErrLayout = errors.New("nat: invalid port layout")

func layoutErr(path string, value any, reason string) error {
	return &fielderr.Error{Path: path, Value: value, Reason: reason, Err: ErrLayout}
}

// Validate checks that the range is not empty, Workers is at least 1, Shift
// at most 15, and every worker owns at least one port.
func (l Layout) Validate() error {
	switch {
	case l.Lo == 0:
		return layoutErr("layout.Lo", 0, "is not a usable port")
	case l.Hi < l.Lo:
		return layoutErr("layout.Hi", l.Hi, fmt.Sprintf("is below Lo %d", l.Lo))
	case l.Workers < 1 || l.Workers > 1<<16:
		return layoutErr("layout.Workers", l.Workers, "must be in 1..65536")
	case l.Shift > 15:
		return layoutErr("layout.Shift", l.Shift, "must be at most 15")
	}
	for w := range l.Workers {
		if l.Count(w) == 0 {
			return layoutErr("layout.Workers", l.Workers,
				fmt.Sprintf("leaves worker %d no port of %d..%d in blocks of %d", w, l.Lo, l.Hi, 1<<l.Shift))
		}
	}
	return nil
}

// Owner returns the worker that owns port, or -1 if port is outside Lo..Hi.
func (l Layout) Owner(port uint16) int {
	if port < l.Lo || port > l.Hi || l.Workers < 1 {
		return -1
	}
	return int(port>>l.Shift) % l.Workers
}

// Count returns how many ports worker w owns.
func (l Layout) Count(w int) int {
	n := 0
	l.each(w, func(uint16) { n++ })
	return n
}

// each calls f with every port worker w owns, in ascending order.
func (l Layout) each(w int, f func(uint16)) {
	if l.Workers < 1 || l.Hi < l.Lo || l.Shift > 15 {
		return
	}
	size := 1 << l.Shift
	for b := int(l.Lo) >> l.Shift; b <= int(l.Hi)>>l.Shift; b++ {
		if b%l.Workers != w {
			continue
		}
		lo, hi := max(b*size, int(l.Lo)), min(b*size+size-1, int(l.Hi))
		for p := lo; p <= hi; p++ {
			f(uint16(p))
		}
	}
}

// SteeringMask returns, for Workers a power of two, the value and the mask
// of the destination-port bits that select worker w's share: port&mask ==
// value. The NIC rule steering replies to worker w's queue matches exactly
// those bits (ethtool's "m" is ^mask). ok is false if Workers is not a power
// of two (then one rule per block is needed).
func (l Layout) SteeringMask(w int) (value, mask uint16, ok bool) {
	if l.Workers < 1 || l.Workers&(l.Workers-1) != 0 || w < 0 || w >= l.Workers {
		return 0, 0, false
	}
	mask = uint16((l.Workers - 1) << l.Shift)
	return uint16(w << l.Shift), mask, true
}

// Ports allocates the ports one worker owns for one SNAT address and one
// protocol. Free ports wait in a FIFO ring; a bitmap over all 65536 ports
// says which are allocated. Allocate and Release are O(1) and never
// allocate memory.
//
// A Ports is owned by one goroutine (its worker); it has no locks.
type Ports struct {
	// Immutable after NewPorts.
	ring  []uint16 // capacity: the number of ports owned
	owned [1024]uint64

	// Owned by the worker.
	head  int // index of the oldest free port
	free  int // free ports in the ring, from head
	inUse [1024]uint64
}

// NewPorts returns the allocator of worker w's share of l, all free.
func NewPorts(l Layout, w int) (*Ports, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	if w < 0 || w >= l.Workers {
		return nil, layoutErr("worker", w, fmt.Sprintf("is not in 0..%d", l.Workers-1))
	}
	p := &Ports{ring: make([]uint16, 0, l.Count(w))}
	l.each(w, func(port uint16) {
		p.ring = append(p.ring, port)
		p.owned[port>>6] |= 1 << (port & 63)
	})
	p.free = len(p.ring)
	return p, nil
}

// Allocate returns the free port released longest ago (or never used), and
// ok=false if none is free.
func (p *Ports) Allocate() (port uint16, ok bool) {
	if p.free == 0 {
		return 0, false
	}
	port = p.ring[p.head]
	if p.head++; p.head == len(p.ring) {
		p.head = 0
	}
	p.free--
	p.inUse[port>>6] |= 1 << (port & 63)
	return port, true
}

// Release returns port to the free ports. It returns false, and changes
// nothing, if port is not allocated from p (never allocated, released
// already, or another worker's): a double release would otherwise hand one
// port to two flows.
func (p *Ports) Release(port uint16) bool {
	w, bit := port>>6, uint64(1)<<(port&63)
	if p.inUse[w]&bit == 0 {
		return false
	}
	p.inUse[w] &^= bit
	tail := p.head + p.free
	if tail >= len(p.ring) {
		tail -= len(p.ring)
	}
	p.ring[tail] = port
	p.free++
	return true
}

// InUse reports whether port is allocated from p.
func (p *Ports) InUse(port uint16) bool { return p.inUse[port>>6]&(1<<(port&63)) != 0 }

// Owns reports whether port is one of p's.
func (p *Ports) Owns(port uint16) bool { return p.owned[port>>6]&(1<<(port&63)) != 0 }

// Free returns the number of free ports.
func (p *Ports) Free() int { return p.free }

// Cap returns the number of ports p owns.
func (p *Ports) Cap() int { return len(p.ring) }

// Pool is one worker's SNAT ports over all of the node's SNAT addresses,
// TCP and UDP apart (their port spaces are independent). Allocate takes the
// addresses in turn. Owned by one goroutine, like Ports.
type Pool struct {
	addrs []Addr
	ports [][2]*Ports // by address index; [0] TCP, [1] UDP
	next  int         // the address Allocate tries first
}

// Addr is an SNAT address in the 16-byte form of flow keys (IPv4-mapped for
// IPv4).
type Addr = [16]byte

// MaxAddrs is the number of SNAT addresses a Pool takes: an address index
// fits a byte of a flow entry.
const MaxAddrs = 256

// NewPool returns worker w's pool over addrs, all ports free.
func NewPool(addrs []netip.Addr, l Layout, w int) (*Pool, error) {
	if len(addrs) == 0 || len(addrs) > MaxAddrs {
		return nil, layoutErr("addrs", len(addrs), fmt.Sprintf("SNAT addresses; need 1..%d", MaxAddrs))
	}
	p := &Pool{}
	seen := make(map[netip.Addr]bool)
	for i, a := range addrs {
		if !a.IsValid() || a.IsUnspecified() || a.Is4In6() || seen[a] {
			return nil, layoutErr(fmt.Sprintf("addrs[%d]", i), a.String(), "is invalid, unspecified, IPv4-mapped or repeated")
		}
		seen[a] = true
		var pp [2]*Ports
		for j := range pp {
			var err error
			if pp[j], err = NewPorts(l, w); err != nil {
				return nil, err
			}
		}
		p.addrs = append(p.addrs, a.As16())
		p.ports = append(p.ports, pp)
	}
	return p, nil
}

func protoIndex(proto uint8) int {
	if proto == 17 {
		return 1
	}
	return 0
}

// Allocate returns an address index and a port for a new flow of proto (6
// TCP, 17 UDP): from the next address in turn that has a free port. ok is
// false when every address is exhausted for proto. The addresses may be of
// both families; a caller that needs one family uses AllocateFamily.
func (p *Pool) Allocate(proto uint8) (addr int, port uint16, ok bool) {
	return p.allocate(proto, 0)
}

// AllocateFamily is Allocate restricted to IPv4 (v6 false) or IPv6
// addresses.
func (p *Pool) AllocateFamily(proto uint8, v6 bool) (addr int, port uint16, ok bool) {
	if v6 {
		return p.allocate(proto, 6)
	}
	return p.allocate(proto, 4)
}

var v4Prefix = [12]byte{10: 0xff, 11: 0xff}

func (p *Pool) allocate(proto uint8, family int) (int, uint16, bool) {
	pi := protoIndex(proto)
	n := len(p.addrs)
	for range n {
		i := p.next
		if p.next++; p.next == n {
			p.next = 0
		}
		if family != 0 && (family == 4) != ([12]byte(p.addrs[i][:12]) == v4Prefix) {
			continue
		}
		if port, ok := p.ports[i][pi].Allocate(); ok {
			return i, port, true
		}
	}
	return 0, 0, false
}

// Release frees a port Allocate returned; false if it was not allocated
// (see Ports.Release) or addr is out of range.
func (p *Pool) Release(proto uint8, addr int, port uint16) bool {
	if addr < 0 || addr >= len(p.addrs) {
		return false
	}
	return p.ports[addr][protoIndex(proto)].Release(port)
}

// Addr returns SNAT address i.
func (p *Pool) Addr(i int) *Addr { return &p.addrs[i] }

// NumAddrs returns the number of SNAT addresses.
func (p *Pool) NumAddrs() int { return len(p.addrs) }

// Cap returns the number of bindings the pool can hold at once: ports per
// address and protocol x addresses x 2. A Reverse table of this capacity
// never refuses an insert for room.
func (p *Pool) Cap() int { return len(p.addrs) * 2 * p.ports[0][0].Cap() }

// Free returns the free ports for proto over all addresses.
func (p *Pool) Free(proto uint8) int {
	n := 0
	for i := range p.ports {
		n += p.ports[i][protoIndex(proto)].Free()
	}
	return n
}
