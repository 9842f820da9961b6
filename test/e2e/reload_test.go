package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/scenario"
)

// keepAlive is one HTTP/1.1 connection from the client that stays open.
type keepAlive struct {
	c       net.Conn
	r       *bufio.Reader
	backend string
}

func (k *keepAlive) get() (string, error) {
	k.c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(k.c, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n"); err != nil {
		return "", err
	}
	for {
		line, err := k.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if line == "\r\n" {
			b, err := k.r.ReadString('\n')
			return strings.TrimSpace(b), err
		}
	}
}

// A configuration reload (SIGHUP) changes the backend set while TCP
// connections are open: connections to backends that stay keep working on
// the same backend, the removed backend gets no new connections, and a
// configuration that does not validate is rejected without disturbing
// anything.
func TestE2EControlReloadKeepsConnections(t *testing.T) {
	s := start(t, scenario.Options{IO: "afxdp"})
	vip := s.Opts.VIP4
	conns := openKeepAlive(t, s, vip, 30)
	count := map[string]int{}
	for _, k := range conns {
		count[k.backend]++
	}
	if count["be1"] == 0 || count["be2"] == 0 || count["be3"] == 0 {
		t.Fatalf("30 connections did not reach all backends: %v", count)
	}

	// 1. A broken configuration is rejected; everything keeps working.
	if err := s.ReloadLB(0, strings.Replace(s.Config(), "protocol: tcp", "protocol: tpc", 1)); err != nil {
		t.Fatal(err)
	}
	waitLog(t, s, "reload rejected")
	waitLog(t, s, `vips[0].protocol: \"tpc\" is not tcp or udp`) // the precise error, in the log
	for i, k := range conns {
		if b, err := k.get(); err != nil || b != k.backend {
			t.Fatalf("after a rejected reload, conn %d on %s: got %q, %v", i, k.backend, b, err)
		}
	}

	// 2. Remove be3 from the IPv4 HTTP service.
	cfg := s.Config()
	be3 := s.Lab.Backends[2].Addr4.String()
	removed := strings.Replace(cfg, fmt.Sprintf("      - address: %q\n", be3), "", 1)
	if removed == cfg {
		t.Fatal("be3 not found in the configuration")
	}
	if err := s.ReloadLB(0, removed); err != nil {
		t.Fatal(err)
	}
	waitLog(t, s, "reload applied")
	for i, k := range conns {
		if k.backend == "be3" {
			continue // its connections are lost: their backend left the service
		}
		if b, err := k.get(); err != nil || b != k.backend {
			t.Fatalf("after removing be3, conn %d on %s: got %q, %v", i, k.backend, b, err)
		}
	}
	names, err := s.Curl(t.Context(), vip, 60)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n == "be3" {
			t.Fatalf("a new connection reached the removed backend: %v", names)
		}
	}

	// 3. Add be3 back. Maglev gives it about a third of the slots of be1 and
	// be2, so without the flow table about a third of these connections
	// would move to be3 and break.
	fresh := openKeepAlive(t, s, vip, 40)
	for i, k := range fresh {
		if k.backend == "be3" {
			t.Fatalf("fresh conn %d reached the removed backend", i)
		}
	}
	if err := s.ReloadLB(0, cfg); err != nil {
		t.Fatal(err)
	}
	waitLogCount(t, s, "reload applied", 2)
	for i, k := range append(fresh, conns...) {
		if k.backend == "be3" {
			continue
		}
		if b, err := k.get(); err != nil || b != k.backend {
			t.Fatalf("after adding be3, conn %d on %s: got %q, %v", i, k.backend, b, err)
		}
	}
	names, err = s.Curl(t.Context(), vip, 60)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, "be3") {
		t.Fatalf("no new connection reached the re-added backend: %v", names)
	}
}

// openKeepAlive opens n connections from the client to the VIP and makes a
// first request on each.
func openKeepAlive(t *testing.T, s *scenario.Scenario, vip netip.Addr, n int) []*keepAlive {
	t.Helper()
	var conns []*keepAlive
	err := s.Lab.Client.Do(func() error {
		for range n {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(vip, scenario.HTTPPort).String(), 3*time.Second)
			if err != nil {
				return err
			}
			conns = append(conns, &keepAlive{c: c, r: bufio.NewReader(c)})
		}
		return nil
	})
	t.Cleanup(func() {
		for _, k := range conns {
			k.c.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range conns {
		if k.backend, err = k.get(); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
	}
	return conns
}

// waitLog waits until LB 1's output contains s.
func waitLog(t *testing.T, sc *scenario.Scenario, s string) { waitLogCount(t, sc, s, 1) }

// waitLogCount waits until LB 1's output contains s n times.
func waitLogCount(t *testing.T, sc *scenario.Scenario, s string, n int) {
	t.Helper()
	waitLogRe(t, sc, regexp.QuoteMeta(s), n)
}
