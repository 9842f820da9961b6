package sim

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// Config describes a simulated run: Flows client connections to one VIP,
// each sending PacketsPerFlow packets (TCP: a SYN, ACKs, a FIN), interleaved
// so that every flow is open at once, through one worker over the in-memory
// link.
type Config struct {
	VIP            netip.AddrPort
	Proto          uint8 // 6 or 17
	Backends       []netip.Addr
	Clients        netip.Prefix
	Flows          int
	PacketsPerFlow int
	Payload        int
	M              uint32 // Maglev table size, 0 = default
	Seed           uint64
	FlowCapacity   int // 0 = Flows
}

// Result is what a run measured.
type Result struct {
	Counters datapath.Counters
	Gen      *pipeline.Generation
	Elapsed  time.Duration
}

// Run executes c.
func Run(c Config) (*Result, error) {
	if c.Flows <= 0 || c.PacketsPerFlow <= 0 {
		return nil, errors.New("sim: flows and packets per flow must be positive")
	}
	if !c.VIP.IsValid() || len(c.Backends) == 0 || !c.Clients.IsValid() {
		return nil, errors.New("sim: a VIP, a client prefix and at least one backend are needed")
	}
	if c.Clients.Addr().Is4() != c.VIP.Addr().Is4() {
		return nil, fmt.Errorf("sim: client prefix %v and VIP %v differ in family", c.Clients, c.VIP)
	}
	svc := pipeline.ServiceSpec{Name: "sim", Addr: c.VIP.Addr(), Proto: c.Proto, Port: c.VIP.Port(), M: c.M}
	lbAddr := netip.MustParseAddr("198.18.0.2")
	if c.Backends[0].Is6() {
		lbAddr = netip.MustParseAddr("2001:db8::2")
	}
	for _, b := range c.Backends {
		svc.Backends = append(svc.Backends, pipeline.BackendSpec{Weight: 1, Tunnel: encap.Tunnel{
			Mode: encap.GUE, Src: lbAddr, Dst: b,
			SrcMAC: [6]byte{0x02, 0, 0, 0, 0, 2}, DstMAC: [6]byte{0x02, 0, 0, 0, 0, 1},
		}})
	}
	gen, err := pipeline.NewBuilder().Build(pipeline.Spec{Seed: c.Seed, Services: []pipeline.ServiceSpec{svc}})
	if err != nil {
		return nil, err
	}

	total := uint64(c.Flows) * uint64(c.PacketsPerFlow)
	patch := NewPatcher(Frame{Dst: c.VIP, Proto: c.Proto, Payload: c.Payload}, Clients{Prefix: c.Clients})
	var k uint64
	src := func(b []byte) int {
		if k == total {
			return 0
		}
		flowIdx, seq := uint32(k%uint64(c.Flows)), k/uint64(c.Flows)
		k++
		flags := uint8(ACK)
		switch {
		case seq == 0:
			flags = SYN
		case seq == uint64(c.PacketsPerFlow-1):
			flags = FIN | ACK
		}
		return patch.Write(b, flowIdx, flags)
	}
	l := mem.New(mem.Config{Source: src})
	capacity := c.FlowCapacity
	if capacity == 0 {
		capacity = c.Flows
	}
	dp, err := datapath.New(datapath.Config{Links: []link.Link{l}, FlowCapacity: capacity})
	if err != nil {
		return nil, err
	}
	dp.Apply(gen)
	w := dp.Workers()[0]
	start := time.Now()
	for k < total {
		if _, err := w.Poll(); err != nil {
			return nil, err
		}
	}
	return &Result{Counters: dp.Counters(), Gen: gen, Elapsed: time.Since(start)}, nil
}
