package nat

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/importtest"
)

const seed = 0x5eed

func replyKey(r *rand.Rand) flow.Key {
	b := netip.AddrFrom4([4]byte{198, 18, 30, byte(100 + r.IntN(4))}).As16()
	s := netip.AddrFrom4([4]byte{198, 18, 30, byte(11 + r.IntN(2))}).As16()
	proto := uint8(6)
	if r.IntN(2) == 1 {
		proto = 17
	}
	return ReplyKey(proto, &b, uint16(8080+r.IntN(2)), &s, uint16(1024+r.IntN(3000)))
}

// TestReverseModel runs random inserts, lookups and deletes against a map,
// with the real hash and with a poor one (12 distinct hashes) that makes
// long runs, wraparound and backward shifts common.
func TestReverseModel(t *testing.T) {
	for _, hc := range []struct {
		name string
		hash func(*flow.Key) uint64
	}{
		{"seeded", func(k *flow.Key) uint64 { return k.Hash(seed) }},
		{"poor", func(k *flow.Key) uint64 { return (k.Hash(seed) % 12) << 60 }},
	} {
		t.Run(hc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1624, 5))
			const capacity = 200
			rev := NewReverse(capacity)
			model := map[flow.Key]Binding{}
			ops := 40000
			if testing.Short() {
				ops = 10000
			}
			for i := range ops {
				k := replyKey(r)
				h := hc.hash(&k)
				switch op := r.IntN(10); {
				case op < 4:
					b := Binding{Client: flow.MakeKey(k.Proto, netip.MustParseAddrPort("203.0.113.9:40000"),
						netip.MustParseAddrPort("198.18.0.10:443")), Backend: uint32(i)}
					_, present := model[k]
					want := !present && len(model) < capacity
					if got := rev.Insert(&k, h, b); got != want {
						t.Fatalf("op %d: Insert = %v, want %v (present %v, len %d)", i, got, want, present, len(model))
					}
					if want {
						model[k] = b
					}
				case op < 7:
					_, present := model[k]
					if got := rev.Delete(&k, h); got != present {
						t.Fatalf("op %d: Delete = %v, want %v", i, got, present)
					}
					delete(model, k)
				default:
					got := rev.Lookup(&k, h)
					want, present := model[k]
					if (got != nil) != present || got != nil && *got != want {
						t.Fatalf("op %d: Lookup = %v, want %v %v", i, got, want, present)
					}
				}
				if rev.Len() != len(model) {
					t.Fatalf("op %d: Len %d, model %d", i, rev.Len(), len(model))
				}
			}
			// Every binding of the model is found, and the table holds
			// nothing else.
			for k, b := range model {
				if got := rev.Lookup(&k, hc.hash(&k)); got == nil || *got != b {
					t.Fatalf("lost %v", k)
				}
			}
			n := 0
			for i := range rev.slots {
				if rev.slots[i].psl != 0 {
					n++
				}
			}
			if n != len(model) {
				t.Fatalf("%d occupied slots, model %d", n, len(model))
			}
		})
	}
}

func TestReverseFullAndDuplicate(t *testing.T) {
	rev := NewReverse(2)
	r := rand.New(rand.NewPCG(1, 2))
	var keys []flow.Key
	for len(keys) < 3 {
		k := replyKey(r)
		if len(keys) > 0 && k == keys[len(keys)-1] {
			continue
		}
		keys = append(keys, k)
	}
	if !rev.Insert(&keys[0], keys[0].Hash(seed), Binding{Backend: 1}) || rev.Insert(&keys[0], keys[0].Hash(seed), Binding{Backend: 2}) {
		t.Fatal("duplicate insert accepted")
	}
	if rev.Lookup(&keys[0], keys[0].Hash(seed)).Backend != 1 {
		t.Fatal("duplicate insert changed the binding")
	}
	if !rev.Insert(&keys[1], keys[1].Hash(seed), Binding{}) || rev.Insert(&keys[2], keys[2].Hash(seed), Binding{}) {
		t.Fatal("insert beyond capacity accepted")
	}
	if rev.Cap() != 2 || rev.Len() != 2 {
		t.Fatalf("Cap %d Len %d", rev.Cap(), rev.Len())
	}
}

