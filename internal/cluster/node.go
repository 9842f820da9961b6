package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/internal/flow"
)

// Config configures a Node. Zero fields take the defaults shown.
type Config struct {
	Transport  Transport  // required
	Membership Membership // required
	AuthKey    [32]byte   // protocol key (Keys); identical on every node
	Seed       uint64     // cluster hash seed; identical on every node
	Shards     int        // 4096; identical on every node
	Replicas   int        // 2; identical on every node; at most MaxReplicas
	Capacity   int        // table entries, 1<<20

	TTL          time.Duration // expiry for values submitted with Expire 0: 120 s
	QueryTimeout time.Duration // per attempt: 25 ms
	RetryDelay   time.Duration // after a retry answer: 2 ms
	Attempts     int           // per request: 6
	Outstanding  int           // requests in flight at once: 65536
	Queue        int           // Submit queue: 8192
	SyncWindow   int           // sync requests in flight (the sync rate bound): 8
	SyncBatch    int           // entries per sync response: 24 (one datagram)
	SyncRate     int           // entries per second a node pulls while syncing: 500000
	// SyncSettle delays the pull of a shard a node joined, and pulls it a
	// second time after serving, by this long: the time for a membership
	// change to reach every member (gossip). Negative: no delay and no
	// second pass. Default 100 ms.
	SyncSettle time.Duration
	// KeepLeft is how long a node keeps the entries of a shard whose chain
	// it left (a member that joined the chain may still pull them from it)
	// before it deletes them: 5 s.
	KeepLeft time.Duration
	Tick     time.Duration // timer resolution: 2 ms

	Now func() time.Time // clock; time.Now
}

func (c *Config) defaults() error {
	if c.Transport == nil || c.Membership == nil {
		return errors.New("cluster: Config.Transport and Config.Membership are required")
	}
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	defd := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&c.Shards, DefaultShards)
	def(&c.Replicas, DefaultReplicas)
	def(&c.Capacity, 1<<20)
	def(&c.Attempts, 6)
	def(&c.Outstanding, 1<<16)
	def(&c.Queue, 8192)
	def(&c.SyncWindow, 8)
	def(&c.SyncBatch, 24)
	def(&c.SyncRate, 500000)
	defd(&c.TTL, DefaultTTL)
	defd(&c.QueryTimeout, 25*time.Millisecond)
	defd(&c.RetryDelay, 2*time.Millisecond)
	defd(&c.Tick, 2*time.Millisecond)
	defd(&c.KeepLeft, 5*time.Second)
	if c.SyncSettle == 0 {
		c.SyncSettle = 100 * time.Millisecond
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Shards > 1<<16 {
		return errors.New("cluster: Config.Shards: at most 65536")
	}
	if c.Replicas > MaxReplicas {
		return errors.New("cluster: Config.Replicas: at most 16")
	}
	c.SyncBatch = min(c.SyncBatch, (MaxPayload-headerLen-tagLen-msgSize[MsgSyncDone])/msgSize[MsgSyncEntry])
	return nil
}

// Op is what a Request asks.
type Op uint8

const (
	// OpQuery asks the flow's tail; the tail answers its entry or, without
	// one, inserts the proposal at the head and answers once committed.
	OpQuery Op = iota
	// OpPublish inserts the proposal at the head (first insert wins; an
	// existing entry's expiry is extended) and answers the committed value.
	OpPublish
	// OpDelete deletes the flow's entry along its chain; no answer.
	OpDelete
	// OpLookup answers from this node's own table, without the network.
	OpLookup
	// OpDropService deletes every entry of Value.Service from this node's
	// table, without the network and without an answer: every node does it
	// on the same config event (an on-change backend change completing).
	OpDropService
)

// Request is one operation submitted to a Node.
type Request struct {
	Op    Op
	Key   flow.Key
	Value Value         // the proposal; Expire 0 means now + Config.TTL
	Tag   uint64        // returned in the Answer
	Reply chan<- Answer // bounded; a full channel drops the answer (counted)
}

// Answer is a request's outcome. With StatusOK, Value is the committed
// value; StatusTimeout, StatusRetry (too many requests in flight) and
// StatusFull mean the caller decides locally.
type Answer struct {
	Key    flow.Key
	Value  Value
	Tag    uint64
	Status Status
}

// Stats are a node's counters; read them with Node.Stats.
type Stats struct {
	Members, Entries                          uint64 // gauges
	Requests, Answered, Timeouts, Rejected    uint64 // local requests
	RetryAnswers, AnswersDropped              uint64
	Queries, Inserts, Committed, Stored       uint64 // served
	Conflicts, Repairs, Retransmits, Deletes  uint64
	SyncPending, SyncShards, SyncNoSource     uint64 // shards
	SyncCatchups                              uint64 // shards pulled a second time after the views settled
	Purged                                    uint64 // entries deleted KeepLeft after leaving their chain
	SyncEntriesIn, SyncEntriesOut, SyncReqs   uint64
	DropAuth, DropReplay, DropNotMember       uint64
	DropMalformed, TableFull, Reaped, SendErr uint64
	Datagrams, DatagramsOut, Views, Misrouted uint64
}

