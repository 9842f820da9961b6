package health

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/agent"
	"github.com/sluicelb/sluice/internal/nettest"
)

// inNamespace makes every probe of c open its sockets in ns: the real probe
// runs inside ns.Do (the test process stays where it is).
func inNamespace(c *Checker, ns *nettest.NS) {
	c.newProbe = func(s Spec) probeFunc {
		p := newProbe(s)
		return func(ctx context.Context) error {
			var err error
			if e := ns.Do(func() error { err = p(ctx); return nil }); e != nil {
				return e
			}
			return err
		}
	}
}

// TestE2EVIPProbe runs the VIP probe end to end: a checker in an "lb"
// namespace probes, over a veth, a real agent in a "backend" namespace
// (VIP 198.18.0.10 on lo, GUE on 0.0.0.0:6080), which checks the service
// locally and answers. Interval 200 ms, timeout 150 ms, rise 2, fall 2.
func TestE2EVIPProbe(t *testing.T) {
	nettest.RequireRoot(t)
	lb, be := nettest.New(t, "hlb"), nettest.New(t, "hbe")
	nettest.Veth(t, lb, "eth0", "198.18.2.1/24", be, "eth0", "198.18.2.2/24")

	var a *agent.Agent
	if err := be.Do(func() (err error) {
		a, err = agent.New(agent.Config{VIPs: []netip.Addr{netip.MustParseAddr("198.18.0.10")},
			LBPrefixes: []netip.Prefix{netip.MustParsePrefix("198.18.2.1/32")}}) // the prober's address
		return err
	}); err != nil {
		t.Fatal(err)
	}
	agentCtx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(agentCtx) }()
	closeAgent := func() {
		stopAgent()
		if err := <-agentDone; err != nil {
			t.Errorf("agent Run: %v", err)
		}
		if err := a.Close(); err != nil {
			t.Errorf("agent Close: %v", err)
		}
	}
	agentClosed := false
	t.Cleanup(func() {
		if !agentClosed {
			closeAgent()
		}
	})

	gue := netip.MustParseAddrPort("198.18.2.2:6080")
	spec := func(kind Kind, target netip.AddrPort, vip, proto string) Spec {
		s := Spec{Kind: kind, Target: target, Interval: 200 * time.Millisecond,
			Timeout: 150 * time.Millisecond, Rise: 2, Fall: 2}
		if vip != "" {
			s.VIP, s.Proto = netip.MustParseAddrPort(vip), proto
		}
		return s
	}
	var rec recorder
	ck := NewChecker(rec.add)
	inNamespace(ck, lb)
	ck.Set("vip-tcp", spec(VIP, gue, "198.18.0.10:80", "tcp"))
	ck.Set("vip-udp", spec(VIP, gue, "198.18.0.10:7000", "udp"))
	ck.Set("vip-unconfigured", spec(VIP, gue, "198.18.0.99:80", "tcp"))
	ck.Set("host-tcp", spec(TCP, netip.MustParseAddrPort("198.18.2.2:80"), "", ""))
	runChecker(t, ck)

	wantErr := func(key string, want error) {
		t.Helper()
		if tr := waitState(t, ck, key, Down); !errors.Is(tr.Err, want) {
			t.Errorf("%s: down because %v, want %v", key, tr.Err, want)
		}
	}

	// Nothing listens yet.
	wantErr("vip-tcp", ErrVIPDown)
	wantErr("vip-udp", ErrVIPDown)
	wantErr("vip-unconfigured", ErrVIPNotConfigured)

	// A TCP listener on VIP:80 and a UDP socket bound to VIP:7000.
	var (
		vipL   net.Listener
		udpSrv *net.UDPConn
	)
	if err := be.Do(func() (err error) {
		if vipL, err = net.Listen("tcp", "198.18.0.10:80"); err != nil {
			return err
		}
		udpSrv, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(198, 18, 0, 10), Port: 7000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer vipL.Close()
	defer udpSrv.Close()
	waitState(t, ck, "vip-tcp", Up)
	waitState(t, ck, "vip-udp", Up)

	// The listener stops: Down.
	vipL.Close()
	wantErr("vip-tcp", ErrVIPDown)
	udpSrv.Close()
	wantErr("vip-udp", ErrVIPDown)

	// The service listens on the backend's own address only: a plain TCP
	// check passes, the VIP check does not.
	var hostL net.Listener
	if err := be.Do(func() (err error) { hostL, err = net.Listen("tcp", "198.18.2.2:80"); return err }); err != nil {
		t.Fatal(err)
	}
	defer hostL.Close()
	waitState(t, ck, "host-tcp", Up)
	time.Sleep(time.Second) // Rise runs and a cache lifetime, with room to spare
	if st, _ := ck.State("vip-tcp"); st != Down {
		t.Errorf("vip-tcp is %v with the service on the host address only, want down", st)
	}

	// Back on the VIP (wildcard this time): Up. Then the agent stops: the
	// probes go unanswered and the check comes out Down by timeout, while
	// the service itself still answers on the host address.
	hostL.Close()
	var anyL net.Listener
	if err := be.Do(func() (err error) { anyL, err = net.Listen("tcp", "0.0.0.0:80"); return err }); err != nil {
		t.Fatal(err)
	}
	defer anyL.Close()
	waitState(t, ck, "vip-tcp", Up)
	closeAgent()
	agentClosed = true
	c := a.Counters()
	wantErr("vip-tcp", ErrTimeout)
	if st, _ := ck.State("host-tcp"); st != Up {
		t.Errorf("host-tcp is %v, want up (the service still answers on the host address)", st)
	}

	if got := states(rec.get("vip-tcp")); !slices.Equal(got, []State{Down, Up, Down, Up, Down}) {
		t.Errorf("vip-tcp transitions %v", got)
	}
	if got := states(rec.get("vip-udp")); !slices.Equal(got, []State{Down, Up, Down}) {
		t.Errorf("vip-udp transitions %v", got)
	}
	// Every request is answered, but for the few that Close caught queued.
	p := c.Probes
	replies := p.Up + p.Down + p.NotConfigured + p.Overloaded + p.ReplyErrors
	if p.Up == 0 || p.Down == 0 || p.NotConfigured == 0 || p.Checks == 0 || p.Malformed != 0 ||
		replies > p.Requests || p.Requests-replies > 3 || p.Overloaded != 0 {
		t.Errorf("agent probe counters %+v", p)
	}
	if c.Dropped() != 0 || c.Delivered != 0 {
		t.Errorf("agent counters %+v: probes must be neither drops nor deliveries", c)
	}
}
