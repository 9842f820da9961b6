package announce

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func validConfig() Config {
	return Config{
		ASN:      65010,
		RouterID: netip.MustParseAddr("10.0.0.2"),
		Peers:    []Peer{{Address: netip.MustParseAddr("10.0.0.1"), ASN: 65001}},
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string // "" when valid
	}{
		{"minimal", func(*Config) {}, ""},
		{"full", func(c *Config) {
			c.ListenPort = 1179
			c.Communities = []string{"65000:100", "0:0", "65535:65535"}
			c.NextHop4 = netip.MustParseAddr("192.0.2.10")
			c.NextHop6 = netip.MustParseAddr("2001:db8::10")
			c.Peers = append(c.Peers, Peer{Address: netip.MustParseAddr("2001:db8::1"), ASN: 65010, Port: 1179,
				HoldTime: 30 * time.Second, KeepaliveTime: 10 * time.Second, ConnectRetry: time.Second,
				BFD: &BFD{MinRx: 100 * time.Millisecond, MinTx: 50 * time.Millisecond, Multiplier: 5}, Passive: true})
		}, ""},
		{"loopback peer", func(c *Config) { c.Peers[0].Address = netip.MustParseAddr("127.0.0.1") }, ""},
		{"listen -1", func(c *Config) { c.ListenPort = -1 }, ""},
		{"empty BFD is defaults", func(c *Config) { c.Peers[0].BFD = &BFD{} }, ""},

		{"no ASN", func(c *Config) { c.ASN = 0 }, "ASN"},
		{"no router ID", func(c *Config) { c.RouterID = netip.Addr{} }, "RouterID"},
		{"IPv6 router ID", func(c *Config) { c.RouterID = netip.MustParseAddr("2001:db8::1") }, "RouterID"},
		{"zero router ID", func(c *Config) { c.RouterID = netip.IPv4Unspecified() }, "RouterID"},
		{"listen port", func(c *Config) { c.ListenPort = 65536 }, "ListenPort"},
		{"listen port -2", func(c *Config) { c.ListenPort = -2 }, "ListenPort"},
		{"no peers", func(c *Config) { c.Peers = nil }, "Peers"},
		{"community form", func(c *Config) { c.Communities = []string{"65000:1", "65000"} }, "Communities[1]"},
		{"community range", func(c *Config) { c.Communities = []string{"65536:1"} }, "Communities[0]"},
		{"community value", func(c *Config) { c.Communities = []string{"1:-1"} }, "Communities[0]"},
		{"next hop 4 family", func(c *Config) { c.NextHop4 = netip.MustParseAddr("2001:db8::1") }, "NextHop4"},
		{"next hop 4 loopback", func(c *Config) { c.NextHop4 = netip.MustParseAddr("127.0.0.1") }, "NextHop4"},
		{"next hop 6 family", func(c *Config) { c.NextHop6 = netip.MustParseAddr("192.0.2.1") }, "NextHop6"},
		{"next hop 6 mapped", func(c *Config) { c.NextHop6 = netip.MustParseAddr("::ffff:192.0.2.1") }, "NextHop6"},
		{"next hop 6 link-local", func(c *Config) { c.NextHop6 = netip.MustParseAddr("fe80::1") }, "NextHop6"},
		{"peer address unset", func(c *Config) { c.Peers[0].Address = netip.Addr{} }, "Peers[0].Address"},
		{"peer address zone", func(c *Config) { c.Peers[0].Address = netip.MustParseAddr("fe80::1%eth0") }, "Peers[0].Address"},
		{"peer address link-local", func(c *Config) { c.Peers[0].Address = netip.MustParseAddr("fe80::1") }, "Peers[0].Address"},
		{"peer address mapped", func(c *Config) { c.Peers[0].Address = netip.MustParseAddr("::ffff:10.0.0.1") }, "Peers[0].Address"},
		{"peer address multicast", func(c *Config) { c.Peers[0].Address = netip.MustParseAddr("224.0.0.5") }, "Peers[0].Address"},
		{"duplicate peer", func(c *Config) { c.Peers = append(c.Peers, c.Peers[0]) }, "Peers[1].Address"},
		{"peer ASN", func(c *Config) { c.Peers[0].ASN = 0 }, "Peers[0].ASN"},
		{"hold fraction", func(c *Config) { c.Peers[0].HoldTime = 4500 * time.Millisecond }, "Peers[0].HoldTime"},
		{"hold short", func(c *Config) { c.Peers[0].HoldTime = 2 * time.Second }, "Peers[0].HoldTime"},
		{"hold negative", func(c *Config) { c.Peers[0].HoldTime = -time.Second }, "Peers[0].HoldTime"},
		{"keepalive = hold", func(c *Config) {
			c.Peers[0].HoldTime, c.Peers[0].KeepaliveTime = 9*time.Second, 9*time.Second
		}, "Peers[0].KeepaliveTime"},
		{"keepalive default of short hold", func(c *Config) { c.Peers[0].HoldTime = 4 * time.Second }, ""},
		{"keepalive fraction", func(c *Config) { c.Peers[0].KeepaliveTime = 1500 * time.Millisecond }, "Peers[0].KeepaliveTime"},
		{"connect retry", func(c *Config) { c.Peers[0].ConnectRetry = 100 * time.Millisecond }, "Peers[0].ConnectRetry"},
		{"passive without listener", func(c *Config) { c.Peers[0].Passive = true }, "Peers[0].Passive"},
		{"BFD rx short", func(c *Config) { c.Peers[0].BFD = &BFD{MinRx: time.Millisecond} }, "Peers[0].BFD.MinRx"},
		{"BFD tx fraction", func(c *Config) { c.Peers[0].BFD = &BFD{MinTx: 100*time.Millisecond + 1} }, "Peers[0].BFD.MinTx"},
		{"BFD tx long", func(c *Config) { c.Peers[0].BFD = &BFD{MinTx: 2 * time.Hour} }, "Peers[0].BFD.MinTx"},
		{"BFD multiplier", func(c *Config) { c.Peers[0].BFD = &BFD{Multiplier: 256} }, "Peers[0].BFD.Multiplier"},
		{"BFD multiplier negative", func(c *Config) { c.Peers[0].BFD = &BFD{Multiplier: -1} }, "Peers[0].BFD.Multiplier"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.edit(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ErrConfig) {
				t.Fatalf("Validate = %v, want a *ConfigError", err)
			}
			if ce.Path != "config."+tc.field {
				t.Errorf("path %q, want config.%s (%v)", ce.Path, tc.field, err)
			}
			t.Log(err)
		})
	}
}

