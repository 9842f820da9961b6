package config

import (
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/sluicelb/sluice/internal/quiclb"
)

const quicDoc = `
node:
  interfaces: [eth0]
vips:
  - name: quic
    address: 198.18.0.10
    protocol: udp
    port: 443
    quic:
      server_id_len: 2
      nonce_len: 6
      key: 8f95f09245765f80256934e50c66207f
      rotation: 2
      len_encoded: true
    backends:
      - {address: 198.18.30.11, server_id: "0a:01"}
      - {address: 198.18.30.12, server_id: 0a02}
      - address: 198.18.30.13
  - name: quic-default
    address: 198.18.0.10
    protocol: udp
    port: 4433
    quic: true
    backends:
      - address: 198.18.30.101
  - name: plain
    address: 198.18.0.10
    protocol: udp
    port: 53
    quic: false
    backends:
      - address: 198.18.30.11
`

func TestQUICConfig(t *testing.T) {
	c, err := Parse([]byte(quicDoc))
	if err != nil {
		t.Fatal(err)
	}
	v := &c.VIPs[0]
	lb, err := v.QUIC.LB()
	if err != nil {
		t.Fatal(err)
	}
	if lb.Rotation != 2 || lb.ServerIDLen != 2 || lb.NonceLen != 6 || len(lb.Key) != 16 || !lb.LenSelfEncoded || lb.Mode() != quiclb.FourPass {
		t.Errorf("quiclb config %+v", lb)
	}
	for j, want := range []struct {
		sid     string
		derived bool
	}{{"0a01", false}, {"0a02", false}, {"1e0d", true}} {
		sid, derived, err := v.ServerID(j)
		if err != nil || sid.String() != want.sid || derived != want.derived {
			t.Errorf("backend %d: server ID %v derived %v, %v; want %s %v", j, sid, derived, err, want.sid, want.derived)
		}
	}
	d := c.VIPs[1].QUIC
	if d == nil || d.ServerIDLen != DefaultQUICServerIDLen || d.NonceLen != DefaultQUICNonceLen || d.Key != "" || d.Rotation != 0 {
		t.Errorf("quic: true gave %+v", d)
	}
	if lb, _ := d.LB(); lb.Mode() != quiclb.Plaintext {
		t.Errorf("mode %v", lb.Mode())
	}
	if sid, _, _ := c.VIPs[1].ServerID(0); sid.String() != "1e65" {
		t.Errorf("derived server ID %v, want 1e65", sid)
	}
	if c.VIPs[2].QUIC != nil {
		t.Errorf("quic: false gave %+v", c.VIPs[2].QUIC)
	}

	// What the control server writes back (edits marshal the running
	// configuration and parse it again) is the same configuration.
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Parse(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if *c2.VIPs[0].QUIC != *c.VIPs[0].QUIC || c2.VIPs[2].QUIC != nil || c2.VIPs[0].Backends[0].ServerID != "0a:01" {
		t.Errorf("round trip changed the QUIC settings:\n%s", out)
	}
	if strings.Contains(string(out), "server_id: \"\"") {
		t.Errorf("empty server IDs written out:\n%s", out)
	}
}

func TestQUICConfigExample(t *testing.T) {
	b, err := os.ReadFile("../../examples/lb.yaml")
	if err != nil {
		t.Skip(err)
	}
	if !strings.Contains(string(b), "quic:") {
		t.Skip("the example has no QUIC VIP")
	}
	c, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range c.VIPs {
		if v.QUIC != nil {
			n++
		}
	}
	if n == 0 {
		t.Fatal("no QUIC VIP parsed")
	}
}