// Node is one cluster member: its table, its chains and the protocol. Run
// is its goroutine and the only one touching its state; other goroutines
// talk to it through Submit (a bounded queue) and read Stats (atomics).
type Node struct {
	// Immutable after New.
	cfg  Config
	self netip.AddrPort
	reqs chan Request
	fns  chan inspect
	boot uint32
	done chan struct{} // closed when Run returns

	stats atomic.Pointer[Stats]  // published copy, refreshed by Run
	ready atomic.Bool            // a view with self in it, no shard pending sync
	view  atomic.Pointer[Chains] // the chains of the current view, for View

	// Owned by the Run goroutine.
	st        Stats
	codec     *Codec
	table     *Table
	chains    *Chains
	selfIdx   int
	synced    []bool      // per shard: this node's copy is complete
	left      []time.Time // per shard: when this node left its chain (zero: in it, or purged)
	purgeAt   time.Time   // next check of left
	syncing   map[int]*shardSync
	syncQ     []int // shards waiting for a sync request slot
	syncBusy  int
	syncFirst int       // shards in n.syncing on their first pass (not serving)
	syncTok   float64   // token bucket of SyncRate, in entries
	syncLast  time.Time // last refill
	replay    map[netip.AddrPort]*Replay
	out       map[netip.AddrPort]*Writer
	dirty     []netip.AddrPort
	selfq     []Msg
	seq       uint64
	nextReq   uint32
	pending   map[uint32]*outstanding // this node's requests in flight
	timers    []timer                 // request deadlines, in order
	retries   []timer                 // requests to resend after a retry answer
	heads     map[flow.Key]headPending
	headQ     []headTimer
	reapAt    int
	nowMs     uint64
	scratch   []Entry
	lastTick  time.Time
}

type outstanding struct {
	req      Request
	shard    int
	attempts int
	misses   int    // attempts that timed out or were answered "retry"
	gen      uint32 // matches the timer of the current attempt
}

type timer struct {
	at  time.Time
	id  uint32
	gen uint32
}

type headPending struct {
	origin   netip.AddrPort
	reqID    uint32
	attempts int
}

type headTimer struct {
	at  time.Time
	key flow.Key
}

type shardSync struct {
	sources  []netip.AddrPort
	src      int
	cursor   uint32
	inflight bool
	queued   bool
	reqID    uint32
	deadline time.Time
	wait     time.Time // do not ask before (views settling, or every source was syncing)
	catchup  bool      // second pass: the shard is served already
	tries    int
	rounds   int
}

// paramKey binds the protocol key to the parameters every node must share
// (seed, shards, replicas): nodes configured differently would compute
// different chains, so their datagrams fail authentication (DropAuth)
// instead of being misrouted.
func paramKey(cfg Config) [32]byte {
	var b [24]byte
	binary.BigEndian.PutUint64(b[0:], cfg.Seed)
	binary.BigEndian.PutUint64(b[8:], uint64(cfg.Shards))
	binary.BigEndian.PutUint64(b[16:], uint64(cfg.Replicas))
	m := hmac.New(sha256.New, cfg.AuthKey[:])
	m.Write([]byte("sluice cluster parameters v1"))
	m.Write(b[:])
	var k [32]byte
	copy(k[:], m.Sum(nil))
	return k
}

// New returns a node; start it with Run.
func New(cfg Config) (*Node, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	n := &Node{
		cfg:     cfg,
		self:    cfg.Transport.LocalAddr(),
		reqs:    make(chan Request, cfg.Queue),
		fns:     make(chan inspect),
		done:    make(chan struct{}),
		boot:    binary.BigEndian.Uint32(b[:]),
		codec:   NewCodec(paramKey(cfg)),
		table:   NewTable(cfg.Capacity, cfg.Seed),
		synced:  make([]bool, cfg.Shards),
		left:    make([]time.Time, cfg.Shards),
		syncing: map[int]*shardSync{},
		replay:  map[netip.AddrPort]*Replay{},
		out:     map[netip.AddrPort]*Writer{},
		pending: map[uint32]*outstanding{},
		heads:   map[flow.Key]headPending{},
		selfIdx: -1,
	}
	n.chains = NewChains(cfg.Seed, cfg.Shards, cfg.Replicas, nil)
	n.view.Store(n.chains)
	n.stats.Store(&Stats{})
	return n, nil
}

// View returns the chains of the node's current membership view. Any
// goroutine may call it; the Chains is immutable.
func (n *Node) View() *Chains { return n.view.Load() }

// Addr returns the node's cluster address.
func (n *Node) Addr() netip.AddrPort { return n.self }

// Submit queues r without blocking; false means the queue is full (decide
// locally and count it).
func (n *Node) Submit(r Request) bool {
	select {
	case n.reqs <- r:
		return true
	default:
		return false
	}
}

type inspect struct {
	f    func()
	done chan struct{}
}

