package afxdp

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/link"
)

// BenchmarkForward measures a receive -> prepend a header -> send loop over
// a veth: a blaster in the other namespace sends 60-byte UDP frames to the
// VIP with sendmmsg, keeping at most 1024 in flight (closed loop, so the
// rate is what the forwarder sustains without loss); the forwarder sends
// every frame back with a 14-byte header prepended into the headroom.
// Reported: pps delivered to the other side, and loss-% (frames sent and
// never delivered). One op is one frame. Blaster, forwarder and softirqs
// share the machine's cores, so this is informative only.
func BenchmarkForward(b *testing.B) {
	for _, mode := range modes {
		b.Run(mode.String(), func(b *testing.B) { benchForward(b, mode) })
	}
}

func benchForward(b *testing.B, mode Mode) {
	n := min(b.N, 2_000_000) // bounded whatever -benchtime says
	tb := newTestbed(b)
	l := tb.open(b, Config{Mode: mode})
	if err := l.SetVIPs([]netip.Addr{vip4}); err != nil {
		b.Fatal(err)
	}
	tx := openPacket(b, tb.cl, tb.clIndex, 0)
	unix.SetsockoptInt(tx.fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
	hdr := tb.encapHeader(0)[:14]

	const batch, window = 64, 1024
	frames := make([][]byte, batch)
	for i := range frames {
		frames[i] = tb.clFrame(vip4, uint32(i), 18)
	}
	msgs := make([]unix.Mmsghdr, batch)
	iovs := make([]unix.Iovec, batch)

	var forwarded atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		fs := make([]link.Frame, l.BatchSize())
		for {
			select {
			case <-stop:
				return
			default:
			}
			k, err := l.Recv(fs)
			if err != nil {
				return
			}
			for i := range fs[:k] {
				f := &fs[i]
				f.Off -= len(hdr)
				f.Len += len(hdr)
				copy(f.Buf[f.Off:], hdr)
			}
			s, _ := l.Send(fs[:k])
			forwarded.Add(int64(s))
		}
	}()
	rxBefore := tb.clRxPackets(b)

	b.ResetTimer()
	start := time.Now()
	sent := 0
	deadline := start.Add(60 * time.Second)
	for sent < n && time.Now().Before(deadline) {
		if int64(sent)-forwarded.Load() > window-batch {
			time.Sleep(20 * time.Microsecond)
			continue
		}
		k, err := tx.sendBatch(frames[:min(batch, n-sent)], msgs, iovs)
		if err != nil && err != unix.ENOBUFS && err != unix.EAGAIN {
			b.Fatal(err)
		}
		sent += k
	}
	// Wait for the tail to come back (at most 1s).
	for tail := time.Now().Add(time.Second); forwarded.Load() < int64(sent) && time.Now().Before(tail); {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	close(stop)
	<-done
	time.Sleep(10 * time.Millisecond)
	delivered := tb.clRxPackets(b) - rxBefore
	b.ReportMetric(float64(delivered)/elapsed.Seconds(), "pps")
	// delivered also counts the few IPv6 ND/MLD packets of the interface.
	b.ReportMetric(100*float64(max(int64(sent)-delivered, 0))/float64(max(sent, 1)), "loss-%")
	if st := l.Stats(); n > 100_000 {
		b.Logf("%s: sent %d delivered %d in %v; kicks %d stalls %d fill-empty %d xdp %+v",
			mode, sent, delivered, elapsed.Round(time.Millisecond), st.Kicks, st.TxStalls, st.FillRingEmpty, st.XDP)
	}
}

// clRxPackets is the traffic side's received-packets counter.
func (tb *testbed) clRxPackets(t testing.TB) int64 {
	t.Helper()
	l, err := tb.clHandle.LinkByName("cl0")
	if err != nil {
		t.Fatal(err)
	}
	return int64(l.Attrs().Statistics.RxPackets)
}
