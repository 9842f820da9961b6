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
	"github.com/sluicelb/sluice/internal/offload"
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
	// Offload is the kernel half of the flow cache (link/afxdp's offload
	// program, on the interface of Links): established flows are
	// installed there and forwarded without reaching the workers. nil: no
	// offload. OffloadRing is each worker's ring of installs and deletes
	// (default 4096).
	Offload     offload.Kernel
	OffloadRing int
	// OffloadRefresh is how often the workers' entries of the flows the
	// kernel forwards are marked as seen (their packets no longer reach
	// the workers, whose reaper would expire them); default 2 s, and at
	// most a third of the shortest timeout.
	OffloadRefresh time.Duration
	// Fastpath, when set, redirects the established flows of services
	// with fastpath clients to their client hosts' agents (fastpath.go).
	Fastpath *FastpathConfig
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
	syncer    *offload.Syncer       // with Config.Offload
	refresh   time.Duration         // Config.OffloadRefresh
	offMu     sync.Mutex            // serialises the kernel's generation changes (Apply, captures)
	offErr    atomic.Pointer[error] // the last SetGeneration error
	fp        *Redirector           // with Config.Fastpath
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
	if c.Offload != nil {
		if c.OffloadRing <= 0 {
			c.OffloadRing = 4096
		}
		rings := make([]*offload.Ring, len(d.workers))
		for i, w := range d.workers {
			rings[i] = offload.NewRing(c.OffloadRing)
			w.off = rings[i]
			w.offPending = new([offPendingMax]flow.Key)
			var nat func(*flow.Entry)
			if w.ctx.NAT != nil {
				nat = w.ctx.NAT.Removed
			}
			w.flows.OnRemove(func(e *flow.Entry) {
				if nat != nil {
					nat(e)
				}
				w.offRemoved(e)
			})
		}
		d.syncer = offload.NewSyncer(c.Offload, rings)
		d.refresh = c.OffloadRefresh
		if d.refresh <= 0 {
			d.refresh = 2 * time.Second
		}
		to, def := c.Timeouts, flow.DefaultTimeouts()
		for _, x := range []struct{ set, def time.Duration }{
			{to.SYN, def.SYN}, {to.Established, def.Established}, {to.Closing, def.Closing}, {to.UDP, def.UDP},
		} {
			if x.set == 0 {
				x.set = x.def
			}
			d.refresh = min(d.refresh, x.set/3)
		}
		d.refresh = max(d.refresh, 10*time.Millisecond)
		for _, w := range d.workers {
			w.offWake = d.syncer.Wake
		}
	}
	if c.Fastpath != nil {
		if c.Fastpath.Conn == nil {
			return nil, errors.New("datapath: fastpath without a socket")
		}
		n := c.Fastpath.Ring
		if n <= 0 {
			n = 4096
		}
		rings := make([]*offload.Ring, len(d.workers))
		for i := range rings {
			rings[i] = offload.NewRing(n)
		}
		// remark turns the fpMark of the keys' entries into note: 0 (offered
		// again at its next packet) or fpDeclined.
		remark := func(note uint8) func([]flow.Key) {
			return func(keys []flow.Key) {
				d.each(keys, func(_ *Worker, e *flow.Entry) {
					if e.Offload == fpMark {
						e.Offload = note
					}
				})
			}
		}
		d.fp = newRedirector(*c.Fastpath, &d.gen, rings, func(keys []flow.Key) {
			d.touch(keys, func(e *flow.Entry) bool { return e.Offload == fpMark })
		}, remark(0), remark(fpDeclined))
		for i, w := range d.workers {
			w.fp, w.fpWake = rings[i], d.fp.Wake
		}
	}
	return d, nil
}

// Redirector returns the fastpath's redirector (Config.Fastpath), or nil.
func (d *Datapath) Redirector() *Redirector { return d.fp }

