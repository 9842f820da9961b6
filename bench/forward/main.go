// Command forward measures the small-packet forwarding rate of one LB node in
// the namespace lab: a blaster in the client namespace sends 64-byte UDP
// frames (60 bytes on the veth + 4 bytes of FCS a NIC would add: 14 Ethernet,
// 20 IPv4, 8 UDP, 18 payload) to the UDP VIP 198.18.0.10:7000, in bounded
// rate steps, over many flows; the frames that reach the backends are counted
// and dropped by an nftables netdev ingress rule on each backend's eth0 (GUE
// to :6080 for Sluice, the DNATed datagrams to :7000 for the kernel), so the
// backends cost next to nothing. Targets: Sluice with each requested I/O
// mode, and the kernel forwarding the same traffic with nftables jhash DNAT
// (plus masquerade) on the LB node.
//
//	go run ./bench/forward [-duration 5s] [-rates 100k,150k,200k,300k,max] [-io afpacket,afxdp,offload] [-cpu-rate 100k]
//
// Mode offload is AF_XDP with node.offload: auto (established flows
// forwarded by the XDP program). At -cpu-rate each target is also measured
// for CPU time per delivered packet: the machine's busy time during a step
// (/proc/stat) minus that of a reference step right before it in which the
// same frames go from the client through the router straight to a backend
// (no LB), per packet; the LB's share of the shared cores. Sluice's own
// process time is reported beside it.
//
// Needs root and nft. Every step is bounded by -duration; the lab (prefix
// "bf<pid>-") is torn down at the end, also on failure or SIGINT/SIGTERM.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/bench/internal/labbench"
	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/scenario"
)

var (
	duration  = flag.Duration("duration", 5*time.Second, "length of each rate step")
	rates     = flag.String("rates", "100k,150k,200k,300k,max", "offered rate steps in packets/s (k, M suffixes; max = as fast as the blaster can)")
	ioModes   = flag.String("io", "afpacket,afxdp", "Sluice I/O modes to measure (comma-separated)")
	flows     = flag.Int("flows", 256, "distinct UDP flows (source ports) the blaster cycles through")
	batch     = flag.Int("batch", 64, "frames per sendmmsg call")
	binary_   = flag.String("sluice", "", "sluice binary (default: build ./cmd/sluice into a temporary directory)")
	prefix    = flag.String("prefix", "", "lab namespace prefix (default bf<pid>-)")
	noKernel  = flag.Bool("no-nft", false, "skip the nftables DNAT target")
	cpuRate   = flag.String("cpu-rate", "100k", "fixed rate at which the CPU time per forwarded packet is measured (0: not measured)")
	cpuRounds = flag.Int("cpu-rounds", 3, "CPU measurements per target (the median is reported)")
)

const frameLen = 60 // 64-byte Ethernet frame without its FCS

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/forward:", err)
		os.Exit(1)
	}
}

// step is one rate step of one target.
type step struct {
	target, mode string
	offered      float64 // requested pps; 0 = max
	sent         uint64  // frames the blaster handed to the kernel
	elapsed      time.Duration
	lbRx, lbTx   uint64 // LB eth0 link counters
	lbRxDrop     uint64
	delivered    uint64   // counted at the backends' ingress
	perBackend   []uint64 // the same, per backend
	load         string
	failed       string
}

func (s step) pps(n uint64) float64 { return float64(n) / s.elapsed.Seconds() }

func (s step) loss() float64 {
	if s.sent == 0 {
		return 0
	}
	return 100 * (1 - float64(s.delivered)/float64(s.sent))
}

