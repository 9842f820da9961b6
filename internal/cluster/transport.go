package cluster

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Datagram is one received datagram. The receiver owns Data.
type Datagram struct {
	From netip.AddrPort
	Data []byte
}

// Transport carries the cluster's datagrams. The node goroutine is its only
// user for sending; Recv's channel is read by the node goroutine too.
type Transport interface {
	// LocalAddr is the address peers send to; it is this node's identity.
	LocalAddr() netip.AddrPort
	// Send transmits one datagram of at most MaxPayload bytes. It does not
	// keep b and does not block on a slow peer: an overflowing queue drops.
	Send(to netip.AddrPort, b []byte) error
	// Recv delivers received datagrams; Close closes the channel.
	Recv() <-chan Datagram
	// Close releases the transport.
	Close() error
}

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("cluster: transport closed")

// MemNetwork is an in-memory network of transports for tests and the
// simulator: Send copies the datagram into the receiver's bounded queue, or
// drops it when the queue is full or nobody listens at the address.
type MemNetwork struct {
	mu    sync.RWMutex
	ports map[netip.AddrPort]*MemTransport
	queue int

	Dropped atomic.Uint64 // datagrams dropped: full queue or no receiver
	Sent    atomic.Uint64

	// Tap, when set before any Send, sees every datagram sent (tests).
	Tap func(from, to netip.AddrPort, b []byte)
}

// NewMemNetwork returns a network whose receive queues hold queue datagrams.
func NewMemNetwork(queue int) *MemNetwork {
	return &MemNetwork{ports: map[netip.AddrPort]*MemTransport{}, queue: max(queue, 1)}
}

// Listen attaches a transport at addr; it fails when addr is taken.
func (n *MemNetwork) Listen(addr netip.AddrPort) (*MemTransport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.ports[addr]; ok {
		return nil, errors.New("cluster: address in use: " + addr.String())
	}
	t := &MemTransport{net: n, addr: addr, rx: make(chan Datagram, n.queue)}
	n.ports[addr] = t
	return t, nil
}

// MemTransport is one endpoint of a MemNetwork.
type MemTransport struct {
	net    *MemNetwork
	addr   netip.AddrPort
	rx     chan Datagram
	closed atomic.Bool
	once   sync.Once
}

var _ Transport = (*MemTransport)(nil)

// LocalAddr implements Transport.
func (t *MemTransport) LocalAddr() netip.AddrPort { return t.addr }

// Recv implements Transport.
func (t *MemTransport) Recv() <-chan Datagram { return t.rx }

// Send implements Transport.
func (t *MemTransport) Send(to netip.AddrPort, b []byte) error {
	if t.closed.Load() {
		return ErrClosed
	}
	n := t.net
	if n.Tap != nil {
		n.Tap(t.addr, to, b)
	}
	n.mu.RLock()
	dst := n.ports[to]
	if dst == nil {
		n.mu.RUnlock()
		n.Dropped.Add(1)
		return nil
	}
	select {
	case dst.rx <- Datagram{From: t.addr, Data: append([]byte(nil), b...)}:
		n.Sent.Add(1)
	default:
		n.Dropped.Add(1)
	}
	n.mu.RUnlock()
	return nil
}

// Close implements Transport: the address stops receiving at once.
func (t *MemTransport) Close() error {
	t.once.Do(func() {
		t.closed.Store(true)
		n := t.net
		n.mu.Lock()
		delete(n.ports, t.addr)
		close(t.rx) // under the lock: no Send holds dst any more
		n.mu.Unlock()
	})
	return nil
}

// UDPTransport is the real transport: one UDP socket and a reader goroutine.
type UDPTransport struct {
	conn   *net.UDPConn
	addr   netip.AddrPort
	rx     chan Datagram
	done   chan struct{}
	closed atomic.Bool

	RxDropped atomic.Uint64 // datagrams dropped because the node lagged
}

var _ Transport = (*UDPTransport)(nil)

// ListenUDP binds addr. Bind a specific address, not a wildcard: the source
// address of what this node sends is its identity. queue bounds the
// datagrams waiting for the node goroutine.
func ListenUDP(addr netip.AddrPort, queue int) (*UDPTransport, error) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	la := c.LocalAddr().(*net.UDPAddr).AddrPort()
	la = netip.AddrPortFrom(la.Addr().Unmap(), la.Port())
	t := &UDPTransport{conn: c, addr: la, rx: make(chan Datagram, max(queue, 1)), done: make(chan struct{})}
	go t.read()
	return t, nil
}

func (t *UDPTransport) read() {
	defer close(t.done)
	defer close(t.rx)
	buf := make([]byte, MaxPayload+1)
	for {
		n, from, err := t.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if t.closed.Load() {
				return
			}
			continue
		}
		if n > MaxPayload {
			continue
		}
		d := Datagram{From: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), Data: append([]byte(nil), buf[:n]...)}
		select {
		case t.rx <- d:
		default:
			t.RxDropped.Add(1)
		}
	}
}

// LocalAddr implements Transport.
func (t *UDPTransport) LocalAddr() netip.AddrPort { return t.addr }

// Recv implements Transport.
func (t *UDPTransport) Recv() <-chan Datagram { return t.rx }

// Send implements Transport.
func (t *UDPTransport) Send(to netip.AddrPort, b []byte) error {
	if t.closed.Load() {
		return ErrClosed
	}
	_, err := t.conn.WriteToUDPAddrPort(b, to)
	return err
}

// Close implements Transport and waits for the reader to stop.
func (t *UDPTransport) Close() error {
	if t.closed.Swap(true) {
		return nil
	}
	err := t.conn.Close()
	<-t.done
	return err
}
