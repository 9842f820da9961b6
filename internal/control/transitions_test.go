package control

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/control/controltest"
)

// On a second-chance VIP an added backend fills for the drain period and
// then becomes active; a drained one is removed after it; a second change
// while one is in flight is refused with a clear error.
func TestTransitions(t *testing.T) {
	n := controltest.New()
	s := New(n)
	now := t0
	s.now = func() time.Time { return now }
	ctx := context.Background()
	doc := strings.Replace(controltest.Initial, "    port: 80\n", "    port: 80\n    second_chance: true\n    drain_period: 10s\n", 1)
	if _, err := s.PutConfig(ctx, []byte(doc)); err != nil {
		t.Fatal(err)
	}
	state := func(addr string) string {
		for _, b := range n.Config().VIPs[0].Backends {
			if b.Address == addr {
				return b.State
			}
		}
		return "removed"
	}
	step := func(d time.Duration) {
		now = now.Add(d)
		for _, c := range s.dueTransitions(now) {
			if _, err := s.completeTransition(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
	}

	if _, err := s.AddBackend(ctx, "web", "10.1.0.9", 1); err != nil {
		t.Fatal(err)
	}
	step(0)
	if got := state("10.1.0.9"); got != config.StateFilling {
		t.Fatalf("added backend is %s, want filling", got)
	}
	if got := s.ListVIPs()[0].Backends[2]; got.State != StateFilling || !got.CompletesAt.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("status %+v", got)
	}
	// One change at a time.
	_, err := s.SetState(ctx, "web", "10.1.0.1", config.StateDraining)
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "one change at a time") {
		t.Fatalf("second change while filling: %v", err)
	}
	step(9 * time.Second)
	if got := state("10.1.0.9"); got != config.StateFilling {
		t.Fatalf("after 9s: %s", got)
	}
	step(time.Second)
	if got := state("10.1.0.9"); got != config.StateActive {
		t.Fatalf("after the drain period: %s, want active", got)
	}
	// Now drain 10.1.0.1: removed after the period.
	if _, err := s.SetState(ctx, "web", "10.1.0.1", config.StateDraining); err != nil {
		t.Fatal(err)
	}
	step(0)
	step(5 * time.Second)
	if got := state("10.1.0.1"); got != config.StateDraining {
		t.Fatalf("after 5s: %s", got)
	}
	step(5 * time.Second)
	if got := state("10.1.0.1"); got != "removed" {
		t.Fatalf("after the drain period: %s, want removed", got)
	}
	step(0)
	if len(s.transitions) != 0 {
		t.Fatalf("transitions left: %v", s.transitions)
	}
}
