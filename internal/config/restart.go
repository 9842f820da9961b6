package config

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// ErrNeedsRestart is what a running node answers to a configuration that
// changes a setting only a restart can change (RestartRule); the running
// configuration then stays in force.
var ErrNeedsRestart = errors.New("needs a restart")

// RestartRule says whether a change of one node setting needs a restart of
// the node, and why.
type RestartRule struct {
	Field   string // the YAML path, node.NAME
	Restart bool
	Why     string
}

// RestartRules lists every field of Node, in declaration order, with
// whether a running node can change it. It is the one place that decides:
// NeedsRestart follows it, and its test fails for a Node field it does not
// name.
var RestartRules = []RestartRule{
	{"node.interfaces", true, "the links are opened at start"},
	{"node.io", true, "the links are opened at start"},
	{"node.xdp_mode", true, "the XDP program is attached at start"},
	{"node.offload", true, "the XDP program is chosen and attached at start"},
	{"node.workers", true, "one link and worker per queue, opened at start"},
	{"node.gue_port", false, "the backends' tunnel templates and VIP probes are rebuilt"},
	{"node.seed", false, "the next generation hashes with it (new flows hash differently from nodes on the old seed)"},
	{"node.flow_capacity", true, "the flow tables are allocated at start"},
	{"node.mtu", false, "a generation setting"},
	{"node.too_big", false, "a generation setting"},
	{"node.icmp_rate", false, "a generation setting"},
	{"node.fragments", false, "a generation setting"},
	{"node.source_v4", false, "the backends' tunnel templates are rebuilt"},
	{"node.source_v6", false, "the backends' tunnel templates are rebuilt"},
	{"node.admin_addr", true, "the admin API listens from start"},
	{"node.bgp", true, "the BGP speaker and its sessions are set up at start"},
	{"node.snat", true, "the workers' SNAT port pools and reply bindings are made at start, and live flows hold ports of the addresses"},
	{"node.snat_ports", true, "the port layout is dealt to the workers at start, and live flows hold ports of it"},
	{"node.cluster", true, "the cluster member is started with the node (and keeps the seed it started with)"},
	{"node.l2", true, "the responder's sockets are opened on the interface at start"},
	{"node.fastpath", true, "the redirector's socket and key are set up at start"},
}

// NeedsRestart returns nil if a running node with settings a can take b
// without a restart, else an error naming the first field that needs one
// and wrapping ErrNeedsRestart. VIPs never need a restart.
func NeedsRestart(a, b *Node) error {
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	t := va.Type()
	for i := range t.NumField() {
		name := "node." + yamlName(t.Field(i))
		j := slices.IndexFunc(RestartRules, func(r RestartRule) bool { return r.Field == name })
		if j < 0 || !RestartRules[j].Restart {
			continue
		}
		fa, fb := va.Field(i).Interface(), vb.Field(i).Interface()
		if reflect.DeepEqual(fa, fb) || sameYAML(fa, fb) {
			continue
		}
		if va.Field(i).Kind() == reflect.Pointer {
			return fmt.Errorf("%s: changed (%s) %w", name, RestartRules[j].Why, ErrNeedsRestart)
		}
		return fmt.Errorf("%s: %v -> %v (%s) %w", name, fa, fb, RestartRules[j].Why, ErrNeedsRestart)
	}
	return nil
}

// sameYAML reports whether a and b write the same YAML: settings that
// differ only where the document cannot tell them apart (a nil list and an
// empty one, as after the admin API's edits write the running
// configuration out and read it back) are the same setting.
func sameYAML(a, b any) bool {
	ya, err := yaml.Marshal(a)
	if err != nil {
		return false
	}
	yb, err := yaml.Marshal(b)
	return err == nil && bytes.Equal(ya, yb)
}

// yamlName is the YAML key of a struct field.
func yamlName(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if tag == "" {
		return f.Name
	}
	return tag
}
