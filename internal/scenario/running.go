package scenario

// A kept lab: `sluice lab up --run` starts a scenario and keeps it until a
// signal, writing each process's log and a state file to RunDir, which
// `sluice lab status` reads from another process.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/lab"
)

// RunRoot holds one directory per kept lab, named by its prefix.
const RunRoot = "/run/sluice-lab"

// stateFile is the kept lab's state in its RunDir.
const stateFile = "state.json"

// RunDir is the directory of the kept lab with this namespace prefix: its
// processes' logs and its state file.
func RunDir(prefix string) string { return filepath.Join(RunRoot, prefix) }

// ProcInfo is one process of a running scenario.
type ProcInfo struct {
	Namespace string `json:"namespace"`
	What      string `json:"what"` // e.g. "sluice lb", "sluice lab http-serve", "bird"
	PID       int    `json:"pid"`
	Log       string `json:"log,omitempty"`
}

// State is what a kept lab writes for `sluice lab status`.
type State struct {
	Prefix     string     `json:"prefix"`
	Supervisor int        `json:"supervisor"` // the PID of `sluice lab up --run`
	Started    time.Time  `json:"started"`
	Procs      []ProcInfo `json:"processes"`
}

// Procs lists the scenario's processes: LB nodes, agents, servers, BIRD.
func (s *Scenario) Procs() []ProcInfo {
	var ps []*lab.Process
	ps = append(ps, s.LBs...)
	ps = append(ps, s.Agents...)
	ps = append(ps, s.Servers...)
	if s.BIRD != nil {
		ps = append(ps, s.BIRD.Proc)
	}
	out := make([]ProcInfo, 0, len(ps))
	for _, p := range ps {
		out = append(out, ProcInfo{Namespace: p.Node.Name, What: what(p.Cmd.Args), PID: p.Pid(), Log: p.LogPath})
	}
	return out
}

// what names a process from its command line (`ip netns exec NS PROG
// ARGS...`): the program, and the subcommand when it is sluice.
func what(args []string) string {
	if len(args) < 5 {
		return strings.Join(args, " ")
	}
	prog, rest := filepath.Base(args[4]), args[5:]
	if prog != "bird" && len(rest) > 0 {
		prog += " " + rest[0]
		if rest[0] == "lab" && len(rest) > 1 {
			prog += " " + rest[1]
		}
	}
	return prog
}

// WriteState writes st to dir's state file (atomically).
func WriteState(dir string, st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, stateFile))
}

// ReadState reads the state of the kept lab with this prefix; the error
// matches fs.ErrNotExist when none runs (or ran without being removed).
func ReadState(prefix string) (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(RunDir(prefix), stateFile))
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}

