package lab

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The router's FRR configuration: one neighbour per LB node in the peer
// group, ECMP on both families, BFD only when asked for.
func TestFRRConfig(t *testing.T) {
	l := layout(Config{Prefix: "x-", LBs: 3}.withDefaults())
	conf := l.FRRConfig(FRROptions{BFD: true})
	for _, want := range []string{
		"router bgp 65000\n",
		" bgp router-id 198.18.30.1\n",
		" neighbor lbs remote-as 65001\n",
		" neighbor 198.18.30.11 peer-group lbs\n",
		" neighbor 198.18.30.13 peer-group lbs\n",
		" neighbor lbs bfd profile lbs\n",
		" peer 198.18.30.12 local-address 198.18.30.1 interface svc\n",
		" timers bgp 3 9\n",
		" bgp bestpath as-path multipath-relax\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("configuration lacks %q:\n%s", want, conf)
		}
	}
	for _, af := range []string{"ipv4", "ipv6"} {
		block := " address-family " + af + " unicast\n  neighbor lbs activate\n  maximum-paths 16\n exit-address-family\n"
		if !strings.Contains(conf, block) {
			t.Errorf("configuration lacks the %s block %q:\n%s", af, block, conf)
		}
	}
	if n := strings.Count(conf, "peer-group lbs\n"); n != 3 {
		t.Errorf("%d neighbours in the peer group, want 3", n)
	}
	noBFD := l.FRRConfig(FRROptions{HoldTime: 30})
	if strings.Contains(noBFD, "bfd") || !strings.Contains(noBFD, " timers bgp 10 30\n") {
		t.Errorf("without BFD, hold time 30:\n%s", noBFD)
	}
}

// docs/config.md shows the configuration the lab runs (three LB nodes,
// BFD): the documented one is the tested one.
func TestFRRConfigDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	l := layout(Config{LBs: 3}.withDefaults())
	conf := l.FRRConfig(FRROptions{BFD: true})
	if !strings.Contains(string(doc), "```\n"+conf+"```\n") {
		t.Errorf("docs/config.md does not show the lab's FRR configuration; it is:\n%s", conf)
	}
}

// Without FRR the error names what is missing and make deps.
func TestFRRMissing(t *testing.T) {
	err := frrMissing("/nonexistent", "/nonexistent/vtysh")
	if err == nil {
		t.Fatal("no error without the daemons")
	}
	for _, want := range []string{"/nonexistent/zebra", "/nonexistent/bgpd", "/nonexistent/bfdd", "/nonexistent/vtysh", "make deps"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

// StartFRR runs zebra, bfdd and bgpd as frr inside the router namespace,
// with everything in the lab's directory, and Down ends them. A start that
// fails leaves no daemon behind.
func TestStartFRR(t *testing.T) {
	requireLab(t)
	if err := FRRMissing(); err != nil {
		t.Skipf("%v", err)
	}
	l := upLab(t, Config{LBs: 2, VIPRouting: RouteNone})
	ctx := context.Background()
	if err := searchable(t.TempDir()); err == nil {
		t.Fatal("t.TempDir() (its parent is 0700) counts as reachable for frr")
	}
	tmp := func() string { // under /tmp, which frr can reach
		d, err := os.MkdirTemp("", "sluice-frr-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		return d
	}

	// Cancelled at once: the start fails and stops what it started.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.StartFRR(cancelled, FRROptions{Dir: tmp(), BFD: true}); err == nil {
		t.Fatal("StartFRR with a cancelled context succeeded")
	}
	if pids := pidsIn(filepath.Join(netnsDir, l.Router.Name)); len(pids) != 0 {
		t.Fatalf("after a failed start, processes %v still run in the router namespace", pids)
	}

	f, err := l.StartFRR(ctx, FRROptions{Dir: tmp(), BFD: true})
	if err != nil {
		t.Fatal(err)
	}
	conf, err := f.Command(ctx, "show", "running-config")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{" neighbor 198.18.30.12 peer-group lbs", " peer 198.18.30.11 local-address 198.18.30.1 interface svc", "maximum-paths 16"} {
		if !strings.Contains(conf, want) {
			t.Errorf("running configuration lacks %q:\n%s", want, conf)
		}
	}
	peers, err := f.BGPPeers(ctx)
	if err != nil || len(peers) != 2 {
		t.Fatalf("BGP peers %v, %v; want the 2 LB nodes", peers, err)
	}
	var router, root unix.Stat_t
	if err := unix.Stat(filepath.Join(netnsDir, l.Router.Name), &router); err != nil {
		t.Fatal(err)
	}
	// This thread's namespace, not /proc/self's (the main thread's): the
	// main thread may be the one a namespace was unshared on (createNS's
	// locked goroutine ran there, and the runtime keeps it, wedged).
	runtime.LockOSThread()
	err = unix.Stat("/proc/thread-self/ns/net", &root)
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	u, _ := user.Lookup("frr")
	var pids []int
	for _, d := range frrDaemons {
		b, err := os.ReadFile(filepath.Join(f.Dir, d+".pid"))
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		pids = append(pids, pid)
		var ns unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &ns); err != nil {
			t.Fatalf("%s (pid %d): %v", d, pid, err)
		}
		if ns.Ino != router.Ino || ns.Ino == root.Ino {
			t.Errorf("%s (pid %d) runs outside the router namespace (namespace inode %d, router %d, root %d)", d, pid, ns.Ino, router.Ino, root.Ino)
		}
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if !strings.Contains(string(status), "\nUid:\t"+u.Uid+"\t") {
			t.Errorf("%s (pid %d) does not run as frr (uid %s)", d, pid, u.Uid)
		}
		if _, err := os.Stat(filepath.Join(f.Dir, d+".vty")); err != nil {
			t.Errorf("%s: vty socket: %v", d, err)
		}
	}
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	for i, pid := range pids {
		if running(pid) {
			t.Errorf("%s (pid %d) still runs after Down", frrDaemons[i], pid)
		}
	}
}
