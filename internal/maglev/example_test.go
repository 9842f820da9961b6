package maglev_test

import (
	"fmt"

	"github.com/sluicelb/sluice/internal/maglev"
)

func ExampleBuild() {
	backends := []maglev.Backend{
		{Name: "198.18.1.10", Weight: 100},
		{Name: "198.18.1.11", Weight: 100},
		{Name: "198.18.1.12", Weight: 50},
	}
	opts := maglev.Options{Seed: 0x5eed} // M = maglev.DefaultM
	t, err := maglev.Build(backends, opts, nil)
	if err != nil {
		panic(err)
	}
	for i, b := range t.Backends() {
		fmt.Printf("%s weight %3d: %d slots\n", b.Name, b.Weight, t.Count(uint16(i)))
	}

	// Drain 198.18.1.11: only its slots move, and each slot remembers its
	// owner in the table it replaces.
	backends[1].Weight = 0
	next, err := maglev.Build(backends, opts, t)
	if err != nil {
		panic(err)
	}
	moved := 0
	for s := range next.M() {
		if next.Owner(s) != next.Previous(s) {
			moved++
		}
	}
	fmt.Printf("after draining: %d slots moved\n", moved)

	owner, previous := next.Slot(0x243f6a8885a308d3) // the flow's 5-tuple hash
	fmt.Println(next.Backend(owner).Name != "198.18.1.11", previous != maglev.NoBackend)
	// Output:
	// 198.18.1.10 weight 100: 26215 slots
	// 198.18.1.11 weight 100: 26215 slots
	// 198.18.1.12 weight  50: 13107 slots
	// after draining: 26215 slots moved
	// true true
}
