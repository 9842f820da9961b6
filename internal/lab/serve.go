package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// freebind lets a socket bind an address the host does not have yet, so
// a backend's server can start before the agent puts the VIPs on lo.
func freebind(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		switch network {
		case "tcp6", "udp6":
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		default:
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

var listenConfig = net.ListenConfig{Control: freebind}

// listenTCP opens a TCP listener on every address in addrs, with
// IP_FREEBIND, in the calling thread's namespace; if one fails it closes
// the others. what names the server in errors.
func listenTCP(ctx context.Context, what string, addrs []string) ([]net.Listener, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("lab: %s: no address to listen on", what)
	}
	lns := make([]net.Listener, 0, len(addrs))
	for _, a := range addrs {
		ln, err := listenConfig.Listen(ctx, "tcp", a)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("lab: %s: %w", what, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// ServeHTTP serves HTTP on every address in addrs ("198.18.0.10:80",
// "[2001:db8::10]:80") and answers every request with name and a newline
// (header X-Backend: name as well, and X-Remote-Addr: the client's address
// and port as the server saw them); a request with a body (an upload) is
// read to its end and answered with name, a space and the number of bytes
// received. The sockets are opened before ServeHTTP
// blocks, in the calling thread's network namespace, with IP_FREEBIND: the
// addresses need not exist yet. It returns nil when ctx is done (after a
// graceful shutdown of at most a second), or the first error of a listener.
func ServeHTTP(ctx context.Context, addrs []string, name string) error {
	lns, err := listenTCP(ctx, "http", addrs)
	if err != nil {
		return err
	}
	body := []byte(name + "\n")
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("X-Backend", name)
			// The client as the server saw it (with full-NAT: the LB
			// node's SNAT address and port).
			w.Header().Set("X-Remote-Addr", r.RemoteAddr)
			if r.ContentLength != 0 && r.Body != nil {
				n, err := io.Copy(io.Discard, r.Body)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				fmt.Fprintf(w, "%s %d\n", name, n)
				return
			}
			w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errc <- srv.Serve(ln) }()
	}
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
		return nil
	case err := <-errc:
		srv.Close()
		return fmt.Errorf("lab: http: %w", err)
	}
}

// ServeUDPEcho answers every UDP datagram received on addrs with
// "<name>:<payload>", sent from the address it arrived at (the sockets are
// bound to those addresses, with IP_FREEBIND, in the calling thread's
// namespace). It returns nil when ctx is done, or the first socket error.
func ServeUDPEcho(ctx context.Context, addrs []string, name string) error {
	if len(addrs) == 0 {
		return errors.New("lab: udp echo: no address to listen on")
	}
	conns := make([]net.PacketConn, 0, len(addrs))
	closeAll := sync.OnceFunc(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for _, a := range addrs {
		c, err := listenConfig.ListenPacket(ctx, "udp", a)
		if err != nil {
			closeAll()
			return fmt.Errorf("lab: udp echo: %w", err)
		}
		conns = append(conns, c)
	}
	errc := make(chan error, len(conns))
	for _, c := range conns {
		go func() {
			buf := make([]byte, 64<<10)
			out := make([]byte, 0, len(name)+1+len(buf))
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					errc <- err
					return
				}
				out = append(append(append(out[:0], name...), ':'), buf[:n]...)
				if _, err := c.WriteTo(out, from); err != nil && ctx.Err() == nil {
					// A reply that cannot be sent (no route yet) is not fatal.
					continue
				}
			}
		}()
	}
	select {
	case <-ctx.Done():
		closeAll()
		return nil
	case err := <-errc:
		closeAll()
		return fmt.Errorf("lab: udp echo: %w", err)
	}
}
