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
	Key   Key   // offset 0, 38 bytes (the tenant in what was padding)
	State State // offset 38
	// psl is the probe sequence length: 1 + the distance from the entry's
	// home slot, or 0 for an empty slot. One byte that was padding gives the
	// probe loop both its tests: psl < d (empty, or Robin Hood says k is
	// absent) and psl == d (same home slot as k: compare the key).
	psl      uint8  // offset 39
	Backend  uint32 // offset 40: chosen backend; connection state, survives config changes while the backend lives
	Gen      uint32 // offset 44: config generation the memoised result was computed for
	LastSeen uint32 // offset 48: Clock reading of the last packet; compare with wraparound-safe arithmetic
	// NATPort and NATAddr are a full-NAT flow's binding: the SNAT port
	// (0: none) and the index of the SNAT address. Connection state, like
	// Backend; the caller that set them hears of the entry's removal
	// through OnRemove.
	NATPort uint16 // offset 52
	NATAddr uint8  // offset 54
	// Offload is the worker's note of the flow's entry in the kernel's
	// offloaded flow cache (internal/offload): 0 for none; otherwise the
	// low 7 bits name the generation it was installed for and the high
	// bit says a packet of the flow has reached the worker since. Only
	// the worker reads it; the table only keeps it (and clears it when
	// an insert reuses the slot).
	Offload uint8 // offset 55
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
	Slots    int // slots allocated: ceil(Capacity * 6/5), a load factor of at most 5/6

	Inserts            uint64 // new entries created
	Deletes            uint64 // entries removed by Delete
	Expired            uint64 // expired entries removed, by Reap or to make room for an insert
	EvictedHalfOpen    uint64 // live SYN or Closing entries evicted to make room
	EvictedIdle        uint64 // live UDP entries idle for at least half their timeout, evicted to make room
	EvictedEstablished uint64 // other live entries (established TCP, active UDP) evicted to make room
	InsertFailed       uint64 // inserts refused: nothing to evict, or a probe run at maxPSL
}

// Table limits.
const (
	MaxCapacity = 1 << 28
	// loadNum/loadDen is the maximum load factor: slots =
	// ceil(capacity*6/5), 67.2 bytes per flow at 56 bytes per slot.
	loadNum = 5
	loadDen = 6
	// maxPSL is the longest probe sequence an entry may have (psl is one
	// byte). At load 5/6 with a decent hash the longest in a 1M table is
	// about 40; only a broken or attacked hash comes near, and then the
	// insert is refused rather than the probe cost left unbounded.
	maxPSL = 255
	// evictWindow is how many slots from the new key's home slot an insert
	// into a full table examines to choose a victim.
	evictWindow = 16
	// batchChunk is how many keys LookupBatch prefetches at a time: enough
	// to keep the core's miss buffers busy, few enough that the lines are
	// still in L1 when their keys are resolved.
	batchChunk = 32
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
	slots    []Entry               // psl == 0 marks an empty slot
	nslots   uint64                // len(slots), for the range reduction
	capacity int                   // maximum Len
	timeout  [numStates + 3]uint32 // by State (index masked with 7), milliseconds
	idleUDP  int32                 // UDP entries idle at least this long are in the idle eviction class

	// Owned by the worker goroutine.
	n      int    // entries present
	cursor uint32 // next slot Reap examines
	sink   uint32 // keeps the portable prefetch's loads (see prefetchHomes)
	stats  Stats  // counters only; Len, Capacity and Slots are filled by Stats()
	// onRemove, if set, hears of every entry leaving the table (OnRemove).
	onRemove func(*Entry)
}

// OnRemove makes f hear of every entry that leaves the table, whatever
// removes it (Delete, Reap, eviction by an insert), just before it goes:
// the pointer is valid during the call only. f runs on the table's
// goroutine, inside the removing call, and must not call the table. The
// full-NAT stage uses it to delete a flow's reply binding and release its
// SNAT port. Set it before the table is used; nil removes it.
func (t *Table) OnRemove(f func(*Entry)) { t.onRemove = f }

