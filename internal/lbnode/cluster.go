package lbnode

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/sluicelb/sluice/internal/cluster"
	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// The node's cluster member (node.cluster). The serve goroutine owns it
// (state.cl): it is started with the node, stopped — a graceful leave, so
// the others re-form their chains at once — when the node is drained or
// shuts down, and started again when the node returns to service. Without
// node.cluster the node runs alone.
//
// The cluster's numbers for VIPs and backends are config.ServiceID (a
// hash of the VIP's name) and config.BackendID (a hash of the VIP's name
// and the backend's address): the same on every node whatever the order of
// their configurations.

// clusterJoinRetry is how often a member whose peers do not answer retries
// joining them.
const clusterJoinRetry = 500 * time.Millisecond

// ClusterSetup returns the cluster.Setup of a node configuration, or nil
// without node.cluster. The memberlist address of a member is its bind
// address with port + 1 (config.GossipAddr), for itself and its peers.
func ClusterSetup(n *config.Node, log *slog.Logger) (*cluster.Setup, error) {
	c := n.Cluster
	if c == nil {
		return nil, nil
	}
	bind, err := netip.ParseAddrPort(c.Bind)
	if err != nil {
		return nil, fmt.Errorf("node.cluster.bind: %w", err)
	}
	s := &cluster.Setup{
		Bind: bind, GossipBind: config.GossipAddr(bind), Key: []byte(c.Key), Seed: n.Seed,
		Replicas: c.Replicas, Shards: c.Shards, Capacity: c.Capacity, TTL: c.TTL, JoinRetry: clusterJoinRetry, ProbeInterval: c.ProbeInterval,
		Heartbeat: l2Heartbeat(n),
	}
	for _, p := range c.Peers {
		a, err := netip.ParseAddrPort(p)
		if err != nil {
			return nil, fmt.Errorf("node.cluster.peers: %w", err)
		}
		s.Peers = append(s.Peers, config.GossipAddr(a).String())
	}
	if log != nil {
		s.Log = logWriter{log}
	}
	return s, nil
}

// l2Heartbeat is the cluster heartbeat period in L2 mode (half the probe
// interval: a VIP's owner cut off from the others stops answering within
// 1.5 probe intervals, before they can declare it dead); none otherwise.
func l2Heartbeat(n *config.Node) time.Duration {
	if n.L2 == nil {
		return 0
	}
	p := n.Cluster.ProbeInterval
	if p <= 0 {
		p = cluster.DefaultProbeInterval
	}
	return p / 2
}

// logWriter turns memberlist's log lines into debug records.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(b []byte) (int, error) {
	w.log.Debug("cluster membership", "msg", string(bytes.TrimSpace(b)))
	return len(b), nil
}

// startCluster starts the member if the node has one and it is not
// running. It runs on serve (or in New, before serve starts); a leave still
// in progress (stopCluster) ends first, since the new member binds the same
// sockets.
func (n *Node) startCluster() error {
	if n.clSetup == nil || n.st.cl != nil {
		return nil
	}
	n.waitLeft()
	cl, err := cluster.Start(*n.clSetup)
	if err != nil {
		return fmt.Errorf("node.cluster: %w", err)
	}
	n.st.cl = cl
	n.clGossip.Store(cl.Gossip)
	n.clNode.Store(cl.Node)
	n.log.Info("cluster: started", "bind", n.clSetup.Bind, "peers", n.clSetup.Peers, "replicas", n.clSetup.Replicas, "shards", n.clSetup.Shards)
	return nil
}

// stopCluster makes the member leave the cluster gracefully and stop. It
// runs on serve, which it does not hold up: the node is out of the cluster
// at once (no questions, no publishing; status shows it not running) while
// the leave (memberlist's, bounded by its timeout) runs on its own
// goroutine. waitLeft waits for it.
func (n *Node) stopCluster() {
	cl := n.st.cl
	if cl == nil {
		return
	}
	n.clNode.Store(nil)
	n.clGossip.Store(nil)
	n.st.cl = nil
	n.clLeaving.Lock() // unlocked by the leaving goroutine
	go func() {
		defer n.clLeaving.Unlock()
		if err := cl.Stop(); err != nil {
			n.log.Warn("cluster: stop", "err", err)
		}
		n.log.Info("cluster: left")
	}()
}

