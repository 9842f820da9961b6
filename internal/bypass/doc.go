// Package bypass decides which VIP addresses bypass the LB tier: a VIP
// with `bypass: single-backend` whose services all have exactly one
// backend in service, the same one, is announced by the LB nodes with that
// backend as its BGP next hop (a third-party next hop on the peering
// subnet), so routers send its packets straight to the backend, whose
// agent holds the VIP on lo. Decide is the one decision: the node server
// announces by it and the control server shows it (`sluice ctl vip list`).
//
// The package is pure: it reads a configuration and the health states it
// is given, and never the network. CheckSubnets, given the node's interface
// prefixes, refuses backends that a router could not use as next hop.
//
// Lifetimes: Decide and Fills return new values and keep nothing; the
// node server (lbnode) owns the decisions it committed, with the times and
// transition counts (Status) and the fills it started (Fill), on its serve
// goroutine, and hands copies to the control server (View).
package bypass
