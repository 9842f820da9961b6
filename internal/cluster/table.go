package cluster

import (
	"math/bits"

	"github.com/sluicelb/sluice/internal/flow"
)

// Value is what the cluster stores for a flow: the committed backend, the
// service it belongs to, and when the entry expires.
//
// Backend and Service are opaque to the cluster. The node server must give
// one backend (and one service) the same number on every node: for example
// the backend's stable ID from the config, or a seeded hash of its address
// and port. Expire is in Unix seconds; the nodes' clocks are assumed to agree
// within seconds (NTP on a LAN), as the replay window does.
type Value struct {
	Service uint16
	Backend uint32
	Expire  uint32
}

// Entry is one replicated flow entry: 48 bytes, no pointers. Its fields are
// Value's, laid out flat so that Service fills the key's padding (an
// embedded Value would add 4 bytes of padding).
type Entry struct {
	Key     flow.Key // 37 bytes + 1 padding
	Service uint16
	Backend uint32
	Expire  uint32
}

// MakeEntry returns the entry of k with v.
func MakeEntry(k flow.Key, v Value) Entry {
	return Entry{Key: k, Service: v.Service, Backend: v.Backend, Expire: v.Expire}
}

// Value returns the entry's value.
func (e *Entry) Value() Value { return Value{Service: e.Service, Backend: e.Backend, Expire: e.Expire} }

// SetValue sets the entry's value.
func (e *Entry) SetValue(v Value) { e.Service, e.Backend, e.Expire = v.Service, v.Backend, v.Expire }

// Table is a fixed-capacity open-addressing (linear probing) hash table of
// entries, owned by one goroutine. Slot order is flow-hash order
// (multiply-shift of the hash), so the entries of one shard sit in one slot
// range, plus the overflow of its last cluster: syncing a shard reads that
// range only. An empty slot has Expire == 0. Deletion shifts entries back,
// so no tombstones accumulate.
//
// Memory: 48 bytes per slot, capacity/0.8 slots, so 60 bytes per entry when
// full.
type Table struct {
	seed  uint64
	slots []Entry
	n     int // live entries
	max   int // capacity: inserts beyond it fail
}

// maxLoad is the capacity as a fraction of the slots (4/5).
const maxLoadNum, maxLoadDen = 4, 5

// NewTable returns a table for capacity entries; hashes use seed.
func NewTable(capacity int, seed uint64) *Table {
	capacity = max(capacity, 1)
	n := capacity*maxLoadDen/maxLoadNum + 1
	return &Table{seed: seed, slots: make([]Entry, n), max: capacity}
}

// Len returns the number of entries.
func (t *Table) Len() int { return t.n }

// Cap returns the capacity.
func (t *Table) Cap() int { return t.max }

// Slots returns the number of slots.
func (t *Table) Slots() int { return len(t.slots) }

func (t *Table) hash(k *flow.Key) uint64 { return k.Hash(t.seed ^ shardSalt) }

func (t *Table) home(h uint64) int {
	hi, _ := bits.Mul64(h, uint64(len(t.slots)))
	return int(hi)
}

// find returns the slot of k, or the empty slot where it would go, and
// whether it was found.
func (t *Table) find(k *flow.Key) (int, bool) {
	i := t.home(t.hash(k))
	for {
		e := &t.slots[i]
		if e.Expire == 0 {
			return i, false
		}
		if e.Key == *k {
			return i, true
		}
		if i++; i == len(t.slots) {
			i = 0
		}
	}
}

// Get returns k's entry.
func (t *Table) Get(k *flow.Key) (Value, bool) {
	i, ok := t.find(k)
	if !ok {
		return Value{}, false
	}
	return t.slots[i].Value(), true
}

// InsertResult says what Insert did.
type InsertResult uint8

const (
	Inserted InsertResult = iota // a new entry
	Existing                     // the key was present; its value was kept (expiry extended)
	Full                         // the table is at capacity; nothing stored
)

// Insert stores v for k unless k is present: the first value inserted wins.
// For a present key it keeps the stored backend and service, extends the
// expiry to the later of the two, and returns the stored value.
func (t *Table) Insert(k *flow.Key, v Value) (Value, InsertResult) {
	if v.Expire == 0 {
		v.Expire = 1
	}
	i, ok := t.find(k)
	e := &t.slots[i]
	if ok {
		e.Expire = max(e.Expire, v.Expire)
		return e.Value(), Existing
	}
	if t.n >= t.max {
		return Value{}, Full
	}
	*e = MakeEntry(*k, v)
	t.n++
	return v, Inserted
}

