package control

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/control/controltest"
)

const (
	clusterKey = "cluster-key-0123456789"
	quicKey    = "8f95f09245765f80256934e50c66207f"
)

// secretDoc is controltest.Initial with a cluster key and a QUIC VIP with
// a key.
var secretDoc = strings.Replace(controltest.Initial, "  interfaces: [eth0]\n",
	"  interfaces: [eth0]\n  cluster:\n    bind: 198.18.30.11:7946\n    key: "+clusterKey+"\n", 1) + `  - name: q
    address: 10.0.0.3
    protocol: udp
    port: 443
    quic: {key: ` + quicKey + `}
    backends:
      - address: 10.1.0.4
`

func newSecretServer(t *testing.T) (*Server, *controltest.Node) {
	t.Helper()
	n := controltest.NewConfig(secretDoc)
	s := New(n)
	s.now = func() time.Time { return t0 }
	return s, n
}

func noSecret(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range []string{clusterKey, quicKey, clusterKey[:8], quicKey[:8]} {
		if strings.Contains(s, secret) {
			t.Errorf("%s holds %q:\n%s", what, secret, s)
		}
	}
}

// GetConfig shows the placeholder for the secrets; the document is accepted
// back as is, keeping the running secrets, also with another change.
func TestGetConfigRedacts(t *testing.T) {
	s, n := newSecretServer(t)
	y, err := s.GetConfig()
	if err != nil {
		t.Fatal(err)
	}
	noSecret(t, "GetConfig", string(y))
	if c := strings.Count(string(y), config.Redacted); c != 2 {
		t.Fatalf("%d placeholders, want 2:\n%s", c, y)
	}
	doc := strings.Replace(string(y), "port: 443", "port: 8443", 1)
	if _, err := s.PutConfig(context.Background(), []byte(doc)); err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	c := n.Config()
	if n.Applied != 1 || c.VIPs[2].Port != 8443 || c.Node.Cluster.Key != clusterKey || c.VIPs[2].QUIC.Key != quicKey {
		t.Fatalf("applied %d: port %d, cluster key %q, quic key %q", n.Applied, c.VIPs[2].Port, c.Node.Cluster.Key, c.VIPs[2].QUIC.Key)
	}
	// The edits keep the secrets too.
	if _, err := s.SetWeight(context.Background(), "q", "10.1.0.4", 3); err != nil {
		t.Fatal(err)
	}
	if c := n.Config(); n.Applied != 2 || c.Node.Cluster.Key != clusterKey || c.VIPs[2].QUIC.Key != quicKey {
		t.Fatalf("after an edit: cluster key %q, quic key %q", c.Node.Cluster.Key, c.VIPs[2].QUIC.Key)
	}
}

// A placeholder with no running secret to keep is a problem naming the
// field; the running configuration stays.
func TestPutConfigPlaceholderWithoutSecret(t *testing.T) {
	s, n := newSecretServer(t)
	y, err := s.GetConfig()
	if err != nil {
		t.Fatal(err)
	}
	before := n.Config()
	for _, tc := range []struct{ name, doc, path string }{
		{"renamed VIP", strings.Replace(string(y), "name: q\n", "name: q2\n", 1), "vips[2].quic.key"},
		{"new VIP", string(y) + `    - name: q3
      address: 10.0.0.4
      protocol: udp
      port: 443
      quic: {key: "` + config.Redacted + `"}
      backends:
        - address: 10.1.0.5
`, "vips[3].quic.key"},
	} {
		res, err := s.PutConfig(context.Background(), []byte(tc.doc))
		var ce *ConfigError
		if !errors.As(err, &ce) || len(ce.Problems) != 1 || ce.Problems[0].Path != tc.path || ce.Problems[0].Value != config.Redacted {
			t.Errorf("%s: %v\n%s", tc.name, err, tc.doc)
			continue
		}
		noSecret(t, tc.name+": error", err.Error())
		if res.OK || n.Applied != 0 || n.Config() != before {
			t.Errorf("%s: the node was changed (%+v)", tc.name, res)
		}
	}
	// A cluster section the running configuration lacks.
	s, n = newServer(t)
	doc := strings.Replace(controltest.Initial, "  interfaces: [eth0]\n",
		"  interfaces: [eth0]\n  cluster:\n    bind: 198.18.30.11:7946\n    key: "+config.Redacted+"\n", 1)
	_, err = s.PutConfig(context.Background(), []byte(doc))
	var ce *ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 1 || ce.Problems[0].Path != "node.cluster.key" || n.Applied != 0 {
		t.Errorf("cluster added with the placeholder: %v", err)
	}
}

// A file must hold its secrets: ApplyFile (SIGHUP) rejects the placeholder
// even where a running secret exists, and applies the file with the keys.
func TestApplyFilePlaceholder(t *testing.T) {
	s, n := newSecretServer(t)
	y, err := s.GetConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "lb.yaml")
	if err := os.WriteFile(path, y, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.ApplyFile(context.Background(), path)
	var ce *ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 2 || ce.Problems[0].Path != "node.cluster.key" || ce.Problems[1].Path != "vips[2].quic.key" || n.Applied != 0 {
		t.Fatalf("file with placeholders: %v", err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(secretDoc, "port: 443", "port: 8443", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyFile(context.Background(), path); err != nil || n.Applied != 1 || n.Config().VIPs[2].Port != 8443 {
		t.Fatalf("file with its keys: %v", err)
	}
}
