// Package announce announces VIPs to routers over BGP (DESIGN.md §3.9). A
// Speaker embeds GoBGP v4 as a library, connects out to the configured
// routers and announces each VIP as a host route (/32 or /128) with this
// node as the next hop; with several nodes announcing the same VIP the
// router spreads the traffic over them (ECMP). The control plane decides
// which VIPs a node should announce (it is healthy and the VIP has healthy
// backends) and hands the whole set to Set; the Speaker works out what to
// announce and what to withdraw.
//
// # Lifetime
//
// New validates a Config and returns a Speaker that does nothing yet. Run
// starts a GoBGP server, adds the peers, announces the current set and keeps
// it in line with Set until its context is done; it then withdraws every
// route and closes every session with a Cease NOTIFICATION, so the routers
// drop the routes at once instead of waiting for a hold timer, and returns.
// Set and Peers may be called from any goroutine, before, during and after
// Run; what Set was given last is announced by the next Run. Run may be
// called again after it returned, never twice at the same time.
//
// The Speaker never listens unless Config.ListenPort says so: it connects
// out to every peer (the usual shape for a load balancer, whose routers
// accept BGP from a range of node addresses). It accepts no routes: the
// import policy rejects everything a router sends, so the node never
// becomes a transit and never holds a full table.
//
// # Families and next hops
//
// Every session negotiates IPv4 unicast and IPv6 unicast, whatever the
// family of its transport. An IPv4 route goes out with NEXT_HOP
// Config.NextHop4, an IPv6 route in MP_REACH_NLRI with Config.NextHop6; an
// unset next hop means the local address of the session, which only works
// when the session's family is the route's. So Set refuses IPv6 prefixes
// while a peer is reached over IPv4 and NextHop6 is unset, and IPv4
// prefixes while a peer is reached over IPv6 and NextHop4 is unset.
//
// SetRoutes gives a route its own next hop (Route.NextHop): a third-party
// next hop, another host on the subnet the node shares with the router
// (bypass single-backend announces a VIP with its backend as next hop).
// GoBGP sends a locally added path's next hop unchanged over eBGP (only a
// path learnt from a peer, or one without a next hop, gets the session's
// local address), and a router accepts it when it can reach it directly
// (BIRD's default "gateway direct" for a directly connected eBGP
// neighbour). A route whose next hop changes is announced again, which
// replaces it on the routers without a withdrawal
// (TestBIRDThirdPartyNextHop).
//
// # Timers
//
// Defaults: hold time 9 s with keepalives every 3 s (a frozen node is
// detected in at most 9 s), connect retry 5 s. With Peer.BFD set, GoBGP's
// native BFD (RFC 5880/5881, single hop, UDP port 3784) runs next to the
// session, by default every 300 ms with multiplier 3, so the router drops a
// dead node's routes within about a second (measured with BIRD at 100 ms x
// 3: 0.3 s). BFD needs the router to run BFD for the session too.
//
// # The GoBGP v4.8.0 stale-Cease workaround
//
// When a BFD session of GoBGP v4.8.0 expires, or the remote side signals
// BFD Down, GoBGP resets the BGP peer by queueing a Cease NOTIFICATION on
// it. If the session is not Established at that moment the NOTIFICATION
// stays queued and tears down the next session as soon as it comes up. With
// BIRD this loops forever: the reset session takes BIRD's BFD session down,
// which makes GoBGP queue another Cease while the peer is not Established,
// and so on. A node that froze for a few seconds (long enough for BFD to
// expire) would never announce again.
//
// The Speaker breaks the loop: every time a session leaves Established it
// re-creates the peer, which drops the queued NOTIFICATION and the old BFD
// session with it. RecreateDelay (1 s) after the session went down it
// deletes the peer (DeletePeer), unless the session is Established again;
// it adds it back (AddPeer, same configuration) after a BFD quiet time of
// twice the BFD detection time (Multiplier x max(MinRx, MinTx); none
// without BFD). The quiet time matters as much as the re-creation: when the
// deleted peer's BFD packets stop, the router's BFD session with it
// expires, sends a last Down packet with Your Discriminator 0, and BIRD
// replaces it with a new session. A new GoBGP BFD peer that hears that last
// packet binds to the dead session and, v4.8.0 ignoring the new session's
// packets from then on, sits in Init until it expires and resets the BGP
// session again. The quiet time assumes the router's BFD timers are not
// slower than the peer's own; if they are, a poisoned BFD peer costs one
// more flap and re-creation, not a loop.
//
// GoBGP's own idle hold after a reset (IdleHoldTimeAfterReset, 30 s by
// default) is lowered to IdleHoldAfterReset (2 s): longer than
// RecreateDelay, so that the old peer cannot reconnect before it is
// deleted, and short, so that a node comes back quickly. A re-created peer
// connects at once. Each re-creation is logged and counted
// (PeerStatus.Recreated). Measured with BIRD and BFD at 100 ms x 3: a
// node frozen for 2 s is announced again 3.2-3.7 s after it resumes.
package announce
