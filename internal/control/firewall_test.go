package control

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicelb/sluice/internal/control/controltest"
	"github.com/sluicelb/sluice/internal/pipeline"
)

const firewallDoc = `
    firewall:
      default: deny
      rules:
        - name: lab
          action: allow
          src: 198.18.10.0/24
        - action: deny
          src: 198.18.11.0/24
          proto: tcp
          ports: 80-81
`

// The rule list shows in vip list with each rule's hits, and every rule of
// the running configuration is exported (0 until hit), with the counts of
// rules an earlier configuration had.
func TestFirewallViewsAndMetrics(t *testing.T) {
	s, n := newServer(t)
	doc := strings.Replace(controltest.Initial, "    backends:", strings.TrimPrefix(firewallDoc, "\n")+"    backends:", 1)
	if _, err := s.PutConfig(context.Background(), []byte(doc)); err != nil {
		t.Fatal(err)
	}
	vip := n.Config().VIPs[0].Name
	c := fakeCounters()
	c.Firewall = map[pipeline.RuleKey]uint64{
		{VIP: vip, Rule: "lab"}:     7,
		{VIP: vip, Rule: "default"}: 2,
		{VIP: vip, Rule: "gone"}:    4, // a rule of an earlier configuration
	}
	n.SetCounters(c)

	var fs *FirewallStatus
	for _, v := range s.ListVIPs() {
		if v.Name == vip {
			fs = v.Firewall
		} else if v.Firewall != nil {
			t.Fatalf("vip %s has a firewall", v.Name)
		}
	}
	if fs == nil || fs.Default != "deny" || fs.DefaultHits != 2 || len(fs.Rules) != 2 {
		t.Fatalf("firewall status %+v", fs)
	}
	if r := fs.Rules[0]; r.Rule != "lab" || r.Action != "allow" || r.Hits != 7 || r.Match != "src 198.18.10.0/24" {
		t.Fatalf("rule 0: %+v", r)
	}
	if r := fs.Rules[1]; r.Rule != "1" || r.Action != "deny" || r.Hits != 0 || r.Match != "src 198.18.11.0/24 proto tcp ports 80-81" {
		t.Fatalf("rule 1: %+v", r)
	}
	if err := testutil.CollectAndCompare(s.Collector(), strings.NewReader(`
# HELP sluice_firewall_rule_hits_total Flows a VIP's firewall rule decided (rule: its name or index; default: no rule matched), counted on a flow's first packet in each configuration.
# TYPE sluice_firewall_rule_hits_total counter
sluice_firewall_rule_hits_total{rule="1",vip="`+vip+`"} 0
sluice_firewall_rule_hits_total{rule="default",vip="`+vip+`"} 2
sluice_firewall_rule_hits_total{rule="gone",vip="`+vip+`"} 4
sluice_firewall_rule_hits_total{rule="lab",vip="`+vip+`"} 7
`), "sluice_firewall_rule_hits_total"); err != nil {
		t.Fatal(err)
	}
}
