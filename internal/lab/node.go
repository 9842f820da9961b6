package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Node is one host of the lab: a named network namespace.
//
// The address fields are fixed by the address plan (doc.go) and immutable
// after Up or Attach; a Node may be used from several goroutines.
type Node struct {
	Name   string // network namespace name, for `ip netns exec NAME`
	Role   Role
	Index  int    // 1-based for LB nodes and backends, 0 for client and router
	Ifname string // main interface: "eth0" on leaves, the "svc" bridge on the router
	// Addr4 and Addr6 are the main interface's addresses. The router's are
	// its service-segment addresses (the LB nodes' and backends' gateway,
	// and where BGP speakers on LB nodes peer); its client-side ones are in
	// Ifaces.
	Addr4, Addr6 netip.Addr
	MAC          net.HardwareAddr // the main interface's
	// Gateway4 and Gateway6 are the default route's next hops (the router);
	// invalid on the router itself.
	Gateway4, Gateway6 netip.Addr
	Ifaces             []Iface // every interface the lab made in this namespace

	lab *Lab

	mu    sync.Mutex
	procs map[*Process]struct{} // running processes started with Start
	seq   int                   // numbers the log files
}

func (n *Node) String() string { return n.Name }

// Iface returns the named interface of the node, or nil.
func (n *Node) Iface(name string) *Iface {
	for i := range n.Ifaces {
		if n.Ifaces[i].Name == name {
			return &n.Ifaces[i]
		}
	}
	return nil
}

// Command returns an unstarted command that runs name inside the node's
// namespace (`ip netns exec`, which execs name, so the command's PID is
// name's). The caller starts it and must Wait for it: PID 1 does not reap
// orphans on this machine.
func (n *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the node and returns its combined output; the
// error includes that output.
func (n *Node) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %v: %w\n%s", n.Name, name, args, err, out)
	}
	return string(out), nil
}

// Do runs fn on the calling goroutine's OS thread switched into the
// node's namespace, then switches the thread back. Sockets and netlink
// handles fn opens belong to the namespace and stay there after Do
// returns; goroutines fn starts do not run in the namespace (net/http's
// client dials on its own goroutines: dial inside fn instead).
func (n *Node) Do(fn func() error) error { return inNS(n.Name, fn) }

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

// DefaultStopTimeout is how long Process.Stop waits after SIGTERM before
// it sends SIGKILL.
const DefaultStopTimeout = 3 * time.Second

// maxOutput bounds the output a Process keeps in memory (the tail).
const maxOutput = 1 << 20

// Process is a long-running program started in a node with Node.Start.
type Process struct {
	Node *Node
	Cmd  *exec.Cmd
	// StopTimeout is the grace between SIGTERM and SIGKILL in Stop;
	// DefaultStopTimeout when zero. Set it before calling Stop.
	StopTimeout time.Duration
	LogPath     string // the log file, when the lab has a LogDir

	out  *tailBuffer
	log  *os.File
	done chan struct{} // closed once the process has been waited for
	err  error         // Wait's result; read after done

	stopOnce sync.Once
	stopErr  error
}

// Start starts name with args inside the node, in a process group of its
// own, with stdout and stderr captured (Output; and the lab's LogDir when
// set). Cancelling ctx stops it as Stop does. The lab's Down stops every
// process still running. The Process stands for the whole group: when the
// program exits, what is left of its group is terminated and reaped too.
// To reap its orphans, Start makes this process a child subreaper
// (PR_SET_CHILD_SUBREAPER), once.
func (n *Node) Start(ctx context.Context, name string, args ...string) (*Process, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// A grandchild that keeps our pipe open must not block Wait for ever.
	cmd.WaitDelay = 2 * time.Second
	p := &Process{Node: n, Cmd: cmd, out: &tailBuffer{max: maxOutput}, done: make(chan struct{})}
	var w io.Writer = p.out
	if n.lab != nil && n.lab.Cfg.LogDir != "" {
		n.mu.Lock()
		n.seq++
		seq := n.seq
		n.mu.Unlock()
		p.LogPath = filepath.Join(n.lab.Cfg.LogDir, fmt.Sprintf("%s.%s.%d.log", n.Name, filepath.Base(name), seq))
		f, err := os.Create(p.LogPath)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", n.Name, name, err)
		}
		p.log = f
		w = io.MultiWriter(p.out, f)
	}
	cmd.Stdout, cmd.Stderr = w, w
	becomeSubreaper()
	if err := cmd.Start(); err != nil {
		if p.log != nil {
			p.log.Close()
		}
		return nil, fmt.Errorf("%s: start %s: %w", n.Name, name, err)
	}
	n.mu.Lock()
	if n.procs == nil {
		n.procs = make(map[*Process]struct{})
	}
	n.procs[p] = struct{}{}
	n.mu.Unlock()
	go func() {
		p.err = cmd.Wait()
		// What the program left in its process group goes with it, and
		// the orphans among them are ours to reap (we are their subreaper).
		endGroup(cmd.Process.Pid, p.stopTimeout())
		if p.log != nil {
			p.log.Close()
		}
		n.mu.Lock()
		delete(n.procs, p)
		n.mu.Unlock()
		close(p.done)
	}()
	if ctx.Done() != nil {
		go func() {
			select {
			case <-ctx.Done():
				p.Stop()
			case <-p.done:
			}
		}()
	}
	return p, nil
}

