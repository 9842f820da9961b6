package cluster

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"unsafe"

	"github.com/sluicelb/sluice/internal/flow"
)

// The table against a map, the obviously correct model, under random
// inserts, deletes and reaps.
func TestTableModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tb := NewTable(1000, 9)
	model := map[flow.Key]Value{}
	for op := 0; op < 200000; op++ {
		k := testFlow(rng.IntN(1500))
		switch r := rng.IntN(10); {
		case r < 6:
			v := Value{Service: 1, Backend: rng.Uint32(), Expire: 100 + rng.Uint32N(100)}
			got, res := tb.Insert(&k, v)
			old, had := model[k]
			switch {
			case had:
				old.Expire = max(old.Expire, v.Expire)
				model[k] = old
				if res != Existing || got != old {
					t.Fatalf("op %d: insert existing: %v %+v, want %+v", op, res, got, old)
				}
			case len(model) >= 1000:
				if res != Full {
					t.Fatalf("op %d: insert into full table: %v", op, res)
				}
			default:
				model[k] = v
				if res != Inserted || got != v {
					t.Fatalf("op %d: insert: %v", op, res)
				}
			}
		case r < 9:
			_, had := model[k]
			delete(model, k)
			if tb.Delete(&k) != had {
				t.Fatalf("op %d: delete: had %v", op, had)
			}
		default:
			now := 100 + rng.Uint32N(100)
			cur := rng.IntN(tb.Slots())
			next, _ := tb.Reap(now, cur, tb.Slots())
			_ = next
			for k, v := range model {
				if v.Expire < now {
					delete(model, k)
				}
			}
		}
		if tb.Len() != len(model) {
			t.Fatalf("op %d: len %d, model %d", op, tb.Len(), len(model))
		}
	}
	for k, v := range model {
		if got, ok := tb.Get(&k); !ok || got != v {
			t.Fatalf("lost %v", k)
		}
	}
}

// ScanShard finds exactly the entries of each shard, in pages.
func TestTableScanShard(t *testing.T) {
	const shards = 64
	tb := NewTable(5000, 3)
	want := make([]int, shards)
	for i := 0; i < 5000; i++ {
		k := testFlow(i)
		tb.Insert(&k, Value{Backend: uint32(i), Expire: 1000})
		want[ShardOf(&k, 3, shards)]++
	}
	total := 0
	for s := 0; s < shards; s++ {
		got, cursor := 0, 0
		var buf []Entry
		for pages := 0; ; pages++ {
			if pages > 1000 {
				t.Fatal("scan does not end")
			}
			buf, cursor = tb.ScanShard(buf[:0], s, shards, cursor, 7)
			for i := range buf {
				if ShardOf(&buf[i].Key, 3, shards) != s {
					t.Fatalf("shard %d: got an entry of shard %d", s, ShardOf(&buf[i].Key, 3, shards))
				}
			}
			got += len(buf)
			if cursor < 0 {
				break
			}
		}
		if got != want[s] {
			t.Fatalf("shard %d: scanned %d, want %d", s, got, want[s])
		}
		total += got
	}
	if total != 5000 {
		t.Fatal(total)
	}
}

// Memory per replicated entry, measured with runtime.MemStats over a full
// table of N entries (goal: at most 64 bytes).
func TestTableMemoryPerEntry(t *testing.T) {
	if s := unsafe.Sizeof(Entry{}); s != 48 {
		t.Fatalf("Entry is %d bytes, want 48", s)
	}
	const n = 200000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tb := NewTable(n, 1)
	for i := 0; i < n; i++ {
		k := testFlow(i)
		if _, r := tb.Insert(&k, Value{Backend: 1, Expire: 10}); r != Inserted {
			t.Fatal(r)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	runtime.KeepAlive(tb)
	t.Logf("%.1f bytes per entry at capacity (%d entries)", per, n)
	if per > 64 {
		t.Fatalf("%.1f bytes per entry, goal <= 64", per)
	}
}

func BenchmarkTableInsertDelete(b *testing.B) {
	tb := NewTable(1<<16, 1)
	keys := make([]flow.Key, 1<<15)
	for i := range keys {
		keys[i] = testFlow(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := &keys[i&(len(keys)-1)]
		tb.Insert(k, Value{Backend: 1, Expire: 10})
		if i&1 == 1 {
			tb.Delete(&keys[(i-1)&(len(keys)-1)])
		}
		i++
	}
}
