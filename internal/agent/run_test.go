package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// loopbackAgent builds an Agent around a loopback UDP socket and a pipe
// standing in for the TUN device, without touching the host (no root).
func loopbackAgent(t *testing.T, batch int) (a *Agent, tunOut *os.File) {
	t.Helper()
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	a = &Agent{
		cfg:  Config{Listen: udp.LocalAddr().(*net.UDPAddr).AddrPort(), Batch: batch},
		log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		vips: testSet, udp: udp, tun: w,
		trust: newSourceFilter(&Config{LBPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}),
	}
	if a.rd, err = newBatchReader(udp, batch); err != nil {
		t.Fatal(err)
	}
	a.push("close UDP socket", udp.Close)
	a.push("close pipe", w.Close)
	t.Cleanup(func() { a.Close(); r.Close() })
	return a, r
}

// TestRunLoopback drives Run over a real socket: batches of mixed datagrams
// are read with recvmmsg, the valid ones come out of the TUN stand-in in
// order, each drop is counted, and cancelling ctx makes Run return nil.
func TestRunLoopback(t *testing.T) {
	a, tunOut := loopbackAgent(t, 8)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	c, err := net.Dial("udp", a.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 50 // bounded: 50 good, 50 bad datagrams
	var want bytes.Buffer
	for i := range n {
		in := syn(client4, netip.AddrPortFrom(vip4, 80), uint32(i))
		if i%2 == 1 {
			in = syn(client6, netip.AddrPortFrom(vip6, 443), uint32(i))
		}
		want.Write(in)
		proto := uint8(4)
		if i%2 == 1 {
			proto = 41
		}
		for _, d := range [][]byte{gue(proto, nil, in), gue(17, nil, in)} {
			if _, err := c.Write(d); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitCounters(t, a, "all received", func(c *Counters) bool { return c.Received == 2*n })
	got := make([]byte, want.Len())
	tunOut.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(tunOut, got); err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Errorf("TUN stand-in received %d bytes (%v), not the %d delivered in order", len(got), err, want.Len())
	}
	cnt := a.Counters()
	if cnt.Delivered != n || cnt.Drops[NotIP] != n || cnt.Dropped() != n {
		t.Errorf("counters %+v", cnt)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
	// A new Run with a live context works again after a cancelled one.
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { done <- a.Run(ctx2) }()
	if _, err := c.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	waitCounters(t, a, "second Run", func(c *Counters) bool { return c.Drops[GUETruncated] == 1 })
	cancel2()
	if err := <-done; err != nil {
		t.Errorf("second Run = %v", err)
	}
}

// TestBatchReader checks that one read returns several queued datagrams,
// each with its own length, and at most the batch size.
func TestBatchReader(t *testing.T) {
	a, _ := loopbackAgent(t, 4)
	c, err := net.Dial("udp", a.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 1; i <= 6; i++ {
		if _, err := c.Write(bytes.Repeat([]byte{byte(i)}, i*100)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond) // loopback delivery is synchronous; be generous
	var sizes []int
	for len(sizes) < 6 {
		n, err := a.rd.read()
		if err != nil {
			t.Fatal(err)
		}
		if n > 4 {
			t.Fatalf("read returned %d > batch 4", n)
		}
		for i := range n {
			d := a.rd.datagram(i)
			if a.rd.truncated(i) || len(d) == 0 || !bytes.Equal(d, bytes.Repeat(d[:1], len(d))) {
				t.Fatalf("datagram %d corrupt", i)
			}
			sizes = append(sizes, len(d))
		}
		if len(sizes) == n && n < 2 {
			t.Errorf("first read returned %d datagrams, want a batch", n)
		}
	}
	for i, s := range sizes {
		if s != (i+1)*100 {
			t.Errorf("sizes = %v", sizes)
			break
		}
	}
}
