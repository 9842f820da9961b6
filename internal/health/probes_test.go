package health

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Checks against real servers on the loopback interface. Timing: interval
// 50 ms, timeout 40 ms, rise 2, fall 2.

func fast(kind Kind, target netip.AddrPort) Spec {
	return Spec{Kind: kind, Target: target, Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond,
		Rise: 2, Fall: 2}
}

// tcpServer listens on addr (port 0: any) and accepts and closes
// connections until closed.
func tcpServer(t *testing.T, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	panic(a)
}

func states(trs []Transition) []State {
	var s []State
	for _, tr := range trs {
		s = append(s, tr.To)
	}
	return s
}

func TestTCPCheck(t *testing.T) {
	l := tcpServer(t, "127.0.0.1:0")
	target := addrPort(l.Addr())
	var rec recorder
	ck := NewChecker(rec.add)
	ck.Set("tcp", fast(TCP, target))
	runChecker(t, ck)
	waitState(t, ck, "tcp", Up)

	l.Close()
	tr := waitState(t, ck, "tcp", Down)
	if !errors.Is(tr.Err, syscall.ECONNREFUSED) {
		t.Errorf("down because %v, want connection refused", tr.Err)
	}

	tcpServer(t, target.String()) // the same port again
	waitState(t, ck, "tcp", Up)
	if got := states(rec.get("tcp")); !slices.Equal(got, []State{Up, Down, Up}) {
		t.Errorf("transitions %v", got)
	}
}

func TestHTTPCheck(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	var host atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host.Store(r.Host + " " + r.URL.Path)
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	target := addrPort(srv.Listener.Addr())
	var rec recorder
	ck := NewChecker(rec.add)
	s := fast(HTTP, target)
	s.Path, s.Host = "/healthz", "svc.example"
	ck.Set("http", s)
	runChecker(t, ck)
	waitState(t, ck, "http", Up)
	if got := host.Load(); got != "svc.example /healthz" {
		t.Errorf("request for %q, want Host svc.example and path /healthz", got)
	}

	status.Store(http.StatusServiceUnavailable) // a wrong status is a failure
	tr := waitState(t, ck, "http", Down)
	if !errors.Is(tr.Err, ErrStatus) {
		t.Errorf("down because %v, want ErrStatus", tr.Err)
	}
	status.Store(http.StatusOK)
	waitState(t, ck, "http", Up)

	srv.Close()
	waitState(t, ck, "http", Down)
	if got := states(rec.get("http")); !slices.Equal(got, []State{Up, Down, Up, Down}) {
		t.Errorf("transitions %v", got)
	}

	// A redirect is not followed: its status is what counts.
	redir := httptest.NewServer(http.RedirectHandler("/elsewhere", http.StatusFound))
	defer redir.Close()
	p := newProbe(Spec{Kind: HTTP, Target: addrPort(redir.Listener.Addr()), ExpectStatus: 302}.withDefaults())
	if err := p(context.Background()); err != nil {
		t.Errorf("302 expected and answered: %v", err)
	}
}

func TestHTTPSCheck(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failed handshakes are expected
	srv.StartTLS()
	defer srv.Close()
	target := addrPort(srv.Listener.Addr())
	ck := NewChecker(nil)
	slow := func(kind Kind) Spec { // TLS handshakes are slow under the race detector
		s := fast(kind, target)
		s.Interval, s.Timeout = 1500*time.Millisecond, 1400*time.Millisecond
		return s
	}
	insecure := slow(HTTPS)
	insecure.InsecureSkipVerify = true
	ck.Set("insecure", insecure)
	ck.Set("verified", slow(HTTPS)) // the test certificate chains to no system root
	ck.Set("plain", slow(HTTP))     // HTTP to a TLS port: 400
	runChecker(t, ck)
	waitState(t, ck, "insecure", Up)
	if tr := waitState(t, ck, "verified", Down); !bytes.Contains([]byte(tr.Err.Error()), []byte("certificate")) {
		t.Errorf("verified: down because %v, want a certificate error", tr.Err)
	}
	if tr := waitState(t, ck, "plain", Down); !errors.Is(tr.Err, ErrStatus) {
		t.Errorf("plain: down because %v", tr.Err)
	}
}

// udpServer answers each datagram with reply+request until closed.
func udpServer(t *testing.T, addr string, reply []byte) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if reply != nil {
				c.WriteToUDPAddrPort(append(append([]byte(nil), reply...), buf[:n]...), from)
			}
		}
	}()
	return c
}

func TestUDPCheck(t *testing.T) {
	srv := udpServer(t, "127.0.0.1:0", []byte("pong "))
	target := addrPort(srv.LocalAddr())
	var rec recorder
	ck := NewChecker(rec.add)
	s := fast(UDP, target)
	s.Send, s.Expect = []byte("ping"), []byte("pong ping")
	ck.Set("udp", s)
	runChecker(t, ck)
	waitState(t, ck, "udp", Up)

	srv.Close() // ICMP port unreachable: refused at once
	tr := waitState(t, ck, "udp", Down)
	if !errors.Is(tr.Err, syscall.ECONNREFUSED) {
		t.Errorf("down because %v, want connection refused", tr.Err)
	}
	srv = udpServer(t, target.String(), []byte("pong "))
	waitState(t, ck, "udp", Up)

	srv.Close()
	udpServer(t, target.String(), []byte("nope ")) // wrong reply
	tr = waitState(t, ck, "udp", Down)
	if !errors.Is(tr.Err, ErrReply) {
		t.Errorf("down because %v, want ErrReply", tr.Err)
	}
	if got := states(rec.get("udp")); !slices.Equal(got, []State{Up, Down, Up, Down}) {
		t.Errorf("transitions %v", got)
	}
}

// TestTimeoutBounded: a server that accepts but never answers fails the
// run with ErrTimeout, within the timeout (plus scheduling slack).
func TestTimeoutBounded(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	mute := udpServer(t, "127.0.0.1:0", nil) // reads, never replies

	const timeout = 150 * time.Millisecond
	for _, s := range []Spec{
		{Kind: HTTP, Target: addrPort(slow.Listener.Addr())},
		{Kind: UDP, Target: addrPort(mute.LocalAddr()), Send: []byte("ping")},
		// The VIP probe to a UDP socket that is not an agent: no answer.
		{Kind: VIP, Target: addrPort(mute.LocalAddr()), VIP: vip, Proto: "tcp"},
	} {
		s.Interval, s.Timeout = time.Second, timeout
		p := newProbe(s.withDefaults())
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		start := time.Now()
		err := p(ctx)
		took := time.Since(start)
		cancel()
		if !errors.Is(err, ErrTimeout) {
			t.Errorf("%s: %v, want ErrTimeout", s.Kind, err)
		}
		if took < timeout-10*time.Millisecond || took > timeout+100*time.Millisecond {
			t.Errorf("%s: failed after %v, want about %v", s.Kind, took, timeout)
		}
	}

	// Through the Checker: the transition carries ErrTimeout.
	ck := NewChecker(nil)
	s := fast(HTTP, addrPort(slow.Listener.Addr()))
	s.Fall = 1
	ck.Set("slow", s)
	runChecker(t, ck)
	if tr := waitState(t, ck, "slow", Down); !errors.Is(tr.Err, ErrTimeout) {
		t.Errorf("slow: down because %v", tr.Err)
	}
}