// Apply makes g the generation every worker uses from its next batch on.
// With the offload, the kernel gets g's templates and g becomes its current
// generation first: entries of older generations are no longer forwarded
// there, and their packets reach the workers, which decide them in g.
func (d *Datapath) Apply(g *pipeline.Generation) {
	if d.syncer == nil || g == nil {
		d.gen.Store(g)
		return
	}
	d.offMu.Lock()
	defer d.offMu.Unlock()
	d.offloadGeneration(g)
	d.gen.Store(g)
}

// offloadGeneration gives the kernel g's templates and makes g its
// generation; while a capture runs, a generation no entry has instead, so
// that every packet reaches the workers (and the capture). Called with
// offMu held.
func (d *Datapath) offloadGeneration(g *pipeline.Generation) {
	id, tmpls := ^g.ID, []offload.Template(nil)
	if d.capturing.Load() == nil {
		id, tmpls = g.ID, make([]offload.Template, len(g.Reals))
		for i, r := range g.Reals {
			switch {
			case r == nil:
			case r.NAT != nil:
				for a, nt := range r.NAT.Templates {
					if a < offload.MaxSNAT && nt != nil {
						tmpls[i].NAT[a] = offload.NATTemplate{Image: nt.Image(), Valid: true}
					}
				}
			case r.Template != nil:
				tmpls[i] = offload.TemplateOf(r.Template, g.MTU)
			}
		}
	}
	if err := d.syncer.Kernel().SetGeneration(id, tmpls); err != nil {
		d.offErr.Store(&err)
	}
}

// offloadCapture pauses (a capture started) or resumes (it stopped) the
// offload: see offloadGeneration.
func (d *Datapath) offloadCapture() {
	if d.syncer == nil {
		return
	}
	d.offMu.Lock()
	defer d.offMu.Unlock()
	if g := d.gen.Load(); g != nil {
		d.offloadGeneration(g)
	}
}

// OffloadError returns the last error of the offload's kernel half (a
// generation that could not be installed, a failed map update), or nil.
func (d *Datapath) OffloadError() error {
	if p := d.offErr.Load(); p != nil {
		return *p
	}
	if d.syncer != nil {
		return d.syncer.LastError()
	}
	return nil
}

// Offloading reports whether the datapath has the offload.
func (d *Datapath) Offloading() bool { return d.syncer != nil }

// Syncer returns the offload's syncer (nil without Config.Offload); Run
// runs it, tests may call its Sync directly.
func (d *Datapath) Syncer() *offload.Syncer { return d.syncer }

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
	if d.syncer != nil {
		wg.Add(2)
		go func() {
			defer wg.Done()
			d.syncer.Run(ctx)
		}()
		go func() {
			defer wg.Done()
			d.refreshLoop(ctx)
		}()
	}
	if d.fp != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.fp.Run(ctx)
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
	if d.syncer != nil {
		d.addOffload(&sum)
	}
	return sum
}

// addOffload merges the kernel's counters: what it forwarded counts as
// received, sent and sent to its backend, like the workers' own packets,
// and Offload has the details.
func (d *Datapath) addOffload(sum *Counters) {
	oc, err := d.syncer.Counters()
	if err != nil {
		d.offErr.Store(&err)
	}
	for _, w := range d.workers {
		oc.RingFull += w.off.Full()
	}
	sum.Offload.Add(&oc) // the workers' part: DeletesLost
	sum.Offloaded = true
	var bytes uint64
	for id, rc := range oc.Reals {
		if id >= len(sum.Reals) {
			sum.Reals = append(sum.Reals, make([]RealCounters, id+1-len(sum.Reals))...)
		}
		sum.Reals[id].Packets += rc.Packets
		sum.Reals[id].Bytes += rc.Bytes
		bytes += rc.Bytes
	}
	sum.RxPackets += oc.Forwarded
	sum.TxPackets += oc.Forwarded
	sum.TxBytes += bytes
	sum.NAT.Forwarded += oc.NATForwarded
}
