package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/scenario"
)

// curlFrom makes n HTTP requests from the client's address src to the VIP
// (a new connection each) and returns how many were answered.
func curlFrom(ctx context.Context, s *scenario.Scenario, src, vip netip.Addr, n int) int {
	url := "http://" + netip.AddrPortFrom(vip, scenario.HTTPPort).String() + "/"
	ok := 0
	for range n {
		out, err := s.Lab.Client.Run(ctx, "curl", "-sS", "--max-time", "1", "--interface", src.String(), "-H", "Connection: close", url)
		if err == nil && strings.HasPrefix(strings.TrimSpace(out), "be") {
			ok++
		}
	}
	return ok
}

// metric returns the value of the /metrics line that starts with series
// on LB node 1 (-1 if absent).
func metric(t *testing.T, s *scenario.Scenario, series string) float64 {
	t.Helper()
	out, err := s.Lab.LBs[0].Run(context.Background(), "curl", "-sS", "--max-time", "3", "http://127.0.0.1:6090/metrics")
	if err != nil {
		t.Fatalf("metrics: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(out)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// A firewall rule on http4 denies one client address (a /32) while another
// address of the same client network is allowed by the default verdict:
// the denied address's requests time out and the rule's counter and the
// firewall_deny drops move, the other's succeed, other VIPs are untouched.
// Control runs: before the rule, and after a reload that removes it (the
// flows are re-evaluated in the new generation), both addresses succeed.
func TestE2EFirewall(t *testing.T) {
	s := start(t, scenario.Options{IO: "afxdp"})
	ctx := context.Background()
	c := s.Lab.Client
	denied := c.Addr4
	other := denied.Next()
	if out, err := c.Run(ctx, "ip", "addr", "add", other.String()+"/24", "dev", c.Ifname); err != nil {
		t.Fatalf("second client address: %v\n%s", err, out)
	}
	time.Sleep(200 * time.Millisecond) // DAD-free IPv4, but let the route settle
	const n = 10
	// Control run: no firewall.
	for _, src := range []netip.Addr{denied, other} {
		if got := curlFrom(ctx, s, src, s.Opts.VIP4, n); got != n {
			t.Fatalf("control run without the rule: %d of %d answered from %s", got, n, src)
		}
	}

	rule := fmt.Sprintf("    firewall:\n      rules:\n        - {name: block-client, action: deny, src: %s/32, proto: tcp, ports: 80}\n", denied)
	base := s.Config()
	withRule := strings.Replace(base, "    port: 80\n    backends:\n", "    port: 80\n"+rule+"    backends:\n", 1)
	if withRule == base {
		t.Fatal("http4 not found in the configuration")
	}
	if err := s.ReloadLB(0, withRule); err != nil {
		t.Fatal(err)
	}
	waitLogCount(t, s, "reload applied", 1)
	hitsSeries := `sluice_firewall_rule_hits_total{rule="block-client",vip="http4"}`
	dropsSeries := `sluice_drops_total{reason="firewall_deny"}`
	hits0, drops0 := metric(t, s, hitsSeries), metric(t, s, dropsSeries)
	if hits0 != 0 {
		t.Fatalf("rule counter before traffic: %v, want 0 (exported for the running rule)", hits0)
	}

	start := time.Now()
	if got := curlFrom(ctx, s, denied, s.Opts.VIP4, n); got != 0 {
		t.Fatalf("denied address: %d of %d answered", got, n)
	}
	t.Logf("%d requests from %s timed out in %v", n, denied, time.Since(start).Round(time.Millisecond))
	if got := curlFrom(ctx, s, other, s.Opts.VIP4, n); got != n {
		t.Fatalf("allowed address %s: %d of %d answered", other, got, n)
	}
	if _, err := s.Curl(ctx, s.Opts.VIP6, n); err != nil {
		t.Fatalf("http6 (no rule) from the denied client: %v", err)
	}
	hits, drops := metric(t, s, hitsSeries), metric(t, s, dropsSeries)
	def := metric(t, s, `sluice_firewall_rule_hits_total{rule="default",vip="http4"}`)
	t.Logf("block-client hits %v (one per connection), firewall_deny drops %v (SYN retransmits included), default hits %v", hits, drops-drops0, def)
	if hits < n || drops-drops0 < n || def < n {
		t.Fatalf("counters: block-client %v, firewall_deny %v, default %v; want each >= %d", hits, drops-drops0, def, n)
	}
	vl, err := s.Lab.LBs[0].Run(ctx, sluiceBin, "ctl", "vip", "list")
	if err != nil || !regexp.MustCompile(`http4\s+block-client\s+deny\s+src `+regexp.QuoteMeta(denied.String())+`/32 proto tcp ports 80\s+\d+`).MatchString(vl) {
		t.Errorf("vip list: %v\n%s", err, vl)
	}

	// The trace of a packet from each address says the same, stage by stage.
	for _, tc := range []struct {
		src  netip.Addr
		want string
	}{{denied, "deny by rule block-client (firewall_deny)"}, {other, "allow by rule default"}} {
		tr, err := s.Lab.LBs[0].Run(ctx, sluiceBin, "ctl", "flow", "trace", "tcp", netip.AddrPortFrom(tc.src, 40999).String(), netip.AddrPortFrom(s.Opts.VIP4, scenario.HTTPPort).String())
		if err != nil || !strings.Contains(tr, tc.want) {
			t.Errorf("flow trace from %s lacks %q: %v\n%s", tc.src, tc.want, err, tr)
		}
	}

	// The rule removed: the denied flows are judged again.
	if err := s.ReloadLB(0, base); err != nil {
		t.Fatal(err)
	}
	waitLogCount(t, s, "reload applied", 2)
	for _, src := range []netip.Addr{denied, other} {
		if got := curlFrom(ctx, s, src, s.Opts.VIP4, n); got != n {
			t.Fatalf("after removing the rule: %d of %d answered from %s", got, n, src)
		}
	}
	if h := metric(t, s, hitsSeries); h != hits {
		t.Fatalf("the removed rule's count moved from %v to %v", hits, h)
	}
}
