package control

import (
	"context"
	"log/slog"
	"time"

	"github.com/sluicelb/sluice/internal/config"
)

// Backend life cycle with second chance (docs/operations.md): a backend
// added to a second-chance VIP starts "filling" and becomes "active" after
// the VIP's drain_period; a drained one is "draining" and is removed after
// it. While a change is in flight the previous owner of each slot it moved
// stays its secondary, and the configuration rules allow one change in
// flight per VIP.

// transition is a filling or draining backend the server watches.
type transition struct {
	state string
	since time.Time // when the server first saw the backend in this state
}

func transitionKey(vip, addr string) string { return vip + " " + addr }

// Run completes the backend transitions of second-chance VIPs when their
// drain period has passed, until ctx is done: a filling backend becomes
// active, a draining one is removed. Each completion is an apply like any
// other (a generation, an apply result). A transition's period starts when
// the server first sees it, so a node that restarts gives the changes in
// flight a full period again.
func (s *Server) Run(ctx context.Context, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		for _, c := range s.dueTransitions(s.now()) {
			res, err := s.completeTransition(ctx, c)
			if err != nil {
				log.Error("backend transition not completed", "vip", c.vip, "backend", c.addr, "state", c.state, "err", err)
				continue
			}
			to := "active"
			if c.state == config.StateDraining {
				to = "removed"
			}
			log.Info("backend transition completed", "vip", c.vip, "backend", c.addr, "from", c.state, "to", to, "generation", res.Generation)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

type dueTransition struct{ vip, addr, state string }

// dueTransitions records the transitions of the running configuration and
// returns those whose drain period has passed at now.
func (s *Server) dueTransitions(now time.Time) []dueTransition {
	cfg := s.node.Config()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.transitions == nil {
		s.transitions = map[string]transition{}
	}
	seen := map[string]bool{}
	var due []dueTransition
	for i := range cfg.VIPs {
		v := &cfg.VIPs[i]
		if !cfg.LifeCycle(v) {
			continue
		}
		for _, b := range v.Backends {
			if b.State != config.StateFilling && b.State != config.StateDraining {
				continue
			}
			k := transitionKey(v.Name, b.Address)
			seen[k] = true
			tr, ok := s.transitions[k]
			if !ok || tr.state != b.State {
				tr = transition{state: b.State, since: now}
				s.transitions[k] = tr
			}
			if now.Sub(tr.since) >= v.DrainPeriod {
				due = append(due, dueTransition{v.Name, b.Address, b.State})
			}
		}
	}
	for k := range s.transitions {
		if !seen[k] {
			delete(s.transitions, k)
		}
	}
	return due
}

// completesAt returns when the transition of backend addr of vip completes
// (zero when it has none).
func (s *Server) completesAt(v *config.VIP, addr string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	tr, ok := s.transitions[transitionKey(v.Name, addr)]
	if !ok {
		return time.Time{}
	}
	return tr.since.Add(v.DrainPeriod)
}

func (s *Server) completeTransition(ctx context.Context, c dueTransition) (ApplyResult, error) {
	return s.edit(ctx, func(cfg *config.Config) error {
		v, j, err := existingBackend(cfg, c.vip, c.addr)
		if err != nil {
			return err
		}
		if v.Backends[j].State != c.state {
			return nil // changed meanwhile; the next sweep sees the new state
		}
		if c.state == config.StateDraining {
			v.Backends = append(v.Backends[:j], v.Backends[j+1:]...)
		} else {
			v.Backends[j].State = config.StateActive
		}
		return nil
	})
}
