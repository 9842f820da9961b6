package nexthop

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/nettest"
)

// An LB namespace with a backend on-link and another behind a router.
func TestResolve(t *testing.T) {
	nettest.RequireRoot(t)
	lb, be, rt, far := nettest.New(t, "lb"), nettest.New(t, "be"), nettest.New(t, "rt"), nettest.New(t, "far")
	nettest.Veth(t, lb, "eth0", "198.18.30.1/24", be, "eth0", "198.18.30.11/24")
	nettest.Veth(t, lb, "eth1", "198.18.31.1/24", rt, "eth0", "198.18.31.254/24")
	nettest.Veth(t, rt, "eth1", "198.18.32.254/24", far, "eth0", "198.18.32.5/24")
	rt.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	lb.Run(t, "ip", "route", "add", "198.18.32.0/24", "via", "198.18.31.254")
	beMAC := strings.TrimSpace(be.Run(t, "cat", "/sys/class/net/eth0/address"))
	rtMAC := strings.TrimSpace(rt.Run(t, "cat", "/sys/class/net/eth0/address"))
	lbMAC1 := strings.TrimSpace(lb.Run(t, "cat", "/sys/class/net/eth1/address"))

	err := lb.Do(func() error {
		r, err := New()
		if err != nil {
			return err
		}
		defer r.Close()
		ctx := context.Background()
		h, err := r.Resolve(ctx, netip.MustParseAddr("198.18.30.11"))
		if err != nil {
			return err
		}
		if h.DstMAC.String() != beMAC || h.Ifname != "eth0" || h.Via != h.Dst || h.Src != netip.MustParseAddr("198.18.30.1") {
			t.Errorf("on-link hop %+v, want lladdr %s on eth0 from 198.18.30.1", h, beMAC)
		}
		h, err = r.Resolve(ctx, netip.MustParseAddr("198.18.32.5"))
		if err != nil {
			return err
		}
		if h.DstMAC.String() != rtMAC || h.Ifname != "eth1" || h.Via != netip.MustParseAddr("198.18.31.254") || h.SrcMAC.String() != lbMAC1 {
			t.Errorf("routed hop %+v, want via 198.18.31.254 lladdr %s", h, rtMAC)
		}
		// Unroutable and unanswered next hops are errors, not silence.
		r.Timeout = 300 * time.Millisecond
		if _, err := r.Resolve(ctx, netip.MustParseAddr("203.0.113.1")); !errors.Is(err, ErrUnresolved) {
			t.Errorf("no route: err %v", err)
		}
		if _, err := r.Resolve(ctx, netip.MustParseAddr("198.18.30.99")); !errors.Is(err, ErrUnresolved) || !strings.Contains(err.Error(), "no neighbour") {
			t.Errorf("silent neighbour: err %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestWatchSeesChanges(t *testing.T) {
	nettest.RequireRoot(t)
	lb, be := nettest.New(t, "lb"), nettest.New(t, "be")
	nettest.Veth(t, lb, "eth0", "198.18.30.1/24", be, "eth0", "198.18.30.11/24")
	calls := make(chan struct{}, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var r *Resolver
	if err := lb.Do(func() (err error) { r, err = New(); return err }); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ready := make(chan error, 1)
	// Watch from a goroutine outside the namespace: it must still watch it.
	go func() { ready <- r.Watch(ctx, time.Hour, func() { calls <- struct{}{} }) }()
	time.Sleep(200 * time.Millisecond) // subscribed
	lb.Run(t, "ip", "route", "add", "198.18.40.0/24", "via", "198.18.30.11")
	select {
	case <-calls:
	case err := <-ready:
		t.Fatalf("watch ended: %v", err)
	case <-time.After(3 * time.Second):
		t.Fatal("no change reported after a route was added")
	}
	cancel()
}
