package scenario

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/sluicelb/sluice/internal/lab"
)

// The QUIC service of Options.QUIC: quic4 on QUICPort of the IPv4 VIP. Its
// QUIC-LB configuration is encrypted (four-pass: 2-octet server IDs,
// 6-octet nonces, 9-octet connection IDs); backend N has server ID
// QUICServerID(N).
const (
	QUICPort        = 4433
	QUICServerIDLen = 2
	QUICNonceLen    = 6
	QUICKey         = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
	QUICRotation    = 1
)

// QUICServerID is the server ID of backend N (from 1), in hex.
func QUICServerID(n int) string { return fmt.Sprintf("%04x", 0x5100+n) }

// startQUIC starts the QUIC echo server on backend be.
func (s *Scenario) startQUIC(ctx context.Context, be *lab.Node) error {
	p, err := be.Start(ctx, s.Opts.Binary, "lab", "quic-serve", "--name", fmt.Sprintf("be%d", be.Index),
		"--listen", netip.AddrPortFrom(s.Opts.VIP4, QUICPort).String(),
		"--sid", QUICServerID(be.Index), "--sid-len", fmt.Sprint(QUICServerIDLen), "--nonce-len", fmt.Sprint(QUICNonceLen),
		"--key", QUICKey, "--rotation", fmt.Sprint(QUICRotation))
	if err != nil {
		return fmt.Errorf("quic server on %s: %w", be.Name, err)
	}
	s.Servers = append(s.Servers, p)
	return nil
}

// quicConfig writes the quic4 VIP of an LB node's configuration.
func (s *Scenario) quicConfig(b *strings.Builder) {
	fmt.Fprintf(b, "  - name: quic4\n    address: %q\n    protocol: udp\n    port: %d\n", s.Opts.VIP4, QUICPort)
	if !s.Opts.QUICByTuple {
		fmt.Fprintf(b, "    quic: {server_id_len: %d, nonce_len: %d, key: %s, rotation: %d}\n", QUICServerIDLen, QUICNonceLen, QUICKey, QUICRotation)
	}
	b.WriteString("    backends:\n")
	for _, be := range s.Lab.Backends {
		if s.Opts.QUICByTuple {
			fmt.Fprintf(b, "      - address: %q\n", be.Addr4)
		} else {
			fmt.Fprintf(b, "      - {address: %q, server_id: %q}\n", be.Addr4, QUICServerID(be.Index))
		}
	}
}
