package datapath_test

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/sluicelb/sluice/internal/datapath"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

// TestCapture: a capture of one client port copies that flow's packets as
// received and as sent (GUE to its backend, the same inner packet), and
// nothing of another flow; a second capture is refused while one runs;
// after Stop nothing more is copied.
func TestCapture(t *testing.T) {
	r := newRig(t, 1024)
	r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{service(vip4, backends4(3), nil)}})
	one, other := clients4.FlowSrc(1), clients4.FlowSrc(2)
	c, err := r.dp.StartCapture(datapath.CaptureFilter{Tenant: -1, Port: one.Port(), Proto: 6}, true, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.dp.StartCapture(datapath.CaptureFilter{Tenant: -1}, true, false); !errors.Is(err, datapath.ErrCaptureRunning) {
		t.Fatalf("a second capture: %v", err)
	}
	var in, sent [][]byte
	for _, flags := range []uint8{sim.SYN, sim.ACK, sim.ACK} {
		f := tcpFrame(one, vip4, flags)
		in = append(in, f)
		sent = append(sent, r.send(f, tcpFrame(other, vip4, flags))[0])
	}
	var got []datapath.CaptureRecord
	c.Drain(func(rec *datapath.CaptureRecord) { got = append(got, *rec) })
	if len(got) != 6 {
		t.Fatalf("%d records, want 3 ingress and 3 egress", len(got))
	}
	for i, rec := range got {
		want := in[i/2]
		if rec.Egress {
			want = sent[i/2]
			d := decode(t, rec.Data[:rec.N])
			if d.outerDst != backendOf(t, sent[0]) || string(d.inner) != string(in[i/2][14:]) {
				t.Errorf("egress record %d: to %v, inner packet changed", i, d.outerDst)
			}
		}
		if rec.Egress != (i%2 == 1) || rec.Len != len(want) || string(rec.Data[:rec.N]) != string(want) {
			t.Errorf("record %d (egress %v): %d bytes, not the frame", i, rec.Egress, rec.Len)
		}
	}
	if c.Dropped() != 0 {
		t.Errorf("dropped %d", c.Dropped())
	}
	c.Stop()
	r.send(tcpFrame(one, vip4, sim.ACK))
	if n := c.Drain(func(*datapath.CaptureRecord) {}); n != 0 {
		t.Fatalf("%d records after Stop", n)
	}
	// A full ring drops copies, never packets.
	c, err = r.dp.StartCapture(datapath.CaptureFilter{Tenant: -1}, true, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	for i := range 700 {
		if out := r.send(tcpFrame(clients4.FlowSrc(uint32(100+i)), vip4, sim.SYN)); len(out) != 1 {
			t.Fatalf("packet %d not forwarded while the ring was full", i)
		}
	}
	if n := c.Drain(func(*datapath.CaptureRecord) {}); n != 1024 || c.Dropped() != 1400-1024 {
		t.Fatalf("%d records, %d dropped; want 1024 and %d", n, c.Dropped(), 1400-1024)
	}
	// The last 188 packets lost both their copies: half the drops are
	// egress copies.
	if e := c.DroppedEgress(); e != (1400-1024)/2 {
		t.Fatalf("%d egress copies dropped, want %d", e, (1400-1024)/2)
	}
}

// BenchmarkCapture is an established packet (BenchmarkForwardEstablished's,
// 65536 flows) on three workers in alternating rounds of one run: without
// a capture, with one that matches nothing, and with one that copies every
// packet both ways (its reader draining as it goes). It reports ns per
// packet of each and the differences with the first.
func BenchmarkCapture(b *testing.B) {
	const flows = 1 << 16
	order := rand.New(rand.NewPCG(3, 4)).Perm(flows)
	ws := make([]*datapath.Worker, 3)
	dps := make([]*datapath.Datapath, 3)
	for i := range ws {
		p := sim.NewPatcher(sim.Frame{Dst: vip4, Proto: 6, TCPFlags: sim.ACK, Payload: 64}, clients4)
		var k int
		dps[i], ws[i] = benchRig(b, flows, func(buf []byte) int {
			j := order[k]
			if k++; k == len(order) {
				k = 0
			}
			return p.Write(buf, uint32(j), sim.ACK)
		})
		poll(b, ws[i], flows)
	}
	none, err := dps[1].StartCapture(datapath.CaptureFilter{Tenant: -1, Port: 1}, true, true)
	if err != nil {
		b.Fatal(err)
	}
	all, err := dps[2].StartCapture(datapath.CaptureFilter{Tenant: -1}, true, true)
	if err != nil {
		b.Fatal(err)
	}
	const round = 64 * 8 // the ring (1024 records) holds a round both ways
	var t [3]time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for done, r := 0, 0; done < b.N; done, r = done+round, r+1 {
		for j := range ws { // each takes each place in turn: no worker always runs after the same one
			i := (r + j) % len(ws)
			t0 := time.Now()
			poll(b, ws[i], round)
			t[i] += time.Since(t0)
		}
		all.Drain(func(*datapath.CaptureRecord) {})
	}
	b.StopTimer()
	if all.Dropped() != 0 || none.Drain(func(*datapath.CaptureRecord) {}) != 0 {
		b.Fatalf("the all capture dropped %d; the none capture copied", all.Dropped())
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64((b.N+round-1)/round*round) }
	b.ReportMetric(per(t[0]), "off-ns")
	b.ReportMetric(per(t[1])-per(t[0]), "nomatch-extra-ns")
	b.ReportMetric(per(t[2])-per(t[0]), "all-extra-ns")
}

// TestCaptureKeyless: a packet the datapath has no flow key for (an ICMP
// error whose quote is too short for ports) is not matched by the key its
// frame slot held for an earlier packet of the filtered flow.
func TestCaptureKeyless(t *testing.T) {
	r := newRig(t, 1024)
	r.apply(pipeline.Spec{Services: []pipeline.ServiceSpec{service(vip4, backends4(3), nil)}})
	one := clients4.FlowSrc(1)
	c, err := r.dp.StartCapture(datapath.CaptureFilter{Tenant: -1, Port: one.Port()}, true, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	f := tcpFrame(one, vip4, sim.SYN)
	r.send(f)
	// An error about the VIP's packet to the client, quoting its IP header
	// only: no ports.
	eth := &layers.Ethernet{SrcMAC: hopMAC[:], DstMAC: lbMAC[:], EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: net.IP{198, 51, 100, 1}, DstIP: vip4.Addr().AsSlice()}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4), Seq: 1400}
	quote := slices.Clone(f[14:34])
	copy(quote[12:16], vip4.Addr().AsSlice()) // VIP -> client
	copy(quote[16:20], one.Addr().AsSlice())
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, eth, ip, icmp, gopacket.Payload(quote)); err != nil {
		t.Fatal(err)
	}
	r.send(slices.Clone(buf.Bytes()))
	var got int
	c.Drain(func(rec *datapath.CaptureRecord) {
		if string(rec.Data[:rec.N]) != string(f) && rec.Egress == false {
			t.Errorf("copied a frame the filter does not select (%d bytes)", rec.Len)
		}
		got++
	})
	if got != 2 {
		t.Errorf("%d records, want the SYN as received and as sent", got)
	}
}

// TestCaptureTenantAsReceived: a tenant's packet, matched by its inner
// flow, is copied as received: the VXLAN frame the node got.
func TestCaptureTenantAsReceived(t *testing.T) {
	r := newRig(t, 1024)
	r.apply(tenantSpec())
	client := netip.MustParseAddrPort("10.100.0.2:40000")
	c, err := r.dp.StartCapture(datapath.CaptureFilter{Tenant: 1, Port: client.Port()}, true, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	f := vxlanFrame(tcpFrame(client, vip4, sim.SYN), 100)
	if out := r.send(f); len(out) != 1 {
		t.Fatalf("%d frames out", len(out))
	}
	n := c.Drain(func(rec *datapath.CaptureRecord) {
		if rec.Len != len(f) || string(rec.Data[:rec.N]) != string(f) {
			t.Errorf("copied %d bytes, not the %d-byte VXLAN frame received", rec.Len, len(f))
		}
	})
	if n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
}
