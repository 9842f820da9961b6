package egress

import (
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/encap"
)

// BenchmarkEgress measures the program's own run time per packet
// (kernel BPF statistics, run_time_ns / run_cnt) for a packet of an
// installed flow (hit: parse, lookup, encapsulate) and of no flow (miss:
// parse, lookup), and reports hit/miss. Each op is one BPF_PROG_TEST_RUN of
// a 100-byte TCP/IPv4 frame; ns/op includes the system call, the copies and
// the skb the kernel builds, which a real packet does not pay here (a
// repeated test run cannot measure the hit: the first run encapsulates the
// skb, and the next ones see the outer packet). The fib lookup is off, as
// in the other test runs (it costs one route and neighbour lookup more).
func BenchmarkEgress(b *testing.B) {
	p := loadT(b)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Skipf("BPF statistics: %v", err)
	}
	defer stats.Close()
	hit := l4Frame(unix.IPPROTO_TCP, client4, vip4, 1000, 443, tcpACK, 0, make([]byte, 100-54))
	miss := l4Frame(unix.IPPROTO_TCP, client4, vip4, 1001, 443, tcpACK, 0, make([]byte, 100-54))
	h := uint64(77)
	if err := p.Put(flowOf(unix.IPPROTO_TCP, client4, vip4, 1000, 443), Target{Backend: back4, SrcPort: encap.SrcPort(h), UDPChecksum: true}); err != nil {
		b.Fatal(err)
	}
	prog := p.objs.SluiceEgress
	measure := func(frame []byte) float64 {
		opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
		s0, err := prog.Stats()
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			if _, err := prog.Run(opts); err != nil {
				b.Fatal(err)
			}
			opts.DataOut = opts.DataOut[:cap(opts.DataOut)]
		}
		s1, err := prog.Stats()
		if err != nil {
			b.Fatal(err)
		}
		if s1.RunCount == s0.RunCount {
			b.Fatal("no runs counted")
		}
		return float64((s1.Runtime - s0.Runtime).Nanoseconds()) / float64(s1.RunCount-s0.RunCount)
	}
	b.ResetTimer()
	hitNs := measure(hit)
	missNs := measure(miss)
	b.StopTimer()
	if c := counters(b, p); c.Direct < uint64(b.N) || c.Miss < uint64(b.N) {
		b.Fatalf("counters %+v after %d runs each", c, b.N)
	}
	b.ReportMetric(hitNs, "hit-ns/pkt")
	b.ReportMetric(missNs, "miss-ns/pkt")
	b.ReportMetric(hitNs/missNs, "hit/miss")
}
