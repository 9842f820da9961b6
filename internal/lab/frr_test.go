package lab

import (
	"os"
	"strings"
	"testing"
)

// The router's FRR configuration: one neighbour per LB node in the peer
// group, ECMP on both families, BFD only when asked for.
func TestFRRConfig(t *testing.T) {
	l := layout(Config{Prefix: "x-", LBs: 3}.withDefaults())
	conf := l.FRRConfig(FRROptions{BFD: true})
	for _, want := range []string{
		"router bgp 65000\n",
		" bgp router-id 198.18.30.1\n",
		" neighbor lbs remote-as 65001\n",
		" neighbor 198.18.30.11 peer-group lbs\n",
		" neighbor 198.18.30.13 peer-group lbs\n",
		" neighbor lbs bfd profile lbs\n",
		" peer 198.18.30.12 local-address 198.18.30.1 interface svc\n",
		" timers bgp 3 9\n",
		" bgp bestpath as-path multipath-relax\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("configuration lacks %q:\n%s", want, conf)
		}
	}
	for _, af := range []string{"ipv4", "ipv6"} {
		block := " address-family " + af + " unicast\n  neighbor lbs activate\n  maximum-paths 16\n exit-address-family\n"
		if !strings.Contains(conf, block) {
			t.Errorf("configuration lacks the %s block %q:\n%s", af, block, conf)
		}
	}
	if n := strings.Count(conf, "peer-group lbs\n"); n != 3 {
		t.Errorf("%d neighbours in the peer group, want 3", n)
	}
	noBFD := l.FRRConfig(FRROptions{HoldTime: 30})
	if strings.Contains(noBFD, "bfd") || !strings.Contains(noBFD, " timers bgp 10 30\n") {
		t.Errorf("without BFD, hold time 30:\n%s", noBFD)
	}
}

// docs/config.md shows the configuration the lab runs (three LB nodes,
// BFD): the documented one is the tested one.
func TestFRRConfigDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	l := layout(Config{LBs: 3}.withDefaults())
	conf := l.FRRConfig(FRROptions{BFD: true})
	if !strings.Contains(string(doc), "```\n"+conf+"```\n") {
		t.Errorf("docs/config.md does not show the lab's FRR configuration; it is:\n%s", conf)
	}
}
