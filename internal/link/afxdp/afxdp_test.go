package afxdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/nettest"
)

var modes = []Mode{Native, Generic}

// checkFrames verifies, on the goroutine that owns l, that every frame is in
// exactly one state and that the per-state counts match the counters kept
// by the ring operations: frames in the kernel == frames put on the fill
// ring - frames taken from the RX ring, lent == l.lent, on TX == l.txOut,
// spare and reserve == the lengths of their stacks (the reserve at most its
// size).
func checkFrames(l *Link) error {
	var n [stGone + 1]int
	for _, s := range l.state {
		n[s]++
	}
	if n[stKernel] != int(l.fillTotal-l.rxTotal) || n[stLent] != l.lent || n[stTx] != l.txOut ||
		n[stSpare] != len(l.spare) || n[stReserve] != len(l.reserve) || len(l.reserve) > l.reserveSize || n[stGone] != 0 {
		return fmt.Errorf("frames: kernel %d (fill-rx %d) lent %d (%d) tx %d (%d) spare %d (%d) reserve %d (%d of %d) gone %d",
			n[stKernel], l.fillTotal-l.rxTotal, n[stLent], l.lent, n[stTx], l.txOut, n[stSpare], len(l.spare),
			n[stReserve], len(l.reserve), l.reserveSize, n[stGone])
	}
	for _, idx := range l.reserve {
		if l.state[idx] != stReserve {
			return fmt.Errorf("frame %d in the reserve is in state %d", idx, l.state[idx])
		}
	}
	return nil
}

// settle services l until every transmitted frame has completed and is
// back in the reserve or the fill ring, then checks the frame accounting:
// the reserve is full and every other frame is in the kernel. It must run on
// the goroutine that owns l (or after it stopped).
func settle(t *testing.T, l *Link) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for l.Stats().Frames.TxInFlight > 0 && time.Now().Before(deadline) {
		l.Recv(nil)
		time.Sleep(time.Millisecond)
	}
	if err := checkFrames(l); err != nil {
		t.Error(err)
	}
	if f := l.Stats().Frames; f.Reserve != l.reserveSize || f.Kernel != f.Total-l.reserveSize {
		t.Errorf("after settling: %+v, want a full reserve of %d and every other frame in the kernel", f, l.reserveSize)
	}
}

// receiveAll runs Recv on a goroutine until want frames arrived or timeout,
// calling fn on each frame (then releasing it).
func receiveAll(l *Link, want int, timeout time.Duration, fn func(f *link.Frame)) <-chan int {
	done := make(chan int, 1)
	go func() {
		frames := make([]link.Frame, l.BatchSize())
		got := 0
		deadline := time.Now().Add(timeout)
		for got < want && time.Now().Before(deadline) {
			n, err := l.Recv(frames)
			if err != nil {
				break
			}
			for i := range frames[:n] {
				fn(&frames[i])
			}
			l.Release(frames[:n])
			got += n
		}
		done <- got
	}()
	return done
}

func TestNewErrors(t *testing.T) {
	_, err := New("nonexistent-x0", Config{})
	if !errors.Is(err, ErrNoInterface) {
		t.Errorf("missing interface: %v, want ErrNoInterface", err)
	}
	for _, c := range []Config{
		{BatchSize: -1}, {Headroom: 4000}, {NumFrames: 10}, {Queue: -1}, {Mode: 7}, {Poll: -time.Second},
		// Two batches and the reserve must fit.
		{NumFrames: 2*64 + 63}, {BatchSize: 8, NumFrames: 40, ReserveFrames: 25},
	} {
		if _, err := New("lo", c); err == nil || errors.Is(err, ErrNoInterface) {
			t.Errorf("New(%+v) = %v, want a config error", c, err)
		}
	}
	nettest.RequireRoot(t)
	tb := newTestbed(t)
	err = tb.lb.Do(func() error { _, err := New("lb0", Config{Queue: 1}); return err })
	if err == nil {
		t.Error("queue 1 of a one-queue veth accepted")
	}
	l := tb.open(t, Config{Mode: Generic})
	err = tb.lb.Do(func() error { _, err := New("lb0", Config{}); return err })
	if !errors.Is(err, ErrBusy) {
		t.Errorf("second link on the same queue: %v, want ErrBusy", err)
	}
	err = tb.lb.Do(func() error { _, err := New("lb0", Config{Mode: Native}); return err })
	if !errors.Is(err, ErrBusy) {
		t.Errorf("link in native mode on a generic attachment: %v, want ErrBusy", err)
	}
	// The failed attempts left the first link's program in place.
	if x := tb.xdpAttached(t); x == nil {
		t.Error("program gone after failed New calls")
	} else if id, _ := l.ProgramID(); x.ProgId != id {
		t.Errorf("attached program %d, the link's is %d", x.ProgId, id)
	}
}

