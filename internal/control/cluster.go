package control

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicelb/sluice/internal/cluster"
)

// ClusterReporter is what the server needs for the node's cluster state.
type ClusterReporter interface {
	// ClusterStatus returns the state of the node's cluster member; ok is
	// false when the node runs alone (no node.cluster).
	ClusterStatus() (st cluster.MemberStatus, ok bool)
}

// ClusterStatus is the node's cluster state (`sluice ctl cluster status`,
// GET /v1/cluster).
type ClusterStatus struct {
	// Enabled is false when the node runs alone (no node.cluster); the
	// other fields are then empty.
	Enabled bool `json:"enabled"`
	// Running is false while the node is drained: it left the cluster.
	Running bool   `json:"running"`
	Self    string `json:"self,omitempty"`
	// Ready: a member of its view with every shard's first sync done (it
	// serves as head and tail).
	Ready   bool            `json:"ready"`
	Members []ClusterMember `json:"members"`
	// Alive counts the members in the node's current view.
	Alive    int `json:"alive"`
	Shards   int `json:"shards"`
	Replicas int `json:"replicas"`
	// Digest is a digest of every shard's chain computed from the current
	// view: members that agree on the chains show the same.
	Digest string `json:"chains_digest,omitempty"`
	// Heads, Middles and Tails count the shards by this node's role in
	// their chain (a chain of one member counts as head and tail).
	Heads   int `json:"heads"`
	Middles int `json:"middles"`
	Tails   int `json:"tails"`
	// Sync: shards whose first pull is pending, on their second pass,
	// pulled in all, and with no surviving source; entries pulled and
	// served.
	Sync     ClusterSync    `json:"sync"`
	Entries  int            `json:"entries"`
	Capacity int            `json:"capacity"`
	ByVIP    map[string]int `json:"entries_by_vip"`
	// Drops counts datagrams dropped by the protocol, by reason.
	Drops map[string]uint64 `json:"drops"`
	// Publish counts the new flows of affinity-always VIPs: submitted to
	// the member, committed on their chain, failed (not committed after
	// every retry), rejected (no running member or its queue full), dropped
	// by the workers (their queue full).
	Publish ClusterPublish `json:"publish"`
	// Ask counts the query path: flows the workers had no entry for and
	// asked their chains about, and how they were decided.
	Ask   cluster.AskCounts `json:"ask"`
	Stats cluster.Stats     `json:"stats"`
}

// ClusterMember is one member: configured (this node and its peers)
// and/or in the current view.
type ClusterMember struct {
	Address    string `json:"address"`
	State      string `json:"state"` // alive (in the view) or down
	Configured bool   `json:"configured"`
	Self       bool   `json:"self,omitempty"`
}

// ClusterPublish counts the publish path's records.
type ClusterPublish struct {
	Submitted uint64 `json:"submitted"`
	// Refreshed counts long flows published again and committed (not in
	// Submitted).
	Refreshed uint64 `json:"refreshed"`
	Committed uint64 `json:"committed"`
	Failed    uint64 `json:"failed"`
	Rejected  uint64 `json:"rejected"`
	Dropped   uint64 `json:"dropped"`
}

// ClusterSync is a member's sync progress.
type ClusterSync struct {
	Pending    int    `json:"pending"`
	Catchup    int    `json:"catchup"`
	Shards     uint64 `json:"shards_synced"`
	NoSource   uint64 `json:"shards_no_source"`
	EntriesIn  uint64 `json:"entries_in"`
	EntriesOut uint64 `json:"entries_out"`
}

