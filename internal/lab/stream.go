package lab

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The stream protocol of the failover tests: a long-lived TCP connection on
// which both ends check that nothing is lost, reordered or sent to the
// wrong host. The server greets with "name\n"; then the client sends
// "seq\n" with seq 1, 2, 3...; the server checks each is one more than the
// last and answers "seq\n". A connection that reaches another host is
// reset by that host's kernel (it has no such socket), which the client
// sees as an error: a broken connection.

// ServeStream serves the stream protocol on every address in addrs until
// ctx is done. The sockets are opened before it blocks, with IP_FREEBIND.
func ServeStream(ctx context.Context, addrs []string, name string) error {
	lns, err := listenTCP(ctx, "stream", addrs)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(lns))
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					if ctx.Err() == nil {
						errc <- err
					}
					return
				}
				mu.Lock()
				conns[c] = true
				mu.Unlock()
				wg.Add(1)
				go func() {
					defer wg.Done()
					serveStreamConn(c, name)
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
			}
		}()
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	for _, ln := range lns {
		ln.Close()
	}
	mu.Lock()
	for c := range conns {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
	return err
}

func serveStreamConn(c net.Conn, name string) {
	defer c.Close()
	if _, err := fmt.Fprintf(c, "%s\n", name); err != nil {
		return
	}
	r := bufio.NewReader(c)
	var last uint64
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		seq, err := strconv.ParseUint(strings.TrimSpace(line), 10, 64)
		if err != nil || seq != last+1 {
			fmt.Fprintf(c, "error: got %q after %d\n", strings.TrimSpace(line), last)
			return
		}
		last = seq
		if _, err := fmt.Fprintf(c, "%d\n", seq); err != nil {
			return
		}
	}
}

// StreamResult is what one client connection of RunStreams saw.
type StreamResult struct {
	Backend string        // the server's greeting
	Sent    uint64        // messages answered correctly
	MaxGap  time.Duration // longest time between two correct answers
	Err     error         // nil unless the connection broke
}

// StreamOptions configure RunStreams.
type StreamOptions struct {
	Dial     func(ctx context.Context) (net.Conn, error)
	Conns    int           // connections
	Interval time.Duration // between messages on one connection
	// Timeout bounds the wait for each answer; a connection whose answer
	// takes longer is broken. It must exceed the longest outage the test
	// tolerates (TCP retransmits lost segments within it).
	Timeout time.Duration
}

// Streams are running stream-protocol connections.
type Streams struct {
	res  []StreamResult
	mu   sync.Mutex
	wg   sync.WaitGroup
	stop context.CancelFunc
}

// RunStreams opens o.Conns connections with o.Dial and keeps them
// streaming until Stop. Connections that fail to open are reported with
// their error.
func RunStreams(ctx context.Context, o StreamOptions) *Streams {
	ctx, cancel := context.WithCancel(ctx)
	s := &Streams{res: make([]StreamResult, o.Conns), stop: cancel}
	ready := make(chan struct{}, o.Conns)
	for i := range o.Conns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.run(ctx, i, o, ready)
		}()
	}
	for range o.Conns {
		<-ready
	}
	return s
}

func (s *Streams) set(i int, fn func(r *StreamResult)) {
	s.mu.Lock()
	fn(&s.res[i])
	s.mu.Unlock()
}

func (s *Streams) run(ctx context.Context, i int, o StreamOptions, ready chan<- struct{}) {
	readied := false
	defer func() {
		if !readied {
			ready <- struct{}{}
		}
	}()
	c, err := o.Dial(ctx)
	if err != nil {
		s.set(i, func(r *StreamResult) { r.Err = fmt.Errorf("dial: %w", err) })
		return
	}
	defer c.Close()
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(o.Timeout))
	hello, err := r.ReadString('\n')
	if err != nil {
		s.set(i, func(r *StreamResult) { r.Err = fmt.Errorf("greeting: %w", err) })
		return
	}
	s.set(i, func(r *StreamResult) { r.Backend = strings.TrimSpace(hello) })
	ready <- struct{}{}
	readied = true
	last := time.Now()
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for seq := uint64(1); ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.SetDeadline(time.Now().Add(o.Timeout))
		if _, err := fmt.Fprintf(c, "%d\n", seq); err != nil {
			s.set(i, func(r *StreamResult) { r.Err = fmt.Errorf("send %d: %w", seq, err) })
			return
		}
		line, err := r.ReadString('\n')
		if err == nil && strings.TrimSpace(line) != strconv.FormatUint(seq, 10) {
			err = fmt.Errorf("answer %q", strings.TrimSpace(line))
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.set(i, func(r *StreamResult) { r.Err = fmt.Errorf("message %d: %w", seq, err) })
			return
		}
		now := time.Now()
		s.set(i, func(r *StreamResult) {
			r.Sent = seq
			r.MaxGap = max(r.MaxGap, now.Sub(last))
		})
		last = now
	}
}

// Snapshot returns the results so far.
func (s *Streams) Snapshot() []StreamResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]StreamResult(nil), s.res...)
}

// Stop ends every connection and returns the results.
func (s *Streams) Stop() []StreamResult {
	s.stop()
	s.wg.Wait()
	return s.Snapshot()
}

// ResetGaps zeroes every connection's MaxGap, so that the next Snapshot
// shows the longest gap since the reset (one phase of a test).
func (s *Streams) ResetGaps() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.res {
		s.res[i].MaxGap = 0
	}
}
