package afxdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/link"
)

// TestAlloc sends frames built in frames lent by Alloc and captures them
// byte-exact on the other side, cycling the reserve many times over (Send
// and Release give its frames back); it checks that Alloc reports false
// with the reserve lent out while Recv still fills two batches, that the
// frame accounting holds throughout, and that a frame given back twice is
// counted as before.
func TestAlloc(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) { testAlloc(t, mode) })
	}
}

func testAlloc(t *testing.T, mode Mode) {
	tb := newTestbed(t)
	const batch, reserve = 16, 4
	// The smallest UMEM the configuration allows: with the reserve lent
	// out, the kernel has exactly two batches of frames.
	l := tb.open(t, Config{Mode: mode, BatchSize: batch, NumFrames: 2*batch + reserve, ReserveFrames: reserve, Headroom: 320})
	if err := l.SetVIPs([]netip.Addr{vip4}); err != nil {
		t.Fatal(err)
	}
	capture := openPacket(t, tb.cl, tb.clIndex, etherTest)
	tx := openPacket(t, tb.cl, tb.clIndex, 0)
	var inj link.Injector = l
	check := func(when string) {
		t.Helper()
		if err := checkFrames(l); err != nil {
			t.Fatalf("%s: %v", when, err)
		}
	}
	if f := l.Stats().Frames; f.Reserve != reserve || f.Kernel != 2*batch {
		t.Fatalf("after New: %+v, want %d frames in the reserve and %d in the kernel", f, reserve, 2*batch)
	}
	check("after New")

	var f link.Frame
	if !inj.Alloc(&f) {
		t.Fatal("Alloc on a fresh link reported false")
	}
	if f.Off != l.Headroom() || f.Len != 0 || len(f.Buf) != FrameSize || f.Handle%FrameSize != 0 {
		t.Fatalf("Alloc: Off %d Len %d len(Buf) %d Handle %#x; want Off %d, Len 0, a whole frame",
			f.Off, f.Len, len(f.Buf), f.Handle, l.Headroom())
	}
	for i := f.Off; i < len(f.Buf); i++ { // writable to the end of the frame
		f.Buf[i] = byte(i)
	}
	check("after Alloc")
	l.Release([]link.Frame{f})
	check("after Release")

	// 60 rounds of a full reserve (240 frames from a reserve of 4); rounds
	// divisible by 3 are released, the others sent. Every other frame is
	// written behind its Ethernet header, which is then prepended into the
	// headroom.
	want := make(map[uint32][]byte)
	sent := 0
	for round := range 60 {
		var fs [reserve]link.Frame
		for i := range fs {
			if !l.Alloc(&fs[i]) {
				t.Fatalf("round %d: Alloc %d reported false (stats %+v)", round, i, l.Stats())
			}
			seq := uint32(round*reserve + i)
			pkt := append(tb.encapHeader(seq), bytes.Repeat([]byte{byte(seq)}, 40+int(seq*53%1400))...)
			g := &fs[i]
			if i%2 == 0 {
				g.Len = copy(g.Buf[g.Off:], pkt[14:])
				g.Off -= 14
				g.Len += copy(g.Buf[g.Off:], pkt[:14])
			} else {
				g.Len = copy(g.Buf[g.Off:], pkt)
			}
			if round%3 != 0 {
				want[seq] = pkt
			}
		}
		check(fmt.Sprintf("round %d, allocated", round))
		if round%3 == 0 {
			l.Release(fs[:])
		} else {
			n, err := l.Send(fs[:])
			if n != reserve || err != nil {
				t.Fatalf("round %d: Send = %d, %v", round, n, err)
			}
			sent += n
		}
		check(fmt.Sprintf("round %d, given back", round))
	}
	buf := make([]byte, FrameSize)
	for len(want) > 0 {
		b := capture.recv(buf)
		if b == nil {
			break
		}
		seq := binary.BigEndian.Uint32(b[14:])
		if w, ok := want[seq]; !ok || !bytes.Equal(b, w) {
			t.Errorf("captured seq %d: unexpected or different (%d bytes)", seq, len(b))
		}
		delete(want, seq)
	}
	if len(want) != 0 {
		t.Errorf("%d allocated frames not captured", len(want))
	}
	st := l.Stats()
	if st.Allocs != 1+60*reserve || st.TxFrames != uint64(sent) || st.Invalid != 0 || st.TxRingFull != 0 || st.AllocEmpty != 0 {
		t.Errorf("stats %+v: want Allocs %d, TxFrames %d", st, 1+60*reserve, sent)
	}
	settle(t, l)

	// The reserve lent out: Alloc reports false, and Recv still receives
	// two whole batches.
	held := make([]link.Frame, reserve)
	for i := range held {
		if !l.Alloc(&held[i]) {
			t.Fatalf("Alloc %d of the reserve reported false", i)
		}
	}
	f = link.Frame{Off: -1}
	if l.Alloc(&f) || f.Off != -1 {
		t.Fatalf("Alloc with the reserve lent out: true or frame changed (%+v)", f)
	}
	if st := l.Stats(); st.AllocEmpty != 1 || st.Frames.Reserve != 0 || st.Frames.Kernel != 2*batch {
		t.Errorf("reserve lent out: stats %+v", st)
	}
	for seq := range uint32(2 * batch) {
		tx.send(t, tb.clFrame(vip4, seq, 64))
	}
	var recvd []link.Frame
	frames := make([]link.Frame, batch)
	for deadline := time.Now().Add(3 * time.Second); len(recvd) < 2*batch && time.Now().Before(deadline); {
		n, err := l.Recv(frames)
		if err != nil {
			t.Fatal(err)
		}
		recvd = append(recvd, frames[:n]...)
	}
	if len(recvd) != 2*batch {
		t.Fatalf("received %d of %d frames with the reserve lent out (stats %+v)", len(recvd), 2*batch, l.Stats())
	}
	check("reserve and two batches lent out")
	// Frames that come back refill the reserve first, received ones too.
	l.Release(recvd[:1])
	if st := l.Stats(); st.Frames.Reserve != 1 {
		t.Errorf("after releasing a received frame: reserve %d, want 1", st.Frames.Reserve)
	}
	l.Release(recvd[1:])
	if st := l.Stats(); st.Frames.Reserve != reserve || st.Frames.Kernel != 2*batch-reserve {
		t.Errorf("after releasing the received frames: %+v", st.Frames)
	}
	l.Release(held)
	check("everything given back")
	settle(t, l)

	// A frame given back twice is counted and ignored, as for received
	// frames.
	before := l.Stats().Invalid
	if !l.Alloc(&f) {
		t.Fatal("Alloc reported false")
	}
	l.Release([]link.Frame{f})
	l.Release([]link.Frame{f})
	if n, _ := l.Send([]link.Frame{f}); n != 0 {
		t.Errorf("Send of a released frame sent %d", n)
	}
	if got := l.Stats().Invalid - before; got != 2 {
		t.Errorf("Invalid +%d after a double Release and a Send of a released frame, want +2", got)
	}
	// An allocated frame sent without a packet (Len 0) is invalid and
	// comes back.
	if !l.Alloc(&f) {
		t.Fatal("Alloc reported false")
	}
	if n, _ := l.Send([]link.Frame{f}); n != 0 || l.Stats().Invalid-before != 3 {
		t.Errorf("Send of an empty frame: sent %d, Invalid +%d", n, l.Stats().Invalid-before)
	}
	settle(t, l)

	// Alloc and the Send of an allocated frame allocate nothing.
	pkt := append(tb.encapHeader(9999), make([]byte, 100)...)
	fs := make([]link.Frame, 1)
	var failed error
	if a := testing.AllocsPerRun(100, func() {
		if !l.Alloc(&fs[0]) {
			failed = errors.New("Alloc reported false")
			return
		}
		fs[0].Len = copy(fs[0].Buf[fs[0].Off:], pkt)
		if _, err := l.Send(fs); err != nil {
			failed = err
		}
	}); a != 0 {
		t.Errorf("Alloc+Send: %v allocations", a)
	}
	if failed != nil {
		t.Fatal(failed)
	}
	settle(t, l)

	// A frame allocated before Close may be given back after it; Alloc
	// reports false after Close.
	if !l.Alloc(&f) {
		t.Fatal("Alloc reported false")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var g link.Frame
	if l.Alloc(&g) {
		t.Error("Alloc after Close reported true")
	}
	f.Len = copy(f.Buf[f.Off:], pkt)
	if n, err := l.Send([]link.Frame{f}); n != 0 || !errors.Is(err, link.ErrClosed) {
		t.Errorf("Send after Close = %d, %v", n, err)
	}
	if l.umem != nil || l.umemPending {
		t.Error("UMEM still mapped after the last lent frame came back")
	}
}
