// Command http benchmarks HTTP through the namespace lab: wrk from the client
// against one backend directly, through Sluice (each requested I/O mode),
// through nftables jhash DNAT on the LB node, and through HAProxy in TCP mode
// on the LB node — one lab, one run, the same backends and the same client.
//
//	go run ./bench/http [-duration 10s] [-io afpacket,afxdp,offload] [-close=true]
//
// Needs root, wrk, haproxy, nft and curl (scripts/deps.sh --bench). Every
// measurement is bounded by -duration; the lab (prefix "bh<pid>-") is torn
// down at the end, also on failure or SIGINT/SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sluicelb/sluice/bench/internal/labbench"
	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/scenario"
)

var (
	duration = flag.Duration("duration", 10*time.Second, "wrk duration of each measurement")
	warmup   = flag.Duration("warmup", time.Second, "wrk warm-up before each measurement (discarded; 0 = none)")
	ioModes  = flag.String("io", "afpacket,afxdp", "Sluice I/O modes to measure (comma-separated: afpacket, afxdp, auto, offload: afxdp with node.offload auto)")
	xdpMode  = flag.String("xdp-mode", "auto", "node.xdp_mode of the Sluice targets: auto, native or generic")
	closeVar = flag.Bool("close", true, "also measure with 'Connection: close' (a new TCP connection per request)")
	threads  = flag.Int("t", 2, "wrk threads")
	conns    = flag.Int("c", 64, "wrk connections")
	binary   = flag.String("sluice", "", "sluice binary (default: build ./cmd/sluice into a temporary directory)")
	prefix   = flag.String("prefix", "", "lab namespace prefix (default bh<pid>-)")
	targets  = flag.String("targets", "direct,sluice,sluice-nat,nft,haproxy", "targets to measure, in this order (sluice-nat: Sluice with forwarding: nat)")
)

// result is one wrk measurement.
type result struct {
	target, mode, variant string
	cmd                   string
	rps                   float64
	p50, p99              time.Duration
	requests              int64
	errs                  string // socket errors and non-2xx, "" when none
	load                  string // /proc/loadavg before the run
	failed                string // why there is no number
}

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/http:", err)
		os.Exit(1)
	}
}

func run() (err error) {
	if err := labbench.Need("scripts/deps.sh --bench", "ip", "wrk", "haproxy", "nft", "curl"); err != nil {
		return err
	}
	modes := labbench.SplitList(*ioModes)
	if len(modes) == 0 {
		modes = []string{"afpacket"}
	}
	b := &bench{}
	b.Bench, err = labbench.Start(labbench.Options{Name: "http", Prefix: *prefix, Tag: "bh", Binary: *binary, IO: modes[0],
		ExitLines: 30, NAT: []labbench.Port{{Proto: "tcp", Port: scenario.HTTPPort}, {Proto: "udp", Port: scenario.UDPPort}}, XDPMode: *xdpMode})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := b.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	ctx, s := b.Ctx, b.Scenario

	// Every backend also serves HTTP on its own address: the direct target
	// (be1) and the backends of nftables and HAProxy.
	for _, be := range s.Lab.Backends {
		if _, err := be.Start(ctx, b.Bin, "lab", "http-serve", "--name", fmt.Sprintf("be%d", be.Index),
			"--listen", netip.AddrPortFrom(be.Addr4, 80).String()); err != nil {
			return err
		}
	}

	variants := []string{"keep-alive"}
	if *closeVar {
		variants = append(variants, "close")
	}
	var results []result
	measure := func(target, mode, url string) {
		if err := b.check(url); err != nil {
			for _, v := range variants {
				results = append(results, result{target: target, mode: mode, variant: v, failed: err.Error()})
			}
			labbench.Logf("%s %s: %v", target, mode, err)
			return
		}
		for _, v := range variants {
			results = append(results, b.wrk(target, mode, v, url))
		}
	}
	vipURL := "http://" + netip.AddrPortFrom(s.Opts.VIP4, 80).String() + "/"
	for _, target := range labbench.SplitList(*targets) {
		if ctx.Err() != nil {
			break
		}
		switch target {
		case "direct":
			be := s.Lab.Backends[0]
			measure("direct (be1)", "-", "http://"+netip.AddrPortFrom(be.Addr4, 80).String()+"/")
		case "sluice":
			for i, mode := range modes {
				if err := b.SluiceUp(mode, i > 0); err != nil {
					results = append(results, failedAll("sluice", mode, variants, err)...)
					continue
				}
				measure("sluice", mode, vipURL)
			}
		case "sluice-nat":
			for _, mode := range modes {
				if err := b.natUp(mode); err != nil {
					results = append(results, failedAll("sluice full-NAT", mode, variants, err)...)
					continue
				}
				measure("sluice full-NAT", mode, vipURL)
			}
			if err := b.natDown(); err != nil {
				return err
			}
		case "nft":
			b.SluiceDown()
			if err := b.NFTUp(); err != nil {
				results = append(results, failedAll("nftables", "jhash dnat", variants, err)...)
				b.NFTDown()
				continue
			}
			measure("nftables", "jhash dnat", vipURL)
			if err := b.NFTDown(); err != nil {
				return err
			}
		case "haproxy":
			b.SluiceDown()
			p, err := b.haproxyUp()
			if err != nil {
				results = append(results, failedAll("haproxy", "tcp mode", variants, err)...)
				continue
			}
			measure("haproxy", "tcp mode", vipURL)
			p.Stop()
			b.haproxyDown()
		default:
			return fmt.Errorf("-targets: unknown target %q", target)
		}
	}
	report(os.Stdout, b, results, variants)
	return ctx.Err()
}

