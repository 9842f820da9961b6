// Package offload is the Go half of the flow cache offloaded to XDP: what a
// worker hands the kernel (Op, through a bounded Ring per worker), what the
// kernel half applies per backend (Template), what it counts (Counters), and
// the Kernel interface a link implements (link/afxdp's offload program).
//
// The worker decides; the kernel only repeats decisions. A worker installs a
// flow's entry (key, backend, generation, the outer UDP source port and IPv6
// flow label derived from the flow hash) once the flow is established, and
// removes it when the flow closes or leaves the worker's table. The kernel
// half forwards a packet only with an entry of the current generation
// (Kernel.SetGeneration); everything else reaches the worker as before.
//
// Lifetimes and concurrency: a Ring has one producer (its worker, Push: no
// allocation, no system call, never blocks) and one consumer (the Syncer,
// Drain). The Syncer is the only goroutine that calls Kernel.Update; Apply
// (SetGeneration) and Counters are called by the node server.
package offload

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/flow"
)

// MaxReals bounds the backend IDs the kernel half holds templates and
// counters for; flows of backends with larger IDs are not offloaded.
const MaxReals = 4096

// MaxSNAT bounds the SNAT address indexes whose full-NAT flows can be
// offloaded.
const MaxSNAT = 4

// Op is one change to the kernel's flow map: install (or replace) Key's
// entry, or delete it.
type Op struct {
	Key   flow.Key
	Del   bool
	Gen   uint32 // generation the decision belongs to
	Real  uint32 // backend ID (pipeline.Real.ID)
	Sport uint16 // GUE outer source port: encap.SrcPort(flow hash); full-NAT: the SNAT port
	Label uint32 // IPv6 outer flow label: encap.FlowLabel(flow hash)
	// NAT marks a full-NAT flow, rewritten with the backend's template for
	// SNAT address NATAddr (and Sport as the source port).
	NAT     bool
	NATAddr uint8
}

// Template is a backend's outer headers as the kernel half applies them;
// the zero Template means "no template" (the backend's flows go to the
// worker).
type Template struct {
	Image encap.Image
	Valid bool
	V6    bool // IPv6 outer
	GUE   bool // GUE, else IPIP / IP6IP6
	Csum  bool // compute the outer UDP checksum
	MTU   uint32
	// NAT are a full-NAT backend's rewrites by SNAT address index (the
	// zero NATTemplate: none); such a backend has no encapsulation
	// (Valid false).
	NAT [MaxSNAT]NATTemplate
}

// NATTemplate is a full-NAT backend's rewrite for one SNAT address.
type NATTemplate struct {
	Image encap.NATImage
	Valid bool
}

// TemplateOf returns t as the kernel applies it, for outer IP packets of at
// most mtu bytes (0: no limit).
func TemplateOf(t *encap.Template, mtu int) Template {
	if t == nil {
		return Template{}
	}
	return Template{
		Image: t.Image(),
		Valid: true,
		V6:    t.Is6(),
		GUE:   t.Mode() == encap.GUE,
		Csum:  t.UDPChecksum(),
		MTU:   uint32(max(mtu, 0)),
	}
}

// Reason is why the kernel half handed a VIP's packet to the worker.
type Reason uint8

const (
	ReasonNoEntry    Reason = iota // no offloaded entry (a new flow, or not yet installed)
	ReasonStale                    // an entry of another generation
	ReasonTCPFlags                 // SYN, FIN or RST: TCP state stays in Go
	ReasonFragment                 // IPv4 fragment
	ReasonIPOptions                // IPv4 header with options
	ReasonProto                    // not TCP or UDP (ICMP and its errors, IPv6 extension headers)
	ReasonVLAN                     // 802.1Q / 802.1ad tagged frame
	ReasonTooBig                   // larger than the MTU once encapsulated
	ReasonNoTemplate               // the backend has no template in this generation
	ReasonNoChecksum               // inner UDP without checksum, outer checksum required
	ReasonHeadroom                 // no room for the outer headers
	ReasonMalformed                // truncated, or lengths that disagree
	NumReasons
)

var reasonNames = [NumReasons]string{
	"no_entry", "stale_generation", "tcp_flags", "fragment", "ip_options", "protocol",
	"vlan", "too_big", "no_template", "no_checksum", "headroom", "malformed",
}

func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// RealCounters count what the kernel half forwarded to one backend.
type RealCounters struct{ Packets, Bytes uint64 }

