package datapath_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

var vtep = netip.MustParseAddr("198.18.0.254")

// vxlanFrame wraps inner in Ethernet/IPv4/UDP/VXLAN to the VTEP address.
func vxlanFrame(inner []byte, vni uint32) []byte {
	const hdr = 14 + 20 + 8 + 8
	b := make([]byte, hdr+len(inner))
	copy(b[0:6], lbMAC[:])
	copy(b[6:12], hopMAC[:])
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+8+len(inner)))
	ip[8], ip[9] = 64, 17
	copy(ip[12:16], []byte{198, 18, 10, 2})
	a := vtep.As4()
	copy(ip[16:20], a[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := b[34:42]
	binary.BigEndian.PutUint16(udp[0:], 50000)
	binary.BigEndian.PutUint16(udp[2:], 4789)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+8+len(inner)))
	vx := b[42:50]
	vx[0] = 0x08
	binary.BigEndian.PutUint32(vx[4:], vni<<8)
	copy(b[hdr:], inner)
	return b
}

func tenantSpec() pipeline.Spec {
	bes := backends4(5)
	def := service(vip4, bes[:3], nil)
	a := service(vip4, bes[3:4], nil)
	a.Name, a.Tenant = "a-web", "a"
	b := service(vip4, bes[4:5], nil)
	b.Name, b.Tenant = "b-web", "b"
	aOnly := service(netip.AddrPortFrom(vip4.Addr(), 8080), bes[3:4], nil)
	aOnly.Name, aOnly.Tenant = "a-admin", "a"
	return pipeline.Spec{
		Services: []pipeline.ServiceSpec{def, a, b, aOnly},
		Tenants:  []pipeline.TenantSpec{{Name: "a", VNI: 100}, {Name: "b", VNI: 200}},
		VXLAN:    vtep,
	}
}

// Two tenants and the default one use the same VIP for different backends;
// the same client 5-tuple is a different flow in each, a tenant never
// reaches another's services, and an unknown VNI is dropped.
func TestTenantsOverlappingVIPs(t *testing.T) {
	r := newRig(t, 1024)
	r.apply(tenantSpec())
	bes := backends4(5)
	client := netip.MustParseAddrPort("10.100.0.2:40000")
	syn := tcpFrame(client, vip4, sim.SYN)
	for round := range 3 {
		for _, tc := range []struct {
			frame []byte
			want  []netip.Addr
		}{
			{vxlanFrame(syn, 100), bes[3:4]},
			{vxlanFrame(syn, 200), bes[4:5]},
			{syn, bes[:3]},
		} {
			out := r.send(tc.frame)
			if len(out) != 1 {
				t.Fatalf("round %d: %d frames out", round, len(out))
			}
			d := decode(t, out[0])
			if !contains(tc.want, d.outerDst) {
				t.Fatalf("round %d: sent to %v, want one of %v", round, d.outerDst, tc.want)
			}
			// The inner packet, without the VXLAN headers, is what the
			// backend gets.
			if string(d.inner) != string(syn[14:]) {
				t.Fatalf("round %d: inner packet differs", round)
			}
		}
	}
	c := r.counters()
	if c.Flows.Len != 3 || c.FlowHits != 6 || c.FlowMisses != 3 {
		t.Fatalf("flows %d, hits %d, misses %d; want 3 flows (one per tenant), 6 hits, 3 misses", c.Flows.Len, c.FlowHits, c.FlowMisses)
	}
	// Port 8080 is tenant a's only.
	admin := tcpFrame(client, netip.AddrPortFrom(vip4.Addr(), 8080), sim.SYN)
	if out := r.send(vxlanFrame(admin, 100)); len(out) != 1 || backendOf(t, out[0]) != bes[3] {
		t.Fatalf("tenant a's admin service: %d frames", len(out))
	}
	before := r.counters().Passed
	if out := r.send(vxlanFrame(admin, 200), admin); len(out) != 0 {
		t.Fatalf("tenant b and the default tenant reached tenant a's service: %d frames", len(out))
	}
	if p := r.counters().Passed - before; p != 2 {
		t.Fatalf("passed %d, want 2", p)
	}
	if out := r.send(vxlanFrame(syn, 300)); len(out) != 0 || r.counters().Drops[pipeline.ReasonTenant] != 1 {
		t.Fatalf("unknown VNI: %d frames, no_tenant drops %d", len(out), r.counters().Drops[pipeline.ReasonTenant])
	}
}

