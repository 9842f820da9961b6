package lab

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/sluicelb/sluice/internal/quiclb"
	"github.com/sluicelb/sluice/internal/quiclb/quicgo"
)

// QUICALPN is the ALPN protocol of the lab's QUIC echo service.
const QUICALPN = "sluice-lab-echo"

// QUICResetKey is the stateless reset key every lab QUIC server uses. The
// servers behind one VIP should share it (QUIC-LB draft §9): a server that
// receives a packet of a connection it does not hold — misrouted — then
// resets the connection at once, where a private key would leave the
// client to time out. The lab's key is public; a real deployment keeps it
// secret.
var QUICResetKey = quic.StatelessResetKey(sha256.Sum256([]byte("sluice lab QUIC stateless reset key")))

// QUICServer is a lab backend's QUIC echo server.
type QUICServer struct {
	Addrs []string // address:port to listen on; need not exist yet (IP_FREEBIND)
	Name  string   // answered in every reply
	// Codec and ServerID make the server issue QUIC-LB connection IDs
	// carrying ServerID (quicgo.Generator); without a codec it issues
	// quic-go's random 4-octet IDs, which the load balancer cannot route.
	Codec    *quiclb.Codec
	ServerID quiclb.ServerID
}

// ServeQUIC runs the echo service on every address of s.Addrs: every line
// a client writes on a stream comes back as "<name> <client address:port as
// the server sees it> <line>". The sockets are opened in the calling
// thread's network namespace before ServeQUIC blocks. It returns nil when
// ctx is done, or the first error of a listener.
func ServeQUIC(ctx context.Context, s QUICServer) error {
	if len(s.Addrs) == 0 {
		return errors.New("lab: quic: no address to listen on")
	}
	var gen quic.ConnectionIDGenerator
	if s.Codec != nil {
		g, err := quicgo.NewGenerator(s.Codec, s.ServerID)
		if err != nil {
			return fmt.Errorf("lab: quic: server ID %v: %w", s.ServerID, err)
		}
		gen = g
	}
	tlsConf, err := QUICServerTLS(s.Name)
	if err != nil {
		return err
	}
	// On the way out: cancel, close the sockets, then wait for the
	// goroutines (deferred in the opposite order).
	var wg sync.WaitGroup
	defer wg.Wait()
	var trs []*quic.Transport
	defer func() {
		for _, tr := range trs {
			tr.Close()
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(s.Addrs))
	for _, a := range s.Addrs {
		pc, err := listenConfig.ListenPacket(ctx, "udp", a)
		if err != nil {
			return fmt.Errorf("lab: quic: %w", err)
		}
		tr := &quic.Transport{Conn: pc, ConnectionIDGenerator: gen, StatelessResetKey: &QUICResetKey}
		trs = append(trs, tr)
		ln, err := tr.Listen(tlsConf, &quic.Config{MaxIdleTimeout: 30 * time.Second, KeepAlivePeriod: 5 * time.Second})
		if err != nil {
			return fmt.Errorf("lab: quic: %s: %w", a, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				conn, err := ln.Accept(ctx)
				if err != nil {
					if ctx.Err() == nil {
						errc <- err
					}
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					serveQUICConn(ctx, conn, s.Name)
				}()
			}
		}()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return fmt.Errorf("lab: quic: %w", err)
	}
}

// serveQUICConn echoes every stream of conn until the connection ends.
func serveQUICConn(ctx context.Context, conn *quic.Conn, name string) {
	defer conn.CloseWithError(0, "")
	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		go func() {
			defer str.Close()
			r := bufio.NewReader(str)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				// The remote address is read per line: after a migration
				// it is the client's new one.
				if _, err := fmt.Fprintf(str, "%s %s %s", name, conn.RemoteAddr(), line); err != nil {
					return
				}
			}
		}()
	}
}

// ParseQUICEcho splits a reply of the echo service into the server's
// name, the client address it saw and the line (without its newline).
func ParseQUICEcho(reply string) (name, client, line string, ok bool) {
	f := strings.SplitN(strings.TrimSuffix(reply, "\n"), " ", 3)
	if len(f) != 3 {
		return "", "", "", false
	}
	return f[0], f[1], f[2], true
}

// QUICServerTLS returns a TLS configuration with a fresh self-signed
// certificate for name, offering QUICALPN.
func QUICServerTLS(name string) (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("lab: quic: certificate: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   []string{QUICALPN},
	}, nil
}

// QUICClientTLS is the client side of the echo service: any lab server's
// self-signed certificate is accepted.
func QUICClientTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, NextProtos: []string{QUICALPN}}
}