// TestReceive sends VIP and non-VIP frames (IPv4 and IPv6) from the other
// namespace: the link receives exactly the VIP ones, byte-exact; the kernel
// receives the others; ping and ARP/ND keep working.
func TestReceive(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) { testReceive(t, mode) })
	}
}

func testReceive(t *testing.T, mode Mode) {
	tb := newTestbed(t)
	l := tb.open(t, Config{Mode: mode, NumFrames: 2048})
	if got := l.AttachMode(); got != mode.String() {
		t.Fatalf("AttachMode %q, want %q", got, mode)
	}
	if err := l.SetVIPs([]netip.Addr{vip4, vip6}); err != nil {
		t.Fatal(err)
	}
	// The kernel side listens on the interface's own addresses.
	var k4, k6 *net.UDPConn
	err := tb.lb.Do(func() (err error) {
		if k4, err = net.ListenUDP("udp4", &net.UDPAddr{IP: lbAddr4.AsSlice(), Port: 9999}); err != nil {
			return err
		}
		k6, err = net.ListenUDP("udp6", &net.UDPAddr{IP: lbAddr6.AsSlice(), Port: 9999})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer k4.Close()
	defer k6.Close()
	bigBuffer(t, k4)
	bigBuffer(t, k6)

	const nVIP4, nVIP6, nOther = 1000, 200, 200
	// seq < nVIP4: IPv4 VIP; then IPv6 VIP; then non-VIP (alternating families).
	frame := func(seq uint32) []byte {
		size := 18 + int(seq%700)
		switch {
		case seq < nVIP4:
			return tb.clFrame(vip4, seq, size)
		case seq < nVIP4+nVIP6:
			return tb.clFrame(vip6, seq, size)
		case seq%2 == 0:
			return tb.clFrame(lbAddr4, seq, size)
		default:
			return tb.clFrame(lbAddr6, seq, size)
		}
	}
	var received atomic.Int64
	var bad []string
	seen := make(map[uint32]bool)
	done := receiveAll(l, nVIP4+nVIP6, 10*time.Second, func(f *link.Frame) {
		received.Add(1)
		if f.Off != l.Headroom() || len(f.Buf) != FrameSize || f.Handle%FrameSize != 0 {
			bad = append(bad, fmt.Sprintf("frame Off %d Len %d len(Buf) %d Handle %#x", f.Off, f.Len, len(f.Buf), f.Handle))
			return
		}
		b := f.Bytes()
		off := 14 + 20 + 8
		if binary.BigEndian.Uint16(b[12:]) == 0x86dd {
			off = 14 + 40 + 8
		}
		seq := binary.BigEndian.Uint32(b[off:])
		if seen[seq] {
			bad = append(bad, fmt.Sprintf("seq %d twice", seq))
		}
		seen[seq] = true
		if !bytes.Equal(b, frame(seq)) {
			bad = append(bad, fmt.Sprintf("seq %d differs", seq))
		}
	})

	tx := openPacket(t, tb.cl, tb.clIndex, 0)
	kernelGot := make(chan int, 2)
	for _, c := range []*net.UDPConn{k4, k6} {
		go func() {
			buf := make([]byte, 2048)
			n := 0
			for {
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, _, err := c.ReadFromUDP(buf); err != nil {
					kernelGot <- n
					return
				}
				n++
			}
		}()
	}
	for seq := uint32(0); seq < nVIP4+nVIP6+nOther; seq++ {
		// At most 256 VIP frames in flight: a veth in native mode queues 256.
		for int64(min(seq, nVIP4+nVIP6))-received.Load() > 256 {
			time.Sleep(50 * time.Microsecond)
		}
		tx.send(t, frame(seq))
	}
	got := <-done
	kernel := <-kernelGot + <-kernelGot
	for _, s := range bad[:min(len(bad), 10)] {
		t.Error(s)
	}
	if got != nVIP4+nVIP6 || len(seen) != nVIP4+nVIP6 {
		t.Errorf("link received %d frames (%d distinct), want %d", got, len(seen), nVIP4+nVIP6)
	}
	if kernel != nOther {
		t.Errorf("kernel sockets received %d, want %d", kernel, nOther)
	}
	for seq := range seen {
		if seq >= nVIP4+nVIP6 {
			t.Errorf("link received non-VIP seq %d", seq)
		}
	}
	tb.cl.Run(t, "ping", "-c", "2", "-i", "0.2", "-W", "2", lbAddr4.String())
	tb.cl.Run(t, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", lbAddr6.String())

	// A frame given back twice is counted and ignored.
	frames := make([]link.Frame, 1)
	tx.send(t, frame(0))
	deadline := time.Now().Add(2 * time.Second)
	n := 0
	for n == 0 && time.Now().Before(deadline) {
		n, _ = l.Recv(frames)
	}
	if n != 1 {
		t.Fatal("no frame for the double-release check")
	}
	l.Release(frames)
	l.Release(frames)
	if _, err := l.Send(frames); err != nil {
		t.Error(err)
	}
	st := l.Stats()
	if st.Invalid != 2 {
		t.Errorf("Invalid = %d after a double Release and a Send of a released frame, want 2", st.Invalid)
	}
	if st.RxFrames != nVIP4+nVIP6+1 || st.XDP.RxDropped != 0 || st.XDP.RxRingFull != 0 {
		t.Errorf("stats %+v", st)
	}
	settle(t, l)
}

// TestTransmit receives frames, prepends a header into the headroom (as
// encapsulation does), sends them and captures them byte-exact on the other
// side.
func TestTransmit(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) { testTransmit(t, mode) })
	}
}

