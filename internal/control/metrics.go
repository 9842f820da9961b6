package control

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicelb/sluice/internal/health"
)

// Metric names, all prefixed sluice_. Counters are read from the datapath
// on every scrape (Datapath.Counters sums worker snapshots taken between
// batches: nothing is added to the packet path).
var (
	descRxPackets  = desc("rx_packets_total", "Frames received on the node's links.")
	descRxBytes    = desc("rx_bytes_total", "Bytes received on the node's links.")
	descTxPackets  = desc("tx_packets_total", "Frames transmitted.")
	descTxBytes    = desc("tx_bytes_total", "Bytes transmitted.")
	descTxErrors   = desc("tx_errors_total", "Frames the link did not transmit.")
	descPassed     = desc("passed_packets_total", "Frames not addressed to a VIP, left to the kernel.")
	descFlowHits   = desc("flow_hits_total", "Packets whose flow-table entry was current.")
	descFlowMisses = desc("flow_misses_total", "Packets without a current flow-table entry.")
	descReaped     = desc("flow_reaped_total", "Expired flow-table entries removed.")
	descHopList    = desc("hoplist_packets_total", "Packets sent with a second-chance hop list [owner, previous owner].")
	descTooBig     = desc("icmp_too_big_sent_total", "ICMP fragmentation-needed / packet-too-big answers sent to clients (node.too_big: icmp).")
	descSpilled    = desc("kernel_tx_packets_total", "Encapsulated packets sent through the kernel's IP stack, which fragments them (over the MTU, or held fragments).")
	descSpillErr   = desc("kernel_tx_errors_total", "Packets the kernel's IP stack refused to send.")
	descFragments  = desc("fragments_sent_total", "Later fragments of datagrams to a VIP sent to their first fragment's backend: at once (followed), or after waiting for it (released).", "how")
	descFragHeld   = desc("fragments_held_total", "Later fragments that arrived before their first fragment and waited for it (then released, or dropped as fragment_timeout).")
	descFragOwner  = desc("fragments_to_owner_total", "Cluster: later fragments without a local first fragment sent to their datagram's owner node (this node included).")
	descFragDecide = desc("fragment_decisions_sent_total", "Cluster: first fragments' decisions sent to their datagram's owner node (this node included).")
	descFragRelay  = desc("fragment_relay_received_total", "Cluster: what this node's fragment relay received as a datagram's owner: later fragments (fragment), first fragments' decisions (decision), and messages from sources that are not members, refused (rejected).", "kind")
	descFlowLen    = desc("flow_table_entries", "Entries in the flow tables (all workers).")
	descFlowCap    = desc("flow_table_capacity", "Capacity of the flow tables (all workers).")
	descNewFlows   = desc("flow_new_total", "Flow-table entries created: new flows.")
	descEvictions  = desc("flow_evictions_total", "Live flow-table entries evicted to make room, by class (half_open, idle, established).", "class")
	descInsertFail = desc("flow_insert_failed_total", "Flows that got no entry (forwarded statelessly).")
	descDrops      = desc("drops_total", "Packets dropped, by reason (parse is the total of sluice_parse_drops_total).", "reason")
	descParseDrops = desc("parse_drops_total", "Frames dropped by the parser, by verdict.", "verdict")
	descVIPPackets = desc("vip_packets_total", "Packets sent to the backends of a VIP.", "vip")
	descVIPBytes   = desc("vip_bytes_total", "Bytes sent to the backends of a VIP.", "vip")
	descBEPackets  = desc("backend_packets_total", "Packets sent to a backend of a VIP.", "vip", "backend")
	descBEBytes    = desc("backend_bytes_total", "Bytes sent to a backend of a VIP.", "vip", "backend")
	descBEWeight   = desc("backend_weight", "Configured weight of a backend (0: draining).", "vip", "backend")
	descBENextHop  = desc("backend_next_hop_resolved", "1 if the backend's next hop is resolved, else 0.", "vip", "backend")
	descConfigGen  = desc("config_generation", "Configuration generation: 1 at start, plus one per successful apply.")
	descDPGen      = desc("datapath_generation", "Datapath generation ID (also changes with next hops).")
	descApplyOK    = desc("config_last_apply_success", "1 if the last configuration apply succeeded or none was made yet, else 0.")
	descApplyTime  = desc("config_last_apply_timestamp_seconds", "Unix time of the last configuration apply (0: none yet).")
	descBEHealth   = desc("backend_health", "Health-check state of a backend: 1 up, 0 down, -1 unknown (no decision yet; counts as up).", "vip", "backend")
	descTableFP    = desc("vip_table_info", "1, labelled with the fingerprint of the VIP's Maglev table: LB nodes making the same decisions show the same.", "vip", "fingerprint")
	descDraining   = desc("node_draining", "1 while the node is drained (its VIP announcements withdrawn), else 0.")
	descAnnounced  = desc("vip_announced", "1 for each VIP prefix the node announces to its routing peers.", "prefix")
	descPeerUp     = desc("bgp_peer_established", "1 while the BGP session with the peer is established, else 0.", "peer")
	descPeerResets = desc("bgp_peer_resets_total", "Times the BGP session with the peer left Established.", "peer")
	descPeerAdv    = desc("bgp_peer_advertised_prefixes", "Prefixes announced to the peer.", "peer")
	descQUICRouted = desc("quic_routed_packets_total", "Packets of QUIC VIPs by route: cid (the connection ID's server ID), dcid_hash (an Initial's client-chosen DCID), tuple (fallback).", "route")
	descQUICStray  = desc("quic_unknown_server_id_total", "Packets of QUIC VIPs whose connection ID named a server ID no backend has (routed by a fallback).")
	descNATHandoff = desc("nat_handoff_total", "Full-NAT replies a worker received for another worker's SNAT port, and copies of ICMP errors to a VIP about a flow another worker has: handed to it (handed_off), or lost on the way, its inbox full (dropped).", "outcome")
	descNATPackets = desc("nat_translated_packets_total", "Full-NAT packets rewritten, by direction: forward (to a backend), reply (to a client), icmp_to_client, icmp_to_backend.", "direction")
	descNATBinds   = desc("nat_bindings_total", "Full-NAT SNAT ports allocated for new flows.")
	descNATRelease = desc("nat_released_total", "Full-NAT SNAT ports released with their flows.")
	descNATInUse   = desc("nat_ports_in_use", "Full-NAT SNAT ports held by live flows.")
	descNATCap     = desc("nat_ports_capacity", "Full-NAT SNAT ports of the node (TCP and UDP, every address).")
	descNATExhaust = desc("nat_exhausted_total", "New full-NAT flows refused because no SNAT port was free.")
	descFWHits     = desc("firewall_rule_hits_total", "Flows a VIP's firewall rule decided (rule: its name or index; default: no rule matched), counted on a flow's first packet in each configuration.", "vip", "rule")
	descOffFwd     = desc("offload_forwarded_packets_total", "Packets of established flows forwarded by the XDP offload in the kernel (node.offload; also in rx/tx and the backends' counters).")
	descOffPassed  = desc("offload_passed_packets_total", "VIP packets the XDP offload handed to the workers, by reason (no_entry, stale_generation, tcp_flags, fragment, ...).", "reason")
	descOffOps     = desc("offload_entries_total", "Flow entries the workers installed in (installed) and removed from (deleted) the XDP offload.", "op")
	descOffFull    = desc("offload_ring_full_total", "Installs and deletes refused because a worker's ring to the kernel was full (a refused delete is queued again).")
	descOffLost    = desc("offload_deletes_lost_total", "Removals of flows from the XDP offload a worker could neither queue nor keep for later.")
	descOffEntries = desc("offload_entries", "Flows in the XDP offload's flow map (counted up to 2^20).")
	descOffErrors  = desc("offload_update_errors_total", "Failed updates of the XDP offload's flow map.")
	descBypassed   = desc("vip_bypassed", "For each VIP address with bypass single-backend: 1 while it is announced with its backend (next_hop) as BGP next hop, bypassing the LB nodes; 0 while it goes through them (next_hop empty).", "address", "next_hop")
	descBypassTr   = desc("vip_bypass_transitions_total", "Transitions of a VIP address with bypass single-backend into (entered) and out of (left) bypass on this node.", "address", "direction")
	descBEHealthTr = desc("backend_health_transitions_total", "Health-check transitions of a backend, by target state (up, down).", "vip", "backend", "to")
)

