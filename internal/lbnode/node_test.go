package lbnode

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/announce"
	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/health"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/nettest"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// testNode is a serving node over an in-memory link, without a resolver
// (every next hop is unresolved) and without Run: its operations work,
// and the serve goroutine stops at the end of the test.
func testNode(t *testing.T, cfg *config.Config, a Announcer) *Node {
	t.Helper()
	dp, err := datapath.New(datapath.Config{Links: []link.Link{mem.New(mem.Config{})}, FlowCapacity: 1024})
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{log: slog.New(slog.DiscardHandler), dp: dp, announcer: a,
		ops: make(chan op), quit: make(chan struct{}), stopped: make(chan struct{}),
		st: state{cfg: cfg, builder: pipeline.NewBuilder(), hops: map[netip.Addr]string{},
			checkKeys: map[string]bool{}, transitions: map[string]*[numStates]uint64{}}}
	n.checks = health.NewChecker(n.healthChanged)
	n.setChecks()
	if err := n.rebuild(context.Background()); err != nil {
		t.Fatal(err)
	}
	go n.serve()
	t.Cleanup(func() {
		select {
		case <-n.stopped:
		default:
			close(n.quit)
			<-n.stopped
		}
	})
	return n
}

func mustParse(t *testing.T, doc string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fakeAnnouncer records the sets it is given: their prefixes, and the
// routes with their next hops.
type fakeAnnouncer struct {
	mu     sync.Mutex
	sets   [][]netip.Prefix
	routes [][]announce.Route
}

func (f *fakeAnnouncer) SetRoutes(rs []announce.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := make([]netip.Prefix, len(rs))
	for i, r := range rs {
		p[i] = r.Prefix
	}
	f.sets = append(f.sets, p)
	f.routes = append(f.routes, slices.Clone(rs))
	return nil
}

// last returns the last routes given.
func (f *fakeAnnouncer) last() []announce.Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.routes) == 0 {
		return nil
	}
	return f.routes[len(f.routes)-1]
}
func (f *fakeAnnouncer) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (f *fakeAnnouncer) Peers() []announce.PeerStatus  { return nil }

// Operations from many goroutines at once (run with -race): applies,
// drains, health transitions and reads all go through the serve goroutine.
func TestOperationsConcurrently(t *testing.T) {
	base := `
node: {interfaces: [eth0]}
vips:
  - {name: web, address: 198.18.0.10, protocol: tcp, port: 80, health: {type: tcp}, backends: [{address: 198.18.30.11}, {address: 198.18.30.12}]}
`
	fa := &fakeAnnouncer{}
	n := testNode(t, mustParse(t, base), fa)
	gen := n.Generation().ID
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 20 {
				switch (i + j) % 5 {
				case 0:
					if err := n.Apply(context.Background(), mustParse(t, base)); err != nil {
						t.Error(err)
					}
				case 1:
					n.SetDraining(j%2 == 0)
				case 2:
					n.healthChanged(health.Transition{Key: healthKey("web", "198.18.30.11"), From: health.Up, To: health.Down})
				case 3:
					if len(n.Health()) != 2 || n.Config() == nil {
						t.Error("reads")
					}
				default:
					n.Announcements()
					n.Draining()
				}
			}
		})
	}
	wg.Wait()
	if n.Generation().ID <= gen {
		t.Fatal("no generation applied")
	}
	h := n.Health()
	if h[0].Down == 0 {
		t.Fatalf("transitions not counted: %+v", h)
	}
}

// Once stopped, operations answer ErrStopped, Config the last
// configuration, and other reads their zero value.
func TestStoppedNode(t *testing.T) {
	n := testNode(t, mustParse(t, `
node: {interfaces: [eth0]}
vips:
  - {name: web, address: 198.18.0.10, protocol: tcp, port: 80, backends: [{address: 198.18.30.11}]}
`), nil)
	cfg := n.Config()
	close(n.quit)
	<-n.stopped
	if err := n.Apply(context.Background(), cfg); err != ErrStopped {
		t.Fatalf("Apply on a stopped node: %v", err)
	}
	if n.Config() != cfg || n.SetDraining(true) {
		t.Fatal("reads of a stopped node")
	}
}

// withdrawRecorder is an announcer that records when its Run returned (the
// routes withdrawn).
type withdrawRecorder struct {
	fakeAnnouncer
	withdrawn chan time.Time
}

func (w *withdrawRecorder) Run(ctx context.Context) error {
	<-ctx.Done()
	w.withdrawn <- time.Now()
	return nil
}

// The shutdown sequence with an announcer: when Run's context ends, the
// announcer withdraws first, and the datapath keeps forwarding for the
// shutdown grace before Run returns.
func TestRunShutdownSequence(t *testing.T) {
	nettest.RequireRoot(t)
	cfg := mustParse(t, `
node:
  interfaces: [eth0]
  bgp: {asn: 65001, router_id: 198.18.30.11, shutdown_grace: 300ms, peers: [{address: 198.18.30.1, asn: 65000}]}
vips:
  - {name: web, address: 198.18.0.10, protocol: tcp, port: 80, backends: [{address: 198.18.30.11}]}
`)
	ml := mem.New(mem.Config{})
	w := &withdrawRecorder{withdrawn: make(chan time.Time, 1)}
	n, err := New(Options{Config: cfg, Log: slog.New(slog.DiscardHandler), Announcer: w,
		Open: func(string, int, []netip.Addr) (link.Link, string, error) { return ml, "mem", nil }})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("198.18.0.10/32")}
	if a := n.Announcements(); !slices.Equal(a, want) {
		t.Fatalf("Announcements() = %v", a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	stop := time.Now()
	cancel()
	var withdrawn time.Time
	select {
	case withdrawn = <-w.withdrawn:
	case <-time.After(5 * time.Second):
		t.Fatal("the announcer was not stopped")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	if withdrawn.Sub(stop) > 200*time.Millisecond || end.Sub(withdrawn) < 300*time.Millisecond {
		t.Fatalf("withdrawn %v after the stop, Run returned %v after that; want at once, then the 300ms grace", withdrawn.Sub(stop), end.Sub(withdrawn))
	}
	if err := n.Apply(context.Background(), cfg); err != ErrStopped {
		t.Fatalf("Apply after Run: %v", err)
	}
	if len(w.sets) == 0 || !slices.Equal(w.sets[0], want) {
		t.Fatalf("announcer sets %v", w.sets)
	}
}