func run() (err error) {
	if err := labbench.Need("scripts/deps.sh", "ip", "nft", "curl"); err != nil {
		return err
	}
	steps, err := parseRates(*rates)
	if err != nil {
		return err
	}
	if *flows < 1 || *flows > 60000 || *batch < 1 || *batch > 1024 {
		return errors.New("-flows must be 1..60000 and -batch 1..1024")
	}
	modes := labbench.SplitList(*ioModes)
	first := "afpacket"
	if len(modes) > 0 {
		first = modes[0]
	}
	b := &bench{}
	b.Bench, err = labbench.Start(labbench.Options{Name: "forward", Prefix: *prefix, Tag: "bf", Binary: *binary_, IO: first,
		ExitLines: 16, NAT: []labbench.Port{{Proto: "udp", Port: scenario.UDPPort}}})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := b.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	if err := b.buildFrames(); err != nil {
		return err
	}

	var crate float64
	if *cpuRate != "0" {
		r, err := parseRates(*cpuRate)
		if err != nil || len(r) != 1 || r[0] == 0 {
			return fmt.Errorf("-cpu-rate: want one rate, got %q", *cpuRate)
		}
		crate = r[0]
	}
	var results []step
	var cpus []cpuStep
	for i, mode := range modes {
		if b.Ctx.Err() != nil {
			break
		}
		if err := b.SluiceUp(mode, i > 0 || mode == "offload"); err != nil {
			results = append(results, step{target: "sluice", mode: mode, failed: labbench.OneLine(err.Error())})
			continue
		}
		results = append(results, b.measure("sluice", mode, 6080, steps)...)
		if crate > 0 {
			cpus = append(cpus, b.measureCPU("sluice", mode, 6080, crate, b.Scenario.LBs[0].Pid()))
		}
	}
	if !*noKernel && b.Ctx.Err() == nil {
		b.SluiceDown()
		if err := b.NFTUp(); err != nil {
			results = append(results, step{target: "nftables", mode: "jhash dnat", failed: labbench.OneLine(err.Error())})
		} else {
			results = append(results, b.measure("nftables", "jhash dnat", 7000, steps)...)
			if crate > 0 {
				cpus = append(cpus, b.measureCPU("nftables", "jhash dnat", 7000, crate, 0))
			}
		}
		if err := b.NFTDown(); err != nil {
			return err
		}
	}
	report(os.Stdout, b, results)
	if crate > 0 {
		reportCPU(os.Stdout, cpus, crate)
	}
	return b.Ctx.Err()
}

type bench struct {
	*labbench.Bench
	frames [][]byte
	ref    [][]byte // the same flows to the first backend's GUE port directly (CPU reference)
}

// buildFrames makes one 60-byte frame per flow: client MAC -> the router's
// client-side MAC, 198.18.10.2:sport -> VIP:7000, 18 bytes of payload, UDP
// checksum 0 (allowed over IPv4).
func (b *bench) buildFrames() error {
	cl, r := b.Scenario.Lab.Client, b.Scenario.Lab.Router
	ri := r.Iface("client")
	if ri == nil {
		return errors.New("router has no client interface")
	}
	src, dst := cl.Addr4.As4(), b.Scenario.Opts.VIP4.As4()
	for i := range *flows {
		f := make([]byte, frameLen)
		copy(f[0:6], ri.MAC)
		copy(f[6:12], cl.MAC)
		binary.BigEndian.PutUint16(f[12:], 0x0800)
		ip := f[14:34]
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], frameLen-14)
		binary.BigEndian.PutUint16(ip[4:], uint16(i))
		ip[6] = 0x40 // DF
		ip[8] = 64
		ip[9] = unix.IPPROTO_UDP
		copy(ip[12:16], src[:])
		copy(ip[16:20], dst[:])
		binary.BigEndian.PutUint16(ip[10:], encap.Checksum(ip, 0))
		udp := f[34:42]
		binary.BigEndian.PutUint16(udp[0:], uint16(20000+i))
		binary.BigEndian.PutUint16(udp[2:], scenario.UDPPort)
		binary.BigEndian.PutUint16(udp[4:], frameLen-34)
		copy(f[42:], "sluice-bench-fwd..")
		b.frames = append(b.frames, f)
		r := slices.Clone(f)
		be := b.Scenario.Lab.Backends[0].Addr4.As4()
		copy(r[30:34], be[:])
		binary.BigEndian.PutUint16(r[24:], 0)
		binary.BigEndian.PutUint16(r[24:], encap.Checksum(r[14:34], 0))
		binary.BigEndian.PutUint16(r[36:], 6080)
		b.ref = append(b.ref, r)
	}
	return nil
}

