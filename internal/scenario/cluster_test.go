package scenario

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/lab"
)

// With Options.Cluster every LB node's configuration has a cluster section
// binding its service-segment address with the other LB nodes as peers;
// without it, none.
func TestConfigCluster(t *testing.T) {
	l := &lab.Lab{}
	for i := 1; i <= 3; i++ {
		l.LBs = append(l.LBs, &lab.Node{Index: i, Addr4: netip.AddrFrom4([4]byte{198, 18, 30, byte(10 + i)}), Addr6: netip.MustParseAddr("2001:db8:30::11")})
	}
	l.Backends = []*lab.Node{{Index: 1, Addr4: netip.MustParseAddr("198.18.30.101"), Addr6: netip.MustParseAddr("2001:db8:30::101")}}
	s := &Scenario{Lab: l, Opts: Options{IO: "afpacket", XDPMode: "auto", VIP4: netip.MustParseAddr("198.18.0.10"), VIP6: netip.MustParseAddr("2001:db8::10")}}
	c, err := config.Parse([]byte(s.ConfigFor(1)))
	if err != nil || c.Node.Cluster != nil {
		t.Fatalf("without Cluster: %v %+v", err, c.Node.Cluster)
	}
	s.Opts.Cluster = true
	c, err = config.Parse([]byte(s.ConfigFor(1)))
	if err != nil {
		t.Fatalf("%v\n%s", err, s.ConfigFor(1))
	}
	cl := c.Node.Cluster
	if cl == nil || cl.Bind != "198.18.30.12:7946" || len(cl.Peers) != 2 || cl.Peers[0] != "198.18.30.11:7946" || cl.Peers[1] != "198.18.30.13:7946" || cl.Key != ClusterKey {
		t.Fatalf("cluster %+v", cl)
	}
	s.Opts.Affinity = config.AffinityAlways
	if c, err = config.Parse([]byte(s.ConfigFor(0))); err != nil || c.VIPs[0].Affinity != config.AffinityAlways {
		t.Fatalf("affinity always: %v", err)
	}
}

// Options.Affinity applies to stream4 as well; without second chance a
// backend goes from absent straight to active, which validates.
func TestConfigStreamAffinity(t *testing.T) {
	l := &lab.Lab{}
	for i := 1; i <= 2; i++ {
		l.LBs = append(l.LBs, &lab.Node{Index: i, Addr4: netip.AddrFrom4([4]byte{198, 18, 30, byte(10 + i)}), Addr6: netip.MustParseAddr("2001:db8:30::11")})
	}
	for i := 1; i <= 3; i++ {
		l.Backends = append(l.Backends, &lab.Node{Index: i, Addr4: netip.AddrFrom4([4]byte{198, 18, 30, byte(100 + i)}), Addr6: netip.MustParseAddr(fmt.Sprintf("2001:db8:30::%d", 100+i))})
	}
	s := &Scenario{Lab: l, Opts: Options{IO: "afpacket", XDPMode: "auto", VIP4: netip.MustParseAddr("198.18.0.10"), VIP6: netip.MustParseAddr("2001:db8::10"),
		Cluster: true, Affinity: config.AffinityAlways, Streams: true, StreamStates: []string{"", "", "absent"}}}
	stream4 := func() config.VIP {
		t.Helper()
		c, err := config.Parse([]byte(s.ConfigFor(0)))
		if err != nil {
			t.Fatalf("%v\n%s", err, s.ConfigFor(0))
		}
		for _, v := range c.VIPs {
			if v.Affinity != config.AffinityAlways {
				t.Errorf("vip %s: affinity %s, want always", v.Name, v.Affinity)
			}
			if v.Name == "stream4" {
				return v
			}
		}
		t.Fatal("no stream4")
		return config.VIP{}
	}
	if v := stream4(); len(v.Backends) != 2 || v.SecondChance {
		t.Fatalf("stream4 with be3 absent: %+v", v)
	}
	s.Opts.StreamStates = []string{"", "", ""}
	if v := stream4(); len(v.Backends) != 3 {
		t.Fatalf("stream4 with be3 active: %+v", v)
	}
}

// DrainPeriod gives stream4 its drain_period without second chance; in a
// cluster with affinity on-change a filling backend stays filling (the
// chains keep the connections of its slots), elsewhere it is written active.
func TestConfigDrainPeriodLifeCycle(t *testing.T) {
	l := &lab.Lab{LBs: []*lab.Node{{Index: 1, Addr4: netip.MustParseAddr("198.18.30.11"), Addr6: netip.MustParseAddr("2001:db8:30::11")}}}
	for i := 1; i <= 2; i++ {
		l.Backends = append(l.Backends, &lab.Node{Index: i, Addr4: netip.AddrFrom4([4]byte{198, 18, 30, byte(100 + i)}), Addr6: netip.MustParseAddr(fmt.Sprintf("2001:db8:30::%d", 100+i))})
	}
	s := &Scenario{Lab: l, Opts: Options{IO: "afpacket", XDPMode: "auto", VIP4: netip.MustParseAddr("198.18.0.10"), VIP6: netip.MustParseAddr("2001:db8::10"),
		Cluster: true, Streams: true, StreamStates: []string{"", ""}, DrainPeriod: 8 * time.Second}}
	c, err := config.Parse([]byte(s.ConfigFor(0)))
	if err != nil {
		t.Fatalf("%v\n%s", err, s.ConfigFor(0))
	}
	for _, v := range c.VIPs {
		if v.Name == "stream4" && (v.DrainPeriod != 8*time.Second || v.SecondChance) {
			t.Fatalf("stream4: drain period %v, second chance %v", v.DrainPeriod, v.SecondChance)
		}
		if v.Name != "stream4" && v.DrainPeriod != config.DefaultDrainPeriod {
			t.Fatalf("%s: drain period %v", v.Name, v.DrainPeriod)
		}
	}
	s.Opts.StreamStates = []string{"", "filling"}
	filling := fmt.Sprintf("{address: %q, state: filling}", l.Backends[1].Addr4)
	for _, tc := range []struct {
		cluster  bool
		affinity string
		want     bool
	}{{true, "", true}, {true, config.AffinityOnChange, true}, {true, config.AffinityAlways, false}, {false, "", false}} {
		s.Opts.Cluster, s.Opts.Affinity = tc.cluster, tc.affinity
		if got := strings.Contains(s.ConfigFor(0), filling); got != tc.want || s.LifeCycle() != tc.want {
			t.Errorf("cluster %v affinity %q: filling written %v, life cycle %v; want %v", tc.cluster, tc.affinity, got, s.LifeCycle(), tc.want)
		}
	}
}