// waitLeft waits until a leave started by stopCluster has ended.
func (n *Node) waitLeft() {
	n.clLeaving.Lock()
	defer n.clLeaving.Unlock()
}

// ClusterStatus returns the state of the node's cluster member; ok is
// false when the node runs alone (no node.cluster). While the node is
// drained the member has left the cluster (Running false).
func (n *Node) ClusterStatus() (st cluster.MemberStatus, ok bool) {
	if n.clSetup == nil {
		return st, false
	}
	var cl *cluster.Started
	var cfg *config.Config
	if n.do(context.Background(), func() { cl, cfg = n.st.cl, n.st.cfg }) != nil {
		cl = nil
	}
	s := n.clSetup
	st = cluster.MemberStatus{Seed: s.Seed, Shards: s.Shards, Replicas: s.Replicas, Services: map[uint16]string{}}
	if s.Shards == 0 {
		st.Shards = cluster.DefaultShards
	}
	if s.Replicas == 0 {
		st.Replicas = cluster.DefaultReplicas
	}
	st.Configured = append(st.Configured, s.Bind)
	if cfg != nil && cfg.Node.Cluster != nil {
		for _, p := range cfg.Node.Cluster.Peers {
			if a, err := netip.ParseAddrPort(p); err == nil {
				st.Configured = append(st.Configured, a)
			}
		}
	}
	if cfg != nil {
		for _, v := range cfg.VIPs {
			st.Services[config.ServiceID(v.Name)] = v.Name
		}
	}
	if cl != nil {
		st.Report, st.Running = cl.Report()
	}
	st.Published, st.PublishCommitted, st.PublishFailed, st.PublishRejected, st.PublishDropped = n.publishCounts()
	st.PublishRefreshed = n.pubRefreshed.Load()
	st.Ask = n.askCounts()
	return st, true
}

// publishQueue is each worker's publish queue (records of new flows of
// affinity-always VIPs) with node.cluster.
const publishQueue = 4096

// publishEvery is how often the publisher drains the workers' queues.
const publishEvery = time.Millisecond

// clusterSpec gives s (VIP v's service) its cluster numbers and, on a
// node with a cluster, says which of its flows use their owner chains:
// every flow of an affinity-always VIP, the flows of the slots that a
// backend change moved of an on-change VIP (pipeline.ChainUse). It runs on
// serve, as part of spec.
func (n *Node) clusterSpec(v *config.VIP, s *pipeline.ServiceSpec) {
	if n.clSetup == nil {
		return
	}
	s.ClusterID = config.ServiceID(v.Name)
	switch v.Affinity {
	case config.AffinityAlways:
		s.Chain = pipeline.ChainAlways
	case config.AffinityOnChange:
		s.Chain = pipeline.ChainChanged
	}
	for i := range s.Backends {
		s.Backends[i].ClusterID = config.BackendID(v.Name, s.Backends[i].Tunnel.Dst.String())
	}
}

// Publishing retries: a publish that the cluster could not commit (the
// chain's head still syncing while the views change, a lost datagram) is
// submitted again after a growing delay, up to publishRetries times.
// Questions (a worker holding a flow's packets) are not retried: the worker
// decides locally when the first answer is not an answer.
const (
	publishRetries    = 8
	publishRetryDelay = 50 * time.Millisecond
	publishRetryMax   = 500 * time.Millisecond
	publishPending    = 4096 // retries waiting at once; beyond: failed
)

