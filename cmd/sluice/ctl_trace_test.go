package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/controltest"
)

// flow trace prints every stage with its input and decision; vip list
// shows the firewall rules with their hits.
func TestCtlFlowTraceAndFirewall(t *testing.T) {
	ts, n := ctlServer(t, "")
	doc := strings.Replace(controltest.Initial, "    port: 80\n", `    port: 80
    firewall:
      rules:
        - {name: block, action: deny, src: 192.0.2.0/24, proto: tcp}
`, 1)
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Apply(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCtl(t, ts, "flow", "trace", "tcp", "192.0.2.7:40000", "10.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"packet  tcp 192.0.2.7:40000 -> 10.0.0.1:80 [syn] (datapath generation 2)\n",
		"flow lookup  flow table",
		"classify     destination tcp 10.0.0.1 port 80",
		"firewall     service web: 1 rules, default allow; source 192.0.2.7 port 40000  drop      deny by rule block (firewall_deny)\n",
		"balance      -",
		"result  drop (firewall_deny), vip web\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("trace lacks %q:\n%s", want, out)
		}
	}
	out, _, err = runCtl(t, ts, "flow", "trace", "--flags", "ack", "-o", "json", "tcp", "198.51.100.1:40000", "10.0.0.1:80")
	var tr control.FlowTrace
	if err != nil || json.Unmarshal([]byte(out), &tr) != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if tr.Verdict != "forward" || tr.Backend != "10.1.0.1" || tr.TCPFlags != "ack" || len(tr.Steps) != 9 {
		t.Fatalf("allowed trace %+v", tr)
	}
	if _, _, err := runCtl(t, ts, "flow", "trace", "tcp", "192.0.2.7", "10.0.0.1:80"); err == nil {
		t.Fatal("an address without a port accepted")
	}
	if _, _, err := runCtl(t, ts, "flow", "trace", "sctp", "192.0.2.7:1", "10.0.0.1:80"); err == nil || !strings.Contains(err.Error(), "not tcp or udp") {
		t.Fatalf("sctp: %v", err)
	}

	out, _, err = runCtl(t, ts, "vip", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"FIREWALL VIP  RULE     ACTION  MATCH                       FLOWS",
		"web           block    deny    src 192.0.2.0/24 proto tcp  0",
		"web           default  allow   any                         0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("vip list lacks %q:\n%s", want, out)
		}
	}
}
