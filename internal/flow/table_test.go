package flow

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"
)

// seqKey returns the i-th of a family of distinct keys (IPv4-mapped
// addresses, as the datapath builds them).
func seqKey(i int, proto uint8) Key {
	k := Key{Proto: proto, SrcPort: uint16(i), DstPort: 443}
	k.Src[10], k.Src[11] = 0xff, 0xff
	k.Src[12], k.Src[13], k.Src[14], k.Src[15] = 10, byte(i>>24), byte(i>>16), byte(i>>8)
	k.Dst[10], k.Dst[11] = 0xff, 0xff
	k.Dst[12], k.Dst[13], k.Dst[14], k.Dst[15] = 198, 18, 0, 1
	return k
}

const testSeed = 0x5eed

func testHash(k *Key) uint64 { return k.Hash(testSeed) }

func TestEntryLayout(t *testing.T) {
	if got := unsafe.Sizeof(Entry{}); got != 56 {
		t.Errorf("sizeof(Entry) = %d, want 56", got)
	}
	if got := unsafe.Alignof(Entry{}); got != 4 {
		t.Errorf("alignof(Entry) = %d, want 4", got)
	}
	var e Entry
	if off := unsafe.Offsetof(e.State); off != 38 {
		t.Errorf("State at offset %d, want 38 (right after Key)", off)
	}
	if off := unsafe.Offsetof(e.psl); off != 39 {
		t.Errorf("psl at offset %d, want 39 (in what would be padding)", off)
	}
}

func TestNewTable(t *testing.T) {
	for _, c := range []struct{ capacity, slots int }{{1, 2}, {9, 11}, {10, 12}, {1000, 1200}, {1 << 20, 1258292}} {
		tab := NewTable(c.capacity, Timeouts{})
		if s := tab.Stats(); s.Capacity != c.capacity || s.Slots != c.slots || s.Len != 0 {
			t.Errorf("NewTable(%d): %+v, want %d slots", c.capacity, s, c.slots)
		}
	}
	tab := NewTable(10, Timeouts{Established: time.Hour, SYN: 1500 * time.Microsecond})
	for s, want := range map[State]time.Duration{StateSYN: 2 * time.Millisecond, StateEstablished: time.Hour, StateClosing: 10 * time.Second, StateUDP: 30 * time.Second} {
		if got := tab.Timeout(s); got != want {
			t.Errorf("Timeout(%v) = %v, want %v", s, got, want)
		}
	}
	for _, bad := range []struct {
		capacity int
		to       Timeouts
	}{
		{0, Timeouts{}},
		{-1, Timeouts{}},
		{MaxCapacity + 1, Timeouts{}},
		{10, Timeouts{UDP: -time.Second}},
		{10, Timeouts{Established: 25 * 24 * time.Hour}},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewTable(%d, %+v) did not panic", bad.capacity, bad.to)
				}
			}()
			NewTable(bad.capacity, bad.to)
		}()
	}
}

func TestObserve(t *testing.T) {
	const (
		F, S, R, A = tcpFIN, tcpSYN, tcpRST, tcpACK
		P          = 0x08 // PSH: does not matter
	)
	tests := []struct {
		from  State
		flags uint8
		want  State
	}{
		// A new TCP entry starts half-open.
		{StateSYN, S, StateSYN},
		{StateSYN, S | A, StateSYN}, // SYN+ACK is still the handshake
		{StateSYN, A, StateEstablished},
		{StateSYN, A | P, StateEstablished}, // mid-stream packet created the entry
		{StateSYN, 0, StateSYN},
		{StateSYN, F | A, StateClosing},
		{StateSYN, R, StateClosing},
		{StateEstablished, A, StateEstablished},
		{StateEstablished, S, StateEstablished}, // a bare SYN does not demote
		{StateEstablished, S | A, StateEstablished},
		{StateEstablished, F, StateClosing},
		{StateEstablished, F | A, StateClosing},
		{StateEstablished, R | A, StateClosing},
		{StateEstablished, S | F, StateClosing}, // FIN wins
		{StateEstablished, 0, StateEstablished},
		{StateClosing, A, StateClosing}, // ACKs of the teardown
		{StateClosing, F | A, StateClosing},
		{StateClosing, S, StateSYN}, // 5-tuple reused
		{StateClosing, S | A, StateClosing},
		{StateClosing, 0, StateClosing},
		{StateUDP, 0, StateUDP},
		{StateUDP, S, StateUDP},
		{StateUDP, F | R | A, StateUDP},
		// Not a table entry: treated as new.
		{StateFree, 0, StateSYN},
		{StateFree, S, StateSYN},
		{StateFree, A, StateEstablished},
		{StateFree, R, StateClosing},
	}
	for _, tt := range tests {
		e := Entry{State: tt.from, LastSeen: 7, Backend: 3, Gen: 9}
		e.Observe(tt.flags, 12345)
		if e.State != tt.want || e.LastSeen != 12345 || e.Backend != 3 || e.Gen != 9 {
			t.Errorf("%v + flags %#02x: state %v LastSeen %d backend %d gen %d, want %v 12345 3 9",
				tt.from, tt.flags, e.State, e.LastSeen, e.Backend, e.Gen, tt.want)
		}
		// The model test's independent state machine agrees.
		if tt.from != StateFree {
			if got := modelNext(tt.from, tt.flags); got != tt.want {
				t.Errorf("modelNext(%v, %#02x) = %v, want %v", tt.from, tt.flags, got, tt.want)
			}
		}
	}
}

