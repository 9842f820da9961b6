package bypass_test

import (
	"fmt"

	"github.com/sluicelb/sluice/internal/bypass"
	"github.com/sluicelb/sluice/internal/config"
)

// A VIP address with two services on one backend is bypassed; another,
// whose second backend is draining, stays on the LB nodes until that
// backend leaves the configuration.
func ExampleDecide() {
	c, err := config.Parse([]byte(`
node:
  interfaces: [eth0]
  bgp: {asn: 65001, router_id: 10.0.0.11, peers: [{address: 10.0.0.1, asn: 65000}]}
vips:
  - {name: web, address: 198.18.0.10, protocol: tcp, port: 443, bypass: single-backend, backends: [{address: 10.0.0.21}]}
  - {name: ssh, address: 198.18.0.10, protocol: tcp, port: 22, bypass: single-backend, backends: [{address: 10.0.0.21}]}
  - {name: api, address: 198.18.0.11, protocol: tcp, port: 443, bypass: single-backend,
     backends: [{address: 10.0.0.22}, {address: 10.0.0.23, state: draining}]}
`))
	if err != nil {
		panic(err)
	}
	for _, d := range bypass.Decide(c, nil) {
		if d.Bypassed {
			fmt.Printf("%s: next hop %s (%s)\n", d.Addr, d.NextHop, d.Reason)
		} else {
			fmt.Printf("%s: through the LB nodes (%s)\n", d.Addr, d.Reason)
		}
	}
	// Output:
	// 198.18.0.10: next hop 10.0.0.21 (one backend in service (10.0.0.21) for web, ssh)
	// 198.18.0.11: through the LB nodes (api has 2 backends in service (10.0.0.22, 10.0.0.23 draining))
}
