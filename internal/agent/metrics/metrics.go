// Package metrics exports a backend agent's counters to Prometheus, as
// control does for an LB node: sluice_agent_<name>_total for every counter
// of agent.Counters, served on the agent's --metrics-addr.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicelb/sluice/internal/agent"
	"github.com/sluicelb/sluice/internal/control/api"
)

// Collector returns a collector of an agent's counters (Agent.Counters):
// sluice_agent_<name>_total for every counter of Counters.Each and
// ProbeCounters.Each.
func Collector(counters func() agent.Counters) prometheus.Collector { return collector{counters} }

type collector struct{ counters func() agent.Counters }

func agentDesc(name string) *prometheus.Desc {
	return prometheus.NewDesc("sluice_agent_"+name+"_total", "sluice agent counter "+name+" (see docs/operations.md#counters).", nil, nil)
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	var zero agent.Counters
	zero.Each(func(name string, _ uint64) { ch <- agentDesc(name) })
	zero.Probes.Each(func(name string, _ uint64) { ch <- agentDesc(name) })
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	cs := c.counters()
	emit := func(name string, v uint64) {
		ch <- prometheus.MustNewConstMetric(agentDesc(name), prometheus.CounterValue, float64(v))
	}
	cs.Each(emit)
	cs.Probes.Each(emit)
}

// Serve serves GET /metrics with the counters on addr until the
// server is closed, with the admin API's rule (api.Listen): a non-loopback
// address is refused without a token, and with a token every request must
// carry it.
func Serve(addr, token string, counters func() agent.Counters) (*http.Server, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(collector{counters}); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return api.Listen(addr, token, mux)
}