func TestInsertDefaults(t *testing.T) {
	tab := NewTable(8, Timeouts{})
	for _, c := range []struct {
		proto uint8
		want  State
	}{{6, StateSYN}, {17, StateUDP}, {1, StateUDP}, {58, StateUDP}} {
		k := seqKey(int(c.proto), c.proto)
		e, found := tab.LookupOrInsert(&k, k.Hash(testSeed), 77)
		if found || e == nil {
			t.Fatalf("proto %d: LookupOrInsert = %v, %v", c.proto, e, found)
		}
		if e.State != c.want || e.LastSeen != 77 || e.Key != k || e.Backend != 0 || e.Gen != 0 {
			t.Errorf("proto %d: new entry %+v, want state %v", c.proto, *e, c.want)
		}
		e.Backend, e.Gen = 5, 6
		if e2 := tab.Insert(&k, k.Hash(testSeed), 99); e2 != e || e2.Backend != 5 || e2.LastSeen != 77 {
			t.Errorf("proto %d: second Insert returned %p %+v, want the existing entry unchanged", c.proto, e2, *e2)
		}
	}
	if s := tab.Stats(); s.Inserts != 4 || s.Len != 4 {
		t.Errorf("stats %+v, want 4 inserts", s)
	}
}

// TestEvictionPreference fills a table whose 16 slots are all inside the
// eviction window with a mix of states and ages, then inserts new flows one
// at a time and checks the order the old ones leave in.
func TestEvictionPreference(t *testing.T) {
	const capacity = 13 // 16 slots: the whole table is one eviction window
	tab := NewTable(capacity, Timeouts{})
	if len(tab.slots) != evictWindow {
		t.Fatalf("test needs %d slots, table has %d", evictWindow, len(tab.slots))
	}
	now := uint32(1<<32 - 1000) // the ages below cross the clock wrap
	type flow struct {
		name  string
		proto uint8
		flags uint8
		age   uint32 // milliseconds before now
	}
	// In the order they must be evicted: expired ones first (in any order),
	// then half-open and closing oldest first, then idle UDP oldest first,
	// then established TCP and active UDP oldest first.
	flows := []flow{
		{"expired-syn", 6, tcpSYN, 10_001},
		{"expired-udp", 17, 0, 30_001},
		{"closing-old", 6, tcpFIN | tcpACK, 9_000},
		{"syn-mid", 6, tcpSYN, 5_000},
		{"closing-new", 6, tcpRST, 1_000},
		{"syn-new", 6, tcpSYN, 0},
		{"udp-idle-old", 17, 0, 29_000},
		{"udp-idle-new", 17, 0, 15_500}, // over half the UDP timeout
		{"est-old", 6, tcpACK, 299_000},
		{"est-mid", 6, tcpACK, 20_000},
		{"udp-active", 17, 0, 14_900}, // under half the UDP timeout, also 14 ms later
		{"est-new", 6, tcpACK, 100},
		{"udp-newest", 17, 0, 0},
	}
	if len(flows) != capacity {
		t.Fatalf("%d flows for capacity %d", len(flows), capacity)
	}
	keyOf := func(i int) Key { return seqKey(i, flows[i].proto) }
	for i, f := range flows {
		k := keyOf(i)
		e := tab.Insert(&k, k.Hash(testSeed), now-f.age)
		if e == nil {
			t.Fatal("Insert failed")
		}
		e.Observe(f.flags, now-f.age)
	}
	if tab.Len() != capacity {
		t.Fatalf("Len %d after filling", tab.Len())
	}
	wantStats := []Stats{}
	var s Stats
	for i := range flows {
		switch {
		case i < 2:
			s.Expired++
		case i < 6:
			s.EvictedHalfOpen++
		case i < 8:
			s.EvictedIdle++
		default:
			s.EvictedEstablished++
		}
		wantStats = append(wantStats, s)
	}
	present := func(i int) bool { k := keyOf(i); return tab.Lookup(&k, k.Hash(testSeed)) != nil }
	for step := range flows {
		// A new established flow, seen now: the freshest of all.
		now++
		k := seqKey(1000+step, 6)
		e := tab.Insert(&k, k.Hash(testSeed), now)
		if e == nil {
			t.Fatalf("step %d: Insert failed, stats %+v", step, tab.Stats())
		}
		e.Observe(tcpACK, now)
		if err := checkInvariants(tab, testHash); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		var gone []string
		for i := range flows {
			if !present(i) {
				gone = append(gone, flows[i].name)
			}
		}
		if step < 2 {
			// The two expired ones, in either order.
			if len(gone) != step+1 || (present(0) && present(1)) {
				t.Fatalf("step %d: gone %v, want expired entries first", step, gone)
			}
		} else {
			for i := range flows {
				if present(i) != (i > step) {
					t.Fatalf("step %d: gone %v, want the first %d of %v", step, gone, step+1, names(flows, func(f flow) string { return f.name }))
				}
			}
		}
		got := tab.Stats()
		w := wantStats[step]
		if got.Expired != w.Expired || got.EvictedHalfOpen != w.EvictedHalfOpen || got.EvictedIdle != w.EvictedIdle || got.EvictedEstablished != w.EvictedEstablished {
			t.Errorf("step %d: stats %+v, want expired %d half-open %d idle %d established %d",
				step, got, w.Expired, w.EvictedHalfOpen, w.EvictedIdle, w.EvictedEstablished)
		}
	}
}

