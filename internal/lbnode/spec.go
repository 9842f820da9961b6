package lbnode

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/firewall"
	"github.com/sluicelb/sluice/internal/health"
	"github.com/sluicelb/sluice/internal/nexthop"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// The functions here turn the running configuration, the next hops and the
// health states into what the datapath and the checker run. They read the
// state of the serve goroutine and are called only by it (or, for
// CheckFile, on a node that never served).

// healthKey names the check of one backend of one VIP.
func healthKey(vip, backend string) string { return vip + " " + backend }

// healthSpec is the check of backend b of VIP v, per v.Health.
func (n *Node) healthSpec(v config.VIP, b netip.Addr) health.Spec {
	h := v.Health
	port := h.Port
	if port == 0 {
		port = v.Port
	}
	s := health.Spec{
		Target:   netip.AddrPortFrom(b, uint16(port)),
		Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall,
	}
	switch h.Type {
	case "vip":
		s.Kind = health.VIP
		s.Target = netip.AddrPortFrom(b, uint16(n.st.cfg.Node.GUEPort))
		s.VIP = netip.AddrPortFrom(netip.MustParseAddr(v.Address), uint16(v.Port))
		s.Proto = v.Protocol
	case "tcp":
		s.Kind = health.TCP
	case "http", "https":
		s.Kind = health.HTTP
		if h.Type == "https" {
			s.Kind = health.HTTPS
		}
		s.Path, s.ExpectStatus = h.Path, h.ExpectStatus
	case "udp":
		s.Kind = health.UDP
		s.Send, s.Expect = []byte(h.Send), []byte(h.Expect)
	}
	return s
}

// spec turns the configuration and the resolved next hops into a datapath
// spec. hops describes each backend's resolution, for change detection and
// logs.
func (n *Node) spec(ctx context.Context) (pipeline.Spec, map[netip.Addr]string) {
	c := n.st.cfg
	bp := n.planBypass(time.Now())
	spec := pipeline.Spec{
		Seed:      c.Node.Seed,
		MTU:       c.Node.MTU,
		ICMPRate:  max(c.Node.ICMPRate/max(len(n.links), 1), 1),
		Fragments: c.Node.Fragments == config.FragmentsForward,
		SNAT:      c.Node.SNATAddrs(),
	}
	if c.Node.TooBig == config.TooBigDrop {
		spec.TooBig = pipeline.TooBigDrop
	}
	for _, t := range c.Tenants {
		ts := pipeline.TenantSpec{Name: t.Name, VNI: t.VNI, VLAN: uint16(t.VLAN)}
		for _, v := range t.VTEPs {
			p, _ := config.ParsePrefixOrAddr(v) // validated
			ts.VTEPs = append(ts.VTEPs, p)
		}
		spec.Tenants = append(spec.Tenants, ts)
	}
	if c.VXLAN != nil && len(c.Tenants) > 0 {
		spec.VXLAN, spec.VXLANPort = netip.MustParseAddr(c.VXLAN.Address), uint16(c.VXLAN.Port)
	}
	hops := map[netip.Addr]string{}
	resolved := map[netip.Addr]nexthop.Hop{}
	routes := tenantRoutes(c)
	for _, v := range c.VIPs {
		for _, b := range v.Backends {
			a := netip.MustParseAddr(b.Address)
			to, _ := routeTo(routes[v.Tenant], a)
			if _, done := hops[to]; done {
				continue
			}
			if n.res == nil { // Check: no network to resolve in
				hops[to] = "unresolved: not checked"
				continue
			}
			h, err := n.res.Resolve(ctx, to)
			if err != nil {
				hops[to] = "unresolved: " + err.Error()
			} else if why := hopProblem(a, to, h, c.Node.Interfaces); why != "" {
				hops[to] = "unresolved: " + why
			} else {
				hops[to] = h.String()
				resolved[to] = h
			}
			if _, ok := resolved[to]; !ok {
				n.log.Warn("backend next hop unresolved; its packets are dropped (no_next_hop)", "backend", a, "via", to, "reason", hops[to])
			}
		}
	}
	for _, v := range c.VIPs {
		vip := netip.MustParseAddr(v.Address)
		proto := uint8(packet.ProtoTCP)
		if v.Protocol == "udp" {
			proto = packet.ProtoUDP
		}
		s := pipeline.ServiceSpec{
			Name: v.Name, Tenant: v.Tenant, Addr: vip, Proto: proto, Port: uint16(v.Port), PortEnd: uint16(v.PortEnd),
			M: v.MaglevSize, SecondChance: v.SecondChance,
			// A bypassed address keeps no flow state: the packets that
			// still reach the node go to its one backend.
			Stateless: v.Affinity == config.AffinityStateless || bp.bypassed(vip),
			NAT:       v.Forwarding == config.ForwardingNAT,
		}
		if v.Fastpath {
			s.Fastpath = v.FastpathClientPrefixes()
		}
		mode := encap.GUE
		if v.Forwarding == config.ForwardingIPIP {
			mode = encap.IPIP
		}
		for _, b := range v.Backends {
			if n.down(v, b.Address) {
				continue // failed its health check: out of the table
			}
			a := netip.MustParseAddr(b.Address)
			to, rt := routeTo(routes[v.Tenant], a)
			h, ok := resolved[to]
			t := encap.Tunnel{Mode: mode, Dst: a, Port: uint16(c.Node.GUEPort), Src: n.source(a, h)}
			if ok {
				copy(t.SrcMAC[:], h.SrcMAC)
				copy(t.DstMAC[:], h.DstMAC)
			}
			if !t.Src.IsValid() {
				ok = false
				t.Src = a // placeholder so the tunnel compiles; the backend is unresolved
			}
			state := backendState(b.State)
			if state == pipeline.BackendActive && bp.filling(v.Name, b.Address) {
				state = pipeline.BackendFilling // its address just left bypass
			}
			s.Backends = append(s.Backends, pipeline.BackendSpec{Weight: uint32(*b.Weight), Tunnel: t, NoNextHop: !ok, State: state, Route: rt})
		}
		if v.QUIC != nil {
			n.quicSpec(&v, &s)
		}
		if v.Firewall != nil {
			set, err := v.Firewall.Compile()
			if err != nil { // validated: not expected; fail closed
				n.log.Error("firewall rules do not compile; the VIP denies every flow", "vip", v.Name, "err", err)
				set, _ = firewall.Compile(nil, firewall.Deny)
			}
			s.Firewall = set
		}
		n.clusterSpec(&v, &s)
		spec.Services = append(spec.Services, s)
	}
	return spec, hops
}

