package health

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/sluicelb/sluice/internal/health/vipprobe"
)

// Errors of failed checks, reported in Transition.Err (wrapped, with the
// check's kind and target): test them with errors.Is. Other failures carry
// the socket error (connection refused, network unreachable, ...).
var (
	// ErrTimeout: no answer within the check's Timeout.
	ErrTimeout = errors.New("no answer within the timeout")
	// ErrStatus: an HTTP(S) response with another status than ExpectStatus.
	ErrStatus = errors.New("unexpected HTTP status")
	// ErrReply: a UDP reply that does not start with Expect, or a VIP probe
	// reply with a status this package does not know.
	ErrReply = errors.New("unexpected reply")
	// ErrVIPDown: the agent answered that nothing serves the VIP's
	// protocol and port on the backend.
	ErrVIPDown = errors.New("the agent reports the service down on the VIP")
	// ErrVIPNotConfigured: the agent answered that it does not serve the
	// VIP.
	ErrVIPNotConfigured = errors.New("the VIP is not configured on the agent")
	// ErrAgentOverloaded: the agent had too many probes to check this one.
	ErrAgentOverloaded = errors.New("the agent is overloaded")
)

// newProbe returns the probe for s (defaults applied).
func newProbe(s Spec) probeFunc {
	if err := s.Validate(); err != nil {
		return func(context.Context) error { return err }
	}
	switch s.Kind {
	case TCP:
		return func(ctx context.Context) error { return probeTCP(ctx, &s) }
	case HTTP, HTTPS:
		return newHTTPProbe(&s)
	case UDP:
		return func(ctx context.Context) error { return probeUDP(ctx, &s) }
	case VIP:
		return func(ctx context.Context) error { return probeVIP(ctx, &s) }
	}
	panic("health: unreachable: Validate accepted kind " + s.Kind.String())
}

func timeoutErr(s *Spec) error {
	return fmt.Errorf("health: %s %s: %w (%s)", s.Kind, s.Target, ErrTimeout, s.Timeout)
}

// checkErr puts err in the words of the check: a timeout (of ctx or of a
// socket deadline) becomes ErrTimeout.
func checkErr(ctx context.Context, s *Spec, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, os.ErrDeadlineExceeded) {
		return timeoutErr(s)
	}
	return fmt.Errorf("health: %s %s: %w", s.Kind, s.Target, err)
}

// probeTCP connects to the target and closes the connection at once.
func probeTCP(ctx context.Context, s *Spec) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", s.Target.String())
	if err != nil {
		return checkErr(ctx, s, err)
	}
	c.Close()
	return nil
}

// newHTTPProbe builds the client of one HTTP(S) check: a new connection per
// run (no keep-alive: a check must see a server that stopped listening), no
// proxy, no redirects, HTTP/1.1.
func newHTTPProbe(s *Spec) probeFunc {
	serverName := s.Target.Addr().String()
	if s.Host != "" {
		serverName = s.Host
		if h, _, err := net.SplitHostPort(s.Host); err == nil {
			serverName = h
		}
	}
	tr := &http.Transport{
		DialContext:            (&net.Dialer{}).DialContext,
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 64 << 10,
		TLSClientConfig: &tls.Config{
			ServerName:         serverName,
			InsecureSkipVerify: s.InsecureSkipVerify,
		},
	}
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	scheme := "http"
	if s.Kind == HTTPS {
		scheme = "https"
	}
	url := scheme + "://" + s.Target.String() + s.Path
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return checkErr(ctx, s, err)
		}
		if s.Host != "" {
			req.Host = s.Host
		}
		req.Header.Set("User-Agent", "sluice-health")
		resp, err := client.Do(req)
		if err != nil {
			return checkErr(ctx, s, err)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		if resp.StatusCode != s.ExpectStatus {
			return fmt.Errorf("health: %s %s%s: %w %d, want %d", s.Kind, s.Target, s.Path, ErrStatus,
				resp.StatusCode, s.ExpectStatus)
		}
		return nil
	}
}

