package datapath_test

import (
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/firewall"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

func mustSet(t testing.TB, def firewall.Action, rules ...firewall.Rule) *firewall.Set {
	t.Helper()
	s, err := firewall.Compile(rules, def)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fwSpec is vip4 with the given rule list.
func fwSpec(set *firewall.Set) pipeline.Spec {
	s := service(vip4, backends4(3), nil)
	s.Firewall = set
	return pipeline.Spec{Services: []pipeline.ServiceSpec{s}}
}

var (
	blocked   = netip.MustParseAddrPort("203.0.113.7:40000")
	permitted = netip.MustParseAddrPort("198.18.128.9:40001")
)

func blockRule() firewall.Rule {
	return firewall.Rule{Name: "block", Action: firewall.Deny, Src: netip.MustParsePrefix("203.0.113.0/24")}
}

func fwHits(r *rig, rule string) uint64 {
	return r.counters().Firewall[pipeline.RuleKey{VIP: vip4.String(), Rule: rule}]
}

func TestFirewallDenyAllowDefault(t *testing.T) {
	for _, tc := range []struct {
		name         string
		set          *firewall.Set
		blockedGoes  bool
		allowedGoes  bool
		blockedRule  string
		allowedRule  string
		otherAllowed netip.AddrPort
	}{
		{"deny rule, default allow", mustSet(t, firewall.Allow, blockRule()), false, true, "block", "default", permitted},
		{"allow rule, default deny", mustSet(t, firewall.Deny,
			firewall.Rule{Name: "clients", Action: firewall.Allow, Src: netip.MustParsePrefix("198.18.128.0/17"), Proto: 6, DstPorts: firewall.PortRange{Lo: 80, Hi: 80}}),
			false, true, "default", "clients", permitted},
		{"no rule list", nil, true, true, "", "", permitted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 1024)
			r.apply(fwSpec(tc.set))
			out := r.send(tcpFrame(blocked, vip4, sim.SYN))
			if got := len(out) == 1; got != tc.blockedGoes {
				t.Fatalf("blocked client forwarded: %v, want %v", got, tc.blockedGoes)
			}
			out = r.send(tcpFrame(tc.otherAllowed, vip4, sim.SYN))
			if got := len(out) == 1; got != tc.allowedGoes {
				t.Fatalf("permitted client forwarded: %v, want %v", got, tc.allowedGoes)
			}
			c := r.counters()
			wantDrops := uint64(0)
			if !tc.blockedGoes {
				wantDrops = 1
			}
			if got := c.Drops[pipeline.ReasonFirewallDeny]; got != wantDrops {
				t.Fatalf("firewall_deny drops %d, want %d", got, wantDrops)
			}
			if tc.set == nil {
				if len(c.Firewall) != 0 {
					t.Fatalf("counts without a rule list: %v", c.Firewall)
				}
				return
			}
			if fwHits(r, tc.blockedRule) != 1 || fwHits(r, tc.allowedRule) != 1 {
				t.Fatalf("rule hits %v", c.Firewall)
			}
		})
	}
}

// The verdict is taken on a flow's first packet; later packets meet the
// memoised verdict in the flow entry and do not run the rules (the hit
// counters do not move), denied ones included.
func TestFirewallVerdictMemoised(t *testing.T) {
	r := newRig(t, 1024)
	r.apply(fwSpec(mustSet(t, firewall.Allow, blockRule())))
	frames := [][]byte{tcpFrame(blocked, vip4, sim.SYN), tcpFrame(permitted, vip4, sim.SYN)}
	if out := r.send(frames...); len(out) != 1 {
		t.Fatalf("first packets: %d forwarded, want 1", len(out))
	}
	for range 5 {
		if out := r.send(tcpFrame(blocked, vip4, sim.ACK), tcpFrame(permitted, vip4, sim.ACK)); len(out) != 1 || decode(t, out[0]).inner == nil {
			t.Fatalf("later packets: %d forwarded, want 1", len(out))
		}
	}
	c := r.counters()
	if c.Drops[pipeline.ReasonFirewallDeny] != 6 {
		t.Fatalf("firewall_deny drops %d, want 6", c.Drops[pipeline.ReasonFirewallDeny])
	}
	if fwHits(r, "block") != 1 || fwHits(r, "default") != 1 {
		t.Fatalf("rules evaluated again on hits: %v", c.Firewall)
	}
	if c.FlowHits != 10 || c.FlowMisses != 2 {
		t.Fatalf("flow hits %d misses %d, want 10 and 2", c.FlowHits, c.FlowMisses)
	}
}

// A new generation that changes the rules re-evaluates established flows:
// the denied flow is forwarded once the rule is gone, the permitted one is
// dropped once a rule denies it; counts of the earlier generation stay.
func TestFirewallReevaluatedAfterNewGeneration(t *testing.T) {
	r := newRig(t, 1024)
	r.apply(fwSpec(mustSet(t, firewall.Allow, blockRule())))
	if out := r.send(tcpFrame(blocked, vip4, sim.SYN), tcpFrame(permitted, vip4, sim.SYN)); len(out) != 1 {
		t.Fatalf("%d forwarded, want 1", len(out))
	}
	first := backendOf(t, r.send(tcpFrame(permitted, vip4, sim.ACK))[0])

	// The rule now denies the other client instead.
	r.apply(fwSpec(mustSet(t, firewall.Allow, firewall.Rule{Name: "block2", Action: firewall.Deny, Src: netip.PrefixFrom(permitted.Addr(), 32)})))
	out := r.send(tcpFrame(blocked, vip4, sim.ACK), tcpFrame(permitted, vip4, sim.ACK))
	if len(out) != 1 {
		t.Fatalf("after the change: %d forwarded, want 1", len(out))
	}
	if got := decode(t, out[0]).inner; netip.AddrFrom4([4]byte(got[12:16])) != blocked.Addr() {
		t.Fatalf("forwarded a packet from %v, want %v", netip.AddrFrom4([4]byte(got[12:16])), blocked.Addr())
	}
	// Memoised again in the new generation.
	out = r.send(tcpFrame(blocked, vip4, sim.ACK), tcpFrame(permitted, vip4, sim.ACK))
	if len(out) != 1 {
		t.Fatalf("next packets: %d forwarded, want 1", len(out))
	}
	if fwHits(r, "block") != 1 || fwHits(r, "block2") != 1 || fwHits(r, "default") != 2 {
		t.Fatalf("rule hits %v", r.counters().Firewall)
	}

	// Without any rule list, the flow denied last comes back on a backend:
	// rescheduled (its entry had given its backend up) to its Maglev owner.
	r.apply(fwSpec(nil))
	out = r.send(tcpFrame(permitted, vip4, sim.ACK))
	if len(out) != 1 {
		t.Fatal("not forwarded without rules")
	}
	if b := backendOf(t, out[0]); b != first { // the owner of its slot in an unchanged table
		t.Fatalf("rescheduled from %v to %v", first, b)
	}
}
