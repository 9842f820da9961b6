package lbnode

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/sluicelb/sluice/internal/cluster"
	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/flow"
)

// Fragments across the nodes of a cluster: the datapath's relay
// (datapath.Relay) sends each datagram's fragments to its first fragment's
// backend, whichever nodes they arrived at. The owner of a datagram is the
// head of its fragment shard over the running member's view; its relay
// listens on the node's cluster address, port + 2 (config.RelayAddr).

// fragOwners is the datapath's FragmentOwners.
type fragOwners struct {
	n    *Node
	self netip.AddrPort // the node's cluster bind address
	seed uint64
}

// FragmentOwner implements datapath.FragmentOwners: none while the node is
// out of the cluster (alone, or drained).
func (o *fragOwners) FragmentOwner(k *flow.Key) (netip.AddrPort, bool, bool) {
	cl := o.n.clNode.Load()
	if cl == nil {
		return netip.AddrPort{}, false, false
	}
	head, ok := cl.View().FragmentOwner(k, o.seed)
	if !ok {
		return netip.AddrPort{}, false, false
	}
	return config.RelayAddr(head), head == o.self, true
}

// relayExpire is how often the relay's held fragments are checked for
// their timeout while no message comes.
const relayExpire = 20 * time.Millisecond

// openRelay binds the node's relay address.
func openRelay(bind netip.AddrPort) (*net.UDPConn, error) {
	return net.ListenUDP("udp", net.UDPAddrFromAddrPort(config.RelayAddr(bind)))
}

// runRelay hands the relay messages that members send to the node's relay
// address to the datapath's relay, and refuses (counts) those of any other
// source, until the socket is closed.
func (n *Node) runRelay(conn *net.UDPConn) {
	r := n.dp.Relay()
	buf := make([]byte, 64<<10)
	for {
		conn.SetReadDeadline(time.Now().Add(relayExpire))
		m, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.Expire()
			continue
		}
		if !isMember(n.clNode.Load(), from.Addr()) {
			r.Reject()
			continue
		}
		r.Receive(buf[:m])
	}
}

// isMember reports whether a is the address of a member in cl's view (cl
// nil: the node is out of the cluster, and trusts no one).
func isMember(cl *cluster.Node, a netip.Addr) bool {
	if cl == nil {
		return false
	}
	a = a.Unmap()
	for _, m := range cl.View().Members() {
		if m.Addr().Unmap() == a {
			return true
		}
	}
	return false
}

// startRelay runs the relay's receiver until ctx is done.
func (n *Node) startRelay(ctx context.Context) {
	if n.relayConn == nil {
		return
	}
	go n.runRelay(n.relayConn)
	context.AfterFunc(ctx, func() { n.relayConn.Close() })
}
