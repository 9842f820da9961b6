package egress

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/encap"
)

// Errors wrapped by Attach and Put.
var (
	// ErrBusy is wrapped when the interface already has a Sluice egress
	// program attached (by this process or another).
	ErrBusy = errors.New("egress program already attached")
	// ErrNoInterface is wrapped when the interface does not exist in the
	// caller's network namespace.
	ErrNoInterface = errors.New("no such interface")
	// ErrInvalid is wrapped by Put for a flow or target it cannot install.
	ErrInvalid = errors.New("invalid fastpath flow")
)

// DefaultFlows is the flow map's size when Options.Flows is 0.
const DefaultFlows = 1 << 16

// progName is the program's name as the kernel reports it (at most 15
// bytes): Attach refuses an interface that has it already.
const progName = "sluice_egress"

// Value flags (bpf/egress.c FLAG_*).
const (
	flagV6   = 1
	flagCsum = 2
)

// Flow is one direction of a connection as the client host sends it:
// Client is the packet's source (this host), VIP its destination.
type Flow struct {
	Proto       uint8 // unix.IPPROTO_TCP or unix.IPPROTO_UDP
	Client, VIP netip.AddrPort
}

// Target is where a flow's packets go direct: the backend, and the outer
// header fields an LB node would have written for the flow (encap.SrcPort
// and encap.FlowLabel of the flow hash).
type Target struct {
	Backend   netip.Addr // outer destination; same family as the flow
	Port      uint16     // GUE destination port; 0: encap.DefaultGUEPort
	SrcPort   uint16     // outer UDP source port
	FlowLabel uint32     // IPv6 outer flow label (20 bits)
	// UDPChecksum makes an IPv4 outer packet carry a computed UDP
	// checksum (encap.Tunnel.UDPChecksum). An IPv6 outer packet always
	// does.
	UDPChecksum bool
}

// State is an installed flow as the program sees it.
type State struct {
	Target Target
	// LastUsed is when the program last sent a packet of the flow, to
	// within about a second; zero if it never did.
	LastUsed time.Time
	// Packets and Bytes the program sent direct (a GSO packet counts as
	// its segments, its bytes as the one frame it was before
	// segmentation).
	Packets, Bytes uint64
	// Ended is set when a TCP FIN or RST of the flow was sent direct.
	Ended bool
}

// Counters are the program's counters, summed over CPUs: packets sent
// direct, and the packets it left untouched by reason.
type Counters struct {
	Direct      uint64 // packets encapsulated and sent direct
	DirectBytes uint64 // their bytes (outer frames)
	Ended       uint64 // of Direct, TCP FIN or RST
	Miss        uint64 // parsed, but no entry
	Family      uint64 // the backend's address family differs from the flow's
	TooBig      uint64 // longer than the MTU once encapsulated (not GSO)
	NoCsum      uint64 // inner UDP checksum 0 and an outer checksum needed
	GSOCsum     uint64 // GSO packet and an outer checksum needed
	NoRoute     uint64 // no route to the backend
	NoNeigh     uint64 // the next hop's neighbour is not resolved
	FwdDisabled uint64 // the kernel's fib lookup refused: forwarding off on the interface
	AdjustErr   uint64 // bpf_skb_adjust_room failed
	Parse       uint64 // not untagged Ethernet, IPv4/IPv6 without options, TCP/UDP, unfragmented
}

// Options configure Attach.
type Options struct {
	Interface string // the uplink the client's traffic leaves by
	Flows     int    // flow map size; 0: DefaultFlows
}

// options are load's: Options resolved, and what tests change.
type options struct {
	flows int
	mtu   int
	noFIB bool // no fib lookup: the Ethernet header is left as it is
}

// Program is the egress program of one interface and its flow map.
type Program struct {
	objs   egressObjects
	lnk    link.Link // nil when loaded without attaching (tests)
	ifname string

	mu     sync.Mutex
	closed bool

	// Put's, Delete's and Lookup's key and value, passed to the map by
	// pointer (unsafe.Pointer: no marshalling, no allocation).
	bufMu sync.Mutex
	key   egressFlowKey
	val   egressFlowValue
}

