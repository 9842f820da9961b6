package announce

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// ErrRunning is returned by Run while another Run of the same Speaker runs.
var ErrRunning = errors.New("announce: speaker already running")

// shutdownTimeout bounds the withdrawal and session close at the end of Run.
const shutdownTimeout = 5 * time.Second

// retryDelay is how long Run waits before it tries again to bring GoBGP's
// routes in line with Set after an error.
const retryDelay = time.Second

// Speaker announces a set of VIP host routes to BGP peers. See the package
// documentation for its lifetime and behaviour.
type Speaker struct {
	// Immutable after New.
	cfg   Config // defaults applied
	log   *slog.Logger
	paths pathBuilder
	kick  chan struct{} // capacity 1: Set tells Run that want changed

	mu      sync.Mutex // guards the fields below
	want    prefixSet  // what Set asked for; replaced, never modified
	running bool
	srv     *server.BgpServer // the running Run's server, nil outside Run
	peers   map[netip.Addr]*peerState
}

// peerState is what the Speaker tracks of one peer, across Runs. Guarded by
// Speaker.mu.
type peerState struct {
	conf          Peer // immutable
	state         bgp.FSMState
	since         time.Time // when state was entered; zero before the first change
	establishedAt time.Time // zero when not Established
	transitions   uint64
	established   uint64
	resets        uint64
	recreated     uint64
	lastReason    string
	recreating    bool // a re-creation is under way
	deleted       bool // the re-creation deleted the peer from GoBGP
}

// PeerStatus is the state of one peer, for the admin API.
type PeerStatus struct {
	Address netip.Addr `json:"address"`
	ASN     uint32     `json:"asn"`
	// State is the session state: "idle", "connect", "active", "opensent",
	// "openconfirm" or "established".
	State string    `json:"state"`
	Since time.Time `json:"since,omitzero"` // when State was entered
	// Uptime is how long the session has been Established; 0 otherwise.
	Uptime time.Duration `json:"uptime"`
	// Advertised is the number of routes announced on the session (0 when
	// not Established or outside Run).
	Advertised uint64 `json:"advertised"`
	// BFD is the BFD session state ("up", "down", "init", "admin_down"),
	// or "" when BFD is off or unknown.
	BFD string `json:"bfd,omitempty"`
	// Transitions counts session state changes, Established the times the
	// session came up, Resets the times it went down from Established, and
	// Recreated the re-creations of the peer by the stale-Cease workaround.
	Transitions uint64 `json:"transitions"`
	Established uint64 `json:"established"`
	Resets      uint64 `json:"resets"`
	Recreated   uint64 `json:"recreated"`
	// LastReason is why the session last went down from Established.
	LastReason string `json:"last_reason,omitempty"`
}

// New returns a Speaker for c, or c's first problem (a *ConfigError). log
// may be nil (no logging). Nothing is announced before Run.
func New(c Config, log *slog.Logger) (*Speaker, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c = c.withDefaults()
	s := &Speaker{cfg: c, log: log, paths: newPathBuilder(c), kick: make(chan struct{}, 1),
		want: prefixSet{}, peers: map[netip.Addr]*peerState{}}
	for _, p := range c.Peers {
		s.peers[p.Address] = &peerState{conf: p}
	}
	return s, nil
}

// Set replaces the set of announced prefixes with prefixes (duplicates are
// ignored), which must be host routes (/32, /128) of unicast addresses. The
// running Run announces the new ones and withdraws the ones that are gone
// at once; without one, the next Run announces the set. Setting the same
// set again changes nothing. If a prefix cannot be announced Set returns a
// *PrefixError and keeps the previous set. Set may be called from any
// goroutine at any time.
func (s *Speaker) Set(prefixes []netip.Prefix) error {
	routes := make([]Route, len(prefixes))
	for i, p := range prefixes {
		routes[i] = Route{Prefix: p}
	}
	return s.SetRoutes(routes)
}

