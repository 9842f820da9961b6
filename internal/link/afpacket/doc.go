// Package afpacket is the AF_PACKET link: the datapath's fallback where
// AF_XDP is not available. It implements link.Link on one Ethernet interface
// with a raw packet socket (Linux only).
//
// # Packet path
//
// Recv receives up to BatchSize frames with one recvmmsg(2) call straight
// into link-owned buffers; Send transmits with sendmmsg(2) straight from them,
// BatchSize frames per call. No packet is copied in user space and no
// allocation happens per batch. The socket is non-blocking and registered
// with Go's netpoller: an idle Recv parks its goroutine (not a thread) for at
// most Config.Poll and then returns (0, nil), and Close wakes it at once.
// On this project's 2-core VMs recvmmsg/sendmmsg forwarded 300-400k frames
// per second where TPACKET_V3 rings driven from pure Go managed 200-290k,
// which is why this link does not use the rings.
//
// The socket is bound to the interface with ETH_P_ALL and PACKET_IGNORE_OUTGOING:
// it sees every frame that arrives on the interface and none that leaves it,
// so the link never reads back what it sends. A packet socket receives a copy;
// the kernel still processes every frame itself. The host must therefore not
// act on VIP traffic (no VIP addresses on its interfaces for this traffic,
// forwarding off or an nftables drop rule for the VIPs), or the kernel would
// answer or forward the same packets the link forwards.
//
// SetFilter attaches a classic BPF program that accepts only IPv4/IPv6 frames
// to the given destination addresses (the VIPs), so that ARP, BGP, ssh and
// everything else never cross into user space. Without a filter the link
// receives everything.
//
// # Buffers and lifetimes
//
// A Link owns 2 x BatchSize buffers of Headroom + 4 + FrameSize bytes each.
// Recv lends frames out; every frame goes back exactly once through Send or
// Release (Send and Release panic on a frame given back twice or not lent by
// this link); when all buffers are lent out Recv returns ErrLeak. A frame's
// bytes are valid from Recv until it is given back.
//
// The link is also a link.Injector: Config.Reserve further buffers (64 by
// default) are lent only by Alloc, as empty frames for packets the caller
// builds itself, and go back to the reserve when given back by Send or
// Release. Recv never uses them, so frames held from Alloc never make Recv
// run short, and Alloc reports false when the reserve is lent out.
//
// Length rules: a received frame is the Ethernet frame from the destination
// MAC address on, without FCS. The kernel moves the outer VLAN tag of a
// received frame into metadata; Recv puts it back into the frame (into the 4
// bytes kept in front of each frame), so frames look as they did on the wire.
// Frames longer than FrameSize (without the restored tag) are dropped and
// counted as Stats.Oversize: with offloads on, veth and some NICs hand packet
// sockets GSO super-frames of several kilobytes, and a truncated packet must
// not be forwarded. Send transmits Bytes() as a complete Ethernet frame of at
// most MTU+14 bytes (MTU+18 when tagged); larger frames fail with EMSGSIZE and
// count as Stats.SendErrors while the rest of the batch is still sent.
//
// # Concurrency
//
// Recv, Alloc, Send and Release belong to one worker goroutine. Close, SetFilter,
// ClearFilter and Stats may be called from any goroutine.
package afpacket