// blast sends the flows' frames round robin from the client's eth0 on a raw
// AF_PACKET socket (qdisc bypassed) with sendmmsg, at rate pps (0 = as fast
// as possible) for d. It returns the frames sent and the time it took.
func (b *bench) blast(rate float64, d time.Duration) (sent uint64, elapsed time.Duration, err error) {
	return b.blastFrames(b.frames, rate, d)
}

func (b *bench) blastFrames(frames [][]byte, rate float64, d time.Duration) (sent uint64, elapsed time.Duration, err error) {
	cl := b.Scenario.Lab.Client
	err = cl.Do(func() error {
		ifi, err := net.InterfaceByName(cl.Ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0) // protocol 0: receives nothing
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index}); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return err
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
		n := len(frames)
		bs := *batch
		// One message per frame slot, built once: batch k sends frames
		// [k*bs mod n ...], so lay out n+bs messages and slide the window.
		iovs := make([]unix.Iovec, n+bs)
		msgs := make([]unix.Mmsghdr, n+bs)
		for i := range msgs {
			f := frames[i%n]
			iovs[i].Base = &f[0]
			iovs[i].SetLen(len(f))
			msgs[i].Hdr.Iov = &iovs[i]
			msgs[i].Hdr.SetIovlen(1)
		}
		start := time.Now()
		end := start.Add(d)
		next := 0
		for {
			now := time.Now()
			if !now.Before(end) {
				break
			}
			if rate > 0 {
				due := start.Add(time.Duration(float64(sent) / rate * float64(time.Second)))
				if wait := due.Sub(now); wait > 0 {
					time.Sleep(wait)
					continue
				}
			}
			r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[next])), uintptr(bs), 0, 0, 0)
			if e != 0 {
				if e == unix.ENOBUFS || e == unix.EAGAIN || e == unix.EINTR {
					runtime.Gosched()
					continue
				}
				return os.NewSyscallError("sendmmsg", e)
			}
			sent += uint64(r)
			next = (next + int(r)) % n
		}
		elapsed = time.Since(start)
		return nil
	})
	return sent, elapsed, err
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// countTable counts and drops, at each backend's eth0 ingress, the GUE
// datagrams (UDP :6080) and the DNATed datagrams (UDP :7000).
const countTable = `table netdev sluicebench {
	counter gue_in {}
	counter nat_in {}
	chain ingress {
		type filter hook ingress device "eth0" priority -500; policy accept;
		ip protocol udp udp dport 6080 counter name gue_in drop
		ip protocol udp udp dport 7000 counter name nat_in drop
	}
}
`

func (b *bench) countersUp() error {
	path := filepath.Join(b.Tmp, "count.nft")
	if err := os.WriteFile(path, []byte(countTable), 0o644); err != nil {
		return err
	}
	for _, be := range b.Scenario.Lab.Backends {
		if _, err := be.Run(b.Ctx, "nft", "-f", path); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) countersDown() {
	for _, be := range b.Scenario.Lab.Backends {
		be.Run(b.Ctx, "nft", "delete", "table", "netdev", "sluicebench")
	}
}

var reCounter = regexp.MustCompile(`counter (\w+) \{\s*packets (\d+) bytes (\d+)`)

// backendCounts returns each backend's count of the named counter.
func (b *bench) backendCounts(name string) ([]uint64, error) {
	var out []uint64
	for _, be := range b.Scenario.Lab.Backends {
		txt, err := be.Run(b.Ctx, "nft", "list", "table", "netdev", "sluicebench")
		if err != nil {
			return nil, err
		}
		var v uint64
		found := false
		for _, m := range reCounter.FindAllStringSubmatch(txt, -1) {
			if m[1] == name {
				v, _ = strconv.ParseUint(m[2], 10, 64)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("%s: no counter %s in %q", be.Name, name, txt)
		}
		out = append(out, v)
	}
	return out, nil
}

type linkStats struct{ rx, tx, rxDrop uint64 }

func (b *bench) lbStats() linkStats {
	var st linkStats
	b.LB.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil || l.Attrs().Statistics == nil {
			return err
		}
		s := l.Attrs().Statistics
		st = linkStats{rx: s.RxPackets, tx: s.TxPackets, rxDrop: s.RxDropped}
		return nil
	})
	return st
}