// Descs returns the descriptions of every metric the collector exports.
func Descs() []*prometheus.Desc {
	return append([]*prometheus.Desc{
		descRxPackets, descRxBytes, descTxPackets, descTxBytes, descTxErrors, descPassed,
		descFlowHits, descFlowMisses, descReaped, descHopList,
		descTooBig, descSpilled, descSpillErr, descFragments, descFragHeld, descFragOwner, descFragDecide, descFragRelay, descFlowLen, descFlowCap, descNewFlows, descEvictions, descInsertFail,
		descDrops, descParseDrops, descQUICRouted, descQUICStray, descFWHits,
		descNATPackets, descNATBinds, descNATRelease, descNATInUse, descNATCap, descNATExhaust, descNATHandoff,
		descVIPPackets, descVIPBytes, descBEPackets, descBEBytes, descBEWeight, descBENextHop,
		descConfigGen, descDPGen, descApplyOK, descApplyTime,
		descBEHealth, descBEHealthTr,
		descOffFwd, descOffPassed, descOffOps, descOffFull, descOffLost, descOffErrors, descOffEntries,
		descTableFP, descDraining, descAnnounced, descPeerUp, descPeerResets, descPeerAdv,
		descBypassed, descBypassTr,
	}, append(append(clusterDescs, l2Descs...), fastpathDescs...)...)
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("sluice_"+name, help, labels, nil)
}

