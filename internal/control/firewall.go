package control

import (
	"fmt"
	"strings"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/firewall"
	"github.com/sluicelb/sluice/internal/pipeline"
)

// firewallStatus is svc's rule list with the hits in c; nil without one.
func firewallStatus(svc *pipeline.Service, c *datapath.Counters) *FirewallStatus {
	set := svc.Firewall
	if set == nil {
		return nil
	}
	hits := func(i int) uint64 {
		return c.Firewall[pipeline.RuleKey{VIP: svc.Name, Rule: pipeline.RuleLabel(set, i)}]
	}
	fs := &FirewallStatus{Default: set.Default().String(), DefaultHits: hits(-1), Rules: []RuleStatus{}}
	for i := range set.Len() {
		r := set.Rule(i)
		fs.Rules = append(fs.Rules, RuleStatus{
			Rule: pipeline.RuleLabel(set, i), Action: r.Action.String(), Match: ruleText(r), Hits: hits(i),
		})
	}
	return fs
}

// ruleText writes a rule's match fields as the configuration names them.
func ruleText(r firewall.Rule) string {
	var f []string
	if r.Src.IsValid() {
		f = append(f, "src "+r.Src.String())
	}
	if r.Dst.IsValid() {
		f = append(f, "dst "+r.Dst.String())
	}
	if r.Proto != 0 {
		f = append(f, "proto "+protoName(r.Proto))
	}
	if !r.SrcPorts.Any() {
		f = append(f, "src_ports "+portsText(r.SrcPorts))
	}
	if !r.DstPorts.Any() {
		f = append(f, "ports "+portsText(r.DstPorts))
	}
	if len(f) == 0 {
		return "any"
	}
	return strings.Join(f, " ")
}

func portsText(p firewall.PortRange) string {
	if p.Lo == p.Hi {
		return fmt.Sprint(p.Lo)
	}
	return fmt.Sprintf("%d-%d", p.Lo, p.Hi)
}

// firewallHits returns every rule hit counter to export: those counted
// (rules of earlier configurations included) and, at 0, every rule of
// the running configuration not hit yet.
func firewallHits(vips []VIPStatus, c *datapath.Counters) map[pipeline.RuleKey]uint64 {
	m := make(map[pipeline.RuleKey]uint64, len(c.Firewall))
	for k, n := range c.Firewall {
		m[k] = n
	}
	for _, v := range vips {
		if v.Firewall == nil {
			continue
		}
		m[pipeline.RuleKey{VIP: v.Name, Rule: "default"}] += 0
		for _, r := range v.Firewall.Rules {
			m[pipeline.RuleKey{VIP: v.Name, Rule: r.Rule}] += 0
		}
	}
	return m
}
