//go:build linux

package afpacket

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/link"
)

// TestRecvSend sends 1000 frames of many sizes from the peer into the link
// and checks every one arrives once, byte-exact; then it rewrites received
// frames in place (same length, prepended headers in the headroom, a longer
// tail) and checks the peer captures exactly what the link sent.
func TestRecvSend(t *testing.T) {
	p := newPair(t)
	// BatchSize 32: 64 buffers, so that the transmit test below can hold 60
	// frames and Send has to split them into two sendmmsg batches.
	l := openLink(t, p.a, ifA, Config{BatchSize: 32, Poll: 20 * time.Millisecond})
	peer := openRaw(t, p.b, ifB, true)

	const n = 1000
	want := make([][]byte, n)
	for i := range want {
		// Every size from the minimum to a full 1500-byte MTU frame.
		want[i] = udpFrame(addrB, vip4, uint32(i), (i*37)%(1514-14-20-8-len(marker)-4+1))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i, f := range want {
			peer.write(t, f)
			if i%100 == 99 {
				time.Sleep(time.Millisecond) // let the receiver keep up on 2 cores
			}
		}
	}()
	got := make([]int, n)
	received := 0
	frames := make([]link.Frame, l.BatchSize())
	deadline := time.Now().Add(10 * time.Second)
	for received < n && time.Now().Before(deadline) {
		k, err := l.Recv(frames)
		if err != nil {
			t.Fatal(err)
		}
		for i := range k {
			f := &frames[i]
			if f.Off < l.Headroom() || f.Off+f.Len > len(f.Buf) {
				t.Fatalf("frame Off %d Len %d in a %d-byte buffer, headroom %d", f.Off, f.Len, len(f.Buf), l.Headroom())
			}
			seq := seqOf(f.Bytes())
			if seq < 0 {
				continue // the kernels' own traffic
			}
			if seq >= n || !bytes.Equal(f.Bytes(), want[seq]) {
				t.Fatalf("frame %d differs:\n got %x\nwant %x", seq, f.Bytes(), want[min(seq, n-1)])
			}
			if got[seq] == 0 {
				received++
			}
			got[seq]++
		}
		l.Release(frames[:k])
	}
	<-done
	for i, c := range got {
		if c != 1 {
			t.Errorf("frame %d (%d bytes) received %d times", i, len(want[i]), c)
		}
	}
	st := l.Stats()
	t.Logf("stats after receive: %+v", st)
	if st.Received < n || st.Released != st.Received || st.Oversize != 0 || st.KernelDrops != 0 {
		t.Errorf("stats %+v: want Received >= %d = Released, no oversize or drops", st, n)
	}

	// Transmit: the peer sends 3 frames per variant, the link rewrites
	// and sends them back.
	const txN = 60
	var sendWant [][]byte
	for i := range txN {
		peer.write(t, udpFrame(addrB, vip4, uint32(n+i), i%200))
	}
	var batch []link.Frame
	deadline = time.Now().Add(5 * time.Second)
	for len(batch) < txN && time.Now().Before(deadline) {
		k, err := l.Recv(frames)
		if err != nil {
			t.Fatal(err)
		}
		for i := range k {
			f := frames[i]
			seq := seqOf(f.Bytes())
			if seq < n {
				l.Release([]link.Frame{f})
				continue
			}
			switch seq % 3 {
			case 0: // rewrite in place: swap the MAC addresses
				b := f.Bytes()
				var tmp [6]byte
				copy(tmp[:], b[0:6])
				copy(b[0:6], b[6:12])
				copy(b[6:12], tmp[:])
			case 1: // encapsulate: new Ethernet + IPv4 (IPIP) header in the headroom
				inner := f.Bytes()[14:]
				f.Off -= 20
				f.Len += 20
				b := f.Bytes()
				copy(b[0:12], append(macNobody[:], macSender[:]...))
				binary.BigEndian.PutUint16(b[12:], 0x0800)
				ip := b[14:34]
				clear(ip)
				ip[0] = 0x45
				binary.BigEndian.PutUint16(ip[2:], uint16(20+len(inner)))
				ip[8], ip[9] = 64, 4
				copy(ip[12:], []byte{198, 18, 0, 1, 198, 18, 0, 2})
				binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
			case 2: // grow at the tail
				end := f.Off + f.Len
				for j := range 100 {
					f.Buf[end+j] = byte(j)
				}
				f.Len += 100
			}
			sendWant = append(sendWant, bytes.Clone(f.Bytes()))
			batch = append(batch, f)
		}
	}
	if len(batch) != txN {
		t.Fatalf("received %d of %d frames for the transmit test", len(batch), txN)
	}
	before := l.Stats()
	sent, err := l.Send(batch) // more than one batch: Send splits it
	if sent != len(batch) || err != nil {
		t.Fatalf("Send = %d, %v; want %d, nil", sent, err, len(batch))
	}
	after := l.Stats()
	if after.Sent-before.Sent != uint64(len(batch)) || after.SendErrors != before.SendErrors {
		t.Errorf("stats after Send %+v, before %+v", after, before)
	}
	expectFrames(t, rawFrames(t, peer), sendWant, nil, 5*time.Second, 0)

	// Every buffer is free again: a full set can be lent out.
	if len(l.free)+len(l.reserve) != len(l.bufs) {
		t.Errorf("%d of %d buffers free after everything was given back", len(l.free)+len(l.reserve), len(l.bufs))
	}
}

