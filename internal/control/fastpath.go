package control

import (
	"context"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/fastpath"
)

// FastpathReporter is what the server needs for the node's fastpath
// (node.fastpath).
type FastpathReporter interface {
	// Fastpath returns the redirector's counters and at most max of the
	// redirects it holds (0: all); ok is false without node.fastpath.
	Fastpath(ctx context.Context, max int) (c datapath.FastpathCounters, rs []datapath.FastpathRedirect, ok bool)
}

// FastpathStatus is the node's fastpath (`sluice ctl fastpath`, GET
// /v1/fastpath): its counters and the redirects it holds.
type FastpathStatus struct {
	// Enabled is false without node.fastpath; the rest is then empty.
	Enabled   bool               `json:"enabled"`
	Counters  FastpathCounters   `json:"counters"`
	Refused   map[string]uint64  `json:"refused_by_status"`
	Redirects []FastpathRedirect `json:"redirects"`
}

// FastpathCounters are the redirector's counters (datapath.FastpathCounters).
type FastpathCounters struct {
	Offered       uint64 `json:"offered"`
	Sent          uint64 `json:"messages_sent"`
	Installed     uint64 `json:"installed"`
	Refused       uint64 `json:"refused"`
	Unacked       uint64 `json:"unacked"`
	Cancelled     uint64 `json:"cancelled"`
	CancelAcked   uint64 `json:"cancel_acked"`
	CancelUnacked uint64 `json:"cancel_unacked"`
	Refreshes     uint64 `json:"refreshes"`
	Expired       uint64 `json:"expired"`
	Orphans       uint64 `json:"orphans"`
	Declined      uint64 `json:"declined"`
	Full          uint64 `json:"table_full"`
	RingFull      uint64 `json:"ring_full"`
	BadSource     uint64 `json:"bad_source"`
	BadAuth       uint64 `json:"bad_auth"`
	Malformed     uint64 `json:"malformed"`
	Stale         uint64 `json:"stale"`
	SendErrors    uint64 `json:"send_errors"`
	Active        uint64 `json:"active"`
	Pending       uint64 `json:"pending"`
}

// FastpathRedirect is one redirect the node holds.
type FastpathRedirect struct {
	Proto   string         `json:"proto"`
	Client  netip.AddrPort `json:"client"`
	VIP     netip.AddrPort `json:"vip"`
	Backend netip.Addr     `json:"backend"`
	Agent   netip.AddrPort `json:"agent"`
	State   string         `json:"state"` // offered, installed, cancelling
	Since   time.Time      `json:"since"`
	Seen    time.Time      `json:"seen"` // the last refresh
}

// Fastpath returns the node's fastpath state with at most max redirects.
func (s *Server) Fastpath(ctx context.Context, max int) FastpathStatus {
	c, rs, ok := s.node.Fastpath(ctx, max)
	if !ok {
		return FastpathStatus{}
	}
	st := FastpathStatus{Enabled: true, Counters: FastpathCounters{
		Offered: c.Offered, Sent: c.Sent, Installed: c.Installed, Refused: c.Refused, Unacked: c.Unacked,
		Cancelled: c.Cancelled, CancelAcked: c.CancelAcked, CancelUnacked: c.CancelUnacked, Refreshes: c.Refreshes,
		Expired: c.Expired, Orphans: c.Orphans, Declined: c.Declined, Full: c.Full, RingFull: c.RingFull, BadSource: c.BadSource, BadAuth: c.BadAuth,
		Malformed: c.Malformed, Stale: c.Stale, SendErrors: c.SendErrors, Active: c.Active, Pending: c.Pending,
	}, Refused: map[string]uint64{}, Redirects: []FastpathRedirect{}}
	for i, n := range c.RefusedBy {
		if n > 0 {
			st.Refused[fastpath.Status(i).String()] = n
		}
	}
	for _, r := range rs {
		proto := "tcp"
		if r.Flow.Proto == 17 {
			proto = "udp"
		}
		st.Redirects = append(st.Redirects, FastpathRedirect{Proto: proto, Client: r.Flow.Client, VIP: r.Flow.VIP,
			Backend: r.Backend, Agent: r.Agent, State: r.State, Since: r.Since, Seen: r.Seen})
	}
	return st
}

var (
	descFPRedirects = desc("fastpath_redirects_total", "Fastpath: flows offered to their client hosts' agents (offered), installed by them (installed), refused (refused), unanswered after every resend and so cancelled (unacked), cancelled (cancelled), cancels acknowledged (cancel_acked) and given up (cancel_unacked), forgotten without refreshes (expired), refreshed by an agent but not held here and so cancelled (orphan), not offered for a full table or ring (full).", "event")
	descFPRefused   = desc("fastpath_refused_total", "Fastpath: redirects the agents refused, by status (not_local, backend_not_allowed, family, full, stale, unavailable).", "status")
	descFPMessages  = desc("fastpath_messages_total", "Fastpath: redirect and cancel messages sent (sent), send errors (send_error), agents' datagrams dropped for their source (bad_source), tag (bad_auth), format (malformed) or time (stale), and flows refreshed (refresh).", "kind")
	descFPActive    = desc("fastpath_active_redirects", "Fastpath: flows the agents send straight to their backends now, as this node redirected them.")
	descFPPending   = desc("fastpath_pending", "Fastpath: redirects and cancels awaiting an agent's ack.")
)

var fastpathDescs = []*prometheus.Desc{descFPRedirects, descFPRefused, descFPMessages, descFPActive, descFPPending}

// collectFastpath sends the fastpath metrics; none without node.fastpath.
func (c collector) collectFastpath(ch chan<- prometheus.Metric) {
	k, _, ok := c.s.node.Fastpath(context.Background(), -1)
	if !ok {
		return
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, e := range []struct {
		n uint64
		l string
	}{{k.Offered, "offered"}, {k.Installed, "installed"}, {k.Refused, "refused"}, {k.Unacked, "unacked"},
		{k.Cancelled, "cancelled"}, {k.CancelAcked, "cancel_acked"}, {k.CancelUnacked, "cancel_unacked"},
		{k.Expired, "expired"}, {k.Orphans, "orphan"}, {k.Declined, "declined"}, {k.Full + k.RingFull, "full"}} {
		counter(descFPRedirects, e.n, e.l)
	}
	for i, n := range k.RefusedBy {
		if i > int(fastpath.StatusInstalled) {
			counter(descFPRefused, n, fastpath.Status(i).String())
		}
	}
	for _, e := range []struct {
		n uint64
		l string
	}{{k.Sent, "sent"}, {k.SendErrors, "send_error"}, {k.BadSource, "bad_source"}, {k.BadAuth, "bad_auth"},
		{k.Malformed, "malformed"}, {k.Stale, "stale"}, {k.Refreshes, "refresh"}} {
		counter(descFPMessages, e.n, e.l)
	}
	ch <- prometheus.MustNewConstMetric(descFPActive, prometheus.GaugeValue, float64(k.Active))
	ch <- prometheus.MustNewConstMetric(descFPPending, prometheus.GaugeValue, float64(k.Pending))
}
