// Package control is the control server of an LB node: a library that
// reads and changes the running configuration and reports the state of the
// VIPs, their backends and the counters. Adapters (control/api for
// HTTP/JSON and Prometheus, `sluice ctl` through it) only translate; every
// decision is made here.
package control

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluicelb/sluice/internal/bypass"
	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/fielderr"
	"github.com/sluicelb/sluice/internal/health"
	"github.com/sluicelb/sluice/internal/offload"
	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// The server depends on four small views of an LB node, declared here:
// Configurer (apply a configuration), Viewer (read what runs), FlowFinder
// (read the flow tables) and Drainer (node drain and routing). Node is all
// of them; lbnode.Node implements it, and control/controltest fakes it.
type Node interface {
	Configurer
	Viewer
	FlowFinder
	Drainer
	ClusterReporter
	L2Reporter
	FastpathReporter
}

// Configurer holds the running configuration.
type Configurer interface {
	// Config returns the running configuration (not to be modified).
	Config() *config.Config
	// Apply makes cfg the running configuration, or leaves the running one
	// in force and says why (wrapping ErrNeedsRestart for changes only a
	// restart can make).
	Apply(ctx context.Context, cfg *config.Config) error
}

// Viewer reads what the node runs.
type Viewer interface {
	// Counters returns the counters summed over the workers.
	Counters() datapath.Counters
	// Generation returns the running datapath generation (nil before the
	// first).
	Generation() *pipeline.Generation
	// Health returns the state of every backend that has a health check,
	// in configuration order.
	Health() []health.Backend
}

// Errors PutConfig's refusals match (errors.Is). In every case the running
// configuration stays in force, unchanged.
var (
	// ErrInvalidConfig: the document does not parse or validate; the error
	// is a *ConfigError listing every problem.
	ErrInvalidConfig = errors.New("invalid configuration")
	// ErrNeedsRestart: the document changes what only a restart can
	// (config.RestartRules).
	ErrNeedsRestart = config.ErrNeedsRestart
)

// Problem is one problem of a rejected document: the path of the field, its
// value (nil when the field is missing or the document does not parse) and
// what is wrong.
type Problem struct {
	Path   string `json:"path"`
	Value  any    `json:"value"`
	Reason string `json:"reason"`
}

func (p Problem) String() string {
	s := p.Reason
	if p.Value != nil {
		s = fmt.Sprintf("%v %s", p.Value, p.Reason)
	}
	if p.Path != "" {
		s = p.Path + ": " + s
	}
	return s
}

// ConfigError is a document PutConfig rejected before applying it. It
// matches ErrInvalidConfig.
type ConfigError struct {
	Problems []Problem
}

func (e *ConfigError) Error() string {
	s := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		s[i] = p.String()
	}
	return "invalid configuration: " + strings.Join(s, "; ")
}

// Is reports whether target is ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// configError turns config.Parse's error into a ConfigError: one problem per
// field error (fielderr.Error), or a single problem without a path when the
// document does not decode.
func configError(err error) *ConfigError {
	fes := fielderr.All(err)
	if len(fes) == 0 {
		return &ConfigError{Problems: []Problem{{Reason: err.Error()}}}
	}
	ce := &ConfigError{}
	for _, fe := range fes {
		ce.Problems = append(ce.Problems, Problem{Path: fe.Path, Value: fe.Value, Reason: fe.Reason})
	}
	return ce
}

// ApplyResult is the outcome of an apply.
type ApplyResult struct {
	Time time.Time `json:"time"`
	OK   bool      `json:"ok"`
	// Error says why the apply failed; empty when OK.
	Error string `json:"error,omitempty"`
	// Generation is the configuration generation running after the apply:
	// 1 for the configuration the node started with, plus one for every
	// successful apply.
	Generation uint64 `json:"generation"`
}

// Server is the control server of one LB node. Its methods are safe for
// concurrent use.
type Server struct {
	node Node // immutable
	now  func() time.Time

	applyMu sync.Mutex // serialises PutConfig: one apply at a time

	mu          sync.Mutex            // guards gen, last and transitions; never held across node calls
	gen         uint64                // configuration generation
	last        ApplyResult           // zero until the first PutConfig
	transitions map[string]transition // filling and draining backends (Run)
}

