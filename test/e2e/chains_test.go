package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/scenario"
)

// chainsLab is the owner-chains lab: three LB nodes behind BIRD (ECMP,
// BFD), five backends, stream4 on be1..be3 (be4 and be5 not yet in it).
// With cluster, the nodes are one cluster and every VIP has affinity
// always (no second chance: a node without a flow's entry has only the
// chains to ask); without, the default affinity (on-change).
func chainsLab(t *testing.T, cluster bool) *scenario.Scenario {
	t.Helper()
	o := scenario.Options{Backends: 5, StreamStates: []string{"", "", "", "absent", "absent"}, AgentMetrics: true, Cluster: cluster}
	if cluster {
		o.Affinity = config.AffinityAlways
	}
	s := bgpLab(t, o)
	if cluster {
		_, d := waitCluster(t, s, 20*time.Second, 3, 0, 1, 2)
		t.Logf("cluster of 3 formed and ready after %v", d.Round(time.Millisecond))
	}
	return s
}

// waitStreamsPublished waits until the LB nodes lbs hold 2 entries (R=2)
// for each of the streams in stream4 and every flow they published (other
// VIPs' included) is committed.
func waitStreamsPublished(t *testing.T, s *scenario.Scenario, streams int, lbs ...int) []control.ClusterStatus {
	t.Helper()
	start := time.Now()
	deadline := start.Add(entriesSettle)
	for {
		sts, err := clusterStatuses(t.Context(), s, lbs...)
		var pub, committed, failed uint64
		entries := 0
		for _, st := range sts {
			pub += st.Publish.Submitted
			committed += st.Publish.Committed
			failed += st.Publish.Failed + st.Publish.Rejected + st.Publish.Dropped
			entries += st.ByVIP["stream4"]
		}
		if failed > 0 {
			t.Fatalf("%d flows not published: %+v", failed, sts)
		}
		if err == nil && committed == pub && entries == 2*streams {
			t.Logf("%d streams published and on both members of their chains after %v (%d flows published in all)",
				streams, time.Since(start).Round(time.Millisecond), pub)
			return sts
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream4: %d entries, want %d; published %d, committed %d (%v): %+v", entries, 2*streams, pub, committed, err, sts)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logClusterCounters logs the chain and query counters of the LB nodes lbs
// and returns, summed over them, the workers' questions to the chains:
// flows asked about and those whose answer named another backend than the
// node's own decision (connections a local decision would have broken).
func logClusterCounters(t *testing.T, s *scenario.Scenario, when string, lbs ...int) (asked, moved uint64) {
	t.Helper()
	sts, err := clusterStatuses(t.Context(), s, lbs...)
	if err != nil {
		t.Logf("%s: cluster status: %v", when, err)
		return 0, 0
	}
	for k, st := range sts {
		c := st.Stats
		asked += st.Ask.Asked
		moved += st.Ask.Moved
		t.Logf("%s: lb%d alive %d ready %v entries %d (stream4 %d); publish %+v; asked %+v; served queries %d inserts %d; sync %+v",
			when, lbs[k]+1, st.Alive, st.Ready, st.Entries, st.ByVIP["stream4"], st.Publish,
			st.Ask, c.Queries, c.Inserts, st.Sync)
	}
	return asked, moved
}

// count takes a phase's questions into the result.
func (r *chainsResult) count(asked, moved uint64) {
	r.asked = max(r.asked, asked)
	r.moved = max(r.moved, moved)
}

// vipStatus returns LB node i's status of the VIP name (`ctl vip list`).
func vipStatus(t *testing.T, s *scenario.Scenario, i int, name string) control.VIPStatus {
	t.Helper()
	j, err := s.Lab.LBs[i].Run(t.Context(), sluiceBin, "ctl", "vip", "list", "-o", "json")
	if err != nil {
		t.Fatalf("lb%d: vip list: %v\n%s", i+1, err, j)
	}
	var vips []control.VIPStatus
	if err := json.Unmarshal([]byte(j), &vips); err != nil {
		t.Fatal(err)
	}
	for _, v := range vips {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("lb%d: no vip %s", i+1, name)
	return control.VIPStatus{}
}

// vipFingerprint returns LB node i's table fingerprint of the VIP name.
func vipFingerprint(t *testing.T, s *scenario.Scenario, i int, name string) string {
	t.Helper()
	return vipStatus(t, s, i, name).Fingerprint
}

// chainsResult is what chainsRun measured.
type chainsResult struct {
	broken  [3]int // broken so far at the end of each phase
	stalled int    // streams that answered nothing for a second at the end
	// Flows the polled nodes asked their chains about, and those whose
	// answer moved them off the node's own decision: the most the polled
	// nodes showed at once (a restarted node's counters start again).
	asked, moved uint64
	per          map[string]int
}

// chainsRun runs the schedule of the owner-chains tests while 300 streams
// run: be4 and be5 join stream4 on every node (about 40 % of the slots
// change owner) while lb1 is SIGKILLed; lb1 restarts; lb2 is SIGKILLed.
// Each time the router moves flows to nodes that do not have their entries.
func chainsRun(t *testing.T, s *scenario.Scenario) chainsResult {
	var res chainsResult
	ctx := t.Context()
	cluster := s.Opts.Cluster
	vip := s.Opts.VIP4
	st := openStreams(t, s, failoverConns, 15*time.Second)
	if cluster {
		waitStreamsPublished(t, s, failoverConns, 0, 1, 2)
	}
	time.Sleep(time.Second)
	phase(t, st, "steady state", 0)
	if cluster {
		logClusterCounters(t, s, "steady state", 0, 1, 2)
	}
	before := vipFingerprint(t, s, 1, "stream4")

	// (1) At once: lb1 killed, be4 and be5 active on the others (lb1
	// gets them with its restart: RestartLB writes ConfigFor).
	s.Opts.StreamStates = []string{"", "", "", "", ""}
	if err := s.Signal(0, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := range s.LBs {
		if i == 0 {
			continue
		}
		if err := s.ReloadLB(i, s.ConfigFor(i)); err != nil {
			t.Fatal(err)
		}
	}
	took, err := s.WaitNextHops(ctx, vip, 5*time.Second, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, i := range []int{1, 2} {
		for vipFingerprint(t, s, i, "stream4") == before {
			if time.Now().After(deadline) {
				t.Fatalf("lb%d: stream4 table unchanged 5s after the reload", i+1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(3 * time.Second)
	res.broken[0], _ = phase(t, st, "(1) be4+be5 in, lb1 killed", took)
	if cluster {
		res.count(logClusterCounters(t, s, "(1)", 1, 2))
	}

	// (2) lb1 restarts (no flow table; with the cluster it syncs its
	// shards first) and gets its share of the flows back. The router's
	// hash-threshold multipath gives it back mostly its own flows, which
	// the survivors sent to the new table's owners in (1).
	restarted := time.Now()
	if err := s.RestartLB(ctx, 0, s.Opts.IO); err != nil {
		t.Fatal(err)
	}
	if cluster {
		waitCluster(t, s, 20*time.Second, 3, 0, 1, 2)
	}
	if _, err := s.WaitNextHops(ctx, vip, 20*time.Second, 0, 1, 2); err != nil {
		t.Fatal(err)
	}
	// (No checkFingerprints: the fingerprint covers the previous owners,
	// which the reloaded nodes have and the restarted one has not.)
	took = time.Since(restarted)
	time.Sleep(2 * time.Second)
	res.broken[1], _ = phase(t, st, "(2) lb1 restarted", took)
	if cluster {
		res.count(logClusterCounters(t, s, "(2)", 0, 1, 2))
	}

	// (3) lb2 killed: its flows go to lb1 and lb3.
	if err := s.Signal(1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if took, err = s.WaitNextHops(ctx, vip, 5*time.Second, 0, 2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	res.broken[2], _ = phase(t, st, "(3) lb2 killed", took)
	if cluster {
		res.count(logClusterCounters(t, s, "(3)", 0, 2))
	}

	// A stream that lost its packets without a reset breaks only at its
	// 15 s answer timeout: count those that answered nothing for a second.
	snap := st.Snapshot()
	time.Sleep(time.Second)
	for i, r := range st.Snapshot() {
		if r.Err == nil && r.Sent == snap[i].Sent {
			res.stalled++
		}
	}
	res.per = map[string]int{}
	n := 0
	for i, r := range st.Stop() {
		if r.Err == nil {
			continue
		}
		res.per[r.Backend]++
		if n++; n <= 5 {
			t.Logf("stream %d on %s broke: %v", i, r.Backend, r.Err)
		}
	}
	delivered, perBE := agentCounter(t, s, "delivered")
	t.Logf("broken per phase (cumulative) %v, per backend %v; %d stalled; agents delivered %d packets (per backend %v)",
		res.broken, res.per, res.stalled, delivered, perBE)
	return res
}

// Three LB nodes in a cluster, stream4 with affinity always: every flow's
// entry is on both members of its owner chain. Two backends join (about
// 40 % of the Maglev slots change owner) while lb1 is SIGKILLed, then lb1
// restarts with an empty flow table, then lb2 is SIGKILLed. Each time the
// router hands flows to nodes without their entries, on slots whose owner
// changed; those nodes ask the flow's chain for its backend, so no
// connection breaks.
func TestE2EOwnerChains(t *testing.T) {
	s := chainsLab(t, true)
	res := chainsRun(t, s)
	if sts, err := clusterStatuses(t.Context(), s, 0, 2); err == nil {
		var wait []uint64
		var sum, flows uint64
		for k, st := range sts {
			st.Members = nil
			t.Logf("lb%d cluster status at the end: %s", []int{1, 3}[k], strings.TrimSpace(fmt.Sprintf("%+v", st)))
			for i, n := range st.Ask.Wait {
				if len(wait) <= i {
					wait = append(wait, 0)
				}
				wait[i] += n
				flows += n
			}
			sum += st.Ask.WaitSum
		}
		if flows > 0 && len(sts[0].Ask.WaitBounds) > 0 {
			// The held-packet wait: what a moved flow's first packet
			// waits for its chain's answer (bench/cluster/run.sh --lab).
			t.Logf("held-packet wait: %d flows, mean %.2f ms, buckets (ms, upper bounds %v, then more): %v",
				flows, float64(sum)/float64(flows), sts[0].Ask.WaitBounds, wait)
		}
	}
	if b := res.broken[2]; b != 0 || res.stalled != 0 {
		t.Errorf("%d of %d connections broke (per phase, cumulative %v; per backend %v), %d stalled",
			b, failoverConns, res.broken, res.per, res.stalled)
	}
	// The control run shows the schedule moves flows to nodes without
	// their entries; here they must have asked the chains.
	t.Logf("the LB nodes asked their chains about %d flows; %d answers named another backend than the node's own decision", res.asked, res.moved)
	if res.asked == 0 || res.moved == 0 {
		t.Error("no flow was moved by its chain's answer: the schedule did not exercise the query path")
	}
}

// The control run: the same schedule without the cluster (affinity
// on-change: each node keeps only its own flow table). Flows moved to a
// node without their entry go to their slot's new owner: connections
// break, which proves TestE2EOwnerChains can fail.
func TestE2EOwnerChainsControlNoCluster(t *testing.T) {
	s := chainsLab(t, false)
	res := chainsRun(t, s)
	t.Logf("without the cluster: %d of %d connections broke (per phase, cumulative %v; per backend %v), %d stalled",
		res.broken[2], failoverConns, res.broken, res.per, res.stalled)
	if res.broken[2] == 0 {
		t.Fatal("no connection broke without the cluster: the owner-chains test could not fail")
	}
}
