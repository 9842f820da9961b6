package health

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// stateCases are sequences of results ('+' success, '-' failure) and the
// states the rise/fall machine must move to, in order.
var stateCases = []struct {
	rise, fall int
	seq        string
	want       []State
}{
	{2, 3, "+", nil},
	{2, 3, "++", []State{Up}},
	{2, 3, "+++++", []State{Up}}, // reported once
	{2, 3, "--", nil},
	{2, 3, "---", []State{Down}},
	{2, 3, "------", []State{Down}},
	{2, 3, "++--", []State{Up}},
	{2, 3, "++---", []State{Up, Down}},
	{2, 3, "++-+---", []State{Up, Down}}, // a success resets the failures
	{2, 3, "++--+--+", []State{Up}},      // never Fall in a row
	{2, 3, "---+-++", []State{Down, Up}}, // a failure resets the successes
	{2, 3, "+-+-+-+-", nil},              // undecided stays Unknown
	{1, 1, "+-+-", []State{Up, Down, Up, Down}},
	{1, 1, "-", []State{Down}},
	{3, 2, "--+++--", []State{Down, Up, Down}},
	{3, 2, "--++-+++", []State{Down, Up}},
}

func TestStateMachine(t *testing.T) {
	for _, c := range stateCases {
		var m machine
		var got []State
		for _, r := range c.seq {
			if m.observe(r == '+', c.rise, c.fall) {
				got = append(got, m.state)
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("rise %d fall %d %q: transitions to %v, want %v", c.rise, c.fall, c.seq, got, c.want)
		}
	}
}

// recorder collects the transitions a Checker reports.
type recorder struct {
	mu  sync.Mutex
	trs []Transition
}

func (r *recorder) add(tr Transition) {
	r.mu.Lock()
	r.trs = append(r.trs, tr)
	r.mu.Unlock()
}

func (r *recorder) get(key string) []Transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Transition
	for _, tr := range r.trs {
		if key == "" || tr.Key == key {
			out = append(out, tr)
		}
	}
	return out
}

// runChecker runs c until the test ends.
func runChecker(t *testing.T, c *Checker) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return ctx
}