// publisher carries the workers' records to the cluster member — new flows
// to publish (OpPublish) and flows to ask about (OpQuery) — and the
// member's answers back to the worker that asked, or that published a flow
// the chain had from another node. It retries the publishes the cluster
// could not commit. It runs on its own goroutine (publishFlows), never on
// the packet path.
type publisher struct {
	n       *Node
	reply   chan cluster.Answer
	retry   []pubRetry
	backlog []backlogRecord // on-change entries and refreshes still to submit
	drops   []uint16        // services whose chain entries are still to drop
	// The refresh walk: the next slot of each worker's flow table, and
	// when the last slice was walked.
	cursors     []int
	lastRefresh time.Time
}

// Refreshing long flows: a chain entry expires its TTL (node.cluster.ttl)
// after its last insert, so every chained flow that is still in a
// worker's table is published again (which extends its entry's expiry) at
// least every third of the TTL (refreshPeriod). The publisher walks each
// table a slice at a time, every refreshEvery, between the worker's
// batches.
const refreshEvery = time.Second

// refreshPeriod is how often every live chained flow is published again.
func (n *Node) refreshPeriod() time.Duration {
	ttl := cluster.DefaultTTL
	if n.clSetup != nil && n.clSetup.TTL > 0 {
		ttl = n.clSetup.TTL
	}
	return ttl / 3
}

// backlogPerStep bounds the on-change entries submitted per step, so that
// the workers' records and the answers keep moving.
const backlogPerStep = 2048

type pubRetry struct {
	at  time.Time
	key flow.Key
	v   cluster.Value
	tag pubTag
}

// pubTag is what the publisher needs back with an answer, packed into
// cluster.Request.Tag: the worker's index, whether the record was a
// question, the publish attempt, and the worker's proposed backend.
type pubTag struct {
	worker   uint16
	ask      bool
	refresh  bool // a long flow published again (refreshFlows)
	tries    uint8
	proposal uint32
}

func (t pubTag) pack() uint64 {
	var flags uint64
	if t.ask {
		flags |= 1
	}
	if t.refresh {
		flags |= 2
	}
	return uint64(t.proposal)<<32 | uint64(t.worker)<<16 | flags<<8 | uint64(t.tries)
}

func unpackTag(v uint64) pubTag {
	return pubTag{proposal: uint32(v >> 32), worker: uint16(v >> 16), ask: v>>8&1 == 1, refresh: v>>8&2 == 2, tries: uint8(v)}
}

func (n *Node) newPublisher() *publisher {
	return &publisher{n: n, reply: make(chan cluster.Answer, 4*publishPending)}
}

// publishFlows runs the publisher every publishEvery until ctx ends. It
// never blocks the workers: they drop and count what does not fit their
// queues.
func (n *Node) publishFlows(ctx context.Context) {
	p := n.newPublisher()
	t := time.NewTicker(publishEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.step(time.Now())
			return
		case now := <-t.C:
			p.step(now)
		case <-n.askWake:
			p.step(time.Now()) // a worker queued a question
		case a := <-p.reply:
			p.answer(&a, time.Now())
		}
	}
}

