package pipeline

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/firewall"
	"github.com/sluicelb/sluice/internal/maglev"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/quiclb"
)

// Real is one backend of one service, as the datapath sees it.
type Real struct {
	ID       uint32          // stable while the backend stays in the service; indexes Generation.Reals
	Name     string          // Maglev identity (the backend address unless named otherwise)
	Service  int             // index of the service in Generation.Services
	Weight   uint32          // 0: draining, receives no new flows
	Template *encap.Template // nil while the next hop is unresolved: packets are dropped (no_next_hop)
	// NAT is set for the backends of a full-NAT service (forwarding: nat),
	// whose packets are rewritten instead of encapsulated; Template is then
	// nil.
	NAT *RealNAT
	// ClusterID is the backend's number in the cluster's entries
	// (BackendSpec.ClusterID).
	ClusterID uint32
	// Route is the route the next hop was chosen by (BackendSpec.Route);
	// its zero value: the kernel's main table. NoNextHop: the next hop is
	// not resolved (Route drops the backend's packets).
	Route     RouteSpec
	NoNextHop bool
}

// Service is a virtual IP with a protocol and a port or port range.
type Service struct {
	Index        int
	Name         string
	Tenant       uint8    // the tenant's ID (Generation.Tenants); 0: the default tenant
	Addr         [16]byte // IPv4-mapped for IPv4, as flow.Key stores it
	Proto        uint8
	PortLo       uint16 // 0 and PortHi 0: every port
	PortHi       uint16
	SecondChance bool  // mid-flow packets without an entry carry [owner, previous owner]
	Stateless    bool  // no flow entries: every packet goes to its slot's owner
	QUIC         *QUIC // routing by QUIC connection ID; nil for other services
	NAT          bool  // full-NAT: backends' packets are rewritten (Real.NAT)
	// Firewall is the service's rule list (first match wins); nil: every
	// packet is allowed.
	Firewall *firewall.Set
	// Chain says which of the service's flows use the cluster's owner
	// chains (ChainUse): their new flows are queued on the worker's
	// PublishQueue (Context.Publish), as ClusterID and the backend's
	// Real.ClusterID, for the node server to insert into their chains, and
	// a packet without an entry is held while the chain is asked
	// (Context.Ask).
	Chain     ChainUse
	ClusterID uint16
	// InFlight: a backend of the service is filling or draining (a change
	// in its life cycle, derived from the states alone, so the same on
	// every node).
	InFlight bool
	// Fastpath lists the client prefixes whose established flows are
	// redirected to their hosts' agents (ServiceSpec.Fastpath); nil: none.
	Fastpath []netip.Prefix
	Table    *maglev.Table
	Reals    []*Real // indexed like Table.Backends()
}

// Generation is one immutable configuration of the datapath.
type Generation struct {
	ID   uint32
	Seed uint64 // cluster-wide hash seed: identical on every node
	// MTU is the largest outer IP packet the links send (0: no limit);
	// what would exceed it is answered or spilled as TooBig says.
	MTU    int
	TooBig TooBigPolicy
	// ICMPRate is how many ICMP "too big" answers each worker sends per
	// second at most (bursts of up to ICMPRate/10 + 1).
	ICMPRate int
	// SpillRate is how many packets each worker sends through the kernel
	// per second at most (Spill verdicts and held fragments: a system call
	// each, and kernel fragmentation); beyond it they are dropped
	// (ReasonSpillLimited).
	SpillRate int
	// Fragments makes later fragments of a datagram follow its first
	// fragment's backend; off, they are dropped (ReasonFragment).
	Fragments bool
	Services  []*Service
	Reals     []*Real // indexed by Real.ID; nil for IDs not in this generation
	// Tenants are the tenants' names by ID; Tenants[0] is the default
	// tenant (""), that of packets not classified into another.
	Tenants []string

	tenants tenantClassifier

	exact map[serviceKey]*Service // services with a single port
	wide  map[serviceKey][]*Service
	addrs map[[16]byte]bool // every service address: true when a full-NAT service has it
}