func contains(as []netip.Addr, a netip.Addr) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

// tagged inserts an 802.1Q tag with VLAN ID vid into an Ethernet frame.
func tagged(frame []byte, vid uint16) []byte {
	out := make([]byte, 0, len(frame)+4)
	out = append(out, frame[:12]...)
	out = binary.BigEndian.AppendUint16(out, 0x8100)
	out = binary.BigEndian.AppendUint16(out, vid&0xfff)
	return append(out, frame[12:]...)
}

// A tenant classified by the ingress VLAN tag (golden frames: the lab's
// kernel cannot make 802.1Q devices): tagged with its VLAN the packet
// reaches its service, untagged or with another VLAN the default tenant's.
func TestTenantByVLAN(t *testing.T) {
	r := newRig(t, 1024)
	spec := tenantSpec()
	spec.Tenants = append(spec.Tenants, pipeline.TenantSpec{Name: "c", VLAN: 30})
	bes := backends4(6)
	c := service(vip4, bes[5:6], nil)
	c.Name, c.Tenant = "c-web", "c"
	spec.Services = append(spec.Services, c)
	r.apply(spec)
	syn := tcpFrame(netip.MustParseAddrPort("10.30.0.2:40000"), vip4, sim.SYN)
	for _, tc := range []struct {
		name  string
		frame []byte
		want  []netip.Addr
	}{
		{"vlan 30", tagged(syn, 30), bes[5:6]},
		{"vlan 31", tagged(syn, 31), bes[:3]},
		{"untagged", syn, bes[:3]},
		{"vxlan 100", vxlanFrame(syn, 100), bes[3:4]},
	} {
		out := r.send(tc.frame)
		if len(out) != 1 || !contains(tc.want, backendOf(t, out[0])) {
			t.Fatalf("%s: %d frames out, want one to %v", tc.name, len(out), tc.want)
		}
		if d := decode(t, out[0]); string(d.inner) != string(syn[14:]) {
			t.Fatalf("%s: inner packet differs", tc.name)
		}
	}
	if n := r.counters().Flows.Len; n != 3 {
		t.Fatalf("%d flows, want 3 (tenant c, the default tenant, tenant a)", n)
	}
}

// A tenant with VTEPs takes VXLAN with its VNI only from them: the
// client host's VTEP (198.18.10.2) is in tenant a's list, not in tenant
// b's; a tenant without a list takes it from anywhere.
func TestTenantVTEPs(t *testing.T) {
	syn := tcpFrame(clients4.FlowSrc(1), vip4, sim.SYN)
	spec := tenantSpec()
	r := newRig(t, 1024)
	r.apply(spec)
	if out := r.send(vxlanFrame(syn, 200)); len(out) != 1 {
		t.Fatal("control: tenant b without VTEPs dropped its packet")
	}
	spec.Tenants[0].VTEPs = []netip.Prefix{netip.MustParsePrefix("198.18.10.0/24")}
	spec.Tenants[1].VTEPs = []netip.Prefix{netip.MustParsePrefix("198.18.20.7/32")}
	r.apply(spec)
	if out := r.send(vxlanFrame(syn, 100)); len(out) != 1 {
		t.Fatal("tenant a's packet from its VTEP was dropped")
	}
	if out := r.send(vxlanFrame(syn, 200)); len(out) != 0 {
		t.Fatal("a packet with tenant b's VNI from another VTEP was forwarded")
	}
	if c := r.counters(); c.Drops[pipeline.ReasonTenant] != 1 {
		t.Fatalf("no_tenant drops %d, want 1", c.Drops[pipeline.ReasonTenant])
	}
}
