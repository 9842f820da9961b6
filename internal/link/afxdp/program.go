package afxdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	ebpflink "github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// XDP actions (enum xdp_action).
const (
	xdpAborted  = 0
	xdpDrop     = 1
	xdpPass     = 2
	xdpRedirect = 4
)

// xdp_md field offsets.
const (
	mdData       = 0
	mdDataEnd    = 4
	mdRxQueueIdx = 16
)

// maxVIPs bounds each VIP hash map (IPv4 and IPv6). The maps are not
// preallocated, so the bound costs nothing until it is used.
const maxVIPs = 65536

// etherType returns the 16-bit EtherType t as a native-endian load from the
// packet sees it, so that the program compares without byte swaps.
func etherType(t uint16) int32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], t)
	return int32(binary.NativeEndian.Uint16(b[:]))
}

// xdpInstructions is the XDP program:
//
//	parse Ethernet (and one 802.1Q / 802.1ad tag)
//	IPv4: key = destination address (4 bytes), look it up in vip4
//	IPv6: key = destination address (16 bytes), look it up in vip6;
//	      a neighbour solicitation to a VIP passes (the L2 responder's)
//	hit:  return bpf_redirect_map(xsks, ctx->rx_queue_index, fallback)
//	else: return XDP_PASS
//
// Every packet load is preceded by a bounds check against data_end, and
// every path ends in an exit (the verifier rejects unreachable code).
// fallback is the action when the queue has no socket in xsks: XDP_PASS in
// production (the kernel then handles VIP traffic), something else in tests
// that need to see that the VIP lookup hit.
func xdpInstructions(xsks, vip4, vip6 *ebpf.Map, fallback int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // r6 = ctx, preserved across calls
		asm.LoadMem(asm.R2, asm.R6, mdData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.Word),

		// Ethernet: 14 bytes, EtherType at 12.
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 14),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JEq.Imm(asm.R5, etherType(unix.ETH_P_8021Q), "vlan"),
		asm.JEq.Imm(asm.R5, etherType(unix.ETH_P_8021AD), "vlan"),
		asm.Add.Imm(asm.R2, 14), // r2 = network header
		asm.Ja.Label("l3"),

		// One VLAN tag: the inner EtherType is at 16, the header ends at 18.
		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol("vlan"),
		asm.Add.Imm(asm.R4, 18),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 16, asm.Half),
		asm.Add.Imm(asm.R2, 18),

		// r2 = network header, r5 = its EtherType.
		asm.JEq.Imm(asm.R5, etherType(unix.ETH_P_IP), "ip4").WithSymbol("l3"),
		asm.JEq.Imm(asm.R5, etherType(unix.ETH_P_IPV6), "ip6"),
		asm.Ja.Label("pass"),

		// IPv4: destination at 16..20 of a 20-byte header.
		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol("ip4"),
		asm.Add.Imm(asm.R4, 20),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R1, asm.R2, 16, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, vip4.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Ja.Label("redirect"),

		// IPv6: destination at 24..40 of a 40-byte header.
		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol("ip6"),
		asm.Add.Imm(asm.R4, 40),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.Mov.Reg(asm.R7, asm.R2), // kept across the lookup: the header, its end
		asm.Mov.Reg(asm.R8, asm.R3),
		asm.LoadMem(asm.R1, asm.R2, 24, asm.DWord),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R2, 32, asm.DWord),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, vip6.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -16),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		// A neighbour solicitation to the VIP (ICMPv6 type 135 right
		// after the header: a router's unicast reachability probe) is the
		// L2 responder's, in the kernel path.
		asm.Mov.Reg(asm.R4, asm.R7),
		asm.Add.Imm(asm.R4, 41),
		asm.JGT.Reg(asm.R4, asm.R8, "redirect"),
		asm.LoadMem(asm.R5, asm.R7, 6, asm.Byte),
		asm.JNE.Imm(asm.R5, 58, "redirect"),
		asm.LoadMem(asm.R5, asm.R7, 40, asm.Byte),
		asm.JEq.Imm(asm.R5, 135, "pass"),

		// A VIP: to the socket of the receive queue, or fallback.
		asm.LoadMem(asm.R2, asm.R6, mdRxQueueIdx, asm.Word).WithSymbol("redirect"),
		asm.LoadMapPtr(asm.R1, xsks.FD()),
		asm.Mov.Imm(asm.R3, fallback),
		asm.FnRedirectMap.Call(),
		asm.Return(),

		asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("pass"),
		asm.Return(),
	}
}

// objects are the BPF program and maps of one interface.
type objects struct {
	prog       *ebpf.Program
	xsks       *ebpf.Map // queue id -> AF_XDP socket
	vip4, vip6 *ebpf.Map // address -> 1
	off        *kernel   // the offload program's maps; nil for the steering program
}

