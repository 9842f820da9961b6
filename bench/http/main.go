// Command http benchmarks HTTP through the namespace lab: wrk from the client
// against one backend directly, through Sluice (each requested I/O mode),
// through nftables jhash DNAT on the LB node, and through HAProxy in TCP mode
// on the LB node — one lab, one run, the same backends and the same client.
//
//	go run ./bench/http [-duration 10s] [-io afpacket,afxdp] [-close=true]
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
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/scenario"
)

var (
	duration = flag.Duration("duration", 10*time.Second, "wrk duration of each measurement")
	warmup   = flag.Duration("warmup", time.Second, "wrk warm-up before each measurement (discarded; 0 = none)")
	ioModes  = flag.String("io", "afpacket,afxdp", "Sluice I/O modes to measure (comma-separated: afpacket, afxdp, auto)")
	closeVar = flag.Bool("close", true, "also measure with 'Connection: close' (a new TCP connection per request)")
	threads  = flag.Int("t", 2, "wrk threads")
	conns    = flag.Int("c", 64, "wrk connections")
	binary   = flag.String("sluice", "", "sluice binary (default: build ./cmd/sluice into a temporary directory)")
	prefix   = flag.String("prefix", "", "lab namespace prefix (default bh<pid>-)")
	targets  = flag.String("targets", "direct,sluice,nft,haproxy", "targets to measure, in this order")
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
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces)")
	}
	for _, tool := range []string{"ip", "wrk", "haproxy", "nft", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("needs %s (scripts/deps.sh --bench)", tool)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	tmp, err := os.MkdirTemp("", "sluice-bench-http-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := *binary
	if bin == "" {
		bin = filepath.Join(tmp, "sluice")
		out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/sluice").CombinedOutput()
		if err != nil {
			return fmt.Errorf("go build ./cmd/sluice (run from the module root): %v\n%s", err, out)
		}
	}
	modes := splitList(*ioModes)
	if len(modes) == 0 {
		modes = []string{"afpacket"}
	}
	pfx := *prefix
	if pfx == "" {
		pfx = fmt.Sprintf("bh%d-", os.Getpid())
	}
	logf("starting lab %s (1 LB, 3 backends, sluice io %s)", pfx, modes[0])
	s, err := scenario.Start(ctx, scenario.Options{Binary: bin, Prefix: pfx, IO: modes[0], LogDir: tmp})
	if err != nil {
		return err
	}
	defer func() {
		if serr := s.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
		logf("lab %s removed", pfx)
	}()
	b := &bench{ctx: ctx, s: s, bin: bin, tmp: tmp, lb: s.Lab.LBs[0]}

	// Every backend also serves HTTP on its own address: the direct target
	// (be1) and the backends of nftables and HAProxy.
	for _, be := range s.Lab.Backends {
		if _, err := be.Start(ctx, bin, "lab", "http-serve", "--name", fmt.Sprintf("be%d", be.Index),
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
			logf("%s %s: %v", target, mode, err)
			return
		}
		for _, v := range variants {
			results = append(results, b.wrk(target, mode, v, url))
		}
	}
	vipURL := "http://" + netip.AddrPortFrom(s.Opts.VIP4, 80).String() + "/"
	sluiceRunning := true
	stopSluice := func() {
		if sluiceRunning {
			for i, out := range s.StopLBs() {
				logf("lb%d exit report:\n%s", i+1, indent(lastLines(out, 30)))
			}
			b.xdpOff()
			sluiceRunning = false
		}
	}
	for _, target := range splitList(*targets) {
		if ctx.Err() != nil {
			break
		}
		switch target {
		case "direct":
			be := s.Lab.Backends[0]
			measure("direct (be1)", "-", "http://"+netip.AddrPortFrom(be.Addr4, 80).String()+"/")
		case "sluice":
			for i, mode := range modes {
				if i > 0 || !sluiceRunning {
					stopSluice()
					if err := b.startSluice(mode); err != nil {
						results = append(results, failedAll("sluice", mode, variants, err)...)
						continue
					}
					sluiceRunning = true
				}
				if err := s.WaitReady(ctx, 30*time.Second); err != nil {
					results = append(results, failedAll("sluice", mode, variants, err)...)
					logf("sluice %s not ready: %v", mode, err)
					continue
				}
				logf("sluice %s: %s", mode, b.ioDesc())
				measure("sluice", mode, vipURL)
			}
		case "nft":
			stopSluice()
			if err := b.nftUp(); err != nil {
				results = append(results, failedAll("nftables", "jhash dnat", variants, err)...)
				b.nftDown()
				continue
			}
			measure("nftables", "jhash dnat", vipURL)
			if err := b.nftDown(); err != nil {
				return err
			}
		case "haproxy":
			stopSluice()
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
	ctx context.Context
	s   *scenario.Scenario
	bin string
	tmp string
	lb  *lab.Node
}

func failedAll(target, mode string, variants []string, err error) []result {
	var rs []result
	for _, v := range variants {
		rs = append(rs, result{target: target, mode: mode, variant: v, failed: oneLine(err.Error())})
	}
	return rs
}

// startSluice starts `sluice lb` on the LB node with io mode.
func (b *bench) startSluice(mode string) error {
	b.s.Opts.IO = mode
	path := filepath.Join(b.tmp, fmt.Sprintf("lb-%s.yaml", mode))
	if err := os.WriteFile(path, []byte(b.s.Config()), 0o644); err != nil {
		return err
	}
	p, err := b.lb.Start(b.ctx, b.bin, "lb", "--config", path)
	if err != nil {
		return err
	}
	b.s.LBs = []*lab.Process{p}
	return nil
}

// ioDesc returns the LB's log line that names the link it opened.
func (b *bench) ioDesc() string {
	if len(b.s.LBs) == 0 {
		return ""
	}
	var lines []string
	for _, l := range strings.Split(b.s.LBs[0].Output(), "\n") {
		if strings.Contains(l, "afxdp") || strings.Contains(l, "afpacket") || strings.Contains(l, "AF_") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return strings.Join(lines, " | ")
}

// xdpOff detaches an XDP program a stopped LB might have left on eth0.
func (b *bench) xdpOff() {
	out, _ := b.lb.Run(b.ctx, "ip", "-d", "link", "show", "dev", "eth0")
	if strings.Contains(out, "prog/xdp") || strings.Contains(out, " xdp") {
		logf("XDP program still attached to %s/eth0 after the LB stopped; detaching", b.lb.Name)
		for _, m := range []string{"xdp", "xdpgeneric", "xdpdrv"} {
			b.lb.Run(b.ctx, "ip", "link", "set", "dev", "eth0", m, "off")
		}
	}
}

// check fetches url once from the client.
func (b *bench) check(url string) error {
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		out, err := b.s.Lab.Client.Run(ctx, "curl", "-sS", "--max-time", "2", url)
		if err == nil && strings.HasPrefix(out, "be") {
			return nil
		}
		last = fmt.Errorf("curl %s: %v %q", url, err, out)
		time.Sleep(200 * time.Millisecond)
	}
	return last
}

// nftRuleset is what the nftables target installs on the LB node.
func (b *bench) nftRuleset() string {
	bes := b.s.Lab.Backends
	var m, set []string
	for i, be := range bes {
		m = append(m, fmt.Sprintf("%d : %s", i, be.Addr4))
		set = append(set, be.Addr4.String())
	}
	vip := b.s.Opts.VIP4
	return fmt.Sprintf(`table ip sluicebench {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %[1]s tcp dport 80 dnat to jhash ip saddr . tcp sport mod %[2]d map { %[3]s }
		ip daddr %[1]s udp dport 7000 dnat to jhash ip saddr . udp sport mod %[2]d map { %[3]s }
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip daddr { %[4]s } ct status dnat masquerade
	}
}
`, vip, len(bes), strings.Join(m, ", "), strings.Join(set, ", "))
}

var nftSysctls = []string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0"}

// nftUp makes the LB node a kernel NAT load balancer: forwarding on, no
// ICMP redirects (it forwards out of the interface the packet came in on),
// and the jhash DNAT ruleset with masquerade so replies return through it.
func (b *bench) nftUp() error {
	for _, s := range nftSysctls {
		if _, err := b.lb.Run(b.ctx, "sysctl", "-qw", s); err != nil {
			return err
		}
	}
	path := filepath.Join(b.tmp, "lb.nft")
	if err := os.WriteFile(path, []byte(b.nftRuleset()), 0o644); err != nil {
		return err
	}
	_, err := b.lb.Run(b.ctx, "nft", "-f", path)
	return err
}

func (b *bench) nftDown() error {
	b.lb.Run(b.ctx, "nft", "delete", "table", "ip", "sluicebench")
	_, err := b.lb.Run(b.ctx, "sysctl", "-qw", "net.ipv4.ip_forward=0")
	return err
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
`, netip.AddrPortFrom(b.s.Opts.VIP4, 80))
	for _, be := range b.s.Lab.Backends {
		fmt.Fprintf(&sb, "\tserver be%d %s\n", be.Index, netip.AddrPortFrom(be.Addr4, 80))
	}
	return sb.String()
}

// haproxyUp puts the VIP on the LB's lo and starts HAProxy there.
func (b *bench) haproxyUp() (*lab.Process, error) {
	if _, err := b.lb.Run(b.ctx, "ip", "addr", "add", b.s.Opts.VIP4.String()+"/32", "dev", "lo"); err != nil {
		return nil, err
	}
	path := filepath.Join(b.tmp, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(b.haproxyConfig()), 0o644); err != nil {
		return nil, err
	}
	p, err := b.lb.Start(b.ctx, "haproxy", "-db", "-f", path)
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
	b.lb.Run(b.ctx, "ip", "addr", "del", b.s.Opts.VIP4.String()+"/32", "dev", "lo")
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
	cl := b.s.Lab.Client
	if *warmup > 0 {
		ctx, cancel := context.WithTimeout(b.ctx, *warmup+20*time.Second)
		cl.Run(ctx, "wrk", b.wrkArgs(variant, *warmup, url)...)
		cancel()
		time.Sleep(500 * time.Millisecond)
	}
	args := b.wrkArgs(variant, *duration, url)
	r.cmd = "ip netns exec " + cl.Name + " wrk " + shellJoin(args)
	r.load = loadavg()
	logf("%s %s %s: %s  (load %s)", target, mode, variant, r.cmd, r.load)
	ctx, cancel := context.WithTimeout(b.ctx, *duration+30*time.Second)
	defer cancel()
	out, err := cl.Run(ctx, "wrk", args...)
	if err != nil {
		r.failed = oneLine(err.Error())
		return r
	}
	parseWrk(out, &r)
	logf("  %.0f req/s  p50 %v  p99 %v  %s", r.rps, r.p50, r.p99, r.errs)
	if r.rps == 0 {
		r.failed = "no Requests/sec in wrk output: " + oneLine(out)
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
	fmt.Fprintf(w, "Machine: %d vCPU shared by client (wrk), router, LB node and backends; %s.\n", numCPU(), kernel())
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
				fmt.Fprintf(w, "| %s | %s | not measured | | | | | %s |\n", r.target, r.mode, strings.ReplaceAll(r.failed, "|", "/"))
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %.0f | %s | %s | %s | %s | %s |\n", r.target, r.mode, r.rps,
				fmtDur(r.p50), fmtDur(r.p99), ratio(r.rps, direct), ratio(r.rps, nft), orDash(r.errs))
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
	fmt.Fprintf(w, "\nSluice LB config (`sluice lb --config FILE` in %s, io per row):\n\n```yaml\n%s```\n", b.lb.Name, b.s.Config())
	fmt.Fprintf(w, "\nnftables on %s (`sysctl -w %s`; `nft -f FILE`):\n\n```\n%s```\n", b.lb.Name, strings.Join(nftSysctls, " "), b.nftRuleset())
	fmt.Fprintf(w, "\nHAProxy on %s (`ip addr add %s/32 dev lo`; `haproxy -db -f FILE`):\n\n```\n%s```\n", b.lb.Name, b.s.Opts.VIP4, b.haproxyConfig())
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
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

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
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

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func kernel() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return "kernel ?"
	}
	var sb strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return "kernel " + sb.String()
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