// attachMu serialises Attach's check for a program already attached and
// its own attachment.
var attachMu sync.Mutex

// Attach loads the program with the interface's MTU and attaches it to the
// interface's egress (tcx). The attachment is a bpf_link that is not
// pinned: it goes away with the process, so a crashed agent leaves nothing
// attached. An interface that already has a Sluice egress program fails
// with ErrBusy.
func Attach(o Options) (*Program, error) {
	ifc, err := net.InterfaceByName(o.Interface)
	if err != nil {
		return nil, fmt.Errorf("egress: interface %q: %w: %v", o.Interface, ErrNoInterface, err)
	}
	attachMu.Lock()
	defer attachMu.Unlock()
	if err := checkFree(ifc); err != nil {
		return nil, err
	}
	p, err := load(options{flows: o.Flows, mtu: ifc.MTU})
	if err != nil {
		return nil, err
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: p.objs.SluiceEgress, Attach: ebpf.AttachTCXEgress})
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("egress: attach to %s: %w", ifc.Name, err)
	}
	p.lnk, p.ifname = l, ifc.Name
	return p, nil
}

// checkFree fails with ErrBusy when a program named progName is attached to
// the interface's tcx egress.
func checkFree(ifc *net.Interface) error {
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifc.Index, Attach: ebpf.AttachTCXEgress})
	if err != nil {
		return fmt.Errorf("egress: query %s: %w", ifc.Name, err)
	}
	for _, ap := range res.Programs {
		prog, err := ebpf.NewProgramFromID(ap.ID)
		if err != nil {
			continue // detached meanwhile
		}
		info, err := prog.Info()
		prog.Close()
		if err == nil && info.Name == progName {
			return fmt.Errorf("egress: %s: %w (program id %d)", ifc.Name, ErrBusy, ap.ID)
		}
	}
	return nil
}

// load loads the program and its maps without attaching them.
func load(o options) (*Program, error) {
	spec, err := loadEgress()
	if err != nil {
		return nil, fmt.Errorf("egress: load object: %w", err)
	}
	if o.flows <= 0 {
		o.flows = DefaultFlows
	}
	spec.Maps[egressMapSluiceEgressFlows].MaxEntries = uint32(o.flows)
	if o.mtu > 0 {
		if err := spec.Variables[egressVarMtu].Set(uint32(o.mtu)); err != nil {
			return nil, fmt.Errorf("egress: mtu: %w", err)
		}
	}
	if o.noFIB {
		if err := spec.Variables[egressVarNoFib].Set(uint32(1)); err != nil {
			return nil, fmt.Errorf("egress: no_fib: %w", err)
		}
	}
	p := &Program{}
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("egress: load program: %+v", ve)
		}
		return nil, fmt.Errorf("egress: load program: %w", err)
	}
	return p, nil
}

// Interface returns the name of the interface the program is attached to
// ("" when it is not).
func (p *Program) Interface() string { return p.ifname }

func flowKey(f Flow) (egressFlowKey, error) {
	c, v := f.Client.Addr().Unmap(), f.VIP.Addr().Unmap()
	if !c.IsValid() || !v.IsValid() || c.Is4() != v.Is4() {
		return egressFlowKey{}, fmt.Errorf("egress: flow %v -> %v: %w: addresses of one family required", f.Client, f.VIP, ErrInvalid)
	}
	if f.Proto != unix.IPPROTO_TCP && f.Proto != unix.IPPROTO_UDP {
		return egressFlowKey{}, fmt.Errorf("egress: flow %v -> %v: %w: protocol %d is not TCP or UDP", f.Client, f.VIP, ErrInvalid, f.Proto)
	}
	k := egressFlowKey{Src: c.As16(), Dst: v.As16(), Sport: f.Client.Port(), Dport: f.VIP.Port(), Proto: f.Proto, Family: 6}
	if c.Is4() {
		k.Family = 4
	}
	return k, nil
}

