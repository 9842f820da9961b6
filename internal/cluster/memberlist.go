package cluster

import (
	"encoding/binary"
	"io"
	"log"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// GossipConfig configures the memberlist (SWIM) membership.
type GossipConfig struct {
	Name       string         // unique node name; default: the cluster address
	Bind       netip.AddrPort // gossip address (UDP and TCP)
	Cluster    netip.AddrPort // this node's cluster protocol address, gossiped as metadata
	Peers      []string       // host:port of members to join; none: start a new cluster
	ClusterKey []byte         // the configured cluster key (Keys derives the AES key)
	Log        io.Writer      // memberlist's log; default: discarded
	// ProbeInterval is the failure detector's period (TuneLAN); 0: 200 ms.
	ProbeInterval time.Duration
	// Heartbeat, when positive, makes the member send every other member a
	// heartbeat this often (a memberlist user message, encrypted like the
	// rest) naming the members it heard from lately, so that Mutual tells
	// which members it and they hear both ways (heartbeat.go).
	Heartbeat time.Duration
}

// Gossip is the Membership backed by hashicorp/memberlist, tuned for
// sub-second failure detection on a LAN (probe every 200 ms, 100 ms probe
// timeout, gossip every 50 ms, suspicion multiplier 2: a killed node was
// declared dead in 0.6-1.0 s on the project's machine) and encrypted with a
// key derived from the cluster key. A member's cluster address travels as its
// metadata (18 bytes: address, port).
type Gossip struct {
	ml    *memberlist.Memberlist
	views chan []netip.AddrPort

	mu      sync.Mutex // guards members; held in memberlist's callbacks
	members map[string]netip.AddrPort

	self netip.AddrPort // this member's cluster address
	hb   time.Duration  // heartbeat period; 0: none
	hbMu sync.Mutex     // guards heard
	// heard: per member (cluster address), when its last heartbeat
	// arrived and whether it named this member among those it hears.
	heard map[netip.AddrPort]heardFrom
	stop  chan struct{}
	once  sync.Once
}

var _ Membership = (*Gossip)(nil)

// DefaultProbeInterval is the failure detector's default period.
const DefaultProbeInterval = 200 * time.Millisecond

// TuneLAN sets memberlist's timers for sub-second detection on a LAN.
func TuneLAN(c *memberlist.Config) { TuneProbe(c, DefaultProbeInterval) }

// TuneProbe sets memberlist's timers from the probe interval p: probe
// timeout p/2, gossip every p/4, suspicion multiplier 2. A killed member
// is declared dead about 3 p to 5 p after it died (0.6-1.0 s at 200 ms).
func TuneProbe(c *memberlist.Config, p time.Duration) {
	c.ProbeInterval = p
	c.ProbeTimeout = p / 2
	c.GossipInterval = p / 4
	c.SuspicionMult = 2
}

// NewGossip starts memberlist and joins the peers.
func NewGossip(cfg GossipConfig) (*Gossip, error) {
	g := &Gossip{views: make(chan []netip.AddrPort, 1), members: map[string]netip.AddrPort{},
		heard: map[netip.AddrPort]heardFrom{}, stop: make(chan struct{})}
	c := memberlist.DefaultLANConfig()
	TuneLAN(c)
	if cfg.ProbeInterval > 0 {
		TuneProbe(c, cfg.ProbeInterval)
	}
	c.Name = cfg.Name
	if c.Name == "" {
		c.Name = cfg.Cluster.String()
	}
	c.BindAddr = cfg.Bind.Addr().String()
	c.BindPort = int(cfg.Bind.Port())
	c.AdvertiseAddr = c.BindAddr
	c.AdvertisePort = c.BindPort
	_, gossipKey := Keys(cfg.ClusterKey)
	c.SecretKey = gossipKey[:]
	c.GossipVerifyIncoming, c.GossipVerifyOutgoing = true, true
	w := cfg.Log
	if w == nil {
		w = io.Discard
	}
	c.Logger = log.New(w, "memberlist: ", log.LstdFlags)
	c.Delegate = &delegate{meta: encodeMeta(cfg.Cluster), g: g}
	g.self = cfg.Cluster
	g.hb = cfg.Heartbeat
	c.Events = g
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, err
	}
	g.ml = ml
	if len(cfg.Peers) > 0 {
		if _, err := ml.Join(cfg.Peers); err != nil {
			_ = ml.Shutdown()
			return nil, err
		}
	}
	if g.hb > 0 {
		go g.heartbeats()
	}
	return g, nil
}

func encodeMeta(a netip.AddrPort) []byte {
	b := make([]byte, 18)
	a16 := a.Addr().As16()
	copy(b, a16[:])
	binary.BigEndian.PutUint16(b[16:], a.Port())
	return b
}

func decodeMeta(b []byte) (netip.AddrPort, bool) {
	if len(b) != 18 {
		return netip.AddrPort{}, false
	}
	var a [16]byte
	copy(a[:], b)
	return netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), binary.BigEndian.Uint16(b[16:])), true
}

// delegate gives memberlist the node's metadata and hands it heartbeats.
type delegate struct {
	meta []byte
	g    *Gossip
}

func (d *delegate) NodeMeta(int) []byte               { return d.meta }
func (d *delegate) NotifyMsg(b []byte)                { d.g.onHeartbeat(b) }
func (*delegate) GetBroadcasts(int, int) [][]byte     { return nil }
func (*delegate) LocalState(bool) []byte              { return nil }
func (*delegate) MergeRemoteState(buf []byte, _ bool) {}

// NotifyJoin implements memberlist.EventDelegate.
func (g *Gossip) NotifyJoin(n *memberlist.Node) { g.set(n.Name, n.Meta, true) }

// NotifyUpdate implements memberlist.EventDelegate.
func (g *Gossip) NotifyUpdate(n *memberlist.Node) { g.set(n.Name, n.Meta, true) }

// NotifyLeave implements memberlist.EventDelegate.
func (g *Gossip) NotifyLeave(n *memberlist.Node) { g.set(n.Name, nil, false) }

func (g *Gossip) set(name string, meta []byte, alive bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if a, ok := decodeMeta(meta); alive && ok {
		g.members[name] = a
	} else {
		delete(g.members, name)
	}
	v := make([]netip.AddrPort, 0, len(g.members))
	for _, a := range g.members {
		v = append(v, a)
	}
	slices.SortFunc(v, func(a, b netip.AddrPort) int { return a.Compare(b) })
	publish(g.views, slices.Compact(v))
}

// Views implements Membership.
func (g *Gossip) Views() <-chan []netip.AddrPort { return g.views }

// Leave implements Membership: it tells the others and stops.
func (g *Gossip) Leave(timeout time.Duration) error {
	g.stopHeartbeats()
	err := g.ml.Leave(timeout)
	if serr := g.ml.Shutdown(); err == nil {
		err = serr
	}
	return err
}

// Shutdown implements Membership: it stops without telling anyone (the
// others detect a failure).
func (g *Gossip) Shutdown() error { g.stopHeartbeats(); return g.ml.Shutdown() }

// NumMembers returns memberlist's count of live members.
func (g *Gossip) NumMembers() int { return g.ml.NumMembers() }

// String returns a short description for logs.
func (g *Gossip) String() string { return "gossip(" + strconv.Itoa(g.ml.NumMembers()) + " members)" }
