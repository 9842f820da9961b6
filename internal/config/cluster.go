package config

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"time"
)

// Cluster makes the LB node a member of a cluster of LB nodes sharing flow
// state along owner chains (internal/cluster). Every member must have the
// same key, replicas, shards and node.seed (the protocol authenticates
// them: a member configured differently cannot talk to the others).
type Cluster struct {
	// Bind is the node's cluster protocol address (UDP IP:port), a
	// specific address: its identity in the cluster. Membership
	// (memberlist, UDP and TCP) listens on the same address, port + 1,
	// and the relay of fragments across nodes (GUE over UDP) on port + 2.
	Bind string `yaml:"bind"`
	// Peers are the other members' bind addresses (IP:port); the node
	// joins through any of them that answers and keeps trying while none
	// does. Empty: the node starts a cluster others join.
	Peers []string `yaml:"peers"`
	// Key is the cluster key (at least 16 characters), identical on every
	// member: it authenticates the protocol and encrypts membership.
	Key      string `yaml:"key"`
	Replicas int    `yaml:"replicas"` // chain length; default 2 (1-16)
	Shards   int    `yaml:"shards"`   // default 4096 (1-65536)
	// Capacity is the number of flow entries the node holds for its
	// chains; default 1048576.
	Capacity int `yaml:"capacity"`
	// AskTimeout is how long a worker holds a flow's packets for its
	// chain's answer before it decides locally; default 100ms (5ms-2s).
	// Raise it on a cluster network whose round trips are longer.
	AskTimeout time.Duration `yaml:"ask_timeout,omitempty"`
	// TTL is how long a chain entry lives after its last insert; every
	// live chained flow is published again within TTL/3. Default 2m
	// (30s-1h).
	TTL time.Duration `yaml:"ttl,omitempty"`
	// ProbeInterval is the membership failure detector's period (probe
	// timeout half of it, gossip a quarter): a killed member is out of the
	// others' views 3 to 5 intervals after it died. Default 200ms; every
	// member should use the same.
	ProbeInterval time.Duration `yaml:"probe_interval,omitempty"`
}

// Cluster defaults.
const (
	DefaultClusterReplicas = 2
	DefaultClusterShards   = 4096
	DefaultClusterCapacity = 1 << 20
	// DefaultClusterAskTimeout and DefaultClusterTTL: see Cluster.
	DefaultClusterAskTimeout = 100 * time.Millisecond
	DefaultClusterTTL        = 2 * time.Minute
	// DefaultClusterProbeInterval is cluster.DefaultProbeInterval.
	DefaultClusterProbeInterval = 200 * time.Millisecond
)

// GossipAddr is the memberlist address of a member whose bind address is
// bind: the same address, port + 1.
func GossipAddr(bind netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(bind.Addr(), bind.Port()+1)
}

// RelayAddr is the fragment relay address of a member whose bind address
// is bind: the same address, port + 2. The member that owns a datagram's
// fragments receives there, GUE-encapsulated, the later fragments other
// nodes could not match, and the decisions of its first fragments.
func RelayAddr(bind netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(bind.Addr(), bind.Port()+2)
}

// ServiceID is the cluster's number for a VIP: a hash of its name, the same
// on every node whatever the order of the VIPs in their configurations.
// Validate rejects two VIPs of one configuration with the same ID.
func ServiceID(vip string) uint16 {
	h := fnv.New32a()
	h.Write([]byte(vip))
	s := h.Sum32()
	return uint16(s>>16) ^ uint16(s)
}

// BackendID is the cluster's number for a backend of a VIP: a hash of the
// VIP's name and the backend's address (the same on every node).
func BackendID(vip, backend string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(vip))
	h.Write([]byte{0})
	if a, err := netip.ParseAddr(backend); err == nil {
		backend = a.String() // one spelling per address
	}
	h.Write([]byte(backend))
	return h.Sum32()
}