// TestFilter checks which frames the socket filter lets through, that it
// can be replaced at run time, that VLAN tags come back byte-exact, and that
// the kernel keeps ARP and ping working while the link is open.
func TestFilter(t *testing.T) {
	p := newPair(t)
	l := openLink(t, p.a, ifA, Config{Poll: 20 * time.Millisecond})
	peer := openRaw(t, p.b, ifB, false)
	recv := linkFrames(t, l)

	var (
		toVIP4     = udpFrame(addrB, vip4, 1, 10)
		toVIP4b    = udpFrame(addrB, vip4b, 2, 10)
		toVIP6     = udpFrame(netip.MustParseAddr("2001:db8::2"), vip6, 3, 10)
		toVIP6b    = udpFrame(netip.MustParseAddr("2001:db8::2"), vip6b, 4, 10)
		toOther4   = udpFrame(addrB, netip.MustParseAddr("198.18.1.99"), 5, 10)
		toOther6   = udpFrame(netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::99"), 6, 10)
		dot1q      = tagged(udpFrame(addrB, vip4, 7, 10), 0x8100, 0x2064) // PCP 1, VID 100
		dot1qOther = tagged(udpFrame(addrB, netip.MustParseAddr("198.18.1.99"), 8, 10), 0x8100, 100)
		qinq       = tagged(tagged(udpFrame(addrB, vip6, 9, 10), 0x8100, 200), 0x88a8, 300)
		arp        = arpFrame(vip4)
		// An IPv4 header cut before the destination address.
		short = udpFrame(addrB, vip4, 10, 0)[:14+18]
	)
	all := [][]byte{toVIP4, toVIP4b, toVIP6, toVIP6b, toOther4, toOther6, dot1q, dot1qOther, qinq, arp, short}
	sendAll := func() {
		for _, f := range all {
			peer.write(t, f)
		}
	}
	except := func(keep ...[]byte) (rest [][]byte) {
	next:
		for _, f := range all {
			for _, k := range keep {
				if bytes.Equal(f, k) {
					continue next
				}
			}
			rest = append(rest, f)
		}
		return rest
	}

	t.Run("none", func(t *testing.T) {
		// Without a filter everything arrives, tags restored.
		sendAll()
		expectFrames(t, recv, all, nil, 3*time.Second, 0)
	})
	t.Run("vips", func(t *testing.T) {
		if err := l.SetFilter([]netip.Addr{vip4, vip6}); err != nil {
			t.Fatal(err)
		}
		sendAll()
		want := [][]byte{toVIP4, toVIP6, dot1q, qinq}
		expectFrames(t, recv, want, except(want...), 3*time.Second, 100*time.Millisecond)
	})
	t.Run("replaced", func(t *testing.T) {
		if err := l.SetFilter([]netip.Addr{vip4b, vip6b}); err != nil {
			t.Fatal(err)
		}
		sendAll()
		want := [][]byte{toVIP4b, toVIP6b}
		expectFrames(t, recv, want, except(want...), 3*time.Second, 100*time.Millisecond)
	})
	t.Run("empty", func(t *testing.T) {
		if err := l.SetFilter(nil); err != nil {
			t.Fatal(err)
		}
		sendAll()
		expectFrames(t, recv, nil, all, 0, 200*time.Millisecond)
	})
	t.Run("arp-and-ping", func(t *testing.T) {
		if err := l.SetFilter([]netip.Addr{vip4}); err != nil {
			t.Fatal(err)
		}
		// Drain, then ping: ARP and ICMP to addrA must reach the kernel and
		// must not reach the link.
		for len(recv(0)) > 0 {
		}
		p.b.Run(t, "ip", "neigh", "flush", "dev", ifB)
		before := l.Stats().Received
		out := p.b.Run(t, "ping", "-c", "3", "-i", "0.2", "-W", "2", addrA.String())
		if !strings.Contains(out, "3 received") {
			t.Fatalf("ping: %s", out)
		}
		for range 5 {
			recv(0)
		}
		if got := l.Stats().Received - before; got != 0 {
			t.Errorf("the link received %d frames of the ping (ARP/ICMP to a non-VIP)", got)
		}
	})
	t.Run("cleared", func(t *testing.T) {
		if err := l.ClearFilter(); err != nil {
			t.Fatal(err)
		}
		if err := l.ClearFilter(); err != nil {
			t.Errorf("ClearFilter without a filter: %v", err)
		}
		sendAll()
		expectFrames(t, recv, all, nil, 3*time.Second, 0)
	})
}

// TestClose checks that Close wakes a Recv that waits for frames, and that
// every call afterwards returns ErrClosed.
func TestClose(t *testing.T) {
	p := newPair(t)
	l := openLink(t, p.a, ifA, Config{Poll: 100 * time.Millisecond, BatchSize: 8})
	peer := openRaw(t, p.b, ifB, false)
	frames := make([]link.Frame, 8)

	// Poll bounds an idle Recv. (A separate link: this one waits 10 s.)
	short := openLink(t, p.a, ifA, Config{Poll: 30 * time.Millisecond, Filter: []netip.Addr{}})
	start := time.Now()
	if n, err := short.Recv(make([]link.Frame, short.BatchSize())); n != 0 || err != nil {
		t.Fatalf("idle Recv = %d, %v", n, err)
	}
	if d := time.Since(start); d < 25*time.Millisecond || d > time.Second {
		t.Errorf("idle Recv returned after %v, Poll is 30ms", d)
	}

	// Hold a frame across Close to give it back afterwards.
	setFilter(t, l, vip4)
	base := l.Stats()
	peer.write(t, udpFrame(addrB, vip4, 1, 0))
	var held []link.Frame
	for deadline := time.Now().Add(3 * time.Second); len(held) == 0 && time.Now().Before(deadline); {
		k, err := l.Recv(frames)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, frames[:k]...)
	}
	if len(held) != 1 {
		t.Fatalf("held %d frames, want 1", len(held))
	}

	l.poll = 10 * time.Second // Close must end the wait, not Poll
	type result struct {
		n   int
		err error
		at  time.Time
	}
	res := make(chan result, 1)
	go func() {
		n, err := l.Recv(frames)
		res <- result{n, err, time.Now()}
	}()
	time.Sleep(100 * time.Millisecond) // let Recv park in the netpoller
	closedAt := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if !errors.Is(r.err, link.ErrClosed) || r.n != 0 {
			t.Errorf("blocked Recv = %d, %v; want 0, ErrClosed", r.n, r.err)
		}
		wake := r.at.Sub(closedAt)
		t.Logf("Recv woke %v after Close", wake)
		if wake > 100*time.Millisecond {
			t.Errorf("Recv woke %v after Close, want <= 100ms", wake)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not wake the blocked Recv")
	}
	if _, err := l.Recv(frames); !errors.Is(err, link.ErrClosed) {
		t.Errorf("Recv after Close: %v", err)
	}
	if n, err := l.Send(held); n != 0 || !errors.Is(err, link.ErrClosed) {
		t.Errorf("Send after Close = %d, %v", n, err)
	}
	if len(l.free)+len(l.reserve) != len(l.bufs) {
		t.Errorf("Send after Close kept frames: %d of %d buffers free", len(l.free)+len(l.reserve), len(l.bufs))
	}
	if err := l.SetFilter(nil); !errors.Is(err, link.ErrClosed) {
		t.Errorf("SetFilter after Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if st := l.Stats(); st.Received-base.Received != 1 || st.SendErrors != 1 {
		t.Errorf("stats after Close: %+v (before the frame: %+v)", st, base)
	}
}

// TestOversize checks that frames longer than FrameSize are dropped and
// counted, and frames up to FrameSize are delivered whole.
func TestOversize(t *testing.T) {
	p := newPair(t)
	const size = 256
	l := openLink(t, p.a, ifA, Config{FrameSize: size, Poll: 20 * time.Millisecond})
	setFilter(t, l, vip4)
	before := l.Stats()
	peer := openRaw(t, p.b, ifB, false)
	base := len(udpFrame(addrB, vip4, 0, 0))
	fit := udpFrame(addrB, vip4, 1, 100)
	exact := udpFrame(addrB, vip4, 2, size-base)
	over := udpFrame(addrB, vip4, 3, size-base+1)
	huge := udpFrame(addrB, vip4, 4, 1400)
	// A tag the kernel moved to metadata does not count: this frame is
	// size+4 bytes on the wire and is delivered with its tag restored.
	exactTagged := tagged(udpFrame(addrB, vip4, 5, size-base), 0x8100, 7)
	if len(exact) != size || len(over) != size+1 {
		t.Fatalf("test frame sizes %d, %d", len(exact), len(over))
	}
	for _, f := range [][]byte{fit, over, exact, huge, exactTagged} {
		peer.write(t, f)
	}
	expectFrames(t, linkFrames(t, l), [][]byte{fit, exact, exactTagged}, [][]byte{over, huge}, 3*time.Second, 100*time.Millisecond)
	if st := l.Stats(); st.Oversize-before.Oversize != 2 || st.Received-before.Received != 3 {
		t.Errorf("stats %+v (before %+v): want 2 more Oversize, 3 more Received", st, before)
	}
	// The dropped frames' buffers were not lost.
	if len(l.free)+len(l.reserve) != len(l.bufs) {
		t.Errorf("%d of %d buffers free", len(l.free)+len(l.reserve), len(l.bufs))
	}
}

// TestSendErrors checks that frames the kernel rejects or that are invalid
// are counted and skipped while the rest of the batch goes out.
func TestSendErrors(t *testing.T) {
	p := newPair(t)
	p.a.Run(t, "ip", "link", "set", ifA, "mtu", "576")
	l := openLink(t, p.a, ifA, Config{Poll: 20 * time.Millisecond})
	setFilter(t, l, vip4)
	peer := openRaw(t, p.b, ifB, true)
	for i := range 4 {
		peer.write(t, udpFrame(addrB, vip4, uint32(i), 10))
	}
	frames := make([]link.Frame, l.BatchSize())
	var batch []link.Frame
	for deadline := time.Now().Add(3 * time.Second); len(batch) < 4 && time.Now().Before(deadline); {
		k, err := l.Recv(frames)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, frames[:k]...)
	}
	if len(batch) != 4 {
		t.Fatalf("received %d of 4", len(batch))
	}
	batch[1].Len = 14 + 577 // over the MTU: EMSGSIZE
	batch[3].Len = len(batch[3].Buf) + 1
	want := [][]byte{bytes.Clone(batch[0].Bytes()), bytes.Clone(batch[2].Bytes())}
	sent, err := l.Send(batch)
	t.Logf("Send: %d, %v", sent, err)
	if sent != 2 || err == nil {
		t.Errorf("Send = %d, %v; want 2 and an error", sent, err)
	}
	if st := l.Stats(); st.Sent != 2 || st.SendErrors != 2 {
		t.Errorf("stats %+v: want Sent 2, SendErrors 2", st)
	}
	if len(l.free)+len(l.reserve) != len(l.bufs) {
		t.Errorf("%d of %d buffers free after Send", len(l.free)+len(l.reserve), len(l.bufs))
	}
	expectFrames(t, rawFrames(t, peer), want, nil, 3*time.Second, 0)
}

