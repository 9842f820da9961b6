package e2e

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/scenario"
)

// openStreams opens n long-lived stream-protocol connections from the
// client to the IPv4 stream VIP, a message each way every 100 ms; a
// connection whose answer takes longer than timeout is broken. It fails the
// test when any of them cannot open, and stops them at the test's end.
func openStreams(t *testing.T, s *scenario.Scenario, n int, timeout time.Duration) *lab.Streams {
	t.Helper()
	dst := netip.AddrPortFrom(s.Opts.VIP4, scenario.StreamPort).String()
	dial := func(ctx context.Context) (net.Conn, error) {
		var c net.Conn
		err := s.Lab.Client.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp", dst, 5*time.Second)
			return err
		})
		return c, err
	}
	st := lab.RunStreams(t.Context(), lab.StreamOptions{Dial: dial, Conns: n, Interval: failoverInterval, Timeout: timeout})
	t.Cleanup(func() { st.Stop() })
	per := map[string]int{}
	for i, r := range st.Snapshot() {
		if r.Err != nil {
			t.Fatalf("stream %d: %v", i, r.Err)
		}
		per[r.Backend]++
	}
	t.Logf("%d streams open: %v", n, per)
	return st
}
