package flow

import (
	"fmt"
	"time"
	"unsafe"
)

// Entry is one flow's state and memoised pipeline result, stored inline in
// the table's slot array. It is 56 bytes with no pointers, so the table is one
// pointer-free allocation that the garbage collector never scans.
//
// The caller may write State (never StateFree), Backend, Gen and LastSeen
// through the pointer that Lookup or Insert returns, until the next Insert,
// Delete or Reap on the same table; Key must not be changed.
type Entry struct {
	Key   Key   // offset 0, 37 bytes (38 with Key's own padding)
	State State // offset 38
	_     uint8 // offset 39: padding, free for a future one-byte field
	// hash is the upper 32 bits of the flow hash. It alone determines the
	// home slot, so the table computes displacements from it, and it rejects
	// almost every non-matching slot before the key is compared.
	hash     uint32 // offset 40
	Backend  uint32 // offset 44: chosen backend; connection state, survives config changes while the backend lives
	Gen      uint32 // offset 48: config generation the memoised result was computed for
	LastSeen uint32 // offset 52: Clock reading of the last packet; compare with wraparound-safe arithmetic
}

// EntrySize is unsafe.Sizeof(Entry{}); the array below fails to compile if
// the layout drifts from 56 bytes.
const EntrySize = unsafe.Sizeof(Entry{})

var _ = [1]struct{}{}[EntrySize-56]

// Timeouts are the idle timeouts by state: an entry expires when no packet
// has been observed for longer than the timeout of its state.
type Timeouts struct {
	SYN, Established, Closing, UDP time.Duration
}

// DefaultTimeouts returns the defaults: SYN 10s, Established 300s, Closing
// 10s, UDP 30s.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		SYN:         10 * time.Second,
		Established: 300 * time.Second,
		Closing:     10 * time.Second,
		UDP:         30 * time.Second,
	}
}

// Stats are the table's size and lifetime counters. Every entry that
// leaves the table is counted once, so
// Len == Inserts - Deletes - Expired - EvictedHalfOpen - EvictedIdle - EvictedEstablished.
type Stats struct {
	Len      int // entries present
	Capacity int // maximum entries, as given to NewTable
	Slots    int // slots allocated (Capacity / 0.9, rounded up)

	Inserts            uint64 // new entries created
	Deletes            uint64 // entries removed by Delete
	Expired            uint64 // expired entries removed, by Reap or to make room for an insert
	EvictedHalfOpen    uint64 // live SYN or Closing entries evicted to make room
	EvictedIdle        uint64 // live UDP entries idle for at least half their timeout, evicted to make room
	EvictedEstablished uint64 // other live entries (established TCP, active UDP) evicted to make room
	InsertFailed       uint64 // inserts that found nothing to evict
}

// Table limits.
const (
	MaxCapacity = 1 << 28
	// loadNum/loadDen is the maximum load factor: slots = ceil(capacity*10/9).
	loadNum = 9
	loadDen = 10
	// evictWindow is how many slots from the new key's home slot an insert
	// into a full table examines to choose a victim.
	evictWindow = 16
	// maxTimeout keeps int32(now-LastSeen) comparisons valid.
	maxTimeout = 1<<31 - 1
)

// Table is a per-worker flow table: a fixed array of slots allocated once by
// NewTable, open addressing with Robin Hood linear probing and backward-shift
// deletion (no tombstones). It takes no locks and never allocates after
// NewTable.
//
// A Table is owned by one goroutine, its worker: every method, and every
// access to an Entry it returned, must happen on that goroutine (or be
// ordered with it by the caller, e.g. after the worker has stopped).
type Table struct {
	// Immutable after NewTable.
	slots    []Entry               // len(slots) == nslots; StateFree marks an empty slot
	nslots   uint64                // len(slots), for the range reduction
	capacity int                   // maximum Len
	timeout  [numStates + 3]uint32 // by State (index masked with 7), milliseconds
	idleUDP  int32                 // UDP entries idle at least this long are in the idle eviction class

	// Owned by the worker goroutine.
	n      int    // entries present
	cursor uint32 // next slot Reap examines
	sink   uint32 // folds LookupBatch's touch loads so they cannot be removed
	stats  Stats  // counters only; Len, Capacity and Slots are filled by Stats()
}