const etherTest = 0x88b5 // IEEE local experimental EtherType

// encapHeader is what the tests prepend: Ethernet to the traffic side with
// EtherType 0x88b5, then 20 bytes holding the sequence number.
func (tb *testbed) encapHeader(seq uint32) []byte {
	h := append(append([]byte{}, tb.clMAC...), tb.lbMAC...)
	h = binary.BigEndian.AppendUint16(h, etherTest)
	h = binary.BigEndian.AppendUint32(h, seq)
	return append(h, bytes.Repeat([]byte{0xe5}, 16)...)
}

func testTransmit(t *testing.T, mode Mode) {
	tb := newTestbed(t)
	// A headroom above XDP_PACKET_HEADROOM registers the rest as UMEM headroom.
	l := tb.open(t, Config{Mode: mode, NumFrames: 1024, BatchSize: 32, Headroom: 320})
	if l.Headroom() != 320 {
		t.Fatalf("Headroom() = %d, want 320", l.Headroom())
	}
	if err := l.SetVIPs([]netip.Addr{vip4}); err != nil {
		t.Fatal(err)
	}
	capture := openPacket(t, tb.cl, tb.clIndex, etherTest)
	tx := openPacket(t, tb.cl, tb.clIndex, 0)

	const n = 300
	want := make(map[uint32][]byte)
	for seq := uint32(0); seq < n; seq++ {
		in := tb.clFrame(vip4, seq, 18+int(seq*37%1400))
		want[seq] = append(tb.encapHeader(seq), in...)
		tx.send(t, in)
	}
	// Receive and send back all n in batches, on this goroutine.
	frames := make([]link.Frame, l.BatchSize())
	sent := 0
	deadline := time.Now().Add(5 * time.Second)
	for got := 0; got < n && time.Now().Before(deadline); {
		k, err := l.Recv(frames)
		if err != nil {
			t.Fatal(err)
		}
		for i := range frames[:k] {
			f := &frames[i]
			if f.Off != 320 {
				t.Fatalf("received frame at Off %d, want 320", f.Off)
			}
			seq := binary.BigEndian.Uint32(f.Bytes()[14+20+8:])
			h := tb.encapHeader(seq)
			f.Off -= len(h)
			f.Len += len(h)
			copy(f.Buf[f.Off:], h)
		}
		s, err := l.Send(frames[:k])
		if err != nil {
			t.Fatal(err)
		}
		got += k
		sent += s
		if err := checkFrames(l); err != nil {
			t.Fatal(err)
		}
	}
	if sent != n {
		t.Fatalf("sent %d, want %d", sent, n)
	}
	buf := make([]byte, 4096)
	seen := 0
	for seen < n {
		b := capture.recv(buf)
		if b == nil {
			break
		}
		seq := binary.BigEndian.Uint32(b[14:])
		if w, ok := want[seq]; !ok {
			t.Errorf("captured unexpected seq %d", seq)
		} else if !bytes.Equal(b, w) {
			t.Errorf("seq %d: captured %d bytes differ from the %d sent", seq, len(b), len(w))
		} else {
			delete(want, seq)
		}
		seen++
	}
	if len(want) != 0 {
		t.Errorf("%d frames not captured", len(want))
	}
	st := l.Stats()
	if st.TxFrames != n || st.TxRingFull != 0 || st.Invalid != 0 || st.KickErrors != 0 || st.XDP.TxInvalidDescs != 0 {
		t.Errorf("stats %+v", st)
	}
	t.Logf("%d kicks for %d frames", st.Kicks, n)
	settle(t, l)
}

