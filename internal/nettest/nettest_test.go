package nettest

import "testing"

func TestVeth(t *testing.T) {
	a, b := New(t, "a"), New(t, "b")
	Veth(t, a, "eth0", "198.18.0.1/24", b, "eth0", "198.18.0.2/24")
	a.Run(t, "ping", "-c1", "-W1", "198.18.0.2")
}
