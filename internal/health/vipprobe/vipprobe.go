// Package vipprobe is the wire format of the Sluice VIP probe: a GUE control
// message that an LB node's health checker sends to a backend's agent to ask
// whether a service answers on a VIP there, and the agent's answer. The
// format is drawn in the documentation of package health; the agent's side is
// described in package agent.
//
// The package only encodes and decodes; it is imported by both ends
// (internal/health sends requests and reads replies, internal/agent reads
// requests and sends replies). Parse and Append do not allocate (Append only
// when b lacks capacity).
package vipprobe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/sluicelb/sluice/internal/encap"
)

// CType is the GUE control type (the Proto/ctype byte of a message with the
// C bit set) of a Sluice VIP probe: 0xD3, "S" with the high bit set, in the
// range draft-ietf-intarea-gue leaves to user-defined control messages
// (128-255).
const CType = 0xD3

// Version is the probe format version this package writes and accepts.
const Version = 1

// Lengths of a whole probe datagram (UDP payload): the 4-byte GUE header, the
// 16-byte fixed part and the VIP address.
const (
	Len4   = gueLen + fixedLen + 4  // 24 bytes: IPv4 VIP
	Len6   = gueLen + fixedLen + 16 // 36 bytes: IPv6 VIP
	MaxLen = Len6
)

const (
	gueLen   = 4
	fixedLen = 16
	// Offsets from the start of the datagram.
	offVersion = 4
	offType    = 5
	offStatus  = 6
	offProto   = 7
	offID      = 8
	offPort    = 16
	offAddrLen = 18
	offAddr    = 20
)

// IP protocol numbers carried in Message.Proto.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Type says whether a message asks or answers.
type Type uint8

const (
	Request Type = 1 // LB node -> agent
	Reply   Type = 2 // agent -> LB node
)

// Status is the agent's verdict in a Reply; a Request carries StatusNone.
type Status uint8

const (
	StatusNone Status = 0
	// StatusUp: the VIP is configured on the agent and the service answers
	// there (TCP: a connect from the backend host to VIP:port succeeded;
	// UDP: a socket is bound to VIP:port or to the wildcard address and
	// port).
	StatusUp Status = 1
	// StatusDown: the VIP is configured but nothing answers on VIP:port.
	StatusDown Status = 2
	// StatusNotConfigured: the agent does not serve this VIP.
	StatusNotConfigured Status = 3
	// StatusOverloaded: the agent had too many probes to check this one.
	StatusOverloaded Status = 4
)