// TestOwnership checks ErrLeak when every buffer is lent out and the panic
// on a frame given back twice.
func TestOwnership(t *testing.T) {
	p := newPair(t)
	l := openLink(t, p.a, ifA, Config{BatchSize: 4, Poll: 20 * time.Millisecond})
	setFilter(t, l, vip4)
	peer := openRaw(t, p.b, ifB, false)
	for i := range 10 {
		peer.write(t, udpFrame(addrB, vip4, uint32(i), 0))
	}
	var held []link.Frame
	var err error
	for deadline := time.Now().Add(3 * time.Second); err == nil && time.Now().Before(deadline); {
		frames := make([]link.Frame, 4)
		var k int
		k, err = l.Recv(frames)
		held = append(held, frames[:k]...)
	}
	if !errors.Is(err, ErrLeak) || len(held) != 8 {
		t.Fatalf("after %d frames held: %v; want 8 frames and ErrLeak", len(held), err)
	}
	l.Release(held)
	func() {
		defer func() {
			if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "twice") {
				t.Errorf("double Release: recovered %v, want a panic", r)
			}
		}()
		l.Release(held[:1])
	}()
	// The two frames still queued arrive now that buffers are free.
	frames := make([]link.Frame, 4)
	n, err := l.Recv(frames)
	if n != 2 || err != nil {
		t.Errorf("Recv after Release = %d, %v; want the 2 remaining frames", n, err)
	}
	l.Release(frames[:n])
}