func names[T any](xs []T, f func(T) string) []string {
	var out []string
	for _, x := range xs {
		out = append(out, f(x))
	}
	return out
}

// TestEvictionWindow checks that eviction is local and bounded: in a large
// full table, an insert only ever removes an entry within the 16 slots from
// its home slot (or, if those are all empty, the first occupied one after).
func TestEvictionWindow(t *testing.T) {
	const capacity = 1024
	tab := NewTable(capacity, Timeouts{})
	n := uint32(len(tab.slots))
	r := rand.New(rand.NewPCG(1, 2))
	now := uint32(5000)
	for tab.Len() < capacity {
		k := randKey(r)
		tab.Insert(&k, k.Hash(testSeed), now).Observe(tcpACK, now)
	}
	before := make([]Entry, n)
	const inserts = 500
	for i := 0; i < inserts; i++ {
		now++
		copy(before, tab.slots)
		k := randKey(r)
		h := k.Hash(testSeed)
		home := tab.home(h)
		tab.Insert(&k, h, now).Observe(tcpACK, now)
		victim := -1
		for j := range before {
			if e := &before[j]; e.psl != 0 && tab.Lookup(&e.Key, e.Key.Hash(testSeed)) == nil {
				if victim >= 0 {
					t.Fatalf("insert %d: two victims", i)
				}
				victim = j
			}
		}
		if victim < 0 {
			t.Fatalf("insert %d: no victim in a full table", i)
		}
		d := (uint32(victim) + n - home) % n
		for w := uint32(0); w < d && d >= evictWindow; w++ {
			if before[(home+w)%n].psl != 0 {
				t.Fatalf("insert %d: victim %d slots from home, beyond the window and an occupied slot", i, d)
			}
		}
		// The victim is the oldest entry of the window (all are established).
		for w := uint32(0); w < evictWindow; w++ {
			if e := &before[(home+w)%n]; e.psl != 0 && int32(e.LastSeen-before[victim].LastSeen) < 0 {
				t.Fatalf("insert %d: evicted an entry seen at %d, kept one seen at %d in the window", i, before[victim].LastSeen, e.LastSeen)
			}
		}
	}
	if s := tab.Stats(); s.EvictedEstablished != inserts {
		t.Errorf("stats %+v, want %d established evictions", s, inserts)
	}
}

