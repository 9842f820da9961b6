package agent

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	c, err := Config{VIPs: []netip.Addr{vip4}, LBPrefixes: lo4}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != netip.MustParseAddrPort("0.0.0.0:6080") || c.TUN != "sluice0" || c.Batch != 64 ||
		c.UDPPolicy != UDPLocal || c.FlowTable != DefaultFlowTable || c.FlowIdle != DefaultFlowIdle ||
		c.HopPort != 0 || len(c.HopPrefixes) != 0 || c.AcceptAnySource {
		t.Errorf("defaults: %+v", c)
	}
	c, err = Config{Listen: netip.MustParseAddrPort("[::]:7000"), TUN: "gue1", Batch: 8, VIPs: []netip.Addr{vip6}, AcceptAnySource: true}.withDefaults()
	if err != nil || c.Listen.Port() != 7000 || c.TUN != "gue1" || c.Batch != 8 {
		t.Errorf("explicit values changed: %+v, %v", c, err)
	}
}

// lo4 is a valid LBPrefixes.
var lo4 = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}

func TestConfigErrors(t *testing.T) {
	ok := []netip.Addr{vip4}
	pfx := netip.MustParsePrefix
	for _, tc := range []struct {
		c     Config
		field string
	}{
		{Config{}, "VIPs"},
		{Config{VIPs: []netip.Addr{vip4, {}}}, "VIPs[1]"},
		{Config{VIPs: []netip.Addr{vip4, vip6, vip4}}, "VIPs[2]"},
		{Config{VIPs: []netip.Addr{netip.MustParseAddr("0.0.0.0")}}, "VIPs[0]"},
		{Config{VIPs: []netip.Addr{netip.MustParseAddr("127.0.0.2")}}, "VIPs[0]"},
		{Config{VIPs: []netip.Addr{netip.MustParseAddr("::1")}}, "VIPs[0]"},
		{Config{VIPs: []netip.Addr{netip.MustParseAddr("224.0.0.1")}}, "VIPs[0]"},
		{Config{VIPs: []netip.Addr{netip.MustParseAddr("fe80::1")}}, "VIPs[0]"},
		{Config{VIPs: []netip.Addr{netip.MustParseAddr("::ffff:198.18.0.10")}}, "VIPs[0]"},
		{Config{VIPs: []netip.Addr{netip.MustParseAddr("2001:db8::1%eth0")}}, "VIPs[0]"},
		{Config{VIPs: ok, TUN: "a-name-far-too-long"}, "TUN"},
		{Config{VIPs: ok, TUN: "tun%d"}, "TUN"},
		{Config{VIPs: ok, TUN: "a/b"}, "TUN"},
		{Config{VIPs: ok, Batch: -1}, "Batch"},
		{Config{VIPs: ok, Batch: MaxBatch + 1}, "Batch"},
		{Config{VIPs: ok, Listen: netip.MustParseAddrPort("[::ffff:1.2.3.4]:6080")}, "Listen"},
		{Config{VIPs: ok, UDPPolicy: "forward"}, "UDPPolicy"},
		{Config{VIPs: ok, FlowTable: -1}, "FlowTable"},
		{Config{VIPs: ok, FlowTable: MaxFlowTable + 1}, "FlowTable"},
		{Config{VIPs: ok, FlowIdle: -time.Second}, "FlowIdle"},
		{Config{VIPs: ok, HopPrefixes: []netip.Prefix{netip.MustParsePrefix("198.18.4.0/24"), {}}}, "HopPrefixes[1]"},
		{Config{VIPs: ok, HopPrefixes: []netip.Prefix{netip.MustParsePrefix("198.18.4.1/24")}}, "HopPrefixes[0]"},
		// Trust: LB prefixes are required, well formed, and exclusive
		// with AcceptAnySource.
		{Config{VIPs: ok}, "LBPrefixes"},
		{Config{VIPs: ok, HopPrefixes: []netip.Prefix{pfx("198.18.30.64/26")}}, "LBPrefixes"},
		{Config{VIPs: ok, LBPrefixes: []netip.Prefix{pfx("198.18.30.0/27"), {}}}, "LBPrefixes[1]"},
		{Config{VIPs: ok, LBPrefixes: []netip.Prefix{pfx("198.18.30.11/27")}}, "LBPrefixes[0]"},
		{Config{VIPs: ok, LBPrefixes: []netip.Prefix{pfx("::ffff:198.18.30.0/123")}}, "LBPrefixes[0]"},
		{Config{VIPs: ok, LBPrefixes: []netip.Prefix{pfx("2001:db8:30::/64"), pfx("2001:db8:30::11/120")}}, "LBPrefixes[1]"},
		{Config{VIPs: ok, LBPrefixes: lo4, AcceptAnySource: true}, "AcceptAnySource"},
		// Fastpath.
		{Config{VIPs: ok, LBPrefixes: lo4, FastpathClients: []netip.Prefix{pfx("198.18.20.1/24")}}, "FastpathClients[0]"},
		{Config{VIPs: ok, LBPrefixes: lo4, FastpathClients: []netip.Prefix{pfx("198.18.20.0/24"), {}}}, "FastpathClients[1]"},
		{Config{LBPrefixes: lo4}, "VIPs"},
		{Config{LBPrefixes: lo4, Fastpath: fp(func(f *FastpathConfig) { f.Interface = "" })}, "Fastpath.Interface"},
		{Config{LBPrefixes: lo4, Fastpath: fp(func(f *FastpathConfig) { f.Interface = "a/b" })}, "Fastpath.Interface"},
		{Config{LBPrefixes: lo4, Fastpath: fp(func(f *FastpathConfig) { f.Key = f.Key[:15] })}, "Fastpath.Key"},
		{Config{LBPrefixes: lo4, Fastpath: fp(func(f *FastpathConfig) { f.BackendPrefixes = nil })}, "Fastpath.BackendPrefixes"},
		{Config{LBPrefixes: lo4, Fastpath: fp(func(f *FastpathConfig) { f.BackendPrefixes = []netip.Prefix{pfx("198.18.50.1/24")} })}, "Fastpath.BackendPrefixes[0]"},
		{Config{LBPrefixes: lo4, Fastpath: fp(func(f *FastpathConfig) { f.Idle = -time.Second })}, "Fastpath.Idle"},
		{Config{LBPrefixes: lo4, Fastpath: fp(func(f *FastpathConfig) { f.Idle, f.Refresh = time.Second, 2*time.Second })}, "Fastpath.Refresh"},
		{Config{LBPrefixes: lo4, Fastpath: fp(func(f *FastpathConfig) { f.Flows = MaxFastpathFlows + 1 })}, "Fastpath.Flows"},
		{Config{AcceptAnySource: true, Fastpath: fp(nil)}, "AcceptAnySource"},
		{Config{Fastpath: fp(nil)}, "LBPrefixes"},
	} {
		_, err := tc.c.withDefaults()
		var ce *ConfigError
		if !errors.As(err, &ce) || !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: error %v, want a *ConfigError", tc.c, err)
			continue
		}
		if ce.Path != "config."+tc.field || !strings.Contains(err.Error(), "config."+tc.field+":") {
			t.Errorf("%+v: %v names %q, want config.%s", tc.c, err, ce.Path, tc.field)
		}
	}
}

