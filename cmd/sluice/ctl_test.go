package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/api"
	"github.com/sluicelb/sluice/internal/control/controltest"
	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/pipeline"
)

func ctlServer(t *testing.T, token string) (*httptest.Server, *controltest.Node) {
	t.Helper()
	n := controltest.New()
	n.SetCounters(datapath.Counters{RxPackets: 12, FlowHits: 9, FlowMisses: 3,
		Reals: []datapath.RealCounters{{Packets: 1234567, Bytes: 89}, {}, {Packets: 5, Bytes: 6}}})
	c := n.Counters()
	c.Drops[pipeline.ReasonNoNextHop] = 7
	n.SetCounters(c)
	var h = api.Handler(control.New(n))
	if token != "" {
		h = api.RequireToken(token, h)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts, n
}

func runCtl(t *testing.T, ts *httptest.Server, args ...string) (string, string, error) {
	t.Helper()
	cmd := newCtlCmd()
	cmd.SilenceErrors, cmd.SilenceUsage = true, true // as the root does
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(append([]string{"--addr", strings.TrimPrefix(ts.URL, "http://")}, args...))
	err := cmd.Execute()
	return out.String(), errb.String(), err
}

func TestCtlVIPList(t *testing.T) {
	ts, _ := ctlServer(t, "")
	out, _, err := runCtl(t, ts, "vip", "list")
	if err != nil {
		t.Fatal(err)
	}
	want := `VIP  ADDRESS   PROTO  PORTS  TABLE             BACKEND   WEIGHT  STATE       PACKETS  BYTES
web  10.0.0.1  tcp    80     8d2adeecf4f6dc16  10.1.0.1  1       active      1234567  89
web  10.0.0.1  tcp    80     8d2adeecf4f6dc16  10.1.0.2  0       unresolved  0        0
dns  10.0.0.2  udp    53     4dc8c5be3d6495b2  10.1.0.3  1       active      5        6
`
	if out != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
	out, _, err = runCtl(t, ts, "vip", "list", "-o", "json")
	var vips []control.VIPStatus
	if err != nil || json.Unmarshal([]byte(out), &vips) != nil || len(vips) != 2 || vips[0].Backends[0].Packets != 1234567 {
		t.Fatalf("%v %s", err, out)
	}
	if _, _, err := runCtl(t, ts, "vip", "list", "-o", "yaml"); err == nil {
		t.Fatal("-o yaml accepted")
	}
}

func TestCtlStats(t *testing.T) {
	ts, _ := ctlServer(t, "")
	out, _, err := runCtl(t, ts, "stats")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"config generation    1\n",
		"last apply           none since start\n",
		"rx packets           12\n",
		"flow hits            9\n",
		"flow misses          3\n",
		"DROP REASON           PACKETS\n",
		"no_next_hop           7\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("missing %q in\n%s", line, out)
		}
	}
}

func TestCtlApplyAndConfig(t *testing.T) {
	ts, n := ctlServer(t, "tok")
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte(strings.Replace(controltest.Initial, "port: 80", "port: 8080", 1)), 0o644)
	os.WriteFile(bad, []byte(strings.Replace(strings.Replace(controltest.Initial, "weight: 0", "weight: -1", 1), "protocol: udp", "protocol: sctp", 1)), 0o644)

	if _, _, err := runCtl(t, ts, "apply", "-f", good); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("no token: %v", err)
	}
	t.Setenv("SLUICE_TOKEN", "tok")
	out, _, err := runCtl(t, ts, "apply", "-f", good)
	if err != nil || !strings.HasPrefix(out, "applied  generation 2  ") || n.Applied != 1 {
		t.Fatalf("%v %q", err, out)
	}
	_, stderr, err := runCtl(t, ts, "apply", "-f", bad)
	want := `PATH                        VALUE   REASON
vips[0].backends[1].weight  -1      is negative
vips[1].protocol            "sctp"  is not tcp or udp
`
	if err == nil || !strings.Contains(err.Error(), "2 problems") || stderr != want || n.Applied != 1 {
		t.Fatalf("%v\n%s", err, stderr)
	}
	out, _, err = runCtl(t, ts, "config", "get")
	if err != nil || !strings.Contains(out, "port: 8080") {
		t.Fatalf("%v %s", err, out)
	}
	if _, _, err := runCtl(t, ts, "--token", "wrong", "stats"); err == nil {
		t.Fatal("a wrong --token was accepted")
	}
}

// closedAddr returns a local address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A node that does not answer: ctl names the address it tried, where that
// address came from, and the flag and environment variable that set it.
func TestCtlUnreachable(t *testing.T) {
	addr := closedAddr(t)
	for _, tc := range []struct {
		name      string
		args      []string
		env, from string
	}{
		{"flag", []string{"--addr", addr}, "", "came from --addr"},
		{"env", nil, addr, "came from SLUICE_ADDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SLUICE_ADDR", tc.env)
			cmd := newCtlCmd()
			cmd.SilenceErrors, cmd.SilenceUsage = true, true
			cmd.SetOut(new(bytes.Buffer))
			cmd.SetErr(new(bytes.Buffer))
			cmd.SetArgs(append(tc.args, "stats"))
			err := cmd.Execute()
			if err == nil {
				t.Fatal("ctl stats against a closed port succeeded")
			}
			msg := err.Error()
			for _, want := range []string{"no answer from the admin API at " + addr, "connection refused", addr + " " + tc.from, "--addr HOST:PORT", "SLUICE_ADDR=HOST:PORT"} {
				if !strings.Contains(msg, want) {
					t.Errorf("missing %q in:\n%s", want, msg)
				}
			}
		})
	}
}

// SLUICE_ADDR points ctl at a node when --addr is not given.
func TestCtlAddrFromEnv(t *testing.T) {
	ts, _ := ctlServer(t, "")
	t.Setenv("SLUICE_ADDR", strings.TrimPrefix(ts.URL, "http://"))
	cmd := newCtlCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"stats", "-o", "json"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"rx_packets": 12`) {
		t.Errorf("stats from the node at SLUICE_ADDR:\n%s", out.String())
	}
}