// NewTable returns an empty table for at most capacity flows. It allocates
// ceil(capacity/0.9) slots of 56 bytes, that is about 62 bytes per flow. A zero
// field of to takes its DefaultTimeouts value. NewTable panics if capacity is
// not in [1, MaxCapacity] or a timeout is negative or not below 2^31 ms.
func NewTable(capacity int, to Timeouts) *Table {
	if capacity <= 0 || capacity > MaxCapacity {
		panic(fmt.Sprintf("flow: NewTable capacity %d out of range [1, %d]", capacity, MaxCapacity))
	}
	def := DefaultTimeouts()
	nslots := capacity*loadDen/loadNum
	t := &Table{
		slots:    make([]Entry, nslots),
		nslots:   uint64(nslots),
		capacity: capacity,
	}
	t.timeout[StateSYN] = timeoutMillis("SYN", to.SYN, def.SYN)
	t.timeout[StateEstablished] = timeoutMillis("Established", to.Established, def.Established)
	t.timeout[StateClosing] = timeoutMillis("Closing", to.Closing, def.Closing)
	t.timeout[StateUDP] = timeoutMillis("UDP", to.UDP, def.UDP)
	t.idleUDP = int32(t.timeout[StateUDP] / 2)
	return t
}

func timeoutMillis(name string, d, def time.Duration) uint32 {
	if d == 0 {
		d = def
	}
	if d < 0 || d >= maxTimeout*time.Millisecond {
		panic(fmt.Sprintf("flow: NewTable timeout %s %v out of range (0, 2^31 ms)", name, d))
	}
	return Millis(d)
}

// home returns the home slot of a hash fragment: multiply-shift range
// reduction of the fragment onto [0, nslots). It is monotonic in frag.
func (t *Table) home(frag uint32) uint32 {
	return uint32((uint64(frag) * t.nslots) >> 32)
}

// dist returns how far slot i is from the home slot of frag, wrapping.
func (t *Table) dist(frag, i uint32) uint32 {
	h := t.home(frag)
	if i >= h {
		return i - h
	}
	return i + uint32(t.nslots) - h
}

// Len returns the number of entries present.
func (t *Table) Len() int { return t.n }

// Cap returns the capacity given to NewTable.
func (t *Table) Cap() int { return t.capacity }

// Stats returns the table's counters.
func (t *Table) Stats() Stats {
	s := t.stats
	s.Len, s.Capacity, s.Slots = t.n, t.capacity, len(t.slots)
	return s
}

// Timeout returns the idle timeout of entries in state s.
func (t *Table) Timeout(s State) time.Duration {
	return time.Duration(t.timeout[s&7]) * time.Millisecond
}

// Expired reports whether e has been idle at now for longer than the timeout
// of its state. Readings more than 2^31 ms apart compare the wrong way (an
// entry that old looks fresh), so the owner must Reap the whole table well
// within 24 days.
func (t *Table) Expired(e *Entry, now uint32) bool {
	return int32(now-e.LastSeen) > int32(t.timeout[e.State&7])
}

// Lookup returns the entry of k, or nil. hash must be k.Hash(seed) with the
// seed the table's entries were inserted with. Lookup does not check expiry
// (see Expired): an expired entry stays findable until Reap or an insert
// removes it. The pointer is valid until the next Insert, Delete or Reap.
func (t *Table) Lookup(k *Key, hash uint64) *Entry {
	frag := uint32(hash >> 32)
	slots := t.slots
	i := t.home(frag)
	for d := uint32(0); ; d++ {
		e := &slots[i]
		if e.State == StateFree {
			return nil
		}
		if e.hash == frag {
			// Same fragment: same home, same displacement as ours.
			if e.Key == *k {
				return e
			}
		} else if t.dist(e.hash, i) < d {
			// Robin Hood: k would have displaced this entry.
			return nil
		}
		if i++; i == uint32(len(slots)) {
			i = 0
		}
	}
}