// New returns the server of node, whose running configuration becomes
// generation 1.
func New(node Node) *Server {
	return &Server{node: node, now: time.Now, gen: 1}
}

// GetConfig returns the running configuration as YAML, defaults filled in
// and every secret (the cluster key, the VIPs' QUIC-LB keys) replaced by
// config.Redacted (config.Config.Redacted); PutConfig accepts it back
// unchanged, keeping the running secrets.
func (s *Server) GetConfig() ([]byte, error) {
	return yaml.Marshal(s.node.Config().Redacted())
}

// PutConfig parses and validates doc, then applies it. If the document
// does not parse or validate the error is a *ConfigError (matching
// ErrInvalidConfig) and the node is not asked; if the node refuses it, its
// error is returned (ErrNeedsRestart for a change only a restart can
// make). Either way the running configuration is unchanged and the refusal
// is recorded as the last apply result.
//
// A secret given as the placeholder config.Redacted (as GetConfig shows it)
// keeps the running secret of the same field: the cluster key, or the
// QUIC-LB key of the running VIP of the same name. Where there is none to
// keep (a new VIP, a cluster section the running configuration lacks) the
// placeholder is a problem of the document, naming the field.
func (s *Server) PutConfig(ctx context.Context, doc []byte) (ApplyResult, error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	return s.apply(ctx, doc, true)
}

// ApplyFile reads the configuration file at path and applies it as
// PutConfig does (a reload: it counts as a generation and an apply result),
// except that the file must hold its real secrets: the placeholder
// config.Redacted in it is a problem of the document (config.Load's rule
// at start).
func (s *Server) ApplyFile(ctx context.Context, path string) (ApplyResult, error) {
	doc, err := os.ReadFile(path)
	if err != nil {
		return ApplyResult{}, err
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	return s.apply(ctx, doc, false)
}

// apply is PutConfig (restore: placeholders keep the running secrets) or
// ApplyFile with applyMu held.
func (s *Server) apply(ctx context.Context, doc []byte, restore bool) (ApplyResult, error) {
	var running *config.Config
	if restore {
		running = s.node.Config()
	}
	cfg, err := config.ParseRestoring(doc, running)
	if err != nil {
		err = configError(err)
	} else if err = s.node.Apply(ctx, cfg); errors.Is(err, bypass.ErrSubnet) {
		// The node's interfaces refuse a field of the document (a bypass
		// backend off the peering subnet): a problem of the document.
		err = configError(err)
	}
	return s.record(err), err
}

func (s *Server) record(err error) ApplyResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := ApplyResult{Time: s.now(), OK: err == nil}
	if err != nil {
		r.Error = err.Error()
	} else {
		s.gen++
	}
	r.Generation = s.gen
	s.last = r
	return r
}

// Status returns the configuration generation and the last apply result
// (zero Time: none yet).
func (s *Server) Status() (gen uint64, last ApplyResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen, s.last
}

// VIPStatus is a running VIP and its backends.
type VIPStatus struct {
	Name     string `json:"name"`
	Tenant   string `json:"tenant,omitempty"` // "": the default tenant
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
	Port     uint16 `json:"port"`     // 0 with PortEnd 0: every port
	PortEnd  uint16 `json:"port_end"` // equal to Port for a single port
	Packets  uint64 `json:"packets"`  // sum over the backends
	Bytes    uint64 `json:"bytes"`
	// Fingerprint is a digest of the VIP's Maglev table (its size, the
	// seed and every slot's owner and previous owner), 16 hex digits. LB
	// nodes that make the same decisions show the same fingerprint.
	Fingerprint string          `json:"fingerprint"`
	Backends    []BackendStatus `json:"backends"`
	// Firewall is the VIP's rule list with each rule's hits; nil: none.
	Firewall *FirewallStatus `json:"firewall,omitempty"`
	// Bypass is the state of the VIP's address with bypass single-backend;
	// nil: bypass off.
	Bypass *BypassStatus `json:"bypass,omitempty"`
}

// Bypass states of a VIP address (BypassStatus.State).
const (
	BypassBypassed  = "bypassed"   // announced with its backend as next hop
	BypassThroughLB = "through_lb" // announced with the LB nodes as next hop
)

