package e2e

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/quiclb"
	"github.com/sluicelb/sluice/internal/scenario"
)

const (
	quicClients = 30
	// quicAltEvery: every quicAltEvery-th client also moves to the
	// client's second address.
	quicAltEvery = 3
	// quicLines are the lines each client exchanges on its one stream per
	// path, quicGap apart.
	quicLines = 3
	quicGap   = 50 * time.Millisecond
)

// QUIC clients through a VIP served by three LB nodes (ECMP by 4-tuple on
// the router) to QUIC servers that issue QUIC-LB connection IDs. In the
// middle of its stream every client migrates to a new local port (quic-go
// AddPath, Probe, Switch), and every third then to a second client address:
// each move is a new 4-tuple, which ECMP may hand to another LB node and
// the 4-tuple's Maglev slot to another server. Routed by connection ID
// every connection completes with the server that began it, and that
// server sees the client's new address. The control run routes the same
// VIP by 4-tuple (the servers still issue QUIC-LB IDs) and must lose
// connections: the test can fail.
func TestE2EQUICMigration(t *testing.T) {
	t.Run("by-cid", func(t *testing.T) {
		s, r := quicMigrationRun(t, false)
		t.Logf("by connection ID: %s", r)
		if r.lost != 0 || r.completed != quicClients || r.sameServer != quicClients {
			for _, e := range r.errs {
				t.Error(e)
			}
			t.Fatalf("%d of %d connections lost", r.lost, quicClients)
		}
		if r.migrated != quicClients || r.movedAddr != (quicClients+quicAltEvery-1)/quicAltEvery {
			t.Errorf("%d connections migrated, %d to the second address", r.migrated, r.movedAddr)
		}
		if len(r.perServer) < 2 {
			t.Errorf("handshakes reached only %v", r.perServer)
		}
		quicCtlDecode(t, s)
		// The LB nodes' counters at exit: handshakes by DCID hash, the
		// rest by connection ID, nothing by the 4-tuple fallback; and more
		// than one node carried the VIP (migrations crossed nodes). (A
		// client's random Initial DCID sometimes decodes to a server ID
		// no backend has: counted as unknown, routed by its hash.)
		rep := lbReport(s)
		routes := regexp.MustCompile(`quic routed by cid (\d+)  dcid_hash (\d+)  tuple (\d+)  unknown server id (\d+)`).FindAllStringSubmatch(rep, -1)
		var cid, hash, tuple, unknown int
		for _, m := range routes {
			n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
			cid, hash, tuple, unknown = cid+n(1), hash+n(2), tuple+n(3), unknown+n(4)
		}
		t.Logf("LB nodes: %d of 3 routed QUIC packets: by cid %d, by dcid hash %d, by 4-tuple %d, unknown server ID %d", len(routes), cid, hash, tuple, unknown)
		if cid == 0 || hash == 0 || tuple != 0 || len(routes) < 2 {
			t.Errorf("LB counters do not show routing by connection ID:\n%s", rep)
		}
	})
	t.Run("control-by-tuple", func(t *testing.T) {
		_, r := quicMigrationRun(t, true)
		t.Logf("control, by 4-tuple: %s", r)
		if r.lost == 0 {
			t.Fatalf("all %d connections survived their migrations with 4-tuple routing: the test cannot fail", quicClients)
		}
		for i, e := range r.errs {
			if i < 3 {
				t.Logf("lost: %s", e)
			}
		}
	})
}

// quicResult counts what happened to the clients' connections.
type quicResult struct {
	completed  int // every line answered
	migrated   int // moved to a new port and kept talking
	movedAddr  int // also moved to the second address and kept talking
	sameServer int // completed, every answer from the server that answered first
	lost       int // failed, or answered by another server
	perServer  map[string]int
	errs       []string
}

func (r quicResult) String() string {
	return fmt.Sprintf("%d connections: %d completed on the server that began them, %d lost; %d migrated to a new port, %d of them then to a second address; first servers %v",
		quicClients, r.sameServer, r.lost, r.migrated, r.movedAddr, r.perServer)
}