// TestBindingLifecycle is the worker's sequence: allocate a port, insert
// the binding, find it from the reply, delete it and release the port;
// with the reverse table sized by Pool.Cap nothing is refused until the
// ports run out.
func TestBindingLifecycle(t *testing.T) {
	pool, err := NewPool([]netip.Addr{netip.MustParseAddr("198.18.30.11")}, Layout{Lo: 4000, Hi: 4063, Workers: 2, Shift: 4}, 0)
	if err != nil {
		t.Fatal(err)
	}
	rev := NewReverse(pool.Cap())
	back := netip.MustParseAddr("198.18.30.101").As16()
	var replies []flow.Key
	for i := 0; ; i++ {
		a, port, ok := pool.Allocate(6)
		if !ok {
			if i != 32 {
				t.Fatalf("exhausted after %d bindings, want 32", i)
			}
			break
		}
		k := ReplyKey(6, &back, 8080, pool.Addr(a), port)
		client := flow.MakeKey(6, netip.AddrPortFrom(netip.MustParseAddr("203.0.113.1"), uint16(30000+i)), netip.MustParseAddrPort("198.18.0.10:443"))
		if !rev.Insert(&k, k.Hash(seed), Binding{Client: client, Backend: 7}) {
			t.Fatalf("binding %d refused", i)
		}
		replies = append(replies, k)
	}
	for i, k := range replies {
		b := rev.Lookup(&k, k.Hash(seed))
		if b == nil || b.Client.SrcPort != uint16(30000+i) {
			t.Fatalf("reply %d: binding %v", i, b)
		}
		if !rev.Delete(&k, k.Hash(seed)) || !pool.Release(6, 0, k.DstPort) {
			t.Fatalf("reply %d: teardown failed", i)
		}
	}
	if rev.Len() != 0 || pool.Free(6) != 32 {
		t.Fatalf("after teardown: %d bindings, %d free ports", rev.Len(), pool.Free(6))
	}
}

func TestReverseZeroAllocs(t *testing.T) {
	rev := NewReverse(1024)
	r := rand.New(rand.NewPCG(9, 9))
	keys := make([]flow.Key, 512)
	for i := range keys {
		keys[i] = replyKey(r)
		keys[i].SrcPort = uint16(i) // distinct
	}
	allocs := testing.AllocsPerRun(10, func() {
		for i := range keys {
			rev.Insert(&keys[i], keys[i].Hash(seed), Binding{Backend: 1})
		}
		for i := range keys {
			if rev.Lookup(&keys[i], keys[i].Hash(seed)) == nil || !rev.Delete(&keys[i], keys[i].Hash(seed)) {
				panic("lost a binding")
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations, want 0", allocs)
	}
}

// BenchmarkReverse: a reply lookup in a table at 80% of its capacity of
// 64k bindings; and an insert + delete (a flow's start and end).
func BenchmarkReverse(b *testing.B) {
	const capacity = 1 << 16
	rev := NewReverse(capacity)
	back := netip.MustParseAddr("198.18.30.101").As16()
	snat := netip.MustParseAddr("198.18.30.11").As16()
	keys := make([]flow.Key, capacity*8/10)
	hashes := make([]uint64, len(keys))
	for i := range keys {
		keys[i] = ReplyKey(6, &back, uint16(8080+i>>16), &snat, uint16(i))
		hashes[i] = keys[i].Hash(seed)
		rev.Insert(&keys[i], hashes[i], Binding{Backend: uint32(i)})
	}
	b.Run("lookup", func(b *testing.B) {
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			if rev.Lookup(&keys[i], hashes[i]) == nil {
				b.Fatal("miss")
			}
			if i++; i == len(keys) {
				i = 0
			}
		}
	})
	b.Run("insert-delete", func(b *testing.B) {
		k := ReplyKey(17, &back, 53, &snat, 1)
		b.ReportAllocs()
		for b.Loop() {
			k.DstPort++
			h := k.Hash(seed)
			if !rev.Insert(&k, h, Binding{}) || !rev.Delete(&k, h) {
				b.Fatal("insert/delete failed")
			}
		}
	})
}

// TestImports keeps nat a datapath package (DESIGN.md §4): the standard
// library, internal/flow and internal/fielderr, nothing of the control
// plane.
func TestImports(t *testing.T) {
	importtest.Only(t, "nat", "errors", "fmt", "net/netip", "unsafe",
		"github.com/sluicelb/sluice/internal/flow", "github.com/sluicelb/sluice/internal/fielderr")
}