// ClusterStatus returns the node's cluster state.
func (s *Server) ClusterStatus() ClusterStatus {
	ms, ok := s.node.ClusterStatus()
	if !ok {
		return ClusterStatus{Members: []ClusterMember{}}
	}
	r := ms.Report
	st := ClusterStatus{
		Enabled: true, Running: ms.Running, Ready: r.Ready, Shards: ms.Shards, Replicas: ms.Replicas,
		Heads: r.Heads, Middles: r.Middles, Tails: r.Tails, Entries: r.Entries, Capacity: r.Capacity,
		Members: []ClusterMember{}, ByVIP: map[string]int{}, Stats: r.Stats,
		Sync: ClusterSync{Pending: r.SyncPending, Catchup: r.SyncCatchup, Shards: r.Stats.SyncShards,
			NoSource: r.Stats.SyncNoSource, EntriesIn: r.Stats.SyncEntriesIn, EntriesOut: r.Stats.SyncEntriesOut},
		Drops: map[string]uint64{"auth": r.Stats.DropAuth, "replay": r.Stats.DropReplay,
			"not_member": r.Stats.DropNotMember, "malformed": r.Stats.DropMalformed},
		Publish: ClusterPublish{Submitted: ms.Published, Committed: ms.PublishCommitted, Failed: ms.PublishFailed,
			Rejected: ms.PublishRejected, Dropped: ms.PublishDropped, Refreshed: ms.PublishRefreshed},
		Ask: ms.Ask,
	}
	if len(ms.Configured) > 0 {
		st.Self = ms.Configured[0].String()
	}
	for i, a := range ms.Configured {
		m := ClusterMember{Address: a.String(), State: "down", Configured: true, Self: i == 0}
		if slices.Contains(r.Members, a) {
			m.State = "alive"
		}
		st.Members = append(st.Members, m)
	}
	for _, a := range r.Members {
		if !slices.Contains(ms.Configured, a) {
			st.Members = append(st.Members, ClusterMember{Address: a.String(), State: "alive"})
		}
	}
	st.Alive = len(r.Members)
	if ms.Running {
		st.Digest = fmt.Sprintf("%016x", cluster.ChainsDigest(ms.Seed, ms.Shards, ms.Replicas, r.Members))
	}
	for svc, n := range r.ByService {
		name, known := ms.Services[svc]
		if !known {
			name = "service-" + strconv.Itoa(int(svc)) // a VIP this node does not run
		}
		st.ByVIP[name] += n
	}
	return st
}

// Cluster metrics: exported only by a node with node.cluster.
var (
	descClRunning  = desc("cluster_running", "1 while the node is a running cluster member (0 while drained: it left).")
	descClReady    = desc("cluster_ready", "1 when the member serves: in its view with every shard's first sync done.")
	descClMembers  = desc("cluster_members_alive", "Members in the node's current cluster view (itself included).")
	descClShards   = desc("cluster_shards", "Shards by this node's role in their chain (head, middle, tail; a one-member chain counts as head and tail).", "role")
	descClEntries  = desc("cluster_entries", "Flow entries this node holds for its chains.")
	descClCap      = desc("cluster_entries_capacity", "Capacity of the cluster entry table.")
	descClByVIP    = desc("cluster_vip_entries", "Flow entries held for the chains, per VIP.", "vip")
	descClSyncPend = desc("cluster_sync_pending_shards", "Shards whose first sync (pull from the chain's survivors) is not done.")
	descClSynced   = desc("cluster_sync_shards_total", "Shards pulled from the chains' survivors.")
	descClNoSource = desc("cluster_sync_no_source_total", "Shards that had no surviving source to pull from (their entries were lost).")
	descClSyncEnt  = desc("cluster_sync_entries_total", "Entries pulled (in) and served (out) by syncs.", "direction")
	descClDrops    = desc("cluster_protocol_drops_total", "Cluster datagrams dropped, by reason (auth, replay, not_member, malformed).", "reason")
	descClRequests = desc("cluster_requests_total", "Requests submitted to the member by this node, by outcome (answered, timeout, rejected).", "outcome")
	descClViews    = desc("cluster_views_total", "Membership views the member applied.")
	descClPublish  = desc("cluster_publish_total", "New flows of affinity-always VIPs, by outcome: submitted to the member, committed on their chain, failed (not committed after every retry), rejected (no running member or its queue full), dropped (a worker's publish queue full); refreshed: long flows published again to extend their entries' expiry.", "outcome")
	descClAsk      = desc("cluster_ask_flows_total", "Flows the workers had no entry for and asked their owner chain about (asked), and how they were decided: by the chain's answer (answered; moved: it named another backend than the node's own decision), or locally (timeout, failed, unknown_backend); busy: packets dropped because the worker had too many questions in flight (the sender retransmits).", "outcome")
	descClAskPkts  = desc("cluster_ask_packets_total", "Packets held while their flow's chain was asked (held), sent once it was decided (released), dropped (could not be held or sent).", "outcome")
	descClAskWait  = desc("cluster_ask_wait_seconds", "How long the packets of asked flows were held until the flow was decided (the chain's answer, or the local decision on timeout).")
	descClCorrect  = desc("cluster_corrected_entries_total", "Flow entries of new flows this node published that the chain's committed answer changed (another node had inserted the flow first).")
)