func TestValidateDoesNotModify(t *testing.T) {
	c := validConfig()
	c.Peers[0].BFD = &BFD{}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Peers[0].HoldTime != 0 || *c.Peers[0].BFD != (BFD{}) || c.ListenPort != 0 {
		t.Errorf("Validate changed the caller's config: %+v", c.Peers[0])
	}
}

func TestDefaults(t *testing.T) {
	c := validConfig()
	c.Peers[0].BFD = &BFD{MinRx: 100 * time.Millisecond}
	d := c.withDefaults()
	p := d.Peers[0]
	if d.ListenPort != -1 || p.Port != 179 || p.HoldTime != 9*time.Second || p.KeepaliveTime != 3*time.Second ||
		p.ConnectRetry != 5*time.Second {
		t.Errorf("defaults: listen %d, %+v", d.ListenPort, p)
	}
	if *p.BFD != (BFD{MinRx: 100 * time.Millisecond, MinTx: 300 * time.Millisecond, Multiplier: 3}) {
		t.Errorf("BFD defaults: %+v", *p.BFD)
	}
	ap := apiPeer(p)
	if tc := ap.Timers.Config; tc.HoldTime != 9 || tc.KeepaliveInterval != 3 || tc.ConnectRetry != 5 || tc.IdleHoldTimeAfterReset != 2 {
		t.Errorf("GoBGP timers: %v", tc)
	}
	if b := ap.Bfd; !b.Enabled || b.RequiredMinimumReceive != 100000 || b.DesiredMinimumTxInterval != 300000 || b.DetectionMultiplier != 3 {
		t.Errorf("GoBGP BFD: %v", b)
	}
	if len(ap.AfiSafis) != 2 || ap.Transport.RemotePort != 179 || ap.Transport.PassiveMode {
		t.Errorf("GoBGP peer: %v", ap)
	}
	if IdleHoldAfterReset <= RecreateDelay {
		t.Error("the idle hold after a reset must outlast the re-creation delay")
	}
}

func TestParseCommunity(t *testing.T) {
	for s, want := range map[string]uint32{"65000:100": 65000<<16 | 100, "0:1": 1, "65535:65535": 0xffffffff} {
		if got, err := parseCommunity(s); err != nil || got != want {
			t.Errorf("parseCommunity(%q) = %#x, %v; want %#x", s, got, err, want)
		}
	}
	for _, s := range []string{"", ":", "1:", ":1", "a:b", "1:2:3", "70000:1", "+1:2", " 1:2"} {
		if _, err := parseCommunity(s); err == nil {
			t.Errorf("parseCommunity(%q) succeeded", s)
		}
	}
}