// LookupBatch looks up len(keys) keys: out[i] = Lookup(&keys[i], hashes[i]).
// hashes and out must be at least as long as keys. It first loads every
// key's home slot, so that the cache misses of the whole batch overlap, then
// resolves the keys one by one. Pointer lifetimes are as for Lookup.
func (t *Table) LookupBatch(keys []Key, hashes []uint64, out []*Entry) {
	hashes = hashes[:len(keys)]
	out = out[:len(keys)]
	slots := t.slots
	var sink uint32
	for _, h := range hashes {
		sink += slots[t.home(uint32(h>>32))].hash
	}
	t.sink += sink
	for i := range keys {
		out[i] = t.Lookup(&keys[i], hashes[i])
	}
}

// Insert returns the entry of k, creating it if absent. A new entry has Key,
// LastSeen = now, Backend = 0, Gen = 0 and State StateSYN for TCP
// (k.Proto == 6) or StateUDP otherwise; the caller fills in the rest. If the
// table is full, Insert first evicts one entry near k's home slot (see
// LookupOrInsert). It returns nil only if nothing could be evicted, which
// cannot happen in a table of capacity >= 1; it counts InsertFailed then.
// The pointer is valid until the next Insert, Delete or Reap.
func (t *Table) Insert(k *Key, hash uint64, now uint32) *Entry {
	e, _ := t.LookupOrInsert(k, hash, now)
	return e
}

// LookupOrInsert is Insert that also reports whether k was already present.
//
// Eviction: when the table holds Capacity entries, the insert examines the
// 16 slots from k's home slot (further, up to the first occupied slot, if
// those are all empty) and removes, in order of preference:
//  1. the first expired entry found (counted in Expired);
//  2. else the oldest half-open (SYN) or closing entry (EvictedHalfOpen);
//  3. else the oldest UDP entry idle for at least half the UDP timeout
//     (EvictedIdle): a datagram flow that quiet has probably ended, while a
//     QUIC connection sends at least every half idle timeout;
//  4. else the oldest remaining entry, established TCP or active UDP
//     (EvictedEstablished).
//
// The window bounds the cost; the price is that the choice is local: a
// half-open entry elsewhere in the table may outlive an established one
// evicted here.
func (t *Table) LookupOrInsert(k *Key, hash uint64, now uint32) (e *Entry, found bool) {
	frag := uint32(hash >> 32)
	if t.n >= t.capacity {
		if e := t.Lookup(k, hash); e != nil {
			return e, true
		}
		if !t.evict(t.home(frag), now) {
			t.stats.InsertFailed++
			return nil, false
		}
	}
	slots := t.slots
	i := t.home(frag)
	for d := uint32(0); ; d++ {
		e := &slots[i]
		if e.State == StateFree {
			break
		}
		if e.hash == frag {
			if e.Key == *k {
				return e, true
			}
		} else if t.dist(e.hash, i) < d {
			// k belongs here: shift the rest of the run up by one.
			t.shiftUp(i)
			break
		}
		if i++; i == uint32(len(slots)) {
			i = 0
		}
	}
	e = &slots[i]
	*e = Entry{Key: *k, State: initialState(k.Proto), hash: frag, LastSeen: now}
	t.n++
	t.stats.Inserts++
	return e, false
}

