package flow

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

// timed runs the benchmark loop f on a locked thread and reports, besides
// ns/op, the thread's CPU time per op (cpu-ns/op) where the OS tells it.
func timed(b *testing.B, f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	b.ResetTimer()
	c0 := threadCPU()
	f()
	if c1 := threadCPU(); c0 >= 0 && c1 >= 0 {
		b.ReportMetric(float64(c1-c0)/float64(b.N), "cpu-ns/op")
	}
}

// benchSet is a full table and a query stream over its keys in random order.
// The stream is a precomputed array read sequentially, so that only the table
// accesses are random: with 1M flows they miss the CPU caches, as a busy
// worker's lookups do.
type benchSet struct {
	tab    *Table
	keys   []Key // query stream, random order
	hashes []uint64
}

var benchSets = map[int]*benchSet{}

func randomKeys(n int, r *rand.Rand) []Key {
	keys := make([]Key, n)
	seen := make(map[Key]bool, n)
	for i := range keys {
		for {
			k := randKey(r)
			k.Src = [16]byte{10: 0xff, 11: 0xff, 12: 10, 13: byte(r.Uint32()), 14: byte(r.Uint32()), 15: byte(r.Uint32())}
			k.Proto = 6
			if !seen[k] {
				seen[k] = true
				keys[i] = k
				break
			}
		}
	}
	return keys
}

// getBenchSet returns a table holding flows entries (at full capacity, load
// 5/6) and a stream of lookups of them in random order: 1M, or 16 random
// permutations of a small set.
func getBenchSet(b *testing.B, flows int) *benchSet {
	if s, ok := benchSets[flows]; ok {
		return s
	}
	r := rand.New(rand.NewPCG(uint64(flows), 42))
	keys := randomKeys(flows, r)
	tab := NewTable(flows, Timeouts{})
	for i := range keys {
		k := &keys[i]
		tab.Insert(k, k.Hash(testSeed), 1).Observe(tcpACK, 1)
	}
	if tab.Len() != flows {
		b.Fatalf("filled %d of %d", tab.Len(), flows)
	}
	stream := min(1<<20, 16*flows) // a power of two
	s := &benchSet{tab: tab, keys: make([]Key, stream), hashes: make([]uint64, stream)}
	for i := 0; i < stream; i += flows {
		perm := r.Perm(flows)
		for j := 0; j < flows && i+j < stream; j++ {
			s.keys[i+j] = keys[perm[j]]
			s.hashes[i+j] = keys[perm[j]].Hash(testSeed)
		}
	}
	benchSets[flows] = s
	return s
}

var benchSink *Entry

// BenchmarkLookupHit: one Lookup per op, every key present.
// random-1M: 1M flows, random order, table far larger than the caches.
// hot-1k: a table of 1k flows, which stays in cache.
func BenchmarkLookupHit(b *testing.B) {
	for _, c := range []struct {
		name  string
		flows int
	}{{"random-1M", 1 << 20}, {"hot-1k", 1 << 10}} {
		b.Run(c.name, func(b *testing.B) {
			s := getBenchSet(b, c.flows)
			mask := len(s.keys) - 1
			timed(b, func() {
				for i := 0; i < b.N; i++ {
					j := i & mask
					e := s.tab.Lookup(&s.keys[j], s.hashes[j])
					if e == nil {
						b.Fatal("miss")
					}
					benchSink = e
				}
			})
		})
	}
}

// BenchmarkLookupBatch: LookupBatch over batches of the same stream as
// BenchmarkLookupHit; ns/op is per key, so the two compare directly.
func BenchmarkLookupBatch(b *testing.B) {
	for _, c := range []struct {
		name  string
		flows int
	}{{"random-1M", 1 << 20}, {"hot-1k", 1 << 10}} {
		for _, batch := range []int{16, 32, 64} {
			b.Run(fmt.Sprintf("%s/batch=%d", c.name, batch), func(b *testing.B) {
				s := getBenchSet(b, c.flows)
				out := make([]*Entry, batch)
				mask := len(s.keys) - 1
				timed(b, func() {
					for i := 0; i < b.N; i += batch {
						j := i & mask // len(s.keys) is a multiple of batch
						s.tab.LookupBatch(s.keys[j:j+batch], s.hashes[j:j+batch], out)
						if out[batch-1] == nil {
							b.Fatal("miss")
						}
					}
				})
			})
		}
	}
}