func (k *egressFlowKey) flow() Flow {
	c, v := netip.AddrFrom16(k.Src), netip.AddrFrom16(k.Dst)
	if k.Family == 4 {
		c, v = c.Unmap(), v.Unmap()
	}
	return Flow{Proto: k.Proto, Client: netip.AddrPortFrom(c, k.Sport), VIP: netip.AddrPortFrom(v, k.Dport)}
}

// Put installs the flow's target, or replaces it; a replaced entry starts
// over (counters, last use and Ended zero). A new flow in a full map is an
// error (the map evicts nothing).
func (p *Program) Put(f Flow, t Target) error {
	k, err := flowKey(f)
	if err != nil {
		return err
	}
	b := t.Backend.Unmap()
	if !b.IsValid() || b.IsUnspecified() || b.IsMulticast() {
		return fmt.Errorf("egress: flow %v -> %v: %w: backend %v", f.Client, f.VIP, ErrInvalid, t.Backend)
	}
	if b.Is4() != (k.Family == 4) {
		return fmt.Errorf("egress: flow %v -> %v: %w: backend %v of the other address family", f.Client, f.VIP, ErrInvalid, b)
	}
	v := egressFlowValue{Label: t.FlowLabel & 0xfffff, Port: t.Port, Sport: t.SrcPort}
	if v.Port == 0 {
		v.Port = encap.DefaultGUEPort
	}
	if b.Is4() {
		a := b.As4()
		copy(v.Backend[:], a[:])
	} else {
		v.Backend = b.As16()
		v.Flags |= flagV6
	}
	if t.UDPChecksum {
		v.Flags |= flagCsum
	}
	p.bufMu.Lock()
	p.key, p.val = k, v
	err = p.objs.SluiceEgressFlows.Update(unsafe.Pointer(&p.key), unsafe.Pointer(&p.val), ebpf.UpdateAny)
	p.bufMu.Unlock()
	if err != nil {
		return fmt.Errorf("egress: put %v -> %v: %w", f.Client, f.VIP, err)
	}
	return nil
}

// Delete removes the flow; a flow that is not installed is not an error.
func (p *Program) Delete(f Flow) error {
	k, err := flowKey(f)
	if err != nil {
		return err
	}
	p.bufMu.Lock()
	p.key = k
	err = p.objs.SluiceEgressFlows.Delete(unsafe.Pointer(&p.key))
	p.bufMu.Unlock()
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("egress: delete %v -> %v: %w", f.Client, f.VIP, err)
	}
	return nil
}

// monoOffset returns time.Now minus CLOCK_MONOTONIC: the wall-clock time of
// monotonic time 0 (the program's timestamps are CLOCK_MONOTONIC_COARSE,
// which counts from the same origin).
func monoOffset() (time.Time, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Time{}, fmt.Errorf("egress: clock: %w", err)
	}
	return time.Now().Add(-time.Duration(ts.Nano())), nil
}

func (v *egressFlowValue) state(base time.Time) State {
	s := State{
		Target:  Target{Port: v.Port, SrcPort: v.Sport, FlowLabel: v.Label, UDPChecksum: v.Flags&flagCsum != 0},
		Packets: v.Packets, Bytes: v.Bytes, Ended: v.Ended != 0,
	}
	if v.Flags&flagV6 != 0 {
		s.Target.Backend = netip.AddrFrom16(v.Backend)
	} else {
		s.Target.Backend = netip.AddrFrom4([4]byte(v.Backend[:4]))
	}
	if v.Used != 0 {
		s.LastUsed = base.Add(time.Duration(v.Used))
	}
	return s
}

// Lookup returns the flow's state; ok is false when it is not installed.
func (p *Program) Lookup(f Flow) (s State, ok bool, err error) {
	k, err := flowKey(f)
	if err != nil {
		return State{}, false, err
	}
	p.bufMu.Lock()
	p.key = k
	err = p.objs.SluiceEgressFlows.Lookup(unsafe.Pointer(&p.key), unsafe.Pointer(&p.val))
	v := p.val
	p.bufMu.Unlock()
	if err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return State{}, false, nil
		}
		return State{}, false, fmt.Errorf("egress: lookup %v -> %v: %w", f.Client, f.VIP, err)
	}
	base, err := monoOffset()
	if err != nil {
		return State{}, false, err
	}
	return v.state(base), true, nil
}

