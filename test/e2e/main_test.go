// Package e2e holds the end-to-end tests: the real sluice binary, in the
// network-namespace lab, with real clients (curl, sockets) and real servers.
// They need root and skip without it. Each test uses its own lab prefix, so
// they do not collide with each other or with a lab left running by hand.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/scenario"
)

var sluiceBin string

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if os.Geteuid() != 0 || testing.Short() {
			return m.Run() // every test skips
		}
		dir, err := os.MkdirTemp("", "sluice-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		sluiceBin = filepath.Join(dir, "sluice")
		out, err := exec.Command("go", "build", "-o", sluiceBin, "../../cmd/sluice").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building sluice: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// ioModes are the LB packet I/O modes every data-path test runs with.
var ioModes = []string{"afpacket", "afxdp"}

var prefixSeq int

// start runs a scenario for the test and tears it down at the end; on
// failure it logs the processes' output.
func start(t *testing.T, o scenario.Options) *scenario.Scenario {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if testing.Short() {
		// make test runs the suite twice, the second time -short -race:
		// the e2e tests run real processes, so once is enough.
		t.Skip("end-to-end test: skipped with -short")
	}
	// As root a missing tool fails the test (make test installs them
	// first), in one line naming make deps.
	if err := lab.LookTools(o.Tools()...); err != nil {
		t.Fatal(err)
	}
	prefixSeq++
	o.Binary = sluiceBin
	if d := os.Getenv("SLUICE_E2E_LOGDIR"); d != "" && o.LogDir == "" {
		// Keep every process's log (one file per process) for debugging.
		o.LogDir = filepath.Join(d, t.Name())
		os.MkdirAll(o.LogDir, 0o755)
	}
	if o.Prefix == "" {
		o.Prefix = fmt.Sprintf("e2e%d-%d-", os.Getpid()%10000, prefixSeq)
	}
	// Registered before anything can fail, so it runs last, also after a
	// panic: whatever still has the test's prefix goes.
	t.Cleanup(func() {
		if names, err := lab.Remove(o.Prefix); len(names) > 0 || err != nil {
			t.Errorf("lab %s: left behind %v (removed now): %v", o.Prefix, names, err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	s, err := scenario.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i, out := range s.StopLBs() {
				t.Logf("lb%d output (counters at exit):\n%s", i+1, out)
			}
			for i, p := range s.Agents {
				p.Stop()
				t.Logf("agent be%d output (counters at exit):\n%s", i+1, p.Output())
			}
			if p := s.ClientAgent; p != nil {
				p.Stop()
				t.Logf("client fastpath agent output:\n%s", p.Output())
			}
		}
		s.Stop()
	})
	if o.NoWaitReady {
		return s
	}
	if err := s.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return s
}

// lbReport stops the LB nodes and returns what the first printed at exit.
func lbReport(s *scenario.Scenario) string {
	outs := s.StopLBs()
	return strings.Join(outs, "\n")
}
