package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/scenario"
)

// lbStats reads LB node i's counters from its admin API.
func lbStats(t *testing.T, s *scenario.Scenario, i int) control.Stats {
	t.Helper()
	out, err := s.Lab.LBs[i].Run(context.Background(), "curl", "-sS", "--max-time", "3", "http://127.0.0.1:6090/v1/stats")
	if err != nil {
		t.Fatalf("lb%d stats: %v: %s", i+1, err, out)
	}
	var st control.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("lb%d stats: %v: %s", i+1, err, out)
	}
	return st
}

// fragRun sends n UDP datagrams of size bytes from the client to the UDP
// service of vip, each from a new socket (a new flow), and waits up to wait
// for each echo, trying tries times. The client's MTU is 1500, so every datagram leaves it
// fragmented, and so does every echo the backend sends back. It returns how
// many were echoed intact at the first try and in all.
func fragRun(t *testing.T, s *scenario.Scenario, vip netip.Addr, n, size, tries int, wait time.Duration) (first, total int) {
	t.Helper()
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(vip, scenario.UDPPort))
	err := s.Lab.Client.Do(func() error {
		buf := make([]byte, 64<<10)
		for i := range n {
			c, err := net.DialUDP("udp", nil, dst)
			if err != nil {
				return err
			}
			msg := bytes.Repeat([]byte{byte('a' + i%26)}, size)
			copy(msg, fmt.Sprintf("datagram-%d-", i))
			for try := range tries {
				c.Write(msg)
				c.SetReadDeadline(time.Now().Add(wait))
				m, err := c.Read(buf)
				if err != nil {
					continue
				}
				_, echo, ok := bytes.Cut(buf[:m], []byte(":"))
				if ok && bytes.Equal(echo, msg) {
					if try == 0 {
						first++
					}
					total++
					break
				}
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return first, total
}

// 8 KB UDP datagrams to a VIP over IPv4 and IPv6, each fragmented by the
// client (MTU 1500): the LB node sends a datagram's later fragments to the
// backend its first fragment went to (the echo server gets the whole
// datagram and answers), and, since a 1500-byte fragment no longer fits the
// 1500-byte MTU once encapsulated, sends those with the outer packet
// fragmented by the kernel. Control run: with node.fragments: drop every
// datagram is lost.
func TestE2EFragments(t *testing.T) {
	const size = 8000
	for _, tc := range []struct {
		name, node string
		on         bool
		n, tries   int
		wait       time.Duration
	}{
		{"forward", "", true, 60, 2, time.Second},
		// Lost datagrams cost the whole wait: fewer, shorter.
		{"control-drop", "  fragments: drop\n", false, 20, 1, 300 * time.Millisecond},
	} {
		n := tc.n
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, scenario.Options{IO: "afxdp", Node: tc.node})
			for _, vip := range s.VIPs() {
				first, total := fragRun(t, s, vip, n, size, tc.tries, tc.wait)
				t.Logf("%s: %d of %d datagrams of %d bytes echoed (%d at the first try)", vip, total, n, size, first)
				switch {
				case tc.on && total != n:
					t.Errorf("%s: %d of %d datagrams echoed", vip, total, n)
				case tc.on && first < n*9/10:
					t.Errorf("%s: only %d of %d datagrams echoed at the first try", vip, first, n)
				case !tc.on && total != 0:
					t.Errorf("control: %s: %d of %d datagrams echoed with fragments dropped", vip, total, n)
				}
			}
			st := lbStats(t, s, 0)
			t.Logf("lb1: fragments followed %d held %d released %d; kernel tx %d errors %d; drops fragment %d fragment_timeout %d",
				st.Fragments.Followed, st.Fragments.Held, st.Fragments.Released, st.Spilled, st.SpillErrors,
				st.Drops["fragment"], st.Drops["fragment_timeout"])
			// Each datagram is 6 fragments: 5 later ones.
			later := uint64(2 * n * 5)
			if tc.on {
				if got := st.Fragments.Followed + st.Fragments.Released; got < later {
					t.Errorf("%d later fragments sent after their first, want at least %d", got, later)
				}
				if st.Spilled == 0 || st.SpillErrors != 0 {
					t.Errorf("kernel tx %d errors %d: full-size fragments must go out fragmented", st.Spilled, st.SpillErrors)
				}
			} else if st.Drops["fragment"] < later {
				t.Errorf("control: %d later fragments dropped, want at least %d", st.Drops["fragment"], later)
			}
		})
	}
}

// A 2 MB HTTP POST from the client to the VIP over IPv4 and IPv6, every link
// at MTU 1500: the client's full-size segments no longer fit once
// encapsulated, the LB node answers them with ICMP fragmentation-needed /
// packet-too-big, the client lowers its path MTU and the upload completes.
// Control run: with node.too_big: drop the upload stalls and curl gives up.
func TestE2EPMTU(t *testing.T) {
	const size = 2 << 20
	file := filepath.Join(t.TempDir(), "upload")
	if err := os.WriteFile(file, bytes.Repeat([]byte("sluice-pmtu\n"), size/12+1)[:size], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, node string
		on         bool
	}{
		{"icmp", "", true},
		{"control-drop", "  too_big: drop\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, scenario.Options{IO: "afxdp", Node: tc.node})
			for _, vip := range s.VIPs() {
				url := "http://" + netip.AddrPortFrom(vip, scenario.HTTPPort).String() + "/"
				t0 := time.Now()
				out, err := s.Lab.Client.Run(context.Background(), "curl", "-sS", "--max-time", "10",
					"--data-binary", "@"+file, url)
				took := time.Since(t0)
				fields := strings.Fields(out)
				ok := err == nil && len(fields) == 2 && fields[1] == fmt.Sprint(size)
				t.Logf("%s: POST of %d bytes: ok %v in %v (%q, err %v)", vip, size, ok, took.Round(time.Millisecond), strings.TrimSpace(out), err)
				if ok != tc.on {
					t.Errorf("%s: upload succeeded: %v, want %v", vip, ok, tc.on)
				}
			}
			st := lbStats(t, s, 0)
			t.Logf("lb1: icmp too big sent %d; drops too_big %d too_big_rate_limited %d", st.TooBigAnswered, st.Drops["too_big"], st.Drops["too_big_rate_limited"])
			if tc.on && (st.TooBigAnswered == 0 || st.TooBigAnswered > 50) {
				t.Errorf("%d ICMP too-big answers, want a few (one per path and loss)", st.TooBigAnswered)
			}
			if !tc.on && (st.TooBigAnswered != 0 || st.Drops["too_big"] == 0) {
				t.Errorf("control: %d answers, %d too_big drops", st.TooBigAnswered, st.Drops["too_big"])
			}
		})
	}
}
