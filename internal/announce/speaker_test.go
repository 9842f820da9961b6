package announce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// testLogger logs through t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// receiver is a GoBGP server on 127.0.0.1 standing in for a router: it
// accepts a passive session from the Speaker and keeps what it learns.
type receiver struct {
	srv  *server.BgpServer
	port int
}

func startReceiver(t *testing.T, asn, peerASN uint32) *receiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	lvl := new(slog.LevelVar)
	lvl.Set(slog.LevelWarn)
	srv := server.NewBgpServer(server.LoggerOption(testLogger(t).With("side", "receiver"), lvl))
	go srv.Serve()
	t.Cleanup(srv.Stop)
	ctx := context.Background()
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: asn, RouterId: "10.0.0.1", ListenPort: int32(port), ListenAddresses: []string{"127.0.0.1"},
	}}); err != nil {
		t.Fatal(err)
	}
	p := apiPeer(Peer{Address: netip.MustParseAddr("127.0.0.1"), ASN: peerASN, Port: DefaultPort,
		HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, ConnectRetry: time.Second, Passive: true})
	if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: p}); err != nil {
		t.Fatal(err)
	}
	return &receiver{srv: srv, port: port}
}

// routes returns the learnt routes: prefix -> "next hop [communities]".
func (r *receiver) routes(t *testing.T) map[netip.Prefix]string {
	t.Helper()
	out := map[netip.Prefix]string{}
	for _, f := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := r.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: f},
			func(nlri bgp.NLRI, paths []*apiutil.Path) {
				p := nlri.(*bgp.IPAddrPrefix).Prefix
				for _, path := range paths {
					var nh netip.Addr
					var comms []string
					for _, a := range path.Attrs {
						switch a := a.(type) {
						case *bgp.PathAttributeNextHop:
							nh = a.Value
						case *bgp.PathAttributeMpReachNLRI:
							nh = a.Nexthop
						case *bgp.PathAttributeCommunities:
							for _, c := range a.Value {
								comms = append(comms, fmt.Sprintf("%d:%d", c>>16, c&0xffff))
							}
						}
					}
					out[p] = fmt.Sprintf("%s %v", nh, comms)
				}
			})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// waitRoutes waits until the receiver has exactly want and returns how long
// that took.
func (r *receiver) waitRoutes(t *testing.T, want map[netip.Prefix]string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var got map[netip.Prefix]string
	for time.Since(start) < timeout {
		if got = r.routes(t); maps.Equal(got, want) {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("receiver has %v, want %v", got, want)
	return 0
}

func waitPeer(t *testing.T, s *Speaker, cond func(PeerStatus) bool, what string) PeerStatus {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := s.Peers()[0]
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer never %s: %+v", what, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSpeakerLoopback runs a Speaker against a GoBGP receiver on 127.0.0.1
// (no root needed): routes set before Run are announced, a smaller set
// withdraws the rest, and stopping Run withdraws everything at once.
func TestSpeakerLoopback(t *testing.T) {
	r := startReceiver(t, 65001, 65010)
	s, err := New(Config{
		ASN:         65010,
		RouterID:    netip.MustParseAddr("10.0.0.2"),
		Peers:       []Peer{{Address: netip.MustParseAddr("127.0.0.1"), ASN: 65001, Port: uint16(r.port), ConnectRetry: time.Second}},
		Communities: []string{"65010:100"},
		NextHop6:    netip.MustParseAddr("2001:db8::10"),
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set(pfx("192.0.2.1/32", "192.0.2.2/32", "2001:db8:1::1/128")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-done
		}
	})

	// The IPv4 next hop is the session's local address; the IPv6 one the
	// configured NextHop6.
	r.waitRoutes(t, map[netip.Prefix]string{
		netip.MustParsePrefix("192.0.2.1/32"):      "127.0.0.1 [65010:100]",
		netip.MustParsePrefix("192.0.2.2/32"):      "127.0.0.1 [65010:100]",
		netip.MustParsePrefix("2001:db8:1::1/128"): "2001:db8::10 [65010:100]",
	}, 15*time.Second)
	st := waitPeer(t, s, func(st PeerStatus) bool { return st.State == "established" && st.Advertised == 3 }, "advertised 3")
	if st.Established != 1 || st.Resets != 0 || st.Recreated != 0 || st.Uptime <= 0 || st.BFD != "" {
		t.Errorf("status %+v", st)
	}
	if err := s.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}

	if err := s.Set(pfx("192.0.2.2/32")); err != nil {
		t.Fatal(err)
	}
	took := r.waitRoutes(t, map[netip.Prefix]string{netip.MustParsePrefix("192.0.2.2/32"): "127.0.0.1 [65010:100]"}, 5*time.Second)
	t.Logf("withdrawn after Set in %v", took)
	// The same set again changes nothing.
	if err := s.Set(pfx("192.0.2.2/32")); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, s, func(st PeerStatus) bool { return st.Advertised == 1 }, "advertised 1")

	start := time.Now()
	cancel()
	stopped = true
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("Run returned in %v", time.Since(start))
	r.waitRoutes(t, map[netip.Prefix]string{}, time.Second)
	t.Logf("all withdrawn %v after cancel", time.Since(start))
	st = s.Peers()[0]
	if st.State != "idle" || st.Uptime != 0 || st.Resets != 1 || st.Advertised != 0 {
		t.Errorf("status after Run: %+v", st)
	}

	// A second Run announces the last set again.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() { done <- s.Run(ctx2) }()
	r.waitRoutes(t, map[netip.Prefix]string{netip.MustParsePrefix("192.0.2.2/32"): "127.0.0.1 [65010:100]"}, 15*time.Second)
	if got := s.Prefixes(); !slices.Equal(got, pfx("192.0.2.2/32")) {
		t.Errorf("Prefixes = %v", got)
	}
	cancel2()
	if err := <-done; err != nil {
		t.Fatalf("second Run: %v", err)
	}
	r.waitRoutes(t, map[netip.Prefix]string{}, time.Second)
}
