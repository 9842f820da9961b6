package mem

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/link"
)

// TestAlloc checks the frames Alloc lends: empty, at the headroom, writable
// up to FrameSize, transmitted by Send (the sink sees exactly what was
// written, prepended headers included) and given back by Send and Release,
// so that Alloc keeps working far beyond the reserve's size.
func TestAlloc(t *testing.T) {
	var sunk [][]byte
	l := New(Config{BatchSize: 4, Headroom: 64, FrameSize: 512, Reserve: 3,
		Sink: func(b []byte) { sunk = append(sunk, bytes.Clone(b)) }})
	var inj link.Injector = l

	var f link.Frame
	if !inj.Alloc(&f) {
		t.Fatal("Alloc on a fresh link reported false")
	}
	if f.Off != l.Headroom() || f.Len != 0 || len(f.Buf)-f.Off != 512 {
		t.Fatalf("Alloc: Off %d Len %d len(Buf) %d; want Off %d, Len 0, 512 bytes of room", f.Off, f.Len, len(f.Buf), l.Headroom())
	}
	pkt := bytes.Repeat([]byte{0xab}, 512)
	f.Len = copy(f.Buf[f.Off:], pkt)
	f.Off -= 2 // a header prepended into the headroom
	f.Len += 2
	f.Buf[f.Off], f.Buf[f.Off+1] = 1, 2
	if sent, err := l.Send([]link.Frame{f}); sent != 1 || err != nil {
		t.Fatalf("Send = %d, %v", sent, err)
	}
	if len(sunk) != 1 || !bytes.Equal(sunk[0], append([]byte{1, 2}, pkt...)) {
		t.Fatalf("sink got %d frames, first %x", len(sunk), sunk)
	}

	// 100 rounds through a reserve of 3: every frame comes back.
	for i := range 100 {
		var fs [3]link.Frame
		for j := range fs {
			if !l.Alloc(&fs[j]) {
				t.Fatalf("round %d: Alloc %d reported false", i, j)
			}
			fs[j].Len = copy(fs[j].Buf[fs[j].Off:], fmt.Sprintf("round %d frame %d", i, j))
		}
		if i%2 == 0 {
			l.Send(fs[:])
		} else {
			l.Release(fs[:])
		}
	}
	if got := len(sunk); got != 1+50*3 {
		t.Errorf("sink got %d frames, want %d", got, 1+50*3)
	}
	if got := string(sunk[len(sunk)-1]); got != "round 98 frame 2" {
		t.Errorf("last frame %q", got)
	}
	if l.Allocs() != 1+100*3 {
		t.Errorf("Allocs() = %d, want %d", l.Allocs(), 1+100*3)
	}
	if _, sent, released := l.Counts(); sent != 1+50*3 || released != 50*3 {
		t.Errorf("Counts: sent %d released %d", sent, released)
	}
}

// TestAllocReserve checks that Alloc reports false once the reserve is lent
// out, that Recv still fills whole batches then, and that only frames of the
// reserve refill it.
func TestAllocReserve(t *testing.T) {
	l := New(Config{BatchSize: 4, Reserve: 2, Poll: time.Millisecond})
	var held [2]link.Frame
	for i := range held {
		if !l.Alloc(&held[i]) {
			t.Fatalf("Alloc %d reported false", i)
		}
	}
	var f link.Frame
	if l.Alloc(&f) {
		t.Fatal("Alloc with the reserve lent out reported true")
	}
	if f.Buf != nil || f.Off != 0 || f.Len != 0 || f.Handle != 0 {
		t.Errorf("a failed Alloc changed the frame: %+v", f)
	}
	// Recv has all its buffers: two whole batches while the reserve is out.
	for i := range 8 {
		l.Inject([]byte{byte(i)})
	}
	frames := make([]link.Frame, 4)
	var recvd []link.Frame
	for range 2 {
		n, err := l.Recv(frames)
		if n != 4 || err != nil {
			t.Fatalf("Recv = %d, %v; want a whole batch", n, err)
		}
		recvd = append(recvd, frames[:n]...)
	}
	l.Release(recvd)
	if l.Alloc(&f) {
		t.Error("Recv's frames given back refilled the reserve")
	}
	l.Release(held[:1])
	if !l.Alloc(&f) {
		t.Error("Alloc after a reserve frame was released reported false")
	}
	l.Release([]link.Frame{f, held[1]})

	none := New(Config{Reserve: -1})
	if none.Alloc(&f) {
		t.Error("Alloc on a link without a reserve reported true")
	}
	l.Close()
	if l.Alloc(&f) {
		t.Error("Alloc after Close reported true")
	}
}

// TestAllocZeroAllocs checks that Alloc and the Send of the allocated frame
// allocate nothing.
func TestAllocZeroAllocs(t *testing.T) {
	l := New(Config{})
	pkt := bytes.Repeat([]byte{7}, 100)
	fs := make([]link.Frame, 1)
	var failed bool
	if a := testing.AllocsPerRun(1000, func() {
		if !l.Alloc(&fs[0]) {
			failed = true
			return
		}
		fs[0].Len = copy(fs[0].Buf[fs[0].Off:], pkt)
		l.Send(fs)
	}); a != 0 {
		t.Errorf("Alloc+Send: %v allocations", a)
	}
	if failed {
		t.Fatal("Alloc reported false")
	}
}
