package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/scenario"
)

// tenantVTEP is the LB node's VTEP address: in the VIP prefix, so the
// lab's router routes it to the LB nodes like a VIP.
const tenantVTEP = "198.18.0.254"

// tenantClient gives the client a VXLAN device with VNI vni toward the LB's
// VTEP address, the inner addresses addrs (in 10.<vni/100*100>.0.0/24),
// and policy routes that send the VIP from those addresses into the
// device; the router routes the inner prefix back to the client, which
// is how the backends' direct replies (source the VIP) reach it.
func tenantClient(t *testing.T, s *scenario.Scenario, vni int, prefix string, addrs ...string) {
	t.Helper()
	ctx := context.Background()
	c := s.Lab.Client
	dev := fmt.Sprintf("vx%d", vni)
	gw := prefix + ".1"
	cmds := [][]string{
		{"ip", "link", "add", dev, "type", "vxlan", "id", fmt.Sprint(vni), "remote", tenantVTEP, "local", c.Addr4.String(), "dstport", "4789", "nolearning"},
		{"ip", "link", "set", dev, "up"},
		{"ip", "neigh", "replace", gw, "lladdr", fmt.Sprintf("02:00:00:00:%02x:01", vni%256), "dev", dev, "nud", "permanent"},
	}
	for _, a := range addrs {
		cmds = append(cmds, []string{"ip", "addr", "add", a + "/24", "dev", dev})
		cmds = append(cmds, []string{"ip", "rule", "add", "from", a, "table", fmt.Sprint(vni)})
	}
	cmds = append(cmds, []string{"ip", "route", "add", s.Opts.VIP4.String() + "/32", "via", gw, "dev", dev, "table", fmt.Sprint(vni)})
	for _, cmd := range cmds {
		if out, err := c.Run(ctx, cmd[0], cmd[1:]...); err != nil {
			t.Fatalf("%v: %v\n%s", cmd, err, out)
		}
	}
	if out, err := s.Lab.Router.Run(ctx, "ip", "route", "add", prefix+".0/24", "via", c.Addr4.String()); err != nil {
		t.Fatalf("router route to %s.0/24: %v\n%s", prefix, err, out)
	}
}

// curlNames makes n requests from src to the VIP and returns the names of
// the backends that answered (failed requests are absent).
func curlNames(ctx context.Context, s *scenario.Scenario, src string, n int) []string {
	var names []string
	url := "http://" + netip.AddrPortFrom(s.Opts.VIP4, scenario.HTTPPort).String() + "/"
	for range n {
		out, err := s.Lab.Client.Run(ctx, "curl", "-sS", "--max-time", "1", "--interface", src, "-H", "Connection: close", url)
		if name := strings.TrimSpace(out); err == nil && strings.HasPrefix(name, "be") {
			names = append(names, name)
		}
	}
	return names
}

// routerCounter counts, in the router, the GUE packets from src to dst it
// routes, and returns a function that reads the count. The bridge's
// frames pass the same forward hook (br_netfilter): a routed packet is
// told apart by its TTL, which the router decremented from the LB node's
// encap.DefaultTTL.
func routerCounter(t *testing.T, s *scenario.Scenario, src, dst netip.Addr) func() uint64 {
	t.Helper()
	ctx := context.Background()
	rules := fmt.Sprintf("table ip sluicetest {\n chain routed {\n  type filter hook forward priority 0; policy accept;\n  ip saddr %s ip daddr %s ip ttl %d udp dport 6080 counter\n }\n}\n", src, dst, encap.DefaultTTL-1)
	if out, err := s.Lab.Router.Run(ctx, "sh", "-c", "printf '%s' \"$0\" | nft -f -", rules); err != nil {
		t.Fatalf("router nft: %v\n%s", err, out)
	}
	t.Cleanup(func() { s.Lab.Router.Run(context.Background(), "nft", "delete", "table", "ip", "sluicetest") })
	re := regexp.MustCompile(`counter packets (\d+)`)
	return func() uint64 {
		out, err := s.Lab.Router.Run(ctx, "nft", "list", "table", "ip", "sluicetest")
		m := re.FindStringSubmatch(out)
		if err != nil || m == nil {
			t.Fatalf("router nft counter: %v\n%s", err, out)
		}
		n, _ := strconv.ParseUint(m[1], 10, 64)
		return n
	}
}

func count(names []string) map[string]int {
	m := map[string]int{}
	for _, n := range names {
		m[n]++
	}
	return m
}

