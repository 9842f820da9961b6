// Package nat holds the per-worker state of full-NAT forwarding (DESIGN
// §3.3, §3.8): the SNAT port allocator and the reverse table that maps a
// backend's reply to the client's flow.
//
// # The binding
//
// A client flow C:cp -> VIP:vp in full-NAT mode leaves the node as S:sp ->
// B:bp: S is one of the node's SNAT addresses, sp a port the worker
// allocated (Pool.Allocate), B:bp the backend. The backend answers B:bp ->
// S:sp; the worker finds the client's flow with Reverse.Lookup on that
// reply's own 5-tuple and rewrites the reply to VIP:vp -> C:cp
// (encap.L2Template.NAT). When the client's flow ends or is reaped, the
// worker deletes the reverse entry and releases the port, in that order.
//
// # Ownership and steering
//
// Everything here is owned by one worker goroutine: no locks, no atomics, no
// allocation after construction. Workers never collide because each owns a
// disjoint share of every SNAT address's port range (Layout): the range is
// dealt in blocks of 1<<Shift ports, block port>>Shift belonging to worker
// (port>>Shift) % Workers. Nodes never collide because each has its own SNAT
// addresses.
//
// The reply to S:sp must then reach the worker that owns sp, since only that
// worker's reverse table knows the flow. An AF_XDP socket receives only from
// its own RX queue (an XDP program cannot redirect a frame to another
// queue's socket), so the steering happens in the NIC: with Workers a power
// of two, worker w's share is the ports whose bits Shift..Shift+log2(Workers)-1
// equal w, which one ntuple rule per worker and SNAT address expresses, e.g.
// for TCP over IPv4 with Shift 8 and 2 workers
//
//	ethtool -N eth0 flow-type tcp4 dst-ip S dst-port 0x0100 m 0xfeff action 1
//
// (ethtool's m marks the bits to ignore), and the same for udp4, tcp6 and
// udp6. Layout.SteeringMask gives value and mask. With one worker per node
// nothing needs steering. Without such rules a reply that lands on another
// worker finds no binding and is dropped (counted by the caller).
//
// The SNAT addresses belong to the datapath: the host's own sockets must
// not use them, or at least not their ports in Lo..Hi (keep the kernel's
// ip_local_port_range outside the layout and have the XDP program redirect
// only Lo..Hi), since a reply to a kernel socket would otherwise be taken
// for a binding's.
//
// # Port reuse
//
// Free ports are kept in FIFO order: a released port goes to the back of the
// queue and is reused only after every other free port, which keeps a
// 4-tuple S:sp -> B:bp out of use for as long as possible after its
// connection closed (the backend may still hold it in TIME_WAIT).
//
// Exhaustion is not an error on the packet path: Allocate returns ok=false,
// the caller counts it and refuses the flow. The reverse table is sized to
// the ports the worker owns (Pool.Cap), so an insert after a successful
// allocation cannot fail for room.
package nat
