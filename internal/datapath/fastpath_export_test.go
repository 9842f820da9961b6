package datapath

import (
	"net/netip"
	"time"
)

// SetAgentAddr sends every client's redirects to a (before Run).
func (r *Redirector) SetAgentAddr(a netip.AddrPort) {
	r.agentOf = func(netip.Addr) netip.AddrPort { return a }
}

// SetRetry sets the first resend's delay (before Run).
func (r *Redirector) SetRetry(d time.Duration) { r.retry = d }
