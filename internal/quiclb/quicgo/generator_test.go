package quicgo

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/sluicelb/sluice/internal/quiclb"
)

var testKey = []byte("sluice-quiclb-k!") // 16 octets

// testConfigs cover each mode, with and without length self-encoding.
var testConfigs = []struct {
	name string
	cfg  quiclb.Config
}{
	{"plaintext", quiclb.Config{Rotation: 1, ServerIDLen: 2, NonceLen: 6, LenSelfEncoded: true}},
	{"single-pass", quiclb.Config{Rotation: 3, ServerIDLen: 4, NonceLen: 12, Key: testKey}},
	{"four-pass", quiclb.Config{Rotation: 0, ServerIDLen: 3, NonceLen: 4, Key: testKey, LenSelfEncoded: true}},
	{"four-pass-long-nonce", quiclb.Config{Rotation: 6, ServerIDLen: 5, NonceLen: 14, Key: testKey}},
}

func newGenerator(t *testing.T, cfg quiclb.Config) (*Generator, *quiclb.Codec, quiclb.ServerID) {
	t.Helper()
	codec, err := quiclb.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sid := make([]byte, cfg.ServerIDLen)
	rand.Read(sid)
	serverID, err := quiclb.NewServerID(sid)
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGenerator(codec, serverID)
	if err != nil {
		t.Fatal(err)
	}
	return g, codec, serverID
}

func TestGenerator(t *testing.T) {
	for _, tc := range testConfigs {
		t.Run(tc.name, func(t *testing.T) {
			g, codec, serverID := newGenerator(t, tc.cfg)
			if g.ConnectionIDLen() != tc.cfg.CIDLen() {
				t.Fatalf("ConnectionIDLen = %d, want %d", g.ConnectionIDLen(), tc.cfg.CIDLen())
			}
			seen := map[quic.ConnectionID]bool{}
			for range 5000 {
				id, err := g.GenerateConnectionID()
				if err != nil {
					t.Fatal(err)
				}
				if id.Len() != g.ConnectionIDLen() {
					t.Fatalf("CID %v has length %d", id, id.Len())
				}
				if seen[id] {
					t.Fatalf("CID %v issued twice", id)
				}
				seen[id] = true
				got, err := codec.DecodeServerID(id.Bytes())
				if err != nil || got != serverID {
					t.Fatalf("CID %v decodes to %v, %v; want %v", id, got, err, serverID)
				}
			}
		})
	}
}

func TestGeneratorServerIDLength(t *testing.T) {
	codec, err := quiclb.New(quiclb.Config{ServerIDLen: 2, NonceLen: 4})
	if err != nil {
		t.Fatal(err)
	}
	sid, _ := quiclb.ServerIDFromUint64(7, 3)
	if _, err := NewGenerator(codec, sid); err != quiclb.ErrServerIDSize {
		t.Fatalf("3-octet server ID for a 2-octet config: %v", err)
	}
}

// TestNonceCounter checks that an encrypted generator's nonces count up
// from a random start, wrap within the counter's octets, keep the random
// prefix, and stop with ErrNonceExhausted after the whole space.
func TestNonceCounter(t *testing.T) {
	g, codec, _ := newGenerator(t, quiclb.Config{ServerIDLen: 2, NonceLen: 4, Key: testKey})
	if g.ctrLen != 4 || len(g.prefix) != 0 || g.unlimited || g.left != 1<<32 {
		t.Fatalf("counter state %+v", g)
	}
	g.ctr = 1<<32 - 2 // two before the wrap
	g.left = 3
	var nonces [][]byte
	for range 3 {
		id, err := g.GenerateConnectionID()
		if err != nil {
			t.Fatal(err)
		}
		var sid [quiclb.MaxServerIDLen]byte
		nonce := make([]byte, codec.NonceLen())
		if err := codec.DecodeFull(id.Bytes(), sid[:], nonce); err != nil {
			t.Fatal(err)
		}
		nonces = append(nonces, nonce)
	}
	want := [][]byte{{0xff, 0xff, 0xff, 0xfe}, {0xff, 0xff, 0xff, 0xff}, {0, 0, 0, 0}}
	for i := range want {
		if !bytes.Equal(nonces[i], want[i]) {
			t.Errorf("nonce %d = %x, want %x", i, nonces[i], want[i])
		}
	}
	if _, err := g.GenerateConnectionID(); err != ErrNonceExhausted {
		t.Fatalf("after the nonce space: %v", err)
	}

	long, codec, _ := newGenerator(t, quiclb.Config{ServerIDLen: 3, NonceLen: 12, Key: testKey})
	if long.ctrLen != 8 || len(long.prefix) != 4 || !long.unlimited {
		t.Fatalf("12-octet nonce state %+v", long)
	}
	long.ctr = ^uint64(0)
	for i := range 2 {
		id, err := long.GenerateConnectionID()
		if err != nil {
			t.Fatal(err)
		}
		var sid [quiclb.MaxServerIDLen]byte
		nonce := make([]byte, 12)
		if err := codec.DecodeFull(id.Bytes(), sid[:], nonce); err != nil {
			t.Fatal(err)
		}
		wantCtr := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		if i == 1 {
			wantCtr = make([]byte, 8)
		}
		if !bytes.Equal(nonce[:4], long.prefix) || !bytes.Equal(nonce[4:], wantCtr) {
			t.Errorf("nonce %d = %x, want prefix %x counter %x", i, nonce, long.prefix, wantCtr)
		}
	}
}