// BypassStatus is the bypass state of a VIP's address on the node.
type BypassStatus struct {
	State string `json:"state"` // bypassed | through_lb
	// NextHop is the backend the address is announced with, when bypassed.
	NextHop string `json:"next_hop,omitempty"`
	// Reason says why the address is bypassed or why not.
	Reason string `json:"reason"`
	// Since is when the address took its current state on this node.
	Since time.Time `json:"since"`
	// Entered and Left count the address's transitions into and out of
	// bypass on this node.
	Entered uint64 `json:"entered"`
	Left    uint64 `json:"left"`
}

// bypassStatus is the view of st.
func bypassStatus(st bypass.Status) *BypassStatus {
	b := &BypassStatus{State: BypassThroughLB, Reason: st.Reason, Since: st.Since, Entered: st.Entered, Left: st.Left}
	if st.Bypassed {
		b.State, b.NextHop = BypassBypassed, st.NextHop.String()
	}
	return b
}

// FirewallStatus is a VIP's rule list as the datapath runs it.
type FirewallStatus struct {
	Default string `json:"default"` // allow | deny
	// DefaultHits counts the flows no rule matched.
	DefaultHits uint64       `json:"default_hits"`
	Rules       []RuleStatus `json:"rules"`
}

// RuleStatus is one firewall rule: its label (name, or index), its
// verdict, and how many flows it decided (a flow counts once per
// configuration generation: the verdict is memoised in its entry).
type RuleStatus struct {
	Rule   string `json:"rule"`
	Action string `json:"action"`
	Match  string `json:"match"` // the rule's fields, as text
	Hits   uint64 `json:"hits"`
}

// Backend states.
const (
	StateActive     = "active"     // receives new flows
	StateDraining   = "draining"   // weight 0: keeps its flows, receives no new ones
	StateUnresolved = "unresolved" // next hop unresolved: its packets are dropped (no_next_hop)
	StateFilling    = "filling"    // newly added with a life cycle (or after bypass): the previous owners keep their connections
)

// BackendStatus is one backend of a VIP with what the datapath sent it.
type BackendStatus struct {
	Address         string `json:"address"`
	Weight          uint32 `json:"weight"`
	NextHopResolved bool   `json:"next_hop_resolved"`
	State           string `json:"state"`
	Packets         uint64 `json:"packets"`
	Bytes           uint64 `json:"bytes"`
	// CompletesAt is when a filling or draining backend of a second-chance
	// VIP becomes active or is removed.
	CompletesAt time.Time `json:"completes_at,omitzero"`
}

