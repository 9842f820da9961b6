package nat_test

import (
	"fmt"
	"net/netip"

	"github.com/sluicelb/sluice/internal/flow"
	"github.com/sluicelb/sluice/internal/nat"
)

// One worker's life of a full-NAT binding: allocate a port when the flow
// starts, find the client's flow from a reply, release when it ends.
func Example() {
	const seed = 42
	layout := nat.DefaultLayout(2) // two workers; this is worker 1
	pool, err := nat.NewPool([]netip.Addr{netip.MustParseAddr("198.18.30.11")}, layout, 1)
	if err != nil {
		panic(err)
	}
	replies := nat.NewReverse(pool.Cap())

	client := flow.MakeKey(6, netip.MustParseAddrPort("203.0.113.7:40000"), netip.MustParseAddrPort("198.18.0.10:443"))
	backend := netip.MustParseAddrPort("198.18.30.101:8080")
	b := backend.Addr().As16()

	addr, port, ok := pool.Allocate(6)
	fmt.Println("port", port, "ok", ok, "owner", layout.Owner(port))
	reply := nat.ReplyKey(6, &b, backend.Port(), pool.Addr(addr), port)
	replies.Insert(&reply, reply.Hash(seed), nat.Binding{Client: client, Backend: 1})

	// A reply arrives: its own 5-tuple finds the client's flow.
	if bd := replies.Lookup(&reply, reply.Hash(seed)); bd != nil {
		fmt.Println("reply for", bd.Client.SrcAddr(), bd.Client.SrcPort)
	}

	// The flow ends.
	fmt.Println(replies.Delete(&reply, reply.Hash(seed)), pool.Release(6, addr, port))
	v, m, _ := layout.SteeringMask(1)
	fmt.Printf("steer dst-port %#04x/%#04x to worker 1\n", v, m)
	// Output:
	// port 1280 ok true owner 1
	// reply for 203.0.113.7 40000
	// true true
	// steer dst-port 0x0100/0x0100 to worker 1
}
