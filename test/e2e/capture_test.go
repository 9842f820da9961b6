package e2e

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/scenario"
)

// captured is what a capture file held.
type captured struct {
	ingress, egress int      // packets of the flow, as received and as sent
	others          []string // anything else
	backends        map[netip.Addr]int
	ifaceDropped    []uint64 // each interface's dropped count, from its statistics
}

// readCapture reads a pcapng capture of the client flow from port cport to
// the VIP's HTTP port: ingress packets are that flow; egress packets are
// GUE to a backend carrying it.
func readCapture(t *testing.T, path string, vip netip.Addr, cport uint16) captured {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	c := captured{backends: map[netip.Addr]int{}}
	flowOf := func(ip gopacket.NetworkLayer, tcp *layers.TCP) bool {
		if ip == nil || tcp == nil {
			return false
		}
		dst, _ := netip.AddrFromSlice(ip.NetworkFlow().Dst().Raw())
		return dst.Unmap() == vip && uint16(tcp.SrcPort) == cport && tcp.DstPort == scenario.HTTPPort
	}
	for {
		data, ci, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pkt := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		switch ci.InterfaceIndex {
		case 0:
			if flowOf(pkt.NetworkLayer(), tcp) {
				c.ingress++
				continue
			}
		case 1:
			udp, _ := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if udp != nil && udp.DstPort == 6080 && len(udp.Payload) > 4 {
				inner := gopacket.NewPacket(udp.Payload[4:], layers.LayerTypeIPv4, gopacket.Default)
				itcp, _ := inner.Layer(layers.LayerTypeTCP).(*layers.TCP)
				if flowOf(inner.NetworkLayer(), itcp) {
					be, _ := netip.AddrFromSlice(pkt.NetworkLayer().NetworkFlow().Dst().Raw())
					c.backends[be]++
					c.egress++
					continue
				}
			}
		}
		c.others = append(c.others, fmt.Sprintf("interface %d: %v", ci.InterfaceIndex, pkt))
	}
	for i := range r.NInterfaces() {
		intf, _ := r.Interface(i)
		c.ifaceDropped = append(c.ifaceDropped, intf.Statistics.PacketsDropped)
	}
	return c
}

// startLab starts name in node n's namespace in the background; the test
// stops it at its end if it still runs.
func startLab(t *testing.T, n *lab.Node, name string, args ...string) *lab.Process {
	t.Helper()
	p, err := n.Start(context.Background(), name, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	return p
}

// waitLab waits for p (at most 20 s) and returns its output; it fails t if
// p failed.
func waitLab(t *testing.T, p *lab.Process) string {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("%v did not end:\n%s", p.Cmd.Args, p.Output())
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("%v: %v\n%s", p.Cmd.Args, err, p.Output())
	}
	return p.Output()
}

