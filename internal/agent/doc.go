// Package agent is the backend side of Sluice (`sluice agent`, DESIGN.md
// §3.4): it receives the GUE packets the LB nodes send, validates them,
// strips the outer headers and injects the inner IP packet into the host
// through a TUN device. The kernel delivers it to the local socket on the VIP
// and the reply leaves from the VIP, through the host's normal routing,
// straight to the client (direct server return). Linux only.
//
// Second-chance forwarding along the GUE hop list comes later: the hop list
// is decoded, and a packet carrying one is delivered locally and counted as
// hoplist_local.
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
//
// Needed privileges: CAP_NET_ADMIN and nothing else (no uid 0): creating a
// TUN device, adding addresses and writing net.* sysctls all require it
// and are granted by it. /dev/net/tun must be readable and writable by the
// agent's user (mode 0666 on common distributions). A Listen port below
// 1024 additionally needs CAP_NET_BIND_SERVICE. Under systemd:
// AmbientCapabilities=CAP_NET_ADMIN with a non-root User=.
//
// # Validation
//
// A datagram is delivered only if encap.DecodeGUE accepts its GUE header,
// the GUE Proto/ctype is 4 or 41 and matches the inner IP version, the inner
// IPv4 or IPv6 header is well formed (header length, total/payload length
// within the datagram, IPv4 header checksum) and its destination is one of
// the configured VIPs. Anything else is dropped and counted by Reason. The
// destination check keeps the agent from relaying arbitrary packets into
// the host: whoever can reach the UDP port can only reach the VIPs, as if
// they were the client. The outer source is not checked (the UDP checksum
// is, by the kernel).
//
// # Lifetimes and concurrency
//
// New returns an Agent that owns the TUN descriptor, the UDP socket, a
// netlink socket and the sysctl files whose values it changed, all
// bound to New's namespace: Run and Close may run on any thread. Run is one
// goroutine doing run-to-completion batches: recvmmsg of up to Config.Batch
// datagrams into buffers the Agent owns, validate each in place, one
// write(2) per inner packet to the TUN device (the TUN driver takes one
// packet per write, so there is nothing to batch). Run does not allocate per
// packet. Counters may be called from any goroutine at any time; the counts
// of a batch appear when the batch is done. Close stops Run, waits for it,
// then undoes New; it is safe to call more than once and concurrently with
// Run.
package agent
