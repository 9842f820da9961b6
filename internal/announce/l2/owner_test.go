package l2

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func members(n int) []netip.AddrPort {
	var ms []netip.AddrPort
	for i := range n {
		ms = append(ms, netip.MustParseAddrPort(fmt.Sprintf("198.18.30.%d:7946", 11+i)))
	}
	return ms
}

func TestDecideTable(t *testing.T) {
	ms := members(3)
	vip := netip.MustParseAddr("198.18.0.10")
	all := Decide(Input{VIP: vip, Self: ms[0], Configured: ms, Live: ms})
	owner := all.Owner
	other := ms[0]
	if other == owner {
		other = ms[1]
	}
	without := func(x netip.AddrPort) []netip.AddrPort {
		return slices.DeleteFunc(slices.Clone(ms), func(m netip.AddrPort) bool { return m == x })
	}
	tests := []struct {
		name      string
		self      netip.AddrPort
		live      []netip.AddrPort
		wantOwner netip.AddrPort // zero: any other than the one excluded
		live2     int
		quorum    bool
		mayClaim  bool
	}{
		{"all live, owner", owner, ms, owner, 3, true, true},
		{"all live, not owner", other, ms, owner, 3, true, false},
		{"owner alone (partitioned)", owner, []netip.AddrPort{owner}, owner, 1, false, false},
		{"not a member (drained, stopping)", owner, nil, netip.AddrPort{}, 0, false, false},
		{"unknown member in the view does not count", owner, []netip.AddrPort{owner, netip.MustParseAddrPort("198.18.30.99:7946")}, owner, 1, false, false},
		{"owner suspects both others (cut off)", owner, ms, owner, 3, false, false},
		{"owner suspects one other", owner, ms, owner, 3, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := Input{VIP: vip, Self: tc.self, Configured: ms, Live: tc.live}
			switch tc.name {
			case "owner suspects both others (cut off)":
				in.Suspected = without(owner)
			case "owner suspects one other":
				in.Suspected = without(owner)[:1]
			}
			d := Decide(in)
			if d.Live != tc.live2 || d.Quorum != tc.quorum || d.MayClaim() != tc.mayClaim || d.Need != 2 {
				t.Errorf("%+v: want live %d quorum %v may claim %v need 2", d, tc.live2, tc.quorum, tc.mayClaim)
			}
			if tc.wantOwner.IsValid() && d.Owner != tc.wantOwner {
				t.Errorf("owner %v, want %v", d.Owner, tc.wantOwner)
			}
		})
	}
	// The owner dies: one of the two survivors takes it, both agree, and
	// the new owner may claim (2 of 3).
	surv := without(owner)
	a := Decide(Input{VIP: vip, Self: surv[0], Configured: ms, Live: surv})
	b := Decide(Input{VIP: vip, Self: surv[1], Configured: ms, Live: surv})
	if a.Owner != b.Owner || a.Owner == owner || a.MayClaim() == b.MayClaim() || !a.Quorum {
		t.Errorf("after the owner left: %+v and %+v", a, b)
	}
	// Order of the views and configurations does not matter.
	rev := slices.Clone(ms)
	slices.Reverse(rev)
	if d := Decide(Input{VIP: vip, Self: ms[1], Configured: rev, Live: rev}); d.Owner != owner {
		t.Errorf("reversed order: owner %v, want %v", d.Owner, owner)
	}
	// Alone: the node owns every VIP while it runs.
	if d := Decide(Alone(vip, 0, true)); !d.MayClaim() {
		t.Errorf("alone, running: %+v", d)
	}
	if d := Decide(Alone(vip, 0, false)); d.MayClaim() {
		t.Errorf("alone, drained: %+v", d)
	}
	// Four configured: two live is not a majority.
	ms4 := members(4)
	if d := Decide(Input{VIP: vip, Self: ms4[0], Configured: ms4, Live: ms4[:2]}); d.Quorum || d.Need != 3 {
		t.Errorf("2 of 4: %+v", d)
	}
}

// Never two owners: over every split of five configured members into two
// sides that each see only themselves, at most one node may claim a VIP.
func TestNeverTwoOwners(t *testing.T) {
	ms := members(5)
	for mask := 0; mask < 1<<len(ms); mask++ {
		var side [2][]netip.AddrPort
		for i, m := range ms {
			side[mask>>i&1] = append(side[mask>>i&1], m)
		}
		for v := range 50 {
			vip := netip.AddrFrom4([4]byte{198, 18, 0, byte(v)})
			claims := 0
			for _, s := range side {
				for _, self := range s {
					if Decide(Input{VIP: vip, Self: self, Configured: ms, Live: s}).MayClaim() {
						claims++
					}
				}
			}
			if claims > 1 {
				t.Fatalf("split %v: %d nodes claim %v", side, claims, vip)
			}
		}
	}
}

// VIPs spread over the members, and a member leaving moves only its own.
func TestDecideSpreadAndStability(t *testing.T) {
	ms := members(4)
	count := map[netip.AddrPort]int{}
	moved := 0
	const n = 4000
	for v := range n {
		vip := netip.AddrFrom4([4]byte{198, 18, byte(v >> 8), byte(v)})
		d := Decide(Input{VIP: vip, Self: ms[0], Configured: ms, Live: ms})
		count[d.Owner]++
		d2 := Decide(Input{VIP: vip, Self: ms[0], Configured: ms, Live: ms[1:]})
		if d.Owner != ms[0] && d2.Owner != d.Owner {
			moved++
		}
	}
	for _, m := range ms {
		if c := count[m]; c < n/4*85/100 || c > n/4*115/100 {
			t.Errorf("member %v owns %d of %d VIPs", m, c, n)
		}
	}
	if moved != 0 {
		t.Errorf("%d VIPs of surviving owners moved when a member left", moved)
	}
}