// A capture on the LB node (AF_XDP, where tcpdump sees nothing) of one
// client port, while that client and others make HTTP requests: the file
// holds exactly that connection's packets as received and their GUE copies
// to one backend as sent, and the capture's drop count (0). The same
// capture streamed to standard output is read by tcpdump. Control run: a
// capture of a port no client uses holds nothing.
func TestE2ECapture(t *testing.T) {
	s := start(t, scenario.Options{IO: "afxdp", AgentMetrics: true})
	ctx := t.Context()
	lb := s.Lab.LBs[0]
	vip := s.Opts.VIP4
	url := "http://" + netip.AddrPortFrom(vip, scenario.HTTPPort).String() + "/"
	dir := t.TempDir()
	capture := func(port uint16, out string, extra ...string) *lab.Process {
		args := append([]string{"ctl", "capture", "--port", fmt.Sprint(port), "--duration", "6s", "-c", "10000", "-w", out}, extra...)
		return startLab(t, lb, sluiceBin, args...)
	}
	const cport = 40123
	file := filepath.Join(dir, "flow.pcapng")
	none := filepath.Join(dir, "none.pcapng")
	p1 := capture(cport, file)
	p2Out := filepath.Join(dir, "tcpdump.txt")
	time.Sleep(500 * time.Millisecond) // the capture starts
	// The flow: 10 requests on one connection from cport; other traffic
	// beside it.
	urls := strings.Fields(strings.Repeat(url+" ", 10))
	if out, err := s.Lab.Client.Run(ctx, "curl", append([]string{"-sS", "--local-port", fmt.Sprint(cport), "--max-time", "5"}, urls...)...); err != nil {
		t.Fatalf("curl from port %d: %v\n%s", cport, err, out)
	}
	if _, err := s.Curl(ctx, vip, 20); err != nil {
		t.Fatal(err)
	}
	res1 := waitLab(t, p1)
	c := readCapture(t, file, vip, cport)
	t.Logf("capture of port %d: %d ingress, %d egress (backends %v), %d other packets; interface drops %v; ctl: %s",
		cport, c.ingress, c.egress, c.backends, len(c.others), c.ifaceDropped, strings.TrimSpace(res1))
	if c.ingress < 10 || c.egress != c.ingress || len(c.backends) != 1 || len(c.others) != 0 {
		t.Errorf("want the connection's packets (at least 10) as received and the same number as sent to one backend, nothing else; others: %v", c.others[:min(3, len(c.others))])
	}
	if len(c.ifaceDropped) != 2 || c.ifaceDropped[0] != 0 || !strings.Contains(res1, "0 copies dropped") {
		t.Errorf("drop counts %v, ctl %q", c.ifaceDropped, res1)
	}

	// Streamed to tcpdump; control: a port no one uses.
	// (One capture at a time: each waits for the last.)
	p2 := startLab(t, lb, "sh", "-c", fmt.Sprintf("%s ctl capture --port %d --duration 3s -w - | tcpdump -nr - > %s 2>/dev/null", sluiceBin, cport+1, p2Out))
	time.Sleep(500 * time.Millisecond)
	if out, err := s.Lab.Client.Run(ctx, "curl", append([]string{"-sS", "--local-port", fmt.Sprint(cport + 1), "--max-time", "5"}, urls[:3]...)...); err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	waitLab(t, p2)
	// To a TAP interface that tcpdump opens.
	p4 := startLab(t, lb, sluiceBin, "ctl", "capture", "--port", fmt.Sprint(cport+4), "--duration", "3s", "--iface", "sluice-mon0")
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, err := lb.Run(ctx, "ip", "link", "show", "sluice-mon0"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sluice-mon0:\n%s", p4.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	tapOut := filepath.Join(dir, "tap.txt")
	p5 := startLab(t, lb, "sh", "-c", fmt.Sprintf("timeout 5 tcpdump -lni sluice-mon0 -c 6 > %s 2>/dev/null", tapOut))
	time.Sleep(500 * time.Millisecond)
	if out, err := s.Lab.Client.Run(ctx, "curl", "-sS", "--local-port", fmt.Sprint(cport+4), "--max-time", "5", url); err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	waitLab(t, p5)
	tap, _ := os.ReadFile(tapOut)
	t.Logf("tcpdump -i sluice-mon0 saw %d packets; ctl: %s", strings.Count(string(tap), "\n"), strings.TrimSpace(waitLab(t, p4)))
	if strings.Count(string(tap), "\n") != 6 {
		t.Errorf("tcpdump on the TAP interface:\n%s", tap)
	}

	// The backend agents: what they deliver of one client port.
	var agents []*lab.Process
	for i, be := range s.Lab.Backends {
		agents = append(agents, startLab(t, be, sluiceBin, "ctl", "--addr", scenario.AgentMetricsAddr, "capture",
			"--port", fmt.Sprint(cport+5), "--duration", "3s", "-w", filepath.Join(dir, fmt.Sprintf("agent%d.pcapng", i))))
	}
	time.Sleep(500 * time.Millisecond)
	if out, err := s.Lab.Client.Run(ctx, "curl", "-sS", "--local-port", fmt.Sprint(cport+5), "--max-time", "5", url); err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	delivered := 0
	for i, p := range agents {
		t.Logf("be%d's agent: %s", i+1, strings.TrimSpace(waitLab(t, p)))
		f, err := os.Open(filepath.Join(dir, fmt.Sprintf("agent%d.pcapng", i)))
		if err != nil {
			t.Fatal(err)
		}
		r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			t.Fatal(err)
		}
		for {
			data, ci, err := r.ReadPacketData()
			if err != nil {
				break
			}
			pkt := gopacket.NewPacket(data, layers.LayerTypeIPv4, gopacket.Default)
			tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if ci.InterfaceIndex != 0 || tcp == nil || uint16(tcp.SrcPort) != cport+5 {
				t.Errorf("be%d's agent captured %v on interface %d", i+1, pkt, ci.InterfaceIndex)
				continue
			}
			delivered++
		}
		f.Close()
	}
	if delivered < 4 {
		t.Errorf("the agents' captures hold %d of the connection's packets, want its packets (at least 4)", delivered)
	}

	p3 := capture(cport+2, none, "--duration", "2s")
	time.Sleep(500 * time.Millisecond)
	if out, err := s.Lab.Client.Run(ctx, "curl", append([]string{"-sS", "--local-port", fmt.Sprint(cport + 3), "--max-time", "5"}, urls[:3]...)...); err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	waitLab(t, p3)
	text, _ := os.ReadFile(p2Out)
	lines := strings.Count(string(text), "\n")
	t.Logf("tcpdump read %d packets from the streamed capture; first: %s", lines, strings.SplitN(string(text), "\n", 2)[0])
	if lines < 6 || !strings.Contains(string(text), fmt.Sprintf(".%d >", cport+1)) {
		t.Errorf("tcpdump -r - read %d lines:\n%s", lines, text)
	}
	if c := readCapture(t, none, vip, cport+2); c.ingress+c.egress+len(c.others) != 0 {
		t.Errorf("control: a capture of a port no client used holds %d packets", c.ingress+c.egress+len(c.others))
	}
}

