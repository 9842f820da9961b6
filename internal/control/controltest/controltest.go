// Package controltest provides a fake LB node for the control server's
// tests and its clients'.
package controltest

import (
	"context"
	"net/netip"
	"slices"
	"sync"

	"github.com/sluicelb/sluice/internal/announce"
	"github.com/sluicelb/sluice/internal/announce/l2"
	"github.com/sluicelb/sluice/internal/bypass"
	"github.com/sluicelb/sluice/internal/cluster"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/health"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// Initial is the configuration a Node starts with: VIP web (10.0.0.1 tcp
// 80) with backends 10.1.0.1 (weight 1) and 10.1.0.2 (weight 0, and its next
// hop unresolved: see Node), and VIP dns (10.0.0.2 udp 53) with 10.1.0.3.
const Initial = `node:
  interfaces: [eth0]
vips:
  - name: web
    address: 10.0.0.1
    protocol: tcp
    port: 80
    backends:
      - address: 10.1.0.1
      - address: 10.1.0.2
        weight: 0
  - name: dns
    address: 10.0.0.2
    protocol: udp
    port: 53
    backends:
      - address: 10.1.0.3
`

// Node is a fake LB node. Apply behaves like lbnode.Node's for the node
// settings (a change config.NeedsRestart names is refused) and otherwise takes the configuration; ApplyErr,
// when set, is returned instead. The generation is built from the
// configuration with every backend resolved except 10.1.0.2, and
// Real.ID = position in the configuration (web: 0, 1; dns: 2).
type Node struct {
	mu       sync.Mutex
	cfg      *config.Config
	gen      *pipeline.Generation
	Applied  int               // successful applies
	ApplyErr error             // returned by Apply when set
	Count    datapath.Counters // returned by Counters
	// HealthStates is returned by Health.
	HealthStates []health.Backend
	// Drained is the node drain state: a drained node announces nothing,
	// otherwise every VIP address.
	Drained bool
	// PeerList is returned by Peers.
	PeerList []announce.PeerStatus
	// Cluster is returned by ClusterStatus; nil: the node runs alone.
	Cluster *cluster.MemberStatus
	// L2 is returned by L2Status; nil: no node.l2.
	L2 *l2.Status
	// Filling is returned by Bypass with the decisions.
	Filling []bypass.Fill
	// FastpathOn, FastpathCounters and FastpathRedirects are returned by
	// Fastpath.
	FastpathOn        bool
	FastpathCounters  datapath.FastpathCounters
	FastpathRedirects []datapath.FastpathRedirect
}

// Fastpath reports no node.fastpath unless FastpathOn; then it returns
// FastpathCounters and FastpathRedirects.
func (n *Node) Fastpath(_ context.Context, max int) (datapath.FastpathCounters, []datapath.FastpathRedirect, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	rs := n.FastpathRedirects
	if max > 0 && len(rs) > max {
		rs = rs[:max]
	}
	return n.FastpathCounters, rs, n.FastpathOn
}

// L2Status returns *L2, or ok false when it is nil.
func (n *Node) L2Status() (l2.Status, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.L2 == nil {
		return l2.Status{}, false
	}
	return *n.L2, true
}

// Bypass returns bypass.Decide on the configuration and HealthStates, and
// Filling.
func (n *Node) Bypass() bypass.View {
	n.mu.Lock()
	defer n.mu.Unlock()
	down := func(vip, be string) bool {
		return slices.ContainsFunc(n.HealthStates, func(h health.Backend) bool {
			return h.VIP == vip && h.Backend == be && h.State == health.Down
		})
	}
	var v bypass.View
	for _, d := range bypass.Decide(n.cfg, down) {
		st := bypass.Status{Decision: d}
		if d.Bypassed {
			st.Entered = 1
		}
		v.VIPs = append(v.VIPs, st)
	}
	v.Filling = slices.Clone(n.Filling)
	return v
}

// ClusterStatus returns *Cluster, or ok false when it is nil.
func (n *Node) ClusterStatus() (cluster.MemberStatus, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.Cluster == nil {
		return cluster.MemberStatus{}, false
	}
	return *n.Cluster, true
}

// Health returns HealthStates.
func (n *Node) Health() []health.Backend {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.HealthStates
}

// QueryFlows calls nothing: the fake has no workers.
func (n *Node) QueryFlows(func(worker int, t *flow.Table)) {}

// FlowClock returns 0.
func (n *Node) FlowClock() uint32 { return 0 }

// SetDraining sets Drained and reports whether it changed.
func (n *Node) SetDraining(d bool) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	changed := n.Drained != d
	n.Drained = d
	return changed
}

