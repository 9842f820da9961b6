package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/controltest"
	"github.com/sluicelb/sluice/internal/datapath"
)

func setup(t *testing.T) (*httptest.Server, *controltest.Node) {
	t.Helper()
	n := controltest.New()
	n.SetCounters(datapath.Counters{RxPackets: 5, FlowHits: 4, Reals: []datapath.RealCounters{{Packets: 3, Bytes: 300}}})
	ts := httptest.NewServer(Handler(control.New(n)))
	t.Cleanup(ts.Close)
	return ts, n
}

func req(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	r, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRoutes(t *testing.T) {
	ts, n := setup(t)
	code, body := req(t, "GET", ts.URL+"/v1/config", "", "")
	if code != 200 || !strings.Contains(body, "name: web") {
		t.Fatalf("GET config: %d %s", code, body)
	}

	// 200 with the generation.
	code, body = req(t, "PUT", ts.URL+"/v1/config", "", strings.Replace(controltest.Initial, "port: 80", "port: 81", 1))
	var res control.ApplyResult
	if code != 200 || json.Unmarshal([]byte(body), &res) != nil || !res.OK || res.Generation != 2 || n.Applied != 1 {
		t.Fatalf("PUT ok: %d %s", code, body)
	}

	// 400 with every field error as {path, value, reason}.
	code, body = req(t, "PUT", ts.URL+"/v1/config", "", strings.Replace(controltest.Initial, "weight: 0", "weight: -1", 1))
	var eb struct {
		Error  string           `json:"error"`
		Errors []map[string]any `json:"errors"`
	}
	if code != 400 || json.Unmarshal([]byte(body), &eb) != nil || len(eb.Errors) != 1 {
		t.Fatalf("PUT invalid: %d %s", code, body)
	}
	if e := eb.Errors[0]; e["path"] != "vips[0].backends[1].weight" || e["value"] != -1.0 || e["reason"] != "is negative" || len(e) != 3 {
		t.Fatalf("error shape %v", e)
	}

	// 409 for a change only a restart can make.
	code, body = req(t, "PUT", ts.URL+"/v1/config", "", strings.Replace(controltest.Initial, "[eth0]", "[eth1]", 1))
	if code != 409 || !strings.Contains(body, "node.interfaces") {
		t.Fatalf("PUT needs restart: %d %s", code, body)
	}
	// 500 for any other refusal.
	n.ApplyErr = errors.New("boom")
	if code, body = req(t, "PUT", ts.URL+"/v1/config", "", controltest.Initial); code != 500 || !strings.Contains(body, "boom") {
		t.Fatalf("PUT refused: %d %s", code, body)
	}
	if n.Applied != 1 {
		t.Fatal("refusals applied")
	}

	code, body = req(t, "GET", ts.URL+"/v1/vips", "", "")
	var vips []map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &vips) != nil || len(vips) != 2 {
		t.Fatalf("GET vips: %d %s", code, body)
	}
	be := vips[0]["backends"].([]any)[0].(map[string]any)
	for k, want := range map[string]any{"address": "10.1.0.1", "weight": 1.0, "next_hop_resolved": true, "state": "active", "packets": 3.0, "bytes": 300.0} {
		if be[k] != want {
			t.Errorf("backend %s = %v, want %v (%v)", k, be[k], want, be)
		}
	}
	if vips[0]["name"] != "web" || vips[0]["address"] != "10.0.0.1" || vips[0]["port"] != 81.0 {
		t.Errorf("vip %v", vips[0])
	}

	code, body = req(t, "GET", ts.URL+"/v1/stats", "", "")
	var st map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil {
		t.Fatalf("GET stats: %d %s", code, body)
	}
	last := st["last_apply"].(map[string]any)
	if st["rx_packets"] != 5.0 || st["flow_hits"] != 4.0 || st["config_generation"] != 2.0 || last["ok"] != false || last["error"] != "boom" {
		t.Fatalf("stats %s", body)
	}

	code, body = req(t, "GET", ts.URL+"/metrics", "", "")
	if code != 200 || !strings.Contains(body, `sluice_backend_packets_total{backend="10.1.0.1",vip="web"} 3`) {
		t.Fatalf("metrics: %d %s", code, body)
	}
	if code, _ = req(t, "DELETE", ts.URL+"/v1/config", "", ""); code != 405 {
		t.Fatalf("DELETE: %d", code)
	}
}

func TestToken(t *testing.T) {
	h := RequireToken("s3cret", Handler(control.New(controltest.New())))
	ts := httptest.NewServer(h)
	defer ts.Close()
	for _, tc := range []struct {
		auth string
		code int
	}{
		{"", 401}, {"Bearer wrong", 401}, {"Bearer s3cre", 401}, {"Bearer s3cret2", 401},
		{"s3cret", 401}, {"Basic s3cret", 401}, {"Bearer s3cret", 200},
	} {
		r, _ := http.NewRequest("GET", ts.URL+"/v1/vips", nil)
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("Authorization %q: %d, want %d", tc.auth, resp.StatusCode, tc.code)
		}
	}
}

func TestListen(t *testing.T) {
	h := Handler(control.New(controltest.New()))
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		if srv, err := Listen(addr, "", h); !errors.Is(err, ErrTokenRequired) {
			if srv != nil {
				srv.Close()
			}
			t.Errorf("Listen(%s) without a token: %v, want ErrTokenRequired", addr, err)
		}
	}
	get := func(srv *http.Server, token string) (int, error) {
		c := &Client{Base: "http://" + srv.Addr, Token: token, HTTP: &http.Client{Timeout: 5 * time.Second}}
		_, err := c.VIPs(context.Background())
		var e *Error
		if errors.As(err, &e) {
			return e.Status, err
		}
		return 200, err
	}
	// Loopback without a token: open.
	srv, err := Listen("127.0.0.1:0", "", h)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if code, err := get(srv, ""); code != 200 || err != nil {
		t.Fatalf("loopback: %d %v", code, err)
	}
	// Elsewhere with a token: every request needs it.
	srv2, err := Listen("0.0.0.0:0", "tok", h)
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	if code, err := get(srv2, "bad"); code != 401 || !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong token: %d %v", code, err)
	}
	if code, err := get(srv2, "tok"); code != 200 || err != nil {
		t.Fatalf("token: %d %v", code, err)
	}
	// /metrics is behind the same token.
	for _, tc := range []struct {
		auth string
		code int
	}{{"", 401}, {"Bearer bad", 401}, {"Bearer tok", 200}} {
		r, _ := http.NewRequest("GET", "http://"+srv2.Addr+"/metrics", nil)
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("/metrics with %q: %d, want %d", tc.auth, resp.StatusCode, tc.code)
		}
	}
}

func TestClientErrors(t *testing.T) {
	ts, _ := setup(t)
	c := &Client{Base: ts.URL}
	_, err := c.Apply(context.Background(), []byte(strings.Replace(controltest.Initial, "protocol: udp", "protocol: x", 1)))
	var e *Error
	if !errors.Is(err, control.ErrInvalidConfig) || !errors.As(err, &e) || len(e.Problems) != 1 || e.Problems[0].Path != "vips[1].protocol" {
		t.Fatalf("%v", err)
	}
	if _, err := c.Apply(context.Background(), []byte(strings.Replace(controltest.Initial, "[eth0]", "[eth0, eth1]", 1))); !errors.Is(err, control.ErrNeedsRestart) {
		t.Fatalf("%v", err)
	}
	y, err := c.Config(context.Background())
	if err != nil || !strings.Contains(string(y), "interfaces:\n        - eth0") {
		t.Fatalf("%v\n%s", err, y)
	}
}
