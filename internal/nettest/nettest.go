// Package nettest builds throwaway network namespaces and veth pairs for
// tests that need real interfaces. Everything it creates is removed through
// t.Cleanup, also when the test fails.
//
// Tests that build namespaces or start processes begin with RequireRoot:
// it skips them with -short (make test runs them once, without -short) and
// without root. New fails a test that reaches it with -short, so a test
// that forgot RequireRoot shows up in the -short run instead of building
// namespaces there. A tool the tests need that is missing fails the test
// as root, naming `make deps`.
//
// Names are unique per process (a prefix with the PID and a counter), so
// tests of several packages may run at the same time on one machine.
package nettest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/sluicelb/sluice/internal/netnsdir"
)

// RequireRoot skips the test with -short and without root; as root, it
// fails the test when iproute2 is missing. Call it first in every test
// that builds namespaces or starts processes, before anything else that
// needs either.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("builds network namespaces: skipped with -short")
	}
	if os.Geteuid() != 0 {
		tb.Skip("needs root (network namespaces)")
	}
	RequireTools(tb, "ip")
}

// RequireTools fails the test, in one line naming `make deps`, when one of
// the programs is not in PATH. Without root it skips instead (make deps
// needs root, and so do the tests that run these tools).
func RequireTools(tb testing.TB, tools ...string) {
	tb.Helper()
	if err := LookTools(tools...); err != nil {
		if os.Geteuid() != 0 {
			tb.Skip(err)
		}
		tb.Fatal(err)
	}
}

// LookTools returns an error naming the programs that are not in PATH and
// `make deps`, which installs them; nil when all are there.
func LookTools(tools ...string) error {
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%s not found in PATH: run make deps (as root; it runs scripts/deps.sh)", strings.Join(missing, ", "))
}

// errShort is the failure of a test that reaches New with -short.
const errShort = "nettest.New with -short: call nettest.RequireRoot at the start of the test (it skips tests that build namespaces with -short)"

var seq atomic.Uint32

// Unique returns a name of at most 15 bytes (an interface name's limit)
// that no other test of any process on the machine uses now.
func Unique(prefix string) string {
	if len(prefix) > 5 {
		prefix = prefix[:5]
	}
	return fmt.Sprintf("%s%d%c%d", prefix, os.Getpid()%100000, 'x', seq.Add(1))
}

// NS is a network namespace created for a test.
type NS struct {
	Name string
}

// New creates a namespace with loopback up; t.Cleanup deletes it. It
// fails the test with -short (see RequireRoot) and skips it without root.
func New(tb testing.TB, prefix string) *NS {
	tb.Helper()
	if testing.Short() {
		tb.Fatal(errShort)
	}
	RequireRoot(tb)
	ns := &NS{Name: Unique(prefix)}
	if err := netnsdir.Share(); err != nil {
		tb.Fatal(err)
	}
	Run(tb, "ip", "netns", "add", ns.Name)
	tb.Cleanup(func() { exec.Command("ip", "netns", "del", ns.Name).Run() })
	ns.Run(tb, "ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command and fails the test if it fails; it returns the output.
func Run(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Run runs a command inside the namespace (ip netns exec).
func (ns *NS) Run(tb testing.TB, args ...string) string {
	tb.Helper()
	return Run(tb, append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
}

// Command returns an unstarted command that runs inside the namespace. The
// caller starts it and must Wait for it (PID 1 does not reap orphans here).
func (ns *NS) Command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
}

// Do runs fn on an OS thread switched into the namespace, then restores the
// thread. Sockets, links and netlink handles fn opens belong to the
// namespace and stay there after Do returns.
func (ns *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns.Name)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return err
	}
	defer netns.Set(orig)
	return fn()
}

// Handle opens the namespace for APIs that take one (netlink.NewHandleAt).
func (ns *NS) Handle(tb testing.TB) netns.NsHandle {
	tb.Helper()
	h, err := netns.GetFromName(ns.Name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	return h
}

// Veth connects a and b with a veth pair named aIf (in a) and bIf (in b),
// one RX and one TX queue each, both up, with the given addresses (CIDR
// notation, may be empty) and offloads off (tx checksum, TSO, GSO, GRO), as
// the lab configures the interfaces Sluice captures on.
func Veth(tb testing.TB, a *NS, aIf, aAddr string, b *NS, bIf, bAddr string) {
	tb.Helper()
	tmpA, tmpB := Unique("va"), Unique("vb")
	Run(tb, "ip", "link", "add", tmpA, "numrxqueues", "1", "numtxqueues", "1",
		"type", "veth", "peer", "name", tmpB, "numrxqueues", "1", "numtxqueues", "1")
	Run(tb, "ip", "link", "set", tmpA, "netns", a.Name, "name", aIf)
	Run(tb, "ip", "link", "set", tmpB, "netns", b.Name, "name", bIf)
	for _, side := range []struct {
		ns   *NS
		ifc  string
		addr string
	}{{a, aIf, aAddr}, {b, bIf, bAddr}} {
		if side.addr != "" {
			args := []string{"ip", "addr", "add", side.addr, "dev", side.ifc}
			if strings.Contains(side.addr, ":") {
				args = append(args, "nodad")
			}
			side.ns.Run(tb, args...)
		}
		side.ns.Run(tb, "ip", "link", "set", side.ifc, "up")
		if _, err := exec.LookPath("ethtool"); err == nil {
			side.ns.Run(tb, "ethtool", "-K", side.ifc, "tx", "off", "tso", "off", "gso", "off", "gro", "off")
		}
	}
}
