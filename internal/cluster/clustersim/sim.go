// Package clustersim runs the cluster's own code (internal/cluster) at scale
// over the in-memory transport and membership: many nodes, many flows, a
// schedule of node kills, restarts and backend changes. It checks the
// cluster's promise to established connections: a flow's committed backend
// never changes while the flow lives, and no entry is lost while a copy of it
// survives.
package clustersim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/sluicelb/sluice/internal/cluster"
	"github.com/sluicelb/sluice/internal/flow"
)

// Config is a simulation. Zero fields take the defaults shown.
type Config struct {
	Nodes    int // 64
	Replicas int // 3
	Shards   int // 4096
	Flows    int // 1_000_000 (at most 1<<24)
	// Schedule is a comma-separated list of events, applied in order. Right
	// after each event (before the failure is detected, while a restarted
	// node syncs) a sample of flows is queried from random live nodes (ECMP
	// moved them), proposing a backend other than the committed one; then
	// the cluster converges:
	//   kill:N       node N fails (N in 1..Nodes)
	//   restart:N    node N comes back empty, rejoins and syncs
	//   backends     the backend set changes: every proposal differs
	// Default: "kill:1,backends,restart:1,kill:2,kill:3,backends,restart:2,restart:3,kill:4".
	Schedule string
	Sample   float64 // fraction of flows re-queried after each event: 0.1
	// New is the fraction of Flows that start during each event: each new
	// flow is queried at once from two random nodes proposing different
	// backends, and both must learn the same one: 0.01.
	New float64
	// ViewJitter delays each node's view of a membership change by up to
	// this much, so nodes disagree about the chains for a while: 0.
	ViewJitter time.Duration
	// SyncSettle is the nodes' cluster.Config.SyncSettle (0: its default;
	// negative: no settle delay and no second pass).
	SyncSettle time.Duration
	Window     int           // requests in flight: 4096
	Detect     time.Duration // failure detection delay: the node is dead this long before the membership says so: 0
	Seed       uint64
	Log        func(format string, args ...any) // progress; nil: silent
}

// Result is what a run found.
type Result struct {
	Config
	Phases      []Phase
	Changed     int // answers naming another backend than the flow's committed one (must be 0)
	Disagree    int // new flows whose two concurrent askers learnt different backends (must be 0)
	Fallback    int // established flows' requests with no committed answer (timeout, full): the LB decides locally
	NewFallback int // new flows' requests with no committed answer
	Lost        int // flows with no surviving copy on any live node at the end
	Queries     int
	Dropped     uint64 // datagrams the in-memory network dropped (full queue, dead node)
	Elapsed     time.Duration
	HeapMB      float64
	Stats       cluster.Stats // summed over the live nodes at the end
}

// Phase is one event of the schedule and what its re-query found.
type Phase struct {
	Event    string
	Converge time.Duration
	Queries  int
	Changed  int
	Fallback int
	Took     time.Duration
	// Insert phase only: flows re-published after a fallback, and flows
	// never committed.
	Retried, Uncommitted int
	// New flows started during the event, and pairs of concurrent
	// proposals for one new flow that learnt different backends (must be 0).
	New, Disagree int
	// NewFallback counts new flows' requests with no committed answer
	// (a chain member syncing): the LB decides them locally.
	NewFallback int
}