// deadlineOnCancel makes c's pending and future reads fail once ctx is done
// and returns the function that undoes this.
func deadlineOnCancel(ctx context.Context, c net.Conn) (stop func() bool) {
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	return context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
}

// probeUDP sends Send from a connected socket (so an ICMP port unreachable
// fails the check at once) and reads one reply, which must start with
// Expect.
func probeUDP(ctx context.Context, s *Spec) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", s.Target.String())
	if err != nil {
		return checkErr(ctx, s, err)
	}
	defer c.Close()
	defer deadlineOnCancel(ctx, c)()
	if _, err := c.Write(s.Send); err != nil {
		return checkErr(ctx, s, err)
	}
	buf := make([]byte, MaxUDPPayload+1)
	n, err := c.Read(buf)
	if err != nil {
		return checkErr(ctx, s, err)
	}
	if !bytes.HasPrefix(buf[:n], s.Expect) {
		return fmt.Errorf("health: udp %s: %w: %q does not start with %q", s.Target, ErrReply,
			buf[:min(n, len(s.Expect)+16)], s.Expect)
	}
	return nil
}

// vipResends is how many times a VIP probe is sent within the timeout (at
// 0, T/3, 2T/3): one lost datagram must not fail the check.
const vipResends = 3

// probeVIP sends a VIP probe request to the agent at Target and waits for
// the reply with its ID. The socket is not connected: the agent answers from
// its GUE socket, whose source address the kernel chooses and need not be
// Target's address; replies are matched by the random 64-bit ID and the
// echoed VIP and protocol instead.
func probeVIP(ctx context.Context, s *Spec) error {
	network := "udp4"
	if s.Target.Addr().Is6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, nil)
	if err != nil {
		return checkErr(ctx, s, err)
	}
	defer c.Close()
	defer deadlineOnCancel(ctx, c)()

	var idb [8]byte
	rand.Read(idb[:]) // never fails (crypto/rand)
	req := vipprobe.Message{Type: vipprobe.Request, Proto: vipprobe.ProtoTCP, ID: binary.BigEndian.Uint64(idb[:]),
		VIP: s.VIP}
	if s.Proto == "udp" {
		req.Proto = vipprobe.ProtoUDP
	}
	out, err := vipprobe.Append(make([]byte, 0, vipprobe.MaxLen), &req)
	if err != nil {
		return checkErr(ctx, s, err) // Validate prevents it
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(s.Timeout)
	}
	every := s.Timeout / vipResends
	buf := make([]byte, 512)
	var next time.Time
	for ctx.Err() == nil {
		now := time.Now()
		if !now.Before(deadline) {
			return timeoutErr(s)
		}
		if !now.Before(next) {
			if _, err := c.WriteToUDPAddrPort(out, s.Target); err != nil {
				return checkErr(ctx, s, err)
			}
			next = now.Add(every)
		}
		rd := next
		if deadline.Before(rd) {
			rd = deadline
		}
		c.SetReadDeadline(rd)
		n, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue // time to resend, or ctx is done
		}
		if err != nil {
			return checkErr(ctx, s, err)
		}
		var m vipprobe.Message
		if vipprobe.Parse(buf[:n], &m) != nil || m.Type != vipprobe.Reply || m.ID != req.ID ||
			m.VIP != req.VIP || m.Proto != req.Proto {
			continue // not the answer to this probe
		}
		switch m.Status {
		case vipprobe.StatusUp:
			return nil
		case vipprobe.StatusDown:
			return fmt.Errorf("health: vip %s (%s %s): %w", s.Target, s.Proto, s.VIP, ErrVIPDown)
		case vipprobe.StatusNotConfigured:
			return fmt.Errorf("health: vip %s (%s %s): %w", s.Target, s.Proto, s.VIP, ErrVIPNotConfigured)
		case vipprobe.StatusOverloaded:
			return fmt.Errorf("health: vip %s (%s %s): %w", s.Target, s.Proto, s.VIP, ErrAgentOverloaded)
		}
		return fmt.Errorf("health: vip %s (%s %s): %w: status %s", s.Target, s.Proto, s.VIP, ErrReply, m.Status)
	}
	return checkErr(ctx, s, ctx.Err())
}
