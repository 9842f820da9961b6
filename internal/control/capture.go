package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/packet"
)

// Capturer is a node that captures packets from inside its datapath
// (datapath.Capture).
type Capturer interface {
	StartCapture(f datapath.CaptureFilter, ingress, egress bool) (*datapath.Capture, error)
}

// CaptureQuery says which packets a capture copies, where, and for how
// long.
type CaptureQuery struct {
	Proto  string // tcp | udp | icmp | "" (any)
	Host   string // an address or a prefix: the source or the destination
	Port   int    // the source or the destination port; 0: any
	VIP    string // a VIP's name: packets to its address and port
	Tenant string // a tenant's name: its packets only ("" with VIP: the VIP's)
	// Where: ingress (as received), egress (as sent), or both (default).
	Where string
	// Count stops the capture after this many packets (default 1000, at
	// most MaxCaptureCount); Duration after this long (default 10 s, at
	// most MaxCaptureDuration).
	Count    int
	Duration time.Duration
}

// Bounds of a capture.
const (
	MaxCaptureCount    = 1_000_000
	MaxCaptureDuration = 10 * time.Minute
	captureDrainEvery  = 10 * time.Millisecond
)

// CaptureResult is what a capture wrote and lost.
type CaptureResult struct {
	Packets uint64 // written
	Dropped uint64 // copies lost in the datapath: a ring was full (a slow reader)
}

// ErrCaptureRunning: a node runs one capture at a time.
var ErrCaptureRunning = datapath.ErrCaptureRunning

// ErrCaptureUnsupported: the node cannot capture.
var ErrCaptureUnsupported = errors.New("this node cannot capture")

// CaptureFilterOf turns the parts of q that need no node's configuration
// (protocol, host, port, where) into a filter and directions, and fills
// q's defaults (Count, Duration) or refuses them.
func CaptureFilterOf(q *CaptureQuery) (f datapath.CaptureFilter, ingress, egress bool, err error) {
	f.Tenant = -1
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidQuery}, a...)...)
	}
	switch strings.ToLower(q.Proto) {
	case "":
	case "tcp":
		f.Proto = packet.ProtoTCP
	case "udp":
		f.Proto = packet.ProtoUDP
	case "icmp":
		f.Proto = packet.ProtoICMP
	default:
		return f, false, false, bad("protocol %q is not tcp, udp or icmp", q.Proto)
	}
	if q.Host != "" {
		if p, err := netip.ParsePrefix(q.Host); err == nil {
			f.Host = p.Masked()
		} else if a, err := netip.ParseAddr(q.Host); err == nil {
			f.Host = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		} else {
			return f, false, false, bad("host %q is not an address or a prefix", q.Host)
		}
	}
	if q.Port < 0 || q.Port > 65535 {
		return f, false, false, bad("port %d is not a port", q.Port)
	}
	f.Port = uint16(q.Port)
	switch strings.ToLower(q.Where) {
	case "", "both":
		ingress, egress = true, true
	case "ingress":
		ingress = true
	case "egress":
		egress = true
	default:
		return f, false, false, bad("where %q is not ingress, egress or both", q.Where)
	}
	switch {
	case q.Count == 0:
		q.Count = 1000
	case q.Count < 0 || q.Count > MaxCaptureCount:
		return f, false, false, bad("count %d is not between 1 and %d", q.Count, MaxCaptureCount)
	}
	switch {
	case q.Duration == 0:
		q.Duration = 10 * time.Second
	case q.Duration < 0 || q.Duration > MaxCaptureDuration:
		return f, false, false, bad("duration %v is not between 0 and %v", q.Duration, MaxCaptureDuration)
	}
	return f, ingress, egress, nil
}

// captureFilter is CaptureFilterOf with the node's VIPs and tenants.
func (s *Server) captureFilter(q *CaptureQuery) (f datapath.CaptureFilter, ingress, egress bool, err error) {
	if f, ingress, egress, err = CaptureFilterOf(q); err != nil {
		return f, false, false, err
	}
	g := s.node.Generation()
	if q.Tenant != "" {
		var id uint8
		ok := false
		if g != nil {
			id, ok = g.TenantByName(q.Tenant)
		}
		if !ok {
			return f, false, false, fmt.Errorf("%w: no tenant %q", ErrInvalidQuery, q.Tenant)
		}
		f.Tenant = int(id)
	}
	if q.VIP != "" {
		if g == nil {
			return f, false, false, fmt.Errorf("%w: VIP %q", ErrNotFound, q.VIP)
		}
		found := false
		for _, svc := range g.Services {
			if svc.Name == q.VIP {
				if f.Tenant >= 0 && f.Tenant != int(svc.Tenant) {
					return f, false, false, fmt.Errorf("%w: VIP %q is not tenant %q's", ErrInvalidQuery, q.VIP, q.Tenant)
				}
				f.Dst, f.Tenant, found = netip.AddrFrom16(svc.Addr).Unmap(), int(svc.Tenant), true
				if svc.PortLo == svc.PortHi {
					f.DstPort = svc.PortLo
				}
				if f.Proto == 0 {
					f.Proto = svc.Proto
				}
			}
		}
		if !found {
			return f, false, false, fmt.Errorf("%w: VIP %q", ErrNotFound, q.VIP)
		}
	}
	return f, ingress, egress, nil
}