// TestForwardLoad forwards 10k frames under load (a window of 256 in flight)
// and checks that none is lost and that frames never leak.
func TestForwardLoad(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) { testForwardLoad(t, mode) })
	}
}

func testForwardLoad(t *testing.T, mode Mode) {
	n := uint32(10000)
	if testing.Short() {
		n = 2000
	}
	tb := newTestbed(t)
	l := tb.open(t, Config{Mode: mode, NumFrames: 1024})
	if err := l.SetVIPs([]netip.Addr{vip4, vip6}); err != nil {
		t.Fatal(err)
	}
	capture := openPacket(t, tb.cl, tb.clIndex, etherTest)
	tx := openPacket(t, tb.cl, tb.clIndex, 0)
	hdr := tb.encapHeader(0)[:14]

	// The forwarder: receive, prepend an Ethernet header, send.
	stop := make(chan struct{})
	fwdDone := make(chan error, 1)
	go func() {
		frames := make([]link.Frame, l.BatchSize())
		for {
			select {
			case <-stop:
				fwdDone <- checkFrames(l)
				return
			default:
			}
			k, err := l.Recv(frames)
			if err != nil {
				fwdDone <- err
				return
			}
			for i := range frames[:k] {
				f := &frames[i]
				f.Off -= len(hdr)
				f.Len += len(hdr)
				copy(f.Buf[f.Off:], hdr)
			}
			l.Send(frames[:k])
			if err := checkFrames(l); err != nil {
				fwdDone <- err
				return
			}
		}
	}()

	// The capture: count distinct, byte-exact frames.
	var captured atomic.Int64
	var errs atomic.Int64
	capDone := make(chan []bool, 1)
	frame := func(seq uint32) []byte {
		dst := vip4
		if seq%4 == 3 {
			dst = vip6
		}
		return tb.clFrame(dst, seq, 18+int(seq*13%900))
	}
	go func() {
		seen := make([]bool, n)
		buf := make([]byte, 4096)
		idle := 0
		for captured.Load() < int64(n) && idle < 40 { // 2s without a frame
			b := capture.recv(buf)
			if b == nil {
				idle++
				continue
			}
			idle = 0
			inner := b[14:]
			off := 14 + 20 + 8
			if binary.BigEndian.Uint16(inner[12:]) == 0x86dd {
				off = 14 + 40 + 8
			}
			seq := binary.BigEndian.Uint32(inner[off:])
			if seq >= n || seen[seq] || !bytes.Equal(inner, frame(seq)) {
				errs.Add(1)
				continue
			}
			seen[seq] = true
			captured.Add(1)
		}
		capDone <- seen
	}()

	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for seq := uint32(0); seq < n && time.Now().Before(deadline); seq++ {
		for int64(seq)-captured.Load()-errs.Load() > 256 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Microsecond)
		}
		tx.send(t, frame(seq))
	}
	seen := <-capDone
	elapsed := time.Since(start)
	close(stop)
	if err := <-fwdDone; err != nil {
		t.Error(err)
	}
	lost := 0
	for _, ok := range seen {
		if !ok {
			lost++
		}
	}
	st := l.Stats()
	t.Logf("%d frames in %v (%.0f pps), %d kicks, %d stalls", n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), st.Kicks, st.TxStalls)
	if lost != 0 || errs.Load() != 0 {
		t.Errorf("%d of %d frames lost, %d wrong or duplicated; stats %+v", lost, n, errs.Load(), st)
	}
	if st.TxRingFull != 0 || st.Invalid != 0 || st.XDP.RxDropped != 0 || st.XDP.RxRingFull != 0 {
		t.Errorf("stats %+v", st)
	}
	settle(t, l)
}

