package cluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"net/netip"
)

// The cluster's UDP protocol. A datagram is a fixed header, one or more
// messages of fixed size per type, and a truncated HMAC-SHA256 tag:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|    version    |  flags (0)    |        message count          |  0
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                      boot ID (random per start)               |  4
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                 sequence number (per boot, +1 per datagram)   |  8
//	|                                                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                 send time, Unix milliseconds                  | 16
//	|                                                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  messages ...                                                 | 24
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  HMAC-SHA256(auth key, every byte before the tag)[:16]        | len-16
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Integers are big-endian. Every message starts with the same 8 bytes:
//
//	0 type u8 | 1 status u8 | 2 aux u16 (shard, or flags) | 4 request ID u32
//
// and has one constant size per type (msgSize); padding must be zero. The
// entry block (48 bytes) used by most messages:
//
//	 0 src addr [16] | 16 dst addr [16] | 32 src port u16 | 34 dst port u16
//	36 proto u8 | 37 pad u8 | 38 service u16 | 40 backend u32 | 44 expire u32
const (
	Version    = 1
	headerLen  = 24
	tagLen     = 16
	MaxPayload = 1400 // bytes per datagram, header and tag included
	entryLen   = 48
	msgHeadLen = 8
)

// MsgType is a message's type byte.
type MsgType uint8

const (
	MsgQuery     MsgType = 1 // asker -> tail: entry = key + proposal
	MsgAnswer    MsgType = 2 // tail -> asker: entry = committed value, status
	MsgInsert    MsgType = 3 // -> head, head -> next ... -> tail: entry, origin to answer
	MsgAck       MsgType = 4 // tail -> head: the insert of entry.Key is committed
	MsgDelete    MsgType = 5 // -> head, passed down the chain like an insert
	MsgSyncReq   MsgType = 6 // new member -> source: shard (aux), cursor
	MsgSyncEntry MsgType = 7 // source -> new member: one entry of shard (aux)
	MsgSyncDone  MsgType = 8 // source -> new member: end of a batch, next cursor
	msgTypes             = 9
)

var msgNames = [msgTypes]string{"", "query", "answer", "insert", "ack", "delete", "sync-request", "sync-entry", "sync-done"}

func (t MsgType) String() string {
	if int(t) < msgTypes && msgNames[t] != "" {
		return msgNames[t]
	}
	return "unknown"
}

// msgSize is each type's constant size; 0 marks an unknown type.
//
//	query, answer, ack, delete, sync-entry: head 8 | entry 48 @8          = 56
//	insert:     head 8 | entry 48 @8 | origin addr [16] @56 | port u16 @72 | pad [6] @74 = 80
//	sync-request: head 8 | cursor u32 @8 | max u16 @12 | pad u16 @14   = 16
//	sync-done:    head 8 | next cursor u32 @8 | count u16 @12 | pad u16 @14 = 16
var msgSize = [msgTypes]int{0, 56, 56, 80, 56, 56, 16, 56, 16}

// Status is the status byte of answers and sync-done messages.
type Status uint8

const (
	StatusOK       Status = 0
	StatusRetry    Status = 1 // the receiver is not (yet) the right member, or not synced: ask again
	StatusFull     Status = 2 // the chain's table is full: fall back to a local decision
	StatusTimeout  Status = 3 // local only: no answer after the attempts
	StatusNoMember Status = 4 // local only: the view has no members
)

var statusNames = []string{"ok", "retry", "full", "timeout", "no-member"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "unknown"
}

// Flags (aux of an insert or a query).
const (
	FlagRepair     = 1 << 0 // insert: overwrite; the downstream value wins over a diverged upstream copy
	FlagAnyReplica = 1 << 1 // query: the tail did not answer; any synced chain member holding the entry may
)

// SyncDoneCursor in a sync-done message says the shard is complete.
const SyncDoneCursor = ^uint32(0)

// Msg is one decoded message; the caller owns it and Decode fills it.
// Fields a type does not carry are zero.
type Msg struct {
	Type   MsgType
	Status Status
	Aux    uint16 // shard (sync messages) or flags (insert)
	ReqID  uint32
	Entry  Entry
	Origin netip.AddrPort // insert: who gets the answer; zero: nobody
	Cursor uint32         // sync-request, sync-done
	Count  uint16         // sync-request: max entries; sync-done: entries sent
}

// Errors of the decoder.
var (
	ErrShort    = errors.New("cluster: datagram too short")
	ErrVersion  = errors.New("cluster: unknown protocol version")
	ErrAuth     = errors.New("cluster: bad authentication tag")
	ErrMessage  = errors.New("cluster: malformed message")
	ErrReplay   = errors.New("cluster: replayed or stale datagram")
	ErrTooLarge = errors.New("cluster: datagram too large")
)

// Header is a datagram's header.
type Header struct {
	Count  uint16
	Boot   uint32
	Seq    uint64
	TimeMs uint64
}

