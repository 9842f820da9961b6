package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/api"
	"github.com/sluicelb/sluice/internal/control/controltest"
	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/quiclb"
)

var ctlQUICKey = "8f95f09245765f80256934e50c66207f"

func ctlQUICCodec(t *testing.T) *quiclb.Codec {
	t.Helper()
	key, _ := hex.DecodeString(ctlQUICKey)
	c, err := quiclb.New(quiclb.Config{Rotation: 1, ServerIDLen: 2, NonceLen: 6, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctlCID(t *testing.T, c *quiclb.Codec, sid, nonce string) string {
	t.Helper()
	s, _ := hex.DecodeString(sid)
	n, _ := hex.DecodeString(nonce)
	cid, err := c.Encode(nil, s, n)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(cid)
}

// quicNode is the fake node with a real generation holding VIP "quic"
// (10.0.0.3 udp 443, routed by connection ID) and the fake's "web".
type quicNode struct {
	*controltest.Node
	gen *pipeline.Generation
}

func (n *quicNode) Generation() *pipeline.Generation { return n.gen }

func TestCtlQUICDecode(t *testing.T) {
	codec := ctlQUICCodec(t)
	spec := pipeline.Spec{Services: []pipeline.ServiceSpec{
		{Name: "web", Addr: netip.MustParseAddr("10.0.0.1"), Proto: 6, Port: 80},
		{Name: "quic", Addr: netip.MustParseAddr("10.0.0.3"), Proto: 17, Port: 443, QUIC: codec},
	}}
	for i, a := range []string{"10.1.0.5", "10.1.0.6"} {
		sid, _ := quiclb.ServerIDFromUint64(0x0a01+uint64(i), 2)
		tun := encap.Tunnel{Mode: encap.GUE, Src: netip.MustParseAddr("10.0.0.100"), Dst: netip.MustParseAddr(a)}
		spec.Services[0].Backends = append(spec.Services[0].Backends, pipeline.BackendSpec{Weight: 1, Tunnel: tun})
		spec.Services[1].Backends = append(spec.Services[1].Backends, pipeline.BackendSpec{Weight: 1, Tunnel: tun, ServerID: sid})
	}
	g, err := pipeline.NewBuilder().Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(api.Handler(control.New(&quicNode{controltest.New(), g})))
	t.Cleanup(ts.Close)

	be2 := ctlCID(t, codec, "0a02", "010203040506")
	stranger := ctlCID(t, codec, "0b00", "0a0b0c0d0e0f")
	offline := []string{"quic", "decode", "--sid-len", "2", "--nonce-len", "6", "--key", ctlQUICKey}
	for _, tc := range []struct {
		name string
		args []string
		want string // the line printed, or a substring of the error
		err  error
	}{
		{"offline", append(offline, be2), "config_rotation=1 server_id=0a02 nonce=010203040506\n", nil},
		{"offline colons", append(offline, "--rotation", "1", be2[:2]+":"+be2[2:]), "config_rotation=1 server_id=0a02 nonce=010203040506\n", nil},
		{"offline plaintext", []string{"quic", "decode", "--sid-len", "3", "--nonce-len", "4", "--len-encoded", "c7aabbcc01020304"}, "config_rotation=6 server_id=aabbcc nonce=01020304\n", nil},
		{"offline unroutable", append(offline, "e0"+be2[2:]), "unroutable connection ID", quiclb.ErrUnroutable},
		{"offline other rotation", append(offline, "--rotation", "2", be2), "another config rotation", quiclb.ErrRotation},
		{"offline short", append(offline, be2[:10]), "too short", quiclb.ErrShortCID},
		{"offline long", append(offline, be2+"00"), "has 10 octets, the configuration's have 9", control.ErrCIDLength},
		{"offline not hex", append(offline, "xyz"), "is not hex octets", control.ErrCIDSyntax},
		{"offline needs lengths", []string{"quic", "decode", be2}, "--sid-len is required", nil},
		{"node", []string{"quic", "decode", "--vip", "quic", be2}, "config_rotation=1 server_id=0a02 nonce=010203040506 backend=10.1.0.6\n", nil},
		{"node unknown server", []string{"quic", "decode", "--vip", "quic", stranger}, "config_rotation=1 server_id=0b00 nonce=0a0b0c0d0e0f backend=none\n", nil},
		{"node unroutable", []string{"quic", "decode", "--vip", "quic", "ff" + be2[2:]}, "unroutable connection ID", control.ErrInvalidQuery},
		{"node not quic", []string{"quic", "decode", "--vip", "web", be2}, "does not route by QUIC connection ID", control.ErrInvalidQuery},
		{"node unknown vip", []string{"quic", "decode", "--vip", "nope", be2}, "not found", control.ErrNotFound},
		{"node and offline flags", []string{"quic", "decode", "--vip", "quic", "--sid-len", "2", be2}, "--vip takes the configuration from the node", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runCtl(t, ts, tc.args...)
			if strings.HasSuffix(tc.want, "\n") {
				if err != nil || out != tc.want {
					t.Fatalf("got %q, %v; want %q", out, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one saying %q (output %q)", err, tc.want, out)
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("err %v is not %v", err, tc.err)
			}
		})
	}

	out, _, err := runCtl(t, ts, "-o", "json", "quic", "decode", "--vip", "quic", be2)
	var d control.CIDDecode
	if err != nil || json.Unmarshal([]byte(out), &d) != nil || d.Backend != "10.1.0.6" || d.ServerID != "0a02" || d.VIP != "quic" || d.CID != be2 {
		t.Fatalf("json: %q, %v", out, err)
	}
}