// A capture on a node whose established flows the XDP program forwards
// (node.offload: auto): while it runs the offload pauses, so the streams'
// established packets reach the workers and are in the capture; once it
// ends the kernel forwards them again. Control: before the capture the
// kernel forwarded them (the capture would otherwise have missed them).
func TestE2ECaptureOffloaded(t *testing.T) {
	s := start(t, scenario.Options{IO: "afxdp", XDPMode: "native", Offload: true, LBs: 1, Streams: true})
	lb := s.Lab.LBs[0]
	const n = 20
	openStreams(t, s, n, 15*time.Second)
	forwarded := func(d time.Duration) uint64 {
		a := lbStats(t, s, 0).Offload.Forwarded
		time.Sleep(d)
		return lbStats(t, s, 0).Offload.Forwarded - a
	}
	time.Sleep(time.Second) // the installs land
	before := forwarded(time.Second)
	file := filepath.Join(t.TempDir(), "streams.pcapng")
	p := startLab(t, lb, sluiceBin, "ctl", "capture", "--port", fmt.Sprint(scenario.StreamPort), "--where", "ingress", "--duration", "3s", "-c", "100000", "-w", file)
	time.Sleep(time.Second)
	during := forwarded(time.Second)
	res := strings.TrimSpace(waitLab(t, p))
	after := forwarded(2 * time.Second)
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	established := 0
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		pkt := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		if tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP); tcp != nil && uint16(tcp.DstPort) == scenario.StreamPort && !tcp.SYN && !tcp.FIN && !tcp.RST {
			established++
		}
	}
	t.Logf("XDP forwarded %d packets in the second before the capture, %d in a second during it, %d in the 2 s after; the capture (%s) holds %d established packets of the streams",
		before, during, after, res, established)
	if before < n {
		t.Fatalf("control: the kernel forwarded %d packets before the capture: the streams were not offloaded", before)
	}
	if established < 3*n || during > before/10 {
		t.Errorf("with a capture running: %d established packets captured, %d forwarded by XDP", established, during)
	}
	if after < n {
		t.Errorf("the offload did not resume after the capture: %d forwarded by XDP", after)
	}
}
