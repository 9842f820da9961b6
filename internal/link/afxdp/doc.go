// Package afxdp is the AF_XDP link: batch packet I/O over an AF_XDP socket
// on one RX queue of an interface, steered by an XDP program that New
// generates in Go (github.com/cilium/ebpf/asm; no C compiler).
//
// # The XDP program
//
// The program parses Ethernet, at most one 802.1Q or 802.1ad tag, and the
// IPv4 or IPv6 destination address. A destination in the VIP set (two BPF
// hash maps keyed by the 4- or 16-byte address) is redirected with
// bpf_redirect_map to the XSKMAP entry of the packet's RX queue, with
// XDP_PASS as the fallback when that queue has no socket. Everything else
// returns XDP_PASS, so ARP, ND, BGP and ssh keep working on the same
// interface. SetVIPs replaces the set; until it is called nothing is
// redirected.
//
// The program, its maps and its attachment belong to the interface, not to
// one Link: the links of a process on different queues of one interface
// share them (one socket per queue in the XSKMAP), the VIP set is the
// interface's, and the last Close detaches the program. A second link on a
// queue already in use fails with ErrBusy.
//
// # Attachment and crashes
//
// The program is attached with a bpf_link (link.AttachXDP), which the kernel
// releases when the process dies: a crashed process leaves no program
// behind. A program attached the legacy way (netlink) is stale by
// definition (a tool, or an old loader that died): New removes it before
// attaching, so programs never stack. A program held by another live
// process's bpf_link is not touched: New fails with ErrBusy. A killed
// process's socket releases its queue from deferred kernel work a few
// milliseconds after the process is gone; New retries a busy bind for up to
// two seconds.
//
// Mode Auto tries native (driver) mode and falls back to generic mode;
// AttachMode says which was used and NativeError why native failed. In
// native mode the socket is bound without forcing a mode, so the kernel uses
// zero-copy where the driver supports it (ZeroCopy reports it) and copy mode
// otherwise; in generic mode it is bound in copy mode.
//
// # Frames
//
// The UMEM is NumFrames frames of FrameSize (4096) bytes in an anonymous
// mapping. Recv lends frames: Frame.Buf is the whole 4096-byte frame,
// Frame.Handle is its UMEM address (a multiple of FrameSize), and the packet
// is Buf[Off:Off+Len] with Off == Headroom(). Headroom is at least
// XDP_PACKET_HEADROOM (256), which the kernel always leaves free; a larger
// Config.Headroom registers the rest as UMEM headroom. The caller may
// rewrite the frame and prepend headers into the headroom (lower Off, raise
// Len) before Send, which transmits the descriptor (Handle+Off, Len); Off+Len
// must stay within the frame. Every lent frame comes back exactly once, by
// Send or Release; a frame given back twice or not lent by this link is
// ignored and counted in Stats.Invalid (frames of two links cannot be told
// apart: never mix them).
//
// The link is also a link.Injector: Config.ReserveFrames frames (64 by
// default) are kept out of the fill ring, and Alloc lends them as empty
// frames (Off == Headroom(), Len 0) for packets the caller builds itself;
// they go back by Send or Release like received frames. A frame that comes
// back, from the caller or from a completed transmission, refills the
// reserve first while it is short, and otherwise goes to the fill ring.
// NumFrames must be at least 2*BatchSize+ReserveFrames, so that with every
// frame given back the kernel has two batches to receive into.
//
// Every frame is in exactly one place: the kernel (fill ring, being
// received, RX ring), lent to the caller (by Recv or Alloc), in
// transmission (TX ring, or sent and not yet completed), spare, or in the
// reserve. All four rings are at least NumFrames long, so the fill ring
// always has room for every frame that comes back and the TX and completion
// rings never overflow. Every Recv and Send first moves completed
// transmissions from the completion ring back to the reserve or the fill
// ring, so the fill ring runs dry only while the caller holds frames
// (Stats.FillRingEmpty, Stats.XDP.RxFillRingEmptyDescs). Recv, Alloc, Send
// and Release do not allocate.
//
// # Transmission
//
// Send writes descriptors to the TX ring and kicks the kernel with
// sendto(MSG_DONTWAIT) while the ring has the need-wakeup flag (always, in
// copy mode). Copy mode transmits at most max_tx_budget descriptors per
// kick (32, raised to BatchSize where the kernel has
// XDP_MAX_TX_SKB_BUDGET), synchronously, so Send kicks until the TX ring is
// drained or a kick makes no progress; descriptors left behind are kicked
// again by the next Recv or Send, and an idle Recv polls with a short
// timeout while any wait.
//
// # Waiting
//
// Recv never spins: with nothing to receive it blocks in ppoll(2) on the
// socket and an eventfd for at most Config.Poll, then returns (0, nil). In
// copy mode the poll also drives transmission. Close signals the eventfd, so
// a blocked Recv returns link.ErrClosed at once.
//
// # Concurrency and lifetime
//
// Recv, Alloc, Send and Release belong to one worker goroutine. Close, SetVIPs,
// Stats, AttachMode, NativeError, ZeroCopy and ProgramID may be called from
// any goroutine. Close waits for a Recv, Send or Release in progress,
// detaches (or leaves the XSKMAP of the shared program) and closes the
// socket; it is idempotent. Frames lent out when Close runs stay readable:
// the UMEM is unmapped when the last of them is given back (Send and
// Release then only take them back). If the interface goes away, Recv and
// Send return the socket's error (ENETDOWN) from then on.
//
// # Errors
//
// New's errors wrap ErrNoInterface (no such interface in the caller's
// network namespace), ErrUnsupported (no AF_XDP, no BPF, or no XDP in the
// requested mode: fall back to AF_PACKET and log the error as the reason)
// or ErrBusy (queue or interface taken).
//
// # veth and the lab
//
// Measured on veth (kernel 6.18): native and generic mode both receive
// (XDP_REDIRECT into the socket) and both transmit (copy mode goes through
// the driver's normal transmit path); the socket is always in copy mode.
// The peer needs no XDP program for either direction. A veth has two RX
// queues unless created with "numrxqueues 1 numtxqueues 1": with more,
// open one link per queue, or packets arriving on a queue without a socket
// fall back to XDP_PASS and reach the kernel. Packets larger than
// FrameSize - Headroom are dropped by the kernel (Stats.XDP.RxDropped): keep
// the MTU below that and turn off GRO/TSO/GSO on the interface, as the lab
// does. A receive -> prepend -> send loop on one veth forwarded 180k-490k
// pps without loss here (BenchmarkForward, 2 shared cores, blaster included;
// native and generic alike within the noise); the link's own code is a few
// percent of that CPU, the rest is the kernel's copy-mode work.
package afxdp