func TestNewErrors(t *testing.T) {
	p := newPair(t)
	for _, name := range []string{"lo", "nosuchif0", strings.Repeat("x", 20)} {
		err := p.a.Do(func() error {
			l, err := New(name, Config{})
			if err == nil {
				l.Close()
			}
			return err
		})
		if err == nil {
			t.Errorf("New(%q) succeeded", name)
		} else {
			t.Logf("New(%q): %v", name, err)
		}
	}
	if err := p.a.Do(func() error { _, err := New(ifA, Config{FrameSize: 10}); return err }); err == nil {
		t.Error("FrameSize 10 accepted")
	}
}

// TestZeroAllocs checks that a warmed-up Recv + Send round, and an idle
// Recv, allocate nothing.
func TestZeroAllocs(t *testing.T) {
	p := newPair(t)
	l := openLink(t, p.a, ifA, Config{Poll: time.Millisecond})
	setFilter(t, l, vip4)
	peer := openRaw(t, p.b, ifB, false)
	burst := make([][]byte, 8)
	for i := range burst {
		burst[i] = udpFrame(addrB, vip4, uint32(i), 20)
	}
	frames := make([]link.Frame, l.BatchSize())
	var failed error
	var got, idle int
	round := func() {
		for _, f := range burst {
			peer.write(t, f)
		}
		for k := 0; k < len(burst); {
			n, err := l.Recv(frames)
			if err != nil {
				failed = err
				return
			}
			if n == 0 {
				idle++
				if idle > 1000 {
					failed = errors.New("frames did not arrive")
					return
				}
			}
			if _, err := l.Send(frames[:n]); err != nil {
				failed = err
				return
			}
			k += n
			got += n
		}
	}
	round() // warm up
	if a := testing.AllocsPerRun(100, round); a != 0 {
		t.Errorf("Recv+Send round: %v allocations", a)
	}
	if failed != nil {
		t.Fatal(failed)
	}
	t.Logf("%d frames received and sent, %d idle Recvs", got, idle)
	l.SetFilter(nil)
	for {
		if n, _ := l.Recv(frames); n == 0 {
			break
		}
	}
	if a := testing.AllocsPerRun(20, func() {
		if n, err := l.Recv(frames); n != 0 || err != nil {
			failed = fmt.Errorf("idle Recv = %d, %v", n, err)
		}
	}); a != 0 {
		t.Errorf("idle Recv: %v allocations", a)
	}
	if failed != nil {
		t.Fatal(failed)
	}
}

