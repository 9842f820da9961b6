package afxdp

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/offload"
)

// Template flags (bpf/offload.c TMPL_*).
const (
	tmplValid = 1
	tmplV6    = 2
	tmplGUE   = 4
	tmplCsum  = 8
)

// The program's limits, repeated from bpf/offload.c (TestOffloadLayout
// checks them against the object).
const (
	offloadMaxReals = 4096
	offloadMaxSNAT  = 4
	offloadHdrMax   = 72
	kindNAT         = 1 // flow_value.kind
)

var (
	_ = [1]struct{}{}[offload.MaxReals-offloadMaxReals]
	_ = [1]struct{}{}[offload.MaxSNAT-offloadMaxSNAT]
)

// kernel is the offload program's maps: offload.Kernel.
type kernel struct {
	objs offloadObjects

	mu       sync.Mutex // serialises SetGeneration and Counters' use of nReals
	nReals   [2]int     // templates written in each half
	half     uint32     // the half the current generation uses
	curReals int        // backend IDs of the current generation

	// Update's buffers (one caller at a time: the Syncer).
	keys []offloadFlowKey
	vals []offloadFlowValue
}

var _ offload.Kernel = (*kernel)(nil)

func newOffloadObjects(queues uint32, fallback int32, flows int) (*objects, error) {
	spec, err := loadOffload()
	if err != nil {
		return nil, bpfError("load offload object", err)
	}
	spec.Maps[offloadMapSluiceXsks].MaxEntries = queues
	spec.Maps[offloadMapSluiceFlows].MaxEntries = uint32(flows)
	if err := spec.Variables[offloadVarFallback].Set(uint32(fallback)); err != nil {
		return nil, fmt.Errorf("afxdp: offload fallback: %w", err)
	}
	k := &kernel{}
	if err := spec.LoadAndAssign(&k.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, bpfError("load offload program", fmt.Errorf("%+v", ve))
		}
		return nil, bpfError("load offload program", err)
	}
	m := &k.objs.offloadMaps
	return &objects{prog: k.objs.SluiceOffload, xsks: m.SluiceXsks, vip4: m.SluiceVip4, vip6: m.SluiceVip6, off: k}, nil
}

// Offload returns the kernel half of the offloaded flow cache, or nil when
// the interface's program is the steering-only one (Config.Offload off, or
// another link of the interface attached it without).
func (l *Link) Offload() offload.Kernel {
	if l.att.obj.off == nil {
		return nil
	}
	return l.att.obj.off
}

func flowKey(k *offloadFlowKey, op *offload.Op) {
	*k = offloadFlowKey{
		Src: op.Key.Src, Dst: op.Key.Dst, Sport: op.Key.SrcPort, Dport: op.Key.DstPort,
		Proto: op.Key.Proto, Tenant: op.Key.Tenant,
	}
}

// Update applies ops in order: consecutive installs in one batch update,
// deletes one by one (a batch delete stops at the first absent key).
func (k *kernel) Update(ops []offload.Op) error {
	var errs []error
	for i := 0; i < len(ops); {
		if ops[i].Del {
			var key offloadFlowKey
			flowKey(&key, &ops[i])
			if err := k.objs.SluiceFlows.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
			}
			i++
			continue
		}
		j := i
		k.keys, k.vals = k.keys[:0], k.vals[:0]
		for ; j < len(ops) && !ops[j].Del; j++ {
			op := &ops[j]
			var key offloadFlowKey
			flowKey(&key, op)
			k.keys = append(k.keys, key)
			val := offloadFlowValue{Gen: op.Gen, Real: op.Real, Label: op.Label, Sport: op.Sport}
			if op.NAT {
				val.Kind, val.NatAddr = kindNAT, op.NATAddr
			}
			k.vals = append(k.vals, val)
		}
		if _, err := k.objs.SluiceFlows.BatchUpdate(k.keys, k.vals, nil); err != nil {
			// Kernels without batch operations on this map: one by one.
			for x := range k.keys {
				if err := k.objs.SluiceFlows.Update(&k.keys[x], &k.vals[x], ebpf.UpdateAny); err != nil {
					errs = append(errs, err)
					break
				}
			}
		}
		i = j
	}
	if len(errs) > 0 {
		return fmt.Errorf("afxdp: offload update: %w", errors.Join(errs...))
	}
	return nil
}

