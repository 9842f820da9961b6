package pipeline

import (
	"fmt"
	"net/netip"

	"github.com/sluicelb/sluice/internal/packet"
)

// TenantSpec describes one tenant: its packets arrive as VXLAN with VNI
// to the node's VTEP address (Spec.VXLAN), or tagged with VLAN (the
// outermost 802.1Q tag), and it sees only its own services
// (ServiceSpec.Tenant). At least one of the two is set.
type TenantSpec struct {
	Name string
	VNI  uint32 // 1 .. 2^24-1; 0: none
	VLAN uint16 // 1 .. 4094; 0: none
	// VTEPs, when set, are the only outer sources the tenant's VXLAN may
	// come from: a packet with its VNI from anywhere else is dropped
	// (ReasonTenant). Empty: any source (the underlay must filter).
	VTEPs []netip.Prefix
}

// MaxTenants is the number of tenants a generation holds besides the
// default one: a tenant's ID is one byte of the flow key.
const MaxTenants = 255

// tenantClassifier maps a VXLAN packet to the node's VTEP address to its
// tenant. Immutable once built.
type tenantClassifier struct {
	on    bool // any tenant: Prepare classifies
	vlans map[uint16]uint8
	vxlan bool // a VTEP address is set
	vtep  [16]byte
	port  uint16
	vnis  map[uint32]uint8
	vni   []uint32 // by tenant ID ([0]: the default tenant, none)
	vlan  []uint16 // likewise
	vteps [][]netip.Prefix
}

// build validates spec's tenants, fills names (ID -> name, [0] the default
// tenant) and returns the IDs by name ("" -> 0).
func (tc *tenantClassifier) build(spec Spec, names *[]string) (map[string]uint8, error) {
	ids := map[string]uint8{"": 0}
	if len(spec.Tenants) == 0 {
		return ids, nil
	}
	if len(spec.Tenants) > MaxTenants {
		return nil, fmt.Errorf("%w: %d tenants; at most %d", ErrSpec, len(spec.Tenants), MaxTenants)
	}
	tc.on = true
	if spec.VXLAN.IsValid() {
		tc.vxlan, tc.vtep, tc.port = true, spec.VXLAN.As16(), spec.VXLANPort
		if tc.port == 0 {
			tc.port = packet.VXLANPort
		}
	}
	tc.vnis = make(map[uint32]uint8, len(spec.Tenants))
	tc.vni, tc.vlan, tc.vteps = []uint32{0}, []uint16{0}, [][]netip.Prefix{nil}
	for i, t := range spec.Tenants {
		if _, dup := ids[t.Name]; dup || t.Name == "" {
			return nil, fmt.Errorf("%w: tenants[%d]: name %q is empty or repeated", ErrSpec, i, t.Name)
		}
		id := uint8(i + 1)
		ids[t.Name] = id
		tc.vni, tc.vlan = append(tc.vni, t.VNI), append(tc.vlan, t.VLAN)
		var vteps []netip.Prefix
		for _, p := range t.VTEPs {
			vteps = append(vteps, p.Masked())
		}
		tc.vteps = append(tc.vteps, vteps)
		if t.VNI == 0 && t.VLAN == 0 {
			return nil, fmt.Errorf("%w: tenants[%d]: neither a VNI nor a VLAN", ErrSpec, i)
		}
		if t.VNI != 0 {
			if t.VNI >= 1<<24 {
				return nil, fmt.Errorf("%w: tenants[%d]: VNI %d is not 1..16777215", ErrSpec, i, t.VNI)
			}
			if !tc.vxlan {
				return nil, fmt.Errorf("%w: tenants[%d]: a VNI needs the VXLAN (VTEP) address", ErrSpec, i)
			}
			if _, dup := tc.vnis[t.VNI]; dup {
				return nil, fmt.Errorf("%w: tenants[%d]: VNI %d is repeated", ErrSpec, i, t.VNI)
			}
			tc.vnis[t.VNI] = id
		}
		if t.VLAN != 0 {
			if t.VLAN >= 4095 {
				return nil, fmt.Errorf("%w: tenants[%d]: VLAN %d is not 1..4094", ErrSpec, i, t.VLAN)
			}
			if tc.vlans == nil {
				tc.vlans = make(map[uint16]uint8)
			}
			if _, dup := tc.vlans[t.VLAN]; dup {
				return nil, fmt.Errorf("%w: tenants[%d]: VLAN %d is repeated", ErrSpec, i, t.VLAN)
			}
			tc.vlans[t.VLAN] = id
		}
		*names = append(*names, t.Name)
	}
	return ids, nil
}

