package control

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/config"
)

func weights(c *config.Config, vip int) map[string]int {
	m := map[string]int{}
	for _, b := range c.VIPs[vip].Backends {
		m[b.Address] = *b.Weight
	}
	return m
}

func TestEditBackends(t *testing.T) {
	s, n := newServer(t)
	ctx := context.Background()
	before := n.Config()

	res, err := s.AddBackend(ctx, "web", "10.1.0.9", 3)
	if err != nil || !res.OK || res.Generation != 2 {
		t.Fatalf("add: %+v %v", res, err)
	}
	if w := weights(n.Config(), 0); len(w) != 3 || w["10.1.0.9"] != 3 {
		t.Fatalf("weights %v", w)
	}
	// The running configuration the node had is not written through.
	if len(before.VIPs[0].Backends) != 2 {
		t.Fatal("edit modified the previous configuration")
	}
	// The generation the node built has it.
	if g := n.Generation(); len(g.Services[0].Reals) != 3 || g.Services[0].Reals[2].Weight != 3 {
		t.Fatalf("generation %+v", g.Services[0].Reals)
	}

	if _, err := s.SetWeight(ctx, "web", "10.1.0.1", 0); err != nil {
		t.Fatal(err)
	}
	if w := weights(n.Config(), 0); w["10.1.0.1"] != 0 || w["10.1.0.9"] != 3 {
		t.Fatalf("weights %v", w)
	}
	if _, err := s.RemoveBackend(ctx, "web", "10.1.0.9"); err != nil {
		t.Fatal(err)
	}
	if w := weights(n.Config(), 0); len(w) != 2 {
		t.Fatalf("weights %v", w)
	}
	if gen, last := s.Status(); gen != 4 || !last.OK || n.Applied != 3 {
		t.Fatalf("status %d %+v, applied %d", gen, last, n.Applied)
	}
	// The other VIP is untouched.
	if w := weights(n.Config(), 1); len(w) != 1 || w["10.1.0.3"] != 1 {
		t.Fatalf("dns %v", w)
	}
}

func TestEditIPv6Equality(t *testing.T) {
	s, n := newServer(t)
	ctx := context.Background()
	if _, err := s.AddVIP(ctx, config.VIP{Name: "v6", Address: "2001:db8::1", Protocol: "tcp", Port: 443,
		Backends: []config.Backend{{Address: "2001:db8:1::1"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetWeight(ctx, "v6", "2001:DB8:1:0::1", 5); err != nil {
		t.Fatal(err)
	}
	if w := weights(n.Config(), 2); w["2001:db8:1::1"] != 5 {
		t.Fatalf("weights %v", w)
	}
	if _, err := s.AddBackend(ctx, "v6", "2001:db8:1:0:0::1", 1); !errors.Is(err, ErrExists) {
		t.Fatalf("same address spelled differently: %v", err)
	}
}

func TestEditVIPs(t *testing.T) {
	s, n := newServer(t)
	ctx := context.Background()
	v := config.VIP{Name: "api", Address: "10.0.0.3", Protocol: "tcp", Port: 443,
		Backends: []config.Backend{{Address: "10.1.0.7"}}}
	res, err := s.AddVIP(ctx, v)
	if err != nil || res.Generation != 2 {
		t.Fatalf("add: %+v %v", res, err)
	}
	c := n.Config()
	if len(c.VIPs) != 3 || c.VIPs[2].Name != "api" || c.VIPs[2].Encap != "gue" || *c.VIPs[2].Backends[0].Weight != 1 {
		t.Fatalf("defaults not filled in: %+v", c.VIPs[2])
	}
	if g := n.Generation(); len(g.Services) != 3 || g.Services[2].Name != "api" {
		t.Fatal("not in the generation")
	}
	if _, err := s.AddVIP(ctx, v); !errors.Is(err, ErrExists) {
		t.Fatalf("add twice: %v", err)
	}
	if _, err := s.RemoveVIP(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if c := n.Config(); len(c.VIPs) != 2 || c.VIPs[0].Name != "dns" || c.VIPs[1].Name != "api" {
		t.Fatalf("vips %+v", c.VIPs)
	}
}

func TestEditRefusals(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		do   func(*Server) (ApplyResult, error)
		want error
		msg  string
	}{
		{"unknown vip", func(s *Server) (ApplyResult, error) { return s.AddBackend(ctx, "nope", "10.1.0.9", 1) }, ErrNotFound, `vip "nope": not found`},
		{"unknown vip del", func(s *Server) (ApplyResult, error) { return s.RemoveVIP(ctx, "nope") }, ErrNotFound, `vip "nope": not found`},
		{"unknown backend", func(s *Server) (ApplyResult, error) { return s.RemoveBackend(ctx, "web", "10.1.0.9") }, ErrNotFound, `vip "web": backend 10.1.0.9: not found`},
		{"unknown backend weight", func(s *Server) (ApplyResult, error) { return s.SetWeight(ctx, "dns", "10.1.0.1", 2) }, ErrNotFound, `vip "dns": backend 10.1.0.1: not found`},
		{"backend exists", func(s *Server) (ApplyResult, error) { return s.AddBackend(ctx, "web", "10.1.0.2", 1) }, ErrExists, `vip "web": backend 10.1.0.2: already exists`},
		{"bad address", func(s *Server) (ApplyResult, error) { return s.SetWeight(ctx, "web", "bogus", 1) }, ErrInvalidConfig, ""},
		{"negative weight", func(s *Server) (ApplyResult, error) { return s.SetWeight(ctx, "web", "10.1.0.1", -1) }, ErrInvalidConfig, "vips[0].backends[0].weight: -1 is negative"},
		{"last backend", func(s *Server) (ApplyResult, error) { return s.RemoveBackend(ctx, "dns", "10.1.0.3") }, ErrInvalidConfig, "vips[1].backends: at least one backend is required"},
		{"family mix", func(s *Server) (ApplyResult, error) { return s.AddBackend(ctx, "dns", "2001:db8::9", 1) }, ErrInvalidConfig, "differs in family"},
		{"overlapping vip", func(s *Server) (ApplyResult, error) {
			return s.AddVIP(ctx, config.VIP{Name: "web2", Address: "10.0.0.1", Protocol: "tcp", Port: 80, Backends: []config.Backend{{Address: "10.1.0.1"}}})
		}, ErrInvalidConfig, "overlaps vips[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, n := newServer(t)
			before := n.Config()
			_, err := tc.do(s)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err %q does not say %q", err, tc.msg)
			}
			if n.Config() != before || n.Applied != 0 {
				t.Fatal("running configuration changed")
			}
			gen, last := s.Status()
			if gen != 1 {
				t.Fatalf("generation %d", gen)
			}
			// Validation refusals are recorded like PutConfig's; lookups
			// that find nothing apply nothing and record nothing.
			if recorded := !last.Time.IsZero(); recorded != errors.Is(err, ErrInvalidConfig) && tc.name != "bad address" {
				t.Fatalf("last apply %+v", last)
			}
		})
	}
}

// A refusal of the node is the apply's, recorded.
func TestEditNodeRefuses(t *testing.T) {
	s, n := newServer(t)
	n.ApplyErr = errors.New("boom")
	res, err := s.SetWeight(context.Background(), "web", "10.1.0.1", 4)
	if err == nil || res.OK || res.Error != "boom" || res.Generation != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	if _, last := s.Status(); last.OK || last.Error != "boom" {
		t.Fatalf("last %+v", last)
	}
}