var clusterDescs = []*prometheus.Desc{
	descClRunning, descClReady, descClMembers, descClShards, descClEntries, descClCap, descClByVIP,
	descClSyncPend, descClSynced, descClNoSource, descClSyncEnt, descClDrops, descClRequests, descClViews, descClPublish,
	descClAsk, descClAskPkts, descClCorrect, descClAskWait,
}

// collectCluster sends the cluster metrics; none when the node runs alone.
func (c collector) collectCluster(ch chan<- prometheus.Metric) {
	st := c.s.ClusterStatus()
	if !st.Enabled {
		return
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descClRunning, b2f(st.Running))
	gauge(descClReady, b2f(st.Ready))
	gauge(descClMembers, float64(st.Alive))
	gauge(descClShards, float64(st.Heads), "head")
	gauge(descClShards, float64(st.Middles), "middle")
	gauge(descClShards, float64(st.Tails), "tail")
	gauge(descClEntries, float64(st.Entries))
	gauge(descClCap, float64(st.Capacity))
	for vip, n := range st.ByVIP {
		gauge(descClByVIP, float64(n), vip)
	}
	gauge(descClSyncPend, float64(st.Sync.Pending))
	counter(descClSynced, st.Sync.Shards)
	counter(descClNoSource, st.Sync.NoSource)
	counter(descClSyncEnt, st.Sync.EntriesIn, "in")
	counter(descClSyncEnt, st.Sync.EntriesOut, "out")
	for r, v := range st.Drops {
		counter(descClDrops, v, r)
	}
	counter(descClRequests, st.Stats.Answered, "answered")
	counter(descClRequests, st.Stats.Timeouts, "timeout")
	counter(descClRequests, st.Stats.Rejected, "rejected")
	counter(descClViews, st.Stats.Views)
	counter(descClPublish, st.Publish.Submitted, "submitted")
	counter(descClPublish, st.Publish.Committed, "committed")
	counter(descClPublish, st.Publish.Failed, "failed")
	counter(descClPublish, st.Publish.Rejected, "rejected")
	counter(descClPublish, st.Publish.Dropped, "dropped")
	counter(descClPublish, st.Publish.Refreshed, "refreshed")
	a := &st.Ask
	counter(descClAsk, a.Asked, "asked")
	counter(descClAsk, a.Answered, "answered")
	counter(descClAsk, a.Moved, "moved")
	counter(descClAsk, a.Timeouts, "timeout")
	counter(descClAsk, a.Failed, "failed")
	counter(descClAsk, a.Unknown, "unknown_backend")
	counter(descClAsk, a.Busy, "busy")
	counter(descClAskPkts, a.Held, "held")
	counter(descClAskPkts, a.Released, "released")
	counter(descClAskPkts, a.Dropped, "dropped")
	counter(descClCorrect, a.Corrected)
	if len(a.Wait) == len(a.WaitBounds)+1 {
		buckets := map[float64]uint64{}
		var cum, total uint64
		for i, b := range a.WaitBounds {
			cum += a.Wait[i]
			buckets[float64(b)/1000] = cum
		}
		total = cum + a.Wait[len(a.WaitBounds)]
		ch <- prometheus.MustNewConstHistogram(descClAskWait, total, float64(a.WaitSum)/1000, buckets)
	}
}