// do runs f on the node's goroutine and waits for it; false when the node
// is not running.
func (n *Node) do(f func()) bool {
	in := inspect{f: f, done: make(chan struct{})}
	select {
	case n.fns <- in:
		<-in.done
		return true
	case <-n.done:
		return false
	}
}

// Inspect runs f on the node's goroutine with its table (read only) and
// waits for it: for the control plane and tests, never the packet path. It
// returns false when the node is not running.
func (n *Node) Inspect(f func(*Table)) bool { return n.do(func() { f(n.table) }) }

// Report is a node's state for `sluice ctl cluster status`.
type Report struct {
	Self        netip.AddrPort
	Members     []netip.AddrPort // the current view
	Ready       bool             // a member with every shard's first sync done
	Heads       int              // shards this node heads
	Middles     int              // shards it holds in the middle of the chain
	Tails       int              // shards it answers for
	SyncPending int              // shards whose first sync is not done
	SyncCatchup int              // shards on their second pass
	Entries     int
	Capacity    int
	ByService   map[uint16]int // entries per service (VIP)
	Stats       Stats
}

// Report collects the node's state on its goroutine (a full table scan for
// ByService: for the control plane, not a hot path). ok is false when the
// node is not running.
func (n *Node) Report() (r Report, ok bool) {
	ok = n.do(func() {
		r = Report{Self: n.self, Members: append([]netip.AddrPort(nil), n.chains.Members()...),
			Entries: n.table.Len(), Capacity: n.table.Cap(), ByService: map[uint16]int{}}
		r.SyncPending = n.syncFirst
		r.SyncCatchup = len(n.syncing) - n.syncFirst
		r.Ready = n.selfIdx >= 0 && n.syncFirst == 0
		for s := 0; s < n.cfg.Shards; s++ {
			pos, l := n.position(s)
			switch {
			case pos < 0:
			case pos == l-1:
				r.Tails++
				if pos == 0 {
					r.Heads++
				}
			case pos == 0:
				r.Heads++
			default:
				r.Middles++
			}
		}
		n.table.All(func(e *Entry) { r.ByService[e.Service]++ })
		r.Stats = n.st
		r.Stats.Entries = uint64(n.table.Len())
		r.Stats.SyncPending = uint64(n.syncFirst)
	})
	return r, ok
}

// Stats returns the counters as of the node's last loop iteration.
func (n *Node) Stats() Stats { return *n.stats.Load() }

// Ready reports whether the node is a member of its current view with every
// shard synced: it serves as head and tail.
func (n *Node) Ready() bool { return n.ready.Load() }

// Run is the node's goroutine. It returns when ctx ends, after a graceful
// Leave; the caller closes the transport afterwards.
func (n *Node) Run(ctx context.Context) error {
	tick := time.NewTicker(n.cfg.Tick)
	defer tick.Stop()
	defer close(n.done)
	rx := n.cfg.Transport.Recv()
	views := n.cfg.Membership.Views()
	for {
		select {
		case <-ctx.Done():
			n.flush()
			n.publishStats()
			return n.cfg.Membership.Leave(time.Second)
		case v := <-views:
			n.now()
			n.applyView(v)
		case d, ok := <-rx:
			if !ok {
				return ErrClosed
			}
			n.now()
			n.datagram(d)
			for i := 0; i < 64; i++ {
				select {
				case d, ok = <-rx:
					if !ok {
						return ErrClosed
					}
					n.datagram(d)
					continue
				default:
				}
				break
			}
		case r := <-n.reqs:
			n.now()
			n.request(r)
			for i := 0; i < 256; i++ {
				select {
				case r = <-n.reqs:
					n.request(r)
					continue
				default:
				}
				break
			}
		case <-tick.C:
			n.tick(n.now())
		case in := <-n.fns:
			in.f()
			close(in.done)
		}
		n.runSelf()
		if len(n.syncQ) > 0 && n.syncBusy < n.cfg.SyncWindow {
			n.syncStart(n.cfg.Now())
			n.runSelf()
		}
		n.flush()
	}
}

func (n *Node) now() time.Time {
	t := n.cfg.Now()
	n.nowMs = uint64(t.UnixMilli())
	return t
}

func (n *Node) publishStats() {
	s := n.st
	s.Entries = uint64(n.table.Len())
	s.SyncPending = uint64(n.syncFirst)
	n.stats.Store(&s)
	n.ready.Store(n.selfIdx >= 0 && n.syncFirst == 0)
}

func (n *Node) shard(k *flow.Key) int { return ShardOf(k, n.cfg.Seed, n.cfg.Shards) }

// ---- sending ----

func (n *Node) send(to netip.AddrPort, m *Msg) {
	if to == n.self {
		n.selfq = append(n.selfq, *m)
		return
	}
	w := n.out[to]
	if w == nil {
		w = &Writer{}
		n.out[to] = w
	}
	if w.Len() > 0 && !w.Fits(m.Type) {
		n.sendOne(to, w)
	}
	if w.Len() == 0 {
		n.seq++
		w.Begin(n.boot, n.seq, n.nowMs)
		n.dirty = append(n.dirty, to)
	}
	w.Add(m)
}