// measure runs the rate steps against the running target; delivery is the
// backends' count on dport (6080 GUE or 7000 DNAT).
func (b *bench) measure(target, mode string, dport int, rates []float64) []step {
	name := map[int]string{6080: "gue_in", 7000: "nat_in"}[dport]
	fail := func(err error) []step {
		labbench.Logf("%s %s: %v", target, mode, err)
		return []step{{target: target, mode: mode, failed: labbench.OneLine(err.Error())}}
	}
	if err := b.countersUp(); err != nil {
		return fail(err)
	}
	defer b.countersDown()
	// Warm up (flow entries, conntrack, neighbours) and check that frames
	// arrive at all.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, err := b.blast(20000, 300*time.Millisecond); err != nil {
			return fail(err)
		}
		time.Sleep(200 * time.Millisecond)
		c, err := b.backendCounts(name)
		if err != nil {
			return fail(err)
		}
		if sum(c) > 0 {
			break
		}
		if time.Now().After(deadline) {
			return fail(errors.New("warm-up: nothing reached the backends"))
		}
	}
	var out []step
	for _, rate := range rates {
		if b.Ctx.Err() != nil {
			break
		}
		st := step{target: target, mode: mode, offered: rate, load: labbench.Loadavg()}
		before, err := b.backendCounts(name)
		if err != nil {
			return append(out, fail(err)...)
		}
		lb0 := b.lbStats()
		st.sent, st.elapsed, err = b.blast(rate, *duration)
		if err != nil {
			return append(out, fail(err)...)
		}
		time.Sleep(300 * time.Millisecond) // let queues drain
		after, err := b.backendCounts(name)
		if err != nil {
			return append(out, fail(err)...)
		}
		lb1 := b.lbStats()
		st.lbRx, st.lbTx, st.lbRxDrop = lb1.rx-lb0.rx, lb1.tx-lb0.tx, lb1.rxDrop-lb0.rxDrop
		for i := range after {
			st.perBackend = append(st.perBackend, after[i]-before[i])
		}
		st.delivered = sum(st.perBackend)
		labbench.Logf("%s %s %s: sent %.0f pps, LB rx %.0f tx %.0f, backends %.0f pps %v, loss %.2f%%  (load %s)",
			target, mode, rateName(rate), st.pps(st.sent), st.pps(st.lbRx), st.pps(st.lbTx), st.pps(st.delivered),
			st.perBackend, st.loss(), st.load)
		out = append(out, st)
		time.Sleep(time.Second)
	}
	return out
}

func sum(v []uint64) uint64 {
	var s uint64
	for _, x := range v {
		s += x
	}
	return s
}