// Counters are the kernel half's counters, summed over CPUs, plus the Go
// half's (the Syncer's).
type Counters struct {
	Forwarded    uint64             // packets forwarded by the kernel (XDP_TX)
	NATForwarded uint64             // of Forwarded, full-NAT rewrites
	Passed       [NumReasons]uint64 // VIP packets handed to the worker, by reason
	Reals        []RealCounters     // by backend ID (MaxReals at most)

	// The Go half: entries installed and deleted, operations a worker's
	// full ring refused (a refused delete is kept and queued again),
	// deletes lost because the worker's store of them was full too (the
	// kernel then keeps the flow until its LRU drops it or a new
	// generation makes it stale), and failed map updates.
	Installed, Deleted, RingFull, DeletesLost, Errors uint64
	// Entries is how many flows the kernel's map holds (counted up to
	// 2^20; -1: unknown).
	Entries int
}

// Add adds o to c.
func (c *Counters) Add(o *Counters) {
	c.Forwarded += o.Forwarded
	c.NATForwarded += o.NATForwarded
	for i := range c.Passed {
		c.Passed[i] += o.Passed[i]
	}
	if len(c.Reals) < len(o.Reals) {
		c.Reals = append(c.Reals, make([]RealCounters, len(o.Reals)-len(c.Reals))...)
	}
	for i := range o.Reals {
		c.Reals[i].Packets += o.Reals[i].Packets
		c.Reals[i].Bytes += o.Reals[i].Bytes
	}
	c.Installed += o.Installed
	c.Deleted += o.Deleted
	c.RingFull += o.RingFull
	c.DeletesLost += o.DeletesLost
	c.Errors += o.Errors
	c.Entries += o.Entries
}

// Kernel is the kernel half: link/afxdp's offload program and its maps.
type Kernel interface {
	// Update applies ops in order. It is called by one goroutine at a
	// time (the Syncer); ops is only read during the call.
	Update(ops []Op) error
	// SetGeneration writes the templates of generation id (by backend ID;
	// the zero Template for IDs without one), then makes id the current
	// generation: entries of other generations are no longer used.
	SetGeneration(id uint32, tmpls []Template) error
	// Counters reads the kernel's counters.
	Counters() (Counters, error)
	// Active appends to keys the flows the kernel forwarded a packet of
	// within the last d (to a second: the program notes a flow's time at
	// most once a second) and returns it.
	Active(keys []flow.Key, d time.Duration) ([]flow.Key, error)
}

// ErrUnsupported is returned where the kernel or the link cannot offload.
var ErrUnsupported = errors.New("offload: unsupported")

// Ring is a bounded single-producer single-consumer queue of Ops.
type Ring struct {
	ops  []Op
	mask uint64
	head atomic.Uint64 // next slot the consumer reads
	tail atomic.Uint64 // next slot the producer writes
	full atomic.Uint64 // Push calls refused (written by the producer)
}

// NewRing returns a ring of n slots (rounded up to a power of two, at least 2).
func NewRing(n int) *Ring {
	size := 2
	for size < n {
		size <<= 1
	}
	return &Ring{ops: make([]Op, size), mask: uint64(size - 1)}
}

// Push queues op; it reports false (and counts it) when the ring is full.
// Producer only; it does not allocate.
func (r *Ring) Push(op *Op) bool {
	t := r.tail.Load()
	if t-r.head.Load() > r.mask {
		r.full.Add(1)
		return false
	}
	r.ops[t&r.mask] = *op
	r.tail.Store(t + 1)
	return true
}

// Full returns how many Push calls were refused; any goroutine.
func (r *Ring) Full() uint64 { return r.full.Load() }

// Drain appends the queued ops to buf and returns it. Consumer only.
func (r *Ring) Drain(buf []Op) []Op {
	h, t := r.head.Load(), r.tail.Load()
	for ; h != t; h++ {
		buf = append(buf, r.ops[h&r.mask])
	}
	r.head.Store(h)
	return buf
}

// Join returns one Kernel for several (the node's interfaces, each with its
// own program and maps): updates and generations go to every one, counters
// are summed. Join of one Kernel is that Kernel.
func Join(ks ...Kernel) Kernel {
	if len(ks) == 1 {
		return ks[0]
	}
	return joined(ks)
}

type joined []Kernel

func (j joined) Update(ops []Op) error {
	var errs []error
	for _, k := range j {
		if err := k.Update(ops); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (j joined) SetGeneration(id uint32, t []Template) error {
	var errs []error
	for _, k := range j {
		if err := k.SetGeneration(id, t); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (j joined) Active(keys []flow.Key, d time.Duration) ([]flow.Key, error) {
	var errs []error
	for _, k := range j {
		var err error
		if keys, err = k.Active(keys, d); err != nil {
			errs = append(errs, err)
		}
	}
	return keys, errors.Join(errs...)
}

func (j joined) Counters() (Counters, error) {
	var sum Counters
	var errs []error
	for _, k := range j {
		c, err := k.Counters()
		if err != nil {
			errs = append(errs, err)
		}
		sum.Add(&c)
	}
	return sum, errors.Join(errs...)
}