// Two tenants reach the LB node as VXLAN VNI 100 and 200 and both use the
// VIP address 198.18.0.10 (port 80) for different backends: tenant a's
// clients reach only be1, tenant b's only be2 and be3, and the default
// tenant (plain traffic) all three. A firewall rule denies one client
// address of tenant a (its requests time out, the rule's counter moves)
// while tenant b is untouched. Control run: without the VNI mapping the
// tenants' requests fail.
func TestE2ETenants(t *testing.T) {
	for _, io := range ioModes {
		t.Run(io, func(t *testing.T) {
			s := start(t, scenario.Options{IO: io})
			ctx := context.Background()
			tenantClient(t, s, 100, "10.100.0", "10.100.0.2", "10.100.0.3")
			tenantClient(t, s, 200, "10.200.0", "10.200.0.2")
			const n = 12

			// Control run: no tenants configured.
			if got := curlNames(ctx, s, "10.100.0.2", 2); len(got) != 0 {
				t.Fatalf("without the VNI mapping tenant a's requests were answered: %v", got)
			}

			bes := s.Lab.Backends
			vip := func(name, tenant, fw string, backends ...int) string {
				v := fmt.Sprintf("  - name: %s\n    tenant: %s\n    address: %q\n    protocol: tcp\n    port: %d\n%s    backends:\n", name, tenant, s.Opts.VIP4, scenario.HTTPPort, fw)
				for _, i := range backends {
					v += fmt.Sprintf("      - address: %q\n", bes[i].Addr4)
				}
				return v
			}
			fw := "    firewall:\n      rules:\n        - {name: deny-a3, action: deny, src: 10.100.0.3}\n"
			cfg := strings.Replace(s.Config(), "vips:\n", "tenants:\n  - {name: a, vni: 100}\n  - {name: b, vni: 200}\n"+
				"vxlan: {address: "+tenantVTEP+"}\nvips:\n"+vip("a-web", "a", fw, 0)+vip("b-web", "b", "", 1, 2), 1)
			if err := s.ReloadLB(0, cfg); err != nil {
				t.Fatal(err)
			}
			waitLog(t, s, "reload applied")

			a := count(curlNames(ctx, s, "10.100.0.2", n))
			b := count(curlNames(ctx, s, "10.200.0.2", n))
			def, err := s.Curl(ctx, s.Opts.VIP4, n)
			if err != nil {
				t.Fatalf("default tenant: %v", err)
			}
			t.Logf("tenant a: %v; tenant b: %v; default tenant: %v", a, b, count(def))
			if a["be1"] != n || len(a) != 1 {
				t.Errorf("tenant a: %v, want all %d on be1", a, n)
			}
			if b["be2"]+b["be3"] != n || b["be1"] != 0 {
				t.Errorf("tenant b: %v, want all %d on be2 and be3", b, n)
			}
			if len(count(def)) < 2 {
				t.Errorf("default tenant: %v, want its three backends", count(def))
			}

			// The firewall of tenant a's VIP denies one of its clients.
			series := `sluice_firewall_rule_hits_total{rule="deny-a3",vip="a-web"}`
			if got := curlNames(ctx, s, "10.100.0.3", 4); len(got) != 0 {
				t.Fatalf("denied client of tenant a was answered: %v", got)
			}
			if h := metric(t, s, series); h < 4 {
				t.Errorf("%s = %v, want >= 4", series, h)
			}
			if got := count(curlNames(ctx, s, "10.200.0.2", 4)); got["be2"]+got["be3"] != 4 {
				t.Errorf("tenant b after tenant a's denials: %v", got)
			}
			tr, err := s.Lab.LBs[0].Run(ctx, sluiceBin, "ctl", "flow", "trace", "--tenant", "a", "tcp", "10.100.0.3:40000", netip.AddrPortFrom(s.Opts.VIP4, scenario.HTTPPort).String())
			if err != nil || !strings.Contains(tr, "deny by rule deny-a3") || !strings.Contains(tr, "service a-web") {
				t.Errorf("flow trace in tenant a: %v\n%s", err, tr)
			}

			// The route stage: a route of tenant b sends what the node
			// sends to be2 through the router instead of on-link, and only
			// tenant b's: tenant a and the default tenant reach be1..be3
			// on-link. The router's forward counter of GUE from lb1 to be2
			// counts what it routed; control: 0 before the route.
			lb, be2, gw := s.Lab.LBs[0].Addr4, bes[1].Addr4, s.Lab.LBs[0].Gateway4
			routed := routerCounter(t, s, lb, be2)
			if got := count(curlNames(ctx, s, "10.200.0.2", n)); got["be2"] == 0 || routed() != 0 {
				t.Fatalf("control: tenant b %v, %d packets routed by the router to be2 without the route", got, routed())
			}
			cfg = strings.Replace(cfg, "  - {name: b, vni: 200}\n", fmt.Sprintf("  - {name: b, vni: 200, routes: [{prefix: %s/32, via: %s}]}\n", be2, gw), 1)
			if err := s.ReloadLB(0, cfg); err != nil {
				t.Fatal(err)
			}
			waitLogCount(t, s, "reload applied", 2)
			b = count(curlNames(ctx, s, "10.200.0.2", n))
			viaRouter := routed()
			def, err = s.Curl(ctx, s.Opts.VIP4, n)
			if err != nil {
				t.Fatalf("default tenant after the route: %v", err)
			}
			t.Logf("with tenant b's route to be2 via %s: tenant b %v, %d packets to be2 routed by the router; then the default tenant %v and %d", gw, b, viaRouter, count(def), routed())
			if b["be2"]+b["be3"] != n || b["be2"] == 0 {
				t.Errorf("tenant b with its route: %v, want all %d on be2 and be3", b, n)
			}
			if viaRouter < uint64(3*b["be2"]) { // a request is at least 3 packets to the backend
				t.Errorf("%d packets to be2 routed by the router for %d requests", viaRouter, b["be2"])
			}
			if d := count(def); d["be2"] == 0 || routed() != viaRouter {
				t.Errorf("default tenant %v moved the router's counter from %d to %d: another tenant's route applied", d, viaRouter, routed())
			}
			var trace string
			for port := 40000; port < 40064 && !strings.Contains(trace, "be2") && !strings.Contains(trace, be2.String()); port++ {
				trace, _ = s.Lab.LBs[0].Run(ctx, sluiceBin, "ctl", "flow", "trace", "--tenant", "b", "tcp", fmt.Sprintf("10.200.0.2:%d", port), netip.AddrPortFrom(s.Opts.VIP4, scenario.HTTPPort).String())
			}
			if want := fmt.Sprintf("next hop by route %s/32 via %s", be2, gw); !strings.Contains(trace, want) {
				t.Errorf("trace of a tenant b flow to be2 lacks %q:\n%s", want, trace)
			}
		})
	}
}
