package control

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicelb/sluice/internal/cluster"
	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/control/controltest"
)

func TestClusterStatus(t *testing.T) {
	n := controltest.New()
	s := New(n)
	if st := s.ClusterStatus(); st.Enabled || len(st.Members) != 0 {
		t.Fatalf("alone: %+v", st)
	}
	if got := testutil.CollectAndCount(s.Collector(), "sluice_cluster_members_alive"); got != 0 {
		t.Fatalf("a node running alone exports %d cluster metrics", got)
	}
	a := netip.MustParseAddrPort
	members := []netip.AddrPort{a("10.0.0.1:7946"), a("10.0.0.3:7946"), a("10.0.0.9:7946")}
	n.Cluster = &cluster.MemberStatus{
		Configured: []netip.AddrPort{a("10.0.0.1:7946"), a("10.0.0.2:7946"), a("10.0.0.3:7946")},
		Running:    true, Seed: 5, Shards: 64, Replicas: 2, Published: 11, PublishCommitted: 9, PublishFailed: 1, PublishRejected: 2, PublishDropped: 1,
		Services: map[uint16]string{config.ServiceID("web"): "web"},
		Report: cluster.Report{Members: members, Ready: true, Heads: 20, Middles: 0, Tails: 22, Entries: 7,
			ByService: map[uint16]int{config.ServiceID("web"): 5, 9: 2},
			Stats:     cluster.Stats{DropAuth: 3, SyncShards: 40}},
	}
	st := s.ClusterStatus()
	want := []ClusterMember{
		{Address: "10.0.0.1:7946", State: "alive", Configured: true, Self: true},
		{Address: "10.0.0.2:7946", State: "down", Configured: true},
		{Address: "10.0.0.3:7946", State: "alive", Configured: true},
		{Address: "10.0.0.9:7946", State: "alive"},
	}
	if len(st.Members) != len(want) {
		t.Fatalf("members %+v", st.Members)
	}
	for i := range want {
		if st.Members[i] != want[i] {
			t.Errorf("member %d: %+v, want %+v", i, st.Members[i], want[i])
		}
	}
	if !st.Enabled || !st.Running || !st.Ready || st.Alive != 3 || st.Self != "10.0.0.1:7946" || st.Heads != 20 || st.Tails != 22 {
		t.Errorf("status %+v", st)
	}
	if st.ByVIP["web"] != 5 || st.ByVIP["service-9"] != 2 || st.Drops["auth"] != 3 || st.Sync.Shards != 40 {
		t.Errorf("entries %v drops %v sync %+v", st.ByVIP, st.Drops, st.Sync)
	}
	if st.Publish != (ClusterPublish{Submitted: 11, Committed: 9, Failed: 1, Rejected: 2, Dropped: 1}) {
		t.Errorf("publish %+v", st.Publish)
	}
	if d := st.Digest; len(d) != 16 || d == "" {
		t.Errorf("digest %q", d)
	}
	if err := testutil.CollectAndCompare(s.Collector(), strings.NewReader(`
# HELP sluice_cluster_members_alive Members in the node's current cluster view (itself included).
# TYPE sluice_cluster_members_alive gauge
sluice_cluster_members_alive 3
# HELP sluice_cluster_shards Shards by this node's role in their chain (head, middle, tail; a one-member chain counts as head and tail).
# TYPE sluice_cluster_shards gauge
sluice_cluster_shards{role="head"} 20
sluice_cluster_shards{role="middle"} 0
sluice_cluster_shards{role="tail"} 22
# HELP sluice_cluster_vip_entries Flow entries held for the chains, per VIP.
# TYPE sluice_cluster_vip_entries gauge
sluice_cluster_vip_entries{vip="service-9"} 2
sluice_cluster_vip_entries{vip="web"} 5
`), "sluice_cluster_members_alive", "sluice_cluster_shards", "sluice_cluster_vip_entries"); err != nil {
		t.Fatal(err)
	}
	if problems, err := testutil.CollectAndLint(s.Collector()); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
	n.Cluster.Running, n.Cluster.Report = false, cluster.Report{}
	if st := s.ClusterStatus(); !st.Enabled || st.Running || st.Alive != 0 || st.Members[0].State != "down" || st.Digest != "" {
		t.Errorf("drained: %+v", st)
	}
}