// quicMigrationRun starts the three-node scenario with the QUIC service
// (routed by 4-tuple with byTuple) and runs the clients.
func quicMigrationRun(t *testing.T, byTuple bool) (*scenario.Scenario, quicResult) {
	t.Helper()
	s := start(t, scenario.Options{IO: "afxdp", LBs: 3, QUIC: true, QUICByTuple: byTuple})
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	// The client's second address, on the same segment.
	alt := s.Lab.Client.Addr4.Next()
	if out, err := s.Lab.Client.Run(ctx, "ip", "addr", "add", alt.String()+"/24", "dev", "eth0"); err != nil {
		t.Fatalf("second client address: %v\n%s", err, out)
	}
	vip := netip.AddrPortFrom(s.Opts.VIP4, scenario.QUICPort)
	quicWaitReady(t, ctx, s, vip)

	r := quicResult{perServer: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range quicClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Stagger the starts over half a second.
			time.Sleep(time.Duration(i) * 500 * time.Millisecond / quicClients)
			o := quicClient(ctx, s, i, vip, alt, i%quicAltEvery == 0)
			mu.Lock()
			defer mu.Unlock()
			if o.first != "" {
				r.perServer[o.first]++
			}
			if o.moves >= 1 {
				r.migrated++
			}
			if o.moves >= 2 {
				r.movedAddr++
			}
			if o.err != nil {
				r.lost++
				r.errs = append(r.errs, fmt.Sprintf("client %d (first server %s, %d moves): %v", i, o.first, o.moves, o.err))
				return
			}
			r.completed++
			r.sameServer++
		}()
	}
	wg.Wait()
	return s, r
}

// quicWaitReady waits until a QUIC connection through the VIP answers.
func quicWaitReady(t *testing.T, ctx context.Context, s *scenario.Scenario, vip netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := s.Lab.Client.Do(func() error {
			dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			conn, err := quic.DialAddr(dctx, vip.String(), lab.QUICClientTLS(), &quic.Config{DisablePathMTUDiscovery: true})
			if err != nil {
				return err
			}
			defer conn.CloseWithError(0, "")
			str, err := conn.OpenStreamSync(dctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(str, "ready?\n")
			_, err = bufio.NewReader(str).ReadString('\n')
			return err
		})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no QUIC answer through %v: %v", vip, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// quicOutcome is one client's connection.
type quicOutcome struct {
	first string // the server that answered first
	moves int    // migrations after which the connection kept talking
	err   error  // why the connection was lost; nil: it completed on first
}

// quicClient opens a connection to vip from a new port of the client's
// address, exchanges lines on one stream, migrates to a new port and (with
// toAlt) then to a new port of address alt, exchanging lines after each
// move, and checks every answer comes from the first server and names the
// client's current address.
func quicClient(ctx context.Context, s *scenario.Scenario, i int, vip netip.AddrPort, alt netip.Addr, toAlt bool) (o quicOutcome) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// listen opens a UDP socket on a new port of addr in the client's
	// namespace, with its quic-go Transport (closed when the client is
	// done: closing one earlier would end the connection dialled on it).
	var trs []*quic.Transport
	defer func() {
		for _, tr := range trs {
			tr.Close()
		}
	}()
	listen := func(addr netip.Addr) (*quic.Transport, netip.AddrPort, error) {
		var c *net.UDPConn
		err := s.Lab.Client.Do(func() error {
			var err error
			c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
			return err
		})
		if err != nil {
			return nil, netip.AddrPort{}, err
		}
		tr := &quic.Transport{Conn: c}
		trs = append(trs, tr)
		return tr, c.LocalAddr().(*net.UDPAddr).AddrPort(), nil
	}

	tr, local, err := listen(s.Lab.Client.Addr4)
	if err != nil {
		return quicOutcome{err: err}
	}
	conf := &quic.Config{HandshakeIdleTimeout: 5 * time.Second, MaxIdleTimeout: 10 * time.Second, DisablePathMTUDiscovery: true}
	conn, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(vip), lab.QUICClientTLS(), conf)
	if err != nil {
		return quicOutcome{err: fmt.Errorf("dial: %w", err)}
	}
	defer conn.CloseWithError(0, "done")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return quicOutcome{err: fmt.Errorf("open stream: %w", err)}
	}
	rd := bufio.NewReader(str)
	var prev netip.AddrPort // the client's address before the last move
	// talk exchanges quicLines lines and checks the answers: all from the
	// first server, which sees the client's current address by the last
	// line (after a move to another address it validates the new path
	// before it moves its side of the connection there, RFC 9000 §9.3, so
	// the first answers may still name the previous one).
	talk := func(phase string) error {
		for n := range quicLines {
			line := fmt.Sprintf("client%d-%s-%d", i, phase, n)
			str.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := fmt.Fprintf(str, "%s\n", line); err != nil {
				return fmt.Errorf("%s: write: %w", phase, err)
			}
			reply, err := rd.ReadString('\n')
			if err != nil {
				return fmt.Errorf("%s: read: %w", phase, err)
			}
			name, client, got, ok := lab.ParseQUICEcho(reply)
			switch {
			case !ok || got != line:
				return fmt.Errorf("%s: reply %q to %q", phase, reply, line)
			case o.first == "":
				o.first = name
			case name != o.first:
				return fmt.Errorf("%s: answered by %s, the connection began on %s", phase, name, o.first)
			}
			if client != local.String() && (n == quicLines-1 || client != prev.String()) {
				return fmt.Errorf("%s: %s sees the client at %s, it is at %s", phase, name, client, local)
			}
			time.Sleep(quicGap)
		}
		return nil
	}
	move := func(phase string, addr netip.Addr) error {
		tr, next, err := listen(addr)
		if err != nil {
			return fmt.Errorf("%s: %w", phase, err)
		}
		p, err := conn.AddPath(tr)
		if err != nil {
			return fmt.Errorf("%s: add path: %w", phase, err)
		}
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if err := p.Probe(pctx); err != nil {
			return fmt.Errorf("%s: probe %v: %w", phase, next, err)
		}
		if err := p.Switch(); err != nil {
			return fmt.Errorf("%s: switch to %v: %w", phase, next, err)
		}
		prev, local = local, next
		return talk(phase)
	}
	if err := talk("start"); err != nil {
		o.err = err
		return o
	}
	if err := move("new-port", s.Lab.Client.Addr4); err != nil {
		o.err = err
		return o
	}
	o.moves++
	if toAlt {
		if err := move("new-address", alt); err != nil {
			o.err = err
			return o
		}
		o.moves++
	}
	str.Close()
	return o
}

