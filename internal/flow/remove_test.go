package flow

import "testing"

// TestOnRemove checks that every way an entry leaves the table (Delete,
// Reap, eviction by an insert into a full table) reports it, once, with its
// fields intact, and that nothing else does.
func TestOnRemove(t *testing.T) {
	tab := NewTable(4, Timeouts{})
	var removed []Key
	var ports []uint16
	tab.OnRemove(func(e *Entry) {
		removed = append(removed, e.Key)
		ports = append(ports, e.NATPort)
	})
	now := uint32(1000)
	ins := func(i int) Key {
		k := seqKey(i, 17)
		e := tab.Insert(&k, k.Hash(testSeed), now)
		if e == nil {
			t.Fatalf("insert %d failed", i)
		}
		e.NATPort = uint16(2000 + i)
		return k
	}
	k0, k1 := ins(0), ins(1)
	ins(2)
	ins(3)
	if len(removed) != 0 {
		t.Fatalf("inserts reported removals: %v", removed)
	}
	tab.Delete(&k0, k0.Hash(testSeed))
	if len(removed) != 1 || removed[0] != k0 || ports[0] != 2000 {
		t.Fatalf("Delete: removed %v ports %v", removed, ports)
	}
	ins(4) // room: no eviction
	if len(removed) != 1 {
		t.Fatalf("insert with room removed %v", removed)
	}
	ins(5) // full: one entry evicted
	if len(removed) != 2 || removed[1] == k1 && ports[1] != 2001 {
		t.Fatalf("eviction: removed %v ports %v", removed, ports)
	}
	now += 31_000 // past the UDP timeout
	n := tab.Reap(now, 64)
	if n != 4 || len(removed) != 6 || tab.Len() != 0 {
		t.Fatalf("Reap removed %d, reported %d, len %d", n, len(removed), tab.Len())
	}
	seen := map[Key]bool{}
	for _, k := range removed {
		if seen[k] {
			t.Fatalf("%v reported twice", k)
		}
		seen[k] = true
	}
}