// Stats are the node's counters.
type Stats struct {
	RxPackets  uint64 `json:"rx_packets"`
	RxBytes    uint64 `json:"rx_bytes"`
	TxPackets  uint64 `json:"tx_packets"`
	TxBytes    uint64 `json:"tx_bytes"`
	TxErrors   uint64 `json:"tx_errors"`
	Passed     uint64 `json:"passed"` // not addressed to a VIP: left to the kernel
	FlowHits   uint64 `json:"flow_hits"`
	FlowMisses uint64 `json:"flow_misses"`
	Reaped     uint64 `json:"flow_reaped"`
	// HopList counts packets sent with a second-chance hop list.
	HopList uint64 `json:"hoplist_packets"`
	// TooBigAnswered counts ICMP "too big" answers sent to clients;
	// Spilled the packets sent through the kernel's IP stack, which
	// fragmented them as needed, SpillErrors those it refused.
	TooBigAnswered uint64 `json:"too_big_answered"`
	Spilled        uint64 `json:"kernel_tx_packets"`
	SpillErrors    uint64 `json:"kernel_tx_errors"`
	// Later fragments sent after their datagram's first fragment
	// (followed), held until it arrived (held), and then sent (released).
	// In a cluster: later fragments without a local first fragment handed
	// to their datagram's owner node (to_owner, this node included), first
	// fragments' decisions sent to it (decisions), and what this node's
	// relay received as an owner (relay_fragments, relay_decisions) or
	// refused from a source that is not a member (relay_rejected).
	Fragments struct {
		Followed       uint64 `json:"followed"`
		Held           uint64 `json:"held"`
		Released       uint64 `json:"released"`
		ToOwner        uint64 `json:"to_owner"`
		Decisions      uint64 `json:"decisions"`
		RelayFragments uint64 `json:"relay_fragments"`
		RelayDecisions uint64 `json:"relay_decisions"`
		RelayRejected  uint64 `json:"relay_rejected"`
	} `json:"fragments"`
	// The flow tables, summed over workers.
	FlowEntries   int    `json:"flow_entries"`
	FlowCapacity  int    `json:"flow_capacity"`
	NewFlows      uint64 `json:"new_flows"` // entries created
	FlowEvictions struct {
		HalfOpen    uint64 `json:"half_open"`
		Idle        uint64 `json:"idle"`
		Established uint64 `json:"established"`
	} `json:"flow_evictions"`
	FlowInsertFailed uint64 `json:"flow_insert_failed"`
	// Drops by reason (pipeline.Reason names but "none"; "parse" is the
	// total of ParseDrops).
	Drops map[string]uint64 `json:"drops"`
	// ParseDrops by parser verdict (packet.Verdict names but "ok").
	ParseDrops map[string]uint64 `json:"parse_drops"`
	// QUICRouted counts the packets of QUIC VIPs by how they were routed
	// (pipeline.QUICRoute names: cid, dcid_hash, tuple);
	// QUICUnknownServerID those whose connection ID named a server ID no
	// backend has (they took a fallback route).
	QUICRouted          map[string]uint64 `json:"quic_routed"`
	QUICUnknownServerID uint64            `json:"quic_unknown_server_id"`
	// NAT is full-NAT's work (forwarding: nat), summed over workers.
	NAT NATStats `json:"nat"`
	// FirewallRuleHits counts, by VIP and rule label ("default" for the
	// default verdict), the flows each firewall rule decided; rules of
	// earlier configurations keep their counts.
	FirewallRuleHits map[string]map[string]uint64 `json:"firewall_rule_hits"`

	// Offload is the XDP offload of the flow cache (node.offload): what
	// the kernel forwarded (also counted in rx/tx and the backends'
	// packets and bytes), the VIP packets it handed to the workers by
	// reason, and the workers' installs and deletes. Enabled is false
	// (and the rest zero) without it.
	Offload OffloadStats `json:"offload"`

	ConfigGeneration   uint64      `json:"config_generation"`
	DatapathGeneration uint32      `json:"datapath_generation"` // also changes when next hops change
	LastApply          ApplyResult `json:"last_apply"`
}

// OffloadStats are the counters of the XDP offload (Stats.Offload).
type OffloadStats struct {
	Enabled   bool              `json:"enabled"`
	Forwarded uint64            `json:"forwarded_packets"`
	Passed    map[string]uint64 `json:"passed_to_workers"` // by offload.Reason name
	Installed uint64            `json:"entries_installed"`
	Deleted   uint64            `json:"entries_deleted"`
	RingFull  uint64            `json:"ring_full"`
	// DeletesLost: removals a worker could neither queue nor keep.
	DeletesLost uint64 `json:"deletes_lost"`
	Errors      uint64 `json:"update_errors"`
	Entries     int    `json:"entries"` // in the kernel's flow map (counted up to 2^20)
}

// ListVIPs returns the running VIPs with their backends, in configuration
// order. Backends that failed their health check are listed with state
// "down".
func (s *Server) ListVIPs() []VIPStatus {
	v, _ := s.snapshot()
	addDown(v, s.node)
	s.addStates(v)
	s.addBypass(v)
	return v
}

// addBypass shows the bypass state of each VIP's address and, as filling,
// the backends that fill because their address left bypass.
func (s *Server) addBypass(vips []VIPStatus) {
	bv := s.node.Bypass()
	for i := range vips {
		a, err := netip.ParseAddr(vips[i].Address)
		if err != nil || vips[i].Tenant != "" {
			continue
		}
		for _, st := range bv.VIPs {
			if st.Addr == a {
				vips[i].Bypass = bypassStatus(st)
			}
		}
		for _, f := range bv.Filling {
			if f.VIP != vips[i].Name {
				continue
			}
			for j := range vips[i].Backends {
				b := &vips[i].Backends[j]
				if b.Address == f.Backend && b.State == StateActive {
					b.State, b.CompletesAt = StateFilling, f.Until
				}
			}
		}
	}
}