// progOptions choose the program an interface gets.
type progOptions struct {
	offload bool // the offload program (bpf/offload.c)
	flows   int  // its flow map's size
}

func newObjects(queues uint32, fallback int32, po progOptions) (*objects, error) {
	if po.offload {
		return newOffloadObjects(queues, fallback, po.flows)
	}
	var o objects
	var err error
	o.xsks, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "sluice_xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: queues,
	})
	if err != nil {
		return nil, bpfError("create XSKMAP", err)
	}
	for _, m := range []struct {
		name string
		key  uint32
		dst  **ebpf.Map
	}{{"sluice_vip4", 4, &o.vip4}, {"sluice_vip6", 16, &o.vip6}} {
		*m.dst, err = ebpf.NewMap(&ebpf.MapSpec{
			Name: m.name, Type: ebpf.Hash, KeySize: m.key, ValueSize: 1,
			MaxEntries: maxVIPs, Flags: unix.BPF_F_NO_PREALLOC,
		})
		if err != nil {
			o.close()
			return nil, bpfError("create VIP map", err)
		}
	}
	o.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "sluice_xdp",
		Type:         ebpf.XDP,
		License:      "Dual MIT/GPL",
		Instructions: xdpInstructions(o.xsks, o.vip4, o.vip6, fallback),
	})
	if err != nil {
		o.close()
		return nil, bpfError("load XDP program", fmt.Errorf("%+v", err))
	}
	return &o, nil
}

func (o *objects) close() {
	if o.off != nil {
		o.off.objs.Close()
		return
	}
	if o.prog != nil {
		o.prog.Close()
	}
	for _, m := range []*ebpf.Map{o.xsks, o.vip4, o.vip6} {
		if m != nil {
			m.Close()
		}
	}
}

// bpfError wraps ErrUnsupported when the kernel lacks what the step needs.
func bpfError(step string, err error) error {
	if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.ENOSYS) ||
		errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("afxdp: %s: %w (%w)", step, ErrUnsupported, err)
	}
	return fmt.Errorf("afxdp: %s: %w", step, err)
}

// setVIPs makes the two maps hold exactly addrs.
func (o *objects) setVIPs(addrs []netip.Addr) error {
	want4 := make(map[[4]byte]bool)
	want6 := make(map[[16]byte]bool)
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case a.Is4():
			want4[a.As4()] = true
		case a.Is6():
			want6[a.As16()] = true
		default:
			return fmt.Errorf("afxdp: SetVIPs: invalid address %v", a)
		}
	}
	if len(want4) > maxVIPs || len(want6) > maxVIPs {
		return fmt.Errorf("afxdp: SetVIPs: more than %d addresses of one family", maxVIPs)
	}
	if err := syncSet(o.vip4, want4); err != nil {
		return err
	}
	return syncSet(o.vip6, want6)
}

// syncSet adds the missing keys first and then deletes the stale ones, so
// an address in both the old and the new set is never missing.
func syncSet[K comparable](m *ebpf.Map, want map[K]bool) error {
	one := uint8(1)
	for k := range want {
		if err := m.Update(k, one, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("afxdp: SetVIPs: %w", err)
		}
	}
	var stale []K
	var k K
	var v uint8
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("afxdp: SetVIPs: %w", err)
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("afxdp: SetVIPs: %w", err)
		}
	}
	return nil
}

// An attachment is the XDP program of one interface, shared by the links
// (one per queue) of this process on that interface.
type attachment struct {
	key       attachKey
	ifname    string
	obj       *objects
	bpfLink   ebpflink.Link
	mode      Mode  // Native or Generic: what was attached
	nativeErr error // why Auto fell back to generic

	// guarded by registry.mu
	refs   int
	queues map[int]bool

	vipMu sync.Mutex // serializes SetVIPs
}

// attachKey identifies an interface across namespaces.
type attachKey struct {
	nsDev, nsIno uint64
	ifindex      int
}

var registry struct {
	mu sync.Mutex
	m  map[attachKey]*attachment
}

// currentNetns identifies the network namespace of the calling thread.
func currentNetns() (dev, ino uint64, err error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, 0, fmt.Errorf("afxdp: network namespace: %w", err)
	}
	return st.Dev, st.Ino, nil
}