// BenchmarkLookupMiss: keys that are absent, in a full 1M table.
func BenchmarkLookupMiss(b *testing.B) {
	s := getBenchSet(b, 1<<20)
	r := rand.New(rand.NewPCG(9, 9))
	miss := randomKeys(1<<16, r)
	for i := range miss {
		miss[i].Proto = 17 // not among the table's TCP keys
	}
	hashes := make([]uint64, len(miss))
	for i := range miss {
		hashes[i] = miss[i].Hash(testSeed)
	}
	mask := len(miss) - 1
	timed(b, func() {
		for i := 0; i < b.N; i++ {
			j := i & mask
			if s.tab.Lookup(&miss[j], hashes[j]) != nil {
				b.Fatal("hit")
			}
		}
	})
}

// BenchmarkInsertDelete: insert a new flow and delete it again, in a table
// one batch short of full (no eviction). One op is an Insert plus a Delete.
func BenchmarkInsertDelete(b *testing.B) {
	for _, c := range []struct {
		name  string
		flows int
	}{{"random-1M", 1 << 20}, {"hot-1k", 1 << 10}} {
		b.Run(c.name, func(b *testing.B) {
			r := rand.New(rand.NewPCG(5, uint64(c.flows)))
			keys := randomKeys(c.flows+1<<16, r)
			tab := NewTable(c.flows, Timeouts{})
			for i := range keys[:c.flows-64] {
				tab.Insert(&keys[i], keys[i].Hash(testSeed), 1)
			}
			fresh := keys[c.flows:]
			hashes := make([]uint64, len(fresh))
			for i := range fresh {
				hashes[i] = fresh[i].Hash(testSeed)
			}
			mask := len(fresh) - 1
			timed(b, func() {
				for i := 0; i < b.N; i++ {
					j := i & mask
					e := tab.Insert(&fresh[j], hashes[j], 2)
					e.Backend = 1
					if !tab.Delete(&fresh[j], hashes[j]) {
						b.Fatal("delete failed")
					}
				}
			})
		})
	}
}

// BenchmarkInsertEvict: insert new flows into a full 1M table of
// established flows; every insert evicts from its neighbourhood.
func BenchmarkInsertEvict(b *testing.B) {
	const flows = 1 << 20
	r := rand.New(rand.NewPCG(6, 6))
	keys := randomKeys(flows+1<<18, r)
	hashes := make([]uint64, len(keys))
	for i := range keys {
		hashes[i] = keys[i].Hash(testSeed)
	}
	tab := NewTable(flows, Timeouts{})
	for i := range keys[:flows] {
		tab.Insert(&keys[i], hashes[i], 1).Observe(tcpACK, 1)
	}
	next := flows
	timed(b, func() {
		for i := 0; i < b.N; i++ {
			if next == len(keys) {
				next = 0 // the first keys have been evicted long since, mostly
			}
			e := tab.Insert(&keys[next], hashes[next], uint32(2+i))
			e.Observe(tcpACK, uint32(2+i))
			next++
		}
	})
	b.StopTimer()
	if s := tab.Stats(); s.InsertFailed != 0 || s.Len != flows {
		b.Fatalf("stats %+v", s)
	}
}

// BenchmarkReap: one op is Reap(now, 64), the datapath's per-batch budget.
// live: nothing has expired (the common case: a scan).
// expired: every entry has expired; the table is refilled, untimed, when
// it runs empty.
func BenchmarkReap(b *testing.B) {
	const flows = 1 << 20
	const slice = 64
	r := rand.New(rand.NewPCG(7, 7))
	keys := randomKeys(flows, r)
	fill := func(tab *Table) {
		for i := range keys {
			tab.Insert(&keys[i], keys[i].Hash(testSeed), 1).Observe(tcpACK, 1)
		}
	}
	b.Run("live", func(b *testing.B) {
		tab := NewTable(flows, Timeouts{})
		fill(tab)
		timed(b, func() {
			for i := 0; i < b.N; i++ {
				if tab.Reap(1000, slice) != 0 {
					b.Fatal("reaped a live entry")
				}
			}
		})
	})
	b.Run("expired", func(b *testing.B) {
		tab := NewTable(flows, Timeouts{})
		fill(tab)
		now := uint32(1 + 301_000)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			tab.Reap(now, slice)
			if tab.Len() == 0 {
				b.StopTimer()
				fill(tab)
				b.StartTimer()
			}
		}
	})
}
