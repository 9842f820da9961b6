package control

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/control/controltest"
	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/health"

	"github.com/sluicelb/sluice/internal/packet"
	"github.com/sluicelb/sluice/internal/pipeline"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newServer(t *testing.T) (*Server, *controltest.Node) {
	t.Helper()
	n := controltest.New()
	s := New(n)
	s.now = func() time.Time { return t0 }
	return s, n
}

func TestPutConfigApplies(t *testing.T) {
	s, n := newServer(t)
	doc := strings.Replace(controltest.Initial, "port: 80", "port: 8080", 1)
	res, err := s.PutConfig(context.Background(), []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := ApplyResult{Time: t0, OK: true, Generation: 2}
	if res != want {
		t.Fatalf("result %+v, want %+v", res, want)
	}
	if n.Applied != 1 || n.Config().VIPs[0].Port != 8080 {
		t.Fatalf("node applied %d times, port %d", n.Applied, n.Config().VIPs[0].Port)
	}
	if gen, last := s.Status(); gen != 2 || last != want {
		t.Fatalf("status %d %+v", gen, last)
	}
	y, err := s.GetConfig()
	if err != nil || !strings.Contains(string(y), "port: 8080") {
		t.Fatalf("GetConfig: %v\n%s", err, y)
	}
}

// The YAML GetConfig returns is accepted back as is.
func TestGetConfigRoundTrips(t *testing.T) {
	s, n := newServer(t)
	y, err := s.GetConfig()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutConfig(context.Background(), y); err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	if n.Applied != 1 {
		t.Fatal("not applied")
	}
}

func TestPutConfigInvalid(t *testing.T) {
	s, n := newServer(t)
	before := n.Config()
	doc := strings.Replace(controltest.Initial, "weight: 0", "weight: -1", 1)
	doc = strings.Replace(doc, "protocol: udp", "protocol: sctp", 1)
	res, err := s.PutConfig(context.Background(), []byte(doc))
	if !errors.Is(err, ErrInvalidConfig) || errors.Is(err, ErrNeedsRestart) {
		t.Fatalf("err %v: want ErrInvalidConfig", err)
	}
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("%T is not a *ConfigError", err)
	}
	want := []Problem{
		{Path: "vips[0].backends[1].weight", Value: -1, Reason: "is negative"},
		{Path: "vips[1].protocol", Value: `"sctp"`, Reason: "is not tcp or udp"},
	}
	if len(ce.Problems) != len(want) {
		t.Fatalf("problems %+v, want %+v", ce.Problems, want)
	}
	for _, w := range want {
		found := false
		for _, p := range ce.Problems {
			found = found || p == w
		}
		if !found {
			t.Errorf("missing problem %+v in %+v", w, ce.Problems)
		}
	}
	if n.Applied != 0 || n.Config() != before {
		t.Fatal("the node was changed")
	}
	if res.OK || res.Generation != 1 || res.Error == "" || !res.Time.Equal(t0) {
		t.Fatalf("result %+v", res)
	}
	if gen, last := s.Status(); gen != 1 || last != res {
		t.Fatalf("status %d %+v", gen, last)
	}
}

func TestPutConfigUndecodable(t *testing.T) {
	s, n := newServer(t)
	for _, doc := range []string{"node: [", "", "bogus: 1\n"} {
		_, err := s.PutConfig(context.Background(), []byte(doc))
		var ce *ConfigError
		if !errors.As(err, &ce) || len(ce.Problems) != 1 || ce.Problems[0].Path != "" || ce.Problems[0].Reason == "" {
			t.Errorf("%q: %#v", doc, err)
		}
	}
	if n.Applied != 0 {
		t.Fatal("applied")
	}
}

func TestPutConfigNeedsRestart(t *testing.T) {
	s, n := newServer(t)
	if _, err := s.PutConfig(context.Background(), []byte(strings.Replace(controltest.Initial, "port: 80", "port: 81", 1))); err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(controltest.Initial, "[eth0]", "[eth1]", 1)
	res, err := s.PutConfig(context.Background(), []byte(doc))
	if !errors.Is(err, ErrNeedsRestart) || errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("err %v: want ErrNeedsRestart", err)
	}
	if res.OK || res.Generation != 2 || !strings.Contains(res.Error, "node.interfaces") {
		t.Fatalf("result %+v", res)
	}
	if n.Applied != 1 || n.Config().Node.Interfaces[0] != "eth0" {
		t.Fatal("node changed")
	}
	// Another refusal of the node is passed on as it is.
	n.ApplyErr = errors.New("steering VIPs: boom")
	if _, err := s.PutConfig(context.Background(), []byte(controltest.Initial)); err != n.ApplyErr {
		t.Fatalf("err %v", err)
	}
	if gen, last := s.Status(); gen != 2 || last.OK || last.Error != "steering VIPs: boom" {
		t.Fatalf("status %d %+v", gen, last)
	}
}

