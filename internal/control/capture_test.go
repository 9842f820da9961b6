package control

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/sim"
)

func (n *traceNode) StartCapture(f datapath.CaptureFilter, ingress, egress bool) (*datapath.Capture, error) {
	return n.dp.StartCapture(f, ingress, egress)
}

// A capture query is checked before anything is written.
func TestCaptureQueryRefused(t *testing.T) {
	r := newTraceRig(t)
	r.apply(-1, -1)
	for _, q := range []CaptureQuery{
		{Proto: "sctp"}, {Host: "198.18.0.300"}, {Port: 70000}, {Where: "sideways"},
		{Count: -1}, {Count: MaxCaptureCount + 1}, {Duration: MaxCaptureDuration + time.Second}, {Tenant: "nobody"},
	} {
		if err := r.s.CheckCapture(&q); !errors.Is(err, ErrInvalidQuery) {
			t.Errorf("%+v: %v", q, err)
		}
	}
	if err := r.s.CheckCapture(&CaptureQuery{VIP: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown VIP: %v", err)
	}
	q := CaptureQuery{VIP: "web", Host: "198.18.10.0/24"}
	if err := r.s.CheckCapture(&q); err != nil || q.Count != 1000 || q.Duration != 10*time.Second {
		t.Errorf("%+v: %v", q, err)
	}
	if err := New(r.s.node.(*traceNode).Node).CheckCapture(&q); !errors.Is(err, ErrCaptureUnsupported) {
		t.Errorf("a node without a datapath: %v", err)
	}
}

// Capture writes the selected flow's packets as they arrive and leave
// (pcapng, two interfaces) and stops after Count; a second capture is
// refused meanwhile.
func TestCaptureWritesPcapng(t *testing.T) {
	r := newTraceRig(t)
	r.apply(-1, -1)
	one := netip.MustParseAddrPort("198.18.10.5:41000")
	other := netip.MustParseAddrPort("198.18.10.6:41001")
	dst := netip.AddrPortFrom(traceVIP, 80)
	var buf bytes.Buffer
	done := make(chan error, 1)
	var res CaptureResult
	go func() {
		var err error
		res, err = r.s.Capture(context.Background(), CaptureQuery{Port: int(one.Port()), Count: 4, Duration: 5 * time.Second}, &buf)
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !r.dp.Capturing() {
		if time.Now().After(deadline) {
			t.Fatal("the capture did not start")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := r.s.Capture(context.Background(), CaptureQuery{}, io.Discard); !errors.Is(err, ErrCaptureRunning) {
		t.Fatalf("a second capture: %v", err)
	}
	for _, flags := range []uint8{sim.SYN, sim.ACK} {
		for _, src := range []netip.AddrPort{one, other} {
			f := sim.Frame{Src: src, Dst: dst, Proto: 6, TCPFlags: flags}
			b := make([]byte, f.Len())
			f.Encode(b)
			if got, _ := r.send(b); got == "pass" || len(got) > 4 && got[:4] == "drop" {
				t.Fatalf("%v: %s", src, got)
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rd, err := pcapgo.NewNgReader(&buf, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	var ifaces []int
	for {
		_, ci, err := rd.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ifaces = append(ifaces, ci.InterfaceIndex)
	}
	in, _ := rd.Interface(0)
	out, _ := rd.Interface(1)
	if res.Packets != 4 || len(ifaces) != 4 || in.Name != "ingress" || out.Name != "egress" {
		t.Fatalf("result %+v, packets on interfaces %v (%q, %q)", res, ifaces, in.Name, out.Name)
	}
	for i, id := range ifaces {
		if id != i%2 {
			t.Errorf("packet %d on interface %d, want ingress then egress", i, id)
		}
	}
}

// Before the datapath has its first generation a query naming a tenant or a
// VIP is refused, not a crash.
func TestCaptureQueryNoGeneration(t *testing.T) {
	r := newTraceRig(t) // nothing applied
	if err := r.s.CheckCapture(&CaptureQuery{Tenant: "a"}); !errors.Is(err, ErrInvalidQuery) {
		t.Errorf("tenant: %v", err)
	}
	if err := r.s.CheckCapture(&CaptureQuery{VIP: "web"}); err == nil {
		t.Errorf("VIP: accepted")
	}
}

// A VIP and another tenant than its own is a contradiction, refused.
func TestCaptureVIPOfAnotherTenant(t *testing.T) {
	r := newTraceRig(t)
	r.apply(-1, -1)
	if err := r.s.CheckCapture(&CaptureQuery{VIP: "a-web", Tenant: "v"}); !errors.Is(err, ErrInvalidQuery) {
		t.Fatalf("tenant a's VIP with tenant v: %v", err)
	}
	if err := r.s.CheckCapture(&CaptureQuery{VIP: "a-web", Tenant: "a"}); err != nil {
		t.Fatalf("tenant a's VIP with tenant a: %v", err)
	}
}
