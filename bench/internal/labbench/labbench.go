// Package labbench is what the lab benchmarks (bench/http, bench/forward)
// share: a scenario lab of one LB node and three backends that is torn down
// however the benchmark ends, turning the LB node into `sluice lb` with a
// given I/O mode or into the nftables jhash DNAT baseline, and the small
// helpers of their logs and reports.
package labbench

import (
	"context"
	"errors"
	"fmt"
	"github.com/cilium/ebpf"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/scenario"
)

// Need checks that the benchmark runs as root and finds tools on PATH;
// install names what installs them.
func Need(install string, tools ...string) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("needs %s (%s)", tool, install)
		}
	}
	return nil
}

// Options describe a benchmark's lab.
type Options struct {
	Name      string // the benchmark; its temporary directory is sluice-bench-<Name>-*
	Prefix    string // lab namespace prefix; "" = Tag<pid>-
	Tag       string // how the default prefix starts (bf, bh)
	Binary    string // the sluice binary; default ./cmd/sluice built into the temporary directory
	IO        string // the I/O mode `sluice lb` starts with
	ExitLines int    // how many lines of each LB's exit report SluiceDown logs
	NAT       []Port // the VIP ports the nftables target forwards
	XDPMode   string // node.xdp_mode of the Sluice targets (default auto)
}

// Port is a VIP port: protocol (tcp, udp) and number.
type Port struct {
	Proto string
	Port  int
}

// Bench is a running benchmark lab.
type Bench struct {
	Ctx      context.Context // cancelled on SIGINT and SIGTERM
	Scenario *scenario.Scenario
	LB       *lab.Node // the LB node
	Bin      string    // the sluice binary
	Tmp      string    // the temporary directory (logs, configurations)

	opts    Options
	stop    context.CancelFunc
	running bool // `sluice lb` runs on the LB node
}

// Start builds the sluice binary unless Options.Binary names one, brings up
// the lab with `sluice lb` running on the LB node with Options.IO, and
// returns it; Close removes it. On error it leaves nothing behind.
func Start(o Options) (_ *Bench, err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	b := &Bench{Ctx: ctx, Bin: o.Binary, opts: o, stop: stop}
	defer func() {
		if err != nil {
			if b.Tmp != "" {
				os.RemoveAll(b.Tmp)
			}
			stop()
		}
	}()
	if b.Tmp, err = os.MkdirTemp("", "sluice-bench-"+o.Name+"-"); err != nil {
		return nil, err
	}
	if b.Bin == "" {
		b.Bin = filepath.Join(b.Tmp, "sluice")
		out, err := exec.CommandContext(ctx, "go", "build", "-o", b.Bin, "./cmd/sluice").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("go build ./cmd/sluice (run from the module root): %v\n%s", err, out)
		}
	}
	if b.opts.Prefix == "" {
		b.opts.Prefix = fmt.Sprintf("%s%d-", o.Tag, os.Getpid())
	}
	Logf("starting lab %s (1 LB, 3 backends, sluice io %s)", b.opts.Prefix, o.IO)
	io, off := o.IO, o.IO == "offload" // see SluiceUp
	if off {
		io = "afxdp"
	}
	b.Scenario, err = scenario.Start(ctx, scenario.Options{Binary: b.Bin, Prefix: b.opts.Prefix, IO: io, Offload: off, XDPMode: o.XDPMode, LogDir: b.Tmp})
	if err != nil {
		return nil, err
	}
	b.LB, b.running = b.Scenario.Lab.LBs[0], true
	return b, nil
}

// Close stops every process, removes the lab and the temporary directory,
// and stops catching signals.
func (b *Bench) Close() error {
	err := b.Scenario.Stop()
	Logf("lab %s removed", b.opts.Prefix)
	os.RemoveAll(b.Tmp)
	b.stop()
	return err
}