func report(w io.Writer, b *bench, rs []step) {
	fmt.Fprintf(w, "\n## Small-packet forwarding through one LB node (64-byte UDP frames, %d flows, %v per step)\n\n", *flows, *duration)
	fmt.Fprintf(w, "Machine: %d vCPU shared by the blaster, router, LB node and backends; %s.\n", labbench.NumCPU(), labbench.Kernel())
	// Best delivered rate per target.
	type best struct {
		key  string
		st   step
		fail string
	}
	var bests []best
	idx := map[string]int{}
	for _, r := range rs {
		k := r.target + " " + r.mode
		i, ok := idx[k]
		if !ok {
			idx[k] = len(bests)
			bests = append(bests, best{key: k, st: r, fail: r.failed})
			continue
		}
		if r.failed == "" && (bests[i].fail != "" || r.pps(r.delivered) > bests[i].st.pps(bests[i].st.delivered)) {
			bests[i] = best{key: k, st: r}
		}
	}
	get := func(k string) float64 {
		if i, ok := idx[k]; ok && bests[i].fail == "" {
			return bests[i].st.pps(bests[i].st.delivered)
		}
		return 0
	}
	// Highest delivered rate among the steps with at most 0.1% loss.
	clean := map[string]float64{}
	for _, r := range rs {
		k := r.target + " " + r.mode
		if r.failed == "" && r.loss() <= 0.1 && r.pps(r.delivered) > clean[k] {
			clean[k] = r.pps(r.delivered)
		}
	}
	nft, afp := get("nftables jhash dnat"), get("sluice afpacket")
	fmt.Fprintln(w, "\n### Peak delivered rate (best step) and loss-free rate")
	fmt.Fprintln(w, "\n| target | delivered Mpps | at offered | sent Mpps | loss % | x nftables | x sluice afpacket | loss-free (<= 0.1%) Mpps |")
	fmt.Fprintln(w, "|---|---:|---|---:|---:|---:|---:|---:|")
	for _, bt := range bests {
		if bt.fail != "" {
			fmt.Fprintf(w, "| %s | not measured | | | | | | %s |\n", bt.key, labbench.Cell(bt.fail))
			continue
		}
		d := bt.st.pps(bt.st.delivered)
		cf := "-"
		if c := clean[bt.key]; c > 0 {
			cf = fmt.Sprintf("%.3f", c/1e6)
		}
		fmt.Fprintf(w, "| %s | %.3f | %s | %.3f | %.2f | %s | %s | %s |\n", bt.key, d/1e6, rateName(bt.st.offered),
			bt.st.pps(bt.st.sent)/1e6, bt.st.loss(), labbench.Ratio(d, nft), labbench.Ratio(d, afp), cf)
	}
	fmt.Fprintln(w, "\n### Every step")
	fmt.Fprintln(w, "\n| target | offered | sent Mpps | LB eth0 rx Mpps | LB eth0 tx Mpps | delivered Mpps | per backend (k frames) | loss % | load before |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---|---:|---|")
	for _, r := range rs {
		if r.failed != "" {
			fmt.Fprintf(w, "| %s %s | not measured | | | | | | | %s |\n", r.target, r.mode, labbench.Cell(r.failed))
			continue
		}
		var per []string
		for _, v := range r.perBackend {
			per = append(per, fmt.Sprintf("%.0f", float64(v)/1e3))
		}
		fmt.Fprintf(w, "| %s %s | %s | %.3f | %.3f | %.3f | %.3f | %s | %.2f | %s |\n", r.target, r.mode, rateName(r.offered),
			r.pps(r.sent)/1e6, r.pps(r.lbRx)/1e6, r.pps(r.lbTx)/1e6, r.pps(r.delivered)/1e6, strings.Join(per, "/"), r.loss(), r.load)
	}
	fmt.Fprintf(w, "\nSent: frames the blaster's sendmmsg calls accepted (raw AF_PACKET socket, PACKET_QDISC_BYPASS, in %s).\n", b.Scenario.Lab.Client.Name)
	fmt.Fprintln(w, "Delivered: frames counted (and dropped) at the backends' eth0 ingress: GUE (UDP :6080) for Sluice, UDP :7000 for nftables DNAT.")
	fmt.Fprintln(w, "Loss = 1 - delivered/sent, over the whole path client -> router -> LB -> bridge -> backend.")
	fmt.Fprintf(w, "\nBackend counting table (`nft -f FILE` in each backend namespace):\n\n```\n%s```\n", countTable)
	b.WriteNFT(w)
}

func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, f := range labbench.SplitList(s) {
		if f == "max" {
			out = append(out, 0)
			continue
		}
		mult := 1.0
		switch {
		case strings.HasSuffix(f, "k"):
			mult, f = 1e3, strings.TrimSuffix(f, "k")
		case strings.HasSuffix(f, "M"):
			mult, f = 1e6, strings.TrimSuffix(f, "M")
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("-rates: bad rate %q", f)
		}
		out = append(out, v*mult)
	}
	if len(out) == 0 {
		return nil, errors.New("-rates: no rate")
	}
	return out, nil
}

