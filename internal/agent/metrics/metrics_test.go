package metrics

import (
	"errors"
	"io"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicelb/sluice/internal/agent"
	"github.com/sluicelb/sluice/internal/control/api"
)

// Every agent counter has its own, valid metric name.
func TestAgentCollectorDescs(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(collector{}); err != nil {
		t.Fatal(err)
	}
	n := 0
	ch := make(chan *prometheus.Desc, 256)
	collector{}.Describe(ch)
	close(ch)
	for range ch {
		n++
	}
	if n < 10 {
		t.Fatalf("%d metrics", n)
	}
}

// metricsGet fetches /metrics from srv with an optional bearer token.
func metricsGet(t *testing.T, srv *http.Server, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+srv.Addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The counters, rejected_source included, are served with their values.
func TestAgentMetricsValues(t *testing.T) {
	var c agent.Counters
	c.Received, c.Delivered = 12, 5
	c.Drops[agent.RejectedSource] = 7
	c.Fastpath.Installed, c.Fastpath.AuthFailures, c.Fastpath.Flows = 4, 2, 9
	c.Fastpath.Refused[3] = 1 // fastpath.StatusBackend
	srv, err := Serve("127.0.0.1:0", "", func() agent.Counters { return c }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	code, body := metricsGet(t, srv, "")
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	for name, want := range map[string]string{
		"sluice_agent_drop_rejected_source_total":                           "7",
		"sluice_agent_received_total":                                       "12",
		"sluice_agent_delivered_total":                                      "5",
		"sluice_agent_fastpath_redirects_installed_total":                   "4",
		"sluice_agent_fastpath_auth_failures_total":                         "2",
		"sluice_agent_fastpath_redirects_refused_backend_not_allowed_total": "1",
		"sluice_agent_fastpath_flows":                                       "9",
	} {
		m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(body)
		if m == nil || m[1] != want {
			t.Errorf("%s = %v, want %s", name, m, want)
		}
	}
}

// The agent's metrics listener follows the admin API's rule: a non-loopback
// address needs a token, and then every request must carry it.
func TestAgentMetricsListen(t *testing.T) {
	counters := func() agent.Counters { return agent.Counters{} }
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		if srv, err := Serve(addr, "", counters, nil); !errors.Is(err, api.ErrTokenRequired) {
			if srv != nil {
				srv.Close()
			}
			t.Errorf("%s without a token: %v, want ErrTokenRequired", addr, err)
		}
	}
	srv, err := Serve("0.0.0.0:0", "s3cret", counters, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, tc := range []struct {
		token string
		code  int
	}{{"", 401}, {"wrong", 401}, {"s3cret", 200}} {
		if code, body := metricsGet(t, srv, tc.token); code != tc.code {
			t.Errorf("token %q: %d, want %d: %s", tc.token, code, tc.code, body)
		}
	}
}

// The egress program's counters are served as they are named, as labels.
func TestAgentMetricsEgress(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{counters: func() agent.Counters { return agent.Counters{} },
		egress: func() []agent.EgressCounter {
			return []agent.EgressCounter{{Name: "tx_packets", Value: 5}, {Name: "pass_no_flow", Value: 2}}
		}})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "sluice_agent_fastpath_egress_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if len(got) != 2 || got["tx_packets"] != 5 || got["pass_no_flow"] != 2 {
		t.Errorf("egress metrics %v", got)
	}
}
