// Package l2 announces VIPs on a shared Ethernet segment without BGP (L2
// mode): each VIP address is owned by one live LB node, chosen by
// rendezvous hashing over the cluster's live members; the owner answers
// ARP requests and IPv6 neighbour solicitations for it, and on taking it
// over sends gratuitous ARP and unsolicited neighbour advertisements
// (override flag set) so that routers move their neighbour entry at once.
//
// The VIP is never configured on the node, so its kernel never answers for
// it: the Responder answers from a packet socket (AF_PACKET), building the
// frames itself (frames.go).
//
// One function decides ownership (Decide); the Gate adds the timing of a
// claim (sync before takeover, settling when the VIP moves away from a
// node that is still alive). The node server, its status and `sluice ctl`
// use them and nothing else.
package l2

import (
	"encoding/binary"
	"hash/fnv"
	"net/netip"
	"slices"
)

// Input is what a node knows when it decides who owns a VIP.
type Input struct {
	VIP  netip.Addr
	Seed uint64 // node.seed: every member uses the same
	// Self is this node's cluster address (node.cluster.bind); the zero
	// value for a node without a cluster.
	Self netip.AddrPort
	// Configured is every configured member (node.cluster.bind and
	// peers), this node included: the majority is counted over it.
	Configured []netip.AddrPort
	// Live is the node's current membership view (the cluster addresses
	// of the live members, itself included once joined); nil when the
	// node is not a member (its member stopped: drained, shutting down).
	Live []netip.AddrPort
	// Suspected are members of Live that the failure detector suspects
	// (a probe failed, not refuted yet): they may own VIPs, but do not
	// count for the majority. So a node cut off from the others stops
	// answering when it suspects them, a suspicion timeout before the
	// others declare it dead and take its VIPs over.
	Suspected []netip.AddrPort
}

// Decision is who owns a VIP in a node's view, and whether this node may
// claim it.
type Decision struct {
	// Owner is the live configured member with the highest rendezvous
	// weight for the VIP; invalid when no configured member is live.
	Owner netip.AddrPort
	// Live counts the configured members in the view, Trusted those of
	// them not suspected; Need is the majority of the configured members
	// (len/2 + 1).
	Live, Trusted, Need int
	Quorum              bool // Trusted >= Need
	Mine                bool // Owner is this node
}

// MayClaim reports whether this node may answer for the VIP: it is the
// owner in its view and it sees a majority of the configured members
// (suspected ones not counted). A node that sees only a minority never
// claims, so two sides of a partition never both answer (at most one side
// holds a majority).
func (d Decision) MayClaim() bool { return d.Mine && d.Quorum }

// Decide computes the owner of in.VIP over the live configured members by
// rendezvous (highest random weight) hashing: weight = mix(hash(member) ^
// hash(VIP, seed)). It is a pure function of the VIP, the seed and the set
// of live configured members: nodes with the same view agree, VIPs spread
// over the members, and a member leaving moves only the VIPs it owned.
// Members in the view that are not configured are ignored (they count for
// neither the owner nor the majority).
func Decide(in Input) Decision {
	conf := slices.Clone(in.Configured)
	if len(conf) == 0 {
		conf = []netip.AddrPort{in.Self}
	}
	slices.SortFunc(conf, func(a, b netip.AddrPort) int { return a.Compare(b) })
	conf = slices.Compact(conf)
	d := Decision{Need: len(conf)/2 + 1}
	vh := vipHash(in.VIP, in.Seed)
	var best uint64
	for _, m := range conf {
		if !slices.Contains(in.Live, m) {
			continue
		}
		d.Live++
		if !slices.Contains(in.Suspected, m) || m == in.Self {
			d.Trusted++
		}
		if w := weight(memberHash(m), vh); d.Live == 1 || w > best {
			d.Owner, best = m, w
		}
	}
	d.Quorum = d.Trusted >= d.Need
	d.Mine = d.Live > 0 && d.Owner == in.Self
	return d
}

// Alone returns the Input of a node without a cluster: it is the only
// configured member, live while running (live true) and not when drained
// or stopping.
func Alone(vip netip.Addr, seed uint64, live bool) Input {
	in := Input{VIP: vip, Seed: seed, Configured: []netip.AddrPort{{}}}
	if live {
		in.Live = []netip.AddrPort{{}}
	}
	return in
}

func memberHash(m netip.AddrPort) uint64 {
	h := fnv.New64a()
	a := m.Addr().As16()
	h.Write(a[:])
	h.Write(binary.BigEndian.AppendUint16(nil, m.Port()))
	return h.Sum64()
}

func vipHash(v netip.Addr, seed uint64) uint64 {
	h := fnv.New64a()
	h.Write(binary.BigEndian.AppendUint64(nil, seed^0x6c32766970)) // "l2vip"
	a := v.Unmap().As16()
	h.Write(a[:])
	return h.Sum64()
}

// weight is splitmix64's finaliser of the member and VIP hashes.
func weight(mh, vh uint64) uint64 {
	x := mh ^ vh*0x9e3779b97f4a7c15
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
