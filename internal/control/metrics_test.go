package control

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicelb/sluice/internal/control/controltest"
	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/health"

	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
)

func TestCollector(t *testing.T) {
	s, n := newServer(t)
	n.SetCounters(fakeCounters())
	c := s.Collector()
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP sluice_backend_packets_total Packets sent to a backend of a VIP.
# TYPE sluice_backend_packets_total counter
sluice_backend_packets_total{backend="10.1.0.1",vip="web"} 50
sluice_backend_packets_total{backend="10.1.0.2",vip="web"} 7
sluice_backend_packets_total{backend="10.1.0.3",vip="dns"} 33
# HELP sluice_backend_bytes_total Bytes sent to a backend of a VIP.
# TYPE sluice_backend_bytes_total counter
sluice_backend_bytes_total{backend="10.1.0.1",vip="web"} 5000
sluice_backend_bytes_total{backend="10.1.0.2",vip="web"} 700
sluice_backend_bytes_total{backend="10.1.0.3",vip="dns"} 3300
# HELP sluice_backend_next_hop_resolved 1 if the backend's next hop is resolved, else 0.
# TYPE sluice_backend_next_hop_resolved gauge
sluice_backend_next_hop_resolved{backend="10.1.0.1",vip="web"} 1
sluice_backend_next_hop_resolved{backend="10.1.0.2",vip="web"} 0
sluice_backend_next_hop_resolved{backend="10.1.0.3",vip="dns"} 1
# HELP sluice_vip_packets_total Packets sent to the backends of a VIP.
# TYPE sluice_vip_packets_total counter
sluice_vip_packets_total{vip="dns"} 33
sluice_vip_packets_total{vip="web"} 57
# HELP sluice_flow_hits_total Packets whose flow-table entry was current.
# TYPE sluice_flow_hits_total counter
sluice_flow_hits_total 80
# HELP sluice_flow_misses_total Packets without a current flow-table entry.
# TYPE sluice_flow_misses_total counter
sluice_flow_misses_total 10
# HELP sluice_rx_packets_total Frames received on the node's links.
# TYPE sluice_rx_packets_total counter
sluice_rx_packets_total 100
# HELP sluice_config_generation Configuration generation: 1 at start, plus one per successful apply.
# TYPE sluice_config_generation gauge
sluice_config_generation 1
# HELP sluice_config_last_apply_success 1 if the last configuration apply succeeded or none was made yet, else 0.
# TYPE sluice_config_last_apply_success gauge
sluice_config_last_apply_success 1
`), "sluice_backend_packets_total", "sluice_backend_bytes_total", "sluice_backend_next_hop_resolved",
		"sluice_vip_packets_total", "sluice_flow_hits_total", "sluice_flow_misses_total", "sluice_rx_packets_total",
		"sluice_config_generation", "sluice_config_last_apply_success"); err != nil {
		t.Fatal(err)
	}

	problems, err := testutil.CollectAndLint(c)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}

	// A failed apply shows in the gauges; the counters keep counting.
	if _, err := s.PutConfig(context.Background(), []byte("node: [")); err == nil {
		t.Fatal("accepted")
	}
	n.SetCounters(fakeCounters2())
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP sluice_config_last_apply_success 1 if the last configuration apply succeeded or none was made yet, else 0.
# TYPE sluice_config_last_apply_success gauge
sluice_config_last_apply_success 0
# HELP sluice_config_last_apply_timestamp_seconds Unix time of the last configuration apply (0: none yet).
# TYPE sluice_config_last_apply_timestamp_seconds gauge
sluice_config_last_apply_timestamp_seconds 1.767323045e+09
# HELP sluice_parse_drops_total Frames dropped by the parser, by verdict.
# TYPE sluice_parse_drops_total counter
sluice_parse_drops_total{verdict="bad_ext_header"} 0
sluice_parse_drops_total{verdict="bad_icmp"} 0
sluice_parse_drops_total{verdict="bad_ihl"} 5
sluice_parse_drops_total{verdict="bad_ip_version"} 0
sluice_parse_drops_total{verdict="bad_length"} 0
sluice_parse_drops_total{verdict="bad_tcp_offset"} 0
sluice_parse_drops_total{verdict="bad_udp_length"} 0
sluice_parse_drops_total{verdict="too_many_ext_headers"} 0
sluice_parse_drops_total{verdict="too_many_vlans"} 0
sluice_parse_drops_total{verdict="truncated"} 0
sluice_parse_drops_total{verdict="unsupported_ethertype"} 0
# HELP sluice_drops_total Packets dropped, by reason (parse is the total of sluice_parse_drops_total).
# TYPE sluice_drops_total counter
sluice_drops_total{reason="chain_hold"} 0
sluice_drops_total{reason="firewall_deny"} 0
sluice_drops_total{reason="fragment"} 0
sluice_drops_total{reason="fragment_timeout"} 0
sluice_drops_total{reason="icmp_unroutable"} 0
sluice_drops_total{reason="kernel_tx_limited"} 0
sluice_drops_total{reason="nat_no_binding"} 0
sluice_drops_total{reason="no_backend"} 0
sluice_drops_total{reason="no_headroom"} 0
sluice_drops_total{reason="no_next_hop"} 9
sluice_drops_total{reason="no_tenant"} 0
sluice_drops_total{reason="parse"} 5
sluice_drops_total{reason="snat_exhausted"} 0
sluice_drops_total{reason="too_big"} 0
sluice_drops_total{reason="too_big_rate_limited"} 0
`), "sluice_config_last_apply_success", "sluice_config_last_apply_timestamp_seconds", "sluice_parse_drops_total", "sluice_drops_total"); err != nil {
		t.Fatal(err)
	}
}

