package health

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// State is a check's verdict.
type State uint8

const (
	// Unknown: not enough results yet (a new or replaced check).
	Unknown State = iota
	// Up: the last Rise results were successes.
	Up
	// Down: the last Fall results were failures.
	Down
)

// String returns "unknown", "up", "down" or "state(N)".
func (s State) String() string {
	switch s {
	case Unknown:
		return "unknown"
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Transition is a change of a check's state.
type Transition struct {
	Key      string
	From, To State
	// Err is the failure that completed the fall (To == Down); nil for a
	// rise.
	Err error
	At  time.Time // when the deciding check finished
}

// machine is the rise/fall state machine of one check.
type machine struct {
	state    State
	ok, fail int // consecutive successes, failures (saturating)
}

// observe feeds one result and reports whether the state changed. Rise
// consecutive successes move a check that is not Up to Up; Fall consecutive
// failures move a check that is not Down to Down; any other result only
// counts.
func (m *machine) observe(success bool, rise, fall int) (changed bool) {
	if success {
		m.fail = 0
		if m.ok < rise {
			m.ok++
		}
		if m.state != Up && m.ok >= rise {
			m.state = Up
			return true
		}
		return false
	}
	m.ok = 0
	if m.fail < fall {
		m.fail++
	}
	if m.state != Down && m.fail >= fall {
		m.state = Down
		return true
	}
	return false
}

// probeFunc runs one check, bounded by ctx (which carries the Timeout), and
// returns nil on success.
type probeFunc func(ctx context.Context) error

// Checker runs health checks, each on its own goroutine, and keeps their
// rise/fall state. See the package documentation for the contract.
type Checker struct {
	// Immutable after NewChecker (tests replace newProbe before use).
	onChange func(Transition)
	newProbe func(Spec) probeFunc

	mu     sync.Mutex // guards the fields below and every check's mutable fields
	checks map[string]*check
	ctx    context.Context // the running Run's context; nil when Run is not running
	wg     *sync.WaitGroup // the check goroutines of the running Run
}

type check struct {
	// Immutable.
	key   string
	spec  Spec // defaults applied; Send and Expect are private copies
	probe probeFunc
	// The schedule: spec's, or the defaults where an invalid spec has
	// unusable values (its probe fails every time anyway).
	interval, timeout time.Duration
	rise, fall        int
	// report serialises recording a result and calling onChange for this
	// key; a check that replaces another with the same key inherits it, so
	// a late report of the old check can never follow one of the new.
	report *sync.Mutex

	// Guarded by Checker.mu.
	m      machine
	last   Transition
	cancel context.CancelFunc // stops the check's goroutine; nil when none runs
}

// NewChecker returns a Checker with no checks. onChange (may be nil) is
// called once per state transition, from the goroutine of the check that
// changed, with no lock held: it may call State, Set and Remove, and it
// delays only that check while it runs. Transitions of one key are
// delivered in order; those of different keys may be delivered
// concurrently.
func NewChecker(onChange func(Transition)) *Checker {
	return &Checker{onChange: onChange, newProbe: newProbe, checks: map[string]*check{}}
}

// Set adds the check named key or replaces it. A replacement with a Spec
// equal to the current one (after defaults) changes nothing: the check keeps
// its state and schedule. Otherwise the old check stops (a result it is
// still computing is discarded) and the new one starts at Unknown, without
// a Transition being reported; its first run is jittered like any other.
// A Spec that fails Validate gives a check whose every run fails with the
// validation error, so it goes Down after Fall runs; validate first.
// Set may be called before, during or after Run.
func (c *Checker) Set(key string, s Spec) {
	s = s.withDefaults()
	s.Send = append([]byte(nil), s.Send...)
	s.Expect = append([]byte(nil), s.Expect...)
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.checks[key]
	if old != nil && old.spec.equal(s) {
		return
	}
	ck := &check{key: key, spec: s, probe: c.newProbe(s), report: new(sync.Mutex),
		interval: s.Interval, timeout: s.Timeout, rise: s.Rise, fall: s.Fall}
	if ck.interval <= 0 {
		ck.interval = DefaultInterval
	}
	if ck.timeout <= 0 || ck.timeout >= ck.interval {
		ck.timeout = ck.interval / 2
	}
	ck.rise, ck.fall = max(ck.rise, 1), max(ck.fall, 1)
	if old != nil {
		ck.report = old.report
		old.stop()
	}
	c.checks[key] = ck
	if c.ctx != nil {
		c.start(ck)
	}
}

// Remove stops and forgets the check named key (nothing if there is none).
// No Transition is reported for it afterwards, except one that its goroutine
// was already delivering when Remove was called.
func (c *Checker) Remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ck := c.checks[key]; ck != nil {
		ck.stop()
		delete(c.checks, key)
	}
}

// State returns the current state of the check named key and its last
// transition (zero before the first). An unknown key is Unknown.
func (c *Checker) State(key string) (State, Transition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ck := c.checks[key]
	if ck == nil {
		return Unknown, Transition{}
	}
	return ck.m.state, ck.last
}

// Run runs every check, and every check Set while it runs, until ctx is
// done; it then stops them, waits for their goroutines and returns. Each
// check's first run starts after a delay drawn uniformly from [0, Interval)
// so that checks added together do not run in step; later runs start every
// Interval after the previous start. Each run is bounded by the check's
// Timeout. States persist across Runs. A call while another Run is running
// returns at once.
func (c *Checker) Run(ctx context.Context) {
	c.mu.Lock()
	if c.ctx != nil {
		c.mu.Unlock()
		return
	}
	wg := new(sync.WaitGroup)
	c.ctx, c.wg = ctx, wg
	for _, ck := range c.checks {
		c.start(ck)
	}
	c.mu.Unlock()

	<-ctx.Done()

	c.mu.Lock()
	c.ctx, c.wg = nil, nil
	for _, ck := range c.checks {
		ck.stop()
	}
	c.mu.Unlock()
	wg.Wait()
}

// start runs ck's goroutine under the running Run. c.mu is held.
func (c *Checker) start(ck *check) {
	ctx, cancel := context.WithCancel(c.ctx)
	ck.cancel = cancel
	wg := c.wg
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.loop(ctx, ck)
	}()
}

