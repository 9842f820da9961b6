package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/sluicelb/sluice/internal/fielderr"
	"github.com/sluicelb/sluice/internal/firewall"
)

// Firewall is a VIP's rule list (DESIGN.md §3.8): ordered rules, the first
// that matches a flow's first packet decides, else Default. The verdict is
// memoised in the flow's entry until the configuration changes.
type Firewall struct {
	Default string         `yaml:"default"` // allow (default) | deny
	Rules   []FirewallRule `yaml:"rules"`
}

// FirewallRule is one rule. Every field but Action is optional (any).
type FirewallRule struct {
	// Name labels the rule's hit counter (sluice_firewall_rule_hits_total
	// {vip, rule}); default its index. Unique in the list, not "default".
	Name   string `yaml:"name"`
	Action string `yaml:"action"` // allow | deny
	Src    string `yaml:"src"`    // client prefix (an address is a /32 or /128)
	Dst    string `yaml:"dst"`    // destination prefix
	// Proto: tcp, udp, icmp, icmpv6 or a protocol number; empty: any.
	Proto    string `yaml:"proto"`
	Ports    string `yaml:"ports"`     // destination ports: 443 or 8000-8080
	SrcPorts string `yaml:"src_ports"` // source ports, likewise
}

// Firewall defaults.
const (
	FirewallAllow = "allow"
	FirewallDeny  = "deny"
)

// Compile turns the rule list into the datapath's firewall.Set. Errors are
// fielderr.Errors with paths relative to the block ("rules[1].src");
// Validate reports them under the VIP's path.
func (f *Firewall) Compile() (*firewall.Set, error) {
	rules, def, errs := f.parse()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return firewall.Compile(rules, def)
}

func action(s string) firewall.Action {
	switch s {
	case FirewallAllow:
		return firewall.Allow
	case FirewallDeny:
		return firewall.Deny
	}
	return 0
}

func (f *Firewall) parse() ([]firewall.Rule, firewall.Action, []error) {
	var errs []error
	bad := func(path string, value any, reason string) {
		errs = append(errs, &fielderr.Error{Path: path, Value: value, Reason: reason, Err: firewall.ErrRule})
	}
	def := action(f.Default)
	if def == 0 {
		bad("default", fmt.Sprintf("%q", f.Default), "is not allow or deny")
	}
	names := map[string]int{}
	rules := make([]firewall.Rule, len(f.Rules))
	for j, fr := range f.Rules {
		p := fmt.Sprintf("rules[%d]", j)
		r := &rules[j]
		r.Name = fr.Name
		if fr.Name != "" {
			if k, dup := names[fr.Name]; dup {
				bad(p+".name", fr.Name, fmt.Sprintf("is also the name of rules[%d]", k))
			} else if fr.Name == "default" || isDigits(fr.Name) {
				bad(p+".name", fr.Name, "is reserved (the default verdict's and unnamed rules' labels)")
			}
			names[fr.Name] = j
		}
		if r.Action = action(fr.Action); r.Action == 0 {
			bad(p+".action", fmt.Sprintf("%q", fr.Action), "is not allow or deny")
		}
		var err error
		if r.Src, err = prefix(fr.Src); err != nil {
			bad(p+".src", fr.Src, "is not an address or prefix")
		}
		if r.Dst, err = prefix(fr.Dst); err != nil {
			bad(p+".dst", fr.Dst, "is not an address or prefix")
		}
		if r.Proto, err = protoNumber(fr.Proto); err != nil {
			bad(p+".proto", fr.Proto, "is not tcp, udp, icmp, icmpv6 or a protocol number (1-255)")
		}
		if r.DstPorts, err = portRange(fr.Ports); err != nil {
			bad(p+".ports", fr.Ports, "is not a port or a range lo-hi (1-65535, or 0-hi)")
		}
		if r.SrcPorts, err = portRange(fr.SrcPorts); err != nil {
			bad(p+".src_ports", fr.SrcPorts, "is not a port or a range lo-hi (1-65535, or 0-hi)")
		}
		if (fr.Ports != "" || fr.SrcPorts != "") && r.Proto != 0 && r.Proto != 6 && r.Proto != 17 {
			bad(p+".ports", fr.Ports+fr.SrcPorts, "needs proto tcp or udp (or none)")
		}
	}
	return rules, def, errs
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// prefix parses a prefix or a bare address (a host prefix); "" is any.
func prefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" || a.Is4In6() {
			return netip.Prefix{}, errors.New("zone or mapped")
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err == nil && p.Addr().Is4In6() {
		err = errors.New("mapped")
	}
	return p, err
}

func protoNumber(s string) (uint8, error) {
	switch strings.ToLower(s) {
	case "":
		return 0, nil
	case "tcp":
		return 6, nil
	case "udp":
		return 17, nil
	case "icmp":
		return 1, nil
	case "icmpv6":
		return 58, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || n == 0 {
		return 0, errors.New("bad protocol")
	}
	return uint8(n), nil
}

func portRange(s string) (firewall.PortRange, error) {
	if s == "" {
		return firewall.PortRange{}, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	l, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	h, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err1 != nil || err2 != nil || h == 0 || h < l { // port 0 alone would read as "any"
		return firewall.PortRange{}, errors.New("bad port range")
	}
	return firewall.PortRange{Lo: uint16(l), Hi: uint16(h)}, nil
}

// validateFirewall checks VIP v's rule list, reporting under p.firewall.
func validateFirewall(p string, v *VIP, bad func(path string, value any, reason string)) {
	f := v.Firewall
	if f == nil {
		return
	}
	fp := p + ".firewall."
	rules, _, errs := f.parse()
	if len(errs) == 0 {
		_, err := f.Compile()
		errs = []error{err}
	}
	for _, fe := range fielderr.All(errors.Join(errs...)) {
		bad(fp+fe.Path, fe.Value, fe.Reason)
	}
	vip, err := netip.ParseAddr(v.Address)
	if err != nil {
		return
	}
	for j, r := range rules {
		for _, pr := range []struct {
			field string
			p     netip.Prefix
		}{{"src", r.Src}, {"dst", r.Dst}} {
			if pr.p.IsValid() && pr.p.Addr().Is4() != vip.Is4() {
				bad(fmt.Sprintf("%srules[%d].%s", fp, j, pr.field), pr.p.String(), "is not of the VIP's address family: the rule would never match")
			}
		}
	}
}