// SetGeneration writes tmpls into the half of the template map that the
// current generation does not use, then makes id current with that half. If
// a template cannot be written, no generation is current any more (every
// packet goes to the sockets) rather than the old one.
func (k *kernel) SetGeneration(id uint32, tmpls []offload.Template) (err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	defer func() {
		if err != nil {
			k.objs.SluiceGen.Update(uint32(0), offloadGen{Id: ^id, Half: k.half}, ebpf.UpdateAny)
		}
	}()
	half := k.half ^ 1
	n := min(len(tmpls), offloadMaxReals)
	for i := 0; i < max(n, k.nReals[half]); i++ {
		var t offloadTmpl
		if i < n && tmpls[i].Valid && tmpls[i].Image.Len <= offloadHdrMax {
			src := &tmpls[i]
			copy(t.Hdr[:], src.Image.Hdr[:src.Image.Len])
			t.Len, t.L2Len = uint8(src.Image.Len), uint8(src.Image.L2Len)
			t.IpSum, t.UdpSum, t.Mtu = src.Image.IPSum, src.Image.UDPSum, src.MTU
			t.Flags = tmplValid
			if src.V6 {
				t.Flags |= tmplV6
			}
			if src.GUE {
				t.Flags |= tmplGUE
			}
			if src.Csum {
				t.Flags |= tmplCsum
			}
		}
		if err := k.objs.SluiceTmpl.Update(half*offloadMaxReals+uint32(i), &t, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("afxdp: offload template %d: %w", i, err)
		}
		for a := range offloadMaxSNAT {
			var nt offloadNatTmpl
			if i < n && tmpls[i].NAT[a].Valid {
				img := &tmpls[i].NAT[a].Image
				copy(nt.L2[:], img.L2[:img.L2Len])
				nt.L2Len = uint8(img.L2Len)
				copy(nt.Addr[:], img.Addr[:2*img.AddrLen])
				nt.Dport = img.Port
				nt.Flags = tmplValid
				if img.V6 {
					nt.Flags |= tmplV6
				}
			}
			key := (half*offloadMaxReals+uint32(i))*offloadMaxSNAT + uint32(a)
			if err := k.objs.SluiceNatTmpl.Update(key, &nt, ebpf.UpdateAny); err != nil {
				return fmt.Errorf("afxdp: offload NAT template %d/%d: %w", i, a, err)
			}
		}
	}
	k.nReals[half] = n
	if err := k.objs.SluiceGen.Update(uint32(0), offloadGen{Id: id, Half: half}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("afxdp: offload generation: %w", err)
	}
	k.half, k.curReals = half, n
	return nil
}

// Counters sums the per-CPU counters: the reasons, and the backends of the
// current generation.
func (k *kernel) Counters() (offload.Counters, error) {
	k.mu.Lock()
	n := k.curReals
	k.mu.Unlock()
	var c offload.Counters
	per := make([]uint64, runtime.NumCPU())
	for i := uint32(0); i < uint32(offloadCtrCTR_NUM); i++ {
		if err := k.objs.SluiceCtr.Lookup(i, &per); err != nil {
			return c, fmt.Errorf("afxdp: offload counters: %w", err)
		}
		var s uint64
		for _, v := range per {
			s += v
		}
		switch {
		case i == uint32(offloadCtrCTR_TX):
			c.Forwarded = s
		case i == uint32(offloadCtrCTR_NAT_TX):
			c.NATForwarded = s
		case int(i-1) < len(c.Passed):
			c.Passed[i-1] = s
		}
	}
	c.Reals = make([]offload.RealCounters, n)
	var rc []offloadRealCtr
	for i := range c.Reals {
		if err := k.objs.SluiceRealCtr.Lookup(uint32(i), &rc); err != nil {
			return c, fmt.Errorf("afxdp: offload backend counters: %w", err)
		}
		for _, v := range rc {
			c.Reals[i].Packets += v.Packets
			c.Reals[i].Bytes += v.Bytes
		}
	}
	c.Entries = k.entries()
	return c, nil
}

// Active appends the flows the program forwarded a packet of within the
// last d (flow_value.seen, CLOCK_MONOTONIC_COARSE, written at most once a
// second) to keys.
func (k *kernel) Active(keys []flow.Key, d time.Duration) ([]flow.Key, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil {
		return keys, fmt.Errorf("afxdp: offload clock: %w", err)
	}
	since := uint64(max(ts.Nano()-int64(d)-int64(time.Second), 0))
	ks := make([]offloadFlowKey, 1024)
	vs := make([]offloadFlowValue, 1024)
	var cursor ebpf.MapBatchCursor
	for {
		got, err := k.objs.SluiceFlows.BatchLookup(&cursor, ks, vs, nil)
		for i := range got {
			if vs[i].Seen >= since {
				keys = append(keys, flow.Key{Src: ks[i].Src, Dst: ks[i].Dst, SrcPort: ks[i].Sport, DstPort: ks[i].Dport,
					Proto: ks[i].Proto, Tenant: ks[i].Tenant})
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return keys, nil
		}
		if err != nil {
			return keys, fmt.Errorf("afxdp: offload active flows: %w", err)
		}
	}
}

// maxCounted bounds the flow map entries Counters counts (a batch lookup
// of 1024 entries a system call): beyond it Entries says maxCounted.
const maxCounted = 1 << 20

// entries counts the flow map's entries, at most maxCounted; -1 if the
// kernel cannot tell.
func (k *kernel) entries() int {
	keys := make([]offloadFlowKey, 1024)
	vals := make([]offloadFlowValue, 1024)
	var cursor ebpf.MapBatchCursor
	n := 0
	for n < maxCounted {
		got, err := k.objs.SluiceFlows.BatchLookup(&cursor, keys, vals, nil)
		n += got
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return n
		}
		if err != nil {
			return -1
		}
	}
	return min(n, maxCounted)
}
