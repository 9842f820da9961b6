package main

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// The example systemd units start existing subcommands with flags those
// subcommands define (the agent's with the --lb-prefix it requires), and the
// LB node's reloads by SIGHUP.
func TestExampleUnits(t *testing.T) {
	for _, tc := range []struct{ file, sub string }{
		{"sluice-lb.service", "lb"},
		{"sluice-agent.service", "agent"},
	} {
		b, err := os.ReadFile("../../examples/" + tc.file)
		if err != nil {
			t.Fatal(err)
		}
		var exec []string
		for line := range strings.SplitSeq(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "ExecStart="); ok {
				exec = strings.Fields(rest)
			}
		}
		if len(exec) < 2 || !strings.HasSuffix(exec[0], "/sluice") || exec[1] != tc.sub {
			t.Fatalf("%s: ExecStart %q does not run sluice %s", tc.file, exec, tc.sub)
		}
		cmd, args, err := newRoot().Find(exec[1:])
		if err != nil || cmd.Name() != tc.sub {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if err := cmd.ParseFlags(args); err != nil {
			t.Errorf("%s: %v", tc.file, err)
		}
		if tc.sub == "agent" && !cmd.Flags().Changed("lb-prefix") {
			t.Errorf("%s: no --lb-prefix: the agent would refuse to start", tc.file)
		}
		if rest := cmd.Flags().Args(); len(rest) != 0 {
			t.Errorf("%s: stray arguments %q", tc.file, rest)
		}
		if s := string(b); (tc.sub == "lb") != strings.Contains(s, "\nExecReload=/bin/kill -HUP $MAINPID") {
			t.Errorf("%s: ExecReload (only the LB node handles SIGHUP)", tc.file)
		}
		if tc.sub == "lb" {
			checkLBUnitChecks(t, tc.file, string(b), exec)
		}
	}
}

// checkLBUnitChecks: the LB unit validates its configuration (lb --check,
// same binary and --config as ExecStart) before it starts and, first among
// the ExecReload lines, before the SIGHUP.
func checkLBUnitChecks(t *testing.T, file, unit string, start []string) {
	t.Helper()
	want := strings.Join(append([]string{start[0], "lb", "--check"}, start[2:]...), " ")
	var pre, reload []string
	for line := range strings.SplitSeq(unit, "\n") {
		if rest, ok := strings.CutPrefix(line, "ExecStartPre="); ok {
			pre = append(pre, rest)
		}
		if rest, ok := strings.CutPrefix(line, "ExecReload="); ok {
			reload = append(reload, rest)
		}
	}
	if !slices.Contains(pre, want) {
		t.Errorf("%s: ExecStartPre %q, want %q", file, pre, want)
	}
	if len(reload) != 2 || reload[0] != want || reload[1] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("%s: ExecReload %q, want %q then the SIGHUP", file, reload, want)
	}
	cmd, args, err := newRoot().Find(strings.Fields(want)[1:])
	if err == nil {
		err = cmd.ParseFlags(args)
	}
	if err != nil {
		t.Errorf("%s: %s: %v", file, want, err)
	}
}
