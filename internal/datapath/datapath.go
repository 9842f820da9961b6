package datapath

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/nat"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// Config configures a Datapath.
type Config struct {
	Links        []link.Link     // one worker per link (queue)
	FlowCapacity int             // flows per worker table; default 1<<20
	Timeouts     flow.Timeouts   // zero: flow.DefaultTimeouts()
	Chain        *pipeline.Chain // nil: pipeline.DefaultChain()
	// Spill sends what the links cannot (packets the kernel must fragment,
	// held fragments); shared by the workers. nil: such packets are
	// dropped (too_big) and later fragments are not held.
	Spill link.Spill
	// SNAT is the node's SNAT addresses (full-NAT services); none: no
	// worker keeps NAT state. SNATLayout deals their ports to the workers
	// (its Workers is set to the number of links); zero: 1024-65535 in
	// blocks of 256.
	SNAT       []netip.Addr
	SNATLayout nat.Layout
	// PublishQueue, when positive, gives every worker a bounded queue of
	// this many records for the node's cluster member — the new flows of
	// chained services (pipeline.Service.Chain) and the flows it asks their
	// chains about — drained by the node server (Datapath.PublishQueues),
	// and a queue of as many of the chains' answers, filled by the node
	// server (Datapath.AnswerQueues). 0: no queues, nothing is published
	// nor asked.
	PublishQueue int
	// AskTimeout is how long a worker waits for a chain's answer before
	// it decides locally (0: AskTimeout ms).
	AskTimeout time.Duration
	// AskNotify, when set, is called by a worker that queued a question
	// (a flow it holds packets for): it must not block. The node server
	// uses it to take the question at once rather than at its next tick.
	AskNotify func()
	// FragmentOwners, with Spill, makes the node one of a cluster's
	// relays of fragments (relay.go): a later fragment without its first
	// fragment goes to its datagram's owner, and the decision of a first
	// fragment is sent there too. RelaySource is the address the workers
	// send to other nodes' relays from (the node's cluster address). nil:
	// each worker handles the fragments it receives alone.
	FragmentOwners FragmentOwners
	RelaySource    netip.Addr
}

// Datapath is a set of workers sharing one current generation.
type Datapath struct {
	gen     atomic.Pointer[pipeline.Generation]
	workers []*Worker
	clock   *flow.Clock
	publish []*pipeline.PublishQueue // one per worker with Config.PublishQueue
	answers []*pipeline.AnswerQueue  // one per worker with Config.PublishQueue
	relay   *Relay                   // with Config.FragmentOwners
	// capturing is the running capture (capture.go), or nil.
	capturing atomic.Pointer[capture]
}

// New builds the workers and their flow tables; nothing runs until Run.
func New(c Config) (*Datapath, error) {
	if len(c.Links) == 0 {
		return nil, errors.New("datapath: no links")
	}
	if c.FlowCapacity == 0 {
		c.FlowCapacity = 1 << 20
	}
	if c.FlowCapacity < 0 {
		return nil, fmt.Errorf("datapath: flow capacity %d is negative", c.FlowCapacity)
	}
	if c.Timeouts == (flow.Timeouts{}) {
		c.Timeouts = flow.DefaultTimeouts()
	}
	if c.Chain == nil {
		c.Chain = pipeline.DefaultChain()
	}
	d := &Datapath{clock: flow.NewClock()}
	if c.FragmentOwners != nil && c.Spill != nil {
		d.relay = newRelay(c.Chain, &d.gen, d.clock, c.Spill)
	}
	for _, l := range c.Links {
		w := newWorker(l, c.Chain, &d.gen, d.clock, flow.NewTable(c.FlowCapacity, c.Timeouts), c.Spill)
		if c.PublishQueue > 0 {
			w.ctx.Publish = pipeline.NewPublishQueue(c.PublishQueue)
			answers := pipeline.NewAnswerQueue(c.PublishQueue)
			w.ask = newAsker(w, w.ctx.Publish, answers)
			w.ask.notify = c.AskNotify
			if c.AskTimeout > 0 {
				w.ask.timeout = uint32(max(c.AskTimeout.Milliseconds(), 1))
			}
			w.ctx.Ask = w.ask
			d.publish = append(d.publish, w.ctx.Publish)
			d.answers = append(d.answers, answers)
		}
		if d.relay != nil {
			w.owners, w.relay, w.relaySrc = c.FragmentOwners, d.relay, c.RelaySource.As16()
		}
		w.index = len(d.workers)
		d.workers = append(d.workers, w)
	}
	if err := setupNAT(d.workers, c.SNAT, c.SNATLayout); err != nil {
		return nil, err
	}
	return d, nil
}

// Apply makes g the generation every worker uses from its next batch on.
func (d *Datapath) Apply(g *pipeline.Generation) { d.gen.Store(g) }

// Generation returns the current generation.
func (d *Datapath) Generation() *pipeline.Generation { return d.gen.Load() }

// PublishQueues returns the workers' publish queues (Config.PublishQueue),
// one per worker, for a single consumer; none without them.
func (d *Datapath) PublishQueues() []*pipeline.PublishQueue { return d.publish }

// AnswerQueues returns the workers' queues of chain answers
// (Config.PublishQueue), one per worker, in the order of PublishQueues, for
// a single producer; none without them.
func (d *Datapath) AnswerQueues() []*pipeline.AnswerQueue { return d.answers }

// Relay returns the node's relay of fragments (Config.FragmentOwners), or
// nil.
func (d *Datapath) Relay() *Relay { return d.relay }

// Workers returns the workers, one per link.
func (d *Datapath) Workers() []*Worker { return d.workers }

// Run runs every worker until ctx is done or a worker's link fails; either
// way it closes every link, waits for the workers and returns their errors.
func (d *Datapath) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(d.workers))
	for i, w := range d.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = w.run(); errs[i] != nil {
				cancel()
			}
		}()
	}
	stop := context.AfterFunc(ctx, func() {
		for _, w := range d.workers {
			w.link.Close()
		}
	})
	wg.Wait()
	stop()
	return errors.Join(errs...)
}

// Now returns the reading of the workers' flow clock: what flow.Entry
// LastSeen values compare with.
func (d *Datapath) Now() uint32 { return d.clock.Now() }

// QueryFlows runs fn on each worker's flow table in turn (i: the worker's
// index in Workers), as Worker.Query does: read-only, between batches.
func (d *Datapath) QueryFlows(fn func(i int, t *flow.Table)) {
	for i, w := range d.workers {
		w.Query(func(t *flow.Table) { fn(i, t) })
	}
}

// Counters returns the sum of every worker's counters.
func (d *Datapath) Counters() Counters {
	var sum Counters
	for _, w := range d.workers {
		c := w.Snapshot()
		sum.Add(&c)
	}
	if d.relay != nil {
		c := d.relay.Snapshot()
		sum.Add(&c)
	}
	return sum
}
