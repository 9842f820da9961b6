package scenario

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/nettest"
)

// pathWith returns a directory holding links to the named programs (from
// the current PATH) and the scripts given, to be used as the whole PATH.
func pathWith(t *testing.T, progs []string, scripts map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range progs {
		src, err := exec.LookPath(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(src, filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func prefix() string { return fmt.Sprintf("sct%d-", os.Getpid()%100000) }

// checkNoLab fails the test if a namespace with the prefix remains (and
// removes it).
func checkNoLab(t *testing.T, prefix string) {
	t.Helper()
	if names, err := lab.Remove(prefix); len(names) > 0 || err != nil {
		t.Errorf("left behind: %v (%v)", names, err)
	}
}

// A tool that is missing stops Start before it builds anything, with an
// error naming the tools and make deps.
func TestStartMissingTool(t *testing.T) {
	nettest.RequireRoot(t)
	t.Setenv("PATH", pathWith(t, []string{"ip", "curl", "sh"}, nil))
	p := prefix()
	_, err := Start(context.Background(), Options{Binary: "/bin/true", Prefix: p, LBs: 1, Backends: 1, BGP: true})
	if err == nil || !strings.Contains(err.Error(), "bird, birdc not found in PATH: run make deps") {
		t.Errorf("Start without bird: %v, want the missing tools and make deps", err)
	}
	checkNoLab(t, p)
}

// A start that fails after the lab is up (BIRD exits at once) returns the
// error, without a panic, and removes the lab.
func TestStartFailureRemovesLab(t *testing.T) {
	nettest.RequireRoot(t)
	path := pathWith(t, []string{"ip", "curl", "sh"}, map[string]string{
		"bird":  "echo bird: cannot start >&2; exit 1",
		"birdc": "exit 1",
	})
	t.Setenv("PATH", path)
	p := prefix()
	t.Cleanup(func() { lab.Remove(p) })
	_, err := Start(context.Background(), Options{Binary: "/bin/true", Prefix: p, LBs: 1, Backends: 1, BGP: true})
	if err == nil || !strings.Contains(err.Error(), "bird exited") {
		t.Errorf("Start with a BIRD that exits: %v, want bird exited", err)
	}
	t.Logf("Start: %v", err)
	checkNoLab(t, p)
}
