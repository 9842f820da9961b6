package cluster

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// A member counts another as mutual only while its heartbeats arrive and
// name this member; a one-way cut (its heartbeats arrive but do not name
// this member) and silence both drop it.
func TestHeartbeatMutual(t *testing.T) {
	self := netip.MustParseAddrPort("198.18.30.11:7946")
	a := netip.MustParseAddrPort("198.18.30.12:7946")
	b := netip.MustParseAddrPort("[2001:db8:30::13]:7946")
	g := &Gossip{self: self, hb: 20 * time.Millisecond, heard: map[netip.AddrPort]heardFrom{}}
	peer := func(from netip.AddrPort, self bool) []byte {
		p := &Gossip{self: from, hb: time.Millisecond, heard: map[netip.AddrPort]heardFrom{}}
		if self {
			p.heard[g.self] = heardFrom{at: time.Now()}
		}
		return p.heartbeat()
	}
	g.onHeartbeat(peer(a, true))
	g.onHeartbeat(peer(b, false)) // b does not hear this member
	if got := g.Mutual(); !slices.Equal(got, []netip.AddrPort{a}) {
		t.Fatalf("mutual %v, want [%v]", got, a)
	}
	if got := g.mutual(false); len(got) != 2 {
		t.Fatalf("heard %v, want both", got)
	}
	// This member's heartbeat names the members it hears.
	h := g.heartbeat()
	g2 := &Gossip{self: a, hb: time.Second, heard: map[netip.AddrPort]heardFrom{}}
	g2.onHeartbeat(h)
	if got := g2.Mutual(); !slices.Equal(got, []netip.AddrPort{self}) {
		t.Fatalf("a: mutual %v, want [%v]", got, self)
	}
	// Malformed messages are ignored.
	for _, m := range [][]byte{nil, {'H'}, {'H', 2}, append(peer(b, true), 0)} {
		g.onHeartbeat(m)
	}
	if got := g.Mutual(); !slices.Equal(got, []netip.AddrPort{a}) {
		t.Fatalf("after malformed messages: mutual %v", got)
	}
	time.Sleep(3*g.hb + 10*time.Millisecond)
	if got := g.Mutual(); len(got) != 0 {
		t.Fatalf("mutual %v after the lease", got)
	}
	if (&Gossip{}).Mutual() != nil {
		t.Error("a member without heartbeats reports mutual members")
	}
}
