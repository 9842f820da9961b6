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
	Sample   float64       // fraction of flows re-queried after each event: 0.1
	Window   int           // requests in flight: 4096
	Detect   time.Duration // failure detection delay: the node is dead this long before the membership says so: 0
	Seed     uint64
	Log      func(format string, args ...any) // progress; nil: silent
}

// Result is what a run found.
type Result struct {
	Config
	Phases   []Phase
	Changed  int // answers naming another backend than the flow's committed one (must be 0)
	Fallback int // requests with no committed answer (timeout, full): the LB decides locally
	Lost     int // flows with no surviving copy on any live node at the end
	Queries  int
	Dropped  uint64 // datagrams the in-memory network dropped (full queue, dead node)
	Elapsed  time.Duration
	HeapMB   float64
	Stats    cluster.Stats // summed over the live nodes at the end
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
}

func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nodes %d  replicas %d  shards %d  flows %d  sample %.2f  detect %v\n", r.Nodes, r.Replicas, r.Shards, r.Flows, r.Sample, r.Detect)
	for _, p := range r.Phases {
		fmt.Fprintf(&b, "  %-12s converged after %-10v queries %-8d changed %-6d fallback %-6d %v\n", p.Event, p.Converge.Round(time.Millisecond), p.Queries, p.Changed, p.Fallback, p.Took.Round(time.Millisecond))
	}
	if p := r.Phases[0]; p.Retried > 0 {
		fmt.Fprintf(&b, "insert: %d re-published after a fallback, %d never committed\n", p.Retried, p.Uncommitted)
	}
	fmt.Fprintf(&b, "queries %d  changed backend mid-connection %d  fallbacks %d  entries lost %d  datagrams dropped %d  in %v  heap %.0f MB\n",
		r.Queries, r.Changed, r.Fallback, r.Lost, r.Dropped, r.Elapsed.Round(time.Millisecond), r.HeapMB)
	s := &r.Stats
	fmt.Fprintf(&b, "cluster: entries %d  inserts %d  stored %d  sync shards %d (no source %d)  sync entries %d  conflicts %d  repairs %d  retransmits %d  timeouts %d\n",
		s.Entries, s.Inserts, s.Stored, s.SyncShards, s.SyncNoSource, s.SyncEntriesIn, s.Conflicts, s.Repairs, s.Retransmits, s.Timeouts)
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
	if cfg.Flows > 1<<24 {
		return nil, fmt.Errorf("flows: at most %d", 1<<24)
	}
	if cfg.Schedule == "" {
		cfg.Schedule = defaultSchedule
	}
	if cfg.Sample <= 0 {
		cfg.Sample = 0.1
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
		committed: make([]uint32, cfg.Flows),
		rng:       rand.New(rand.NewPCG(cfg.Seed, 1)),
		gen:       1,
	}
	s.authKey, _ = cluster.Keys([]byte("sluice sim"))
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
		p := s.query(s.sample(), false)
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
	present := make([]bool, cfg.Flows)
	for _, n := range s.nodes {
		if n == nil {
			continue
		}
		n.Inspect(func(t *cluster.Table) {
			t.All(func(e *cluster.Entry) {
				if i, ok := flowIndex(&e.Key); ok && i < cfg.Flows && (e.Backend == s.committed[i] || s.committed[i] == 0) {
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
	t0 = time.Now()
	p = s.query(all, false)
	p.Event, p.Took = "final", time.Since(t0)
	res.Phases = append(res.Phases, p)
	for _, p := range res.Phases[1:] {
		res.Changed += p.Changed
		res.Fallback += p.Fallback
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
	capacity := s.cfg.Flows * s.cfg.Replicas / s.cfg.Nodes * 2
	nd, err := cluster.New(cluster.Config{
		Transport: tr, Membership: s.members.Join(a), AuthKey: s.authKey,
		Seed: s.cfg.Seed, Shards: s.cfg.Shards, Replicas: s.cfg.Replicas,
		Capacity: max(capacity, 1024), QueryTimeout: 50 * time.Millisecond, Attempts: 10,
		Outstanding: s.cfg.Window * 2, Queue: s.cfg.Window * 2, TTL: time.Hour,
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
		v[i] = s.rng.IntN(s.cfg.Flows)
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
		if a.Status != cluster.StatusOK {
			p.Fallback++
			if first {
				s.uncommitted = append(s.uncommitted, i)
			}
			return
		}
		if s.committed[i] == 0 && !first {
			return // never committed
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