func (n *Node) sendOne(to netip.AddrPort, w *Writer) {
	if err := n.cfg.Transport.Send(to, w.Seal(n.codec, to)); err != nil {
		n.st.SendErr++
	}
	n.st.DatagramsOut++
	w.count = 0
}

func (n *Node) flush() {
	for _, to := range n.dirty {
		if w := n.out[to]; w != nil && w.Len() > 0 {
			n.sendOne(to, w)
		}
	}
	n.dirty = n.dirty[:0]
}

func (n *Node) runSelf() {
	for i := 0; i < 1<<16 && len(n.selfq) > 0; i++ {
		q := n.selfq
		n.selfq = nil
		for j := range q {
			n.message(n.self, &q[j])
		}
	}
}

// ---- receiving ----

func (n *Node) datagram(d Datagram) {
	n.st.Datagrams++
	if n.chains.Index(d.From) < 0 {
		n.st.DropNotMember++
		return
	}
	h, msgs, err := n.codec.Open(d.Data, n.self)
	if err != nil {
		if errors.Is(err, ErrAuth) {
			n.st.DropAuth++
		} else {
			n.st.DropMalformed++
		}
		return
	}
	r := n.replay[d.From]
	if r == nil {
		r = NewReplay(n.nowMs)
		n.replay[d.From] = r
	}
	if !r.Check(&h, n.nowMs) {
		n.st.DropReplay++
		return
	}
	var m Msg
	for i := 0; i < int(h.Count); i++ {
		if msgs, err = Next(msgs, &m); err != nil {
			n.st.DropMalformed++
			return
		}
		n.message(d.From, &m)
	}
	if len(msgs) != 0 {
		n.st.DropMalformed++
	}
}

func (n *Node) message(from netip.AddrPort, m *Msg) {
	switch m.Type {
	case MsgQuery:
		n.onQuery(from, m)
	case MsgAnswer:
		n.onAnswer(m)
	case MsgInsert:
		n.onInsert(from, m)
	case MsgAck:
		delete(n.heads, m.Entry.Key)
	case MsgDelete:
		n.onDelete(m)
	case MsgSyncReq:
		n.onSyncReq(from, m)
	case MsgSyncEntry:
		n.onSyncEntry(from, m)
	case MsgSyncDone:
		n.onSyncDone(from, m)
	}
}

func (n *Node) answer(to netip.AddrPort, reqID uint32, st Status, e *Entry) {
	if !to.IsValid() {
		return
	}
	m := Msg{Type: MsgAnswer, Status: st, ReqID: reqID, Entry: *e}
	n.send(to, &m)
}

// position returns this node's place in shard s's chain and the chain length.
func (n *Node) position(s int) (int, int) {
	return n.chains.Position(s, n.selfIdx), n.chains.Len()
}

func (n *Node) onQuery(from netip.AddrPort, m *Msg) {
	n.st.Queries++
	s := n.shard(&m.Entry.Key)
	pos, l := n.position(s)
	if pos >= 0 && pos < l-1 && m.Aux&FlagAnyReplica != 0 && n.synced[s] {
		// The asker could not reach the tail: a chain member above it
		// holds every committed entry (and uncommitted ones carry the
		// value the head decided), so it may answer an existing entry.
		if v, ok := n.table.Get(&m.Entry.Key); ok {
			e := MakeEntry(m.Entry.Key, v)
			n.answer(from, m.ReqID, StatusOK, &e)
			return
		}
	}
	if pos < 0 || pos != l-1 || !n.synced[s] {
		n.answer(from, m.ReqID, StatusRetry, &m.Entry)
		return
	}
	if v, ok := n.table.Get(&m.Entry.Key); ok {
		e := MakeEntry(m.Entry.Key, v)
		n.answer(from, m.ReqID, StatusOK, &e)
		return
	}
	head, _ := n.chains.Head(s)
	ins := Msg{Type: MsgInsert, ReqID: m.ReqID, Entry: m.Entry, Origin: from}
	n.send(head, &ins)
}

