package control

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicelb/sluice/internal/announce/l2"
)

func TestL2Metrics(t *testing.T) {
	s, n := newServer(t)
	names := []string{"sluice_l2_vip_answering", "sluice_l2_quorum", "sluice_l2_takeovers_total"}
	if got := testutil.CollectAndCount(s.Collector(), names...); got != 0 {
		t.Fatalf("%d L2 metrics without node.l2", got)
	}
	n.L2 = &l2.Status{Quorum: true, Takeovers: 2, Releases: 1, VIPs: []l2.VIPStatus{
		{Address: "198.18.0.10", Answering: true}, {Address: "2001:db8::10"}}}
	if err := testutil.CollectAndCompare(s.Collector(), strings.NewReader(`
# HELP sluice_l2_quorum L2 mode: 1 while the node sees a majority of the configured members (it may claim VIPs).
# TYPE sluice_l2_quorum gauge
sluice_l2_quorum 1
# HELP sluice_l2_takeovers_total L2 mode: VIPs this node took over (started answering, with gratuitous ARP / unsolicited neighbour advertisements), and those it let go (released).
# TYPE sluice_l2_takeovers_total counter
sluice_l2_takeovers_total{event="release"} 1
sluice_l2_takeovers_total{event="takeover"} 2
# HELP sluice_l2_vip_answering L2 mode: 1 for each VIP address this node answers ARP / neighbour solicitations for (it owns it and sees a majority), else 0.
# TYPE sluice_l2_vip_answering gauge
sluice_l2_vip_answering{vip="198.18.0.10"} 1
sluice_l2_vip_answering{vip="2001:db8::10"} 0
`), names...); err != nil {
		t.Fatal(err)
	}
	if st := s.L2Status(); !st.Enabled || len(st.VIPs) != 2 {
		t.Fatalf("status %+v", st)
	}
	if problems, err := testutil.CollectAndLint(s.Collector()); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
}