func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nodes %d  replicas %d  shards %d  flows %d  sample %.2f  new %.3f  detect %v  view jitter %v\n", r.Nodes, r.Replicas, r.Shards, r.Flows, r.Sample, r.New, r.Detect, r.ViewJitter)
	for _, p := range r.Phases {
		fmt.Fprintf(&b, "  %-10s converged after %-8v queries %-8d changed %-4d fallback %-5d new %-6d (fallback %-4d disagree %-2d) %v\n", p.Event, p.Converge.Round(time.Millisecond), p.Queries, p.Changed, p.Fallback, p.New, p.NewFallback, p.Disagree, p.Took.Round(time.Millisecond))
	}
	if p := r.Phases[0]; p.Retried > 0 {
		fmt.Fprintf(&b, "insert: %d re-published after a fallback, %d never committed\n", p.Retried, p.Uncommitted)
	}
	fmt.Fprintf(&b, "queries %d  changed backend mid-connection %d  established fallbacks %d  entries lost %d  new flows: disagreeing %d, fallbacks %d  datagrams dropped %d  in %v  heap %.0f MB\n",
		r.Queries, r.Changed, r.Fallback, r.Lost, r.Disagree, r.NewFallback, r.Dropped, r.Elapsed.Round(time.Millisecond), r.HeapMB)
	s := &r.Stats
	fmt.Fprintf(&b, "cluster (live nodes): entries %d  inserts %d  stored %d  sync shards %d (no source %d, second pass %d)  sync entries %d  conflicts %d  repairs %d  retransmits %d  misrouted %d  timeouts %d  table full %d\n",
		s.Entries, s.Inserts, s.Stored, s.SyncShards, s.SyncNoSource, s.SyncCatchups, s.SyncEntriesIn, s.Conflicts, s.Repairs, s.Retransmits, s.Misrouted, s.Timeouts, s.TableFull)
	return b.String()
}

const defaultSchedule = "kill:1,backends,restart:1,kill:2,kill:3,backends,restart:2,restart:3,kill:4"

type sim struct {
	cfg         Config
	net         *cluster.MemNetwork
	members     *cluster.MemMembership
	nodes       []*simNode // index = node number - 1; nil when dead
	committed   []uint32
	rng         *rand.Rand
	gen         uint32 // backend generation: proposals are gen<<24 | something
	authKey     [32]byte
	dying       sync.WaitGroup // killed nodes until the membership drops them
	uncommitted []int          // insert phase: flows whose insert fell back
	flows       int            // flows started so far: 0..flows-1
}

type simNode struct {
	*cluster.Node
	tr     *cluster.MemTransport
	cancel context.CancelFunc
	done   chan struct{}
}

