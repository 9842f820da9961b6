package flow

// State is the lifecycle state of a flow entry. It selects the entry's idle
// timeout and its eviction class.
type State uint8

const (
	// StateFree is the zero State, that of an empty slot. An entry returned
	// by Lookup or Insert never has it, and the caller must not store it (use
	// Table.Delete to remove a flow).
	StateFree State = iota
	// StateSYN: TCP handshake seen from the client side only (half-open).
	// New TCP entries start here.
	StateSYN
	// StateEstablished: TCP, an ACK without SYN has been seen (or a
	// mid-stream packet created the entry).
	StateEstablished
	// StateClosing: TCP, a FIN or RST has been seen.
	StateClosing
	// StateUDP: UDP and every other non-TCP protocol. New non-TCP entries
	// start here.
	StateUDP

	numStates // array bound; not a state
)

var stateNames = [...]string{
	StateFree:        "free",
	StateSYN:         "syn",
	StateEstablished: "established",
	StateClosing:     "closing",
	StateUDP:         "udp",
}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "invalid"
}

// TCP header flag bits, as in byte 13 of the TCP header. They are repeated
// here (rather than imported from internal/packet) so that this package stays
// a leaf.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// protoTCP is the IP protocol number of TCP.
const protoTCP = 6

// initialState is the state Insert gives a new entry: half-open for TCP, so
// that a flood of spoofed SYNs stays in the first class to be evicted, and
// StateUDP for everything else.
func initialState(proto uint8) State {
	if proto == protoTCP {
		return StateSYN
	}
	return StateUDP
}

// Observe records a packet of the flow seen at now: it sets LastSeen and
// advances the TCP state machine with the packet's TCP flags (byte 13 of the
// TCP header; pass 0 for other protocols).
//
//	flags            SYN          Established   Closing
//	FIN or RST       Closing      Closing       Closing
//	SYN without ACK  SYN          Established   SYN (the 5-tuple is reused)
//	SYN+ACK          SYN          Established   Closing
//	ACK without SYN  Established  Established   Closing
//	none             SYN          Established   Closing
//
// FIN and RST win over the other flags. A closing flow stays closing on the
// ACKs of its teardown; only a new SYN reopens it. A bare SYN on an
// established flow does not demote it: the flow keeps its long timeout and its
// backend. Entries in StateUDP only have LastSeen updated. Observe does not
// allocate.
func (e *Entry) Observe(tcpFlags uint8, now uint32) {
	e.LastSeen = now
	s := e.State
	if s == StateUDP {
		return
	}
	switch {
	case tcpFlags&(tcpFIN|tcpRST) != 0:
		s = StateClosing
	case tcpFlags&tcpSYN != 0:
		if tcpFlags&tcpACK == 0 && s == StateClosing {
			s = StateSYN
		}
	case tcpFlags&tcpACK != 0:
		if s != StateClosing {
			s = StateEstablished
		}
	}
	if s == StateFree || s >= numStates {
		// Not an entry of a table (or a corrupted state): treat it as new.
		s = StateSYN
	}
	e.State = s
}
