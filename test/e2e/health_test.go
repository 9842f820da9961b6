package e2e

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/scenario"
)

// waitLogRe waits until LB 1's output matches re at least n times.
func waitLogRe(t *testing.T, sc *scenario.Scenario, re string, n int) {
	t.Helper()
	r := regexp.MustCompile(re)
	deadline := time.Now().Add(5 * time.Second)
	for len(r.FindAllString(sc.LBs[0].Output(), -1)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("LB did not log %q:\n%s", re, sc.LBs[0].Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A backend whose service stops answering on the VIP fails its VIP probe
// (answered by its agent), leaves the Maglev table, and every request keeps
// succeeding on the others; when the service is back it passes again and
// new connections reach it.
func TestE2EControlHealthRemovesAndRestoresBackend(t *testing.T) {
	s := start(t, scenario.Options{IO: "afpacket"})
	ctx := context.Background()
	cfg := strings.Replace(s.Config(), "    port: 80\n    backends:\n",
		"    port: 80\n    health: {type: vip, interval: 200ms, timeout: 100ms, rise: 2, fall: 2}\n    backends:\n", 1)
	if err := s.ReloadLB(0, cfg); err != nil {
		t.Fatal(err)
	}
	waitLog(t, s, "reload applied")

	be3 := s.Lab.Backends[2]
	http3 := s.Servers[4] // per backend: HTTP server, then UDP echo
	if !strings.Contains(strings.Join(http3.Cmd.Args, " "), "http-serve --name be3") {
		t.Fatalf("server 4 is %v", http3.Cmd.Args)
	}
	http3.Stop()
	waitLogRe(t, s, `check="http4 `+regexp.QuoteMeta(be3.Addr4.String())+`" from=\w+ to=down`, 1)
	waitLogRe(t, s, `generation=3 `, 1) // 1: start, 2: reload, 3: be3 down

	names, err := s.Curl(ctx, s.Opts.VIP4, 60)
	if err != nil {
		t.Fatalf("requests failed with be3 down: %v", err)
	}
	if slices.Contains(names, "be3") {
		t.Fatalf("be3 served although its service is down: %v", names)
	}

	p, err := be3.Start(ctx, sluiceBin, "lab", "http-serve", "--name", "be3",
		"--listen", "198.18.0.10:80", "--listen", "[2001:db8::10]:80")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	waitLogRe(t, s, `check="http4 `+regexp.QuoteMeta(be3.Addr4.String())+`" from=down to=up`, 1)
	deadline := time.Now().Add(5 * time.Second)
	for {
		names, err := s.Curl(ctx, s.Opts.VIP4, 60)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(names, "be3") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("be3 back up but serves nothing: %v", names)
		}
	}
}
