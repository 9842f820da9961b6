package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/control"
)

func TestCtlEdits(t *testing.T) {
	ts, n := ctlServer(t, "")
	for _, args := range [][]string{
		{"backend", "add", "web", "10.1.0.9", "--weight", "3"},
		{"backend", "weight", "web", "10.1.0.9", "5"},
		{"backend", "drain", "web", "10.1.0.1"},
		{"backend", "drain", "web", "10.1.0.9"},
		{"backend", "undrain", "web", "10.1.0.9"},
		{"vip", "add", "api", "--address", "10.0.0.3", "--port", "443", "--backend", "10.1.0.7", "--backend", "10.1.0.8=4"},
		{"backend", "del", "web", "10.1.0.2"},
		{"vip", "del", "dns"},
	} {
		out, _, err := runCtl(t, ts, args...)
		if err != nil || !strings.HasPrefix(out, "applied  generation ") {
			t.Fatalf("%v: %v %q", args, err, out)
		}
	}
	c := n.Config()
	if len(c.VIPs) != 2 || c.VIPs[0].Name != "web" || c.VIPs[1].Name != "api" {
		t.Fatalf("vips %+v", c.VIPs)
	}
	web, api := c.VIPs[0].Backends, c.VIPs[1].Backends
	if len(web) != 2 || web[0].Address != "10.1.0.1" || web[0].State != "draining" || web[0].EffectiveWeight() != 0 || web[1].State != "active" || web[1].Address != "10.1.0.9" || *web[1].Weight != 5 {
		t.Fatalf("web %+v", web)
	}
	if len(api) != 2 || *api[0].Weight != 1 || *api[1].Weight != 4 || c.VIPs[1].Protocol != "tcp" {
		t.Fatalf("api %+v", api)
	}

	_, _, err := runCtl(t, ts, "backend", "drain", "nope", "10.1.0.1")
	if !errors.Is(err, control.ErrNotFound) {
		t.Fatalf("unknown vip: %v", err)
	}
	_, _, err = runCtl(t, ts, "backend", "add", "web", "10.1.0.9")
	if !errors.Is(err, control.ErrExists) || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("exists: %v", err)
	}
	if _, _, err := runCtl(t, ts, "backend", "weight", "web", "10.1.0.9", "x"); err == nil {
		t.Fatal("weight x accepted")
	}
	out, _, err := runCtl(t, ts, "backend", "weight", "web", "10.1.0.9", "2", "-o", "json")
	if err != nil || !strings.Contains(out, `"generation": 10`) {
		t.Fatalf("%v %s", err, out)
	}
}

func TestCtlNodeDrain(t *testing.T) {
	ts, _ := ctlServer(t, "")
	out, _, err := runCtl(t, ts, "node", "status")
	if err != nil || !strings.Contains(out, "node       in service") {
		t.Fatalf("status: %v %q", err, out)
	}
}

func TestCtlFlowLookup(t *testing.T) {
	ts, _ := ctlServer(t, "")
	out, _, err := runCtl(t, ts, "flow", "lookup", "--vip", "dns", "--src", "192.0.2.1", "--sport", "4000")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"flow          udp 192.0.2.1:4000 -> 10.0.0.2:53 (vip dns)\n",
		"next packet   10.1.0.3  (maglev)",
		"flow entries  none\n",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("no %q in\n%s", want, out)
		}
	}
	out, _, err = runCtl(t, ts, "flow", "lookup", "--vip", "web", "--src", "192.0.2.1", "--sport", "4000", "-o", "json")
	var l control.FlowLookup
	if err != nil || json.Unmarshal([]byte(out), &l) != nil || l.Dst != "10.0.0.1:80" {
		t.Fatalf("%v %s", err, out)
	}
	out, _, err = runCtl(t, ts, "flow", "lookup", "--vip", "web", "--src", "192.0.2.1", "--sport", "4000", "--syn")
	if err != nil || !strings.Contains(out, "a new connection goes to the owner of its Maglev slot") {
		t.Fatalf("--syn: %v %s", err, out)
	}
	if _, _, err := runCtl(t, ts, "flow", "lookup", "--src", "192.0.2.1"); err == nil {
		t.Fatal("no --vip accepted")
	}
	if _, _, err := runCtl(t, ts, "flow", "lookup", "--vip", "nope", "--src", "192.0.2.1"); !errors.Is(err, control.ErrNotFound) {
		t.Fatalf("unknown vip: %v", err)
	}
}
