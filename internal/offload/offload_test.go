package offload

import (
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/flow"
)

func TestRing(t *testing.T) {
	r := NewRing(3) // 4 slots
	for i := range 4 {
		if !r.Push(&Op{Real: uint32(i)}) {
			t.Fatalf("push %d refused", i)
		}
	}
	if r.Push(&Op{}) || r.Full() != 1 {
		t.Fatalf("a full ring took an op (full %d)", r.Full())
	}
	got := r.Drain(nil)
	if len(got) != 4 || got[0].Real != 0 || got[3].Real != 3 {
		t.Fatalf("drained %+v", got)
	}
	if !r.Push(&Op{Real: 9, Del: true}) {
		t.Fatal("push after drain refused")
	}
	if got := r.Drain(nil); len(got) != 1 || got[0].Real != 9 || !got[0].Del {
		t.Fatalf("drained %+v", got)
	}
}

func TestRingConcurrent(t *testing.T) {
	r := NewRing(64)
	const n = 100000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n; {
			if r.Push(&Op{Gen: uint32(i), Key: flow.Key{SrcPort: uint16(i)}}) {
				i++
			}
		}
	}()
	next := uint32(0)
	var buf []Op
	for next < n {
		buf = r.Drain(buf[:0])
		for _, op := range buf {
			if op.Gen != next || op.Key.SrcPort != uint16(next) {
				t.Fatalf("op %d out of order: %+v", next, op)
			}
			next++
		}
	}
	<-done
}

func TestTemplateOf(t *testing.T) {
	tp, err := encap.Compile(encap.Tunnel{Mode: encap.GUE, Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2")})
	if err != nil {
		t.Fatal(err)
	}
	o := TemplateOf(tp, 1500)
	if !o.Valid || !o.V6 || !o.GUE || !o.Csum || o.MTU != 1500 || o.Image.Len != 66 || o.Image.L2Len != 14 {
		t.Errorf("%+v", o)
	}
	if TemplateOf(nil, 0).Valid {
		t.Error("nil template is valid")
	}
	var c Counters
	c.Add(&Counters{Forwarded: 2, Reals: []RealCounters{{1, 2}, {3, 4}}})
	c.Add(&Counters{Forwarded: 1, Reals: []RealCounters{{1, 1}}})
	if c.Forwarded != 3 || c.Reals[0] != (RealCounters{2, 3}) || c.Reals[1] != (RealCounters{3, 4}) {
		t.Errorf("%+v", c)
	}
	if ReasonMalformed.String() != "malformed" || Reason(200).String() != "unknown" {
		t.Error("reason names")
	}
}
