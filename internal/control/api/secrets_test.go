package api

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/controltest"
)

// GET /v1/config shows no secret; PUT of the same body succeeds and the
// node keeps its real keys; a placeholder with no running secret is a 400
// naming the field.
func TestConfigSecrets(t *testing.T) {
	const clusterKey, quicKey = "cluster-key-0123456789", "8f95f09245765f80256934e50c66207f"
	doc := strings.Replace(controltest.Initial, "  interfaces: [eth0]\n",
		"  interfaces: [eth0]\n  cluster:\n    bind: 198.18.30.11:7946\n    key: "+clusterKey+"\n", 1) + `  - name: q
    address: 10.0.0.3
    protocol: udp
    port: 443
    quic: {key: ` + quicKey + `}
    backends:
      - address: 10.1.0.4
`
	n := controltest.NewConfig(doc)
	ts := httptest.NewServer(Handler(control.New(n)))
	t.Cleanup(ts.Close)

	code, body := req(t, "GET", ts.URL+"/v1/config", "", "")
	if code != 200 || strings.Count(body, config.Redacted) != 2 {
		t.Fatalf("GET config: %d %s", code, body)
	}
	for _, secret := range []string{clusterKey, quicKey, clusterKey[:8], quicKey[:8]} {
		if strings.Contains(body, secret) {
			t.Fatalf("GET config holds %q:\n%s", secret, body)
		}
	}

	code, res := req(t, "PUT", ts.URL+"/v1/config", "", body)
	var ar control.ApplyResult
	if code != 200 || json.Unmarshal([]byte(res), &ar) != nil || !ar.OK || n.Applied != 1 {
		t.Fatalf("PUT of the GET body: %d %s", code, res)
	}
	if c := n.Config(); c.Node.Cluster.Key != clusterKey || c.VIPs[2].QUIC.Key != quicKey {
		t.Fatalf("running keys after the round trip: %q %q", c.Node.Cluster.Key, c.VIPs[2].QUIC.Key)
	}

	code, res = req(t, "PUT", ts.URL+"/v1/config", "", strings.Replace(body, "name: q\n", "name: q2\n", 1))
	var eb struct {
		Errors []map[string]any `json:"errors"`
	}
	if code != 400 || json.Unmarshal([]byte(res), &eb) != nil || len(eb.Errors) != 1 || eb.Errors[0]["path"] != "vips[2].quic.key" || n.Applied != 1 {
		t.Fatalf("PUT placeholder for a new VIP: %d %s", code, res)
	}
	if strings.Contains(res, quicKey) {
		t.Fatalf("error body holds the key: %s", res)
	}
}