func rateName(r float64) string {
	switch {
	case r == 0:
		return "max"
	case r >= 1e6:
		return fmt.Sprintf("%gM", r/1e6)
	default:
		return fmt.Sprintf("%gk", r/1e3)
	}
}

// cpuStep is the CPU measurement of one target at a fixed rate.
type cpuStep struct {
	target, mode string
	rounds       []cpuRound
	failed       string
}

// cpuRound is one reference step and one step through the target.
type cpuRound struct {
	saturated               bool // the reference step kept the machine more than 80 % busy
	refDelivered, delivered uint64
	refBusy, busy, proc     time.Duration
	xdp                     time.Duration // the LB's XDP program (BPF statistics); 0 for nftables
}

// lbNs is the LB's CPU time per delivered packet: the machine's busy time
// per packet through the target minus that of the reference path.
func (r cpuRound) lbNs() float64 {
	return float64(r.busy)/float64(max(r.delivered, 1)) - float64(r.refBusy)/float64(max(r.refDelivered, 1))
}

func (r cpuRound) procNs() float64 { return float64(r.proc) / float64(max(r.delivered, 1)) }

func (r cpuRound) xdpNs() float64 { return float64(r.xdp) / float64(max(r.delivered, 1)) }

// ownNs is what is measured of the LB alone: its process and its XDP program.
func (r cpuRound) ownNs() float64 { return r.procNs() + r.xdpNs() }

// measureCPU runs -cpu-rounds pairs of steps at rate: the reference (client
// -> router -> first backend, no LB), then through the target.
func (b *bench) measureCPU(target, mode string, dport int, rate float64, pid int) cpuStep {
	cs := cpuStep{target: target, mode: mode}
	name := map[int]string{6080: "gue_in", 7000: "nat_in"}[dport]
	if err := b.countersUp(); err != nil {
		cs.failed = err.Error()
		return cs
	}
	defer b.countersDown()
	if pid > 0 {
		st, err := labbench.EnableBPFStats()
		if err != nil {
			labbench.Logf("BPF statistics unavailable: %v", err)
		} else {
			defer st.Close()
		}
	}
	run := func(frames [][]byte, counter string, pid int) (uint64, labbench.CPUSample, error) {
		before, err := b.backendCounts(counter)
		if err != nil {
			return 0, labbench.CPUSample{}, err
		}
		c0, err := labbench.ReadCPU(pid)
		if err != nil {
			return 0, labbench.CPUSample{}, err
		}
		if _, _, err := b.blastFrames(frames, rate, *duration); err != nil {
			return 0, labbench.CPUSample{}, err
		}
		time.Sleep(200 * time.Millisecond)
		c1, err := labbench.ReadCPU(pid)
		if err != nil {
			return 0, labbench.CPUSample{}, err
		}
		after, err := b.backendCounts(counter)
		if err != nil {
			return 0, labbench.CPUSample{}, err
		}
		return sum(after) - sum(before), c1.Sub(c0), nil
	}
	for i := range *cpuRounds {
		if b.Ctx.Err() != nil {
			break
		}
		var r cpuRound
		var ref, got labbench.CPUSample
		var err error
		var x0, x1 time.Duration
		if r.refDelivered, ref, err = run(b.ref, "gue_in", 0); err == nil {
			if pid > 0 {
				x0, _, _ = b.XDPRuntime(b.LB)
			}
			r.delivered, got, err = run(b.frames, name, pid)
			if pid > 0 {
				x1, _, _ = b.XDPRuntime(b.LB)
			}
		}
		r.xdp = x1 - x0
		if err != nil {
			cs.failed = err.Error()
			return cs
		}
		r.refBusy, r.busy, r.proc = ref.Busy, got.Busy, got.Proc
		r.saturated = float64(r.refBusy) > 0.8*float64(labbench.NumCPU())*float64(*duration)
		labbench.Logf("cpu %s %s round %d at %s: reference %d packets %v busy; target %d packets %v busy (process %v, XDP %v): LB %.0f ns/packet, own %.0f",
			target, mode, i+1, rateName(rate), r.refDelivered, r.refBusy, r.delivered, r.busy, r.proc, r.xdp, r.lbNs(), r.ownNs())
		cs.rounds = append(cs.rounds, r)
	}
	return cs
}