// RemoveState removes the kept lab's state file (its logs stay).
func RemoveState(prefix string) error {
	err := os.Remove(filepath.Join(RunDir(prefix), stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// PrepareRunDir empties (or creates) the kept lab's directory and returns
// it, for Options.LogDir.
func PrepareRunDir(prefix string) (string, error) {
	if prefix == "" || strings.ContainsAny(prefix, "/.") {
		return "", fmt.Errorf("scenario: prefix %q cannot name a directory", prefix)
	}
	dir := RunDir(prefix)
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	return dir, os.MkdirAll(dir, 0o755)
}

// Alive reports whether pid runs (not a zombie) in the named network
// namespace: a PID reused by another program elsewhere is not alive.
func Alive(pid int, namespace string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) == 0 || f[0] == "Z" || f[0] == "X" {
		return false
	}
	var a, n unix.Stat_t
	if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &a) != nil || unix.Stat(filepath.Join("/run/netns", namespace), &n) != nil {
		return false
	}
	return a.Dev == n.Dev && a.Ino == n.Ino
}

// WriteStatus writes the kept lab's processes, one line each: namespace,
// what runs, PID, alive or not, log file.
func (st State) WriteStatus(w io.Writer) error {
	sup := "exited"
	if processRuns(st.Supervisor) {
		sup = "running"
	}
	fmt.Fprintf(w, "lab %s kept by sluice lab up --run (PID %d, %s) since %s; logs in %s\n",
		st.Prefix, st.Supervisor, sup, st.Started.Format(time.RFC3339), RunDir(st.Prefix))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tPROCESS\tPID\tSTATE\tLOG")
	for _, p := range st.Procs {
		state := "dead"
		if Alive(p.PID, p.Namespace) {
			state = "alive"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", p.Namespace, p.What, p.PID, state, p.Log)
	}
	return tw.Flush()
}

func processRuns(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// WaitUp waits until the scenario serves: with BGP, until the router
// routes both VIPs over every LB node; then until the client gets HTTP
// answers through both VIPs.
func (s *Scenario) WaitUp(ctx context.Context, timeout time.Duration) error {
	if s.Opts.BGP {
		all := make([]int, len(s.LBs))
		for i := range all {
			all[i] = i
		}
		for _, vip := range s.VIPs() {
			if _, err := s.WaitNextHops(ctx, vip, timeout, all...); err != nil {
				return err
			}
		}
	}
	return s.WaitReady(ctx, timeout)
}

// Watch returns when ctx ends (nil) or when one of the scenario's
// processes exits (an error naming it, its exit status and log).
func (s *Scenario) Watch(ctx context.Context) error {
	type exit struct {
		p    *lab.Process
		info ProcInfo
	}
	infos := s.Procs()
	ps := append(append(append([]*lab.Process{}, s.LBs...), s.Agents...), s.Servers...)
	if s.BIRD != nil {
		ps = append(ps, s.BIRD.Proc)
	}
	exited := make(chan exit, len(ps))
	for i, p := range ps {
		go func() {
			select {
			case <-p.Done():
				exited <- exit{p, infos[i]}
			case <-ctx.Done():
			}
		}()
	}
	select {
	case <-ctx.Done():
		return nil
	case e := <-exited:
		msg := fmt.Sprintf("%s in %s (PID %d) exited: %v", e.info.What, e.info.Namespace, e.info.PID, e.p.Wait())
		if e.info.Log != "" {
			msg += "; its log: " + e.info.Log
		}
		return fmt.Errorf("%s\n%s", msg, lastLines(e.p.Output(), 10))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WriteAccess writes how to reach the running scenario by hand: requests
// from the client, `sluice ctl` on each LB node, BIRD and the routes on
// the router, the processes' logs. bin is the sluice binary's path.
func (s *Scenario) WriteAccess(w io.Writer, bin string) {
	l := s.Lab
	in := func(n *lab.Node) string { return "ip netns exec " + n.Name + " " }
	fmt.Fprintf(w, "\nFrom the client (namespace %s), through the VIPs:\n", l.Client.Name)
	for _, vip := range s.VIPs() {
		fmt.Fprintf(w, "  %scurl -sS http://%s/\n", in(l.Client), netip.AddrPortFrom(vip, HTTPPort))
	}
	fmt.Fprintf(w, "  %sbash   # a shell there\n", in(l.Client))
	fmt.Fprintln(w, "\nOn each LB node, its admin API (sluice ctl, default address 127.0.0.1:6090 in its namespace):")
	for i, n := range l.LBs {
		cfg := ""
		if i < len(s.LBs) {
			cfg = fmt.Sprintf("   # config %s; edit it, then kill -HUP %d", filepath.Join(s.cfgDir, n.Name+".yaml"), s.LBs[i].Pid())
		}
		fmt.Fprintf(w, "  %s%s ctl vip list%s\n", in(n), bin, cfg)
	}
	fmt.Fprintf(w, "  %s%s ctl stats\n", in(l.LBs[0]), bin)
	fmt.Fprintf(w, "  %s%s ctl node status\n", in(l.LBs[0]), bin)
	if s.Opts.AgentMetrics {
		fmt.Fprintln(w, "\nOn each backend, its agent's counters:")
		for _, n := range l.Backends {
			fmt.Fprintf(w, "  %scurl -s http://%s/metrics\n", in(n), AgentMetricsAddr)
		}
	}
	fmt.Fprintf(w, "\nOn the router (namespace %s):\n", l.Router.Name)
	if s.BIRD != nil {
		fmt.Fprintf(w, "  %sbirdc -s %s show protocols\n", in(l.Router), s.BIRD.Socket)
	}
	fmt.Fprintf(w, "  %sip route show %s\n", in(l.Router), s.Opts.VIP4)
	fmt.Fprintf(w, "\nProcesses and their logs: sluice lab status --prefix %s (logs in %s)\n", l.Cfg.Prefix, s.Opts.LogDir)
}