// TestPartialChecksum checks that frames sent with checksum offload left to
// the (virtual) NIC are counted: their UDP checksum is only the pseudo-header
// sum.
func TestPartialChecksum(t *testing.T) {
	if _, err := exec.LookPath("ethtool"); err != nil {
		t.Skip("needs ethtool")
	}
	p := newPair(t)
	dst := netip.MustParseAddr("198.18.0.50")
	l := openLink(t, p.a, ifA, Config{Poll: 20 * time.Millisecond})
	setFilter(t, l, dst)
	// The peer's kernel sends UDP to dst, a neighbour that answers nobody,
	// once with tx checksum offload on and once with it off.
	p.b.Run(t, "ip", "neigh", "replace", dst.String(), "lladdr", "02:00:00:00:00:01", "dev", ifB)
	frames := make([]link.Frame, l.BatchSize())
	for _, tc := range []struct {
		offload string
		partial uint64
	}{{"on", 1}, {"off", 0}} {
		p.b.Run(t, "ethtool", "-K", ifB, "tx", tc.offload)
		before := l.Stats()
		err := p.b.Do(func() error {
			c, err := net.Dial("udp4", dst.String()+":9")
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("checksum"))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for deadline := time.Now().Add(3 * time.Second); got == 0 && time.Now().Before(deadline); {
			n, err := l.Recv(frames)
			if err != nil {
				t.Fatal(err)
			}
			got += n
			l.Release(frames[:n])
		}
		st := l.Stats()
		if got != 1 || st.PartialChecksum-before.PartialChecksum != tc.partial {
			t.Errorf("tx offload %s: received %d frames, PartialChecksum +%d; want 1 frame, +%d",
				tc.offload, got, st.PartialChecksum-before.PartialChecksum, tc.partial)
		}
	}
}

// A link opened with Config.Filter never queues a frame the filter rejects,
// even when such frames arrive while it opens (SetFilter after New would let
// those through).
func TestFilterFromTheStart(t *testing.T) {
	p := newPair(t)
	peer := openRaw(t, p.b, ifB, false)
	other := netip.MustParseAddr("198.18.99.99")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			peer.write(t, udpFrame(addrB, other, uint32(i), 0))
			time.Sleep(50 * time.Microsecond)
		}
	}()
	for range 20 {
		l := openLink(t, p.a, ifA, Config{Poll: 5 * time.Millisecond, Filter: []netip.Addr{vip4}})
		frames := make([]link.Frame, l.BatchSize())
		for range 3 {
			if n, err := l.Recv(frames); n != 0 || err != nil {
				close(stop)
				<-done
				t.Fatalf("Recv = %d, %v: a frame to %v got past the filter", n, err, other)
			}
		}
		l.Close()
	}
	close(stop)
	<-done
}
