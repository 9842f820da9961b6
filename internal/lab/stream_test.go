package lab

import (
	"context"
	"net"
	"testing"
	"time"
)

// Streams over loopback run clean; when the server goes away every
// connection reports the break.
func TestStreams(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	done := make(chan error, 1)
	sctx, stopServer := context.WithCancel(ctx)
	go func() { done <- ServeStream(sctx, []string{addr}, "s1") }()
	var d net.Dialer
	dial := func(ctx context.Context) (net.Conn, error) {
		for range 50 {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				return c, nil
			}
			time.Sleep(10 * time.Millisecond)
		}
		return d.DialContext(ctx, "tcp", addr)
	}
	st := RunStreams(ctx, StreamOptions{Dial: dial, Conns: 20, Interval: 5 * time.Millisecond, Timeout: time.Second})
	time.Sleep(100 * time.Millisecond)
	for i, r := range st.Snapshot() {
		if r.Err != nil || r.Backend != "s1" || r.Sent < 3 {
			t.Fatalf("conn %d: %+v", i, r)
		}
	}
	stopServer() // the server closes every connection
	<-done
	time.Sleep(50 * time.Millisecond)
	res := st.Stop()
	broken := 0
	for _, r := range res {
		if r.Err != nil {
			broken++
		}
	}
	if broken == 0 {
		t.Fatal("the server went away and no connection saw it")
	}
}