func (n *Node) onInsert(from netip.AddrPort, m *Msg) {
	s := n.shard(&m.Entry.Key)
	pos, l := n.position(s)
	if pos < 0 || (pos > 0 && m.Aux&FlagRepair == 0 && from != n.chains.Member(n.chains.Chain(s)[pos-1])) {
		// Not in the chain, or not from the predecessor (the sender's
		// view differs): storing it would bypass the head.
		n.st.Misrouted++
		n.answer(m.Origin, m.ReqID, StatusRetry, &m.Entry)
		return
	}
	k := &m.Entry.Key
	switch {
	case m.Aux&FlagRepair != 0:
		if !n.table.Overwrite(k, m.Entry.Value()) {
			n.st.TableFull++
		}
		n.st.Repairs++
	case pos == 0:
		if !n.synced[s] {
			n.answer(m.Origin, m.ReqID, StatusRetry, &m.Entry)
			return
		}
		n.st.Inserts++
		v, res := n.table.Insert(k, m.Entry.Value())
		if res == Full {
			n.st.TableFull++
			n.answer(m.Origin, m.ReqID, StatusFull, &m.Entry)
			return
		}
		m.Entry.SetValue(v)
		if l > 1 {
			if _, ok := n.heads[*k]; !ok && len(n.heads) < n.cfg.Outstanding {
				n.heads[*k] = headPending{origin: m.Origin, reqID: m.ReqID}
				n.headQ = append(n.headQ, headTimer{at: n.cfg.Now().Add(2 * n.cfg.QueryTimeout), key: *k})
			}
		}
	default:
		want := m.Entry.Value()
		v, res := n.table.Insert(k, want)
		if res == Full {
			n.st.TableFull++
			n.answer(m.Origin, m.ReqID, StatusFull, &m.Entry)
			return
		}
		if res == Existing && (v.Backend != want.Backend || v.Service != want.Service) {
			// The upstream copy diverged (it missed this entry): the
			// older value, which this node holds and may have answered
			// as tail, wins; repair the chain from the head down.
			n.st.Conflicts++
			head, _ := n.chains.Head(s)
			rep := Msg{Type: MsgInsert, Aux: FlagRepair, Entry: MakeEntry(*k, v)}
			n.send(head, &rep)
		}
		m.Entry.SetValue(v)
		n.st.Stored++
	}
	if pos == l-1 {
		n.st.Committed++
		if m.Aux&FlagRepair == 0 {
			n.answer(m.Origin, m.ReqID, StatusOK, &m.Entry)
			if pos > 0 {
				head, _ := n.chains.Head(s)
				ack := Msg{Type: MsgAck, Entry: m.Entry}
				n.send(head, &ack)
			}
		}
		return
	}
	next := n.chains.Member(n.chains.Chain(s)[pos+1])
	n.send(next, m)
}

func (n *Node) onDelete(m *Msg) {
	s := n.shard(&m.Entry.Key)
	pos, l := n.position(s)
	if pos < 0 || (pos == 0 && !n.synced[s]) {
		return
	}
	if n.table.Delete(&m.Entry.Key) {
		n.st.Deletes++
	}
	delete(n.heads, m.Entry.Key)
	if pos < l-1 {
		n.send(n.chains.Member(n.chains.Chain(s)[pos+1]), m)
	}
}

// ---- this node's requests ----

func (n *Node) request(r Request) {
	n.st.Requests++
	if r.Value.Expire == 0 {
		r.Value.Expire = uint32(n.cfg.Now().Add(n.cfg.TTL).Unix())
	}
	switch r.Op {
	case OpLookup:
		v, ok := n.table.Get(&r.Key)
		st := StatusOK
		if !ok {
			st = StatusRetry
		}
		n.deliver(r, Answer{Key: r.Key, Value: v, Tag: r.Tag, Status: st})
		return
	case OpDropService:
		svc := r.Value.Service
		n.st.Deletes += uint64(n.table.DeleteFunc(func(e *Entry) bool { return e.Service == svc }))
		return
	case OpDelete:
		s := n.shard(&r.Key)
		if head, ok := n.chains.Head(s); ok {
			m := Msg{Type: MsgDelete, Entry: MakeEntry(r.Key, r.Value)}
			n.send(head, &m)
		}
		return
	}
	if n.chains.Len() == 0 && n.st.Views > 0 {
		// An empty view (before the first one, requests wait for it).
		n.deliver(r, Answer{Key: r.Key, Value: r.Value, Tag: r.Tag, Status: StatusNoMember})
		return
	}
	if len(n.pending) >= n.cfg.Outstanding {
		n.st.Rejected++
		n.deliver(r, Answer{Key: r.Key, Value: r.Value, Tag: r.Tag, Status: StatusRetry})
		return
	}
	n.nextReq++
	for n.pending[n.nextReq] != nil || n.nextReq == 0 {
		n.nextReq++
	}
	o := &outstanding{req: r, shard: n.shard(&r.Key)}
	n.pending[n.nextReq] = o
	n.attempt(n.nextReq, o)
}

func (n *Node) deliver(r Request, a Answer) {
	if r.Reply == nil {
		return
	}
	select {
	case r.Reply <- a:
		n.st.Answered++
	default:
		n.st.AnswersDropped++
	}
}

func (n *Node) attempt(id uint32, o *outstanding) {
	o.attempts++
	o.gen++
	n.timers = append(n.timers, timer{at: n.cfg.Now().Add(n.cfg.QueryTimeout), id: id, gen: o.gen})
	e := MakeEntry(o.req.Key, o.req.Value)
	if o.req.Op == OpPublish {
		head, ok := n.chains.Head(o.shard)
		if !ok {
			return
		}
		m := Msg{Type: MsgInsert, ReqID: id, Entry: e, Origin: n.self}
		n.send(head, &m)
		return
	}
	l := n.chains.Len()
	if l == 0 {
		return
	}
	// The first attempt goes to the tail; after a timeout, attempts walk up
	// the chain and may be answered by any member holding the entry.
	m := Msg{Type: MsgQuery, ReqID: id, Entry: e}
	pos := l - 1
	if o.misses > 0 {
		pos = l - 1 - o.misses%l
		m.Aux = FlagAnyReplica
	}
	n.send(n.chains.Member(n.chains.Chain(o.shard)[pos]), &m)
}

