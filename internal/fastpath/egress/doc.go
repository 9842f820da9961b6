// Package egress is the client host's side of fastpath (DESIGN 3.7): a tc
// egress eBPF program (bpf/egress.c, built with bpf2go) that sends the
// packets of redirected flows straight to their backend, and its Go loader.
//
// After an LB node redirects an established flow to the client host's agent,
// the agent installs it here (Put): the flow, as the client sends it
// (client address and port -> VIP address and port, TCP or UDP), and its
// Target, the backend and the outer header fields the LB node itself
// writes for the flow. From then on the program GUE-encapsulates that
// flow's packets to the backend, and every other packet leaves the host as
// it would have. The backend's agent sees the same packets as from an LB
// node and needs no change. Flow mirrors fastpath.Flow field for field (a
// conversion turns one into the other).
//
// # The program
//
// It is attached to the uplink's tc egress (tcx, direct action; Attach). It
// parses untagged Ethernet, IPv4 without options and not a fragment, or
// IPv6 without extension headers, and TCP or UDP, and looks the flow up in
// a hash map (Options.Flows entries, 65536 by default). Only the agent adds
// and removes its entries, and it bounds their number: a flow it cannot add
// (the map is full) goes through the LB tier, and no installed flow is ever
// evicted behind its back. A packet it does not parse, or of no
// flow, is left exactly as it is (TC_ACT_OK).
//
// A packet of an installed flow is encapsulated in place
// (bpf_skb_adjust_room at the MAC layer with the UDP-tunnel and L3 flags,
// so that GSO knows the packet is a UDP tunnel): the bytes after the
// Ethernet header are exactly what encap.Template.Encap writes for the
// inner packet with Tunnel{Mode: GUE, Src: the client address, Dst:
// Target.Backend, Port: Target.Port, UDPChecksum: Target.UDPChecksum} and
// a flow hash whose encap.SrcPort and encap.FlowLabel are Target.SrcPort
// and Target.FlowLabel: outer IPv4 (DF, ID 0, TTL 64, the inner TOS, a
// correct header checksum) or IPv6 (hop limit 64, the inner traffic class,
// the flow label), UDP from SrcPort to the GUE port, and the 4-byte GUE
// header (version 0, no options, protocol 4 or 41). The outer source is the
// inner source, the client host's own address. The Ethernet addresses are
// the next hop's, from bpf_fib_lookup (BPF_FIB_LOOKUP_OUTPUT: the host's
// own output routes through this interface) on the outer addresses.
//
// The program updates the entry: the time of the last packet (at most
// about a second old, CLOCK_MONOTONIC_COARSE; State.LastUsed), the packets
// and bytes sent direct, and Ended once a TCP FIN or RST of the flow was
// sent (the packet itself still goes direct; the agent decides when to
// remove the flow).
//
// # What is left untouched
//
// Everything that decides whether a packet can go direct is checked before
// the packet changes; a packet that cannot is left exactly as it was and
// reaches the backend through the LB tier, which still holds the flow's
// entry. Counters counts each reason:
//
//   - Parse: not untagged Ethernet (VLAN-tagged, ARP, ...), IPv4 options,
//     IPv6 extension headers, fragments, neither TCP nor UDP, truncated, or
//     an IP length that is not the packet's;
//   - Miss: no entry;
//   - Family: the backend's address family is not the flow's (Put refuses
//     such a target; the program checks anyway);
//   - TooBig: a packet that is not GSO and is longer than the interface's
//     MTU once encapsulated (32 bytes more over IPv4, 52 over IPv6): through
//     the LB tier it gets ICMP "fragmentation needed" / "packet too big",
//     and the sender's path MTU shrinks for both ways;
//   - NoCsum, GSOCsum: see below;
//   - NoRoute, NoNeigh: the fib lookup found no route to the backend out
//     of this interface (also when the backend is routed by another
//     interface), or the next hop's MAC is not in the neighbour table yet;
//   - FwdDisabled: the kernel's fib lookup helper refuses an interface
//     without forwarding (net.ipv4.conf.IF.forwarding,
//     net.ipv6.conf.IF.forwarding). Hosts that route containers have it
//     on; on others fastpath stays inactive until it is turned on
//     (Program.Forwarding tells; Attach does not change it);
//   - AdjustErr: bpf_skb_adjust_room failed (e.g. a UDP GSO packet, whose
//     segment size the helper does not change).
//
// # Checksums
//
// The outer UDP checksum is zero over IPv4 unless Target.UDPChecksum, and
// always computed over IPv6. It is computed without reading the payload
// (local checksum offload, as link/afxdp's offload program and Linux's
// lco_csum): a transport segment with a valid checksum sums to the
// complement of its pseudo-header's sum, so the sum over the inner packet
// is its IP header's sum plus that complement. The same holds for a packet
// whose checksum is still to be filled in by the device (CHECKSUM_PARTIAL,
// transmit checksum offload): its checksum field holds the pseudo-header's
// sum, and the segment sums to the same value once it is filled in, which
// the stack does (in hardware, or in software when the device cannot for
// tunnelled packets) after this program. An inner segment with a wrong
// checksum gets a wrong outer checksum, and the backend drops it as its own
// TCP or UDP would have. An inner UDP datagram without checksum (0) cannot
// give an outer one: it is left untouched when one is needed (NoCsum).
//
// # GSO
//
// A GSO packet (TSO) is encapsulated whatever its length: the helper
// lowers its segment size by the outer headers, so the segments fit the
// MTU, and marks it a UDP tunnel, so that each segment gets the outer
// headers with its own lengths. The kernel computes an outer UDP checksum
// per segment only for a tunnel flagged to carry one, which this helper
// cannot flag: a GSO packet that needs the outer checksum (IPv6, or IPv4
// with Target.UDPChecksum) is left untouched (GSOCsum). The packets and
// bytes of a GSO packet count its segments and its frame before
// segmentation.
//
// # Attachment and life cycle
//
// Attach loads the program with the interface's MTU, and attaches it with
// a tcx bpf_link that is not pinned: when the agent exits or crashes, the
// kernel detaches it, and every flow goes through the LB tier again. A
// second Attach on an interface that already has a Sluice egress program
// (this process's or another's) fails with ErrBusy. The MTU is read once:
// attach again after changing it. Close detaches and frees the program and
// its map.
//
// Put, Delete and Lookup do not allocate; Walk and Counters do. The package
// is datapath: it imports no configuration, control or cluster package.
package egress
