package config

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/sluicelb/sluice/internal/quiclb"
)

// QUIC makes a UDP VIP route QUIC packets by connection ID (QUIC-LB,
// DESIGN.md §3.6): the servers behind it issue connection IDs that carry
// their server ID (each backend's Backend.ServerID), so a connection stays
// with its server when the client's address or port changes. The servers
// must use the same parameters. `quic: true` is the block with every
// default; `quic: false` is no block.
type QUIC struct {
	ServerIDLen int    `yaml:"server_id_len"` // octets, 1..15; default 2
	NonceLen    int    `yaml:"nonce_len"`     // octets, at least 4, server_id_len + nonce_len <= 19; default 6
	Key         string `yaml:"key"`           // AES-128 key, 32 hex digits; empty: plaintext server IDs
	Rotation    int    `yaml:"rotation"`      // config rotation codepoint 0..6 (the CIDs' three high bits); default 0
	LenEncoded  bool   `yaml:"len_encoded"`   // the CIDs' first octet carries their length

	off bool // written `quic: false`: setDefaults drops the block
}

// QUIC defaults: 9-octet connection IDs (1 + 2 + 6).
const (
	DefaultQUICServerIDLen = 2
	DefaultQUICNonceLen    = 6
)

// UnmarshalYAML accepts `quic: true`, `quic: false` or the block, strictly
// (an unknown field in the block is an error, as everywhere else).
func (q *QUIC) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		var on bool
		if err := n.Decode(&on); err != nil {
			return err
		}
		*q = QUIC{off: !on}
		return nil
	}
	if n.Kind == yaml.MappingNode {
		var unknown []string
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; !slices.Contains(quicFields(), k.Value) {
				unknown = append(unknown, fmt.Sprintf("line %d: field %s not found in type config.QUIC", k.Line, k.Value))
			}
		}
		if len(unknown) > 0 {
			return &yaml.TypeError{Errors: unknown}
		}
	}
	type plain QUIC
	return n.Decode((*plain)(q))
}

// quicFields are the YAML names of QUIC's fields.
func quicFields() []string {
	t := reflect.TypeFor[QUIC]()
	var names []string
	for i := range t.NumField() {
		if tag, ok := t.Field(i).Tag.Lookup("yaml"); ok {
			names = append(names, strings.Split(tag, ",")[0])
		}
	}
	return names
}

// setQUICDefaults drops a `quic: false` block and fills in the lengths.
func setQUICDefaults(v *VIP) {
	q := v.QUIC
	if q == nil {
		return
	}
	if q.off {
		v.QUIC = nil
		return
	}
	if q.ServerIDLen == 0 {
		q.ServerIDLen = DefaultQUICServerIDLen
	}
	if q.NonceLen == 0 {
		q.NonceLen = DefaultQUICNonceLen
	}
}

// LB returns the QUIC-LB configuration of a validated block.
func (q *QUIC) LB() (quiclb.Config, error) {
	c := quiclb.Config{Rotation: uint8(q.Rotation), ServerIDLen: q.ServerIDLen, NonceLen: q.NonceLen, LenSelfEncoded: q.LenEncoded}
	if q.Key != "" {
		k, err := hex.DecodeString(q.Key)
		if err != nil {
			return c, fmt.Errorf("quic.key: not hex")
		}
		c.Key = k
	}
	return c, c.Validate()
}

// ServerID returns backend j's QUIC-LB server ID: its server_id, or when
// that is empty the last server_id_len octets of its address. The VIP must
// have a QUIC block.
func (v *VIP) ServerID(j int) (sid quiclb.ServerID, derived bool, err error) {
	b := &v.Backends[j]
	if b.ServerID != "" {
		sid, err = quiclb.ParseServerID(b.ServerID)
		return sid, false, err
	}
	a, err := netip.ParseAddr(b.Address)
	if err != nil {
		return sid, true, err
	}
	octets := a.AsSlice()
	n := v.QUIC.ServerIDLen
	if n > len(octets) {
		return sid, true, fmt.Errorf("server_id_len %d is longer than the address", n)
	}
	sid, err = quiclb.NewServerID(octets[len(octets)-n:])
	return sid, true, err
}

// validateQUIC checks VIP i's QUIC block and its backends' server IDs.
func validateQUIC(p string, v *VIP, bad func(path string, value any, reason string)) {
	q := v.QUIC
	if q == nil {
		for j, b := range v.Backends {
			if b.ServerID != "" {
				bad(fmt.Sprintf("%s.backends[%d].server_id", p, j), b.ServerID, "needs quic on the VIP")
			}
		}
		return
	}
	qp := p + ".quic"
	if v.Protocol != "udp" {
		bad(qp, nil, "needs protocol udp")
	}
	if v.SecondChance {
		bad(p+".second_chance", true, "does not apply to a quic VIP (its packets are routed by connection ID, without flow state)")
	}
	lensOK := true
	if q.ServerIDLen < 1 || q.ServerIDLen > quiclb.MaxServerIDLen {
		bad(qp+".server_id_len", q.ServerIDLen, fmt.Sprintf("is not between 1 and %d", quiclb.MaxServerIDLen))
		lensOK = false
	}
	if q.NonceLen < quiclb.MinNonceLen {
		bad(qp+".nonce_len", q.NonceLen, fmt.Sprintf("is below %d", quiclb.MinNonceLen))
		lensOK = false
	} else if lensOK && q.ServerIDLen+q.NonceLen > quiclb.MaxBlockLen {
		bad(qp+".nonce_len", q.NonceLen, fmt.Sprintf("makes server_id_len + nonce_len %d, above %d (connection IDs of at most 20 octets)", q.ServerIDLen+q.NonceLen, quiclb.MaxBlockLen))
		lensOK = false
	}
	if q.Rotation < 0 || q.Rotation > quiclb.MaxRotation {
		bad(qp+".rotation", q.Rotation, fmt.Sprintf("is not between 0 and %d (%d marks unroutable connection IDs)", quiclb.MaxRotation, quiclb.Unroutable))
	}
	if k, err := hex.DecodeString(q.Key); q.Key != "" && (err != nil || len(k) != quiclb.KeyLen) {
		// The key is a secret: the error does not repeat it.
		bad(qp+".key", nil, fmt.Sprintf("is not %d hex digits (an AES-128 key; leave it out for plaintext server IDs)", 2*quiclb.KeyLen))
	}
	if !lensOK {
		return
	}
	seen := map[quiclb.ServerID]int{}
	for j, b := range v.Backends {
		bp := fmt.Sprintf("%s.backends[%d].server_id", p, j)
		sid, derived, err := v.ServerID(j)
		switch {
		case err != nil && derived:
			bad(bp, nil, fmt.Sprintf("is required: it cannot be derived from address %q (%v)", b.Address, err))
			continue
		case err != nil:
			bad(bp, fmt.Sprintf("%q", b.ServerID), "is not hex octets (e.g. 0a01 or 0a:01)")
			continue
		case sid.Len() != q.ServerIDLen:
			bad(bp, b.ServerID, fmt.Sprintf("has %d octets; quic.server_id_len is %d", sid.Len(), q.ServerIDLen))
			continue
		}
		if k, dup := seen[sid]; dup {
			if derived {
				bad(bp, nil, fmt.Sprintf("derived from the address (%s) is also backends[%d]'s; set server_id", sid, k))
			} else {
				bad(bp, b.ServerID, fmt.Sprintf("is also backends[%d]'s", k))
			}
			continue
		}
		seen[sid] = j
	}
}