// SetRoutes is Set with a next hop per route: a route whose NextHop is set
// is announced with it (a third-party next hop), the others with the
// node's own. A route whose next hop changes is announced again, which
// replaces the earlier announcement on the routers (no withdrawal in
// between). The next hop must be of the route's family.
func (s *Speaker) SetRoutes(routes []Route) error {
	want := make(prefixSet, len(routes))
	for i, r := range routes {
		p := r.Prefix
		reason := s.paths.check(p) // with the node's own next hop
		if r.NextHop.IsValid() {
			reason = cmp.Or(s.paths.checkPrefix(p), checkNextHop(p, r.NextHop))
		}
		if reason != "" {
			return &PrefixError{Index: i, Prefix: p, Reason: reason}
		}
		want[p] = r.NextHop
	}
	s.mu.Lock()
	s.want = want
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return nil
}

// Prefixes returns the set last given to Set, sorted.
func (s *Speaker) Prefixes() []netip.Prefix {
	s.mu.Lock()
	want := s.want
	s.mu.Unlock()
	add, _ := diff(nil, want)
	return add
}

// Routes returns the routes last given to SetRoutes (or Set), sorted by
// prefix.
func (s *Speaker) Routes() []Route {
	s.mu.Lock()
	want := s.want
	s.mu.Unlock()
	ps, _ := diff(nil, want)
	out := make([]Route, len(ps))
	for i, p := range ps {
		out[i] = Route{Prefix: p, NextHop: want[p]}
	}
	return out
}

// peerEvent is a session state change reported by GoBGP.
type peerEvent struct {
	addr   netip.Addr
	state  bgp.FSMState
	reason string
	at     time.Time
}

// Run runs the BGP speaker until ctx is done: it starts GoBGP, adds the
// peers, announces what Set asked for and follows later Sets. When ctx is
// done it withdraws every route, closes every session with a Cease
// NOTIFICATION (the routers drop the routes at once), stops GoBGP and
// returns nil. It returns an error if GoBGP cannot be started or a peer
// cannot be added, and ErrRunning if another Run is running.
func (s *Speaker) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return ErrRunning
	}
	s.running = true
	s.mu.Unlock()

	srv, events, stopWatch, err := s.start()
	if err != nil {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
		return err
	}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	s.log.Info("bgp speaker started", "asn", s.cfg.ASN, "router_id", s.cfg.RouterID, "peers", len(s.cfg.Peers))

	have := prefixSet{}
	// Re-creations due: at most one pending per peer, so sends never block.
	recreate := make(chan netip.Addr, len(s.cfg.Peers))
	timers := map[netip.Addr]*time.Timer{}
	schedule := func(addr netip.Addr, after time.Duration) {
		if t := timers[addr]; t != nil {
			t.Stop()
		}
		timers[addr] = time.AfterFunc(after, func() { recreate <- addr })
	}
	retry := time.NewTimer(retryDelay)
	retry.Stop()
	update := func() {
		if err := s.reconcile(srv, have); err != nil {
			s.log.Error("bgp: updating routes failed; retrying", "err", err, "retry_in", retryDelay)
			retry.Reset(retryDelay)
		}
	}
	update()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-s.kick:
			update()
		case <-retry.C:
			update()
		case ev := <-events:
			if s.observe(ev) {
				schedule(ev.addr, RecreateDelay)
			}
		case addr := <-recreate:
			delete(timers, addr)
			if next, again := s.recreateStep(srv, addr); again {
				schedule(addr, next)
			}
		}
	}
	for _, t := range timers {
		t.Stop()
	}
	retry.Stop()
	s.shutdown(srv, have)
	stopWatch()

	s.mu.Lock()
	s.srv = nil
	s.running = false
	now := time.Now()
	for _, ps := range s.peers {
		if ps.state != bgp.BGP_FSM_IDLE {
			ps.transitions++
			ps.state, ps.since = bgp.BGP_FSM_IDLE, now
		}
		if !ps.establishedAt.IsZero() {
			ps.resets++
			ps.lastReason = "speaker stopped"
			ps.establishedAt = time.Time{}
		}
		ps.recreating, ps.deleted = false, false
	}
	s.mu.Unlock()
	s.log.Info("bgp speaker stopped")
	return nil
}