func (n *Node) onAnswer(m *Msg) {
	o := n.pending[m.ReqID]
	if o == nil || o.req.Key != m.Entry.Key {
		return
	}
	if m.Status == StatusRetry {
		n.st.RetryAnswers++
		o.gen++ // cancels the attempt's deadline
		if o.attempts >= n.cfg.Attempts {
			n.finish(m.ReqID, o, StatusTimeout, o.req.Value)
			return
		}
		// Back off (the view may be changing, the tail syncing) and ask
		// the next member up the chain, which may hold the entry.
		o.misses++
		d := min(n.cfg.RetryDelay<<min(o.misses-1, 8), n.cfg.QueryTimeout)
		n.retries = append(n.retries, timer{at: n.cfg.Now().Add(d), id: m.ReqID, gen: o.gen})
		return
	}
	n.finish(m.ReqID, o, m.Status, m.Entry.Value())
}

func (n *Node) finish(id uint32, o *outstanding, st Status, v Value) {
	delete(n.pending, id)
	if st == StatusTimeout {
		n.st.Timeouts++
	}
	n.deliver(o.req, Answer{Key: o.req.Key, Value: v, Tag: o.req.Tag, Status: st})
}

// ---- timers ----

func (n *Node) tick(now time.Time) {
	n.lastTick = now
	// Request deadlines, in order.
	i := 0
	for ; i < len(n.timers) && !n.timers[i].at.After(now); i++ {
		t := n.timers[i]
		o := n.pending[t.id]
		if o == nil || o.gen != t.gen {
			continue
		}
		if o.attempts >= n.cfg.Attempts {
			n.finish(t.id, o, StatusTimeout, o.req.Value)
			continue
		}
		o.misses++
		n.attempt(t.id, o)
	}
	n.timers = compact(n.timers, i)
	// Retries have growing delays: not in deadline order, so keep the
	// ones not due yet.
	keep := n.retries[:0]
	var due []timer
	for _, t := range n.retries {
		if t.at.After(now) {
			keep = append(keep, t)
		} else {
			due = append(due, t)
		}
	}
	n.retries = keep
	for _, t := range due {
		if o := n.pending[t.id]; o != nil && o.gen == t.gen {
			n.attempt(t.id, o)
		}
	}
	// Head retransmissions of inserts not acknowledged by the tail.
	i = 0
	for ; i < len(n.headQ) && !n.headQ[i].at.After(now); i++ {
		k := n.headQ[i].key
		hp, ok := n.heads[k]
		if !ok {
			continue
		}
		s := n.shard(&k)
		pos, l := n.position(s)
		v, have := n.table.Get(&k)
		if pos != 0 || l < 2 || !have || hp.attempts >= 4 {
			delete(n.heads, k)
			continue
		}
		hp.attempts++
		n.heads[k] = hp
		n.st.Retransmits++
		m := Msg{Type: MsgInsert, ReqID: hp.reqID, Entry: MakeEntry(k, v), Origin: hp.origin}
		n.send(n.chains.Member(n.chains.Chain(s)[1]), &m)
		n.headQ = append(n.headQ, headTimer{at: now.Add(2 * n.cfg.QueryTimeout), key: k})
	}
	n.headQ = compact(n.headQ, i)
	n.syncTick(now)
	n.purgeLeft(now)
	n.publishStats()
	// Expiry: a slice of the table per tick.
	var d int
	n.reapAt, d = n.table.Reap(uint32(now.Unix()), n.reapAt, 2048)
	n.st.Reaped += uint64(d)
}

func compact[T any](q []T, done int) []T {
	if done == 0 {
		return q
	}
	k := copy(q, q[done:])
	return q[:k]
}

// purgeLeft deletes, at most once a second, the entries of shards whose
// chain this node left more than KeepLeft ago (one scan for all of them).
func (n *Node) purgeLeft(now time.Time) {
	if now.Before(n.purgeAt) {
		return
	}
	n.purgeAt = now.Add(time.Second)
	var drop []bool
	for s, t := range n.left {
		if !t.IsZero() && now.Sub(t) > n.cfg.KeepLeft {
			if drop == nil {
				drop = make([]bool, n.cfg.Shards)
			}
			drop[s] = true
			n.left[s] = time.Time{}
			n.synced[s] = false // no longer a complete copy to sync from
		}
	}
	if drop != nil {
		shards := n.cfg.Shards
		n.st.Purged += uint64(n.table.DeleteFunc(func(e *Entry) bool {
			return drop[shardOfHash(n.table.hash(&e.Key), shards)]
		}))
	}
}