// VTEP returns the address and UDP port tenants send VXLAN to; ok false
// without tenants.
func (g *Generation) VTEP() (addr netip.Addr, port uint16, ok bool) {
	tc := &g.tenants
	return netip.AddrFrom16(tc.vtep).Unmap(), tc.port, tc.vxlan
}

// TenantName returns the name of tenant id ("": the default tenant).
func (g *Generation) TenantName(id uint8) string {
	if int(id) < len(g.Tenants) {
		return g.Tenants[id]
	}
	return ""
}

// TenantByName returns the ID of the named tenant ("" : the default, 0).
func (g *Generation) TenantByName(name string) (uint8, bool) {
	for i, n := range g.Tenants {
		if n == name {
			return uint8(i), true
		}
	}
	return 0, false
}

// TenantVNI returns the VNI of tenant id (0 for the default tenant).
func (g *Generation) TenantVNI(id uint8) uint32 {
	if int(id) < len(g.tenants.vni) {
		return g.tenants.vni[id]
	}
	return 0
}

// TenantVLAN returns the VLAN ID of tenant id (0: none).
func (g *Generation) TenantVLAN(id uint8) uint16 {
	if int(id) < len(g.tenants.vlan) {
		return g.tenants.vlan[id]
	}
	return 0
}

// TenantByVNI returns the tenant of a VNI.
func (g *Generation) TenantByVNI(vni uint32) (uint8, bool) {
	id, ok := g.tenants.vnis[vni]
	return id, ok
}

// fromVTEP reports whether a VXLAN packet of tenant id may come from src:
// the tenant has no VTEP list, or src is in it.
func (tc *tenantClassifier) fromVTEP(id uint8, src netip.Addr) bool {
	vteps := tc.vteps[id]
	if len(vteps) == 0 {
		return true
	}
	for _, p := range vteps {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// classifyTenant is the tenant step of Prepare, for a parsed frame: a
// VXLAN packet to the node's VTEP address is decapsulated — p.Off, p.Len
// and p.Parsed move to its inner frame — and its VNI names the tenant it
// returns; else a frame whose outermost 802.1Q tag is a tenant's VLAN is
// that tenant's; any other packet is the default tenant's (0), tagged or
// not. A malformed VXLAN packet, one with a VNI no tenant has, or an
// inner frame that does not parse is dropped (ok false, p.Verdict set).
func classifyTenant(p *Packet, g *Generation) (tenant uint8, ok bool) {
	tc := &g.tenants
	t := &p.Parsed.Tuple
	if !tc.vxlan || t.Proto != packet.ProtoUDP || t.DstPort != tc.port || t.Dst != tc.vtep {
		if tc.vlans != nil && p.Parsed.NumVLANs > 0 {
			return tc.vlans[packet.VLANID(p.Parsed.VLANs[0])], true // 0 if none
		}
		return 0, true
	}
	vni, inner, end, v := p.Parsed.VXLAN(p.Buf[p.Off:p.Off+p.Len], tc.port)
	if v != packet.VXLANOK {
		p.Verdict, p.Reason = Drop, ReasonTenant
		return 0, false
	}
	id, known := tc.vnis[vni]
	if !known || !tc.fromVTEP(id, t.SrcAddr()) {
		p.Verdict, p.Reason = Drop, ReasonTenant
		return 0, false
	}
	p.Off, p.Len = p.Off+inner, end-inner
	p.Parsed.Decode(p.Buf[p.Off : p.Off+p.Len])
	if p.Parsed.Verdict != packet.OK {
		p.Verdict, p.Reason = Drop, ReasonParse
		return 0, false
	}
	return id, true
}