// NewTable returns an empty table for at most capacity flows. It allocates
// ceil(capacity*6/5) slots of 56 bytes, about 67.2 bytes per flow. A zero
// field of to takes its DefaultTimeouts value. NewTable panics if capacity is
// not in [1, MaxCapacity] or a timeout is negative or not below 2^31 ms.
func NewTable(capacity int, to Timeouts) *Table {
	if capacity <= 0 || capacity > MaxCapacity {
		panic(fmt.Sprintf("flow: NewTable capacity %d out of range [1, %d]", capacity, MaxCapacity))
	}
	def := DefaultTimeouts()
	nslots := (capacity*loadDen + loadNum - 1) / loadNum
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

// home returns the home slot of a flow hash: multiply-shift range reduction
// of its upper 32 bits onto [0, nslots).
func (t *Table) home(hash uint64) uint32 {
	return uint32(((hash >> 32) * t.nslots) >> 32)
}

// keyEqual is *a == *b. Written out field by field it is inlined, without
// the call to the generated struct equality function (a call also spills
// the probe loop's registers).
func keyEqual(a, b *Key) bool {
	return a.Src == b.Src && a.Dst == b.Dst && a.SrcPort == b.SrcPort && a.DstPort == b.DstPort && a.Proto == b.Proto && a.Tenant == b.Tenant
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
	slots := t.slots
	i := t.home(hash)
	for d := uint32(1); ; d++ {
		e := &slots[i]
		psl := uint32(e.psl)
		if psl < d {
			// Empty, or an entry nearer its home than k would be: Robin
			// Hood insertion would have put k here.
			return nil
		}
		if psl == d && keyEqual(&e.Key, k) {
			return e
		}
		if i++; i == uint32(len(slots)) {
			i = 0
		}
	}
}

// LookupBatch looks up len(keys) keys: out[i] = Lookup(&keys[i], hashes[i]).
// hashes and out must be at least as long as keys. It works in chunks of
// batchChunk keys: first it prefetches the first cache lines of every key's
// probe, so that the chunk's cache misses overlap instead of following one
// another, then it resolves the keys one by one. With a table much larger
// than the CPU caches it is two to three times faster per key than Lookup;
// with a table in cache it costs about the same. Pointer lifetimes are as for Lookup.
func (t *Table) LookupBatch(keys []Key, hashes []uint64, out []*Entry) {
	hashes = hashes[:len(keys)]
	out = out[:len(keys)]
	for len(keys) > 0 {
		n := min(len(keys), batchChunk)
		t.Prefetch(hashes[:n])
		for i := range n {
			out[i] = t.Lookup(&keys[i], hashes[i])
		}
		keys, hashes, out = keys[n:], hashes[n:], out[n:]
	}
}

// Prefetch starts loading the slots where the keys with these hashes live,
// without waiting for them: a caller that then looks the keys up (in the
// same order, soon after) finds them in cache, and the cache misses of the
// whole group overlap. LookupBatch is Prefetch and Lookup in chunks of
// PrefetchChunk; callers whose keys are not in one array do the same
// themselves. Prefetching more than PrefetchChunk hashes at once risks the
// first lines leaving L1 before they are used.
func (t *Table) Prefetch(hashes []uint64) {
	t.sink += prefetchHomes(&t.slots[0], t.nslots, hashes)
}

// PrefetchChunk is how many hashes to Prefetch at a time.
const PrefetchChunk = batchChunk

// Insert returns the entry of k, creating it if absent. A new entry has Key,
// LastSeen = now, Backend = 0, Gen = 0 and State StateSYN for TCP
// (k.Proto == 6) or StateUDP otherwise; the caller fills in the rest. If the
// table is full, Insert first evicts one entry near k's home slot (see
// LookupOrInsert). It returns nil, and counts InsertFailed, only if nothing
// could be evicted, which cannot happen in a table of capacity >= 1, or if
// the probe run at k's home is maxPSL long, which only a broken or attacked
// hash causes. The pointer is valid until the next Insert, Delete or Reap.
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
	if t.n >= t.capacity {
		if e := t.Lookup(k, hash); e != nil {
			return e, true
		}
		if !t.evict(t.home(hash), now) {
			t.stats.InsertFailed++
			return nil, false
		}
	}
	slots := t.slots
	i := t.home(hash)
	d := uint32(1)
	for ; ; d++ {
		e := &slots[i]
		psl := uint32(e.psl)
		if psl < d {
			// Empty, or k's place in the run. (d <= maxPSL+1 here: no
			// entry has a longer probe sequence.)
			if d > maxPSL || psl != 0 && !t.shiftUp(i) {
				t.stats.InsertFailed++
				return nil, false
			}
			break
		}
		if psl == d && keyEqual(&e.Key, k) {
			return e, true
		}
		if i++; i == uint32(len(slots)) {
			i = 0
		}
	}
	e = &slots[i]
	*e = Entry{Key: *k, State: initialState(k.Proto), psl: uint8(d), LastSeen: now}
	t.n++
	t.stats.Inserts++
	return e, false
}

