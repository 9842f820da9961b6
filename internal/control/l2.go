package control

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicelb/sluice/internal/announce/l2"
)

// L2Reporter is what the server needs for the node's L2 mode (node.l2).
type L2Reporter interface {
	// L2Status returns the node's L2 state; ok is false without node.l2.
	L2Status() (st l2.Status, ok bool)
}

// L2Status is the node's L2 state (`sluice ctl l2 status`, GET /v1/l2):
// which VIPs it owns and answers for, the view it decided with, its
// takeovers and the requests it answered.
type L2Status struct {
	// Enabled is false without node.l2; the rest is then empty.
	Enabled bool `json:"enabled"`
	l2.Status
}

// L2Status returns the node's L2 state.
func (s *Server) L2Status() L2Status {
	st, ok := s.node.L2Status()
	if !ok {
		return L2Status{}
	}
	return L2Status{Enabled: true, Status: st}
}

var (
	descL2Owned     = desc("l2_vip_answering", "L2 mode: 1 for each VIP address this node answers ARP / neighbour solicitations for (it owns it and sees a majority), else 0.", "vip")
	descL2Quorum    = desc("l2_quorum", "L2 mode: 1 while the node sees a majority of the configured members (it may claim VIPs).")
	descL2Takeovers = desc("l2_takeovers_total", "L2 mode: VIPs this node took over (started answering, with gratuitous ARP / unsolicited neighbour advertisements), and those it let go (released).", "event")
	descL2Requests  = desc("l2_requests_total", "L2 mode: ARP requests and neighbour solicitations seen on the interface (seen), answered for an owned VIP (answered), for a VIP of another owner (not_owner).", "family", "outcome")
	descL2Announced = desc("l2_announcements_total", "L2 mode: gratuitous ARP (ipv4) and unsolicited neighbour advertisements (ipv6) sent.", "family")
)

var l2Descs = []*prometheus.Desc{descL2Owned, descL2Quorum, descL2Takeovers, descL2Requests, descL2Announced}

// collectL2 sends the L2 metrics; none without node.l2.
func (c collector) collectL2(ch chan<- prometheus.Metric) {
	st := c.s.L2Status()
	if !st.Enabled {
		return
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, v := range st.VIPs {
		gauge(descL2Owned, b2f(v.Answering), v.Address)
	}
	gauge(descL2Quorum, b2f(st.Quorum))
	counter(descL2Takeovers, st.Takeovers, "takeover")
	counter(descL2Takeovers, st.Releases, "release")
	k := st.Counters
	counter(descL2Requests, k.ARPRequests, "ipv4", "seen")
	counter(descL2Requests, k.ARPAnswered, "ipv4", "answered")
	counter(descL2Requests, k.NSRequests, "ipv6", "seen")
	counter(descL2Requests, k.NSAnswered, "ipv6", "answered")
	counter(descL2Requests, k.IgnoredNotOwner, "any", "not_owner")
	counter(descL2Announced, k.GratuitousARP, "ipv4")
	counter(descL2Announced, k.UnsolicitedNA, "ipv6")
}