// Draining returns Drained.
func (n *Node) Draining() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.Drained
}

// Announcements returns every VIP address as a host prefix, none while
// drained.
func (n *Node) Announcements() []netip.Prefix {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.Drained {
		return nil
	}
	var out []netip.Prefix
	for _, v := range n.cfg.VIPs {
		a := netip.MustParseAddr(v.Address)
		if p := netip.PrefixFrom(a, a.BitLen()); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// Peers returns PeerList.
func (n *Node) Peers() []announce.PeerStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.PeerList
}

// New returns a Node running Initial.
func New() *Node { return NewConfig(Initial) }

// NewConfig returns a Node running the configuration doc (which must
// validate), such as Initial with a cluster section.
func NewConfig(doc string) *Node {
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		panic(err)
	}
	n := &Node{cfg: cfg}
	n.gen = generation(cfg, 1)
	return n
}

// Config returns the running configuration.
func (n *Node) Config() *config.Config {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cfg
}

// Apply takes cfg, or refuses it as described on Node.
func (n *Node) Apply(_ context.Context, cfg *config.Config) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ApplyErr != nil {
		return n.ApplyErr
	}
	if err := config.NeedsRestart(&n.cfg.Node, &cfg.Node); err != nil {
		return err
	}
	n.cfg = cfg
	n.gen = generation(cfg, n.gen.ID+1)
	n.Applied++
	return nil
}

// Counters returns a copy of Count.
func (n *Node) Counters() datapath.Counters {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := n.Count
	c.Reals = append([]datapath.RealCounters(nil), c.Reals...)
	return c
}

// Generation returns the generation built from the running configuration.
func (n *Node) Generation() *pipeline.Generation {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.gen
}

// SetCounters replaces the counters.
func (n *Node) SetCounters(c datapath.Counters) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.Count = c
}

// Unresolved is the backend whose next hop the fake never resolves.
var Unresolved = netip.MustParseAddr("10.1.0.2")

// generation builds cfg's generation with a fresh builder (so IDs follow
// the configuration's order) and gives it the ID id.
func generation(cfg *config.Config, id uint32) *pipeline.Generation {
	var spec pipeline.Spec
	for _, v := range cfg.VIPs {
		proto := uint8(packet.ProtoTCP)
		if v.Protocol == "udp" {
			proto = packet.ProtoUDP
		}
		ss := pipeline.ServiceSpec{Name: v.Name, Addr: netip.MustParseAddr(v.Address), Proto: proto,
			Port: uint16(v.Port), PortEnd: uint16(v.PortEnd), M: 251}
		if v.Firewall != nil {
			set, err := v.Firewall.Compile()
			if err != nil {
				panic(err)
			}
			ss.Firewall = set
		}
		for _, b := range v.Backends {
			a := netip.MustParseAddr(b.Address)
			src := netip.MustParseAddr("10.9.9.9")
			if a.Is6() {
				src = netip.MustParseAddr("2001:db8:9::9")
			}
			ss.Backends = append(ss.Backends, pipeline.BackendSpec{Weight: uint32(*b.Weight), NoNextHop: a == Unresolved,
				Tunnel: encap.Tunnel{Mode: encap.GUE, Src: src, Dst: a, Port: 6080}})
		}
		spec.Services = append(spec.Services, ss)
	}
	g, err := pipeline.NewBuilder().Build(spec)
	if err != nil {
		panic(err)
	}
	g.ID = id
	return g
}
