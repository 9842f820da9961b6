package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/control"
)

func TestFlowLookupRoute(t *testing.T) {
	ts, _ := setup(t)
	code, body := req(t, "GET", ts.URL+"/v1/flows/lookup?vip=dns&src=192.0.2.1&sport=4000", "", "")
	var l control.FlowLookup
	if code != 200 || json.Unmarshal([]byte(body), &l) != nil || l.VIP != "dns" || l.Src != "192.0.2.1:4000" || l.Dst != "10.0.0.2:53" || l.Reason != control.ReasonMaglev || l.Backend != "10.1.0.3" {
		t.Fatalf("%d %s", code, body)
	}
	for _, tc := range []struct {
		q       string
		code    int
		errCode string
	}{
		{"vip=nope&src=192.0.2.1&sport=1", 404, CodeNotFound},
		{"vip=web&src=bogus&sport=1", 400, CodeInvalidQuery},
		{"vip=web&src=192.0.2.1&sport=70000", 400, CodeInvalidQuery},
		{"vip=web&src=192.0.2.1", 400, CodeInvalidQuery},
		{"vip=web&src=192.0.2.1&sport=1&dport=81", 400, CodeInvalidQuery},
		{"vip=web&src=2001:db8::1&sport=1", 400, CodeInvalidQuery},
	} {
		code, body := req(t, "GET", ts.URL+"/v1/flows/lookup?"+tc.q, "", "")
		var eb ErrorBody
		json.Unmarshal([]byte(body), &eb)
		if code != tc.code || eb.Code != tc.errCode {
			t.Fatalf("%s: %d %s", tc.q, code, body)
		}
	}

	c := &Client{Base: ts.URL}
	l, err := c.LookupFlow(context.Background(), control.FlowQuery{VIP: "web", Src: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), 4000), DstPort: 80})
	if err != nil || l.Dst != "10.0.0.1:80" {
		t.Fatalf("%+v %v", l, err)
	}
	if _, err := c.LookupFlow(context.Background(), control.FlowQuery{VIP: "web", Src: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), 4000), DstPort: 81}); !errors.Is(err, control.ErrInvalidQuery) || errors.Is(err, control.ErrInvalidConfig) {
		t.Fatalf("bad port: %v", err)
	}
	if _, err := c.LookupFlow(context.Background(), control.FlowQuery{VIP: "x", Src: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), 4000), DstPort: 0}); !errors.Is(err, control.ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
}
