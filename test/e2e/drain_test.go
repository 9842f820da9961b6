package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/scenario"
)

// `sluice ctl backend drain` stops new flows to a backend while its
// established connections continue; `undrain` returns it to service.
func TestE2EControlBackendDrain(t *testing.T) {
	s := start(t, scenario.Options{IO: "afpacket"})
	ctx := context.Background()
	vip := s.Opts.VIP4
	conns := openKeepAlive(t, s, vip, 30)
	onBE1 := 0
	for _, k := range conns {
		if k.backend == "be1" {
			onBE1++
		}
	}
	if onBE1 == 0 {
		t.Fatal("no connection reached be1: the test proves nothing")
	}
	lb := s.Lab.LBs[0]
	be1 := s.Lab.Backends[0].Addr4.String()
	if out, err := lb.Run(ctx, sluiceBin, "ctl", "backend", "drain", "http4", be1); err != nil {
		t.Fatalf("drain: %v\n%s", err, out)
	}
	out, err := lb.Run(ctx, sluiceBin, "ctl", "vip", "list")
	if err != nil || !lineHas(out, be1, "draining") {
		t.Fatalf("vip list after drain (%v):\n%s", err, out)
	}
	// Established connections, be1's included, keep their backend.
	for round := range 3 {
		for i, k := range conns {
			if b, err := k.get(); err != nil || b != k.backend {
				t.Fatalf("round %d, conn %d on %s after drain: got %q, %v", round, i, k.backend, b, err)
			}
		}
	}
	names, err := s.Curl(ctx, vip, 60)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(names, "be1") {
		t.Fatalf("a new connection reached the drained backend: %v", names)
	}
	t.Logf("%d connections on be1 kept working through the drain; 60 new ones avoided it", onBE1)

	if out, err := lb.Run(ctx, sluiceBin, "ctl", "backend", "undrain", "http4", be1); err != nil {
		t.Fatalf("undrain: %v\n%s", err, out)
	}
	names, err = s.Curl(ctx, vip, 60)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, "be1") {
		t.Fatalf("no new connection reached the undrained backend: %v", names)
	}
	for i, k := range conns {
		if b, err := k.get(); err != nil || b != k.backend {
			t.Fatalf("conn %d on %s after undrain: got %q, %v", i, k.backend, b, err)
		}
	}
}

// lineHas reports whether one line of out contains every word.
func lineHas(out string, words ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			return true
		}
	}
	return false
}
