package agent

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/flow"
)

// A capture of one client copies that client's packets the agent delivers
// (the inner packet, as written to the TUN device) and those it forwards
// to a second-chance hop; another client's are not copied; a second
// capture is refused; after Stop nothing is copied.
func TestCapture(t *testing.T) {
	h := newHarness(t, Config{})
	h.a.clock = flow.NewClock()
	other := netip.MustParseAddrPort("198.18.3.8:40002")
	c, err := h.a.StartCapture(datapath.CaptureFilter{Tenant: -1, Host: netip.PrefixFrom(client4.Addr(), 32)}, true, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.a.StartCapture(datapath.CaptureFilter{Tenant: -1}, true, true); !errors.Is(err, ErrCaptureRunning) {
		t.Fatalf("a second capture: %v", err)
	}
	syn4 := tcpPacket(client4, vp4, tcpSYN)
	ack4 := tcpPacket(client4, vp4, tcpACK)
	h.handle(hops(syn4, 1, self, peer))                          // delivered: the SYN is this host's
	h.handle(gue(4, nil, ack4))                                  // delivered: no hop list
	h.handle(hops(tcpPacket(other, vp4, tcpACK), 1, self, peer)) // another client, forwarded
	h.handle(gue(4, nil, tcpPacket(other, vp4, tcpACK)))         // another client, delivered
	// This client's ACK of a connection the host does not have: forwarded.
	h.handle(hops(tcpPacket(netip.AddrPortFrom(client4.Addr(), 40999), vp4, tcpACK), 1, self, peer))
	var got []datapath.CaptureRecord
	c.Drain(func(r *datapath.CaptureRecord) { got = append(got, *r) })
	if len(got) != 3 || got[0].Egress || got[1].Egress || !got[2].Egress {
		t.Fatalf("%d records (egress: %v)", len(got), func() (e []bool) {
			for _, r := range got {
				e = append(e, r.Egress)
			}
			return
		}())
	}
	if !bytes.Equal(got[0].Data[:got[0].N], syn4) || !bytes.Equal(got[1].Data[:got[1].N], ack4) {
		t.Error("the delivered records are not the inner packets")
	}
	c.Stop()
	h.handle(gue(4, nil, ack4))
	if n := c.Drain(func(*datapath.CaptureRecord) {}); n != 0 || c.Dropped() != 0 {
		t.Fatalf("%d records after Stop, %d dropped", n, c.Dropped())
	}
}