// addStates shows the configured life-cycle state of filling and draining
// backends, with when their transition completes.
func (s *Server) addStates(vips []VIPStatus) {
	cfg := s.node.Config()
	for i := range vips {
		ci := slices.IndexFunc(cfg.VIPs, func(v config.VIP) bool { return v.Name == vips[i].Name })
		if ci < 0 {
			continue
		}
		cv := &cfg.VIPs[ci]
		for j := range vips[i].Backends {
			b := &vips[i].Backends[j]
			if b.State == StateUnresolved || b.State == "down" {
				continue
			}
			k := slices.IndexFunc(cv.Backends, func(cb config.Backend) bool { return cb.Address == b.Address })
			if k < 0 {
				continue
			}
			cb := &cv.Backends[k]
			switch cb.State {
			case config.StateFilling:
				b.State = StateFilling
			case config.StateDraining:
				b.State = StateDraining
			default:
				continue
			}
			if cv.SecondChance {
				b.CompletesAt = s.completesAt(cv, cb.Address)
			}
		}
	}
}

// Stats returns the node's counters.
func (s *Server) Stats() Stats { _, st := s.snapshot(); return st }

// snapshot reads the counters once and returns both views of them.
// addDown lists the backends that failed their health check, which the
// datapath leaves out of their VIP's table (and so out of the generation),
// with state "down".
func addDown(vips []VIPStatus, node Viewer) {
	for _, h := range node.Health() {
		if h.State != health.Down {
			continue
		}
		for i := range vips {
			if vips[i].Name != h.VIP {
				continue
			}
			present := slices.ContainsFunc(vips[i].Backends, func(b BackendStatus) bool { return b.Address == h.Backend })
			if !present {
				vips[i].Backends = append(vips[i].Backends, BackendStatus{Address: h.Backend, State: "down"})
			}
		}
	}
}

func (s *Server) snapshot() ([]VIPStatus, Stats) {
	c := s.node.Counters()
	g := s.node.Generation()
	vips := []VIPStatus{}
	if g != nil {
		for _, svc := range g.Services {
			vips = append(vips, vipStatus(g, svc, &c))
		}
	}
	st := Stats{
		RxPackets: c.RxPackets, RxBytes: c.RxBytes, TxPackets: c.TxPackets, TxBytes: c.TxBytes,
		TxErrors: c.TxErrors, Passed: c.Passed, FlowHits: c.FlowHits, FlowMisses: c.FlowMisses, Reaped: c.Reaped,
		HopList: c.HopList, TooBigAnswered: c.TooBigAnswered, Spilled: c.Spilled, SpillErrors: c.SpillErrors,
		Drops: map[string]uint64{}, ParseDrops: map[string]uint64{},
		FlowEntries: c.Flows.Len, FlowCapacity: c.Flows.Capacity, NewFlows: c.Flows.Inserts,
		FlowInsertFailed: c.Flows.InsertFailed,
	}
	st.Fragments.Followed, st.Fragments.Held, st.Fragments.Released = c.FragmentsFollowed, c.FragmentsHeld, c.FragmentsReleased
	st.Fragments.ToOwner, st.Fragments.Decisions = c.FragmentsToOwner, c.FragmentDecisions
	st.Fragments.RelayFragments, st.Fragments.RelayDecisions, st.Fragments.RelayRejected = c.RelayFragments, c.RelayDecisions, c.RelayRejected
	st.Offload = OffloadStats{
		Enabled: c.Offloaded, Forwarded: c.Offload.Forwarded, Passed: map[string]uint64{},
		Installed: c.Offload.Installed, Deleted: c.Offload.Deleted, RingFull: c.Offload.RingFull, DeletesLost: c.Offload.DeletesLost, Errors: c.Offload.Errors,
		Entries: c.Offload.Entries,
	}
	for r := offload.Reason(0); r < offload.NumReasons; r++ {
		st.Offload.Passed[r.String()] = c.Offload.Passed[r]
	}
	st.FlowEvictions.HalfOpen = c.Flows.EvictedHalfOpen
	st.FlowEvictions.Idle = c.Flows.EvictedIdle
	st.FlowEvictions.Established = c.Flows.EvictedEstablished
	for r := pipeline.Reason(1); r < pipeline.NumReasons; r++ {
		st.Drops[r.String()] = c.Drops[r]
	}
	for v := packet.Verdict(1); v < packet.NumVerdicts; v++ {
		st.ParseDrops[v.String()] = c.Parse[v]
	}
	st.QUICRouted = map[string]uint64{}
	for r := pipeline.QUICRoute(1); r < pipeline.NumQUICRoutes; r++ {
		st.QUICRouted[r.String()] = c.QUIC[r]
	}
	st.QUICUnknownServerID = c.QUICUnknownServer
	st.NAT = NATStats{
		Translated: c.NAT.Forwarded, Replies: c.NAT.Replies,
		ICMPToClient: c.NAT.ICMPToClient, ICMPToBackend: c.NAT.ICMPToBackend,
		Bindings: c.NAT.Bound, PortsInUse: c.NAT.InUse, PortsCapacity: c.NAT.Capacity,
		Exhausted: c.NAT.Exhausted, Released: c.NAT.Released,
		HandedOff: c.NAT.HandedOff, HandoffDropped: c.NAT.HandoffDropped,
	}
	st.FirewallRuleHits = map[string]map[string]uint64{}
	for k, n := range firewallHits(vips, &c) {
		if st.FirewallRuleHits[k.VIP] == nil {
			st.FirewallRuleHits[k.VIP] = map[string]uint64{}
		}
		st.FirewallRuleHits[k.VIP][k.Rule] = n
	}
	if g != nil {
		st.DatapathGeneration = g.ID
	}
	st.ConfigGeneration, st.LastApply = s.Status()
	return vips, st
}