// lookupSlow finds a key by scanning every slot.
func lookupSlow(tab *Table, k *Key) *Entry {
	for i := range tab.slots {
		if e := &tab.slots[i]; e.psl != 0 && e.Key == *k {
			return e
		}
	}
	return nil
}

func TestClockWrap(t *testing.T) {
	tab := NewTable(64, Timeouts{}) // SYN 10s, Established 300s
	const wrap = 1 << 32
	cases := []struct {
		lastSeen, now uint32
		state         State
		want          bool
	}{
		{wrap - 5_000, 4_000, StateSYN, false},            // 9s across the wrap
		{wrap - 5_000, 5_001, StateSYN, true},             // 10.001s across the wrap
		{wrap - 5_000, 5_000, StateSYN, false},            // exactly the timeout: not yet
		{wrap - 1, 299_999, StateEstablished, false},      // 300s across the wrap
		{wrap - 1, 300_000, StateEstablished, true},       // 300.001s
		{10, wrap - 10, StateEstablished, false},          // from the "future": never expired
		{ClockStart, ClockStart + 30_001, StateUDP, true}, // a fresh clock crosses the wrap at 5 min
		{ClockStart, ClockStart + 29_999, StateUDP, false},
	}
	for _, c := range cases {
		e := Entry{State: c.state, LastSeen: c.lastSeen}
		if got := tab.Expired(&e, c.now); got != c.want {
			t.Errorf("%v last seen %d, now %d (age %d ms): Expired = %v, want %v",
				c.state, c.lastSeen, c.now, int32(c.now-c.lastSeen), got, c.want)
		}
	}

	// Reap across the wrap: entries seen before it expire after it, entries
	// seen after it stay.
	now := uint32(wrap - 3_000)
	var keys []Key
	for i := 0; i < 20; i++ {
		k := seqKey(i, 17)
		keys = append(keys, k)
		tab.Insert(&k, k.Hash(testSeed), now+uint32(i)*1000) // LastSeen from -3s to +16s around the wrap
	}
	now = 30_500 // ages 33.5s .. 14.5s; UDP timeout 30s: i = 0..3 expired
	if got := tab.Reap(now, 1000); got != 4 {
		t.Errorf("Reap across the wrap deleted %d, want 4", got)
	}
	for i, k := range keys {
		if got := tab.Lookup(&k, k.Hash(testSeed)) != nil; got != (i >= 4) {
			t.Errorf("key %d (last seen %d) present = %v after Reap at %d", i, uint32(wrap-3000)+uint32(i)*1000, got, now)
		}
	}

	// A reading older than LastSeen (a caller's stale now) is a negative age:
	// not expired, by Reap either.
	tab3 := NewTable(4, Timeouts{})
	k := seqKey(99, 6)
	tab3.Insert(&k, k.Hash(testSeed), 1000)
	if got := tab3.Reap(990, 100); got != 0 || tab3.Len() != 1 {
		t.Errorf("Reap with now 10 ms before LastSeen deleted %d", got)
	}

	// Eviction age order across the wrap: the entry seen before the wrap is
	// the oldest although its reading is the largest.
	tab2 := NewTable(2, Timeouts{})
	a, b, c := seqKey(1, 6), seqKey(2, 6), seqKey(3, 6)
	tab2.Insert(&a, a.Hash(testSeed), wrap-2000).Observe(tcpACK, wrap-2000)
	tab2.Insert(&b, b.Hash(testSeed), 1000).Observe(tcpACK, 1000)
	tab2.Insert(&c, c.Hash(testSeed), 2000).Observe(tcpACK, 2000)
	if tab2.Lookup(&a, a.Hash(testSeed)) != nil || tab2.Lookup(&b, b.Hash(testSeed)) == nil {
		t.Errorf("eviction across the wrap removed the newer entry")
	}

	c0 := NewClock()
	if got := c0.Now() - ClockStart; got > 1000 {
		t.Errorf("a new clock reads ClockStart+%d ms", got)
	}
}

