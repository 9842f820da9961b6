// Package metrics exports a backend agent's counters to Prometheus, as
// control does for an LB node: sluice_agent_<name>_total for every counter
// of agent.Counters, served on the agent's --metrics-addr.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/gopacket/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicelb/sluice/internal/agent"
	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/api"
)

// Collector returns a collector of an agent's counters (Agent.Counters):
// sluice_agent_<name>_total for every counter of Counters.Each,
// ProbeCounters.Each and FastpathCounters.Each, and the gauge
// sluice_agent_fastpath_flows.
func Collector(counters func() agent.Counters) prometheus.Collector {
	return collector{counters: counters}
}

type collector struct {
	counters func() agent.Counters
	// egress returns the fastpath egress program's own counters (nil: none):
	// sluice_agent_fastpath_egress_total{counter="<its name>"}.
	egress func() []agent.EgressCounter
}

var (
	fastpathFlowsDesc = prometheus.NewDesc("sluice_agent_fastpath_flows",
		"flows in the fastpath egress map after the last sweep (see docs/operations.md#counters).", nil, nil)
	fastpathEgressDesc = prometheus.NewDesc("sluice_agent_fastpath_egress_total",
		"the fastpath egress program's own counters, by the program's name for each (see docs/operations.md#counters).",
		[]string{"counter"}, nil)
)

func agentDesc(name string) *prometheus.Desc {
	return prometheus.NewDesc("sluice_agent_"+name+"_total", "sluice agent counter "+name+" (see docs/operations.md#counters).", nil, nil)
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	var zero agent.Counters
	zero.Each(func(name string, _ uint64) { ch <- agentDesc(name) })
	zero.Probes.Each(func(name string, _ uint64) { ch <- agentDesc(name) })
	zero.Fastpath.Each(func(name string, _ uint64) { ch <- agentDesc(name) })
	ch <- fastpathFlowsDesc
	ch <- fastpathEgressDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	cs := c.counters()
	emit := func(name string, v uint64) {
		ch <- prometheus.MustNewConstMetric(agentDesc(name), prometheus.CounterValue, float64(v))
	}
	cs.Each(emit)
	cs.Probes.Each(emit)
	cs.Fastpath.Each(emit)
	ch <- prometheus.MustNewConstMetric(fastpathFlowsDesc, prometheus.GaugeValue, float64(cs.Fastpath.Flows))
	if c.egress != nil {
		for _, e := range c.egress() {
			ch <- prometheus.MustNewConstMetric(fastpathEgressDesc, prometheus.CounterValue, float64(e.Value), e.Name)
		}
	}
}

// Serve serves GET /metrics with the counters on addr until the
// server is closed, with the admin API's rule (api.Listen): a non-loopback
// address is refused without a token, and with a token every request must
// carry it.
//
// With a, it also serves GET /v1/capture (api.CaptureHandler): a capture of
// what the agent delivers ("ingress" in the query: the interface
// "delivered") and forwards to a second-chance hop ("egress":
// "forwarded"), inner IP packets (pcapng link type raw IP), selected by
// protocol, host and port (the agent knows no VIP names: --host).
func Serve(addr, token string, counters func() agent.Counters, a *agent.Agent) (*http.Server, error) {
	reg := prometheus.NewRegistry()
	col := collector{counters: counters}
	if a != nil {
		col.egress = a.FastpathEgress
	}
	if err := reg.Register(col); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if a != nil {
		mux.Handle("GET /v1/capture", api.CaptureHandler(func(ctx context.Context, q control.CaptureQuery, w io.Writer) (control.CaptureResult, error) {
			return Capture(ctx, a, q, w)
		}))
	}
	return api.Listen(addr, token, mux)
}

// Capture runs a capture q of the agent a and writes it to w (pcapng).
func Capture(ctx context.Context, a *agent.Agent, q control.CaptureQuery, w io.Writer) (control.CaptureResult, error) {
	if q.VIP != "" || q.Tenant != "" {
		return control.CaptureResult{}, fmt.Errorf("%w: the agent selects by protocol, host and port (no VIP or tenant names)", control.ErrInvalidQuery)
	}
	f, delivered, forwarded, err := control.CaptureFilterOf(&q)
	if err != nil {
		return control.CaptureResult{}, err
	}
	c, err := a.StartCapture(f, delivered, forwarded)
	if errors.Is(err, agent.ErrCaptureRunning) {
		err = fmt.Errorf("%w: %w", control.ErrCaptureRunning, err)
	}
	if err != nil {
		return control.CaptureResult{}, err
	}
	return control.WriteCapture(ctx, w, c, q, layers.LinkTypeRaw,
		[2]string{"delivered", "inner packets the Sluice agent wrote to its TUN device"},
		[2]string{"forwarded", "inner packets the Sluice agent forwarded to a second-chance hop"})
}