// Collector returns a Prometheus collector reading s on every scrape.
func (s *Server) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Server }

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range Descs() {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	vips, st := c.s.snapshot()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(descRxPackets, st.RxPackets)
	counter(descRxBytes, st.RxBytes)
	counter(descTxPackets, st.TxPackets)
	counter(descTxBytes, st.TxBytes)
	counter(descTxErrors, st.TxErrors)
	counter(descPassed, st.Passed)
	counter(descFlowHits, st.FlowHits)
	counter(descFlowMisses, st.FlowMisses)
	counter(descReaped, st.Reaped)
	counter(descHopList, st.HopList)
	counter(descTooBig, st.TooBigAnswered)
	counter(descSpilled, st.Spilled)
	counter(descSpillErr, st.SpillErrors)
	counter(descFragments, st.Fragments.Followed, "followed")
	counter(descFragments, st.Fragments.Released, "released")
	counter(descFragHeld, st.Fragments.Held)
	counter(descFragOwner, st.Fragments.ToOwner)
	counter(descFragDecide, st.Fragments.Decisions)
	counter(descFragRelay, st.Fragments.RelayFragments, "fragment")
	counter(descFragRelay, st.Fragments.RelayDecisions, "decision")
	counter(descFragRelay, st.Fragments.RelayRejected, "rejected")
	gauge(descFlowLen, float64(st.FlowEntries))
	gauge(descFlowCap, float64(st.FlowCapacity))
	counter(descNewFlows, st.NewFlows)
	counter(descEvictions, st.FlowEvictions.HalfOpen, "half_open")
	counter(descEvictions, st.FlowEvictions.Idle, "idle")
	counter(descEvictions, st.FlowEvictions.Established, "established")
	counter(descInsertFail, st.FlowInsertFailed)
	counter(descOffFwd, st.Offload.Forwarded)
	for r, v := range st.Offload.Passed {
		counter(descOffPassed, v, r)
	}
	counter(descOffOps, st.Offload.Installed, "installed")
	counter(descOffOps, st.Offload.Deleted, "deleted")
	counter(descOffFull, st.Offload.RingFull)
	counter(descOffLost, st.Offload.DeletesLost)
	counter(descOffErrors, st.Offload.Errors)
	gauge(descOffEntries, float64(st.Offload.Entries))
	for r, v := range st.Drops {
		counter(descDrops, v, r)
	}
	for r, v := range st.ParseDrops {
		counter(descParseDrops, v, r)
	}
	for r, v := range st.QUICRouted {
		counter(descQUICRouted, v, r)
	}
	counter(descQUICStray, st.QUICUnknownServerID)
	counter(descNATPackets, st.NAT.Translated, "forward")
	counter(descNATPackets, st.NAT.Replies, "reply")
	counter(descNATPackets, st.NAT.ICMPToClient, "icmp_to_client")
	counter(descNATPackets, st.NAT.ICMPToBackend, "icmp_to_backend")
	counter(descNATBinds, st.NAT.Bindings)
	counter(descNATRelease, st.NAT.Released)
	gauge(descNATInUse, float64(st.NAT.PortsInUse))
	gauge(descNATCap, float64(st.NAT.PortsCapacity))
	counter(descNATExhaust, st.NAT.Exhausted)
	counter(descNATHandoff, st.NAT.HandedOff, "handed_off")
	counter(descNATHandoff, st.NAT.HandoffDropped, "dropped")
	for vip, rules := range st.FirewallRuleHits {
		for rule, n := range rules {
			counter(descFWHits, n, vip, rule)
		}
	}
	for _, v := range vips {
		counter(descVIPPackets, v.Packets, v.Name)
		counter(descVIPBytes, v.Bytes, v.Name)
		gauge(descTableFP, 1, v.Name, v.Fingerprint)
		for _, b := range v.Backends {
			counter(descBEPackets, b.Packets, v.Name, b.Address)
			counter(descBEBytes, b.Bytes, v.Name, b.Address)
			gauge(descBEWeight, float64(b.Weight), v.Name, b.Address)
			gauge(descBENextHop, b2f(b.NextHopResolved), v.Name, b.Address)
		}
	}
	gauge(descConfigGen, float64(st.ConfigGeneration))
	gauge(descDPGen, float64(st.DatapathGeneration))
	gauge(descApplyOK, b2f(st.LastApply.OK || st.LastApply.Time.IsZero()))
	var t float64
	if !st.LastApply.Time.IsZero() {
		t = float64(st.LastApply.Time.UnixNano()) / 1e9
	}
	gauge(descApplyTime, t)
	ns := c.s.NodeStatus()
	gauge(descDraining, b2f(ns.Draining))
	for _, p := range ns.Announced {
		gauge(descAnnounced, 1, p)
	}
	for _, st := range c.s.node.Bypass().VIPs {
		a := st.Addr.String()
		if st.Bypassed {
			gauge(descBypassed, 1, a, st.NextHop.String())
		} else {
			gauge(descBypassed, 0, a, "")
		}
		counter(descBypassTr, st.Entered, a, "entered")
		counter(descBypassTr, st.Left, a, "left")
	}
	for _, p := range ns.Peers {
		gauge(descPeerUp, b2f(p.State == "established"), p.Address)
		counter(descPeerResets, p.Resets, p.Address)
		gauge(descPeerAdv, float64(p.Advertised), p.Address)
	}
	for _, b := range c.s.node.Health() {
		v := -1.0
		switch b.State {
		case health.Up:
			v = 1
		case health.Down:
			v = 0
		}
		gauge(descBEHealth, v, b.VIP, b.Backend)
		counter(descBEHealthTr, b.Up, b.VIP, b.Backend, "up")
		counter(descBEHealthTr, b.Down, b.VIP, b.Backend, "down")
	}
	c.collectCluster(ch)
	c.collectL2(ch)
	c.collectFastpath(ch)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