// TestQUICHandshake runs a quic-go server whose Transport uses a Generator
// and a quic-go client on 127.0.0.1: a handshake, one stream echoed, then
// the client migrates to a new socket and echoes a second stream. Wrappers
// around the client's sockets record every datagram. The server's long
// headers must carry source CIDs that decode to the server ID; every packet
// the client sends after its first Initials must be addressed to a CID the
// Generator issued, which decodes to the server ID; and after the
// migration the client must use a different one (from a NEW_CONNECTION_ID
// frame), which still decodes to the server ID: the load balancer routes
// the migrated connection to the same server.
func TestQUICHandshake(t *testing.T) {
	t.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	for _, tc := range testConfigs {
		t.Run(tc.name, func(t *testing.T) {
			g, codec, serverID := newGenerator(t, tc.cfg)
			rec := &recordingGenerator{Generator: g, issued: map[quic.ConnectionID]bool{}}
			path1, path2 := runEcho(t, rec)
			decodes := func(what string, cid []byte) {
				t.Helper()
				if got, err := codec.DecodeServerID(cid); err != nil || got != serverID {
					t.Errorf("%s %x decodes to %v, %v; want %v", what, cid, got, err, serverID)
				}
			}

			cidLen := codec.CIDLen()
			var initialDCID []byte
			var short, long int
			dcids1 := map[string]bool{}
			for _, p := range path1.sent() {
				dcid, isLong, ok := destCID(p, cidLen)
				if !ok {
					t.Fatalf("client sent an unparsable packet %x", p)
				}
				if isLong && initialDCID == nil {
					initialDCID = dcid // the client's random DCID
				}
				if isLong && bytes.Equal(dcid, initialDCID) {
					continue
				}
				if isLong {
					long++
				} else {
					short++
				}
				dcids1[string(dcid)] = true
				if !rec.wasIssued(dcid) {
					t.Errorf("client addressed %x, which the generator did not issue", dcid)
				}
				decodes("client DCID", dcid)
			}
			serverSCIDs := 0
			for _, p := range path1.received() {
				if scid, ok := longSourceCID(p); ok {
					serverSCIDs++
					decodes("server SCID", scid)
				}
			}
			// Only a datagram's first packet is looked at: the client may
			// coalesce its 1-RTT packets behind a Handshake packet, so the
			// split between long and short varies with timing.
			if short+long == 0 || serverSCIDs == 0 {
				t.Errorf("saw %d short and %d long client packets to server CIDs and %d server long headers; want some client packets and server long headers",
					short, long, serverSCIDs)
			}

			migrated := 0
			for _, p := range path2.sent() {
				dcid, isLong, ok := destCID(p, cidLen)
				if !ok || isLong {
					t.Fatalf("client sent %x on the new path; want short headers only", p)
				}
				if dcids1[string(dcid)] {
					t.Errorf("client reused %x on the new path", dcid)
				}
				if !rec.wasIssued(dcid) {
					t.Errorf("client addressed %x, which the generator did not issue", dcid)
				}
				decodes("migrated client DCID", dcid)
				migrated++
			}
			if migrated == 0 {
				t.Error("the client sent nothing on the new path")
			}
			t.Logf("%d CIDs issued; client sent %d short and %d long packets to them, then %d after migrating",
				rec.count(), short, long, migrated)
		})
	}
}