// hopProblem says why h, the next hop the kernel gives for to (backend a
// itself, or the neighbour of the route that holds a), cannot be used: it
// leaves through an interface that is not configured, or, for a route, its
// neighbour is not on-link (the kernel would send to another router,
// which routes by the backend's address, not through the neighbour).
// "" when it can.
func hopProblem(a, to netip.Addr, h nexthop.Hop, ifaces []string) string {
	switch {
	case !slices.Contains(ifaces, h.Ifname):
		return fmt.Sprintf("the route leaves through %s, which is not a configured interface", h.Ifname)
	case to != a && h.Via != to:
		return fmt.Sprintf("the route's neighbour %s is not on-link (the kernel reaches it through %s)", to, h.Via)
	}
	return ""
}

// tenantRoutes returns the configured routes by tenant name ("": the
// default tenant's).
func tenantRoutes(c *config.Config) map[string][]pipeline.RouteSpec {
	m := map[string][]pipeline.RouteSpec{}
	add := func(name string) {
		for _, r := range c.TenantRoutes(name) {
			m[name] = append(m[name], pipeline.RouteSpec{Prefix: r.Prefix, Via: r.Via})
		}
	}
	add("")
	for _, t := range c.Tenants {
		add(t.Name)
	}
	return m
}

// routeTo returns the address whose next hop reaches backend a, among the
// routes of a's tenant (the route stage's choice, pipeline.LookupRoute):
// the neighbour of the route that holds a, or a itself, for the kernel's
// main table to route (rt zero).
func routeTo(routes []pipeline.RouteSpec, a netip.Addr) (to netip.Addr, rt pipeline.RouteSpec) {
	if rt, ok := pipeline.LookupRoute(routes, a); ok {
		return rt.Via, rt
	}
	return a, pipeline.RouteSpec{}
}

// backendState is the pipeline's view of a configured backend state.
func backendState(s string) pipeline.BackendState {
	switch s {
	case config.StateFilling:
		return pipeline.BackendFilling
	case config.StateDraining:
		return pipeline.BackendDraining
	}
	return pipeline.BackendActive
}

// source returns the outer source address toward backend a.
func (n *Node) source(a netip.Addr, h nexthop.Hop) netip.Addr {
	cfg := n.st.cfg.Node.SourceV6
	if a.Is4() {
		cfg = n.st.cfg.Node.SourceV4
	}
	if cfg != "" {
		return netip.MustParseAddr(cfg)
	}
	return h.Src
}