// TestReapSlices checks that Reap removes expired entries a slice at a time,
// never a live one, and that the cursor covers the whole table.
func TestReapSlices(t *testing.T) {
	const capacity = 10_000
	tab := NewTable(capacity, Timeouts{})
	now := uint32(1_000_000)
	var live, dead []Key
	for i := 0; i < capacity; i++ {
		k := seqKey(i, 6)
		e := tab.Insert(&k, k.Hash(testSeed), now)
		switch i % 4 {
		case 0: // established, idle 100s: live
			e.Observe(tcpACK, now-100_000)
			live = append(live, k)
		case 1: // half-open, idle 11s: expired
			e.Observe(tcpSYN, now-11_000)
			dead = append(dead, k)
		case 2: // closing, idle 9s: live
			e.Observe(tcpFIN|tcpACK, now-9_000)
			live = append(live, k)
		case 3: // established, idle 301s: expired
			e.Observe(tcpACK, now-301_000)
			dead = append(dead, k)
		}
	}
	slots := len(tab.slots)
	const slice = 1024
	total := 0
	calls := 0
	for total < len(dead) {
		got := tab.Reap(now, slice)
		calls++
		if got > slice {
			t.Fatalf("Reap(%d) deleted %d", slice, got)
		}
		if calls == 1 && got == 0 {
			t.Fatalf("first slice deleted nothing")
		}
		if calls == 1 && got >= len(dead)/2 {
			t.Fatalf("first slice of %d/%d slots deleted %d of %d expired: not a slice", slice, slots, got, len(dead))
		}
		total += got
		if err := checkInvariants(tab, testHash); err != nil {
			t.Fatal(err)
		}
		if calls > 2*slots/slice+2 {
			t.Fatalf("after %d calls only %d of %d expired entries reaped", calls, total, len(dead))
		}
	}
	// n examinations per call, and every deletion is an examination, so a
	// sweep takes (slots + deletions) / n calls.
	if want := (slots + len(dead) + slice - 1) / slice; calls > want+1 {
		t.Errorf("sweep took %d calls, want about %d", calls, want)
	}
	for _, k := range live {
		if tab.Lookup(&k, k.Hash(testSeed)) == nil {
			t.Fatal("a live entry was reaped")
		}
	}
	for _, k := range dead {
		if tab.Lookup(&k, k.Hash(testSeed)) != nil {
			t.Fatal("an expired entry survived a full sweep")
		}
	}
	if tab.Len() != len(live) || tab.Stats().Expired != uint64(len(dead)) {
		t.Errorf("Len %d, stats %+v; want %d live, %d expired", tab.Len(), tab.Stats(), len(live), len(dead))
	}
	if got := tab.Reap(now, 4*slots); got != 0 {
		t.Errorf("a second sweep deleted %d", got)
	}
}