// step submits every queued record to the cluster member — a new flow as
// an OpPublish (insert at the head of the flow's chain; the first insert of
// a flow wins), a question as an OpQuery (the tail answers) — routes the
// answers, and resubmits the publish retries that are due. Records that
// find no running member or a full request queue are counted as rejected
// (a question is then answered "no answer" at once: its worker decides
// locally).
func (p *publisher) step(now time.Time) {
	n := p.n
	cl := n.clNode.Load()
	submit := func(k *flow.Key, v cluster.Value, t pubTag) bool {
		op := cluster.OpPublish
		if t.ask {
			op = cluster.OpQuery
		}
		return cl != nil && cl.Submit(cluster.Request{Op: op, Key: *k, Value: v, Tag: t.pack(), Reply: p.reply})
	}
	if now.Sub(p.lastRefresh) >= refreshEvery && len(p.backlog) < backlogPerStep*refreshBacklogSteps {
		p.lastRefresh = now
		p.refreshFlows()
	}
	if republish, drop := n.chainWork.take(); len(republish)+len(drop) > 0 {
		for _, id := range drop {
			// What is still queued of the completed change must not be
			// inserted again after the drop.
			p.backlog = slices.DeleteFunc(p.backlog, func(b backlogRecord) bool { return b.rec.Service == id })
			p.retry = slices.DeleteFunc(p.retry, func(r pubRetry) bool { return r.v.Service == id })
		}
		p.drops = append(p.drops, drop...) // submitted below, before the backlog
		if len(republish) > 0 {
			b := n.collect(republish)
			p.backlog = append(p.backlog, b...)
			n.log.Info("cluster: publishing the entries of changed slots", "entries", len(b))
		}
	}
	keptDrops := p.drops[:0]
	for _, id := range p.drops {
		if cl == nil || !cl.Submit(cluster.Request{Op: cluster.OpDropService, Value: cluster.Value{Service: id}}) {
			if cl != nil {
				keptDrops = append(keptDrops, id) // the member's queue is full: next step
			}
		}
	}
	p.drops = keptDrops
	sent := 0
	for len(p.drops) == 0 && sent < len(p.backlog) && sent < backlogPerStep {
		b := &p.backlog[sent]
		if cl == nil || !submit(&b.rec.Key, cluster.Value{Service: b.rec.Service, Backend: b.rec.Backend}, pubTag{worker: b.worker, refresh: b.refresh, proposal: b.rec.Backend}) {
			break
		}
		if !b.refresh {
			n.pubSubmitted.Add(1)
		}
		sent++
	}
	if cl == nil {
		for _, b := range p.backlog {
			if !b.refresh {
				n.pubRejected.Add(1)
			}
		}
		sent = len(p.backlog)
	}
	p.backlog = p.backlog[:copy(p.backlog, p.backlog[sent:])]
	for w, q := range n.dp.PublishQueues() {
		q.Drain(func(r *pipeline.Publish) {
			t := pubTag{worker: uint16(w), ask: r.Ask, proposal: r.Backend}
			switch {
			case submit(&r.Key, cluster.Value{Service: r.Service, Backend: r.Backend}, t):
				if r.Ask {
					n.askSubmitted.Add(1)
				} else {
					n.pubSubmitted.Add(1)
				}
			case r.Ask:
				n.askRejected.Add(1)
				p.tell(t.worker, &pipeline.ChainAnswer{Key: r.Key})
			default:
				n.pubRejected.Add(1)
			}
		})
	}
answers:
	for {
		select {
		case a := <-p.reply:
			p.answer(&a, now)
		default:
			break answers
		}
	}
	kept := p.retry[:0]
	for _, r := range p.retry {
		switch {
		case now.Before(r.at):
			kept = append(kept, r)
		case !submit(&r.key, r.v, r.tag):
			n.pubFailed.Add(1)
		}
	}
	p.retry = kept
}

// publishCounts returns the publish path's counters: new flows submitted
// to the cluster, committed, failed (not committed after every retry),
// rejected (no running member, or its queue full), and dropped by the
// workers (their queue full).
func (n *Node) publishCounts() (submitted, committed, failed, rejected, dropped uint64) {
	for _, q := range n.dp.PublishQueues() {
		_, d := q.Counts()
		dropped += d
	}
	return n.pubSubmitted.Load(), n.pubCommitted.Load(), n.pubFailed.Load(), n.pubRejected.Load(), dropped
}

// askCounts returns the query path's counters: the workers' (summed) and
// the publisher's.
func (n *Node) askCounts() cluster.AskCounts {
	c := n.dp.Counters()
	ch := &c.Chain
	return cluster.AskCounts{
		Asked: ch.Asked, Answered: ch.Answered, Moved: ch.Moved, Corrected: ch.Corrected,
		Timeouts: ch.Timeouts, Failed: ch.Failed, Unknown: ch.Unknown, Busy: ch.Busy,
		Held: ch.Held, Released: ch.Released, Dropped: c.Drops[pipeline.ReasonChainHold],
		Submitted: n.askSubmitted.Load(), Rejected: n.askRejected.Load(),
		WaitBounds: datapath.AskWaitBounds[:], Wait: ch.Wait[:], WaitSum: ch.WaitSum,
	}
}