func fakeCounters2() datapath.Counters {
	c := fakeCounters()
	c.Drops[pipeline.ReasonNoNextHop] = 9
	c.Drops[pipeline.ReasonParse] = 5
	c.Parse[packet.BadIHL] = 5
	return c
}

// healthNode is the fake node with health checks h.
func healthNode(h []health.Backend) *controltest.Node {
	n := controltest.New()
	n.HealthStates = h
	return n
}

func TestCollectorHealth(t *testing.T) {
	n := healthNode([]health.Backend{
		{VIP: "web", Backend: "10.1.0.1", State: health.Up, Up: 2, Down: 1},
		{VIP: "web", Backend: "10.1.0.2", State: health.Down, Up: 1, Down: 1},
		{VIP: "dns", Backend: "10.1.0.3", State: health.Unknown},
	})
	c := New(n).Collector()
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP sluice_backend_health Health-check state of a backend: 1 up, 0 down, -1 unknown (no decision yet; counts as up).
# TYPE sluice_backend_health gauge
sluice_backend_health{backend="10.1.0.1",vip="web"} 1
sluice_backend_health{backend="10.1.0.2",vip="web"} 0
sluice_backend_health{backend="10.1.0.3",vip="dns"} -1
# HELP sluice_backend_health_transitions_total Health-check transitions of a backend, by target state (up, down).
# TYPE sluice_backend_health_transitions_total counter
sluice_backend_health_transitions_total{backend="10.1.0.1",to="down",vip="web"} 1
sluice_backend_health_transitions_total{backend="10.1.0.1",to="up",vip="web"} 2
sluice_backend_health_transitions_total{backend="10.1.0.2",to="down",vip="web"} 1
sluice_backend_health_transitions_total{backend="10.1.0.2",to="up",vip="web"} 1
sluice_backend_health_transitions_total{backend="10.1.0.3",to="down",vip="dns"} 0
sluice_backend_health_transitions_total{backend="10.1.0.3",to="up",vip="dns"} 0
`), "sluice_backend_health", "sluice_backend_health_transitions_total"); err != nil {
		t.Fatal(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}

	// A node without health checks exports no health metrics.
	s, _ := newServer(t)
	if got := testutil.CollectAndCount(s.Collector(), "sluice_backend_health", "sluice_backend_health_transitions_total"); got != 0 {
		t.Fatalf("%d health metrics from a node without Health", got)
	}
}

var descName = regexp.MustCompile(`fqName: "([a-z0-9_:]+)"`)

// metricNames returns the names of every metric the collector describes.
func metricNames(t *testing.T) map[string]bool {
	names := map[string]bool{}
	for _, d := range Descs() {
		m := descName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		names[m[1]] = true
	}
	return names
}

// The example Grafana dashboard is valid JSON and every sluice_ metric its
// queries name is one the collector exports.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("../../examples/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	names := metricNames(t)
	used := map[string]bool{}
	ref := regexp.MustCompile(`sluice_[a-z0-9_]+`)
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("panel %q: empty query", p.Title)
			}
			for _, m := range ref.FindAllString(tg.Expr, -1) {
				used[m] = true
				if !names[m] {
					t.Errorf("panel %q: %s is not a metric the collector exports", p.Title, m)
				}
			}
		}
	}
	if len(used) == 0 {
		t.Fatal("the dashboard queries no sluice_ metric")
	}
	for _, m := range []string{"sluice_rx_packets_total", "sluice_tx_packets_total", "sluice_backend_packets_total",
		"sluice_drops_total", "sluice_backend_health", "sluice_config_generation", "sluice_config_last_apply_success"} {
		if !used[m] {
			t.Errorf("the dashboard does not show %s", m)
		}
	}
}

// The flow tables' size, new flows, evictions by class and failed inserts,
// from the workers' counter snapshots.
func TestCollectorFlowTable(t *testing.T) {
	s, n := newServer(t)
	c := fakeCounters()
	c.Flows = flow.Stats{Len: 900, Capacity: 2048, Inserts: 1500, EvictedHalfOpen: 4, EvictedIdle: 3, EvictedEstablished: 1, InsertFailed: 2}
	n.SetCounters(c)
	if err := testutil.CollectAndCompare(s.Collector(), strings.NewReader(`
# HELP sluice_flow_table_entries Entries in the flow tables (all workers).
# TYPE sluice_flow_table_entries gauge
sluice_flow_table_entries 900
# HELP sluice_flow_table_capacity Capacity of the flow tables (all workers).
# TYPE sluice_flow_table_capacity gauge
sluice_flow_table_capacity 2048
# HELP sluice_flow_new_total Flow-table entries created: new flows.
# TYPE sluice_flow_new_total counter
sluice_flow_new_total 1500
# HELP sluice_flow_evictions_total Live flow-table entries evicted to make room, by class (half_open, idle, established).
# TYPE sluice_flow_evictions_total counter
sluice_flow_evictions_total{class="established"} 1
sluice_flow_evictions_total{class="half_open"} 4
sluice_flow_evictions_total{class="idle"} 3
# HELP sluice_flow_insert_failed_total Flows that got no entry (forwarded statelessly).
# TYPE sluice_flow_insert_failed_total counter
sluice_flow_insert_failed_total 2
`), "sluice_flow_table_entries", "sluice_flow_table_capacity", "sluice_flow_new_total", "sluice_flow_evictions_total", "sluice_flow_insert_failed_total"); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.NewFlows != 1500 || st.FlowEntries != 900 || st.FlowEvictions.HalfOpen != 4 {
		t.Fatalf("stats %+v", st)
	}
}