// shiftUp moves the entries from slot i up to the next empty slot one slot
// further, leaving slot i to be overwritten. Every moved entry's displacement
// grows by one and their order is kept, which preserves the Robin Hood
// invariant. There is always an empty slot: Len <= Capacity < len(slots).
func (t *Table) shiftUp(i uint32) {
	slots := t.slots
	n := uint32(len(slots))
	j := i
	for slots[j].State != StateFree {
		if j++; j == n {
			j = 0
		}
	}
	if j < i { // the run wraps: move [0, j) first, then the last slot to 0
		copy(slots[1:j+1], slots[:j])
		slots[0] = slots[n-1]
		j = n - 1
	}
	copy(slots[i+1:j+1], slots[i:j])
}

// removeAt empties slot i by backward-shift deletion: the entries after it,
// up to the first empty slot or the first entry in its home slot, move down
// by one. No tombstones are left.
func (t *Table) removeAt(i uint32) {
	slots := t.slots
	n := uint32(len(slots))
	for {
		j := i + 1
		if j == n {
			j = 0
		}
		next := &slots[j]
		if next.State == StateFree || t.dist(next.hash, j) == 0 {
			break
		}
		slots[i] = *next
		i = j
	}
	slots[i] = Entry{}
	t.n--
}

// Delete removes the entry of k and reports whether it was present.
func (t *Table) Delete(k *Key, hash uint64) bool {
	e := t.Lookup(k, hash)
	if e == nil {
		return false
	}
	t.removeAt(t.index(e))
	t.stats.Deletes++
	return true
}

// index returns the slot number of an entry of t.slots.
func (t *Table) index(e *Entry) uint32 {
	return uint32((uintptr(unsafe.Pointer(e)) - uintptr(unsafe.Pointer(&t.slots[0]))) / EntrySize)
}

// Reap examines up to n slots from an internal cursor that wraps around the
// table, deletes the expired entries among them and returns how many it
// deleted (counted in Expired). Calling it with a small n after every batch
// spreads the sweep over time, a slice of the table at a time; the cursor
// comes back to a slot after about len(slots)/n calls. A deletion pulls the
// following entries down one slot, so the slot is examined again and counts
// against n again: the work of one call is bounded by n examinations plus
// the shifts of the deletions.
func (t *Table) Reap(now uint32, n int) int {
	slots := t.slots
	i := t.cursor
	deleted := 0
	for ; n > 0; n-- {
		e := &slots[i]
		if e.State != StateFree && int32(now-e.LastSeen) > int32(t.timeout[e.State&7]) {
			t.removeAt(i)
			deleted++
			continue
		}
		if i++; i == uint32(len(slots)) {
			i = 0
		}
	}
	t.cursor = i
	t.stats.Expired += uint64(deleted)
	return deleted
}

// Eviction classes, most preferred last.
const (
	classNone = iota
	classEstablished
	classIdle
	classHalfOpen
)

// evict removes one entry near slot home to make room; see LookupOrInsert.
func (t *Table) evict(home uint32, now uint32) bool {
	slots := t.slots
	n := uint32(len(slots))
	i := home
	victim, class, age := uint32(0), classNone, int32(0)
	for scanned := uint32(0); scanned < n && (scanned < evictWindow || class == classNone); scanned++ {
		e := &slots[i]
		if s := e.State; s != StateFree {
			a := int32(now - e.LastSeen)
			if a > int32(t.timeout[s&7]) {
				t.removeAt(i)
				t.stats.Expired++
				return true
			}
			c := classEstablished
			switch {
			case s == StateSYN || s == StateClosing:
				c = classHalfOpen
			case s == StateUDP && a >= t.idleUDP:
				c = classIdle
			}
			if c > class || (c == class && a > age) {
				victim, class, age = i, c, a
			}
		}
		if i++; i == n {
			i = 0
		}
	}
	switch class {
	case classNone:
		return false
	case classHalfOpen:
		t.stats.EvictedHalfOpen++
	case classIdle:
		t.stats.EvictedIdle++
	default:
		t.stats.EvictedEstablished++
	}
	t.removeAt(victim)
	return true
}
