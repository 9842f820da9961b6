package l2

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/nettest"
)

// The responder on a veth: a router namespace resolving VIPs routed
// on-link gets answers for the owned VIPs only (ARP and neighbour
// discovery), and gratuitous ARP / unsolicited advertisements replace the
// MAC of entries the router holds.
func TestResponderOnVeth(t *testing.T) {
	nettest.RequireRoot(t)
	nettest.RequireTools(t, "ping")
	lb, rt := nettest.New(t, "l2lb"), nettest.New(t, "l2rt")
	nettest.Veth(t, lb, "eth0", "198.18.30.11/24", rt, "r0", "198.18.30.1/24")
	lb.Run(t, "ip", "addr", "add", "2001:db8:30::11/64", "dev", "eth0", "nodad")
	rt.Run(t, "ip", "addr", "add", "2001:db8:30::1/64", "dev", "r0", "nodad")
	rt.Run(t, "ip", "route", "add", "198.18.0.0/24", "dev", "r0")
	rt.Run(t, "ip", "route", "add", "2001:db8::/64", "dev", "r0")
	vip4, vip6 := netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("2001:db8::10")
	other4, other6 := netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("2001:db8::11")

	var r *Responder
	if err := lb.Do(func() error {
		var err error
		r, err = Open("eth0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		r.Close()
	})
	r.SetKnown([]netip.Addr{vip4, vip6, other4, other6})
	r.SetOwned([]netip.Addr{vip4, vip6})
	if err := r.Join([]netip.Addr{vip4, vip6, other4, other6}); err != nil {
		t.Fatal(err)
	}
	mac := r.MAC().String()

	neigh := func(a netip.Addr) string {
		out, _ := rt.Command("ip", "neigh", "show", a.String(), "dev", "r0").CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	resolve := func(a netip.Addr) string {
		rt.Command("ping", "-c", "1", "-W", "1", a.String()).Run() // no echo reply: only the resolution counts
		return neigh(a)
	}
	for _, a := range []netip.Addr{vip4, vip6} {
		if got := resolve(a); !strings.Contains(got, "lladdr "+mac) {
			t.Errorf("%v: router's entry %q, want lladdr %s", a, got, mac)
		}
	}
	for _, a := range []netip.Addr{other4, other6} {
		if got := resolve(a); strings.Contains(got, "lladdr") {
			t.Errorf("%v (not owned): router's entry %q", a, got)
		}
	}
	c := r.Counters()
	if c.ARPAnswered == 0 || c.NSAnswered == 0 || c.IgnoredNotOwner == 0 {
		t.Errorf("counters %+v", c)
	}

	// Announcements replace what the router holds.
	fake := "02:00:00:00:00:99"
	for _, a := range []netip.Addr{vip4, vip6} {
		rt.Run(t, "ip", "neigh", "replace", a.String(), "lladdr", fake, "dev", "r0", "nud", "stale")
		if err := r.Announce(a); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for !strings.Contains(neigh(a), "lladdr "+mac) {
			if time.Now().After(deadline) {
				t.Fatalf("%v: after the announcement the router holds %q", a, neigh(a))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// An ownership that was not renewed lapses.
	r.SetOwnedUntil([]netip.Addr{vip4}, time.Now().Add(20*time.Millisecond))
	if !r.Owns(vip4) {
		t.Fatal("not owned within its time")
	}
	time.Sleep(30 * time.Millisecond)
	if r.Owns(vip4) {
		t.Fatal("owned after its time")
	}
	// A VIP let go is not answered any more.
	r.SetOwned(nil)
	rt.Run(t, "ip", "neigh", "flush", "dev", "r0")
	before := r.Counters()
	for _, a := range []netip.Addr{vip4, vip6} {
		if got := resolve(a); strings.Contains(got, "lladdr") {
			t.Errorf("%v after SetOwned(nil): router's entry %q", a, got)
		}
	}
	if after := r.Counters(); after.ARPAnswered != before.ARPAnswered || after.NSAnswered != before.NSAnswered {
		t.Errorf("answered after SetOwned(nil): %+v -> %+v", before, after)
	}
}