// SluiceUp readies `sluice lb` on the LB node for measuring I/O mode
// mode: when restart is set or it is not running, it (re)starts it with
// mode; then it waits until the VIP answers through it and logs the link
// it opened.
//
// Mode "offload" is afxdp with node.offload: auto, with an XDP program on
// the router's end of the LB's veth (lab.RouterPassXDP: a veth drops its
// peer's XDP_TX frames without one); the other modes run without either.
func (b *Bench) SluiceUp(mode string, restart bool) error {
	if restart || !b.running {
		b.SluiceDown()
		io, off := mode, mode == "offload"
		if off {
			io = "afxdp"
			if b.Scenario.Opts.XDPMode != "generic" {
				if err := b.Scenario.Lab.RouterPassXDP(b.LB); err != nil {
					return err
				}
			}
		} else if b.Scenario.Opts.Offload && b.Scenario.Opts.XDPMode != "generic" {
			b.Scenario.Lab.RouterXDPOff(b.LB)
		}
		b.Scenario.Opts.Offload = off
		if err := b.Scenario.RestartLB(b.Ctx, 0, io); err != nil {
			return err
		}
		b.running = true
	}
	if err := b.Scenario.WaitReady(b.Ctx, 30*time.Second); err != nil {
		Logf("sluice %s not ready: %v", mode, err)
		return err
	}
	Logf("sluice %s: %s", mode, b.ioDesc())
	return nil
}

// SluiceDown stops `sluice lb` if it runs, logs the end of its exit report
// (its counters), and detaches an XDP program it might have left on eth0.
func (b *Bench) SluiceDown() {
	if !b.running {
		return
	}
	for i, out := range b.Scenario.StopLBs() {
		Logf("lb%d exit report:\n%s", i+1, indent(lastLines(out, b.opts.ExitLines)))
	}
	b.xdpOff()
	if b.Scenario.Opts.Offload {
		if b.Scenario.Opts.XDPMode != "generic" {
			b.Scenario.Lab.RouterXDPOff(b.LB)
		}
		b.Scenario.Opts.Offload = false
	}
	b.running = false
}

// ioDesc returns the LB's log lines that name the I/O it uses: the link it
// opened and, in auto mode, why AF_XDP was not available.
func (b *Bench) ioDesc() string {
	if len(b.Scenario.LBs) == 0 {
		return ""
	}
	var lines []string
	for _, l := range strings.Split(b.Scenario.LBs[0].Output(), "\n") {
		if strings.Contains(l, "afxdp") || strings.Contains(l, "afpacket") || strings.Contains(l, "AF_") || strings.Contains(l, "offload") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return strings.Join(lines, " | ")
}

// xdpOff detaches an XDP program a stopped LB might have left on eth0.
func (b *Bench) xdpOff() {
	out, _ := b.LB.Run(b.Ctx, "ip", "-d", "link", "show", "dev", "eth0")
	if strings.Contains(out, "prog/xdp") || strings.Contains(out, " xdp") {
		Logf("XDP program still attached to %s/eth0 after the LB stopped; detaching", b.LB.Name)
		for _, m := range []string{"xdp", "xdpgeneric", "xdpdrv"} {
			b.LB.Run(b.Ctx, "ip", "link", "set", "dev", "eth0", m, "off")
		}
	}
}

// NFTRuleset is what the nftables target installs on the LB node: jhash
// DNAT of Options.NAT on the VIP to the backends, and masquerade so that
// replies return through it.
func (b *Bench) NFTRuleset() string {
	bes := b.Scenario.Lab.Backends
	var m, set []string
	for i, be := range bes {
		m = append(m, fmt.Sprintf("%d : %s", i, be.Addr4))
		set = append(set, be.Addr4.String())
	}
	var dnat strings.Builder
	for _, p := range b.opts.NAT {
		fmt.Fprintf(&dnat, "\t\tip daddr %s %s dport %d dnat to jhash ip saddr . %s sport mod %d map { %s }\n",
			b.Scenario.Opts.VIP4, p.Proto, p.Port, p.Proto, len(bes), strings.Join(m, ", "))
	}
	return fmt.Sprintf(`table ip sluicebench {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
%s	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip daddr { %s } ct status dnat masquerade
	}
}
`, dnat.String(), strings.Join(set, ", "))
}

var nftSysctls = []string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0"}

// NFTUp makes the LB node a kernel NAT load balancer: forwarding on, no
// ICMP redirects (it forwards out of the interface the packet came in on),
// and NFTRuleset. `sluice lb` must not run.
func (b *Bench) NFTUp() error {
	for _, s := range nftSysctls {
		if _, err := b.LB.Run(b.Ctx, "sysctl", "-qw", s); err != nil {
			return err
		}
	}
	path := filepath.Join(b.Tmp, "lb.nft")
	if err := os.WriteFile(path, []byte(b.NFTRuleset()), 0o644); err != nil {
		return err
	}
	_, err := b.LB.Run(b.Ctx, "nft", "-f", path)
	return err
}

// NFTDown removes NFTRuleset and turns forwarding off again.
func (b *Bench) NFTDown() error {
	b.LB.Run(b.Ctx, "nft", "delete", "table", "ip", "sluicebench")
	_, err := b.LB.Run(b.Ctx, "sysctl", "-qw", "net.ipv4.ip_forward=0")
	return err
}

// WriteNFT writes the report's section on the nftables target's setup.
func (b *Bench) WriteNFT(w io.Writer) {
	fmt.Fprintf(w, "\nnftables on %s (`sysctl -w %s`; `nft -f FILE`):\n\n```\n%s```\n", b.LB.Name, strings.Join(nftSysctls, " "), b.NFTRuleset())
}

// Logf logs a line to stderr, with the time.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// OneLine folds s onto one line of at most 300 bytes (and "...").
func OneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// Cell makes s fit in a Markdown table cell.
func Cell(s string) string { return strings.ReplaceAll(s, "|", "/") }

// Ratio formats a/b with two decimals, or "-" when either is 0.
func Ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// SplitList splits a comma-separated flag value, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Loadavg returns the 1, 5 and 15 minute load averages, or "?".
func Loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// NumCPU returns the number of processors in /proc/cpuinfo.
func NumCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

// Kernel returns "kernel <release>".
func Kernel() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "kernel ?"
	}
	return "kernel " + unix.ByteSliceToString(u.Release[:])
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }

// CPUSample is a reading of the CPU time the machine and one process have
// used.
type CPUSample struct {
	Busy time.Duration // every CPU, but idle and iowait (/proc/stat)
	Proc time.Duration // the process: user + system (/proc/PID/stat); 0 without one
}

// clkTck is USER_HZ, the unit of /proc/stat and /proc/PID/stat.
const clkTck = 100

// ReadCPU reads the machine's busy time and process pid's CPU time (pid 0:
// none).
func ReadCPU(pid int) (CPUSample, error) {
	var s CPUSample
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return s, fmt.Errorf("/proc/stat: unexpected %q", line)
	}
	var ticks uint64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		ticks += n
	}
	s.Busy = time.Duration(ticks) * time.Second / clkTck
	if pid > 0 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return s, err
		}
		// Fields after the command (which may hold spaces) in parentheses.
		i := strings.LastIndexByte(string(b), ')')
		pf := strings.Fields(string(b)[i+1:])
		if len(pf) < 13 {
			return s, fmt.Errorf("/proc/%d/stat: unexpected", pid)
		}
		ut, _ := strconv.ParseUint(pf[11], 10, 64)
		st, _ := strconv.ParseUint(pf[12], 10, 64)
		s.Proc = time.Duration(ut+st) * time.Second / clkTck
	}
	return s, nil
}

// Sub returns s - o.
func (s CPUSample) Sub(o CPUSample) CPUSample {
	return CPUSample{Busy: s.Busy - o.Busy, Proc: s.Proc - o.Proc}
}

var reXDPProg = regexp.MustCompile(`prog/xdp id (\d+)`)

// XDPRuntime returns the run time and run count of the XDP program
// attached to n's eth0 (kernel BPF statistics: EnableStats must be on).
func (b *Bench) XDPRuntime(n *lab.Node) (time.Duration, uint64, error) {
	out, err := n.Run(b.Ctx, "ip", "-d", "link", "show", "dev", "eth0")
	if err != nil {
		return 0, 0, err
	}
	m := reXDPProg.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("%s: no XDP program on eth0", n.Name)
	}
	id, _ := strconv.ParseUint(m[1], 10, 32)
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if err != nil {
		return 0, 0, err
	}
	defer p.Close()
	st, err := p.Stats()
	if err != nil {
		return 0, 0, err
	}
	return st.Runtime, st.RunCount, nil
}

// EnableBPFStats turns the kernel's BPF run-time statistics on until the
// returned closer is closed.
func EnableBPFStats() (io.Closer, error) { return ebpf.EnableStats(unix.BPF_STATS_RUN_TIME) }
