// Command fastpath measures what the fastpath takes off the LB tier: the
// VIP packets an LB node receives and the CPU time it spends per
// connection that uploads -size bytes, with the VIPs' fastpath on and off,
// in one lab (one LB node, AF_XDP, three backends, the client running
// `sluice agent --fastpath`). The modes alternate over -rounds rounds (a
// reload switches them), so both see the same machine; the report gives
// medians and the on/off ratios. The CPU time is the node process's during
// the uploads minus its CPU time in an idle window as long right after
// (its polling and timers), in USER_HZ ticks (10 ms over -conns).
//
//	go run ./bench/fastpath [-conns 100] [-size 1048576] [-rounds 3] [-parallel 4]
//
// Needs root and curl (scripts/deps.sh). The lab (prefix "bf<pid>-") is torn
// down at the end, also on failure or SIGINT/SIGTERM.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/sluicelb/sluice/bench/internal/labbench"
	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/scenario"
)

var (
	conns    = flag.Int("conns", 100, "connections per measurement, each uploading -size bytes")
	size     = flag.Int("size", 1<<20, "bytes each connection uploads")
	rounds   = flag.Int("rounds", 3, "rounds (each measures fastpath off and on)")
	parallel = flag.Int("parallel", 4, "connections at a time")
	binary   = flag.String("sluice", "", "sluice binary (default: build ./cmd/sluice into a temporary directory)")
	prefix   = flag.String("prefix", "", "lab namespace prefix (default bf<pid>-)")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/fastpath:", err)
		os.Exit(1)
	}
}

// sample is one measurement.
type sample struct {
	on        bool
	packets   float64       // LB VIP packets per connection
	cpu       time.Duration // LB process CPU time per connection
	redirects uint64        // redirects installed during it
	took      time.Duration
	failed    int
}

func run() (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces)")
	}
	if err := labbench.Need("scripts/deps.sh", "ip", "curl"); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bin := *binary
	if bin == "" {
		dir, err := os.MkdirTemp("", "bench-fastpath-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "sluice")
		if out, err := exec.Command("go", "build", "-o", bin, "./cmd/sluice").CombinedOutput(); err != nil {
			return fmt.Errorf("build: %v\n%s", err, out)
		}
	}
	p := *prefix
	if p == "" {
		p = fmt.Sprintf("bf%d-", os.Getpid()%100000)
	}
	s, err := scenario.Start(ctx, scenario.Options{Binary: bin, Prefix: p, LBs: 1, Backends: 3, IO: "afxdp", Fastpath: true})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, s.Stop()) }()
	if err := s.WaitReady(ctx, 30*time.Second); err != nil {
		return err
	}
	labbench.Logf("lab up; load %s", labbench.Loadavg())

	var samples []sample
	var order []bool
	for r := range *rounds {
		order = append(order, r%2 == 1, r%2 == 0) // alternate which mode goes first
	}
	for _, on := range order {
		if ctx.Err() != nil {
			break
		}
		if err := setFastpath(ctx, s, on); err != nil {
			return err
		}
		sm, err := measure(ctx, s, on)
		if err != nil {
			return err
		}
		labbench.Logf("fastpath %-5v %7.1f LB packets and %8v LB CPU per connection, %d redirects, %d failed, %v",
			on, sm.packets, sm.cpu, sm.redirects, sm.failed, sm.took.Round(time.Millisecond))
		samples = append(samples, sm)
	}
	report(os.Stdout, samples)
	return nil
}