func fakeCounters() datapath.Counters {
	c := datapath.Counters{
		RxPackets: 100, RxBytes: 10000, TxPackets: 90, TxBytes: 12000, TxErrors: 1, Passed: 3,
		FlowHits: 80, FlowMisses: 10, Reaped: 4,
		Reals: []datapath.RealCounters{{Packets: 50, Bytes: 5000}, {Packets: 7, Bytes: 700}, {Packets: 33, Bytes: 3300}},
	}
	c.Drops[pipeline.ReasonNoNextHop] = 7
	c.Drops[pipeline.ReasonParse] = 2
	c.Parse[packet.BadIHL] = 2
	return c
}

func TestListVIPs(t *testing.T) {
	s, n := newServer(t)
	n.SetCounters(fakeCounters())
	vips := s.ListVIPs()
	if len(vips) != 2 {
		t.Fatalf("%+v", vips)
	}
	web, dns := vips[0], vips[1]
	if web.Name != "web" || web.Address != "10.0.0.1" || web.Protocol != "tcp" || web.Port != 80 || web.PortEnd != 80 ||
		web.Packets != 57 || web.Bytes != 5700 || len(web.Backends) != 2 {
		t.Fatalf("web %+v", web)
	}
	want := []BackendStatus{
		{Address: "10.1.0.1", Weight: 1, NextHopResolved: true, State: StateActive, Packets: 50, Bytes: 5000},
		{Address: "10.1.0.2", Weight: 0, NextHopResolved: false, State: StateUnresolved, Packets: 7, Bytes: 700},
	}
	for i := range want {
		if web.Backends[i] != want[i] {
			t.Errorf("backend %d: %+v, want %+v", i, web.Backends[i], want[i])
		}
	}
	if dns.Protocol != "udp" || dns.Backends[0].Packets != 33 || dns.Backends[0].State != StateActive {
		t.Fatalf("dns %+v", dns)
	}
	// Draining: resolved, weight 0.
	doc := strings.Replace(controltest.Initial, "- address: 10.1.0.3", "- address: 10.1.0.3\n        weight: 0", 1)
	if _, err := s.PutConfig(context.Background(), []byte(doc)); err != nil {
		t.Fatal(err)
	}
	if st := s.ListVIPs()[1].Backends[0].State; st != StateDraining {
		t.Fatalf("state %s, want draining", st)
	}
}

func TestStats(t *testing.T) {
	s, n := newServer(t)
	n.SetCounters(fakeCounters())
	st := s.Stats()
	if st.RxPackets != 100 || st.TxBytes != 12000 || st.FlowHits != 80 || st.FlowMisses != 10 || st.Reaped != 4 || st.Passed != 3 {
		t.Fatalf("%+v", st)
	}
	if st.Drops["no_next_hop"] != 7 || st.Drops["parse"] != 2 || st.ParseDrops["bad_ihl"] != 2 {
		t.Fatalf("drops %v parse %v", st.Drops, st.ParseDrops)
	}
	if _, ok := st.Drops["none"]; ok || len(st.Drops) != int(pipeline.NumReasons)-1 {
		t.Fatalf("drops %v", st.Drops)
	}
	if _, ok := st.ParseDrops["ok"]; ok || len(st.ParseDrops) != int(packet.NumVerdicts)-1 {
		t.Fatalf("parse drops %v", st.ParseDrops)
	}
	if st.ConfigGeneration != 1 || st.DatapathGeneration != 1 || !st.LastApply.Time.IsZero() {
		t.Fatalf("%+v", st)
	}
}

// A backend that failed its health check is left out of the generation by
// the node; ListVIPs still lists it, with state "down".
func TestListVIPsShowsDownBackends(t *testing.T) {
	n := healthNode([]health.Backend{
		{VIP: "web", Backend: "10.1.0.9", State: health.Down},
		{VIP: "web", Backend: "10.1.0.1", State: health.Up},
	})
	s := New(n)
	for _, v := range s.ListVIPs() {
		if v.Name != "web" {
			continue
		}
		states := map[string]string{}
		for _, b := range v.Backends {
			states[b.Address] = b.State
		}
		if states["10.1.0.9"] != "down" || states["10.1.0.1"] != "active" {
			t.Fatalf("backend states %v", states)
		}
		return
	}
	t.Fatal("no VIP web")
}
