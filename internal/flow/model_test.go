package flow

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// model is the slow, obviously correct flow table: a Go map with the same
// timeout rules. It has no capacity and no eviction.
type model struct {
	m       map[Key]Entry
	timeout [numStates]uint32
}

func newModel(to Timeouts) *model {
	md := &model{m: make(map[Key]Entry)}
	md.timeout[StateSYN] = Millis(to.SYN)
	md.timeout[StateEstablished] = Millis(to.Established)
	md.timeout[StateClosing] = Millis(to.Closing)
	md.timeout[StateUDP] = Millis(to.UDP)
	return md
}

// modelNext is the TCP state machine written from the rules, independently
// of Entry.Observe.
func modelNext(s State, flags uint8) State {
	fin := flags&(tcpFIN|tcpRST) != 0
	syn := flags&tcpSYN != 0
	ack := flags&tcpACK != 0
	switch {
	case s == StateUDP:
		return s
	case fin:
		return StateClosing
	case syn && !ack && s == StateClosing:
		return StateSYN // the 5-tuple is reused by a new connection
	case ack && !syn && s == StateSYN:
		return StateEstablished
	}
	return s
}

func (md *model) expired(e Entry, now uint32) bool {
	age := int64(int32(now - e.LastSeen))
	return age > int64(md.timeout[e.State])
}

// checkInvariants walks the slot array and checks what every operation must
// preserve: every entry's probe length is its true distance from its home
// slot (computed from hash), the Robin Hood ordering holds (along a run the
// probe length grows by at most one from slot to slot, so home slots never
// decrease), no hole lies between an entry and its home, the entry count is
// right, every entry is found by Lookup at its own slot and the counters add
// up.
func checkInvariants(t *Table, hash func(*Key) uint64) error {
	n := uint32(len(t.slots))
	count := 0
	for i := uint32(0); i < n; i++ {
		e := &t.slots[i]
		if e.psl == 0 {
			if *e != (Entry{}) {
				return fmt.Errorf("slot %d: free slot not zeroed: %+v", i, *e)
			}
			continue
		}
		if e.State == StateFree || e.State >= numStates {
			return fmt.Errorf("slot %d: invalid state %d", i, e.State)
		}
		count++
		h := hash(&e.Key)
		if want := (i+n-t.home(h))%n + 1; uint32(e.psl) != want {
			return fmt.Errorf("slot %d: psl %d, but the home slot is %d (want psl %d)", i, e.psl, t.home(h), want)
		}
		prev := (i + n - 1) % n
		if pe := &t.slots[prev]; e.psl > 1 {
			if pe.psl == 0 {
				return fmt.Errorf("slot %d: psl %d but slot %d is empty", i, e.psl, prev)
			}
			if int(e.psl) > int(pe.psl)+1 {
				return fmt.Errorf("slot %d: psl %d after %d at slot %d: Robin Hood order broken", i, e.psl, pe.psl, prev)
			}
		}
		if got := t.Lookup(&e.Key, h); got != e {
			return fmt.Errorf("slot %d: Lookup of its own key returned %p, want %p", i, got, e)
		}
	}
	if count != t.Len() {
		return fmt.Errorf("walk counted %d entries, Len() = %d", count, t.Len())
	}
	if count > t.capacity {
		return fmt.Errorf("%d entries exceed capacity %d", count, t.capacity)
	}
	s := t.Stats()
	if out := s.Deletes + s.Expired + s.EvictedHalfOpen + s.EvictedIdle + s.EvictedEstablished; s.Inserts-out != uint64(s.Len) {
		return fmt.Errorf("stats do not add up: %+v", s)
	}
	return nil
}

// hashFuncs are the hashes the model test drives the table with. The table
// takes the hash as an argument, so the test can choose hashes that collide
// on purpose: shared home slots, long runs, runs that wrap
// past the last slot.
var hashFuncs = []struct {
	name string
	f    func(k *Key) uint64
}{
	{"wyhash", func(k *Key) uint64 { return k.Hash(0x5eed) }},
	// 8 distinct hashes spread over the table: long runs, shared homes.
	{"clustered", func(k *Key) uint64 { return (k.Hash(1) & 7) << 61 }},
	// Homes in the last slots: every run wraps to slot 0.
	{"wrapping", func(k *Key) uint64 { return (0xffff_fff0 | k.Hash(2)&15) << 32 }},
	// All keys collide completely.
	{"constant", func(k *Key) uint64 { return 0xdead_beef_0000_0000 }},
}