// On-change services (pipeline.ChainChanged) keep no cluster state in
// steady state. When a backend change starts on one — a backend filling or
// draining (pipeline.Service.InFlight, derived from the configured states,
// so the same on every node) — every node publishes the entries it holds
// for flows in the slots that change owner (the workers publish the new
// flows there themselves, and ask about the packets without an entry).
// When it completes (its drain period passed: no backend filling or
// draining) every node drops the service's chain entries from its own copy
// (cluster.OpDropService), as every member does on the same event. A
// change made without the life cycle (a backend added active, removed) is
// not covered: the slots' previous owners keep nothing for it.

// chainWork is the publisher's pending work for on-change services, set by
// serve (chainChanges) and taken by the publisher.
type chainWork struct {
	mu        sync.Mutex
	republish map[uint16]bool // services whose entries to publish
	drop      map[uint16]bool // services whose chain entries to drop
}

// chainChanges notes, after generation g is applied, the on-change
// services whose backend change started (or changed again) and those whose
// change completed or that left, for the publisher. It runs on serve.
func (n *Node) chainChanges(g *pipeline.Generation) {
	if n.clSetup == nil {
		return
	}
	if n.st.changing == nil {
		n.st.changing = map[uint16]uint64{}
	}
	w := &n.chainWork
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.republish == nil {
		w.republish, w.drop = map[uint16]bool{}, map[uint16]bool{}
	}
	seen := map[uint16]bool{}
	for _, svc := range g.Services {
		if svc.Chain != pipeline.ChainChanged || svc.Table == nil {
			continue
		}
		id := svc.ClusterID
		seen[id] = true
		fp, was := n.st.changing[id]
		owners := svc.Table.OwnersFingerprint()
		switch {
		case svc.InFlight && (!was || fp != owners):
			// (A drop still pending, of a change that completed before
			// this one started, stays: the publisher drops first.)
			w.republish[id] = true
			n.log.Info("cluster: backend change started, publishing the flows of the slots it moves", "vip", svc.Name)
		case !svc.InFlight && was:
			w.republish[id], w.drop[id] = false, true
			n.log.Info("cluster: backend change completed, dropping its chain entries", "vip", svc.Name)
		}
		if svc.InFlight {
			n.st.changing[id] = owners
		} else {
			delete(n.st.changing, id)
		}
	}
	for id := range n.st.changing {
		if !seen[id] {
			delete(n.st.changing, id)
			w.republish[id], w.drop[id] = false, true
		}
	}
}

// take returns and clears the pending work.
func (w *chainWork) take() (republish, drop []uint16) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, ok := range w.republish {
		if ok {
			republish = append(republish, id)
		}
	}
	for id, ok := range w.drop {
		if ok {
			drop = append(drop, id)
		}
	}
	clear(w.republish)
	clear(w.drop)
	return republish, drop
}

// backlogRecord is an entry to publish for an on-change service, with the
// worker whose entry it is (a committed answer naming another backend
// corrects it there).
type backlogRecord struct {
	worker  uint16
	refresh bool // a long flow published again (refreshFlows)
	rec     pipeline.Publish
}

// collect reads the workers' tables (between their batches) for the
// entries of the services ids whose flows are in slots that changed owner.
func (n *Node) collect(ids []uint16) []backlogRecord {
	g := n.dp.Generation()
	if g == nil {
		return nil
	}
	want := map[uint16]bool{}
	for _, id := range ids {
		want[id] = true
	}
	now := n.dp.Now()
	var out []backlogRecord
	// A slice of each table at a time: every worker forwards its batches
	// between two slices.
	for start, more := 0, true; more; start += collectSlice {
		more = false
		n.dp.QueryFlows(func(worker int, t *flow.Table) {
			slots := t.Stats().Slots
			if start >= slots {
				return
			}
			more = true
			t.RangeSlots(start, min(collectSlice, slots-start), func(e *flow.Entry) {
				if rec, svc, ok := chainedEntry(g, t, e, now); ok && want[svc.ClusterID] && svc.Chain == pipeline.ChainChanged {
					out = append(out, backlogRecord{worker: uint16(worker), rec: rec})
				}
			})
		})
	}
	return out
}