// setFastpath reloads the LB node with the VIPs' fastpath on or off.
func setFastpath(ctx context.Context, s *scenario.Scenario, on bool) error {
	gen := stats(ctx, s).DatapathGeneration
	s.Opts.FastpathOff = !on
	if err := s.ReloadLB(0, s.ConfigFor(0)); err != nil {
		return err
	}
	for end := time.Now().Add(10 * time.Second); stats(ctx, s).DatapathGeneration == gen; {
		if time.Now().After(end) {
			return errors.New("no new generation after the reload")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

func stats(ctx context.Context, s *scenario.Scenario) control.Stats {
	var st control.Stats
	out, err := s.Lab.LBs[0].Run(ctx, "curl", "-sS", "--max-time", "3", "http://127.0.0.1:6090/v1/stats")
	if err == nil {
		json.Unmarshal([]byte(out), &st)
	}
	return st
}

func installed(ctx context.Context, s *scenario.Scenario) uint64 {
	var st control.FastpathStatus
	out, err := s.Lab.LBs[0].Run(ctx, "curl", "-sS", "--max-time", "3", "http://127.0.0.1:6090/v1/fastpath?max=1")
	if err == nil {
		json.Unmarshal([]byte(out), &st)
	}
	return st.Counters.Installed
}

// measure uploads -size bytes on each of -conns new connections, -parallel
// at a time, and reads the LB node's packets and CPU time around it.
func measure(ctx context.Context, s *scenario.Scenario, on bool) (sample, error) {
	pid := s.LBs[0].Pid()
	body := bytes.Repeat([]byte("s"), *size)
	url := netip.AddrPortFrom(s.Opts.VIP4, scenario.HTTPPort).String()
	time.Sleep(time.Second)
	st0, red0 := stats(ctx, s), installed(ctx, s)
	start := time.Now()
	c0, err := labbench.ReadCPU(pid)
	if err != nil {
		return sample{}, err
	}
	var (
		mu     sync.Mutex
		failed int
		wg     sync.WaitGroup
	)
	next := make(chan struct{})
	for range *parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				if err := upload(s, url, body); err != nil {
					mu.Lock()
					if failed == 0 {
						labbench.Logf("upload: %v", err)
					}
					failed++
					mu.Unlock()
				}
			}
		}()
	}
	for range *conns {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	took := time.Since(start)
	time.Sleep(time.Second) // the last connections' FINs
	c1, err := labbench.ReadCPU(pid)
	if err != nil {
		return sample{}, err
	}
	st1, red1 := stats(ctx, s), installed(ctx, s)
	// The node's CPU time in a window as long without traffic (its idle
	// polling, timers) is not the connections'.
	i0, err := labbench.ReadCPU(pid)
	if err != nil {
		return sample{}, err
	}
	time.Sleep(time.Since(start))
	i1, err := labbench.ReadCPU(pid)
	if err != nil {
		return sample{}, err
	}
	n := float64(*conns)
	cpu := max(c1.Sub(c0).Proc-i1.Sub(i0).Proc, 0) // both windows last the same
	return sample{on: on, packets: float64(st1.RxPackets-st0.RxPackets) / n,
		cpu: cpu / time.Duration(*conns), redirects: red1 - red0, took: took, failed: failed}, nil
}

// upload makes one connection from the client namespace (the socket is
// made there; it stays in it) and POSTs body on it.
func upload(s *scenario.Scenario, addr string, body []byte) error {
	var c net.Conn
	if err := s.Lab.Client.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: vip\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(body)); err != nil {
		return err
	}
	if _, err := c.Write(body); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	return xs[len(xs)/2]
}

func report(w io.Writer, samples []sample) {
	var pk, cpu [2][]float64
	var failed [2]int
	for _, sm := range samples {
		i := 0
		if sm.on {
			i = 1
		}
		pk[i] = append(pk[i], sm.packets)
		cpu[i] = append(cpu[i], float64(sm.cpu.Microseconds()))
		failed[i] += sm.failed
	}
	fmt.Fprintf(w, "\n%d connections x %d bytes uploaded per measurement, %d rounds; machine: %d vCPU, %s, load %s\n\n",
		*conns, *size, len(samples)/2, labbench.NumCPU(), labbench.Kernel(), labbench.Loadavg())
	fmt.Fprintln(w, "| per connection | fastpath off | fastpath on | on / off |")
	fmt.Fprintln(w, "|---|---|---|---|")
	po, pn := median(pk[0]), median(pk[1])
	co, cn := median(cpu[0]), median(cpu[1])
	fmt.Fprintf(w, "| LB VIP packets | %.1f | %.1f | %s |\n", po, pn, labbench.Ratio(pn, po))
	res := float64(10*time.Millisecond/time.Microsecond) / float64(*conns) // USER_HZ ticks
	ratio := labbench.Ratio(cn, co)
	if cn == 0 {
		ratio = fmt.Sprintf("< %.3f", res/co)
	}
	fmt.Fprintf(w, "| LB CPU time (µs; resolution %.0f) | %.0f | %.0f | %s |\n", res, co, cn, ratio)
	fmt.Fprintf(w, "| failed connections | %d | %d | |\n", failed[0], failed[1])
}