// Run runs one simulation.
func Run(cfg Config) (*Result, error) {
	if cfg.Nodes <= 0 {
		cfg.Nodes = 64
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 3
	}
	if cfg.Shards <= 0 {
		cfg.Shards = cluster.DefaultShards
	}
	if cfg.Flows <= 0 {
		cfg.Flows = 1_000_000
	}
	if cfg.Flows*2 > 1<<24 {
		return nil, fmt.Errorf("flows: at most %d", 1<<23)
	}
	if cfg.Schedule == "" {
		cfg.Schedule = defaultSchedule
	}
	if cfg.Sample <= 0 {
		cfg.Sample = 0.1
	}
	if cfg.New <= 0 {
		cfg.New = 0.01
	}
	if cfg.Window <= 0 {
		cfg.Window = 4096
	}
	if cfg.Log == nil {
		cfg.Log = func(string, ...any) {}
	}
	s := &sim{
		cfg:       cfg,
		net:       cluster.NewMemNetwork(16384),
		members:   cluster.NewMemMembership(),
		nodes:     make([]*simNode, cfg.Nodes),
		committed: make([]uint32, cfg.Flows+int(float64(cfg.Flows)*cfg.New)*(strings.Count(cfg.Schedule, ",")+1)),
		flows:     cfg.Flows,
		rng:       rand.New(rand.NewPCG(cfg.Seed, 1)),
		gen:       1,
	}
	s.authKey, _ = cluster.Keys([]byte("sluice sim"))
	s.members.Jitter = cfg.ViewJitter
	defer s.stopAll()
	start := time.Now()
	res := &Result{Config: cfg}
	for i := range s.nodes {
		if err := s.start(i); err != nil {
			return nil, err
		}
	}
	conv, err := s.converge()
	if err != nil {
		return nil, err
	}
	cfg.Log("%d nodes up and synced in %v", cfg.Nodes, conv)
	// Every flow is inserted once, from a random node, with its first
	// backend.
	all := make([]int, cfg.Flows)
	for i := range all {
		all[i] = i
	}
	t0 := time.Now()
	s.uncommitted = nil
	p := s.query(all, true)
	// A flow whose insert fell back was decided locally; the simulated LB
	// publishes it again until the chain has it (at most 5 rounds).
	for round := 0; round < 5 && len(s.uncommitted) > 0; round++ {
		again := s.uncommitted
		s.uncommitted = nil
		q := s.query(again, true)
		p.Queries += q.Queries
		p.Retried += q.Queries
	}
	p.Uncommitted = len(s.uncommitted)
	for _, i := range s.uncommitted {
		s.committed[i] = 0 // never committed: not counted as changed or lost
	}
	p.Event, p.Converge, p.Took = "insert", conv, time.Since(t0)
	res.Phases = append(res.Phases, p)
	cfg.Log("inserted %d flows in %v (%.0f/s)", cfg.Flows, p.Took, float64(cfg.Flows)/p.Took.Seconds())
	for _, ev := range strings.Split(cfg.Schedule, ",") {
		ev = strings.TrimSpace(ev)
		if ev == "" {
			continue
		}
		if err := s.apply(ev); err != nil {
			return nil, err
		}
		// The re-query runs at once: while a killed node is not yet
		// detected (Detect) and while a restarted one syncs.
		t0 := time.Now()
		sample := s.sample()
		fresh := int(float64(cfg.Flows) * cfg.New)
		newIdx := make([]int, fresh)
		for j := range newIdx {
			newIdx[j] = s.flows + j
		}
		s.flows += fresh
		np := make(chan Phase, 1)
		go func() { np <- s.pairs(newIdx) }()
		p := s.query(sample, false)
		q := <-np
		p.New, p.Disagree, p.NewFallback, p.Queries = fresh, q.Disagree, q.Fallback, p.Queries+q.Queries
		p.Took = time.Since(t0)
		s.dying.Wait()
		conv, err := s.converge()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ev, err)
		}
		p.Event, p.Converge = ev, conv
		res.Phases = append(res.Phases, p)
		cfg.Log("%s: converged in %v, %d queries, %d changed, %d fallback", ev, conv, p.Queries, p.Changed, p.Fallback)
	}
	// Lost entries: flows with no copy of their committed value on a live
	// node, counted before the final query (which would re-insert them).
	present := make([]bool, s.flows)
	for _, n := range s.nodes {
		if n == nil {
			continue
		}
		n.Inspect(func(t *cluster.Table) {
			t.All(func(e *cluster.Entry) {
				if i, ok := flowIndex(&e.Key); ok && i < s.flows && (e.Backend == s.committed[i] || s.committed[i] == 0) {
					present[i] = true
				}
			})
		})
	}
	for i, ok := range present {
		if !ok && s.committed[i] != 0 {
			res.Lost++
		}
	}
	all = all[:0]
	for i := 0; i < s.flows; i++ {
		all = append(all, i)
	}
	t0 = time.Now()
	p = s.query(all, false)
	p.Event, p.Took = "final", time.Since(t0)
	res.Phases = append(res.Phases, p)
	for _, p := range res.Phases[1:] {
		res.Changed += p.Changed
		res.Fallback += p.Fallback
		res.Disagree += p.Disagree
		res.NewFallback += p.NewFallback
	}
	for _, p := range res.Phases {
		res.Queries += p.Queries
	}
	res.Fallback += res.Phases[0].Fallback
	for _, n := range s.nodes {
		if n != nil {
			addStats(&res.Stats, n.Stats())
		}
	}
	res.Dropped = s.net.Dropped.Load()
	res.Elapsed = time.Since(start)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapMB = float64(ms.HeapAlloc) / (1 << 20)
	return res, nil
}