// chainedEntry returns the record that publishes e, a worker's entry of t
// (read between its batches), with its service, if e is live and its flow
// uses its owner chain in g.
func chainedEntry(g *pipeline.Generation, t *flow.Table, e *flow.Entry, now uint32) (pipeline.Publish, *pipeline.Service, bool) {
	r := g.RealByID(e.Backend)
	if r == nil || t.Expired(e, now) {
		return pipeline.Publish{}, nil, false
	}
	svc := g.Services[r.Service]
	if !svc.Chained(e.Key.Hash(g.Seed)) {
		return pipeline.Publish{}, nil, false
	}
	return pipeline.Publish{Key: e.Key, Service: svc.ClusterID, Backend: r.ClusterID}, svc, true
}

// collectSlice is how many slots of a worker's table collect reads at once
// (between two of its batches).
const collectSlice = 1 << 16

// refreshBacklogSteps: no refresh slice is walked while the backlog holds
// more than this many steps' worth of records.
const refreshBacklogSteps = 16

// refreshFlows walks the next slice of every worker's flow table and
// queues the live entries of chained flows to be published again.
func (p *publisher) refreshFlows() {
	n := p.n
	g := n.dp.Generation()
	if g == nil || n.clNode.Load() == nil {
		return
	}
	now := n.dp.Now()
	n.dp.QueryFlows(func(worker int, t *flow.Table) {
		for len(p.cursors) <= worker {
			p.cursors = append(p.cursors, 0)
		}
		slice := int(int64(t.Stats().Slots)*int64(refreshEvery)/int64(n.refreshPeriod())) + 1
		p.cursors[worker] = t.RangeSlots(p.cursors[worker], slice, func(e *flow.Entry) {
			if rec, _, ok := chainedEntry(g, t, e, now); ok {
				p.backlog = append(p.backlog, backlogRecord{worker: uint16(worker), refresh: true, rec: rec})
			}
		})
	})
}

// tell queues a on worker's answer queue; a full queue drops it (counted):
// the worker then times out.
func (p *publisher) tell(worker uint16, a *pipeline.ChainAnswer) {
	if answers := p.n.dp.AnswerQueues(); int(worker) < len(answers) {
		answers[worker].Push(a)
	}
}

// answer routes the member's answer a: a question's answer to the worker
// that asked, a committed publish naming another backend than the worker's
// to that worker (its entry is corrected), a publish not committed to the
// retries.
func (p *publisher) answer(a *cluster.Answer, now time.Time) {
	n := p.n
	t := unpackTag(a.Tag)
	ok := a.Status == cluster.StatusOK
	switch {
	case t.ask:
		if ok {
			n.askAnswered.Add(1)
		} else {
			n.askFailed.Add(1)
		}
		p.tell(t.worker, &pipeline.ChainAnswer{Key: a.Key, Backend: a.Value.Backend, OK: ok})
	case ok && t.refresh:
		n.pubRefreshed.Add(1)
		if a.Value.Backend != t.proposal {
			p.tell(t.worker, &pipeline.ChainAnswer{Key: a.Key, Backend: a.Value.Backend, OK: true})
		}
	case t.refresh: // not retried: the next pass publishes it again
	case ok:
		n.pubCommitted.Add(1)
		if a.Value.Backend != t.proposal {
			// The chain had the flow from another node first: the
			// worker's entry takes the committed backend.
			p.tell(t.worker, &pipeline.ChainAnswer{Key: a.Key, Backend: a.Value.Backend, OK: true})
		}
	case t.tries >= publishRetries || len(p.retry) >= publishPending:
		n.pubFailed.Add(1)
	default:
		d := min(publishRetryDelay<<t.tries, publishRetryMax)
		t.tries++
		p.retry = append(p.retry, pubRetry{at: now.Add(d), key: a.Key, v: cluster.Value{Service: a.Value.Service, Backend: t.proposal}, tag: t})
	}
}
