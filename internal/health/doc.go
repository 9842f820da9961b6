// Package health checks backends and keeps a rise/fall state per check
// (DESIGN.md §3.10). It is a library: the control plane owns a Checker, Sets
// one check per backend (and service) from the configuration, Removes the
// ones that went away, and turns the Transitions into backend weights.
//
// # Checks
//
// A Spec says what to check and how often. Kinds:
//
//   - TCP: a connection to Target is established and closed at once.
//   - HTTP, HTTPS: GET Path from Target (a new connection per run, no
//     proxy, no redirects followed) must answer ExpectStatus. HTTPS
//     verifies the certificate against Host (or the Target address) unless
//     InsecureSkipVerify.
//   - UDP: Send goes to Target from a connected socket; the first reply must
//     start with Expect. An ICMP port unreachable fails the run at once.
//   - VIP: the VIP probe below asks the backend's agent whether the service
//     answers on the VIP itself, which is what load-balanced traffic needs
//     (as GitHub's GLB checks through its GUE tunnel). The other kinds
//     reach the backend's own address: a service bound only to that address,
//     or a host whose agent is not running, passes them and still drops
//     every load-balanced packet. Under a VIP check it is Down.
//
// # State
//
// A check starts Unknown. Rise consecutive successes make it Up, Fall
// consecutive failures make it Down; any other result only counts. Each
// change is reported exactly once, as a Transition, to the function given to
// NewChecker, and State returns the current state and the last Transition.
// Replacing a check with a different Spec (Set) restarts it at Unknown
// without a Transition: a control plane keeps a backend's last verdict until
// the new check reaches one.
//
// # Scheduling and concurrency
//
// Run runs every check on its own goroutine: the first run after a delay
// drawn uniformly from [0, Interval) (so that checks that start together,
// say after a config load, do not probe in step; Seesaw staggers its
// checks' starts for the same reason), then one run every Interval, each bounded by Timeout
// (< Interval) through its context. A run cut short because the check was
// stopped or replaced is not counted. Set, Remove and State may be called
// from any goroutine at any time, also from the onChange callback, which
// runs on the goroutine of the check whose state changed with no lock held.
// Transitions of one key arrive in order.
//
// # The VIP probe
//
// The checker sends one UDP datagram to the agent's GUE address and port
// (Spec.Target): a GUE variant 0 control message (C bit set) of the
// Sluice-specific control type 0xD3, from the range draft-ietf-intarea-gue
// leaves to user-defined control messages. A GUE data-path decoder
// (encap.DecodeGUE, Linux fou) rejects it as a control message, so it can
// never be mistaken for encapsulated traffic. Package vipprobe encodes and
// decodes it:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+\
//	|0 0|1|    0    |  ctype 0xD3   |           Flags (0)           | GUE
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+/
//	|  Version (1)  |     Type      |    Status     |   Protocol    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                                                               |
//	+                       Probe ID (64 bits)                      +
//	|                                                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|           VIP port            |  Addr len     | Reserved (0)  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                                                               |
//	~                 VIP address (4 or 16 octets)                  ~
//	|                                                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// All fields are in network byte order. The GUE header has Hlen 0 and no
// flags: no extension fields and no private data. Version is 1. Type is 1
// for a request, 2 for a reply. Status is 0 in a request; in a reply 1 up
// (the service answers on the VIP), 2 down (the VIP is configured but
// nothing answers on that protocol and port), 3 not configured (the agent
// does not serve the VIP), 4 overloaded (the agent had too many probes to
// check this one). Protocol is the IP protocol number, 6 (TCP) or 17 (UDP).
// The probe ID is random (crypto/rand) per run. Addr len is 4 or 16 and the
// datagram is exactly 24 or 36 bytes long; the VIP is a plain IPv4 or IPv6
// address (not unspecified, not IPv4-mapped) and its port is not 0.
// Reserved is sent as 0 and ignored. A receiver drops anything else.
//
// The agent answers from its GUE socket to the request's source address and
// port with the request's bytes, Type 2 and the status set. The checker
// sends from an unconnected socket (the kernel picks the reply's source
// address, which need not be Target's) and accepts only a reply that echoes
// its ID, VIP and protocol. A request is sent again after Timeout/3 and
// 2*Timeout/3 without an answer, so one lost datagram does not fail the run;
// no answer within Timeout (no agent, a firewall) fails it with ErrTimeout.
// Only an "up" reply is a success.
//
// What the agent checks before answering, and how it bounds the work a
// probe flood can cause, is described in package agent ("VIP probes").
package health
