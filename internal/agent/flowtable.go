package agent

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
)

// flowTable is a fixed-size hash table from flowKey to a time stamp and a
// flag. The agent keeps two: its record of the TCP flows it delivered
// locally (time = last seen) and the cache of sock_diag answers (time =
// when asked, flag = owned).
//
// It is owned by one goroutine (the Run goroutine) and never allocates
// after newFlowTable: open addressing with linear probing over a
// power-of-two array of at least twice max slots (load factor <= 1/2),
// deletion by backward shift (no tombstones, so lookups never slow down
// with churn). The hash is seeded per table at random, so that clients
// cannot aim many keys at one probe run. Expiry is the caller's business:
// find returns an entry whatever its age; sweep removes old entries a few
// slots at a time, as gVisor's conntrack reaps a slice of its table at a
// time.
type flowTable struct {
	slots  []flowSlot
	mask   uint32
	n, max int
	seed   [3]uint64
	cursor uint32 // next slot sweep looks at
}

// flowSlot is one slot: 56 bytes.
type flowSlot struct {
	t    int64  // time stamp (> 0); 0 marks an empty slot
	hash uint32 // the key's hash, to skip key compares and rehashing
	key  flowKey
	val  bool
}

// newFlowTable returns a table that holds up to max entries (max >= 1).
func newFlowTable(max int) flowTable {
	n := 1 << bits.Len(uint(2*max-1)) // the power of two >= 2*max
	return flowTable{
		slots: make([]flowSlot, n),
		mask:  uint32(n - 1),
		max:   max,
		seed:  [3]uint64{rand.Uint64(), rand.Uint64(), rand.Uint64()},
	}
}

// hashKey mixes the key's five words with the seed, as wyhash does: two
// 64x64->128-bit multiplies, whose halves are folded together.
func (t *flowTable) hashKey(k *flowKey) uint32 {
	le := binary.LittleEndian
	c0, c1 := le.Uint64(k.client[:8]), le.Uint64(k.client[8:])
	v0, v1 := le.Uint64(k.vip[:8]), le.Uint64(k.vip[8:])
	p := uint64(k.cport) | uint64(k.vport)<<16 | uint64(k.proto)<<32
	if k.v6 {
		p |= 1 << 40
	}
	h := mix(c0^t.seed[0], c1^t.seed[1]^p) ^ mix(v0^t.seed[2], v1^t.seed[0]^p<<7)
	return uint32(mix(h^t.seed[1], t.seed[2]^0x9e3779b97f4a7c15))
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// len returns the number of entries.
func (t *flowTable) len() int { return t.n }

// find returns the index of k's slot, or -1.
func (t *flowTable) find(k *flowKey) int {
	h := t.hashKey(k)
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.t == 0 {
			return -1
		}
		if s.hash == h && s.key == *k {
			return int(i)
		}
	}
}

// put sets k's time and flag, inserting k if needed. It returns false,
// changing nothing, when k is new and the table holds max entries.
func (t *flowTable) put(k *flowKey, now int64, val bool) bool {
	h := t.hashKey(k)
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.t == 0 {
			if t.n >= t.max {
				return false
			}
			*s = flowSlot{t: now, hash: h, key: *k, val: val}
			t.n++
			return true
		}
		if s.hash == h && s.key == *k {
			s.t, s.val = now, val
			return true
		}
	}
}

// at returns slot i, which find returned.
func (t *flowTable) at(i int) *flowSlot { return &t.slots[i] }

// remove deletes k if present.
func (t *flowTable) remove(k *flowKey) {
	if i := t.find(k); i >= 0 {
		t.removeAt(i)
	}
}

// removeAt empties slot i, which holds an entry, and moves back the entries
// after it that it would otherwise cut off from their home slot.
func (t *flowTable) removeAt(i int) {
	hole := uint32(i)
	for j := (hole + 1) & t.mask; t.slots[j].t != 0; j = (j + 1) & t.mask {
		// The entry at j stays unless its home slot lies cyclically
		// outside (hole, j]: then the hole breaks its probe run.
		home := t.slots[j].hash & t.mask
		if (j-home)&t.mask >= (j-hole)&t.mask {
			t.slots[hole] = t.slots[j]
			hole = j
		}
	}
	t.slots[hole] = flowSlot{}
	t.n--
}

// sweep looks at the next n slots (cyclically) and removes the entries
// older than ttlTrue (flag set) or ttlFalse (flag clear) at time now. It
// returns the number removed.
func (t *flowTable) sweep(now, ttlTrue, ttlFalse int64, n int) int {
	removed := 0
	for ; n > 0; n-- {
		i := t.cursor
		s := &t.slots[i]
		if s.t != 0 {
			ttl := ttlFalse
			if s.val {
				ttl = ttlTrue
			}
			if now-s.t >= ttl {
				t.removeAt(int(i))
				removed++
				// An entry may have moved into slot i: look at it
				// again, unless the table is now empty.
				if t.n > 0 {
					continue
				}
			}
		}
		t.cursor = (i + 1) & t.mask
	}
	return removed
}
