package config

import (
	"fmt"
	"slices"
)

// Redacted is what a redacted configuration (Config.Redacted) shows in
// place of each secret: the cluster key (node.cluster.key) and the QUIC-LB
// keys of the VIPs (vips[i].quic.key). It is never a valid secret (not
// hex, and shorter than a cluster key), so a document holding it cannot be
// mistaken for one holding a real key.
const Redacted = "<redacted>"

// secretField is one secret of a configuration.
type secretField struct {
	path string  // YAML path: node.cluster.key, vips[i].quic.key
	val  *string // the field
	// running returns the same field's secret in a running configuration
	// ("" when it has none): the cluster key, or the QUIC-LB key of the
	// VIP of the same name.
	running func(*Config) string
	missing string // why running has none, for the error
}

// secretFields lists c's secrets, set or not: the one place that knows
// which fields are secret (Redacted, RestoreSecrets and ParseRestoring
// follow it).
func (c *Config) secretFields() []secretField {
	var fs []secretField
	if cl := c.Node.Cluster; cl != nil {
		fs = append(fs, secretField{
			path: "node.cluster.key", val: &cl.Key,
			running: func(r *Config) string {
				if r.Node.Cluster == nil {
					return ""
				}
				return r.Node.Cluster.Key
			},
			missing: "there is no running cluster key to keep",
		})
	}
	if f := c.Node.Fastpath; f != nil {
		fs = append(fs, secretField{
			path: "node.fastpath.key", val: &f.Key,
			running: func(r *Config) string {
				if r.Node.Fastpath == nil {
					return ""
				}
				return r.Node.Fastpath.Key
			},
			missing: "there is no running fastpath key to keep",
		})
	}
	for i := range c.VIPs {
		v := &c.VIPs[i]
		if v.QUIC == nil {
			continue
		}
		name := v.Name
		fs = append(fs, secretField{
			path: fmt.Sprintf("vips[%d].quic.key", i), val: &v.QUIC.Key,
			running: func(r *Config) string {
				for _, rv := range r.VIPs {
					if rv.Name == name && rv.QUIC != nil {
						return rv.QUIC.Key
					}
				}
				return ""
			},
			missing: fmt.Sprintf("the running configuration has no QUIC-LB key of a VIP %q to keep", name),
		})
	}
	return fs
}

// Redacted returns a copy of c with every secret replaced by the
// placeholder Redacted; c is not modified. A secret that is not set (a QUIC
// block without a key: plaintext server IDs) stays empty. It is what the
// admin API and the tools print of a running configuration: nothing of a
// secret shows, neither a prefix nor its length.
func (c *Config) Redacted() *Config {
	r := *c
	if cl := c.Node.Cluster; cl != nil {
		rc := *cl
		r.Node.Cluster = &rc
	}
	if f := c.Node.Fastpath; f != nil {
		rf := *f
		r.Node.Fastpath = &rf
	}
	r.VIPs = slices.Clone(c.VIPs)
	for i := range r.VIPs {
		if q := r.VIPs[i].QUIC; q != nil {
			rq := *q
			r.VIPs[i].QUIC = &rq
		}
	}
	for _, f := range r.secretFields() {
		if *f.val != "" {
			*f.val = Redacted
		}
	}
	return &r
}

// RestoreSecrets replaces each placeholder (Redacted) in c's secret fields
// with the secret of the same field in running: node.cluster.key with
// running's cluster key, a VIP's quic.key with the key of running's VIP of
// the same name. A real secret in c is kept as given. A placeholder with
// no running secret to keep (running nil, no cluster, no VIP of that name
// or one without a QUIC key) is an error naming the field (Errors of
// FieldError), and c is then left unmodified.
//
// So a configuration read from the admin API (redacted) can be edited and
// applied back without its keys (ParseRestoring); a file, which holds its
// keys, is read with running nil (Parse, Load), which rejects any
// placeholder.
func (c *Config) RestoreSecrets(running *Config) error {
	var errs Errors
	type fix struct {
		dst *string
		val string
	}
	var fixes []fix
	for _, f := range c.secretFields() {
		if *f.val != Redacted {
			continue
		}
		if running != nil {
			if s := f.running(running); s != "" {
				fixes = append(fixes, fix{f.val, s})
				continue
			}
		}
		errs = append(errs, &FieldError{Path: f.path, Value: Redacted,
			Reason: "is the redaction placeholder, and " + f.missing + ": give the key"})
	}
	if len(errs) > 0 {
		return errs
	}
	for _, f := range fixes {
		*f.dst = f.val
	}
	return nil
}

// placeholders returns the paths of c's secret fields that hold Redacted.
func (c *Config) placeholders() map[string]bool {
	ps := map[string]bool{}
	for _, f := range c.secretFields() {
		if *f.val == Redacted {
			ps[f.path] = true
		}
	}
	return ps
}