func TestGate(t *testing.T) {
	ms := members(3)
	vip := netip.MustParseAddr("2001:db8::10")
	owner := Decide(Input{VIP: vip, Configured: ms, Live: ms}).Owner
	var succ netip.AddrPort // the owner once the first one is gone
	surv := slices.DeleteFunc(slices.Clone(ms), func(m netip.AddrPort) bool { return m == owner })
	succ = Decide(Input{VIP: vip, Configured: ms, Live: surv}).Owner
	tm := Timing{SyncWait: 2 * time.Second, Settle: 500 * time.Millisecond}
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	in := func(self netip.AddrPort, live []netip.AddrPort) Input {
		return Input{VIP: vip, Self: self, Configured: ms, Live: live}
	}

	t.Run("start with every member: owner answers at once", func(t *testing.T) {
		// All nodes started together: the owner without this node is
		// another live member, so it settles first.
		g := Gate{Timing: tm}
		if s := g.Step(at(0), in(owner, ms), true, false); s.Answer || s.Waiting != "settle" {
			t.Fatalf("%+v", s)
		}
		if s := g.Step(at(499), in(owner, ms), true, false); s.Answer {
			t.Fatalf("answered before settling: %+v", s)
		}
		if s := g.Step(at(500), in(owner, ms), true, false); !s.Answer || !s.Takeover {
			t.Fatalf("%+v", s)
		}
		if s := g.Step(at(510), in(owner, ms), true, false); !s.Answer || s.Takeover {
			t.Fatalf("second step: %+v", s)
		}
	})
	t.Run("owner killed: successor claims at once", func(t *testing.T) {
		g := Gate{Timing: tm}
		g.Step(at(0), in(succ, ms), true, false)
		s := g.Step(at(10), in(succ, surv), true, false)
		if !s.Answer || !s.Takeover || s.Unsynced {
			t.Fatalf("%+v", s)
		}
	})
	t.Run("sync before takeover, bounded", func(t *testing.T) {
		g := Gate{Timing: tm}
		g.Step(at(0), in(succ, ms), true, true)
		if s := g.Step(at(10), in(succ, surv), false, true); s.Answer || s.Waiting != "sync" {
			t.Fatalf("%+v", s)
		}
		if s := g.Step(at(300), in(succ, surv), true, true); !s.Answer || !s.Takeover || s.Unsynced {
			t.Fatalf("synced: %+v", s)
		}
		g2 := Gate{Timing: tm}
		g2.Step(at(0), in(succ, ms), true, true)
		g2.Step(at(10), in(succ, surv), false, true)
		if s := g2.Step(at(2009), in(succ, surv), false, true); s.Answer {
			t.Fatalf("claimed before the bound: %+v", s)
		}
		if s := g2.Step(at(2010), in(succ, surv), false, true); !s.Answer || !s.Takeover || !s.Unsynced {
			t.Fatalf("after the bound: %+v", s)
		}
	})
	t.Run("losing the majority stops at once", func(t *testing.T) {
		g := Gate{Timing: tm}
		g.Step(at(0), in(owner, ms), true, false)
		if s := g.Step(at(600), in(owner, ms), true, false); !s.Answer {
			t.Fatalf("%+v", s)
		}
		if s := g.Step(at(610), in(owner, []netip.AddrPort{owner}), true, false); s.Answer {
			t.Fatalf("answering without a majority: %+v", s)
		}
		if s := g.Step(at(620), in(owner, nil), true, false); s.Answer {
			t.Fatalf("answering while not a member: %+v", s)
		}
	})
	t.Run("cut-off owner settles when its majority returns", func(t *testing.T) {
		g := Gate{Timing: tm}
		g.Step(at(0), in(owner, ms), true, false)
		if s := g.Step(at(600), in(owner, ms), true, false); !s.Answer {
			t.Fatalf("%+v", s)
		}
		cut := in(owner, ms)
		cut.Suspected = surv // heard from neither
		if s := g.Step(at(700), cut, true, false); s.Answer {
			t.Fatalf("cut off: %+v", s)
		}
		if s := g.Step(at(5000), in(owner, ms), true, false); s.Answer || s.Waiting != "settle" {
			t.Fatalf("healed: answered at once: %+v", s)
		}
		if s := g.Step(at(5500), in(owner, ms), true, false); !s.Answer || !s.Takeover {
			t.Fatalf("healed, settled: %+v", s)
		}
	})
	t.Run("restarted owner takes it back after settling", func(t *testing.T) {
		gs := Gate{Timing: tm} // the successor, answering
		gs.Step(at(0), in(succ, ms), true, false)
		gs.Step(at(10), in(succ, surv), true, false)
		if !gs.Answering() {
			t.Fatal("successor not answering")
		}
		g := Gate{Timing: tm}                                           // the restarted node
		if s := g.Step(at(90), in(owner, nil), true, false); s.Answer { // not joined yet
			t.Fatalf("restarted, not joined: %+v", s)
		}
		if s := g.Step(at(100), in(owner, ms), true, false); s.Answer || s.Waiting != "settle" {
			t.Fatalf("restarted: %+v", s)
		}
		if s := gs.Step(at(120), in(succ, ms), true, false); s.Answer {
			t.Fatalf("successor still answering once the owner is back: %+v", s)
		}
		if s := g.Step(at(600), in(owner, ms), true, false); !s.Answer || !s.Takeover {
			t.Fatalf("restarted after settling: %+v", s)
		}
	})
}
