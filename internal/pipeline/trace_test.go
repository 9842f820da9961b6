package pipeline_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

// A trace of a full-NAT flow's packet that meets its live entry applies
// the entry's binding, as the worker does (pipeline.Hit), and says so.
func TestTraceFullNATHit(t *testing.T) {
	snat := netip.MustParseAddr("198.18.40.11")
	b := pipeline.BackendSpec{Weight: 1, Tunnel: encap.Tunnel{Mode: encap.GUE, Src: snat, Dst: netip.MustParseAddr("198.18.30.11"),
		SrcMAC: [6]byte{2, 0, 0, 0, 0, 1}, DstMAC: [6]byte{2, 0, 0, 0, 0, 2}}}
	s := pipeline.ServiceSpec{Name: "web", Addr: netip.MustParseAddr("198.18.0.10"), Proto: 6, Port: 80, NAT: true, Backends: []pipeline.BackendSpec{b}}
	g, err := pipeline.NewBuilder().Build(pipeline.Spec{SNAT: []netip.Addr{snat}, Services: []pipeline.ServiceSpec{s}})
	if err != nil {
		t.Fatal(err)
	}
	f := sim.Frame{Src: netip.MustParseAddrPort("198.18.10.2:40000"), Dst: netip.MustParseAddrPort("198.18.0.10:80"), Proto: 6, TCPFlags: sim.ACK}
	frame := make([]byte, f.Len())
	f.Encode(frame)
	live := &flow.Entry{Backend: g.Services[0].Reals[0].ID, Gen: g.ID, State: flow.StateEstablished, NATPort: 2048}
	tr := pipeline.TraceFrame(pipeline.DefaultChain(), g, frame, live, flow.ClockStart, false)
	last := tr.Steps[len(tr.Steps)-1]
	if !tr.Hit || tr.Packet.Verdict != pipeline.Forward || !strings.Contains(last.Reason, "full-NAT rewrite to 198.18.30.11 from SNAT port 2048") {
		t.Fatalf("hit %v, verdict %v, last step %+v", tr.Hit, tr.Packet.Verdict, last)
	}
}