// Overwrite stores v for k whatever was there (repairs). It returns false when
// the table is full.
func (t *Table) Overwrite(k *flow.Key, v Value) bool {
	if v.Expire == 0 {
		v.Expire = 1
	}
	i, ok := t.find(k)
	if !ok {
		if t.n >= t.max {
			return false
		}
		t.n++
	}
	t.slots[i] = MakeEntry(*k, v)
	return true
}

// Delete removes k; it reports whether k was present.
func (t *Table) Delete(k *flow.Key) bool {
	i, ok := t.find(k)
	if !ok {
		return false
	}
	t.deleteAt(i)
	return true
}

// deleteAt empties slot i and shifts the following cluster back.
func (t *Table) deleteAt(i int) {
	n := len(t.slots)
	j := i
	for {
		if j++; j == n {
			j = 0
		}
		e := &t.slots[j]
		if e.Expire == 0 {
			break
		}
		h := t.home(t.hash(&e.Key))
		// e may move to i when its home is not cyclically in (i, j].
		var stays bool
		if i <= j {
			stays = i < h && h <= j
		} else {
			stays = i < h || h <= j
		}
		if !stays {
			t.slots[i] = *e
			i = j
		}
	}
	t.slots[i] = Entry{}
	t.n--
}

// Reap deletes entries that expired before now, scanning at most budget slots
// from cursor; it returns the cursor to resume from and the entries deleted.
// Calling it with successive cursors walks the whole table.
func (t *Table) Reap(now uint32, cursor, budget int) (next, deleted int) {
	n := len(t.slots)
	if cursor >= n || cursor < 0 {
		cursor = 0
	}
	i := cursor
	for scanned := 0; scanned < budget && scanned < n; {
		e := &t.slots[i]
		if e.Expire != 0 && e.Expire < now {
			t.deleteAt(i)
			deleted++
			continue // the slot now holds a shifted entry (or is empty): look again
		}
		if i++; i == n {
			i = 0
		}
		scanned++
	}
	return i, deleted
}

// DeleteFunc deletes every entry for which del returns true (a full scan).
func (t *Table) DeleteFunc(del func(*Entry) bool) int {
	deleted := 0
	for i := 0; i < len(t.slots); {
		e := &t.slots[i]
		if e.Expire != 0 && del(e) {
			t.deleteAt(i)
			deleted++
			continue
		}
		i++
	}
	return deleted
}

// ShardRange returns the slot range [lo, hi) where entries of shard s (of
// shards) have their home slot. Entries of s sit at their home or later, so
// they are at lo or after, before the first empty slot at or after hi
// (cyclically).
func (t *Table) ShardRange(s, shards int) (lo, hi int) {
	n := uint64(len(t.slots))
	// home(h) = floor(h*n/2^64); shard(h) = floor(h*S/2^64).
	// Smallest h of shard s is ceil(s*2^64/S); its home is >= floor(s*n/S).
	lo = int(uint64(s) * n / uint64(shards))
	hi = int((uint64(s+1)*n + uint64(shards) - 1) / uint64(shards))
	return lo, min(hi+1, int(n))
}

// ScanShard appends to dst the entries of shard s found from slot cursor on,
// stopping after max entries. It returns the next cursor, or -1 when the
// shard's range and its overflow are done. The cursor is a slot index.
func (t *Table) ScanShard(dst []Entry, s, shards, cursor, max int) ([]Entry, int) {
	lo, hi := t.ShardRange(s, shards)
	n := len(t.slots)
	if cursor < lo || cursor > lo+n {
		cursor = lo
	}
	// Positions are unwrapped: p in [lo, lo+n); slot = p mod n.
	for p := cursor; p < lo+n; p++ {
		i := p
		if i >= n {
			i -= n
		}
		e := &t.slots[i]
		if e.Expire == 0 {
			if p >= hi {
				return dst, -1
			}
			continue
		}
		if len(dst) >= max {
			return dst, p
		}
		if shardOfHash(t.hash(&e.Key), shards) == s {
			dst = append(dst, *e)
		}
	}
	return dst, -1
}

// All calls f for every entry, in slot order.
func (t *Table) All(f func(*Entry)) {
	for i := range t.slots {
		if t.slots[i].Expire != 0 {
			f(&t.slots[i])
		}
	}
}
