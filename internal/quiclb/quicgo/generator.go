// Package quicgo lets a quic-go server issue QUIC-LB connection IDs, so that
// the Sluice load balancer routes its connections by connection ID
// (DESIGN.md §3.6). It is the only place quic-go meets quiclb; the datapath
// imports quiclb alone.
//
// Use a Generator as the Transport's ConnectionIDGenerator:
//
//	codec, _ := quiclb.New(cfg)
//	gen, _ := quicgo.NewGenerator(codec, serverID)
//	tr := &quic.Transport{Conn: udpConn, ConnectionIDGenerator: gen}
//
// quic-go then puts a CID from gen in the Source Connection ID of the
// server's long-header packets and in its NEW_CONNECTION_ID frames, and
// clients address every packet after their first Initials to such CIDs.
package quicgo

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"

	"github.com/quic-go/quic-go"

	"github.com/sluicelb/sluice/internal/quiclb"
)

// ErrNonceExhausted is returned by GenerateConnectionID once an encrypted
// configuration's nonce counter has come round to its start: a nonce must
// not repeat under one key (draft §9.6), so the server needs a new
// configuration. quic-go closes the connection that asked.
var ErrNonceExhausted = errors.New("quicgo: QUIC-LB nonce space exhausted; rotate the configuration")

// Generator issues QUIC-LB CIDs that carry one server ID. It implements
// quic.ConnectionIDGenerator and is safe for concurrent use.
//
// Nonces follow draft §9.6. In plaintext mode each nonce is random, since
// it is visible and must not link CIDs; with short nonces expect a repeat
// about every 2^(4*NonceLen) CIDs. In the encrypted modes the nonce is a
// counter that starts at a random value (its last min(NonceLen, 8) octets,
// after a random prefix fixed per Generator), so no nonce repeats until the
// counter has gone all the way round, which ends in ErrNonceExhausted.
type Generator struct {
	// Immutable after NewGenerator.
	codec    *quiclb.Codec
	serverID []byte
	counted  bool   // encrypted mode: counter nonces
	ctrLen   int    // octets of the nonce that hold the counter (1..8)
	prefix   []byte // the random octets before the counter

	mu sync.Mutex // guards the fields below
	// ctr is the next counter value; left counts the values not yet used,
	// and is meaningless when unlimited (a 64-bit counter).
	ctr       uint64
	left      uint64
	unlimited bool
}

var _ quic.ConnectionIDGenerator = (*Generator)(nil)

// NewGenerator returns a Generator for codec's configuration and serverID,
// which must be codec.ServerIDLen() octets (quiclb.ErrServerIDSize
// otherwise).
func NewGenerator(codec *quiclb.Codec, serverID quiclb.ServerID) (*Generator, error) {
	if serverID.Len() != codec.ServerIDLen() {
		return nil, quiclb.ErrServerIDSize
	}
	g := &Generator{
		codec:    codec,
		serverID: serverID.Bytes(),
		counted:  codec.Mode() != quiclb.Plaintext,
	}
	if g.counted {
		n := codec.NonceLen()
		g.ctrLen = min(n, 8)
		g.prefix = make([]byte, n-g.ctrLen)
		rand.Read(g.prefix)
		var start [8]byte
		rand.Read(start[:])
		g.ctr = binary.BigEndian.Uint64(start[:])
		if g.ctrLen == 8 {
			g.unlimited = true
		} else {
			g.ctr &= 1<<(8*g.ctrLen) - 1
			g.left = 1 << (8 * g.ctrLen)
		}
	}
	return g, nil
}

// ConnectionIDLen returns the length of the CIDs: the codec's CIDLen.
func (g *Generator) ConnectionIDLen() int { return g.codec.CIDLen() }

// GenerateConnectionID returns a new CID carrying the server ID.
func (g *Generator) GenerateConnectionID() (quic.ConnectionID, error) {
	var nonce [quiclb.MaxBlockLen]byte
	n := g.codec.NonceLen()
	if !g.counted {
		rand.Read(nonce[:n])
	} else {
		ctr, err := g.next()
		if err != nil {
			return quic.ConnectionID{}, err
		}
		copy(nonce[:], g.prefix)
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], ctr)
		copy(nonce[len(g.prefix):n], b[8-g.ctrLen:])
	}
	var buf [quiclb.MaxCIDLen]byte
	cid, err := g.codec.Encode(buf[:0], g.serverID, nonce[:n])
	if err != nil {
		return quic.ConnectionID{}, err
	}
	return quic.ConnectionIDFromBytes(cid), nil
}

// next takes the next counter value.
func (g *Generator) next() (uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.unlimited {
		if g.left == 0 {
			return 0, ErrNonceExhausted
		}
		g.left--
	}
	ctr := g.ctr
	g.ctr++
	if !g.unlimited {
		g.ctr &= 1<<(8*g.ctrLen) - 1
	}
	return ctr, nil
}
