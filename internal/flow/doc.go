// Package flow holds flow keys and the per-worker flow table: the datapath's
// memory of which backend each connection was given, its TCP state and its
// memoised pipeline result.
//
// # Keys
//
// Key is a pointer-free, comparable 5-tuple; Key.Hash(seed) is the cluster-wide
// flow hash that Maglev also uses. Table methods take the key and its hash, so
// a packet's hash is computed once.
//
// # Ownership
//
// A Table belongs to one goroutine, the worker that created it: every method
// and every read or write of an Entry it returned happens on that goroutine.
// There are no locks and no atomics. Another goroutine may look at a table
// only when the owner is stopped and the hand-off is ordered (a channel, a
// WaitGroup). A Clock, by contrast, is immutable and shared by all workers.
//
// # Pointer lifetime
//
// An *Entry returned by Lookup, LookupBatch, Insert or LookupOrInsert points
// into the table's slot array. It is valid until the next Insert,
// LookupOrInsert, Delete or Reap on the same table, any of which may move
// entries (Robin Hood insertion shifts entries up; backward-shift deletion
// shifts them down). Lookups do not move entries, so any number of pointers
// from lookups stay valid together until the next mutation. Keep backends
// and states in the entry, never the pointer across batches.
//
// # Clock units
//
// LastSeen and every now argument are readings of a Clock: milliseconds,
// uint32, wrapping every 2^32 ms (49.7 days), starting at ClockStart, five
// minutes before the wrap. Only differences are meaningful: int32(now -
// LastSeen) is an entry's age. Timeouts are held in milliseconds, rounded up,
// and must be below 2^31 ms.
//
// # Memory and allocation
//
// NewTable allocates the whole table: ceil(capacity*6/5) slots of 56 bytes,
// about 67.2 bytes per flow, in one pointer-free array. No method allocates
// afterwards. When the table is full, Insert evicts one entry from a
// 16-slot neighbourhood of the new key (expired, then half-open or closing,
// then idle UDP, then the oldest of the rest), so the cost of an insert stays
// bounded. Reap removes expired entries a slice of the table at a time.
//
// # Layout
//
// Open addressing with Robin Hood linear probing and backward-shift deletion.
// Each entry keeps its probe sequence length in a byte that would otherwise
// be padding; that byte is the whole probe test (empty slot, Robin Hood
// early exit, same home slot), so there are no tombstones and no stored
// hash. The load factor is at most 5/6, for a mean distance of 2.5 slots
// from home: a lookup usually reads one or two cache lines. LookupBatch
// prefetches a batch's lines first, so that their misses overlap.
package flow
