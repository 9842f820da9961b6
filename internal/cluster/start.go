package cluster

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"time"
)

// Setup is a node's cluster configuration as the node server holds it
// (`cluster: {bind, peers, key, replicas}`), for Start.
type Setup struct {
	Bind       netip.AddrPort // cluster protocol address (UDP); a specific address, not a wildcard
	GossipBind netip.AddrPort // memberlist address; default: Bind's address, port + 1
	Peers      []string       // memberlist addresses (host:port) of members to join
	Key        []byte         // the cluster key; required
	Seed       uint64         // the cluster hash seed
	Replicas   int            // chain length; default 2
	Shards     int            // default 4096
	Capacity   int            // entries; default 1<<20
	TTL        time.Duration  // an entry's life after its last insert; default DefaultTTL
	Log        io.Writer      // memberlist's log; default discarded
	// ProbeInterval is the membership failure detector's period
	// (GossipConfig.ProbeInterval); 0: DefaultProbeInterval.
	ProbeInterval time.Duration
	// Heartbeat: GossipConfig.Heartbeat (L2 mode).
	Heartbeat time.Duration
	// JoinRetry, when positive, starts the node even if no peer answers
	// (it starts a cluster of its own) and retries joining the peers this
	// often until one answers or Stop: members started in any order find
	// each other. Zero: Start fails when no peer answers.
	JoinRetry time.Duration
}

// Started is a running node with its transport and membership.
type Started struct {
	*Node
	Gossip *Gossip
	tr     *UDPTransport
	cancel context.CancelFunc
	done   chan error
}

// Start binds the cluster socket, joins the peers over memberlist and runs
// the node on its own goroutine until Stop.
func Start(s Setup) (*Started, error) {
	if len(s.Key) == 0 {
		return nil, errors.New("cluster: key: required")
	}
	if !s.Bind.IsValid() || s.Bind.Addr().IsUnspecified() {
		return nil, errors.New("cluster: bind: a specific address and port (the node's identity)")
	}
	tr, err := ListenUDP(s.Bind, 1<<14)
	if err != nil {
		return nil, err
	}
	gb := s.GossipBind
	if !gb.IsValid() {
		gb = netip.AddrPortFrom(tr.LocalAddr().Addr(), tr.LocalAddr().Port()+1)
	}
	gc := GossipConfig{Bind: gb, Cluster: tr.LocalAddr(), Peers: s.Peers, ClusterKey: s.Key, Log: s.Log, ProbeInterval: s.ProbeInterval, Heartbeat: s.Heartbeat}
	g, err := NewGossip(gc)
	if err != nil && s.JoinRetry > 0 && len(s.Peers) > 0 {
		gc.Peers = nil
		g, err = NewGossip(gc)
	}
	if err != nil {
		tr.Close()
		return nil, err
	}
	auth, _ := Keys(s.Key)
	n, err := New(Config{Transport: tr, Membership: g, AuthKey: auth, Seed: s.Seed, Replicas: s.Replicas, Shards: s.Shards, Capacity: s.Capacity, TTL: s.TTL})
	if err != nil {
		g.Shutdown()
		tr.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	st := &Started{Node: n, Gossip: g, tr: tr, cancel: cancel, done: make(chan error, 1)}
	go func() { st.done <- n.Run(ctx) }()
	if s.JoinRetry > 0 && len(s.Peers) > 0 {
		go st.rejoin(ctx, s.Peers, s.JoinRetry)
	}
	return st, nil
}

// Stop leaves the cluster gracefully (the others see it at once, not after
// a failure timeout), stops the node and closes its socket.
func (s *Started) Stop() error {
	s.cancel()
	var err error
	select {
	case err = <-s.done:
	case <-time.After(5 * time.Second):
		err = errors.New("cluster: node did not stop")
	}
	if cerr := s.tr.Close(); err == nil {
		err = cerr
	}
	return err
}

// rejoin keeps the member joined to its configured peers: every period,
// it joins the peers that are not alive in its membership (a push/pull
// with each that answers). At start that is the retry of a member whose
// peers were not up yet; later it heals a partition at once, where
// memberlist alone would wait for its next push/pull (30 s): each side
// learns the other declared it dead, refutes, and both are back in every
// view. A peer that stays down costs one connection attempt per period.
func (s *Started) rejoin(ctx context.Context, peers []string, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		alive := map[string]bool{}
		for _, m := range s.Gossip.ml.Members() {
			alive[m.Address()] = true
		}
		var missing []string
		for _, p := range peers {
			if !alive[p] {
				missing = append(missing, p)
			}
		}
		if len(missing) > 0 {
			s.Gossip.ml.Join(missing) // the ones that answer are joined; the others are tried again
		}
	}
}
