package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/controltest"
)

func TestEditRoutes(t *testing.T) {
	ts, n := setup(t)
	for i, tc := range []struct {
		method, path, body string
		code               int
		errCode            string
	}{
		{"POST", "/v1/vips/web/backends", `{"address": "10.1.0.9"}`, 200, ""},
		{"POST", "/v1/vips/web/backends", `{"address": "10.1.0.9"}`, 409, CodeExists},
		{"POST", "/v1/vips/nope/backends", `{"address": "10.1.0.9"}`, 404, CodeNotFound},
		{"POST", "/v1/vips/web/backends", `{"address": "10.1.0.8", "wait": 1}`, 400, ""},
		{"PUT", "/v1/vips/web/backends/10.1.0.9/weight", `{"weight": 7}`, 200, ""},
		{"PUT", "/v1/vips/web/backends/10.1.0.9/weight", `{}`, 400, ""},
		{"PUT", "/v1/vips/web/backends/10.1.0.9/weight", `{"weight": -7}`, 400, CodeInvalid},
		{"PUT", "/v1/vips/web/backends/10.9.9.9/weight", `{"weight": 1}`, 404, CodeNotFound},
		{"DELETE", "/v1/vips/web/backends/10.1.0.9", "", 200, ""},
		{"DELETE", "/v1/vips/web/backends/10.1.0.9", "", 404, CodeNotFound},
		{"POST", "/v1/vips", "name: api\naddress: 10.0.0.3\nprotocol: tcp\nport: 443\nbackends: [{address: 10.1.0.7}]\n", 200, ""},
		{"POST", "/v1/vips", `{"name": "api2", "address": "10.0.0.4", "protocol": "udp", "port": 53, "port_end": 54, "backends": [{"address": "10.1.0.7", "weight": 2}]}`, 200, ""},
		{"POST", "/v1/vips", `{"name": "api", "address": "10.0.0.5", "protocol": "tcp", "backends": [{"address": "10.1.0.7"}]}`, 409, CodeExists},
		{"POST", "/v1/vips", `{"name": "x", "adress": "10.0.0.5"}`, 400, ""},
		{"DELETE", "/v1/vips/api", "", 200, ""},
		{"DELETE", "/v1/vips/api", "", 404, CodeNotFound},
	} {
		code, body := req(t, tc.method, ts.URL+tc.path, "", tc.body)
		var eb ErrorBody
		if code != 200 {
			json.Unmarshal([]byte(body), &eb)
		}
		if code != tc.code || eb.Code != tc.errCode || code != 200 && eb.Error == "" {
			t.Fatalf("%d: %s %s: %d %s, want %d %q", i, tc.method, tc.path, code, body, tc.code, tc.errCode)
		}
	}
	c := n.Config()
	if len(c.VIPs) != 3 || c.VIPs[2].Name != "api2" || c.VIPs[2].PortEnd != 54 || *c.VIPs[2].Backends[0].Weight != 2 || len(c.VIPs[0].Backends) != 2 {
		t.Fatalf("config %+v", c.VIPs)
	}
	if n.Applied != 6 {
		t.Fatalf("applied %d", n.Applied)
	}
}

func TestClientEdits(t *testing.T) {
	n := controltest.New()
	ts := httptest.NewServer(Handler(control.New(n)))
	t.Cleanup(ts.Close)
	c := &Client{Base: ts.URL}
	ctx := context.Background()
	if res, err := c.AddBackend(ctx, "web", "10.1.0.9", 0); err != nil || res.Generation != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	if _, err := c.AddBackend(ctx, "web", "10.1.0.9", 1); !errors.Is(err, control.ErrExists) || errors.Is(err, control.ErrNeedsRestart) {
		t.Fatalf("exists: %v", err)
	}
	if _, err := c.SetWeight(ctx, "web", "10.1.0.9", 4); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetWeight(ctx, "nope", "10.1.0.9", 4); !errors.Is(err, control.ErrNotFound) {
		t.Fatalf("not found: %v", err)
	}
	if _, err := c.RemoveBackend(ctx, "web", "10.1.0.9"); err != nil {
		t.Fatal(err)
	}
	v := config.VIP{Name: "v6", Address: "2001:db8::1", Protocol: "tcp", Port: 443, Backends: []config.Backend{{Address: "2001:db8:1::1"}}}
	if _, err := c.AddVIP(ctx, v); err != nil {
		t.Fatal(err)
	}
	// An IPv6 backend address in the path.
	if _, err := c.SetWeight(ctx, "v6", "2001:db8:1::1", 0); err != nil {
		t.Fatal(err)
	}
	if w := *n.Config().VIPs[2].Backends[0].Weight; w != 0 {
		t.Fatalf("weight %d", w)
	}
	if _, err := c.RemoveVIP(ctx, "v6"); err != nil {
		t.Fatal(err)
	}
	// A change only a restart can make is still ErrNeedsRestart.
	doc := []byte(controltest.Initial + "") // same document, then a workers change
	doc = append([]byte("node:\n  interfaces: [eth0]\n  workers: 2\n"), doc[len("node:\n  interfaces: [eth0]\n"):]...)
	if _, err := c.Apply(ctx, doc); !errors.Is(err, control.ErrNeedsRestart) || errors.Is(err, control.ErrExists) {
		t.Fatalf("restart: %v", err)
	}
}
