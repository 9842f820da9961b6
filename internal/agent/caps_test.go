package agent

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/nettest"
)

const capHelperEnv = "SLUICE_AGENT_CAP_HELPER"

// TestNonRootCapNetAdmin runs New, one delivery and Close in a process with
// uid/gid 65534 whose only capability is CAP_NET_ADMIN (setpriv, ambient
// capability), to prove the agent needs nothing more. /dev/net/tun is 0600
// root on some hosts, so the child sees a private copy of the node with
// mode 0666 (bind-mounted in its own mount namespace), as a distribution
// with the usual 0666 node would give it.
func TestNonRootCapNetAdmin(t *testing.T) {
	nettest.RequireRoot(t)
	for _, tool := range []string{"setpriv", "unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	dir, err := os.MkdirTemp("", "sluice-agent-caps")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "agent.test")
	if err := copyFile(os.Args[0], bin, 0o755); err != nil {
		t.Fatal(err)
	}
	tun := filepath.Join(dir, "tun")
	if err := unix.Mknod(tun, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 200))); err != nil {
		t.Skipf("mknod /dev/net/tun copy: %v", err)
	}
	if err := os.Chmod(tun, 0o666); err != nil {
		t.Fatal(err)
	}

	ns := nettest.New(t, "cap")
	ns.Run(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$1" /dev/net/tun && exec ip netns exec "$2" setpriv --reuid=65534 --regid=65534 --clear-groups `+
			`--inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin --bounding-set=-all,+net_admin `+
			`"$3" -test.run='^TestCapHelper$' -test.v -test.count=1`,
		"sh", tun, ns.Name, bin)
	cmd.Env = append(os.Environ(), capHelperEnv+"=1")
	out, err := cmd.CombinedOutput() // waits: the child is reaped
	t.Logf("helper:\n%s", out)
	if err != nil {
		t.Fatalf("helper failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestCapHelper") {
		t.Fatal("helper did not run")
	}
	checkClean(t, ns, "sluicecap")
}

// TestCapHelper is the child of TestNonRootCapNetAdmin; it skips otherwise.
func TestCapHelper(t *testing.T) {
	if os.Getenv(capHelperEnv) != "1" {
		t.Skip("helper process for TestNonRootCapNetAdmin")
	}
	if os.Geteuid() == 0 {
		t.Fatal("running as root")
	}
	if eff := capEff(t); eff != 1<<unix.CAP_NET_ADMIN {
		t.Fatalf("effective capabilities %#x, want only CAP_NET_ADMIN", eff)
	}
	a, err := New(Config{
		Listen:     netip.MustParseAddrPort("127.0.0.1:0"),
		TUN:        "sluicecap",
		VIPs:       []netip.Addr{vip4, vip6},
		LBPrefixes: lo4,
		Logger:     testLogger(t),
	})
	if err != nil {
		t.Fatalf("New without root: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	c, err := net.Dial("udp", a.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(gue(4, nil, syn(client4, netip.AddrPortFrom(vip4, 80), 1))); err != nil {
		t.Fatal(err)
	}
	waitCounters(t, a, "delivered without root", func(c *Counters) bool { return c.Delivered == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("Close without root: %v", err)
	}
}

// capEff returns the effective capability set of this process.
func capEff(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return 0
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