// ---- membership and sync ----

func (n *Node) applyView(members []netip.AddrPort) {
	n.st.Views++
	newc := NewChains(n.cfg.Seed, n.cfg.Shards, n.cfg.Replicas, members)
	selfIdx := newc.Index(n.self)
	old, oldIdx := n.chains, n.selfIdx
	if oldIdx < 0 {
		// Joining: the shards' data is where it was without this node.
		others := make([]netip.AddrPort, 0, len(members))
		for _, m := range members {
			if m != n.self {
				others = append(others, m)
			}
		}
		old = NewChains(n.cfg.Seed, n.cfg.Shards, n.cfg.Replicas, others)
		oldIdx = -1
	}
	alive := func(a netip.AddrPort) bool { return a != n.self && newc.Index(a) >= 0 }
	var gained []bool
	for s := 0; s < n.cfg.Shards; s++ {
		inNew := selfIdx >= 0 && newc.Position(s, selfIdx) >= 0
		inOld := oldIdx >= 0 && old.Position(s, oldIdx) >= 0
		switch {
		case inOld && !inNew:
			n.left[s] = n.cfg.Now() // kept a while: a joining member may pull it from here
		case inNew:
			n.left[s] = time.Time{}
		}
		if inNew && !inOld {
			if gained == nil {
				gained = make([]bool, n.cfg.Shards)
			}
			gained[s] = true
			n.synced[s] = false
			ss := &shardSync{}
			if n.cfg.SyncSettle > 0 {
				ss.wait = n.cfg.Now().Add(n.cfg.SyncSettle)
			}
			if prev := n.syncing[s]; prev == nil || prev.catchup {
				n.syncFirst++
			}
			if prev := n.syncing[s]; prev != nil && prev.inflight {
				n.syncBusy--
			}
			for _, a := range old.ChainAddrs(nil, s) {
				if alive(a) {
					ss.sources = append(ss.sources, a)
				}
			}
			if old := n.syncing[s]; old != nil {
				ss.reqID = old.reqID
			}
			n.syncing[s] = ss
		} else if ss := n.syncing[s]; ss != nil && !inNew {
			// Left the chain while syncing it: stop.
			if ss.inflight {
				n.syncBusy--
			}
			if !ss.catchup {
				n.syncFirst--
			}
			delete(n.syncing, s)
		} else if ss != nil {
			// Still syncing: keep live sources; current members may help.
			var srcs []netip.AddrPort
			for _, a := range ss.sources {
				if alive(a) {
					srcs = append(srcs, a)
				}
			}
			for _, a := range newc.ChainAddrs(nil, s) {
				if alive(a) && !containsAddr(srcs, a) {
					srcs = append(srcs, a)
				}
			}
			if ss.src >= len(srcs) || (ss.src < len(ss.sources) && len(srcs) > ss.src && srcs[ss.src] != ss.sources[ss.src]) {
				ss.src, ss.cursor, ss.tries = 0, 0, 0
			}
			ss.sources = srcs
		}
	}
	if gained != nil {
		shards := n.cfg.Shards
		n.table.DeleteFunc(func(e *Entry) bool {
			return gained[shardOfHash(n.table.hash(&e.Key), shards)]
		})
	}
	for s, ss := range n.syncing {
		if len(ss.sources) == 0 {
			n.syncDone(s, true)
		} else if !ss.queued && !ss.inflight && ss.wait.IsZero() {
			ss.queued = true
			n.syncQ = append(n.syncQ, s)
		}
	}
	for a := range n.replay {
		if newc.Index(a) < 0 {
			delete(n.replay, a)
		}
	}
	n.flush()
	for a := range n.out {
		if newc.Index(a) < 0 {
			delete(n.out, a)
		}
	}
	n.chains, n.selfIdx = newc, selfIdx
	n.view.Store(newc)
	n.st.Members = uint64(len(newc.Members()))
	n.syncTick(n.cfg.Now())
	n.publishStats()
}

func containsAddr(v []netip.AddrPort, a netip.AddrPort) bool {
	for _, x := range v {
		if x == a {
			return true
		}
	}
	return false
}

func (n *Node) syncDone(s int, noSource bool) {
	ss := n.syncing[s]
	if ss != nil && ss.inflight {
		n.syncBusy--
		ss.inflight = false
	}
	if ss != nil && !ss.catchup && !noSource && n.cfg.SyncSettle > 0 {
		// Serve now; pull the shard once more after the views settle,
		// for entries committed by members that had not yet seen this
		// node in the chain after the first pass read past them.
		n.synced[s] = true
		n.st.SyncShards++
		n.syncFirst--
		ss.catchup = true
		ss.src, ss.cursor, ss.tries, ss.rounds = 0, 0, 0, 0
		ss.wait = n.cfg.Now().Add(n.cfg.SyncSettle)
		return
	}
	delete(n.syncing, s)
	if ss != nil && ss.catchup {
		n.st.SyncCatchups++
		return
	}
	if ss != nil {
		n.syncFirst--
	}
	n.synced[s] = true
	n.st.SyncShards++
	if noSource {
		n.st.SyncNoSource++
	}
}

