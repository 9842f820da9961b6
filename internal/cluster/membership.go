package cluster

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Membership tells a node which members are alive. The node reads Views on
// its own goroutine; an implementation keeps only the newest view queued
// (a channel of capacity one, replaced when the node has not read it yet).
type Membership interface {
	// Views delivers the set of live members' cluster addresses, this node
	// included once it has joined, after every change.
	Views() <-chan []netip.AddrPort
	// Leave announces a graceful departure (drain, shutdown), waiting at
	// most timeout for the others to hear it.
	Leave(timeout time.Duration) error
	// Shutdown stops taking part without announcing it.
	Shutdown() error
}

// publish replaces the queued view of ch with v.
func publish(ch chan []netip.AddrPort, v []netip.AddrPort) {
	for {
		select {
		case ch <- v:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

// MemMembership is an in-memory membership service for tests and the
// simulator: Join, Leave and Kill change the live set and every member sees
// the new view at once (or after Delay, when set).
type MemMembership struct {
	// Jitter delays each member's view of a change by a random time up
	// to Jitter, so members disagree for a while, as gossip does. Set it
	// before the first Join.
	Jitter time.Duration

	mu      sync.Mutex
	members map[netip.AddrPort]*MemMember
	version uint64
}

// NewMemMembership returns an empty membership service.
func NewMemMembership() *MemMembership {
	return &MemMembership{members: map[netip.AddrPort]*MemMember{}}
}

// MemMember is one member's handle; it implements Membership.
type MemMember struct {
	hub   *MemMembership
	addr  netip.AddrPort
	views chan []netip.AddrPort
	shown uint64 // version of the last view published (under hub.mu)
}

var _ Membership = (*MemMember)(nil)

// Join adds addr and returns its Membership.
func (h *MemMembership) Join(addr netip.AddrPort) *MemMember {
	m := &MemMember{hub: h, addr: addr, views: make(chan []netip.AddrPort, 1)}
	h.mu.Lock()
	h.members[addr] = m
	h.broadcast()
	h.mu.Unlock()
	return m
}

// Kill removes addr as a failure detector would after it stopped answering.
func (h *MemMembership) Kill(addr netip.AddrPort) {
	h.mu.Lock()
	delete(h.members, addr)
	h.broadcast()
	h.mu.Unlock()
}

// Live returns the live members, sorted.
func (h *MemMembership) Live() []netip.AddrPort {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.live()
}

func (h *MemMembership) live() []netip.AddrPort {
	v := make([]netip.AddrPort, 0, len(h.members))
	for a := range h.members {
		v = append(v, a)
	}
	slices.SortFunc(v, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return v
}

func (h *MemMembership) broadcast() {
	v := h.live()
	h.version++
	ver := h.version
	for _, m := range h.members {
		if h.Jitter <= 0 {
			m.shown = ver
			publish(m.views, v)
			continue
		}
		d := time.Duration(rand.Int64N(int64(h.Jitter)))
		time.AfterFunc(d, func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if ver > m.shown { // never an older view after a newer one
				m.shown = ver
				publish(m.views, v)
			}
		})
	}
}

// Views implements Membership.
func (m *MemMember) Views() <-chan []netip.AddrPort { return m.views }

// Leave implements Membership.
func (m *MemMember) Leave(time.Duration) error { m.hub.Kill(m.addr); return nil }

// Shutdown implements Membership.
func (m *MemMember) Shutdown() error { m.hub.Kill(m.addr); return nil }
