package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/scenario"
)

// The admin API of a running LB node, through `sluice ctl` and /metrics in
// its namespace: VIPs with per-backend counters after real traffic, a
// rejected apply that names the bad field, an accepted apply that moves the
// generation on, and Prometheus metrics.
func TestE2EControlCtlAndMetrics(t *testing.T) {
	s := start(t, scenario.Options{IO: "afpacket"})
	ctx := context.Background()
	if _, err := s.Curl(ctx, s.Opts.VIP4, 30); err != nil {
		t.Fatal(err)
	}
	lb := s.Lab.LBs[0]
	out, err := lb.Run(ctx, sluiceBin, "ctl", "vip", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, be := range s.Lab.Backends {
		if !strings.Contains(out, be.Addr4.String()) {
			t.Errorf("vip list lacks %s:\n%s", be.Addr4, out)
		}
	}
	look, err := lb.Run(ctx, sluiceBin, "ctl", "flow", "lookup", "--vip", "http4", "--src", s.Lab.Client.Addr4.String(), "--sport", "40000")
	if err != nil || !strings.Contains(look, "maglev") {
		t.Errorf("flow lookup: %v\n%s", err, look)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(strings.Replace(s.Config(), "port: 80", "port: 70000", 1)), 0o644)
	if out, err := lb.Run(ctx, sluiceBin, "ctl", "apply", "-f", bad); err == nil || !strings.Contains(out, "vips[0].port") {
		t.Errorf("bad apply: err %v, output:\n%s", err, out)
	}
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(s.Config()), 0o644)
	if out, err := lb.Run(ctx, sluiceBin, "ctl", "apply", "-f", good); err != nil {
		t.Errorf("good apply: %v\n%s", err, out)
	}
	if out, err := lb.Run(ctx, sluiceBin, "ctl", "node", "drain"); err != nil || !strings.Contains(out, "drained") {
		t.Errorf("node drain: %v\n%s", err, out)
	}
	metrics, err := lb.Run(ctx, "curl", "-sS", "--max-time", "3", "http://127.0.0.1:6090/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`sluice_backend_packets_total{backend="` + s.Lab.Backends[0].Addr4.String() + `",vip="http4"}`,
		"sluice_config_generation 2",
		"sluice_config_last_apply_success 1",
		`sluice_drops_total{reason="no_next_hop"} 0`,
		`sluice_vip_packets_total{vip="http4"}`,
		`sluice_backend_bytes_total{backend="` + s.Lab.Backends[1].Addr4.String() + `",vip="http4"}`,
		"sluice_flow_table_entries ",
		"sluice_flow_new_total ",
		`sluice_flow_evictions_total{class="idle"}`,
		"sluice_node_draining 1",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", metrics)
	}
	if out, err := lb.Run(ctx, sluiceBin, "ctl", "node", "undrain", "-o", "json"); err != nil || !strings.Contains(out, `"draining": false`) {
		t.Errorf("node undrain: %v\n%s", err, out)
	}
	// Still serving.
	if _, err := s.Curl(ctx, s.Opts.VIP4, 10); err != nil {
		t.Fatal(err)
	}
}
