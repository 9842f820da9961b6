package datapath

import (
	"fmt"
	"net/netip"

	"github.com/sluicelb/sluice/internal/nat"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// natSeed seeds the workers' reply tables. It is the node's own (replies
// come back to the worker that made the binding) and fixed, so that
// node.seed may change while bindings live.
const natSeed = 0x6e61745f72657673

// setupNAT gives every worker its full-NAT state when the node has SNAT
// addresses: worker i owns share i of the layout (dealt over all workers),
// and its flow table reports removed entries so that their bindings go
// with them.
func setupNAT(workers []*Worker, snat []netip.Addr, l nat.Layout) error {
	if len(snat) == 0 {
		return nil
	}
	if l == (nat.Layout{}) {
		l = nat.DefaultLayout(len(workers))
	}
	l.Workers = len(workers)
	if err := l.Validate(); err != nil {
		return fmt.Errorf("datapath: SNAT ports: %w", err)
	}
	for i, w := range workers {
		s, err := pipeline.NewNATState(snat, l, i, natSeed)
		if err != nil {
			return fmt.Errorf("datapath: SNAT: %w", err)
		}
		w.ctx.NAT = s
		w.flows.OnRemove(s.Removed)
	}
	return nil
}