// acquire returns the attachment of ifc, creating and attaching the program
// if this process has none there, and reserves queue on it.
func acquire(ifc netlink.Link, queue int, mode Mode, po progOptions) (*attachment, error) {
	dev, ino, err := currentNetns()
	if err != nil {
		return nil, err
	}
	attrs := ifc.Attrs()
	key := attachKey{dev, ino, attrs.Index}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if registry.m == nil {
		registry.m = make(map[attachKey]*attachment)
	}
	a := registry.m[key]
	if a == nil {
		a, err = attach(ifc, key, mode, po)
		if err != nil {
			return nil, err
		}
		registry.m[key] = a
	} else if mode != Auto && mode != a.mode {
		return nil, fmt.Errorf("afxdp: %s: %w: the interface's program is attached in %s mode by another link of this process, %s requested",
			attrs.Name, ErrBusy, a.mode, mode)
	}
	if a.queues[queue] {
		a.releaseLocked(queue, false)
		return nil, fmt.Errorf("afxdp: %s queue %d: %w: another link of this process uses it", attrs.Name, queue, ErrBusy)
	}
	if uint32(queue) >= a.obj.xsks.MaxEntries() {
		a.releaseLocked(queue, false)
		return nil, fmt.Errorf("afxdp: %s: queue %d out of range (the interface has %d RX queues)", attrs.Name, queue, a.obj.xsks.MaxEntries())
	}
	a.queues[queue] = true
	a.refs++
	return a, nil
}

func attach(ifc netlink.Link, key attachKey, mode Mode, po progOptions) (*attachment, error) {
	attrs := ifc.Attrs()
	queues := uint32(max(attrs.NumRxQueues, 1))
	obj, err := newObjects(queues, xdpPass, po)
	if err != nil {
		return nil, err
	}
	a := &attachment{key: key, ifname: attrs.Name, obj: obj, queues: make(map[int]bool)}
	if err := removeStale(ifc); err != nil {
		obj.close()
		return nil, err
	}
	try := func(m Mode) error {
		flags := ebpflink.XDPDriverMode
		if m == Generic {
			flags = ebpflink.XDPGenericMode
		}
		l, err := ebpflink.AttachXDP(ebpflink.XDPOptions{Program: obj.prog, Interface: attrs.Index, Flags: flags})
		if err != nil {
			return err
		}
		a.bpfLink, a.mode = l, m
		return nil
	}
	switch mode {
	case Native, Generic:
		err = try(mode)
	default:
		if err = try(Native); err != nil {
			a.nativeErr = err
			err = try(Generic)
		}
	}
	if err != nil {
		obj.close()
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("afxdp: attach XDP to %s: %w: another program is attached (a bpf_link of a live process?): %v", attrs.Name, ErrBusy, err)
		}
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, ebpf.ErrNotSupported) {
			return nil, fmt.Errorf("afxdp: attach XDP to %s in %s mode: %w (%w)", attrs.Name, mode, ErrUnsupported, err)
		}
		return nil, fmt.Errorf("afxdp: attach XDP to %s in %s mode: %w", attrs.Name, mode, err)
	}
	return a, nil
}

// removeStale detaches a program attached through netlink (a legacy
// attachment left by a process that died, or by a tool), so that ours never
// stacks on or conflicts with it. A program held by a live bpf_link cannot
// be removed this way: the kernel refuses, and so does New.
func removeStale(ifc netlink.Link) error {
	x := ifc.Attrs().Xdp
	if x == nil || !x.Attached {
		return nil
	}
	var flags int
	switch x.AttachMode {
	case 1: // XDP_ATTACHED_DRV
		flags = unix.XDP_FLAGS_DRV_MODE
	case 2: // XDP_ATTACHED_SKB
		flags = unix.XDP_FLAGS_SKB_MODE
	case 3: // XDP_ATTACHED_HW
		flags = unix.XDP_FLAGS_HW_MODE
	}
	err := netlink.LinkSetXdpFdWithFlags(ifc, -1, flags)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("afxdp: %s: %w: XDP program %d is held by a bpf_link (another live process?)", ifc.Attrs().Name, ErrBusy, x.ProgId)
		}
		return fmt.Errorf("afxdp: %s: remove stale XDP program %d: %w", ifc.Attrs().Name, x.ProgId, err)
	}
	return nil
}

// insert puts the socket fd at queue in the XSKMAP.
func (a *attachment) insert(queue, fd int) error {
	if err := a.obj.xsks.Update(uint32(queue), uint32(fd), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("afxdp: insert socket in XSKMAP: %w", err)
	}
	return nil
}

// release gives back queue; the last link of the interface detaches the
// program and frees the maps.
func (a *attachment) release(queue int) error {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	return a.releaseLocked(queue, true)
}

func (a *attachment) releaseLocked(queue int, owned bool) error {
	var err error
	if owned {
		delete(a.queues, queue)
		a.refs--
		if e := a.obj.xsks.Delete(uint32(queue)); e != nil && !errors.Is(e, ebpf.ErrKeyNotExist) {
			err = e
		}
	}
	if a.refs > 0 {
		return err
	}
	delete(registry.m, a.key)
	if e := a.bpfLink.Close(); e != nil {
		err = fmt.Errorf("afxdp: detach XDP from %s: %w", a.ifname, e)
	}
	a.obj.close()
	return err
}

func (a *attachment) progID() (uint32, error) {
	info, err := a.obj.prog.Info()
	if err != nil {
		return 0, err
	}
	id, _ := info.ID()
	return uint32(id), nil
}