// New validates before it touches the host, so this needs no root.
func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrConfig) {
		t.Errorf("New(Config{}) = %v, want ErrConfig", err)
	}
}

// fp is a valid FastpathConfig changed by change.
func fp(change func(*FastpathConfig)) *FastpathConfig {
	c := FastpathConfig{Interface: "eth0", Key: []byte("0123456789abcdef"),
		BackendPrefixes: []netip.Prefix{netip.MustParsePrefix("198.18.50.0/24")}}
	if change != nil {
		change(&c)
	}
	return &c
}

// A fastpath client needs no VIPs; the defaults apply, and the config is
// copied.
func TestConfigFastpathDefaults(t *testing.T) {
	in := fp(nil)
	c, err := Config{LBPrefixes: lo4, Fastpath: in}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	f := c.Fastpath
	if f == in || f.Idle != DefaultFastpathIdle || f.Refresh != DefaultFastpathRefresh || f.Flows != DefaultFastpathFlows {
		t.Errorf("defaults: %+v", f)
	}
	in.Key[0] = 'x'
	if f.Key[0] != '0' {
		t.Error("the key is not copied")
	}
	c, err = Config{LBPrefixes: lo4, Fastpath: fp(func(f *FastpathConfig) { f.Idle = 500 * time.Millisecond })}.withDefaults()
	if err != nil || c.Fastpath.Refresh != 500*time.Millisecond {
		t.Errorf("Refresh with a short Idle: %v, %v", c.Fastpath, err)
	}
}
