package lbnode

import (
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/sluicelb/sluice/internal/cluster"
	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// An on-change service's backend change starts when its table gets slots
// whose owner changed (a backend filling), and completes when none are left
// (the backend active): the publisher is told to publish the service's
// entries at the start and to drop its chain entries at the end; a change
// already noted is not noted again; a service that leaves drops its
// entries.
func TestChainChanges(t *testing.T) {
	n := &Node{log: slog.New(slog.DiscardHandler), clSetup: &cluster.Setup{}}
	b := pipeline.NewBuilder()
	gen := func(states ...pipeline.BackendState) *pipeline.Generation {
		s := pipeline.ServiceSpec{Name: "web", Addr: netip.MustParseAddr("198.18.0.10"), Proto: 6, Port: 80,
			Chain: pipeline.ChainChanged, ClusterID: 7}
		for i, st := range states {
			s.Backends = append(s.Backends, pipeline.BackendSpec{Weight: 1, State: st, ClusterID: uint32(i),
				Tunnel: encap.Tunnel{Mode: encap.GUE, Src: netip.MustParseAddr("198.18.0.2"), Dst: netip.AddrFrom4([4]byte{198, 18, 1, byte(11 + i)})}})
		}
		spec := pipeline.Spec{}
		if len(states) > 0 {
			spec.Services = []pipeline.ServiceSpec{s}
		}
		g, err := b.Build(spec)
		if err != nil {
			t.Fatal(err)
		}
		n.chainChanges(g)
		return g
	}
	expect := func(step string, republish, drop []uint16) {
		t.Helper()
		r, d := n.chainWork.take()
		if !slices.Equal(r, republish) || !slices.Equal(d, drop) {
			t.Fatalf("%s: republish %v drop %v, want %v %v", step, r, d, republish, drop)
		}
	}
	A, F := pipeline.BackendActive, pipeline.BackendFilling
	gen(A, A, A)
	expect("steady state", nil, nil)
	gen(A, A, A, F)
	expect("a backend filling", []uint16{7}, nil)
	gen(A, A, A, F)
	expect("the same change again", nil, nil)
	gen(A, A, A, A)
	expect("the backend active", nil, []uint16{7})
	gen(A, A, A, A)
	expect("steady state again", nil, nil)
	gen(A, A, A, A, F)
	expect("another change", []uint16{7}, nil)
	gen()
	expect("the service left", nil, []uint16{7})
}