func vipStatus(g *pipeline.Generation, svc *pipeline.Service, c *datapath.Counters) VIPStatus {
	v := VIPStatus{
		Name:     svc.Name,
		Tenant:   g.TenantName(svc.Tenant),
		Address:  netip.AddrFrom16(svc.Addr).Unmap().String(),
		Protocol: protoName(svc.Proto),
		Port:     svc.PortLo,
		PortEnd:  svc.PortHi,
		Backends: []BackendStatus{},
	}
	if svc.Table != nil {
		v.Fingerprint = fmt.Sprintf("%016x", svc.Table.Fingerprint())
	}
	v.Firewall = firewallStatus(svc, c)
	for _, r := range svc.Reals {
		if r == nil {
			continue
		}
		b := BackendStatus{Address: r.Name, Weight: r.Weight, NextHopResolved: r.Resolved()}
		if int(r.ID) < len(c.Reals) {
			b.Packets, b.Bytes = c.Reals[r.ID].Packets, c.Reals[r.ID].Bytes
		}
		switch {
		case !b.NextHopResolved:
			b.State = StateUnresolved
		case b.Weight == 0:
			b.State = StateDraining
		default:
			b.State = StateActive
		}
		v.Packets += b.Packets
		v.Bytes += b.Bytes
		v.Backends = append(v.Backends, b)
	}
	return v
}

func protoName(p uint8) string {
	switch p {
	case packet.ProtoTCP:
		return "tcp"
	case packet.ProtoUDP:
		return "udp"
	}
	return fmt.Sprint(p)
}

// NATStats count full-NAT translations and SNAT ports.
type NATStats struct {
	Translated    uint64 `json:"translated"`      // packets rewritten toward a backend
	Replies       uint64 `json:"replies"`         // replies rewritten toward a client
	ICMPToClient  uint64 `json:"icmp_to_client"`  // ICMP errors about forwarded packets, translated
	ICMPToBackend uint64 `json:"icmp_to_backend"` // ICMP errors about replies, translated
	Bindings      uint64 `json:"bindings"`        // SNAT ports allocated (new flows)
	Released      uint64 `json:"released"`        // SNAT ports released with their flows
	PortsInUse    uint64 `json:"ports_in_use"`    // SNAT ports held now
	PortsCapacity uint64 `json:"ports_capacity"`  // SNAT ports (TCP and UDP, every address, every worker)
	Exhausted     uint64 `json:"exhausted"`       // new flows refused: no free port
	// HandedOff counts replies a worker received for another worker's SNAT
	// port and handed to it (several workers); HandoffDropped those lost
	// on the way (the owner's inbox full).
	HandedOff      uint64 `json:"handed_off"`
	HandoffDropped uint64 `json:"handoff_dropped"`
}
