package bypass

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/config"
)

// Decide against the rule it implements, read literally, on random
// configurations: an address is bypassed exactly when each of its services
// has one backend in service and all have the same one, active with a
// weight above 0; the next hop is that backend.
func TestDecideModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pool := []string{"10.0.0.21", "10.0.0.22", "10.0.0.23"}
	states := []string{"", "", "", "draining", "filling"}
	parsed, bypassed := 0, 0
	for iter := range 1500 {
		var b strings.Builder
		b.WriteString(head)
		down := map[string]bool{}
		for a := range 1 + r.IntN(3) {
			addr := fmt.Sprintf("198.18.0.%d", 10+a)
			for k := range 1 + r.IntN(3) {
				name := fmt.Sprintf("s%d_%d", a, k)
				perm := r.Perm(len(pool))[:1+r.IntN(len(pool))]
				var bes []string
				for _, i := range perm {
					st := states[r.IntN(len(states))]
					w := 1
					if r.IntN(6) == 0 {
						w = 0
					}
					bes = append(bes, fmt.Sprintf("{address: %s, weight: %d%s}", pool[i], w, map[bool]string{true: ", state: " + st, false: ""}[st != ""]))
					if r.IntN(4) == 0 {
						down[name+" "+pool[i]] = true
					}
				}
				fmt.Fprintf(&b, "  - {name: %s, address: %s, protocol: tcp, port: %d, bypass: single-backend, second_chance: true, backends: [%s]}\n",
					name, addr, 80+k, strings.Join(bes, ", "))
			}
		}
		c, err := config.Parse([]byte(b.String()))
		if err != nil {
			continue // e.g. two changes in flight on a second-chance VIP
		}
		parsed++
		isDown := func(vip, be string) bool { return down[vip+" "+be] }
		got := map[netip.Addr]Decision{}
		for _, d := range Decide(c, isDown) {
			got[d.Addr] = d
		}
		// The model.
		want := map[netip.Addr]netip.Addr{} // address -> next hop; invalid: not bypassed
		seen := map[netip.Addr]bool{}
		for _, v := range c.VIPs {
			a := netip.MustParseAddr(v.Address)
			ok := !seen[a] || want[a].IsValid()
			seen[a] = true
			var in []config.Backend
			for _, be := range v.Backends {
				if !isDown(v.Name, be.Address) {
					in = append(in, be)
				}
			}
			var nh netip.Addr
			if len(in) == 1 && in[0].State == config.StateActive && *in[0].Weight > 0 {
				nh = netip.MustParseAddr(in[0].Address)
			}
			if !nh.IsValid() || want[a].IsValid() && want[a] != nh {
				ok = false
			}
			if ok {
				want[a] = nh
			} else {
				want[a] = netip.Addr{}
			}
		}
		if len(got) != len(seen) {
			t.Fatalf("iteration %d: %d decisions for %d addresses\n%s", iter, len(got), len(seen), b.String())
		}
		for a, nh := range want {
			d := got[a]
			if d.Bypassed != nh.IsValid() || d.Bypassed && d.NextHop != nh {
				t.Fatalf("iteration %d: %v: decided %+v, the rule says next hop %v\n%s\ndown %v", iter, a, d, nh, b.String(), down)
			}
			if d.Reason == "" {
				t.Fatalf("iteration %d: %v: no reason", iter, a)
			}
			if d.Bypassed {
				bypassed++
			}
		}
	}
	t.Logf("%d configurations, %d bypassed addresses", parsed, bypassed)
	if parsed < 300 || bypassed < 50 {
		t.Fatalf("the random configurations exercise too little: %d parsed, %d bypassed", parsed, bypassed)
	}
}
