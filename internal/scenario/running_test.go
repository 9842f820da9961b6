package scenario

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestWhat(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ip", "netns", "exec", "sl-lb1", "/usr/bin/sluice", "lb", "--config", "x"}, "sluice lb"},
		{[]string{"ip", "netns", "exec", "sl-be1", "/tmp/sluice", "lab", "http-serve", "--name", "be1"}, "sluice lab http-serve"},
		{[]string{"ip", "netns", "exec", "sl-router", "bird", "-f", "-c", "bird.conf"}, "bird"},
	} {
		if got := what(tc.args); got != tc.want {
			t.Errorf("what(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

// The state round-trips through its file, and the status names every
// process with its PID, liveness and log.
func TestStateStatus(t *testing.T) {
	dir := t.TempDir()
	st := State{Prefix: "sl-", Supervisor: os.Getpid(), Started: time.Unix(1700000000, 0).UTC(), Procs: []ProcInfo{
		{Namespace: "sl-no-such-ns", What: "sluice lb", PID: os.Getpid(), Log: "/run/sluice-lab/sl-/sl-lb1.sluice.1.log"},
	}}
	if err := WriteState(dir, st); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(dir + "/" + stateFile)
	if err != nil || !strings.Contains(string(b), `"namespace": "sl-no-such-ns"`) {
		t.Fatalf("state file: %v\n%s", err, b)
	}
	var out strings.Builder
	if err := st.WriteStatus(&out); err != nil {
		t.Fatal(err)
	}
	// This process runs, but not in that namespace: not the lab's process.
	for _, want := range []string{"(PID " + itoa(os.Getpid()) + ", running)", "sl-no-such-ns  sluice lb  " + itoa(os.Getpid()) + "  dead   /run/sluice-lab/sl-/sl-lb1.sluice.1.log"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in:\n%s", want, out.String())
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestPrepareRunDirRefusesPaths(t *testing.T) {
	for _, p := range []string{"", "../x", "a/b"} {
		if _, err := PrepareRunDir(p); err == nil {
			t.Errorf("PrepareRunDir(%q) accepted", p)
		}
	}
}