func randKey(r *rand.Rand) Key {
	var k Key
	for i := range k.Src {
		k.Src[i] = byte(r.Uint32())
	}
	for i := range k.Dst {
		k.Dst[i] = byte(r.Uint32())
	}
	k.SrcPort = uint16(r.Uint32())
	k.DstPort = uint16(r.Uint32())
	k.Proto = []uint8{6, 17, 1}[r.IntN(3)]
	return k
}

var tcpFlagChoices = []uint8{0, tcpSYN, tcpSYN | tcpACK, tcpACK, tcpACK | 0x08, tcpFIN | tcpACK, tcpRST, tcpRST | tcpACK}

// TestModel drives the table and the model with the same random operation
// sequences and compares them after every step. The table is big enough
// never to evict.
func TestModel(t *testing.T) {
	steps := 4000
	if testing.Short() {
		steps = 1500
	}
	// Timeouts short enough that random steps of 0-19 ms expire entries.
	to := Timeouts{SYN: 50 * time.Millisecond, Established: 400 * time.Millisecond, Closing: 30 * time.Millisecond, UDP: 120 * time.Millisecond}
	for _, hf := range hashFuncs {
		for _, universe := range []int{1, 7, 60, 300} {
			if hf.name == "constant" && universe > maxPSL {
				universe = maxPSL - 5 // one run: it must fit (see TestMaxPSL)
			}
			for seed := uint64(1); seed <= 3; seed++ {
				t.Run(fmt.Sprintf("%s/keys=%d/seed=%d", hf.name, universe, seed), func(t *testing.T) {
					runModel(t, hf.f, universe, seed, steps, to)
				})
			}
		}
	}
}

func runModel(t *testing.T, hash func(*Key) uint64, universe int, seed uint64, steps int, to Timeouts) {
	r := rand.New(rand.NewPCG(seed, uint64(universe)))
	keys := make([]Key, universe)
	for i := range keys {
		keys[i] = randKey(r)
	}
	// Start near the clock wrap so that the run crosses it.
	now := uint32(1<<32 - 2000)
	tab := NewTable(universe, to) // capacity == universe: never evicts
	md := newModel(to)
	for step := 0; step < steps; step++ {
		now += uint32(r.IntN(20))
		k := keys[r.IntN(len(keys))]
		h := hash(&k)
		op := r.IntN(100)
		var desc string
		switch {
		case op < 40: // insert (or refresh) and observe a packet
			flags := tcpFlagChoices[r.IntN(len(tcpFlagChoices))]
			desc = fmt.Sprintf("insert %v flags %#x", k.Proto, flags)
			e, found := tab.LookupOrInsert(&k, h, now)
			me, mfound := md.m[k]
			if e == nil || found != mfound {
				t.Fatalf("step %d %s: LookupOrInsert = %v, found %v; model found %v", step, desc, e, found, mfound)
			}
			if !mfound {
				me = Entry{Key: k, State: initialState(k.Proto), LastSeen: now}
				if e.State != me.State || e.LastSeen != now || e.Backend != 0 || e.Gen != 0 || e.Key != k {
					t.Fatalf("step %d %s: new entry %+v", step, desc, *e)
				}
				me.Backend, me.Gen = uint32(r.Uint32()), uint32(step)
				e.Backend, e.Gen = me.Backend, me.Gen
			}
			if k.Proto != protoTCP {
				flags = 0
			}
			e.Observe(flags, now)
			me.State = modelNext(me.State, flags)
			me.LastSeen = now
			md.m[k] = me
		case op < 65: // lookup
			desc = "lookup"
			e := tab.Lookup(&k, h)
			_, ok := md.m[k]
			if (e != nil) != ok {
				t.Fatalf("step %d lookup: table %v, model %v", step, e != nil, ok)
			}
		case op < 80: // delete
			desc = "delete"
			_, ok := md.m[k]
			if got := tab.Delete(&k, h); got != ok {
				t.Fatalf("step %d delete: table %v, model %v", step, got, ok)
			}
			delete(md.m, k)
		case op < 97: // reap a slice
			n := r.IntN(len(tab.slots) + 1)
			desc = fmt.Sprintf("reap %d", n)
			got := tab.Reap(now, n)
			// The table may only have removed expired entries, and exactly
			// as many as it says.
			removed := 0
			for mk, me := range md.m {
				if tab.Lookup(&mk, hash(&mk)) == nil {
					if !md.expired(me, now) {
						t.Fatalf("step %d %s: reaped a live entry %+v (age %d)", step, desc, me, int32(now-me.LastSeen))
					}
					delete(md.m, mk)
					removed++
				}
			}
			if removed != got {
				t.Fatalf("step %d %s: Reap returned %d, %d entries gone", step, desc, got, removed)
			}
		default: // full sweep: exactly the expired entries go
			desc = "sweep"
			want := 0
			for mk, me := range md.m {
				if md.expired(me, now) {
					delete(md.m, mk)
					want++
				}
			}
			// One pass over every slot, plus one re-examination per deletion.
			if got := tab.Reap(now, len(tab.slots)+want); got != want {
				t.Fatalf("step %d sweep: Reap = %d, model expired %d", step, got, want)
			}
		}
		compare(t, step, desc, tab, md, hash, now)
	}
}

