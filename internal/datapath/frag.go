package datapath

import (
	"github.com/sluicelb/sluice/internal/flow"
)

// Fragments (RFC 791, RFC 8200): only a datagram's first fragment carries
// the ports a flow is hashed by. The worker remembers, per datagram
// (pipeline.FragmentKey: source, destination, protocol, identification),
// the backend its first fragment went to, and sends the later fragments to
// the same backend. Later fragments that arrive first are copied into a
// small hold queue and sent (through the kernel: they are no longer in a
// link buffer) when their first fragment decides, or dropped after
// holdTimeout. Nothing is reassembled: fragments leave as they came.
const (
	fragWays     = 4
	fragSets     = 1024 // fragWays x fragSets datagrams remembered per worker
	fragTimeout  = 2000 // ms a first fragment's decision is remembered
	holdSlots    = 64   // later fragments held per worker
	holdTimeout  = 50   // ms a later fragment waits for its first fragment
	holdHeadroom = 256  // room for the outer headers in front of a held copy
	holdFrameMax = 9216 + 18
	fragSweep    = 4 // fragment-table sets swept per poll
)

// fragTable maps datagrams to the backend of their first fragment. It is a
// set-associative cache: a datagram lives in one set of fragWays entries, an
// insert into a full set replaces the entry that expires first. Expired
// entries are cleared when they are met and by sweep, so that a clock
// reading 2^31 ms later never revives one. Owned by one worker.
type fragTable struct {
	sets  [fragSets][fragWays]fragEntry
	sweep int // next set sweep examines
}

type fragEntry struct {
	key     flow.Key
	expires uint32 // flow clock; 0: free
	fragDecision
}

// fragDecision is where a datagram's first fragment went: its backend and
// flow hash (later fragments take its outer source port), and for a
// full-NAT flow its binding (SNAT address index and port). reply: the
// datagram is a full-NAT reply to an SNAT address, whose later fragments
// are translated by the binding natAddr/natPort names (backend unused);
// with handoff, its first fragment was handed to the worker that owns its
// SNAT port (backend: that worker's index), and so are its later ones.
type fragDecision struct {
	flowHash uint64
	backend  uint32
	natPort  uint16
	natAddr  uint8
	reply    bool
	handoff  bool
	proto    uint8 // reply: the flow's protocol (the binding's)
	// flow is the first fragment's flow key and gen the generation that
	// let it through: a later generation's firewall decides its later
	// fragments again (stillAllowed).
	flow flow.Key
	gen  uint32
}

func (e *fragEntry) live(now uint32) bool {
	if e.expires == 0 {
		return false
	}
	if int32(e.expires-now) <= 0 {
		e.expires = 0
		return false
	}
	return true
}

func (t *fragTable) set(hash uint64) *[fragWays]fragEntry { return &t.sets[hash%fragSets] }

// lookup returns the entry remembered for k, or nil.
func (t *fragTable) lookup(k *flow.Key, hash uint64, now uint32) *fragEntry {
	s := t.set(hash)
	for i := range s {
		if e := &s[i]; e.live(now) && e.key == *k {
			return e
		}
	}
	return nil
}

// insert remembers k -> d for fragTimeout.
func (t *fragTable) insert(k *flow.Key, hash uint64, d fragDecision, now uint32) {
	s := t.set(hash)
	var victim *fragEntry
	for i := range s {
		if e := &s[i]; e.live(now) && e.key == *k {
			victim = e // the same datagram again
			break
		}
	}
	if victim == nil {
		for i := range s {
			e := &s[i]
			if !e.live(now) {
				victim = e
				break
			}
			if victim == nil || int32(e.expires-victim.expires) < 0 {
				victim = e
			}
		}
	}
	victim.key, victim.fragDecision = *k, d
	victim.expires = now + fragTimeout
	if victim.expires == 0 {
		victim.expires = 1
	}
}

// sweepSets clears the expired entries of the next n sets.
func (t *fragTable) sweepSets(n int, now uint32) {
	for range n {
		s := &t.sets[t.sweep]
		for i := range s {
			s[i].live(now)
		}
		t.sweep = (t.sweep + 1) % fragSets
	}
}

// heldFrag is a copy of a later fragment waiting for its first fragment.
type heldFrag struct {
	buf  []byte // holdHeadroom + frame
	n    int    // frame length; 0: free
	key  flow.Key
	hash uint64
	at   uint32
}

// holdQueue is the worker's bounded set of held fragments.
type holdQueue struct {
	slots []heldFrag // allocated on first use
	n     int
}

// put copies frame; it reports false if the queue is full or the frame too
// long.
func (q *holdQueue) put(frame []byte, k *flow.Key, hash uint64, now uint32) bool {
	if len(frame) > holdFrameMax || q.n == holdSlots {
		return false
	}
	if q.slots == nil {
		q.slots = make([]heldFrag, holdSlots)
		mem := make([]byte, holdSlots*(holdHeadroom+holdFrameMax))
		for i := range q.slots {
			q.slots[i].buf = mem[i*(holdHeadroom+holdFrameMax) : (i+1)*(holdHeadroom+holdFrameMax)]
		}
	}
	for i := range q.slots {
		h := &q.slots[i]
		if h.n == 0 {
			h.n = copy(h.buf[holdHeadroom:], frame)
			h.key, h.hash, h.at = *k, hash, now
			q.n++
			return true
		}
	}
	return false
}

// expire frees the fragments held longer than holdTimeout and returns how
// many.
func (q *holdQueue) expire(now uint32) int {
	if q.n == 0 {
		return 0
	}
	freed := 0
	for i := range q.slots {
		h := &q.slots[i]
		if h.n != 0 && now-h.at > holdTimeout {
			h.n = 0
			q.n--
			freed++
		}
	}
	return freed
}
