package control

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/sluicelb/sluice/internal/quiclb"
)

// CIDDecode is what a QUIC-LB connection ID carries (`sluice ctl quic
// decode`), and against a node, which backend of the VIP it routes to.
type CIDDecode struct {
	VIP            string `json:"vip,omitempty"` // empty for an offline decode
	CID            string `json:"cid"`           // hex
	ConfigRotation uint8  `json:"config_rotation"`
	ServerID       string `json:"server_id"` // hex
	Nonce          string `json:"nonce"`     // hex
	// Backend is the VIP's backend with the server ID, where the datapath
	// sends the connection's packets; "" when no backend has it (the
	// packets then take a fallback route) or offline.
	Backend string `json:"backend,omitempty"`
}

// String is the one-line form ctl prints:
// config_rotation=C server_id=HEX nonce=HEX [backend=ADDR|none].
func (d CIDDecode) String() string {
	s := fmt.Sprintf("config_rotation=%d server_id=%s nonce=%s", d.ConfigRotation, d.ServerID, d.Nonce)
	if d.VIP != "" {
		b := d.Backend
		if b == "" {
			b = "none"
		}
		s += " backend=" + b
	}
	return s
}

// Errors of DecodeCID and ParseCID. DecodeCID's wrap ErrUndecodableCID
// and the reason: a quiclb sentinel (quiclb.ErrUnroutable, ErrRotation,
// ErrShortCID, ErrLength) or ErrCIDLength.
var (
	ErrUndecodableCID = errors.New("connection ID does not decode")
	ErrCIDLength      = errors.New("connection ID length is not the configuration's")
	ErrCIDSyntax      = errors.New("connection ID is not hex octets")
)

// ParseCID parses a connection ID in hex, optionally with colons between
// octets or a 0x prefix (ErrCIDSyntax otherwise).
func ParseCID(text string) ([]byte, error) {
	t := strings.TrimPrefix(strings.ReplaceAll(text, ":", ""), "0x")
	b, err := hex.DecodeString(t)
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("%q: %w", text, ErrCIDSyntax)
	}
	return b, nil
}

// DecodeCID decodes cid, which must be exactly codec.CIDLen() octets, into
// its rotation codepoint, server ID and nonce, offline. A CID that does not
// decode is an error wrapping ErrUndecodableCID and the reason.
func DecodeCID(codec *quiclb.Codec, cid []byte) (CIDDecode, error) {
	d := CIDDecode{CID: hex.EncodeToString(cid), ConfigRotation: quiclb.Rotation(cid)}
	sid := make([]byte, codec.ServerIDLen())
	nonce := make([]byte, codec.NonceLen())
	err := codec.DecodeFull(cid, sid, nonce)
	switch {
	case errors.Is(err, quiclb.ErrUnroutable):
		return d, fmt.Errorf("%w: %s: %w; the load balancer routes it by a fallback (the DCID's hash in a long header, else the 4-tuple)", ErrUndecodableCID, d.CID, err)
	case errors.Is(err, quiclb.ErrRotation):
		return d, fmt.Errorf("%w: %s: %w (its codepoint is %d, the configuration's %d)", ErrUndecodableCID, d.CID, err, d.ConfigRotation, codec.Rotation())
	case err != nil:
		return d, fmt.Errorf("%w: %s (%d octets): %w", ErrUndecodableCID, d.CID, len(cid), err)
	case len(cid) != codec.CIDLen():
		return d, fmt.Errorf("%w: %s has %d octets, the configuration's have %d (1 + server ID %d + nonce %d): %w",
			ErrUndecodableCID, d.CID, len(cid), codec.CIDLen(), codec.ServerIDLen(), codec.NonceLen(), ErrCIDLength)
	}
	d.ServerID, d.Nonce = hex.EncodeToString(sid), hex.EncodeToString(nonce)
	return d, nil
}

// DecodeQUICCID decodes cid with the QUIC-LB configuration of the running
// VIP vip and names the backend it routes to. Unknown VIP: ErrNotFound; a
// VIP without QUIC, or a CID that does not decode (also wrapping DecodeCID's
// error): ErrInvalidQuery.
func (s *Server) DecodeQUICCID(vip string, cid []byte) (CIDDecode, error) {
	g := s.node.Generation()
	if g != nil {
		for _, svc := range g.Services {
			if svc.Name != vip {
				continue
			}
			if svc.QUIC == nil {
				return CIDDecode{}, fmt.Errorf("%w: vip %q does not route by QUIC connection ID (no quic block)", ErrInvalidQuery, vip)
			}
			d, err := DecodeCID(svc.QUIC.Codec(), cid)
			d.VIP = vip
			if err != nil {
				return d, fmt.Errorf("%w: %w", ErrInvalidQuery, err)
			}
			sid, _ := svc.QUIC.Codec().DecodeServerID(cid)
			if r := svc.QUIC.Server(sid); r != nil {
				d.Backend = r.Name
			}
			return d, nil
		}
	}
	return CIDDecode{}, &EditError{VIP: vip, Err: ErrNotFound}
}
