package fastpath

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net/netip"

	"github.com/sluicelb/sluice/internal/encap"
)

// The fastpath message: a GUE control message (C bit set, ctype CType) that
// an LB node sends to a client host's agent (redirect, cancel) or the agent
// sends back (ack, refresh), as the payload of a UDP datagram:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|0|0|1|  hlen 0 | ctype 0xD5    |          flags 0              |  0  GUE
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  version 1    |     type      |    count      |  reserved 0   |  4
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|        message ID (chosen by the sender; an ack echoes it)    |  8
//	|                                                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|        send time, Unix milliseconds                           | 16
//	|                                                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  count entries of 64 bytes                                    | 24
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  HMAC-SHA256(auth key, every byte before the tag)[:16]        | len-16
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// An entry (integers big-endian, addresses as 16 bytes, IPv4 in the
// IPv4-mapped form):
//
//	 0 client address [16] | 16 VIP address [16] | 32 backend address [16]
//	48 client port u16 | 50 VIP port u16 | 52 protocol u8 | 53 status u8
//	54 flags u8 | 55 reserved u8 (0) | 56 GUE port u16 | 58 outer source port u16
//	60 IPv6 flow label u32 (low 20 bits)
//
// The backend fields (backend address, flags, GUE port, source port, flow
// label) are set in a redirect only and zero in every other type; the status
// is set in an ack only. A datagram carries 1 to MaxEntries entries, so it
// is at most MaxLen bytes (under the IPv6 minimum MTU with its headers).
const (
	// CType is the GUE control type of a fastpath message: 0xD5, in the
	// range draft-ietf-intarea-gue leaves to user-defined control messages
	// (the VIP probe is 0xD3).
	CType      = 0xD5
	Version    = 1
	headerLen  = 24
	entryLen   = 64
	tagLen     = 16
	MaxEntries = 16
	MaxLen     = headerLen + MaxEntries*entryLen + tagLen // 1064
)

// Type is a message's type.
type Type uint8

const (
	// Redirect (LB node -> agent): send these flows straight to the
	// backends named.
	Redirect Type = 1
	// Ack (agent -> LB node): the message with ID was handled; each entry
	// carries its status.
	Ack Type = 2
	// Cancel (LB node -> agent): send these flows through the LB tier
	// again.
	Cancel Type = 3
	// Refresh (agent -> LB node): these flows the node redirected sent
	// packets since the last refresh.
	Refresh Type = 4
)