// start starts a GoBGP server with the global configuration, the import
// policy, a peer state watcher and the peers. On error nothing is left
// running.
func (s *Speaker) start() (srv *server.BgpServer, events <-chan peerEvent, stopWatch func(), err error) {
	// GoBGP logs every peer operation at Info and does not filter by the
	// LevelVar it is given (that is only for its SetLogLevel API): filter
	// here. Our own messages cover session changes; GoBGP's Info messages
	// only show when our logger is at Debug.
	level := new(slog.LevelVar)
	level.Set(slog.LevelWarn)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		level.Set(slog.LevelDebug)
	}
	glog := slog.New(minLevel{s.log.Handler(), level}).With("component", "gobgp")
	srv = server.NewBgpServer(server.LoggerOption(glog, level))
	go srv.Serve()
	ctx := context.Background()
	fail := func(err error) (*server.BgpServer, <-chan peerEvent, func(), error) {
		srv.Stop()
		return nil, nil, nil, err
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        s.cfg.ASN,
		RouterId:   s.cfg.RouterID.String(),
		ListenPort: s.cfg.ListenPort,
	}}); err != nil {
		return fail(fmt.Errorf("announce: starting GoBGP: %w", err))
	}
	// Accept only our own routes: the node announces, it does not route.
	// GoBGP applies the global import policy to paths added through AddPath
	// too, so a bare default-reject would reject those as well.
	policy := &api.Policy{Name: "sluice-local-only", Statements: []*api.Statement{{
		Name:       "sluice-accept-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
	}}}
	if err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: policy}); err != nil {
		return fail(fmt.Errorf("announce: adding the import policy: %w", err))
	}
	if err := srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Direction:     api.PolicyDirection_POLICY_DIRECTION_IMPORT,
		Policies:      []*api.Policy{{Name: policy.Name}},
		DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
	}}); err != nil {
		return fail(fmt.Errorf("announce: setting the import policy: %w", err))
	}

	ch := make(chan peerEvent, 64)
	wctx, wcancel := context.WithCancel(context.Background())
	err = srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{
		OnPeerUpdate: func(ev *apiutil.WatchEventMessage_PeerEvent, at time.Time) {
			if ev.Type != apiutil.PEER_EVENT_STATE {
				return
			}
			pe := peerEvent{addr: ev.Peer.State.NeighborAddress, state: ev.Peer.State.SessionState,
				reason: ev.Peer.State.DisconnectMessage, at: at}
			select {
			case ch <- pe:
			case <-wctx.Done():
			}
		},
	}, server.WatchPeer())
	if err != nil {
		wcancel()
		return fail(fmt.Errorf("announce: watching peers: %w", err))
	}
	for _, p := range s.cfg.Peers {
		if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
			wcancel()
			return fail(fmt.Errorf("announce: adding peer %s: %w", p.Address, err))
		}
	}
	return srv, ch, wcancel, nil
}

// apiPeer is GoBGP's configuration of p.
func apiPeer(p Peer) *api.Peer {
	family := func(afi api.Family_Afi) *api.AfiSafi {
		return &api.AfiSafi{Config: &api.AfiSafiConfig{
			Family:  &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST},
			Enabled: true,
		}}
	}
	ap := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:               uint64(p.HoldTime / time.Second),
			KeepaliveInterval:      uint64(p.KeepaliveTime / time.Second),
			ConnectRetry:           uint64(p.ConnectRetry / time.Second),
			IdleHoldTimeAfterReset: uint64(IdleHoldAfterReset / time.Second),
		}},
		Transport: &api.Transport{RemotePort: uint32(p.Port), PassiveMode: p.Passive},
		AfiSafis:  []*api.AfiSafi{family(api.Family_AFI_IP), family(api.Family_AFI_IP6)},
	}
	if b := p.BFD; b != nil {
		ap.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			DesiredMinimumTxInterval: uint32(b.MinTx / time.Microsecond),
			RequiredMinimumReceive:   uint32(b.MinRx / time.Microsecond),
			DetectionMultiplier:      uint32(b.Multiplier),
		}
	}
	return ap
}