// TestCloseDetaches checks that Close removes the program, returns VIP
// traffic to the kernel, wakes a blocked Recv and is idempotent.
func TestCloseDetaches(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) { testCloseDetaches(t, mode) })
	}
}

func testCloseDetaches(t *testing.T, mode Mode) {
	tb := newTestbed(t)
	tb.lb.Run(t, "ip", "addr", "add", vip4.String()+"/32", "dev", "lo")
	l := tb.open(t, Config{Mode: mode, NumFrames: 256, Poll: 10 * time.Second})
	if err := l.SetVIPs([]netip.Addr{vip4}); err != nil {
		t.Fatal(err)
	}
	x := tb.xdpAttached(t)
	if id, _ := l.ProgramID(); x == nil || x.ProgId != id {
		t.Fatalf("attached %+v, want program %d", x, id)
	}
	if wantMode := map[Mode]uint32{Native: 1, Generic: 2}[mode]; x.AttachMode != wantMode {
		t.Errorf("netlink attach mode %d, want %d", x.AttachMode, wantMode)
	}
	var k *net.UDPConn
	if err := tb.lb.Do(func() (err error) {
		k, err = net.ListenUDP("udp4", &net.UDPAddr{IP: vip4.AsSlice(), Port: 9999})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	bigBuffer(t, k)
	countKernel := func(want int) int {
		buf := make([]byte, 2048)
		n := 0
		for n < want {
			k.SetReadDeadline(time.Now().Add(time.Second))
			if _, _, err := k.ReadFromUDP(buf); err != nil {
				break
			}
			n++
		}
		return n
	}
	tx := openPacket(t, tb.cl, tb.clIndex, 0)
	done := receiveAll(l, 20, 5*time.Second, func(*link.Frame) {})
	for seq := range uint32(20) {
		tx.send(t, tb.clFrame(vip4, seq, 32))
	}
	if got := <-done; got != 20 {
		t.Errorf("link received %d, want 20", got)
	}
	k.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, _, err := k.ReadFromUDP(make([]byte, 2048)); err == nil {
		t.Error("the kernel received a VIP frame while the link was attached")
	}

	// A Recv blocked for up to 10s returns ErrClosed promptly on Close.
	recvErr := make(chan error, 1)
	go func() {
		_, err := l.Recv(make([]link.Frame, 8))
		recvErr <- err
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-recvErr:
		if !errors.Is(err, link.ErrClosed) {
			t.Errorf("blocked Recv returned %v, want ErrClosed", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Close took %v to wake Recv", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not wake the blocked Recv")
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.Recv(make([]link.Frame, 1)); !errors.Is(err, link.ErrClosed) {
		t.Errorf("Recv after Close: %v", err)
	}
	if x := tb.xdpAttached(t); x != nil {
		t.Fatalf("XDP program %d still attached after Close", x.ProgId)
	}
	if err := l.SetVIPs(nil); !errors.Is(err, link.ErrClosed) {
		t.Errorf("SetVIPs after Close: %v", err)
	}
	for seq := range uint32(20) {
		tx.send(t, tb.clFrame(vip4, seq, 32))
	}
	if got := countKernel(20); got != 20 {
		t.Errorf("after Close the kernel received %d of 20 VIP frames", got)
	}
	l.Stats() // still callable
}

// TestCloseWithFramesLent closes a link while frames are lent out: they
// stay readable, and giving them back afterwards is harmless.
func TestCloseWithFramesLent(t *testing.T) {
	tb := newTestbed(t)
	l := tb.open(t, Config{Mode: Generic, NumFrames: 256})
	if err := l.SetVIPs([]netip.Addr{vip4}); err != nil {
		t.Fatal(err)
	}
	tx := openPacket(t, tb.cl, tb.clIndex, 0)
	in := tb.clFrame(vip4, 1, 100)
	tx.send(t, in)
	frames := make([]link.Frame, 4)
	n := 0
	for deadline := time.Now().Add(2 * time.Second); n == 0 && time.Now().Before(deadline); {
		n, _ = l.Recv(frames)
	}
	if n != 1 {
		t.Fatalf("received %d", n)
	}
	l.Close()
	if !bytes.Equal(frames[0].Bytes(), in) {
		t.Error("lent frame changed after Close")
	}
	if _, err := l.Send(frames[:1]); !errors.Is(err, link.ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	if l.umem != nil || l.umemPending {
		t.Error("UMEM still mapped after the last lent frame came back")
	}
}

// TestZeroAlloc checks that a Recv + Send batch allocates nothing.
func TestZeroAlloc(t *testing.T) {
	tb := newTestbed(t)
	l := tb.open(t, Config{Mode: Generic, NumFrames: 2048, BatchSize: 32})
	if err := l.SetVIPs([]netip.Addr{vip4}); err != nil {
		t.Fatal(err)
	}
	tx := openPacket(t, tb.cl, tb.clIndex, 0)
	const runs = 20
	for seq := range uint32(runs * 32) {
		tx.send(t, tb.clFrame(vip4, seq, 64))
	}
	frames := make([]link.Frame, l.BatchSize())
	got := 0
	allocs := testing.AllocsPerRun(runs, func() {
		n, _ := l.Recv(frames)
		for i := range frames[:n] {
			f := &frames[i]
			f.Off -= 14
			f.Len += 14
			copy(f.Buf[f.Off:], f.Buf[f.Off+14:f.Off+28])
		}
		l.Send(frames[:n])
		got += n
	})
	if allocs != 0 {
		t.Errorf("%v allocations per Recv+Send batch, want 0", allocs)
	}
	if got < runs*32 {
		t.Errorf("only %d frames went through the measured batches", got)
	}
	settle(t, l)
}

// TestAutoFallback attaches to lo, which has no native XDP: Auto falls
// back to generic mode and says why; Native fails with ErrUnsupported.
func TestAutoFallback(t *testing.T) {
	nettest.RequireRoot(t)
	ns := nettest.New(t, "xlo")
	err := ns.Do(func() error {
		_, err := New("lo", Config{Mode: Native, NumFrames: 256})
		if !errors.Is(err, ErrUnsupported) {
			return fmt.Errorf("native on lo: %v, want ErrUnsupported", err)
		}
		l, err := New("lo", Config{NumFrames: 256})
		if err != nil {
			return err
		}
		defer l.Close()
		if l.AttachMode() != "generic" || l.NativeError() == nil {
			return fmt.Errorf("auto on lo: mode %s, native error %v", l.AttachMode(), l.NativeError())
		}
		t.Logf("auto on lo: %s, because %v", l.AttachMode(), l.NativeError())
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// TestInterfaceRemoved deletes the interface under an open link: Recv
// reports the socket error instead of idling forever, and Close works.
func TestInterfaceRemoved(t *testing.T) {
	tb := newTestbed(t)
	l := tb.open(t, Config{Mode: Native, NumFrames: 256, Poll: 5 * time.Millisecond})
	tb.lb.Run(t, "ip", "link", "del", "lb0")
	frames := make([]link.Frame, 8)
	var err error
	for deadline := time.Now().Add(2 * time.Second); err == nil && time.Now().Before(deadline); {
		_, err = l.Recv(frames)
	}
	if err == nil || errors.Is(err, link.ErrClosed) {
		t.Errorf("Recv after the interface went away: %v, want the socket error", err)
	} else {
		t.Logf("Recv: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
}

// TestRecvIdleDoesNotSpin checks that an idle Recv waits for the poll
// interval instead of returning at once.
func TestRecvIdleDoesNotSpin(t *testing.T) {
	tb := newTestbed(t)
	l := tb.open(t, Config{Mode: Native, NumFrames: 256, Poll: 20 * time.Millisecond})
	frames := make([]link.Frame, 8)
	calls := 0
	start := time.Now()
	for time.Since(start) < 200*time.Millisecond {
		if n, err := l.Recv(frames); n != 0 || err != nil {
			t.Fatalf("idle Recv = %d, %v", n, err)
		}
		calls++
	}
	if calls > 15 {
		t.Errorf("%d idle Recv calls in 200ms with a 20ms poll interval: Recv spins", calls)
	}
	t.Logf("%d idle Recv calls in 200ms", calls)
}

// bigBuffer gives a kernel-side test socket a receive buffer that holds
// every frame a test sends, so that a slow reader loses none.
func bigBuffer(t *testing.T, c *net.UDPConn) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	})
	if err != nil {
		t.Fatal(err)
	}
}