// String returns "up", "down", "not configured", "overloaded", "none" or
// "status(N)".
func (s Status) String() string {
	switch s {
	case StatusNone:
		return "none"
	case StatusUp:
		return "up"
	case StatusDown:
		return "down"
	case StatusNotConfigured:
		return "not configured"
	case StatusOverloaded:
		return "overloaded"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Message is a decoded probe, request or reply.
type Message struct {
	Type   Type
	Status Status // StatusNone in a Request
	Proto  uint8  // ProtoTCP or ProtoUDP
	// ID is chosen at random by the sender of the request and echoed in the
	// reply; the checker matches replies by it.
	ID uint64
	// VIP is the service address and port the agent must find answering
	// locally. A plain IPv4 or IPv6 address, never IPv4-mapped; port != 0.
	VIP netip.AddrPort
}

// ReplyTo returns the reply to request m with status st: m with Type Reply.
func (m *Message) ReplyTo(st Status) Message {
	r := *m
	r.Type, r.Status = Reply, st
	return r
}

// Errors returned by Parse. They are sentinels; Parse does not wrap them.
var (
	// ErrNotProbe: the datagram is not a GUE control message of type CType
	// (it may be any other GUE message).
	ErrNotProbe = errors.New("vipprobe: not a VIP probe")
	// ErrMalformed: a GUE control message of type CType that is not a valid
	// probe of this Version.
	ErrMalformed = errors.New("vipprobe: malformed VIP probe")
)

// Parse decodes the probe at the start of a UDP payload into m, which it
// overwrites. It returns ErrNotProbe unless encap.DecodeGUE reports a control
// message (encap.ErrControl) whose ctype is CType, and ErrMalformed when such
// a message has a GUE Hlen or flags other than 0, another Version, a length
// other than Len4 or Len6, an unknown Type, a Request with a status, a
// protocol other than TCP and UDP, port 0, an address length other than 4 or
// 16 or one that disagrees with the datagram's length, or an unspecified or
// IPv4-mapped VIP. The reserved byte is ignored. Unknown reply statuses are
// accepted (a checker treats them as failures).
func Parse(b []byte, m *Message) error {
	*m = Message{}
	var h encap.GUEHeader
	if _, err := encap.DecodeGUE(b, &h); err != encap.ErrControl || h.Proto != CType {
		return ErrNotProbe
	}
	switch {
	case h.HLen != 0 || h.Flags != 0:
		return ErrMalformed
	case len(b) != Len4 && len(b) != Len6:
		return ErrMalformed
	case b[offVersion] != Version:
		return ErrMalformed
	}
	t, st, proto := Type(b[offType]), Status(b[offStatus]), b[offProto]
	switch {
	case t != Request && t != Reply:
		return ErrMalformed
	case t == Request && st != StatusNone:
		return ErrMalformed
	case proto != ProtoTCP && proto != ProtoUDP:
		return ErrMalformed
	}
	port := binary.BigEndian.Uint16(b[offPort:])
	alen := int(b[offAddrLen])
	if port == 0 || (alen != 4 && alen != 16) || len(b) != offAddr+alen {
		return ErrMalformed
	}
	addr, _ := netip.AddrFromSlice(b[offAddr:])
	if addr.IsUnspecified() || addr.Is4In6() {
		return ErrMalformed
	}
	*m = Message{Type: t, Status: st, Proto: proto, ID: binary.BigEndian.Uint64(b[offID:]),
		VIP: netip.AddrPortFrom(addr, port)}
	return nil
}

// ErrInvalid is matched (errors.Is) by the errors of Append.
var ErrInvalid = errors.New("vipprobe: invalid message")

// Append appends the encoding of m to b and returns the extended slice. It
// fails (wrapping ErrInvalid, and returning b unchanged) for a message Parse
// would reject.
func Append(b []byte, m *Message) ([]byte, error) {
	a := m.VIP.Addr()
	switch {
	case m.Type != Request && m.Type != Reply:
		return b, fmt.Errorf("%w: type %d", ErrInvalid, m.Type)
	case m.Type == Request && m.Status != StatusNone:
		return b, fmt.Errorf("%w: request with status %s", ErrInvalid, m.Status)
	case m.Proto != ProtoTCP && m.Proto != ProtoUDP:
		return b, fmt.Errorf("%w: protocol %d", ErrInvalid, m.Proto)
	case !a.IsValid() || a.IsUnspecified() || a.Is4In6() || a.Zone() != "" || m.VIP.Port() == 0:
		return b, fmt.Errorf("%w: VIP %s", ErrInvalid, m.VIP)
	}
	alen := 16
	if a.Is4() {
		alen = 4
	}
	n := len(b)
	b = append(b, make([]byte, offAddr+alen)...) // no allocation when b has capacity
	p := b[n:]
	p[0] = 0x20 // version 0, C bit, Hlen 0
	p[1] = CType
	p[2], p[3] = 0, 0 // flags
	p[offVersion], p[offType], p[offStatus], p[offProto] = Version, byte(m.Type), byte(m.Status), m.Proto
	binary.BigEndian.PutUint64(p[offID:], m.ID)
	binary.BigEndian.PutUint16(p[offPort:], m.VIP.Port())
	p[offAddrLen], p[offAddrLen+1] = byte(alen), 0
	if alen == 4 {
		a4 := a.As4()
		copy(p[offAddr:], a4[:])
	} else {
		a16 := a.As16()
		copy(p[offAddr:], a16[:])
	}
	return b, nil
}
