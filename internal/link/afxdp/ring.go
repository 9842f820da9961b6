package afxdp

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ring is the user-space side of one of the four single-producer,
// single-consumer rings shared with the kernel. The producer and consumer
// indices are free-running uint32 counters in the shared mapping; the side
// that owns an index publishes it with an atomic store after writing (or
// reading) the entries, and the other side reads it with an atomic load
// before touching entries (sync/atomic is sequentially consistent, which
// gives the acquire/release order the kernel's rings require).
//
// Each ring caches the index it owns and the last value it saw of the
// other side's, so that most calls touch the shared cache lines once.
type ring struct {
	producer *uint32
	consumer *uint32
	flags    *uint32
	mask     uint32
	size     uint32
	mem      []byte // the mapping, for munmap

	prod uint32 // producer rings: the next index to publish; consumer rings: the last producer index seen
	cons uint32 // consumer rings: the next index to consume; producer rings: the last consumer index seen
}

// addrRing is the fill or completion ring: UMEM addresses.
type addrRing struct {
	ring
	addrs []uint64
}

// descRing is the RX or TX ring: descriptors.
type descRing struct {
	ring
	descs []unix.XDPDesc
}

func mapRing(fd int, pgoff int64, off unix.XDPRingOffset, size uint32, entry uintptr) (ring, error) {
	length := int(off.Desc) + int(size)*int(entry)
	mem, err := unix.Mmap(fd, pgoff, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return ring{}, fmt.Errorf("afxdp: mmap ring: %w", err)
	}
	return ring{
		producer: (*uint32)(unsafe.Pointer(&mem[off.Producer])),
		consumer: (*uint32)(unsafe.Pointer(&mem[off.Consumer])),
		flags:    (*uint32)(unsafe.Pointer(&mem[off.Flags])),
		mask:     size - 1,
		size:     size,
		mem:      mem,
	}, nil
}

func mapAddrRing(fd int, pgoff int64, off unix.XDPRingOffset, size uint32) (addrRing, error) {
	r, err := mapRing(fd, pgoff, off, size, 8)
	if err != nil {
		return addrRing{}, err
	}
	return addrRing{ring: r, addrs: unsafe.Slice((*uint64)(unsafe.Pointer(&r.mem[off.Desc])), size)}, nil
}

func mapDescRing(fd int, pgoff int64, off unix.XDPRingOffset, size uint32) (descRing, error) {
	r, err := mapRing(fd, pgoff, off, size, unsafe.Sizeof(unix.XDPDesc{}))
	if err != nil {
		return descRing{}, err
	}
	return descRing{ring: r, descs: unsafe.Slice((*unix.XDPDesc)(unsafe.Pointer(&r.mem[off.Desc])), size)}, nil
}

func (r *ring) unmap() {
	if r.mem != nil {
		unix.Munmap(r.mem)
	}
	*r = ring{}
}

// free returns how many entries a producer may write now.
func (r *ring) free() uint32 {
	if n := r.size - (r.prod - r.cons); n > 0 {
		return n
	}
	r.cons = atomic.LoadUint32(r.consumer)
	return r.size - (r.prod - r.cons)
}

// queued returns how many written entries the kernel has not consumed yet.
func (r *ring) queued() uint32 {
	r.cons = atomic.LoadUint32(r.consumer)
	return r.prod - r.cons
}

// publish makes the entries written so far visible to the kernel.
func (r *ring) publish() { atomic.StoreUint32(r.producer, r.prod) }

// available returns how many entries a consumer may read now, up to max.
func (r *ring) available(max uint32) uint32 {
	n := r.prod - r.cons
	if n == 0 {
		r.prod = atomic.LoadUint32(r.producer)
		n = r.prod - r.cons
	}
	return min(n, max)
}

// release gives n consumed entries back to the kernel.
func (r *ring) release(n uint32) {
	r.cons += n
	atomic.StoreUint32(r.consumer, r.cons)
}

func (r *ring) needWakeup() bool {
	return atomic.LoadUint32(r.flags)&unix.XDP_RING_NEED_WAKEUP != 0
}