func (t Type) String() string {
	switch t {
	case Redirect:
		return "redirect"
	case Ack:
		return "ack"
	case Cancel:
		return "cancel"
	case Refresh:
		return "refresh"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Status is an agent's verdict on one entry, in an ack.
type Status uint8

const (
	StatusNone Status = 0
	// Installed: the flow is sent direct (a redirect), or no longer (a
	// cancel), or was not (a cancel of a flow the agent did not have).
	StatusInstalled Status = 1
	// The refusals of a redirect. The flow keeps going through the LB tier.
	StatusNotLocal    Status = 2 // the client address is not this host's
	StatusBackend     Status = 3 // the backend is outside the agent's backend prefixes
	StatusFamily      Status = 4 // the backend's family differs from the flow's
	StatusFull        Status = 5 // the agent's flow map is full
	StatusStale       Status = 6 // older than a cancel of the same flow
	StatusUnavailable Status = 7 // the agent's egress program is not running
)

func (s Status) String() string {
	switch s {
	case StatusNone:
		return "none"
	case StatusInstalled:
		return "installed"
	case StatusNotLocal:
		return "not_local"
	case StatusBackend:
		return "backend_not_allowed"
	case StatusFamily:
		return "family"
	case StatusFull:
		return "full"
	case StatusStale:
		return "stale"
	case StatusUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// FlagUDPChecksum in a redirect: compute the outer UDP checksum over IPv4
// too (an IPv6 outer UDP checksum is always computed).
const FlagUDPChecksum = 1

// Flow names a connection as the client sends it.
type Flow struct {
	Proto  uint8 // 6 (TCP) or 17 (UDP)
	Client netip.AddrPort
	VIP    netip.AddrPort
}

func (f Flow) String() string {
	p := "tcp"
	if f.Proto == 17 {
		p = "udp"
	}
	return fmt.Sprintf("%s %s -> %s", p, f.Client, f.VIP)
}

// Entry is one flow of a message.
type Entry struct {
	Flow Flow
	// Redirect only.
	Backend   netip.Addr // outer destination
	Port      uint16     // GUE destination port
	SrcPort   uint16     // outer UDP source port (what the LB node writes)
	FlowLabel uint32     // outer IPv6 flow label (what the LB node writes)
	Flags     uint8      // FlagUDPChecksum
	// Ack only.
	Status Status
}

// Message is a decoded message. Entries[:Count] are valid.
type Message struct {
	Type    Type
	ID      uint64
	TimeMs  uint64
	Count   int
	Entries [MaxEntries]Entry
}

// Errors of Open.
var (
	ErrNotFastpath = errors.New("fastpath: not a fastpath message")
	ErrMalformed   = errors.New("fastpath: malformed message")
	ErrAuth        = errors.New("fastpath: bad authentication tag")
	ErrInvalid     = errors.New("fastpath: invalid message")
)

// Key derives the protocol's HMAC key from the shared fastpath key, so that
// the configured secret itself is never the MAC key.
func Key(shared []byte) [32]byte {
	m := hmac.New(sha256.New, shared)
	m.Write([]byte("sluice fastpath v1"))
	var k [32]byte
	copy(k[:], m.Sum(nil))
	return k
}

// MinKeyLen is the shortest shared key accepted.
const MinKeyLen = 16

// Codec seals and opens messages. It is owned by one goroutine.
type Codec struct {
	mac hash.Hash
	sum [sha256.Size]byte
}

// NewCodec returns a codec for the key Key derived.
func NewCodec(key [32]byte) *Codec { return &Codec{mac: hmac.New(sha256.New, key[:])} }

func (c *Codec) tag(b []byte) []byte {
	c.mac.Reset()
	c.mac.Write(b)
	return c.mac.Sum(c.sum[:0])[:tagLen]
}

// IsFastpath reports whether the UDP payload b is a GUE control message of
// type CType (authentic or not).
func IsFastpath(b []byte) bool {
	var h encap.GUEHeader
	_, err := encap.DecodeGUE(b, &h)
	return err == encap.ErrControl && h.Proto == CType
}

// Open checks and decodes the UDP payload b into m, which it overwrites. It
// returns ErrNotFastpath for anything but a GUE control message of type
// CType, ErrAuth when the tag is wrong, and ErrMalformed when an authentic
// message breaks the format: another version, an unknown type, a count of 0
// or above MaxEntries or that disagrees with the length, a non-zero reserved
// byte, an entry of another protocol than TCP and UDP, a zero port, client
// and VIP of different families, unspecified addresses, backend fields in
// another type than a redirect (or missing in one), a status outside an ack.
// The send time is not checked: see Fresh. Open does not allocate.
func (c *Codec) Open(b []byte, m *Message) error {
	m.Count = 0
	if !IsFastpath(b) {
		return ErrNotFastpath
	}
	var h encap.GUEHeader
	encap.DecodeGUE(b, &h)
	if h.HLen != 0 || h.Flags != 0 || len(b) < headerLen+entryLen+tagLen || len(b) > MaxLen {
		return ErrMalformed
	}
	body := b[:len(b)-tagLen]
	if !hmac.Equal(c.tag(body), b[len(b)-tagLen:]) {
		return ErrAuth
	}
	be := binary.BigEndian
	t, n := Type(b[5]), int(b[6])
	switch {
	case b[4] != Version, b[7] != 0:
		return ErrMalformed
	case t < Redirect || t > Refresh:
		return ErrMalformed
	case n == 0 || n > MaxEntries || len(body) != headerLen+n*entryLen:
		return ErrMalformed
	}
	m.Type, m.ID, m.TimeMs = t, be.Uint64(b[8:]), be.Uint64(b[16:])
	for i := 0; i < n; i++ {
		if err := decodeEntry(b[headerLen+i*entryLen:], t, &m.Entries[i]); err != nil {
			return err
		}
	}
	m.Count = n
	return nil
}

func decodeEntry(e []byte, t Type, x *Entry) error {
	be := binary.BigEndian
	addr := func(off int) netip.Addr { return netip.AddrFrom16([16]byte(e[off : off+16])).Unmap() }
	*x = Entry{
		Flow: Flow{
			Proto:  e[52],
			Client: netip.AddrPortFrom(addr(0), be.Uint16(e[48:])),
			VIP:    netip.AddrPortFrom(addr(16), be.Uint16(e[50:])),
		},
		Status:    Status(e[53]),
		Flags:     e[54],
		Port:      be.Uint16(e[56:]),
		SrcPort:   be.Uint16(e[58:]),
		FlowLabel: be.Uint32(e[60:]),
	}
	f := &x.Flow
	switch {
	case f.Proto != 6 && f.Proto != 17, e[55] != 0:
		return ErrMalformed
	case f.Client.Port() == 0 || f.VIP.Port() == 0:
		return ErrMalformed
	case !usable(f.Client.Addr()) || !usable(f.VIP.Addr()) || f.Client.Addr().Is4() != f.VIP.Addr().Is4():
		return ErrMalformed
	case (x.Status != StatusNone) != (t == Ack):
		return ErrMalformed
	}
	if t != Redirect {
		var zero [16]byte
		if [16]byte(e[32:48]) != zero || x.Flags != 0 || x.Port != 0 || x.SrcPort != 0 || x.FlowLabel != 0 {
			return ErrMalformed
		}
		return nil
	}
	x.Backend = addr(32)
	if !usable(x.Backend) || x.Port == 0 || x.Flags&^FlagUDPChecksum != 0 || x.FlowLabel > 0xfffff {
		return ErrMalformed
	}
	return nil
}

// usable: a unicast address a flow or tunnel may use.
func usable(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast() && !a.IsLoopback() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// Seal appends the sealed encoding of m (Entries[:Count]) to b and returns
// the extended slice, or b unchanged and an error (matching ErrInvalid) for
// a message Open would refuse.
func (c *Codec) Seal(b []byte, m *Message) ([]byte, error) {
	if m.Type < Redirect || m.Type > Refresh || m.Count <= 0 || m.Count > MaxEntries {
		return b, fmt.Errorf("%w: type %d with %d entries", ErrInvalid, m.Type, m.Count)
	}
	start := len(b)
	be := binary.BigEndian
	b = append(b, 0x20, CType, 0, 0, Version, byte(m.Type), byte(m.Count), 0)
	b = be.AppendUint64(b, m.ID)
	b = be.AppendUint64(b, m.TimeMs)
	for i := 0; i < m.Count; i++ {
		e := &m.Entries[i]
		off := len(b)
		b = append(b, make([]byte, entryLen)...)
		w := b[off:]
		a := e.Flow.Client.Addr().As16()
		copy(w[0:], a[:])
		a = e.Flow.VIP.Addr().As16()
		copy(w[16:], a[:])
		be.PutUint16(w[48:], e.Flow.Client.Port())
		be.PutUint16(w[50:], e.Flow.VIP.Port())
		w[52], w[53] = e.Flow.Proto, byte(e.Status)
		if m.Type == Redirect {
			if e.Backend.IsValid() {
				a = e.Backend.As16()
				copy(w[32:], a[:])
			}
			w[54] = e.Flags
			be.PutUint16(w[56:], e.Port)
			be.PutUint16(w[58:], e.SrcPort)
			be.PutUint32(w[60:], e.FlowLabel)
		}
		var x Entry
		if err := decodeEntry(w, m.Type, &x); err != nil {
			return b[:start], fmt.Errorf("%w: entry %d (%s)", ErrInvalid, i, e.Flow)
		}
	}
	return append(b, c.tag(b[start:])...), nil
}

// FreshMs is how far a message's send time may be from the receiver's
// clock: the nodes' and hosts' clocks must agree within it.
const FreshMs = 30_000

// Fresh reports whether a message sent at timeMs may be taken at nowMs.
func Fresh(timeMs, nowMs uint64) bool {
	return timeMs+FreshMs >= nowMs && timeMs <= nowMs+FreshMs
}