// reconcile announces the prefixes Set asked for that are not in have and
// withdraws those of have that it no longer asks for, updating have. It
// returns the first error; what failed stays to do.
func (s *Speaker) reconcile(srv *server.BgpServer, have prefixSet) error {
	s.mu.Lock()
	want := s.want
	s.mu.Unlock()
	add, del := diff(have, want)
	var first error
	for _, p := range add {
		nh := want[p]
		path, err := s.paths.path(p, nh, false)
		if err == nil {
			_, err = srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}})
		}
		if err != nil {
			first = cmp.Or(first, fmt.Errorf("announcing %s: %w", p, err))
			continue
		}
		old, had := have[p]
		have[p] = nh
		switch {
		case had && old != nh:
			s.log.Info("bgp: announced with a new next hop", "prefix", p, "next_hop", nextHopName(nh), "was", nextHopName(old))
		case nh.IsValid():
			s.log.Info("bgp: announced", "prefix", p, "next_hop", nh)
		default:
			s.log.Info("bgp: announced", "prefix", p)
		}
	}
	for _, p := range del {
		path, err := s.paths.path(p, have[p], true)
		if err == nil {
			err = srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{path}})
		}
		if err != nil {
			first = cmp.Or(first, fmt.Errorf("withdrawing %s: %w", p, err))
			continue
		}
		delete(have, p)
		s.log.Info("bgp: withdrawn", "prefix", p)
	}
	return first
}

// nextHopName is nh, or "self" when unset (the node's own next hop).
func nextHopName(nh netip.Addr) string {
	if !nh.IsValid() {
		return "self"
	}
	return nh.String()
}

// observe records a state change and reports whether the peer should be
// re-created (it left Established and no re-creation is scheduled).
func (s *Speaker) observe(ev peerEvent) (recreate bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := s.peers[ev.addr]
	if ps == nil || ps.state == ev.state {
		return false
	}
	from := ps.state
	ps.transitions++
	ps.state, ps.since = ev.state, ev.at
	attrs := []any{"peer", ev.addr, "from", stateName(from), "to", stateName(ev.state)}
	switch {
	case ev.state == bgp.BGP_FSM_ESTABLISHED:
		ps.established++
		ps.establishedAt = ev.at
		s.log.Info("bgp: session established", attrs...)
	case from == bgp.BGP_FSM_ESTABLISHED:
		ps.resets++
		ps.lastReason = ev.reason
		ps.establishedAt = time.Time{}
		s.log.Warn("bgp: session down", append(attrs, "reason", ev.reason)...)
		if !ps.recreating {
			ps.recreating = true
			return true
		}
	default:
		s.log.Debug("bgp: session state", attrs...)
	}
	return false
}

// recreateStep takes the next step of a peer's re-creation (the stale-Cease
// workaround, see the package documentation) and reports whether and when
// the next one is due. First step: unless the session is Established again,
// delete the peer. Second step, once the router's BFD session with the
// deleted peer has had time to expire (bfdQuiet): add it back, or try again
// later if that fails, as nothing else would add it.
func (s *Speaker) recreateStep(srv *server.BgpServer, addr netip.Addr) (next time.Duration, again bool) {
	s.mu.Lock()
	ps := s.peers[addr]
	deleted, up, conf := ps.deleted, ps.state == bgp.BGP_FSM_ESTABLISHED, ps.conf
	if !deleted && up {
		ps.recreating = false
	}
	s.mu.Unlock()
	ctx := context.Background()
	if !deleted {
		if up {
			s.log.Debug("bgp: session is up again; peer not re-created", "peer", addr)
			return 0, false
		}
		if err := srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			s.log.Error("bgp: re-creating peer: delete failed", "peer", addr, "err", err)
		}
		s.mu.Lock()
		ps.deleted = true
		s.mu.Unlock()
		return bfdQuiet(conf), true
	}
	if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(conf)}); err != nil {
		s.log.Error("bgp: re-creating peer: add failed; retrying", "peer", addr, "err", err, "retry_in", retryDelay)
		return retryDelay, true
	}
	s.mu.Lock()
	ps.deleted, ps.recreating = false, false
	ps.recreated++
	n := ps.recreated
	s.mu.Unlock()
	s.log.Warn("bgp: re-created peer after its session went down (GoBGP v4.8.0 stale Cease workaround)",
		"peer", addr, "recreated", n)
	return 0, false
}