// quicCtlDecode asks an LB node, through `sluice ctl quic decode`, which
// backend a connection ID of backend 2 routes to, and decodes one offline.
func quicCtlDecode(t *testing.T, s *scenario.Scenario) {
	t.Helper()
	key, _ := hex.DecodeString(scenario.QUICKey)
	codec, err := quiclb.New(quiclb.Config{Rotation: scenario.QUICRotation, ServerIDLen: scenario.QUICServerIDLen, NonceLen: scenario.QUICNonceLen, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	sid, _ := hex.DecodeString(scenario.QUICServerID(2))
	cid, _ := codec.Encode(nil, sid, []byte{1, 2, 3, 4, 5, 6})
	cidHex := hex.EncodeToString(cid)
	want := fmt.Sprintf("config_rotation=%d server_id=%s nonce=010203040506", scenario.QUICRotation, scenario.QUICServerID(2))
	ctx := t.Context()
	out, err := s.Lab.LBs[1].Run(ctx, sluiceBin, "ctl", "quic", "decode", "--vip", "quic4", cidHex)
	if err != nil || strings.TrimSpace(out) != want+" backend="+s.Lab.Backends[1].Addr4.String() {
		t.Errorf("ctl quic decode --vip quic4 %s: %v\n%s", cidHex, err, out)
	}
	out, err = s.Lab.LBs[1].Run(ctx, sluiceBin, "ctl", "quic", "decode", "--sid-len", "2", "--nonce-len", "6", "--key", scenario.QUICKey, cidHex)
	if err != nil || strings.TrimSpace(out) != want {
		t.Errorf("ctl quic decode offline %s: %v\n%s", cidHex, err, out)
	}
	if out, err := s.Lab.LBs[1].Run(ctx, sluiceBin, "ctl", "quic", "decode", "--vip", "quic4", "ff"+cidHex[2:]); err == nil || !strings.Contains(out, "unroutable") {
		t.Errorf("ctl quic decode of an unroutable ID: %v\n%s", err, out)
	}
}