// waitState polls c until key is in state want (5 s at most) and returns
// the last transition.
func waitState(t *testing.T, c *Checker, key string, want State) Transition {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, tr := c.State(key)
		if st == want {
			return tr
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: state %v (last %+v), want %v", key, st, tr, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var dummy = netip.MustParseAddrPort("127.0.0.1:9") // never dialled: the probes are fakes

// TestCheckerTransitions drives the Checker (goroutine, schedule, state,
// reports) with scripted probe results: each case's transitions are
// reported exactly once, in order, with consistent From, To and Err.
func TestCheckerTransitions(t *testing.T) {
	for _, c := range stateCases {
		t.Run(fmt.Sprintf("%d-%d-%s", c.rise, c.fall, c.seq), func(t *testing.T) {
			var rec recorder
			ck := NewChecker(rec.add)
			runCtx, stopRun := context.WithCancel(context.Background())
			defer stopRun()
			finished := make(chan struct{})
			ck.newProbe = func(Spec) probeFunc {
				i := 0
				return func(ctx context.Context) error {
					if i == len(c.seq) {
						close(finished)
						<-runCtx.Done() // park until Run stops: not counted
						return ctx.Err()
					}
					r := c.seq[i]
					i++
					if r == '+' {
						return nil
					}
					return fmt.Errorf("failure %d", i)
				}
			}
			ck.Set("k", Spec{Kind: TCP, Target: dummy, Interval: 4 * time.Millisecond, Rise: c.rise, Fall: c.fall})
			ran := make(chan struct{})
			go func() { ck.Run(runCtx); close(ran) }()
			select {
			case <-finished:
			case <-time.After(5 * time.Second):
				t.Fatal("script not finished")
			}
			stopRun()
			<-ran

			trs := rec.get("")
			var to []State
			from := Unknown
			for _, tr := range trs {
				to = append(to, tr.To)
				if tr.Key != "k" || tr.From != from || tr.From == tr.To || tr.At.IsZero() {
					t.Errorf("bad transition %+v after state %v", tr, from)
				}
				if (tr.To == Down) != (tr.Err != nil) {
					t.Errorf("transition %+v: Err must be set exactly for Down", tr)
				}
				from = tr.To
			}
			if !slices.Equal(to, c.want) {
				t.Errorf("transitions to %v, want %v", to, c.want)
			}
			st, last := ck.State("k")
			if st != from || (len(trs) > 0 && last.To != trs[len(trs)-1].To) {
				t.Errorf("State = %v, %+v; want %v", st, last, from)
			}
		})
	}
}

// TestFirstRunJitter starts 100 checks at once and checks that their first
// runs spread uniformly over the interval: each fifth of it sees at least 5
// of them (20 expected; without jitter all land in the first).
func TestFirstRunJitter(t *testing.T) {
	const n, interval = 100, 1 * time.Second
	ck := NewChecker(nil)
	var (
		mu    sync.Mutex
		first = map[string]time.Time{}
		all   = make(chan struct{})
	)
	ck.newProbe = func(s Spec) probeFunc {
		key := s.Target.String()
		return func(ctx context.Context) error {
			mu.Lock()
			if _, seen := first[key]; !seen {
				first[key] = time.Now()
				if len(first) == n {
					close(all)
				}
			}
			mu.Unlock()
			return nil
		}
	}
	for i := range n {
		ck.Set(fmt.Sprint(i), Spec{Kind: TCP, Target: netip.AddrPortFrom(dummy.Addr(), uint16(1000+i)),
			Interval: interval})
	}
	start := time.Now()
	runChecker(t, ck)
	select {
	case <-all:
	case <-time.After(3 * interval):
		t.Fatal("not every check ran within 3 intervals")
	}
	var buckets [5]int
	mu.Lock()
	defer mu.Unlock()
	for key, at := range first {
		off := at.Sub(start)
		if off < 0 || off > interval+200*time.Millisecond {
			t.Errorf("check %s first ran %v after Run, outside the interval", key, off)
			continue
		}
		buckets[min(int(off*5/interval), 4)]++
	}
	for i, b := range buckets {
		if b < 5 {
			t.Errorf("first runs per fifth of the interval: %v; fifth %d has %d (want >= 5 of ~20)", buckets, i, b)
			break
		}
	}
}

// TestSetReplace: Set with an equal Spec (after defaults, byte slices
// compared by content) keeps the check and its state; a changed Spec
// restarts it at Unknown without reporting a transition, and only the new
// check's results count from then on.
func TestSetReplace(t *testing.T) {
	var rec recorder
	ck := NewChecker(rec.add)
	var mu sync.Mutex
	built := 0
	ck.newProbe = func(s Spec) probeFunc {
		mu.Lock()
		built++
		mu.Unlock()
		fail := string(s.Send) == "fail"
		return func(context.Context) error {
			if fail {
				return errors.New("scripted failure")
			}
			return nil
		}
	}
	builds := func() int { mu.Lock(); defer mu.Unlock(); return built }
	spec := func(send string, timeout time.Duration) Spec {
		return Spec{Kind: UDP, Target: dummy, Send: []byte(send), Interval: 20 * time.Millisecond,
			Timeout: timeout, Rise: 1, Fall: 1}
	}
	ck.Set("k", spec("ok", 0))
	runChecker(t, ck)
	waitState(t, ck, "k", Up)

	// Equal after defaults (Timeout 0 = Interval/2 here) and by content.
	ck.Set("k", spec("ok", 10*time.Millisecond))
	if st, _ := ck.State("k"); st != Up || builds() != 1 {
		t.Errorf("equal spec: state %v, %d probes built; want Up, 1", st, builds())
	}

	ck.Set("k", spec("fail", 0))
	if st, tr := ck.State("k"); st != Unknown || tr != (Transition{}) {
		t.Errorf("changed spec: state %v, last %+v; want Unknown and no transition", st, tr)
	}
	n := len(rec.get("k"))
	tr := waitState(t, ck, "k", Down)
	if tr.From != Unknown || tr.Err == nil {
		t.Errorf("after the reset: %+v, want Unknown -> Down with an error", tr)
	}
	if got := rec.get("k"); len(got) != n+1 || got[n].To != Down {
		t.Errorf("transitions after the reset: %+v", got[n-1:])
	}
	if builds() != 2 {
		t.Errorf("%d probes built, want 2", builds())
	}

	ck.Set("k", spec("fail", 0))
	if st, _ := ck.State("k"); st != Down || builds() != 2 {
		t.Errorf("same failing spec again: state %v, %d probes built", st, builds())
	}

	// Remove stops the check for good.
	ck.Remove("k")
	if st, tr := ck.State("k"); st != Unknown || tr != (Transition{}) {
		t.Errorf("removed: State = %v, %+v", st, tr)
	}
	n = len(rec.get("k"))
	time.Sleep(100 * time.Millisecond)
	if got := rec.get("k"); len(got) != n {
		t.Errorf("transitions after Remove: %+v", got[n:])
	}
}

// TestInvalidSpecGoesDown: a Spec that fails Validate is a check that fails
// every run with the validation error.
func TestInvalidSpecGoesDown(t *testing.T) {
	ck := NewChecker(nil)
	ck.Set("bad", Spec{Kind: HTTP, Target: dummy, Path: "no-slash", Interval: 20 * time.Millisecond, Fall: 1})
	runChecker(t, ck)
	tr := waitState(t, ck, "bad", Down)
	var se *SpecError
	if !errors.As(tr.Err, &se) || se.Path != "spec.Path" {
		t.Errorf("Err = %v, want the Path SpecError", tr.Err)
	}
}
