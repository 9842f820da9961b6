package afxdp

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/nettest"
)

// expectTraffic sends n VIP frames and checks that l receives them all.
func expectTraffic(t *testing.T, tb *testbed, l *Link, n int) {
	t.Helper()
	if err := l.SetVIPs([]netip.Addr{vip4}); err != nil {
		t.Fatal(err)
	}
	tx := openPacket(t, tb.cl, tb.clIndex, 0)
	done := receiveAll(l, n, 5*time.Second, func(*link.Frame) {})
	for seq := range uint32(n) {
		tx.send(t, tb.clFrame(vip4, seq, 64))
	}
	if got := <-done; got != n {
		t.Errorf("link received %d of %d VIP frames", got, n)
	}
}

// expectOnlyOurs checks that lb0 has exactly l's program attached.
func expectOnlyOurs(t *testing.T, tb *testbed, l *Link) {
	t.Helper()
	id, err := l.ProgramID()
	if err != nil {
		t.Fatal(err)
	}
	x := tb.xdpAttached(t)
	if x == nil || x.ProgId != id || x.AttachMode == 4 { // 4: XDP_ATTACHED_MULTI
		t.Errorf("attached %+v, want only program %d", x, id)
	}
}

// TestStaleLegacyAttachment leaves a program attached through netlink (as a
// tool or a crashed legacy loader would) in native and in generic mode: New
// replaces it instead of stacking or failing.
func TestStaleLegacyAttachment(t *testing.T) {
	for _, legacy := range []struct {
		name  string
		flags int
	}{{"native", unix.XDP_FLAGS_DRV_MODE}, {"generic", unix.XDP_FLAGS_SKB_MODE}} {
		for _, mode := range []Mode{Auto, Generic} {
			t.Run(fmt.Sprintf("legacy-%s/%s", legacy.name, mode), func(t *testing.T) {
				tb := newTestbed(t)
				prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
					Type: ebpf.XDP, License: "GPL",
					Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpDrop), asm.Return()},
				})
				if err != nil {
					t.Fatal(err)
				}
				defer prog.Close()
				err = tb.lb.Do(func() error {
					ifc, err := netlink.LinkByName("lb0")
					if err != nil {
						return err
					}
					return netlink.LinkSetXdpFdWithFlags(ifc, prog.FD(), legacy.flags)
				})
				if err != nil {
					t.Fatal(err)
				}
				if tb.xdpAttached(t) == nil {
					t.Fatal("legacy program not attached")
				}
				l := tb.open(t, Config{Mode: mode, NumFrames: 256})
				expectOnlyOurs(t, tb, l)
				expectTraffic(t, tb, l, 20)
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				if x := tb.xdpAttached(t); x != nil {
					t.Errorf("program %d attached after Close", x.ProgId)
				}
			})
		}
	}
}

const crashChildEnv = "SLUICE_AFXDP_CRASH_CHILD"

// TestCrashChild is the child process of TestCrashRecovery: it attaches a
// link in the namespace named by the environment, reports its program id
// and waits to be killed. It does nothing in a normal test run.
func TestCrashChild(t *testing.T) {
	nsName := os.Getenv(crashChildEnv)
	if nsName == "" {
		t.Skip("helper process for TestCrashRecovery")
	}
	ns := &nettest.NS{Name: nsName}
	var l *Link
	if err := ns.Do(func() (err error) { l, err = New("lb0", Config{NumFrames: 256}); return err }); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	if err := l.SetVIPs([]netip.Addr{vip4}); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	id, _ := l.ProgramID()
	fmt.Println("ready", id, l.AttachMode())
	time.Sleep(30 * time.Second) // bounded: the parent kills it long before
	os.Exit(2)
}

// TestCrashRecovery kills (SIGKILL) a process that holds a link: its
// bpf_link dies with it, nothing stays attached, and a new link attaches
// cleanly.
func TestCrashRecovery(t *testing.T) {
	tb := newTestbed(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+tb.lb.Name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	defer func() {
		if !waited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if s := sc.Text(); strings.HasPrefix(s, "ready") || strings.HasPrefix(s, "error") {
				lines <- s
				return
			}
		}
		lines <- "eof"
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(20 * time.Second):
		t.Fatal("child did not report")
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "ready" {
		t.Fatalf("child: %q", line)
	}
	childProg, _ := strconv.ParseUint(f[1], 10, 32)
	if x := tb.xdpAttached(t); x == nil || uint64(x.ProgId) != childProg {
		t.Fatalf("child's program %d not attached: %+v", childProg, x)
	}
	t.Logf("child attached program %d in %s mode", childProg, f[2])

	// A live process's bpf_link cannot be taken over.
	if err := tb.lb.Do(func() error { _, err := New("lb0", Config{}); return err }); !errors.Is(err, ErrBusy) {
		t.Errorf("New while another process holds the interface: %v, want ErrBusy", err)
	} else {
		t.Logf("while the child lives: %v", err)
	}

	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	waited = true
	deadline := time.Now().Add(3 * time.Second)
	for tb.xdpAttached(t) != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if x := tb.xdpAttached(t); x != nil {
		t.Fatalf("program %d still attached after the child died", x.ProgId)
	}
	start := time.Now()
	l := tb.open(t, Config{NumFrames: 256})
	t.Logf("New after the crash took %v (the dead socket's queue is freed by deferred kernel work)", time.Since(start).Round(time.Millisecond))
	expectOnlyOurs(t, tb, l)
	expectTraffic(t, tb, l, 20)
}
