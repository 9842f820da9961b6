// Package agent is the backend side of Sluice (`sluice agent`, DESIGN.md
// §3.4): it receives the GUE packets the LB nodes send, validates them,
// strips the outer headers and injects the inner IP packet into the host
// through a TUN device. The kernel delivers it to the local socket on the VIP
// and the reply leaves from the VIP, through the host's normal routing,
// straight to the client (direct server return). Linux only.
//
// A packet whose GUE header carries a hop list (the LB adds one while the
// backend set changes: [current owner, previous owner]) is delivered only
// if this host owns its connection, and otherwise forwarded to the next hop
// ("Second chance" below).
//
// The agent is also the host side of fastpath (DESIGN.md §3.7; "Fastpath"
// below): on a backend it accepts GUE from the fastpath client hosts, and
// on a client host (Config.Fastpath) it takes the LB nodes' redirects and
// has a tc egress program send those flows straight to their backends.
//
// # What New does to the host
//
// In the network namespace of the calling thread, in this order (each step
// is undone by Close, and by New itself when a later step fails):
//
//  1. Creates the TUN device Config.TUN (IFF_TUN|IFF_NO_PI, not persistent:
//     it vanishes when the agent's descriptor closes). New fails if a device
//     of that name exists.
//  2. Turns reverse-path filtering off for the TUN device (clients are not
//     routed through it, and the kernel's loose mode rejects everything on a
//     device without an IPv4 address): net.ipv4.conf.<tun>.rp_filter=0, and,
//     since the kernel applies the larger of "all" and the device's value,
//     net.ipv4.conf.all.rp_filter=0 when it is not, after raising every
//     other interface's own value (and "default") to the old "all" value so
//     that they filter exactly as before; Close restores every value. Also
//     net.ipv4.conf.<tun>.accept_local=1 only with Config.AcceptLocal,
//     net.ipv6.conf.<tun>.addr_gen_mode=1 (no link-local address: the kernel
//     never sends anything into the device), and
//     net.ipv6.conf.<tun>.disable_ipv6=0 when a VIP is IPv6.
//  3. Brings the TUN device up. It gets no address and no route: nothing is
//     routed into it, the agent only writes to it (and never reads it).
//  4. Adds each VIP to lo as a /32 or /128 so the kernel treats it as local
//     and replies from it. A VIP already on lo is left there at Close.
//  5. Opens the UDP socket on Config.Listen (an unspecified address gives
//     one dual-stack socket for GUE over IPv4 and IPv6).
//  6. Opens the NETLINK_SOCK_DIAG socket of the ownership checks (see
//     "Second chance") and asks it once about a flow nobody has; if the
//     kernel cannot answer, New logs a warning and goes on.
//  7. Opens another NETLINK_SOCK_DIAG socket and a handle on the network
//     namespace, and starts the VIP probe workers (ProbeWorkers
//     goroutines, each locked to an OS thread in that namespace; see "VIP
//     probes").
//  8. With Config.Fastpath: opens a route netlink socket (the host's
//     addresses), attaches the fastpath egress program to
//     Config.Fastpath.Interface and starts the fastpath goroutine (see
//     "Fastpath"). New fails if the program cannot be attached.
//
// Steps 1 to 4 are skipped when Config.VIPs is empty (a fastpath client
// only): such an agent changes nothing on the host but the egress program.
//
// Needed privileges: CAP_NET_ADMIN and nothing else (no uid 0): creating a
// TUN device, adding addresses and writing net.* sysctls all require it
// and are granted by it. /dev/net/tun must be readable and writable by the
// agent's user (mode 0666 on common distributions). A Listen port below
// 1024 additionally needs CAP_NET_BIND_SERVICE. Under systemd:
// AmbientCapabilities=CAP_NET_ADMIN with a non-root User=. (A probe worker
// calls setns(2), which needs CAP_SYS_ADMIN, only when New ran on a thread
// switched into another namespace than the rest of the process, as tests
// do; a caller that could switch that thread has the capability.)
//
// # Trust
//
// Before anything parses a datagram, its outer source address (the sender
// of the UDP datagram, IPv4-mapped addresses unmapped) decides whether it
// may send it at all (DESIGN.md §3.11):
//
//   - from a source in Config.LBPrefixes (the LB nodes): GUE data
//     messages as an LB sends them (no hop list, or a hop list with
//     next-hop index 0 or 1) and VIP probes; in fact anything that is not
//     a forwarded packet, so that a malformed datagram from an LB node is
//     counted by its own reason;
//   - from a source in Config.HopPrefixes (the other agents): forwarded
//     packets only, i.e. GUE data messages whose hop list has a next-hop
//     index of 2 or more (each agent that forwards a packet increments the
//     index; the LB sends 0 or 1). The agent reads the 4-byte GUE header
//     and the hop list's type and index word for this, nothing more;
//   - from a source in both: anything;
//   - from a source in Config.FastpathClients (the fastpath client hosts,
//     which encapsulate their redirected flows themselves, with their own
//     address as outer source): GUE data messages as an LB sends them
//     (version 0, C bit clear, not forwarded), nothing else: no VIP probe,
//     no fastpath message, no forwarded packet. After decapsulation such a
//     packet must also carry no hop list, have the outer source as its
//     inner source, and be TCP or UDP and not a fragment, as the host's
//     egress program writes it; anything else is dropped as
//     client_spoofed. Such a host can still send any TCP or UDP packet from
//     its own address to a VIP a backend serves, past the LB nodes'
//     firewall stage: list only hosts trusted that far. This adds to what
//     the source's other prefixes allow;
//   - from any other source, or when the kernel gave no source: nothing.
//
// Everything else is dropped and counted as rejected_source, and logged
// (Warn) at most once per second with the first source rejected since the
// last line and how many rejections that line stands for. Config.LBPrefixes
// is required: New refuses a Config without it, unless AcceptAnySource,
// which turns the check off (for labs; it logs a warning) and cannot be
// combined with it (nor with Fastpath). Without HopPrefixes no forwarded packet is accepted, so
// second chance needs every agent's HopPrefixes to hold the other agents'
// addresses (the backend network). The check walks the prefixes of the
// source's family with netip.Prefix.Contains and does not allocate.
//
// So whoever can reach the GUE port but is not an LB node (a client whose
// packets the network routes to the backends, another tenant's host) can
// inject nothing into the VIPs' services and probe nothing: without the
// check, one UDP datagram carrying a SYN from any spoofed source address
// to a VIP reaches the service, and the reply goes to the spoofed address.
// The check trusts the outer source address, which GUE does not
// authenticate: it holds only where the network drops packets that carry
// an LB node's or a backend's address from anywhere else (uRPF or ACLs on
// the router ports toward clients and tenants).
//
// # Validation
//
// A datagram from a trusted source is delivered only if encap.DecodeGUE
// accepts its GUE header,
// the GUE Proto/ctype is 4 or 41 and matches the inner IP version, the inner
// IPv4 or IPv6 header is well formed (header length, total/payload length
// within the datagram, IPv4 header checksum) and its destination is one of
// the configured VIPs. Anything else is dropped and counted by Reason. The
// destination check keeps the agent from relaying arbitrary packets into
// the host: whoever can reach the UDP port can only reach the VIPs, as if
// they were the client. The outer source is checked first (Trust, above);
// the UDP checksum by the kernel.
//
// GUE control messages are never delivered. Those of type vipprobe.CType
// are VIP probes (below); those of type fastpath.CType go to the fastpath
// goroutine when the agent has Config.Fastpath (below); any other is
// dropped as GUEControl.
//
// # Second chance
//
// When the backend set changes, an LB maps some existing connections to a
// backend that does not have them. For those slots the LB adds the hop list
// [new owner, previous owner] with next-hop index 1 (package encap draws
// it), and sends the packet to the new owner. A packet that passed
// validation and carries a hop list is decided here; one without a hop list
// is delivered as before, at no extra cost.
//
// Let next be the next-hop index on arrival and N the hop count.
//
//  1. next >= N: this host is the last hop. Local.
//  2. The inner packet (read as parseFlow does) is a TCP SYN without ACK: a
//     new connection, whose SYN the LB sends to its owner. Local.
//  3. Other TCP: local if this host owns the 4-tuple: first the agent's
//     own record of the TCP flows it delivered locally (below), then the
//     kernel: one NETLINK_SOCK_DIAG SOCK_DIAG_BY_FAMILY request for the
//     exact 4-tuple (AF_INET or AF_INET6 as the inner packet, IPPROTO_TCP,
//     no NLM_F_DUMP: the kernel's own socket lookup). Owned: a socket in
//     ESTABLISHED, SYN_SENT, SYN_RECV (including the request mini-socket of
//     a half-open handshake), FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK
//     or CLOSING, whose addresses and ports are exactly the flow's (IPv4
//     flows also find dual-stack IPv6 sockets). Not owned: no socket, a
//     listener (the lookup falls back to it), and TIME_WAIT: that
//     connection is over, and a TIME_WAIT socket would reset a new
//     connection that reuses the 4-tuple on another backend, while all
//     that is lost by not counting it is the re-ACK of a retransmitted
//     final FIN (the last hop answers it with a RST, which the client,
//     closing anyway, accepts).
//  4. UDP: under Config.UDPPolicy UDPLocal (the default), local. Under
//     UDPSecondChance, local if a connected UDP socket matches the exact
//     4-tuple (sock_diag, IPPROTO_UDP; an unconnected socket does not
//     count).
//  5. An ICMP error (IPv4 unreachable, time exceeded, parameter problem;
//     IPv6 unreachable, packet too big, time exceeded, parameter problem)
//     quoting a TCP or UDP packet the VIP sent is decided as that flow's
//     packets are (3 or 4, without 2; it does not change the record), so
//     that "fragmentation needed" reaches the socket that needs it.
//  6. Anything else (other protocols, IPv4 fragments, IPv6 extension
//     headers, headers cut short): local.
//  7. Not owned: the next hop, hop[next], gets it, unless it is this host
//     (hop[next] equals hop[next-1], or is one of the host's addresses,
//     read from netlink at most once per second): then local. A hop outside
//     Config.HopPrefixes (when set) is dropped as hop_not_allowed. The
//     agent increments the index in the datagram (encap.AdvanceHop) and
//     sends the whole GUE payload, otherwise unchanged, from its GUE socket
//     to hop[next]:Config.HopPort (the kernel builds the outer headers and
//     UDP checksum; the outer source port is the agent's). A send that
//     fails is dropped as forward_error.
//
// There are no loops: each forward increments the index, which is never
// decremented and never exceeds N (encap.MaxHops), and rule 1 ends the
// walk, so a packet the LB sends with index 1 visits at most N hosts.
//
// The record of local TCP flows is a fixed table of Config.FlowTable
// entries keyed by the inner 5-tuple, owned by the Run goroutine: every
// TCP packet with a hop list delivered locally (the SYN included; not a
// packet without hop list, so the hot path stays as it was) creates or
// refreshes its flow's entry, a FIN or RST removes it, and an entry idle
// for Config.FlowIdle expires. It answers most packets of new connections
// without a system call, and it alone keeps the handshake's last ACK of a
// connection answered with SYN cookies (no kernel socket until then). A
// full table records nothing more (owner_table_full) until entries expire.
// The kernel's answers are cached per flow, "owned" for OwnerCacheTTL (1 s)
// and "not owned" for OwnerCacheNegativeTTL (100 ms), in a table of
// OwnerCacheSize entries, so that a burst of packets costs one query. A
// query that fails counts as "not owned" (sock_diag_errors).
//
// A forwarded packet is accepted only from Config.HopPrefixes (Trust,
// above): every agent that takes part must list the others there.
//
// Counters: hoplist_local (delivered with a hop list), second_hop_forwarded,
// second_hop_received (arrived with index >= 2, i.e. from another agent),
// owner_table_hits, owner_table_full, owner_cache_hits, sock_diag_queries,
// sock_diag_errors; drops forward_error and hop_not_allowed.
//
// What the LB must guarantee: the hop list has the outer family, lists
// backends whose agents listen on Config.HopPort and can reach each other,
// starts with the backend the packet is sent to, and arrives with index 1
// (with index 0 the next hop is this host itself, so the packet is always
// local, after a useless ownership check). A forwarded
// datagram is as long as the one received, so the path between backends
// must carry the LB's GUE packets.
//
// # VIP probes
//
// An LB node's health checker (package health, Kind VIP) asks the agent
// whether a service answers on a VIP on this host, which is what the
// load-balanced traffic needs: a service bound only to the host's own
// address, or a host without a running agent, passes a check of the host
// address and still drops every packet to the VIP. The request is a GUE
// variant 0 control message (C bit set), accepted only from
// Config.LBPrefixes (Trust, above), of control type vipprobe.CType
// (0xD3) carrying a probe ID, the VIP address and port and the protocol;
// the wire format is drawn in package health. The agent answers from its
// GUE socket to the request's source address and port with the same
// message, Type "reply" and a status:
//
//   - not configured: the VIP is not one of Config.VIPs. Answered at once by
//     the Run goroutine, without any check.
//   - up / down: the result of a local check. TCP: a connect from this host
//     to VIP:port within ProbeConnectTimeout (the connection is closed at
//     once, with a FIN, having sent nothing). UDP: NETLINK_SOCK_DIAG lists an
//     unconnected UDP socket bound to the port and to the VIP or the
//     wildcard address (for an IPv4 VIP also an IPv6 wildcard socket, taken
//     to be dual stack), not bound to a device other than the TUN device. No
//     datagram is sent to the service.
//   - overloaded: the request could not be checked now (see the bounds).
//
// Bounds, so that a flood of probes cannot make the agent open connections
// without limit: a check's result answers every probe for the same VIP,
// protocol and port for ProbeCacheTTL (250 ms); probes that arrive while
// their key is being checked wait for that check (up to 64 of them); at
// most ProbeWorkers checks run at once, fed by a queue of ProbeQueue
// requests; at most ProbeMaxKeys distinct keys are checked per
// ProbeCacheTTL. A request that finds the queue full, or that would exceed
// a bound, is answered "overloaded" at once. So a probe costs at most one
// local connect per key per 250 ms, and at most ProbeMaxKeys connects per
// 250 ms in all. The reply is as long as the request: the agent amplifies
// nothing. Probes are counted in Counters.Probes (requests, malformed, the
// replies by status, local checks made, reply errors), never as drops.
//
// # Fastpath
//
// For a VIP with fastpath on, the LB node that forwards an established flow
// sends the client host's agent a redirect (package fastpath: the messages,
// their HMAC and freshness), and from then on the host's tc egress program
// encapsulates that flow's packets itself, straight to the backend, as the
// node would have (same GUE port, outer source port and flow label).
//
// Backend role: Config.FastpathClients lists the client hosts; their GUE
// data is accepted (Trust, above) and handled like an LB node's.
//
// Client role: Config.Fastpath. The agent takes fastpath messages from
// Config.LBPrefixes only (which it requires), checks them with the key
// derived from FastpathConfig.Key (wrong tag: auth_failures, no answer) and
// their send time against the host's clock (fastpath.Fresh, else
// stale_time, no answer). A redirect's entries are decided one by one:
//
//   - not_local: the client address is not one of the host's (read from
//     netlink, at most once per second);
//   - backend_not_allowed: the backend lies outside
//     FastpathConfig.BackendPrefixes;
//   - family: the backend's family differs from the flow's;
//   - stale: a cancel of the flow sent at or after the redirect's send time
//     arrived (cancels are remembered for 2*fastpath.FreshMs);
//   - unavailable: no egress program;
//   - full: FastpathConfig.Flows flows are installed, or the map update
//     failed;
//   - installed: the flow is in the program's map, and the agent remembers
//     which LB node (address and port) redirected it, and when.
//
// The agent answers an ack (same ID, each flow with its status) to the
// sender's address and port from its GUE socket. A duplicate redirect
// installs the flow again (its packet count starts anew) and is acked
// again; the latest sender gets the refreshes. A cancel removes each flow
// (present or not), remembers the cancel, and is acked with "installed" for
// each. Acks and refreshes are only for LB nodes: counted
// (unexpected_type) and dropped.
//
// Every FastpathConfig.Refresh (1 s) the sweep walks the map: a flow in it
// that this agent did not install (e.g. before a restart) is removed
// (unknown_removed); a flow whose FIN or RST the program saw is removed
// FastpathEndedLinger (2 s) after the sweep first sees it ended, so that
// the last packets of the close still go direct (ended); a flow that sent
// nothing for FastpathConfig.Idle (30 s) since it was installed is removed
// (expired); each LB node gets a refresh (up to fastpath.MaxEntries flows
// per message) listing its flows that sent packets since the last sweep, so
// that it keeps their entries. A removed flow's packets reach the LB tier
// again. Flows the map lost are forgotten.
//
// The Run goroutine only recognises a fastpath message and hands a copy to
// the fastpath goroutine through a queue of FastpathQueue messages (full:
// queue_full; the node sends again). That goroutine owns all fastpath
// state (the codec, the program, the table of redirected flows, the
// cancels, the host's addresses): its map updates and sweeps are system
// calls the receive loop must not wait for. Close stops it and detaches
// the program, whose tc link is not pinned: when the agent exits, or
// crashes, every flow goes through the LB tier again.
//
// Counters (Counters.Fastpath, sluice_agent_fastpath_<name>_total):
// redirects, cancels, redirects_installed, redirects_refused_<status>,
// cancelled, acks_sent,
// refreshes_sent, send_errors, auth_failures, malformed, stale_time,
// untrusted_source (a fastpath message from outside the LB prefixes; Trust
// drops it, counted as rejected_source too),
// unexpected_type,
// queue_full, expired, ended, unknown_removed, map_errors, tombstones_full,
// host_addr_errors; the gauge sluice_agent_fastpath_flows; and the egress
// program's own counters as it names them (Agent.FastpathEgress,
// sluice_agent_fastpath_egress_total{counter}).
//
// The egress program is reached through a small interface (egressProgram,
// fastpath.go); fastpath_egress.go adapts package fastpath/egress to it.
//
// # Lifetimes and concurrency
//
// New returns an Agent that owns the TUN descriptor, the UDP socket, three
// netlink sockets (route; sock_diag for the ownership checks, used by Run
// only; sock_diag for the probes), a handle on the namespace, the probe
// workers and the sysctl files whose values it changed, all bound to New's
// namespace: Run and Close may run on any thread. Run is one
// goroutine doing run-to-completion batches: recvmmsg of up to Config.Batch
// datagrams into buffers the Agent owns, validate each in place, one
// write(2) per inner packet to the TUN device (the TUN driver takes one
// packet per write, so there is nothing to batch), or, for a packet with a
// hop list this host does not own, one sock_diag query at most and one
// sendto(2). Run does not allocate per packet (reading the host's addresses,
// at most once per second while it forwards, does). Run hands a probe
// request to the probe workers through a bounded queue and never waits for
// a check. Counters may be called from any
// goroutine at any time; the counts of a batch appear when the batch is
// done (the probe workers' counts as they happen). Close stops Run, waits
// for it, stops the probe workers (queued requests stay unanswered), then
// undoes New (stopping the fastpath goroutine and detaching the egress
// program first); it is safe to call more than once and concurrently with
// Run.
package agent