// shiftUp moves the entries from slot i up to the next empty slot one slot
// further, leaving slot i to be overwritten. Every moved entry's probe
// length grows by one and their order is kept, which preserves the Robin
// Hood invariant. It moves nothing and returns false if an entry would
// exceed maxPSL. There is always an empty slot: Len <= Capacity < len(slots).
func (t *Table) shiftUp(i uint32) bool {
	slots := t.slots
	n := uint32(len(slots))
	j := i
	for slots[j].psl != 0 {
		if slots[j].psl == maxPSL {
			return false
		}
		if j++; j == n {
			j = 0
		}
	}
	if j < i { // the run wraps: move [0, j) up, then the last slot to 0
		copy(slots[1:j+1], slots[:j])
		slots[0] = slots[n-1]
		incPSL(slots[:j+1])
		j = n - 1
	}
	copy(slots[i+1:j+1], slots[i:j])
	incPSL(slots[i+1 : j+1])
	return true
}

func incPSL(s []Entry) {
	for k := range s {
		s[k].psl++
	}
}

// removeAt empties slot i by backward-shift deletion: the entries after it,
// up to the first empty slot or the first entry in its home slot, move down
// by one. No tombstones are left.
func (t *Table) removeAt(i uint32) {
	slots := t.slots
	if t.onRemove != nil {
		t.onRemove(&slots[i])
	}
	n := uint32(len(slots))
	for {
		j := i + 1
		if j == n {
			j = 0
		}
		next := &slots[j]
		if next.psl <= 1 { // empty, or at home
			break
		}
		slots[i] = *next
		slots[i].psl--
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

// Range calls fn for every entry in slot order (expired entries the reaper
// has not removed yet included) until fn returns false. fn must not change
// the table nor keep the pointer.
func (t *Table) Range(fn func(*Entry) bool) {
	for i := range t.slots {
		if e := &t.slots[i]; e.psl != 0 && !fn(e) {
			return
		}
	}
}

// RangeSlots calls fn for the entries of up to n slots from slot start
// (wrapping around the table), and returns the slot after the last one
// examined: a caller may walk the table a slice at a time. fn must not
// change the table nor keep the pointer.
func (t *Table) RangeSlots(start, n int, fn func(*Entry)) int {
	if len(t.slots) == 0 {
		return 0
	}
	i := start % len(t.slots)
	for ; n > 0; n-- {
		if e := &t.slots[i]; e.psl != 0 {
			fn(e)
		}
		if i++; i == len(t.slots) {
			i = 0
		}
	}
	return i
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
		if e.psl != 0 && int32(now-e.LastSeen) > int32(t.timeout[e.State&7]) {
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
		if e.psl != 0 {
			s := e.State
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
