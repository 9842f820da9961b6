//go:build linux

package afpacket

import (
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/link"
)

// blaster sends copies of one frame as fast as sendmmsg goes.
type blaster struct {
	fd   int
	msgs []unix.Mmsghdr
	iovs []unix.Iovec
}

func newBlaster(fd int, frame []byte, batch int) *blaster {
	b := &blaster{fd: fd, msgs: make([]unix.Mmsghdr, batch), iovs: make([]unix.Iovec, batch)}
	for i := range b.msgs {
		b.iovs[i].Base = &frame[0]
		b.iovs[i].SetLen(len(frame))
		b.msgs[i].Hdr.Iov = &b.iovs[i]
		b.msgs[i].Hdr.SetIovlen(1)
	}
	return b
}

// send transmits n frames; it returns how many the kernel took.
func (b *blaster) send(n int) int {
	sent := 0
	for sent < n {
		k := min(n-sent, len(b.msgs))
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(b.fd), uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(k), 0, 0, 0)
		switch e {
		case 0:
			sent += int(r)
		case unix.EAGAIN, unix.ENOBUFS, unix.EINTR:
			time.Sleep(50 * time.Microsecond)
		default:
			return sent
		}
	}
	return sent
}

// BenchmarkForward measures the link forwarding 64-byte UDP frames: a
// blaster in the peer namespace sends b.N frames into the link's veth, the
// link receives them and sends every one straight back out (the one-armed
// shape of an LB node). It reports the forwarding rate (frames the link sent
// per second, from the first frame sent by the blaster to the last one
// forwarded) and the loss. On a 2-core machine blaster, forwarder and both
// kernels' softirq work share the cores; the numbers are informative only.
//
//	go test -run '^$' -bench Forward -benchtime 300000x ./internal/link/afpacket
func BenchmarkForward(b *testing.B) {
	for _, bc := range []struct {
		name string
		c    Config
	}{
		{"default", Config{}},
		{"qdisc-bypass", Config{QdiscBypass: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchForward(b, bc.c)
		})
	}
}

func benchForward(b *testing.B, c Config) {
	p := newPair(b)
	l := openLink(b, p.a, ifA, c)
	setFilter(b, l, vip4)
	raw := openRaw(b, p.b, ifB, false)
	frame := udpFrame(addrB, vip4, 1, 2)
	if len(frame) != 64 {
		b.Fatalf("frame is %d bytes, want 64", len(frame))
	}
	bl := newBlaster(raw.fd, frame, 64)
	frames := make([]link.Frame, l.BatchSize())
	n := b.N
	before := l.Stats()

	b.ResetTimer()
	start := time.Now()
	offered := make(chan int, 1)
	go func() { offered <- bl.send(n) }()
	var received int
	var last time.Time
	blasted := -1
	idleSince := time.Time{}
	for received < n {
		k, err := l.Recv(frames)
		if err != nil {
			b.Fatal(err)
		}
		if k > 0 {
			received += k
			l.Send(frames[:k])
			last, idleSince = time.Now(), time.Time{}
			continue
		}
		if blasted < 0 {
			select {
			case blasted = <-offered:
			default:
			}
		}
		if blasted >= 0 { // the blaster is done: stop after 200ms without frames
			if idleSince.IsZero() {
				idleSince = time.Now()
			} else if time.Since(idleSince) > 200*time.Millisecond {
				break
			}
		}
	}
	b.StopTimer()
	if blasted < 0 {
		blasted = <-offered
	}
	st := l.Stats()
	fwd := st.Sent - before.Sent
	elapsed := last.Sub(start)
	if fwd == 0 || elapsed <= 0 {
		b.Fatalf("forwarded %d frames", fwd)
	}
	b.ReportMetric(float64(fwd)/elapsed.Seconds(), "pps")
	b.ReportMetric(100*float64(uint64(blasted)-fwd)/float64(blasted), "loss%")
	b.ReportMetric(float64(blasted)/elapsed.Seconds(), "offered-pps")
	b.ReportMetric(0, "ns/op")
	b.Logf("N=%d offered %d, received %d, forwarded %d, send errors %d, kernel drops %d in %v",
		n, blasted, st.Received-before.Received, fwd, st.SendErrors-before.SendErrors, st.KernelDrops-before.KernelDrops, elapsed)
}
