package main

import (
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicelb/sluice/internal/agent"
)

// agentCollector exports an agent's counters: sluice_agent_<name>_total for
// every counter of Counters.Each and ProbeCounters.Each.
type agentCollector struct{ a *agent.Agent }

func agentDesc(name string) *prometheus.Desc {
	return prometheus.NewDesc("sluice_agent_"+name+"_total", "sluice agent counter "+name+" (see docs/operations.md#counters).", nil, nil)
}

func (c agentCollector) Describe(ch chan<- *prometheus.Desc) {
	var zero agent.Counters
	zero.Each(func(name string, _ uint64) { ch <- agentDesc(name) })
	zero.Probes.Each(func(name string, _ uint64) { ch <- agentDesc(name) })
}

func (c agentCollector) Collect(ch chan<- prometheus.Metric) {
	cs := c.a.Counters()
	emit := func(name string, v uint64) {
		ch <- prometheus.MustNewConstMetric(agentDesc(name), prometheus.CounterValue, float64(v))
	}
	cs.Each(emit)
	cs.Probes.Each(emit)
}

// serveAgentMetrics serves /metrics for a on addr until the server is closed.
func serveAgentMetrics(addr string, a *agent.Agent) (*http.Server, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(agentCollector{a}); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}