func (c *Cluster) setDefaults() {
	if len(c.Peers) == 0 {
		// One spelling of "no peers" (the YAML of a running configuration
		// says peers: []), so that a document read back compares equal
		// to the running one (NeedsRestart).
		c.Peers = nil
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultClusterReplicas
	}
	if c.Shards == 0 {
		c.Shards = DefaultClusterShards
	}
	if c.Capacity == 0 {
		c.Capacity = DefaultClusterCapacity
	}
	if c.AskTimeout == 0 {
		c.AskTimeout = DefaultClusterAskTimeout
	}
	if c.TTL == 0 {
		c.TTL = DefaultClusterTTL
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultClusterProbeInterval
	}
}

func validateCluster(c *Config, bad func(path string, value any, reason string)) {
	cl := c.Node.Cluster
	if cl == nil {
		return
	}
	bind, err := netip.ParseAddrPort(cl.Bind)
	switch {
	case err != nil:
		bad("node.cluster.bind", fmt.Sprintf("%q", cl.Bind), "is not IP:port")
	case bind.Addr().IsUnspecified() || bind.Addr().IsMulticast() || bind.Addr().Zone() != "":
		bad("node.cluster.bind", cl.Bind, "is not a specific unicast address (the node's identity in the cluster)")
	case bind.Port() == 0 || bind.Port() > 65533:
		bad("node.cluster.bind", cl.Bind, "needs a port between 1 and 65533 (membership listens on port + 1, the fragment relay on port + 2)")
	}
	seen := map[netip.AddrPort]int{}
	for i, p := range cl.Peers {
		pp := fmt.Sprintf("node.cluster.peers[%d]", i)
		a, err := netip.ParseAddrPort(p)
		switch {
		case err != nil || a.Addr().IsUnspecified() || a.Port() == 0 || a.Port() > 65533:
			bad(pp, fmt.Sprintf("%q", p), "is not a member's bind address (IP:port)")
		case a == bind:
			bad(pp, p, "is this node's own bind address")
		default:
			if j, dup := seen[a]; dup {
				bad(pp, p, fmt.Sprintf("is also peers[%d]", j))
			}
			seen[a] = i
		}
	}
	if len(cl.Key) < 16 {
		bad("node.cluster.key", nil, "must be at least 16 characters (and identical on every member)")
	}
	if cl.AskTimeout < 5*time.Millisecond || cl.AskTimeout > 2*time.Second {
		bad("node.cluster.ask_timeout", cl.AskTimeout, "is not between 5ms and 2s")
	}
	if cl.TTL < 30*time.Second || cl.TTL > time.Hour {
		bad("node.cluster.ttl", cl.TTL, "is not between 30s and 1h")
	}
	if cl.Replicas < 1 || cl.Replicas > 16 {
		bad("node.cluster.replicas", cl.Replicas, "is not between 1 and 16")
	}
	if cl.Shards < 1 || cl.Shards > 1<<16 {
		bad("node.cluster.shards", cl.Shards, "is not between 1 and 65536")
	}
	if p := cl.ProbeInterval; p != 0 && (p < 20*time.Millisecond || p > 10*time.Second) {
		bad("node.cluster.probe_interval", cl.ProbeInterval, "is not between 20ms and 10s")
	}
	if cl.Capacity < 1 || cl.Capacity > 1<<28 {
		bad("node.cluster.capacity", cl.Capacity, "is not between 1 and 268435456")
	}
	ids := map[uint16]int{}
	for i, v := range c.VIPs {
		if v.Name == "" {
			continue
		}
		id := ServiceID(v.Name)
		if j, dup := ids[id]; dup && c.VIPs[j].Name != v.Name {
			bad(fmt.Sprintf("vips[%d].name", i), v.Name, fmt.Sprintf("has the cluster service ID of vips[%d] (%s): rename one", j, c.VIPs[j].Name))
		}
		ids[id] = i
	}
}
