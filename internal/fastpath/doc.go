// Package fastpath is the wire format of Sluice's fastpath: the messages an
// LB node and a client host's agent exchange so that an established flow's
// packets go from the client host straight to its backend, skipping the LB
// tier.
//
// After a flow of a VIP with fastpath on is established, the LB node that
// forwards it sends the client host's agent a Redirect naming the flow and
// how to reach its backend: the backend's address, the GUE port, the outer
// UDP source port and IPv6 flow label the node itself writes (so the
// backend's agent sees the same packets either way). The agent's egress
// program then encapsulates the flow's packets itself and answers with an
// Ack that carries a status per flow. The node sends a redirect again until
// it is acknowledged, a bounded number of times. When the backend starts
// draining, is removed or fails its health checks, the node sends a Cancel
// for the flows it redirected there; the agent removes them and acknowledges,
// and their packets reach the LB tier again, which still holds their entries.
// While a flow sends packets, the agent sends its node a Refresh, so that the
// node keeps the flow's entry (and its backend) although it sees no packets.
//
// # Security
//
// Every message carries a truncated HMAC-SHA256 tag under a key derived from
// a key the LB nodes and the agents share (Key), and a send time that must be
// within FreshMs of the receiver's clock. The agent takes redirects and
// cancels only from the LB nodes' prefixes, only for flows whose client
// address is one of its host's own, and only toward its configured backend
// prefixes; the node takes acks and refreshes only from its services'
// fastpath client prefixes. A message is idempotent: a lost one is sent again, a
// duplicated one changes nothing, and a late redirect, older than the last
// cancel of its flow, is refused (StatusStale), and a cancel older than the
// same node's installed redirect of its flow is ignored. A replayed redirect within
// the freshness window points a flow at a backend an LB node chose for it
// moments before; a replay to another host is refused (StatusNotLocal).
//
// The package only encodes and decodes; internal/datapath (the node's side)
// and internal/agent (the client host's side) import it.
package fastpath