// stop cancels ck's goroutine, if any. Checker.mu is held.
func (ck *check) stop() {
	if ck.cancel != nil {
		ck.cancel()
		ck.cancel = nil
	}
}

// firstDelay is the jitter before a check's first run: uniform in
// [0, interval).
func firstDelay(interval time.Duration) time.Duration {
	return rand.N(interval)
}

// loop runs ck every Interval until ctx is done.
func (c *Checker) loop(ctx context.Context, ck *check) {
	t := time.NewTimer(firstDelay(ck.interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, ck.timeout)
		err := ck.probe(pctx)
		late := pctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return // stopped or replaced: this result does not count
		}
		if err == nil && late {
			err = timeoutErr(&ck.spec) // answered, but after the timeout
		}
		c.record(ck, err, time.Now())
		t.Reset(time.Until(start.Add(ck.interval)))
	}
}

// record feeds one result of ck into its state machine and reports a
// transition.
func (c *Checker) record(ck *check, err error, at time.Time) {
	ck.report.Lock()
	defer ck.report.Unlock()
	c.mu.Lock()
	if c.checks[ck.key] != ck {
		c.mu.Unlock()
		return // replaced or removed meanwhile
	}
	from := ck.m.state
	if !ck.m.observe(err == nil, ck.rise, ck.fall) {
		c.mu.Unlock()
		return
	}
	tr := Transition{Key: ck.key, From: from, To: ck.m.state, At: at}
	if tr.To == Down {
		tr.Err = err
	}
	ck.last = tr
	c.mu.Unlock()
	if c.onChange != nil {
		c.onChange(tr)
	}
}

// Backend is the health of one backend of one VIP, as an LB node reports
// it.
type Backend struct {
	VIP, Backend string
	// State is the check's current state. Unknown (no decision yet) counts
	// as up in the datapath.
	State State
	// Up and Down count the check's transitions to up and to down since it
	// was added (a starting check's first rise counts).
	Up, Down uint64
}
