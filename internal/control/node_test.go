package control

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/sluicelb/sluice/internal/announce"
	"github.com/sluicelb/sluice/internal/control/controltest"
)

func TestDrainNode(t *testing.T) {
	n := controltest.New()
	n.PeerList = []announce.PeerStatus{{Address: netip.MustParseAddr("10.9.0.1"), ASN: 65000, State: "established", Advertised: 2}}
	s := New(n)
	st := s.NodeStatus()
	if st.Draining || !slices.Equal(st.Announced, []string{"10.0.0.1/32", "10.0.0.2/32"}) || len(st.Peers) != 1 || st.Peers[0].Advertised != 2 || st.Peers[0].Address != "10.9.0.1" {
		t.Fatalf("before drain: %+v", st)
	}
	st, err := s.DrainNode(true)
	if err != nil || !st.Draining || len(st.Announced) != 0 {
		t.Fatalf("drained: %+v %v", st, err)
	}
	st, err = s.DrainNode(false)
	if err != nil || st.Draining || len(st.Announced) != 2 {
		t.Fatalf("undrained: %+v %v", st, err)
	}
}
