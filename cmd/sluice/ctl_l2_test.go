package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/announce/l2"
	"github.com/sluicelb/sluice/internal/control"
)

func TestCtlL2Status(t *testing.T) {
	ts, n := ctlServer(t, "")
	out, _, err := runCtl(t, ts, "l2", "status")
	if err != nil || out != "l2  off (no node.l2)\n" {
		t.Fatalf("off: %q %v", out, err)
	}
	since := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	n.L2 = &l2.Status{Interface: "eth0", MAC: "02:73:6c:1e:00:0c", Self: "10.0.0.2:7946",
		Configured: []string{"10.0.0.2:7946", "10.0.0.1:7946", "10.0.0.3:7946"},
		Live:       []string{"10.0.0.1:7946", "10.0.0.2:7946"}, Need: 2, Quorum: true, Synced: true, Takeovers: 1,
		Counters: l2.CounterValues{ARPRequests: 4, ARPAnswered: 2, GratuitousARP: 3},
		VIPs: []l2.VIPStatus{
			{Address: "198.18.0.10", Owner: "10.0.0.2:7946", Mine: true, Answering: true, Since: since, Takeovers: 1},
			{Address: "2001:db8::10", Owner: "10.0.0.2:7946", Mine: true, Waiting: "sync"},
			{Address: "198.18.0.11", Owner: "10.0.0.1:7946"},
		}}
	out, _, err = runCtl(t, ts, "l2", "status")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	for _, want := range []string{
		"interface eth0 (02:73:6c:1e:00:0c)",
		"live 2 (10.0.0.1:7946 10.0.0.2:7946), majority 2: yes",
		"takeovers 1 (released 0, before sync 0)",
		"arp 4 requests, 2 answered; 3 gratuitous sent",
		"198.18.0.10 10.0.0.2:7946 (this node) yes 2026-12-05T08:00:00Z 1",
		"2001:db8::10 10.0.0.2:7946 (this node) waiting (sync) - 0",
		"198.18.0.11 10.0.0.1:7946 no - 0",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	out, _, err = runCtl(t, ts, "-o", "json", "l2", "status")
	var st control.L2Status
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || !st.Enabled || len(st.VIPs) != 3 || !st.VIPs[0].Answering || st.Need != 2 {
		t.Fatalf("json: %v %+v\n%s", err, st, out)
	}
}