func compare(t *testing.T, step int, desc string, tab *Table, md *model, hash func(*Key) uint64, now uint32) {
	t.Helper()
	if tab.Len() != len(md.m) {
		t.Fatalf("step %d %s: Len %d, model %d", step, desc, tab.Len(), len(md.m))
	}
	for k, me := range md.m {
		e := tab.Lookup(&k, hash(&k))
		if e == nil {
			t.Fatalf("step %d %s: key missing from table", step, desc)
		}
		got := *e
		got.psl = 0
		if got != me {
			t.Fatalf("step %d %s: entry %+v, model %+v", step, desc, got, me)
		}
		if tab.Expired(e, now) != md.expired(me, now) {
			t.Fatalf("step %d %s: Expired %v, model %v", step, desc, tab.Expired(e, now), md.expired(me, now))
		}
	}
	if err := checkInvariants(tab, hash); err != nil {
		t.Fatalf("step %d %s: %v", step, desc, err)
	}
}

// TestAtCapacity inserts far more distinct keys than the table holds, with
// random states and ages, and checks the invariants after every insert: Len
// never exceeds the capacity, every present key is findable, the Robin Hood
// order holds and the counters add up.
func TestAtCapacity(t *testing.T) {
	for _, hf := range hashFuncs {
		capacities := []int{1, 2, 9, 50, 500}
		if hf.name != "wyhash" {
			capacities[4] = 120 // lookups walk long runs: keep the test short
		}
		for _, capacity := range capacities {
			t.Run(fmt.Sprintf("%s/cap=%d", hf.name, capacity), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(capacity), 7))
				tab := NewTable(capacity, Timeouts{})
				present := make(map[Key]bool)
				now := uint32(1<<32 - 100_000)
				inserts := 6 * capacity
				if inserts < 200 {
					inserts = 200
				}
				for i := 0; i < inserts; i++ {
					now += uint32(r.IntN(100))
					if r.IntN(200) == 0 {
						now += 20_000 // a lull: entries expire
					}
					k := randKey(r)
					h := hf.f(&k)
					e, found := tab.LookupOrInsert(&k, h, now)
					if e == nil {
						t.Fatalf("insert %d: nil entry (stats %+v)", i, tab.Stats())
					}
					if found {
						t.Fatalf("insert %d: fresh random key reported present", i)
					}
					if k.Proto == protoTCP {
						e.Observe(tcpFlagChoices[r.IntN(len(tcpFlagChoices))], now)
					}
					present[k] = true
					if capacity <= 50 || i%16 == 0 {
						if err := checkInvariants(tab, hf.f); err != nil {
							t.Fatalf("insert %d: %v", i, err)
						}
					}
					if tab.Len() > capacity {
						t.Fatalf("insert %d: Len %d > capacity %d", i, tab.Len(), capacity)
					}
					if tab.Lookup(&k, h) != e {
						t.Fatalf("insert %d: new key not found", i)
					}
					found2 := 0
					for pk := range present {
						if tab.Lookup(&pk, hf.f(&pk)) != nil {
							found2++
						} else {
							delete(present, pk)
						}
					}
					if found2 != tab.Len() {
						t.Fatalf("insert %d: %d inserted keys findable, Len %d", i, found2, tab.Len())
					}
					if i < inserts-1 && r.IntN(10) == 0 { // a delete at capacity
						for pk := range present {
							if !tab.Delete(&pk, hf.f(&pk)) {
								t.Fatalf("insert %d: Delete of a present key failed", i)
							}
							delete(present, pk)
							break
						}
					}
				}
				s := tab.Stats()
				if s.Len != capacity {
					t.Errorf("after %d inserts Len = %d, want full %d", inserts, s.Len, capacity)
				}
				if s.InsertFailed != 0 {
					t.Errorf("InsertFailed = %d", s.InsertFailed)
				}
				t.Logf("%+v", s)
			})
		}
	}
}