// Keys derives the protocol's HMAC key and memberlist's AES key from the
// cluster key, so that neither is the configured secret itself.
func Keys(clusterKey []byte) (auth, gossip [32]byte) {
	m := hmac.New(sha256.New, clusterKey)
	m.Write([]byte("sluice cluster protocol v1"))
	copy(auth[:], m.Sum(nil))
	m = hmac.New(sha256.New, clusterKey)
	m.Write([]byte("sluice cluster gossip v1"))
	copy(gossip[:], m.Sum(nil))
	return
}

// Codec seals and opens datagrams. It is owned by one goroutine.
type Codec struct {
	mac hash.Hash
	sum [sha256.Size]byte
}

// NewCodec returns a codec for the protocol key (see Keys).
func NewCodec(authKey [32]byte) *Codec {
	return &Codec{mac: hmac.New(sha256.New, authKey[:])}
}

// tag is the truncated HMAC over the receiver's address and port, then the
// datagram: a datagram sealed for one node fails authentication at any
// other, so traffic captured on its way to one member cannot be replayed
// to another (whose replay window has not seen its sequence numbers).
func (c *Codec) tag(to netip.AddrPort, b []byte) []byte {
	c.mac.Reset()
	a := to.Addr().Unmap().As16()
	c.mac.Write(a[:])
	c.mac.Write([]byte{byte(to.Port() >> 8), byte(to.Port())})
	c.mac.Write(b)
	return c.mac.Sum(c.sum[:0])[:tagLen]
}

// Open checks a datagram's length, version and tag (sealed for self, the
// receiving node's address) and returns its header and the message bytes.
// It does not check replay (see Replay).
func (c *Codec) Open(b []byte, self netip.AddrPort) (Header, []byte, error) {
	if len(b) < headerLen+tagLen {
		return Header{}, nil, ErrShort
	}
	if len(b) > MaxPayload {
		return Header{}, nil, ErrTooLarge
	}
	if b[0] != Version {
		return Header{}, nil, ErrVersion
	}
	body := b[:len(b)-tagLen]
	if !hmac.Equal(c.tag(self, body), b[len(b)-tagLen:]) {
		return Header{}, nil, ErrAuth
	}
	if b[1] != 0 {
		return Header{}, nil, ErrMessage
	}
	be := binary.BigEndian
	h := Header{Count: be.Uint16(b[2:]), Boot: be.Uint32(b[4:]), Seq: be.Uint64(b[8:]), TimeMs: be.Uint64(b[16:])}
	return h, body[headerLen:], nil
}

// Next decodes the first message of msgs into m and returns the rest. It
// checks the size by type first, then reads fixed offsets.
func Next(msgs []byte, m *Msg) ([]byte, error) {
	if len(msgs) < msgHeadLen {
		return nil, ErrMessage
	}
	t := MsgType(msgs[0])
	if int(t) >= msgTypes || msgSize[t] == 0 || len(msgs) < msgSize[t] {
		return nil, ErrMessage
	}
	b := msgs[:msgSize[t]]
	be := binary.BigEndian
	*m = Msg{Type: t, Status: Status(b[1]), Aux: be.Uint16(b[2:]), ReqID: be.Uint32(b[4:])}
	switch t {
	case MsgSyncReq, MsgSyncDone:
		if b[14] != 0 || b[15] != 0 {
			return nil, ErrMessage
		}
		m.Cursor = be.Uint32(b[8:])
		m.Count = be.Uint16(b[12:])
	default:
		if !getEntry(b[8:56], &m.Entry) {
			return nil, ErrMessage
		}
		if t == MsgInsert {
			for _, p := range b[74:80] {
				if p != 0 {
					return nil, ErrMessage
				}
			}
			var a [16]byte
			copy(a[:], b[56:72])
			port := be.Uint16(b[72:])
			if a != ([16]byte{}) || port != 0 {
				m.Origin = netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), port)
			}
		}
	}
	return msgs[len(b):], nil
}

func getEntry(b []byte, e *Entry) bool {
	_ = b[47]
	if b[37] != 0 {
		return false
	}
	be := binary.BigEndian
	copy(e.Key.Src[:], b[0:16])
	copy(e.Key.Dst[:], b[16:32])
	e.Key.SrcPort = be.Uint16(b[32:])
	e.Key.DstPort = be.Uint16(b[34:])
	e.Key.Proto = b[36]
	e.Service = be.Uint16(b[38:])
	e.Backend = be.Uint32(b[40:])
	e.Expire = be.Uint32(b[44:])
	return true
}

func putEntry(b []byte, e *Entry) {
	_ = b[47]
	be := binary.BigEndian
	copy(b[0:16], e.Key.Src[:])
	copy(b[16:32], e.Key.Dst[:])
	be.PutUint16(b[32:], e.Key.SrcPort)
	be.PutUint16(b[34:], e.Key.DstPort)
	b[36] = e.Key.Proto
	b[37] = 0
	be.PutUint16(b[38:], e.Service)
	be.PutUint32(b[40:], e.Backend)
	be.PutUint32(b[44:], e.Expire)
}