func addStats(a *cluster.Stats, b cluster.Stats) {
	a.Entries += b.Entries
	a.Inserts += b.Inserts
	a.Stored += b.Stored
	a.SyncShards += b.SyncShards
	a.SyncNoSource += b.SyncNoSource
	a.SyncEntriesIn += b.SyncEntriesIn
	a.Conflicts += b.Conflicts
	a.Repairs += b.Repairs
	a.Retransmits += b.Retransmits
	a.Timeouts += b.Timeouts
	a.TableFull += b.TableFull
	a.SyncCatchups += b.SyncCatchups
	a.Misrouted += b.Misrouted
}

func nodeAddr(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 255, byte(i >> 8), byte(i)}), 7946)
}

// flowKey encodes flow i in the client address (198.18.0.0/15 is too
// small: 10.0.0.0/8 holds 24 bits).
func flowKey(i int) flow.Key {
	return flow.MakeKey(6,
		netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%50000)),
		netip.MustParseAddrPort("198.18.0.10:443"))
}

func flowIndex(k *flow.Key) (int, bool) {
	if k.Src[12] != 10 {
		return 0, false
	}
	return int(k.Src[13])<<16 | int(k.Src[14])<<8 | int(k.Src[15]), true
}

func (s *sim) start(i int) error {
	a := nodeAddr(i + 1)
	tr, err := s.net.Listen(a)
	if err != nil {
		return err
	}
	// Room for every flow ever started, on the fewest nodes the schedule
	// leaves, plus the shards a node left and keeps for KeepLeft.
	capacity := len(s.committed) * s.cfg.Replicas / s.cfg.Nodes * 3
	nd, err := cluster.New(cluster.Config{
		Transport: tr, Membership: s.members.Join(a), AuthKey: s.authKey,
		Seed: s.cfg.Seed, Shards: s.cfg.Shards, Replicas: s.cfg.Replicas,
		Capacity: max(capacity, 1024), QueryTimeout: 50 * time.Millisecond, Attempts: 10,
		Outstanding: s.cfg.Window * 2, Queue: s.cfg.Window * 2, TTL: time.Hour, SyncSettle: s.cfg.SyncSettle,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &simNode{Node: nd, tr: tr, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(n.done); _ = nd.Run(ctx) }()
	s.nodes[i] = n
	return nil
}

func (s *sim) kill(i int) {
	n := s.nodes[i]
	if n == nil {
		return
	}
	s.nodes[i] = nil
	n.tr.Close() // dead: nothing in or out
	s.dying.Add(1)
	go func() {
		defer s.dying.Done()
		time.Sleep(s.cfg.Detect) // until the failure detector notices
		s.members.Kill(n.Addr())
		n.cancel()
		<-n.done
	}()
}

func (s *sim) stopAll() {
	s.cfg.Detect = 0
	for i := range s.nodes {
		s.kill(i)
	}
	s.dying.Wait()
}

func (s *sim) apply(ev string) error {
	name, arg, _ := strings.Cut(ev, ":")
	var n int
	if arg != "" {
		if _, err := fmt.Sscan(arg, &n); err != nil || n < 1 || n > s.cfg.Nodes {
			return fmt.Errorf("event %q: node must be 1..%d", ev, s.cfg.Nodes)
		}
	}
	switch name {
	case "kill":
		if s.nodes[n-1] == nil {
			return fmt.Errorf("event %q: node %d is not running", ev, n)
		}
		s.kill(n - 1)
	case "restart":
		if s.nodes[n-1] != nil {
			return fmt.Errorf("event %q: node %d is running", ev, n)
		}
		return s.start(n - 1)
	case "backends":
		s.gen++
	default:
		return fmt.Errorf("event %q: not kill:N, restart:N or backends", ev)
	}
	return nil
}

// converge waits until every live node sees every live node and has synced.
func (s *sim) converge() (time.Duration, error) {
	start := time.Now()
	want := 0
	for _, n := range s.nodes {
		if n != nil {
			want++
		}
	}
	for time.Since(start) < 120*time.Second {
		ok := true
		for _, n := range s.nodes {
			if n != nil && (!n.Ready() || int(n.Stats().Members) != want) {
				ok = false
				break
			}
		}
		if ok {
			return time.Since(start), nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, fmt.Errorf("no convergence after %v", time.Since(start))
}

func (s *sim) sample() []int {
	n := int(float64(s.cfg.Flows) * s.cfg.Sample)
	v := make([]int, n)
	for i := range v {
		v[i] = s.rng.IntN(s.flows)
	}
	return v
}

func (s *sim) live() []*simNode {
	var v []*simNode
	for _, n := range s.nodes {
		if n != nil {
			v = append(v, n)
		}
	}
	return v
}

// query asks for every flow in idx from a random live node. With first,
// the answer becomes the flow's committed backend; otherwise the proposal
// always differs from the committed backend and the answer must not.
func (s *sim) query(idx []int, first bool) Phase {
	var p Phase
	live := s.live()
	reply := make(chan cluster.Answer, s.cfg.Window)
	inflight := 0
	handle := func(a cluster.Answer) {
		inflight--
		i := int(a.Tag)
		if !first && s.committed[i] == 0 {
			return // a new flow that never committed: not established
		}
		if a.Status != cluster.StatusOK {
			p.Fallback++
			if first {
				s.uncommitted = append(s.uncommitted, i)
			}
			return
		}
		if first {
			s.committed[i] = a.Value.Backend
		} else if a.Value.Backend != s.committed[i] {
			p.Changed++
		}
	}
	for _, i := range idx {
		for inflight >= s.cfg.Window {
			handle(<-reply)
		}
		proposal := s.gen<<24 | uint32(i)&0xffffff
		if !first && proposal == s.committed[i] {
			proposal ^= 1 << 31
		}
		r := cluster.Request{Op: cluster.OpQuery, Key: flowKey(i), Value: cluster.Value{Service: 1, Backend: proposal}, Tag: uint64(i), Reply: reply}
		for !live[s.rng.IntN(len(live))].Submit(r) {
			handle(<-reply) // queue full: make room
			if inflight == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		inflight++
		p.Queries++
	}
	for inflight > 0 {
		handle(<-reply)
	}
	return p
}

// pairs starts each flow in idx with two concurrent queries from two random
// live nodes proposing different backends; both must learn the same one,
// which becomes the flow's committed backend.
func (s *sim) pairs(idx []int) Phase {
	var p Phase
	live := s.live()
	rng := rand.New(rand.NewPCG(s.cfg.Seed, uint64(len(idx))+7))
	reply := make(chan cluster.Answer, s.cfg.Window)
	got := make(map[int]uint32, len(idx))
	inflight := 0
	handle := func(a cluster.Answer) {
		inflight--
		i := int(a.Tag >> 1)
		if a.Status != cluster.StatusOK {
			p.Fallback++
			return
		}
		if prev, ok := got[i]; ok {
			if prev != a.Value.Backend {
				p.Disagree++
			}
		} else {
			got[i] = a.Value.Backend
		}
	}
	for _, i := range idx {
		for side := uint64(0); side < 2; side++ {
			for inflight >= s.cfg.Window/2 {
				handle(<-reply)
			}
			r := cluster.Request{Op: cluster.OpQuery, Key: flowKey(i),
				Value: cluster.Value{Service: 1, Backend: s.gen<<24 | uint32(i)&0x7fffff | uint32(side)<<23},
				Tag:   uint64(i)<<1 | side, Reply: reply}
			for !live[rng.IntN(len(live))].Submit(r) {
				handle(<-reply)
			}
			inflight++
			p.Queries++
		}
	}
	for inflight > 0 {
		handle(<-reply)
	}
	for _, i := range idx {
		s.committed[i] = got[i] // 0 when neither asker got an answer
	}
	return p
}
