package cluster

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"time"
)

// Heartbeats (GossipConfig.Heartbeat) tell a member, faster than
// memberlist's failure detector, whether it and each other member hear
// each other. memberlist probes one member per interval and declares a
// member dead only after a failed probe and a suspicion timeout; a member
// that is cut off (its cluster traffic dropped) learns it as late, and
// memberlist does not expose its suspicions. L2 mode needs more: a VIP's
// owner that is cut off must stop answering before the others declare it
// dead and take the VIP over. With heartbeats every H, a member counts
// another only while it heard from it within 3H and that member's last
// heartbeat named it (both directions work); cut off, it stops counting
// them within 3H, earlier than any other member can declare it dead
// (a failed probe plus the suspicion timeout: 2.5 probe intervals, with
// H = probe interval / 2).
//
// Message: 'H', version 1, sender's cluster address (18 bytes: address,
// port), count (u16), then count addresses (18 bytes each) the sender heard
// from within its lease.

const (
	hbMagic   = 'H'
	hbVersion = 1
	hbAddrLen = 18
	// hbLease is how many heartbeat periods a member counts another after
	// its last heartbeat.
	hbLease = 3
)

type heardFrom struct {
	at       time.Time // its last heartbeat
	mutualAt time.Time // its last heartbeat that named this member
}

func (g *Gossip) heartbeats() {
	t := time.NewTicker(g.hb)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		msg := g.heartbeat()
		for _, n := range g.ml.Members() {
			if n.Name == g.ml.LocalNode().Name {
				continue
			}
			_ = g.ml.SendBestEffort(n, msg) // lost: the lease covers two
		}
	}
}

// heartbeat encodes this member's heartbeat.
func (g *Gossip) heartbeat() []byte {
	heard := g.mutual(false)
	b := make([]byte, 0, 2+hbAddrLen+2+hbAddrLen*len(heard))
	b = append(b, hbMagic, hbVersion)
	b = append(b, encodeMeta(g.self)...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(heard)))
	for _, a := range heard {
		b = append(b, encodeMeta(a)...)
	}
	return b
}

func (g *Gossip) onHeartbeat(b []byte) {
	if len(b) < 2+hbAddrLen+2 || b[0] != hbMagic || b[1] != hbVersion {
		return
	}
	from, ok := decodeMeta(b[2 : 2+hbAddrLen])
	if !ok {
		return
	}
	n := int(binary.BigEndian.Uint16(b[2+hbAddrLen:]))
	rest := b[2+hbAddrLen+2:]
	if len(rest) != n*hbAddrLen {
		return
	}
	hears := false
	for i := range n {
		if a, ok := decodeMeta(rest[i*hbAddrLen : (i+1)*hbAddrLen]); ok && a == g.self {
			hears = true
		}
	}
	now := time.Now()
	g.hbMu.Lock()
	h := g.heard[from]
	h.at = now
	if hears {
		h.mutualAt = now
	}
	g.heard[from] = h
	g.hbMu.Unlock()
}

// Lease is how long a member counts another after its last heartbeat (3
// heartbeat periods); zero without heartbeats.
func (g *Gossip) Lease() time.Duration { return time.Duration(hbLease) * g.hb }

// Mutual returns the members from which this member received, within the
// lease, a heartbeat naming it: both directions work. Without heartbeats
// (GossipConfig.Heartbeat zero) it returns nil.
func (g *Gossip) Mutual() []netip.AddrPort { return g.MutualWithin(g.Lease()) }

// MutualWithin is Mutual over the last d instead of the lease.
func (g *Gossip) MutualWithin(d time.Duration) []netip.AddrPort {
	return g.heardWithin(d, true)
}

// mutual returns the members heard within the lease; with both, only those
// whose heartbeats named this member.
func (g *Gossip) mutual(both bool) []netip.AddrPort { return g.heardWithin(g.Lease(), both) }

func (g *Gossip) heardWithin(d time.Duration, both bool) []netip.AddrPort {
	if g.hb <= 0 {
		return nil
	}
	now := time.Now()
	g.hbMu.Lock()
	defer g.hbMu.Unlock()
	var out []netip.AddrPort
	for a, h := range g.heard {
		at := h.at
		if both {
			at = h.mutualAt
		}
		if !at.IsZero() && now.Sub(at) <= d {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return out
}

// Heartbeats reports whether the member sends heartbeats.
func (g *Gossip) Heartbeats() bool { return g.hb > 0 }

func (g *Gossip) stopHeartbeats() { g.once.Do(func() { close(g.stop) }) }