type bench struct {
	*labbench.Bench
	nat6 bool // the backends serve HTTP on their IPv6 addresses too
}

// natUp restarts the LB node with every VIP in full-NAT (the scenario's
// NAT configuration: the node's SNAT addresses, forwarding: nat) and
// routes the SNAT addresses to it; the backends' plain HTTP servers (on
// their own addresses) answer, not the agents.
func (b *bench) natUp(mode string) error {
	s := b.Scenario
	if !b.nat6 {
		for _, be := range s.Lab.Backends {
			if _, err := be.Start(b.Ctx, b.Bin, "lab", "http-serve", "--name", fmt.Sprintf("be%d", be.Index),
				"--listen", netip.AddrPortFrom(be.Addr6, 80).String()); err != nil {
				return err
			}
		}
		b.nat6 = true
	}
	if err := s.Lab.RouteSNAT(true); err != nil {
		return err
	}
	s.Opts.NAT = true
	return b.SluiceUp(mode, true)
}

// natDown stops the full-NAT LB node and goes back to the scenario's
// encapsulating configuration.
func (b *bench) natDown() error {
	b.SluiceDown()
	b.Scenario.Opts.NAT = false
	return b.Scenario.Lab.RouteSNAT(false)
}

func failedAll(target, mode string, variants []string, err error) []result {
	var rs []result
	for _, v := range variants {
		rs = append(rs, result{target: target, mode: mode, variant: v, failed: labbench.OneLine(err.Error())})
	}
	return rs
}

// check fetches url once from the client.
func (b *bench) check(url string) error {
	ctx, cancel := context.WithTimeout(b.Ctx, 15*time.Second)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		out, err := b.Scenario.Lab.Client.Run(ctx, "curl", "-sS", "--max-time", "2", url)
		if err == nil && strings.HasPrefix(out, "be") {
			return nil
		}
		last = fmt.Errorf("curl %s: %v %q", url, err, out)
		time.Sleep(200 * time.Millisecond)
	}
	return last
}

func (b *bench) haproxyConfig() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, `global
	maxconn 4000

defaults
	mode tcp
	timeout connect 3s
	timeout client 30s
	timeout server 30s

frontend vip
	bind %s
	default_backend backends

backend backends
	balance roundrobin
`, netip.AddrPortFrom(b.Scenario.Opts.VIP4, 80))
	for _, be := range b.Scenario.Lab.Backends {
		fmt.Fprintf(&sb, "\tserver be%d %s\n", be.Index, netip.AddrPortFrom(be.Addr4, 80))
	}
	return sb.String()
}

// haproxyUp puts the VIP on the LB's lo and starts HAProxy there.
func (b *bench) haproxyUp() (*lab.Process, error) {
	if _, err := b.LB.Run(b.Ctx, "ip", "addr", "add", b.Scenario.Opts.VIP4.String()+"/32", "dev", "lo"); err != nil {
		return nil, err
	}
	path := filepath.Join(b.Tmp, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(b.haproxyConfig()), 0o644); err != nil {
		return nil, err
	}
	p, err := b.LB.Start(b.Ctx, "haproxy", "-db", "-f", path)
	if err != nil {
		return nil, err
	}
	time.Sleep(300 * time.Millisecond)
	select {
	case <-p.Done():
		return nil, fmt.Errorf("haproxy exited: %v\n%s", p.Wait(), p.Output())
	default:
	}
	return p, nil
}

func (b *bench) haproxyDown() {
	b.LB.Run(b.Ctx, "ip", "addr", "del", b.Scenario.Opts.VIP4.String()+"/32", "dev", "lo")
}

func (b *bench) wrkArgs(variant string, d time.Duration, url string) []string {
	args := []string{fmt.Sprintf("-t%d", *threads), fmt.Sprintf("-c%d", *conns), "-d" + d.String(), "--latency"}
	if variant == "close" {
		args = append(args, "-H", "Connection: close")
	}
	return append(args, url)
}