// AppendMsg appends m's encoding to b.
func AppendMsg(b []byte, m *Msg) []byte {
	n := msgSize[m.Type]
	o := len(b)
	b = append(b, make([]byte, n)...)
	p := b[o:]
	be := binary.BigEndian
	p[0] = byte(m.Type)
	p[1] = byte(m.Status)
	be.PutUint16(p[2:], m.Aux)
	be.PutUint32(p[4:], m.ReqID)
	switch m.Type {
	case MsgSyncReq, MsgSyncDone:
		be.PutUint32(p[8:], m.Cursor)
		be.PutUint16(p[12:], m.Count)
	default:
		putEntry(p[8:56], &m.Entry)
		if m.Type == MsgInsert && m.Origin.IsValid() {
			a := m.Origin.Addr().As16()
			copy(p[56:72], a[:])
			be.PutUint16(p[72:], m.Origin.Port())
		}
	}
	return b
}

// Writer builds one datagram. Begin, then Add messages while they fit, then
// Seal. It is owned by one goroutine and reuses its buffer.
type Writer struct {
	buf   []byte
	count uint16
}

// Begin starts a datagram.
func (w *Writer) Begin(boot uint32, seq, timeMs uint64) {
	if cap(w.buf) < MaxPayload {
		w.buf = make([]byte, 0, MaxPayload)
	}
	w.buf = w.buf[:headerLen]
	clear(w.buf)
	w.buf[0] = Version
	be := binary.BigEndian
	be.PutUint32(w.buf[4:], boot)
	be.PutUint64(w.buf[8:], seq)
	be.PutUint64(w.buf[16:], timeMs)
	w.count = 0
}

// Len returns the number of messages added.
func (w *Writer) Len() int { return int(w.count) }

// Fits reports whether a message of type t fits.
func (w *Writer) Fits(t MsgType) bool {
	return len(w.buf)+msgSize[t]+tagLen <= MaxPayload
}

// Add appends m; it returns false (and adds nothing) when it does not fit.
func (w *Writer) Add(m *Msg) bool {
	if int(m.Type) >= msgTypes || msgSize[m.Type] == 0 || !w.Fits(m.Type) {
		return false
	}
	w.buf = AppendMsg(w.buf, m)
	w.count++
	return true
}

// Seal writes the count and the tag for the receiver to and returns the
// datagram, valid until the next Begin.
func (w *Writer) Seal(c *Codec, to netip.AddrPort) []byte {
	binary.BigEndian.PutUint16(w.buf[2:], w.count)
	w.buf = append(w.buf, c.tag(to, w.buf)...)
	return w.buf
}

// Replay is the anti-replay state for one sender (identified by its source
// address): the sender's boot ID, the highest sequence number seen and a
// 64-datagram window below it (as IPsec and WireGuard keep), and the latest
// send time seen. A datagram is accepted once: its time must be within the
// window of the receiver's clock; a new boot ID is accepted only with a later
// send time than any seen from that sender, so a datagram recorded from an
// earlier boot cannot be replayed after a restart.
type Replay struct {
	boot   uint32
	max    uint64
	bitmap uint64
	lastMs uint64
	seen   bool
	// notBefore: nothing sent before the window was made is accepted, so
	// a window dropped and made anew (the sender left the view and came
	// back, or this node restarted) does not readmit captured traffic.
	notBefore uint64
}

// ReplayNotBeforeSlackMs is how long before a window is made a datagram may
// have been sent and still be accepted: the first datagrams of a sender
// are in flight when the window is made. Nodes' clocks must agree to well
// within it (NTP); a sender whose clock lags by more is refused for about
// its lag after each new window.
const ReplayNotBeforeSlackMs = 1000

// NewReplay returns the window for a sender first heard from at nowMs.
func NewReplay(nowMs uint64) *Replay {
	r := &Replay{}
	if nowMs > ReplayNotBeforeSlackMs {
		r.notBefore = nowMs - ReplayNotBeforeSlackMs
	}
	return r
}

// ReplayWindowMs is how far a datagram's send time may be from the receiver's
// clock.
const ReplayWindowMs = 10_000

// Check accepts or rejects header h received at nowMs and records it.
func (r *Replay) Check(h *Header, nowMs uint64) bool {
	if h.TimeMs+ReplayWindowMs < nowMs || h.TimeMs > nowMs+ReplayWindowMs || h.TimeMs < r.notBefore {
		return false
	}
	if !r.seen || h.Boot != r.boot {
		if r.seen && h.TimeMs <= r.lastMs {
			return false
		}
		*r = Replay{boot: h.Boot, max: h.Seq, bitmap: 1, lastMs: h.TimeMs, seen: true, notBefore: r.notBefore}
		return true
	}
	switch {
	case h.Seq > r.max:
		d := h.Seq - r.max
		if d >= 64 {
			r.bitmap = 1
		} else {
			r.bitmap = r.bitmap<<d | 1
		}
		r.max = h.Seq
	default:
		d := r.max - h.Seq
		if d >= 64 || r.bitmap&(1<<d) != 0 {
			return false
		}
		r.bitmap |= 1 << d
	}
	r.lastMs = max(r.lastMs, h.TimeMs)
	return true
}