// Walk calls fn for every installed flow until fn returns false. Entries
// installed or removed meanwhile may or may not be seen.
func (p *Program) Walk(fn func(Flow, State) bool) error {
	base, err := monoOffset()
	if err != nil {
		return err
	}
	var k egressFlowKey
	var v egressFlowValue
	it := p.objs.SluiceEgressFlows.Iterate()
	for it.Next(&k, &v) {
		if !fn(k.flow(), v.state(base)) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("egress: walk: %w", err)
	}
	return nil
}

// Counters sums the per-CPU counters.
func (p *Program) Counters() (Counters, error) {
	var c Counters
	var per []uint64
	dst := [...]*uint64{
		egressCtrCTR_DIRECT:       &c.Direct,
		egressCtrCTR_DIRECT_BYTES: &c.DirectBytes,
		egressCtrCTR_MISS:         &c.Miss,
		egressCtrCTR_ENDED:        &c.Ended,
		egressCtrCTR_FAMILY:       &c.Family,
		egressCtrCTR_TOO_BIG:      &c.TooBig,
		egressCtrCTR_NO_CSUM:      &c.NoCsum,
		egressCtrCTR_GSO_CSUM:     &c.GSOCsum,
		egressCtrCTR_NO_ROUTE:     &c.NoRoute,
		egressCtrCTR_NO_NEIGH:     &c.NoNeigh,
		egressCtrCTR_FWD_DISABLED: &c.FwdDisabled,
		egressCtrCTR_ADJUST_ERR:   &c.AdjustErr,
		egressCtrCTR_PARSE:        &c.Parse,
	}
	var _ = [1]struct{}{}[len(dst)-int(egressCtrCTR_NUM)] // one field per counter
	for i, d := range dst {
		if err := p.objs.SluiceEgressCtr.Lookup(uint32(i), &per); err != nil {
			return c, fmt.Errorf("egress: counters: %w", err)
		}
		for _, n := range per {
			*d += n
		}
	}
	return c, nil
}

// Close detaches the program and frees it and its maps. It is idempotent.
func (p *Program) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var errs []error
	if p.lnk != nil {
		if err := p.lnk.Close(); err != nil {
			errs = append(errs, fmt.Errorf("egress: detach from %s: %w", p.ifname, err))
		}
	}
	if err := p.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("egress: close: %w", err))
	}
	return errors.Join(errs...)
}

// Forwarding reports whether forwarding is on for the program's interface
// (net.ipv4.conf.IF.forwarding, net.ipv6.conf.IF.forwarding, read in the
// caller's network namespace). The kernel's fib lookup, which the program
// needs to find the backend's next hop, refuses an interface without it:
// the flows of that family are then never sent direct (Counters.FwdDisabled
// counts their packets). Attach does not change these settings.
func (p *Program) Forwarding() (ipv4, ipv6 bool, err error) {
	return forwarding(p.ifname)
}

func forwarding(ifname string) (ipv4, ipv6 bool, err error) {
	if ifname == "" {
		return false, false, errors.New("egress: not attached")
	}
	read := func(fam string) (bool, error) {
		b, err := os.ReadFile("/proc/sys/net/" + fam + "/conf/" + ifname + "/forwarding")
		if errors.Is(err, os.ErrNotExist) && fam == "ipv6" {
			return false, nil // no IPv6 on the interface
		}
		if err != nil {
			return false, fmt.Errorf("egress: %s forwarding of %s: %w", fam, ifname, err)
		}
		return strings.TrimSpace(string(b)) != "0", nil
	}
	if ipv4, err = read("ipv4"); err != nil {
		return false, false, err
	}
	ipv6, err = read("ipv6")
	return ipv4, ipv6, err
}
