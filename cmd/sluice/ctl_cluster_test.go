package main

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/cluster"
	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/control"
)

func TestCtlClusterStatus(t *testing.T) {
	ts, n := ctlServer(t, "")
	out, _, err := runCtl(t, ts, "cluster", "status")
	if err != nil || out != "cluster  none: the node runs alone (no node.cluster)\n" {
		t.Fatalf("alone: %q %v", out, err)
	}
	a := netip.MustParseAddrPort
	n.Cluster = &cluster.MemberStatus{
		Configured: []netip.AddrPort{a("10.0.0.1:7946"), a("10.0.0.2:7946")},
		Running:    true, Seed: 5, Shards: 64, Replicas: 2,
		Services: map[uint16]string{config.ServiceID("web"): "web"},
		Report: cluster.Report{Members: []netip.AddrPort{a("10.0.0.1:7946")}, Ready: true, Heads: 64, Tails: 64, Entries: 3, Capacity: 1024,
			ByService: map[uint16]int{config.ServiceID("web"): 3}},
	}
	out, _, err = runCtl(t, ts, "cluster", "status")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string // each line's words, one space apart
	for _, l := range strings.Split(out, "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	for _, want := range []string{
		"cluster ready", "alive 1", "shards head 64, middle 0, tail 64", "entries 3 of 1024",
		"10.0.0.1:7946 (self) alive yes", "10.0.0.2:7946 down yes", "web 3",
		"published 0 new flows, 0 committed, 0 failed, 0 rejected, 0 dropped; 0 refreshed",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	out, _, err = runCtl(t, ts, "-o", "json", "cluster", "status")
	var st control.ClusterStatus
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || !st.Enabled || st.Alive != 1 || len(st.Digest) != 16 {
		t.Fatalf("json: %v %+v", err, st)
	}
}
