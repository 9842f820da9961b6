package e2e

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/scenario"
)

// clusterStatuses returns `ctl cluster status` of the LB nodes lbs, asked
// at once.
func clusterStatuses(ctx context.Context, s *scenario.Scenario, lbs ...int) ([]control.ClusterStatus, error) {
	out := make([]control.ClusterStatus, len(lbs))
	errs := make([]error, len(lbs))
	var wg sync.WaitGroup
	for k, i := range lbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[k], errs[k] = s.ClusterStatus(ctx, i)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// waitCluster polls the LB nodes lbs until each shows alive members, is
// ready, and all show the same chains digest; it returns their statuses
// and how long that took.
func waitCluster(t *testing.T, s *scenario.Scenario, timeout time.Duration, alive int, lbs ...int) ([]control.ClusterStatus, time.Duration) {
	t.Helper()
	start := time.Now()
	var last []control.ClusterStatus
	var lastErr error
	for time.Since(start) < timeout {
		sts, err := clusterStatuses(t.Context(), s, lbs...)
		last, lastErr = sts, err
		ok := err == nil
		for _, st := range sts {
			ok = ok && st.Running && st.Ready && st.Alive == alive && st.Digest == sts[0].Digest
		}
		if ok {
			return sts, time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("LB nodes %v: not %d alive, ready and agreeing after %v (%v): %+v", lbs, alive, timeout, lastErr, last)
	return nil, 0
}

// Three LB nodes form a cluster and agree on the chains; a SIGKILLed node
// is out of the survivors' views within 2 s; restarted, it rejoins, syncs
// and serves, and the chains are those of before. Control: a node started
// without node.cluster runs alone.
func TestE2EClusterMembership(t *testing.T) {
	s := start(t, scenario.Options{IO: "afpacket", LBs: 3, Cluster: true, Affinity: config.AffinityAlways})
	sts, formed := waitCluster(t, s, 20*time.Second, 3, 0, 1, 2)
	full := sts[0].Digest
	heads, tails := 0, 0
	for i, st := range sts {
		heads += st.Heads
		tails += st.Tails
		if len(st.Members) != 3 || st.Self != s.ClusterBind(i).String() {
			t.Fatalf("lb%d: members %+v self %s", i+1, st.Members, st.Self)
		}
		for _, m := range st.Members {
			if m.State != "alive" || !m.Configured {
				t.Fatalf("lb%d: member %+v", i+1, m)
			}
		}
	}
	if heads != sts[0].Shards || tails != sts[0].Shards {
		t.Fatalf("every shard has one head and one tail: heads %d tails %d of %d shards", heads, tails, sts[0].Shards)
	}
	t.Logf("3 LB nodes formed the cluster in %v (chains digest %s; heads %d/%d/%d)", formed.Round(time.Millisecond), full, sts[0].Heads, sts[1].Heads, sts[2].Heads)

	// affinity always: every new connection is published by the LB node
	// ECMP gave it to, and its entry is on both members of its chain.
	if _, err := s.Curl(t.Context(), s.Opts.VIP4, 30); err != nil {
		t.Fatal(err)
	}
	flows := waitReplicated(t, s, 2, 0, 1, 2)
	if flows < 30 {
		t.Fatalf("%d flows published, want at least the 30 connections", flows)
	}
	t.Logf("affinity always: %d flows published, each on both members of its chain", flows)

	// SIGKILL lb3: no graceful leave, the failure detector must see it.
	killed := time.Now()
	if err := s.Signal(2, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	sts, _ = waitCluster(t, s, 5*time.Second, 2, 0, 1)
	detect := time.Since(killed)
	if detect > 2*time.Second {
		t.Errorf("the killed node left the survivors' views after %v, want within 2s", detect)
	}
	if sts[0].Digest == full {
		t.Errorf("the survivors' chains did not change (digest %s)", full)
	}
	for i, st := range sts {
		if st.Members[2].State != "down" {
			t.Errorf("lb%d shows lb3 as %q", i+1, st.Members[2].State)
		}
	}
	t.Logf("SIGKILL of lb3: out of both survivors' views after %v (chains digest %s)", detect.Round(time.Millisecond), sts[0].Digest)
	// The chains that held lb3 re-formed and synced: both survivors hold
	// every flow.
	var held int
	for _, st := range sts {
		held += st.Entries
	}
	waitEntries(t, s, 2*flows, 0, 1)

	// Restart: it rejoins, syncs its shards, then serves.
	restarted := time.Now()
	if err := s.RestartLB(t.Context(), 2, "afpacket"); err != nil {
		t.Fatal(err)
	}
	sts, _ = waitCluster(t, s, 20*time.Second, 3, 0, 1, 2)
	rejoin := time.Since(restarted)
	if sts[0].Digest != full {
		t.Errorf("after the rejoin the chains digest is %s, before the kill %s", sts[0].Digest, full)
	}
	if st := sts[2]; st.Sync.Shards == 0 || st.Sync.Pending != 0 {
		t.Errorf("the restarted node shows no completed sync: %+v", st.Sync)
	}
	t.Logf("lb3 restarted: rejoined, synced %d shards and ready after %v (process start included)", sts[2].Sync.Shards, rejoin.Round(time.Millisecond))
	waitEntries(t, s, 2*flows, 0, 1, 2)
	if sts, err := clusterStatuses(t.Context(), s, 2); err != nil || sts[0].Sync.EntriesIn == 0 {
		t.Errorf("the restarted node pulled no entries: %v %+v", err, sts)
	}
	t.Logf("every flow on 2 members after the kill (the survivors held %d entries when they saw it) and after the rejoin", held)

	// Node drain: lb2 leaves the cluster gracefully (the others see it at
	// once, without a failure timeout) and joins again on undrain.
	drained := time.Now()
	if out, err := s.Lab.LBs[1].Run(t.Context(), sluiceBin, "ctl", "node", "drain"); err != nil {
		t.Fatalf("drain: %v\n%s", err, out)
	}
	waitCluster(t, s, 5*time.Second, 2, 0, 2)
	leave := time.Since(drained)
	if st, err := s.ClusterStatus(t.Context(), 1); err != nil || st.Running || st.Alive != 0 {
		t.Fatalf("drained lb2: %v %+v", err, st)
	}
	if leave > time.Second {
		t.Errorf("a drained node's graceful leave was seen after %v", leave)
	}
	undrained := time.Now()
	if out, err := s.Lab.LBs[1].Run(t.Context(), sluiceBin, "ctl", "node", "undrain"); err != nil {
		t.Fatalf("undrain: %v\n%s", err, out)
	}
	if sts, _ := waitCluster(t, s, 10*time.Second, 3, 0, 1, 2); sts[0].Digest != full {
		t.Errorf("after undrain the chains digest is %s, want %s", sts[0].Digest, full)
	}
	t.Logf("node drain: lb2 out of the others' views after %v (ctl included); undrained, it rejoined and was ready after %v",
		leave.Round(time.Millisecond), time.Since(undrained).Round(time.Millisecond))

	// Control: lb3 restarted without node.cluster runs alone, and the
	// others see it gone.
	s.Opts.Cluster, s.Opts.Affinity = false, "" // always needs a cluster
	if err := s.RestartLB(t.Context(), 2, "afpacket"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := s.ClusterStatus(t.Context(), 2)
		if err == nil {
			if st.Enabled || st.Alive != 0 {
				t.Fatalf("lb3 without node.cluster: %+v", st)
			}
			out, err := s.Lab.LBs[2].Run(t.Context(), sluiceBin, "ctl", "cluster", "status")
			if err != nil || !lineHas(out, "runs alone") {
				t.Fatalf("ctl cluster status without node.cluster (%v):\n%s", err, out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitCluster(t, s, 5*time.Second, 2, 0, 1)
}

// entriesSettle bounds how long the entry counts take to settle: a member
// keeps its copies of a shard whose chain it left for cluster.Config.KeepLeft
// (5 s) before it deletes them.
const entriesSettle = 15 * time.Second

// waitReplicated waits until every flow the LB nodes lbs published is
// committed and their entries are replicas times the flows, and returns
// the flows.
func waitReplicated(t *testing.T, s *scenario.Scenario, replicas int, lbs ...int) int {
	t.Helper()
	deadline := time.Now().Add(entriesSettle)
	for {
		sts, err := clusterStatuses(t.Context(), s, lbs...)
		var pub, committed, failed, entries int
		for _, st := range sts {
			pub += int(st.Publish.Submitted)
			committed += int(st.Publish.Committed)
			failed += int(st.Publish.Failed + st.Publish.Rejected + st.Publish.Dropped)
			entries += st.Entries
		}
		if failed > 0 {
			t.Fatalf("%d flows not published: %+v", failed, sts)
		}
		if err == nil && pub > 0 && committed == pub && entries == replicas*pub {
			return pub
		}
		if time.Now().After(deadline) {
			t.Fatalf("published %d flows, %d entries, want %d x (%v): %+v", pub, entries, replicas, err, sts)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitEntries waits until the LB nodes lbs hold want entries in all.
func waitEntries(t *testing.T, s *scenario.Scenario, want int, lbs ...int) {
	t.Helper()
	deadline := time.Now().Add(entriesSettle)
	for {
		sts, err := clusterStatuses(t.Context(), s, lbs...)
		entries := 0
		for _, st := range sts {
			entries += st.Entries
		}
		if err == nil && entries == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("LB nodes %v hold %d entries, want %d (%v)", lbs, entries, want, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