// TestMaxPSL drives a hash that sends every key to one home slot: the run
// grows to maxPSL entries, then inserts are refused (the probe cost stays
// bounded) without harm to the table, and a delete makes room again.
func TestMaxPSL(t *testing.T) {
	const capacity = maxPSL + 50
	constant := func(*Key) uint64 { return 0x1234_5678_0000_0000 }
	tab := NewTable(capacity, Timeouts{})
	var keys []Key
	for i := 0; i < capacity; i++ {
		k := seqKey(i, 17)
		e := tab.Insert(&k, constant(&k), 1)
		if (e != nil) != (i < maxPSL) {
			t.Fatalf("insert %d: entry %v, want refusal only beyond %d", i, e != nil, maxPSL)
		}
		if e != nil {
			keys = append(keys, k)
		}
	}
	if s := tab.Stats(); s.Len != maxPSL || s.InsertFailed != capacity-maxPSL {
		t.Fatalf("stats %+v", s)
	}
	if err := checkInvariants(tab, constant); err != nil {
		t.Fatal(err)
	}
	// A key whose home lies inside the run goes to its end, psl < maxPSL.
	n := uint64(len(tab.slots))
	near := constant(nil) + (10<<32/n+1)<<32
	if d := tab.home(near) - tab.home(constant(nil)); d != 10 {
		t.Fatalf("near hash is %d slots from the run's home, want 10", d)
	}
	hashOf := func(k *Key) uint64 {
		if k.SrcPort == 0xbeef {
			return near
		}
		return constant(k)
	}
	k := seqKey(0xbeef, 17)
	if e := tab.Insert(&k, near, 2); e == nil || e.psl != maxPSL-10+1 {
		t.Fatalf("insert inside the run: %+v", e)
	}
	if err := checkInvariants(tab, hashOf); err != nil {
		t.Fatal(err)
	}
	// A delete makes room at the home again.
	k2 := seqKey(100_000, 17)
	if tab.Insert(&k2, constant(&k2), 2) != nil {
		t.Fatal("insert into a full run accepted")
	}
	if !tab.Delete(&keys[7], constant(&keys[7])) {
		t.Fatal("delete failed")
	}
	if e := tab.Insert(&k2, constant(&k2), 2); e == nil {
		t.Fatal("insert after a delete refused")
	}
	if err := checkInvariants(tab, hashOf); err != nil {
		t.Fatal(err)
	}

	// An insert that would push an entry already at maxPSL one slot further
	// is refused too: one key at home-1, a full run at home, then a second
	// key at home-1, whose place is at the start of the full run.
	tab = NewTable(capacity, Timeouts{})
	before := constant(nil) - (1<<32/n+1)<<32
	if tab.home(before) != tab.home(constant(nil))-1 {
		t.Fatal("before hash is not one slot before the run's home")
	}
	hashOf = func(k *Key) uint64 {
		if k.SrcPort >= 0xbee0 {
			return before
		}
		return constant(k)
	}
	x, y := seqKey(0xbee0, 17), seqKey(0xbee1, 17)
	if tab.Insert(&x, before, 1) == nil {
		t.Fatal("insert refused")
	}
	for i := 0; i < maxPSL; i++ {
		k := seqKey(i, 17)
		if tab.Insert(&k, constant(&k), 1) == nil {
			t.Fatalf("insert %d refused", i)
		}
	}
	if tab.Insert(&y, before, 1) != nil {
		t.Fatal("insert that shifts an entry past maxPSL accepted")
	}
	if err := checkInvariants(tab, hashOf); err != nil {
		t.Fatal(err)
	}
}

func TestLookupBatch(t *testing.T) {
	tab := NewTable(1000, Timeouts{})
	var keys []Key
	var hashes []uint64
	for i := 0; i < 1500; i++ {
		k := seqKey(i, 17)
		keys = append(keys, k)
		hashes = append(hashes, k.Hash(testSeed))
		if i%3 != 0 {
			tab.Insert(&k, k.Hash(testSeed), 1)
		}
	}
	out := make([]*Entry, len(keys))
	tab.LookupBatch(keys, hashes, out)
	for i := range keys {
		if want := tab.Lookup(&keys[i], hashes[i]); out[i] != want {
			t.Fatalf("key %d: LookupBatch %p, Lookup %p", i, out[i], want)
		}
		if (out[i] != nil) != (i%3 != 0) {
			t.Fatalf("key %d: found %v", i, out[i] != nil)
		}
	}
}

