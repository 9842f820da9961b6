package agent

import (
	"fmt"

	"github.com/sluicelb/sluice/internal/fastpath"
	"github.com/sluicelb/sluice/internal/fastpath/egress"
)

// This file is the adapter between the agent and the fastpath egress
// program (package internal/fastpath/egress, the tc egress eBPF program
// that encapsulates the redirected flows).

// attachEgressProgram attaches the fastpath egress program to o.Interface
// with a map of o.Flows flows. The program finds each backend's next hop
// with the kernel's fib lookup, which answers only on an interface that
// forwards: an uplink that forwards neither family is refused (every
// redirect would do nothing), one that forwards a single family is logged.
func attachEgressProgram(o egressOptions) (egressProgram, error) {
	p, err := egress.Attach(egress.Options{Interface: o.Interface, Flows: o.Flows})
	if err != nil {
		return nil, err
	}
	v4, v6, err := p.Forwarding()
	switch {
	case err != nil:
		p.Close()
		return nil, err
	case !v4 && !v6:
		p.Close()
		return nil, fmt.Errorf("forwarding is off on %s: the egress program's route lookups need it "+
			"(sysctl net.ipv4.conf.%s.forwarding=1 and net.ipv6.conf.%s.forwarding=1)", o.Interface, o.Interface, o.Interface)
	case (!v4 || !v6) && o.Log != nil:
		fam := "net.ipv4"
		if v4 {
			fam = "net.ipv6"
		}
		o.Log.Warn("fastpath: forwarding is off for one family on the uplink: its redirected flows keep going through the LB tier (counted as fwd_disabled)",
			"interface", o.Interface, "sysctl", fam+".conf."+o.Interface+".forwarding")
	}
	return egressAdapter{p}, nil
}

type egressAdapter struct{ p *egress.Program }

func (a egressAdapter) put(f fastpath.Flow, t egressTarget) error {
	return a.p.Put(egress.Flow(f), egress.Target(t))
}

func (a egressAdapter) delete(f fastpath.Flow) error { return a.p.Delete(egress.Flow(f)) }

func (a egressAdapter) walk(fn func(fastpath.Flow, egressState) bool) error {
	return a.p.Walk(func(f egress.Flow, s egress.State) bool {
		return fn(fastpath.Flow(f), egressState{LastUsed: s.LastUsed, Packets: s.Packets, Bytes: s.Bytes, Ended: s.Ended})
	})
}

func (a egressAdapter) counters() (map[string]uint64, error) {
	c, err := a.p.Counters()
	if err != nil {
		return nil, err
	}
	return map[string]uint64{
		"direct_packets": c.Direct, "direct_bytes": c.DirectBytes, "ended": c.Ended, "miss": c.Miss,
		"family": c.Family, "too_big": c.TooBig, "no_csum": c.NoCsum, "gso_csum": c.GSOCsum,
		"no_route": c.NoRoute, "no_neigh": c.NoNeigh, "fwd_disabled": c.FwdDisabled,
		"adjust_err": c.AdjustErr, "parse": c.Parse,
	}, nil
}

func (a egressAdapter) close() error { return a.p.Close() }