// wrk runs one measurement from the client (after a discarded warm-up).
func (b *bench) wrk(target, mode, variant, url string) result {
	r := result{target: target, mode: mode, variant: variant}
	cl := b.Scenario.Lab.Client
	if *warmup > 0 {
		ctx, cancel := context.WithTimeout(b.Ctx, *warmup+20*time.Second)
		cl.Run(ctx, "wrk", b.wrkArgs(variant, *warmup, url)...)
		cancel()
		time.Sleep(500 * time.Millisecond)
	}
	args := b.wrkArgs(variant, *duration, url)
	r.cmd = "ip netns exec " + cl.Name + " wrk " + shellJoin(args)
	r.load = labbench.Loadavg()
	labbench.Logf("%s %s %s: %s  (load %s)", target, mode, variant, r.cmd, r.load)
	ctx, cancel := context.WithTimeout(b.Ctx, *duration+30*time.Second)
	defer cancel()
	out, err := cl.Run(ctx, "wrk", args...)
	if err != nil {
		r.failed = labbench.OneLine(err.Error())
		return r
	}
	parseWrk(out, &r)
	labbench.Logf("  %.0f req/s  p50 %v  p99 %v  %s", r.rps, r.p50, r.p99, r.errs)
	if r.rps == 0 {
		r.failed = "no Requests/sec in wrk output: " + labbench.OneLine(out)
	}
	// Let TIME_WAIT-heavy runs settle a little before the next one.
	time.Sleep(time.Second)
	return r
}

var (
	reRPS    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reP50    = regexp.MustCompile(`(?m)^\s+50%\s+([0-9.]+[a-z]+)`)
	reP99    = regexp.MustCompile(`(?m)^\s+99%\s+([0-9.]+[a-z]+)`)
	reReqs   = regexp.MustCompile(`(\d+) requests in`)
	reSock   = regexp.MustCompile(`Socket errors: (.*)`)
	reNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

func parseWrk(out string, r *result) {
	if m := reRPS.FindStringSubmatch(out); m != nil {
		r.rps, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reP50.FindStringSubmatch(out); m != nil {
		r.p50 = parseDur(m[1])
	}
	if m := reP99.FindStringSubmatch(out); m != nil {
		r.p99 = parseDur(m[1])
	}
	if m := reReqs.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	var errs []string
	if m := reSock.FindStringSubmatch(out); m != nil {
		errs = append(errs, "socket errors: "+strings.TrimSpace(m[1]))
	}
	if m := reNon2xx.FindStringSubmatch(out); m != nil {
		errs = append(errs, "non-2xx: "+m[1])
	}
	r.errs = strings.Join(errs, "; ")
}

// parseDur parses wrk's durations: 812.00us, 1.23ms, 1.01s, 2.00m.
func parseDur(s string) time.Duration {
	if strings.HasSuffix(s, "m") && !strings.HasSuffix(s, "ms") {
		s += "in"
	}
	s = strings.Replace(s, "min", "m", 1)
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0
	}
	return d
}

func report(w io.Writer, b *bench, rs []result, variants []string) {
	fmt.Fprintf(w, "\n## HTTP through the lab (wrk -t%d -c%d -d%v --latency, from the client namespace)\n\n", *threads, *conns, *duration)
	fmt.Fprintf(w, "Machine: %d vCPU shared by client (wrk), router, LB node and backends; %s.\n", labbench.NumCPU(), labbench.Kernel())
	for _, v := range variants {
		find := func(target string) float64 {
			for _, r := range rs {
				if r.variant == v && strings.HasPrefix(r.target, target) && r.failed == "" {
					return r.rps
				}
			}
			return 0
		}
		direct, nft := find("direct"), find("nftables")
		title := "keep-alive (64 persistent connections)"
		if v == "close" {
			title = "`Connection: close` (a new TCP connection per request)"
		}
		fmt.Fprintf(w, "\n### %s\n\n", title)
		fmt.Fprintln(w, "| target | mode | req/s | p50 | p99 | x direct | x nftables | errors |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---|")
		for _, r := range rs {
			if r.variant != v {
				continue
			}
			if r.failed != "" {
				fmt.Fprintf(w, "| %s | %s | not measured | | | | | %s |\n", r.target, r.mode, labbench.Cell(r.failed))
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %.0f | %s | %s | %s | %s | %s |\n", r.target, r.mode, r.rps,
				fmtDur(r.p50), fmtDur(r.p99), labbench.Ratio(r.rps, direct), labbench.Ratio(r.rps, nft), orDash(r.errs))
		}
	}
	fmt.Fprintln(w, "\n### Commands")
	fmt.Fprintln(w, "\n```")
	for _, r := range rs {
		if r.cmd != "" {
			fmt.Fprintf(w, "%s    # %s %s, load before: %s\n", r.cmd, r.target, r.mode, r.load)
		}
	}
	fmt.Fprintln(w, "```")
	fmt.Fprintf(w, "\nSluice LB config (`sluice lb --config FILE` in %s, io per row):\n\n```yaml\n%s```\n", b.LB.Name, b.Scenario.Config())
	b.WriteNFT(w)
	fmt.Fprintf(w, "\nHAProxy on %s (`ip addr add %s/32 dev lo`; `haproxy -db -f FILE`):\n\n```\n%s```\n", b.LB.Name, b.Scenario.Opts.VIP4, b.haproxyConfig())
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f us", float64(d)/float64(time.Microsecond))
	default:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
}

func orDash(s string) string {
	if s == "" || s == "socket errors: connect 0, read 0, write 0, timeout 0" {
		return "-"
	}
	return s
}

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " '\"") {
			a = "'" + a + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}