// TestZeroAlloc checks that no table operation allocates.
func TestZeroAlloc(t *testing.T) {
	const capacity = 1000
	tab := NewTable(capacity, Timeouts{})
	keys := make([]Key, 2*capacity)
	hashes := make([]uint64, len(keys))
	for i := range keys {
		keys[i] = seqKey(i, 6)
		hashes[i] = keys[i].Hash(testSeed)
	}
	out := make([]*Entry, 64)
	i := 0
	now := uint32(0)
	ops := []struct {
		name string
		op   func()
	}{
		{"Insert", func() { tab.Insert(&keys[i], hashes[i], now).Observe(tcpACK, now) }}, // fills, then evicts
		{"Lookup", func() { tab.Lookup(&keys[i], hashes[i]) }},
		{"LookupBatch", func() {
			tab.LookupBatch(keys[i%capacity:i%capacity+64], hashes[i%capacity:i%capacity+64], out)
		}},
		{"Reap", func() { tab.Reap(now, 16) }}, // now has moved past the established timeout
		{"Insert again", func() { tab.Insert(&keys[i], hashes[i], now) }},
		{"Delete", func() { tab.Delete(&keys[i], hashes[i]) }},
		{"Stats", func() { _ = tab.Stats() }},
		{"Clock", func() { _ = testClock.Now() }},
	}
	for _, o := range ops {
		allocs := testing.AllocsPerRun(2000, func() {
			i = (i + 7) % len(keys)
			now += 200
			o.op()
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per run", o.name, allocs)
		}
	}
	if s := tab.Stats(); s.Inserts == 0 || s.Deletes == 0 || s.Expired == 0 {
		t.Errorf("the operations did not run: %+v", s)
	}
}

var testClock = NewClock()

// TestMemoryPerFlow builds a table for 1M flows, fills it with 1M distinct
// keys and measures the heap it holds.
func TestMemoryPerFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 67 MB")
	}
	const flows = 1 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tab := NewTable(flows, Timeouts{})
	now := uint32(1)
	for i := 0; i < flows; i++ {
		k := seqKey(i, 6)
		e := tab.Insert(&k, k.Hash(testSeed), now)
		e.Observe(tcpACK, now)
		e.Backend = uint32(i)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	s := tab.Stats()
	if s.Len != flows || s.EvictedEstablished+s.EvictedHalfOpen+s.Expired+s.EvictedIdle != 0 {
		t.Fatalf("fill: %+v", s)
	}
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	perFlow := float64(heap) / flows
	t.Logf("sizeof(Entry) = %d bytes; %d flows in %d slots (load %.3f); heap %d bytes = %.2f bytes/flow",
		unsafe.Sizeof(Entry{}), s.Len, s.Slots, float64(s.Len)/float64(s.Slots), heap, perFlow)
	maxDisp, sumDisp := uint32(0), uint64(0)
	for i := range tab.slots {
		if e := &tab.slots[i]; e.psl != 0 {
			d := uint32(e.psl - 1)
			sumDisp += uint64(d)
			maxDisp = max(maxDisp, d)
		}
	}
	t.Logf("displacement: mean %.2f, max %d", float64(sumDisp)/flows, maxDisp)
	// The budget was 64 bytes per flow (52-byte entries); the full-NAT
	// binding (SNAT port and address index) made the entry 56 bytes, 67.2
	// bytes per flow at the 5/6 load factor.
	if perFlow > 68 {
		t.Errorf("%.2f heap bytes per flow, budget 68", perFlow)
	}
	runtime.KeepAlive(tab)
}

func ExampleTable() {
	clock := NewClock()
	flows := NewTable(1024, DefaultTimeouts())

	k := Key{Proto: 6, SrcPort: 40000, DstPort: 443}
	h := k.Hash(0x5eed) // the cluster seed

	// A worker's miss path: no entry, so choose a backend and remember it.
	now := clock.Now()
	if flows.Lookup(&k, h) == nil {
		e := flows.Insert(&k, h, now)
		e.Backend = 7
		e.Observe(tcpSYN, now)
	}
	// Later packets of the flow hit the entry.
	e := flows.Lookup(&k, h)
	e.Observe(tcpACK, now)
	fmt.Println(e.Backend, e.State, flows.Len())
	// Output: 7 established 1
}

// RangeSlots walks the table a slice at a time: slices that cover every
// slot once visit every entry once, whatever the slice size.
func TestRangeSlots(t *testing.T) {
	tb := NewTable(1000, DefaultTimeouts())
	for i := range 700 {
		k := MakeKey(6, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 1000), netip.MustParseAddrPort("198.18.0.10:80"))
		tb.Insert(&k, k.Hash(1), 1)
	}
	slots := tb.Stats().Slots
	for _, slice := range []int{1, 7, 100, slots, 3 * slots} {
		seen := map[Key]int{}
		next, walked := 5, 0
		for walked < slots {
			n := min(slice, slots-walked)
			next = tb.RangeSlots(next, n, func(e *Entry) { seen[e.Key]++ })
			walked += n
		}
		if len(seen) != 700 || next != 5 {
			t.Fatalf("slice %d: %d entries seen, cursor back at %d", slice, len(seen), next)
		}
		for k, c := range seen {
			if c != 1 {
				t.Fatalf("slice %d: %v seen %d times", slice, k, c)
			}
		}
	}
	var n int
	tb.Range(func(*Entry) bool { n++; return n < 10 })
	if n != 10 {
		t.Fatalf("Range went on after false: %d", n)
	}
}
