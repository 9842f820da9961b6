package main

import (
	"os"
	"path/filepath"
	"testing"
)

// A capture the node refuses leaves the file named by -w as it was.
func TestCtlCaptureRefusedKeepsFile(t *testing.T) {
	ts, _ := ctlServer(t, "") // a node that cannot capture
	f := filepath.Join(t.TempDir(), "old.pcapng")
	if err := os.WriteFile(f, []byte("an earlier capture"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCtl(t, ts, "capture", "-w", f); err == nil {
		t.Fatal("capture on a node that cannot: no error")
	}
	if b, err := os.ReadFile(f); err != nil || string(b) != "an earlier capture" {
		t.Errorf("the file now holds %q (%v)", b, err)
	}
	// Nor is a file created.
	nf := filepath.Join(t.TempDir(), "new.pcapng")
	runCtl(t, ts, "capture", "-w", nf)
	if _, err := os.Stat(nf); !os.IsNotExist(err) {
		t.Errorf("a refused capture created %s (%v)", nf, err)
	}
}