// median returns the median of f over the rounds.
func median(rs []cpuRound, f func(cpuRound) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	if len(v) == 0 {
		return 0
	}
	return v[len(v)/2]
}

func reportCPU(w io.Writer, cs []cpuStep, rate float64) {
	fmt.Fprintf(w, "\n### LB CPU time per forwarded packet at %s pps (median of %d rounds)\n\n", rateName(rate), *cpuRounds)
	var nft, afxdp float64
	for _, c := range cs {
		if c.failed != "" || len(c.rounds) == 0 {
			continue
		}
		switch c.target + " " + c.mode {
		case "nftables jhash dnat":
			nft = median(c.rounds, cpuRound.lbNs)
		case "sluice afxdp":
			afxdp = median(c.rounds, cpuRound.lbNs)
		}
	}
	fmt.Fprintln(w, "| target | delivered (last round) | machine busy ns/packet | reference ns/packet | LB ns/packet | x nftables | x sluice afxdp | sluice process ns/packet | XDP program ns/packet | process + XDP x afxdp |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	var ownAF float64
	for _, c := range cs {
		if c.failed == "" && len(c.rounds) > 0 && c.target == "sluice" && c.mode == "afxdp" {
			ownAF = median(c.rounds, cpuRound.ownNs)
		}
	}
	for _, c := range cs {
		if c.failed != "" || len(c.rounds) == 0 {
			fmt.Fprintf(w, "| %s %s | not measured | | | | | | %s |\n", c.target, c.mode, labbench.Cell(labbench.OneLine(c.failed)))
			continue
		}
		last := c.rounds[len(c.rounds)-1]
		lb := median(c.rounds, cpuRound.lbNs)
		sat := 0
		for _, r := range c.rounds {
			if r.saturated {
				sat++
			}
		}
		if sat > 0 {
			c.mode += fmt.Sprintf(" (machine saturated by other work in %d of %d rounds: busy-time columns not meaningful)", sat, len(c.rounds))
		}
		proc, xdp, own := "-", "-", "-"
		if c.target == "sluice" {
			proc = fmt.Sprintf("%.0f", median(c.rounds, cpuRound.procNs))
			xdp = fmt.Sprintf("%.0f", median(c.rounds, cpuRound.xdpNs))
			own = labbench.Ratio(median(c.rounds, cpuRound.ownNs), ownAF)
		}
		fmt.Fprintf(w, "| %s %s | %d | %.0f | %.0f | %.0f | %s | %s | %s | %s | %s |\n", c.target, c.mode, last.delivered,
			median(c.rounds, func(r cpuRound) float64 { return float64(r.busy) / float64(max(r.delivered, 1)) }),
			median(c.rounds, func(r cpuRound) float64 { return float64(r.refBusy) / float64(max(r.refDelivered, 1)) }),
			lb, labbench.Ratio(lb, nft), labbench.Ratio(lb, afxdp), proc, xdp, own)
	}
	fmt.Fprintln(w, "\nMachine busy: all CPUs but idle and iowait (/proc/stat), over the step, per packet delivered to the backends.")
	fmt.Fprintln(w, "Reference: the same frames sent from the client through the router straight to the first backend (no LB), measured right before each round.")
	fmt.Fprintln(w, "LB = machine busy - reference: what the LB hop adds (the LB node's work and the router's second forwarding of each packet).")
	fmt.Fprintln(w, "Other work on the machine during a step is counted too: compare targets of the same run, and only when the machine is otherwise idle (load average above).")
	fmt.Fprintln(w, "Sluice process: user + system time of `sluice lb` (/proc/PID/stat); XDP program: its run time from the kernel's BPF statistics (BPF_ENABLE_STATS). Both are the LB's alone, whatever else runs; the veth driver's and the copy into the AF_XDP socket's work in softirq is in neither.")
}
