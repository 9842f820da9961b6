package control

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"gopkg.in/yaml.v3"

	"github.com/sluicelb/sluice/internal/config"
)

// Errors the edit verbs (AddVIP, RemoveVIP, AddBackend, RemoveBackend,
// SetWeight) return, as an *EditError, for a VIP or backend that is not
// there or already is. The running configuration is unchanged and, since
// nothing was applied, the last apply result too.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
)

// EditError is an edit naming a VIP or a backend that is not there
// (ErrNotFound) or already is (ErrExists).
type EditError struct {
	VIP     string // the VIP's name
	Backend string // the backend's address; empty when the VIP is meant
	Err     error  // ErrNotFound or ErrExists
}

func (e *EditError) Error() string {
	if e.Backend == "" {
		return fmt.Sprintf("vip %q: %v", e.VIP, e.Err)
	}
	return fmt.Sprintf("vip %q: backend %s: %v", e.VIP, e.Backend, e.Err)
}

// Unwrap returns ErrNotFound or ErrExists.
func (e *EditError) Unwrap() error { return e.Err }

// edit applies fn's change of a copy of the running configuration through
// the path PutConfig takes (the document is rendered, parsed, validated
// and applied), so the edit is atomic and recorded like any apply. An
// error of fn is returned as is and nothing is applied or recorded.
func (s *Server) edit(ctx context.Context, fn func(*config.Config) error) (ApplyResult, error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	cfg := cloneConfig(s.node.Config())
	if err := fn(cfg); err != nil {
		return ApplyResult{}, err
	}
	doc, err := yaml.Marshal(cfg)
	if err != nil {
		return ApplyResult{}, err
	}
	return s.apply(ctx, doc, true)
}

// cloneConfig copies what the edits change: the VIP list and each VIP's
// backend list (the edits replace weights, never write through them).
func cloneConfig(c *config.Config) *config.Config {
	n := *c
	n.VIPs = slices.Clone(c.VIPs)
	for i := range n.VIPs {
		n.VIPs[i].Backends = slices.Clone(n.VIPs[i].Backends)
	}
	return &n
}

func findVIP(c *config.Config, name string) (int, error) {
	for i, v := range c.VIPs {
		if v.Name == name {
			return i, nil
		}
	}
	return -1, &EditError{VIP: name, Err: ErrNotFound}
}

// findBackend returns the index of addr among v's backends (addresses
// compared as IPs: 2001:db8::1 is 2001:DB8:0::1), -1 when not there, or a
// *ConfigError when addr is not an IP address.
func findBackend(v *config.VIP, addr string) (int, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return -1, &ConfigError{Problems: []Problem{{Path: "address", Value: fmt.Sprintf("%q", addr), Reason: "is not an IP address"}}}
	}
	for j, b := range v.Backends {
		if ba, err := netip.ParseAddr(b.Address); err == nil && ba == a {
			return j, nil
		}
	}
	return -1, nil
}

// AddVIP adds v (defaults filled in as in a document) at the end of the
// VIPs. A VIP of that name: ErrExists.
func (s *Server) AddVIP(ctx context.Context, v config.VIP) (ApplyResult, error) {
	return s.edit(ctx, func(c *config.Config) error {
		if _, err := findVIP(c, v.Name); err == nil {
			return &EditError{VIP: v.Name, Err: ErrExists}
		}
		v.Backends = slices.Clone(v.Backends)
		c.VIPs = append(c.VIPs, v)
		return nil
	})
}

// RemoveVIP removes the VIP name (ErrNotFound when there is none).
func (s *Server) RemoveVIP(ctx context.Context, name string) (ApplyResult, error) {
	return s.edit(ctx, func(c *config.Config) error {
		i, err := findVIP(c, name)
		if err != nil {
			return err
		}
		c.VIPs = slices.Delete(c.VIPs, i, i+1)
		return nil
	})
}

// AddBackend adds backend addr with weight to the VIP vip: ErrNotFound
// without that VIP, ErrExists when it already has that backend. On a
// second-chance VIP the backend starts filling (Run makes it active after
// the VIP's drain period); the configuration rules refuse it while another
// change of the VIP is in flight.
func (s *Server) AddBackend(ctx context.Context, vip, addr string, weight int) (ApplyResult, error) {
	return s.edit(ctx, func(c *config.Config) error {
		i, err := findVIP(c, vip)
		if err != nil {
			return err
		}
		v := &c.VIPs[i]
		j, err := findBackend(v, addr)
		if err != nil {
			return err
		}
		if j >= 0 {
			return &EditError{VIP: vip, Backend: addr, Err: ErrExists}
		}
		b := config.Backend{Address: addr, Weight: &weight}
		if v.SecondChance {
			// It fills first: the previous owners of the slots it takes keep
			// their connections until the drain period ends.
			b.State = config.StateFilling
		}
		v.Backends = append(v.Backends, b)
		return nil
	})
}

// existingBackend finds backend addr of the VIP vip in c: ErrNotFound when
// either is not there.
func existingBackend(c *config.Config, vip, addr string) (*config.VIP, int, error) {
	i, err := findVIP(c, vip)
	if err != nil {
		return nil, 0, err
	}
	v := &c.VIPs[i]
	j, err := findBackend(v, addr)
	if err != nil {
		return nil, 0, err
	}
	if j < 0 {
		return nil, 0, &EditError{VIP: vip, Backend: addr, Err: ErrNotFound}
	}
	return v, j, nil
}

// RemoveBackend removes backend addr from the VIP vip (ErrNotFound when
// either is not there). Its flows go where the Maglev table sends them.
func (s *Server) RemoveBackend(ctx context.Context, vip, addr string) (ApplyResult, error) {
	return s.edit(ctx, func(c *config.Config) error {
		v, j, err := existingBackend(c, vip, addr)
		if err != nil {
			return err
		}
		v.Backends = slices.Delete(v.Backends, j, j+1)
		return nil
	})
}

// SetWeight sets the weight of backend addr of the VIP vip (ErrNotFound
// when either is not there). Weight 0 drains it: it keeps its flows and
// receives no new ones.
func (s *Server) SetWeight(ctx context.Context, vip, addr string, weight int) (ApplyResult, error) {
	return s.edit(ctx, func(c *config.Config) error {
		v, j, err := existingBackend(c, vip, addr)
		if err != nil {
			return err
		}
		v.Backends[j].Weight = &weight
		return nil
	})
}

// SetState sets the state of backend addr of the VIP vip: "draining" keeps
// its flows and sends it no new ones; "active" returns it to service with
// its configured weight. ErrNotFound when either is not there; another
// state is a *ConfigError.
func (s *Server) SetState(ctx context.Context, vip, addr, state string) (ApplyResult, error) {
	return s.edit(ctx, func(c *config.Config) error {
		v, j, err := existingBackend(c, vip, addr)
		if err != nil {
			return err
		}
		v.Backends[j].State = state
		return nil
	})
}