// Pid is the process's ID (the program's: `ip netns exec` execs it).
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit on its own and returns its exit
// error, as exec.Cmd.Wait would.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Output returns what the process has written to stdout and stderr so far
// (the last MiB of it).
func (p *Process) Output() string { return p.out.String() }

// Stop ends the process: SIGTERM to its process group, SIGKILL after
// StopTimeout, and always waits for it, so no zombie is left. It returns
// nil when the process exited cleanly or from Stop's signal, its exit
// error otherwise. Stop may be called more than once and concurrently.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			p.stopErr = p.err
			return
		default:
		}
		grace := p.stopTimeout()
		pgid := p.Cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
		p.stopErr = p.err
		var ee *exec.ExitError
		if errors.As(p.err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() &&
				(ws.Signal() == syscall.SIGTERM || ws.Signal() == syscall.SIGKILL) {
				p.stopErr = nil
			}
		}
	})
	return p.stopErr
}

func (p *Process) stopTimeout() time.Duration {
	if p.StopTimeout > 0 {
		return p.StopTimeout
	}
	return DefaultStopTimeout
}

var subreaper sync.Once

// becomeSubreaper makes this process the child subreaper of its
// descendants: a program's children that outlive it are re-parented here
// rather than to PID 1 (which does not reap them on this machine), so
// endGroup can reap them.
func becomeSubreaper() {
	subreaper.Do(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
}

// endGroup ends what is left of process group pgid after its leader has
// been reaped: SIGTERM, SIGKILL after grace, and reaps the members that
// were re-parented to this process. Members whose parent is another
// member are reaped by it, or re-parented here when it dies. It gives up
// after grace plus two seconds.
func endGroup(pgid int, grace time.Duration) {
	self := os.Getpid()
	start := time.Now()
	termed, killed := false, false
	for {
		members := groupMembers(pgid)
		if len(members) == 0 {
			return
		}
		for _, m := range members {
			if m.ppid == self && m.zombie {
				unix.Wait4(m.pid, nil, unix.WNOHANG, nil)
			}
		}
		switch d := time.Since(start); {
		case !termed:
			syscall.Kill(-pgid, syscall.SIGTERM)
			termed = true
		case !killed && d > grace:
			syscall.Kill(-pgid, syscall.SIGKILL)
			killed = true
		case d > grace+2*time.Second:
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type member struct {
	pid, ppid int
	zombie    bool
}

// groupMembers lists the processes of group pgid, zombies included.
func groupMembers(pgid int) []member {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var ms []member
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 3 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ms = append(ms, member{pid: pid, ppid: ppid, zombie: f[0] == "Z"})
	}
	return ms
}

// stopAll stops every process started on the node that still runs.
func (n *Node) stopAll() error {
	n.mu.Lock()
	ps := make([]*Process, 0, len(n.procs))
	for p := range n.procs {
		ps = append(ps, p)
	}
	n.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(ps))
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Stop(); err != nil {
				errs[i] = fmt.Errorf("%s: %s: %w", n.Name, p.Cmd.Args[4], err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// tailBuffer keeps the last max bytes written to it; safe for concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - b.max; over > 0 {
		b.buf.Next(over)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