// TooBigPolicy is what the datapath does with a packet that does not fit the
// MTU once encapsulated.
type TooBigPolicy uint8

const (
	// TooBigAnswer answers what may be answered with an ICMP "fragmentation
	// needed" (IPv4 with DF) or "packet too big" (IPv6), from the VIP to
	// the client, which lowers its path MTU and sends smaller packets; what
	// may not (IPv4 without DF, fragments) it sends through the kernel,
	// which fragments the outer packet (Spill). The default.
	TooBigAnswer TooBigPolicy = iota
	// TooBigDrop drops it (ReasonTooBig).
	TooBigDrop
)

// Defaults of Generation.ICMPRate and SpillRate.
const (
	DefaultICMPRate  = 1000
	DefaultSpillRate = 50000
)

// FastpathClient reports whether a flow from src (as flow.Key stores it)
// is one the service redirects to its client host's agent.
func (s *Service) FastpathClient(src *[16]byte) bool {
	if s.Fastpath == nil {
		return false
	}
	a := netip.AddrFrom16(*src).Unmap()
	for _, p := range s.Fastpath {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// IsServiceAddr reports whether some service has the address dst.
func (g *Generation) IsServiceAddr(dst [16]byte) bool {
	_, ok := g.addrs[dst]
	return ok
}

// IsNATAddr reports whether some full-NAT service has the address dst.
func (g *Generation) IsNATAddr(dst [16]byte) bool { return g.addrs[dst] }

type serviceKey struct {
	addr   [16]byte
	port   uint16 // 0 in wide
	proto  uint8
	tenant uint8
}

// Lookup returns the default tenant's service for a destination address,
// protocol and port, or nil.
func (g *Generation) Lookup(dst [16]byte, proto uint8, port uint16) *Service {
	return g.LookupTenant(0, dst, proto, port)
}

// LookupTenant returns tenant's service for a destination address,
// protocol and port, or nil: a tenant sees only its own services.
func (g *Generation) LookupTenant(tenant uint8, dst [16]byte, proto uint8, port uint16) *Service {
	if s := g.exact[serviceKey{dst, port, proto, tenant}]; s != nil {
		return s
	}
	for _, s := range g.wide[serviceKey{dst, 0, proto, tenant}] {
		if s.PortLo == 0 && s.PortHi == 0 || port >= s.PortLo && port <= s.PortHi {
			return s
		}
	}
	return nil
}

// Real returns the backend with the given ID if it belongs to svc in g,
// else nil: the rule by which a flow entry's backend is still in service.
func (g *Generation) Real(id uint32, svc *Service) *Real { return g.real(id, svc) }

// RealByID returns the backend a flow entry's Backend names, in whichever
// service it is (Real.Service); nil for Denied or an ID not in g.
func (g *Generation) RealByID(id uint32) *Real {
	if int(id) < len(g.Reals) {
		return g.Reals[id]
	}
	return nil
}

// real returns the backend with the given ID if it belongs to svc in g.
func (g *Generation) real(id uint32, svc *Service) *Real {
	if int(id) < len(g.Reals) {
		if r := g.Reals[id]; r != nil && r.Service == svc.Index {
			return r
		}
	}
	return nil
}

// Spec is the datapath's view of a configuration: what the control plane
// hands to a Builder.
type Spec struct {
	Seed      uint64
	MTU       int // see Generation.MTU
	TooBig    TooBigPolicy
	ICMPRate  int // 0: DefaultICMPRate
	SpillRate int // 0: DefaultSpillRate
	Fragments bool
	// SNAT is the node's SNAT addresses, in the order of the workers'
	// nat.Pool: full-NAT services' packets leave from one of them.
	SNAT     []netip.Addr
	Services []ServiceSpec
	// Tenants are classified by the VNI of VXLAN packets sent to VXLAN
	// (the node's VTEP address) on VXLANPort (0: packet.VXLANPort).
	Tenants   []TenantSpec
	VXLAN     netip.Addr
	VXLANPort uint16
}

// ServiceSpec describes one service.
type ServiceSpec struct {
	Name         string
	Tenant       string // a TenantSpec's Name; "": the default tenant
	Addr         netip.Addr
	Proto        uint8 // packet.ProtoTCP or packet.ProtoUDP
	Port         uint16
	PortEnd      uint16 // 0: only Port; Port 0 and PortEnd 0: every port
	M            uint32 // Maglev table size; 0 = maglev.DefaultM
	SecondChance bool
	// Stateless keeps no flow entries for the service: every packet goes to
	// the Maglev owner of its slot (affinity: stateless).
	Stateless bool
	// QUIC routes the service's packets by the server ID in their QUIC
	// destination connection ID (QUIC-LB), decoded with this codec; nil:
	// 4-tuple routing. UDP only; such a service keeps no flow entries.
	QUIC *quiclb.Codec
	// NAT forwards by full-NAT (forwarding: nat): the destination becomes
	// the backend's address with the service's port, the source one of
	// Spec.SNAT. It needs a single port, flow entries (not Stateless, not
	// QUIC) and no second chance. The backends' Tunnel gives the address
	// and the next hop (MACs, VLAN); its mode and source are ignored.
	NAT bool
	// Firewall is the service's compiled rule list; nil: allow everything.
	Firewall *firewall.Set
	Backends []BackendSpec
	// Chain: which flows use the cluster's owner chains (ChainUse), with
	// ClusterID and the backends' BackendSpec.ClusterID. Ignored for
	// stateless, QUIC and full-NAT services.
	Chain     ChainUse
	ClusterID uint16
	// Fastpath lists the client prefixes whose established flows the node
	// redirects to their hosts' agents (VIP fastpath; GUE services with
	// flow entries only); nil: none.
	Fastpath []netip.Prefix
}

// ChainUse says which of a service's flows use the cluster's owner chains.
type ChainUse uint8

const (
	// ChainNever: every decision is the node's own (no cluster, a
	// stateless or QUIC service).
	ChainNever ChainUse = iota
	// ChainAlways (affinity always): every new flow is published to its
	// chain, and a packet without an entry asks the chain.
	ChainAlways
	// ChainChanged (affinity on-change): while a backend change is in
	// flight (Service.InFlight), the flows of the slots whose owner it
	// changes (their previous owner in the Maglev table differs):
	// published when new, asked about when a packet has no entry.
	ChainChanged
)

// chain is the service's ChainUse: never for stateless and QUIC services
// (no flow entries; QUIC routes by connection ID) and full-NAT ones (their
// entries hold a binding of this node's SNAT ports).
func (ss *ServiceSpec) chain() ChainUse {
	if ss.Stateless || ss.QUIC != nil || ss.NAT {
		return ChainNever
	}
	return ss.Chain
}

// Chained reports whether a flow of svc with key hash hash uses the
// cluster's owner chain (Service.Chain).
func (svc *Service) Chained(hash uint64) bool {
	switch svc.Chain {
	case ChainAlways:
		return true
	case ChainChanged:
		if !svc.InFlight {
			return false
		}
		owner, prev := svc.Table.Slot(hash)
		return prev != owner && prev != maglev.NoBackend
	}
	return false
}

// ChainProposal is the backend a node proposes to a chained flow's chain
// for a packet without an entry that does not start a connection, given
// its own decision d: for an on-change service, the slot's previous owner
// while it is in the service (the flow most likely started before the
// change: had it started after, its first packet's node would have
// published it), else d.
func (svc *Service) ChainProposal(hash uint64, d *Real) *Real {
	if svc.Chain != ChainChanged {
		return d
	}
	owner, prev := svc.Table.Slot(hash)
	if prev == owner || prev == maglev.NoBackend || int(prev) >= len(svc.Reals) || svc.Reals[prev] == nil {
		return d
	}
	return svc.Reals[prev]
}

// RealByClusterID returns the backend of svc whose Real.ClusterID is id, or
// nil (a backend that left the service, or none of its own).
func (svc *Service) RealByClusterID(id uint32) *Real {
	for _, r := range svc.Reals {
		if r != nil && r.ClusterID == id {
			return r
		}
	}
	return nil
}

// BackendSpec describes one backend of a service.
type BackendSpec struct {
	Name   string // identity for Maglev; empty: Tunnel.Dst.String()
	Weight uint32
	Tunnel encap.Tunnel
	// NoNextHop marks a backend whose next hop is not resolved: it keeps
	// its place in the Maglev table (every LB node must build the same
	// table), but its packets are dropped and counted until it resolves.
	// Tunnel MACs are then ignored.
	NoNextHop bool
	// State is the backend's life-cycle state (second chance): it decides
	// the backend's weight in the current Maglev table and in the previous
	// one, whose owners are the slots' secondaries.
	State BackendState
	// ServerID is the backend's QUIC-LB server ID: required, of the
	// codec's server ID length and unique in the service when the service
	// has a QUIC codec; ignored otherwise.
	ServerID quiclb.ServerID
	// ClusterID is the backend's number in the cluster (the same on every
	// node); used by services that publish their flows.
	ClusterID uint32
	// Route is the tenant's route that chose the next hop the Tunnel's
	// MACs were resolved for (LookupRoute); zero: the kernel's main table.
	Route RouteSpec
}

// BackendState is where a backend is in its life cycle. Both tables are
// derived from the states, never from the node's history, so every node
// — one that just restarted included — has the same owner and previous
// owner for every slot.
type BackendState uint8

const (
	// BackendActive: in both tables with its weight.
	BackendActive BackendState = iota
	// BackendFilling: newly added; in the current table only (absent from
	// the previous one), so its slots' previous owners keep the connections
	// they had.
	BackendFilling
	// BackendDraining: leaving; absent from the current table and with its
	// weight in the previous one, so it keeps the connections of its old
	// slots (and the others those of the slots its leaving moved).
	BackendDraining
)

// weights returns a backend's weight in the current and the previous table.
func (bs *BackendSpec) weights() (cur, prev uint32) {
	switch bs.State {
	case BackendFilling:
		return bs.Weight, 0
	case BackendDraining:
		return 0, bs.Weight
	}
	return bs.Weight, bs.Weight
}

// Builder turns Specs into Generations. It keeps the previous generation so
// that backend IDs stay stable across generations (flow entries name their
// backend by ID). A Builder is used by one goroutine.
type Builder struct {
	gen    *Generation
	ids    map[realKey]uint32
	nextID uint32
}

type realKey struct {
	service serviceKey
	portHi  uint16
	name    string
}

// ErrSpec wraps every validation error of Build.
var ErrSpec = errors.New("invalid datapath spec")

// NewBuilder returns a builder with no generation.
func NewBuilder() *Builder { return &Builder{ids: make(map[realKey]uint32)} }

// Current returns the last generation built, or nil.
func (b *Builder) Current() *Generation { return b.gen }

// Build validates spec and returns the next generation. On error the builder
// is unchanged and the running generation stays in force.
func (b *Builder) Build(spec Spec) (*Generation, error) {
	g := &Generation{
		Seed:      spec.Seed,
		MTU:       spec.MTU,
		TooBig:    spec.TooBig,
		ICMPRate:  spec.ICMPRate,
		SpillRate: spec.SpillRate,
		Fragments: spec.Fragments,
		Tenants:   []string{""},
		exact:     make(map[serviceKey]*Service),
		wide:      make(map[serviceKey][]*Service),
		addrs:     make(map[[16]byte]bool),
	}
	if g.ICMPRate <= 0 {
		g.ICMPRate = DefaultICMPRate
	}
	if g.SpillRate <= 0 {
		g.SpillRate = DefaultSpillRate
	}
	if b.gen != nil {
		g.ID = b.gen.ID + 1
	} else {
		g.ID = 1
	}
	tenantIDs, err := g.tenants.build(spec, &g.Tenants)
	if err != nil {
		return nil, err
	}
	ids := make(map[realKey]uint32, len(b.ids))
	nextID := b.nextID
	type claim struct {
		lo, hi uint16
		name   string
	}
	claims := make(map[serviceKey][]claim)

	for si, ss := range spec.Services {
		errf := func(format string, a ...any) error {
			return fmt.Errorf("%w: services[%d] (%s): %s", ErrSpec, si, ss.Name, fmt.Sprintf(format, a...))
		}
		if !ss.Addr.IsValid() {
			return nil, errf("address is not set")
		}
		if ss.Proto != packet.ProtoTCP && ss.Proto != packet.ProtoUDP {
			return nil, errf("protocol %d is not tcp (6) or udp (17)", ss.Proto)
		}
		lo, hi := ss.Port, ss.PortEnd
		if hi == 0 {
			hi = lo
		}
		if hi < lo {
			return nil, errf("port range %d-%d is reversed", lo, hi)
		}
		tenant, ok := tenantIDs[ss.Tenant]
		if !ok {
			return nil, errf("tenant %q is not defined", ss.Tenant)
		}
		key := serviceKey{addr: ss.Addr.As16(), proto: ss.Proto, tenant: tenant}
		wk := key
		for _, c := range claims[wk] {
			if lo <= c.hi && c.lo <= hi || lo == 0 && hi == 0 || c.lo == 0 && c.hi == 0 {
				return nil, errf("ports %d-%d overlap service %s", lo, hi, c.name)
			}
		}
		claims[wk] = append(claims[wk], claim{lo, hi, ss.Name})

		svc := &Service{
			Index: si, Name: ss.Name, Tenant: tenant, Addr: key.addr, Proto: ss.Proto,
			PortLo: lo, PortHi: hi, SecondChance: ss.SecondChance, Stateless: ss.Stateless, NAT: ss.NAT,
			Firewall: ss.Firewall,
			Chain:    ss.chain(), ClusterID: ss.ClusterID,
		}
		if len(ss.Fastpath) > 0 && !ss.Stateless && ss.QUIC == nil && !ss.NAT {
			svc.Fastpath = slices.Clone(ss.Fastpath)
		}
		if ss.NAT {
			if err := checkNATService(&ss, spec.SNAT); err != nil {
				return nil, errf("%v", err)
			}
		}
		if lo == hi && lo != 0 {
			svc.PortLo, svc.PortHi = lo, lo
			key.port = lo
			g.exact[key] = svc
		} else {
			g.wide[wk] = append(g.wide[wk], svc)
		}
		g.addrs[key.addr] = g.addrs[key.addr] || ss.NAT

		members := make([]maglev.Backend, 0, len(ss.Backends))
		prevMembers := make([]maglev.Backend, 0, len(ss.Backends))
		inFlight := false // a backend fills or drains
		byName := make(map[string]*Real, len(ss.Backends))
		var family netip.Addr
		for bi, bs := range ss.Backends {
			var rn *RealNAT
			var tmpl *encap.Template
			var err error
			if ss.NAT {
				rn, err = compileRealNAT(&bs, lo, spec.SNAT)
			} else {
				tmpl, err = encap.Compile(bs.Tunnel)
			}
			if err != nil {
				return nil, errf("backends[%d]: %v", bi, err)
			}
			if bs.NoNextHop {
				tmpl = nil
			}
			if family.IsValid() && family.Is4() != bs.Tunnel.Dst.Is4() {
				return nil, errf("backends[%d]: %s mixes address families with %s", bi, bs.Tunnel.Dst, family)
			}
			family = bs.Tunnel.Dst
			name := bs.Name
			if name == "" {
				name = bs.Tunnel.Dst.String()
			}
			if byName[name] != nil {
				return nil, errf("backends[%d]: duplicate backend %q", bi, name)
			}
			rk := realKey{service: serviceKey{key.addr, lo, ss.Proto, tenant}, portHi: hi, name: name}
			id, ok := b.ids[rk]
			if !ok {
				if id, ok = ids[rk]; !ok {
					id = nextID
					nextID++
				}
			}
			ids[rk] = id
			cur, prev := bs.weights()
			inFlight = inFlight || bs.State != BackendActive
			r := &Real{ID: id, Name: name, Service: si, Weight: cur, Template: tmpl, NAT: rn, ClusterID: bs.ClusterID,
				Route: bs.Route, NoNextHop: bs.NoNextHop}
			byName[name] = r
			if bs.State != BackendDraining {
				// A draining backend is absent from the current table (not
				// drained by weight 0): the table it leaves behind is the
				// one of the set without it, so removing it later moves
				// nothing more. It stays reachable as a previous owner.
				members = append(members, maglev.Backend{Name: name, Weight: cur})
			}
			if bs.State != BackendFilling {
				// A filling backend is absent from the previous table, not
				// drained: that is the table before it was added.
				prevMembers = append(prevMembers, maglev.Backend{Name: name, Weight: prev})
			}
		}
		opts := maglev.Options{M: ss.M, Seed: spec.Seed}
		svc.InFlight = inFlight
		table, err := b.tables(svc, members, prevMembers, inFlight, opts)
		if err != nil {
			return nil, errf("maglev: %v", err)
		}
		svc.Table = table
		if ss.QUIC != nil {
			if svc.QUIC, err = newQUIC(ss, byName); err != nil {
				return nil, errf("%v", err)
			}
		}
		// Backends that are only previous owners keep no Real: a packet whose
		// slot names them as secondary goes to the owner alone.
		for _, mb := range table.Backends() {
			svc.Reals = append(svc.Reals, byName[mb.Name])
		}
		g.Services = append(g.Services, svc)
	}

	g.Reals = make([]*Real, nextID)
	for _, svc := range g.Services {
		for _, r := range svc.Reals {
			if r != nil {
				g.Reals[r.ID] = r
			}
		}
	}
	b.gen, b.ids, b.nextID = g, ids, nextID
	return g, nil
}

// tables builds a service's Maglev table and chooses its previous owners
// (the second-chance secondaries):
//
//   - a change in flight (a backend filling or draining): the owners of the
//     backend set before it, derived from the states alone, so every node
//     — one that just restarted too — has them;
//   - otherwise, a change made without the life cycle (e.g. a backend
//     removed): the owners of the running generation, as this node knew
//     them;
//   - and every slot that neither gives another previous owner keeps the
//     one it had in the running generation: the last owner it had before
//     its current one, so connections an earlier change moved keep their
//     second chance on the nodes that saw that change.
func (b *Builder) tables(svc *Service, members, prevMembers []maglev.Backend, inFlight bool, opts maglev.Options) (*maglev.Table, error) {
	old := b.running(svc)
	if old != nil && old.Table.M() == effectiveM(opts.M) {
		opts.Inherit = old.Table
	}
	if inFlight {
		prev, err := maglev.Build(prevMembers, maglev.Options{M: opts.M, Seed: opts.Seed}, nil)
		if err != nil {
			return nil, err
		}
		return maglev.Build(members, opts, prev)
	}
	table, err := maglev.Build(members, opts, nil)
	if err != nil || opts.Inherit == nil || sameOwners(table, old.Table) {
		return table, err
	}
	return maglev.Build(members, opts, old.Table)
}

// effectiveM is the table size Build uses for m.
func effectiveM(m uint32) uint32 {
	if m == 0 {
		return maglev.DefaultM
	}
	return m
}

// running returns the service of the running generation with the same
// address, protocol and ports as svc.
func (b *Builder) running(svc *Service) *Service {
	if b.gen == nil {
		return nil
	}
	for _, o := range b.gen.Services {
		if o.Addr == svc.Addr && o.Proto == svc.Proto && o.PortLo == svc.PortLo && o.PortHi == svc.PortHi && o.Tenant == svc.Tenant {
			return o
		}
	}
	return nil
}

// sameOwners reports whether two tables of the same size give every slot
// the same owner (by name).
func sameOwners(a, b *maglev.Table) bool {
	ab, bb := a.Backends(), b.Backends()
	name := func(bs []maglev.Backend, i uint16) string {
		if i == maglev.NoBackend {
			return ""
		}
		return bs[i].Name
	}
	for s := range a.M() {
		if name(ab, a.Owner(s)) != name(bb, b.Owner(s)) {
			return false
		}
	}
	return true
}