// CheckCapture validates q (and fills its defaults) without starting a
// capture: what Capture would refuse before writing anything.
func (s *Server) CheckCapture(q *CaptureQuery) error {
	if _, ok := s.node.(Capturer); !ok {
		return ErrCaptureUnsupported
	}
	_, _, _, err := s.captureFilter(q)
	return err
}

// Capture copies the packets q selects from the datapath and writes them
// to w as pcapng (WriteCapture: interfaces "ingress", frames as received,
// and "egress", as sent; Ethernet). Errors before the first byte (the
// query, a capture already running) leave w untouched.
func (s *Server) Capture(ctx context.Context, q CaptureQuery, w io.Writer) (CaptureResult, error) {
	cn, ok := s.node.(Capturer)
	if !ok {
		return CaptureResult{}, ErrCaptureUnsupported
	}
	f, ingress, egress, err := s.captureFilter(&q)
	if err != nil {
		return CaptureResult{}, err
	}
	c, err := cn.StartCapture(f, ingress, egress)
	if err != nil {
		return CaptureResult{}, err
	}
	return WriteCapture(ctx, w, c, q, layers.LinkTypeEthernet,
		[2]string{"ingress", "frames as the Sluice datapath received them"},
		[2]string{"egress", "frames as the Sluice datapath sent them"})
}

// CaptureSource is a running capture: what it copied (datapath.Capture,
// or the backend agent's).
type CaptureSource interface {
	Drain(fn func(r *datapath.CaptureRecord)) int
	Dropped() uint64       // copies lost, both directions
	DroppedEgress() uint64 // of them, the copies as sent
	Time(at uint32) time.Time
	Stop()
}

// WriteCapture writes what c copies to w as pcapng, as it comes: two
// interfaces of link type lt, named and described by in (records as
// received) and out (as sent), up to datapath.CaptureSnap bytes of each. It
// ends after q.Count packets, q.Duration, or when ctx is done or w fails,
// stops c, and ends the file with each interface's statistics (the copies
// c dropped).
func WriteCapture(ctx context.Context, w io.Writer, c CaptureSource, q CaptureQuery, lt layers.LinkType, in, out [2]string) (CaptureResult, error) {
	var res CaptureResult
	defer c.Stop()
	start := time.Now()
	pw, err := pcapgo.NewNgWriterInterface(w, pcapgo.NgInterface{
		Name: in[0], Description: in[1], LinkType: lt, SnapLength: datapath.CaptureSnap,
	}, pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{Application: "sluice ctl capture"}})
	if err != nil {
		return res, err
	}
	outID, err := pw.AddInterface(pcapgo.NgInterface{Name: out[0], Description: out[1], LinkType: lt, SnapLength: datapath.CaptureSnap})
	if err != nil {
		return res, err
	}
	var werr error
	write := func(r *datapath.CaptureRecord) {
		if werr != nil || res.Packets >= uint64(q.Count) {
			return
		}
		ci := gopacket.CaptureInfo{Timestamp: c.Time(r.At), CaptureLength: r.N, Length: r.Len}
		if r.Egress {
			ci.InterfaceIndex = outID
		}
		if werr = pw.WritePacket(ci, r.Data[:r.N]); werr == nil {
			res.Packets++
		}
	}
	t := time.NewTicker(captureDrainEvery)
	defer t.Stop()
	deadline := time.NewTimer(q.Duration)
	defer deadline.Stop()
loop:
	for werr == nil && res.Packets < uint64(q.Count) {
		select {
		case <-ctx.Done():
			break loop
		case <-deadline.C:
			break loop
		case <-t.C:
			if c.Drain(write) > 0 && werr == nil {
				werr = pw.Flush()
			}
		}
	}
	c.Stop()
	c.Drain(write) // what was copied before Stop
	// (Egress drops first: each is in the total before it is counted
	// there, so the total read after holds them all.)
	outDropped := c.DroppedEgress()
	res.Dropped = c.Dropped()
	if werr != nil {
		return res, werr
	}
	end := time.Now()
	for i, dropped := range []uint64{res.Dropped - outDropped, outDropped} { // ingress, egress
		st := pcapgo.NgInterfaceStatistics{StartTime: start, LastUpdate: end, EndTime: end,
			PacketsReceived: pcapgo.NgNoValue64, PacketsDropped: dropped}
		if err := pw.WriteInterfaceStats(i, st); err != nil {
			return res, err
		}
	}
	return res, pw.Flush()
}
