package main

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/fastpath"
)

func TestCtlFastpath(t *testing.T) {
	ts, n := ctlServer(t, "")
	out, _, err := runCtl(t, ts, "fastpath")
	if err != nil || out != "fastpath  off (no node.fastpath)\n" {
		t.Fatalf("off: %q %v", out, err)
	}
	now := time.Now()
	n.FastpathOn = true
	n.FastpathCounters = datapath.FastpathCounters{Offered: 2, Installed: 1, Refused: 1, Active: 1, Sent: 2, BadAuth: 4}
	n.FastpathCounters.RefusedBy[fastpath.StatusFamily] = 1
	n.FastpathRedirects = []datapath.FastpathRedirect{{
		Flow:    fastpath.Flow{Proto: 6, Client: netip.MustParseAddrPort("198.18.10.2:40000"), VIP: netip.MustParseAddrPort("198.18.0.10:80")},
		Backend: netip.MustParseAddr("198.18.30.101"), Agent: netip.MustParseAddrPort("198.18.10.2:6080"),
		State: "installed", Since: now.Add(-3 * time.Second), Seen: now,
	}}
	out, _, err = runCtl(t, ts, "fastpath")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	for _, want := range []string{
		"redirects active 1 pending 0",
		"offered 2 (installed 1, refused 1, unacked 0; not offered: table full 0, ring full 0)",
		"refused by family 1",
		"messages sent 2, send errors 0; dropped: bad source 0, bad tag 4, malformed 0, stale 0",
		"tcp 198.18.10.2:40000 198.18.0.10:80 198.18.30.101 198.18.10.2:6080 installed 3s 0s ago",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	out, _, err = runCtl(t, ts, "-o", "json", "fastpath")
	var st control.FastpathStatus
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || !st.Enabled || len(st.Redirects) != 1 || st.Redirects[0].State != "installed" {
		t.Fatalf("json: %v %+v\n%s", err, st, out)
	}
}
