package config

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/sluicelb/sluice/internal/fielderr"
)

const (
	clusterKey = "cluster-key-0123456789"
	quicKey    = "8f95f09245765f80256934e50c66207f"
	quicKey2   = "00112233445566778899aabbccddeeff"
)

// secretDoc has a cluster key, a QUIC VIP with a key (q), one without (p)
// and a VIP without QUIC (web).
const secretDoc = `
node:
  interfaces: [eth0]
  cluster:
    bind: 198.18.30.11:7946
    key: ` + clusterKey + `
vips:
  - name: q
    address: 198.18.0.10
    protocol: udp
    port: 443
    quic: {key: ` + quicKey + `}
    backends:
      - address: 198.18.30.11
  - name: p
    address: 198.18.0.10
    protocol: udp
    port: 4433
    quic: true
    backends:
      - address: 198.18.30.11
  - name: web
    address: 198.18.0.10
    protocol: tcp
    port: 80
    backends:
      - address: 198.18.30.11
`

func mustParse(t *testing.T, doc string) *Config {
	t.Helper()
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The redacted configuration shows the placeholder for every secret set,
// in YAML and in JSON, and nothing of the secrets; the original keeps them.
func TestRedacted(t *testing.T) {
	c := mustParse(t, secretDoc)
	r := c.Redacted()
	y, err := yaml.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []struct{ name, s string }{{"yaml", string(y)}, {"json", string(j)}} {
		for _, secret := range []string{clusterKey, quicKey, clusterKey[:8], quicKey[:8]} {
			if strings.Contains(out.s, secret) {
				t.Errorf("%s output holds %q:\n%s", out.name, secret, out.s)
			}
		}
		placeholder := Redacted
		if out.name == "json" {
			b, _ := json.Marshal(Redacted)
			placeholder = strings.Trim(string(b), `"`)
		}
		if n := strings.Count(out.s, placeholder); n != 2 {
			t.Errorf("%s output holds the placeholder %d times, want 2:\n%s", out.name, n, out.s)
		}
	}
	if r.Node.Cluster.Key != Redacted || r.VIPs[0].QUIC.Key != Redacted || r.VIPs[1].QUIC.Key != "" || r.VIPs[2].QUIC != nil {
		t.Errorf("redacted: cluster %q, quic %+v %+v %+v", r.Node.Cluster.Key, r.VIPs[0].QUIC, r.VIPs[1].QUIC, r.VIPs[2].QUIC)
	}
	if c.Node.Cluster.Key != clusterKey || c.VIPs[0].QUIC.Key != quicKey {
		t.Errorf("Redacted modified the original: %q %q", c.Node.Cluster.Key, c.VIPs[0].QUIC.Key)
	}
	// Without secrets there is nothing to redact.
	g := mustParse(t, good)
	if y, _ := yaml.Marshal(g.Redacted()); strings.Contains(string(y), Redacted) {
		t.Errorf("placeholder without secrets:\n%s", y)
	}
}

func TestRestoreSecrets(t *testing.T) {
	running := mustParse(t, secretDoc)
	redacted, err := yaml.Marshal(running.Redacted())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		doc     string
		running *Config
		// cluster and quic are the keys expected after the restore; errs
		// the paths of the errors instead.
		cluster, quic string
		errs          []string
	}{
		{name: "round trip", doc: string(redacted), running: running, cluster: clusterKey, quic: quicKey},
		{name: "real keys kept", doc: secretDoc, running: running, cluster: clusterKey, quic: quicKey},
		{name: "new quic key given", doc: strings.Replace(string(redacted), "    key: "+Redacted+"\n        rotation", "    key: "+quicKey2+"\n        rotation", 1), running: running, cluster: clusterKey, quic: quicKey2},
		{name: "file (no running)", doc: string(redacted), running: nil, errs: []string{"node.cluster.key", "vips[0].quic.key"}},
		{name: "VIP renamed", doc: strings.Replace(string(redacted), "name: q\n", "name: q2\n", 1), running: running, errs: []string{"vips[0].quic.key"}},
		{name: "running VIP has no key", doc: string(redacted), running: mustParse(t, strings.Replace(secretDoc, "quic: {key: "+quicKey+"}", "quic: true", 1)), errs: []string{"vips[0].quic.key"}},
		{name: "running without cluster", doc: string(redacted), running: mustParse(t, strings.Replace(secretDoc, "  cluster:\n    bind: 198.18.30.11:7946\n    key: "+clusterKey+"\n", "", 1)), errs: []string{"node.cluster.key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseRestoring([]byte(tc.doc), tc.running)
			if tc.errs != nil {
				if err == nil {
					t.Fatalf("accepted:\n%s", tc.doc)
				}
				var paths []string
				for _, fe := range fielderr.All(err) {
					paths = append(paths, fe.Path)
					if fe.Value != Redacted || !strings.Contains(fe.Reason, "placeholder") {
						t.Errorf("error %v", fe)
					}
				}
				if strings.Join(paths, " ") != strings.Join(tc.errs, " ") {
					t.Errorf("errors at %v, want %v (%v)", paths, tc.errs, err)
				}
				if s := err.Error(); strings.Contains(s, clusterKey) || strings.Contains(s, quicKey) {
					t.Errorf("error repeats a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, tc.doc)
			}
			if c.Node.Cluster.Key != tc.cluster || c.VIPs[0].QUIC.Key != tc.quic || c.VIPs[1].QUIC.Key != "" {
				t.Errorf("restored cluster %q, quic %q %q", c.Node.Cluster.Key, c.VIPs[0].QUIC.Key, c.VIPs[1].QUIC.Key)
			}
		})
	}
}

// A failed restore changes nothing; the placeholder alone is reported for
// its field (not also as a malformed key), with the document's other
// problems.
func TestRestoreSecretsAtomic(t *testing.T) {
	c := mustParse(t, secretDoc).Redacted()
	running := mustParse(t, secretDoc)
	running.VIPs[0].Name = "other"
	var errs Errors
	if err := c.RestoreSecrets(running); !errors.As(err, &errs) || len(errs) != 1 {
		t.Fatalf("err %v", err)
	}
	if c.Node.Cluster.Key != Redacted {
		t.Errorf("cluster key restored by a failed restore: %q", c.Node.Cluster.Key)
	}
	y, _ := yaml.Marshal(c)
	// The last VIP (web) gets a bad affinity.
	doc := string(y)
	at := strings.LastIndex(doc, "affinity: on-change")
	doc = doc[:at] + "affinity: sometimes" + doc[at+len("affinity: on-change"):]
	_, err := Parse([]byte(doc))
	var paths []string
	for _, fe := range fielderr.All(err) {
		paths = append(paths, fe.Path)
	}
	if want := "node.cluster.key vips[0].quic.key vips[2].affinity"; strings.Join(paths, " ") != want {
		t.Errorf("errors at %v, want %s (%v)", paths, want, err)
	}
}