// runEcho serves echo streams through a Transport with gen and runs a
// client against it: one stream, a migration to a new socket, another
// stream. It returns the client's recording sockets, before and after.
func runEcho(t *testing.T, gen quic.ConnectionIDGenerator) (path1, path2 *recordingConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	serverTLS, clientTLS := testTLS(t)

	serverUDP := listenUDP(t)
	serverTr := &quic.Transport{Conn: serverUDP, ConnectionIDGenerator: gen}
	t.Cleanup(func() { serverTr.Close() })
	ln, err := serverTr.Listen(serverTLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	serverErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		serverErr <- serveEcho(ctx, ln, 2)
	}()

	path1 = &recordingConn{PacketConn: listenUDP(t)}
	tr1 := &quic.Transport{Conn: path1}
	t.Cleanup(func() { tr1.Close() })
	conn, err := tr1.Dial(ctx, serverUDP.LocalAddr(), clientTLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "done")
	echo(ctx, t, conn, "routable by connection ID")

	path2 = &recordingConn{PacketConn: listenUDP(t)}
	tr2 := &quic.Transport{Conn: path2}
	t.Cleanup(func() { tr2.Close() })
	p, err := conn.AddPath(tr2)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Switch(); err != nil {
		t.Fatal(err)
	}
	echo(ctx, t, conn, "and still routable after migrating")
	if err := <-serverErr; err != nil {
		t.Fatal(err)
	}
	return path1, path2
}

func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echo sends msg on a new stream and checks that it comes back.
func echo(ctx context.Context, t *testing.T, conn *quic.Conn, msg string) {
	t.Helper()
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := str.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	str.Close()
	got, err := io.ReadAll(str)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

// serveEcho accepts one connection and echoes n streams on it.
func serveEcho(ctx context.Context, ln *quic.Listener, n int) error {
	conn, err := ln.Accept(ctx)
	if err != nil {
		return err
	}
	for range n {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			return err
		}
		if _, err := io.Copy(str, str); err != nil {
			return err
		}
		if err := str.Close(); err != nil {
			return err
		}
	}
	return nil
}

// destCID returns the destination CID of a datagram's first packet: from
// the length field of a long header, or the first cidLen octets after a
// short header's first octet.
func destCID(p []byte, cidLen int) (dcid []byte, isLong, ok bool) {
	if len(p) == 0 {
		return nil, false, false
	}
	if p[0]&0x80 == 0 {
		if len(p) < 1+cidLen {
			return nil, false, false
		}
		return p[1 : 1+cidLen], false, true
	}
	if len(p) < 6 || len(p) < 6+int(p[5]) {
		return nil, true, false
	}
	return p[6 : 6+int(p[5])], true, true
}

// longSourceCID returns the source CID of a long-header datagram.
func longSourceCID(p []byte) ([]byte, bool) {
	if len(p) < 6 || p[0]&0x80 == 0 {
		return nil, false
	}
	off := 6 + int(p[5])
	if len(p) <= off || len(p) < off+1+int(p[off]) {
		return nil, false
	}
	return p[off+1 : off+1+int(p[off])], true
}

// recordingGenerator remembers every CID its Generator issued.
type recordingGenerator struct {
	*Generator
	mu     sync.Mutex
	issued map[quic.ConnectionID]bool
}

func (r *recordingGenerator) GenerateConnectionID() (quic.ConnectionID, error) {
	id, err := r.Generator.GenerateConnectionID()
	if err == nil {
		r.mu.Lock()
		r.issued[id] = true
		r.mu.Unlock()
	}
	return id, err
}

func (r *recordingGenerator) wasIssued(cid []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.issued[quic.ConnectionIDFromBytes(cid)]
}

func (r *recordingGenerator) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.issued)
}

// recordingConn records the datagrams passing through a PacketConn. It
// hides the UDP socket's other methods, so quic-go treats it as a plain
// PacketConn.
type recordingConn struct {
	net.PacketConn
	mu      sync.Mutex
	out, in [][]byte
}

func (c *recordingConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	c.out = append(c.out, bytes.Clone(p))
	c.mu.Unlock()
	return c.PacketConn.WriteTo(p, addr)
}

func (c *recordingConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(p)
	if n > 0 {
		c.mu.Lock()
		c.in = append(c.in, bytes.Clone(p[:n]))
		c.mu.Unlock()
	}
	return n, addr, err
}

func (c *recordingConn) sent() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.out...)
}

func (c *recordingConn) received() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.in...)
}

// testTLS returns a server config with a fresh self-signed certificate for
// localhost and a client config that trusts only it.
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	const alpn = "sluice-quiclb-test"
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		NextProtos:   []string{alpn},
	}
	client = &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{alpn}}
	return server, client
}