// syncTick starts sync requests up to the window and retries lost ones.
func (n *Node) syncTick(now time.Time) {
	for s, ss := range n.syncing {
		if ss.inflight && now.After(ss.deadline) {
			ss.inflight = false
			n.syncBusy--
			ss.tries++
			if ss.tries >= 3 {
				ss.src, ss.cursor, ss.tries = ss.src+1, 0, 0
			}
			if ss.src >= len(ss.sources) {
				n.syncDone(s, true)
				continue
			}
			if !ss.queued {
				ss.queued = true
				n.syncQ = append(n.syncQ, s)
			}
		}
		if !ss.inflight && !ss.queued && !ss.wait.IsZero() && now.After(ss.wait) {
			ss.wait = time.Time{}
			ss.queued = true
			n.syncQ = append(n.syncQ, s)
		}
	}
	n.syncStart(now)
}

// syncStart sends queued sync requests up to the window.
func (n *Node) syncStart(now time.Time) {
	batch := float64(n.cfg.SyncBatch)
	if el := now.Sub(n.syncLast).Seconds(); el > 0 {
		n.syncTok = min(n.syncTok+el*float64(n.cfg.SyncRate), batch*float64(n.cfg.SyncWindow))
		n.syncLast = now
	}
	for n.syncBusy < n.cfg.SyncWindow && len(n.syncQ) > 0 && n.syncTok >= batch {
		s := n.syncQ[0]
		n.syncQ = n.syncQ[1:]
		ss := n.syncing[s]
		if ss == nil || ss.inflight || !ss.queued {
			continue // done, or replaced since it was queued
		}
		ss.queued = false
		if ss.src >= len(ss.sources) {
			n.syncDone(s, true)
			continue
		}
		n.syncTok -= batch
		ss.reqID++
		ss.inflight = true
		ss.deadline = now.Add(4 * n.cfg.QueryTimeout)
		n.syncBusy++
		n.st.SyncReqs++
		m := Msg{Type: MsgSyncReq, Aux: uint16(s), ReqID: ss.reqID, Cursor: ss.cursor, Count: uint16(n.cfg.SyncBatch)}
		n.send(ss.sources[ss.src], &m)
	}
}

func (n *Node) onSyncReq(from netip.AddrPort, m *Msg) {
	s := int(m.Aux)
	if s >= n.cfg.Shards {
		return
	}
	done := Msg{Type: MsgSyncDone, Aux: m.Aux, ReqID: m.ReqID}
	if !n.synced[s] {
		done.Status = StatusRetry
		n.send(from, &done)
		return
	}
	batch := min(int(m.Count), n.cfg.SyncBatch)
	var next int
	n.scratch, next = n.table.ScanShard(n.scratch[:0], s, n.cfg.Shards, int(m.Cursor), batch)
	for i := range n.scratch {
		e := Msg{Type: MsgSyncEntry, Aux: m.Aux, ReqID: m.ReqID, Entry: n.scratch[i]}
		n.send(from, &e)
	}
	n.st.SyncEntriesOut += uint64(len(n.scratch))
	done.Count = uint16(len(n.scratch))
	done.Cursor = SyncDoneCursor
	if next >= 0 {
		done.Cursor = uint32(next)
	}
	n.send(from, &done)
}

func (n *Node) onSyncEntry(from netip.AddrPort, m *Msg) {
	ss := n.syncing[int(m.Aux)]
	if ss == nil || !ss.inflight || ss.reqID != m.ReqID || ss.sources[ss.src] != from {
		return
	}
	n.st.SyncEntriesIn++
	v, res := n.table.Insert(&m.Entry.Key, m.Entry.Value())
	if res == Full {
		n.st.TableFull++
	} else if res == Existing && v.Backend != m.Entry.Backend {
		n.st.Conflicts++
	}
}

func (n *Node) onSyncDone(from netip.AddrPort, m *Msg) {
	s := int(m.Aux)
	ss := n.syncing[s]
	if ss == nil || !ss.inflight || ss.reqID != m.ReqID || ss.sources[ss.src] != from {
		return
	}
	ss.inflight = false
	n.syncBusy--
	switch {
	case m.Status != StatusOK:
		ss.src, ss.cursor, ss.tries = ss.src+1, 0, 0
		if ss.src >= len(ss.sources) {
			// Every source is itself syncing (two members that joined
			// together may wait on each other): start over later, a
			// bounded number of times.
			ss.src = 0
			if ss.rounds++; ss.rounds >= 3 {
				n.syncDone(s, true)
				return
			}
			ss.wait = n.cfg.Now().Add(5 * n.cfg.Tick)
			return
		}
	case m.Cursor == SyncDoneCursor:
		n.syncDone(s, false)
		return
	default:
		ss.cursor, ss.tries = m.Cursor, 0
	}
	ss.queued = true
	n.syncQ = append(n.syncQ, s)
}
