//go:build linux

package afpacket

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/link"
)

// TestAlloc sends frames built in buffers lent by Alloc and captures them
// byte-exact on the peer; it cycles the reserve many times over (Send and
// Release give its buffers back), and checks the counters.
func TestAlloc(t *testing.T) {
	p := newPair(t)
	const reserve = 3
	l := openLink(t, p.a, ifA, Config{BatchSize: 4, Reserve: reserve, Poll: 20 * time.Millisecond})
	setFilter(t, l, vip4)
	peer := openRaw(t, p.b, ifB, true)
	var inj link.Injector = l

	var f link.Frame
	if !inj.Alloc(&f) {
		t.Fatal("Alloc on a fresh link reported false")
	}
	if f.Off != l.Headroom() || f.Len != 0 || len(f.Buf)-f.Off != l.frameSize+vlanRoom {
		t.Fatalf("Alloc: Off %d Len %d len(Buf) %d; want Off %d, Len 0, %d bytes of room",
			f.Off, f.Len, len(f.Buf), l.Headroom(), l.frameSize+vlanRoom)
	}
	l.Release([]link.Frame{f})

	// 20 rounds of a full reserve: sent in even rounds, released in odd
	// ones. Every third frame is written behind its Ethernet header, which
	// is then prepended into the headroom.
	var want [][]byte
	for round := range 20 {
		var fs [reserve]link.Frame
		for i := range fs {
			if !l.Alloc(&fs[i]) {
				t.Fatalf("round %d: Alloc %d reported false", round, i)
			}
			g := &fs[i]
			pkt := udpFrame(addrA, addrB, uint32(round*reserve+i), round*17)
			if i == 2 {
				g.Len = copy(g.Buf[g.Off:], pkt[14:])
				g.Off -= 14
				g.Len += copy(g.Buf[g.Off:], pkt[:14])
			} else {
				g.Len = copy(g.Buf[g.Off:], pkt)
			}
			if round%2 == 0 {
				want = append(want, pkt)
			}
		}
		if round%2 == 1 {
			l.Release(fs[:])
			continue
		}
		if sent, err := l.Send(fs[:]); sent != reserve || err != nil {
			t.Fatalf("round %d: Send = %d, %v", round, sent, err)
		}
	}
	expectFrames(t, rawFrames(t, peer), want, nil, 5*time.Second, 0)
	st := l.Stats()
	if st.Allocs != 1+20*reserve || st.Sent != 10*reserve || st.SendErrors != 0 || st.Released != 1+10*reserve || st.AllocEmpty != 0 {
		t.Errorf("stats %+v: want Allocs %d, Sent %d, Released %d", st, 1+20*reserve, 10*reserve, 1+10*reserve)
	}
	if len(l.free) != l.nrecv || len(l.reserve) != reserve {
		t.Errorf("%d of %d Recv buffers and %d of %d reserve buffers free", len(l.free), l.nrecv, len(l.reserve), reserve)
	}

	// Alloc allocates nothing, Send of an allocated frame neither.
	pkt := udpFrame(addrA, addrB, 1000, 10)
	fs := make([]link.Frame, 1)
	var failed error
	if a := testing.AllocsPerRun(50, func() {
		if !l.Alloc(&fs[0]) {
			failed = fmt.Errorf("Alloc reported false")
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

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l.Alloc(&f) {
		t.Error("Alloc after Close reported true")
	}
}

// TestAllocReserve checks that Alloc reports false once the reserve is lent
// out while Recv still fills its 2 x BatchSize buffers, that only reserve
// buffers refill the reserve, and that an allocated frame given back twice
// panics like a received one.
func TestAllocReserve(t *testing.T) {
	p := newPair(t)
	l := openLink(t, p.a, ifA, Config{BatchSize: 4, Reserve: 2, Poll: 20 * time.Millisecond})
	setFilter(t, l, vip4)
	peer := openRaw(t, p.b, ifB, false)

	held := make([]link.Frame, 2)
	for i := range held {
		if !l.Alloc(&held[i]) {
			t.Fatalf("Alloc %d reported false", i)
		}
	}
	f := link.Frame{Off: -1}
	if l.Alloc(&f) || f.Off != -1 {
		t.Fatalf("Alloc with the reserve lent out: true or frame changed (%+v)", f)
	}
	if st := l.Stats(); st.AllocEmpty != 1 {
		t.Errorf("AllocEmpty = %d, want 1", st.AllocEmpty)
	}

	// Recv lends all 8 of its buffers while the reserve is out.
	for i := range 8 {
		peer.write(t, udpFrame(addrB, vip4, uint32(i), 0))
	}
	var recvd []link.Frame
	for deadline := time.Now().Add(3 * time.Second); len(recvd) < 8 && time.Now().Before(deadline); {
		frames := make([]link.Frame, 4)
		k, err := l.Recv(frames)
		if err != nil {
			t.Fatalf("Recv with %d frames received: %v", len(recvd), err)
		}
		recvd = append(recvd, frames[:k]...)
	}
	if len(recvd) != 8 {
		t.Fatalf("received %d of 8 frames with the reserve lent out", len(recvd))
	}
	l.Release(recvd)
	if l.Alloc(&f) {
		t.Error("received frames given back refilled the reserve")
	}
	l.Release(held[:1])
	if !l.Alloc(&f) {
		t.Fatal("Alloc after a reserve frame was released reported false")
	}
	l.Release([]link.Frame{f, held[1]})

	func() {
		defer func() {
			if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "twice") {
				t.Errorf("double Release of an allocated frame: recovered %v, want a panic", r)
			}
		}()
		l.Release([]link.Frame{f})
	}()
	func() {
		defer func() {
			if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "twice") {
				t.Errorf("Send of a released allocated frame: recovered %v, want a panic", r)
			}
		}()
		l.Send([]link.Frame{f})
	}()
	if len(l.free) != l.nrecv || len(l.reserve) != 2 {
		t.Errorf("%d of %d Recv buffers and %d of 2 reserve buffers free", len(l.free), l.nrecv, len(l.reserve))
	}

	none := openLink(t, p.a, ifA, Config{Reserve: -1})
	if none.Alloc(&f) {
		t.Error("Alloc on a link without a reserve reported true")
	}
}