// bfdQuiet is how long a re-created peer stays deleted: twice the BFD
// detection time, assuming the router's BFD timers are like ours. When
// GoBGP's BFD session of the deleted peer falls silent, the router's side
// expires, sends a last Down packet with Your Discriminator 0 and (BIRD)
// replaces the session with a new one. A GoBGP BFD peer that exists at that
// moment binds to the dying session and, GoBGP v4.8.0 ignoring the new
// session's packets from then on, stays in Init until it expires and resets
// the BGP session. Without BFD there is nothing to wait for.
func bfdQuiet(p Peer) time.Duration {
	if p.BFD == nil {
		return 0
	}
	return 2 * time.Duration(p.BFD.Multiplier) * max(p.BFD.MinRx, p.BFD.MinTx)
}

// shutdown withdraws every route, closes the sessions with a Cease
// NOTIFICATION and stops srv.
func (s *Speaker) shutdown(srv *server.BgpServer, have prefixSet) {
	if len(have) > 0 {
		if err := srv.DeletePath(apiutil.DeletePathRequest{DeleteAll: true}); err != nil {
			s.log.Error("bgp: withdrawing all routes failed", "err", err)
		} else {
			s.log.Info("bgp: withdrew all routes", "count", len(have))
		}
		clear(have)
	}
	done := make(chan struct{})
	go func() {
		srv.Stop() // StopBgp (Cease "peer de-configured" to each peer), then BFD
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(shutdownTimeout):
		s.log.Error("bgp: GoBGP did not stop in time", "timeout", shutdownTimeout)
	}
}

// Peers returns the state of every configured peer, in Config order.
func (s *Speaker) Peers() []PeerStatus {
	s.mu.Lock()
	srv := s.srv
	now := time.Now()
	out := make([]PeerStatus, len(s.cfg.Peers))
	for i, p := range s.cfg.Peers {
		ps := s.peers[p.Address]
		st := PeerStatus{Address: p.Address, ASN: p.ASN, State: stateName(ps.state), Since: ps.since,
			Transitions: ps.transitions, Established: ps.established, Resets: ps.resets,
			Recreated: ps.recreated, LastReason: ps.lastReason}
		if !ps.establishedAt.IsZero() {
			st.Uptime = now.Sub(ps.establishedAt)
		}
		out[i] = st
	}
	s.mu.Unlock()
	if srv == nil {
		return out
	}
	idx := make(map[string]int, len(out))
	for i, st := range out {
		idx[st.Address.String()] = i
	}
	// Fails harmlessly ("server stopped") if Run is stopping.
	_ = srv.ListPeer(context.Background(), &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		i, ok := idx[p.GetConf().GetNeighborAddress()]
		if !ok {
			return
		}
		for _, af := range p.GetAfiSafis() {
			out[i].Advertised += af.GetState().GetAdvertised()
		}
		if bs := p.GetState().GetBfdState(); bs != nil && p.GetBfd().GetEnabled() {
			out[i].BFD = bfdStateName(bs.GetSessionState())
		}
	})
	return out
}

// minLevel drops the records below its level before its handler sees them.
type minLevel struct {
	slog.Handler
	level slog.Leveler
}

// Enabled implements slog.Handler.
func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level.Level() && h.Handler.Enabled(ctx, l)
}

// WithAttrs implements slog.Handler.
func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(attrs), h.level}
}

// WithGroup implements slog.Handler.
func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}

var _ slog.Handler = minLevel{}

// stateName is the lower-case name of a BGP FSM state.
func stateName(st bgp.FSMState) string {
	switch st {
	case bgp.BGP_FSM_IDLE:
		return "idle"
	case bgp.BGP_FSM_CONNECT:
		return "connect"
	case bgp.BGP_FSM_ACTIVE:
		return "active"
	case bgp.BGP_FSM_OPENSENT:
		return "opensent"
	case bgp.BGP_FSM_OPENCONFIRM:
		return "openconfirm"
	case bgp.BGP_FSM_ESTABLISHED:
		return "established"
	}
	return "state(" + strconv.Itoa(int(st)) + ")"
}

// bfdStateName is the lower-case name of a BFD session state, "" if unset.
func bfdStateName(st api.BfdSessionState) string {
	switch st {
	case api.BfdSessionState_BFD_SESSION_STATE_UP:
		return "up"
	case api.BfdSessionState_BFD_SESSION_STATE_DOWN:
		return "down"
	case api.BfdSessionState_BFD_SESSION_STATE_INIT:
		return "init"
	case api.BfdSessionState_BFD_SESSION_STATE_ADMIN_DOWN:
		return "admin_down"
	}
	return ""
}
