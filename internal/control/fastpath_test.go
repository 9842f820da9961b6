package control

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/fastpath"
)

func TestFastpathStatusAndMetrics(t *testing.T) {
	s, n := newServer(t)
	names := []string{"sluice_fastpath_active_redirects", "sluice_fastpath_refused_total"}
	if got := testutil.CollectAndCount(s.Collector(), names...); got != 0 {
		t.Fatalf("%d fastpath metrics without node.fastpath", got)
	}
	if st := s.Fastpath(context.Background(), 0); st.Enabled {
		t.Fatalf("enabled without node.fastpath: %+v", st)
	}
	n.FastpathOn = true
	n.FastpathCounters = datapath.FastpathCounters{Offered: 5, Installed: 3, Refused: 2, Active: 3}
	n.FastpathCounters.RefusedBy[fastpath.StatusBackend] = 2
	n.FastpathRedirects = []datapath.FastpathRedirect{{
		Flow:    fastpath.Flow{Proto: 17, Client: netip.MustParseAddrPort("198.18.10.2:5000"), VIP: netip.MustParseAddrPort("198.18.0.10:53")},
		Backend: netip.MustParseAddr("198.18.30.101"), State: "installed",
	}}
	st := s.Fastpath(context.Background(), 0)
	if !st.Enabled || st.Counters.Installed != 3 || st.Refused["backend_not_allowed"] != 2 || len(st.Redirects) != 1 ||
		st.Redirects[0].Proto != "udp" || st.Redirects[0].Backend.String() != "198.18.30.101" {
		t.Fatalf("status %+v", st)
	}
	if err := testutil.CollectAndCompare(s.Collector(), strings.NewReader(`
# HELP sluice_fastpath_active_redirects Fastpath: flows the agents send straight to their backends now, as this node redirected them.
# TYPE sluice_fastpath_active_redirects gauge
sluice_fastpath_active_redirects 3
`), "sluice_fastpath_active_redirects"); err != nil {
		t.Fatal(err)
	}
	if got := testutil.CollectAndCount(s.Collector(), "sluice_fastpath_refused_total"); got != 6 {
		t.Errorf("%d refused series, want one per status (6)", got)
	}
	if problems, err := testutil.CollectAndLint(s.Collector()); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
}
