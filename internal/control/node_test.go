package control

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/sluicelb/sluice/internal/control/controltest"
)

// drainNode is the fake node with drain and peers.
type drainNode struct {
	*controltest.Node
	draining bool
}

func (d *drainNode) SetDraining(v bool) bool { c := d.draining != v; d.draining = v; return c }
func (d *drainNode) Draining() bool          { return d.draining }
func (d *drainNode) Announcements() []netip.Prefix {
	if d.draining {
		return nil
	}
	return []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}
}
func (d *drainNode) Peers() []PeerStatus {
	return []PeerStatus{{Address: "10.9.0.1", ASN: 65000, State: "established", Advertised: len(d.Announcements())}}
}

func TestDrainNode(t *testing.T) {
	s := New(&drainNode{Node: controltest.New()})
	st := s.NodeStatus()
	if st.Draining || !slices.Equal(st.Announced, []string{"10.0.0.1/32"}) || len(st.Peers) != 1 || st.Peers[0].Advertised != 1 {
		t.Fatalf("before drain: %+v", st)
	}
	st, err := s.DrainNode(true)
	if err != nil || !st.Draining || len(st.Announced) != 0 || st.Peers[0].Advertised != 0 {
		t.Fatalf("drained: %+v %v", st, err)
	}
	st, err = s.DrainNode(false)
	if err != nil || st.Draining || len(st.Announced) != 1 {
		t.Fatalf("undrained: %+v %v", st, err)
	}
	// A node without drain refuses, clearly.
	if _, err := New(controltest.New()).DrainNode(true); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("drain without a Drainer: %v", err)
	}
}
