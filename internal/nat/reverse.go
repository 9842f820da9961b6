package nat

import (
	"fmt"
	"unsafe"

	"github.com/sluicelb/sluice/internal/flow"
)

// Binding is what the reverse table keeps for a reply: the client's flow as
// the client sends it (C:cp -> VIP:vp, the forward flow table's key) and the
// backend ID the flow was given, which the caller checks against the
// forward entry.
type Binding struct {
	Client  flow.Key
	Backend uint32
	// BackendAddr and BackendPort are where the flow's replies must come
	// from (16-byte form, IPv4-mapped): a reply from anyone else is not
	// translated.
	BackendAddr [16]byte
	BackendPort uint16
	// Return is the Ethernet address the flow's replies are sent to: the
	// source MAC of the packet that created the flow (the router the
	// client's packets came through).
	Return [6]byte
}

// revEntry is one slot: the reply's 5-tuple (B:bp -> S:sp), the binding and
// the probe sequence length (0: empty). 108 bytes, no pointers.
type revEntry struct {
	reply flow.Key // offset 0, 37 bytes
	psl   uint8    // offset 37
	b     Binding  // offset 40
}

// revEntrySize is the slot size; the array below fails to compile if the
// layout drifts.
const revEntrySize = unsafe.Sizeof(revEntry{})

var _ = [1]struct{}{}[revEntrySize-108]

const revMaxPSL = 255

// Reverse maps the 5-tuple of a backend's reply (B:bp -> S:sp, proto) to
// the client's flow: a fixed-capacity Robin Hood hash table with
// backward-shift deletion, like flow.Table, allocated once, pointer-free
// (the garbage collector never scans it), at most 5/6 full.
//
// Unlike flow.Table it never evicts: a binding lives exactly as long as its
// flow, and the caller deletes it when the flow ends. Size it with
// Pool.Cap so that it cannot run out of room.
//
// A Reverse is owned by one goroutine (its worker); no locks.
type Reverse struct {
	slots    []revEntry
	nslots   uint64
	capacity int
	n        int
}

// NewReverse returns an empty table for at most capacity bindings
// (1..flow.MaxCapacity); it panics otherwise.
func NewReverse(capacity int) *Reverse {
	if capacity <= 0 || capacity > flow.MaxCapacity {
		panic(fmt.Sprintf("nat: NewReverse capacity %d out of range [1, %d]", capacity, flow.MaxCapacity))
	}
	nslots := (capacity*6 + 4) / 5
	return &Reverse{slots: make([]revEntry, nslots), nslots: uint64(nslots), capacity: capacity}
}

// ReplyKey returns the 5-tuple of the replies of a binding: from the
// backend b:bport to the SNAT address s:sport.
func ReplyKey(proto uint8, backend *[16]byte, bport uint16, snat *[16]byte, sport uint16) flow.Key {
	var k flow.Key
	k.Set(backend, snat, bport, sport, proto)
	return k
}

func (r *Reverse) home(hash uint64) uint64 { return ((hash >> 32) * r.nslots) >> 32 }

func keyEqual(a, b *flow.Key) bool {
	return a.Src == b.Src && a.Dst == b.Dst && a.SrcPort == b.SrcPort && a.DstPort == b.DstPort && a.Proto == b.Proto
}

// Len returns the number of bindings.
func (r *Reverse) Len() int { return r.n }

// Cap returns the capacity.
func (r *Reverse) Cap() int { return r.capacity }

// Lookup returns the binding of the reply key k (hash = k.Hash(seed), with
// the seed of every call on this table), or nil. The pointer is valid until
// the next Insert or Delete.
func (r *Reverse) Lookup(k *flow.Key, hash uint64) *Binding {
	slots := r.slots
	i := r.home(hash)
	for d := uint8(1); ; d++ {
		e := &slots[i]
		if e.psl < d {
			return nil
		}
		if e.psl == d && keyEqual(&e.reply, k) {
			return &e.b
		}
		if i++; i == r.nslots {
			i = 0
		}
		if d == revMaxPSL {
			return nil
		}
	}
}

// Insert adds the binding b for the reply key k. It returns false, and
// changes nothing, if k is present already (a port handed out twice would
// be a bug the caller must see), the table holds Cap bindings, or the
// probe run is revMaxPSL long (only a broken hash does that).
func (r *Reverse) Insert(k *flow.Key, hash uint64, b Binding) bool {
	if r.n >= r.capacity || r.Lookup(k, hash) != nil {
		return false
	}
	slots := r.slots
	i := r.home(hash)
	d := 1
	for ; int(slots[i].psl) >= d; d++ {
		if d == revMaxPSL {
			return false
		}
		if i++; i == r.nslots {
			i = 0
		}
	}
	// Slot i is empty or holds the first entry whose home is after k's:
	// k goes there and the rest of the run moves up one slot, in order
	// (which keeps the Robin Hood invariant, as in flow.Table).
	if slots[i].psl != 0 && !r.shiftUp(i) {
		return false
	}
	slots[i] = revEntry{reply: *k, psl: uint8(d), b: b}
	r.n++
	return true
}

// shiftUp moves the entries from slot i to the next empty slot one slot up.
// It moves nothing and returns false if an entry would exceed revMaxPSL.
// There is always an empty slot: Len < Cap < len(slots).
func (r *Reverse) shiftUp(i uint64) bool {
	slots := r.slots
	j := i
	for slots[j].psl != 0 {
		if slots[j].psl == revMaxPSL {
			return false
		}
		if j++; j == r.nslots {
			j = 0
		}
	}
	for j != i {
		prev := j - 1
		if j == 0 {
			prev = r.nslots - 1
		}
		slots[j] = slots[prev]
		slots[j].psl++
		j = prev
	}
	return true
}

// Delete removes the binding of k and reports whether it was present.
func (r *Reverse) Delete(k *flow.Key, hash uint64) bool {
	slots := r.slots
	i := r.home(hash)
	for d := uint8(1); ; d++ {
		e := &slots[i]
		if e.psl < d {
			return false
		}
		if e.psl == d && keyEqual(&e.reply, k) {
			break
		}
		if i++; i == r.nslots {
			i = 0
		}
		if d == revMaxPSL {
			return false
		}
	}
	// Backward-shift deletion.
	for {
		j := i + 1
		if j == r.nslots {
			j = 0
		}
		if slots[j].psl <= 1 {
			break
		}
		slots[i] = slots[j]
		slots[i].psl--
		i = j
	}
	slots[i] = revEntry{}
	r.n--
	return true
}
