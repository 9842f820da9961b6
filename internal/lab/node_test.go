package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCommandAndDo(t *testing.T) {
	requireLab(t)
	l := upLab(t, Config{Backends: 1})
	be := l.Backends[0]
	if out := run(t, be, "ip", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, be.Addr4.String()+"/24") {
		t.Errorf("%s: ip -o addr: %s, want %v", be, out, be.Addr4)
	}
	var addrs []net.Addr
	if err := be.Do(func() (err error) { addrs, err = net.InterfaceAddrs(); return err }); err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprint(addrs); !strings.Contains(s, be.Addr6.String()+"/64") || strings.Contains(s, l.Client.Addr4.String()) {
		t.Errorf("%s: Do sees addresses %s, want the node's own", be, s)
	}
}

// sameNetns reports whether pid runs in the node's namespace.
func sameNetns(tb testing.TB, pid int, n *Node) bool {
	tb.Helper()
	var a, b unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &a); err != nil {
		tb.Fatal(err)
	}
	if err := unix.Stat(filepath.Join(netnsDir, n.Name), &b); err != nil {
		tb.Fatal(err)
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// checkGone fails unless no process (zombies included) has pid as its ID
// or its process group.
func checkGone(tb testing.TB, pid int) {
	tb.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // state ppid pgrp ...
		if e.Name() == fmt.Sprint(pid) || (len(f) > 2 && f[2] == fmt.Sprint(pid)) {
			tb.Errorf("process %s (state %s, group %s) is left after Stop: %s", e.Name(), f[0], f[2], s)
		}
	}
}

func waitOutput(tb testing.TB, p *Process, want string) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.Output(), want) {
		if time.Now().After(deadline) {
			tb.Fatalf("no %q in the output: %q", want, p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStartStop(t *testing.T) {
	requireLab(t)
	l := upLab(t, Config{Backends: 1, LogDir: t.TempDir()})
	be := l.Backends[0]

	t.Run("sigterm", func(t *testing.T) {
		p, err := be.Start(context.Background(), "sh", "-c", "ip -o addr show dev eth0; echo ready; exec sleep 60")
		if err != nil {
			t.Fatal(err)
		}
		waitOutput(t, p, "ready")
		if !strings.Contains(p.Output(), be.Addr4.String()+"/24") {
			t.Errorf("output %q lacks the node's address %v", p.Output(), be.Addr4)
		}
		if !sameNetns(t, p.Pid(), be) {
			t.Errorf("process %d is not in %s's namespace", p.Pid(), be)
		}
		t0 := time.Now()
		if err := p.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
		if d := time.Since(t0); d >= DefaultStopTimeout {
			t.Errorf("Stop took %v: SIGTERM was not enough for sleep", d)
		}
		checkGone(t, p.Pid())
		log, err := os.ReadFile(p.LogPath)
		if err != nil || !strings.Contains(string(log), "ready") {
			t.Errorf("log file %s: %q, %v; want the output", p.LogPath, log, err)
		}
		if err := p.Stop(); err != nil {
			t.Errorf("second Stop: %v", err)
		}
	})

	t.Run("sigkill", func(t *testing.T) {
		// Ignores SIGTERM (the ignore survives exec): Stop must kill and reap it.
		p, err := be.Start(context.Background(), "sh", "-c", `trap "" TERM; echo ready; exec sleep 60`)
		if err != nil {
			t.Fatal(err)
		}
		p.StopTimeout = 200 * time.Millisecond
		waitOutput(t, p, "ready")
		t0 := time.Now()
		if err := p.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
		if d := time.Since(t0); d < p.StopTimeout {
			t.Errorf("Stop returned after %v, before the %v grace", d, p.StopTimeout)
		}
		select {
		case <-p.Done():
		default:
			t.Fatal("Stop returned before the process was reaped")
		}
		checkGone(t, p.Pid())
	})

	t.Run("group", func(t *testing.T) {
		// A shell with a child: both get SIGTERM, the shell reaps the child.
		p, err := be.Start(context.Background(), "sh", "-c", "sleep 60 & echo ready; wait")
		if err != nil {
			t.Fatal(err)
		}
		waitOutput(t, p, "ready")
		if err := p.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
		checkGone(t, p.Pid())
	})

	t.Run("exit status", func(t *testing.T) {
		p, err := be.Start(context.Background(), "sh", "-c", "exit 3")
		if err != nil {
			t.Fatal(err)
		}
		var ee *exec.ExitError
		if err := p.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Errorf("Wait: %v, want exit status 3", err)
		}
		if err := p.Stop(); !errors.As(err, &ee) {
			t.Errorf("Stop after exit: %v, want the exit error", err)
		}
	})

	t.Run("context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		p, err := be.Start(ctx, "sleep", "60")
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		select {
		case <-p.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("cancelling the context did not stop the process")
		}
		checkGone(t, p.Pid())
	})

	t.Run("missing program", func(t *testing.T) {
		p, err := be.Start(context.Background(), "/nonexistent/program")
		if err != nil { // ip netns exec starts, then fails to exec
			return
		}
		if err := p.Wait(); err == nil {
			t.Error("a missing program exited cleanly")
		}
	})
}

func TestDownStopsProcesses(t *testing.T) {
	requireLab(t)
	l := upLab(t, Config{Backends: 1})
	var ps []*Process
	for _, n := range l.Nodes() {
		p, err := n.Start(context.Background(), "sleep", "60")
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		select {
		case <-p.Done():
		default:
			t.Errorf("%s: Down returned before its process was reaped", p.Node)
		}
		checkGone(t, p.Pid())
	}
}
