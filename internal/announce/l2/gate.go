package l2

import (
	"net/netip"
	"slices"
	"time"
)

// Timing of a claim.
type Timing struct {
	// SyncWait bounds how long a new owner waits for its cluster member
	// to be synced (every shard of its chains pulled) before it claims a
	// VIP whose flows use the chains; after it, it claims anyway and the
	// Step says so (Unsynced).
	SyncWait time.Duration
	// Settle is how long a node waits before it takes a VIP from a member
	// that is still alive in its view (a member joined, or came back), or
	// takes back a VIP it owned before it lost its majority or its
	// membership (the others may have given it to another meanwhile): long
	// enough for the other node to see the same view and let the VIP go
	// first. A VIP whose owner left the view is taken at once.
	Settle time.Duration
}

// Default timing.
const (
	DefaultSyncWait = 2 * time.Second
	DefaultSettle   = 500 * time.Millisecond
)

// Gate is one VIP's claim state on one node. Its zero value (with Timing
// set) is a VIP this node does not answer for. Not safe for concurrent use.
type Gate struct {
	Timing Timing

	answering bool
	since     time.Time      // when this node first found itself the owner with a majority
	prev      netip.AddrPort // the VIP's last owner other than this node, as this node saw it
	known     bool           // prev has been set
	// cutOff: this node stopped answering for want of a majority (or of
	// membership) and has not seen the VIP's owner with a majority since;
	// the others may have given the VIP to another meanwhile, so it
	// settles before answering again.
	cutOff bool
}

// Step is the outcome of one Gate.Step.
type Step struct {
	Decision Decision
	// Answer: this node answers ARP / neighbour solicitations for the VIP
	// now. False means it stops at once.
	Answer bool
	// Takeover: it starts answering with this step (send gratuitous ARP /
	// unsolicited neighbour advertisements).
	Takeover bool
	// Unsynced: the takeover happened after Timing.SyncWait without the
	// cluster member synced.
	Unsynced bool
	// Waiting says why a node that may claim does not answer yet:
	// "settle" (the previous owner is still alive) or "sync".
	Waiting string
}

// Step decides, at now, whether this node answers for in.VIP. synced tells
// whether the node's cluster member has every shard of its chains synced;
// needSync whether the VIP's flows use the chains (its affinity keeps
// cluster state), so that a new owner claims only once synced (bounded by
// Timing.SyncWait). Losing the right to claim (another owner, no majority,
// not a member) stops the answers in the same step.
func (g *Gate) Step(now time.Time, in Input, synced, needSync bool) Step {
	d := Decide(in)
	st := Step{Decision: d}
	if !g.known && len(in.Live) > 0 {
		// The owner before this node's first view (the first step with
		// a view): the owner without it (a node that starts or restarts
		// takes nothing from a node that is still alive without
		// settling).
		others := slices.DeleteFunc(slices.Clone(in.Live), func(m netip.AddrPort) bool { return m == in.Self })
		in2 := in
		in2.Live = others
		if p := Decide(in2); p.Live > 0 {
			g.prev = p.Owner
		}
		g.known = true
	}
	if !d.MayClaim() {
		if g.answering {
			// Let go for want of a majority or of membership, or to
			// another owner: answer again only after settling.
			g.cutOff = true
		}
		g.answering, g.since = false, time.Time{}
		if d.Live > 0 && !d.Mine {
			g.prev = d.Owner
			if d.Quorum {
				g.cutOff = false // the VIP's owner is known again: prev covers it
			}
		}
		return st
	}
	if g.answering {
		st.Answer = true
		return st
	}
	if g.since.IsZero() {
		g.since = now
	}
	waited := now.Sub(g.since)
	prevAlive := g.prev.IsValid() && g.prev != in.Self && slices.Contains(in.Live, g.prev)
	if (prevAlive || g.cutOff) && waited < g.Timing.Settle {
		st.Waiting = "settle"
		return st
	}
	if needSync && !synced {
		if waited < g.Timing.SyncWait {
			st.Waiting = "sync"
			return st
		}
		st.Unsynced = true
	}
	g.answering, g.since, g.prev, g.cutOff = true, time.Time{}, in.Self, false
	st.Answer, st.Takeover = true, true
	return st
}

// Answering reports whether the VIP is answered by this node.
func (g *Gate) Answering() bool { return g.answering }
