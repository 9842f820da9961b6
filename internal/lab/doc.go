// Package lab builds Sluice's test network on one machine out of network
// namespaces, veth pairs and one Linux bridge (DESIGN.md §5): a client, a
// router, 1..9 LB nodes and 1..99 backend hosts. The demo, the end-to-end
// tests (test/e2e) and the benchmarks run on it; `sluice lab up|down|status`
// drives it by hand.
//
// # Topology
//
//	 sl-client                sl-router  (ip_forward=1, forwarding=1, fib_multipath_hash_policy=1)
//	+-----------+            +-------------------------------------------------+
//	| eth0      |---veth-----| client                                          |
//	+-----------+            |                                                 |
//	                         | svc (bridge, 198.18.30.1, 2001:db8:30::1)       |
//	                         |   ports: lb1 .. lbN, be1 .. beM                 |
//	                         | route 198.18.0.0/24, 2001:db8::/64 (the VIPs)   |
//	                         |   nexthop via lb1 nexthop via lb2 ...           |
//	                         +--lb1-----lb2----...--be1-----be2-----be3--------+
//	                             |       |           |       |       |   (veths)
//	                       sl-lb1 eth0  sl-lb2    sl-be1  sl-be2  sl-be3 eth0
//	                       (LB captures here)     (agent + servers; VIPs on lo)
//
// The LB nodes and the backends share one layer-2 segment, the "service"
// segment: the router's bridge svc with one port per node. The router
// routes between the client segment and the service segment and holds the
// VIP routes, so:
//
//	client -> VIP       client eth0 -> router -> svc -> LB node eth0 (captured)
//	LB -> backend       LB node eth0 -> bridge -> backend eth0 (GUE, on-link;
//	                    via the router works too: it sends no redirects)
//	backend -> client   backend eth0 -> router -> client, source = VIP (DSR)
//
// # Address plan
//
// Everything comes from 198.18.0.0/15 and 2001:db8::/32 and exists only in
// the lab's namespaces. Host numbers are the same in both families (the
// IPv6 group is written with the same decimal digits), and the MAC's last
// byte is the host number too: 02:73:6c:SEG:SIDE:HOST, SEG the third IPv4
// octet in hex (0a client segment, 1e service segment), SIDE 00 for the
// node's end and 01 for the router's bridge port.
//
//	namespace   interface   IPv4              IPv6                  MAC                default route
//	client      eth0        198.18.10.2/24    2001:db8:10::2/64     02:73:6c:0a:00:02  198.18.10.1, 2001:db8:10::1
//	router      client      198.18.10.1/24    2001:db8:10::1/64     02:73:6c:0a:00:01  -
//	router      svc bridge  198.18.30.1/24    2001:db8:30::1/64     02:73:6c:1e:00:01  -
//	router      lbN, beN    (bridge ports)                          02:73:6c:1e:01:HOST
//	lbN         eth0        198.18.30.1N/24   2001:db8:30::1N/64    02:73:6c:1e:00:1N  198.18.30.1, 2001:db8:30::1
//	            (lb1 = .11 / ::11, lb2 = .12, lb3 = .13 ... lb9 = .19)
//	beN         eth0        198.18.30.1NN/24  2001:db8:30::1NN/64   02:73:6c:1e:00:HOST 198.18.30.1, 2001:db8:30::1
//	            (be1 = .101 / ::101, be2 = .102, be3 = .103 ... be99 = .199)
//	VIPs        routed by the router toward the LB tier: 198.18.0.0/24, 2001:db8::/64 (Config.VIPs4, VIPs6)
//
// Lab.LBPrefixes and Lab.BackendPrefixes are the fewest prefixes holding
// exactly the LB nodes' and the backends' addresses (three of each:
// 198.18.30.11/32 198.18.30.12/31 2001:db8:30::11/128 2001:db8:30::12/127,
// and the same from .101 and ::101): the scenario gives the agents them as
// --lb-prefix and --hop-prefix. They hold neither the router nor the
// client segment, whose packets the router forwards with their own source
// address (198.18.10.2). By hand, 198.18.30.0/27 and 2001:db8:30::/123 hold
// every possible LB node (and the router), 198.18.30.64/26,
// 198.18.30.128/25 and 2001:db8:30::100/120 every possible backend.
//
// Namespace names are Config.Prefix (default "sl-") followed by client,
// router, lbN and beN. Interfaces are created directly inside their
// namespaces (a veth's two ends are made in place), so interface names
// never appear in the root namespace and labs with different prefixes run
// side by side.
//
// # Interface settings
//
// Every veth end has one RX and one TX queue and TX checksum offload, TSO,
// GSO and GRO off (`ethtool -K IF tx off tso off gso off gro off`), so a
// packet socket or AF_XDP socket on an LB node's eth0 sees complete,
// MTU-sized frames with full checksums (ENVIRONMENT.md). IPv6 duplicate
// address detection is off in the lab's namespaces, so addresses work at
// once. The backends have arp_ignore=1 and arp_announce=2: the VIPs that
// `sluice agent` configures on their lo are never answered for on eth0.
// The lab does not configure VIPs on backends, and nothing forwards in LB
// nodes (ip_forward=0): without a running LB, packets to a VIP stop at the
// LB node.
//
// The VIP routes follow Config.VIPRouting: one static route per VIP prefix
// across all LB nodes (ECMP, the default), via LB node 1 only, or none (a
// BGP speaker in the router namespace installs them). Lab.RouteVIPs moves
// them at run time.
//
// # Lifetimes
//
// Up first removes whatever an earlier run with the same prefix left (a
// crash, kill -9, a test that did not clean up), then builds; if a step
// fails or its context is cancelled it removes everything before it
// returns. Down stops the processes started with Node.Start (waiting for
// each), kills anything else still running in the lab's namespaces, and
// deletes every namespace with the prefix; the kernel deletes their veths
// with them. Down is idempotent; Remove does the same from just a prefix,
// and Attach describes a lab built by another process.
//
// A Node's Command returns an unstarted exec.Cmd the caller must Wait for
// (PID 1 on the project's machines does not reap orphans). Start keeps a
// Process that stands for a whole process group: Stop sends SIGTERM to the
// group, SIGKILL after a timeout, and always waits; because Start makes
// the calling process a child subreaper, the group's orphans are reaped as
// well, so nothing is left <defunct>. Do runs Go code with sockets in the
// node's namespace. ServeHTTP and ServeUDPEcho are the tiny servers backends run
// (`sluice lab http-serve`, `sluice lab udp-echo`) to answer with their
// name; ServeQUIC (`sluice lab quic-serve`) does the same over QUIC and
// issues QUIC-LB connection IDs carrying the backend's server ID.
//
// Everything here needs root; tests skip without it.
package lab
